//! The process table: the single owner of process and container state. Seeded at start-up
//! (from the kernel's task iterator, or /proc), then driven by kernel events in order;
//! checked and reconciled against /proc periodically. Applying an
//! event does no I/O and allocates only for an exec (its command line and credentials, once
//! each): processes live in a hash map keyed by host pid, command lines shared by the
//! processes forked from an exec, children in an intrusive list.
//!
//! Identity is (host pid, start time): a pid whose start time changed is a new process.

mod apply;
pub(crate) mod exe_hash;
pub(crate) mod gc;
pub(crate) mod history;
mod links;
pub(crate) mod process;
mod reconcile;
pub(crate) mod sessions;
pub(crate) mod signal_facts;
pub(crate) mod snapshot;
pub(crate) mod summary;

use observer_common::{EventKind, TaskInfo, KIND_SLOTS, NS_COUNT};
pub(crate) use process::{Adopter, Adoption, Bounded, ExitInfo, Process};
pub(crate) use reconcile::Disagreement;
use rustc_hash::FxHashMap;

use crate::{
    containers::{Registry, NO_PATH},
    host::{cgroupfs::CgroupFs, scan},
};

/// An applied event as API subscribers get it: with an exec's executable hash, and the
/// exec session of its process (fork, exec, exit) as the table had it once the event was
/// applied.
#[derive(Clone, Debug)]
pub(crate) struct Published {
    pub(crate) ev: crate::events::Event,
    pub(crate) exe: Option<exe_hash::ExeHash>,
    pub(crate) session: Option<std::sync::Arc<sessions::Session>>,
}

/// Counters about the table itself (exported by the agent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TableStats {
    /// Events applied, by kind number.
    pub(crate) applied: [u64; KIND_SLOTS],
    /// Fixes made by reconciliation (processes added, removed or corrected).
    pub(crate) corrections: u64,
    /// Orphans adopted, by Adopter (subreaper, namespace init, host init).
    pub(crate) adoptions: [u64; 3],
    /// cgroup v2 ids that had to be looked up by walking the cgroup tree.
    pub(crate) cgroup_walks: u64,
    /// Entries dropped by collection passes (gc.rs).
    pub(crate) evictions: gc::Evictions,
    /// Events of non-leader threads that entered other namespaces or cgroups on their own
    /// (kept out of their process's facts).
    pub(crate) thread_ns_changes: u64,
}

/// An orphan whose new parent is not known yet (the kernel reparents right after the
/// exit tracepoint; /proc is read once the batch is applied).
#[derive(Clone, Copy, Debug)]
struct Pending {
    pid: u32,
    start_time_ns: u64,
    from: u32,
    at_ns: u64,
    tries: u8,
}

/// A process reconciliation added from /proc (missing from the table, or holding a PID the
/// table gave to an earlier holder). It counts as a correction only if its fork event does
/// not turn up within [`CONFIRM_NS`]: a child is in /proc before its parent's fork
/// tracepoint fires, and a parent preempted in between delays the event past the scan.
#[derive(Clone, Debug)]
struct Unconfirmed {
    pid: u32,
    start_time_ns: u64,
    due_ns: u64,
    /// Both sides as the scan found them, for the log line if it becomes a correction.
    sides: Box<str>,
}

/// How long a process reconciliation added may wait for its own fork event.
const CONFIRM_NS: u64 = 2_000_000_000;

pub(crate) struct Table {
    procs: FxHashMap<u32, Process>,
    pub(crate) registry: Registry,
    exes: crate::intern::Interner,
    pending: Vec<Pending>,
    unconfirmed: Vec<Unconfirmed>,
    /// Processes whose exit was seen: zombies until reaped. The free event that ends them
    /// can come seconds after the reap (it runs from a lazy RCU callback), so `reap_gone`
    /// also checks /proc for these.
    exited: rustc_hash::FxHashSet<u32>,
    pub(crate) stats: TableStats,
    /// Signals and OOM facts of live processes, by host pid (signal_facts.rs).
    signals: FxHashMap<u32, signal_facts::ProcSignals>,
    history: history::History,
    /// Orphans' parent chains as they were before their parent died (history.rs).
    orphan_chains: FxHashMap<u32, Box<[history::Link]>>,
    pub(crate) history_limits: history::HistoryLimits,
    /// The cgroup paths and executables processes referenced at the last collection's walk:
    /// until the interners outgrow twice that, a collection need not walk every process.
    gc_referenced: (usize, usize),
    tick_ns: u64,
    cgroupfs: CgroupFs,
    /// Boot-clock ns of the last cgroup-tree walk (walks are rate-limited to one a second).
    last_walk_ns: u64,
    /// What the next new process may share with the last one made.
    shared: process::LastShared,
}

impl Table {
    pub(crate) fn new(host_pidns: u32, cgroupfs: CgroupFs) -> Self {
        Table {
            procs: FxHashMap::with_capacity_and_hasher(4096, Default::default()),
            registry: Registry::new(host_pidns),
            exes: crate::intern::Interner::new(),
            pending: Vec::with_capacity(64),
            unconfirmed: Vec::new(),
            exited: rustc_hash::FxHashSet::default(),
            stats: TableStats::default(),
            signals: FxHashMap::default(),
            history: history::History::default(),
            orphan_chains: FxHashMap::default(),
            history_limits: history::HistoryLimits::default(),
            gc_referenced: (0, 0),
            tick_ns: scan::tick_ns(),
            cgroupfs,
            last_walk_ns: 0,
            shared: process::LastShared::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.procs.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub(crate) fn get(&self, pid: u32) -> Option<&Process> {
        self.procs.get(&pid)
    }

    /// The hash of the executable `pid` exec'd last (after its exec event was applied).
    pub(crate) fn set_exe_hash(&mut self, pid: u32, h: exe_hash::ExeHash) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.exe_hash = Some(h);
        }
    }

    /// The container `pid` is attributed to (export asks per event: two map lookups).
    pub(crate) fn container_of(&self, pid: u32) -> Option<&crate::containers::Container> {
        self.registry.get(self.get(pid)?.container?)
    }

    /// The member of `c` that is PID 1 of its pid namespace (the name resolver asks a bare
    /// container's OCI runtime by it): a pass over its members.
    pub(crate) fn init_of(&self, c: &crate::containers::Container) -> Option<u32> {
        c.members.iter().copied().find(|&m| self.has_ns_init(m))
    }

    pub(crate) fn processes(&self) -> impl Iterator<Item = &Process> {
        self.procs.values()
    }

    /// The executable path of an interned id.
    pub(crate) fn exe(&self, id: u32) -> &str {
        self.exes.get(id)
    }

    /// Whether `p` is the process whose leader started at `start_ns` (an event's, in ns):
    /// exactly when the table's start time came from an event too, at clock-tick precision
    /// when it came from /proc. Ticks alone would confuse two holders of a PID started in
    /// the same 10 ms — common when PIDs wrap fast — and a late free of the first would
    /// remove the second.
    fn same(&self, p: &Process, start_ns: u64) -> bool {
        if p.start_exact {
            p.start_time_ns == start_ns
        } else {
            self.same_tick(p.start_time_ns, start_ns)
        }
    }

    /// Start times compared at clock-tick precision (one of them is from /proc).
    fn same_tick(&self, a_ns: u64, b_ns: u64) -> bool {
        a_ns / self.tick_ns == b_ns / self.tick_ns
    }

    /// A new process from its fork event.
    fn fork(&mut self, pid: u32, t: &TaskInfo, now: u64) {
        if let Some(p) = self.procs.get(&pid) {
            if self.same(p, t.start_time_ns) {
                if !self.unconfirmed.is_empty() {
                    self.confirm(pid, t.start_time_ns, now);
                }
                self.refresh(pid, t, now, true);
                return;
            }
            self.remove(pid); // pid reused: the old process's free was missed
        }
        let par = self.procs.get(&t.ppid);
        let ns = match par {
            Some(par) if *par.ns == t.ns => par.ns.clone(),
            _ => self.shared.ns(&t.ns),
        };
        let mut p = new_process(pid, t, ns);
        if let Some(par) = par {
            // A forked child runs its parent's image (its credentials and hash shared).
            p.exe = par.exe;
            p.argv = par.argv.clone();
            p.exec_cred = par.exec_cred.clone();
            p.exe_hash = par.exe_hash.clone();
        }
        let parent = par.map(|par| (par.cgroup_id, par.cgroup));
        p.cgroup = match parent {
            Some((id, path)) if id == t.cgroup_id => path,
            // The parent's id is unknown (a scan found it, or corrected its cgroup): the
            // child's names its cgroup if the registry knows it (no walk on a fork).
            Some((0, path)) => self.registry.path_of_cgroup_id(t.cgroup_id).unwrap_or(path),
            // Forked straight into another cgroup (clone3 CLONE_INTO_CGROUP): no attach event.
            _ => self
                .path_of_cgroup_id(t.cgroup_id, now)
                .or(parent.map(|(_, path)| path))
                .unwrap_or(NO_PATH),
        };
        self.insert(p);
        let c = self.procs.get(&pid).and_then(|p| p.container);
        self.count(c, EventKind::Fork);
        if c.is_some() {
            self.inherit_session(pid, t.ppid);
            self.note_entry(pid, now);
        }
    }

    /// Makes sure `pid` is in the table (a process whose fork predates the seed or was lost).
    /// `leader`: `t` is the thread-group leader's, so its start time is the process's — an
    /// entry with another start time is an earlier holder of the PID whose end was missed.
    fn ensure(&mut self, pid: u32, t: &TaskInfo, leader: bool) {
        if let Some(p) = self.procs.get(&pid) {
            if !leader || self.same(p, t.start_time_ns) {
                return;
            }
            self.remove(pid);
        }
        let mut p = new_process(pid, t, self.shared.ns(&t.ns));
        p.start_exact = leader;
        p.cgroup = self.path_of_cgroup_id(t.cgroup_id, 0).unwrap_or(NO_PATH);
        self.insert(p);
    }

    /// Takes the facts every event carries: namespaces, PIDs, ids, parent (an adoption when
    /// the old parent is gone), and — from the leader's events — the precise start time.
    fn refresh(&mut self, pid: u32, t: &TaskInfo, now: u64, leader: bool) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if leader {
            p.start_time_ns = t.start_time_ns;
            p.start_exact = true;
        }
        p.uid = t.uid;
        p.gid = t.gid;
        if t.ns_pids[0] != 0 {
            p.pid_level = t.pid_level;
            p.ns_pids = t.ns_pids;
        }
        let old_pidns = p.pidns();
        p.ns.update(|ns| merge_ns(ns, &t.ns));
        // An event older than the last move or correction names an earlier cgroup.
        if p.cgroup_id == 0 && now >= p.cgroup_ns {
            p.cgroup_id = t.cgroup_id;
        }
        let old_ppid = p.ppid;
        let pidns_changed = p.pidns() != old_pidns;
        // An event the orphan made between its parent's exit event and the kernel's
        // reparenting still names that parent; read from /proc, the adoption can be applied
        // before it. The kernel never moves a process back under a parent that exited (nor
        // under a later holder of its PID: new parents are ancestors, older than the child).
        let stale = p.adoption.is_some_and(|a| a.from == t.ppid);
        if t.ppid != 0 && t.ppid != old_ppid && !stale {
            let old_gone = self.procs.get(&old_ppid).is_none_or(|o| o.is_zombie());
            self.reparent(pid, t.ppid, old_gone.then_some(old_ppid), now);
        }
        if pidns_changed {
            self.reattribute(pid);
        }
    }

    fn insert(&mut self, p: Process) {
        let (pid, ppid) = (p.pid, p.ppid);
        if let Some(old) = self.procs.insert(pid, p) {
            self.leave(old.container, pid, old.threads);
        }
        self.link(pid, ppid);
        self.reattribute(pid);
    }

    /// Recomputes the container of `pid` from its cgroup path and pid namespace.
    fn reattribute(&mut self, pid: u32) {
        let Some(p) = self.procs.get(&pid) else {
            return;
        };
        let (old, path, pidns, threads) = (p.container, p.cgroup, p.pidns(), p.threads);
        let new = self.registry.attribute(path, pidns, p.start_time_ns);
        if new == old {
            return;
        }
        self.leave(old, pid, threads);
        if let Some(c) = new.and_then(|c| self.registry.get_mut(c)) {
            c.members.insert(pid);
            c.threads += u64::from(threads);
        }
        self.procs.get_mut(&pid).expect("present").container = new;
    }

    /// Takes `pid` (with `threads` threads) out of container `c`'s members.
    fn leave(&mut self, c: Option<u32>, pid: u32, threads: u32) {
        if let Some(c) = c.and_then(|c| self.registry.get_mut(c)) {
            if c.members.remove(&pid) {
                c.threads = c.threads.saturating_sub(u64::from(threads));
            }
        }
    }

    /// Changes the thread count of `pid`, and its container's sum with it.
    fn set_threads(&mut self, pid: u32, f: impl FnOnce(u32) -> u32) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        let (before, c) = (p.threads, p.container);
        p.threads = f(before);
        let after = p.threads;
        if let Some(c) = c.and_then(|c| self.registry.get_mut(c)) {
            c.threads = (c.threads + u64::from(after)).saturating_sub(u64::from(before));
        }
    }

    fn remove(&mut self, pid: u32) {
        self.exited.remove(&pid);
        self.signals.remove(&pid);
        self.orphan_chains.remove(&pid);
        self.unlink(pid);
        self.detach_children(pid);
        if let Some(p) = self.procs.remove(&pid) {
            self.leave(p.container, pid, p.threads);
        }
    }

    /// The interned path of a cgroup v2 id, walking the cgroup tree (at most once a second)
    /// when the id is new.
    fn path_of_cgroup_id(&mut self, id: u64, now: u64) -> Option<u32> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.registry.path_of_cgroup_id(id) {
            return Some(p);
        }
        if now != 0 && now.saturating_sub(self.last_walk_ns) < 1_000_000_000 {
            return None;
        }
        self.last_walk_ns = now.max(1);
        self.stats.cgroup_walks += 1;
        for (ino, path) in self.cgroupfs.walk_v2() {
            let idx = self.registry.intern_path(&path);
            self.registry.learn_cgroup_id(ino, idx);
        }
        self.registry.path_of_cgroup_id(id)
    }

    /// Removes exited processes that are gone (reaped; their free event is still to come).
    /// `exists(pid)` says whether a task with that pid exists (a zombie does); a pid reused
    /// since has a fork event in the table already, so only zombie entries are judged.
    pub(crate) fn reap_gone(&mut self, exists: impl Fn(u32) -> bool) -> usize {
        let mut reaped = 0;
        let candidates: Vec<u32> = self.exited.iter().copied().collect();
        for pid in candidates {
            match self.procs.get(&pid) {
                Some(p) if p.is_zombie() => {
                    if !exists(pid) {
                        self.remove(pid);
                        reaped += 1;
                    }
                }
                _ => {
                    self.exited.remove(&pid);
                }
            }
        }
        reaped
    }

    /// Every process id the table holds (unordered).
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.procs.keys().copied().collect()
    }

    pub(crate) fn has_exited(&self) -> bool {
        !self.exited.is_empty()
    }

    /// Processes seeded without a command line, executable or some namespace inode, with
    /// their start time and whether their namespaces or cgroup id are missing too (a /proc
    /// seed; the task iterator's has them).
    pub(crate) fn missing_details(&self) -> Vec<(u32, u64, bool)> {
        self.procs
            .values()
            .filter(|p| p.exit.is_none())
            .filter_map(|p| {
                let ns = p.ns.contains(&0) || p.cgroup_id == 0;
                (p.argv.is_empty() || p.exe == 0 || ns).then_some((p.pid, p.start_time_ns, ns))
            })
            .collect()
    }

    /// Fills command lines, executables and namespace inodes read after the seed, unless
    /// the process changed meanwhile (an exec brought its own, or the pid now belongs to
    /// another process); what an event already set stays. With the command lines known,
    /// the exec sessions that began before the seed are deduced (sessions.rs).
    pub(crate) fn fill_details(&mut self, found: Vec<scan::Details>) {
        let tick = self.tick_ns;
        let mut filled = Vec::with_capacity(found.len());
        for d in found {
            let Some(p) = self.procs.get(&d.pid) else {
                continue;
            };
            if p.start_time_ns / tick != d.start_ns / tick {
                continue;
            }
            let (exe_id, _) = if p.exe == 0 {
                self.exes.intern(&d.exe)
            } else {
                (p.exe, false)
            };
            let p = self.procs.get_mut(&d.pid).expect("present");
            if p.argv.is_empty() {
                p.argv = self.shared.argv(&d.argv);
            }
            p.exe = exe_id;
            // Not after a correction (the read may predate it).
            if p.cgroup_id == 0 && p.cgroup_ns == 0 {
                p.cgroup_id = d.cgroup_id;
            }
            p.ns.update(|ns| {
                for (have, read) in ns.iter_mut().zip(d.ns) {
                    if *have == 0 {
                        *have = read;
                    }
                }
            });
            filled.push(d.pid);
        }
        self.note_startup_entries(&filled);
    }

    /// Containers that have processes (from the registry's member counts: no pass over the
    /// processes).
    pub(crate) fn live_containers(&self) -> usize {
        self.registry
            .iter()
            .filter(|(_, c)| !c.members.is_empty())
            .count()
    }

    /// Number of zombies (exited, not yet reaped).
    /// Every zombie is in `exited` (each place that sets an exit adds it there), which is
    /// far smaller than the process map: /v1/status and /metrics count from it.
    pub(crate) fn zombies(&self) -> usize {
        let n = self
            .exited
            .iter()
            .filter(|pid| self.procs.get(pid).is_some_and(|p| p.is_zombie()))
            .count();
        #[cfg(test)]
        assert_eq!(n, self.procs.values().filter(|p| p.is_zombie()).count());
        n
    }
}

fn new_process(pid: u32, t: &TaskInfo, ns: process::Namespaces) -> Process {
    Process {
        pid,
        start_time_ns: t.start_time_ns,
        start_exact: true,
        ppid: t.ppid,
        uid: t.uid,
        gid: t.gid,
        pid_level: t.pid_level,
        ns_pids: t.ns_pids,
        ns,
        cgroup_id: t.cgroup_id,
        cgroup: NO_PATH,
        container: None,
        comm: t.comm,
        exe: 0,
        argv: Bounded::default(),
        threads: 1,
        exit: None,
        adoption: None,
        first_child: 0,
        next_sibling: 0,
        prev_sibling: 0,
        last_event: process::SCANNED,
        last_event_ns: 0,
        cgroup_ns: 0,
        exec_cred: None,
        exe_hash: None,
        session: None,
    }
}

/// Copies the known namespace inodes (0 means "not read" and keeps the old value).
fn merge_ns(dst: &mut [u32; NS_COUNT], src: &[u32; NS_COUNT]) {
    for (d, s) in dst.iter_mut().zip(src) {
        if *s != 0 {
            *d = *s;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
