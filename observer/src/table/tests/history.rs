//! Histories of ended processes: what an entry says about an orphan's parents.

use super::{exit, fork, table, task, TICK};
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

    let key = ContainerKey {
        runtime: Runtime::Bare,
        id: pidns.to_string(),
    };
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
