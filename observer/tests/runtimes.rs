//! Real container runtimes from Debian — Docker (dockerd), containerd via `ctr` with
//! containerd-shim-runc-v2, podman with runc and conmon — observed by a real agent: the
//! container's runtime, id, name and shim are right, PID 1 has ns PPID 0 while its host parent
//! is the shim, a process entered with the runtime's exec has its host parent outside the
//! container, and `observer tree <name>` equals /proc. Run as root.
//!
//! Every runtime runs from test-owned roots (/run/observer-test, /var/lib/observer-test), never
//! the machine's own: dockerd and containerd are started here on private sockets, shared by
//! the tests of one run, their pids recorded in /run/observer-test/daemons/ so that `cargo
//! xtask test` stops them at the end of the run, also when a test failed or the run was
//! interrupted (xtask/src/hygiene.rs).

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{agent::*, *};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const CTR_SOCK: &str = "/run/observer-test/containerd.sock";
const CTR_STATE: &str = "/run/observer-test/containerd";
const DOCKER_SOCK: &str = "unix:///run/observer-test/docker.sock";
const DOCKER_ROOT: &str = "/var/lib/observer-test/docker";
const PODMAN_ROOT: &str = "/var/lib/observer-test/podman";
const PODMAN_RUNROOT: &str = "/run/observer-test/podman";
const CMD: &str = "sleep 1000 & sleep 0.1 & exec sleep 1001";

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A busybox root file system as a tar (busybox-static and its applet links).
fn rootfs_tar() -> PathBuf {
    let tar = PathBuf::from("/var/lib/observer-test/busybox.tar");
    if tar.exists() {
        return tar;
    }
    std::fs::create_dir_all("/var/lib/observer-test").unwrap();
    let dir = PathBuf::from(format!(
        "/var/lib/observer-test/rootfs-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .expect("busybox-static provides /bin/busybox");
    for applet in ok(Command::new("/bin/busybox").arg("--list")).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
    }
    let tmp = tar.with_extension("tmp");
    ok(Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tmp)
        .arg("."));
    std::fs::rename(&tmp, &tar).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    tar
}

/// Starts `cmd` in the background, detached from the test (the run's other tests reuse it),
/// logging to `log`; its pid goes to /run/observer-test/daemons/<name>.pid, where the end of
/// `cargo xtask test` finds it to stop it.
fn daemon(name: &str, cmd: &mut Command, log: &Path) {
    let dir = Path::new("/run/observer-test/daemons");
    std::fs::create_dir_all(dir).unwrap();
    let f = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    // Deliberately not waited for: the daemon outlives the test.
    #[allow(clippy::zombie_processes)]
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    std::fs::write(dir.join(format!("{name}.pid")), child.id().to_string()).unwrap();
}

fn docker() -> Command {
    let mut c = Command::new("docker");
    c.args(["-H", DOCKER_SOCK]);
    c
}

fn docker_ready() -> &'static str {
    if !succeeds(docker().arg("info")) {
        daemon(
            "dockerd",
            Command::new("dockerd").args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--host",
                DOCKER_SOCK,
                "--data-root",
                DOCKER_ROOT,
                "--exec-root",
                "/run/observer-test/docker",
                "--pidfile",
                "/run/observer-test/dockerd.pid",
            ]),
            Path::new("/run/observer-test/dockerd.log"),
        );
        eventually(T, "dockerd to answer", || {
            succeeds(docker().arg("info")).then_some(())
        });
    }
    let image = "observer-test/busybox:1";
    if !succeeds(docker().args(["image", "inspect", image])) {
        ok(docker()
            .args(["import", "--change", "ENV PATH=/bin"])
            .arg(rootfs_tar())
            .arg(image));
    }
    image
}

fn ctr() -> Command {
    let mut c = Command::new("ctr");
    c.args(["--address", CTR_SOCK]);
    c
}

fn containerd_ready() -> &'static str {
    if !succeeds(ctr().arg("version")) {
        std::fs::create_dir_all("/run/observer-test").unwrap();
        daemon(
            "containerd",
            Command::new("containerd").args([
                "--root",
                "/var/lib/observer-test/containerd",
                "--state",
                CTR_STATE,
                "--address",
                CTR_SOCK,
            ]),
            Path::new("/run/observer-test/containerd.log"),
        );
        eventually(T, "containerd to answer", || {
            succeeds(ctr().arg("version")).then_some(())
        });
    }
    let image = "docker.io/observer-test/busybox:1";
    if ok(ctr().args(["image", "ls", "-q"]))
        .lines()
        .all(|l| l != image)
    {
        let archive = Path::new("/var/lib/observer-test/busybox-image.tar");
        ok(docker()
            .args(["save", "-o"])
            .arg(archive)
            .arg(docker_ready()));
        ok(ctr().args(["image", "import"]).arg(archive));
        let _ = std::fs::remove_file(archive);
    }
    image
}

fn podman_ready() -> &'static str {
    let image = "localhost/observer-test-busybox:1";
    if !succeeds(&mut podman(&["image", "exists", image])) {
        ok(podman(&["import", "--change", "ENV=PATH=/bin"])
            .arg(rootfs_tar())
            .arg(image));
    }
    image
}

fn podman(args: &[&str]) -> Command {
    let mut c = Command::new("podman");
    c.args([
        "--root",
        PODMAN_ROOT,
        "--runroot",
        PODMAN_RUNROOT,
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
    ])
    .args(args);
    c
}

/// The checks every runtime shares, on a container running CMD plus one exec'd `sleep 999`.
fn check(agent: &Agent, name: &str, runtime: &str, id: &str, shim_comm: &str) {
    eventually(T, "the container's four processes", || {
        let (code, out, _) = agent.cli(&["tree", name, "-o", "json"]);
        let t: Value = serde_json::from_str(&out).ok().filter(|_| code == 0)?;
        let procs = t["processes"].as_array()?;
        (procs.len() == 4
            && procs.iter().any(|p| p["cmdline"] == "sleep 999")
            && procs.iter().any(|p| p["state"] == "Z"))
        .then_some(())
    });
    let tree = tree_equal_to_proc(agent, name, T);
    let c = &tree["container"];
    assert_eq!(c["runtime"], runtime, "{c:#}");
    assert_eq!(c["id"], id);
    assert_eq!(c["name"], name);
    let shim = c["shim_pid"].as_u64().expect("a shim above PID 1");
    let facts = proc_facts(shim).unwrap();
    assert_eq!(facts.comm, shim_comm);
    assert_eq!(c["shim_comm"], shim_comm);

    let procs = tree["processes"].as_array().unwrap();
    let pid1 = procs.iter().find(|p| p["ns_pid"] == 1).expect("PID 1");
    assert_eq!(pid1["pid"].as_u64(), c["init_pid"].as_u64());
    assert_eq!(pid1["ns_ppid"], 0, "PID 1 inside has ns PPID 0");
    assert_eq!(
        pid1["ppid"].as_u64(),
        Some(shim),
        "PID 1's host parent is the shim"
    );
    assert_eq!(pid1["cmdline"], "sleep 1001");

    let z = procs.iter().find(|p| p["state"] == "Z").unwrap();
    assert_eq!(
        z["ppid"], pid1["pid"],
        "the zombie's parent is PID 1, which never reaps"
    );
    assert_eq!(c["zombies"], 1);

    let exec = procs.iter().find(|p| p["cmdline"] == "sleep 999").unwrap();
    let members: Vec<u64> = procs.iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    assert!(
        !members.contains(&exec["ppid"].as_u64().unwrap()),
        "the exec'd process's host parent is outside the container"
    );
    assert_eq!(exec["ns_ppid"], 0);
    assert!(exec["ns_pid"].as_u64().unwrap() > 1);

    // The same container by a member's host pid and by an id prefix.
    for reference in [exec["pid"].to_string(), id[..id.len().min(8)].to_string()] {
        assert_eq!(
            agent.json(&["tree", &reference])["container"]["id"],
            id,
            "tree {reference}"
        );
    }
    let text = agent.cli(&["tree", name]).1;
    assert!(text.contains(&format!("{shim_comm} ({shim})")), "{text}");
    assert!(
        text.contains(&format!("not reaped by sleep ({})", pid1["pid"])),
        "{text}"
    );

    let listed = agent.json(&["containers"]);
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .expect("listed");
    assert_eq!(row["processes"], 4);
    assert!(
        row["resources"]["memory_bytes"].as_u64().unwrap_or(0) > 0,
        "{row:#}"
    );
    assert_eq!(row["resources"]["pids"].as_u64(), Some(4), "{row:#}");
}

#[test]
fn docker_container_by_name_with_containerd_shim_and_docker_exec() {
    let image = docker_ready();
    let agent = Agent::start(&["--docker-root", DOCKER_ROOT]);
    let name = "observer-test-docker";
    let _ = docker().args(["rm", "-f", name]).output();
    let id = ok(docker().args([
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        name,
        image,
        "sh",
        "-c",
        CMD,
    ]));
    ok(docker().args(["exec", "-d", name, "sleep", "999"]));
    check(&agent, name, "docker", &id, "containerd-shim");
    ok(docker().args(["rm", "-f", name]));
}

#[test]
fn containerd_ctr_container_with_shim_runc_v2_and_task_exec() {
    let image = containerd_ready();
    let agent = Agent::start(&["--containerd-state", CTR_STATE]);
    let name = "observer-test-ctr";
    let _ = ctr().args(["task", "kill", "-s", "KILL", name]).output();
    std::thread::sleep(Duration::from_millis(300));
    let _ = ctr().args(["container", "rm", name]).output();
    let _ = ctr().args(["snapshot", "rm", name]).output();
    ok(ctr().args(["run", "-d", image, name, "sh", "-c", CMD]));
    // `ctr task exec` stays attached: it runs in the background for the test.
    let mut exec: Child = ctr()
        .args([
            "task",
            "exec",
            "--exec-id",
            "observer-exec",
            name,
            "sleep",
            "999",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    check(&agent, name, "containerd", name, "containerd-shim");
    let _ = exec.kill();
    let _ = exec.wait();
    let _ = ctr().args(["task", "kill", "-s", "KILL", name]).output();
    eventually(T, "the ctr task to stop", || {
        succeeds(ctr().args(["task", "delete", name])).then_some(())
    });
    ok(ctr().args(["container", "rm", name]));
}

#[test]
fn podman_container_with_runc_conmon_and_podman_exec() {
    let image = podman_ready();
    let agent = Agent::start(&[
        "--storage-root",
        PODMAN_ROOT,
        "--storage-root",
        PODMAN_RUNROOT,
    ]);
    let name = "observer-test-podman";
    let _ = podman(&["rm", "-f", name]).output();
    let id = ok(&mut podman(&[
        "run",
        "-d",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--name",
        name,
        image,
        "sh",
        "-c",
        CMD,
    ]));
    ok(&mut podman(&["exec", "-d", name, "sleep", "999"]));
    check(&agent, name, "podman", &id, "conmon");
    ok(&mut podman(&["rm", "-f", name]));
}
