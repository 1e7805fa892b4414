//! Exec sessions: which processes came into a container from outside, how, and that their
//! descendants and history entries keep it.

use super::{exec, exit, fork, table, task, Table, HOST_NS, TICK};
use crate::{
    containers::{cgroup::Runtime, ContainerKey},
    table::sessions::Via,
};

const PIDNS: u32 = 4026532300;

/// A host process `pid` (parent `ppid`) that exec'd `args`.
fn host(tb: &mut Table, pid: u32, ppid: u32, comm: &str, args: &[&str]) {
    let t = task(ppid, &[pid], HOST_NS, u64::from(pid) * TICK, comm);
    tb.apply(&fork(pid, t));
    tb.apply(&exec(pid, t, args[0], args));
}

/// A docker container: its shim (10) and PID 1 (500), started by `runc create` (20).
fn docker_container(tb: &mut Table) {
    host(
        tb,
        10,
        1,
        "containerd-shim",
        &[
            "/usr/bin/containerd-shim-runc-v2",
            "-namespace",
            "moby",
            "-id",
            "abc",
        ],
    );
    host(
        tb,
        20,
        10,
        "runc",
        &["runc", "--root", "/r", "create", "abc"],
    );
    tb.apply(&fork(
        500,
        task(20, &[500, 1], PIDNS, 30 * TICK, "runc:[2:INIT]"),
    ));
}

#[test]
fn a_runc_exec_child_is_a_docker_exec_session_its_descendants_inherit() {
    let mut tb = table();
    docker_container(&mut tb);
    tb.apply(&fork(501, task(500, &[501, 2], PIDNS, 40 * TICK, "sh")));
    host(
        &mut tb,
        50,
        10,
        "runc",
        &["runc", "--root", "/r", "exec", "--detach", "abc"],
    );
    tb.apply(&fork(
        600,
        task(50, &[600, 3], PIDNS, 60 * TICK, "runc:[2:INIT]"),
    ));
    tb.apply(&fork(601, task(600, &[601, 4], PIDNS, 61 * TICK, "sleep")));

    assert!(tb.get(500).unwrap().session.is_none(), "PID 1 was started");
    assert!(tb.get(501).unwrap().session.is_none(), "forked inside");
    let s = tb.get(600).unwrap().session.clone().expect("600 came in");
    assert_eq!((s.root, s.via, s.at_ns), (600, Via::DockerExec, 60 * TICK));
    let by: Vec<u32> = s.by.iter().map(|l| l.pid).collect();
    assert_eq!(
        by,
        [50, 10],
        "runc exec, then the shim (its parent is PID 1)"
    );
    let child = tb.get(601).unwrap().session.clone().expect("inherited");
    assert!(std::sync::Arc::ptr_eq(&s, &child) && !child.is_root(601));
}

#[test]
fn a_session_outlives_its_runtime_and_its_history_entry_keeps_it() {
    let mut tb = table();
    docker_container(&mut tb);
    host(
        &mut tb,
        50,
        10,
        "runc",
        &["runc", "exec", "--detach", "abc"],
    );
    let root = task(50, &[600, 3], PIDNS, 60 * TICK, "sh");
    tb.apply(&fork(600, root));
    // runc exec ends at once (exec -d): the root is adopted by the shim.
    let runc = task(10, &[50], HOST_NS, 50 * TICK, "runc");
    tb.apply(&exit(50, 50, runc, 0, true, 62 * TICK));
    tb.resolve_pending(|pid| (pid == 600).then_some((10, 60)));
    assert_eq!(tb.get(600).unwrap().ppid, 10);
    assert_eq!(
        tb.get(600).unwrap().session.as_ref().map(|s| s.via),
        Some(Via::DockerExec),
        "recorded when it came in"
    );
    tb.apply(&exit(600, 600, root, 7, true, 90 * TICK));
    let key = ContainerKey::new(Runtime::Bare, PIDNS.to_string());
    let h = tb.history().of(&key).expect("history");
    let e = h.iter().find(|e| e.pid == 600).unwrap();
    let s = e.session.as_deref().expect("the entry keeps its session");
    assert!(s.is_root(600) && s.via == Via::DockerExec);
    assert_eq!(
        (e.start_ns, e.end_ns, e.status),
        (60 * TICK, 90 * TICK, 7 << 8)
    );
}

#[test]
fn nsenters_child_is_an_nsenter_session_by_nsenter_and_its_caller() {
    let mut tb = table();
    docker_container(&mut tb);
    host(&mut tb, 40, 1, "bash", &["bash"]);
    host(
        &mut tb,
        41,
        40,
        "nsenter",
        &["nsenter", "-t", "500", "-a", "sh"],
    );
    tb.apply(&fork(700, task(41, &[700, 9], PIDNS, 70 * TICK, "nsenter")));
    let s = tb.get(700).unwrap().session.clone().expect("came in");
    assert_eq!(s.via, Via::Nsenter);
    let by: Vec<u32> = s.by.iter().map(|l| l.pid).collect();
    assert_eq!(by, [41, 40]);
}

#[test]
fn a_pod_member_started_into_a_shared_pid_namespace_is_not_a_session() {
    let mut tb = table();
    docker_container(&mut tb);
    host(
        &mut tb,
        21,
        10,
        "runc",
        &["runc", "--root", "/r", "create", "member"],
    );
    tb.apply(&fork(
        800,
        task(21, &[800, 5], PIDNS, 80 * TICK, "runc:[2:INIT]"),
    ));
    assert!(tb.get(800).unwrap().container.is_some());
    assert!(tb.get(800).unwrap().session.is_none());
}

#[test]
fn host_processes_and_host_children_have_no_session() {
    let mut tb = table();
    host(&mut tb, 40, 1, "bash", &["bash"]);
    host(
        &mut tb,
        41,
        40,
        "nsenter",
        &["nsenter", "-t", "500", "-n", "ip"],
    );
    assert!(tb.get(41).unwrap().session.is_none());
}
