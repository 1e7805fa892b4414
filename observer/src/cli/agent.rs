//! `observer agent`: the node agent.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Args;

use crate::{
    agent::{self, AgentConfig},
    api::{DEFAULT_LISTEN, DEFAULT_SOCKET},
    containers::names::StateDirs,
    probes::{self, btf::DEFAULT_BTF, ProbeConfig},
};

#[derive(Args)]
pub struct AgentArgs {
    /// TCP address of the HTTP API and /metrics.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Root-only unix socket the CLI talks to.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Ring buffer size (power of two, e.g. 4M).
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = probes::parse_size)]
    ringbuf_size: u32,
    /// Kernel BTF to read struct layouts from.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_BTF)]
    btf: PathBuf,
    /// How often to reconcile the table with /proc (also done at once when events are lost).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    reconcile_interval: Duration,
    /// Docker's data root (container names from containers/<id>/config.v2.json).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/docker")]
    docker_root: PathBuf,
    /// containerd state directories (task bundles with Kubernetes annotations); repeatable.
    #[arg(long = "containerd-state", value_name = "DIR", default_values = ["/run/containerd"])]
    containerd_state: Vec<PathBuf>,
    /// containers/storage roots (podman, cri-o names); repeatable.
    #[arg(long = "storage-root", value_name = "DIR", default_values = ["/var/lib/containers/storage", "/run/containers/storage"])]
    storage_root: Vec<PathBuf>,
    /// Container labels on metrics (comma-separated subset of container_id,
    /// container_name, runtime, pod, namespace); series that then coincide are summed.
    #[arg(
        long,
        value_name = "LABELS",
        default_value = "container_id,container_name,runtime,pod,namespace"
    )]
    metrics_labels: String,
    /// Most open connections per API listener (TCP and unix socket each); more are closed.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_connections: u32,
    /// Time a client has to send a request's header.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    header_timeout: Duration,
    /// Idle keep-alive connections, and responses the client stopped reading, are closed
    /// after this long (a streaming /v1/events response is not idle).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    idle_timeout: Duration,
    /// Mask what this regular expression matches in each command-line argument (with
    /// `***`) before anything is stored or served, e.g. '(?i)(password|token)=\S*'.
    #[arg(long, value_name = "REGEX", value_parser = crate::events::redact::Redactor::new)]
    redact_args: Option<crate::events::redact::Redactor>,
    /// Containers kept in memory, live and ended (ended ones are evicted first, live ones
    /// never); also the size of the container-name cache.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_containers: u32,
    /// How long an ended container stays in the views and metrics.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    container_retention: Duration,
}

/// A connection timeout: a duration from 100ms to 1h.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (e.g. 10s, 2m)"))?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err(format!("`{s}` is out of range (100ms to 1h)"));
    }
    Ok(d)
}

pub fn run(a: AgentArgs) -> anyhow::Result<ExitCode> {
    if a.reconcile_interval < Duration::from_secs(1) {
        anyhow::bail!("--reconcile-interval must be at least 1s");
    }
    let cfg = AgentConfig {
        probes: ProbeConfig {
            ringbuf_bytes: a.ringbuf_size,
            btf: a.btf,
        },
        listen: a.listen,
        socket: a.socket,
        reconcile_every: a.reconcile_interval,
        state_dirs: StateDirs {
            docker: a.docker_root,
            containerd: a.containerd_state,
            storage: a.storage_root,
            launcher: StateDirs::default().launcher,
        },
        metrics_labels: crate::views::metrics::parse_labels(&a.metrics_labels)
            .map_err(anyhow::Error::msg)?,
        http_limits: agent::http::Limits {
            max_connections: a.max_connections as usize,
            header_timeout: a.header_timeout,
            idle_timeout: a.idle_timeout,
        },
        redact: a.redact_args,
        memory: crate::table::gc::Limits {
            max_containers: a.max_containers as usize,
            retention_ns: a.container_retention.as_nanos().min(u64::MAX as u128) as u64,
        },
    };
    // One thread for the table, the ring buffer and the listeners (no cross-thread wakeups
    // per batch); views and scans run on tokio's blocking threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(agent::run(cfg))?;
    Ok(ExitCode::SUCCESS)
}
