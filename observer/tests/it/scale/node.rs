//! The test's node: its cgroup trees (its own, and the pod's at kubelet's place), the
//! spawners that fill them, and kernel.pid_max raised while it runs.

use std::{
    ffi::CString,
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::POD_CGROUP;
use crate::common::*;

/// kernel.pid_max raised for the test, restored on drop (also when the test fails).
pub struct PidMax(String);

impl PidMax {
    pub fn raise(to: u64) -> PidMax {
        let old = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
        if old.trim().parse::<u64>().unwrap() < to {
            std::fs::write("/proc/sys/kernel/pid_max", to.to_string()).unwrap();
        }
        PidMax(old.trim().to_string())
    }
}

impl Drop for PidMax {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/pid_max", &self.0);
    }
}

/// The test's cgroup trees holding all its processes: its own, and the pod's at kubelet's
/// place (`/kubepods/…` at the hierarchy's root: a `kubepods` anywhere else is only a name).
/// Dropping it kills them (cgroup.kill) and removes every cgroup it made.
pub struct Node {
    pub top: PathBuf,
    /// Path from the cgroup2 root ("/observer-test-scale-<pid>").
    pub rel: String,
    /// The pod's cgroup (`/kubepods/besteffort/pod<POD_UID>`) and, from the root down, the
    /// parents of it the test made (kubepods and besteffort may be there already).
    pod: PathBuf,
    made: Vec<PathBuf>,
    spawners: Vec<Child>,
}

impl Node {
    pub fn new() -> Node {
        let name = format!("observer-test-scale-{}", std::process::id());
        let top = cgroup2_mount().join(&name);
        std::fs::create_dir(&top).expect("create the test's cgroup");
        let mut made = Vec::new();
        let mut pod = cgroup2_mount();
        for c in POD_CGROUP.split('/') {
            pod = pod.join(c);
            if !pod.exists() {
                std::fs::create_dir(&pod).expect("create the pod's cgroup");
                made.push(pod.clone());
            }
        }
        assert!(
            made.last() == Some(&pod),
            "{} exists already",
            pod.display()
        );
        Node {
            top,
            rel: format!("/{name}"),
            pod,
            made,
            spawners: Vec::new(),
        }
    }

    /// The roots of the test's trees.
    pub fn tops(&self) -> [&Path; 2] {
        [&self.top, &self.pod]
    }

    /// `sub` below the test's cgroup, or below the pod's for `POD_CGROUP/…`.
    pub fn dir(&self, sub: &str) -> PathBuf {
        let d = match sub.strip_prefix(POD_CGROUP) {
            Some(rest) => self.pod.join(rest.trim_start_matches('/')),
            None => self.top.join(sub),
        };
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Every cgroup directory of the test's trees.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for top in self.tops() {
            collect_dirs(top, &mut v);
        }
        v
    }

    /// Starts `prefix... <this binary> helper_spawn` in cgroup `sub` and waits for `ready`.
    pub fn spawn(&mut self, sub: &str, prefix: &[&str], (n, z): (usize, usize)) {
        let procs = self.dir(sub).join("cgroup.procs");
        let join = CString::new(procs.into_os_string().into_encoded_bytes()).unwrap();
        let mut argv: Vec<std::ffi::OsString> = prefix.iter().map(Into::into).collect();
        argv.push(std::env::current_exe().unwrap().into());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .args([
                "--exact",
                "scale::helper_spawn",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("OBSERVER_TEST_HELPER", "spawn")
            .env("OBSERVER_TEST_SPAWN", format!("{n},{z}"))
            .stdout(Stdio::piped());
        // SAFETY: open/write/close only (async-signal-safe), on a C string made above.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(join.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start a spawner");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        self.spawners.push(child);
        let mut line = String::new();
        // libtest writes "test scale::helper_spawn ... " before the helper's own words, on their line.
        let said = |line: &str| line.rsplit(" ... ").next().unwrap_or_default().to_string();
        while !said(&line).starts_with("ready") {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 || said(&line).starts_with("failed") {
                panic!("spawner in {sub}: {line}");
            }
        }
    }

    pub fn freeze(&self) {
        for top in self.tops() {
            std::fs::write(top.join("cgroup.freeze"), "1").unwrap();
        }
        for top in self.tops() {
            eventually(Duration::from_secs(120), "the node frozen", || {
                std::fs::read_to_string(top.join("cgroup.events"))
                    .unwrap()
                    .contains("frozen 1")
                    .then_some(())
            });
        }
    }

    pub fn holds(&self, path: &str) -> bool {
        let under = |rel: &str| path == rel || path.starts_with(&format!("{rel}/"));
        under(&self.rel) || under(&format!("/{POD_CGROUP}"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let t = Instant::now();
        for top in self.tops() {
            let _ = std::fs::write(top.join("cgroup.freeze"), "0");
            let _ = std::fs::write(top.join("cgroup.kill"), "1");
        }
        for c in &mut self.spawners {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deepest first; a cgroup is removable once its last process is gone.
        // The pod's cgroup is among dirs(); its parents the test made go last.
        let mut dirs = self.dirs();
        dirs.extend(self.made.iter().rev().skip(1).cloned());
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            for _ in 0..600 {
                if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        eprintln!(
            "scale: killed and removed in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
}

pub fn collect_dirs(p: &Path, out: &mut Vec<PathBuf>) {
    out.push(p.to_path_buf());
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&e.path(), out);
        }
    }
}
