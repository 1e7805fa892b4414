//! The container runtimes the tests start in test-owned roots (observer/tests/it/common/
//! runtimes.rs): dockerd and containerd, recorded in /run/observer-test/daemons/, and
//! podman (no daemon; its conmon processes). A runtime is the run's when its daemon
//! descends from the run's runner; only then are its containers removed and the daemon
//! stopped. A recorded daemon that is alive but was started by someone else (a test run
//! outside `cargo xtask test`) is left running, and so are the test-owned directories it
//! works in.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use super::host;
use crate::util::output;

/// Test-owned state: every runtime of the tests keeps its roots, sockets and logs here.
pub const TEST_DIRS: [&str; 2] = ["/run/observer-test", "/var/lib/observer-test"];
const DAEMONS: &str = "/run/observer-test/daemons";
const DOCKER: [&str; 2] = ["-H", "unix:///run/observer-test/docker.sock"];
const CTR: [&str; 2] = ["--address", "/run/observer-test/containerd.sock"];
const PODMAN: [&str; 8] = [
    "--root",
    "/var/lib/observer-test/podman",
    "--runroot",
    "/run/observer-test/podman",
    "--runtime",
    "runc",
    "--cgroup-manager",
    "cgroupfs",
];

/// A daemon recorded in the test-owned registry that is alive.
struct Daemon {
    name: String,
    pid: u32,
    ours: bool,
}

/// The test runtimes as the end of a run finds them.
pub struct TestRuntimes {
    daemons: Vec<Daemon>,
    podman: bool,
}

impl TestRuntimes {
    /// For a run that does not use the test runtimes.
    pub fn none() -> TestRuntimes {
        TestRuntimes {
            daemons: Vec::new(),
            podman: false,
        }
    }

    /// The recorded daemons that are alive and are still the program recorded (a stale
    /// record whose pid now names another program is ignored); `run` is the run's processes.
    pub fn find(run: &HashSet<u32>) -> TestRuntimes {
        let files = std::fs::read_dir(DAEMONS)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_else(|_| Vec::new());
        let daemons = files
            .iter()
            .filter_map(|f| {
                let name = f
                    .file_name()?
                    .to_str()?
                    .trim_end_matches(".pid")
                    .to_string();
                let pid: u32 = std::fs::read_to_string(f).ok()?.trim().parse().ok()?;
                let argv0 = host::cmdline(pid);
                let prog = argv0.split(' ').next()?.rsplit('/').next()?;
                (host::alive(pid) && prog == name).then(|| Daemon {
                    ours: run.contains(&pid),
                    name,
                    pid,
                })
            })
            .collect();
        TestRuntimes {
            daemons,
            podman: Path::new(PODMAN[1]).exists(),
        }
    }

    fn ours(&self, name: &str) -> bool {
        self.daemons.iter().any(|d| d.name == name && d.ours)
    }

    /// Recorded daemons this run did not start, as "dockerd (pid 123)".
    pub fn foreign(&self) -> Vec<String> {
        self.daemons
            .iter()
            .filter(|d| !d.ours)
            .map(|d| format!("{} (pid {})", d.name, d.pid))
            .collect()
    }

    /// The cgroup parents below each hierarchy's root that the run's runtimes create for
    /// their containers (and keep when the last one is gone).
    pub fn parents(&self) -> Vec<&'static str> {
        let mut p = Vec::new();
        if self.ours("dockerd") {
            p.push("docker");
        }
        if self.ours("containerd") {
            p.push("default");
        }
        if self.podman && self.foreign().is_empty() {
            p.push("libpod_parent");
        }
        p
    }

    /// Removes the containers of the run's runtimes while their daemons still run, then
    /// stops the run's daemons.
    pub fn stop(&self, run: &HashSet<u32>, notes: &mut Vec<String>) {
        if self.ours("dockerd") {
            stop_docker();
        }
        if self.ours("containerd") {
            stop_containerd();
        }
        if self.podman && self.foreign().is_empty() {
            stop_podman(run, notes);
        }
        let ours: Vec<&Daemon> = self.daemons.iter().filter(|d| d.ours).collect();
        stop_daemons(&ours);
    }
}

fn stop_docker() {
    let Some(ids) = output(Command::new("docker").args(DOCKER).args(["ps", "-aq"])) else {
        return;
    };
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(DOCKER)
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
}

fn stop_containerd() {
    let namespaces = output(Command::new("ctr").args(CTR).args(["ns", "ls", "-q"]));
    for ns in namespaces.iter().flat_map(|s| s.split_whitespace()) {
        let ctr_ns =
            |args: &[&str]| output(Command::new("ctr").args(CTR).args(["-n", ns]).args(args));
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

/// podman has no daemon: a container in the test root is the run's when it is not running
/// or its conmon is a process of the run; a pod, when all its containers are.
fn stop_podman(run: &HashSet<u32>, notes: &mut Vec<String>) {
    let podman = |args: &[&str]| output(Command::new("podman").args(PODMAN).args(args));
    let ids = podman(&["ps", "-aq", "--no-trunc"]).unwrap_or_default();
    let ids: Vec<&str> = ids.split_whitespace().collect();
    // id → (conmon pid, pod id)
    let mut containers: HashMap<String, (u32, String)> = HashMap::new();
    if !ids.is_empty() {
        let fmt = "{{.Id}} {{.State.ConmonPid}} {{.Pod}}";
        let mut args = vec!["inspect", "--format", fmt];
        args.extend(&ids);
        for l in podman(&args).unwrap_or_default().lines() {
            let mut f = l.split_whitespace();
            let (Some(id), Some(conmon)) = (f.next(), f.next()) else {
                continue;
            };
            let pod = f.next().unwrap_or("").to_string();
            containers.insert(id.to_string(), (conmon.parse().unwrap_or(0), pod));
        }
    }
    let foreign = |(conmon, _): &(u32, String)| *conmon != 0 && !run.contains(conmon);
    let foreign_pods: HashSet<&str> = containers
        .values()
        .filter(|c| foreign(c))
        .map(|(_, pod)| pod.as_str())
        .collect();
    for (id, c) in containers.iter().filter(|(_, c)| foreign(c)) {
        let short: String = id.chars().take(12).collect();
        notes.push(format!(
            "podman container {short} in the test root runs under conmon {}, not started by this run: left alone",
            c.0
        ));
    }
    let pods = podman(&["pod", "ps", "-q", "--no-trunc"]).unwrap_or_default();
    for pod in pods
        .split_whitespace()
        .filter(|p| !foreign_pods.contains(p))
    {
        let _ = podman(&["pod", "rm", "-f", "-t", "0", pod]);
    }
    for (id, c) in &containers {
        if !foreign(c) && (c.1.is_empty() || !foreign_pods.contains(c.1.as_str())) {
            let _ = podman(&["rm", "-f", "-t", "0", id]);
        }
    }
}

/// SIGTERM to each of the run's daemons, SIGKILL to those still there after 15 s.
fn stop_daemons(daemons: &[&Daemon]) {
    for d in daemons {
        eprintln!("hygiene: stopping {} ({})", d.name, d.pid);
        // SAFETY: kill(2) on a daemon this run started (it descends from the runner).
        unsafe { libc::kill(d.pid as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while daemons.iter().any(|d| host::alive(d.pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for d in daemons {
        if host::alive(d.pid) {
            // SAFETY: as above.
            unsafe { libc::kill(d.pid as i32, libc::SIGKILL) };
        }
    }
}
