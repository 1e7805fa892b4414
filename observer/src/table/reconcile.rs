//! Seeding the table from a /proc scan and reconciling it against a later scan: processes
//! the events missed are added, processes whose end was missed are removed, wrong parents
//! and zombie states are fixed — each fix counted.

use std::collections::HashSet;

use observer_common::MAX_PID_LEVELS;

use super::{scan::Scanned, ExitInfo, Fixed, Process, Table};

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
            start_exact: false,
            ppid: s.ppid,
            uid: s.uid,
            gid: s.gid,
            pid_level: s.ns_pids.len().saturating_sub(1) as u32,
            ns_pids,
            ns: s.ns,
            cgroup_id: 0,
            cgroup,
            container: None,
            comm,
            exe: 0,
            argv: Fixed::from_bytes(&s.cmdline),
            threads: s.threads.max(1),
            // /proc has no exit time: the zombie's age counts from when observer saw it.
            exit: s.is_zombie().then_some(ExitInfo {
                status: None,
                at_ns: 0,
            }),
            adoption: None,
            first_child: 0,
            next_sibling: 0,
            prev_sibling: 0,
        }
    }

    /// Replaces the table with a scan: runtime containers first, so that a process entered
    /// into a container's pid namespace from outside its cgroup joins that container rather
    /// than a bare one.
    pub fn seed(&mut self, scans: &[Scanned], now_ns: u64) {
        self.procs.clear();
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
    /// younger one may still have its events in the ring buffer. Returns the number of fixes.
    pub fn reconcile(&mut self, scans: &[Scanned], scan_start_ns: u64, now_ns: u64) -> u64 {
        let margin = self.tick_ns * 2;
        let mut fixes = 0;
        let mut seen = HashSet::with_capacity(scans.len());
        for s in scans {
            seen.insert(s.pid);
            let old_enough = s.start_time_ns + margin < scan_start_ns;
            match self.procs.get(&s.pid) {
                Some(p) if self.same_tick(p.start_time_ns, s.start_time_ns) => {
                    if !old_enough {
                        continue;
                    }
                    let (ppid, zombie, pending) = (
                        p.ppid,
                        p.is_zombie(),
                        self.pending.iter().any(|w| w.pid == s.pid),
                    );
                    if ppid != s.ppid && !pending && s.ppid != 0 {
                        log::debug!(
                            "reconcile: pid {}: ppid {ppid} in the table, {} in /proc",
                            s.pid,
                            s.ppid
                        );
                        let from = self
                            .procs
                            .get(&ppid)
                            .is_none_or(|o| o.is_zombie())
                            .then_some(ppid);
                        self.reparent(s.pid, s.ppid, from, now_ns);
                        fixes += 1;
                    }
                    if s.is_zombie() && !zombie {
                        log::debug!(
                            "reconcile: pid {}: a zombie in /proc, its exit was missed",
                            s.pid
                        );
                        self.procs.get_mut(&s.pid).expect("present").exit = Some(ExitInfo {
                            status: None,
                            at_ns: now_ns,
                        });
                        self.exited.insert(s.pid);
                        fixes += 1;
                    }
                }
                existing => {
                    // The table already has a later holder of this PID: its events were
                    // applied after the scan read /proc.
                    if existing.is_some_and(|p| p.start_time_ns > s.start_time_ns) {
                        continue;
                    }
                    let reused = existing.is_some();
                    // A PID reused by a process younger than the margin: the end of the
                    // earlier holder and this one's fork are still on their way, not missed.
                    if reused && old_enough {
                        log::debug!(
                            "reconcile: pid {}: start time {} in the table, {} in /proc (reused)",
                            s.pid,
                            existing.map_or(0, |p| p.start_time_ns),
                            s.start_time_ns
                        );
                    }
                    if reused {
                        self.remove(s.pid);
                    } else if old_enough {
                        log::debug!(
                            "reconcile: pid {} ({}) in /proc since {} ns, missing from the table",
                            s.pid,
                            s.comm,
                            s.start_time_ns
                        );
                    }
                    let mut p = self.process_from_scan(s);
                    if let Some(e) = p.exit.as_mut() {
                        e.at_ns = now_ns;
                        self.exited.insert(p.pid);
                    }
                    self.insert(p);
                    if old_enough {
                        fixes += 1;
                    }
                }
            }
        }
        let gone: Vec<(u32, bool)> = self
            .procs
            .values()
            .filter(|p| !seen.contains(&p.pid) && p.start_time_ns + margin < scan_start_ns)
            .map(|p| (p.pid, p.exit.is_some()))
            .collect();
        for (pid, exited) in gone {
            self.remove(pid);
            // An exited process reaped before the scan read /proc only awaits its free
            // event (an RCU callback, later than the reap): not a correction.
            if !exited {
                log::debug!("reconcile: pid {pid} is in the table but gone from /proc");
                fixes += 1;
            }
        }
        // Children whose links pointed at removed parents are relinked to their recorded ppid.
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
        self.stats.corrections += fixes;
        fixes
    }
}
