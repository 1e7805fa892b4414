//! Signals and OOM kills as the table keeps them: the last few signals each live process
//! was sent (with the kernel's verdict and the sender as it was at that moment), the OOM
//! killer's facts about its victim, and per-container counts for the metrics. A process's
//! facts go with it into the container's history (history.rs) when it ends.

use observer_common::{
    OomEvent, SignalEvent, COMM_LEN, OOM_HAS_MEMCG, OOM_HAS_RSS, OOM_HAS_SCORE_ADJ,
};

use super::Table;
use crate::containers::ContainerKey;

/// Signals kept per live process (the newest replace the oldest).
const RECENT: usize = 4;

/// si_code of a signal the kernel raised itself (SEND_SIG_PRIV).
pub(crate) const SI_KERNEL: i32 = 0x80;
pub(crate) const SIGKILL: u32 = 9;

/// Who sent a signal, as it was when the signal was generated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sender {
    pub(crate) pid: u32,
    pub(crate) comm: [u8; COMM_LEN],
    pub(crate) pidns: u32,
    /// Its PID in its own pid namespace, when the table knew it.
    pub(crate) ns_pid: Option<u32>,
    /// Its container, when it was in one ("host" otherwise).
    pub(crate) container: Option<ContainerKey>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SignalFact {
    pub(crate) sig: u32,
    /// TRACE_SIGNAL_*: 0 delivered, 1 ignored, 2 already pending, 3 overflow, 4 lost info.
    pub(crate) result: u32,
    pub(crate) code: i32,
    pub(crate) group: bool,
    pub(crate) at_ns: u64,
    pub(crate) sender: Sender,
}

impl SignalFact {
    /// Raised by the kernel itself (SI_KERNEL, a fault), not sent by a process's kill().
    pub(crate) fn is_from_kernel(&self) -> bool {
        crate::events::signals::from_kernel(self.code)
    }
}

/// What the OOM killer said about its victim, and its cgroup's memory at that moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OomFacts {
    pub(crate) at_ns: u64,
    pub(crate) total_vm_kb: u64,
    pub(crate) anon_rss_kb: Option<u64>,
    pub(crate) file_rss_kb: Option<u64>,
    pub(crate) shmem_rss_kb: Option<u64>,
    pub(crate) oom_score_adj: Option<i32>,
    /// The task whose allocation made the kernel pick a victim.
    pub(crate) trigger_pid: u32,
    pub(crate) trigger_comm: [u8; COMM_LEN],
    /// The victim's memory cgroup, read by the agent right after the event.
    pub(crate) memory_limit_bytes: Option<u64>,
    pub(crate) memory_bytes: Option<u64>,
}

#[cfg(test)]
impl OomFacts {
    /// An OOM kill at `at_ns` with some facts known and some not (tests of the store's
    /// codec and of the exports).
    pub(crate) fn fixture(at_ns: u64) -> OomFacts {
        let mut trigger_comm = [0u8; COMM_LEN];
        trigger_comm[..5].copy_from_slice(b"alloc");
        OomFacts {
            at_ns,
            total_vm_kb: 1 << 20,
            anon_rss_kb: Some(1000),
            file_rss_kb: None,
            shmem_rss_kb: Some(0),
            oom_score_adj: Some(-1000),
            trigger_pid: 8,
            trigger_comm,
            memory_limit_bytes: Some(64 << 20),
            memory_bytes: None,
        }
    }
}

/// Facts about one live process beyond what its events give.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProcSignals {
    /// The leader's start time, so that a reused PID does not inherit them.
    pub(crate) start_ns: u64,
    pub(crate) recent: Vec<SignalFact>,
    pub(crate) oom: Option<OomFacts>,
}

impl ProcSignals {
    /// The newest signal `sig` the process was sent.
    pub(crate) fn last(&self, sig: u32) -> Option<&SignalFact> {
        self.recent.iter().rev().find(|f| f.sig == sig)
    }
}

pub(crate) const EXIT_CLASSES: [&str; 4] = ["0", "1-125", "126-127", "signal"];

/// The class index of a wait(2) status (EXIT_CLASSES).
pub(crate) fn exit_class(status: u32) -> usize {
    let st = crate::events::exit_status(status);
    match (st.code, st.signal) {
        (_, Some(_)) => 3,
        (Some(0), _) => 0,
        (Some(126 | 127), _) => 2,
        _ => 1,
    }
}

impl Table {
    pub(super) fn apply_signal(&mut self, e: &SignalEvent) {
        let pid = e.header.tgid;
        let leader = e.header.pid == e.header.tgid;
        self.ensure(pid, &e.task, leader);
        let known = self.procs.get(&e.sender_tgid);
        let sender = Sender {
            pid: e.sender_tgid,
            comm: e.sender_comm,
            pidns: e.sender_pidns,
            ns_pid: known.map(|p| p.ns_pid()),
            container: known
                .and_then(|p| p.container)
                .and_then(|c| self.registry.get(c))
                .map(|c| c.key.clone()),
        };
        let fact = SignalFact {
            sig: e.sig,
            result: e.result,
            code: e.code,
            group: e.group != 0,
            at_ns: e.header.ktime_ns,
            sender,
        };
        let Some(p) = self.procs.get(&pid) else {
            return;
        };
        let (container, start_ns) = (p.container, p.start_time_ns);
        let entry = self.facts_mut(pid, start_ns);
        if entry.recent.len() == RECENT {
            entry.recent.remove(0);
        }
        entry.recent.push(fact);
        if let Some(c) = container.and_then(|c| self.registry.get_mut(c)) {
            let key = (e.sig, e.result);
            match c.signals.signals.iter_mut().find(|s| (s.0, s.1) == key) {
                Some(s) => s.2 += 1,
                None => c.signals.signals.push((e.sig, e.result, 1)),
            }
        }
    }

    pub(super) fn apply_oom(&mut self, e: &OomEvent) {
        let pid = e.victim_pid;
        let Some(p) = self.procs.get(&pid) else {
            log::debug!("OOM victim {pid}: not in the table");
            return;
        };
        let (container, start_ns) = (p.container, p.start_time_ns);
        let (memory_limit_bytes, memory_bytes) = if e.flags & OOM_HAS_MEMCG != 0 {
            // Read in the kernel at the kill: the cgroup's files may be gone by now, and
            // its usage after the kill is not what it was.
            (Some(e.memcg_max_bytes), Some(e.memcg_usage_bytes))
        } else {
            match container.and_then(|c| self.registry.get(c)) {
                Some(c) if c.cgroup != crate::containers::NO_PATH => {
                    let r = self.cgroupfs.resources(self.registry.path(c.cgroup));
                    (r.memory_limit_bytes, r.memory_bytes)
                }
                _ => (None, None),
            }
        };
        let rss = e.flags & OOM_HAS_RSS != 0;
        let facts = OomFacts {
            at_ns: e.header.ktime_ns,
            total_vm_kb: e.total_vm_kb,
            anon_rss_kb: rss.then_some(e.anon_rss_kb),
            file_rss_kb: rss.then_some(e.file_rss_kb),
            shmem_rss_kb: rss.then_some(e.shmem_rss_kb),
            oom_score_adj: (e.flags & OOM_HAS_SCORE_ADJ != 0).then_some(e.oom_score_adj),
            trigger_pid: e.header.tgid,
            trigger_comm: self
                .procs
                .get(&e.header.tgid)
                .map(|t| t.comm)
                .unwrap_or_default(),
            memory_limit_bytes,
            memory_bytes,
        };
        self.facts_mut(pid, start_ns).oom = Some(facts);
        if let Some(c) = container.and_then(|c| self.registry.get_mut(c)) {
            c.signals.oom_victims += 1;
        }
    }

    /// The facts of `pid`, whose start time is `start_ns`: those of an earlier holder of the
    /// PID are dropped first.
    fn facts_mut(&mut self, pid: u32, start_ns: u64) -> &mut ProcSignals {
        let stale = self
            .signals
            .get(&pid)
            .is_some_and(|s| !self.same_tick(s.start_ns, start_ns));
        let entry = self.signals.entry(pid).or_default();
        if stale {
            *entry = ProcSignals::default();
        }
        entry.start_ns = start_ns;
        entry
    }

    /// The signals and OOM facts of a live (or not yet reaped) process.
    pub(crate) fn signals_of(&self, pid: u32) -> Option<&ProcSignals> {
        let p = self.procs.get(&pid)?;
        self.signals
            .get(&pid)
            .filter(|s| self.same_tick(s.start_ns, p.start_time_ns))
    }
}
