//! Seeding the table from a start-up scan (the task iterator's records or /proc's) and
//! reconciling it against a later /proc scan: processes the events missed are added,
//! processes whose end was missed are removed, wrong parents and zombie states are fixed —
//! each fix counted. Also the cheap check that decides whether a full scan is needed
//! (`disagreements`: every process id against the table's).

use std::collections::HashSet;

use observer_common::MAX_PID_LEVELS;

use super::{ExitInfo, Process, Table, Unconfirmed, CONFIRM_NS};
use crate::host::scan::Scanned;

/// How old a process unknown to the table must be for a check to call it a miss.
const UNKNOWN_MARGIN_NS: u64 = 1_000_000_000;

/// One process a cheap check found /proc and the table to disagree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Disagreement {
    /// /proc lists it (started then), the table does not have it.
    Unknown { pid: u32, start_ns: u64 },
    /// The table holds it alive; /proc and the kernel do not have it.
    Vanished(String),
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Disagreement::Unknown { pid, start_ns } => write!(
                f,
                "pid {pid} (started {:.2} s) is in /proc, not in the table",
                *start_ns as f64 / 1e9
            ),
            Disagreement::Vanished(e) => write!(f, "{e} is in the table, gone from /proc"),
        }
    }
}

/// The table's side of a correction: "pid 12 (sh, started 3.41 s, ppid 1, last event exec
/// at 5.2 s)" — names escaped, they are chosen by others.
fn entry(p: &Process) -> String {
    format!(
        "pid {} ({}, started {:.2} s, ppid {}, last event {})",
        p.pid,
        p.comm_str().escape_debug(),
        p.start_time_ns as f64 / 1e9,
        p.ppid,
        p.last_event_str()
    )
}

/// The /proc side of a correction.
fn scanned(s: &Scanned) -> String {
    format!(
        "pid {} ({}, started {:.2} s, ppid {}, state {})",
        s.pid,
        s.comm.escape_debug(),
        s.start_time_ns as f64 / 1e9,
        s.ppid,
        s.state
    )
}

impl Table {
    fn process_from_scan(&mut self, s: &Scanned) -> Process {
        let mut ns_pids = [0u32; MAX_PID_LEVELS];
        for (d, v) in ns_pids.iter_mut().zip(&s.ns_pids) {
            *d = *v;
        }
        let mut comm = [0u8; observer_common::COMM_LEN];
        let n = s.comm.len().min(comm.len() - 1);
        comm[..n].copy_from_slice(&s.comm.as_bytes()[..n]);
        let cgroup = self.registry.intern_file(&s.cgroup);
        Process {
            pid: s.pid,
            start_time_ns: s.start_time_ns,
            start_exact: s.start_exact,
            ppid: s.ppid,
            uid: s.uid,
            gid: s.gid,
            pid_level: s.ns_pids.len().saturating_sub(1) as u32,
            ns_pids,
            ns: self.shared.ns(&s.ns),
            cgroup_id: s.cgroup_id,
            cgroup,
            container: None,
            comm,
            exe: 0,
            argv: self.shared.argv(&s.cmdline),
            threads: s.threads.max(1),
            // /proc has no exit time: the zombie's age counts from when observer saw it; its
            // wait status is in stat.
            exit: s.is_zombie().then_some(ExitInfo {
                status: s.exit_status,
                at_ns: 0,
            }),
            adoption: None,
            first_child: 0,
            next_sibling: 0,
            prev_sibling: 0,
            last_event: super::process::SCANNED,
            last_event_ns: 0,
            cgroup_ns: 0,
            exec_cred: None,
            exe_hash: None,
            session: None,
        }
    }

    /// Where /proc (`pids`, one directory read begun at `started_ns`) and the table
    /// disagree; with none and no event lost, a full scan has nothing to correct.
    /// Races of the read are not disagreements: a process the table has that started
    /// after the read began or whose exit was seen (its reap may have been missed or not yet
    /// freed), or a process /proc listed that is gone by now or started too near the read
    /// for its fork event to be applied (`live_start_ticks` reads its start from /proc, as
    /// in [`Table::reconcile`]). What is left is a process /proc has that no event announced,
    /// or one the table thinks alive that /proc lacks.
    #[cfg(test)]
    pub(crate) fn disagreements(
        &self,
        pids: &[u32],
        started_ns: u64,
        live_start_ticks: impl Fn(u32) -> Option<u64>,
        exists: impl Fn(u32) -> bool,
    ) -> Vec<Disagreement> {
        self.disagreements_in(0..u32::MAX, pids, started_ns, live_start_ticks, exists)
    }

    /// [`Table::disagreements`] for one slice of the pid space: `pids` is /proc's list of
    /// `range`, and only the table's processes in `range` are judged.
    pub(crate) fn disagreements_in(
        &self,
        range: std::ops::Range<u32>,
        pids: &[u32],
        started_ns: u64,
        live_start_ticks: impl Fn(u32) -> Option<u64>,
        exists: impl Fn(u32) -> bool,
    ) -> Vec<Disagreement> {
        let listed: rustc_hash::FxHashSet<u32> = pids.iter().copied().collect();
        // A child is in /proc before its parent's fork tracepoint runs; a parent preempted
        // in between (a busy node) delays the event. A process younger than this at the
        // check is left to the next check rather than start a full scan.
        let margin = (self.tick_ns * 2).max(UNKNOWN_MARGIN_NS);
        let unknown = pids
            .iter()
            .filter(|&&p| !self.procs.contains_key(&p))
            .filter_map(|&p| {
                let t = live_start_ticks(p)?;
                (t * self.tick_ns + margin < started_ns).then_some(Disagreement::Unknown {
                    pid: p,
                    start_ns: t * self.tick_ns,
                })
            });
        let vanished = self
            .procs
            .values()
            .filter(|p| {
                range.contains(&p.pid)
                    && !listed.contains(&p.pid)
                    && p.exit.is_none()
                    && p.start_time_ns < started_ns
            })
            // A process the list missed but the kernel still has is no disagreement: the
            // task iterator does not visit every task /proc shows (this host's PID 1).
            .filter(|p| !exists(p.pid))
            .map(|p| Disagreement::Vanished(entry(p)));
        unknown.chain(vanished).collect()
    }

    /// Replaces the table with a scan: runtime containers first, so that a process entered
    /// into a container's pid namespace from outside its cgroup joins that container rather
    /// than a bare one.
    pub(crate) fn seed(&mut self, scans: &[Scanned], now_ns: u64) {
        self.procs.clear();
        self.registry.clear_members();
        self.pending.clear();
        self.exited.clear();
        for s in scans {
            let mut p = self.process_from_scan(s);
            if let Some(e) = p.exit.as_mut() {
                e.at_ns = now_ns;
                self.exited.insert(p.pid);
            }
            self.procs.insert(p.pid, p);
        }
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for &pid in &pids {
            let ppid = self.procs[&pid].ppid;
            self.link(pid, ppid);
        }
        let (in_runtime, rest): (Vec<u32>, Vec<u32>) = pids
            .iter()
            .partition(|pid| self.registry.attribute_is_runtime(self.procs[pid].cgroup));
        for pid in in_runtime.into_iter().chain(rest) {
            self.reattribute(pid);
        }
    }

    /// Compares the table with a scan taken while events kept flowing. `scan_start_ns` is the
    /// boot-clock time the scan began: only processes older than that are judged, since a
    /// younger one may still have its events in the ring buffer. Returns the number of fixes;
    /// processes added from /proc count later, in [`Table::settle`], unless their fork event
    /// arrives meanwhile.
    ///
    /// `live_start_ticks` reads a PID's current start time (clock ticks) from /proc: a
    /// process the scan found but the table lacks is added only if it is still there — one
    /// that ended after the scan read it had its whole life applied (and removed) meanwhile.
    /// `proc_cgroup` reads a PID's `/proc/<pid>/cgroup` now: a cgroup the scan disagrees on
    /// is corrected only if that file disagrees too (the scan reads `cgroup.procs`, which
    /// lists a process moved into a threaded cgroup under its threaded domain).
    pub(crate) fn reconcile_with(
        &mut self,
        scans: &[Scanned],
        scan_start_ns: u64,
        now_ns: u64,
        live_start_ticks: impl Fn(u32) -> Option<u64>,
        proc_cgroup: &dyn Fn(u32) -> Option<String>,
    ) -> u64 {
        let margin = self.tick_ns * 2;
        let mut fixes = 0;
        let mut seen = HashSet::with_capacity(scans.len());
        for s in scans {
            seen.insert(s.pid);
            let old_enough = s.start_time_ns + margin < scan_start_ns;
            match self.procs.get(&s.pid).map(|p| p.start_time_ns) {
                Some(start) if self.same_tick(start, s.start_time_ns) => {
                    if old_enough {
                        fixes += self.correct(s, scan_start_ns, now_ns, proc_cgroup);
                    }
                }
                _ => self.add_missed(s, old_enough, now_ns, &live_start_ticks),
            }
        }
        fixes += self.remove_gone(&seen, margin, scan_start_ns);
        self.relink_orphans();
        self.stats.corrections += fixes;
        fixes
    }

    /// [`Table::reconcile_with`], each process's cgroup file as the scan read it.
    #[cfg(test)]
    pub(crate) fn reconcile(
        &mut self,
        scans: &[Scanned],
        scan_start_ns: u64,
        now_ns: u64,
        live_start_ticks: impl Fn(u32) -> Option<u64>,
    ) -> u64 {
        let files: rustc_hash::FxHashMap<u32, String> =
            scans.iter().map(|s| (s.pid, s.cgroup.clone())).collect();
        let read = |pid: u32| files.get(&pid).cloned();
        self.reconcile_with(scans, scan_start_ns, now_ns, live_start_ticks, &read)
    }

    /// Fixes what the table has wrong about a process the scan found (the same one: same
    /// start): its parent, whether it exited, its cgroup. Returns the number of fixes.
    fn correct(
        &mut self,
        s: &Scanned,
        scan_start_ns: u64,
        now_ns: u64,
        proc_cgroup: &dyn Fn(u32) -> Option<String>,
    ) -> u64 {
        let mut fixes = self.correct_parent(s, now_ns);
        let p = &self.procs[&s.pid];
        let zombie = p.is_zombie();
        if s.is_zombie() && !zombie {
            log::info!(
                "correction: exit missed: the table has {} running, /proc has {}",
                entry(p),
                scanned(s)
            );
            self.procs.get_mut(&s.pid).expect("present").exit = Some(ExitInfo {
                status: None,
                at_ns: now_ns,
            });
            self.exited.insert(s.pid);
            fixes += 1;
        }
        fixes + self.correct_cgroup(s, scan_start_ns, now_ns, proc_cgroup)
    }

    /// Whether the table's cgroup for `p` is one of the paths the `/proc/<pid>/cgroup`
    /// content `file` lists, and its cgroup2 id (if known) names the cgroup2 line's path.
    /// An unreadable file agrees (nothing to correct from).
    fn cgroup_agrees(&self, p: &Process, file: &str) -> bool {
        let Some(lines) = crate::containers::cgroup::ranked_lines(file) else {
            return true;
        };
        let Some(v2) = lines.iter().find(|l| l.hierarchy == 0) else {
            return true;
        };
        let (held, id_path) = self.held_cgroup(p);
        lines.iter().any(|l| l.path == held) && id_path.is_none_or(|id| id == v2.path)
    }

    /// The table's cgroup path for `p`, and the path its cgroup2 id names (if known).
    fn held_cgroup(&self, p: &Process) -> (&str, Option<&str>) {
        let id_path = self
            .registry
            .path_of_cgroup_id(p.cgroup_id)
            .filter(|_| p.cgroup_id != 0)
            .map(|i| self.registry.path(i));
        (self.registry.path(p.cgroup), id_path)
    }

    fn correct_parent(&mut self, s: &Scanned, now_ns: u64) -> u64 {
        let p = &self.procs[&s.pid];
        let pending = self.pending.iter().any(|w| w.pid == s.pid);
        if p.ppid == s.ppid || pending || s.ppid == 0 {
            return 0;
        }
        log::info!(
            "correction: parent: the table has {}, /proc has {}",
            entry(p),
            scanned(s)
        );
        let from = self
            .procs
            .get(&p.ppid)
            .is_none_or(|o| o.is_zombie())
            .then_some(p.ppid);
        self.reparent(s.pid, s.ppid, from, now_ns);
        1
    }

    /// A move to another cgroup whose attach event was lost: the table's cgroup is none of
    /// those /proc lists for the process (or its cgroup2 id names another cgroup2 path).
    /// Judged only for a running process no move was applied to since the scan began — a
    /// later move is newer than what the scan read (other events say nothing of its cgroup).
    fn correct_cgroup(
        &mut self,
        s: &Scanned,
        scan_start_ns: u64,
        now_ns: u64,
        proc_cgroup: &dyn Fn(u32) -> Option<String>,
    ) -> u64 {
        let p = &self.procs[&s.pid];
        if p.is_zombie() || s.is_zombie() || p.cgroup_ns >= scan_start_ns {
            return 0;
        }
        if self.cgroup_agrees(p, &s.cgroup) {
            return 0;
        }
        // Confirmed by the process's own file, read now.
        let Some(file) = proc_cgroup(s.pid).filter(|f| !self.cgroup_agrees(p, f)) else {
            return 0;
        };
        let Some(v2) = crate::containers::cgroup::ranked_lines(&file).and_then(|l| {
            l.into_iter()
                .find(|l| l.hierarchy == 0)
                .map(|l| l.path.to_string())
        }) else {
            return 0;
        };
        let (held, id_path) = self.held_cgroup(p);
        log::info!(
            "correction: cgroup: the table has {} in {:?}, /proc has {} in {:?}",
            entry(p),
            id_path.unwrap_or(held),
            scanned(s),
            v2
        );
        let idx = self.registry.intern_file(&file);
        let p = self.procs.get_mut(&s.pid).expect("present");
        p.cgroup = idx;
        // Its cgroup2 id is unknown until an event newer than now names it (an id learned
        // for the path earlier may be a removed cgroup's of the same name).
        p.cgroup_id = 0;
        p.cgroup_ns = now_ns;
        self.reattribute(s.pid);
        1
    }

    /// Adds a process the scan found and the table lacks (or holds an earlier process
    /// under its PID), if it is still there; old enough, it awaits its fork event before it
    /// counts as a miss.
    fn add_missed(
        &mut self,
        s: &Scanned,
        old_enough: bool,
        now_ns: u64,
        live_start_ticks: &impl Fn(u32) -> Option<u64>,
    ) {
        let existing = self.procs.get(&s.pid);
        // The table already has a later holder of this PID: its events were applied after
        // the scan read /proc.
        if existing.is_some_and(|p| p.start_time_ns > s.start_time_ns) {
            return;
        }
        let tick = self.tick_ns;
        if live_start_ticks(s.pid) != Some(s.start_time_ns / tick) {
            return;
        }
        let earlier = existing.map(entry);
        if earlier.is_some() {
            self.remove(s.pid);
        }
        let mut p = self.process_from_scan(s);
        if let Some(e) = p.exit.as_mut() {
            e.at_ns = now_ns;
            self.exited.insert(p.pid);
        }
        self.insert(p);
        // Added at once; a miss only if the fork event does not follow (a younger PID
        // reuse's events are simply still on their way).
        if old_enough {
            let table_side = earlier.unwrap_or_else(|| "nothing".to_string());
            log::debug!(
                "reconcile: /proc has {}, the table {table_side}: added, awaiting its fork \
                 event",
                scanned(s)
            );
            self.unconfirmed.push(Unconfirmed {
                pid: s.pid,
                start_time_ns: s.start_time_ns,
                due_ns: now_ns + CONFIRM_NS,
                // Worded as every correction is ("the table has …, /proc has …"), as of the scan.
                sides: format!("the table has {table_side}, /proc has {}", scanned(s)).into(),
            });
        }
    }

    /// Removes the processes older than the scan that it did not find; those the table
    /// thought alive are corrections (returned).
    fn remove_gone(&mut self, seen: &HashSet<u32>, margin: u64, scan_start_ns: u64) -> u64 {
        let gone: Vec<(u32, Option<String>)> = self
            .procs
            .values()
            .filter(|p| !seen.contains(&p.pid) && p.start_time_ns + margin < scan_start_ns)
            // An exited process reaped before the scan read /proc only awaits its free
            // event (an RCU callback, later than the reap): not a correction.
            .map(|p| (p.pid, p.exit.is_none().then(|| entry(p))))
            .collect();
        let mut fixes = 0;
        for (pid, alive) in gone {
            self.remove(pid);
            if let Some(e) = alive {
                log::info!("correction: end missed: the table has {e}, /proc has nothing");
                fixes += 1;
            }
        }
        fixes
    }

    /// Children whose links pointed at removed parents are relinked to their recorded ppid.
    fn relink_orphans(&mut self) {
        let orphans: Vec<(u32, u32)> = self
            .procs
            .values()
            .filter(|p| {
                p.prev_sibling == 0
                    && self
                        .procs
                        .get(&p.ppid)
                        .is_some_and(|par| par.first_child != p.pid)
            })
            .map(|p| (p.pid, p.ppid))
            .collect();
        for (pid, ppid) in orphans {
            if !self.children(ppid).contains(&pid) {
                self.link(pid, ppid);
            }
        }
    }

    /// A fork event for a process reconciliation added: the event was late, not lost.
    pub(super) fn confirm(&mut self, pid: u32, start_ns: u64, now_ns: u64) {
        let tick = self.tick_ns;
        if let Some(i) = self
            .unconfirmed
            .iter()
            .position(|u| u.pid == pid && u.start_time_ns / tick == start_ns / tick)
        {
            let u = self.unconfirmed.swap_remove(i);
            log::debug!(
                "reconcile: pid {pid}: its fork event came {} ms after the scan added it: not a miss",
                (now_ns + CONFIRM_NS).saturating_sub(u.due_ns) / 1_000_000
            );
        }
    }

    /// Counts as corrections the processes reconciliation added whose fork event never came
    /// (lost, or predating the agent). Returns how many were settled now.
    pub(crate) fn settle(&mut self, now_ns: u64) -> u64 {
        let mut missed = 0;
        self.unconfirmed.retain(|u| {
            if u.due_ns > now_ns {
                return true;
            }
            log::info!(
                "correction: start missed (no fork event followed in {} s): {}",
                CONFIRM_NS / 1_000_000_000,
                u.sides
            );
            missed += 1;
            false
        });
        self.stats.corrections += missed;
        missed
    }

    /// Whether processes added by reconciliation still await their fork event.
    pub(crate) fn has_unconfirmed(&self) -> bool {
        !self.unconfirmed.is_empty()
    }
}
