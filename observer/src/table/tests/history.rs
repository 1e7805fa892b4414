//! Histories of ended processes: what an entry says about an orphan's parents.

use super::{exec, exit, fork, table, task, Adopter, TICK};
use crate::containers::{cgroup::Runtime, ContainerKey};

#[test]
fn an_orphans_history_entry_keeps_the_parents_it_had_before_it_was_adopted() {
    let mut tb = table();
    let pidns = 4026532200;
    // ns PID 1 (host 500), its child sh 501, grandchild sleep 502; sh ends first.
    tb.apply(&fork(500, task(10, &[500, 1], pidns, TICK, "init")));
    tb.apply(&fork(501, task(500, &[501, 2], pidns, 2 * TICK, "sh")));
    tb.apply(&fork(502, task(501, &[502, 3], pidns, 3 * TICK, "sleep")));
    let sh = task(500, &[501, 2], pidns, 2 * TICK, "sh");
    tb.apply(&exit(501, 501, sh, 3, true, 4 * TICK));
    tb.resolve_pending(|pid| (pid == 502).then_some((500, 3)));
    assert_eq!(
        tb.get(502).unwrap().ppid,
        500,
        "adopted by the namespace's init"
    );
    let sleep = task(500, &[502, 3], pidns, 3 * TICK, "sleep");
    tb.apply(&exit(502, 502, sleep, 1, true, 5 * TICK));

    let key = ContainerKey::new(Runtime::Bare, pidns.to_string());
    let h = tb.history().of(&key).expect("the bare container's history");
    let names = |e: &crate::table::history::Ended| -> Vec<(u32, u32)> {
        e.chain.iter().map(|l| (l.pid, l.ns_pid)).collect()
    };
    assert_eq!(h.len(), 2);
    assert_eq!((h[0].pid, h[0].status), (501, 3 << 8));
    assert_eq!(names(&h[0]), [(500, 1)]);
    assert_eq!(
        (h[1].pid, h[1].status, h[1].adopted_from),
        (502, 1 << 8, Some(501))
    );
    assert_eq!(
        names(&h[1]),
        [(501, 2), (500, 1)],
        "sh, then init: as at its exec"
    );
    assert_eq!(
        tb.signals.len() + tb.orphan_chains.len(),
        1,
        "502 is a zombie still"
    );
}

/// Review item 4: the kernel reuses pid-namespace inodes. A bare container is keyed by its
/// namespace's inode, so a namespace made after another's init ended, with the same inode,
/// was merged into the first one — its processes, counters and history. The init's end
/// ended that namespace (the kernel kills the rest of it with its init), so a process that
/// started after it is of another one: a new generation, as the history store counts them
/// (store/write.rs). Unshare twice until an inode repeats is not deterministic, so this is
/// the table's own events with one inode; a third namespace after the first two were evicted
/// does not fall back to the first generation's key either.
#[test]
fn a_reused_pid_namespace_inode_is_a_new_container_once_its_init_ended() {
    use crate::table::gc::Limits;
    let mut tb = table();
    let pidns = 4026532300;
    let ended = |tb: &mut crate::table::Table, pid: u32, t: observer_common::TaskInfo, at: u64| {
        tb.apply(&exit(pid, pid, t, 0, true, at));
        tb.apply(&super::free(pid, t));
    };
    // The first namespace: init 500 and a child; the child ends, then the init.
    let init = task(10, &[500, 1], pidns, TICK, "init");
    let child = task(500, &[501, 2], pidns, 2 * TICK, "sh");
    tb.apply(&fork(500, init));
    tb.apply(&fork(501, child));
    ended(&mut tb, 501, child, 3 * TICK);
    ended(&mut tb, 500, init, 4 * TICK);
    // A second namespace with the same inode, after that.
    let second = task(10, &[600, 1], pidns, 10 * TICK, "init2");
    tb.apply(&fork(600, second));
    let c = tb.get(600).unwrap().container.unwrap();
    let key = tb.registry.get(c).unwrap().key.clone();
    assert_eq!(
        (key.runtime, key.id.as_str()),
        (Runtime::Bare, "4026532300")
    );
    assert_eq!(
        key.generation,
        4 * TICK,
        "its processes started after that init's end"
    );
    let bare: Vec<_> = tb
        .registry
        .iter()
        .filter(|(_, c)| c.key.runtime == Runtime::Bare)
        .map(|(_, c)| (c.key.generation, c.counters.forks))
        .collect();
    assert_eq!(
        bare,
        [(0, 2), (4 * TICK, 1)],
        "two containers, each its own forks"
    );
    ended(&mut tb, 600, second, 11 * TICK);
    let first = ContainerKey::new(Runtime::Bare, pidns.to_string());
    let pids = |k: &ContainerKey| -> Vec<u32> {
        tb.history().of(k).unwrap().iter().map(|e| e.pid).collect()
    };
    assert_eq!(
        pids(&first),
        [501, 500],
        "the first namespace's history alone"
    );
    assert_eq!(pids(&key), [600]);
    // Both evicted from the registry (their histories stay): a third namespace is a
    // generation of its own, not the first one's again.
    let evict = Limits {
        max_containers: 10,
        retention_ns: 0,
        history: Default::default(),
    };
    tb.collect(12 * TICK, &evict);
    tb.collect(13 * TICK, &evict);
    assert_eq!(tb.registry.len(), 0);
    tb.apply(&fork(700, task(10, &[700, 1], pidns, 20 * TICK, "init3")));
    let c = tb.get(700).unwrap().container.unwrap();
    assert_eq!(tb.registry.get(c).unwrap().key.generation, 11 * TICK);
    assert_eq!(tb.history().keys().count(), 2, "two histories, none merged");
}

/// Seen on 5.10 under emulation: the orphan exec'd between its parent's exit event and the
/// kernel's reparenting, so its exec event (applied after /proc showed the adoption) still
/// named the exited parent, and the table put it back there.
#[test]
fn an_orphans_event_naming_its_exited_parent_does_not_undo_the_adoption() {
    let mut tb = table();
    let pidns = 4026532200;
    tb.apply(&fork(745, task(10, &[745, 1], pidns, TICK, "init")));
    tb.apply(&fork(747, task(745, &[747, 2], pidns, 2 * TICK, "sh")));
    tb.apply(&fork(749, task(747, &[749, 3], pidns, 3 * TICK, "sh")));
    tb.apply(&exit(
        747,
        747,
        task(745, &[747, 2], pidns, 2 * TICK, "sh"),
        0,
        true,
        4 * TICK,
    ));
    tb.resolve_pending(|pid| (pid == 749).then_some((745, 3)));
    assert_eq!(tb.get(749).unwrap().ppid, 745);
    // The exec it made before the kernel moved it, applied now.
    tb.apply(&exec(
        749,
        task(747, &[749, 3], pidns, 3 * TICK, "sleep"),
        "/bin/sleep",
        &["sleep", "1001"],
    ));
    let p = tb.get(749).unwrap();
    assert_eq!(p.ppid, 745, "back under its exited parent");
    assert_eq!(p.adoption.unwrap().by, Adopter::NamespaceInit);
    assert!(tb.children(745).contains(&749));
    assert!(!tb.children(747).contains(&749));
}
