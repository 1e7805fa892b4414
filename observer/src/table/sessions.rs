//! Exec sessions: processes that came into a container from outside (setns), not by a fork
//! inside it — `docker exec`, `kubectl exec`, `podman exec`, `ctr task exec`, `nsenter`,
//! `observer exec`. A session's root is the first process in the container's pid namespace
//! whose host parent is in another (ancestor) pid namespace and that is not the namespace's
//! PID 1: runc's and crun's exec child after their setns dance, nsenter's or observer's
//! forked child. Its descendants inherit the session (a fork copies it).
//!
//! How it came in is read from its host ancestors at that moment and kept: the runtime's
//! exec process and the client exit right after (runc exec is gone within milliseconds and
//! the root is adopted by the shim). Nothing is looked up later.
//!
//! A session that began before the agent is deduced once at start-up, when the command
//! lines of the processes found are read: a process in its container's pid namespace,
//! not the container's first process, whose host parent is outside (the shim or conmon
//! that adopted it, nsenter, ...). It says so (`Seen::Startup`), and its time is its
//! root's start.

use std::sync::Arc;

use observer_common::COMM_LEN;
use rustc_hash::FxHashMap;

use super::Table;
use crate::events::Event;

/// How a session came in, deduced from its host ancestors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) enum Via {
    #[serde(rename = "docker exec")]
    DockerExec,
    /// CRI Exec (containerd namespace `k8s.io`).
    #[serde(rename = "kubectl exec")]
    KubectlExec,
    #[serde(rename = "podman exec")]
    PodmanExec,
    /// Any other containerd namespace (`ctr task exec`, nerdctl).
    #[serde(rename = "ctr exec")]
    CtrExec,
    #[serde(rename = "nsenter")]
    Nsenter,
    #[serde(rename = "observer exec")]
    ObserverExec,
    /// Something else called setns (a runtime's exec without a recognised supervisor too).
    #[serde(rename = "setns")]
    Setns,
}

impl Via {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Via::DockerExec => "docker exec",
            Via::KubectlExec => "kubectl exec",
            Via::PodmanExec => "podman exec",
            Via::CtrExec => "ctr exec",
            Via::Nsenter => "nsenter",
            Via::ObserverExec => "observer exec",
            Via::Setns => "setns",
        }
    }

    /// The stable number the durable store keeps.
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_code(c: u8) -> Via {
        Via::ALL
            .into_iter()
            .find(|v| v.code() == c)
            .unwrap_or(Via::Setns)
    }

    /// Every way in.
    pub(crate) const ALL: [Via; 7] = [
        Via::DockerExec,
        Via::KubectlExec,
        Via::PodmanExec,
        Via::CtrExec,
        Via::Nsenter,
        Via::ObserverExec,
        Via::Setns,
    ];
}

/// One host process a session came in through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostLink {
    pub(crate) pid: u32,
    pub(crate) comm: [u8; COMM_LEN],
}

/// A session, shared by its root and every descendant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    /// Host pid of the root (the process that came in).
    pub(crate) root: u32,
    pub(crate) via: Via,
    /// Its host ancestors when it came in, parent first: the runtime's and the tool's
    /// processes, up to the first one outside them (not the host's PID 1).
    pub(crate) by: Box<[HostLink]>,
    /// Boot-clock ns when it came in (for one seen at start-up: its root's start).
    pub(crate) at_ns: u64,
    pub(crate) seen: Seen,
}

/// When the agent learnt of a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Seen {
    /// As it came in: its ancestors were read then (runc still ran).
    #[default]
    Entry = 0,
    /// At the agent's start-up, from what was left of its ancestors then (the shim or
    /// conmon that adopted it, nsenter, ...): it began before the agent.
    Startup = 1,
}

impl Seen {
    /// The stable number the durable store keeps (0: seen as it came in).
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_code(c: u8) -> Seen {
        if c == Seen::Startup.code() {
            Seen::Startup
        } else {
            Seen::Entry
        }
    }
}

impl Session {
    /// Whether `pid` is the session's root.
    pub(crate) fn is_root(&self, pid: u32) -> bool {
        self.root == pid
    }
}

/// A host ancestor as the deduction reads it: its comm and NUL-separated argv.
pub(crate) struct Ancestor<'a> {
    pub(crate) comm: &'a [u8],
    pub(crate) argv: &'a [u8],
}

/// The comm up to its NUL.
fn name(comm: &[u8]) -> &[u8] {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    &comm[..end]
}

fn args(argv: &[u8]) -> impl Iterator<Item = &[u8]> {
    argv.split(|&b| b == 0).filter(|a| !a.is_empty())
}

fn is_oci_runtime(comm: &[u8]) -> bool {
    let c = name(comm);
    c == b"runc" || c == b"crun" || c.starts_with(b"runc:[")
}

fn is_shim(comm: &[u8]) -> bool {
    name(comm).starts_with(b"containerd-shim")
}

/// Processes that belong to a runtime's or a tool's way in: `by` goes on past them.
fn is_runtime_side(a: &Ancestor<'_>) -> bool {
    let c = name(a.comm);
    is_oci_runtime(c)
        || is_shim(c)
        || matches!(c, b"conmon" | b"containerd" | b"dockerd" | b"nsenter")
        || is_observer_exec(a)
}

fn is_observer_exec(a: &Ancestor<'_>) -> bool {
    name(a.comm) == b"observer" && args(a.argv).nth(1) == Some(b"exec".as_slice())
}

/// The containerd namespace a shim serves (`-namespace moby`).
fn shim_namespace<'a>(a: &Ancestor<'a>) -> Option<&'a [u8]> {
    let mut it = args(a.argv);
    while let Some(x) = it.next() {
        if x == b"-namespace" || x == b"--namespace" {
            return it.next();
        }
    }
    None
}

/// How a process whose host ancestors are `chain` (parent first) came in; None when it
/// did not come in as a session — an OCI runtime that is not exec'ing starts a container's
/// first process (a pod member sharing a pid namespace has no PID 1 of its own).
pub(crate) fn via_of(chain: &[Ancestor<'_>]) -> Option<Via> {
    let mut i = 0;
    let Some(first) = chain.first() else {
        return Some(Via::Setns);
    };
    if name(first.comm) == b"nsenter" {
        return Some(Via::Nsenter);
    }
    if is_observer_exec(first) {
        return Some(Via::ObserverExec);
    }
    // runc's own re-exec'd stages (`runc:[1:CHILD]`) sit under the runtime proper; the
    // first verb says what it does. argv is kept to 256 bytes and runc's `--log` path can
    // fill them: without a verb, an exec is assumed.
    while chain.get(i).is_some_and(|a| is_oci_runtime(a.comm)) {
        match args(chain[i].argv).find(|x| matches!(*x, b"exec" | b"create" | b"run")) {
            Some(b"create" | b"run") => return None, // a container's first process
            _ => i += 1,
        }
    }
    let Some(sup) = chain.get(i) else {
        return Some(Via::Setns);
    };
    if is_shim(sup.comm) {
        return Some(match shim_namespace(sup) {
            Some(b"moby") => Via::DockerExec,
            Some(b"k8s.io") => Via::KubectlExec,
            _ => Via::CtrExec,
        });
    }
    if name(sup.comm) == b"conmon" {
        return Some(Via::PodmanExec);
    }
    Some(Via::Setns)
}

/// How many of `chain` (parent first) `by` keeps: the runtime's and tool's processes and
/// the first one outside them.
pub(crate) fn by_len(chain: &[Ancestor<'_>]) -> usize {
    chain
        .iter()
        .position(|a| !is_runtime_side(a))
        .map_or(chain.len(), |i| i + 1)
}

/// Host ancestors read for a session, at most.
const MAX_CHAIN: usize = 8;

impl Table {
    /// A forked child runs in its parent's session.
    pub(super) fn inherit_session(&mut self, pid: u32, ppid: u32) {
        let Some(s) = self.procs.get(&ppid).and_then(|p| p.session.clone()) else {
            return;
        };
        if let Some(p) = self.procs.get_mut(&pid) {
            if p.container.is_some() {
                p.session = Some(s);
            }
        }
    }

    /// Records `pid`'s session if it just came into its container from outside: in the
    /// container's pid namespace, not its PID 1, its host parent in another namespace.
    pub(super) fn note_entry(&mut self, pid: u32, at_ns: u64) {
        if !self.came_from_outside(pid) {
            return;
        }
        if let Some(s) = self.session_from_ancestors(pid, at_ns, Seen::Entry) {
            if let Some(p) = self.procs.get_mut(&pid) {
                p.session = Some(Arc::new(s));
            }
        }
    }

    /// Whether `pid` has no session yet and sits in its container's pid namespace, not as
    /// its PID 1, with its host parent (live) in another namespace — and that parent is not
    /// the container's own: a process of the container that made a pid namespace of its
    /// own (unshare) and forked into it (nsenter, setns) entered nothing from outside, and
    /// its name, which it picks, would otherwise say how it came in.
    fn came_from_outside(&self, pid: u32) -> bool {
        let Some(p) = self.procs.get(&pid) else {
            return false;
        };
        if p.session.is_some() || p.container.is_none() || p.pid_level == 0 || p.ns_pid() == 1 {
            return false;
        }
        self.procs.get(&p.ppid).is_some_and(|parent| {
            parent.pidns() != 0
                && parent.pidns() != p.pidns()
                && !parent.is_zombie()
                && !(parent.pid_level > 0 && parent.container == p.container)
        })
    }

    /// The session `pid` is the root of, read from its host ancestors as they are now;
    /// None when they say it did not come in as one (a runtime starting a container).
    fn session_from_ancestors(&self, pid: u32, at_ns: u64, seen: Seen) -> Option<Session> {
        let mut links = Vec::with_capacity(MAX_CHAIN);
        let mut cur = self.procs.get(&self.procs.get(&pid)?.ppid);
        while let Some(a) = cur.filter(|a| a.pid > 1 && links.len() < MAX_CHAIN) {
            links.push(a);
            cur = self.procs.get(&a.ppid).filter(|n| n.pid != a.pid);
        }
        let chain: Vec<Ancestor<'_>> = links
            .iter()
            .map(|a| Ancestor {
                comm: &a.comm,
                argv: a.argv.bytes(),
            })
            .collect();
        let via = via_of(&chain)?;
        let by = links[..by_len(&chain)]
            .iter()
            .map(|a| HostLink {
                pid: a.pid,
                comm: a.comm,
            })
            .collect();
        Some(Session {
            root: pid,
            via,
            by,
            at_ns,
            seen,
        })
    }

    /// Sessions that began before the agent: each of `pids` (processes found at start-up,
    /// their command lines read) that came into its container from outside and is not the
    /// container's first process is a session's root, deduced from its host ancestors now
    /// (the shim or conmon that adopted it, nsenter, ...), at its start time; its
    /// descendants inherit it.
    pub(crate) fn note_startup_entries(&mut self, pids: &[u32]) {
        let inits = self.container_inits();
        for &pid in pids {
            let Some(p) = self.procs.get(&pid) else {
                continue;
            };
            let first = p.container.is_some_and(|c| inits.get(&c) == Some(&pid));
            if first || !self.came_from_outside(pid) {
                continue;
            }
            let Some(s) = self.session_from_ancestors(pid, p.start_time_ns, Seen::Startup) else {
                continue;
            };
            self.spread_session(pid, &Arc::new(s));
        }
    }

    /// Each container's first process: PID 1 of its pid namespace, else (a pod member in a
    /// shared one, whose PID 1 is the sandbox's) the earliest started of those in its own
    /// cgroup whose host parent is outside the namespace (one that joined only the
    /// namespace, as nsenter's child does, is not in the container's cgroup).
    fn container_inits(&self) -> FxHashMap<u32, u32> {
        let mut best: FxHashMap<u32, (bool, u64, u32)> = FxHashMap::default();
        for p in self.procs.values().filter(|p| p.pid_level > 0) {
            let Some(c) = p.container else {
                continue;
            };
            let pid1 = p.ns_pid() == 1;
            let first_in_cgroup = self.registry.attribute_is_runtime(p.cgroup)
                && self
                    .procs
                    .get(&p.ppid)
                    .is_some_and(|par| par.pidns() != p.pidns());
            if !pid1 && !first_in_cgroup {
                continue;
            }
            let key = (!pid1, p.start_time_ns, p.pid);
            best.entry(c)
                .and_modify(|b| *b = (*b).min(key))
                .or_insert(key);
        }
        best.into_iter().map(|(c, (_, _, pid))| (c, pid)).collect()
    }

    /// `root` and its descendants in containers that have no session yet run in `s`.
    fn spread_session(&mut self, root: u32, s: &Arc<Session>) {
        let mut todo = vec![root];
        let mut n = 0;
        while let Some(pid) = todo.pop().filter(|_| n <= self.procs.len()) {
            n += 1;
            let Some(p) = self.procs.get_mut(&pid) else {
                continue;
            };
            if p.container.is_none() || p.session.is_some() {
                continue;
            }
            p.session = Some(s.clone());
            todo.extend(self.children(pid));
        }
    }

    /// The session of the process an exec, fork or exit event is about, as the table has
    /// it once the event is applied (None for other events, and for a process the table
    /// holds another holder of the PID for).
    pub(crate) fn session_of(&self, ev: &Event) -> Option<Arc<Session>> {
        let h = ev.header();
        let p = self.procs.get(&h.tgid)?;
        match ev {
            Event::Exec(_) | Event::Fork(_) => {}
            Event::Exit(e) if e.is_leader == 0 || self.same(p, e.task.start_time_ns) => {}
            _ => return None,
        }
        p.session.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a<'a>(comm: &'a str, argv: &'a str) -> Ancestor<'a> {
        Ancestor {
            comm: comm.as_bytes(),
            argv: argv.as_bytes(),
        }
    }

    const SHIM_MOBY: &str = "/usr/bin/containerd-shim-runc-v2\0-namespace\0moby\0-id\0abc\0\
                             -address\0/run/containerd/containerd.sock\0";

    #[test]
    fn runc_exec_under_a_moby_shim_is_docker_exec() {
        let chain = [
            a(
                "runc",
                "runc\0--root\0/var/run/docker/runtime-runc/moby\0exec\0--detach\0abc\0",
            ),
            a("containerd-shim", SHIM_MOBY),
        ];
        assert_eq!(via_of(&chain), Some(Via::DockerExec));
        assert_eq!(by_len(&chain), 2);
    }

    #[test]
    fn shim_namespace_names_kubectl_and_ctr_exec() {
        let k8s = "containerd-shim-runc-v2\0-namespace\0k8s.io\0-id\0x\0";
        let other = "containerd-shim-runc-v2\0-namespace\0obs-test\0-id\0x\0";
        let runc = a("runc", "runc\0exec\0--process\0/tmp/p.json\0x\0");
        let chain = [a("runc", "runc\0exec\0x\0"), a("containerd-shim", k8s)];
        assert_eq!(via_of(&chain), Some(Via::KubectlExec));
        let chain = [runc, a("containerd-shim", other)];
        assert_eq!(via_of(&chain), Some(Via::CtrExec));
    }

    #[test]
    fn a_root_already_adopted_by_the_shim_is_still_its_runtimes_exec() {
        assert_eq!(
            via_of(&[a("containerd-shim", SHIM_MOBY)]),
            Some(Via::DockerExec)
        );
        assert_eq!(via_of(&[a("conmon", "")]), Some(Via::PodmanExec));
    }

    #[test]
    fn runc_or_crun_exec_under_conmon_is_podman_exec() {
        let conmon = "/usr/bin/conmon\0--api-version\0\x31\0-c\0abc\0--exec\0";
        for rt in ["runc", "crun"] {
            let argv = format!("{rt}\0--root\0/run/{rt}\0exec\0--pid-file\0f\0abc\0");
            let chain = [
                a(rt, &argv),
                a("conmon", conmon),
                a("podman", "podman\0exec\0"),
            ];
            assert_eq!(via_of(&chain), Some(Via::PodmanExec), "{rt}");
            // runtime, conmon, then podman: the first process outside the runtime.
            assert_eq!(by_len(&chain), 3);
        }
    }

    #[test]
    fn runc_stages_under_runc_exec_are_skipped() {
        let chain = [
            a("runc:[1:CHILD]", "runc\0init\0"),
            a("runc", "runc\0exec\0x\0"),
            a("containerd-shim", SHIM_MOBY),
        ];
        assert_eq!(via_of(&chain), Some(Via::DockerExec));
    }

    #[test]
    fn a_runtime_starting_a_container_is_not_a_session() {
        let chain = [
            a("runc", "runc\0--root\0/r\0create\0--bundle\0/b\0abc\0"),
            a("containerd-shim", SHIM_MOBY),
        ];
        assert_eq!(via_of(&chain), None);
        let chain = [
            a("runc:[1:CHILD]", "runc\0init\0"),
            a("crun", "crun\0run\0x\0"),
        ];
        assert_eq!(via_of(&chain), None);
    }

    #[test]
    fn nsenter_and_observer_exec_are_named_by_the_tool() {
        let chain = [
            a("nsenter", "nsenter\0-t\0\x34\x32\0-a\0sh\0"),
            a("bash", "bash\0"),
        ];
        assert_eq!(via_of(&chain), Some(Via::Nsenter));
        assert_eq!(by_len(&chain), 2);
        let chain = [
            a("observer", "/usr/bin/observer\0exec\0web\0--\0sh\0"),
            a("sh", "sh\0"),
            a("sshd", "sshd\0"),
        ];
        assert_eq!(via_of(&chain), Some(Via::ObserverExec));
        assert_eq!(by_len(&chain), 2);
        // observer's other commands do not enter containers.
        let chain = [a("observer", "observer\0agent\0")];
        assert_eq!(via_of(&chain), Some(Via::Setns));
    }

    #[test]
    fn anything_else_is_setns() {
        assert_eq!(via_of(&[a("python3", "python3\0x.py\0")]), Some(Via::Setns));
        assert_eq!(via_of(&[]), Some(Via::Setns));
        assert_eq!(by_len(&[a("python3", ""), a("bash", "")]), 1);
        // An exec'ing runtime without a recognised supervisor above it.
        assert_eq!(via_of(&[a("runc", "runc\0exec\0x\0")]), Some(Via::Setns));
    }

    #[test]
    fn a_runtime_whose_argv_was_cut_before_its_verb_is_taken_for_an_exec() {
        let argv = format!("runc\0--log\0/run/{}\0", "x".repeat(240));
        let chain = [a("runc", &argv), a("containerd-shim", SHIM_MOBY)];
        assert_eq!(via_of(&chain), Some(Via::DockerExec));
    }

    #[test]
    fn via_codes_round_trip() {
        for v in Via::ALL {
            assert_eq!(Via::from_code(v.code()), v);
        }
    }
}
