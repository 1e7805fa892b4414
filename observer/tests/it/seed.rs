//! The two start-up seeds give the same table: one agent seeded from /proc (`--seed proc`,
//! then its background pass for namespaces and cgroup ids), one from the kernel's task
//! iterator (`--seed iterator`), with a launcher container (its own pid namespace, nested
//! processes, a zombie its parent never reaps) and a host zombie running. Every process
//! both saw, by (pid, start time), must be described field by field alike; and the
//! iterator's table must carry every namespace and the cgroup id already at ready, before
//! any background pass. Runs on the host and on every kernel of the VM matrix.

use std::{collections::BTreeMap, process::Command, time::Duration};

use crate::common::{agent::*, *};
use serde_json::Value;

struct Ctr(&'static str);

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = observer().args(["rm", "-f", self.0]).output();
    }
}

/// A host process killed and reaped on drop (also when the test fails).
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status(agent: &Agent) -> Value {
    serde_json::from_str(&http_body(&agent.http_get("/v1/status"))).unwrap()
}

/// Fields that describe a process rather than its moment: what both seeds must agree on.
/// Left out: times and usage (ages, CPU, RSS), the live state letter and thread count (the
/// views read them from /proc at the request), and a kernel thread's comm (/proc appends a
/// kworker's current workqueue to it).
fn facts(p: &Value) -> Value {
    let mut f = p.as_object().unwrap().clone();
    for k in [
        "age_s",
        "zombie_age_s",
        "cpu_s",
        "rss_bytes",
        "start_time_ns",
        "threads",
    ] {
        f.remove(k);
    }
    if p["state"] != "Z" {
        f.remove("state");
    }
    if p["ppid"] == 2 || p["pid"] == 2 {
        f.remove("comm");
    }
    Value::Object(f)
}

/// A zombie has released its namespaces (but for its pid and user ones) and /proc shows
/// none of them, nor its cgroup id; the kernel still has the user namespace (its
/// credentials) and cgroup, and the iterator reads them. For zombies the iterator may know
/// more than /proc, never otherwise: what /proc lacks is left out of the iterator's facts.
fn known_to_proc_only(proc: &Value, iter: &mut Value) {
    let it = iter.as_object_mut().unwrap();
    it.retain(|k, _| proc.get(k).is_some());
    if let (Some(pns), Some(ins)) = (proc["ns"].as_object(), it.get_mut("ns")) {
        for (name, v) in ins.as_object_mut().unwrap() {
            if pns.get(name).is_none_or(|p| p.is_null()) {
                *v = Value::Null;
            }
        }
    }
}

/// (pid, start in clock ticks) → process, from `observer ps -o json`.
fn by_identity(ps: &Value) -> BTreeMap<(u64, u64), Value> {
    let tick = 1_000_000_000 / (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as u64;
    ps.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let key = (
                p["pid"].as_u64().unwrap(),
                p["start_time_ns"].as_u64().unwrap() / tick,
            );
            (key, p.clone())
        })
        .collect()
}

/// Whether /proc lets root read this process's namespaces (this machine's PID 1 does not).
fn ns_readable(pid: u64) -> bool {
    std::fs::metadata(format!("/proc/{pid}/ns/pid")).is_ok()
}

/// Whether the test's processes are as it needs them, read from /proc: the host shell's
/// child a zombie, the container's `sleep 0.1` a zombie under the `sleep 1000` its shell
/// exec'd (in the container's pid namespace), and its `sleep 1001` running. Err: what is
/// missing.
fn fixture_ready(host_pid: u64) -> Result<(), String> {
    let zombies: Vec<ProcFacts> = std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter_map(proc_facts)
        .filter(|f| f.state == "Z")
        .collect();
    if !zombies.iter().any(|f| f.ppid == host_pid) {
        return Err(format!("no zombie child of the host shell {host_pid}"));
    }
    // Not just any zombie under a sleep: `cargo xtask run`'s demo has one too.
    let parents: Vec<ProcFacts> = zombies
        .iter()
        .filter_map(|f| {
            let p = proc_facts(f.ppid)?;
            (f.ns_pids.len() == 2 && p.comm == "sleep").then_some(p)
        })
        .collect();
    if parents.is_empty() {
        return Err(format!(
            "no zombie under a sleep in a pid namespace ({} zombies)",
            zombies.len()
        ));
    }
    let ours = parents.iter().any(|parent| {
        pids_in_pidns(parent.pidns).iter().any(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == b"sleep\x001001\x00")
        })
    });
    if !ours {
        return Err(format!(
            "no `sleep 1001` in the pid namespace of a zombie's sleep ({:?})",
            parents.iter().map(|p| p.pidns).collect::<Vec<_>>()
        ));
    }
    Ok(())
}

#[test]
fn the_task_iterator_seed_equals_the_proc_seed() {
    let _ = observer().args(["rm", "-f", "seed-eq"]).output();
    let out = observer()
        .args(["run", "-d", "--name", "seed-eq", "--", "sh", "-c"])
        .arg("sh -c 'sleep 0.1 & exec sleep 1000' & sh -c 'sleep 1001 &'; exec sleep 1002")
        .output()
        .unwrap();
    assert!(out.status.success(), "observer run: {out:?}");
    let _ctr = Ctr("seed-eq");
    let host = Kill(
        Command::new("sh")
            .args(["-c", "(exit 3) & exec sleep 1000"])
            .spawn()
            .unwrap(),
    );
    let host_pid = host.0.id() as u64;
    // The container's zombie exists (its parent never reaps it), its `sleep 1001` runs, and
    // the host's child exited: asked of /proc, however long a loaded machine takes (the
    // test before may have left tens of thousands of processes to reap). On a timeout, what
    // was missing is said.
    let mut missing = String::new();
    let t0 = std::time::Instant::now();
    while let Err(m) = fixture_ready(host_pid) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "timed out waiting for the zombies and the container's sleeps: {m}; `observer \
             tree seed-eq`: {:?}",
            observer().args(["tree", "seed-eq"]).output()
        );
        missing = m;
        std::thread::sleep(Duration::from_millis(50));
    }
    if t0.elapsed() > Duration::from_secs(10) {
        eprintln!(
            "the fixture took {:?} (last missing: {missing})",
            t0.elapsed()
        );
    }

    let from_proc = Agent::start(&["--seed", "proc"]);
    assert_eq!(status(&from_proc)["seed"], "proc");
    from_proc.wait_startup_details();
    let a = by_identity(&from_proc.json(&["ps"]));
    drop(from_proc);

    let from_iter = Agent::start(&["--seed", "iterator"]);
    let ready = from_iter.json(&["ps"]);
    assert_eq!(status(&from_iter)["seed"], "iterator");
    // At ready, before any background pass: every namespace and the cgroup id (a zombie
    // has released its namespaces but its pid and user ones; both seeds agree on that below).
    for p in ready.as_array().unwrap() {
        let pid = p["pid"].as_u64().unwrap();
        if !ns_readable(pid) || p["state"] == "Z" {
            continue;
        }
        let ns = p["ns"].as_object().unwrap();
        let has_time_ns = std::path::Path::new("/proc/self/ns/time").exists();
        for (name, ino) in ns {
            if name == "time" && !has_time_ns {
                continue;
            }
            assert!(
                ino.as_u64().is_some_and(|i| i > 0),
                "{pid}: no {name} namespace at ready: {p}"
            );
        }
        assert!(
            p["cgroup_id"].as_u64().is_some_and(|i| i > 0),
            "{pid}: no cgroup id at ready: {p}"
        );
    }
    from_iter.wait_startup_details();
    let b = by_identity(&from_iter.json(&["ps"]));

    let common: Vec<_> = a.keys().filter(|k| b.contains_key(k)).collect();
    let diffs: Vec<String> = common
        .iter()
        .filter(|k| {
            // Compared only while both describe a process unchanged since (an exec or a
            // rename between the two agents is not a seed difference).
            let (pa, pb) = (&a[k], &b[k]);
            pa["exe"] == pb["exe"] && pa["cmdline"] == pb["cmdline"]
        })
        .filter_map(|k| {
            let (fa, mut fb) = (facts(&a[k]), facts(&b[k]));
            if a[k]["state"] == "Z" {
                known_to_proc_only(&fa, &mut fb);
            }
            (fa != fb).then(|| format!("pid {}:\n  /proc:    {fa}\n  iterator: {fb}", k.0))
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "the two seeds differ on {} of {} processes:\n{}",
        diffs.len(),
        common.len(),
        diffs.join("\n")
    );
    // Both saw the container's processes (its zombie included) and the host zombie.
    let tree = from_iter.json(&["tree", "seed-eq"]);
    let members = tree["processes"].as_array().unwrap();
    assert!(members.len() >= 4, "{tree}");
    assert!(members.iter().any(|p| p["state"] == "Z"), "{tree}");
    for m in members {
        let pid = m["pid"].as_u64().unwrap();
        assert!(
            common.iter().any(|k| k.0 == pid),
            "container process {pid} not in both seeds"
        );
    }
    let zombie = b
        .values()
        .find(|p| p["ppid"] == host_pid && p["state"] == "Z")
        .unwrap_or_else(|| panic!("the host zombie (child of {host_pid}) not listed"));
    assert_eq!(zombie["exit_code"], 3, "{zombie}");
    assert!(common
        .iter()
        .any(|k| k.0 == zombie["pid"].as_u64().unwrap()));
    println!(
        "seed: {} processes described alike by the /proc and the task-iterator seeds",
        common.len()
    );
}

/// A shell loop of short pipelines runs while the agent starts: what starts and ends while
/// the programs are being attached and the seed is read leaves nothing behind. The exit
/// and free programs were attached after fork's, so a process that forked and ended in
/// between stayed in the table until a check found it gone from /proc and a full scan
/// "corrected" it with no event lost (30 of them at every start).
#[test]
fn an_agent_started_beside_a_busy_shell_corrects_nothing() {
    let stop = std::env::temp_dir().join(format!("observer-seed-busy-{}", std::process::id()));
    let _ = std::fs::remove_file(&stop);
    let script = format!(
        "while [ ! -e {} ]; do sh -c 'true | wc' > /dev/null; done",
        stop.display()
    );
    let shell_loop = Kill(Command::new("sh").args(["-c", &script]).spawn().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    // Three start-ups on the host; one in the VM matrix, where each takes 10 s of emulation.
    let starts = if std::env::var_os("OBSERVER_VM").is_some() {
        1
    } else {
        3
    };
    for _ in 0..starts {
        let agent = Agent::start(&["--reconcile-interval", "1s"]);
        let st = eventually(Duration::from_secs(20), "two checks", || {
            let st = agent.status().ok()?;
            (st["checks"].as_u64()? >= 2).then_some(st)
        });
        let dropped: u64 = st["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["dropped"].as_u64().unwrap())
            .sum();
        assert_eq!(dropped, 0, "{st:#}");
        let explained: Vec<String> = agent
            .log_lines()
            .into_iter()
            .filter(|l| l.contains("correction:") || l.contains("check:"))
            .collect();
        assert_eq!(st["corrections"], 0, "{explained:#?}");
        assert!(explained.is_empty(), "{explained:#?}");
    }
    std::fs::write(&stop, "").unwrap();
    drop(shell_loop);
    let _ = std::fs::remove_file(&stop);
}
