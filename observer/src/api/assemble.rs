//! Assembling a view. What a view shows that only the host has — each process's live /proc
//! facts (through the agent's kept stat files), each container's cgroup resources (through
//! its kept cgroup files), the runtimes' names (the resolver), a shim's current name, a
//! pod's namespaces — is read here, through `host` and `containers`, and handed to the pure
//! functions of `views`. The agent's routes and the CLI's one-shot views build every view
//! through these (service.rs).

use std::sync::Mutex;

use crate::{
    containers::{
        names::{Meta, Resolver},
        pods::Pod,
        ContainerKey,
    },
    host::{
        cgroupfs::CgroupFs,
        facts::{Live, Resources},
        resource_files::ResourceFiles,
        scan,
        stat_files::StatFiles,
    },
    table::{
        snapshot::Snapshot,
        summary::{cgroup_paths, oom_counts, ContainerSummary},
        Process,
    },
    views::{
        lists::{self, ZombieFacts},
        metrics::{self, ContainerSample},
        model::{self, Basis, ContainerFacts, ContainerView, ProcessView, TreeView, ZombieView},
        pods::{self, PodNamespaces, PodTreeView, PodView, SHAREABLE},
        select::{self, Selection},
        tree as trees,
    },
};

/// How long after its exec an event line waits for its executable's hash.
pub(crate) const HASH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// An exec event's executable hash for the event stream: waits (this subscriber only, off
/// the event loop) while it is computed, until [`HASH_WAIT`] after the exec (`at_ns`, the
/// boot clock), then says `pending`. Counted from the exec, not from when the subscriber
/// came to its line, lines of execs close together wait together: a local user exec'ing
/// fresh big files (~2 s of hashing each) cannot hold a stream back 2 s per exec.
pub(crate) async fn exe_hash(
    h: Option<crate::table::exe_hash::ExeHash>,
    at_ns: u64,
) -> Option<Result<crate::table::exe_hash::Digest, crate::table::exe_hash::Reason>> {
    use crate::table::exe_hash::Reason;
    let h = h?;
    let wait = HASH_WAIT.as_nanos() as u64;
    let now = crate::host::clock::boot_now_ns();
    // An exec stamped after now (it cannot be) waits HASH_WAIT at most.
    let until = at_ns.saturating_add(wait).min(now.saturating_add(wait));
    loop {
        match h.now() {
            Err(Reason::Pending) if crate::host::clock::boot_now_ns() < until => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            r => return Some(r),
        }
    }
}

/// What views are assembled with: the clock, the name resolver, the cgroup file systems,
/// and the agent's kept files (None: the CLI's one-shot view opens and closes each file).
pub(crate) struct ViewCtx<'a> {
    pub(crate) now_ns: u64,
    /// Locked for each look-up only, never across a view: a view that waits (for the
    /// history store to open, on a big store's query) must not stall the others' names,
    /// nor the store's writer, which names containers through it.
    pub(crate) resolver: &'a Mutex<Resolver>,
    pub(crate) cgroupfs: &'a CgroupFs,
    /// The agent's open cgroup files (lists of every container read through them).
    pub(crate) cgroup_files: Option<&'a Mutex<ResourceFiles>>,
    /// The agent's open /proc/<pid>/stat files (views of processes read through them).
    pub(crate) stat_files: Option<&'a Mutex<StatFiles>>,
    /// The agent's durable history store (None: the CLI's one-shot view, or it is off).
    pub(crate) store: Option<&'a crate::store::Store>,
}

impl ViewCtx<'_> {
    /// What a container's runtime says of it (Resolver::meta).
    pub(crate) fn meta(
        &self,
        key: &ContainerKey,
        ctr_namespace: Option<&str>,
        init_pid: Option<u32>,
    ) -> Meta {
        self.resolver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .meta(key, ctr_namespace, init_pid)
    }

    /// The time of the view and the units of /proc's figures.
    fn basis(&self) -> Basis {
        Basis {
            now_ns: self.now_ns,
            tick_ns: scan::tick_ns(),
            page_size: scan::page_size(),
        }
    }
}

/// What container `s`'s runtime says of it (name, pod, image).
pub(crate) fn meta_of(ctx: &mut ViewCtx, s: &ContainerSummary) -> Meta {
    ctx.meta(
        &s.container.key,
        s.container.ctr_namespace.as_deref(),
        s.init_pid,
    )
}

/// The metadata of each of `containers`, in order.
pub(crate) fn metas(ctx: &mut ViewCtx, containers: &[ContainerSummary]) -> Vec<Meta> {
    containers.iter().map(|s| meta_of(ctx, s)).collect()
}

/// Reads the live /proc facts of `p`, checking it is still the same process.
fn live_of(p: &Process) -> Option<Live> {
    scan::live(p.pid).filter(|l| l.is_of(p.start_time_ns))
}

/// The views of `procs` that are still in /proc (reaped ones are left out), their live
/// facts read through the agent's open stat files and each view built on the thread that
/// read it; `container` names each one's.
fn process_views(
    ctx: &ViewCtx,
    snap: &Snapshot,
    procs: &[&Process],
    container: impl Fn(&Process) -> Option<String> + Sync,
) -> Vec<ProcessView> {
    let basis = ctx.basis();
    StatFiles::read_with(ctx.stat_files, procs, |p, live| {
        Some(model::process_view(snap, p, live, &basis, container(p)))
    })
    .into_iter()
    .flatten()
    .collect()
}

/// What container `s`'s view shows beside its summary: its runtime's metadata, its cgroup's
/// resources (`resources` when the caller read them already) and its shim's current name.
fn container_facts(
    ctx: &mut ViewCtx,
    s: &ContainerSummary,
    resources: Option<Resources>,
) -> ContainerFacts {
    let meta = meta_of(ctx, s);
    let c = &s.container;
    let resources = if c.cgroup.is_empty() {
        Resources::default()
    } else {
        resources.unwrap_or_else(|| ctx.cgroupfs.resources(&c.cgroup))
    };
    // Shims rename themselves after exec (observer-shim does).
    let shim_comm = s.shim_pid.and_then(scan::live).map(|l| l.comm);
    ContainerFacts {
        meta,
        resources,
        shim_comm,
    }
}

pub(crate) fn container_view(ctx: &mut ViewCtx, s: &ContainerSummary) -> ContainerView {
    let facts = container_facts(ctx, s, None);
    model::container_view(s, facts, ctx.now_ns)
}

/// `observer ps`.
pub(crate) fn ps(ctx: &mut ViewCtx, snap: &Snapshot) -> Vec<ProcessView> {
    let procs: Vec<&Process> = snap.processes.iter().collect();
    lists::ps(process_views(ctx, snap, &procs, |p| {
        lists::container_label(snap, p)
    }))
}

/// `observer containers`.
pub(crate) fn containers(ctx: &mut ViewCtx, snap: &Snapshot) -> Vec<ContainerView> {
    // Every container's cgroup files at once, in parallel, through the agent's open files.
    let read = ctx.cgroup_files.map(|files| {
        let c = &snap.containers;
        files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read_containers(
                ctx.cgroupfs,
                &cgroup_paths(c),
                &oom_counts(c),
                Default::default(),
            )
    });
    let facts = snap
        .containers
        .iter()
        .map(|s| {
            let r = read
                .as_ref()
                .and_then(|m| m.get(&s.container.cgroup).copied());
            container_facts(ctx, s, r)
        })
        .collect();
    lists::containers(snap, facts, ctx.now_ns)
}

/// `observer zombies`.
pub(crate) fn zombies(ctx: &mut ViewCtx, snap: &Snapshot) -> Vec<ZombieView> {
    let v = snap
        .processes
        .iter()
        .filter(|p| p.exit.is_some())
        .filter_map(|p| {
            // Confirmed by /proc: reaped processes whose free event is still pending are gone.
            // One that cannot be read (out of file descriptors) stays, on the table's word.
            let live = match scan::live_read(p.pid) {
                Ok(l) => Some(l.filter(|l| l.is_of(p.start_time_ns) && l.state == 'Z')?),
                Err(_) => None,
            };
            let facts = ZombieFacts {
                live,
                parent_live: snap.process(p.ppid).and_then(live_of),
                container_name: p
                    .container
                    .and_then(|i| snap.container(i))
                    .and_then(|s| meta_of(ctx, s).name),
            };
            lists::zombie_view(snap, p, facts, ctx.now_ns)
        })
        .collect();
    lists::zombies(v)
}

/// A container's tree.
pub(crate) fn tree(ctx: &mut ViewCtx, snap: &Snapshot, summary: &ContainerSummary) -> TreeView {
    let container = container_view(ctx, summary);
    let short = model::short_id(&summary.container.key.id);
    let members = trees::members(snap, summary);
    let views = process_views(ctx, snap, &members, |_| Some(short.clone()));
    trees::build(snap, container, views)
}

/// The pods among `containers`.
pub(crate) fn pod_index(ctx: &mut ViewCtx, containers: &[ContainerSummary]) -> Vec<Pod> {
    let metas = metas(ctx, containers);
    let refs: Vec<&Meta> = metas.iter().collect();
    pods::index(containers, &refs)
}

/// The namespaces `pod`'s view compares, read from /proc (none for fewer than two PID 1s).
fn pod_namespaces(pod: &Pod, containers: &[ContainerSummary]) -> PodNamespaces {
    let (inits, outside) = pods::ns_pids(pod, containers);
    if inits.len() < 2 {
        return PodNamespaces::default();
    }
    let read = |pid: u32| SHAREABLE.map(|kind| scan::ns_inode(pid, kind));
    PodNamespaces {
        inits: inits.iter().map(|&p| read(p)).collect(),
        // Without a shim, this process stands outside: the host's namespaces.
        outside: read(outside.unwrap_or_else(std::process::id)),
    }
}

fn pod_view(
    ctx: &mut ViewCtx,
    pod: &Pod,
    containers: &[ContainerSummary],
    zombies: Option<&Snapshot>,
) -> PodView {
    let ns = pod_namespaces(pod, containers);
    let views = pods::members(pod, containers)
        .into_iter()
        .map(|s| container_view(ctx, s))
        .collect();
    pods::pod_view(pod, containers, zombies, &ns, views)
}

/// `observer pods`; `zombies` (a zombie snapshot) counts the zombies sandboxes leave.
pub(crate) fn pods(ctx: &mut ViewCtx, snap: &Snapshot, zombies: &Snapshot) -> Vec<PodView> {
    let list = pod_index(ctx, &snap.containers);
    let views = list
        .iter()
        .map(|p| pod_view(ctx, p, &snap.containers, Some(zombies)))
        .collect();
    pods::pods(views)
}

/// The pod's tree from a snapshot of its containers (`Scope::Pod`).
pub(crate) fn pod_tree(ctx: &mut ViewCtx, snap: &Snapshot, pod: &Pod) -> PodTreeView {
    let view = pod_view(ctx, pod, &snap.containers, Some(snap));
    let containers = pod
        .containers
        .iter()
        .filter_map(|&i| snap.container(i))
        .map(|s| tree(ctx, snap, s))
        .collect();
    pods::build(snap, pod, view, containers)
}

/// What a user's `query` names among `containers`; `member_of(pid)` gives the container
/// index of a host pid, if any.
pub(crate) fn select(
    ctx: &mut ViewCtx,
    containers: &[ContainerSummary],
    query: &str,
    member_of: impl Fn(u32) -> Option<u32>,
) -> Selection {
    let metas = metas(ctx, containers);
    let refs: Vec<&Meta> = metas.iter().collect();
    let member = query
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .and_then(member_of);
    select::select(containers, &refs, query, member)
}

/// The /metrics samples of `containers`, with their cgroups' resources (`resources(path)`,
/// read by the caller).
pub(crate) fn samples(
    ctx: &mut ViewCtx,
    containers: Vec<ContainerSummary>,
    allow: &[String],
    resources: impl FnMut(&str) -> Resources,
) -> Vec<ContainerSample> {
    let metas = metas(ctx, &containers);
    metrics::samples(containers, metas, allow, resources, ctx.now_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        host::clock::boot_now_ns,
        table::{snapshot::Scope, Table},
    };

    /// A process whose /proc files could not be read is listed with the table's facts and
    /// says so.
    #[test]
    fn an_unreadable_process_is_listed_with_the_tables_facts() {
        let me = std::process::id();
        let host = scan::ns_inode(me, "pid");
        let mut tb = Table::new(host, CgroupFs::default());
        tb.seed(&[scan::scan_pid(me, host, true, None).unwrap()], 0);
        let snap = tb.snapshot(Scope::All);
        let p = snap.process(me).unwrap();
        let basis = |now_ns| Basis {
            now_ns,
            tick_ns: scan::tick_ns(),
            page_size: scan::page_size(),
        };
        let v = model::process_view(&snap, p, None, &basis(boot_now_ns()), None);
        assert!(!v.live);
        assert_eq!((v.pid, v.ppid, v.state.as_str()), (me, p.ppid, "?"));
        assert_eq!((v.ns_pids.clone(), v.pidns), (vec![me], host));
        assert_eq!(v.comm, p.comm_str());
        let live = model::process_view(&snap, p, live_of(p), &basis(boot_now_ns()), None);
        assert!(live.live);
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["live"], false);
    }

    /// Three execs of executables whose hashes take long (never, here), all at one time:
    /// a subscriber's three lines wait HASH_WAIT together from the execs, not once each;
    /// an exec HASH_WAIT ago does not wait at all.
    #[tokio::test]
    async fn lines_of_execs_close_together_wait_for_slow_hashes_once() {
        use crate::table::exe_hash::{Entry, ExeHash, Reason};
        let slow = || Some(ExeHash::Entry(std::sync::Arc::new(Entry::default())));
        let at = boot_now_ns();
        let t = std::time::Instant::now();
        for _ in 0..3 {
            assert_eq!(exe_hash(slow(), at).await, Some(Err(Reason::Pending)));
        }
        let took = t.elapsed();
        assert!(
            took >= HASH_WAIT - std::time::Duration::from_millis(10) && took < 2 * HASH_WAIT,
            "{took:?}"
        );
        let t = std::time::Instant::now();
        let old = at.saturating_sub(HASH_WAIT.as_nanos() as u64);
        assert_eq!(exe_hash(slow(), old).await, Some(Err(Reason::Pending)));
        assert!(t.elapsed() < std::time::Duration::from_millis(100));
    }
}
