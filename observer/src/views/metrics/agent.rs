//! The node's and the agent's own figures on /metrics: processes and zombies, states,
//! adoptions, events by type, losses, reconciliation, the table's bounds, the API
//! listeners and the build. Label-less or labelled by type — never by process.

use super::family::Family;
use crate::views::status::{ConnCounts, EventCounts, ExportCounts, Health};

pub(super) fn families(h: &Health, fams: &mut Vec<Family>) {
    scalars(h, fams);
    memory(h, fams);
    connections(h, fams);
    push(
        fams,
        "observer_orphan_adoptions_total",
        "Orphans adopted, by adopter kind.",
        true,
        &|f| {
            for (k, n) in &h.adoptions {
                f.add1("adopter", k, *n as f64);
            }
        },
    );
    events(h, fams);
    cost(h, fams);
    export(h, fams);
    store(h, fams);
    exe_hashes(h, fams);
    push(
        fams,
        "observer_build_info",
        "Build and kernel of the agent (value 1).",
        false,
        &|f| f.add(&[("kernel", &h.kernel), ("version", &h.version)], 1.0),
    );
}

/// One family, filled by `fill`.
fn push(
    fams: &mut Vec<Family>,
    name: &'static str,
    help: &'static str,
    counter: bool,
    fill: &dyn Fn(&mut Family),
) {
    let mut fam = Family::new(name, help, counter);
    fill(&mut fam);
    fams.push(fam);
}

/// Label-less node and agent figures, then processes by state.
fn scalars(h: &Health, fams: &mut Vec<Family>) {
    for (name, help, counter, v) in table_figures(h).into_iter().chain(agent_figures(h)) {
        push(fams, name, help, counter, &|f| f.add(&[], v));
    }
    push(
        fams,
        "observer_processes_by_state",
        "Processes by /proc state letter at the last /proc scan.",
        false,
        &|f| {
            for (s, n) in &h.states {
                f.add1("state", s, *n as f64);
            }
        },
    );
}

/// A label-less figure: (name, help, counter?, value).
type Scalar = (&'static str, &'static str, bool, f64);

/// What the node runs and the table holds.
fn table_figures(h: &Health) -> [Scalar; 8] {
    [
        (
            "observer_processes",
            "Processes in the agent's table.",
            false,
            h.processes as f64,
        ),
        (
            "observer_zombies",
            "Zombies on the node (exited, not reaped).",
            false,
            h.zombies as f64,
        ),
        (
            "observer_containers",
            "Containers with processes.",
            false,
            h.containers as f64,
        ),
        (
            "observer_event_decode_errors_total",
            "Ring buffer records the agent could not decode.",
            true,
            h.decode_errors as f64,
        ),
        (
            "observer_ringbuf_size_bytes",
            "Size of the kernel ring buffer.",
            false,
            h.ringbuf_bytes as f64,
        ),
        (
            "observer_table_processes",
            "Entries in the agent's process table.",
            false,
            h.processes as f64,
        ),
        (
            "observer_reconcile_corrections_total",
            "Table entries fixed by reconciliation with /proc.",
            true,
            h.corrections as f64,
        ),
        (
            "observer_events_lost_unreconciled",
            "Events lost in the kernel after the start of the most recent completed full scan: what they described may be wrong in the table until the scan they started ends.",
            false,
            h.lost_unreconciled().unwrap_or(0) as f64,
        ),
    ]
}

/// The agent's own work and life.
fn agent_figures(h: &Health) -> [Scalar; 7] {
    [
        (
            "observer_reconciliations_total",
            "Reconciliations with /proc (full scans).",
            true,
            h.reconciliations as f64,
        ),
        (
            "observer_reconcile_checks_total",
            "Cheap reconciliation checks (every process id, from a task-iterator pass or /proc's directory, compared with the table); a disagreement starts a full scan.",
            true,
            h.checks as f64,
        ),
        (
            "observer_view_unreadable_processes_total",
            "Processes a view listed with the table's facts only (live: false) because their /proc files could not be read (file descriptors exhausted, permission).",
            true,
            h.unreadable_processes as f64,
        ),
        (
            "observer_scan_duration_seconds",
            "Duration of the last /proc scan.",
            false,
            h.last_scan_s,
        ),
        (
            "observer_agent_starts_total",
            "Agents started on this node with this socket (this one included).",
            true,
            h.agent_starts as f64,
        ),
        (
            "observer_agent_unclean_restarts_total",
            "Agents that ended without a clean stop (killed, crashed) before this one started.",
            true,
            h.unclean_restarts as f64,
        ),
        (
            "observer_uptime_seconds",
            "Seconds since the agent started.",
            false,
            h.uptime_s,
        ),
    ]
}

/// What observer costs the node: the agent's CPU and memory, and with `--bpf-stats on` its
/// programs' in-kernel runs and time (absent otherwise: the kernel counts nothing then).
fn cost(h: &Health, fams: &mut Vec<Family>) {
    push(
        fams,
        "observer_agent_cpu_seconds_total",
        "CPU time the agent used (user + system, every thread), in seconds.",
        true,
        &|f| f.add(&[], h.cpu_s),
    );
    push(
        fams,
        "observer_agent_resident_bytes",
        "The agent's resident memory (RSS).",
        false,
        &|f| f.add(&[], h.rss_bytes as f64),
    );
    if !h.bpf_stats {
        return;
    }
    push(
        fams,
        "observer_bpf_program_runs_total",
        "Runs of observer's kernel program for each event type (--bpf-stats on).",
        true,
        &|f| {
            for e in &h.events {
                f.add1("program", &e.kind, e.runs as f64);
            }
        },
    );
    push(
        fams,
        "observer_bpf_program_run_seconds_total",
        "Time spent in observer's kernel program for each event type, in seconds (--bpf-stats on).",
        true,
        &|f| {
            for e in &h.events {
                f.add1("program", &e.kind, e.run_ns as f64 / 1e9);
            }
        },
    );
}

/// What the agent dropped and what it holds, by kind.
fn memory(h: &Health, fams: &mut Vec<Family>) {
    push(
        fams,
        "observer_evictions_total",
        "Entries dropped to bound the agent's memory, by kind (ended containers past their retention or over --max-containers, unreferenced cgroup paths, cgroup ids and executable paths, container-name cache entries, ended processes past the history bounds or retention).",
        true,
        &|f| {
            let e = &h.evictions;
            for (what, n) in [
                ("container", e.containers),
                ("cgroup_path", e.cgroup_paths),
                ("cgroup_id", e.cgroup_ids),
                ("exe", e.exes),
                ("name_cache", h.name_cache_evictions),
                ("history", e.history),
            ] {
                f.add1("what", what, n as f64);
            }
        },
    );
    push(
        fams,
        "observer_retained_entries",
        "Entries the agent holds in memory, by kind: processes (bounded by kernel.pid_max), containers live and ended (bounded by --max-containers), cgroup paths, cgroup ids and executable paths (compacted when mostly unreferenced), ended processes in the histories.",
        false,
        &|f| {
            let r = &h.retained;
            for (what, n) in [
                ("process", r.processes),
                ("container", r.containers),
                ("cgroup_path", r.cgroup_paths),
                ("cgroup_id", r.cgroup_ids),
                ("exe", r.exes),
                ("history", r.history),
            ] {
                f.add1("what", what, n as f64);
            }
        },
    );
}

/// The API listeners' connection counts, by listener.
fn connections(h: &Health, fams: &mut Vec<Family>) {
    type ConnField = fn(&ConnCounts) -> u64;
    let conns: [(&'static str, &'static str, bool, ConnField); 6] = [
        (
            "observer_api_connections_open",
            "Open connections per API listener.",
            false,
            |c| c.open,
        ),
        (
            "observer_api_connections_total",
            "Connections accepted per API listener.",
            true,
            |c| c.accepted,
        ),
        (
            "observer_api_connections_rejected_total",
            "Connections closed at once because the listener had --max-connections open.",
            true,
            |c| c.rejected,
        ),
        (
            "observer_api_connections_timed_out_total",
            "Connections closed for a slow header, idling, or a reader that stopped reading.",
            true,
            |c| c.timed_out,
        ),
        (
            "observer_api_tls_handshake_failures_total",
            "Connections whose TLS handshake failed (--web-config).",
            true,
            |c| c.tls_failed,
        ),
        (
            "observer_api_unauthorized_total",
            "Requests refused for missing or wrong credentials (--web-config).",
            true,
            |c| c.unauthorized,
        ),
    ];
    for (name, help, counter, field) in conns {
        push(fams, name, help, counter, &|f| {
            for c in &h.http {
                f.add1("listener", &c.listener, field(c) as f64);
            }
        });
    }
}

/// Lines each export sink wrote and dropped (only when one is configured).
fn export(h: &Health, fams: &mut Vec<Family>) {
    if h.export.is_empty() {
        return;
    }
    type Field = fn(&ExportCounts) -> u64;
    let figures: [(&'static str, &'static str, Field); 2] = [
        (
            "observer_export_sent_total",
            "Lines (events and history entries) an export sink wrote.",
            |c| c.sent,
        ),
        (
            "observer_export_dropped_total",
            "Lines an export sink dropped: its queue was full or a write failed.",
            |c| c.dropped,
        ),
    ];
    let queued: (&'static str, &'static str, Field) = (
        "observer_export_queued",
        "Lines waiting in an export sink's queue (it drops what does not fit).",
        |c| c.queued,
    );
    let gauges = std::iter::once((queued, false));
    for ((name, help, field), counter) in figures.map(|f| (f, true)).into_iter().chain(gauges) {
        push(fams, name, help, counter, &|f| {
            for c in &h.export {
                f.add1("sink", &c.sink, field(c) as f64);
            }
        });
    }
}

/// What became of the executables execs ran (only when hashing is on).
fn exe_hashes(h: &Health, fams: &mut Vec<Family>) {
    let x = &h.exe_hashes;
    if !x.on {
        return;
    }
    push(
        fams,
        "observer_exe_hashes_total",
        "Executables of execs by hash result: computed, cached, gone, too_large, busy, \
         error; and cache entries evicted.",
        true,
        &|f| {
            for (k, n) in &x.results {
                f.add1("result", k, *n as f64);
            }
        },
    );
    push(
        fams,
        "observer_exe_hash_cache_entries",
        "Executable identities in the hash cache (--hash-cache).",
        false,
        &|f| f.add(&[], x.cache_entries as f64),
    );
}

/// The durable history store (only when it is on).
fn store(h: &Health, fams: &mut Vec<Family>) {
    let Some(s) = &h.history_store else {
        return;
    };
    let figures: [Scalar; 6] = [
        (
            "observer_history_store_written_total",
            "History entries written to the store on disk.",
            true,
            s.written as f64,
        ),
        (
            "observer_history_store_dropped_total",
            "History entries never stored: the writer's queue was full or the store failed.",
            true,
            s.dropped as f64,
        ),
        (
            "observer_history_store_evicted_total",
            "History entries evicted from the store (--history-disk-max, --history-disk-retention).",
            true,
            s.evicted as f64,
        ),
        (
            "observer_history_store_errors_total",
            "Failed opens and commits of the history store (the history stays in memory).",
            true,
            s.errors as f64,
        ),
        (
            "observer_history_store_moved_aside_total",
            "Unreadable history store files moved aside and replaced by a new store.",
            true,
            s.moved_aside as f64,
        ),
        (
            "observer_history_store_entries",
            "History entries in the store.",
            false,
            s.entries as f64,
        ),
    ];
    for (name, help, counter, v) in figures {
        push(fams, name, help, counter, &|f| f.add(&[], v));
    }
    push(
        fams,
        "observer_history_store_up",
        "1 when the history store is open and written, 0 while it fails.",
        false,
        &|f| f.add(&[], if s.state == "ok" { 1.0 } else { 0.0 }),
    );
}

/// Events by type: received, emitted, lost, skipped, failed reads.
fn events(h: &Health, fams: &mut Vec<Family>) {
    type EventField = fn(&EventCounts) -> u64;
    let per_type: [(&'static str, &'static str, EventField); 5] = [
        (
            "observer_events_received_total",
            "Events the agent took from the ring buffer, by type.",
            |e| e.received,
        ),
        (
            "observer_events_emitted_total",
            "Events the kernel programs submitted, by type.",
            |e| e.emitted,
        ),
        (
            "observer_events_lost_total",
            "Events lost because the ring buffer was full, by type.",
            |e| e.dropped,
        ),
        (
            "observer_events_skipped_total",
            "Events lost because the kernel skipped a program's run (already running on that CPU), by type.",
            |e| e.skipped,
        ),
        (
            "observer_event_read_errors_total",
            "Events for which a kernel read failed, by type.",
            |e| e.read_errors,
        ),
    ];
    for (name, help, field) in per_type {
        push(fams, name, help, true, &|f| {
            for e in &h.events {
                f.add1("type", &e.kind, field(e) as f64);
            }
        });
    }
}
