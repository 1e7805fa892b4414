//! The process model against /proc, with a real agent: a scenario in a new pid namespace
//! (nested forks, a double-fork orphan, a parent that never reaps, an exec chain, a
//! multi-threaded process, setns'd processes, processes that live a millisecond), then
//! `observer tree` compared field by field with /proc. Run as root.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::common::{agent::*, *};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// Not a test of its own: the multi-threaded process of the scenario (this binary, re-run
/// with OBSERVER_TEST_HELPER=threads) — 3 extra threads, then sleep.
#[test]
fn helper_threads() {
    if std::env::var("OBSERVER_TEST_HELPER").as_deref() != Ok("threads") {
        return;
    }
    for _ in 0..3 {
        std::thread::spawn(|| std::thread::sleep(Duration::from_secs(3600)));
    }
    std::thread::sleep(Duration::from_secs(3600));
}

struct Scenario {
    unshare: Child,
    init: u64,
    ready: std::path::PathBuf,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        unsafe { libc::kill(self.init as i32, libc::SIGKILL) };
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        let _ = std::fs::remove_file(&self.ready);
    }
}

/// Starts the scenario with PID 1 of a new pid namespace as the reaper of its orphans.
fn scenario() -> Scenario {
    let ready = std::env::temp_dir().join(format!("observer-tree-ready-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let me = std::env::current_exe().unwrap();
    let script = format!(
        r#"
sh -c 'sleep 1000; true' &
sh -c 'sleep 1001 & exit 0'
sh -c 'sleep 0.1 & exec sleep 1002' &
sh -c 'exec sh -c "exec sleep 1003"' &
OBSERVER_TEST_HELPER=threads {me} --exact tree::helper_threads --test-threads=1 --nocapture >/dev/null 2>&1 &
i=0; while [ $i -lt 50 ]; do /bin/true; i=$((i+1)); done
sleep 0.3
echo ready > {ready}
wait
"#,
        me = me.display(),
        ready = ready.display()
    );
    let unshare = Command::new("/usr/bin/unshare")
        .args(["--pid", "--fork", "/bin/sh", "-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .expect("unshare");
    let up = unshare.id();
    let init: u64 = eventually(T, "the namespace's PID 1", || {
        let kids = std::fs::read_to_string(format!("/proc/{up}/task/{up}/children")).ok()?;
        kids.split_whitespace().next()?.parse().ok()
    });
    let s = Scenario {
        unshare,
        init,
        ready: ready.clone(),
    };
    eventually(T, "the scenario to be ready", || {
        ready.exists().then_some(())
    });
    // The background jobs run in their own time on a loaded machine (the threaded helper
    // is this whole test binary starting): until /proc has every one as the tests expect.
    let pidns = ns_inode(init as u32, "pid");
    eventually(T, "the scenario's processes in /proc", || {
        let procs: Vec<(u64, String, ProcFacts)> = pids_in_pidns(pidns)
            .into_iter()
            .filter_map(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                Some((p, cmd.trim_end().to_string(), proc_facts(p)?))
            })
            .collect();
        let by = |c: &str| procs.iter().find(|(_, cmd, _)| cmd == c);
        let reaper = by("sleep 1002")?.0;
        let complete = ["sleep 1000", "sleep 1001", "sleep 1003"]
            .iter()
            .all(|c| by(c).is_some())
            && procs
                .iter()
                .any(|(_, _, f)| f.state == "Z" && f.ppid == reaper)
            && procs
                .iter()
                .any(|(_, cmd, f)| cmd.contains("helper_threads") && f.threads >= 4);
        complete.then_some(())
    });
    s
}

fn by_cmd<'a>(tree: &'a Value, cmd: &str) -> &'a Value {
    tree["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["cmdline"] == cmd)
        .unwrap_or_else(|| {
            // Each process on a line: the whole tree is longer than a guest's log keeps.
            let lines: Vec<String> = tree["processes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| format!("{} {} {} {}", p["pid"], p["comm"], p["cmdline"], p["argv"]))
                .collect();
            panic!("no `{cmd}` in the tree:\n{}", lines.join("\n"))
        })
}

#[test]
fn tree_of_a_pid_namespace_equals_proc_and_names_zombies_and_orphans() {
    let agent = Agent::start(&[]);
    let s = scenario();
    let init = s.init.to_string();
    let tree = tree_equal_to_proc(&agent, &init, T);

    let c = &tree["container"];
    assert_eq!(c["runtime"], "bare");
    assert_eq!(c["pidns"].as_u64().unwrap(), ns_inode(s.init as u32, "pid"));
    assert_eq!(c["init_pid"].as_u64(), Some(s.init));
    assert_eq!(
        c["shim_pid"].as_u64(),
        Some(s.unshare.id() as u64),
        "unshare is the host parent of PID 1"
    );

    let procs = tree["processes"].as_array().unwrap();
    let pid1 = procs
        .iter()
        .find(|p| p["pid"].as_u64() == Some(s.init))
        .unwrap();
    assert_eq!(
        (pid1["ns_pid"].as_u64(), pid1["ns_ppid"].as_u64()),
        (Some(1), Some(0))
    );

    // Nested forks: PID 1 → sh → sleep 1000.
    let nested = by_cmd(&tree, "sleep 1000");
    let nested_parent = procs.iter().find(|p| p["pid"] == nested["ppid"]).unwrap();
    assert_eq!(nested_parent["cmdline"], "sh -c sleep 1000; true");
    assert_eq!(nested_parent["ppid"].as_u64(), Some(s.init));

    // Double fork: the orphan was adopted by the namespace's PID 1, from its exited parent.
    let orphan = by_cmd(&tree, "sleep 1001");
    assert_eq!(orphan["ppid"].as_u64(), Some(s.init));
    assert_eq!(orphan["adopter"], "namespace_init", "{orphan:#}");
    let from = orphan["adopted_from"].as_u64().unwrap();
    assert!(
        proc_facts(from).is_none_or(|f| f.comm != "sh"),
        "the original parent has exited"
    );

    // The parent that never reaps: exactly one zombie, its parent named.
    let zombies: Vec<&Value> = procs.iter().filter(|p| p["state"] == "Z").collect();
    assert_eq!(zombies.len(), 1, "{tree:#}");
    let z = zombies[0];
    let reaper = by_cmd(&tree, "sleep 1002");
    assert_eq!(z["ppid"], reaper["pid"]);
    assert!(z["zombie_age_s"].as_f64().unwrap() >= 0.0);
    assert_eq!(z["exit_code"], 0);
    assert_eq!(c["zombies"], 1, "{:#}", agent.json(&["ps", "-c", &init]));

    // Exec chain: one process, comm and argv of the last image.
    let chained = by_cmd(&tree, "sleep 1003");
    assert_eq!(chained["comm"], "sleep");
    assert_eq!(chained["ppid"].as_u64(), Some(s.init));

    // The multi-threaded process: 4 threads, one entry.
    // (libtest adds a thread of its own to the helper's 3 and its main thread)
    let threaded = procs
        .iter()
        .find(|p| p["threads"].as_u64() >= Some(4))
        .expect("the multi-threaded helper");
    assert!(threaded["cmdline"]
        .as_str()
        .unwrap()
        .contains("helper_threads"));

    // 50 processes that lived a millisecond each were counted in the container (once the
    // agent applied their events, which a tree equal to /proc does not wait for).
    let counted = last_until(
        T,
        || agent.json(&["tree", &init])["container"].clone(),
        |c| {
            c["forks"].as_u64() >= Some(55)
                && c["exits"].as_u64() >= Some(50)
                && c["execs"].as_u64() >= Some(50)
        },
    );
    assert!(
        counted["forks"].as_u64().unwrap() >= 55,
        "forks {}",
        counted["forks"]
    );
    assert!(
        counted["exits"].as_u64().unwrap() >= 50,
        "exits {}",
        counted["exits"]
    );
    assert!(
        counted["execs"].as_u64().unwrap() >= 50,
        "execs {}",
        counted["execs"]
    );

    // The text view names the zombie's parent and marks the orphan.
    let (code, text, _) = agent.cli(&["tree", &init]);
    assert_eq!(code, 0);
    assert!(
        text.contains(&format!("not reaped by sleep ({})", reaper["pid"])),
        "{text}"
    );
    assert!(
        text.contains(&format!("adopted from {from} by namespace_init")),
        "{text}"
    );
    assert!(!text.contains("\x1b["), "no colours when not on a terminal");

    // The same container by its pid-ns inode and by any member's host pid.
    for reference in [
        c["pidns"].to_string(),
        z["pid"].to_string(),
        orphan["pid"].to_string(),
    ] {
        assert_eq!(
            agent.json(&["tree", &reference])["container"]["id"],
            c["id"],
            "tree {reference}"
        );
    }
}

#[test]
fn processes_entered_with_setns_join_the_container_with_an_outside_parent() {
    let agent = Agent::start(&[]);
    let s = scenario();
    let mut entered = Command::new("nsenter")
        .args([
            "-t",
            &s.init.to_string(),
            "--pid",
            "sh",
            "-c",
            "exec sleep 1005",
        ])
        .spawn()
        .expect("nsenter");
    let nsenter_pid = entered.id() as u64;
    let tree = tree_equal_to_proc(&agent, &s.init.to_string(), T);
    let p = eventually(T, "the setns'd sleep in the tree", || {
        let t = agent.json(&["tree", &s.init.to_string()]);
        t["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["cmdline"] == "sleep 1005")
            .cloned()
    });
    assert_eq!(
        p["ppid"].as_u64(),
        Some(nsenter_pid),
        "host parent is nsenter, outside the container"
    );
    assert_eq!(p["ns_ppid"], 0);
    assert!(p["ns_pid"].as_u64().unwrap() > 1);
    let outside: Vec<u64> = agent.json(&["tree", &s.init.to_string()])["outside_parents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["pid"].as_u64().unwrap())
        .collect();
    assert!(outside.contains(&nsenter_pid), "{outside:?}");
    assert!(tree["container"]["runtime"] == "bare");
    let _ = entered.kill();
    let _ = entered.wait();
}

#[test]
fn ps_zombies_and_containers_views_agree_with_proc() {
    let agent = Agent::start(&[]);
    let s = scenario();
    let tree = tree_equal_to_proc(&agent, &s.init.to_string(), T);
    let id = tree["container"]["id"].as_str().unwrap().to_string();

    let ps = agent.json(&["ps", "-c", &s.init.to_string()]);
    let mut ps_pids: Vec<u64> = ps
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    ps_pids.sort_unstable();
    assert_eq!(
        ps_pids,
        pids_in_pidns(tree["container"]["pidns"].as_u64().unwrap())
    );

    let zombies = agent.json(&["zombies"]);
    let mine: Vec<&Value> = zombies
        .as_array()
        .unwrap()
        .iter()
        .filter(|z| z["container"] == Value::String(id.clone()))
        .collect();
    assert_eq!(mine.len(), 1, "{zombies:#}");
    assert_eq!(mine[0]["parent_comm"], "sleep");
    assert_eq!(mine[0]["parent_state"], "S");

    let containers = agent.json(&["containers"]);
    let c = containers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .expect("listed");
    assert_eq!(c["zombies"], 1, "{ps:#}");
    assert_eq!(
        c["processes"].as_u64().unwrap() as usize,
        ps_pids.len(),
        "{c:#}\n{ps:#}"
    );

    let (code, text, _) = agent.cli(&["ps", "-c", &s.init.to_string(), "--no-headers"]);
    assert_eq!(code, 0);
    assert_eq!(text.lines().count(), ps_pids.len());
    assert!(!text.contains("PID"));
}

#[test]
fn unknown_or_ambiguous_container_is_a_clear_error_listing_candidates() {
    let agent = Agent::start(&[]);
    let s = scenario();
    tree_equal_to_proc(&agent, &s.init.to_string(), T);
    let (code, _, err) = agent.cli(&["tree", "no-such-container"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no container matches `no-such-container`"),
        "{err}"
    );
    assert!(err.contains("candidates:") && err.contains("bare"), "{err}");
    // Bare container ids are pid-ns inodes, all starting with 40265: ambiguous unless unique.
    let second = scenario();
    tree_equal_to_proc(&agent, &second.init.to_string(), T);
    let (code, _, err) = agent.cli(&["tree", "40265"]);
    assert_eq!(code, 1);
    assert!(err.contains("matches several containers"), "{err}");
}

#[test]
fn without_an_agent_views_fall_back_to_a_proc_scan_and_say_so() {
    let s = scenario();
    let out = observer()
        .args([
            "tree",
            &s.init.to_string(),
            "-o",
            "json",
            "--socket",
            "/nonexistent/observer.sock",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent running"));
    let tree: Value = serde_json::from_slice(&out.stdout).unwrap();
    let diffs = tree_vs_proc(&tree);
    assert!(diffs.is_empty(), "{diffs:?}");
    assert_eq!(tree["container"]["runtime"], "bare");
    assert_eq!(
        tree["container"]["shim_pid"].as_u64(),
        Some(s.unshare.id() as u64)
    );
}

#[test]
fn processes_found_at_start_up_carry_every_namespace_their_cgroup_id_and_zombies_their_status() {
    // Before the agent starts: a sleep that never reaps its child, which exited with 3.
    let mut child = Command::new("sh")
        .args(["-c", "(exit 3) & exec sleep 1000"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let zombie: u32 = eventually(T, "the unreaped child", || {
        let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        let z: u32 = kids.split_whitespace().next()?.parse().ok()?;
        (proc_facts(z as u64)?.state == "Z").then_some(z)
    });
    let agent = Agent::start(&[]);
    // Every namespace inode /proc has, shortly after ready (read in the background).
    let want: serde_json::Map<String, Value> = observer_common::NS_NAMES
        .iter()
        .map(|n| {
            use std::os::unix::fs::MetadataExt;
            let ino = std::fs::metadata(format!("/proc/{pid}/ns/{n}")).map(|m| m.ino());
            (n.to_string(), ino.ok().into())
        })
        .collect();
    let mut last = Value::Null;
    eventually(T, "the seeded process's namespaces", || {
        let ps = agent.json(&["ps"]);
        let p = ps.as_array()?.iter().find(|p| p["pid"] == pid)?.clone();
        last = p["ns"].clone();
        (p["ns"] == Value::Object(want.clone())).then_some(())
    });
    assert_ne!(last, Value::Null);
    // Its cgroup id: the inode of its cgroup2 directory, as the kernel side reads it.
    let v2 = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = v2.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let want_id = inode(&cgroup2_mount().join(path.trim_start_matches('/')));
    let ps = agent.json(&["ps"]);
    let p = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap();
    assert_eq!(p["cgroup_id"], want_id, "{p}");
    let ps = agent.json(&["ps"]);
    let z = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == zombie)
        .unwrap_or_else(|| panic!("zombie {zombie} not listed"));
    assert_eq!(
        (&z["state"], &z["exit_code"]),
        (&Value::from("Z"), &Value::from(3)),
        "{z}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
