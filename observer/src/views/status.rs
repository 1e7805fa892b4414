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
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Health {
    pub(crate) version: String,
    pub(crate) kernel: String,
    pub(crate) uptime_s: f64,
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
}

/// One export sink's lines: written, and dropped (its queue was full or a write failed).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ExportCounts {
    pub(crate) sink: String,
    pub(crate) sent: u64,
    pub(crate) dropped: u64,
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
