//! A test run leaves the machine as it found it. Before the tests, note what exists
//! (processes, mounts, cgroups, network namespaces, launcher containers); afterwards —
//! also when a test failed or the run was interrupted — tear down what the run shares
//! between its tests (the runtimes' test containers, then the daemons recorded in
//! /run/observer-test/daemons/, then the test-owned state directories), and look again.
//! Anything new that is still there is a leak: it is removed, listed, and fails the run.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use crate::util::output;

/// Test-owned state: every runtime of the tests keeps its roots, sockets and logs here.
const TEST_DIRS: [&str; 2] = ["/run/observer-test", "/var/lib/observer-test"];
const DAEMONS: &str = "/run/observer-test/daemons";
const LAUNCHER_STATE: &str = "/run/observer/containers";
/// Where network namespaces are pinned (iproute2, docker).
const NETNS_DIRS: [&str; 2] = ["/run/netns", "/run/docker/netns"];
/// Parent cgroups the runtimes create below each hierarchy's root for their containers
/// (docker, containerd's `default` namespace, podman's cgroupfs parent, the launcher) and
/// keep after the last one is gone. Made by this run, they are removed with its daemons.
const RUNTIME_PARENTS: [&str; 4] = ["docker", "default", "libpod_parent", "observer"];
/// Command-line words of the programs the tests start.
const MARKERS: [&str; 7] = [
    "observer",
    "dockerd",
    "containerd",
    "conmon",
    "prometheus",
    "runc",
    "unshare",
];

pub struct Before {
    pids: HashSet<u32>,
    mounts: HashSet<String>,
    cgroups: HashSet<PathBuf>,
    netns: HashSet<PathBuf>,
    containers: HashSet<PathBuf>,
    tmp: HashSet<PathBuf>,
}

pub fn before() -> Before {
    Before {
        pids: pids().into_iter().collect(),
        mounts: mounts().into_iter().collect(),
        cgroups: cgroups().into_iter().collect(),
        netns: entries(&NETNS_DIRS),
        containers: entries(&[LAUNCHER_STATE]),
        tmp: tmp_entries(),
    }
}

/// Lets Ctrl-C (or a SIGTERM from CI) end the tests but not this process, so that the
/// teardown still runs. A handler, not SIG_IGN: handlers are reset in the children at exec.
pub fn survive_interrupts() {
    extern "C" fn note(_: libc::c_int) {}
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installs a handler that does nothing.
        unsafe {
            libc::signal(sig, note as *const () as libc::sighandler_t);
        }
    }
}

/// Tears down what the run shared, then fails if anything it started is still there.
pub fn teardown_and_check(b: &Before, observer: &Path) -> Result<()> {
    eprintln!("hygiene: stopping what the tests started, then checking nothing is left");
    stop_test_runtimes();
    stop_daemons();
    let mut leaks = Vec::new();
    for dir in entries(&[LAUNCHER_STATE]).difference(&b.containers) {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        leaks.push(format!("launcher container `{name}`"));
        let _ = Command::new(observer).args(["rm", "-f", &name]).output();
        let _ = std::fs::remove_dir_all(dir);
    }
    // Processes take a moment to go once their daemon or container is stopped.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stray = strays(b);
    while !stray.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        stray = strays(b);
    }
    for (pid, cmd) in &stray {
        leaks.push(format!("process {pid}: {cmd}"));
        // SAFETY: kill(2) on a pid the tests started.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    let mut new_mounts: Vec<String> = mounts()
        .into_iter()
        .filter(|m| !b.mounts.contains(m))
        .collect();
    new_mounts.reverse(); // children before their parents
    for m in &new_mounts {
        leaks.push(format!("mount {m}"));
        umount(m);
    }
    for ns in entries(&NETNS_DIRS).difference(&b.netns) {
        leaks.push(format!("network namespace {}", ns.display()));
        umount(&ns.to_string_lossy());
        let _ = std::fs::remove_file(ns);
    }
    let mut new_cgroups: Vec<PathBuf> = cgroups()
        .into_iter()
        .filter(|c| !b.cgroups.contains(c))
        .collect();
    // Deepest first, so that parents are empty when their turn comes.
    new_cgroups.sort_by_key(|c| std::cmp::Reverse(c.components().count()));
    // A runtime parent and what the runtime keeps under it with no process in it (podman's
    // libpod_parent/conmon) go quietly; a cgroup that still holds a process is a leak.
    let roots = cgroup_roots();
    new_cgroups.retain(|c| {
        let under_parent = roots
            .iter()
            .any(|r| RUNTIME_PARENTS.iter().any(|p| c.starts_with(r.join(p))));
        let empty =
            std::fs::read_to_string(c.join("cgroup.procs")).is_ok_and(|s| s.trim().is_empty());
        !(under_parent && empty && std::fs::remove_dir(c).is_ok())
    });
    for c in &new_cgroups {
        leaks.push(format!("cgroup {}", c.display()));
        let _ = std::fs::remove_dir(c);
    }
    for t in tmp_entries().difference(&b.tmp) {
        leaks.push(format!("temporary file {}", t.display()));
        let _ = std::fs::remove_dir_all(t).or_else(|_| std::fs::remove_file(t));
    }
    // The test-owned roots themselves are the run's own, not leaks: remove them whole.
    for dir in TEST_DIRS {
        remove_tree(Path::new(dir));
    }
    if leaks.is_empty() {
        eprintln!("hygiene: nothing left behind");
        return Ok(());
    }
    bail!(
        "the tests left {} thing(s) behind (removed now):\n  {}",
        leaks.len(),
        leaks.join("\n  ")
    )
}

/// Removes every container of the test-owned runtimes while their daemons still run.
fn stop_test_runtimes() {
    let docker = ["-H", "unix:///run/observer-test/docker.sock"];
    if Path::new("/run/observer-test/docker.sock").exists() {
        if let Some(ids) = output(Command::new("docker").args(docker).args(["ps", "-aq"])) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(docker)
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
    let ctr = ["--address", "/run/observer-test/containerd.sock"];
    if Path::new(ctr[1]).exists() {
        let namespaces = output(Command::new("ctr").args(ctr).args(["ns", "ls", "-q"]));
        for ns in namespaces.iter().flat_map(|s| s.split_whitespace()) {
            let ctr_ns =
                |args: &[&str]| output(Command::new("ctr").args(ctr).args(["-n", ns]).args(args));
            for task in ctr_ns(&["task", "ls", "-q"]).iter().flat_map(|s| s.lines()) {
                let _ = ctr_ns(&["task", "kill", "-s", "KILL", task]);
                let deadline = Instant::now() + Duration::from_secs(5);
                while ctr_ns(&["task", "delete", task]).is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            for c in ctr_ns(&["container", "ls", "-q"])
                .iter()
                .flat_map(|s| s.lines())
            {
                let _ = ctr_ns(&["container", "rm", c]);
            }
        }
    }
    if Path::new("/var/lib/observer-test/podman").exists() {
        let podman = [
            "--root",
            "/var/lib/observer-test/podman",
            "--runroot",
            "/run/observer-test/podman",
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
        ];
        let _ = Command::new("podman")
            .args(podman)
            .args(["pod", "rm", "-af", "-t", "0"])
            .output();
        let _ = Command::new("podman")
            .args(podman)
            .args(["rm", "-af", "-t", "0"])
            .output();
    }
}

/// SIGTERM to every daemon the tests recorded, SIGKILL to those still there after 15 s.
fn stop_daemons() {
    let Ok(dir) = std::fs::read_dir(DAEMONS) else {
        return;
    };
    let pids: Vec<(i32, String)> = dir
        .flatten()
        .filter_map(|e| {
            let pid = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((pid, e.file_name().to_string_lossy().into_owned()))
        })
        .collect();
    for (pid, name) in &pids {
        eprintln!("hygiene: stopping {name} ({pid})");
        // SAFETY: kill(2) on a daemon the tests started.
        unsafe { libc::kill(*pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while pids.iter().any(|(p, _)| alive(*p as u32)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (pid, _) in &pids {
        if alive(*pid as u32) {
            // SAFETY: as above.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, r)| !r.starts_with('Z'))
    })
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Processes started during the run that are still alive and look like the tests' own:
/// daemons (reparented to PID 1), members of other pid namespaces, or programs the tests
/// run. Returns (pid, command line).
fn strays(b: &Before) -> Vec<(u32, String)> {
    let me = std::process::id();
    let host_pidns = std::fs::read_link("/proc/self/ns/pid").ok();
    pids()
        .into_iter()
        .filter(|p| *p != me && !b.pids.contains(p) && alive(*p))
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let ppid: u32 = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
            if ppid == 2 || p == 2 {
                return None; // kernel threads
            }
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let other_ns = std::fs::read_link(format!("/proc/{p}/ns/pid")).ok() != host_pidns;
            let ours = ppid == 1 || other_ns || MARKERS.iter().any(|m| cmd.contains(m));
            ours.then(|| (p, cmd.trim().to_string()))
        })
        .collect()
}

/// Mount points, in mount order.
fn mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

fn umount(target: &str) {
    let Ok(c) = std::ffi::CString::new(target) else {
        return;
    };
    // SAFETY: umount2 with a valid C string; MNT_DETACH never blocks.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// Where each cgroup hierarchy (v1 and v2) is mounted.
fn cgroup_roots() -> HashSet<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mi.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fs = post.split(' ').next()?;
            let at = pre.split(' ').nth(4)?;
            (fs == "cgroup" || fs == "cgroup2").then(|| PathBuf::from(at))
        })
        .collect()
}

/// Every cgroup directory of every mounted hierarchy.
fn cgroups() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = cgroup_roots().into_iter().collect();
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path());
                stack.push(e.path());
            }
        }
    }
    out
}

fn entries(dirs: &[&str]) -> HashSet<PathBuf> {
    dirs.iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .collect()
}

/// What the tests may leave in the temporary directory.
fn tmp_entries() -> HashSet<PathBuf> {
    entries(&["/tmp"])
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("observer"))
        })
        .collect()
}

/// Removes a directory tree, unmounting whatever is mounted inside it first.
fn remove_tree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let prefix = format!("{}/", dir.display());
    let mut inside: Vec<String> = mounts()
        .into_iter()
        .filter(|m| m.starts_with(&prefix) || m == &dir.to_string_lossy())
        .collect();
    inside.reverse();
    for m in &inside {
        umount(m);
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("hygiene: could not remove {}: {e}", dir.display());
    }
}
