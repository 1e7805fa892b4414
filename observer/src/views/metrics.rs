//! Prometheus exposition of the agent's state (the `prometheus` crate's data model and text
//! encoder): per-container process, zombie, event and cgroup resource metrics, node-wide
//! process states and orphan adoptions, and the agent's own health. Labels are per
//! container, never per process; `--metrics-labels` keeps a subset (series that then share
//! labels are summed, or maxed for ages).

use std::collections::BTreeMap;

use prometheus::{
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
    TextEncoder,
};

use super::model::{meta_of, short_id, ViewCtx};
use crate::{
    agent::health::Health, containers::cgroupfs::Resources, table::summary::ContainerSummary,
};

pub const CONTAINER_LABELS: [&str; 5] = [
    "container_id",
    "container_name",
    "runtime",
    "pod",
    "namespace",
];

/// Parses `--metrics-labels`.
pub fn parse_labels(s: &str) -> Result<Vec<String>, String> {
    let mut v = Vec::new();
    for l in s.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        if !CONTAINER_LABELS.contains(&l) {
            return Err(format!(
                "unknown metrics label `{l}` (allowed: {})",
                CONTAINER_LABELS.join(", ")
            ));
        }
        v.push(l.to_string());
    }
    Ok(v)
}

/// One container's metrics input.
pub struct ContainerSample {
    pub labels: Vec<(String, String)>,
    pub summary: ContainerSummary,
    pub resources: Resources,
    pub oldest_zombie_age_s: Option<f64>,
    /// The container has ended (still retained): only its counters are exported.
    pub ended: bool,
}

/// Builds container samples: names from the runtimes' state, resources from cgroup files
/// (`resources(path)` — the caller caches limits).
pub fn samples(
    ctx: &mut ViewCtx,
    containers: &[ContainerSummary],
    allow: &[String],
    mut resources: impl FnMut(&str) -> Resources,
) -> Vec<ContainerSample> {
    let pods = super::pods::membership(ctx, containers);
    containers
        .iter()
        .map(|s| {
            let mut meta = meta_of(ctx, s);
            if let Some((pod, ns, _)) = pods.get(&s.index) {
                meta.pod = meta.pod.or_else(|| Some(pod.clone()));
                meta.pod_namespace = meta.pod_namespace.or_else(|| ns.clone());
            }
            let all = [
                ("container_id", short_id(&s.container.key.id)),
                ("container_name", meta.name.clone().unwrap_or_default()),
                (
                    "runtime",
                    meta.runtime
                        .unwrap_or(s.container.key.runtime)
                        .as_str()
                        .to_string(),
                ),
                ("pod", meta.pod.clone().unwrap_or_default()),
                (
                    "namespace",
                    meta.pod_namespace
                        .clone()
                        .or_else(|| s.container.ctr_namespace.clone())
                        .unwrap_or_default(),
                ),
            ];
            let labels = all
                .into_iter()
                .filter(|(k, _)| allow.iter().any(|a| a == k))
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            ContainerSample {
                labels,
                resources: if s.container.cgroup.is_empty() {
                    Resources::default()
                } else {
                    resources(&s.container.cgroup)
                },
                oldest_zombie_age_s: s
                    .oldest_zombie_ns
                    .map(|t| ctx.now_ns.saturating_sub(t) as f64 / 1e9),
                summary: s.clone(),
                ended: false,
            }
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Agg {
    Sum,
    Max,
}

struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    agg: Agg,
    series: BTreeMap<Vec<(String, String)>, f64>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, counter: bool) -> Self {
        Family {
            name,
            help,
            counter,
            agg: Agg::Sum,
            series: BTreeMap::new(),
        }
    }

    fn add(&mut self, labels: &[(String, String)], v: f64) {
        let e = self
            .series
            .entry(labels.to_vec())
            .or_insert(if self.agg == Agg::Max { f64::MIN } else { 0.0 });
        *e = if self.agg == Agg::Max {
            e.max(v)
        } else {
            *e + v
        };
    }

    fn add1(&mut self, k: &str, val: &str, v: f64) {
        self.add(&[(k.to_string(), val.to_string())], v);
    }

    fn into_proto(self) -> MetricFamily {
        let mut mf = MetricFamily::default();
        mf.set_name(self.name.to_string());
        mf.set_help(self.help.to_string());
        mf.set_field_type(if self.counter {
            MetricType::COUNTER
        } else {
            MetricType::GAUGE
        });
        let metrics = self
            .series
            .into_iter()
            .map(|(labels, v)| {
                let mut m = Metric::default();
                m.set_label(
                    labels
                        .into_iter()
                        .map(|(k, val)| {
                            let mut lp = LabelPair::default();
                            lp.set_name(k);
                            lp.set_value(val);
                            lp
                        })
                        .collect(),
                );
                if self.counter {
                    let mut c = Counter::default();
                    c.set_value(v);
                    m.set_counter(c);
                } else {
                    let mut g = Gauge::default();
                    g.set_value(v);
                    m.set_gauge(g);
                }
                m
            })
            .collect();
        mf.set_metric(metrics);
        mf
    }
}

pub fn render(samples: &[ContainerSample], h: &Health) -> String {
    let mut fams: Vec<Family> = Vec::new();
    let mut f = |name, help, counter| {
        fams.push(Family::new(name, help, counter));
        fams.len() - 1
    };
    let procs = f(
        "observer_container_processes",
        "Processes in the container (zombies included).",
        false,
    );
    let threads = f(
        "observer_container_threads",
        "Threads of the container's processes.",
        false,
    );
    let zombies = f(
        "observer_container_zombies",
        "Processes of the container that exited and are not reaped.",
        false,
    );
    let zage = f(
        "observer_container_oldest_zombie_age_seconds",
        "Age of the container's oldest zombie.",
        false,
    );
    let forks = f(
        "observer_container_forks_total",
        "Processes forked in the container since the agent started.",
        true,
    );
    let execs = f(
        "observer_container_execs_total",
        "Programs executed in the container since the agent started.",
        true,
    );
    let exits = f(
        "observer_container_exits_total",
        "Processes that exited in the container since the agent started.",
        true,
    );
    let sigs = f(
        "observer_container_signals_total",
        "Signals sent to the container's processes (those that end or stop a process, and any to its PID 1), by the kernel's verdict.",
        true,
    );
    let victims = f(
        "observer_container_oom_victims_total",
        "Processes of the container the OOM killer chose, since the agent started.",
        true,
    );
    let exit_codes = f(
        "observer_container_exit_codes_total",
        "Processes of the container that ended, by exit class: 0, 1-125, 126-127 (not executable or not found), signal.",
        true,
    );
    let ooms = f(
        "observer_container_oom_kills_total",
        "OOM kills in the container's memory cgroup.",
        true,
    );
    let cpu = f(
        "observer_container_cpu_usage_seconds_total",
        "CPU time used by the container's cgroup.",
        true,
    );
    let mem = f(
        "observer_container_memory_usage_bytes",
        "Memory charged to the container's cgroup.",
        false,
    );
    let meml = f(
        "observer_container_memory_limit_bytes",
        "Memory limit of the container's cgroup (absent: none).",
        false,
    );
    let pids = f(
        "observer_container_pids",
        "Tasks in the container's pids cgroup.",
        false,
    );
    let pidsl = f(
        "observer_container_pids_limit",
        "Task limit of the container's pids cgroup (absent: none).",
        false,
    );
    fams[zage].agg = Agg::Max;
    for s in samples {
        let l = &s.labels;
        let c = &s.summary;
        if !s.ended {
            fams[procs].add(l, c.processes as f64);
            fams[threads].add(l, c.threads as f64);
            fams[zombies].add(l, c.zombies as f64);
            fams[zage].add(l, s.oldest_zombie_age_s.unwrap_or(0.0));
        }
        fams[forks].add(l, c.container.forks as f64);
        fams[execs].add(l, c.container.execs as f64);
        fams[exits].add(l, c.container.exits as f64);
        for &(sig, result, n) in &c.container.signals {
            let mut with = l.clone();
            with.push(("signal".into(), crate::events::signals::name(sig)));
            with.push((
                "result".into(),
                crate::events::signals::result_name(result).into(),
            ));
            fams[sigs].add(&with, n as f64);
        }
        fams[victims].add(l, c.container.oom_victims as f64);
        for (class, n) in crate::table::signals::EXIT_CLASSES
            .iter()
            .zip(c.container.exit_classes)
        {
            let mut with = l.clone();
            with.push(("class".into(), class.to_string()));
            fams[exit_codes].add(&with, n as f64);
        }
        let r = &s.resources;
        let mut opt = |i: usize, v: Option<f64>| {
            if let Some(v) = v {
                fams[i].add(l, v);
            }
        };
        opt(ooms, r.oom_kills.map(|v| v as f64));
        opt(cpu, r.cpu_usage_ns.map(|v| v as f64 / 1e9));
        opt(mem, r.memory_bytes.map(|v| v as f64));
        opt(meml, r.memory_limit_bytes.map(|v| v as f64));
        opt(pids, r.pids.map(|v| v as f64));
        opt(pidsl, r.pids_limit.map(|v| v as f64));
    }

    let mut node = |name, help, counter, fill: &dyn Fn(&mut Family)| {
        let mut fam = Family::new(name, help, counter);
        fill(&mut fam);
        fams.push(fam);
    };
    // Label-less node and agent figures: (name, help, counter?, value).
    let scalars: [(&'static str, &'static str, bool, f64); 13] = [
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
            "observer_reconciliations_total",
            "Reconciliations with /proc (full scans).",
            true,
            h.reconciliations as f64,
        ),
        (
            "observer_reconcile_checks_total",
            "Cheap reconciliation checks (one read of /proc's directory compared with the table); a disagreement starts a full scan.",
            true,
            h.checks as f64,
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
    ];
    for (name, help, counter, v) in scalars {
        node(name, help, counter, &|f| f.add(&[], v));
    }
    node(
        "observer_processes_by_state",
        "Processes by /proc state letter at the last /proc scan.",
        false,
        &|f| {
            for (s, n) in &h.states {
                f.add1("state", s, *n as f64);
            }
        },
    );
    node(
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
    node(
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
    type ConnField = fn(&crate::agent::http::ConnCounts) -> u64;
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
        node(name, help, counter, &|f| {
            for c in &h.http {
                f.add1("listener", &c.listener, field(c) as f64);
            }
        });
    }
    node(
        "observer_orphan_adoptions_total",
        "Orphans adopted, by adopter kind.",
        true,
        &|f| {
            for (k, n) in &h.adoptions {
                f.add1("adopter", k, *n as f64);
            }
        },
    );
    type EventField = fn(&crate::agent::health::EventCounts) -> u64;
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
        node(name, help, true, &|f| {
            for e in &h.events {
                f.add1("type", &e.kind, field(e) as f64);
            }
        });
    }
    node(
        "observer_build_info",
        "Build and kernel of the agent (value 1).",
        false,
        &|f| {
            f.add(
                &[
                    ("kernel".into(), h.kernel.clone()),
                    ("version".into(), h.version.clone()),
                ],
                1.0,
            )
        },
    );

    let protos: Vec<MetricFamily> = fams
        .into_iter()
        .filter(|f| !f.series.is_empty())
        .map(Family::into_proto)
        .collect();
    let mut out = String::new();
    TextEncoder::new()
        .encode_utf8(&protos, &mut out)
        .expect("text encoding of valid families");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(counter: bool) -> Family {
        Family::new("observer_test", "help", counter)
    }

    #[test]
    fn dropped_labels_merge_series_by_sum_or_max() {
        let mut f = family(false);
        f.add1("runtime", "docker", 2.0);
        f.add1("runtime", "docker", 3.0);
        f.add1("runtime", "podman", 1.0);
        assert_eq!(f.series.len(), 2);
        assert_eq!(
            f.series[&vec![("runtime".to_string(), "docker".to_string())]],
            5.0
        );
        let mut m = family(false);
        m.agg = Agg::Max;
        m.add(&[], 2.0);
        m.add(&[], 7.0);
        m.add(&[], 3.0);
        assert_eq!(m.series[&vec![]], 7.0);
    }

    #[test]
    fn families_encode_as_prometheus_text() {
        let mut f = family(true);
        f.add1("type", "fork", 3.0);
        let mut out = String::new();
        TextEncoder::new()
            .encode_utf8(&[f.into_proto()], &mut out)
            .unwrap();
        assert_eq!(out, "# HELP observer_test help\n# TYPE observer_test counter\nobserver_test{type=\"fork\"} 3\n");
    }

    #[test]
    fn label_allowlist_is_checked() {
        assert_eq!(
            parse_labels("container_name, runtime").unwrap(),
            vec!["container_name", "runtime"]
        );
        assert!(parse_labels("pid")
            .unwrap_err()
            .contains("unknown metrics label `pid`"));
    }
}
