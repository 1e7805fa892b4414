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
