//! Loading and attaching the kernel programs: privileges, RLIMIT_MEMLOCK, tracefs, member
//! offsets from BTF, the ring buffer size, then one attach per tracepoint (the lifecycle
//! ones as BTF tracepoints, their raw twins where the kernel refuses those:
//! `--tracepoint-kind`). A tracepoint the running kernel lacks is reported and skipped;
//! everything else is a hard error with a message that says what to do.

mod attach;
pub(crate) mod btf;
pub(crate) mod calib;
mod misses;
mod privileges;
pub(crate) mod seed;
pub mod tracefs;

use std::{os::fd::AsFd, path::PathBuf};

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use observer_common::{EventKind, Stats, KIND_SLOTS};

/// The compiled programs (observer-ebpf), built by build.rs.
#[cfg(not(fuzzing))]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));
/// Fuzzing builds (cargo-fuzz sets `--cfg fuzzing`) exercise parsers only; build.rs skips
/// the kernel programs for them, so `Probes::load` fails there (aya finds no ELF object).
#[cfg(fuzzing)]
static OBJECT: &[u8] = &[];

pub(crate) const DEFAULT_RINGBUF_BYTES: u32 = 4 << 20;

/// How often the reader drains the ring buffer when the kernel side has not woken it (it
/// wakes the reader only once the buffer fills past an eighth): the delivery latency bound.
pub(crate) const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error(
        "observer needs root to load eBPF programs (CAP_BPF and CAP_PERFMON; this process lacks {0}): run it with sudo"
    )]
    NotPrivileged(String),
    #[error("kernel BTF not found at {0}: observer needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (or pass --btf FILE)")]
    NoBtf(PathBuf),
    #[error("reading BTF from {path}: {reason}")]
    Btf { path: PathBuf, reason: String },
    #[error(
        "the running kernel's BTF has no {0}, which observer needs; this kernel is not supported"
    )]
    MissingMember(String),
    #[error("tracefs is not mounted and mounting it on /sys/kernel/tracing failed ({0}): mount it with `mount -t tracefs nodev /sys/kernel/tracing`")]
    NoTracefs(String),
    #[error("invalid ring buffer size {0}: it must be a power of two of at least 4 KiB (e.g. 8M)")]
    RingBufSize(u32),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error(
        "the kernel refused bpf() with EPERM although this process has CAP_BPF and CAP_PERFMON, \
         and a seccomp filter is active (Seccomp: 2 in /proc/self/status): a seccomp profile, \
         such as a container runtime's default one, refuses bpf(). Run the agent with seccomp \
         unconfined (podman/docker --security-opt seccomp=unconfined; Kubernetes \
         seccompProfile type Unconfined) or a profile that allows bpf and perf_event_open ({0})"
    )]
    Seccomp(String),
    #[error("loading program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {0}: {1}")]
    Map(&'static str, String),
    #[error("none of observer's tracepoints could be attached on this kernel")]
    NothingAttached,
}

#[derive(Clone, Debug)]
pub(crate) struct ProbeConfig {
    pub(crate) ringbuf_bytes: u32,
    pub(crate) btf: PathBuf,
    /// Signals the kernel side reports (observer_common::signal_bit; events/signals.rs).
    pub(crate) signal_mask: u64,
    /// The programs say why they dropped a record or read a field as 0 (aya-log,
    /// rate-limited; observer-ebpf/src/diag.rs), forwarded to this process's log at info.
    pub(crate) kernel_log: bool,
    /// How the process-lifecycle programs attach (`--tracepoint-kind`).
    pub(crate) tracepoint_kind: TracepointKind,
    /// Also attach these calibration programs (calib.rs), before observer's own.
    pub(crate) calibrate: Vec<String>,
    /// Turn the kernel's BPF statistics on for as long as the probes live (`--bpf-stats`).
    pub(crate) bpf_stats: bool,
}

/// How the fork/exec/exit/free programs attach (`--tracepoint-kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TracepointKind {
    /// BTF tracepoints where the kernel accepts them (they read the task with plain loads
    /// the verifier checked: several times cheaper per event), else raw tracepoints.
    #[default]
    Auto,
    /// BTF tracepoints, or the program fails to start.
    Btf,
    /// Raw tracepoints (every read a bpf_probe_read_kernel): for comparison.
    Raw,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            ringbuf_bytes: DEFAULT_RINGBUF_BYTES,
            btf: PathBuf::from(btf::DEFAULT_BTF),
            signal_mask: crate::events::signals::DEFAULT_MASK,
            kernel_log: false,
            tracepoint_kind: TracepointKind::Auto,
            calibrate: Vec::new(),
            bpf_stats: false,
        }
    }
}

#[derive(Clone, Copy)]
enum Hook {
    /// Raw tracepoint (its trace event still lives under `events/<category>/<name>`).
    Raw,
    /// BTF tracepoint (the program named here, built from the same body), else the raw
    /// tracepoint.
    Btf(&'static str),
    /// Ordinary tracepoint.
    Tp,
}

/// A process-lifecycle tracepoint: its raw program and its BTF twin.
const fn sched(
    name: &'static str,
    btf: &'static str,
    kind: EventKind,
) -> (&'static str, &'static str, Hook, EventKind) {
    ("sched", name, Hook::Btf(btf), kind)
}

/// (tracefs category, tracepoint name — also the (raw or ordinary) program's name in the
/// object, hook).
const PROGRAMS: [(&str, &str, Hook, EventKind); 9] = [
    sched("sched_process_fork", "tp_btf_fork", EventKind::Fork),
    sched("sched_process_exec", "tp_btf_exec", EventKind::Exec),
    sched("sched_process_exit", "tp_btf_exit", EventKind::Exit),
    sched("sched_process_free", "tp_btf_free", EventKind::Free),
    ("syscalls", "sys_exit_setns", Hook::Tp, EventKind::Setns),
    ("syscalls", "sys_exit_unshare", Hook::Tp, EventKind::Unshare),
    (
        "cgroup",
        "cgroup_attach_task",
        Hook::Raw,
        EventKind::CgroupAttach,
    ),
    ("signal", "signal_generate", Hook::Raw, EventKind::Signal),
    ("oom", "mark_victim", Hook::Tp, EventKind::Oom),
];

/// Loaded and attached programs. Dropping this detaches them.
pub(crate) struct Probes {
    ebpf: Ebpf,
    /// The kernel side's log records (with `kernel_log`), until `forward_kernel_log`.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    stats: PerCpuArray<MapData, Stats>,
    /// Tracepoints attached, as `category:name`.
    pub(crate) attached: Vec<String>,
    /// Those attached as BTF tracepoints.
    pub(crate) btf_attached: Vec<String>,
    /// The program attached for each event kind (misses.rs reads their counters).
    programs: Vec<(&'static str, EventKind)>,
    /// The kernel's BTF as aya parsed it for the BTF tracepoints, kept for the task
    /// iterators' load (the parse is most of a load's time) and dropped there.
    kernel_btf: Option<aya::Btf>,
    /// Tracepoints this kernel lacks, with the reason; their events will not appear.
    pub(crate) missing: Vec<(String, String)>,
    pub(crate) ringbuf_bytes: u32,
    /// Holds the kernel's BPF statistics on (`--bpf-stats on`); closing it turns them off.
    stats_on: Option<std::os::fd::OwnedFd>,
}

/// Totals of the in-kernel counters over all CPUs, indexed by EventKind number, and the
/// runs of each program the kernel skipped (misses.rs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KernelStats {
    pub(crate) counters: Stats,
    pub(crate) skipped: [u64; KIND_SLOTS],
    /// Runs of each event kind's program and their time (ns), counted while the kernel's
    /// BPF statistics are on (`--bpf-stats on`, or another holder of them).
    pub(crate) runs: [u64; KIND_SLOTS],
    pub(crate) run_ns: [u64; KIND_SLOTS],
}

impl KernelStats {
    pub(crate) fn emitted(&self, k: EventKind) -> u64 {
        self.counters.emitted[k as usize]
    }
    pub(crate) fn dropped(&self, k: EventKind) -> u64 {
        self.counters.dropped[k as usize]
    }
    pub(crate) fn skipped(&self, k: EventKind) -> u64 {
        self.skipped[k as usize]
    }
    pub(crate) fn read_errors(&self, k: EventKind) -> u64 {
        self.counters.read_errors[k as usize]
    }
    /// Runs of the kind's program and their time in ns (0 while BPF statistics are off).
    pub(crate) fn runs(&self, k: EventKind) -> (u64, u64) {
        (self.runs[k as usize], self.run_ns[k as usize])
    }
    /// Events lost because the ring buffer was full.
    pub(crate) fn total_full(&self) -> u64 {
        self.counters.dropped.iter().sum()
    }
    /// Events lost because the kernel skipped a program's run.
    pub(crate) fn total_skipped(&self) -> u64 {
        self.skipped.iter().sum()
    }
    /// Every event lost in the kernel: ring buffer full, or the program's run skipped.
    pub(crate) fn total_dropped(&self) -> u64 {
        self.total_full() + self.total_skipped()
    }
}

impl Probes {
    /// Checks privileges, prepares the kernel and loads + attaches every program.
    /// Returns the probes and the ring buffer to read events from.
    pub(crate) fn load(cfg: &ProbeConfig) -> Result<(Probes, RingBuf<MapData>), ProbeError> {
        privileges::check()?;
        privileges::raise_memlock();
        if cfg.ringbuf_bytes < 4096 || !cfg.ringbuf_bytes.is_power_of_two() {
            return Err(ProbeError::RingBufSize(cfg.ringbuf_bytes));
        }
        let t = std::time::Instant::now();
        let tracefs = tracefs::ensure_mounted()?;
        let offsets = attach::offsets(&cfg.btf, &tracefs)?;
        phase("the member offsets (BTF, tracefs)", t);
        let t = std::time::Instant::now();
        let mut ebpf = attach::load_object(cfg, &offsets)?;
        phase("the object (maps, feature probes)", t);
        let mut kernel_btf = None;
        let a = attach::attach_all(&mut ebpf, cfg, &tracefs, &offsets, &mut kernel_btf)?;
        let (events, stats) = attach::take_maps(&mut ebpf)?;
        let logger = attach::kernel_logger(cfg, &mut ebpf);
        Ok((
            Probes {
                logger,
                ebpf,
                stats,
                attached: a.attached,
                btf_attached: a.btf_attached,
                programs: a.programs,
                kernel_btf,
                missing: a.missing,
                ringbuf_bytes: cfg.ringbuf_bytes,
                stats_on: cfg.bpf_stats.then(enable_stats).flatten(),
            },
            events,
        ))
    }

    /// Whether this agent holds the kernel's BPF statistics on.
    pub(crate) fn counts_runs(&self) -> bool {
        self.stats_on.is_some()
    }

    /// Forwards the kernel side's log records to this process's log as they come (a task
    /// of the current tokio runtime).
    pub(crate) fn forward_kernel_log(&mut self) {
        let Some(logger) = self.logger.take() else {
            return;
        };
        use tokio::io::{unix::AsyncFd, Interest};
        // SAFETY: the logger owns its ring buffer's descriptor, which stays open for as long
        // as the AsyncFd owns the logger.
        let mut fd = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
            Ok(fd) => fd,
            Err(e) => {
                log::warn!("the kernel side's diagnostics are unavailable: {e}");
                return;
            }
        };
        tokio::spawn(async move {
            while let Ok(mut guard) = fd.readable_mut().await {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        });
    }

    /// Detaches the event programs, then returns the kernel's counts, final from then on:
    /// a reader that drains the ring buffer after this has taken every event counted as
    /// emitted (counted before, a node's next exec could be emitted after the last drain).
    /// The runs and skipped runs are read before, through the programs being unloaded.
    pub(crate) fn detach(&mut self) -> Result<KernelStats, ProbeError> {
        let mut stats = self.kernel_stats()?;
        for &(name, _) in &self.programs {
            let unloaded = match self.ebpf.program_mut(name) {
                Some(aya::programs::Program::RawTracePoint(p)) => p.unload(),
                Some(aya::programs::Program::BtfTracePoint(p)) => p.unload(),
                Some(aya::programs::Program::TracePoint(p)) => p.unload(),
                _ => Ok(()),
            };
            if let Err(e) = unloaded {
                log::warn!("detaching {name}: {e}");
            }
        }
        stats.counters = self.kernel_stats()?.counters;
        Ok(stats)
    }

    /// Sums the per-CPU kernel counters.
    pub(crate) fn kernel_stats(&self) -> Result<KernelStats, ProbeError> {
        let per_cpu = self
            .stats
            .get(&0, 0)
            .map_err(|e| ProbeError::Map("STATS", e.to_string()))?;
        let mut total = Stats::default();
        for s in per_cpu.iter() {
            for i in 0..KIND_SLOTS {
                total.emitted[i] += s.emitted[i];
                total.dropped[i] += s.dropped[i];
                total.read_errors[i] += s.read_errors[i];
            }
        }
        let mut out = KernelStats {
            counters: total,
            ..KernelStats::default()
        };
        for &(name, kind) in &self.programs {
            let fd = self.ebpf.program(name).and_then(|p| p.fd().ok());
            if let Some(r) = fd.and_then(|fd| misses::program_runs(fd.as_fd())) {
                let k = kind as usize;
                out.skipped[k] += r.misses.unwrap_or(0);
                out.runs[k] += r.runs;
                out.run_ns[k] += r.run_ns;
            }
        }
        Ok(out)
    }
}

/// Loads and attaches the BTF tracepoint program `prog` on tracepoint `tp`, parsing the
/// kernel's BTF (aya's parse: it needs the tracepoint's type id) on first use.
fn attach_btf(
    ebpf: &mut Ebpf,
    prog: &'static str,
    tp: &str,
    btf_path: &std::path::Path,
    kernel_btf: &mut Option<aya::Btf>,
) -> Result<(), ProbeError> {
    let btf = parsed_btf(kernel_btf, btf_path)?;
    let perr = |source| ProbeError::Program { name: prog, source };
    let p: &mut aya::programs::BtfTracePoint = program(ebpf, prog)?;
    p.load(tp, btf).map_err(perr)?;
    if let Err(e) = p.attach() {
        let _ = p.unload();
        return Err(perr(e));
    }
    Ok(())
}

/// aya's parse of the kernel BTF at `path`, made on first use and kept in `slot`: the BTF
/// tracepoints and the task iterators need its type ids, and the parse is most of their
/// load time.
fn parsed_btf<'a>(
    slot: &'a mut Option<aya::Btf>,
    path: &std::path::Path,
) -> Result<&'a aya::Btf, ProbeError> {
    if slot.is_none() {
        let t = std::time::Instant::now();
        let btf = aya::Btf::parse_file(path, aya::Endianness::default()).map_err(|e| {
            ProbeError::Btf {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        phase("the kernel BTF parsed (aya)", t);
        *slot = Some(btf);
    }
    Ok(slot.as_ref().expect("parsed above"))
}

/// The program `name` of the object, as its kind `T` (RawTracePoint, Iter, ...).
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, ProbeError>
where
    &'a mut aya::programs::Program: TryInto<&'a mut T, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProbeError::Map(
            name,
            "program missing from the object".into(),
        ))?
        .try_into()
        .map_err(|source| ProbeError::Program { name, source })
}

/// Says at debug level how long a step of the start-up took (`-vv`): where an agent's
/// start goes, in an emulated guest too.
pub(crate) fn phase(what: &str, since: std::time::Instant) {
    log::debug!(
        "start-up: {what} in {:.1} ms",
        since.elapsed().as_secs_f64() * 1e3
    );
}

/// A byte size given on the command line that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SizeError {
    #[error("`{0}` is not a size (examples: 8M, 512K, 4194304)")]
    NotASize(String),
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// Parses a byte size such as `8M`, `512K`, `16MiB` or `4194304` (the CLI's one parser
/// for sizes: ring buffers here, memory limits in the launcher).
pub(crate) fn parse_bytes(s: &str) -> Result<u64, SizeError> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = [
        ("kib", 1u64 << 10),
        ("mib", 1 << 20),
        ("gib", 1 << 30),
        ("k", 1 << 10),
        ("m", 1 << 20),
        ("g", 1 << 30),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suf, m)| t.strip_suffix(suf).map(|n| (n.trim().to_string(), *m)))
    .unwrap_or((t.clone(), 1));
    let n: u64 = num
        .parse()
        .map_err(|_| SizeError::NotASize(s.to_string()))?;
    n.checked_mul(mult)
        .ok_or_else(|| SizeError::TooLarge(s.to_string()))
}

/// A ring buffer size: a byte size that fits the kernel's u32.
pub(crate) fn parse_size(s: &str) -> Result<u32, SizeError> {
    parse_bytes(s)?
        .try_into()
        .map_err(|_| SizeError::TooLarge(s.to_string()))
}

/// Turns the kernel's BPF statistics on (Linux 5.8+) until the returned descriptor closes;
/// a kernel that refuses leaves the agent running without them.
fn enable_stats() -> Option<std::os::fd::OwnedFd> {
    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => Some(fd),
        Err(e) => {
            log::warn!("--bpf-stats on: the kernel refused BPF statistics ({e}); programs' runs are not counted");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("8G").is_err());
    }
}
