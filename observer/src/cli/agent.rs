//! `observer agent`: the node agent.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{anyhow, bail, Context};
use clap::Args;

use super::config;
use crate::{
    agent::{self, AgentConfig},
    api::{connections::Limits, listeners::ListenConfig, web::Web, DEFAULT_LISTEN, DEFAULT_SOCKET},
    containers::{cgroup::Runtime, names::StateDirs, oci::OciRoot},
    export::{ExportConfig, OtlpConfig, Types},
    probes::{self, btf::DEFAULT_BTF, ProbeConfig},
    store::{Limits as StoreLimits, StoreConfig},
    table::exe_hash::HashConfig,
    views::metrics::UnknownLabel,
};

#[derive(Args)]
pub(crate) struct AgentArgs {
    /// Settings file (TOML; keys are these flags' names with `_`). The default one is read
    /// when it exists; flags win over OBSERVER_* variables, which win over the file.
    #[arg(long, env = "OBSERVER_CONFIG", value_name = "FILE", default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Print the effective settings (as a config file, each with its origin) and exit.
    #[arg(long)]
    print_config: bool,
    /// TCP address of the HTTP API: /metrics, /healthz, /readyz and /v1/status to anyone;
    /// the process views only when --web-config makes every client authenticate (they are
    /// always on the unix socket).
    #[arg(long, env = "OBSERVER_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Also serve /metrics, /healthz and /readyz (nothing else) on this address, e.g.
    /// 0.0.0.0:19101 for Prometheus to scrape while the JSON API stays local.
    #[arg(long, env = "OBSERVER_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// TLS and basic/bearer authentication for --listen and --metrics-listen, in the format
    /// of Prometheus exporters' web-config.yml (README "Securing remote scraping").
    #[arg(long, env = "OBSERVER_WEB_CONFIG", value_name = "FILE")]
    web_config: Option<PathBuf>,
    /// Root-only unix socket the CLI talks to.
    #[arg(long, env = "OBSERVER_SOCKET", value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Ring buffer size (power of two, e.g. 4M).
    #[arg(long, env = "OBSERVER_RINGBUF_SIZE", value_name = "BYTES", default_value = "4M", value_parser = parse_ringbuf)]
    ringbuf_size: u32,
    /// Kernel BTF to read struct layouts from.
    #[arg(long, env = "OBSERVER_BTF", value_name = "FILE", default_value = DEFAULT_BTF)]
    btf: PathBuf,
    /// Signals the kernel side reports: names or numbers, `default` (those that end or stop
    /// a process by default), `all`, `-NAME` to leave one out. Any signal but SIGCHLD to
    /// PID 1 of a container's pid namespace is reported regardless.
    #[arg(long, env = "OBSERVER_SIGNALS", value_name = "LIST", default_value = "default", value_parser = crate::events::signals::parse_mask)]
    signals: u64,
    /// How often to check the table against /proc's process ids (a full reconciliation runs
    /// at once when events are lost; at least 1s). On a big node checks are spaced further,
    /// so that they cost at most 0.025% of a core (a check of 50,000 processes: ~60 ms).
    #[arg(long, env = "OBSERVER_RECONCILE_INTERVAL", value_name = "DURATION", default_value = "30s", value_parser = parse_reconcile)]
    reconcile_interval: Duration,
    /// How often the reconciliation reads all of /proc even when a check finds /proc's
    /// process ids equal to the table's and no event was lost (at least 1s; spaced further
    /// on a big node, as checks are).
    #[arg(long, env = "OBSERVER_FULL_RECONCILE_INTERVAL", value_name = "DURATION", default_value = "10m", value_parser = parse_reconcile)]
    full_reconcile_interval: Duration,
    /// Where the start-up table comes from: `iterator` (a BPF task iterator: every fact of
    /// every process, read like an event's), `proc` (/proc; namespaces and cgroup ids follow
    /// in a background pass), or `auto` (the iterator where the kernel has one, else /proc).
    #[arg(
        long,
        env = "OBSERVER_SEED",
        value_name = "SOURCE",
        default_value = "auto"
    )]
    seed: agent::Seed,
    /// How the fork/exec/exit/free programs attach: `auto` (BTF tracepoints where the
    /// kernel accepts them — plain reads the verifier checked, several times cheaper per
    /// event — else raw tracepoints), `btf` (or fail), `raw`.
    #[arg(
        long,
        env = "OBSERVER_TRACEPOINT_KIND",
        value_name = "KIND",
        default_value = "auto"
    )]
    tracepoint_kind: probes::TracepointKind,
    /// Count the in-kernel runs and run time of observer's programs while the agent runs
    /// (the kernel's BPF statistics, `BPF_ENABLE_STATS`; off again when the agent stops):
    /// `observer_bpf_program_run*` on /metrics and `observer status`. Each program run then
    /// reads the clock twice: +0.6% CPU, +1.7% wall time on a spawn storm (docs/performance.md).
    #[arg(
        long,
        env = "OBSERVER_BPF_STATS",
        value_name = "on|off",
        default_value = "off",
        value_parser = parse_on_off,
        action = clap::ArgAction::Set
    )]
    bpf_stats: bool,
    /// Also attach these calibration programs (observer-ebpf/src/calib.rs: a fixed cost
    /// such as a ring-buffer record, or one group of the task reads; comma-separated),
    /// before observer's own, for `cargo xtask bench --peers`' profile. They cost every
    /// event more: not for production.
    #[arg(
        long,
        hide = true,
        value_name = "PROGRAM,...",
        value_delimiter = ',',
        value_parser = clap::builder::PossibleValuesParser::new(probes::calib::ALL)
    )]
    calibrate: Vec<String>,
    /// Docker's data root (container names from containers/<id>/config.v2.json).
    #[arg(
        long,
        env = "OBSERVER_DOCKER_ROOT",
        value_name = "DIR",
        default_value = "/var/lib/docker"
    )]
    docker_root: PathBuf,
    /// containerd state directories (task bundles with Kubernetes annotations); repeatable,
    /// comma-separated in the environment.
    #[arg(long = "containerd-state", env = "OBSERVER_CONTAINERD_STATE", value_delimiter = ',', value_name = "DIR", default_values = ["/run/containerd"])]
    containerd_state: Vec<PathBuf>,
    /// containers/storage roots (podman, cri-o names); repeatable, comma-separated in the
    /// environment.
    #[arg(long = "storage-root", env = "OBSERVER_STORAGE_ROOT", value_delimiter = ',', value_name = "DIR", default_values = ["/var/lib/containers/storage", "/run/containers/storage"])]
    storage_root: Vec<PathBuf>,
    /// runc state roots (`runc --root`): names containers runc started by itself; repeatable,
    /// comma-separated in the environment.
    #[arg(long = "runc-root", env = "OBSERVER_RUNC_ROOT", value_delimiter = ',', value_name = "DIR", default_values = ["/run/runc"])]
    runc_root: Vec<PathBuf>,
    /// crun state roots (`crun --root`): names containers crun started by itself; repeatable,
    /// comma-separated in the environment.
    #[arg(long = "crun-root", env = "OBSERVER_CRUN_ROOT", value_delimiter = ',', value_name = "DIR", default_values = ["/run/crun"])]
    crun_root: Vec<PathBuf>,
    /// Container labels on metrics (comma-separated subset of container_id,
    /// container_name, runtime, pod, namespace); series that then coincide are summed.
    #[arg(
        long,
        env = "OBSERVER_METRICS_LABELS",
        value_name = "LABELS",
        default_value = "container_id,container_name,runtime,pod,namespace",
        value_parser = parse_labels
    )]
    metrics_labels: Labels,
    /// Most open connections per API listener (TCP and unix socket each), a quarter of them
    /// from one client address at most; more are closed.
    #[arg(long, env = "OBSERVER_MAX_CONNECTIONS", value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_connections: u32,
    /// Time a client has to send a request's header.
    #[arg(long, env = "OBSERVER_HEADER_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    header_timeout: Duration,
    /// Idle keep-alive connections, and responses the client stopped reading, are closed
    /// after this long (a streaming /v1/events response is not idle).
    #[arg(long, env = "OBSERVER_IDLE_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    idle_timeout: Duration,
    /// Mask what this regular expression matches in each command-line argument (with
    /// `***`) before anything is stored or served, e.g. '(?i)(password|token)=\S*'.
    #[arg(long, env = "OBSERVER_REDACT_ARGS", value_name = "REGEX", value_parser = crate::events::redact::Redactor::new)]
    redact_args: Option<crate::events::redact::Redactor>,
    /// Containers kept in memory, live and ended (ended ones are evicted first, live ones
    /// never); also the size of the container-name cache.
    #[arg(long, env = "OBSERVER_MAX_CONTAINERS", value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_containers: u32,
    /// How long an ended container stays in the views and metrics.
    #[arg(long, env = "OBSERVER_CONTAINER_RETENTION", value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    container_retention: Duration,
    /// Ended processes kept in each container's history (`observer history`).
    #[arg(long, env = "OBSERVER_HISTORY_PER_CONTAINER", value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    history_per_container: u32,
    /// Ended processes kept in all histories together (the oldest go first).
    #[arg(long, env = "OBSERVER_HISTORY_MAX", value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    history_max: u32,
    /// How long a container's history stays after its last entry (also after the
    /// container is removed).
    #[arg(long, env = "OBSERVER_HISTORY_RETENTION", value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    history_retention: Duration,
    /// Directory of the durable history store (history.redb): ended processes, their
    /// signals and OOM kills, kept across agent restarts and reboots for `observer history`
    /// and `observer why`.
    #[arg(long, env = "OBSERVER_STATE_DIR", value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Size the history store's file is kept within (the oldest entries are evicted
    /// first); 0 turns the store off (the history is then in memory only).
    #[arg(long, env = "OBSERVER_HISTORY_DISK_MAX", value_name = "BYTES", default_value = "256M", value_parser = parse_disk_max)]
    history_disk_max: u64,
    /// How long the history store keeps an entry after its process ended.
    #[arg(long, env = "OBSERVER_HISTORY_DISK_RETENTION", value_name = "DURATION", default_value = "7d", value_parser = humantime::parse_duration)]
    history_disk_retention: Duration,
    /// Hash the executable of every exec (SHA-256, once per file identity: device, inode,
    /// size, mtime): `exe_sha256` on exec events, processes, history entries and exports.
    /// Files are read on two worker threads, never on the event loop.
    #[arg(
        long,
        env = "OBSERVER_HASH",
        value_name = "on|off",
        default_value = "on",
        value_parser = parse_on_off,
        action = clap::ArgAction::Set
    )]
    hash: bool,
    /// Executable identities whose hash is kept (least recently used evicted, counted).
    #[arg(long, env = "OBSERVER_HASH_CACHE", value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    hash_cache: u32,
    /// Executables larger than this are not hashed (`exe_hash_reason: too_large`).
    #[arg(long, env = "OBSERVER_HASH_MAX_SIZE", value_name = "BYTES", default_value = "256M", value_parser = parse_hash_max)]
    hash_max_size: u64,
    /// Write every event and every ended process's history entry to this file as JSON
    /// lines (docs/export.md), rotated to PATH.1 … PATH.N by --export-file-max and
    /// --export-file-keep. A slow or full disk drops lines (counted), never events.
    #[arg(long, env = "OBSERVER_EXPORT_FILE", value_name = "PATH")]
    export_file: Option<PathBuf>,
    /// Size at which the export file is rotated (e.g. 100M, 64K).
    #[arg(long, env = "OBSERVER_EXPORT_FILE_MAX", value_name = "BYTES", default_value = "100M", value_parser = parse_export_max)]
    export_file_max: u64,
    /// Rotated export files kept (PATH.1 … PATH.N, the oldest removed).
    #[arg(long, env = "OBSERVER_EXPORT_FILE_KEEP", value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=1000))]
    export_file_keep: u32,
    /// Compress rotated export files with gzip (PATH.1.gz … PATH.N.gz).
    #[arg(long, env = "OBSERVER_EXPORT_FILE_GZIP")]
    export_file_gzip: bool,
    /// Write the same JSON lines to stdout (for `kubectl logs`).
    #[arg(long, env = "OBSERVER_EXPORT_STDOUT")]
    export_stdout: bool,
    /// What is exported: event types as /v1/events names them (fork, exec, exit, free,
    /// setns, unshare, cgroup_attach, signal, oom) and `history`, comma-separated, or `all`.
    #[arg(long, env = "OBSERVER_EXPORT_TYPES", value_name = "TYPES", default_value = "all", value_parser = Types::parse)]
    export_types: Types,
    /// Send the same records as OpenTelemetry logs to this OTLP/HTTP collector (protobuf):
    /// `http(s)://host:4318` (`/v1/logs` is added) or the full logs URL. A slow or absent
    /// collector drops records (counted), never events.
    #[arg(long, env = "OBSERVER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// A header on every OTLP request (`name=value`, e.g. `Authorization=Bearer …`);
    /// repeatable, comma-separated in the environment.
    #[arg(
        long = "otlp-header",
        env = "OBSERVER_OTLP_HEADERS",
        value_delimiter = ',',
        value_name = "NAME=VALUE"
    )]
    otlp_header: Vec<String>,
    /// PEM file of the CA certificates that verify an https OTLP endpoint (default: the
    /// system's bundle).
    #[arg(long, env = "OBSERVER_OTLP_CA", value_name = "FILE")]
    otlp_ca: Option<PathBuf>,
    /// How long one OTLP request may take before it is tried again (backoff from 0.5 s,
    /// 6 tries, then the batch is dropped and counted).
    #[arg(long, env = "OBSERVER_OTLP_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    otlp_timeout: Duration,
    /// Compression of OTLP request bodies: gzip (as the OpenTelemetry Collector's own
    /// exporter sends; every OTLP receiver takes it) or none.
    #[arg(
        long,
        env = "OBSERVER_OTLP_COMPRESSION",
        value_enum,
        default_value = "gzip"
    )]
    otlp_compression: OtlpCompression,
    /// Log lines as text or as one JSON object per line (for log shippers).
    #[arg(long, env = "OBSERVER_LOG_FORMAT", value_enum, default_value = "text")]
    pub(crate) log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OtlpCompression {
    Gzip,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// `--metrics-labels`, checked when parsed (so a bad value in the config file names its line).
#[derive(Clone, Debug)]
pub(crate) struct Labels(Vec<String>);

fn parse_labels(s: &str) -> Result<Labels, UnknownLabel> {
    crate::views::metrics::parse_labels(s).map(Labels)
}

/// `--ringbuf-size`: a size the kernel accepts for a ring buffer, checked when parsed.
fn parse_ringbuf(s: &str) -> anyhow::Result<u32> {
    let n = probes::parse_size(s)?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(probes::ProbeError::RingBufSize(n).into());
    }
    Ok(n)
}

fn parse_reconcile(s: &str) -> anyhow::Result<Duration> {
    let d = humantime::parse_duration(s).map_err(|e| anyhow!("`{s}`: {e} (e.g. 30s, 5m)"))?;
    if d < Duration::from_secs(1) {
        bail!("`{s}` is too short (at least 1s)");
    }
    Ok(d)
}

/// `--export-file-max`: a byte size of at least 1K.
fn parse_export_max(s: &str) -> anyhow::Result<u64> {
    let n = probes::parse_bytes(s)?;
    if n < 1024 {
        bail!("`{s}` is too small (at least 1K)");
    }
    Ok(n)
}

/// The history store's directory by default (systemd's `StateDirectory=observer`).
const DEFAULT_STATE_DIR: &str = "/var/lib/observer";

/// `--history-disk-max`: 0 (off) or a byte size of at least 1M.
fn parse_disk_max(s: &str) -> anyhow::Result<u64> {
    let n = probes::parse_bytes(s)?;
    if n != 0 && n < 1 << 20 {
        bail!("`{s}` is too small (0 turns the store off, else at least 1M)");
    }
    Ok(n)
}

/// A connection timeout: a duration from 100ms to 1h.
fn parse_timeout(s: &str) -> anyhow::Result<Duration> {
    let d = humantime::parse_duration(s).map_err(|e| anyhow!("`{s}`: {e} (e.g. 10s, 2m)"))?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        bail!("`{s}` is out of range (100ms to 1h)");
    }
    Ok(d)
}

pub(crate) fn run(a: AgentArgs) -> anyhow::Result<ExitCode> {
    let cfg = agent_config(a)?;
    one_heap();
    raise_nofile();
    let (rt, api) = runtimes()?;
    let r = rt.block_on(agent::run(cfg, api.handle().clone()));
    // A scan or view still running on a blocking thread must not hold the exit (SIGTERM:
    // ≤ 2 s).
    api.shutdown_timeout(Duration::from_millis(200));
    rt.shutdown_timeout(Duration::from_millis(200));
    r?;
    Ok(ExitCode::SUCCESS)
}

/// The agent's settings from its arguments (the web config file read and checked).
fn agent_config(a: AgentArgs) -> anyhow::Result<AgentConfig> {
    let web = match &a.web_config {
        Some(p) => Web::load(p)?,
        None => Web::default(),
    };
    let memory = memory_limits(&a);
    let store = (a.history_disk_max > 0).then(|| StoreConfig {
        dir: a.state_dir.clone(),
        limits: StoreLimits {
            disk_max: a.history_disk_max,
            retention_ns: a.history_disk_retention.as_nanos().min(u64::MAX as u128) as u64,
        },
    });
    Ok(AgentConfig {
        probes: ProbeConfig {
            ringbuf_bytes: a.ringbuf_size,
            btf: a.btf,
            signal_mask: a.signals,
            // `observer agent -vv`
            kernel_log: log::max_level() >= log::LevelFilter::Debug,
            tracepoint_kind: a.tracepoint_kind,
            calibrate: a.calibrate,
            bpf_stats: a.bpf_stats,
        },
        listen: ListenConfig {
            listen: a.listen,
            metrics_listen: a.metrics_listen,
            socket: a.socket,
            limits: Limits {
                max_connections: a.max_connections as usize,
                header_timeout: a.header_timeout,
                idle_timeout: a.idle_timeout,
            },
            web,
        },
        reconcile_every: a.reconcile_interval,
        full_reconcile_every: a.full_reconcile_interval,
        seed: a.seed,
        state_dirs: StateDirs {
            docker: a.docker_root,
            containerd: a.containerd_state,
            storage: a.storage_root,
            launcher: StateDirs::default().launcher,
            oci: oci_roots(a.runc_root, a.crun_root),
        },
        metrics_labels: a.metrics_labels.0,
        redact: a.redact_args,
        memory,
        json_logs: a.log_format == LogFormat::Json,
        export: ExportConfig {
            file: a.export_file,
            file_max: a.export_file_max,
            file_keep: a.export_file_keep,
            file_gzip: a.export_file_gzip,
            stdout: a.export_stdout,
            otlp: a.otlp_endpoint.map(|endpoint| OtlpConfig {
                endpoint,
                ca: a.otlp_ca,
                headers: a.otlp_header,
                timeout: a.otlp_timeout,
                gzip: a.otlp_compression == OtlpCompression::Gzip,
            }),
            types: a.export_types,
        },
        store,
        hash: HashConfig {
            on: a.hash,
            cache: a.hash_cache as usize,
            max_size: a.hash_max_size,
            ..HashConfig::default()
        },
    })
}

/// The runc roots, then the crun roots.
fn oci_roots(runc: Vec<PathBuf>, crun: Vec<PathBuf>) -> Vec<OciRoot> {
    runc.into_iter()
        .map(|dir| OciRoot {
            runtime: Runtime::Runc,
            dir,
        })
        .chain(crun.into_iter().map(|dir| OciRoot {
            runtime: Runtime::Crun,
            dir,
        }))
        .collect()
}

/// What the table keeps: containers and their histories.
fn memory_limits(a: &AgentArgs) -> crate::table::gc::Limits {
    crate::table::gc::Limits {
        max_containers: a.max_containers as usize,
        retention_ns: a.container_retention.as_nanos().min(u64::MAX as u128) as u64,
        history: crate::table::history::HistoryLimits {
            per_container: a.history_per_container as usize,
            total: a.history_max as usize,
            retention_ns: a.history_retention.as_nanos().min(u64::MAX as u128) as u64,
        },
    }
}

/// One heap for every thread: glibc gives each thread its own arena, and what the
/// start-up's helper threads allocate and free (the cgroup walk beside the task iterator,
/// the scans) stays mapped there — measured at 50,000 processes: 79 MB RSS with per-thread
/// arenas, 54 MB with one. The agent's threads rarely allocate at once.
fn one_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator tunable; no thread has started yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// One thread for the table and the ring buffer (no cross-thread wakeups per batch); scans
/// run on its blocking threads. The listeners have a runtime of their own: TLS handshakes,
/// credential checks and requests — whose cost clients choose — never take the events'
/// thread.
fn runtimes() -> anyhow::Result<(tokio::runtime::Runtime, tokio::runtime::Runtime)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let api = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(8)
        .thread_name("observer-api")
        // Below the events' thread when the CPU is short (nice 10, per thread on Linux):
        // a client's request waits rather than a kernel event being lost.
        // SAFETY: setpriority on the calling thread (gettid), no memory involved.
        .on_thread_start(|| unsafe {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
        })
        .enable_all()
        .build()
        .context("starting the API's tokio runtime")?;
    Ok((rt, api))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (as Go programs and systemd's own
/// services do; the soft 1,024 exists for select(2), which the agent does not use): the
/// /metrics path keeps every live container's cgroup files open
/// (host/resource_files.rs).
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// `--hash-max-size`: a byte size, at least 1K.
fn parse_hash_max(s: &str) -> anyhow::Result<u64> {
    let b = crate::probes::parse_bytes(s)?;
    anyhow::ensure!(b >= 1024, "`{s}` is too small (at least 1K)");
    Ok(b)
}

/// `on` or `off` (the value parser of every on/off flag: `agent` and `events`).
pub(super) fn parse_on_off(s: &str) -> anyhow::Result<bool> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => anyhow::bail!("`{s}`: say `on` or `off`"),
    }
}
