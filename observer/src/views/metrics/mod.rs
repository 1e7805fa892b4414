//! Prometheus exposition of the agent's state (text format 0.0.4, written by `family.rs`;
//! the `prometheus` crate is only the tests' oracle): per-container process, zombie, event
//! and cgroup resource metrics, node-wide
//! process states and orphan adoptions, and the agent's own health. Labels are per
//! container, never per process; `--metrics-labels` keeps a subset (series that then share
//! labels are summed, or maxed for ages).

mod agent;
mod family;

use family::{Agg, Family, LabelSets};

use super::{model::short_id, status::Health};
use crate::{containers::names::Meta, host::facts::Resources, table::summary::ContainerSummary};

pub(crate) const CONTAINER_LABELS: [&str; 5] = [
    "container_id",
    "container_name",
    "runtime",
    "pod",
    "namespace",
];

/// A `--metrics-labels` entry that is not a container label.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown metrics label `{0}` (allowed: {allowed})", allowed = CONTAINER_LABELS.join(", "))]
pub(crate) struct UnknownLabel(String);

/// Parses `--metrics-labels`.
pub(crate) fn parse_labels(s: &str) -> Result<Vec<String>, UnknownLabel> {
    let mut v = Vec::new();
    for l in s.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        if !CONTAINER_LABELS.contains(&l) {
            return Err(UnknownLabel(l.to_string()));
        }
        v.push(l.to_string());
    }
    Ok(v)
}

/// One container's metrics input.
pub(crate) struct ContainerSample {
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) summary: ContainerSummary,
    pub(crate) resources: Resources,
    pub(crate) oldest_zombie_age_s: Option<f64>,
    /// The container has ended (still retained): only its counters are exported.
    pub(crate) ended: bool,
}

/// Builds container samples: names from the runtimes' state (`metas`, in the order of
/// `containers`), resources as read from the cgroup files (`resources(path)`), both read by
/// the caller; `now_ns` ages the zombies.
pub(crate) fn samples(
    containers: Vec<ContainerSummary>,
    metas: Vec<Meta>,
    allow: &[String],
    mut resources: impl FnMut(&str) -> Resources,
    now_ns: u64,
) -> Vec<ContainerSample> {
    let pods = {
        let refs: Vec<&Meta> = metas.iter().collect();
        super::pods::membership(&containers, &refs)
    };
    containers
        .into_iter()
        .zip(metas)
        .map(|(summary, mut meta)| {
            let s = &summary;
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
            let resources = if s.container.cgroup.is_empty() {
                Resources::default()
            } else {
                resources(&s.container.cgroup)
            };
            let oldest_zombie_age_s = s
                .oldest_zombie_ns
                .map(|t| now_ns.saturating_sub(t) as f64 / 1e9);
            ContainerSample {
                labels,
                resources,
                oldest_zombie_age_s,
                summary,
                ended: false,
            }
        })
        .collect()
}

/// The per-container families, in exposition order: (name, help, counter?). The
/// constants below index them.
const CONTAINER_FAMILIES: [(&str, &str, bool); 16] = [
    (
        "observer_container_processes",
        "Processes in the container (zombies included).",
        false,
    ),
    (
        "observer_container_threads",
        "Threads of the container's processes.",
        false,
    ),
    (
        "observer_container_zombies",
        "Processes of the container that exited and are not reaped.",
        false,
    ),
    (
        "observer_container_oldest_zombie_age_seconds",
        "Age of the container's oldest zombie.",
        false,
    ),
    (
        "observer_container_forks_total",
        "Processes forked in the container since the agent started.",
        true,
    ),
    (
        "observer_container_execs_total",
        "Programs executed in the container since the agent started.",
        true,
    ),
    (
        "observer_container_exits_total",
        "Processes that exited in the container since the agent started.",
        true,
    ),
    (
        "observer_container_signals_total",
        "Signals sent to the container's processes (those that end or stop a process, and any to its PID 1), by the kernel's verdict.",
        true,
    ),
    (
        "observer_container_oom_victims_total",
        "Processes of the container the OOM killer chose, since the agent started.",
        true,
    ),
    (
        "observer_container_exit_codes_total",
        "Processes of the container that ended, by exit class: 0, 1-125, 126-127 (not executable or not found), signal.",
        true,
    ),
    (
        "observer_container_oom_kills_total",
        "OOM kills in the container's memory cgroup.",
        true,
    ),
    (
        "observer_container_cpu_usage_seconds_total",
        "CPU time used by the container's cgroup.",
        true,
    ),
    (
        "observer_container_memory_usage_bytes",
        "Memory charged to the container's cgroup.",
        false,
    ),
    (
        "observer_container_memory_limit_bytes",
        "Memory limit of the container's cgroup (absent: none).",
        false,
    ),
    (
        "observer_container_pids",
        "Tasks in the container's pids cgroup.",
        false,
    ),
    (
        "observer_container_pids_limit",
        "Task limit of the container's pids cgroup (absent: none).",
        false,
    ),
];
const PROCS: usize = 0;
const THREADS: usize = 1;
const ZOMBIES: usize = 2;
const ZOMBIE_AGE: usize = 3;
const FORKS: usize = 4;
const EXECS: usize = 5;
const EXITS: usize = 6;
const SIGNALS: usize = 7;
const OOM_VICTIMS: usize = 8;
const EXIT_CODES: usize = 9;
const OOM_KILLS: usize = 10;
const CPU: usize = 11;
const MEMORY: usize = 12;
const MEMORY_LIMIT: usize = 13;
const PIDS: usize = 14;
const PIDS_LIMIT: usize = 15;

pub(crate) fn render(samples: &[ContainerSample], h: &Health) -> String {
    let mut fams: Vec<Family> = CONTAINER_FAMILIES
        .iter()
        .map(|&(name, help, counter)| Family::new(name, help, counter))
        .collect();
    fams[ZOMBIE_AGE].agg = Agg::Max;
    let (sets, ids) = LabelSets::new(samples.iter().map(|s| s.labels.as_slice()));
    for s in samples {
        add_container(&mut fams, ids[s.labels.as_slice()], s);
    }

    agent::families(h, &mut fams);

    family::encode(&mut fams, &sets)
}

/// One container's series, under its label set `l`: an ended container's counters only.
fn add_container(fams: &mut [Family], l: u32, s: &ContainerSample) {
    let c = &s.summary;
    if !s.ended {
        fams[PROCS].add_set(l, &[], c.processes as f64);
        fams[THREADS].add_set(l, &[], c.threads as f64);
        fams[ZOMBIES].add_set(l, &[], c.zombies as f64);
        fams[ZOMBIE_AGE].add_set(l, &[], s.oldest_zombie_age_s.unwrap_or(0.0));
    }
    fams[FORKS].add_set(l, &[], c.container.forks as f64);
    fams[EXECS].add_set(l, &[], c.container.execs as f64);
    fams[EXITS].add_set(l, &[], c.container.exits as f64);
    for &(sig, result, n) in &c.container.signals {
        let name = crate::events::signals::name(sig);
        let result = crate::events::signals::result_name(result);
        fams[SIGNALS].add_set(l, &[("signal", &name), ("result", result)], n as f64);
    }
    fams[OOM_VICTIMS].add_set(l, &[], c.container.oom_victims as f64);
    for (class, n) in crate::table::signal_facts::EXIT_CLASSES
        .iter()
        .zip(c.container.exit_classes)
    {
        fams[EXIT_CODES].add_set(l, &[("class", class)], n as f64);
    }
    let r = &s.resources;
    let mut opt = |i: usize, v: Option<f64>| {
        if let Some(v) = v {
            fams[i].add_set(l, &[], v);
        }
    };
    opt(OOM_KILLS, r.oom_kills.map(|v| v as f64));
    opt(CPU, r.cpu_usage_ns.map(|v| v as f64 / 1e9));
    opt(MEMORY, r.memory_bytes.map(|v| v as f64));
    opt(MEMORY_LIMIT, r.memory_limit_bytes.map(|v| v as f64));
    opt(PIDS, r.pids.map(|v| v as f64));
    opt(PIDS_LIMIT, r.pids_limit.map(|v| v as f64));
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
        f.add1("runtime", "docker", 4.0);
        f.merge();
        assert_eq!(f.series.len(), 2);
        let docker = (0, "runtime=\"docker\"".to_string());
        assert_eq!(f.series[0], (docker, 9.0));
        let mut m = family(false);
        m.agg = Agg::Max;
        m.add(&[], 2.0);
        m.add(&[], 7.0);
        m.add(&[], 3.0);
        m.merge();
        assert_eq!(m.series, vec![((0, String::new()), 7.0)]);
    }

    #[test]
    fn families_encode_as_prometheus_text() {
        let mut f = family(true);
        f.add1("type", "fork", 3.0);
        let (sets, _) = LabelSets::new(std::iter::empty());
        assert_eq!(family::encode(&mut [f], &sets), "# HELP observer_test help\n# TYPE observer_test counter\nobserver_test{type=\"fork\"} 3\n");
    }

    #[test]
    fn label_allowlist_is_checked() {
        assert_eq!(
            parse_labels("container_name, runtime").unwrap(),
            vec!["container_name", "runtime"]
        );
        assert!(parse_labels("pid")
            .unwrap_err()
            .to_string()
            .contains("unknown metrics label `pid`"));
    }
}
