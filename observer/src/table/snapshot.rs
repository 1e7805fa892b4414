//! Copies of table state handed to views, so that the table's owner never waits on
//! rendering or I/O: the processes in scope, their parents when outside it (a tree draws the
//! shim above a container's PID 1), and the container summaries.

use super::{history::Ended, signal_facts::ProcSignals, summary::ContainerSummary, Process, Table};
use crate::containers::ContainerKey;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Container summaries only.
    Containers,
    /// Container summaries as /metrics shows them (`Table::metrics_summaries`), and the
    /// ended containers, without a pass over every process.
    Metrics,
    /// Container summaries enough to resolve a reference (`Table::registry_summaries`:
    /// threads and zombies not counted), without a pass over every process.
    Registry,
    /// Every process.
    All,
    /// The members of one container.
    Container(u32),
    /// The members of several containers (a pod's).
    Pod(Vec<u32>),
    /// Zombies and their parents.
    Zombies,
    /// The history of these containers (ended processes), with container summaries.
    History(Vec<ContainerKey>),
}

#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    /// The registry's generation: container indices are valid only within it.
    pub(crate) generation: u64,
    pub(crate) containers: Vec<ContainerSummary>,
    /// With Scope::Containers: the containers that ended and are still retained.
    pub(crate) ended: Vec<ContainerSummary>,
    pub(crate) processes: Vec<Process>,
    /// Parents of in-scope processes that are themselves out of scope.
    pub(crate) context: Vec<Process>,
    /// Executable paths of the processes in the snapshot, by interned id.
    pub(crate) exes: rustc_hash::FxHashMap<u32, Box<str>>,
    /// Cgroup paths of the processes in the snapshot, by interned id.
    pub(crate) cgroups: rustc_hash::FxHashMap<u32, Box<str>>,
    /// Signals and OOM facts of the processes in scope that have any.
    pub(crate) signals: rustc_hash::FxHashMap<u32, ProcSignals>,
    /// With Scope::History: every container with a history, and the entries of those
    /// asked for.
    pub(crate) history_keys: Vec<ContainerKey>,
    pub(crate) history: Vec<(ContainerKey, Vec<Ended>)>,
    /// Entries dropped from histories since the agent started.
    pub(crate) history_evicted: u64,
    /// pid → (in scope?, index) for `process` lookups.
    index: rustc_hash::FxHashMap<u32, (bool, usize)>,
}

impl Snapshot {
    pub(crate) fn container(&self, index: u32) -> Option<&ContainerSummary> {
        self.containers.iter().find(|c| c.index == index)
    }

    pub(crate) fn exe(&self, id: u32) -> &str {
        self.exes.get(&id).map(|s| &**s).unwrap_or("")
    }

    pub(crate) fn cgroup(&self, id: u32) -> &str {
        self.cgroups.get(&id).map(|s| &**s).unwrap_or("")
    }

    /// A process of the snapshot, in scope or context.
    pub(crate) fn process(&self, pid: u32) -> Option<&Process> {
        match self.index.get(&pid)? {
            (true, i) => self.processes.get(*i),
            (false, i) => self.context.get(*i),
        }
    }
}

impl Table {
    pub(crate) fn snapshot(&self, scope: Scope) -> Snapshot {
        let (containers, members) = match &scope {
            Scope::Container(c) => self.summaries_of(&[*c]),
            Scope::Pod(cs) => self.summaries_of(cs),
            Scope::Registry => (self.registry_summaries(), Vec::new()),
            Scope::Metrics => (self.metrics_summaries(), Vec::new()),
            _ => self.summaries_and_members(),
        };
        let processes = self.processes_in(&scope, &members);
        let context = match scope {
            Scope::All => Vec::new(),
            _ => self.parents_outside(&processes),
        };
        let index = index_of(&processes, &context);
        let exes = processes
            .iter()
            .chain(&context)
            .map(|p| (p.exe, self.exe(p.exe).into()))
            .collect();
        let cgroups = processes
            .iter()
            .chain(&context)
            .map(|p| (p.cgroup, self.registry.path(p.cgroup).into()))
            .collect();
        // Few processes have signal facts: look those up, not every process in scope.
        let signals = self
            .signals
            .keys()
            .filter(|pid| matches!(index.get(pid), Some((true, _))))
            .filter_map(|&pid| Some((pid, self.signals_of(pid)?.clone())))
            .collect();
        let history = match &scope {
            Scope::History(keys) => keys
                .iter()
                .filter_map(|k| Some((k.clone(), self.history.of(k)?.iter().cloned().collect())))
                .collect(),
            _ => Vec::new(),
        };
        Snapshot {
            signals,
            history_keys: match scope {
                Scope::History(_) => self.history.keys().cloned().collect(),
                _ => Vec::new(),
            },
            history,
            history_evicted: self.history.evicted,
            exes,
            cgroups,
            index,
            generation: self.registry.generation(),
            containers,
            ended: match scope {
                Scope::Containers | Scope::Metrics => self.ended_summaries(),
                _ => Vec::new(),
            },
            processes,
            context,
        }
    }

    /// The processes in `scope` (`members`: (container index, pid) of the summaries).
    fn processes_in(&self, scope: &Scope, members: &[(u32, u32)]) -> Vec<Process> {
        let of = |keep: &dyn Fn(u32) -> bool| -> Vec<Process> {
            members
                .iter()
                .filter(|(ci, _)| keep(*ci))
                .filter_map(|(_, pid)| self.get(*pid))
                .cloned()
                .collect()
        };
        match scope {
            Scope::Containers | Scope::Metrics | Scope::Registry | Scope::History(_) => Vec::new(),
            Scope::All => self.processes().cloned().collect(),
            Scope::Container(c) => of(&|ci| ci == *c),
            Scope::Pod(cs) => of(&|ci| cs.contains(&ci)),
            Scope::Zombies => self
                .processes()
                .filter(|p| p.is_zombie())
                .cloned()
                .collect(),
        }
    }

    /// The parents of `processes` that are not among them, once each.
    fn parents_outside(&self, processes: &[Process]) -> Vec<Process> {
        let mut context = Vec::new();
        let inside: rustc_hash::FxHashSet<u32> = processes.iter().map(|p| p.pid).collect();
        let mut added = rustc_hash::FxHashSet::default();
        for p in processes {
            if !inside.contains(&p.ppid) && added.insert(p.ppid) {
                if let Some(par) = self.get(p.ppid) {
                    context.push(par.clone());
                }
            }
        }
        context
    }
}

/// pid → (in scope?, index) for `Snapshot::process`.
fn index_of(
    processes: &[Process],
    context: &[Process],
) -> rustc_hash::FxHashMap<u32, (bool, usize)> {
    let mut index = rustc_hash::FxHashMap::with_capacity_and_hasher(
        processes.len() + context.len(),
        Default::default(),
    );
    index.extend(
        processes
            .iter()
            .enumerate()
            .map(|(i, p)| (p.pid, (true, i))),
    );
    index.extend(context.iter().enumerate().map(|(i, p)| (p.pid, (false, i))));
    index
}
