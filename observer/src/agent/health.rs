//! The agent's account of itself: events by type (kernel and userspace), losses, table size,
//! reconciliations, scan times. Served as JSON on /v1/status and as metrics.

use std::collections::BTreeMap;

use observer_common::EventKind;
use serde::{Deserialize, Serialize};

use crate::{events::reader::ReaderStats, probes::KernelStats, table::Table};

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
    pub http: Vec<super::http::ConnCounts>,
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

pub struct Inputs<'a> {
    pub table: &'a Table,
    pub kernel: KernelStats,
    pub reader: &'a ReaderStats,
    pub uptime_s: f64,
    pub ringbuf_bytes: u32,
    pub attached: &'a [String],
    pub btf_attached: &'a [String],
    pub missing: &'a [(String, String)],
    pub reconciliations: u64,
    pub checks: u64,
    pub startup_details_pending: bool,
    pub seed: &'static str,
    pub last_scan_s: f64,
    pub states: &'a BTreeMap<String, u64>,
    pub http: Vec<super::http::ConnCounts>,
    pub restarts: super::marker::Restarts,
}

pub fn health(i: Inputs) -> Health {
    let t = i.table;
    Health {
        version: env!("CARGO_PKG_VERSION").to_string(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        uptime_s: i.uptime_s,
        processes: t.len() as u64,
        zombies: t.zombies() as u64,
        containers: t.live_containers() as u64,
        events: EventKind::ALL
            .iter()
            .map(|&k| EventCounts {
                kind: k.name().to_string(),
                emitted: i.kernel.emitted(k),
                dropped: i.kernel.dropped(k),
                skipped: i.kernel.skipped(k),
                read_errors: i.kernel.read_errors(k),
                received: i.reader.received(k),
                applied: t.stats.applied[k as usize],
            })
            .collect(),
        decode_errors: i.reader.decode_errors,
        ringbuf_bytes: i.ringbuf_bytes as u64,
        attached: i.attached.to_vec(),
        btf_tracepoints: i.btf_attached.to_vec(),
        missing: i.missing.to_vec(),
        corrections: t.stats.corrections,
        reconciliations: i.reconciliations,
        checks: i.checks,
        startup_details_pending: i.startup_details_pending,
        seed: i.seed.to_string(),
        last_scan_s: i.last_scan_s,
        states: i.states.clone(),
        adoptions: [("subreaper", 0), ("namespace_init", 1), ("host_init", 2)]
            .iter()
            .map(|(n, idx)| (n.to_string(), t.stats.adoptions[*idx]))
            .collect(),
        cgroup_walks: t.stats.cgroup_walks,
        http: i.http,
        evictions: t.evictions(),
        retained: t.retained(),
        name_cache_evictions: 0,
        unreadable_processes: 0,
        agent_starts: i.restarts.starts,
        unclean_restarts: i.restarts.unclean,
    }
}

/// Counts processes by /proc state letter.
pub fn states(scans: &[crate::host::scan::Scanned]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for s in scans {
        *m.entry(s.state.to_string()).or_insert(0) += 1;
    }
    m
}
