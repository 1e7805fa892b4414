//! Threads that enter other namespaces or cgroups on their own (Go runtimes lock an OS
//! thread and setns it; CNI plugins, containerd and dockerd do it all day): their events
//! never rewrite their process's facts, which /proc reports from the leader.

use observer_common::*;

use super::{fork, hdr, table, task, thread, HOST_NS, TICK};
use crate::events::Event;

fn ns_event(kind: EventKind, tgid: u32, tid: u32, t: TaskInfo) -> Event {
    let e = NsEvent {
        header: hdr(kind, tgid, tid, t.start_time_ns + TICK),
        task: t,
        ret: 0,
    };
    match kind {
        EventKind::Setns => Event::Setns(e),
        _ => Event::Unshare(e),
    }
}

#[test]
fn a_threads_unshare_or_setns_leaves_its_process_facts_alone() {
    let mut tb = table();
    let leader = task(1, &[500], HOST_NS, TICK, "app");
    tb.apply(&fork(500, leader));
    tb.apply(&thread(500, 501, task(1, &[501], HOST_NS, 2 * TICK, "app")));
    let before = tb.get(500).unwrap().clone();
    // Thread 501 unshares a network namespace, then enters a container's pid-for-children,
    // net and uts namespaces: its own task facts carry its tid and the other namespaces.
    let mut t = task(1, &[501], HOST_NS, 2 * TICK, "app");
    t.ns[NS_NET] = 4026532999;
    tb.apply(&ns_event(EventKind::Unshare, 500, 501, t));
    t.ns[NS_UTS] = 4026532998;
    t.ns[NS_PID] = 4026532997;
    t.uid = 1000;
    tb.apply(&ns_event(EventKind::Setns, 500, 501, t));
    let after = tb.get(500).unwrap();
    assert_eq!(after.ns_pids, before.ns_pids, "ns_pids stay the leader's");
    assert_eq!(after.ns, before.ns, "namespaces stay the leader's");
    assert_eq!((after.pidns(), after.uid), (HOST_NS, 0));
    assert_eq!(after.threads, 2);
    assert_eq!(tb.stats.thread_ns_changes, 2);
    // The leader's own unshare is the process's.
    let mut l = leader;
    l.ns[NS_NET] = 4026532996;
    tb.apply(&ns_event(EventKind::Unshare, 500, 500, l));
    assert_eq!(tb.get(500).unwrap().ns[NS_NET], 4026532996);
    assert_eq!(tb.get(500).unwrap().ns_pids, before.ns_pids);
}

#[test]
fn a_thread_of_an_unknown_process_does_not_create_it_with_its_tid() {
    let mut tb = table();
    let t = task(1, &[601], HOST_NS, 2 * TICK, "app");
    tb.apply(&ns_event(EventKind::Setns, 600, 601, t));
    assert!(
        tb.get(600).is_none(),
        "left to reconciliation, not made from a thread"
    );
}

#[test]
fn a_thread_moved_to_another_cgroup_alone_leaves_its_process_where_it_was() {
    let mut tb = table();
    tb.apply(&fork(700, task(1, &[700], HOST_NS, TICK, "app")));
    let before = (tb.get(700).unwrap().cgroup, tb.get(700).unwrap().cgroup_id);
    let mut path = [0u8; CGROUP_PATH_LEN];
    let p = b"/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";
    path[..p.len()].copy_from_slice(p);
    let ev = Event::CgroupAttach(CgroupAttachEvent {
        header: hdr(EventKind::CgroupAttach, 700, 701, 3 * TICK),
        task: task(1, &[701], HOST_NS, 2 * TICK, "app"),
        dst_cgroup_id: 99,
        hierarchy_id: 0,
        dst_level: 2,
        threadgroup: 0,
        _pad: 0,
        path,
    });
    tb.apply(&ev);
    let p = tb.get(700).unwrap();
    assert_eq!((p.cgroup, p.cgroup_id), before);
    assert_eq!(p.container, None);
}

/// A forked child holds its parent's namespace set (shared, not a copy); when the child
/// unshares, it gets a set of its own and the parent's stays as it was.
#[test]
fn a_forked_child_shares_its_parents_namespaces_until_it_changes_one() {
    let mut tb = table();
    let parent = task(1, &[500], HOST_NS, TICK, "sh");
    tb.apply(&fork(500, parent));
    let mut child = task(500, &[510], HOST_NS, 2 * TICK, "sh");
    tb.apply(&fork(510, child));
    assert!(tb.get(510).unwrap().ns.shares(&tb.get(500).unwrap().ns));
    child.ns[NS_NET] = 4026532990;
    tb.apply(&ns_event(EventKind::Unshare, 510, 510, child));
    let (p, c) = (tb.get(500).unwrap(), tb.get(510).unwrap());
    assert_eq!((c.ns[NS_NET], c.ns[NS_MNT]), (4026532990, 7));
    assert_eq!(p.ns[NS_NET], 0, "the parent's set is untouched");
    assert!(!c.ns.shares(&p.ns));
}
