//! The agent's account of itself, as /v1/status serves it (JSON) and /metrics shows it:
//! events by type, losses, the table's size and bounds, reconciliations, scan times, the
//! listeners' connections. The agent fills it in (agent/health.rs); the API and the metrics
//! view only carry and render it, so the shape lives here, below both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct EventCounts {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// Submitted to the ring buffer by the kernel programs.
    pub(crate) emitted: u64,
    /// Lost in the kernel because the ring buffer was full.
    pub(crate) dropped: u64,
    /// Lost in the kernel because it skipped the program's run (already running on that
    /// CPU: its task was preempted, or an interrupt hit the same tracepoint).
    pub(crate) skipped: u64,
    /// Events where a kernel read failed.
    pub(crate) read_errors: u64,
    /// Taken from the ring buffer by the agent.
    pub(crate) received: u64,
    /// Applied to the table.
    pub(crate) applied: u64,
    /// Runs of the type's program and their time in ns, counted while the kernel's BPF
    /// statistics are on (`bpf_stats`).
    #[serde(default)]
    pub(crate) runs: u64,
    #[serde(default)]
    pub(crate) run_ns: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Health {
    pub(crate) version: String,
    pub(crate) kernel: String,
    pub(crate) uptime_s: f64,
    /// The agent's own CPU time (user + system, every thread) and resident memory.
    #[serde(default)]
    pub(crate) cpu_s: f64,
    #[serde(default)]
    pub(crate) rss_bytes: u64,
    /// This agent holds the kernel's BPF statistics on (`--bpf-stats on`): the events'
    /// `runs` and `run_ns` count.
    #[serde(default)]
    pub(crate) bpf_stats: bool,
    pub(crate) processes: u64,
    pub(crate) zombies: u64,
    pub(crate) containers: u64,
    pub(crate) events: Vec<EventCounts>,
    pub(crate) decode_errors: u64,
    pub(crate) ringbuf_bytes: u64,
    pub(crate) attached: Vec<String>,
    /// Those attached as BTF tracepoints (the rest of the lifecycle ones are raw).
    #[serde(default)]
    pub(crate) btf_tracepoints: Vec<String>,
    pub(crate) missing: Vec<(String, String)>,
    pub(crate) corrections: u64,
    pub(crate) reconciliations: u64,
    /// Of the events lost in the kernel (`dropped` and `skipped` summed over `events`), those
    /// lost before the start of the most recent completed full scan: the table reflects them;
    /// a loss above this count is being reconciled (a scan runs, or starts within a settle
    /// period). None from an agent that does not say.
    #[serde(default)]
    pub(crate) lost_reconciled: Option<u64>,
    /// Cheap reconciliation checks (every process id, from a task-iterator pass or /proc's
    /// directory, compared with the table); those that found a disagreement started a full
    /// scan.
    #[serde(default)]
    pub(crate) checks: u64,
    /// The pass right after ready that reads the command lines, executables, namespace
    /// inodes and cgroup ids of the processes found at start-up is still running.
    #[serde(default)]
    pub(crate) startup_details_pending: bool,
    /// Where the start-up table came from: `iterator` (the kernel's task iterator) or
    /// `proc`.
    #[serde(default)]
    pub(crate) seed: String,
    pub(crate) last_scan_s: f64,
    /// Processes by /proc state letter as of the last scan (seed or reconciliation).
    pub(crate) states: BTreeMap<String, u64>,
    pub(crate) adoptions: BTreeMap<String, u64>,
    pub(crate) cgroup_walks: u64,
    /// Connections per API listener.
    #[serde(default)]
    pub(crate) http: Vec<ConnCounts>,
    /// Agents started with this socket's state file, and those that did not stop cleanly.
    #[serde(default)]
    pub(crate) agent_starts: u64,
    #[serde(default)]
    pub(crate) unclean_restarts: u64,
    /// Entries evicted to bound memory (ended containers, unreferenced paths).
    #[serde(default)]
    pub(crate) evictions: crate::table::gc::Evictions,
    /// What the table holds now (bounded by pid_max, --max-containers and compaction).
    #[serde(default)]
    pub(crate) retained: crate::table::gc::Retained,
    /// Container-name cache entries evicted (filled in by the API, which owns the cache).
    #[serde(default)]
    pub(crate) name_cache_evictions: u64,
    /// Processes a view listed from the table's facts because their /proc files could not
    /// be read (filled in by the API, which owns the open stat files).
    #[serde(default)]
    pub(crate) unreadable_processes: u64,
    /// Lines written and dropped per export sink (`--export-file`, `--export-stdout`).
    #[serde(default)]
    pub(crate) export: Vec<ExportCounts>,
    /// The durable history store (`--state-dir`); None when it is off.
    #[serde(default)]
    pub(crate) history_store: Option<StoreStatus>,
    /// The executables' SHA-256 (`--hash`).
    #[serde(default)]
    pub(crate) exe_hashes: ExeHashCounts,
}

/// What became of the executables of the execs applied, by result — `computed` (read and
/// hashed), `cached` (an identity hashed before, or being hashed), `gone`, `too_large`,
/// `busy`, `error` — and identities `evicted` from the cache.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ExeHashCounts {
    /// Hashing is on.
    pub(crate) on: bool,
    /// Identities in the cache now.
    pub(crate) cache_entries: u64,
    pub(crate) results: BTreeMap<String, u64>,
}

impl ExeHashCounts {
    pub(crate) fn of(h: &crate::table::exe_hash::Hasher) -> ExeHashCounts {
        ExeHashCounts {
            on: h.is_on(),
            cache_entries: h.cached() as u64,
            results: h
                .counts()
                .pairs()
                .iter()
                .map(|(k, n)| ((*k).to_string(), *n))
                .collect(),
        }
    }
}

/// The durable history store: its state, what it holds, and what it wrote, dropped,
/// evicted and failed since the agent started.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct StoreStatus {
    /// `opening`, `ok`, `failing` (cannot be opened or written: the history is in memory
    /// only, retried) or `stopped`.
    pub(crate) state: String,
    pub(crate) path: String,
    pub(crate) entries: u64,
    /// The entries' accounted size (bytes).
    pub(crate) bytes: u64,
    pub(crate) written: u64,
    /// Entries waiting for the writer's next commit (once a second); absent from agents
    /// older than the field.
    #[serde(default)]
    pub(crate) queued: u64,
    /// Entries never stored: the writer's queue was full, or the store was failing.
    pub(crate) dropped: u64,
    /// Entries evicted by --history-disk-max and --history-disk-retention, the oldest first.
    pub(crate) evicted: u64,
    /// Failed opens and commits.
    pub(crate) errors: u64,
    /// Unreadable files moved aside (`<file>.corrupt-<time>`).
    pub(crate) moved_aside: u64,
}

/// One export sink's lines: written, dropped (its queue was full or a write failed), and
/// waiting in its queue now.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ExportCounts {
    pub(crate) sink: String,
    pub(crate) sent: u64,
    pub(crate) dropped: u64,
    #[serde(default)]
    pub(crate) queued: u64,
}

/// Connections of one API listener.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ConnCounts {
    pub(crate) listener: String,
    pub(crate) open: u64,
    pub(crate) accepted: u64,
    pub(crate) rejected: u64,
    pub(crate) timed_out: u64,
    #[serde(default)]
    pub(crate) tls_failed: u64,
    #[serde(default)]
    pub(crate) unauthorized: u64,
}

/// `observer status`: what the agent does and what it costs the node, for one node.
impl Health {
    /// Events lost in the kernel, dropped or skipped.
    pub(crate) fn lost(&self) -> u64 {
        self.events.iter().map(|e| e.dropped + e.skipped).sum()
    }

    /// Events lost after the start of the most recent completed full scan: what they
    /// described may be wrong in the table until the scan they started ends. None from an
    /// agent that does not say.
    pub(crate) fn lost_unreconciled(&self) -> Option<u64> {
        self.lost_reconciled.map(|r| self.lost().saturating_sub(r))
    }
}

/// `observer status`: the agent's health as text.
pub(crate) fn render(h: &super::text::Escaped<Health>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let up = h.uptime_s.max(1e-9);
    let _ = writeln!(
        out,
        "observer agent {} on Linux {}, up {}",
        h.version,
        h.kernel,
        humantime::format_duration(std::time::Duration::from_secs(h.uptime_s as u64))
    );
    let _ = writeln!(
        out,
        "node: {} processes, {} zombies, {} containers",
        h.processes, h.zombies, h.containers
    );
    let _ = writeln!(
        out,
        "agent: {:.1} s of CPU ({:.3}% of a core since start), {:.1} MB resident",
        h.cpu_s,
        100.0 * h.cpu_s / up,
        h.rss_bytes as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "\n{:<14} {:>12} {:>12} {:>8} {:>14}",
        "EVENT", "EMITTED", "APPLIED", "LOST", "IN-KERNEL/RUN"
    );
    for e in &h.events {
        let per_run = if h.bpf_stats && e.runs > 0 {
            format!("{:.2} µs", e.run_ns as f64 / e.runs as f64 / 1e3)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "{:<14} {:>12} {:>12} {:>8} {:>14}",
            e.kind,
            e.emitted,
            e.applied,
            e.dropped + e.skipped,
            per_run
        );
    }
    if h.lost() > 0 {
        let pending = h.lost_unreconciled().map_or(String::new(), |n| {
            format!(", {n} not yet reconciled with /proc")
        });
        let _ = writeln!(
            out,
            "\nlost: {} events in all{pending} ({} corrections in {} full scans)",
            h.lost(),
            h.corrections,
            h.reconciliations
        );
    }
    if h.bpf_stats {
        let ns: u64 = h.events.iter().map(|e| e.run_ns).sum();
        let _ = writeln!(
            out,
            "\nin the kernel: {:.3} s in observer's programs ({:.3}% of a core since start)",
            ns as f64 / 1e9,
            100.0 * ns as f64 / 1e9 / up
        );
    } else {
        let _ = writeln!(
            out,
            "\nin-kernel time is not counted: start the agent with --bpf-stats on"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(kind: &str, dropped: u64, skipped: u64) -> EventCounts {
        EventCounts {
            kind: kind.into(),
            dropped,
            skipped,
            ..EventCounts::default()
        }
    }

    #[test]
    fn losses_above_the_last_scans_count_are_unreconciled_and_said_so() {
        let mut h = Health {
            events: vec![counts("fork", 30, 2), counts("exec", 8, 0)],
            lost_reconciled: Some(32),
            corrections: 3,
            reconciliations: 2,
            ..Health::default()
        };
        assert_eq!((h.lost(), h.lost_unreconciled()), (40, Some(8)));
        let text = render(&super::super::text::Escaped::new(h.clone()).unwrap());
        assert!(
            text.contains("lost: 40 events in all, 8 not yet reconciled with /proc (3 corrections in 2 full scans)"),
            "{text}"
        );
        h.lost_reconciled = None;
        let text = render(&super::super::text::Escaped::new(h.clone()).unwrap());
        assert!(
            text.contains("lost: 40 events in all (3 corrections"),
            "an older agent's status: {text}"
        );
        h.lost_reconciled = Some(40);
        assert_eq!(h.lost_unreconciled(), Some(0));
        h.events.clear();
        let text = render(&super::super::text::Escaped::new(h).unwrap());
        assert!(
            !text.contains("lost:"),
            "nothing lost, nothing said: {text}"
        );
    }
}
