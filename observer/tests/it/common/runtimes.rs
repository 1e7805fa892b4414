//! Real container runtimes from Debian in test-owned roots (/run/observer-test,
//! /var/lib/observer-test), never the machine's own: dockerd and containerd are started on
//! private sockets, shared by the tests of one run, their pids recorded in
//! /run/observer-test/daemons/ so that `cargo xtask test` stops them at the end of the run,
//! also when a test failed or the run was interrupted (xtask/src/hygiene/).
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use super::eventually;

const T: std::time::Duration = std::time::Duration::from_secs(60);
pub const CTR_SOCK: &str = "/run/observer-test/containerd.sock";
pub const CTR_STATE: &str = "/run/observer-test/containerd";
pub const DOCKER_SOCK: &str = "unix:///run/observer-test/docker.sock";
pub const DOCKER_ROOT: &str = "/var/lib/observer-test/docker";
pub const PODMAN_ROOT: &str = "/var/lib/observer-test/podman";
pub const PODMAN_RUNROOT: &str = "/run/observer-test/podman";
pub const CMD: &str = "sleep 1000 & sleep 0.1 & exec sleep 1001";

pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A busybox root file system as a tar (busybox-static and its applet links).
pub fn rootfs_tar() -> PathBuf {
    // Tests of one binary running in parallel would build it in the same directory.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
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

/// A bundle in `dir/<id>` for the OCI runtime `bin`: the busybox rootfs and `<bin> spec`'s
/// config with `args`, no terminal and PATH=/bin. Returns the bundle and that config, for
/// the caller's own changes; [`write_config`] puts it in place.
pub fn spec_bundle(bin: &str, dir: &Path, id: &str, args: &[&str]) -> (PathBuf, serde_json::Value) {
    let b = dir.join(id);
    std::fs::create_dir_all(b.join("rootfs")).unwrap();
    ok(Command::new("tar")
        .arg("-C")
        .arg(b.join("rootfs"))
        .arg("-xf")
        .arg(rootfs_tar()));
    ok(Command::new(bin).arg("spec").current_dir(&b));
    let p = b.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    cfg["process"]["args"] = serde_json::json!(args);
    cfg["process"]["terminal"] = serde_json::json!(false);
    cfg["process"]["env"] = serde_json::json!(["PATH=/bin"]);
    (b, cfg)
}

/// Writes a bundle's config (from [`spec_bundle`]).
pub fn write_config(bundle: &Path, cfg: &serde_json::Value) {
    std::fs::write(bundle.join("config.json"), cfg.to_string()).unwrap();
}

/// Starts `cmd` in the background, detached from the test (the run's other tests reuse it),
/// logging to `log`; its pid goes to /run/observer-test/daemons/<name>.pid, where the end of
/// `cargo xtask test` finds it to stop it.
pub fn daemon(name: &str, cmd: &mut Command, log: &Path) {
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

pub fn docker() -> Command {
    let mut c = Command::new("docker");
    c.args(["-H", DOCKER_SOCK]);
    c
}

pub fn docker_ready() -> &'static str {
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

pub fn ctr() -> Command {
    let mut c = Command::new("ctr");
    c.args(["--address", CTR_SOCK]);
    c
}

pub fn containerd_ready() -> &'static str {
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

/// An agent that reads the tests' podman storage (container names, pod facts).
pub fn podman_agent() -> super::agent::Agent {
    super::agent::Agent::start(&[
        "--storage-root",
        PODMAN_ROOT,
        "--storage-root",
        PODMAN_RUNROOT,
    ])
}

pub fn podman_ready() -> &'static str {
    let image = "localhost/observer-test-busybox:1";
    if !succeeds(&mut podman(&["image", "exists", image])) {
        ok(podman(&["import", "--change", "ENV=PATH=/bin"])
            .arg(rootfs_tar())
            .arg(image));
    }
    image
}

/// Runs CMD in a detached Docker busybox container `name` (replacing one left by an earlier
/// run); returns its id.
pub fn docker_run_cmd(name: &str) -> String {
    let image = docker_ready();
    let _ = docker().args(["rm", "-f", name]).output();
    ok(docker().args([
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
    ]))
}

/// Runs CMD in a detached podman busybox container `name` (replacing one left by an earlier
/// run); returns its id.
pub fn podman_run_cmd(name: &str) -> String {
    let image = podman_ready();
    let _ = podman(&["rm", "-f", name]).output();
    ok(&mut podman(&[
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
    ]))
}

/// podman's settings for the tests: pod infra containers get the nofile/nproc limits this
/// machine needs (containers get them with --ulimit; infra containers only from here).
fn containers_conf() -> &'static str {
    let path = "/run/observer-test/containers.conf";
    if !Path::new(path).exists() {
        std::fs::create_dir_all("/run/observer-test").unwrap();
        let tmp = format!("{path}.{}", std::process::id());
        std::fs::write(
            &tmp,
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n",
        )
        .unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    path
}

pub fn podman(args: &[&str]) -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", containers_conf());
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

/// A Docker container removed on drop.
pub struct Docker(pub String);

impl Docker {
    pub fn run(name: &str, opts: &[&str], cmd: &[&str]) -> (Docker, String) {
        let image = docker_ready();
        let _ = docker().args(["rm", "-f", name]).output();
        let mut a = vec!["run", "-d", "--network", "none", "--name", name];
        a.extend(opts);
        a.push(image);
        a.extend(cmd);
        let id = ok(docker().args(&a)).trim().to_string();
        (Docker(name.into()), id)
    }

    pub fn inspect(&self, format: &str) -> String {
        ok(docker().args(["inspect", "-f", format, &self.0]))
            .trim()
            .to_string()
    }

    pub fn pid1(&self) -> u32 {
        eventually(
            std::time::Duration::from_secs(60),
            "the container's PID 1",
            || {
                self.inspect("{{.State.Pid}}")
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
            },
        )
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let _ = docker().args(["rm", "-f", &self.0]).output();
    }
}
