//! The agent's account of itself, as /v1/status serves it (JSON) and /metrics shows it:
//! events by type, losses, the table's size and bounds, reconciliations, scan times, the
//! listeners' connections. The agent fills it in (agent/health.rs); the API and the metrics
//! view only carry and render it, so the shape lives here, below both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EventCounts {
    #[serde(rename = "type")]
    pub kind: String,
    /// Submitted to the ring buffer by the kernel programs.
    pub emitted: u64,
    /// Lost in the kernel because the ring buffer was full.
    pub dropped: u64,
    /// Lost in the kernel because it skipped the program's run (already running on that
    /// CPU: its task was preempted, or an interrupt hit the same tracepoint).
    pub skipped: u64,
    /// Events where a kernel read failed.
    pub read_errors: u64,
    /// Taken from the ring buffer by the agent.
    pub received: u64,
    /// Applied to the table.
    pub applied: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Health {
    pub version: String,
    pub kernel: String,
    pub uptime_s: f64,
    pub processes: u64,
    pub zombies: u64,
    pub containers: u64,
    pub events: Vec<EventCounts>,
    pub decode_errors: u64,
    pub ringbuf_bytes: u64,
    pub attached: Vec<String>,
    /// Those attached as BTF tracepoints (the rest of the lifecycle ones are raw).
    #[serde(default)]
    pub btf_tracepoints: Vec<String>,
    pub missing: Vec<(String, String)>,
    pub corrections: u64,
    pub reconciliations: u64,
    /// Cheap reconciliation checks (every process id, from a task-iterator pass or /proc's
    /// directory, compared with the table); those that found a disagreement started a full
    /// scan.
    #[serde(default)]
    pub checks: u64,
    /// The pass right after ready that reads the command lines, executables, namespace
    /// inodes and cgroup ids of the processes found at start-up is still running.
    #[serde(default)]
    pub startup_details_pending: bool,
    /// Where the start-up table came from: `iterator` (the kernel's task iterator) or
    /// `proc`.
    #[serde(default)]
    pub seed: String,
    pub last_scan_s: f64,
    /// Processes by /proc state letter as of the last scan (seed or reconciliation).
    pub states: BTreeMap<String, u64>,
    pub adoptions: BTreeMap<String, u64>,
    pub cgroup_walks: u64,
    /// Connections per API listener.
    #[serde(default)]
    pub http: Vec<ConnCounts>,
    /// Agents started with this socket's state file, and those that did not stop cleanly.
    #[serde(default)]
    pub agent_starts: u64,
    #[serde(default)]
    pub unclean_restarts: u64,
    /// Entries evicted to bound memory (ended containers, unreferenced paths).
    #[serde(default)]
    pub evictions: crate::table::gc::Evictions,
    /// What the table holds now (bounded by pid_max, --max-containers and compaction).
    #[serde(default)]
    pub retained: crate::table::gc::Retained,
    /// Container-name cache entries evicted (filled in by the API, which owns the cache).
    #[serde(default)]
    pub name_cache_evictions: u64,
    /// Processes a view listed from the table's facts because their /proc files could not
    /// be read (filled in by the API, which owns the open stat files).
    #[serde(default)]
    pub unreadable_processes: u64,
}

/// Connections of one API listener.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConnCounts {
    pub listener: String,
    pub open: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub timed_out: u64,
    #[serde(default)]
    pub tls_failed: u64,
    #[serde(default)]
    pub unauthorized: u64,
}
