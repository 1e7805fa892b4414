//! Exec sessions: which processes came into a container from outside, how, and that their
//! descendants and history entries keep it.

use super::{exec, exit, fork, scanned, table, task, Table, HOST_NS, TICK};
use crate::{
    containers::{cgroup::Runtime, ContainerKey},
    host::scan::{Details, Scanned},
    table::sessions::{Seen, Via},
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

#[test]
fn an_exec_fork_and_exit_of_a_session_process_are_applied_with_its_session() {
    let mut tb = table();
    docker_container(&mut tb);
    host(&mut tb, 50, 10, "runc", &["runc", "exec", "abc"]);
    let root = task(50, &[600, 3], PIDNS, 60 * TICK, "runc:[2:INIT]");
    let fork_ev = fork(600, root);
    tb.apply(&fork_ev);
    // Its first exec (right after the fork that made the session) already carries it.
    let exec_ev = exec(600, root, "/bin/sh", &["sh"]);
    tb.apply(&exec_ev);
    for ev in [&fork_ev, &exec_ev] {
        let s = tb.session_of(ev).expect("in the session");
        assert!(s.is_root(600) && s.via == Via::DockerExec);
    }
    let init = task(20, &[500, 1], PIDNS, 30 * TICK, "sleep");
    let init_exec = exec(500, init, "/bin/sleep", &["sleep"]);
    tb.apply(&init_exec);
    assert!(tb.session_of(&init_exec).is_none(), "PID 1 is no session");
    // A late exit of an earlier holder of the PID is not the session's.
    let earlier = task(50, &[600, 3], PIDNS, 5 * TICK, "sh");
    assert!(tb
        .session_of(&exit(600, 600, earlier, 0, true, 70 * TICK))
        .is_none());
    let ended = exit(600, 600, root, 0, true, 70 * TICK);
    tb.apply(&ended);
    assert_eq!(
        tb.session_of(&ended).map(|s| s.root),
        Some(600),
        "a zombie's"
    );
}

/// Docker container `id` (one hex digit, repeated) as /proc shows its cgroup.
fn docker_cgroup(id: char) -> String {
    format!("/docker/{}", id.to_string().repeat(64))
}

/// A process as the start-up scan found it, with its command line.
fn seen(pid: u32, ppid: u32, pids: &[u32], cgroup: &str, comm: &str, argv: &[&str]) -> Scanned {
    let pidns = if pids.len() > 1 { PIDNS } else { HOST_NS };
    let mut s = scanned(pid, ppid, u64::from(pid) * TICK, cgroup, pids, pidns, 'S');
    s.comm = comm.into();
    s.cmdline = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    s
}

/// The details pass after a seed of `scans`: what marks the sessions found then.
fn details(tb: &mut Table, scans: &[Scanned]) {
    let found = scans
        .iter()
        .map(|s| Details {
            pid: s.pid,
            start_ns: s.start_time_ns,
            argv: s.cmdline.clone(),
            exe: "/bin/x".into(),
            ns: s.ns,
            cgroup_id: 0,
        })
        .collect();
    tb.fill_details(found);
}

fn seed_with_details(tb: &mut Table, scans: &[Scanned]) {
    tb.seed(scans, 0);
    details(tb, scans);
}

const SHIM: [&str; 5] = ["containerd-shim-runc-v2", "-namespace", "moby", "-id", "a"];

#[test]
fn sessions_that_began_before_the_seed_are_deduced_from_what_adopted_them_then() {
    let (a, b) = (docker_cgroup('a'), docker_cgroup('b'));
    let scans = [
        seen(10, 1, &[10], "/", "containerd-shim", &SHIM),
        seen(11, 1, &[11], "/", "conmon", &["/usr/bin/conmon", "-c", "b"]),
        seen(40, 1, &[40], "/", "bash", &["bash"]),
        seen(
            41,
            40,
            &[41],
            "/",
            "nsenter",
            &["nsenter", "-t", "50", "-a", "sleep"],
        ),
        seen(50, 10, &[50, 1], &a, "sleep", &["sleep", "1000"]),
        seen(51, 50, &[51, 2], &a, "sh", &["sh"]),
        seen(
            60,
            10,
            &[60, 3],
            &a,
            "sh",
            &["sh", "-c", "sleep 600 & wait"],
        ),
        seen(61, 60, &[61, 4], &a, "sleep", &["sleep", "600"]),
        seen(70, 41, &[70, 5], "/", "sleep", &["sleep", "1000"]),
        // A pod member in the same pid namespace (no PID 1 of its own), then a podman
        // exec into it.
        seen(80, 11, &[80, 6], &b, "sleep", &["sleep", "1000"]),
        seen(90, 11, &[90, 7], &b, "sh", &["sh"]),
    ];
    let mut tb = table();
    seed_with_details(&mut tb, &scans);
    let via = |tb: &Table, pid| tb.get(pid).unwrap().session.as_ref().map(|s| s.via);
    for (pid, why) in [(50, "PID 1"), (51, "forked by PID 1"), (80, "a pod member")] {
        assert_eq!(via(&tb, pid), None, "{pid}: {why}");
    }
    assert_eq!(via(&tb, 60), Some(Via::DockerExec));
    assert_eq!(via(&tb, 70), Some(Via::Nsenter));
    assert_eq!(via(&tb, 90), Some(Via::PodmanExec));
    let s = tb.get(60).unwrap().session.clone().unwrap();
    assert_eq!((s.root, s.at_ns, s.seen), (60, 60 * TICK, Seen::Startup));
    assert_eq!(s.by.iter().map(|l| l.pid).collect::<Vec<_>>(), [10]);
    let child = tb.get(61).unwrap().session.clone().expect("inherited");
    assert!(std::sync::Arc::ptr_eq(&s, &child));
    let by: Vec<u32> = tb
        .get(70)
        .unwrap()
        .session
        .as_ref()
        .unwrap()
        .by
        .iter()
        .map(|l| l.pid)
        .collect();
    assert_eq!(by, [41, 40]);
    // A child forked after the seed inherits it.
    tb.apply(&fork(62, task(60, &[62, 8], PIDNS, 100 * TICK, "sh")));
    assert_eq!(via(&tb, 62), Some(Via::DockerExec));
}

#[test]
fn what_starts_between_the_seed_and_the_details_pass_is_judged_by_its_events_only() {
    let a = docker_cgroup('a');
    let scans = [
        seen(10, 1, &[10], "/", "containerd-shim", &SHIM),
        seen(50, 10, &[50, 1], &a, "sleep", &["sleep", "1000"]),
    ];
    let mut tb = table();
    tb.seed(&scans, 0);
    // A pod member started into the pid namespace by `runc create`, adopted by the shim
    // when runc ends; and a `runc exec` whose root the shim adopts too.
    host(&mut tb, 54, 10, "runc", &["runc", "create", "m"]);
    tb.apply(&fork(800, task(54, &[800, 5], PIDNS, 80 * TICK, "sleep")));
    host(&mut tb, 55, 10, "runc", &["runc", "exec", "a"]);
    tb.apply(&fork(600, task(55, &[600, 3], PIDNS, 60 * TICK, "sh")));
    for pid in [54, 55] {
        let runc = task(10, &[pid], HOST_NS, u64::from(pid) * TICK, "runc");
        tb.apply(&exit(pid, pid, runc, 0, true, 90 * TICK));
    }
    tb.resolve_pending(|pid| Some((10, u64::from(pid) / 10)));
    details(&mut tb, &scans);
    assert!(tb.get(800).unwrap().session.is_none(), "not a session");
    let s = tb.get(600).unwrap().session.clone().expect("came in");
    assert_eq!((s.via, s.seen), (Via::DockerExec, Seen::Entry));
}

/// A second pid namespace, nested in PIDNS.
const INNER_PIDNS: u32 = 4026532400;

/// A process of docker container `a`'s, as the start-up scan found it, in `INNER_PIDNS`
/// (made by a process of the container) when `pids` has three levels.
fn seen_nested(pid: u32, ppid: u32, pids: &[u32], comm: &str, argv: &[&str]) -> Scanned {
    let mut s = seen(pid, ppid, pids, &docker_cgroup('a'), comm, argv);
    if pids.len() > 2 {
        s.ns[observer_common::NS_PID] = INNER_PIDNS;
    }
    s
}

#[test]
fn a_container_process_forking_into_a_pid_namespace_of_its_own_is_no_session_whatever_its_name() {
    // Inside container a: `unshare -pf sleep` (PID 1 of the inner namespace, 53), then a
    // process named nsenter (52) forks into it (54) — the name says nsenter, but nothing
    // came in from outside the container.
    let nsenter = ["nsenter", "-t", "53", "-p", "sh"];
    let scans = [
        seen(10, 1, &[10], "/", "containerd-shim", &SHIM),
        seen_nested(50, 10, &[50, 1], "sleep", &["sleep", "1000"]),
        seen_nested(52, 50, &[52, 2], "nsenter", &nsenter),
        seen_nested(53, 50, &[53, 3, 1], "sleep", &["sleep", "1000"]),
        seen_nested(54, 52, &[54, 4, 2], "sh", &["sh"]),
    ];
    let mut tb = table();
    seed_with_details(&mut tb, &scans);
    assert!(tb.get(54).unwrap().container.is_some());
    assert!(tb.get(54).unwrap().session.is_none(), "seen at start-up");
    // The same, live: its fork into the namespace is no entry either.
    tb.apply(&fork(
        55,
        task(52, &[55, 5, 3], INNER_PIDNS, 90 * TICK, "nsenter"),
    ));
    assert_eq!(tb.get(55).unwrap().container, tb.get(52).unwrap().container);
    assert!(tb.get(55).unwrap().session.is_none(), "seen as it came in");
}
