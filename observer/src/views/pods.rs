//! `observer pods` and `observer tree <pod>`: a pod's sandbox and containers, the namespaces
//! they share (those of the containers' PID 1s, /proc/<pid>/ns, read before the view and
//! handed in: `PodNamespaces`), and with a shared pid
//! namespace one tree rooted at the sandbox's PID 1, every process labelled with its
//! container. Orphans the sandbox's PID 1 adopted say so (`pod_sandbox`), and a sandbox
//! that does not reap its adopted children is named with the zombies it leaves.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
};

use serde::{Deserialize, Serialize};

use super::{
    model::{short_id, ContainerView, ProcessView, TreeView},
    text::{bytes, table, Escaped, Style},
    tree,
};
use crate::{
    containers::{
        names::Meta,
        pods::{self, Member, Pod},
    },
    table::{snapshot::Snapshot, summary::ContainerSummary},
};

/// Namespaces compared between a pod's containers (mnt is never shared).
pub(crate) const SHAREABLE: [&str; 6] = ["pid", "net", "ipc", "uts", "cgroup", "user"];

/// The namespace inodes (in the order of [`SHAREABLE`]; 0 where unreadable) of the pids a
/// pod's view compares (`ns_pids`), read before the view: each PID 1 of its containers, and
/// the process outside the pod. Left empty for a pod of fewer than two PID 1s.
#[derive(Clone, Debug, Default)]
pub(crate) struct PodNamespaces {
    pub(crate) inits: Vec<[u32; SHAREABLE.len()]>,
    pub(crate) outside: [u32; SHAREABLE.len()],
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct PodView {
    /// The pod's identity: Kubernetes pod UID, podman pod id, or CRI sandbox id.
    pub(crate) id: String,
    /// `kubernetes`, `podman` or `cri` (what `id` is).
    pub(crate) kind: String,
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) uid: Option<String>,
    /// Short id of the sandbox (pause/infra) container, when it runs.
    pub(crate) sandbox: Option<String>,
    /// The sandbox first.
    pub(crate) containers: Vec<PodContainer>,
    /// Namespaces all the pod's containers share with the sandbox.
    pub(crate) shared_namespaces: Vec<String>,
    /// The pod's pid namespace when it is shared (its PID 1 is the sandbox's).
    pub(crate) shared_pidns: Option<u32>,
    pub(crate) processes: u32,
    pub(crate) threads: u32,
    pub(crate) zombies: u32,
    /// Zombies whose parent is the sandbox's PID 1 (a sandbox that does not reap).
    pub(crate) sandbox_zombies: u32,
    pub(crate) cpu_usage_ns: u64,
    pub(crate) memory_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct PodContainer {
    pub(crate) id: String,
    pub(crate) short_id: String,
    pub(crate) name: Option<String>,
    pub(crate) sandbox: bool,
    pub(crate) init_pid: Option<u32>,
    pub(crate) processes: u32,
    pub(crate) zombies: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct PodTreeView {
    pub(crate) pod: PodView,
    /// Each container's tree, the sandbox's first.
    pub(crate) containers: Vec<TreeView>,
}

/// The pods among `containers`, with each container's metadata (`metas`, in the same order).
pub(crate) fn index(containers: &[ContainerSummary], metas: &[&Meta]) -> Vec<Pod> {
    let members: Vec<Member> = containers
        .iter()
        .zip(metas)
        .map(|(s, &meta)| Member {
            index: s.index,
            data: &s.container,
            meta,
        })
        .collect();
    pods::group(&members)
}

/// What each container in a pod shows of it: (pod name or id, its namespace, whether the
/// container is the sandbox), by container index.
pub(crate) fn membership(
    containers: &[ContainerSummary],
    metas: &[&Meta],
) -> HashMap<u32, (String, Option<String>, bool)> {
    let mut out = HashMap::new();
    for p in index(containers, metas) {
        let name = p.name.clone().unwrap_or_else(|| short_id(&p.key.id));
        for &c in &p.containers {
            out.insert(c, (name.clone(), p.namespace.clone(), Some(c) == p.sandbox));
        }
    }
    out
}

/// The containers of `pod` found in `containers`, in the pod's order.
pub(crate) fn members<'a>(
    pod: &Pod,
    containers: &'a [ContainerSummary],
) -> Vec<&'a ContainerSummary> {
    pod.containers
        .iter()
        .filter_map(|&i| containers.iter().find(|s| s.index == i))
        .collect()
}

/// The pids whose namespaces `pod_view` compares: the PID 1s of the pod's containers, and
/// the process outside the pod (the sandbox's shim; None: the viewer itself, whose
/// namespaces are the host's, which containers that never unshared them all have in common).
pub(crate) fn ns_pids(pod: &Pod, containers: &[ContainerSummary]) -> (Vec<u32>, Option<u32>) {
    let members = members(pod, containers);
    let inits = members.iter().filter_map(|s| s.init_pid).collect();
    (inits, members.iter().find_map(|s| s.shim_pid))
}

/// The namespaces every init shares with the first one and that the pod made: not those of
/// the process outside it.
fn shared(ns: &PodNamespaces) -> Vec<(&'static str, u32)> {
    if ns.inits.len() < 2 {
        return Vec::new();
    }
    SHAREABLE
        .iter()
        .enumerate()
        .filter_map(|(k, &kind)| {
            let first = ns.inits[0][k];
            (first != 0 && first != ns.outside[k] && ns.inits[1..].iter().all(|i| i[k] == first))
                .then_some((kind, first))
        })
        .collect()
}

/// The pod's view from its containers' views (`views`, in the order of `members`) and their
/// PID 1s' namespaces; `zombies` (a zombie snapshot, or a pod snapshot) counts the zombies
/// its sandbox leaves unreaped.
pub(crate) fn pod_view(
    pod: &Pod,
    containers: &[ContainerSummary],
    zombies: Option<&Snapshot>,
    ns: &PodNamespaces,
    views: Vec<ContainerView>,
) -> PodView {
    let of = |i: u32| containers.iter().find(|s| s.index == i);
    let shared = shared(ns);
    let sandbox_init = pod.sandbox.and_then(of).and_then(|s| s.init_pid);
    let in_pod: HashSet<u32> = pod.containers.iter().copied().collect();
    let sandbox_zombies = match (zombies, sandbox_init) {
        (Some(snap), Some(init)) => snap
            .processes
            .iter()
            .filter(|p| p.is_zombie() && p.ppid == init)
            .filter(|p| p.container.is_some_and(|c| in_pod.contains(&c)))
            .count() as u32,
        _ => 0,
    };
    let mut v = PodView {
        id: pod.key.id.clone(),
        kind: pod.key.kind.as_str().to_string(),
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        uid: pod.uid.clone(),
        sandbox: pod
            .sandbox
            .and_then(of)
            .map(|s| short_id(&s.container.key.id)),
        containers: Vec::new(),
        shared_pidns: shared
            .iter()
            .find(|(k, _)| *k == "pid")
            .map(|&(_, ino)| ino),
        shared_namespaces: shared.iter().map(|(k, _)| k.to_string()).collect(),
        processes: 0,
        threads: 0,
        zombies: 0,
        sandbox_zombies,
        cpu_usage_ns: 0,
        memory_bytes: 0,
    };
    for (s, c) in members(pod, containers).into_iter().zip(views) {
        v.processes += c.processes;
        v.threads += c.threads;
        v.zombies += c.zombies;
        v.cpu_usage_ns += c.resources.cpu_usage_ns.unwrap_or(0);
        v.memory_bytes += c.resources.memory_bytes.unwrap_or(0);
        v.containers.push(PodContainer {
            sandbox: Some(s.index) == pod.sandbox,
            id: c.id,
            short_id: c.short_id,
            name: c.name,
            init_pid: c.init_pid,
            processes: c.processes,
            zombies: c.zombies,
        });
    }
    v
}

/// `observer pods`: the pods' views, by namespace and name.
pub(crate) fn pods(mut v: Vec<PodView>) -> Vec<PodView> {
    v.sort_by(|a, b| (&a.namespace, &a.name, &a.id).cmp(&(&b.namespace, &b.name, &b.id)));
    v
}

/// The pod's tree from a snapshot of its containers (`Scope::Pod`): its view, and the trees
/// of its containers found in `snap` (in the pod's order).
pub(crate) fn build(
    snap: &Snapshot,
    pod: &Pod,
    view: PodView,
    mut containers: Vec<TreeView>,
) -> PodTreeView {
    let sandbox_init = pod
        .sandbox
        .and_then(|i| snap.container(i))
        .and_then(|s| s.init_pid);
    // Orphans adopted by the pod's PID 1 were adopted by the sandbox.
    for t in &mut containers {
        for p in &mut t.processes {
            if p.adopter.as_deref() == Some("namespace_init") && Some(p.ppid) == sandbox_init {
                p.adopter = Some("pod_sandbox".into());
            }
        }
    }
    PodTreeView {
        pod: view,
        containers,
    }
}

/// How a pod's text names a container: its name, or its short id when it has none or its
/// name is its id (a CRI sandbox's).
fn shown(name: Option<&String>, id: &str, short: &str) -> String {
    name.filter(|n| *n != id)
        .cloned()
        .unwrap_or_else(|| short.to_string())
}

fn header(p: &PodView, style: Style) -> String {
    let sandbox = p
        .containers
        .iter()
        .find(|c| c.sandbox)
        .map(|c| shown(c.name.as_ref(), &c.id, &c.short_id));
    format!(
        "{} {} ({} {}){}  sandbox {}  shares {}  {} containers, {} processes, {} zombies",
        style.bold("pod"),
        p.name.clone().unwrap_or_else(|| short_id(&p.id)),
        p.kind,
        short_id(&p.id),
        p.namespace
            .as_deref()
            .map(|n| format!(" ns {n}"))
            .unwrap_or_default(),
        sandbox.as_deref().unwrap_or("-"),
        if p.shared_namespaces.is_empty() {
            "nothing".to_string()
        } else {
            p.shared_namespaces.join(",")
        },
        p.containers.len(),
        p.processes,
        p.zombies
    )
}

/// The pod as text: with a shared pid namespace one tree under the sandbox's PID 1 (each
/// process labelled with its container; a process whose parent is outside the namespace —
/// conmon, a shim — drawn under PID 1 with that parent named); otherwise each container's
/// tree, the sandbox's first.
pub(crate) fn render(t: &Escaped<PodTreeView>, style: Style) -> String {
    let mut out = header(&t.pod, style);
    out.push('\n');
    let sandbox_init = t
        .containers
        .iter()
        .find(|c| t.pod.sandbox.as_deref() == Some(c.container.short_id.as_str()))
        .and_then(|c| c.container.init_pid);
    let (Some(pidns), Some(init)) = (t.pod.shared_pidns, sandbox_init) else {
        for c in &t.containers {
            out.push('\n');
            out.push_str(&tree::draw(c, style));
        }
        return out;
    };
    let mut all: Vec<ProcessView> = Vec::new();
    let mut whose: HashMap<u32, String> = HashMap::new();
    let mut outside: HashMap<u32, String> = HashMap::new();
    for c in &t.containers {
        let k = &c.container;
        let name = shown(k.name.as_ref(), &k.id, &k.short_id);
        if let (Some(pid), Some(comm)) = (c.container.shim_pid, &c.container.shim_comm) {
            outside.insert(pid, comm.clone());
        }
        for o in &c.outside_parents {
            outside.insert(o.pid, o.comm.clone());
        }
        for p in &c.processes {
            whose.insert(p.pid, name.clone());
            all.push(p.clone());
        }
    }
    let inside: HashSet<u32> = all.iter().map(|p| p.pid).collect();
    // Drawn under PID 1: the namespace's processes whose parent is outside it.
    let mut via: HashMap<u32, u32> = HashMap::new();
    for p in &mut all {
        if p.pid != init && p.pidns == pidns && !inside.contains(&p.ppid) {
            via.insert(p.pid, p.ppid);
            p.ppid = init;
        }
    }
    let by_pid: HashMap<u32, &ProcessView> = all.iter().map(|p| (p.pid, p)).collect();
    let kids = tree::children(&all);
    let label = |p: &ProcessView| {
        let mut l = tree::marked(p, &by_pid, style);
        if let Some(name) = whose.get(&p.pid) {
            l.push_str(&style.dim(&format!("  [{name}]")));
        }
        if let Some(parent) = via.get(&p.pid) {
            let comm = outside.get(parent).map(String::as_str).unwrap_or_default();
            l.push_str(&style.dim(&format!(
                "  (parent {comm} {parent}, outside the pod's pid namespace)"
            )));
        }
        tree::push_command(&mut l, p);
        l
    };
    let mut seen = HashSet::new();
    for p in &all {
        if p.pid == init || !by_pid.contains_key(&p.ppid) {
            tree::walk(p, "", true, true, &kids, &label, &mut seen, &mut out);
        }
    }
    if t.pod.sandbox_zombies > 0 {
        if let Some(p) = by_pid.get(&init) {
            let _ = writeln!(
                out,
                "{}",
                style.red(&format!(
                    "the sandbox's PID 1 {} ({}) is not reaping {} zombies of the pod",
                    p.comm, p.pid, t.pod.sandbox_zombies
                ))
            );
        }
    }
    out
}

pub(crate) fn render_pods(rows: &Escaped<Vec<PodView>>, no_headers: bool) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|p| {
            let names: Vec<String> = p
                .containers
                .iter()
                .filter(|c| !c.sandbox)
                .map(|c| c.name.clone().unwrap_or_else(|| c.short_id.clone()))
                .collect();
            vec![
                p.name.clone().unwrap_or_else(|| short_id(&p.id)),
                p.namespace.clone().unwrap_or_else(|| "-".into()),
                p.kind.clone(),
                p.sandbox.clone().unwrap_or_else(|| "-".into()),
                if names.is_empty() {
                    "-".into()
                } else {
                    names.join(",")
                },
                if p.shared_namespaces.is_empty() {
                    "-".into()
                } else {
                    p.shared_namespaces.join(",")
                },
                p.processes.to_string(),
                if p.sandbox_zombies > 0 {
                    format!("{} ({} by sandbox)", p.zombies, p.sandbox_zombies)
                } else {
                    p.zombies.to_string()
                },
                format!("{:.2}s", p.cpu_usage_ns as f64 / 1e9),
                bytes(p.memory_bytes),
            ]
        })
        .collect();
    table(
        &[
            "POD",
            "NAMESPACE",
            "KIND",
            "SANDBOX",
            "CONTAINERS",
            "SHARED",
            "PROCS",
            "ZOMBIES",
            "CPU",
            "MEMORY",
        ],
        &cells,
        no_headers,
    )
}
