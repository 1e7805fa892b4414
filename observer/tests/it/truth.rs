//! Truth under workloads nobody here wrote: process facts come from the process (threads
//! that enter other namespaces do not rewrite it), and views never drop a live process
//! (past the file-descriptor limit, each is still listed). Each compared with /proc. Run as
//! root; also in the kernel matrix.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::common::{agent::*, *};

const T: Duration = Duration::from_secs(30);

/// Not a test of its own: a Go-style process (this binary, re-run with
/// OBSERVER_TEST_HELPER=ns_threads and OBSERVER_TEST_TARGET=<host pid>) whose threads come
/// and go for as long as it runs: of each round's 12, four unshare a network namespace and
/// four setns into the target's network and UTS namespaces, as Go runtimes do with a
/// locked OS thread (CNI plugins, containerd, dockerd).
#[test]
fn helper_ns_threads() {
    if std::env::var("OBSERVER_TEST_HELPER").as_deref() != Ok("ns_threads") {
        return;
    }
    let target: u32 = std::env::var("OBSERVER_TEST_TARGET")
        .unwrap()
        .parse()
        .unwrap();
    loop {
        let round: Vec<_> = (0..12)
            .map(|i| {
                std::thread::spawn(move || {
                    use std::os::fd::AsRawFd;
                    let enter = |ns: &str, flag: i32| {
                        let f = std::fs::File::open(format!("/proc/{target}/ns/{ns}")).unwrap();
                        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), flag) }, 0, "setns {ns}");
                    };
                    match i % 3 {
                        0 => assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0),
                        1 => {
                            enter("net", libc::CLONE_NEWNET);
                            enter("uts", libc::CLONE_NEWUTS);
                        }
                        _ => {}
                    }
                    std::thread::sleep(Duration::from_millis(50 + 20 * i as u64));
                })
            })
            .collect();
        for t in round {
            t.join().unwrap();
        }
    }
}

/// The process's facts as /proc shows them (from its leader): NSpid chain, pid namespace
/// and every namespace inode; differences with the agent's `ps` entry for `pid`.
fn facts_vs_proc(agent: &Agent, pid: u32) -> Vec<String> {
    let ps = agent.json(&["ps"]);
    let Some(p) = ps.as_array().unwrap().iter().find(|p| p["pid"] == pid) else {
        return vec![format!("{pid} is not listed by ps")];
    };
    let mut diffs = Vec::new();
    let f = proc_facts(pid.into()).expect("the process is alive");
    let listed: Vec<u64> = p["ns_pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    if listed != f.ns_pids {
        diffs.push(format!("ns_pids {listed:?}, /proc {:?}", f.ns_pids));
    }
    if p["pidns"].as_u64() != Some(f.pidns) {
        diffs.push(format!("pidns {}, /proc {}", p["pidns"], f.pidns));
    }
    for ns in ["pid", "mnt", "uts", "ipc", "net", "user", "cgroup"] {
        let proc_ino = std::fs::metadata(format!("/proc/{pid}/ns/{ns}"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        if p["ns"][ns].as_u64() != Some(proc_ino) {
            diffs.push(format!("ns {ns} {}, /proc {proc_ino}", p["ns"][ns]));
        }
    }
    diffs
}

#[test]
fn threads_entering_other_namespaces_leave_their_process_as_proc_shows_it() {
    let agent = Agent::start(&[]);
    // What the threads enter: a "container" with its own net, uts and pid namespaces.
    let ctr = Command::new("/usr/bin/unshare")
        .args(["--net", "--uts", "--pid", "--fork", "sleep", "1000"])
        .spawn()
        .expect("unshare");
    let up = ctr.id();
    let mut guard = Kids(vec![ctr], vec![]);
    let target: u32 = eventually(T, "the container's PID 1", || {
        let kids = std::fs::read_to_string(format!("/proc/{up}/task/{up}/children")).ok()?;
        kids.split_whitespace().next()?.parse().ok()
    });
    guard.1.push(target);
    let app = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "truth::helper_ns_threads",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("OBSERVER_TEST_HELPER", "ns_threads")
        .env("OBSERVER_TEST_TARGET", target.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = app.id();
    guard.0.push(app);
    // Listed once the agent applied its fork and exec (a loaded machine may take a while).
    eventually(T, "the workload in ps", || {
        let ps = agent.json(&["ps"]);
        ps.as_array()?.iter().any(|p| p["pid"] == pid).then_some(())
    });
    // Its threads are in the other namespaces most of the time; look across rounds.
    let mut in_other_ns = 0;
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(250));
        let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let leader_net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        in_other_ns += tasks
            .iter()
            .filter(|t| {
                std::fs::read_link(format!("/proc/{pid}/task/{t}/ns/net"))
                    .is_ok_and(|n| n != leader_net)
            })
            .count();
        let diffs = facts_vs_proc(&agent, pid);
        assert!(diffs.is_empty(), "process {pid} against /proc: {diffs:#?}");
    }
    assert!(
        in_other_ns > 0,
        "the workload's threads never were in other namespaces"
    );
}

/// Children killed and reaped when the test ends, however it ends, and the pid-namespace
/// inits they started (killing an init ends its namespace).
struct Kids(Vec<Child>, Vec<u32>);

impl Drop for Kids {
    fn drop(&mut self) {
        for pid in &self.1 {
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// 700 processes (in a pid namespace of their own), an agent whose file-descriptor limit is
/// 256: `ps`, `tree` and the one-shot CLI under the same limit list every one of them, live.
#[test]
fn views_list_every_process_past_the_file_descriptor_limit() {
    const N: usize = 700;
    let script = format!("i=0; while [ $i -lt {N} ]; do sleep 1000 & i=$((i+1)); done; wait");
    let ctr = Command::new("/usr/bin/unshare")
        .args(["--pid", "--fork", "/bin/sh", "-c", &script])
        .spawn()
        .expect("unshare");
    let up = ctr.id();
    let mut guard = Kids(vec![ctr], vec![]);
    let init: u32 = eventually(T, "the namespace's PID 1", || {
        let kids = std::fs::read_to_string(format!("/proc/{up}/task/{up}/children")).ok()?;
        kids.split_whitespace().next()?.parse().ok()
    });
    guard.1.push(init);
    let pidns = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(format!("/proc/{init}/ns/pid")).unwrap(),
    );
    // Every one forked and exec'd: a view read while a shell still becomes `sleep` differs
    // from /proc read a moment later.
    eventually(T, "all the namespace's processes", || {
        let pids = pids_in_pidns(pidns);
        let sleeping = pids
            .iter()
            .filter(|&&p| proc_facts(p).is_some_and(|f| f.comm == "sleep"))
            .count();
        (pids.len() == N + 1 && sleeping == N).then_some(())
    });
    let socket =
        std::env::temp_dir().join(format!("observer-test-truth-{}.sock", std::process::id()));
    let mut cmd = with_nofile(observer(), 256);
    cmd.arg("agent");
    let agent = Agent::launch(cmd, &socket, &[]).unwrap_or_else(|e| panic!("{e}"));
    for round in 0..2 {
        // Twice: the second view goes through the files the first one kept open.
        let tree = agent.json(&["tree", &pidns.to_string()]);
        let diffs = tree_vs_proc(&tree);
        assert!(
            diffs.is_empty(),
            "round {round}: tree against /proc: {diffs:#?}"
        );
        let ps = agent.json(&["ps"]);
        let listed: std::collections::HashSet<u64> = ps
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["pid"].as_u64().unwrap())
            .collect();
        let missing: Vec<u64> = pids_in_pidns(pidns)
            .into_iter()
            .filter(|p| !listed.contains(p))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: ps left out {} processes",
            missing.len()
        );
        let not_live = ps
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["live"] != true)
            .count();
        assert_eq!(
            not_live, 0,
            "round {round}: every read should succeed within the limit"
        );
    }
    // The one-shot CLI (no agent) under the same limit.
    let out = with_nofile(observer(), 256)
        .args([
            "tree",
            &pidns.to_string(),
            "-o",
            "json",
            "--socket",
            "/nonexistent/observer.sock",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let tree: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let diffs = tree_vs_proc(&tree);
    assert!(diffs.is_empty(), "one-shot tree against /proc: {diffs:#?}");
}

/// Found by `cargo xtask torture`: a zombie's pid written to another cgroup's
/// `cgroup.procs`. The write succeeds and the kernel reports the attach, but it skips an
/// exiting task: /proc keeps the zombie where it was, and so must the agent (it showed the
/// cgroup the zombie was sent to).
#[test]
fn a_zombie_written_to_another_cgroup_stays_where_proc_shows_it() {
    let agent = Agent::start(&[]);
    let (from, to) = (TestCgroup::new("zombie-from"), TestCgroup::new("zombie-to"));
    // `sleep 0` exits at once; its parent (exec'd into `sleep 1000`) never reaps it.
    let script = format!(
        "echo 0 > {}/cgroup.procs; exec sh -c 'sleep 0 & exec sleep 1000'",
        from.path.display()
    );
    let parent = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    let ppid = parent.id();
    let _kids = Kids(vec![parent], vec![]);
    let zombie = eventually(T, "the zombie", || {
        let z = first_child(ppid)?;
        (proc_facts(z.into())?.state == "Z").then_some(z)
    });
    std::fs::write(to.path.join("cgroup.procs"), zombie.to_string())
        .expect("the kernel accepts a zombie's pid");
    // A live process moved after it: once the agent shows that move, it has applied the
    // zombie's attach event too (events are applied in order).
    std::fs::write(to.path.join("cgroup.procs"), ppid.to_string()).unwrap();
    let ps = eventually(T, "the parent's move", || {
        let ps = agent.json(&["ps"]);
        let moved = ps
            .as_array()?
            .iter()
            .any(|p| p["pid"] == ppid && p["cgroup_id"].as_u64() == Some(to.inode()));
        moved.then_some(ps)
    });
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{zombie}/cgroup")).unwrap();
    assert!(
        proc_cgroup.contains(from.path.file_name().unwrap().to_str().unwrap()),
        "/proc: the zombie stayed: {proc_cgroup}"
    );
    let z = ps.as_array().unwrap().iter().find(|p| p["pid"] == zombie);
    let z = z.unwrap_or_else(|| panic!("zombie {zombie} not listed"));
    assert_eq!(
        z["cgroup_id"].as_u64(),
        Some(from.inode()),
        "the agent moved the zombie; /proc: {proc_cgroup}; agent: {z}"
    );
}
