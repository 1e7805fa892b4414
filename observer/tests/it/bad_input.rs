//! Bad input of every kind gets a clear message, a non-zero exit and no panic: agent flags,
//! launcher names, limits and root file systems, a host without tracefs, processes with
//! huge or non-UTF-8 command lines and names, and containers that die while they are read.
//! (Corrupt runtime state files: containers::names unit tests; hostile HTTP: hardening.rs.)
//! Run as root.

use std::{
    io::{BufRead, BufReader},
    os::unix::ffi::OsStrExt,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::common::{agent::*, *};
use serde_json::Value;

/// Runs observer; returns (exit code, stderr), checking that it did not panic.
fn fails(args: &[&str]) -> (i32, String) {
    let out = observer().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !err.contains("panicked"),
        "observer {args:?} panicked: {err}"
    );
    (out.status.code().unwrap_or(-1), err)
}

fn expect_error(args: &[&str], code: i32, msg: &str) {
    let (got, err) = fails(args);
    assert_eq!(got, code, "observer {args:?}: {err}");
    assert!(
        err.contains(msg),
        "observer {args:?} should say `{msg}`: {err}"
    );
}

#[test]
fn bad_agent_flags_are_refused_with_the_flag_named() {
    let sock = std::env::temp_dir().join(format!(
        "observer-test-badflags-{}.sock",
        std::process::id()
    ));
    let sock = sock.to_str().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let agent = |extra: &[&str]| -> Vec<String> {
        let mut a = vec!["agent".to_string(), "--socket".into(), sock.into()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (agent(&["--listen", "nowhere"]), 2, "--listen"),
        (
            agent(&["--listen", &taken]),
            1,
            "choose another address with --listen",
        ),
        (agent(&["--reconcile-interval", "0s"]), 2, "at least 1s"),
        (
            agent(&["--reconcile-interval", "forever"]),
            2,
            "--reconcile-interval",
        ),
        (agent(&["--ringbuf-size", "3M"]), 2, "power of two"),
        (
            agent(&["--ringbuf-size", "99999999999999G"]),
            2,
            "--ringbuf-size",
        ),
        (agent(&["--max-connections", "0"]), 2, "--max-connections"),
        (agent(&["--idle-timeout", "1ns"]), 2, "out of range"),
        (agent(&["--header-timeout=-1s"]), 2, "--header-timeout"),
        (agent(&["--metrics-labels", "pid"]), 2, "pid"),
        // Beside the demo agent that `cargo xtask run` leaves on the default port: the
        // listeners start first, so these take a port of their own.
        (
            agent(&["--listen", "127.0.0.1:0", "--btf", "/nonexistent/vmlinux"]),
            1,
            "/nonexistent/vmlinux",
        ),
        (
            vec![
                "agent".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--socket".into(),
                "/proc/observer-test/x.sock".into(),
            ],
            1,
            "/proc/observer-test",
        ),
    ];
    for (args, code, msg) in &cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_error(&a, *code, msg);
    }
    assert!(!std::path::Path::new(sock).exists(), "no agent stayed up");
}

#[test]
fn launcher_refuses_absurd_limits_bad_names_and_the_host_root() {
    let link = std::env::temp_dir().join(format!("observer-test-hostroot-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/", &link).unwrap();
    let link_s = link.to_str().unwrap();
    let long = "a".repeat(200);
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["run", "--rootfs", "/", "--", "true"],
            125,
            "host's own root",
        ),
        (
            vec!["run", "--rootfs", link_s, "--", "true"],
            125,
            "host's own root",
        ),
        (
            vec!["run", "--pids-max", "0", "--", "true"],
            2,
            "--pids-max",
        ),
        (
            vec!["run", "--pids-max", "99999999999999999999", "--", "true"],
            2,
            "--pids-max",
        ),
        (vec!["run", "--memory", "1E", "--", "true"], 2, "--memory"),
        (vec!["run", "--memory", "12", "--", "true"], 2, "too small"),
        (vec!["run", "--cpus", "nan", "--", "true"], 2, "--cpus"),
        (vec!["run", "--cpus", "1e9", "--", "true"], 2, "--cpus"),
        (
            vec!["run", "--name", "..", "--", "true"],
            125,
            "invalid container name",
        ),
        (
            vec!["run", "--name", "a/../b", "--", "true"],
            125,
            "invalid container name",
        ),
        (
            vec!["run", "--name", &long, "--", "true"],
            125,
            "invalid container name",
        ),
        (
            vec!["run", "--name", "x\u{1b}[2J", "--", "true"],
            125,
            "invalid container name",
        ),
        (vec!["logs", "../../etc"], 125, "invalid container name"),
        (vec!["rm", "/etc/passwd"], 125, "invalid container name"),
    ];
    for (args, code, msg) in &cases {
        expect_error(args, *code, msg);
    }
    let _ = std::fs::remove_file(&link);
    let ls = observer().args(["ls", "-o", "json"]).output().unwrap();
    let list: Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert!(
        !list.to_string().contains("hostroot"),
        "no container was created: {list}"
    );
}

#[test]
fn a_host_without_tracefs_is_told_so() {
    // A private mount namespace where /sys/kernel is an empty tmpfs: no tracefs anywhere and
    // nowhere to mount it. BTF comes from a copy.
    let btf = std::env::temp_dir().join(format!("observer-test-btf-{}", std::process::id()));
    std::fs::copy("/sys/kernel/btf/vmlinux", &btf).expect("kernel BTF");
    let script = format!(
        "mount -t tmpfs none /sys/kernel && exec {} events --btf {}",
        observer_bin(),
        btf.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&btf);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("tracefs"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

/// A bare container (new pid namespace) running a shell under a hostile name with hostile
/// arguments.
struct Odd {
    unshare: Child,
    pidns: u64,
    dir: std::path::PathBuf,
}

impl Drop for Odd {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The odd shell's comm as views show it: the invalid bytes replaced.
const ODD_COMM: &str = "sl\u{fffd}\u{fffd}ep";

fn odd_processes() -> Odd {
    let dir = std::env::temp_dir().join(format!("observer-test-odd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A shell whose name (and so comm) is not UTF-8.
    let name = std::ffi::OsStr::from_bytes(b"sl\xff\xfeep");
    let exe = dir.join(name);
    std::fs::copy("/bin/sh", &exe).unwrap();
    // Its argv: 3 x 60 KiB (each under the kernel's 128 KiB per-argument limit, 180 KiB in
    // all), and an argument that is not UTF-8; the shell ignores them.
    let big = format!("0{}", "0".repeat(60 * 1024));
    let mut unshare = Command::new("unshare");
    unshare
        .args(["--pid", "--fork", "--kill-child", "sh", "-c"])
        .arg(
            "\"$0\" -c 'while :; do sleep 100; done' 1000 \"$1\" \"$1\" \"$1\" \"$2\" & \
             echo ready; wait",
        )
        .arg(&exe)
        .arg(&big)
        .arg(std::ffi::OsStr::from_bytes(b"0\xff"))
        .stdout(Stdio::piped());
    let mut child = unshare.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let sh = eventually(Duration::from_secs(10), "the namespace's shell", || {
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
            .ok()?
            .split_whitespace()
            .next()?
            .parse::<u32>()
            .ok()
    });
    Odd {
        pidns: ns_inode(sh, "pid"),
        unshare: child,
        dir,
    }
}

#[test]
fn huge_and_non_utf8_command_lines_and_names_are_shown_bounded_and_escaped() {
    let events = EventStream::start(&["--type", "exec"]);
    let odd = odd_processes();
    let agent = Agent::start(&[]);
    let pidns = odd.pidns.to_string();
    // The agent starts after the process: its start-up scan must find it, and the pass
    // right after ready read its command line.
    let tree = eventually(
        Duration::from_secs(10),
        "the odd process in the tree with its command line",
        || {
            let t = agent.json(&["tree", &pidns]);
            t["processes"]
                .as_array()?
                .iter()
                .any(|p| p["comm"] == ODD_COMM && p["cmdline"] != "")
                .then_some(t)
        },
    );
    let odd_p = tree["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["comm"] == ODD_COMM)
        .unwrap()
        .clone();

    let cmd = odd_p["cmdline"].as_str().unwrap();
    assert!(
        cmd.contains(" 1000 00"),
        "{}",
        cmd.chars().take(200).collect::<String>()
    );
    assert!(
        cmd.len() < 180 * 1024,
        "argv is bounded: {} bytes shown",
        cmd.len()
    );
    // Every view, text and JSON, works with it.
    for args in [
        vec!["tree", pidns.as_str()],
        vec!["ps"],
        vec!["ps", "-c", pidns.as_str()],
        vec!["containers"],
    ] {
        let (code, out, err) = agent.cli(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(!out.bytes().any(|b| b == 0x1b), "{args:?}");
        let _ = agent.json(&args);
    }
    // The exec event carries the name and a bounded argv.
    let mut events = events;
    let ev = events.wait_for(Duration::from_secs(10), "the odd exec", |v| {
        v["comm"] == ODD_COMM
    });
    let argv = ev["argv"].as_array().expect("argv");
    assert_eq!(argv[1], "-c", "{ev}");
    let captured: usize = argv.iter().map(|a| a.as_str().unwrap().len()).sum();
    assert!(
        captured < 64 * 1024,
        "the kernel captures a bounded argv: {captured} bytes"
    );
}

#[test]
fn containers_that_die_while_they_are_read_give_an_answer_or_a_clear_error() {
    let agent = Agent::start(&[]);
    for round in 0..15 {
        let mut c = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--kill-child",
                "sh",
                "-c",
                "i=0; while [ $i -lt 40 ]; do sleep 100 & i=$((i+1)); done; echo ready; wait",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(c.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let sh: u32 = eventually(Duration::from_secs(10), "the shell", || {
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", c.id()))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
        let pidns = ns_inode(sh, "pid").to_string();
        // Kill it after a delay that moves through the reads, and read meanwhile.
        let pid = c.id();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5 * round));
            // SAFETY: kill(2) on a child of this test.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        });
        for args in [
            vec!["tree", pidns.as_str(), "-o", "json"],
            vec!["tree", pidns.as_str()],
            vec!["ps", "-c", pidns.as_str(), "-o", "json"],
            vec!["containers", "-o", "json"],
        ] {
            let (code, out, err) = agent.cli(&args);
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            match code {
                0 if args.contains(&"json") => {
                    serde_json::from_str::<Value>(&out)
                        .unwrap_or_else(|e| panic!("{args:?}: bad JSON ({e}): {out}"));
                }
                0 => {}
                1 => assert!(err.contains("no container matches"), "{args:?}: {err}"),
                other => panic!("{args:?} exited {other}: {err}"),
            }
        }
        killer.join().unwrap();
        let _ = c.wait();
    }
}
