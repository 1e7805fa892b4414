//! A test run leaves the machine as it found it, and touches nothing that is not its own.
//! The tests run under a runner that is a child subreaper (runner.rs), so the run's
//! processes are known positively: the ones that descend from the runner. Afterwards —
//! also when a test failed or the run was interrupted — the hygiene tears down what the run
//! shares between its tests, then looks for what the run left. What is the run's:
//!
//! | thing                | the run's when                                              |
//! |----------------------|-------------------------------------------------------------|
//! | process              | it descends from the runner                                 |
//! | test runtime         | its recorded daemon descends from the runner; a podman      |
//! |                      | container, when its conmon does (runtimes.rs)               |
//! | launcher container   | it appeared during the run, and its shim or PID 1 descends  |
//! |                      | from the runner, or its shim was reaped by the runner       |
//! | mount                | it appeared under the run's TMPDIR or the test-owned dirs   |
//! | network namespace    | its pin appeared during the run, a run process was in it,   |
//! |                      | and no other process is                                     |
//! | cgroup               | it appeared during the run and held a run process, or is a  |
//! |                      | run container's, or (empty) is the parent a runtime of the  |
//! |                      | run makes (`/docker`, `/default`, `/libpod_parent`,         |
//! |                      | `/observer` when the run had launcher containers)           |
//! | temporary file       | it is in the run's own TMPDIR                               |
//! | test-owned dirs      | /run/observer-test, /var/lib/observer-test, unless a daemon |
//! |                      | this run did not start still works there                    |
//!
//! What is the run's and still there is a leak: removed, listed, and it fails the run
//! (runtime parents and the TMPDIR's other files go quietly). Anything else is never
//! signalled, unmounted or removed; at most it is mentioned in a note.

mod host;
mod runner;
mod runtimes;
pub mod selfcheck;

use std::{
    collections::HashSet,
    fmt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
pub use runner::{runner_main, Run, RUNNER_CMD};
use runtimes::{TestRuntimes, TEST_DIRS};

const LAUNCHER_STATE: &str = "/run/observer/containers";
/// The launcher's cgroup parent (observer/src/containers/cgroup.rs `LAUNCHER_PARENT`).
const LAUNCHER_PARENT: &str = "observer";
/// Where network namespaces are pinned (iproute2, docker, podman).
const NETNS_DIRS: [&str; 2] = ["/run/netns", "/run/docker/netns"];

/// What existed before the run (what appears later may be the run's).
pub struct Before {
    mounts: HashSet<PathBuf>,
    cgroups: HashSet<PathBuf>,
    netns: HashSet<PathBuf>,
    containers: HashSet<PathBuf>,
}

pub fn before() -> Before {
    Before {
        mounts: host::mounts().into_iter().collect(),
        cgroups: host::cgroups().into_iter().collect(),
        netns: host::entries(&NETNS_DIRS),
        containers: host::entries(&[LAUNCHER_STATE]),
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

/// Something of the run's that was still there at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leak {
    Container(String),
    Process(u32, String),
    Mount(PathBuf),
    Netns(PathBuf),
    Cgroup(PathBuf),
    Tmp(PathBuf),
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Leak::Container(n) => write!(f, "launcher container `{}`", n.escape_debug()),
            Leak::Process(pid, cmd) => write!(f, "process {pid}: {}", cmd.escape_debug()),
            Leak::Mount(m) => write!(f, "mount {}", m.display()),
            Leak::Netns(p) => write!(f, "network namespace {}", p.display()),
            Leak::Cgroup(c) => write!(f, "cgroup {}", c.display()),
            Leak::Tmp(t) => write!(f, "temporary file {}", t.display()),
        }
    }
}

/// What the hygiene found: the run's leaks (removed now), and notes on things it left alone.
#[derive(Debug, Default)]
pub struct Report {
    pub leaks: Vec<Leak>,
    pub notes: Vec<String>,
}

impl Report {
    /// Prints the notes; an error listing the leaks, if any.
    pub fn into_result(self) -> Result<()> {
        for n in &self.notes {
            eprintln!("hygiene: note: {n}");
        }
        if self.leaks.is_empty() {
            eprintln!("hygiene: nothing of the run's left behind");
            return Ok(());
        }
        let list: Vec<String> = self.leaks.iter().map(Leak::to_string).collect();
        bail!(
            "the tests left {} thing(s) behind (removed now):\n  {}",
            list.len(),
            list.join("\n  ")
        )
    }
}

/// What the run's processes were seen to use before they were stopped.
#[derive(Default)]
struct Seen {
    netns: HashSet<u64>,
    cgroups: HashSet<PathBuf>,
}

impl Seen {
    /// Notes the network namespaces of the run's live processes and the cgroups (new since
    /// `b`) that hold them.
    fn observe(&mut self, b: &Before, root: u32) -> HashSet<u32> {
        let pids = host::descendants(root);
        self.netns
            .extend(pids.iter().filter_map(|p| host::net_ns(*p)));
        for c in host::cgroups()
            .into_iter()
            .filter(|c| !b.cgroups.contains(c))
        {
            if host::cgroup_procs(&c).iter().any(|p| pids.contains(p)) {
                self.cgroups.insert(c);
            }
        }
        pids
    }
}

/// Tears down what the run started (its test runtimes when `test_dirs`: the test command's
/// run owns the test-owned directories), then reports what of the run's is still there.
pub fn teardown(b: &Before, run: &mut Run, observer: &Path, test_dirs: bool) -> Report {
    eprintln!("hygiene: stopping what the run started, then checking nothing of it is left");
    let root = run.root();
    let mut r = Report::default();
    let mut seen = Seen::default();
    let pids = seen.observe(b, root);
    let rt = if test_dirs {
        TestRuntimes::find(&pids)
    } else {
        TestRuntimes::none()
    };
    let foreign = rt.foreign();
    rt.stop(&pids, &mut r.notes);
    let (launcher_cgroups, launcher_used) = launcher_containers(b, run, observer, &mut r);
    processes(b, root, &mut seen, &mut r);
    let mut owned_dirs = vec![run.tmp.clone()];
    if test_dirs && foreign.is_empty() {
        owned_dirs.extend(TEST_DIRS.map(PathBuf::from));
    }
    mounts(b, &owned_dirs, &mut r);
    netns(b, &seen, &mut r);
    let mut parents = rt.parents();
    if launcher_used {
        parents.push(LAUNCHER_PARENT);
    }
    seen.cgroups.extend(launcher_cgroups);
    cgroups(b, &seen.cgroups, &parents, &mut r);
    tmp(&run.tmp, &mut r);
    if test_dirs && foreign.is_empty() {
        // The test-owned roots themselves are the run's own, not leaks: removed whole.
        for dir in TEST_DIRS {
            host::remove_tree(Path::new(dir));
        }
    } else if test_dirs {
        r.notes.push(format!(
            "kept {}: {} there was not started by this run",
            TEST_DIRS.join(" and "),
            foreign.join(", ")
        ));
    }
    r
}

/// Removes the run's launcher containers; returns their cgroups, and whether there were any.
fn launcher_containers(
    b: &Before,
    run: &mut Run,
    observer: &Path,
    r: &mut Report,
) -> (Vec<PathBuf>, bool) {
    let live = host::descendants(run.root());
    let reaped = run.reaped().to_vec();
    let mut cgroups = Vec::new();
    let mut any = false;
    for dir in host::entries(&[LAUNCHER_STATE]).difference(&b.containers) {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let json = |f: &str| -> serde_json::Value {
            std::fs::read(dir.join(f))
                .ok()
                .and_then(|s| serde_json::from_slice(&s).ok())
                .unwrap_or_default()
        };
        let (state, config) = (json("state.json"), json("config.json"));
        let pid = |k: &str| state[k].as_u64().and_then(|p| u32::try_from(p).ok());
        let (shim, init) = (pid("shim_pid"), pid("pid"));
        let created = config["created"].as_u64().unwrap_or(u64::MAX);
        let ours = [shim, init]
            .into_iter()
            .flatten()
            .any(|p| live.contains(&p))
            || shim.is_some_and(|s| reaped.iter().any(|x| x.pid == s && x.at >= created));
        if !ours {
            if ![shim, init].into_iter().flatten().any(host::alive) {
                r.notes.push(format!(
                    "launcher container `{}` appeared during the run and is not running; not provably the run's: left alone",
                    name.escape_debug()
                ));
            }
            continue;
        }
        any = true;
        r.leaks.push(Leak::Container(name.to_string()));
        let paths = config["cgroups"].as_array().cloned().unwrap_or_default();
        cgroups.extend(paths.iter().filter_map(|p| p.as_str().map(PathBuf::from)));
        let _ = Command::new(observer).args(["rm", "-f", &name]).output();
        let _ = std::fs::remove_dir_all(dir);
    }
    (cgroups, any)
}

/// Waits for the run's processes to end now that their daemons and containers are gone
/// (up to 10 s, or until none has ended for 3 s); kills those that do not.
fn processes(b: &Before, root: u32, seen: &mut Seen, r: &mut Report) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = seen.observe(b, root);
    let mut changed = Instant::now();
    while !left.is_empty() && Instant::now() < deadline && changed.elapsed().as_secs() < 3 {
        std::thread::sleep(Duration::from_millis(200));
        let now = seen.observe(b, root);
        if now != left {
            changed = Instant::now();
        }
        left = now;
    }
    let mut left: Vec<u32> = left.into_iter().collect();
    left.sort_unstable();
    for pid in left {
        r.leaks.push(Leak::Process(pid, host::cmdline(pid)));
        // SAFETY: kill(2) on a process of this run (it descends from the runner).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// New mounts under the run's directories are its leaks; other new ones are noted.
fn mounts(b: &Before, owned: &[PathBuf], r: &mut Report) {
    let mut new: Vec<PathBuf> = host::mounts()
        .into_iter()
        .filter(|m| !b.mounts.contains(m))
        .filter(|m| !NETNS_DIRS.iter().any(|d| m.starts_with(d))) // netns() judges pins
        .collect();
    new.reverse(); // children before their parents
    for m in new {
        if owned.iter().any(|o| m.starts_with(o)) {
            host::umount(&m);
            r.leaks.push(Leak::Mount(m));
        } else {
            r.notes.push(format!(
                "mount {} appeared during the run; not provably the run's: left alone",
                m.display()
            ));
        }
    }
}

/// New pins of a namespace the run's processes were in, and no process is in now (the run's
/// are gone; the host's namespace is never one), are the run's leaks.
fn netns(b: &Before, seen: &Seen, r: &mut Report) {
    let in_use: HashSet<u64> = host::processes()
        .into_keys()
        .filter_map(host::net_ns)
        .collect();
    for ns in host::entries(&NETNS_DIRS).difference(&b.netns) {
        let ours = host::inode(ns).is_some_and(|i| seen.netns.contains(&i) && !in_use.contains(&i));
        if ours {
            host::umount(ns);
            let _ = std::fs::remove_file(ns);
            r.leaks.push(Leak::Netns(ns.clone()));
        } else {
            r.notes.push(format!(
                "network namespace {} appeared during the run; not provably the run's: left alone",
                ns.display()
            ));
        }
    }
}

/// New cgroups: the run's (`owned`, and what lies below them) are leaks. The parents the
/// run's runtimes made (`parents`, below a hierarchy's root) go quietly when empty, with
/// podman's `libpod_parent/conmon`. Other empty ones are noted (one may be another's
/// container about to start); cgroups holding other processes are none of the run's business.
fn cgroups(b: &Before, owned: &HashSet<PathBuf>, parents: &[&str], r: &mut Report) {
    let roots = host::cgroup_roots();
    let mut quiet: HashSet<PathBuf> = HashSet::new();
    for root in &roots {
        quiet.extend(parents.iter().map(|p| root.join(p)));
        if parents.contains(&"libpod_parent") {
            quiet.insert(root.join("libpod_parent/conmon"));
        }
    }
    let mut new: Vec<PathBuf> = host::cgroups()
        .into_iter()
        .filter(|c| !b.cgroups.contains(c))
        .collect();
    // Deepest first, so that parents are empty when their turn comes.
    new.sort_by_key(|c| std::cmp::Reverse(c.components().count()));
    let mut noted = Vec::new();
    for c in new {
        if owned.iter().any(|o| c.starts_with(o)) {
            host::remove_cgroup(&c);
            r.leaks.push(Leak::Cgroup(c));
        } else if host::cgroup_empty(&c) && !(quiet.contains(&c) && std::fs::remove_dir(&c).is_ok())
        {
            noted.push(c.display().to_string());
        }
    }
    if !noted.is_empty() {
        r.notes.push(format!(
            "empty cgroup(s) appeared during the run; not provably the run's: left alone: {}",
            noted.join(", ")
        ));
    }
}

/// The run's TMPDIR goes; what the tests put there (`observer*`) and left is a leak.
fn tmp(dir: &Path, r: &mut Report) {
    let mut left: Vec<PathBuf> = host::entries(&[&dir.to_string_lossy()])
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("observer"))
        })
        .collect();
    left.sort();
    r.leaks.extend(left.into_iter().map(Leak::Tmp));
    host::remove_tree(dir);
}
