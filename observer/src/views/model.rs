//! The documented, stable JSON shapes of observer's views (`-o json` and the agent's API),
//! and how they are built from a table snapshot plus the facts only the host has: each
//! process's live /proc facts (state letter, CPU time, RSS), each container's cgroup
//! resources and runtime names. Those are read before a view is built, by whoever builds it
//! (api/assemble.rs), and handed in: nothing here reads anything.

use serde::{Deserialize, Serialize};

use crate::{
    containers::names::Meta,
    host::facts::{Live, Resources},
    table::{snapshot::Snapshot, summary::ContainerSummary, Process},
};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct ProcessView {
    /// Host tgid.
    pub(crate) pid: u32,
    /// Host tgid of the parent.
    pub(crate) ppid: u32,
    /// PIDs from the host level to the process's own pid namespace.
    pub(crate) ns_pids: Vec<u32>,
    /// PID in its own pid namespace (last of ns_pids).
    pub(crate) ns_pid: u32,
    /// Parent's PID in this process's pid namespace; 0 when the parent is outside it.
    pub(crate) ns_ppid: u32,
    /// /proc state letter (R, S, D, Z, T, t, I, X); `?` when /proc could not be read.
    pub(crate) state: String,
    /// False when this process's /proc files could not be read (out of file descriptors,
    /// permission): it is listed with what the table knows, and CPU, RSS and state are
    /// unknown (0, 0, `?` — `Z` when its exit was seen).
    #[serde(default = "yes")]
    pub(crate) live: bool,
    pub(crate) comm: String,
    /// argv joined with spaces (bounded to 256 bytes of argv).
    pub(crate) cmdline: String,
    pub(crate) argv: Vec<String>,
    pub(crate) exe: String,
    pub(crate) uid: u32,
    pub(crate) threads: u32,
    /// Boot-clock start time in ns.
    pub(crate) start_time_ns: u64,
    pub(crate) age_s: f64,
    /// User + system CPU time.
    pub(crate) cpu_s: f64,
    pub(crate) rss_bytes: u64,
    pub(crate) pidns: u32,
    /// Namespace inodes by /proc/<pid>/ns name (null: not known — processes found by the
    /// start-up scan get them from a background read right after the agent is ready).
    pub(crate) ns: crate::views::event_line::NsJson,
    /// The cgroup path container attribution used (v2 first, else a v1 hierarchy's).
    pub(crate) cgroup: String,
    /// Its cgroup v2 id (the inode of its cgroup2 directory; null without cgroup2).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) cgroup_id: Option<u64>,
    /// Short id of the container, if any.
    pub(crate) container: Option<String>,
    /// On zombies: seconds since the process exited.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) zombie_age_s: Option<f64>,
    /// On zombies: exit status (or 128+signal).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) exit_code: Option<i32>,
    /// On adopted orphans: the parent that exited.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) adopted_from: Option<u32>,
    /// On adopted orphans: subreaper, namespace_init or host_init.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) adopter: Option<String>,
    /// Signals it ignored (no handler; for a pid-namespace init, every signal it does not
    /// handle), newest last: why a `docker stop` is waiting.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub(crate) ignored_signals: Vec<crate::views::endings::SignalView>,
    /// Credentials from the exec of its image (inherited by forked children), when the agent
    /// saw that exec: effective ids and capabilities, and how the exec raised privileges.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) exec: Option<crate::views::credentials::ExecCredView>,
    /// The SHA-256 of its executable (hex), or null and why (`exe_hash_reason`).
    #[serde(default)]
    pub(crate) exe_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) exe_hash_reason: Option<crate::table::exe_hash::Reason>,
    /// In an exec session: how it (or its session's root) came into the container.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) entered: Option<crate::views::sessions::EnteredView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct ContainerView {
    /// Full runtime id (pid-ns inode for bare containers).
    pub(crate) id: String,
    /// First 12 characters of the id.
    pub(crate) short_id: String,
    pub(crate) name: Option<String>,
    pub(crate) runtime: String,
    pub(crate) pod: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) pod_uid: Option<String>,
    /// Podman pod id (cgroup parent).
    #[serde(default)]
    pub(crate) pod_id: Option<String>,
    /// The container is its pod's sandbox (pause/infra).
    #[serde(default)]
    pub(crate) sandbox: bool,
    pub(crate) image: Option<String>,
    pub(crate) pidns: u32,
    pub(crate) cgroup: String,
    /// Host pid of the container's PID 1 (in a pod's shared pid namespace: its first
    /// process, the one the runtime started).
    pub(crate) init_pid: Option<u32>,
    /// Host pid of the shim above PID 1 (containerd-shim, conmon, observer's shim).
    pub(crate) shim_pid: Option<u32>,
    pub(crate) shim_comm: Option<String>,
    pub(crate) processes: u32,
    pub(crate) threads: u32,
    pub(crate) zombies: u32,
    pub(crate) oldest_zombie_age_s: Option<f64>,
    pub(crate) forks: u64,
    pub(crate) execs: u64,
    pub(crate) exits: u64,
    pub(crate) resources: Resources,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TreeView {
    pub(crate) container: ContainerView,
    /// Members, parents before children; `container.shim_pid` names the process above PID 1.
    pub(crate) processes: Vec<ProcessView>,
    /// Parents outside the container of members that are not PID 1's descendants (entered
    /// with setns), with their host pid and comm.
    pub(crate) outside_parents: Vec<OutsideParent>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct OutsideParent {
    pub(crate) pid: u32,
    pub(crate) comm: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct ZombieView {
    pub(crate) pid: u32,
    pub(crate) ns_pid: u32,
    pub(crate) comm: String,
    pub(crate) zombie_age_s: f64,
    pub(crate) exit_code: Option<i32>,
    /// The parent that is not reaping it.
    pub(crate) parent_pid: u32,
    pub(crate) parent_comm: Option<String>,
    pub(crate) parent_state: Option<String>,
    pub(crate) container: Option<String>,
    pub(crate) container_name: Option<String>,
}

/// What a view's figures are computed against: the boot-clock time of the view, and the
/// units of /proc's figures (clock ticks, pages). Read from the host by the view's builder.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Basis {
    pub(crate) now_ns: u64,
    /// Nanoseconds of one /proc clock tick.
    pub(crate) tick_ns: u64,
    /// Bytes of one page (RSS in /proc is in pages).
    pub(crate) page_size: u64,
}

/// What a container's view shows that the table does not know, read before the view is
/// built: its runtime's name and pod facts, its cgroup's resources (defaults for a container
/// without a cgroup), and the current name of its shim (None: not running, or not read).
#[derive(Clone, Debug, Default)]
pub(crate) struct ContainerFacts {
    pub(crate) meta: Meta,
    pub(crate) resources: Resources,
    pub(crate) shim_comm: Option<String>,
}

pub(crate) fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// wait(2) status → exit code, or 128 + signal as shells report it.
pub(crate) fn exit_code(status: u32) -> i32 {
    let sig = status & 0x7f;
    if sig == 0 {
        ((status >> 8) & 0xff) as i32
    } else {
        128 + sig as i32
    }
}

fn yes() -> bool {
    true
}

/// The view of one process, with its live /proc facts (None: unreadable, the table's);
/// `container` names its container. A process whose read failed for another reason than
/// being gone is listed this way (`live: false`) with the table's facts; one that is gone
/// is not viewed at all.
pub(crate) fn process_view(
    snap: &Snapshot,
    p: &Process,
    live: Option<Live>,
    basis: &Basis,
    container: Option<String>,
) -> ProcessView {
    let now_ns = basis.now_ns;
    let parent = snap.process(p.ppid);
    let ns_ppid = match parent {
        Some(par) if par.pidns() == p.pidns() && p.pidns() != 0 => par.ns_pid(),
        // The parent is in another (ancestor) namespace: invisible from inside.
        Some(_) => 0,
        // Not in the snapshot: visible iff we are on the host level.
        None if p.pid_level == 0 => p.ppid,
        None => 0,
    };
    let tick = basis.tick_ns;
    let argv = p.argv.args();
    let is_live = live.is_some();
    let live = live.unwrap_or_else(|| Live {
        state: if p.exit.is_some() { 'Z' } else { '?' },
        comm: p.comm_str().into_owned(),
        ppid: p.ppid,
        start_ticks: p.start_time_ns / tick,
        cpu_ticks: 0,
        rss_pages: 0,
        threads: p.threads,
    });
    // A zombie is an exit the events saw that /proc confirms (state Z): between the exit
    // tracepoint and exit_notify the task still shows R/D, and once reaped it is gone.
    let zombie = p.exit.filter(|_| matches!(live.state, 'Z' | 'X'));
    let hash = crate::views::credentials::ExeHashView::now(p.exe_hash.as_ref());
    ProcessView {
        pid: p.pid,
        ppid: p.ppid,
        ns_pids: p.ns_pid_chain().to_vec(),
        ns_pid: p.ns_pid(),
        ns_ppid,
        state: live.state.to_string(),
        live: is_live,
        comm: live.comm,
        cmdline: argv.join(" "),
        argv,
        exe: snap.exe(p.exe).to_string(),
        uid: p.uid,
        exec: crate::views::credentials::exec_cred_view(p),
        exe_sha256: hash.exe_sha256,
        exe_hash_reason: hash.exe_hash_reason,
        entered: p
            .session
            .as_deref()
            .map(|s| crate::views::sessions::entered_view(s, p.pid)),
        threads: live.threads.max(1),
        start_time_ns: p.start_time_ns,
        age_s: now_ns.saturating_sub(p.start_time_ns) as f64 / 1e9,
        cpu_s: (live.cpu_ticks * tick) as f64 / 1e9,
        rss_bytes: live.rss_pages * basis.page_size,
        pidns: p.pidns(),
        ns: crate::views::event_line::NsJson(*p.ns),
        cgroup: snap.cgroup(p.cgroup).to_string(),
        cgroup_id: (p.cgroup_id != 0).then_some(p.cgroup_id),
        container,
        zombie_age_s: zombie.map(|e| now_ns.saturating_sub(e.at_ns) as f64 / 1e9),
        exit_code: zombie.and_then(|e| e.status).map(exit_code),
        adopted_from: p.adoption.map(|a| a.from),
        adopter: p.adoption.map(|a| a.by.as_str().to_string()),
        ignored_signals: snap
            .signals
            .get(&p.pid)
            .map(|f| {
                f.recent
                    .iter()
                    .filter(|s| s.result == 1)
                    .map(|s| crate::views::endings::signal_view(s, now_ns))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The view of container `s`, with what was read of it (`facts`).
pub(crate) fn container_view(
    s: &ContainerSummary,
    facts: ContainerFacts,
    now_ns: u64,
) -> ContainerView {
    let ContainerFacts {
        meta,
        resources,
        shim_comm,
    } = facts;
    let c = &s.container;
    ContainerView {
        id: c.key.id.clone(),
        short_id: short_id(&c.key.id),
        name: meta.name,
        runtime: meta.runtime.unwrap_or(c.key.runtime).as_str().to_string(),
        pod: meta.pod,
        namespace: meta.pod_namespace.or_else(|| c.ctr_namespace.clone()),
        pod_uid: c.pod_uid.clone(),
        pod_id: c.pod_id.clone(),
        sandbox: meta.sandbox,
        image: meta.image,
        pidns: c.pidns,
        cgroup: c.cgroup.clone(),
        init_pid: s.init_pid,
        shim_pid: s.shim_pid,
        // The live name: shims rename themselves after exec (observer-shim does).
        shim_comm: shim_comm.or_else(|| s.shim_comm.clone()),
        processes: s.processes,
        threads: s.threads,
        zombies: s.zombies,
        oldest_zombie_age_s: s
            .oldest_zombie_ns
            .map(|t| now_ns.saturating_sub(t) as f64 / 1e9),
        forks: c.forks,
        execs: c.execs,
        exits: c.exits,
        resources,
    }
}
