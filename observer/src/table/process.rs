//! One process as the table knows it. comm in a fixed inline buffer, the executable as an
//! interned path (intern.rs: allocated once per distinct path) and the command line shared
//! with the processes forked from it (a fork takes references; an exec allocates its own
//! command line and credentials, each once).

use observer_common::{COMM_LEN, MAX_PID_LEVELS, NS_COUNT, NS_PID};

/// Bytes of argv kept per process (the kernel side captures the same bound).
pub(crate) const ARGV_BYTES: usize = observer_common::ARGS_LEN;

/// A byte string of at most N bytes (longer input is cut), shared rather than copied: a
/// forked child holds its parent's command line (a reference count, not N bytes), and the
/// process map's entries stay small (16 bytes here against N inline — at 50,000 processes
/// the map's 65,536 buckets paid 16 MB for inline command lines). Empty holds nothing.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Bounded<const N: usize>(Option<std::sync::Arc<[u8]>>);

impl<const N: usize> std::fmt::Debug for Bounded<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.bytes()))
    }
}

impl<const N: usize> Bounded<N> {
    pub(crate) fn from_bytes(b: &[u8]) -> Self {
        let b = &b[..b.len().min(N)];
        Bounded((!b.is_empty()).then(|| std::sync::Arc::from(b)))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Whether both hold the same buffer (not merely equal bytes).
    #[cfg(test)]
    pub(crate) fn shares(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// NUL-separated arguments (argv buffers).
    pub(crate) fn args(&self) -> Vec<String> {
        let b = self.bytes();
        let b = b.strip_suffix(&[0]).unwrap_or(b);
        if b.is_empty() {
            return Vec::new();
        }
        b.split(|&c| c == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }
}

/// A process's namespace inodes, indexed by observer_common::NS_*, shared: a container's
/// processes, and a forked child with its parent, hold one set (8 bytes a process in the
/// process map, not 36). Reads see the array; a write copies a set others hold first.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Namespaces(std::sync::Arc<[u32; NS_COUNT]>);

impl std::fmt::Debug for Namespaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::ops::Deref for Namespaces {
    type Target = [u32; NS_COUNT];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Namespaces {
    fn deref_mut(&mut self) -> &mut Self::Target {
        std::sync::Arc::make_mut(&mut self.0)
    }
}

impl Namespaces {
    pub(crate) fn new(ns: [u32; NS_COUNT]) -> Self {
        Namespaces(std::sync::Arc::new(ns))
    }

    /// Changes the set by `f`; a set that comes out the same is not copied (every event
    /// carries the namespaces: they seldom change).
    pub(crate) fn update(&mut self, f: impl FnOnce(&mut [u32; NS_COUNT])) {
        let mut ns = *self.0;
        f(&mut ns);
        if ns != *self.0 {
            self.0 = std::sync::Arc::new(ns);
        }
    }

    #[cfg(test)]
    pub(crate) fn shares(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The last command line, namespace set and exec credentials the table made for a
/// process: the next one that has the same shares them (the seed's processes come a
/// container at a time, a storm's children are alike, a loop execs one program over and
/// over), so a node's processes do not each hold a copy, and such an exec allocates
/// nothing.
#[derive(Debug, Default)]
pub(crate) struct LastShared {
    argv: Bounded<ARGV_BYTES>,
    ns: Option<Namespaces>,
    cred: Option<std::sync::Arc<ExecCred>>,
}

impl LastShared {
    pub(crate) fn argv(&mut self, b: &[u8]) -> Bounded<ARGV_BYTES> {
        if self.argv.bytes() != &b[..b.len().min(ARGV_BYTES)] {
            self.argv = Bounded::from_bytes(b);
        }
        self.argv.clone()
    }

    pub(crate) fn cred(&mut self, c: ExecCred) -> std::sync::Arc<ExecCred> {
        match &self.cred {
            Some(last) if **last == c => last.clone(),
            _ => self.cred.insert(std::sync::Arc::new(c)).clone(),
        }
    }

    pub(crate) fn ns(&mut self, ns: &[u32; NS_COUNT]) -> Namespaces {
        match &self.ns {
            Some(last) if **last == *ns => last.clone(),
            _ => self.ns.insert(Namespaces::new(*ns)).clone(),
        }
    }
}

/// How a parent's exit left this process: who adopted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Adopter {
    /// A PR_SET_CHILD_SUBREAPER ancestor (containerd-shim, conmon, observer's shim, systemd).
    Subreaper,
    /// PID 1 of the orphan's pid namespace.
    NamespaceInit,
    /// PID 1 of the host.
    HostInit,
}

impl Adopter {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Adopter::Subreaper => "subreaper",
            Adopter::NamespaceInit => "namespace_init",
            Adopter::HostInit => "host_init",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Adoption {
    /// The parent that exited.
    pub(crate) from: u32,
    pub(crate) by: Adopter,
    pub(crate) at_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ExitInfo {
    /// wait(2) status encoding; None for zombies found by a /proc scan (no status there).
    pub(crate) status: Option<u32>,
    /// Boot-clock ns when the last thread exited (the process became a zombie).
    pub(crate) at_ns: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Process {
    /// Host tgid.
    pub(crate) pid: u32,
    /// Boot-clock ns; from /proc it has clock-tick (10 ms) precision until an event refines it.
    pub(crate) start_time_ns: u64,
    /// Whether start_time_ns is the kernel's (from an event), not /proc's clock ticks.
    pub(crate) start_exact: bool,
    /// Host tgid of the real parent.
    pub(crate) ppid: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Depth of the pid namespace (0 = host) and the PID at each level, host first.
    pub(crate) pid_level: u32,
    pub(crate) ns_pids: [u32; MAX_PID_LEVELS],
    /// Namespace inodes, indexed by observer_common::NS_* (shared).
    pub(crate) ns: Namespaces,
    /// cgroup v2 id (0 when unknown).
    pub(crate) cgroup_id: u64,
    /// Interned cgroup path used for attribution (see containers::Registry).
    pub(crate) cgroup: u32,
    /// Index of the container this process belongs to.
    pub(crate) container: Option<u32>,
    pub(crate) comm: [u8; COMM_LEN],
    /// Interned executable path (Table::exe); 0 = unknown (processes seen first by a scan).
    pub(crate) exe: u32,
    pub(crate) argv: Bounded<ARGV_BYTES>,
    pub(crate) threads: u32,
    /// Set when the whole thread group has exited: a zombie until reaped (freed).
    pub(crate) exit: Option<ExitInfo>,
    pub(crate) adoption: Option<Adoption>,
    /// Intrusive child list (host pids; 0 = none) so exits find children without a scan.
    pub(crate) first_child: u32,
    pub(crate) next_sibling: u32,
    pub(crate) prev_sibling: u32,
    /// The last kernel event applied to it (kind number; [`SCANNED`] when it came from
    /// /proc and no event followed) and its time: what a correction's log line quotes.
    pub(crate) last_event: u8,
    pub(crate) last_event_ns: u64,
    /// When its cgroup path was last set by an event (an attach, or an exec naming another
    /// cgroup2 id) or a correction (0: never since it was created): a scan begun before then
    /// read an older cgroup, and an event made before then names one. Not `last_event_ns`:
    /// a busy process's threads make events all day, which must not hide a lost move.
    pub(crate) cgroup_ns: u64,
    /// The credentials its image was exec'd with, as the exec event read them (a forked
    /// child runs its parent's image with its credentials: inherited); None when the agent
    /// saw no exec of its image. Not live: a setuid(2) after the exec is not seen. Shared
    /// (an exec's children and their children run its image): 8 bytes a process, not 64 —
    /// the process map holds tens of thousands of entries on a big node.
    pub(crate) exec_cred: Option<std::sync::Arc<ExecCred>>,
    /// The SHA-256 of its executable (exe_hash.rs), as for `exec_cred`: None when the agent
    /// saw no exec of its image.
    pub(crate) exe_hash: Option<super::exe_hash::ExeHash>,
    /// The exec session it is in (sessions.rs): it or an ancestor came into its container
    /// from outside. Shared by the session's processes.
    pub(crate) session: Option<std::sync::Arc<super::sessions::Session>>,
}

/// Credentials and the executable's identity after an exec (the real uid/gid are the
/// process's `uid`/`gid`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ExecCred {
    pub(crate) euid: u32,
    pub(crate) egid: u32,
    pub(crate) suid: u32,
    pub(crate) sgid: u32,
    pub(crate) cap_eff: u64,
    /// The kernel judged the exec privilege-gaining (setuid/setgid bit, file capabilities).
    pub(crate) raised: bool,
    /// The executable as the exec read it (device, inode, size, mtime).
    pub(crate) exe: super::exe_hash::ExeId,
}

impl ExecCred {
    pub(crate) fn of(e: &observer_common::ExecEvent) -> ExecCred {
        ExecCred {
            euid: e.euid,
            egid: e.egid,
            suid: e.suid,
            sgid: e.sgid,
            cap_eff: e.cap_eff,
            raised: e.secureexec != 0,
            exe: super::exe_hash::ExeId::of(e),
        }
    }
}

/// `Process::last_event` of an entry that came from a /proc scan or the seed.
pub(crate) const SCANNED: u8 = u8::MAX;

/// The host's kept stat files read a process by its pid and start time.
impl crate::host::stat_files::Identity for Process {
    fn pid(&self) -> u32 {
        self.pid
    }
    fn start_time_ns(&self) -> u64 {
        self.start_time_ns
    }
}

impl Process {
    pub(crate) fn comm_str(&self) -> std::borrow::Cow<'_, str> {
        crate::events::c_str(&self.comm)
    }

    /// The PIDs from host level to the process's own namespace.
    pub(crate) fn ns_pid_chain(&self) -> &[u32] {
        let n = (self.pid_level as usize + 1).min(MAX_PID_LEVELS);
        &self.ns_pids[..n]
    }

    /// The PID inside its own pid namespace.
    pub(crate) fn ns_pid(&self) -> u32 {
        *self.ns_pid_chain().last().unwrap_or(&self.pid)
    }

    pub(crate) fn pidns(&self) -> u32 {
        self.ns[NS_PID]
    }

    pub(crate) fn is_zombie(&self) -> bool {
        self.exit.is_some()
    }

    /// "exec at 1234.5 s" (boot clock), or "none since the scan": the last event applied.
    pub(crate) fn last_event_str(&self) -> String {
        match observer_common::EventKind::ALL
            .iter()
            .find(|k| **k as u8 == self.last_event)
        {
            Some(k) => format!("{} at {:.3} s", k.name(), self.last_event_ns as f64 / 1e9),
            None => "none since it was read from /proc".to_string(),
        }
    }
}
