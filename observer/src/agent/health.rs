//! The agent's account of itself: events by type (kernel and userspace), losses, table size,
//! reconciliations, scan times — gathered here into the shape `views::status` defines,
//! which the API serves as JSON on /v1/status and as metrics.

use std::collections::BTreeMap;

use observer_common::EventKind;

use crate::{
    events::reader::ReaderStats,
    host::scan,
    probes::KernelStats,
    table::Table,
    views::status::{ConnCounts, EventCounts, Health},
};

pub(crate) struct Inputs<'a> {
    pub(crate) table: &'a Table,
    pub(crate) kernel: KernelStats,
    pub(crate) reader: &'a ReaderStats,
    pub(crate) uptime_s: f64,
    pub(crate) ringbuf_bytes: u32,
    pub(crate) attached: &'a [String],
    pub(crate) btf_attached: &'a [String],
    pub(crate) missing: &'a [(String, String)],
    pub(crate) reconciliations: u64,
    pub(crate) lost_reconciled: u64,
    pub(crate) checks: u64,
    pub(crate) startup_details_pending: bool,
    pub(crate) seed: &'static str,
    pub(crate) last_scan_s: f64,
    pub(crate) states: &'a BTreeMap<String, u64>,
    pub(crate) http: Vec<ConnCounts>,
    pub(crate) restarts: super::marker::Restarts,
    /// The agent holds the kernel's BPF statistics on.
    pub(crate) bpf_stats: bool,
}

pub(crate) fn health(i: Inputs) -> Health {
    let t = i.table;
    let own = scan::live(std::process::id());
    Health {
        version: env!("CARGO_PKG_VERSION").to_string(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        uptime_s: i.uptime_s,
        cpu_s: own.as_ref().map_or(0.0, |l| {
            l.cpu_ticks as f64 / scan::ticks_per_second() as f64
        }),
        rss_bytes: own.as_ref().map_or(0, |l| l.rss_pages * scan::page_size()),
        bpf_stats: i.bpf_stats,
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
                runs: i.kernel.runs(k).0,
                run_ns: i.kernel.runs(k).1,
            })
            .collect(),
        decode_errors: i.reader.decode_errors,
        ringbuf_bytes: i.ringbuf_bytes as u64,
        attached: i.attached.to_vec(),
        btf_tracepoints: i.btf_attached.to_vec(),
        missing: i.missing.to_vec(),
        corrections: t.stats.corrections,
        reconciliations: i.reconciliations,
        lost_reconciled: Some(i.lost_reconciled),
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
        // The pump owns the exporter: Agent::status fills this in.
        export: Vec::new(),
        history_store: None,
        exe_hashes: Default::default(),
        agent_starts: i.restarts.starts,
        unclean_restarts: i.restarts.unclean,
    }
}

/// Counts processes by /proc state letter.
pub(crate) fn states(scans: &[crate::host::scan::Scanned]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for s in scans {
        *m.entry(s.state.to_string()).or_insert(0) += 1;
    }
    m
}
