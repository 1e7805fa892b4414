//! Derived facts about containers: process, thread and zombie counts, the container's PID 1
//! and the shim above it (the host parent of PID 1 when that parent is not itself in the
//! container: containerd-shim, conmon, observer's shim) — from one pass over the processes,
//! or, where a view needs only some containers or only counts (a tree, /metrics), from the
//! member sets the table keeps, without a pass.

use serde::{Deserialize, Serialize};

use super::Table;
use crate::containers::{cgroup::Runtime, Container, ContainerData};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ContainerSummary {
    pub(crate) index: u32,
    pub(crate) container: ContainerData,
    pub(crate) processes: u32,
    pub(crate) threads: u32,
    pub(crate) zombies: u32,
    /// Boot-clock ns of the oldest zombie's exit.
    pub(crate) oldest_zombie_ns: Option<u64>,
    /// Host pid of the container's PID 1 (in its own pid namespace); in a pid namespace it
    /// shares (a pod's), its oldest process whose parent is outside it.
    pub(crate) init_pid: Option<u32>,
    pub(crate) shim_pid: Option<u32>,
    pub(crate) shim_comm: Option<String>,
}

impl Table {
    pub(crate) fn container_data(&self, c: &Container) -> ContainerData {
        ContainerData {
            key: c.key.clone(),
            pod_uid: c.pod_uid.clone(),
            pod_id: c.pod_id.clone(),
            ctr_namespace: c.ctr_namespace.clone(),
            cgroup: self.registry.path(c.cgroup).to_string(),
            pidns: c.pidns,
            forks: c.counters.forks,
            execs: c.counters.execs,
            exits: c.counters.exits,
            signals: c.signals.signals.clone(),
            oom_victims: c.signals.oom_victims,
            exit_classes: c.signals.exit_classes,
        }
    }

    /// Whether `pid` is PID 1 of its pid namespace.
    pub(super) fn has_ns_init(&self, pid: u32) -> bool {
        self.get(pid)
            .is_some_and(|p| p.pid_level > 0 && p.ns_pid() == 1)
    }

    /// A container's summary before its processes are counted.
    fn empty_summary(&self, index: u32, c: &Container) -> ContainerSummary {
        ContainerSummary {
            index,
            container: self.container_data(c),
            processes: 0,
            threads: 0,
            zombies: 0,
            oldest_zombie_ns: None,
            init_pid: None,
            shim_pid: None,
            shim_comm: None,
        }
    }

    /// Containers the registry still holds (within their retention) that have no process
    /// left: their counters stay on /metrics until they are evicted.
    pub(crate) fn ended_summaries(&self) -> Vec<ContainerSummary> {
        self.registry
            .iter()
            .filter(|(_, c)| c.members.is_empty())
            .map(|(i, c)| self.empty_summary(i, c))
            .collect()
    }

    /// A summary of every container that has processes.
    #[cfg(test)]
    pub(crate) fn summaries(&self) -> Vec<ContainerSummary> {
        self.summaries_and_members().0
    }

    /// The summaries, and every containerised process as (container, pid) in the table's
    /// order: one pass over the process map.
    pub(crate) fn summaries_and_members(&self) -> (Vec<ContainerSummary>, Vec<(u32, u32)>) {
        let mut out: Vec<Option<ContainerSummary>> = vec![None; self.registry.len()];
        // Every containerised process, for the second look below (a Vec walks faster than
        // the process map a second time).
        let mut members: Vec<(u32, u32)> = Vec::with_capacity(self.len());
        for p in self.processes() {
            let Some(ci) = p.container else { continue };
            let Some(c) = self.registry.get(ci) else {
                continue;
            };
            members.push((ci, p.pid));
            let s = out[ci as usize].get_or_insert_with(|| self.empty_summary(ci, c));
            count(s, c, p);
        }
        let list = self.settle_roots(out, &members);
        (list, members)
    }

    /// What /metrics shows of every container that has processes — processes, threads,
    /// zombies and the oldest zombie's exit — from the member sets, their thread sums and the
    /// exited set: no pass over the process map (51,000 processes cost ~5 ms a scrape).
    /// PID 1 and shim as `registry_summaries` has them (the names of bare and CRI
    /// containers are read through PID 1).
    pub(crate) fn metrics_summaries(&self) -> Vec<ContainerSummary> {
        let mut out = self.registry_summaries();
        let mut at: Vec<Option<usize>> = vec![None; self.registry.len()];
        for (k, s) in out.iter_mut().enumerate() {
            at[s.index as usize] = Some(k);
            s.threads = self
                .registry
                .get(s.index)
                .map_or(0, |c| c.threads.min(u64::from(u32::MAX)) as u32);
            s.zombies = 0;
            s.oldest_zombie_ns = None;
        }
        for p in self.exited.iter().filter_map(|pid| self.get(*pid)) {
            let (Some(e), Some(ci)) = (p.exit, p.container) else {
                continue;
            };
            if let Some(s) = at.get(ci as usize).copied().flatten().map(|k| &mut out[k]) {
                note_zombie(s, e.at_ns);
            }
        }
        out
    }

    /// Summaries enough to resolve a reference (`Scope::Registry`), without a pass over
    /// the process map: every container with members, its process count from its member
    /// set; PID 1 and shim only where the runtime's names are read through PID 1 (bare and
    /// CRI containers: their OCI state), from those containers' member sets. Threads and
    /// zombies are not counted (0): a view that shows them asks for `summaries`.
    pub(crate) fn registry_summaries(&self) -> Vec<ContainerSummary> {
        let live = || self.registry.iter().filter(|(_, c)| !c.members.is_empty());
        let by_init: Vec<u32> = live()
            .filter(|(_, c)| matches!(c.key.runtime, Runtime::Bare | Runtime::Cri))
            .map(|(i, _)| i)
            .collect();
        let mut out = self.summaries_of(&by_init).0;
        out.extend(
            live()
                .filter(|(_, c)| !matches!(c.key.runtime, Runtime::Bare | Runtime::Cri))
                .map(|(i, c)| ContainerSummary {
                    processes: c.members.len() as u32,
                    ..self.empty_summary(i, c)
                }),
        );
        out.sort_unstable_by_key(|s| s.index);
        out
    }

    /// The summaries of these containers only, and their members as (container, pid):
    /// from the member sets the table keeps, without a pass over the process map (a
    /// container's tree on a node of 50,000 processes).
    pub(crate) fn summaries_of(
        &self,
        containers: &[u32],
    ) -> (Vec<ContainerSummary>, Vec<(u32, u32)>) {
        let mut out: Vec<Option<ContainerSummary>> = vec![None; self.registry.len()];
        let mut members = Vec::new();
        for &ci in containers {
            let Some(c) = self.registry.get(ci) else {
                continue;
            };
            if out[ci as usize].is_some() {
                continue;
            }
            for p in c.members.iter().filter_map(|&pid| self.get(pid)) {
                members.push((ci, p.pid));
                let s = out[ci as usize].get_or_insert_with(|| self.empty_summary(ci, c));
                count(s, c, p);
            }
        }
        let list = self.settle_roots(out, &members);
        (list, members)
    }

    /// What needs every member counted first: the PID 1 of containers without one of their
    /// own, and the shim above each PID 1.
    fn settle_roots(
        &self,
        mut out: Vec<Option<ContainerSummary>>,
        members: &[(u32, u32)],
    ) -> Vec<ContainerSummary> {
        // A container in a pid namespace it does not own (a pod sharing the sandbox's) has
        // no PID 1 of its own: its first process is the oldest one whose parent is outside
        // it (what the runtime started, and calls the container's pid). Containers with a
        // PID 1 of their own (found above) are skipped without a look at the parent.
        let has_init: Vec<bool> = out
            .iter()
            .map(|s| s.as_ref().is_some_and(|s| s.init_pid.is_some()))
            .collect();
        for &(ci, pid) in members {
            if has_init[ci as usize] {
                continue;
            }
            let (Some(s), Some(p)) = (out[ci as usize].as_mut(), self.get(pid)) else {
                continue;
            };
            let root = p.pid_level > 0
                && self
                    .get(p.ppid)
                    .is_none_or(|par| par.container != p.container);
            if !root
                || s.init_pid
                    .is_some_and(|i| i != p.pid && self.has_ns_init(i))
            {
                continue;
            }
            let older = s
                .init_pid
                .and_then(|i| self.get(i))
                .is_none_or(|cur| (p.start_time_ns, p.pid) < (cur.start_time_ns, cur.pid));
            if older {
                s.init_pid = Some(p.pid);
            }
        }
        let mut list: Vec<ContainerSummary> = out.into_iter().flatten().collect();
        for s in &mut list {
            let Some(init) = s.init_pid.and_then(|i| self.get(i)) else {
                continue;
            };
            if let Some(parent) = self
                .get(init.ppid)
                .filter(|par| par.container != init.container)
            {
                s.shim_pid = Some(parent.pid);
                s.shim_comm = Some(parent.comm_str().to_string());
            }
        }
        list
    }
}

/// Counts one member of `c` into its summary.
/// One more zombie in `s`, exited at `at_ns`.
fn note_zombie(s: &mut ContainerSummary, at_ns: u64) {
    s.zombies += 1;
    s.oldest_zombie_ns = Some(s.oldest_zombie_ns.map_or(at_ns, |o| o.min(at_ns)));
}

fn count(s: &mut ContainerSummary, c: &Container, p: &super::Process) {
    s.processes += 1;
    s.threads += p.threads;
    if let Some(e) = p.exit {
        note_zombie(s, e.at_ns);
    }
    if p.pid_level > 0 && p.ns_pid() == 1 && (c.pidns == 0 || p.pidns() == c.pidns) {
        s.init_pid = Some(p.pid);
    }
}

/// The OOM victims the table counted in `containers`, by cgroup path (what the host's
/// kept cgroup files need to know when an OOM counter went stale: `read_containers`).
pub(crate) fn oom_counts(containers: &[ContainerSummary]) -> rustc_hash::FxHashMap<String, u64> {
    let mut out: rustc_hash::FxHashMap<String, u64> = rustc_hash::FxHashMap::default();
    for c in containers.iter().filter(|c| !c.container.cgroup.is_empty()) {
        *out.entry(c.container.cgroup.clone()).or_default() += c.container.oom_victims;
    }
    out
}

/// The distinct cgroup paths of `containers` (those with one).
pub(crate) fn cgroup_paths(containers: &[ContainerSummary]) -> Vec<String> {
    let mut seen = rustc_hash::FxHashSet::default();
    containers
        .iter()
        .map(|c| c.container.cgroup.as_str())
        .filter(|p| !p.is_empty() && seen.insert(*p))
        .map(str::to_string)
        .collect()
}
