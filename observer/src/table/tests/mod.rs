//! The table's unit tests: these, and one file per theme below.

use observer_common::*;

use super::*;
use crate::{containers::cgroup::Runtime, events::Event, host::scan::Scanned};

mod cost;
mod entry;
mod history;
mod sessions;
mod startup;
mod summary;
mod thread;
mod torture;

pub(super) const HOST_NS: u32 = 4026531836;
pub(crate) const TICK: u64 = 10_000_000;

pub(crate) fn task(ppid: u32, pids: &[u32], pidns: u32, start: u64, comm: &str) -> TaskInfo {
    let mut ns_pids = [0; MAX_PID_LEVELS];
    ns_pids[..pids.len()].copy_from_slice(pids);
    let mut ns = [0; NS_COUNT];
    ns[NS_PID] = pidns;
    ns[NS_MNT] = 7;
    let mut c = [0u8; COMM_LEN];
    c[..comm.len()].copy_from_slice(comm.as_bytes());
    TaskInfo {
        start_time_ns: start,
        cgroup_id: 1,
        ppid,
        uid: 0,
        gid: 0,
        pid_level: pids.len() as u32 - 1,
        ns_pids,
        ns,
        flags: 0,
        comm: c,
    }
}

pub(crate) fn hdr(kind: EventKind, tgid: u32, pid: u32, t: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        cpu: 0,
        ktime_ns: t,
        tgid,
        pid,
    }
}

pub(crate) fn fork(pid: u32, t: TaskInfo) -> Event {
    Event::Fork(ForkEvent {
        header: hdr(EventKind::Fork, pid, pid, t.start_time_ns),
        task: t,
        parent_tid: t.ppid,
        is_thread: 0,
    })
}

pub(super) fn thread(tgid: u32, tid: u32, t: TaskInfo) -> Event {
    Event::Fork(ForkEvent {
        header: hdr(EventKind::Fork, tgid, tid, t.start_time_ns),
        task: t,
        parent_tid: tgid,
        is_thread: 1,
    })
}

pub(super) fn exec(pid: u32, t: TaskInfo, file: &str, args: &[&str]) -> Event {
    let mut e = ExecEvent {
        header: hdr(EventKind::Exec, pid, pid, t.start_time_ns + 1),
        task: t,
        old_tid: pid,
        args_len: 0,
        filename: [0; FILENAME_LEN],
        args: [0; ARGS_LEN],
        // SAFETY: plain integers: all zeroes is a valid value.
        ..unsafe { std::mem::zeroed() }
    };
    e.filename[..file.len()].copy_from_slice(file.as_bytes());
    let joined: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    e.args[..joined.len()].copy_from_slice(&joined);
    e.args_len = joined.len() as u32;
    Event::Exec(e)
}

pub(crate) fn exit(
    tgid: u32,
    tid: u32,
    t: TaskInfo,
    code: u32,
    group_dead: bool,
    at: u64,
) -> Event {
    Event::Exit(ExitEvent {
        header: hdr(EventKind::Exit, tgid, tid, at),
        task: t,
        exit_code: code << 8,
        is_leader: (tgid == tid) as u32,
        group_dead: group_dead as u32,
        _pad: 0,
    })
}

pub(crate) fn free(pid: u32, t: TaskInfo) -> Event {
    Event::Free(FreeEvent {
        header: hdr(EventKind::Free, pid, pid, 0),
        task: t,
    })
}

pub(crate) fn table() -> Table {
    Table::new(HOST_NS, CgroupFs::default())
}

pub(super) fn scanned(
    pid: u32,
    ppid: u32,
    start: u64,
    cgroup: &str,
    pids: &[u32],
    pidns: u32,
    state: char,
) -> Scanned {
    let mut ns = [0; NS_COUNT];
    ns[NS_PID] = pidns;
    Scanned {
        pid,
        ppid,
        start_time_ns: start,
        start_exact: false,
        state,
        comm: "sh".into(),
        threads: 1,
        uid: 0,
        gid: 0,
        ns_pids: pids.to_vec(),
        ns,
        cgroup: format!("0::{cgroup}\n"),
        cgroup_id: 0,
        cmdline: b"sh\0".to_vec(),
        exit_status: (state == 'Z').then_some(3 << 8),
    }
}

#[test]
fn lifecycle_fork_exec_exit_free_makes_and_reaps_a_zombie() {
    let mut tb = table();
    tb.seed(&[scanned(100, 1, TICK, "/", &[100], HOST_NS, 'S')], 0);
    let t = task(100, &[200], HOST_NS, 5 * TICK, "sh");
    tb.apply(&fork(200, t));
    assert_eq!(tb.get(200).unwrap().ppid, 100);
    assert_eq!(tb.children(100), vec![200]);
    assert_eq!(
        tb.get(200).unwrap().argv.args(),
        ["sh"],
        "argv inherited from the parent"
    );
    tb.apply(&exec(
        200,
        task(100, &[200], HOST_NS, 5 * TICK, "sleep"),
        "/bin/sleep",
        &["sleep", "1"],
    ));
    let p = tb.get(200).unwrap();
    assert_eq!(
        (p.comm_str().into_owned(), p.argv.args()),
        ("sleep".to_string(), vec!["sleep".to_string(), "1".into()])
    );
    assert_eq!(tb.exe(p.exe), "/bin/sleep");
    tb.apply(&exit(200, 200, t, 3, true, 9 * TICK));
    let p = tb.get(200).unwrap();
    assert!(p.is_zombie());
    assert_eq!(p.exit.unwrap().status, Some(3 << 8));
    assert_eq!(tb.zombies(), 1);
    tb.apply(&free(200, t));
    assert!(tb.get(200).is_none(), "reaped");
    assert!(tb.children(100).is_empty());
}

#[test]
fn threads_fold_into_their_process() {
    let mut tb = table();
    let t = task(1, &[300], HOST_NS, TICK, "app");
    tb.apply(&fork(300, t));
    tb.apply(&thread(300, 301, task(1, &[301], HOST_NS, 2 * TICK, "app")));
    tb.apply(&thread(300, 302, task(1, &[302], HOST_NS, 2 * TICK, "app")));
    assert_eq!(tb.get(300).unwrap().threads, 3);
    assert!(tb.get(301).is_none(), "threads are not processes");
    tb.apply(&exit(
        300,
        301,
        task(1, &[301], HOST_NS, 2 * TICK, "app"),
        0,
        false,
        3 * TICK,
    ));
    assert_eq!(tb.get(300).unwrap().threads, 2);
    // A thread's free does not reap the process.
    tb.apply(&Event::Free(FreeEvent {
        header: hdr(EventKind::Free, 300, 301, 0),
        task: t,
    }));
    assert!(tb.get(300).is_some());
}

#[test]
fn orphans_are_adopted_by_namespace_init_and_recorded() {
    let mut tb = table();
    let pidns = 4026532200;
    // ns PID 1 (host 500), its child 501, grandchild 502 (double fork).
    tb.apply(&fork(500, task(10, &[500, 1], pidns, TICK, "init")));
    tb.apply(&fork(501, task(500, &[501, 2], pidns, 2 * TICK, "sh")));
    tb.apply(&fork(502, task(501, &[502, 3], pidns, 3 * TICK, "sleep")));
    tb.apply(&exit(
        501,
        501,
        task(500, &[501, 2], pidns, 2 * TICK, "sh"),
        0,
        true,
        4 * TICK,
    ));
    assert!(tb.has_pending());
    // The kernel moved 502 under the namespace's init.
    tb.resolve_pending(|pid| (pid == 502).then_some((500, 3)));
    let p = tb.get(502).unwrap();
    assert_eq!(p.ppid, 500);
    let a = p.adoption.unwrap();
    assert_eq!((a.from, a.by), (501, Adopter::NamespaceInit));
    assert_eq!(tb.stats.adoptions[Adopter::NamespaceInit as usize], 1);
    assert!(tb.children(500).contains(&502));
    assert!(!tb.has_pending());
}

#[test]
fn orphan_still_showing_old_parent_is_retried_then_adopted_by_subreaper() {
    let mut tb = table();
    tb.apply(&fork(600, task(1, &[600], HOST_NS, TICK, "shim")));
    tb.apply(&fork(601, task(600, &[601], HOST_NS, 2 * TICK, "sh")));
    tb.apply(&fork(602, task(601, &[602], HOST_NS, 3 * TICK, "sleep")));
    tb.apply(&exit(
        601,
        601,
        task(600, &[601], HOST_NS, 2 * TICK, "sh"),
        0,
        true,
        4 * TICK,
    ));
    tb.resolve_pending(|_| Some((601, 3)));
    assert!(tb.has_pending(), "not reparented yet: retried");
    tb.resolve_pending(|_| Some((600, 3)));
    assert_eq!(
        tb.get(602).unwrap().adoption.unwrap().by,
        Adopter::Subreaper
    );
}

#[test]
fn an_event_revealing_a_new_parent_records_the_adoption() {
    let mut tb = table();
    tb.apply(&fork(700, task(1, &[700], HOST_NS, TICK, "a")));
    tb.apply(&fork(701, task(700, &[701], HOST_NS, 2 * TICK, "b")));
    tb.apply(&exit(
        700,
        700,
        task(1, &[700], HOST_NS, TICK, "a"),
        0,
        true,
        3 * TICK,
    ));
    tb.apply(&free(700, task(1, &[700], HOST_NS, TICK, "a")));
    tb.apply(&exec(
        701,
        task(1, &[701], HOST_NS, 2 * TICK, "b"),
        "/bin/b",
        &["b"],
    ));
    let p = tb.get(701).unwrap();
    assert_eq!(p.ppid, 1);
    assert_eq!(p.adoption.unwrap().by, Adopter::HostInit);
}

#[test]
fn pid_reuse_replaces_the_old_process() {
    let mut tb = table();
    tb.apply(&fork(800, task(1, &[800], HOST_NS, TICK, "old")));
    tb.apply(&fork(800, task(1, &[800], HOST_NS, 50 * TICK, "new")));
    assert_eq!(tb.get(800).unwrap().comm_str(), "new");
    assert_eq!(tb.len(), 1);
    // A stale free for the old identity does not remove the new process.
    tb.apply(&free(800, task(1, &[800], HOST_NS, TICK, "old")));
    assert!(tb.get(800).is_some());
}

#[test]
fn pid_reused_within_one_clock_tick_keeps_the_new_holder() {
    let mut tb = table();
    // Two holders of PID 800 started 3 µs apart (same 10 ms tick): the first exits and is
    // reaped, the second forks, then the first's (RCU-deferred) free arrives.
    let first = task(1, &[800], HOST_NS, TICK + 1_000, "first");
    let second = task(1, &[800], HOST_NS, TICK + 4_000, "second");
    tb.apply(&fork(800, first));
    tb.apply(&exit(800, 800, first, 3, true, TICK + 2_000));
    tb.apply(&fork(800, second));
    assert_eq!(tb.get(800).unwrap().comm_str(), "second");
    assert!(
        tb.get(800).unwrap().exit.is_none(),
        "the first's exit stuck"
    );
    tb.apply(&free(800, first));
    assert_eq!(
        tb.get(800).map(|p| p.comm_str().into_owned()).as_deref(),
        Some("second")
    );
    // An exec of a third holder whose fork and the second's end were missed replaces it.
    let third = task(1, &[800], HOST_NS, TICK + 9_000, "third");
    tb.apply(&exit(800, 800, second, 0, true, TICK + 5_000));
    tb.apply(&exec(800, third, "/bin/third", &["third"]));
    let p = tb.get(800).unwrap();
    assert!(p.exit.is_none() && p.start_time_ns == TICK + 9_000, "{p:?}");
}

#[test]
fn containers_by_cgroup_attach_and_by_pid_namespace() {
    let mut tb = table();
    let id = "d".repeat(64);
    let pidns = 4026532300;
    tb.apply(&fork(900, task(1, &[900, 1], pidns, TICK, "init")));
    let bare = tb.get(900).unwrap().container.unwrap();
    assert_eq!(tb.registry.get(bare).unwrap().key.runtime, Runtime::Bare);
    let mut path = [0u8; CGROUP_PATH_LEN];
    let p = format!("/docker/{id}");
    path[..p.len()].copy_from_slice(p.as_bytes());
    tb.apply(&Event::CgroupAttach(CgroupAttachEvent {
        header: hdr(EventKind::CgroupAttach, 900, 900, 2 * TICK),
        task: task(1, &[900, 1], pidns, TICK, "init"),
        dst_cgroup_id: 77,
        hierarchy_id: 0,
        dst_level: 2,
        threadgroup: 1,
        _pad: 0,
        path,
    }));
    let c = tb.get(900).unwrap().container.unwrap();
    let cont = tb.registry.get(c).unwrap();
    assert_eq!(
        (cont.key.runtime, cont.key.id.as_str(), cont.members.len()),
        (Runtime::Docker, id.as_str(), 1)
    );
    assert_eq!(tb.registry.get(bare).unwrap().members.len(), 0);
    assert_eq!(tb.live_containers(), tb.summaries().len());
    assert_eq!(tb.live_containers(), 1);
    // A child forked in that cgroup (same cgroup id) inherits the container and counts a fork.
    let mut t = task(900, &[901, 2], pidns, 3 * TICK, "sh");
    t.cgroup_id = 77;
    tb.apply(&fork(901, t));
    assert_eq!(tb.get(901).unwrap().container, Some(c));
    assert_eq!(tb.registry.get(c).unwrap().counters.forks, 1);
}

#[test]
fn seed_prefers_runtime_containers_for_shared_pid_namespaces() {
    let mut tb = table();
    let id = "e".repeat(64);
    let pidns = 4026532400;
    // An nsenter'd shell (host cgroup) listed before the container's init.
    tb.seed(
        &[
            scanned(50, 40, TICK, "/user.slice", &[50, 9], pidns, 'S'),
            scanned(60, 30, TICK, &format!("/docker/{id}"), &[60, 1], pidns, 'S'),
        ],
        0,
    );
    assert_eq!(tb.get(50).unwrap().container, tb.get(60).unwrap().container);
    let c = tb
        .registry
        .get(tb.get(60).unwrap().container.unwrap())
        .unwrap();
    assert_eq!((c.key.runtime, c.members.len()), (Runtime::Docker, 2));
}

#[test]
fn reconcile_adds_missed_processes_removes_gone_ones_and_counts() {
    let mut tb = table();
    tb.seed(
        &[
            scanned(10, 1, TICK, "/", &[10], HOST_NS, 'S'),
            scanned(11, 10, TICK, "/", &[11], HOST_NS, 'S'),
        ],
        0,
    );
    // 11 ended unseen; 12 started unseen; 10's zombie state was missed.
    let fixes = tb.reconcile_all(
        &[
            scanned(10, 1, TICK, "/", &[10], HOST_NS, 'Z'),
            scanned(12, 10, 2 * TICK, "/", &[12], HOST_NS, 'S'),
        ],
        100 * TICK,
        100 * TICK,
    );
    // 12 is in the table at once; it counts once its fork event failed to follow.
    assert_eq!(fixes, 2);
    assert!(tb.get(11).is_none());
    assert!(tb.get(12).is_some());
    assert!(tb.get(10).unwrap().is_zombie());
    assert_eq!(tb.zombies(), 1);
    assert_eq!(tb.children(10), vec![12]);
    assert_eq!(tb.settle(100 * TICK + 1_000_000_000), 0);
    assert_eq!(tb.settle(100 * TICK + 2_000_000_000), 1);
    assert_eq!(tb.stats.corrections, 3);
    // A process younger than the scan start is not judged.
    tb.apply(&fork(13, task(10, &[13], HOST_NS, 200 * TICK, "new")));
    assert_eq!(
        tb.reconcile_all(
            &[
                scanned(10, 1, TICK, "/", &[10], HOST_NS, 'Z'),
                scanned(12, 10, 2 * TICK, "/", &[12], HOST_NS, 'S')
            ],
            150 * TICK,
            150 * TICK
        ),
        0
    );
    assert!(tb.get(13).is_some());
}

#[test]
fn reaped_zombies_leave_before_their_late_free_event() {
    let mut tb = table();
    let t = task(1, &[900], HOST_NS, 7 * TICK, "sh");
    tb.apply(&fork(900, t));
    tb.apply(&exit(900, 900, t, 0, true, 8 * TICK));
    assert!(tb.has_exited());
    // Still a zombie: kept.
    assert_eq!(tb.reap_gone(|_| true), 0);
    assert!(tb.get(900).is_some());
    // Gone (reaped): removed.
    assert_eq!(tb.reap_gone(|_| false), 1);
    assert!(tb.get(900).is_none());
    assert!(!tb.has_exited());
    tb.apply(&free(900, t));
    assert!(tb.is_empty());
}

#[test]
fn steady_state_reconciliation_corrects_nothing() {
    // A multi-threaded process whose leader thread exited reads `Z` in /proc with
    // Threads > 1: it is alive, neither at the seed nor at a reconciliation a zombie.
    let mut leader_gone = scanned(20, 1, TICK, "/", &[20], HOST_NS, 'Z');
    leader_gone.threads = 2;
    let mut tb = table();
    tb.seed(&[leader_gone.clone()], 0);
    assert!(!tb.get(20).unwrap().is_zombie());
    // A process whose exit was seen and that was reaped before the scan read /proc: its
    // free event (an RCU callback) is still due. Removing it is no correction.
    let t = task(1, &[30], HOST_NS, 2 * TICK, "sh");
    tb.apply(&fork(30, t));
    tb.apply(&exit(30, 30, t, 0, true, 3 * TICK));
    assert_eq!(tb.reconcile_all(&[leader_gone], 100 * TICK, 100 * TICK), 0);
    assert!(!tb.get(20).unwrap().is_zombie());
    assert!(tb.get(30).is_none());
    assert_eq!(tb.stats.corrections, 0);
}

#[test]
fn ended_containers_and_their_paths_are_evicted_live_ones_never() {
    const SEC: u64 = 1_000_000_000;
    let mut tb = table();
    let ids: Vec<String> = (0..5).map(|i| i.to_string().repeat(64)).collect();
    let scans: Vec<Scanned> = (0..5u32)
        .map(|i| {
            let path = format!("/docker/{}", ids[i as usize]);
            scanned(100 + i, 1, TICK, &path, &[100 + i], HOST_NS, 'S')
        })
        .collect();
    tb.seed(&scans, 0);
    assert_eq!(tb.live_containers(), 5);
    for i in 0..3 {
        tb.apply(&free(100 + i, task(1, &[100 + i], HOST_NS, TICK, "sh")));
    }
    let keep = gc::Limits {
        max_containers: 100,
        retention_ns: 10 * SEC,
        history: Default::default(),
    };
    assert!(!tb.collect(SEC, &keep), "within their retention they stay");
    assert_eq!(tb.registry.len(), 5);
    assert!(tb.collect(20 * SEC, &keep));
    assert_eq!(tb.registry.len(), 2);
    assert_eq!(tb.stats.evictions.containers, 3);
    assert_eq!(tb.stats.evictions.cgroup_paths, 3);
    // The survivors keep their container and path through the renumbering.
    for i in 3..5u32 {
        let p = tb.get(100 + i).unwrap();
        let c = tb.registry.get(p.container.unwrap()).unwrap();
        assert_eq!(c.key.id, ids[i as usize]);
        assert_eq!(c.members.len(), 1);
        assert_eq!(
            tb.registry.path(p.cgroup),
            format!("/docker/{}", ids[i as usize])
        );
    }
    // Over the cap, ended containers go at once; a live one is never evicted.
    tb.apply(&free(103, task(1, &[103], HOST_NS, TICK, "sh")));
    let tight = gc::Limits {
        max_containers: 1,
        retention_ns: u64::MAX,
        history: Default::default(),
    };
    assert!(tb.collect(21 * SEC, &tight));
    assert_eq!(tb.registry.len(), 1);
    let c = tb.get(104).unwrap().container.unwrap();
    assert_eq!(tb.registry.get(c).unwrap().key.id, ids[4]);
    // An evicted container's cgroup seen again names it anew.
    let path = tb.registry.intern_path(&format!("/docker/{}", ids[0]));
    let again = tb.registry.attribute(path, HOST_NS, 1).unwrap();
    assert_eq!(tb.registry.get(again).unwrap().key.id, ids[0]);
}

#[test]
fn a_fork_event_later_than_the_scan_is_no_correction() {
    // The child is in /proc before its parent's fork tracepoint fires: a scan in between
    // finds it missing from the table, and the late fork event then confirms it.
    let mut tb = table();
    tb.seed(&[scanned(10, 1, TICK, "/", &[10], HOST_NS, 'S')], 0);
    let late = scanned(12, 10, 2 * TICK, "/", &[12], HOST_NS, 'S');
    assert_eq!(
        tb.reconcile_all(&[tb_scan(10), late.clone()], 100 * TICK, 100 * TICK),
        0
    );
    assert!(tb.get(12).is_some());
    tb.apply(&fork(12, task(10, &[12], HOST_NS, 2 * TICK + 3_000, "sh")));
    assert_eq!(tb.settle(100 * TICK + 5_000_000_000), 0);
    assert_eq!(tb.stats.corrections, 0);
    assert_eq!(tb.children(10), vec![12]);
    // A PID reused unseen: the earlier holder is replaced at once; the new holder's late
    // fork confirms it too, and the earlier holder's late free changes nothing.
    let old = task(10, &[13], HOST_NS, 3 * TICK, "old");
    tb.apply(&fork(13, old));
    let reused = scanned(13, 10, 50 * TICK, "/", &[13], HOST_NS, 'S');
    assert_eq!(
        tb.reconcile_all(&[tb_scan(10), late, reused], 100 * TICK, 100 * TICK),
        0
    );
    assert_eq!(tb.get(13).unwrap().start_time_ns, 50 * TICK);
    tb.apply(&free(13, old));
    tb.apply(&fork(13, task(10, &[13], HOST_NS, 50 * TICK + 7, "new")));
    assert_eq!(tb.settle(u64::MAX), 0);
    assert_eq!(tb.get(13).unwrap().start_time_ns, 50 * TICK + 7);
    assert_eq!(tb.stats.corrections, 0);
}

pub(super) fn tb_scan(pid: u32) -> crate::host::scan::Scanned {
    scanned(pid, 1, TICK, "/", &[pid], HOST_NS, 'S')
}

impl Table {
    /// reconcile() with every scanned process still in /proc.
    fn reconcile_all(&mut self, scans: &[crate::host::scan::Scanned], start: u64, now: u64) -> u64 {
        let live: Vec<(u32, u64)> = scans
            .iter()
            .map(|s| (s.pid, s.start_time_ns / TICK))
            .collect();
        self.reconcile(scans, start, now, |pid| {
            live.iter().find(|(p, _)| *p == pid).map(|(_, t)| *t)
        })
    }
}

#[test]
fn a_process_that_ended_after_the_scan_is_not_added_back() {
    let mut tb = table();
    tb.seed(&[tb_scan(10)], 0);
    let t = task(10, &[14], HOST_NS, 5 * TICK, "sleep");
    let scanned_alive = scanned(14, 10, 5 * TICK, "/", &[14], HOST_NS, 'S');
    // Its whole life is applied between the scan and the reconciliation.
    tb.apply(&fork(14, t));
    tb.apply(&exit(14, 14, t, 0, true, 6 * TICK));
    tb.apply(&free(14, t));
    let fixes = tb.reconcile(
        &[tb_scan(10), scanned_alive],
        100 * TICK,
        100 * TICK,
        |pid| (pid == 10).then_some(1),
    );
    assert_eq!(fixes, 0);
    assert!(tb.get(14).is_none());
    assert_eq!(tb.settle(u64::MAX), 0);
}
