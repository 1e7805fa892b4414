//! Truth at scale: on a node of 50,000 processes, every whole-node view lists exactly what
//! /proc lists at a frozen moment — `ps`, `/v1/processes`, the largest container's tree,
//! `pods` and `zombies` — with equal host PID, PPID, ns PID chain, zombie or not and pid
//! namespace; also from an agent whose file-descriptor limit is 1,024. Host only (heavy on
//! a small machine, and it raises kernel.pid_max for the whole machine while it runs): the
//! VM matrix does not run this file.

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use crate::common::{agent::*, *};
use node::{Node, PidMax};
use serde_json::Value;

mod node;

/// Processes the test adds to the node (besides its spawners), and how they are laid out.
const BULK: (usize, usize) = (41_950, 200);
const BARE: (usize, usize) = (6_000, 100);
const POD_A: (usize, usize) = (1_000, 50);
const POD_B: (usize, usize) = (1_000, 0);
const POD_UID: &str = "3f0c2a4e-5d6b-4c1a-9e8f-7a6b5c4d3e2f";
/// kubelet's cgroupfs layout for the test's pod, at the hierarchy's root.
const POD_CGROUP: &str = "kubepods/besteffort/pod3f0c2a4e-5d6b-4c1a-9e8f-7a6b5c4d3e2f";
const CTR_A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const CTR_B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";

/// Not a test of its own: a spawner (this binary re-run with OBSERVER_TEST_HELPER=spawn and
/// OBSERVER_TEST_SPAWN=<processes>,<zombies>). Two workers fork half each (both cores),
/// their children either pause for good or exit at once and stay zombies (nobody reaps);
/// it prints `ready` when every fork is done, or `failed: ...`.
#[test]
fn helper_spawn() {
    if std::env::var("OBSERVER_TEST_HELPER").as_deref() != Ok("spawn") {
        return;
    }
    let spec = std::env::var("OBSERVER_TEST_SPAWN").unwrap();
    let (n, z) = spec.split_once(',').unwrap();
    let (n, z): (usize, usize) = (n.parse().unwrap(), z.parse().unwrap());
    let mut fds = [0; 2];
    // SAFETY: a valid array for pipe(2).
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    for w in 0..2 {
        let (share, zombies) = (n / 2 + (w * (n % 2)), z / 2 + (w * (z % 2)));
        // SAFETY: the child only forks, pauses, writes and exits (async-signal-safe).
        match unsafe { libc::fork() } {
            0 => unsafe {
                let ok = fork_leaves(share, zombies);
                libc::write(fds[1], [ok as u8].as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            },
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            _ => {}
        }
    }
    let mut got = [0u8; 2];
    let mut read = 0;
    while read < 2 {
        // SAFETY: reading into a valid buffer.
        let r = unsafe { libc::read(fds[0], got[read..].as_mut_ptr().cast(), 2 - read) };
        assert!(r > 0, "spawner workers vanished");
        read += r as usize;
    }
    if got == [1, 1] {
        println!("ready");
    } else {
        println!("failed: a fork failed ({got:?})");
    }
    loop {
        // SAFETY: plain pause.
        unsafe { libc::pause() };
    }
}

/// Forks `n` children: the first `zombies` exit at once, the others pause. False if a
/// fork failed.
unsafe fn fork_leaves(n: usize, zombies: usize) -> bool {
    unsafe {
        for i in 0..n {
            match libc::fork() {
                0 if i < zombies => libc::_exit(0),
                0 => loop {
                    libc::pause();
                },
                -1 => return false,
                _ => {}
            }
        }
        true
    }
}

/// One process of the test's cgroups as /proc shows it.
struct Entry {
    f: ProcFacts,
    cgroup: String,
}

/// Every process in the test's cgroups according to /proc (read while they are frozen).
fn proc_side(node: &Node) -> BTreeMap<u64, Entry> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter_map(|pid| {
            let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
            let cgroup = cg.lines().find_map(|l| l.strip_prefix("0::"))?.to_string();
            if !node.holds(&cgroup) {
                return None;
            }
            Some((
                pid,
                Entry {
                    f: proc_facts(pid)?,
                    cgroup,
                },
            ))
        })
        .collect()
}

/// Waits until the agent has applied, of every event type, as many events as the kernel
/// had emitted when this was called.
fn caught_up(agent: &Agent) {
    let status =
        || -> Value { serde_json::from_str(&http_body(&agent.http_get("/v1/status"))).unwrap() };
    let per_type = |st: &Value, k: &str| -> Vec<u64> {
        st["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[k].as_u64().unwrap())
            .collect()
    };
    let emitted = per_type(&status(), "emitted");
    eventually(Duration::from_secs(120), "the agent caught up", || {
        let applied = per_type(&status(), "applied");
        applied
            .iter()
            .zip(&emitted)
            .all(|(a, e)| a >= e)
            .then_some(())
    });
}

/// A process list (`ps -o json`, `/v1/processes`) against /proc: every process of the
/// test's cgroups listed, nothing listed that /proc does not have, equal facts.
fn list_vs_proc(
    list: &Value,
    node: &Node,
    ids: &HashSet<u64>,
    proc: &BTreeMap<u64, Entry>,
) -> Vec<String> {
    let by_pid: BTreeMap<u64, &Value> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| (p["pid"].as_u64().unwrap(), p))
        .collect();
    let mut diffs = Vec::new();
    for (pid, e) in proc {
        let Some(p) = by_pid.get(pid) else {
            diffs.push(format!(
                "{pid}: in /proc ({:?}, {}), not listed",
                e.f, e.cgroup
            ));
            continue;
        };
        let zombie = p["state"] == "Z" && p["zombie_age_s"].is_number();
        let mut d = Vec::new();
        if p["ppid"].as_u64() != Some(e.f.ppid) {
            d.push(format!("ppid {} vs {}", p["ppid"], e.f.ppid));
        }
        if ns_pids(p) != e.f.ns_pids {
            d.push(format!("ns_pids {:?} vs {:?}", ns_pids(p), e.f.ns_pids));
        }
        if zombie != (e.f.state == "Z") {
            d.push(format!(
                "state {} (exit seen: {}) vs {}",
                p["state"],
                p["zombie_age_s"].is_number(),
                e.f.state
            ));
        }
        if p["pidns"].as_u64() != Some(e.f.pidns) {
            d.push(format!("pidns {} vs {}", p["pidns"], e.f.pidns));
        }
        if p["live"] != true {
            d.push("live: false".into());
        }
        if !d.is_empty() {
            diffs.push(format!("{pid}: {} (listed vs /proc)", d.join(", ")));
        }
    }
    for (pid, p) in &by_pid {
        let ours = p["cgroup_id"].as_u64().is_some_and(|i| ids.contains(&i))
            || p["cgroup"].as_str().is_some_and(|c| node.holds(c));
        if ours && !proc.contains_key(pid) {
            diffs.push(format!(
                "{pid}: listed ({}), not in /proc's test cgroups",
                p["cgroup"]
            ));
        }
    }
    diffs
}

/// The test's pod in `pods -o json` against /proc: processes and zombies of the pod and of
/// each of its containers.
fn pods_vs_proc(pods: &Value, proc: &BTreeMap<u64, Entry>) -> Vec<String> {
    let Some(pod) = pods
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["uid"] == POD_UID || p["id"] == POD_UID)
    else {
        return vec![format!("pod {POD_UID} not listed: {pods}")];
    };
    let count = |under: &str| {
        let dir = format!("/{POD_CGROUP}{under}");
        let mine: Vec<&Entry> = proc
            .values()
            .filter(|e| e.cgroup.starts_with(&dir))
            .collect();
        (
            mine.len() as u64,
            mine.iter().filter(|e| e.f.state == "Z").count() as u64,
        )
    };
    let mut diffs = Vec::new();
    let mut check = |what: &str, v: &Value, (procs, zombies): (u64, u64)| {
        if v["processes"].as_u64() != Some(procs) || v["zombies"].as_u64() != Some(zombies) {
            diffs.push(format!(
                "{what}: {} processes, {} zombies listed; /proc {procs}, {zombies}",
                v["processes"], v["zombies"]
            ));
        }
    };
    let mut missing = Vec::new();
    check("the pod", pod, count(""));
    for id in [CTR_A, CTR_B] {
        match pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
        {
            Some(c) => check(
                &format!("container {}", &id[..12]),
                c,
                count(&format!("/{id}")),
            ),
            None => missing.push(format!("container {id} not in the pod: {pod}")),
        }
    }
    diffs.extend(missing);
    diffs
}

/// `zombies -o json` against /proc: the test's zombies, each with its /proc parent.
fn zombies_vs_proc(zombies: &Value, proc: &BTreeMap<u64, Entry>) -> Vec<String> {
    let listed: BTreeMap<u64, u64> = zombies
        .as_array()
        .unwrap()
        .iter()
        .map(|z| {
            (
                z["pid"].as_u64().unwrap(),
                z["parent_pid"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut diffs = Vec::new();
    for (pid, e) in proc {
        match (e.f.state == "Z", listed.get(pid)) {
            (true, None) => diffs.push(format!("{pid}: a zombie in /proc, not listed")),
            (true, Some(&p)) if p != e.f.ppid => {
                diffs.push(format!("{pid}: parent {p} listed, /proc {}", e.f.ppid));
            }
            (false, Some(_)) => diffs.push(format!("{pid}: listed, /proc state {}", e.f.state)),
            _ => {}
        }
    }
    diffs
}

/// GET over the agent's unix socket (the route the CLI uses), body only.
fn socket_get(agent: &Agent, path: &str) -> Value {
    let resp = unix_get(&agent.socket, path).unwrap();
    assert!(
        resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200"),
        "{path}: {}",
        resp.lines().next().unwrap_or_default()
    );
    serde_json::from_str(&http_body(&resp)).unwrap()
}

/// Panics with the first differences of each view that has any.
fn assert_views(
    agent: &Agent,
    node: &Node,
    proc: &BTreeMap<u64, Entry>,
    bare_pidns: u64,
    round: &str,
) {
    let ids: HashSet<u64> = node.dirs().iter().map(|d| inode(d)).collect();
    let timed = |what: &str, f: &dyn Fn() -> Vec<String>| -> Vec<String> {
        let t = Instant::now();
        let d = f();
        eprintln!(
            "scale: {round}: {what}: {:.2} s, {} differences",
            t.elapsed().as_secs_f64(),
            d.len()
        );
        d.into_iter().map(|x| format!("{what}: {x}")).collect()
    };
    let mut diffs = timed("ps", &|| {
        list_vs_proc(&agent.json(&["ps"]), node, &ids, proc)
    });
    diffs.extend(timed("/v1/processes", &|| {
        list_vs_proc(&socket_get(agent, "/v1/processes"), node, &ids, proc)
    }));
    diffs.extend(timed("tree of the largest container", &|| {
        let ctrs = agent.json(&["containers"]);
        let largest = ctrs
            .as_array()
            .unwrap()
            .iter()
            .max_by_key(|c| c["processes"].as_u64())
            .unwrap();
        assert_eq!(
            largest["pidns"].as_u64(),
            Some(bare_pidns),
            "the largest container is the test's: {largest}"
        );
        tree_vs_proc(&agent.json(&["tree", largest["id"].as_str().unwrap()]))
    }));
    diffs.extend(timed("pods", &|| {
        pods_vs_proc(&agent.json(&["pods"]), proc)
    }));
    diffs.extend(timed("zombies", &|| {
        zombies_vs_proc(&agent.json(&["zombies"]), proc)
    }));
    assert!(
        diffs.is_empty(),
        "{round}: {} differences with /proc, the first: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(40)]
    );
}

#[test]
fn every_view_lists_exactly_what_proc_lists_on_a_node_of_50000_processes() {
    if skipped_in_vm("50,000 processes and a raised pid_max: runs on the host") {
        return;
    }
    let t0 = Instant::now();
    let _pid_max = PidMax::raise(1 << 20);
    let mut node = Node::new();
    let agent = Agent::start(&[]);
    let pod = POD_CGROUP;
    node.spawn("bulk", &[], BULK);
    node.spawn("bare", &["/usr/bin/unshare", "--pid", "--fork"], BARE);
    node.spawn(&format!("{pod}/{CTR_A}"), &[], POD_A);
    node.spawn(&format!("{pod}/{CTR_B}"), &[], POD_B);
    let spawned = t0.elapsed();
    node.freeze();
    let proc = proc_side(&node);
    let bare_pidns = proc
        .values()
        .map(|e| e.f.ns_pids.len())
        .max()
        .and_then(|_| {
            proc.values()
                .find(|e| e.f.ns_pids.len() == 2)
                .map(|e| e.f.pidns)
        })
        .expect("the bare container's processes");
    eprintln!(
        "scale: {} processes in the test's cgroups ({} zombies), {} on the node, spawned in {:.1} s, read from /proc in {:.1} s",
        proc.len(),
        proc.values().filter(|e| e.f.state == "Z").count(),
        std::fs::read_dir("/proc").unwrap().flatten().filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok()).count(),
        spawned.as_secs_f64(),
        (t0.elapsed() - spawned).as_secs_f64()
    );
    assert!(proc.len() >= BULK.0 + BARE.0 + POD_A.0 + POD_B.0);
    caught_up(&agent);
    assert_views(
        &agent,
        &node,
        &proc,
        bare_pidns,
        "agent started before the processes",
    );
    drop(agent);
    // The same node seeded by an agent that may hold only 1,024 files open.
    let socket =
        std::env::temp_dir().join(format!("observer-test-scale-{}.sock", std::process::id()));
    let mut cmd = with_nofile(observer(), 1024);
    cmd.arg("agent");
    let t = Instant::now();
    let agent = Agent::launch(cmd, &socket, &[]).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "scale: agent with 1,024 files ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    agent.wait_startup_details();
    caught_up(&agent);
    assert_views(
        &agent,
        &node,
        &proc,
        bare_pidns,
        "agent with RLIMIT_NOFILE 1,024",
    );
    drop(agent);
    drop(node);
    eprintln!(
        "scale: the whole test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
