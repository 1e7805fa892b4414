//! Cgroups named by someone hostile — any user with a delegated subtree (a systemd user
//! slice, rootless podman) names its own cgroups. The names that crashed the agent at every
//! start (`machine-\xaé.scope`), bytes that are not UTF-8, 255-byte names of multi-byte
//! characters, terminal escapes and other control characters, a chain 50 deep, and a
//! `nobody` process in `user.slice/…/docker-<64 hex>.scope` posing as a Docker container:
//! with processes in each (on the host and in pid namespaces of their own, with zombies),
//! found by the agent's start-up scan and by its events, the agent keeps running and
//! answering, every view exits 0 with and without it, and the impostor is no container.
//! Made under the cgroup2 mount found in /proc/self/mountinfo (hybrid hosts and the VM
//! matrix's pure-v2 guests alike); everything made is removed, also on failure. Run as root.

use std::{
    ffi::OsStr,
    os::unix::{ffi::OsStrExt, io::AsRawFd, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::common::{self, agent::Agent, cgroup2_mount, eventually, first_child, observer};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
/// The impostor's id: 64 hex, as Docker's.
const IMPOSTOR: &str = "0b5e7e5700000000000000000000000000000000000000000000000000000bad";

/// The cgroups and processes the test made, stopped and removed however it ends.
#[derive(Default)]
struct Hostile {
    /// Directories in creation order (parents first).
    dirs: Vec<PathBuf>,
    /// Processes started (sleeps and `unshare`s), with the PID 1 of the namespace an
    /// `unshare` made.
    kids: Vec<(Child, Option<u32>)>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        for (kid, init) in &mut self.kids {
            // PID 1 of its namespace, only while it is still that unshare's child.
            if let Some(i) = *init {
                if first_child(kid.id()) == Some(i) {
                    unsafe { libc::kill(i as i32, libc::SIGKILL) };
                }
            }
            let _ = kid.kill();
            let _ = kid.wait();
        }
        for d in self.dirs.iter().rev() {
            // Exited processes take a moment to leave their cgroup.
            for _ in 0..100 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Hostile {
    /// Makes `dir` (its parent exists); false when the kernel refuses the name.
    fn mkdir(&mut self, dir: PathBuf) -> bool {
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                self.dirs.push(dir);
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
            Err(e) => panic!("mkdir {:?}: {e}", dir.as_os_str()),
        }
    }

    /// `dir`, made unless it exists (then it is not ours to remove).
    fn ensure(&mut self, dir: PathBuf) -> PathBuf {
        if !dir.is_dir() {
            assert!(self.mkdir(dir.clone()), "mkdir {}", dir.display());
        }
        dir
    }

    /// Starts `cmd` inside the cgroup `dir`: the child moves itself in before it execs, so
    /// everything it forks starts there too.
    fn spawn_in(&mut self, dir: &Path, mut cmd: Command, pidns: bool) -> u32 {
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .unwrap_or_else(|e| panic!("open {:?}/cgroup.procs: {e}", dir.as_os_str()));
        let fd = procs.as_raw_fd();
        // SAFETY: only write(2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start a process in a hostile cgroup");
        drop(procs);
        let pid = child.id();
        let init = pidns.then(|| eventually(T, "the namespace's PID 1", || first_child(pid)));
        self.kids.push((child, init));
        init.unwrap_or(pid)
    }
}

fn sleep() -> Command {
    let mut c = Command::new("sleep");
    c.arg("3600");
    c
}

/// PID 1 of a new pid namespace that leaves a child unreaped: a bare container with a zombie.
fn bare_with_zombie() -> Command {
    let mut c = Command::new("/usr/bin/unshare");
    c.args(["--pid", "--fork", "sh", "-c", "sleep 0 & exec sleep 3600"]);
    c
}

/// A `nobody` process.
fn nobody() -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sleep",
        "3600",
    ]);
    c
}

fn path(parent: &Path, name: &[u8]) -> PathBuf {
    parent.join(OsStr::from_bytes(name))
}

/// A cgroup's path as /proc/<pid>/cgroup writes it (relative to the hierarchy's root),
/// decoded as observer decodes it; and as the agent may show it: the kernel side keeps
/// 255 bytes of the path of a cgroup attach (observer_common::CGROUP_PATH_LEN), so a longer
/// path a process entered while the agent ran is shown cut there.
fn rel(root: &Path, dir: &Path) -> [String; 2] {
    let r = dir.strip_prefix(root).unwrap().as_os_str().as_bytes();
    let full = [b"/", r].concat();
    let cut = &full[..full.len().min(255)];
    [full.as_slice(), cut].map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The name a process's cgroup gives it in the views.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    /// A host process: no container.
    Host,
    /// PID 1 of its own pid namespace: a bare container.
    Bare,
    /// The container of a runtime's layout (systemd-nspawn's machines): runtime and id.
    Container(&'static str, String),
}

/// The name that crashed the agent, where systemd-nspawn's machines are: a machine named
/// by the name unescaped (`\xa` is no escape; `é` stays).
const MACHINE: &[u8] = b"machine-\\xa\xc3\xa9.scope";
const MACHINE_ID: &str = "\\xa\u{e9}";

/// Makes the hostile cgroups under `root`: the directories to start processes in.
fn make(h: &mut Hostile, root: &Path) -> Vec<PathBuf> {
    let top = h.ensure(root.join(format!("observer-test-hostile-{}", std::process::id())));
    let mut leaves = Vec::new();
    let names: Vec<Vec<u8>> = vec![
        MACHINE.to_vec(),
        b"not-utf8-\xff\xfe\xc3(".to_vec(),
        [&"é".repeat(127).into_bytes()[..], b"x"].concat(),
        b"escapes-\x1b]0;PWNED\x07\x1b[2J\r\t\x7f".to_vec(),
    ];
    assert_eq!(names[2].len(), 255);
    for n in &names {
        let d = path(&top, n);
        assert!(h.mkdir(d.clone()), "mkdir {:?}", d.as_os_str());
        leaves.push(d);
    }
    // A newline would let a name add lines to /proc/<pid>/cgroup: kernels since 4.16 refuse
    // it; where one accepts it, it is one more hostile name.
    let nl = path(&top, b"newline\n0::docker-x");
    if h.mkdir(nl.clone()) {
        leaves.push(nl);
    }
    let mut deep = top.clone();
    for i in 0..50 {
        deep = path(&deep, format!("d{i}-\u{e9}\\x").as_bytes());
        assert!(h.mkdir(deep.clone()), "depth {i}");
    }
    leaves.push(deep);
    leaves
}

/// machine.slice/<MACHINE>.
fn machine_cgroup(h: &mut Hostile, root: &Path) -> PathBuf {
    let machines = h.ensure(root.join("machine.slice"));
    let m = path(&machines, MACHINE);
    assert!(h.mkdir(m.clone()));
    m
}

/// The impostor's cgroup: user.slice/user-65534.slice/docker-<64 hex>.scope.
fn impostor_cgroup(h: &mut Hostile, root: &Path) -> PathBuf {
    let users = h.ensure(root.join("user.slice"));
    let me = h.ensure(users.join("user-65534.slice"));
    let d = me.join(format!("docker-{IMPOSTOR}.scope"));
    assert!(h.mkdir(d.clone()));
    d
}

/// Every view, text and JSON, with the agent and without: exit 0, no panic. The JSON
/// answers of `ps` and `containers`.
fn every_view(socket: &Path, tree_pid: u32) -> (Value, Value) {
    let pid = tree_pid.to_string();
    let mut answers = Vec::new();
    for view in [
        vec!["containers"],
        vec!["ps"],
        vec!["tree", pid.as_str()],
        vec!["zombies"],
        vec!["pods"],
    ] {
        for fmt in ["text", "json"] {
            let out = observer()
                .args(&view)
                .args(["-o", fmt, "--socket"])
                .arg(socket)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !err.contains("panicked"),
                "observer {view:?} -o {fmt}: {err}"
            );
            assert!(
                out.status.success(),
                "observer {view:?} -o {fmt} --socket {}: {:?}: {err}",
                socket.display(),
                out.status
            );
            if fmt == "json" {
                let v: Value = serde_json::from_slice(&out.stdout)
                    .unwrap_or_else(|e| panic!("observer {view:?}: bad JSON: {e}"));
                answers.push(v);
            }
        }
    }
    (answers[1].clone(), answers[0].clone())
}

/// What `ps -o json` says of `pid`.
fn process(ps: &Value, pid: u32) -> Option<&Value> {
    ps.as_array()?.iter().find(|p| p["pid"] == pid)
}

/// Whether a view's `cgroup` is `path`, whole: the agent takes a path the kernel side cut
/// (`rel`) whole from its cgroup2 id.
fn shows(v: &Value, path: &[String; 2], _agent: bool) -> bool {
    v.as_str() == Some(path[0].as_str())
}

/// One process the test started: its pid, its cgroup as the views show it, what it is.
struct Proc {
    pid: u32,
    /// The path and the path cut as the agent may show it (`rel`).
    cgroup: [String; 2],
    expect: Expect,
}

/// Checks the views' facts: every process listed in its cgroup and as what it is (host,
/// bare container, nspawn machine); no other hostile cgroup names a container, and the
/// impostor (uid 65534) is a host process.
fn check_facts(ps: &Value, containers: &Value, procs: &[Proc], impostor: u32, agent: bool) {
    let list = containers.as_array().expect("containers");
    for Proc {
        pid,
        cgroup,
        expect,
    } in procs
    {
        let p = process(ps, *pid).unwrap_or_else(|| panic!("pid {pid} ({cgroup:?}) not listed"));
        assert!(shows(&p["cgroup"], cgroup, agent), "{cgroup:?}: {p}");
        let of = list.iter().find(|c| c["short_id"] == p["container"]);
        match expect {
            Expect::Host => assert_eq!(p["container"], Value::Null, "in {cgroup:?}: {p}"),
            Expect::Bare => {
                let c = of.unwrap_or_else(|| panic!("no container for {p}"));
                assert_eq!(c["runtime"], "bare", "{c}");
                assert_eq!(c["init_pid"], *pid, "{c}");
            }
            Expect::Container(rt, id) => {
                let c = of.unwrap_or_else(|| panic!("no container for {p}"));
                assert_eq!(
                    (&c["runtime"], c["id"].as_str()),
                    (&(*rt).into(), Some(id.as_str()))
                );
                assert!(shows(&c["cgroup"], cgroup, agent), "{cgroup:?}: {c}");
            }
        }
    }
    for c in list {
        assert_ne!(
            c["id"], IMPOSTOR,
            "the impostor is listed as a container: {c}"
        );
        let named = procs
            .iter()
            .any(|p| p.expect == Expect::Host && shows(&c["cgroup"], &p.cgroup, true));
        assert!(!named, "a hostile cgroup named a container: {c}");
    }
    let me = process(ps, impostor).expect("the impostor is listed as a process");
    assert_eq!(me["uid"], 65534, "{me}");
}

#[test]
fn hostile_cgroup_names_crash_nothing_and_impersonate_no_container() {
    let root = cgroup2_mount();
    let mut h = Hostile::default();
    let leaves = make(&mut h, &root);
    let machine = machine_cgroup(&mut h, &root);
    let fake = impostor_cgroup(&mut h, &root);
    let mut procs: Vec<Proc> = Vec::new();
    let start_all = |h: &mut Hostile, procs: &mut Vec<Proc>| {
        let nspawn = Expect::Container("nspawn", MACHINE_ID.into());
        for (d, host) in leaves
            .iter()
            .map(|d| (d, Expect::Host))
            .chain([(&machine, nspawn.clone())])
        {
            let bare = if host == Expect::Host {
                Expect::Bare
            } else {
                host.clone()
            };
            for (cmd, pidns, expect) in [(sleep(), false, host), (bare_with_zombie(), true, bare)] {
                let pid = h.spawn_in(d, cmd, pidns);
                let cgroup = rel(&root, d);
                procs.push(Proc {
                    pid,
                    cgroup,
                    expect,
                });
            }
        }
    };
    // Before the agent starts: its start-up scan meets them.
    start_all(&mut h, &mut procs);
    let impostor = h.spawn_in(&fake, nobody(), false);
    let cgroup = rel(&root, &fake);
    procs.push(Proc {
        pid: impostor,
        cgroup,
        expect: Expect::Host,
    });

    let agent = Agent::start(&[]);
    // After: its events meet them (attach, fork, exec in those cgroups).
    start_all(&mut h, &mut procs);
    let last = procs
        .iter()
        .rfind(|p| p.expect == Expect::Bare)
        .unwrap()
        .pid;
    eventually(T, "the agent to list the last process", || {
        process(&agent.json(&["ps"]), last).map(|_| ())
    });
    agent.wait_startup_details();

    for socket in [
        agent.socket.clone(),
        PathBuf::from("/nonexistent/observer.sock"),
    ] {
        let (ps, containers) = every_view(&socket, last);
        let agent = socket == agent.socket;
        check_facts(&ps, &containers, &procs, impostor, agent);
    }
    // Still running and answering.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", agent.pid())).unwrap();
    assert!(!stat.contains(") Z "), "the agent exited: {stat}");
    let status = common::http_body(&agent.http_get("/v1/status"));
    assert!(status.contains("startup_details_pending"), "{status}");
    drop(agent);
    drop(h);
}
