//! Bounded memory. The table holds one entry per live process (reconciliation removes any
//! whose end was missed), but the container registry and the interners would grow with
//! everything ever seen — every container, cgroup path, cgroup id and executable path of a
//! node that starts thousands of short-lived containers. A collection pass, run every few
//! seconds by the agent, evicts containers without members once their retention has passed
//! (over `max_containers`, the longest-idle ones at once: dead entries always go first,
//! live containers are never evicted), compacts the interners when most of what they
//! hold is no longer referenced, and gives back the process map's capacity after a spike
//! (the map itself is bounded by kernel.pid_max: one entry per live process). Everything evicted is counted.

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use super::Table;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Containers kept in the registry, live and ended.
    pub(crate) max_containers: usize,
    /// How long an ended container (no members) stays: views, metrics and names keep
    /// answering for it meanwhile.
    pub(crate) retention_ns: u64,
    /// Bounds of the per-container histories of ended processes.
    pub(crate) history: super::history::HistoryLimits,
}

/// Entries evicted since the agent started, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Evictions {
    /// Entries of the histories of ended processes (history.rs).
    #[serde(default)]
    pub(crate) history: u64,
    pub(crate) containers: u64,
    pub(crate) cgroup_paths: u64,
    pub(crate) cgroup_ids: u64,
    pub(crate) exes: u64,
}

/// What the table holds now, by kind (the gauges next to the eviction counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Retained {
    pub(crate) processes: u64,
    #[serde(default)]
    pub(crate) history: u64,
    pub(crate) containers: u64,
    pub(crate) cgroup_paths: u64,
    pub(crate) cgroup_ids: u64,
    pub(crate) exes: u64,
}

/// An interner is compacted when it holds more than twice what is referenced, plus this.
const SLACK: usize = 1024;

impl Table {
    /// What was evicted, histories included.
    pub(crate) fn evictions(&self) -> Evictions {
        Evictions {
            history: self.history.evicted,
            ..self.stats.evictions
        }
    }

    pub(crate) fn retained(&self) -> Retained {
        Retained {
            processes: self.procs.len() as u64,
            history: self.history.len() as u64,
            containers: self.registry.len() as u64,
            cgroup_paths: self.registry.paths_len() as u64,
            cgroup_ids: self.registry.cgroup_ids_len() as u64,
            exes: self.exes.len() as u64,
        }
    }

    /// One collection pass; returns whether anything was evicted.
    pub(crate) fn collect(&mut self, now_ns: u64, lim: &Limits) -> bool {
        self.history_limits = lim.history;
        self.history.expire(now_ns, &lim.history);
        self.registry
            .forget_bare_ends(now_ns.saturating_sub(lim.history.retention_ns));
        let evict = self.evictable(now_ns, lim);
        // Interners no bigger than twice what was referenced at the last walk (plus slack)
        // cannot be over that now either: no walk of every process (50,000 of them on a big
        // node, every few seconds) until they grow or a container is evicted.
        let (ref_paths, ref_exes) = self.gc_referenced;
        if evict.is_empty()
            && self.registry.paths_len() <= 2 * ref_paths + SLACK
            && self.exes.len() <= 2 * ref_exes + SLACK
        {
            return self.shrink_procs();
        }
        let mut paths = FxHashSet::default();
        let mut exes = FxHashSet::default();
        for p in self.procs.values() {
            paths.insert(p.cgroup);
            exes.insert(p.exe);
        }
        self.gc_referenced = (paths.len(), exes.len());
        let mut evicted = false;
        if !evict.is_empty() || self.registry.paths_len() > 2 * paths.len() + SLACK {
            let remap = self
                .registry
                .compact(|i, _| !evict.contains(&i), |id| paths.contains(&id));
            let mut lost = Vec::new();
            for p in self.procs.values_mut() {
                p.cgroup = remap.paths.get(p.cgroup as usize).copied().unwrap_or(0);
                if let Some(c) = p.container {
                    p.container = remap.containers.get(c as usize).copied().flatten();
                    if p.container.is_none() {
                        lost.push(p.pid);
                    }
                }
            }
            // Not expected (a container with members is never evicted); attributed afresh.
            for pid in lost {
                self.reattribute(pid);
            }
            self.stats.evictions.containers += remap.dropped_containers;
            self.stats.evictions.cgroup_paths += remap.dropped_paths;
            self.stats.evictions.cgroup_ids += remap.dropped_cgroup_ids;
            evicted = true;
        }
        if self.exes.len() > 2 * exes.len() + SLACK {
            let before = self.exes.len();
            let remap = self.exes.compact(|id| exes.contains(&id));
            for p in self.procs.values_mut() {
                p.exe = remap.get(p.exe as usize).copied().unwrap_or(0);
            }
            self.stats.evictions.exes += (before - self.exes.len()) as u64;
            evicted = true;
        }
        self.shrink_procs() || evicted
    }

    /// The containers to evict now: ended ones past their retention, and the longest-idle
    /// ones over `max_containers` (live ones never).
    fn evictable(&mut self, now_ns: u64, lim: &Limits) -> FxHashSet<u32> {
        let mut idle: Vec<(u64, u32)> = Vec::new();
        for i in 0..self.registry.len() as u32 {
            let c = self.registry.get_mut(i).expect("in range");
            if !c.members.is_empty() {
                c.idle_since_ns = 0;
            } else {
                if c.idle_since_ns == 0 {
                    c.idle_since_ns = now_ns.max(1);
                }
                idle.push((c.idle_since_ns, i));
            }
        }
        idle.sort_unstable();
        let over = self.registry.len().saturating_sub(lim.max_containers);
        let evict: FxHashSet<u32> = idle
            .iter()
            .enumerate()
            .filter(|(n, (since, _))| {
                *n < over || now_ns.saturating_sub(*since) >= lim.retention_ns
            })
            .map(|(_, (_, i))| *i)
            .collect();
        if over > idle.len() {
            log::warn!(
                "{} live containers exceed --max-containers {}: only ended ones are evicted",
                self.registry.len() - idle.len(),
                lim.max_containers
            );
        }
        evict
    }

    /// The process map is bounded by kernel.pid_max (one entry per live process), but
    /// keeps the capacity of its largest spike: given back once mostly unused.
    fn shrink_procs(&mut self) -> bool {
        if self.procs.capacity() > 4 * self.procs.len().max(4096) {
            self.procs.shrink_to(2 * self.procs.len().max(4096));
            return true;
        }
        false
    }
}
