//! Mismatches with /proc that `cargo xtask torture` found, one regression test each.

use observer_common::*;

use super::{fork, hdr, table, task, HOST_NS, TICK};
use crate::events::Event;

/// A cgroup attach event for `pid` into `dest` (cgroup2), with `flags` on its task.
fn attach(pid: u32, dest: &str, id: u64, flags: u32) -> Event {
    let mut path = [0u8; CGROUP_PATH_LEN];
    path[..dest.len()].copy_from_slice(dest.as_bytes());
    let mut t = task(1, &[pid], HOST_NS, TICK, "sleep");
    t.flags = flags;
    Event::CgroupAttach(CgroupAttachEvent {
        header: hdr(EventKind::CgroupAttach, pid, pid, 3 * TICK),
        task: t,
        dst_cgroup_id: id,
        hierarchy_id: 0,
        dst_level: 2,
        threadgroup: 1,
        _pad: 0,
        path,
    })
}

/// The registry learns that cgroup2 id `id` is `path` (as an event naming both teaches it).
fn learn(tb: &mut crate::table::Table, id: u64, path: &str) {
    let idx = tb.registry.intern_path(path);
    tb.registry.learn_cgroup_id(id, idx);
}

/// An exec of `pid` at `at` whose task is in the cgroup2 id `id`.
fn exec_in(pid: u32, at: u64, id: u64) -> Event {
    let mut ev = super::exec(pid, task(1, &[pid], HOST_NS, TICK, "sh"), "/bin/x", &["x"]);
    if let Event::Exec(e) = &mut ev {
        e.header.ktime_ns = at;
        e.task.cgroup_id = id;
    }
    ev
}

/// torture: a zombie's pid written to another cgroup's cgroup.procs. The write succeeds and
/// the tracepoint fires, but the kernel skips exiting tasks: /proc showed the zombie in
/// `/observer-torture-4077/c`, the agent in `/observer-torture-4077` (where it was sent).
#[test]
fn an_exiting_process_written_to_another_cgroup_stays_where_it_was() {
    let mut tb = table();
    tb.apply(&fork(800, task(1, &[800], HOST_NS, TICK, "sleep")));
    tb.apply(&attach(800, "/torture/c", 71, 0));
    assert_eq!(tb.get(800).unwrap().cgroup_id, 71, "a live process moves");
    let before = (tb.get(800).unwrap().cgroup, tb.get(800).unwrap().cgroup_id);
    tb.apply(&attach(800, "/torture", 70, TASK_FLAG_EXITING));
    let p = tb.get(800).unwrap();
    assert_eq!((p.cgroup, p.cgroup_id), before, "an exiting one stays");
}

/// torture, after 2,973 events were lost: processes moved between cgroups while their attach
/// events were dropped stayed where the table last saw them, and reconciliation (which fixed
/// parents and exits only) never moved them. A full scan now corrects the cgroup.
#[test]
fn a_move_whose_attach_event_was_lost_is_corrected_by_the_next_scan() {
    use super::tests::scanned;
    let mut tb = table();
    tb.apply(&fork(800, task(1, &[800], HOST_NS, TICK, "sleep")));
    tb.apply(&attach(800, "/torture/c", 71, 0));
    // Moved to /torture/b: the event was lost. The scan (begun after its last event) says so.
    let s = scanned(800, 1, TICK, "/torture/b", &[800], HOST_NS, 'S');
    let scan_start = 10 * TICK;
    assert_eq!(
        tb.reconcile(std::slice::from_ref(&s), scan_start, scan_start, |_| Some(
            1
        )),
        1
    );
    let p = tb.get(800).unwrap();
    assert_eq!(tb.registry.path(p.cgroup), "/torture/b");
    assert_eq!(
        p.cgroup_id, 0,
        "its cgroup2 id is unknown until an event names it"
    );
    // Agreeing now: nothing more to fix.
    assert_eq!(tb.reconcile(&[s], scan_start, scan_start, |_| Some(1)), 0);
    assert_eq!(tb.stats.corrections, 1);
}

/// A move applied after the scan began is newer than what the scan read: not undone.
#[test]
fn a_move_seen_after_the_scan_began_is_kept() {
    use super::tests::scanned;
    let mut tb = table();
    tb.apply(&fork(800, task(1, &[800], HOST_NS, TICK, "sleep")));
    tb.apply(&attach(800, "/torture/c", 71, 0)); // at 3 ticks
    let s = scanned(800, 1, TICK, "/torture", &[800], HOST_NS, 'S');
    assert_eq!(tb.reconcile(&[s], 2 * TICK + 1, 4 * TICK, |_| Some(1)), 0);
    assert_eq!(tb.registry.path(tb.get(800).unwrap().cgroup), "/torture/c");
}

/// torture, 21,415 events lost beside the kernel matrix: a worker's move to `/c` was lost,
/// and its threads' exit events (after the loss-triggered scan began) made the correction
/// skip it as "touched since the scan began" — it stayed in `/a` until the next full scan.
/// Only an event that sets the cgroup is newer than what the scan read.
#[test]
fn a_lost_move_is_corrected_although_other_events_of_the_process_followed_the_scan() {
    use super::{exit, scanned, thread};
    let mut tb = table();
    tb.apply(&fork(800, task(1, &[800], HOST_NS, TICK, "xtask")));
    tb.apply(&attach(800, "/torture/a", 72, 0)); // at 3 ticks
    tb.apply(&thread(
        800,
        801,
        task(1, &[801], HOST_NS, 4 * TICK, "xtask"),
    ));
    // Moved to /torture/c: the event was lost; the scan begins at 10 ticks; a thread exits.
    let t = task(1, &[801], HOST_NS, 4 * TICK, "xtask");
    tb.apply(&exit(800, 801, t, 0, false, 11 * TICK));
    let s = scanned(800, 1, TICK, "/torture/c", &[800], HOST_NS, 'S');
    assert_eq!(tb.reconcile(&[s], 10 * TICK, 12 * TICK, |_| Some(1)), 1);
    assert_eq!(tb.registry.path(tb.get(800).unwrap().cgroup), "/torture/c");
}

/// An exec naming another cgroup2 id moves the process: a scan begun before it read the old
/// cgroup and corrects nothing.
#[test]
fn a_move_an_exec_revealed_after_the_scan_began_is_kept() {
    use super::scanned;
    let mut tb = table();
    learn(&mut tb, 73, "/torture/c");
    tb.apply(&fork(800, task(1, &[800], HOST_NS, TICK, "sh")));
    tb.apply(&attach(800, "/torture/a", 72, 0)); // at 3 ticks
    tb.apply(&exec_in(800, 11 * TICK, 73));
    assert_eq!(tb.registry.path(tb.get(800).unwrap().cgroup), "/torture/c");
    let s = scanned(800, 1, TICK, "/torture/a", &[800], HOST_NS, 'S');
    assert_eq!(tb.reconcile(&[s], 10 * TICK, 12 * TICK, |_| Some(1)), 0);
    assert_eq!(tb.registry.path(tb.get(800).unwrap().cgroup), "/torture/c");
}

/// After a correction the process's cgroup2 id is unknown: an event made before the
/// correction (still in flight) names the old cgroup's id and must not become it; a newer one
/// does. A child forked meanwhile into another cgroup (CLONE_INTO_CGROUP) is filed under its
/// own id's path, not its parent's.
#[test]
fn a_corrected_cgroup_takes_no_id_from_an_older_event_and_its_children_their_own() {
    use super::scanned;
    let mut tb = table();
    learn(&mut tb, 73, "/torture/c");
    learn(&mut tb, 74, "/torture/d");
    tb.apply(&fork(800, task(1, &[800], HOST_NS, TICK, "sh")));
    tb.apply(&attach(800, "/torture/a", 72, 0));
    let s = scanned(800, 1, TICK, "/torture/c", &[800], HOST_NS, 'S');
    assert_eq!(tb.reconcile(&[s], 10 * TICK, 12 * TICK, |_| Some(1)), 1);
    tb.apply(&exec_in(800, 11 * TICK, 72));
    assert_eq!(
        tb.get(800).unwrap().cgroup_id,
        0,
        "made before the correction"
    );
    let mut child = task(800, &[801], HOST_NS, 12 * TICK + 5, "sh");
    child.cgroup_id = 74;
    tb.apply(&fork(801, child));
    assert_eq!(tb.registry.path(tb.get(801).unwrap().cgroup), "/torture/d");
    tb.apply(&exec_in(800, 13 * TICK, 73));
    let p = tb.get(800).unwrap();
    assert_eq!(
        (tb.registry.path(p.cgroup), p.cgroup_id),
        ("/torture/c", 73)
    );
}

/// A hybrid host: a process the table files under its v1 container path (its attach event
/// named a container there) while /proc's cgroup2 line says otherwise is where /proc says.
#[test]
fn a_v1_container_path_that_proc_lists_is_no_correction() {
    use super::tests::scanned;
    let id = "a".repeat(64);
    let mut tb = table();
    tb.apply(&fork(800, task(1, &[800], HOST_NS, TICK, "sleep")));
    let mut v1 = attach(800, &format!("/docker/{id}"), 0, 0);
    if let Event::CgroupAttach(e) = &mut v1 {
        e.hierarchy_id = 4;
    }
    tb.apply(&v1);
    assert_eq!(
        tb.registry.path(tb.get(800).unwrap().cgroup),
        format!("/docker/{id}")
    );
    let mut s = scanned(
        800,
        1,
        TICK,
        "/system.slice/docker.service",
        &[800],
        HOST_NS,
        'S',
    );
    s.cgroup.push_str(&format!("1:name=systemd:/docker/{id}\n"));
    assert_eq!(tb.reconcile(&[s], 10 * TICK, 10 * TICK, |_| Some(1)), 0);
    assert!(tb.get(800).unwrap().container.is_some());
}

/// A process moved into a threaded cgroup: the scan (from `cgroup.procs`) lists it under
/// the threaded domain, its own /proc file in the threaded child. The table had it right.
#[test]
fn a_scan_that_disagrees_only_with_the_cgroup_procs_view_corrects_nothing() {
    use super::scanned;
    let mut tb = table();
    tb.apply(&fork(800, task(1, &[800], HOST_NS, TICK, "sleep")));
    tb.apply(&attach(800, "/d/a", 72, 0));
    let s = scanned(800, 1, TICK, "/d", &[800], HOST_NS, 'S');
    let own = |_| Some("0::/d/a\n".to_string());
    assert_eq!(
        tb.reconcile_with(&[s], 10 * TICK, 10 * TICK, |_| Some(1), &own),
        0
    );
    assert_eq!(tb.registry.path(tb.get(800).unwrap().cgroup), "/d/a");
}

/// A cgroup path longer than the record holds arrives cut (the kernel program flags it):
/// the table takes the whole path its cgroup2 id names, and never teaches the id the cut one.
#[test]
fn a_cut_cgroup_path_is_taken_whole_from_its_id() {
    let whole = format!("/kubepods/{}/leaf", "x".repeat(300));
    let mut tb = table();
    tb.apply(&fork(800, task(1, &[800], HOST_NS, TICK, "sleep")));
    tb.apply(&fork(801, task(1, &[801], HOST_NS, TICK, "sleep")));
    // The id learned whole (the seed's walk does this; an attach here).
    let idx = tb.registry.intern_path(&whole);
    tb.registry.learn_cgroup_id(90, idx);
    let cut = &whole[..CGROUP_PATH_LEN - 1];
    tb.apply(&attach(801, cut, 90, TASK_FLAG_CGROUP_PATH_CUT));
    assert_eq!(tb.registry.path(tb.get(801).unwrap().cgroup), whole);
    // Unknown id (no cgroup2 to walk here): the cut path, and the id stays unlearned.
    tb.apply(&attach(800, cut, 91, TASK_FLAG_CGROUP_PATH_CUT));
    assert_eq!(tb.registry.path(tb.get(800).unwrap().cgroup), cut);
    assert_eq!(tb.registry.path_of_cgroup_id(91), None);
}

/// torture: a thread-exec worker (a non-leader thread execs `sleep`) moved by the mover
/// while its exec killed the other threads: the attach event named the dying leader
/// (exiting, ignored) but the exec'ing thread — the process from then on — had moved. /proc
/// showed `sleep` in /a, the agent in /b. The exec record's cgroup2 id says where it is.
#[test]
fn an_exec_after_a_move_reported_on_its_dying_leader_is_where_the_exec_says() {
    use super::exec;
    let mut tb = table();
    tb.apply(&fork(800, task(1, &[800], HOST_NS, TICK, "xtask")));
    tb.apply(&attach(800, "/torture/a", 71, 0));
    tb.apply(&attach(800, "/torture/b", 72, 0));
    tb.apply(&attach(800, "/torture/a", 71, TASK_FLAG_EXITING));
    assert_eq!(tb.registry.path(tb.get(800).unwrap().cgroup), "/torture/b");
    let mut t = task(1, &[800], HOST_NS, TICK, "sleep");
    t.cgroup_id = 71;
    tb.apply(&exec(800, t, "/bin/sleep", &["sleep", "1"]));
    let p = tb.get(800).unwrap();
    assert_eq!(
        (tb.registry.path(p.cgroup), p.cgroup_id),
        ("/torture/a", 71)
    );
}
