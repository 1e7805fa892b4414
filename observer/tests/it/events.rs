//! `observer events` against the live kernel: real programs, real namespaces, facts checked
//! against what the processes themselves read from /proc. Run as root.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use crate::common::{self, *};
use serde_json::Value;

const T: Duration = Duration::from_secs(15);

fn is(v: &Value, kind: &str, pid: u64) -> bool {
    v["type"] == kind && v["pid"].as_u64() == Some(pid)
}

/// Namespaces as the events name them, in the order the test script prints their inodes.
const NAMESPACES: [&str; 9] = observer_common::NS_NAMES;

// The same process described by the BTF tracepoints (plain reads the verifier checked) and
// by the raw ones (probe reads): every kernel of the matrix must accept the BTF ones, and
// both must give the same facts.
#[test]
fn short_lived_process_in_new_pid_namespace_is_described_exactly() {
    described_exactly("btf");
}

#[test]
fn short_lived_process_is_described_exactly_by_the_raw_tracepoints_too() {
    described_exactly("raw");
}

fn described_exactly(tracepoint_kind: &str) {
    let cg = TestCgroup::new("events");
    let mut stream = EventStream::start(&["--tracepoint-kind", tracepoint_kind]);
    // The inner sh prints its host PID (its own /proc/self/stat: /proc is the host's) and the
    // inode of each namespace it sees, then exits 7, all within a millisecond or two.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec /usr/bin/unshare --pid --uts --fork /bin/sh -c \
         'read -r hp _ < /proc/self/stat; printf \"%s \" $hp; \
          for n in {}; do printf \"%s \" $(stat -L -c %i /proc/self/ns/$n); done; exit 7'",
        cg.path.display(),
        NAMESPACES.join(" ")
    );
    let out = sh(&script);
    assert_eq!(out.status.code(), Some(7), "inner sh exit status: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.split_whitespace().map(|s| s.parse::<u64>().unwrap());
    let host_pid = it.next().unwrap();
    let inodes: Vec<u64> = it.collect();
    assert_eq!(inodes.len(), NAMESPACES.len(), "{text}");
    let pidns = inodes[0];
    let all_ns = |ev: &Value| {
        assert_eq!(ev.get("read_error"), None, "{ev}");
        for (name, inode) in NAMESPACES.iter().zip(&inodes) {
            assert_eq!(u64_of(&ev["ns"], name), *inode, "{name} namespace in {ev}");
        }
    };

    let fork = stream.wait_for(T, "fork of the namespaced sh", |v| is(v, "fork", host_pid));
    assert_eq!(ns_pids(&fork), vec![host_pid, 1], "{fork}");
    assert_eq!(u64_of(&fork["ns"], "pid"), pidns);
    assert_eq!(
        u64_of(&fork, "cgroup_id"),
        cg.inode(),
        "cgroup id = inode of the cgroup2 dir"
    );
    assert_eq!(fork["tid"], fork["pid"]);
    assert_eq!(fork["is_thread"], false);

    let exec = stream.wait_for(T, "exec of sh", |v| is(v, "exec", host_pid));
    assert_eq!(ns_pids(&exec), vec![host_pid, 1]);
    assert_eq!(u64_of(&exec["ns"], "pid"), pidns);
    assert_eq!(exec["comm"], "sh");
    assert!(exec["filename"].as_str().unwrap().ends_with("sh"), "{exec}");
    assert!(exec["argv"][0].as_str().unwrap().ends_with("sh"), "{exec}");
    assert_eq!(exec["argv"][1], "-c");
    assert_eq!(u64_of(&exec, "cgroup_id"), cg.inode());
    assert_eq!(
        exec["start_time_ns"], fork["start_time_ns"],
        "same task, same start time"
    );
    assert_eq!(
        (exec["uid"].as_u64(), exec["gid"].as_u64()),
        (Some(0), Some(0)),
        "{exec}"
    );
    all_ns(&fork);
    all_ns(&exec);

    let exit = stream.wait_for(T, "exit of sh", |v| {
        is(v, "exit", host_pid) && v["leader"] == true
    });
    assert_eq!(exit["exit_code"], 7, "{exit}");
    assert_eq!(exit["signal"], Value::Null);
    assert_eq!(exit["group_dead"], true);
    assert_eq!(ns_pids(&exit), vec![host_pid, 1]);
    all_ns(&exit);
    assert_eq!(u64_of(&exit, "cgroup_id"), cg.inode());

    // Its parent, `unshare`, created the namespace: an unshare event whose pid_for_children
    // is the new namespace while its own pid namespace is still the host's.
    let parent = u64_of(&fork, "ppid");
    let uns = stream.wait_for(T, "unshare by the parent", |v| is(v, "unshare", parent));
    assert_eq!(u64_of(&uns["ns"], "pid_for_children"), pidns);
    assert_eq!(
        u64_of(&uns["ns"], "pid"),
        ns_inode(std::process::id(), "pid")
    );
    assert_eq!(ns_pids(&uns).len(), 1);

    // Once reaped, the task is freed.
    let free = stream.wait_for(T, "free of sh", |v| is(v, "free", host_pid));
    assert_eq!(free["comm"], "sh", "{free}");
    assert_eq!(free["start_time_ns"], fork["start_time_ns"], "{free}");
    let (status, _) = stream.stop();
    assert!(status.success(), "observer events exit: {status}");
}

extern "C" fn exit_at_once(_: *mut libc::c_void) -> libc::c_int {
    unsafe { libc::_exit(5) }
}

#[test]
fn process_living_microseconds_in_new_pid_namespace_is_captured() {
    let mut stream = EventStream::start(&["--type", "fork,exit,free"]);
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: the child runs only exit_at_once (async-signal-safe) on its own stack.
    let pid = unsafe {
        libc::clone(
            exit_at_once,
            stack.as_mut_ptr().add(stack.len()).cast(),
            libc::CLONE_NEWPID | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert_eq!(libc::WEXITSTATUS(status), 5);
    let pid = pid as u64;

    let fork = stream.wait_for(T, "fork of the clone child", |v| is(v, "fork", pid));
    assert_eq!(ns_pids(&fork), vec![pid, 1]);
    assert_eq!(u64_of(&fork, "ppid"), std::process::id() as u64);
    let own_pidns = ns_inode(std::process::id(), "pid");
    let child_pidns = u64_of(&fork["ns"], "pid");
    assert_ne!(child_pidns, own_pidns, "child is in a new pid namespace");
    let exit = stream.wait_for(T, "exit of the clone child", |v| is(v, "exit", pid));
    assert_eq!(exit["exit_code"], 5);
    assert_eq!(u64_of(&exit["ns"], "pid"), child_pidns);
    assert!(u64_of(&exit, "time_ns") >= u64_of(&fork, "time_ns"));
    stream.wait_for(T, "free of the clone child", |v| is(v, "free", pid));
    // --type filtered everything else out.
    assert!(stream
        .seen
        .iter()
        .all(|v| ["fork", "exit", "free"].contains(&v["type"].as_str().unwrap())));
}

#[test]
fn setns_event_reports_the_entered_namespaces() {
    let mut target = Command::new("unshare")
        .args([
            "--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "sleep", "60",
        ])
        .spawn()
        .expect("unshare");
    let unshare_pid = target.id();
    // The sleep is unshare's only child, PID 1 of the new namespace.
    let sleep_pid: u32 = eventually(T, "the namespaced sleep", || {
        let kids =
            std::fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children"))
                .ok()?;
        let pid = kids.split_whitespace().next()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "sleep").then_some(pid)
    });
    let want: Vec<(&str, u64)> = ["mnt", "uts", "ipc", "net"]
        .iter()
        .map(|n| (*n, ns_inode(sleep_pid, n)))
        .collect();
    let target_pidns = ns_inode(sleep_pid, "pid");

    let mut stream = EventStream::start(&["--type", "setns,fork,exec"]);
    let nsenter = Command::new("nsenter")
        .args([
            "-t",
            &sleep_pid.to_string(),
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "true",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("nsenter");
    let nsenter_pid = nsenter.id() as u64;
    let out = nsenter.wait_with_output().unwrap();
    assert!(out.status.success());

    // The child nsenter forks to enter the pid namespace runs `true` inside it.
    let exec = stream.wait_for(T, "exec of true inside the target", |v| {
        v["type"] == "exec" && v["ppid"].as_u64() == Some(nsenter_pid) && v["comm"] == "true"
    });
    assert_eq!(u64_of(&exec["ns"], "pid"), target_pidns);
    assert_eq!(ns_pids(&exec).len(), 2, "{exec}");
    let setns = stream.all(|v| is(v, "setns", nsenter_pid));
    assert!(
        setns.len() >= 5,
        "one setns per namespace, got {}",
        setns.len()
    );
    let last = setns.last().unwrap();
    for (name, ino) in &want {
        assert_eq!(
            u64_of(&last["ns"], name),
            *ino,
            "{name} after setns: {last}"
        );
    }
    assert_eq!(u64_of(&last["ns"], "pid_for_children"), target_pidns);
    assert_eq!(last["ret"], 0);

    let _ = target.kill();
    let _ = target.wait();
    unsafe { libc::kill(sleep_pid as i32, libc::SIGKILL) };
}

#[test]
fn events_lost_while_the_reader_is_stalled_are_counted_not_hidden() {
    // -v: the kernel side also says, rate-limited, that it dropped records (aya-log).
    let stream = EventStream::start(&["--ringbuf-size", "16K", "--stats", "-v"]);
    // Stop the reader, overflow its 16 KiB buffer (a few dozen records), resume.
    unsafe { libc::kill(stream.pid() as i32, libc::SIGSTOP) };
    let out = sh("i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done");
    assert!(out.status.success());
    unsafe { libc::kill(stream.pid() as i32, libc::SIGCONT) };
    std::thread::sleep(Duration::from_millis(300));
    let (status, err) = stream.stop();
    assert!(status.success(), "{err}");
    let exec = err
        .lines()
        .find(|l| l.starts_with("exec "))
        .unwrap_or_else(|| panic!("no stats: {err}"));
    let cols: Vec<u64> = exec
        .split_whitespace()
        .skip(1)
        .map(|c| c.parse().unwrap())
        .collect();
    // Columns: emitted dropped skipped received read_errors.
    let (emitted, dropped, skipped, received) = (cols[0], cols[1], cols[2], cols[3]);
    assert!(dropped > 0, "a stalled 16 KiB buffer must overflow: {exec}");
    assert_eq!(emitted, received, "everything emitted was received: {exec}");
    assert!(emitted + dropped + skipped >= 300, "{exec}");
    assert!(err.contains("events were lost"), "{err}");
    assert!(
        err.contains("event dropped: the ring buffer is full"),
        "the kernel side's diagnostics: {err}"
    );
}

#[test]
fn bad_input_gets_a_clear_message_and_nonzero_exit() {
    let out = observer()
        .args(["events", "--type", "spawn"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown event type `spawn`"));

    let out = observer()
        .args(["events", "--ringbuf-size", "5000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("power of two"),
        "{out:?}"
    );

    let out = observer()
        .args(["events", "--btf", "/nonexistent/vmlinux"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("BTF") && err.contains("/nonexistent/vmlinux"),
        "{err}"
    );

    let junk = std::env::temp_dir().join(format!("observer-not-btf-{}", std::process::id()));
    std::fs::write(&junk, "this is not BTF").unwrap();
    let out = observer()
        .arg("events")
        .arg("--btf")
        .arg(&junk)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&junk);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reading BTF"),
        "{out:?}"
    );
}

#[test]
fn unprivileged_user_is_told_to_use_root() {
    let out = observer_as_nobody(&["events"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs root") && err.contains("lacks CAP_BPF and CAP_PERFMON"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn signals_to_a_namespace_init_and_an_oom_kill_carry_the_kernels_verdict() {
    let mut s = EventStream::start(&["--type", "signal,oom"]);
    // SIGTERM to PID 1 of a new pid namespace whose command has no handler: the kernel
    // ignores it (result 1); the SIGKILL that follows is delivered.
    let mut ns = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "sleep", "100"])
        .spawn()
        .unwrap();
    let init: u32 = eventually(Duration::from_secs(10), "the namespace's init", || {
        first_child(ns.id())
    });
    eventually(Duration::from_secs(10), "sleep to run", || {
        (std::fs::read_to_string(format!("/proc/{init}/comm"))
            .ok()?
            .trim()
            == "sleep")
            .then_some(())
    });
    unsafe { libc::kill(init as i32, libc::SIGTERM) };
    let term = s.wait_for(T, "SIGTERM to the init", |v| {
        is(v, "signal", init as u64) && v["signal"] == "SIGTERM"
    });
    assert_eq!(term["result"], "ignored", "{term:#}");
    assert_eq!(term["sender"]["pid"], std::process::id());
    assert_eq!(term["ns_pids"][1], 1);
    assert_eq!(term["code"], 0, "kill(2): SI_USER");
    unsafe { libc::kill(init as i32, libc::SIGKILL) };
    let kill = s.wait_for(T, "SIGKILL to the init", |v| {
        is(v, "signal", init as u64) && v["signal"] == "SIGKILL"
    });
    assert_eq!(kill["result"], "delivered");
    let _ = ns.wait();

    // An OOM kill in a launcher container limited to 32 MiB: the victim, then the kernel's
    // own SIGKILL to it.
    let name = format!("observer-test-oom-{}", std::process::id());
    let out = observer()
        .args(oom_container_args(&name, false))
        .output()
        .unwrap();
    let _ = observer().args(["rm", "-f", &name]).output();
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    let oom = s.wait_for(T, "the OOM victim", |v| v["type"] == "oom");
    let victim = oom["victim_pid"].as_u64().unwrap();
    if !oom["anon_rss_kb"].is_null() {
        assert!(oom["anon_rss_kb"].as_u64().unwrap() > 1024, "{oom:#}");
    }
    // The container's limit and its usage, read in the kernel at the kill.
    assert_eq!(oom["memory_limit_bytes"], 32 << 20, "{oom:#}");
    assert!(oom["memory_bytes"].as_u64().unwrap() >= 30 << 20, "{oom:#}");
    let by_kernel = s.wait_for(T, "the OOM killer's SIGKILL", |v| {
        is(v, "signal", victim) && v["signal"] == "SIGKILL"
    });
    assert_eq!(by_kernel["code"], 128, "SI_KERNEL: {by_kernel:#}");
    let (status, _) = s.stop();
    assert!(status.success());
}

/// The benchmark's calibration programs (`observer agent --calibrate`, observer-ebpf's
/// calib.rs) load and attach beside observer's own on this kernel, and the records they
/// reserve and discard never reach the agent: no undecodable record, and exactly the
/// events observer's programs emitted were received.
#[test]
fn calibration_programs_attach_and_add_no_events() {
    // BPF programs a process holds (fdinfo entries of program descriptors).
    let programs = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
            .unwrap()
            .flatten()
            .filter_map(|f| std::fs::read_to_string(f.path()).ok())
            .filter(|s| s.contains("prog_type"))
            .count()
    };
    let plain = common::agent::Agent::start(&[]);
    let base = programs(plain.pid());
    drop(plain);
    let agent = common::agent::Agent::start(&[
        "--calibrate",
        "calib_empty,calib_record,calib_write,calib_clock,calib_ident,calib_creds,calib_pids,calib_ns,calib_cgroup",
    ]);
    assert_eq!(
        programs(agent.pid()),
        base + 9,
        "the nine calibration programs are loaded beside observer's {base}"
    );
    let out = sh("i=0; while [ $i -lt 50 ]; do /bin/true; i=$((i+1)); done");
    assert!(out.status.success());
    let metric = |text: &str, series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{text}")) as u64
    };
    let deadline = std::time::Instant::now() + T;
    loop {
        let text = http_body(&agent.http_get("/metrics"));
        assert_eq!(metric(&text, "observer_event_decode_errors_total"), 0);
        let counts = |kind: &str| {
            let series = |name: &str| format!("{name}{{type=\"{kind}\"}}");
            (
                metric(&text, &series("observer_events_emitted_total")),
                metric(&text, &series("observer_events_received_total")),
            )
        };
        let all = ["fork", "exec", "exit", "free"].map(counts);
        if all
            .iter()
            .all(|(emitted, received)| emitted == received && *received >= 50)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "(emitted, received) of fork, exec, exit, free: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
