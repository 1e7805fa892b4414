//! Processes that already ended, per container: a bounded ring each (and a bound on all of
//! them together), kept after the container itself ended for `retention`, so a crashed
//! container can be examined after its runtime removed it. Each entry is written when the
//! process's last thread exits, with what the table knew then: command, parent chain up to
//! the container's PID 1, the signal that ended it and who sent it, the OOM killer's facts,
//! and — when it was killed because its pid namespace's init died — that init's own end.

use std::collections::{BinaryHeap, VecDeque};

use observer_common::COMM_LEN;
use rustc_hash::FxHashMap;

use super::{
    signal_facts::{exit_class, OomFacts, SignalFact, SIGKILL, SI_KERNEL},
    Table,
};
use crate::containers::ContainerKey;

#[derive(Clone, Copy, Debug)]
pub(crate) struct HistoryLimits {
    pub(crate) per_container: usize,
    pub(crate) total: usize,
    /// How long a container's history stays after its last entry.
    pub(crate) retention_ns: u64,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            per_container: 1000,
            total: 100_000,
            retention_ns: 3600 * 1_000_000_000,
        }
    }
}

/// One ancestor of an ended process (innermost first in `Ended::chain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) pid: u32,
    pub(crate) ns_pid: u32,
    pub(crate) comm: [u8; COMM_LEN],
}

/// The pid-namespace init whose death killed a process, and how that init ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InitEnd {
    pub(crate) pid: u32,
    pub(crate) comm: [u8; COMM_LEN],
    /// Its wait status (None when its exit was not seen).
    pub(crate) status: Option<u32>,
    /// The signal that ended the init, when one did.
    pub(crate) cause: Option<SignalFact>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ended {
    pub(crate) pid: u32,
    pub(crate) ns_pid: u32,
    pub(crate) comm: [u8; COMM_LEN],
    /// NUL-separated argv, as captured at exec.
    pub(crate) argv: Box<[u8]>,
    pub(crate) exe: Box<str>,
    /// Parent, grandparent... up to the container's PID 1 (or the first ancestor outside):
    /// for an orphan as they were before its parent died, else as they are at its end (the
    /// same as at its exec: only a parent's death changes a process's parent).
    pub(crate) chain: Box<[Link]>,
    /// When it had been orphaned: the parent it had before (its chain at exec went
    /// through that one).
    pub(crate) adopted_from: Option<u32>,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    /// wait(2) status.
    pub(crate) status: u32,
    /// The signal that ended it (its sender as it was then).
    pub(crate) signal: Option<Box<SignalFact>>,
    pub(crate) oom: Option<Box<OomFacts>>,
    /// Killed because the init of its pid namespace died.
    pub(crate) with_namespace: Option<Box<InitEnd>>,
    /// Signals it ignored before it ended (e.g. the SIGTERM of a `docker stop`).
    pub(crate) ignored: Box<[SignalFact]>,
    /// Its real ids and what the exec of its image left (None: no exec seen, or an entry
    /// the durable store kept in schema 1).
    pub(crate) exec: Option<Box<ExecOf>>,
    /// Its executable's hash (None: no exec seen, or an entry the durable store kept in
    /// schema 1).
    pub(crate) exe_hash: Option<super::exe_hash::ExeHash>,
    /// The exec session it ran in (sessions.rs), its root's or inherited.
    pub(crate) session: Option<std::sync::Arc<super::sessions::Session>>,
}

/// An ended process's real ids beside the credentials and executable identity its exec
/// left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ExecOf {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) cred: super::process::ExecCred,
}

#[cfg(test)]
impl ExecOf {
    /// A setuid-root exec by uid 1000 with every capability (tests of the views and the
    /// store's codec).
    pub(crate) fn setuid_fixture() -> ExecOf {
        ExecOf {
            uid: 1000,
            gid: 1000,
            cred: super::process::ExecCred {
                euid: 0,
                egid: 1000,
                suid: 0,
                sgid: 1000,
                cap_eff: (1 << 41) - 1,
                raised: true,
                exe: super::exe_hash::ExeId {
                    dev: 0xfd0_0001,
                    ino: 1_234_567,
                    size: 1_100_000,
                    mtime_ns: 1_700_000_000_123_456_789,
                },
            },
        }
    }
}

#[cfg(test)]
impl Ended {
    /// A process that was its pid namespace's PID 1 and exited 0, with nothing else known:
    /// what tests build their entries on, setting what they check.
    pub(crate) fn fixture(pid: u32, comm: &str, argv: &[u8], exe: &str) -> Ended {
        let mut c = [0u8; COMM_LEN];
        let n = comm.len().min(COMM_LEN - 1);
        c[..n].copy_from_slice(&comm.as_bytes()[..n]);
        Ended {
            pid,
            ns_pid: 1,
            comm: c,
            argv: argv.into(),
            exe: exe.into(),
            chain: Box::new([]),
            adopted_from: None,
            start_ns: 0,
            end_ns: 0,
            status: 0,
            signal: None,
            oom: None,
            with_namespace: None,
            ignored: Box::new([]),
            exec: None,
            exe_hash: None,
            session: None,
        }
    }
}

impl Ended {
    /// The host pid of its pid namespace's init, when it is that init or its parents
    /// reach it.
    pub(crate) fn init_pid(&self) -> Option<u32> {
        if self.ns_pid == 1 {
            return Some(self.pid);
        }
        self.chain.iter().find(|l| l.ns_pid == 1).map(|l| l.pid)
    }
}

#[derive(Default)]
pub(crate) struct History {
    rings: FxHashMap<ContainerKey, VecDeque<Ended>>,
    total: usize,
    pub(crate) evicted: u64,
    /// Entries recorded since the exporter last took them (None: nothing exports them).
    outbox: Option<Vec<(ContainerKey, Ended)>>,
}

impl History {
    pub(crate) fn len(&self) -> usize {
        self.total
    }

    pub(crate) fn of(&self, key: &ContainerKey) -> Option<&VecDeque<Ended>> {
        self.rings.get(key)
    }

    /// Containers with a history (including ones the registry no longer has).
    pub(crate) fn keys(&self) -> impl Iterator<Item = &ContainerKey> {
        self.rings.keys()
    }

    fn push(&mut self, key: &ContainerKey, e: Ended, lim: &HistoryLimits) {
        // The key is cloned only for a container's first entry (this runs on every exit).
        if let Some(out) = &mut self.outbox {
            out.push((key.clone(), e.clone()));
        }
        if !self.rings.contains_key(key) {
            self.rings.insert(key.clone(), VecDeque::new());
        }
        let ring = self.rings.get_mut(key).expect("present");
        ring.push_back(e);
        self.total += 1;
        while ring.len() > lim.per_container.max(1) {
            ring.pop_front();
            self.total -= 1;
            self.evicted += 1;
        }
        if self.total > lim.total {
            self.evict_oldest(lim.total - lim.total / 100);
        }
    }

    /// Drops the oldest entries of all rings until `keep` remain (one pass for about a
    /// hundredth of the bound, so that the cost is spread over many pushes).
    fn evict_oldest(&mut self, keep: usize) {
        let mut heap: BinaryHeap<(std::cmp::Reverse<u64>, ContainerKey)> = self
            .rings
            .iter()
            .filter_map(|(k, r)| Some((std::cmp::Reverse(r.front()?.end_ns), k.clone())))
            .collect();
        while self.total > keep {
            let Some((_, key)) = heap.pop() else { break };
            let ring = self.rings.get_mut(&key).expect("present");
            ring.pop_front();
            self.total -= 1;
            self.evicted += 1;
            match ring.front() {
                Some(f) => heap.push((std::cmp::Reverse(f.end_ns), key)),
                None => {
                    self.rings.remove(&key);
                }
            }
        }
    }

    /// Drops the histories whose newest entry is older than the retention.
    pub(crate) fn expire(&mut self, now_ns: u64, lim: &HistoryLimits) {
        let (mut dropped, mut n) = (0, 0);
        self.rings.retain(|_, r| {
            let keep = r
                .back()
                .is_some_and(|e| now_ns.saturating_sub(e.end_ns) < lim.retention_ns);
            if !keep {
                dropped += r.len();
                n += 1;
            }
            keep
        });
        self.total -= dropped;
        self.evicted += dropped as u64;
        if n > 0 {
            log::debug!("history: {n} containers' histories expired ({dropped} entries)");
        }
    }
}

impl Table {
    /// Writes the history entry of `pid`, whose last thread just exited with `status`.
    pub(super) fn record_end(&mut self, pid: u32, status: u32, at_ns: u64) {
        let Some(p) = self.procs.get(&pid) else {
            return;
        };
        let Some(c) = p.container else {
            return; // host processes have no history
        };
        // An orphan's chain is the one it had before its parent died (kept then).
        let chain = match self.orphan_chains.get(&pid) {
            Some(c) => c.clone(),
            None => self.chain_of(p).into(),
        };
        let facts = self.signals_of(pid);
        let signal = crate::events::exit_status(status)
            .signal
            .and_then(|sig| facts.and_then(|f| f.last(sig as u32)).cloned());
        let with_namespace = signal
            .as_ref()
            .filter(|s| {
                s.sig == SIGKILL
                    && s.code == SI_KERNEL
                    && s.sender.pid != pid
                    && s.sender.ns_pid == Some(1)
                    && s.sender.pidns == p.pidns()
            })
            .map(|s| {
                let init = self.procs.get(&s.sender.pid);
                let init_status = init.and_then(|i| i.exit).and_then(|x| x.status);
                let cause = init_status
                    .and_then(|st| crate::events::exit_status(st).signal)
                    .and_then(|sig| self.signals_of(s.sender.pid)?.last(sig as u32).cloned());
                Box::new(InitEnd {
                    pid: s.sender.pid,
                    comm: s.sender.comm,
                    status: init_status,
                    cause,
                })
            });
        let oom = facts.and_then(|f| f.oom.clone()).map(Box::new);
        let ignored: Box<[SignalFact]> = facts
            .map(|f| f.recent.iter().filter(|s| s.result == 1).cloned().collect())
            .unwrap_or_default();
        let e = Ended {
            pid,
            ns_pid: p.ns_pid(),
            comm: p.comm,
            argv: p.argv.bytes().into(),
            exe: self.exe(p.exe).into(),
            chain,
            adopted_from: p.adoption.map(|a| a.from),
            start_ns: p.start_time_ns,
            end_ns: at_ns,
            status,
            signal: signal.map(Box::new),
            oom,
            with_namespace,
            ignored,
            exec: p.exec_cred.as_deref().map(|&cred| {
                Box::new(ExecOf {
                    uid: p.uid,
                    gid: p.gid,
                    cred,
                })
            }),
            exe_hash: p.exe_hash.clone(),
            session: p.session.clone(),
        };
        if e.ns_pid == 1 && p.pid_level > 0 {
            self.registry.init_ended(c, p.pidns(), at_ns);
        }
        let Some(container) = self.registry.get_mut(c) else {
            return;
        };
        container.signals.exit_classes[exit_class(status)] += 1;
        self.history.push(&container.key, e, &self.history_limits);
    }

    /// `p`'s parent, grandparent... while they are in its container or pid namespace, up
    /// to its namespace's PID 1.
    pub(super) fn chain_of(&self, p: &super::Process) -> Vec<Link> {
        let mut chain = Vec::new();
        let mut cur = p;
        while cur.ns_pid() != 1 && chain.len() < 16 {
            match self.procs.get(&cur.ppid) {
                Some(par) if par.container == p.container || par.pidns() == p.pidns() => {
                    chain.push(Link {
                        pid: par.pid,
                        ns_pid: par.ns_pid(),
                        comm: par.comm,
                    });
                    cur = par;
                }
                _ => break,
            }
        }
        chain
    }

    /// `parent` is dying: its children in containers keep the chain they had (the dying
    /// parent first) for their history entries, as it was before they were adopted.
    pub(super) fn keep_orphan_chains(&mut self, parent: u32) {
        let Some(par) = self.procs.get(&parent) else {
            return;
        };
        if par.first_child == 0 || par.container.is_none() {
            return;
        }
        let mut chain = vec![Link {
            pid: par.pid,
            ns_pid: par.ns_pid(),
            comm: par.comm,
        }];
        if par.ns_pid() != 1 {
            chain.extend(self.chain_of(par));
        }
        let chain: Box<[Link]> = chain.into();
        let mut c = par.first_child;
        let mut n = 0;
        while c != 0 && n <= self.procs.len() {
            let Some(child) = self.procs.get(&c) else {
                break;
            };
            let next = child.next_sibling;
            if child.container.is_some() {
                self.orphan_chains.insert(c, chain.clone());
            }
            c = next;
            n += 1;
        }
    }

    /// From now on, keeps each new history entry for `take_ended` too (an exporter wants
    /// them).
    pub(crate) fn keep_ended_for_export(&mut self) {
        self.history.outbox.get_or_insert_with(Vec::new);
    }

    /// The history entries recorded since the last call (none unless kept for export).
    pub(crate) fn take_ended(&mut self) -> Vec<(ContainerKey, Ended)> {
        match &mut self.history.outbox {
            Some(out) if !out.is_empty() => std::mem::take(out),
            _ => Vec::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn history(&self) -> &History {
        &self.history
    }
}
