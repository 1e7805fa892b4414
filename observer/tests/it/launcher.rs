//! The built-in launcher, as a user drives it: `observer run/exec/ls/stop/rm/logs`, checked
//! against /proc and the cgroup files. Run as root.

use std::{path::PathBuf, process::Command, time::Duration};

use crate::common::{agent::*, launcher::*, *};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn file(dirs: &[PathBuf], name: &str) -> String {
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .map(|p| std::fs::read_to_string(p).unwrap().trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in {dirs:?}"))
}

#[test]
fn pid1_is_the_command_with_ppid_0_and_hostname_and_mounts_are_isolated() {
    let c = Ctr::start("obs-t-iso", &["--hostname", "box"], &["sleep", "1000"]);
    let pid1 = c.pid1();
    let f = proc_facts(pid1).unwrap();
    assert_eq!(f.ns_pids, vec![pid1, 1]);
    assert_eq!(f.comm, "sleep");
    let shim = c.info()["shim_pid"].as_u64().unwrap();
    assert_eq!(f.ppid, shim, "the shim is PID 1's host parent");
    assert_eq!(proc_facts(shim).unwrap().comm, "observer-shim");
    let status = std::fs::read_to_string(format!("/proc/{shim}/status")).unwrap();
    assert!(
        status.contains("NSpid:\t") && proc_facts(shim).unwrap().ns_pids.len() == 1,
        "the shim stays on the host"
    );

    // Inside: PID 1 with PPID 0, own hostname, fresh /proc, read-only /sys, /dev, /tmp.
    let (code, out, err) = c.exec(&[
        "sh",
        "-c",
        "grep PPid /proc/1/status; hostname; cat /proc/mounts",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("PPid:\t0"), "{out}");
    assert!(out.lines().any(|l| l == "box"), "{out}");
    let mounts: Vec<&str> = out.lines().filter(|l| l.contains(' ')).collect();
    assert!(
        mounts.iter().any(|l| l.starts_with("proc /proc proc")),
        "{out}"
    );
    assert!(
        mounts.iter().any(|l| l.starts_with("sysfs /sys sysfs ro")),
        "{out}"
    );
    assert!(mounts.iter().any(|l| l.contains(" /tmp tmpfs")), "{out}");
    assert!(mounts.iter().any(|l| l.contains(" /dev tmpfs")), "{out}");
    let host = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !host.contains("/var/lib/observer/rootfs"),
        "no container mount leaks to the host"
    );
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "box"
    );
    for ns in ["pid", "mnt", "uts", "ipc", "net", "cgroup"] {
        assert_ne!(
            ns_inode(pid1 as u32, ns),
            ns_inode(std::process::id(), ns),
            "{ns} namespace is new"
        );
    }
    // --net none: only loopback, and it is up.
    let (_, out, _) = c.exec(&["cat", "/proc/net/dev"]);
    let ifaces: Vec<&str> = out
        .lines()
        .skip(2)
        .map(|l| l.split(':').next().unwrap().trim())
        .collect();
    assert_eq!(ifaces, vec!["lo"]);
}

#[test]
fn limits_are_written_read_back_and_enforced() {
    let c = Ctr::start(
        "obs-t-lim",
        &["--memory", "48M", "--pids-max", "20", "--cpus", "0.5"],
        &["sleep", "1000"],
    );
    let dirs = c.cgroups();
    let mem = dirs.iter().any(|d| d.join("memory.max").exists());
    let want_mem = (48u64 << 20).to_string();
    if mem {
        assert_eq!(file(&dirs, "memory.max"), want_mem);
        assert_eq!(file(&dirs, "cpu.max"), "50000 100000");
    } else {
        assert_eq!(file(&dirs, "memory.limit_in_bytes"), want_mem);
        assert_eq!(file(&dirs, "cpu.cfs_quota_us"), "50000");
        assert_eq!(file(&dirs, "cpu.cfs_period_us"), "100000");
    }
    assert_eq!(file(&dirs, "pids.max"), "20");
    // The container's processes are in every one of its cgroups.
    let pid1 = c.pid1().to_string();
    for d in &dirs {
        assert!(
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap()
                .lines()
                .any(|l| l == pid1),
            "{}",
            d.display()
        );
    }

    // A fork loop is stopped by --pids-max.
    let _ = run(&["rm", "-f", "obs-t-forks"]);
    let (code, out, err) = run(&[
        "run",
        "--name",
        "obs-t-forks",
        "--pids-max",
        "10",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; echo all-forked",
    ]);
    let _ = run(&["rm", "-f", "obs-t-forks"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        out.contains("can't fork") || out.contains("Resource temporarily unavailable"),
        "{out}{err}"
    );
    assert!(!out.contains("all-forked"));

    // A memory hog is OOM-killed under --memory, and its exit status says so.
    let _ = run(&["rm", "-f", "obs-t-oom"]);
    let (code, _, _) = run(&[
        "run",
        "--name",
        "obs-t-oom",
        "--memory",
        "32M",
        "--",
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    assert_eq!(code, 137);
    let (_, out, _) = run(&["ls", "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    let oom = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "obs-t-oom")
        .unwrap()
        .clone();
    let _ = run(&["rm", "-f", "obs-t-oom"]);
    assert_eq!(oom["oom_killed"], true, "{oom:#}");
    assert!(
        oom["state"].as_str().unwrap().contains("OOM killed"),
        "{oom:#}"
    );
}

#[test]
fn exec_lands_in_every_namespace_and_the_cgroup_and_returns_the_exit_code() {
    let c = Ctr::start("obs-t-exec", &[], &["sleep", "1000"]);
    let pid1 = c.pid1();
    let mut child = observer()
        .args([
            "exec",
            "obs-t-exec",
            "-e",
            "GREETING=hi",
            "--",
            "sh",
            "-c",
            "echo $GREETING; exec sleep 1001",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exec_cli = child.id() as u64;
    let exec_pid = eventually(T, "the exec'd sleep", || {
        let kids =
            std::fs::read_to_string(format!("/proc/{exec_cli}/task/{exec_cli}/children")).ok()?;
        let p: u64 = kids.split_whitespace().next()?.parse().ok()?;
        (proc_facts(p)?.comm == "sleep").then_some(p)
    });
    for ns in ["pid", "mnt", "uts", "ipc", "net", "cgroup"] {
        assert_eq!(
            ns_inode(exec_pid as u32, ns),
            ns_inode(pid1 as u32, ns),
            "{ns}"
        );
    }
    let cg = |p: u64| std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
    assert_eq!(cg(exec_pid), cg(pid1));
    let f = proc_facts(exec_pid).unwrap();
    assert_eq!(
        f.ppid, exec_cli,
        "host parent: observer exec, outside the container"
    );
    assert_eq!(f.ns_pids.len(), 2);
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(c.exec(&["sh", "-c", "exit 3"]).0, 3);
    let (code, _, err) = c.exec(&["no-such-command"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("not found"), "{err}");
    let (code, _, err) = c.exec(&["/etc/passwd"]);
    assert_eq!(code, 126, "{err}");
}

#[test]
fn a_non_reaping_pid1_leaves_a_zombie_and_init_reaps_it() {
    // The inner sh backgrounds a short sleep and exits: the sleep is orphaned to PID 1.
    let script = "sh -c 'sleep 0.2 &'; exec sleep 1000";
    let bare = Ctr::start("obs-t-noinit", &[], &["sh", "-c", script]);
    let with_init = Ctr::start("obs-t-init", &["--init"], &["sh", "-c", script]);
    let zombies = |pidns: u64| {
        pids_in_pidns(pidns)
            .into_iter()
            .filter(|p| proc_facts(*p).is_some_and(|f| f.state == "Z"))
            .collect::<Vec<_>>()
    };
    // The orphaned sleep ends 0.2 s after the containers' shells ran, however long a loaded
    // machine took to run them: asked until it has.
    let p1 = bare.pid1();
    let z = last_until(T, || zombies(ns_inode(p1 as u32, "pid")), |z| !z.is_empty());
    assert_eq!(z.len(), 1, "one zombie under a PID 1 that never reaps");
    assert_eq!(proc_facts(z[0]).unwrap().ppid, p1);
    let i1 = with_init.pid1();
    assert_eq!(proc_facts(i1).unwrap().comm, "init");
    // Until the orphan has ended and init had the moment it takes to reap it: then only
    // init and `sleep 1000` remain, or a zombie if init does not reap.
    let ns = ns_inode(i1 as u32, "pid");
    let left = last_until(
        T,
        || pids_in_pidns(ns),
        |left| {
            let cmd = |p: &u64| std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            left.len() == 2
                && left.iter().any(|p| cmd(p).starts_with(b"sleep\x001000"))
                && !left.iter().any(|p| cmd(p).starts_with(b"sleep\x000.2"))
        },
    );
    assert!(zombies(ns).is_empty(), "--init reaps orphans: {left:?}");
    assert_eq!(left.len(), 2, "init and its command: {left:?}");
}

#[test]
fn stop_and_rm_leave_no_cgroup_mount_or_process_behind() {
    let c = Ctr::start(
        "obs-t-rm",
        &["--init"],
        &["sh", "-c", "sleep 1000 & sleep 1000"],
    );
    let pid1 = c.pid1();
    let pidns = ns_inode(pid1 as u32, "pid");
    let shim = c.info()["shim_pid"].as_u64().unwrap();
    let dirs = c.cgroups();
    let (code, out, _) = run(&["stop", "obs-t-rm", "-t", "5"]);
    assert_eq!(code, 0);
    assert!(out.contains("exited"), "{out}");
    assert_eq!(c.info()["status"], "exited");
    assert!(
        pids_in_pidns(pidns).is_empty(),
        "no process of the container remains"
    );
    // (Once `observer run -d` has exited, the shim's adopter reaps it; a zombie here means
    // the host's PID 1 does not reap, which is not the launcher's business.) The shim
    // records the end, which `stop` waits for, then exits: asked until it has.
    let shim_now = last_until(
        T,
        || proc_facts(shim),
        |f| f.as_ref().is_none_or(|f| f.state == "Z"),
    );
    assert!(
        shim_now.is_none_or(|f| f.state == "Z"),
        "the shim has exited"
    );
    let (code, _, _) = run(&["rm", "obs-t-rm"]);
    assert_eq!(code, 0);
    for d in &dirs {
        assert!(!d.exists(), "{} removed", d.display());
    }
    assert!(!std::path::Path::new("/run/observer/containers/obs-t-rm").exists());
    let (code, _, err) = run(&["rm", "obs-t-rm"]);
    assert_eq!(code, 125);
    assert!(err.contains("no container named"), "{err}");
    std::mem::forget(c);
}

#[test]
fn logs_and_foreground_runs_carry_the_output_and_exit_code() {
    let _ = run(&["rm", "-f", "obs-t-fg"]);
    let (code, out, _) = run(&[
        "run",
        "--name",
        "obs-t-fg",
        "-e",
        "X=42",
        "--",
        "sh",
        "-c",
        "echo out $X; echo err >&2; exit 7",
    ]);
    assert_eq!(code, 7);
    assert!(out.contains("out 42") && out.contains("err"), "{out}");
    let (code, out, _) = run(&["logs", "obs-t-fg"]);
    assert_eq!(code, 0);
    assert_eq!(out, "out 42\nerr\n");
    assert_eq!(run(&["rm", "obs-t-fg"]).0, 0);
}

#[test]
fn every_launcher_error_is_a_clear_message_with_docker_exit_codes() {
    let c = Ctr::start("obs-t-err", &[], &["sleep", "1000"]);
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["run", "--name", "obs-t-err", "--", "true"],
            125,
            "already in use",
        ),
        (
            vec!["run", "--rootfs", "/nonexistent/rootfs", "--", "true"],
            125,
            "does not exist",
        ),
        (
            vec!["run", "--rootfs", "/etc/passwd", "--", "true"],
            125,
            "not a directory",
        ),
        (
            vec!["run", "--", "no-such-command"],
            127,
            "not found in the rootfs",
        ),
        (vec!["run", "--", "/etc/passwd"], 126, "not an executable"),
        (
            vec!["run", "--name", "bad/name", "--", "true"],
            125,
            "invalid container name",
        ),
        (
            vec!["exec", "no-such-ctr", "--", "true"],
            125,
            "no container named",
        ),
        (vec!["stop", "no-such-ctr"], 125, "no container named"),
        (vec!["rm", "obs-t-err"], 125, "is running"),
    ];
    for (args, want, msg) in cases {
        let (code, _, err) = run(&args);
        assert_eq!(code, want, "{args:?}: {err}");
        assert!(err.contains(msg), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    drop(c);
    let out = observer_as_nobody(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs root"));
}

#[test]
fn a_missing_cgroup_controller_is_named_and_can_be_ignored_on_request() {
    // Hide the pids controller in a private mount namespace: unmount its v1 hierarchy
    // (hybrid and v1 hosts) and mask it from cgroup2's controller list (v2 hosts).
    let v2 = cgroup2_mount();
    // The masked list: in the run's temporary directory, removed after (it was /tmp's).
    let list = std::env::temp_dir().join(format!("obs-controllers-{}", std::process::id()));
    let script = format!(
        "umount -l /sys/fs/cgroup/pids 2>/dev/null; \
         grep -v '^$' {v2}/cgroup.controllers | tr ' ' '\\n' | grep -vx pids | tr '\\n' ' ' > {list}; \
         mount --bind {list} {v2}/cgroup.controllers; \
         {bin} run --name obs-t-nopids --pids-max 5 -- true; echo rc=$?; \
         {bin} run --name obs-t-nopids --pids-max 5 --ignore-missing-limits -- true; echo rc=$?",
        v2 = v2.display(),
        list = list.display(),
        bin = observer_bin()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&list);
    let _ = run(&["rm", "-f", "obs-t-nopids"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("the pids cgroup controller is not available"),
        "{text}"
    );
    assert!(text.contains("--ignore-missing-limits"), "{text}");
    let rcs: Vec<&str> = text.lines().filter(|l| l.starts_with("rc=")).collect();
    assert_eq!(rcs, vec!["rc=125", "rc=0"], "{text}");
}

#[test]
fn the_agent_shows_the_shim_above_pid1_and_both_sleeps() {
    let agent = Agent::start(&[]);
    let c = Ctr::start("obs-t-web", &[], &["sh", "-c", "sleep 1000 & sleep 1000"]);
    // Both sleeps, and the tree equal to /proc: at first PID 1 and its child may still be
    // the shell they were forked as.
    let tree = last_until(
        T,
        || agent.json(&["tree", "obs-t-web"]),
        |t| t["processes"].as_array().unwrap().len() == 2 && tree_vs_proc(t).is_empty(),
    );
    assert_eq!(tree["processes"].as_array().unwrap().len(), 2, "{tree:#}");
    let diffs = tree_vs_proc(&tree);
    assert!(diffs.is_empty(), "{diffs:?}");
    let cont = &tree["container"];
    assert_eq!(cont["runtime"], "observer");
    assert_eq!(cont["name"], "obs-t-web");
    assert_eq!(cont["id"], c.info()["id"]);
    assert_eq!(cont["shim_comm"], "observer-shim");
    assert_eq!(cont["shim_pid"], c.info()["shim_pid"]);
    let ns: Vec<u64> = tree["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ns_pid"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, vec![1, 2]);
    let text = agent.cli(&["tree", "obs-t-web"]).1;
    assert!(
        text.contains(&format!("observer-shim ({})", cont["shim_pid"])),
        "{text}"
    );
    assert!(
        text.contains("/ ns 1)") && text.contains("/ ns 2)"),
        "{text}"
    );
    // The agent rendered that text (`?format=text`): the CLI's own rendering of the tree's
    // JSON has the same lines, numbers aside (ages and CPU move between two requests).
    let json = observer::views::text::Escaped::<observer::views::model::TreeView>::from_json(
        agent.json(&["tree", "obs-t-web"]).to_string().as_bytes(),
    )
    .unwrap();
    let here = observer::views::tree::render(&json, observer::views::text::Style { color: false });
    let letters = |s: &str| {
        s.chars()
            .filter(|c| !c.is_ascii_digit())
            .collect::<String>()
    };
    assert_eq!(letters(&text), letters(&here));
    let raw = agent.socket_get("/v1/containers/obs-t-web/tree?format=text");
    assert!(raw.contains("text/plain"), "{raw}");
    assert_eq!(letters(&http_body(&raw)), letters(&text));
    let bad = agent.socket_get("/v1/containers/obs-t-web/tree?format=xml");
    assert!(
        bad.contains(" 400 ") && bad.contains("unknown format `xml`"),
        "{bad}"
    );
    let dirs = c.cgroups();
    let pidns = cont["pidns"].as_u64().unwrap();
    let (code, _, _) = run(&["rm", "-f", "obs-t-web"]);
    assert_eq!(code, 0);
    assert!(dirs.iter().all(|d| !d.exists()));
    assert!(pids_in_pidns(pidns).is_empty());
    std::mem::forget(c);
}
