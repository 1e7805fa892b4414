//! A launcher container is not root on the host: Docker's capabilities, no_new_privs and
//! seccomp profile for PID 1 and `exec` sessions, masked and read-only /proc paths, no
//! inherited descriptors, state only root can read, and `stop`/`rm`/`exec` that never touch
//! a process whose pid the state recorded but which is not that process. Checked from
//! /proc on the host and from inside. Run as root.

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::common::{agent::proc_facts, launcher::*, *};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
/// Docker's 14 default capabilities as a CapEff mask.
const DOCKER_CAPS: u64 = 0xa80425fb;
const CAP_SYS_ADMIN: u64 = 1 << 21;
const CAP_KILL: u64 = 1 << 5;
const STATE_ROOT: &str = "/run/observer/containers";

/// A `Key:\tvalue` line of a /proc status text.
fn field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
}

fn hex(status: &str, key: &str) -> u64 {
    u64::from_str_radix(field(status, key), 16).unwrap()
}

fn proc_status(pid: u64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()
}

/// CapEff, CapPrm, CapBnd, CapInh, CapAmb, NoNewPrivs, Seccomp of a status text.
fn confinement(status: &str) -> (u64, u64, u64, u64, u64, String, String) {
    (
        hex(status, "CapEff"),
        hex(status, "CapPrm"),
        hex(status, "CapBnd"),
        hex(status, "CapInh"),
        hex(status, "CapAmb"),
        field(status, "NoNewPrivs").to_string(),
        field(status, "Seccomp").to_string(),
    )
}

fn docker_default() -> (u64, u64, u64, u64, u64, String, String) {
    let d = DOCKER_CAPS;
    (d, d, d, 0, 0, "1".into(), "2".into())
}

/// A host process this test started, killed and reaped when dropped.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sleeper() -> Owned {
    Owned(Command::new("sleep").arg("1000").spawn().unwrap())
}

fn alive(c: &mut Owned) -> bool {
    c.0.try_wait().unwrap().is_none()
}

/// Descriptor numbers a process holds.
fn fds(pid: u64) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn pid1_and_exec_sessions_get_dockers_capabilities_no_new_privs_and_seccomp() {
    let c = Ctr::start("obs-t-caps", &[], &["sleep", "1000"]);
    assert_eq!(confinement(&proc_status(c.pid1())), docker_default());
    let (code, out, err) = c.exec(&["cat", "/proc/self/status"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(confinement(&out), docker_default(), "an exec session");

    // --init: the init that stays PID 1 and the command it forks alike.
    let i = Ctr::start("obs-t-caps-init", &["--init"], &["sleep", "1000"]);
    let init = i.pid1();
    assert_eq!(proc_facts(init).unwrap().comm, "init");
    assert_eq!(confinement(&proc_status(init)), docker_default());
    let cmd = eventually(T, "init's child", || first_child(init as u32)) as u64;
    assert_eq!(confinement(&proc_status(cmd)), docker_default());
}

/// The host's core_pattern, written back when dropped if it changed.
struct CorePattern(Vec<u8>);

impl CorePattern {
    fn save() -> CorePattern {
        CorePattern(std::fs::read("/proc/sys/kernel/core_pattern").unwrap())
    }
}

impl Drop for CorePattern {
    fn drop(&mut self) {
        if std::fs::read("/proc/sys/kernel/core_pattern").ok().as_ref() != Some(&self.0) {
            let _ = std::fs::write("/proc/sys/kernel/core_pattern", &self.0);
        }
    }
}

#[test]
fn writes_that_would_reach_the_host_fail_and_masked_paths_read_empty() {
    let c = Ctr::start("obs-t-ro", &[], &["sleep", "1000"]);
    let try_in = |script: &str| c.exec(&["sh", "-c", script]);

    // The write puts back the value already there, so that a launcher that lets it through
    // fails this test without changing the host (the guard restores it anyway).
    let _guard = CorePattern::save();
    let (code, _, err) = try_in(
        "v=$(cat /proc/sys/kernel/core_pattern); echo \"$v\" > /proc/sys/kernel/core_pattern",
    );
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    if Path::new("/proc/sysrq-trigger").exists() {
        let (code, _, err) = try_in("echo h > /proc/sysrq-trigger");
        assert_ne!(code, 0, "{err}");
    } else {
        eprintln!("this kernel has no /proc/sysrq-trigger: that write is not tried");
    }
    let (code, _, err) = try_in("mkdir -p /tmp/m && mount -t tmpfs none /tmp/m");
    assert_ne!(code, 0, "mount: {err}");
    // A user namespace needs no capability: only the seccomp profile refuses it.
    let (code, _, err) = try_in("unshare -U true");
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "{err}");

    // Masked paths this kernel has read empty; read-only ones are mounted ro.
    let mut masked = Vec::new();
    for p in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/interrupts",
        "/proc/sched_debug",
        "/proc/latency_stats",
        "/proc/timer_stats",
    ] {
        if Path::new(p).exists() {
            let (code, out, err) = try_in(&format!("cat {p} | wc -c"));
            assert_eq!((code, out.trim()), (0, "0"), "{p}: {err}");
            masked.push(p);
        }
    }
    assert!(masked.contains(&"/proc/keys"), "{masked:?}");
    for d in ["/proc/acpi", "/proc/scsi", "/proc/asound", "/sys/firmware"] {
        if Path::new(d).is_dir() {
            let (code, out, err) = try_in(&format!("ls -A {d}"));
            assert_eq!((code, out.as_str()), (0, ""), "{d}: {err}");
        }
    }
    let (_, mounts, _) = c.exec(&["cat", "/proc/mounts"]);
    for p in [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ] {
        if Path::new(p).exists() {
            let line = mounts
                .lines()
                .find(|l| l.split(' ').nth(1) == Some(p))
                .unwrap_or_else(|| panic!("{p} not mounted: {mounts}"));
            assert!(line.split(' ').nth(3).unwrap().starts_with("ro,"), "{line}");
        }
    }
    assert!(mounts.contains("sysfs /sys sysfs ro,"), "{mounts}");
}

#[test]
fn privileged_cap_add_cap_drop_and_security_opt_opt_out() {
    let status = |opts: &[&str]| {
        let name = "obs-t-opt";
        let mut a = vec!["run", "--name", name];
        a.extend(opts);
        a.extend([
            "--",
            "sh",
            "-c",
            "cat /proc/self/status; unshare -U true && echo userns; true",
        ]);
        let (code, out, err) = run(&a);
        let _ = run(&["rm", "-f", name]);
        assert_eq!(code, 0, "{opts:?}: {err}");
        out
    };
    let mine = std::fs::read_to_string("/proc/self/status").unwrap();
    let p = status(&["--privileged"]);
    assert_eq!(hex(&p, "CapEff"), hex(&mine, "CapEff"), "every capability");
    assert_eq!(hex(&p, "CapBnd"), hex(&mine, "CapBnd"));
    assert_eq!((field(&p, "NoNewPrivs"), field(&p, "Seccomp")), ("0", "0"));
    assert!(p.contains("userns"), "{p}");

    let a = status(&["--cap-add", "SYS_ADMIN"]);
    assert_eq!(hex(&a, "CapEff"), DOCKER_CAPS | CAP_SYS_ADMIN);
    assert_eq!(hex(&a, "CapBnd"), DOCKER_CAPS | CAP_SYS_ADMIN);
    assert_eq!(field(&a, "Seccomp"), "2");
    assert!(
        a.contains("userns"),
        "Docker's profile gives SYS_ADMIN unshare: {a}"
    );

    let k = status(&["--cap-drop", "ALL", "--cap-add", "kill"]);
    assert_eq!((hex(&k, "CapEff"), hex(&k, "CapBnd")), (CAP_KILL, CAP_KILL));

    let u = status(&["--security-opt", "seccomp=unconfined"]);
    assert_eq!(hex(&u, "CapEff"), DOCKER_CAPS);
    assert_eq!(field(&u, "Seccomp"), "0");
    assert!(u.contains("userns"), "no profile, no refusal: {u}");
    let n = status(&["--security-opt", "no-new-privileges=false"]);
    assert_eq!((field(&n, "NoNewPrivs"), field(&n, "Seccomp")), ("0", "2"));

    for (args, msg) in [
        (
            vec!["--cap-add", "SYS_ADMN"],
            "unknown capability `SYS_ADMN`",
        ),
        (vec!["--cap-drop", "x"], "unknown capability `x`"),
        (
            vec!["--security-opt", "seccomp=/etc/p.json"],
            "only seccomp=unconfined",
        ),
        (
            vec!["--security-opt", "label=disable"],
            "unsupported security option",
        ),
    ] {
        let mut a = vec!["run"];
        a.extend(&args);
        a.extend(["--", "true"]);
        let (code, _, err) = run(&a);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(msg), "{args:?}: {err}");
    }
}

#[test]
fn no_inherited_descriptor_reaches_pid1_or_an_exec_session() {
    let _ = run(&["rm", "-f", "obs-t-fds"]);
    // fds 7 and 9 are open, without close-on-exec, in the shell that runs the launcher.
    let bin = observer_bin();
    let out = sh(&format!(
        "exec 7</etc/hostname 9>>/tmp/obs-t-fds.out; {bin} run -d --name obs-t-fds --init -- sleep 1000"
    ));
    assert!(out.status.success(), "{out:?}");
    let c = Ctr("obs-t-fds".into());
    let init = c.pid1();
    assert_eq!(fds(init), vec![0, 1, 2], "PID 1 (--init's)");
    let cmd = eventually(T, "init's child", || first_child(init as u32)) as u64;
    assert_eq!(fds(cmd), vec![0, 1, 2], "the command");
    let shim = c.info()["shim_pid"].as_u64().unwrap();
    assert_eq!(fds(shim), vec![0, 1, 2, 3], "the shim: stdio and the log");

    let exec = Owned(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec 7</etc/hostname; exec {bin} exec obs-t-fds -- sleep 1001"
            ))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let cli = exec.0.id();
    let session = eventually(T, "the exec'd sleep", || {
        let p = first_child(cli)?;
        (proc_facts(p as u64)?.comm == "sleep").then_some(p as u64)
    });
    assert_eq!(fds(session), vec![0, 1, 2], "an exec session");
    drop(exec);
    let _ = std::fs::remove_file("/tmp/obs-t-fds.out");
}

fn mode(p: &str) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn state_and_logs_are_roots_alone() {
    let c = Ctr::start("obs-t-mode", &["-e", "TOKEN=secret"], &["sleep", "1000"]);
    assert_eq!(mode(STATE_ROOT), 0o700);
    let dir = format!("{STATE_ROOT}/obs-t-mode");
    assert_eq!(mode(&dir), 0o700);
    for f in ["config.json", "state.json", "log"] {
        assert_eq!(mode(&format!("{dir}/{f}")), 0o600, "{f}");
    }
    // A non-root user is told why it sees nothing.
    let out = observer_as_nobody(&["ls"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("root"),
        "{out:?}"
    );
    drop(c);

    // Where the launcher creates the directory itself (a fresh /run/observer in a private
    // mount namespace), it is 0700 from the start.
    let script = format!(
        "mount -t tmpfs -o mode=755 none /run/observer && \
         {bin} run --name obs-t-fresh -- true && \
         stat -c '%a %n' {STATE_ROOT} {STATE_ROOT}/obs-t-fresh {STATE_ROOT}/obs-t-fresh/*; \
         {bin} rm obs-t-fresh >/dev/null",
        bin = observer_bin()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let modes: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(modes, vec!["700", "700", "600", "600", "600"], "{text}");
}

/// The state file of `name`, as JSON.
fn state(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(format!("{STATE_ROOT}/{name}/state.json")).unwrap())
        .unwrap()
}

fn start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(19).unwrap().parse().unwrap()
}

#[test]
fn stop_rm_and_exec_never_touch_a_process_that_reused_a_recorded_pid() {
    // Pids cannot be made to wrap on demand without changing pid_max for everyone, so the
    // reuse is made in the state instead: a real container ran and was stopped, then its
    // state is pointed at two live processes of ours with the shim's and PID 1's pids. To
    // the launcher that is exactly a reused pid: a live process at the recorded pid whose
    // start time is not the recorded one.
    let name = "obs-t-reuse";
    let c = Ctr::start(name, &[], &["sleep", "1000"]);
    let (code, out, err) = run(&["stop", name, "-t", "5"]);
    assert_eq!(code, 0, "{out}{err}");
    let before = state(name);
    let (recorded_shim, recorded_pid1) = (
        before["shim_start"].as_u64().expect("shim start recorded"),
        before["pid_start"].as_u64().expect("PID 1 start recorded"),
    );
    let (mut fake_shim, mut fake_pid1) = (sleeper(), sleeper());
    let (s, p) = (fake_shim.0.id(), fake_pid1.0.id());
    assert_ne!(start_ticks(s), recorded_shim);
    assert_ne!(start_ticks(p), recorded_pid1);
    let write = |with_start_times: bool| {
        let mut st = before.clone();
        st["status"] = "running".into();
        st["exit_code"] = Value::Null;
        st["shim_pid"] = s.into();
        st["pid"] = p.into();
        if !with_start_times {
            // As an older observer wrote it: then the shim must be an observer-shim and
            // PID 1 must be in the container's cgroup.
            st["shim_start"] = Value::Null;
            st["pid_start"] = Value::Null;
        }
        std::fs::write(
            format!("{STATE_ROOT}/{name}/state.json"),
            serde_json::to_vec(&st).unwrap(),
        )
        .unwrap();
    };
    for with_start_times in [true, false] {
        write(with_start_times);
        let (code, _, err) = run(&["stop", name, "-t", "1"]);
        assert_eq!(code, 125, "{err}");
        assert!(err.contains("shim of `obs-t-reuse` is gone"), "{err}");
        let (code, _, err) = c.exec(&["true"]);
        assert_eq!(code, 125, "{err}");
        assert!(err.contains("is not running"), "{err}");
        assert!(c.info()["state"].as_str().unwrap().contains("shim gone"));
        assert!(alive(&mut fake_shim) && alive(&mut fake_pid1));
    }
    write(true);
    let (code, _, err) = run(&["rm", "-f", name]);
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        alive(&mut fake_shim),
        "rm -f signalled the shim's reused pid"
    );
    assert!(alive(&mut fake_pid1), "rm -f signalled PID 1's reused pid");
    assert!(!Path::new(&format!("{STATE_ROOT}/{name}")).exists());
    std::mem::forget(c);
}

#[test]
fn every_launcher_command_refuses_bad_names_and_input_without_panicking() {
    for bad in ["../containers", "a/b", "", ".", "-x", "\u{1b}[2J"] {
        for cmd in [
            vec!["stop", bad],
            vec!["rm", "-f", bad],
            vec!["logs", bad],
            vec!["exec", bad, "--", "true"],
        ] {
            let (code, _, err) = run(&cmd);
            // `-x` is taken by clap as an unknown flag (exit 2), the rest by the launcher.
            assert!(code == 125 || code == 2, "{cmd:?}: {code} {err}");
            assert!(!err.contains("panicked"), "{cmd:?}: {err}");
            if code == 125 {
                assert!(err.contains("invalid container name"), "{cmd:?}: {err}");
            }
        }
    }
    let c = Ctr::start(
        "obs-t-input",
        &[],
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.1; done",
        ],
    );
    let (code, _, err) = run(&["exec", "-e", "=x", "obs-t-input", "--", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("-e expects KEY=VALUE"), "{err}");
    let (code, _, err) = run(&["run", "--hostname", &"h".repeat(65), "--", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("invalid --hostname"), "{err}");
    // A timeout no clock can add up: stop waits (the container ends at SIGTERM) instead of
    // overflowing.
    let (code, out, err) = run(&["stop", "obs-t-input", "-t", &u64::MAX.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("exited (0)"), "{out}");
    drop(c);

    // A 100-byte name is a valid name; its default hostname is cut to 64 bytes.
    let long = format!("obs-t-{}", "n".repeat(94));
    let (code, out, err) = run(&["run", "--name", &long, "--", "hostname"]);
    let _ = run(&["rm", "-f", &long]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), &long[..64]);

    // A damaged config (an id too short to cut) is listed, not a panic.
    let c = Ctr::start("obs-t-short", &[], &["true"]);
    let dir = format!("{STATE_ROOT}/obs-t-short");
    let mut cfg = c.config();
    cfg["id"] = "ab".into();
    std::fs::write(format!("{dir}/config.json"), cfg.to_string()).unwrap();
    let (code, out, err) = run(&["ls"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("obs-t-short"), "{out}");
}
