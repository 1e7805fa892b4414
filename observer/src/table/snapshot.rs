//! Copies of table state handed to views, so that the table's owner never waits on
//! rendering or I/O: the processes in scope, their parents when outside it (a tree draws the
//! shim above a container's PID 1), and the container summaries.

use super::{summary::ContainerSummary, Process, Table, TableStats};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Container summaries only.
    Containers,
    /// Every process.
    All,
    /// The members of one container.
    Container(u32),
    /// Zombies and their parents.
    Zombies,
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub host_pidns: u32,
    pub containers: Vec<ContainerSummary>,
    pub processes: Vec<Process>,
    /// Parents of in-scope processes that are themselves out of scope.
    pub context: Vec<Process>,
    pub stats: TableStats,
    pub table_size: usize,
}

impl Snapshot {
    pub fn container(&self, index: u32) -> Option<&ContainerSummary> {
        self.containers.iter().find(|c| c.index == index)
    }

    /// A process of the snapshot, in scope or context.
    pub fn process(&self, pid: u32) -> Option<&Process> {
        self.processes.iter().chain(&self.context).find(|p| p.pid == pid)
    }
}

impl Table {
    pub fn snapshot(&self, scope: Scope) -> Snapshot {
        let processes: Vec<Process> = match scope {
            Scope::Containers => Vec::new(),
            Scope::All => self.processes().cloned().collect(),
            Scope::Container(c) => self.processes().filter(|p| p.container == Some(c)).cloned().collect(),
            Scope::Zombies => self.processes().filter(|p| p.is_zombie()).cloned().collect(),
        };
        let mut context = Vec::new();
        if !matches!(scope, Scope::All) {
            let inside: rustc_hash::FxHashSet<u32> = processes.iter().map(|p| p.pid).collect();
            let mut added = rustc_hash::FxHashSet::default();
            for p in &processes {
                if !inside.contains(&p.ppid) && added.insert(p.ppid) {
                    if let Some(par) = self.get(p.ppid) {
                        context.push(par.clone());
                    }
                }
            }
        }
        Snapshot {
            host_pidns: self.registry.host_pidns(),
            containers: self.summaries(),
            processes,
            context,
            stats: self.stats,
            table_size: self.len(),
        }
    }
}
