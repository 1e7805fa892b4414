//! Parent/child links (an intrusive list through the processes, so an exit finds its
//! children without scanning the table or allocating) and orphan adoption.

use super::{Adopter, Adoption, Pending, Table};

impl Table {
    /// Puts `pid` at the head of `parent`'s child list and records the parent.
    pub(super) fn link(&mut self, pid: u32, parent: u32) {
        let head = match self.procs.get_mut(&parent) {
            Some(pp) if parent != pid => std::mem::replace(&mut pp.first_child, pid),
            _ => 0,
        };
        if let Some(p) = self.procs.get_mut(&pid) {
            p.ppid = parent;
            p.prev_sibling = 0;
            p.next_sibling = head;
        }
        if head != 0 {
            if let Some(h) = self.procs.get_mut(&head) {
                h.prev_sibling = pid;
            }
        }
    }

    pub(super) fn unlink(&mut self, pid: u32) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        let (ppid, prev, next) = (p.ppid, p.prev_sibling, p.next_sibling);
        p.prev_sibling = 0;
        p.next_sibling = 0;
        if prev != 0 {
            if let Some(pp) = self.procs.get_mut(&prev) {
                pp.next_sibling = next;
            }
        } else if let Some(par) = self.procs.get_mut(&ppid) {
            if par.first_child == pid {
                par.first_child = next;
            }
        }
        if next != 0 {
            if let Some(n) = self.procs.get_mut(&next) {
                n.prev_sibling = prev;
            }
        }
    }

    /// Children of `pid` (host pids), from the intrusive list.
    pub(crate) fn children(&self, pid: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut c = self.procs.get(&pid).map(|p| p.first_child).unwrap_or(0);
        while c != 0 && out.len() <= self.procs.len() {
            out.push(c);
            c = self.procs.get(&c).map(|p| p.next_sibling).unwrap_or(0);
        }
        out
    }

    /// Empties `pid`'s child list (its children keep their ppid until reparented).
    pub(super) fn detach_children(&mut self, pid: u32) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        let mut c = std::mem::take(&mut p.first_child);
        let mut n = 0;
        while c != 0 && n <= self.procs.len() {
            let Some(child) = self.procs.get_mut(&c) else {
                break;
            };
            child.prev_sibling = 0;
            c = std::mem::take(&mut child.next_sibling);
            n += 1;
        }
    }

    /// `pid`'s thread group died: its children are about to be (or were just) reparented.
    pub(super) fn orphan_children(&mut self, pid: u32, at_ns: u64) {
        let mut c = self.procs.get(&pid).map(|p| p.first_child).unwrap_or(0);
        let mut n = 0;
        while c != 0 && n <= self.procs.len() {
            let Some(p) = self.procs.get(&c) else { break };
            self.pending.push(Pending {
                pid: c,
                start_time_ns: p.start_time_ns,
                from: pid,
                at_ns,
                tries: 0,
            });
            c = p.next_sibling;
            n += 1;
        }
    }

    /// Whether orphans are waiting for their new parent to be read.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Reads the new parent of each waiting orphan (`read_ppid` gives the current ppid and
    /// start ticks from /proc) and records the adoptions. Orphans still showing their old
    /// parent are retried on the next call, a few times.
    pub(crate) fn resolve_pending(&mut self, read_ppid: impl Fn(u32) -> Option<(u32, u64)>) {
        let pending = std::mem::take(&mut self.pending);
        for mut w in pending {
            let Some(p) = self.procs.get(&w.pid) else {
                continue;
            };
            if !self.same_tick(p.start_time_ns, w.start_time_ns) || p.ppid != w.from {
                continue; // gone, reused, or an event already told us the new parent
            }
            match read_ppid(w.pid) {
                Some((ppid, ticks)) if ticks == w.start_time_ns / self.tick_ns => {
                    if ppid != w.from {
                        self.reparent(w.pid, ppid, Some(w.from), w.at_ns);
                    } else if w.tries < 20 {
                        w.tries += 1;
                        self.pending.push(w);
                    }
                }
                _ => {}
            }
        }
    }

    /// Moves `pid` under `new_parent`; `orphaned_from` is the exited parent when this is an
    /// adoption (recorded with the adopter's kind).
    pub(super) fn reparent(
        &mut self,
        pid: u32,
        new_parent: u32,
        orphaned_from: Option<u32>,
        at_ns: u64,
    ) {
        self.unlink(pid);
        self.link(pid, new_parent);
        let Some(from) = orphaned_from else { return };
        let child_pidns = self.procs.get(&pid).map(|p| p.pidns()).unwrap_or(0);
        let by = match self.procs.get(&new_parent) {
            _ if new_parent == 1 => Adopter::HostInit,
            Some(np) if np.pidns() == child_pidns && np.ns_pid() == 1 && np.pid_level > 0 => {
                Adopter::NamespaceInit
            }
            _ => Adopter::Subreaper,
        };
        self.stats.adoptions[by as usize] += 1;
        if let Some(p) = self.procs.get_mut(&pid) {
            p.adoption = Some(Adoption { from, by, at_ns });
        }
    }
}
