//! Applying one kernel event to the table: the process it concerns is created, refreshed,
//! ended or removed, and its container's counters move. No I/O, and no allocation but an
//! exec's (its command line and credentials, unless the last exec had the same).

use observer_common::{CgroupAttachEvent, EventHeader, EventKind, ExecEvent, ExitEvent, FreeEvent};

use super::{ExitInfo, Table};
use crate::events::{c_str, Event};

impl Table {
    /// Applies one event, counted by kind; the process it concerns remembers it as its
    /// last.
    pub(crate) fn apply(&mut self, ev: &Event) {
        self.stats.applied[ev.kind() as usize] += 1;
        self.apply_kind(ev);
        let h = ev.header();
        // Signal and OOM records are headed by the sender or the allocating task: not a fact
        // of that process's life.
        if matches!(ev, Event::Signal(_) | Event::Oom(_)) {
            return;
        }
        if let Some(p) = self.procs.get_mut(&h.tgid) {
            p.last_event = ev.kind() as u8;
            p.last_event_ns = h.ktime_ns;
        }
    }

    /// What the event does to the table, by kind.
    fn apply_kind(&mut self, ev: &Event) {
        let h = ev.header();
        match ev {
            Event::Fork(e) if e.is_thread != 0 => self.set_threads(h.tgid, |n| n + 1),
            Event::Fork(e) => self.fork(h.tgid, &e.task, h.ktime_ns),
            Event::Exec(e) => self.exec(h, e),
            Event::Exit(e) => self.exit(h, e),
            Event::Free(e) => self.free(h, e),
            // Process facts come from the leader (/proc reports the leader's namespaces,
            // NSpid and credentials): a non-leader thread that enters other namespaces —
            // Go runtimes lock a thread and setns it all day — changes nothing of its
            // process's.
            Event::Setns(e) | Event::Unshare(e) if h.pid == h.tgid => {
                self.ensure(h.tgid, &e.task, true);
                self.refresh(h.tgid, &e.task, h.ktime_ns, true);
                self.note_entry(h.tgid, h.ktime_ns);
            }
            Event::Setns(_) | Event::Unshare(_) => self.stats.thread_ns_changes += 1,
            // A thread moved alone (cgroup v1 `tasks`, v2 `cgroup.threads`): /proc shows the
            // leader's cgroup for the process, so only a thread group's move counts.
            Event::CgroupAttach(_) if h.pid != h.tgid => self.stats.thread_ns_changes += 1,
            // The kernel skips an exiting task (a zombie written to cgroup.procs) but still
            // reports the attach: the process stays where /proc says it is.
            Event::CgroupAttach(e) if e.task.flags & observer_common::TASK_FLAG_EXITING != 0 => {
                log::debug!("cgroup attach of exiting pid {} ignored", h.tgid);
            }
            Event::CgroupAttach(e) => self.cgroup_attach(h, e),
            Event::Signal(e) => self.apply_signal(e),
            Event::Oom(e) => self.apply_oom(e),
        }
    }

    /// Counts a fork, exec or exit in the container's counters.
    pub(super) fn count(&mut self, container: Option<u32>, kind: EventKind) {
        if let Some(c) = container.and_then(|c| self.registry.get_mut(c)) {
            match kind {
                EventKind::Fork => c.counters.forks += 1,
                EventKind::Exec => c.counters.execs += 1,
                EventKind::Exit => c.counters.exits += 1,
                _ => {}
            }
        }
    }

    /// A program replaced the process's image: its comm, executable and argv.
    fn exec(&mut self, h: &EventHeader, e: &ExecEvent) {
        let pid = h.tgid;
        self.ensure(pid, &e.task, h.pid == h.tgid);
        self.refresh(pid, &e.task, h.ktime_ns, h.pid == h.tgid);
        let (exe, _) = self.exes.intern(&c_str(&e.filename));
        if let Some(p) = self.procs.get_mut(&pid) {
            p.comm = e.task.comm;
            p.exe = exe;
            p.argv = self
                .shared
                .argv(&e.args[..(e.args_len as usize).min(e.args.len())]);
            p.exec_cred = Some(self.shared.cred(super::process::ExecCred::of(e)));
            // The agent sets the new image's (set_exe_hash); other callers leave none.
            p.exe_hash = None;
            let c = p.container;
            // A non-leader thread exec'ing kills the other threads (de_thread).
            self.set_threads(pid, |_| 1);
            self.count(c, EventKind::Exec);
        }
        self.exec_cgroup(pid, e.task.cgroup_id, h.ktime_ns);
    }

    /// The cgroup2 id an exec record read is the process's at that moment. A move while a
    /// non-leader thread's exec was killing the others reports the dying leader (exiting:
    /// ignored, nothing of it moved) although the exec'ing thread, which becomes the
    /// process, did move: the torture's mover caught one such in 35,865 comparisons.
    fn exec_cgroup(&mut self, pid: u32, id: u64, now: u64) {
        let Some(p) = self.procs.get(&pid) else {
            return;
        };
        let (old_id, old_path) = (p.cgroup_id, p.cgroup);
        if id == 0 || old_id == 0 || id == old_id {
            return;
        }
        // The table's path is the cgroup2 one (not a v1 hierarchy's container path).
        let v2_path = self.registry.path_of_cgroup_id(old_id) == Some(old_path);
        let path = self.path_of_cgroup_id(id, now);
        let p = self.procs.get_mut(&pid).expect("checked above");
        p.cgroup_id = id;
        if let Some(path) = path.filter(|_| v2_path) {
            p.cgroup = path;
            p.cgroup_ns = now;
            self.reattribute(pid);
        }
    }

    /// A thread ended, or the whole group (the process is a zombie until its free event).
    fn exit(&mut self, h: &EventHeader, e: &ExitEvent) {
        let Some(p) = self.procs.get(&h.tgid) else {
            log::debug!("exit of pid {}: not in the table", h.tgid);
            return;
        };
        if !self.same(p, e.task.start_time_ns) && e.is_leader != 0 {
            log::debug!(
                "exit of pid {} (started {}) ignored: the table holds one started {}",
                h.tgid,
                e.task.start_time_ns,
                p.start_time_ns
            );
            return;
        }
        if e.group_dead != 0 {
            let p = self.procs.get_mut(&h.tgid).expect("checked above");
            if e.is_leader != 0 {
                // The name it had at its end (prctl(PR_SET_NAME) renames, as
                // busybox's applets do), as the kernel's OOM and exit lines show it.
                p.comm = e.task.comm;
            }
            p.exit = Some(ExitInfo {
                status: Some(e.exit_code),
                at_ns: h.ktime_ns,
            });
            let c = p.container;
            self.exited.insert(h.tgid);
            self.count(c, EventKind::Exit);
            self.record_end(h.tgid, e.exit_code, h.ktime_ns);
            self.keep_orphan_chains(h.tgid);
            self.orphan_children(h.tgid, h.ktime_ns);
        } else if e.is_leader == 0 {
            self.set_threads(h.tgid, |n| n.saturating_sub(1).max(1));
        }
    }

    /// The process was reaped.
    fn free(&mut self, h: &EventHeader, e: &FreeEvent) {
        // Only the leader's release reaps the process (threads are freed one by one).
        if h.pid == h.tgid {
            if let Some(p) = self.procs.get(&h.tgid) {
                if self.same(p, e.task.start_time_ns) {
                    self.remove(h.tgid);
                }
            }
        }
    }

    /// The process moved to another cgroup (a container's, perhaps).
    fn cgroup_attach(&mut self, h: &EventHeader, e: &CgroupAttachEvent) {
        let pid = h.tgid;
        self.ensure(pid, &e.task, true);
        // A path longer than the record holds arrives cut: its cgroup2 id names it whole
        // (taught by an event or the seed, else found by a walk of the cgroup2 tree).
        let cut = e.task.flags & observer_common::TASK_FLAG_CGROUP_PATH_CUT != 0;
        let whole = (cut && e.hierarchy_id == 0)
            .then(|| self.path_of_cgroup_id(e.dst_cgroup_id, h.ktime_ns))
            .flatten();
        let idx = match whole {
            Some(idx) => idx,
            None => self.registry.intern_path(&c_str(&e.path)),
        };
        if e.hierarchy_id == 0 && !cut {
            self.registry.learn_cgroup_id(e.dst_cgroup_id, idx);
        }
        let names_container =
            crate::containers::cgroup::parse_path(self.registry.path(idx)).is_some();
        if let Some(p) = self.procs.get_mut(&pid) {
            if e.hierarchy_id == 0 {
                p.cgroup_id = e.dst_cgroup_id;
            }
            if e.hierarchy_id == 0 || names_container {
                p.cgroup = idx;
                p.cgroup_ns = h.ktime_ns;
                self.reattribute(pid);
            }
        }
        // Attributed only now (a podman exec starts in conmon's cgroup).
        self.note_entry(pid, h.ktime_ns);
    }
}
