//! What the table knows of processes found at start-up, and the cheap reconciliation check.

use observer_common::*;

use super::{scanned, table, tb_scan, HOST_NS, TICK};
use crate::table::Disagreement;

#[test]
fn the_cheap_check_counts_only_real_disagreements() {
    let mut tb = table();
    tb.seed(&[tb_scan(10), tb_scan(11)], 0);
    let all = |_| Some(1);
    assert_eq!(
        tb.disagreements(&[11, 10], u64::MAX, all, |_| false).len(),
        0
    );
    // /proc has a process no event announced, or lost one the table thinks alive.
    assert_eq!(
        tb.disagreements(&[10, 11, 12], u64::MAX, all, |_| false)
            .len(),
        1
    );
    assert_eq!(tb.disagreements(&[10], u64::MAX, all, |_| false).len(), 1);
    assert_eq!(
        tb.disagreements(&[10, 12], u64::MAX, all, |_| false).len(),
        2
    );
    // Races of the directory read: 12 was gone before the table was compared, and 11
    // started after the read began.
    assert_eq!(
        tb.disagreements(&[10, 12], u64::MAX, |p| (p != 12).then_some(1), |_| false),
        vec![Disagreement::Vanished(
            "pid 11 (sh, started 0.01 s, ppid 1, last event none since it was read from /proc)"
                .into()
        )]
    );
    // 12 started 10 ms after boot: a miss for a check a second later, too near before
    // (its fork event may still be on its way from a preempted parent).
    let second = 1_000_000_000;
    assert_eq!(
        tb.disagreements(&[10, 11, 12], second + 2 * TICK, all, |_| false)
            .len(),
        1
    );
    assert_eq!(
        tb.disagreements(&[10, 11, 12], second + TICK / 2, all, |_| false)
            .len(),
        0,
        "12 started too near"
    );
    assert_eq!(tb.disagreements(&[10], 0, all, |_| false).len(), 0);
    // A process the list missed that the kernel still has (a task the iterator does not
    // visit) is no disagreement; one the kernel lacks is.
    assert_eq!(tb.disagreements(&[10], u64::MAX, all, |p| p == 11).len(), 0);
    assert_eq!(tb.disagreements(&[10], u64::MAX, all, |p| p == 99).len(), 1);
}

#[test]
fn a_seeded_zombie_has_its_exit_status_and_details_fill_only_what_is_missing() {
    let mut tb = table();
    tb.seed(&[scanned(10, 1, TICK, "/", &[10], HOST_NS, 'S')], 0);
    tb.seed(
        &[tb_scan(10), scanned(11, 10, TICK, "/", &[11], HOST_NS, 'Z')],
        0,
    );
    assert_eq!(tb.get(11).unwrap().exit.unwrap().status, Some(3 << 8));
    assert_eq!(
        tb.missing_details(),
        [(10, TICK, true)],
        "zombies have no details left"
    );
    tb.procs.get_mut(&10).unwrap().ns[NS_NET] = 77; // as an event would have set it
    let mut ns = [5; NS_COUNT];
    ns[NS_PID] = 1;
    let d = |start| crate::host::scan::Details {
        pid: 10,
        start_ns: start,
        argv: b"x\0".to_vec(),
        exe: "/bin/x".into(),
        ns,
        cgroup_id: 4242,
    };
    tb.fill_details(vec![d(2 * TICK)]); // another process by now: ignored
    assert_eq!(tb.get(10).unwrap().ns[NS_MNT], 0);
    tb.fill_details(vec![d(TICK)]);
    let p = tb.get(10).unwrap();
    assert_eq!((p.ns[NS_PID], p.ns[NS_NET], p.ns[NS_MNT]), (HOST_NS, 77, 5));
    assert_eq!(p.cgroup_id, 4242);
    assert!(tb.missing_details().is_empty());
}

#[test]
fn a_check_of_one_slice_judges_only_the_table_processes_in_it() {
    let mut tb = table();
    tb.seed(&[tb_scan(10), tb_scan(11), tb_scan(5000)], 0);
    let all = |_| Some(1);
    // /proc's slice 0..100 lists 10 and 11: 5000, outside it, is not called gone.
    assert!(tb
        .disagreements_in(0..100, &[10, 11], u64::MAX, all, |_| false)
        .is_empty());
    // 11 is missing from its slice.
    let d = tb.disagreements_in(0..100, &[10], u64::MAX, all, |_| false);
    assert_eq!(d.len(), 1);
    assert!(d[0].to_string().starts_with("pid 11 "), "{}", d[0]);
    // The whole space: 5000 is missing.
    assert_eq!(
        tb.disagreements(&[10, 11], u64::MAX, all, |_| false).len(),
        1
    );
}
