//! PID reuse. With a tiny kernel.pid_max the PIDs wrap many times while a launcher container
//! keeps running (a zombie its parent never reaps, an adopted orphan, processes dying and
//! orphans adopted in a loop, so their PIDs pass to host processes and back) and the host forks children that exit with the round's number. After every wrap
//! the agent must describe each PID by its current holder only: the start time it holds
//! equals /proc's, the zombies carry this round's exit code, no host child is shown as
//! adopted or inside the container, the container's zombie and orphan keep their identity,
//! and reconciliation has nothing to correct. Every other round the agent is stopped
//! (SIGSTOP) while the PIDs wrap, so it applies a whole wrap's events in one batch and its
//! /proc checks see PIDs already held by processes whose fork it has not read yet. The kernel programs keep no per-PID maps (ring
//! buffer and counters only), so the identity that matters is the table's (pid, start time).
//!
//! Lowering kernel.pid_max is global before Linux 6.14: the test runs in the VM matrix
//! (`OBSERVER_VM` set by the guest's init) and skips on the host.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::common::{agent::*, *};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
/// PIDs wrap to 300 (RESERVED_PIDS): about 100 free ones, so a reaped PID is handed out
/// again within a few forks — often before the kernel's (RCU-deferred) free event of its
/// previous holder.
const PID_MAX: u32 = 400;
const ROUNDS: i32 = 6;
/// Children of each round left unreaped (zombies) while the agent is asked.
const KEEP: usize = 4;

/// Sets kernel.pid_max and puts the old value back on drop.
struct PidMax(String);

impl PidMax {
    fn set(v: u32) -> PidMax {
        let old = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
        std::fs::write("/proc/sys/kernel/pid_max", v.to_string()).unwrap();
        PidMax(old.trim().to_string())
    }
}

impl Drop for PidMax {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/pid_max", &self.0);
    }
}

/// A launcher container removed (forcibly) on drop.
struct Ctr(&'static str);

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = observer().args(["rm", "-f", self.0]).output();
    }
}

/// The container's spawn loop paused until dropped: it blocks (forking nothing) reading a
/// FIFO in its /tmp, so the tree holds still while it is compared with /proc. A loop that
/// slept instead would fork a `sleep` every few milliseconds, always one ahead of a
/// snapshot compared with /proc a moment later on a slow (emulated) machine.
struct Pause(PathBuf);

impl Pause {
    fn new(file: &Path) -> Pause {
        let c = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string path.
        let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(
            r,
            0,
            "mkfifo {}: {}",
            file.display(),
            std::io::Error::last_os_error()
        );
        Pause(file.to_path_buf())
    }
}

impl Drop for Pause {
    /// Opens the FIFO for writing (without blocking: the loop is there, blocked opening it
    /// to read, unless it is between iterations or gone), removes it, so the loop does not
    /// pause again, and releases the reader with a line.
    fn drop(&mut self) {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let deadline = Instant::now() + Duration::from_secs(5);
        let writer = loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.0)
            {
                Ok(f) => break Some(f),
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => break None,
            }
        };
        let _ = std::fs::remove_file(&self.0);
        if let Some(mut w) = writer {
            let _ = w.write_all(b"go\n");
        }
    }
}

/// A process stopped with SIGSTOP until dropped.
struct Stopped(i32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        Stopped(pid as i32)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Children forked and not yet reaped; reaped on drop.
struct Kids(Vec<i32>);

impl Kids {
    /// Forks `n` children exiting with `code`, reaping all but the last `keep`; returns the
    /// PIDs in fork order.
    fn fork(&mut self, n: usize, code: i32, keep: usize) -> Vec<i32> {
        let mut pids = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: the child only calls _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
            if pid == 0 {
                unsafe { libc::_exit(code) };
            }
            pids.push(pid);
            if i + keep < n {
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            } else {
                self.0.push(pid);
            }
        }
        pids
    }

    fn reap(&mut self) {
        for pid in self.0.drain(..) {
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
    }
}

impl Drop for Kids {
    fn drop(&mut self) {
        self.reap();
    }
}

/// Boot-clock start time of `pid` in clock ticks (/proc/PID/stat field 22).
fn proc_start_ticks(pid: u64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

fn ticks_per_s() -> u64 {
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as u64
}

/// Processes the agent lists whose PID /proc shows held by a process started at another
/// time (a stale holder), as "pid: agent start … vs /proc …".
fn stale(ps: &Value) -> BTreeSet<String> {
    let tps = ticks_per_s();
    ps.as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let pid = p["pid"].as_u64()?;
            let ns = p["start_time_ns"].as_u64()?;
            let ticks = proc_start_ticks(pid)?;
            let agent_ticks = ns * tps / 1_000_000_000;
            (agent_ticks.abs_diff(ticks) > 1)
                .then(|| format!("{pid}: agent start {agent_ticks} ticks vs /proc {ticks} ({p})"))
        })
        .collect()
}

fn status(agent: &Agent) -> Value {
    let r = agent.http_get("/v1/status");
    let body = r.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("status: {e}: {r}"))
}

fn corrections(agent: &Agent) -> u64 {
    status(agent)["corrections"].as_u64().expect("corrections")
}

/// Events the kernel says it lost (ring buffer full, or a program's run skipped — newer
/// kernels run tracepoint programs preemptibly and skip a run that would nest). What they
/// described can only come from reconciliation, without exit codes.
fn kernel_lost(agent: &Agent) -> u64 {
    status(agent)["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["dropped"].as_u64().unwrap_or(0) + e["skipped"].as_u64().unwrap_or(0))
        .sum()
}

fn find(list: &Value, pid: u64) -> Option<&Value> {
    list.as_array()?.iter().find(|p| p["pid"] == pid)
}

#[test]
fn wrapped_pids_are_never_attributed_to_an_earlier_holder() {
    if std::env::var_os("OBSERVER_VM").is_none() {
        println!(
            "observer-test-skip: lowers kernel.pid_max for the whole machine: runs in the VM \
             matrix (cargo xtask vm-test)"
        );
        return;
    }
    let _pid_max = PidMax::set(PID_MAX);
    // Each correction reconciliation makes is logged (and shown if the test fails).
    std::env::set_var("RUST_LOG", "info,observer::table=debug");
    let agent = Agent::start(&["--reconcile-interval", "2s"]);
    // One test binary: the agents of later tests keep their default log level.
    std::env::remove_var("RUST_LOG");
    let _ = observer().args(["rm", "-f", "pid-reuse"]).output();
    let out = observer()
        .args(["run", "-d", "--name", "pid-reuse", "--", "sh", "-c"])
        .arg(
            "sh -c 'sleep 0.1 & exec sleep 100000' & \
             sh -c 'sleep 100001 &'; \
             while :; do if [ -p /tmp/pause ]; then read go < /tmp/pause; \
             else sh -c '/bin/true & exit 0'; /bin/true; fi; done",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "observer run: {out:?}");
    let _ctr = Ctr("pid-reuse");

    // The container's zombie (parent `sleep 100000` never reaps) and adopted orphan.
    let (tree, zombie, orphan) = eventually(T, "the container's zombie and adopted orphan", || {
        let tree = agent.json(&["tree", "pid-reuse"]);
        let procs = tree["processes"].as_array()?;
        let z = procs
            .iter()
            .find(|p| p["cmdline"] == "sleep 0.1" && p["state"] == "Z" && p["exit_code"] == 0)?
            .clone();
        let o = procs
            .iter()
            .find(|p| p["cmdline"] == "sleep 100001" && p["adopter"] == "namespace_init")?
            .clone();
        Some((tree.clone(), z, o))
    });
    let corrections0 = corrections(&agent);
    let pid1 = tree["container"]["init_pid"].as_u64().expect("init_pid");
    let pause = PathBuf::from(format!("/proc/{pid1}/root/tmp/pause"));

    let mut kids = Kids(Vec::new());
    let mut wraps = 0;
    let mut last = 0;
    for round in 1..=ROUNDS {
        let stopped = (round % 2 == 0).then(|| Stopped::new(agent.pid()));
        let pids = kids.fork(PID_MAX as usize, round, KEEP);
        drop(stopped);
        for &p in &pids {
            wraps += (p < last) as u32;
            last = p;
        }
        let kept: Vec<u64> = pids[pids.len() - KEEP..]
            .iter()
            .map(|&p| p as u64)
            .collect();
        let me = std::process::id() as u64;

        // The checks compare with /proc read a moment later: the container's spawn loop
        // pauses meanwhile (the PIDs above wrapped while it ran).
        let paused = Pause::new(&pause);
        // This round's zombies, with this round's exit code, the test as their parent, no
        // container and no adoption.
        eventually(T, &format!("round {round}'s zombies in the agent"), || {
            let z = agent.json(&["zombies"]);
            kept.iter()
                .all(|&pid| {
                    find(&z, pid).is_some_and(|e| {
                        (e["exit_code"] == round
                            || e["exit_code"].is_null() && kernel_lost(&agent) > 0)
                            && e["parent_pid"] == me
                            && e["container"].is_null()
                    })
                })
                .then_some(())
        });
        // Every process: the holder the agent describes is /proc's. A stale entry persists;
        // one that only races a process's end does not — asked three times.
        let mut persistent: Option<BTreeSet<String>> = None;
        for _ in 0..3 {
            let now = stale(&agent.json(&["ps"]));
            persistent = Some(match persistent {
                None => now,
                Some(before) => before.intersection(&now).cloned().collect(),
            });
            std::thread::sleep(Duration::from_millis(300));
        }
        let persistent = persistent.unwrap();
        assert!(
            persistent.is_empty(),
            "round {round}: the agent describes earlier holders of these PIDs: {persistent:#?}"
        );
        let ps = agent.json(&["ps"]);
        for &pid in &kept {
            let p = find(&ps, pid).unwrap_or_else(|| panic!("zombie {pid} not listed"));
            assert!(
                p["adopted_from"].is_null() && p["adopter"].is_null(),
                "round {round}: host child {pid} shown as adopted: {p}"
            );
        }
        // The container: its zombie and orphan are still themselves, and the tree equals
        // /proc (every member, nobody else).
        let tree = agent.json(&["tree", "pid-reuse"]);
        for (what, before) in [("zombie", &zombie), ("orphan", &orphan)] {
            let pid = before["pid"].as_u64().unwrap();
            let now = find(&tree["processes"], pid)
                .unwrap_or_else(|| panic!("round {round}: the container's {what} {pid} lost"));
            for k in [
                "start_time_ns",
                "state",
                "exit_code",
                "adopted_from",
                "adopter",
            ] {
                assert_eq!(now[k], before[k], "round {round}: the {what}'s {k} changed");
            }
        }
        let deadline = Instant::now() + T;
        loop {
            let diffs = tree_vs_proc(&agent.json(&["tree", "pid-reuse"]));
            if diffs.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: the container's tree differs from /proc: {diffs:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        drop(paused);
        kids.reap();
    }
    assert!(
        wraps as i32 >= ROUNDS,
        "PIDs wrapped {wraps} times in {ROUNDS} rounds of {PID_MAX} forks"
    );
    let lost = kernel_lost(&agent);
    let fixed = corrections(&agent) - corrections0;
    if lost == 0 {
        assert_eq!(
            fixed, 0,
            "reconciliation had to correct the event-driven table while PIDs wrapped"
        );
    } else {
        // A lost event leaves its process to correct (a lost exit: the zombie, then its end).
        assert!(
            fixed <= 2 * lost,
            "{fixed} corrections for {lost} events the kernel lost"
        );
    }
    println!(
        "pid-reuse: {wraps} wraps of pid_max {PID_MAX}, {ROUNDS} rounds, {fixed} corrections, \
         {lost} events lost in the kernel"
    );
}
