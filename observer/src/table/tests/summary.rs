//! A container's summary from the member sets the table keeps equals the one a pass over
//! every process gives, through seeding, pid namespaces, threads, zombies, frees and
//! compaction.

use super::{exec, exit, free, scanned, table, task, thread, HOST_NS, TICK};
use crate::containers::cgroup::Runtime;
use crate::table::{gc, Table};

/// Every container's summary and members, both ways.
fn check(tb: &Table) {
    tb.zombies(); // checks its count from `exited` against a full pass
    let (all, members) = tb.summaries_and_members();
    for s in &all {
        let (one, mine) = tb.summaries_of(&[s.index]);
        assert_eq!(one.len(), 1);
        assert_eq!(
            serde_json::to_value(&one[0]).unwrap(),
            serde_json::to_value(s).unwrap()
        );
        let mut want: Vec<u32> = members
            .iter()
            .filter(|(c, _)| *c == s.index)
            .map(|&(_, p)| p)
            .collect();
        let mut got: Vec<u32> = mine.iter().map(|&(_, p)| p).collect();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "members of container {}", s.index);
        let set = &tb.registry.get(s.index).unwrap().members;
        assert_eq!(set.len(), want.len());
    }
    // What resolving a reference gets: every container, its process count, and PID 1 where
    // names are read through it (bare containers here).
    let reg = tb.registry_summaries();
    assert_eq!(reg.len(), all.len());
    for (r, s) in reg.iter().zip(&all) {
        assert_eq!((r.index, r.processes), (s.index, s.processes));
        if r.container.key.runtime == Runtime::Bare {
            assert_eq!((r.init_pid, r.shim_pid), (s.init_pid, s.shim_pid));
            assert!(r.init_pid.is_some());
        }
    }
    // What /metrics gets: the same counts from the sets, their thread sums and `exited`.
    let metrics = tb.metrics_summaries();
    assert_eq!(metrics.len(), all.len());
    for (m, s) in metrics.iter().zip(&all) {
        assert_eq!(
            (
                m.index,
                m.processes,
                m.threads,
                m.zombies,
                m.oldest_zombie_ns
            ),
            (
                s.index,
                s.processes,
                s.threads,
                s.zombies,
                s.oldest_zombie_ns
            ),
            "metrics summary of container {}",
            s.index
        );
        assert_eq!(m.container.key, s.container.key);
        if m.container.key.runtime == Runtime::Bare {
            assert_eq!((m.init_pid, m.shim_pid), (s.init_pid, s.shim_pid));
        }
    }
    // Both containers at once, and one listed twice, give each once.
    let twice: Vec<u32> = all.iter().flat_map(|s| [s.index, s.index]).collect();
    assert_eq!(tb.summaries_of(&twice).0.len(), all.len());
}

/// Container a: PID 1 of its own pid namespace `pidns`, a child and a zombie; container
/// b in the host pid namespace; a bare pid namespace (`pidns` + 1).
fn seeded(pidns: u32) -> Table {
    let mut tb = table();
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    tb.seed(
        &[
            // Container a: PID 1 of its own pid namespace, a child and a zombie.
            scanned(30, 20, TICK, "/", &[30], HOST_NS, 'S'),
            scanned(40, 30, TICK, &format!("/docker/{a}"), &[40, 1], pidns, 'S'),
            scanned(
                41,
                40,
                2 * TICK,
                &format!("/docker/{a}"),
                &[41, 2],
                pidns,
                'S',
            ),
            scanned(
                42,
                40,
                2 * TICK,
                &format!("/docker/{a}"),
                &[42, 3],
                pidns,
                'Z',
            ),
            // Container b: in the host pid namespace (its first process is its root).
            scanned(50, 30, TICK, &format!("/docker/{b}"), &[50], HOST_NS, 'S'),
            scanned(
                51,
                50,
                3 * TICK,
                &format!("/docker/{b}"),
                &[51],
                HOST_NS,
                'S',
            ),
            // A bare pid namespace (no runtime's cgroup): its PID 1 and a child.
            scanned(60, 30, TICK, "/user.slice", &[60, 1], pidns + 1, 'S'),
            scanned(61, 60, TICK, "/user.slice", &[61, 2], pidns + 1, 'S'),
        ],
        0,
    );
    tb
}

#[test]
fn member_sets_give_the_summary_a_full_pass_gives() {
    let pidns = 4026532500;
    let mut tb = seeded(pidns);
    assert_eq!(tb.live_containers(), 3);
    check(&tb);
    // Threads come and go; an exec by one of them leaves one (de_thread).
    let t41 = task(40, &[41, 2], pidns, 2 * TICK, "sh");
    tb.apply(&thread(41, 43, task(40, &[43, 4], pidns, 4 * TICK, "sh")));
    tb.apply(&thread(41, 44, task(40, &[44, 5], pidns, 4 * TICK, "sh")));
    tb.apply(&thread(51, 52, task(50, &[52], HOST_NS, 4 * TICK, "sh")));
    check(&tb);
    assert_eq!(tb.metrics_summaries()[0].threads, 5);
    tb.apply(&exit(
        41,
        44,
        task(40, &[44, 5], pidns, 4 * TICK, "sh"),
        0,
        false,
        5 * TICK,
    ));
    check(&tb);
    tb.apply(&exec(41, t41, "/bin/true", &["true"]));
    assert_eq!(tb.get(41).unwrap().threads, 1);
    check(&tb);
    // A member leaves: gone from its set.
    tb.apply(&free(51, task(50, &[51], HOST_NS, 3 * TICK, "sh")));
    assert!(tb.get(51).is_none());
    check(&tb);
    // b ends; its eviction renumbers a, whose set follows it.
    tb.apply(&free(50, task(30, &[50], HOST_NS, TICK, "sh")));
    let now = 100_000_000_000;
    let lim = gc::Limits {
        max_containers: 100,
        retention_ns: 1,
        history: Default::default(),
    };
    tb.collect(1, &lim);
    assert!(tb.collect(now, &lim));
    assert_eq!(tb.registry.len(), 2);
    check(&tb);
    let (s, m) = tb.summaries_of(&[tb.get(40).unwrap().container.unwrap()]);
    assert_eq!(
        (s[0].processes, s[0].zombies, s[0].init_pid),
        (3, 1, Some(40))
    );
    assert_eq!(m.len(), 3);
}
