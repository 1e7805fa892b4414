//! What the torture run borrows from the machine and must give back, however it ends: a
//! cgroup2 cgroup holding the whole workload (frozen to compare, killed to stop), a pids
//! limit so a runaway workload cannot take every PID of a shared machine, a lowered
//! `kernel.pid_max` (PIDs wrap every few seconds), and Ctrl-C turned into a clean stop.

use std::{
    ffi::CString,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

static STOP: AtomicBool = AtomicBool::new(false);

/// SIGINT, SIGTERM and SIGHUP ask the run to stop (the cleanup then runs as on any end).
pub fn catch_interrupts() {
    extern "C" fn note(_: libc::c_int) {
        STOP.store(true, Ordering::SeqCst);
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(sig, note as *const () as libc::sighandler_t);
        }
    }
}

pub fn interrupted() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sleeps `d` in small steps; false when interrupted meanwhile.
pub fn nap(d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if interrupted() {
            return false;
        }
        thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    !interrupted()
}

/// Where cgroup2 is mounted (/sys/fs/cgroup on v2 hosts, /sys/fs/cgroup/unified on hybrid
/// ones), and where a v1 hierarchy with `controller` is, from /proc/self/mountinfo.
fn mount_of(fstype: &str, option: Option<&str>) -> Option<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut post = post.split_whitespace();
        if post.next()? != fstype {
            return None;
        }
        let opts = post.nth(1)?;
        if option.is_some_and(|o| !opts.split(',').any(|x| x == o)) {
            return None;
        }
        Some(PathBuf::from(pre.split_whitespace().nth(4)?))
    })
}

/// Subdirectories processes are moved between (the mover walks them).
pub const SUBDIRS: [&str; 3] = ["a", "b", "c"];

/// The workload's cgroup2 cgroup (with SUBDIRS below it). Dropping it kills everything in
/// it and removes it.
pub struct Cgroup {
    pub path: PathBuf,
    /// Its path as /proc/<pid>/cgroup shows it (from the cgroup2 root).
    pub rel: String,
}

impl Cgroup {
    pub fn create(name: &str) -> Result<Cgroup> {
        let root = mount_of("cgroup2", None).context("no cgroup2 mount on this machine")?;
        let path = root.join(name);
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        let cg = Cgroup {
            rel: format!("/{name}"),
            path,
        };
        for d in SUBDIRS {
            std::fs::create_dir(cg.path.join(d))?;
        }
        if !cg.path.join("cgroup.freeze").exists() {
            bail!("cgroup2 has no freezer here (cgroup.freeze needs Linux 5.2)");
        }
        Ok(cg)
    }

    /// Whether /proc/<pid>/cgroup's v2 path `p` is this cgroup or below it.
    pub fn holds(&self, p: &str) -> bool {
        p == self.rel
            || p.strip_prefix(self.rel.as_str())
                .is_some_and(|r| r.starts_with('/'))
    }

    /// The cgroup v2 ids (directory inodes) of this cgroup and every one below it.
    /// "<id> <path>" of each of its cgroups, for reading event streams.
    pub fn named_ids(&self) -> String {
        use std::os::unix::fs::MetadataExt;
        let mut v = vec![self.path.clone()];
        for e in std::fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                v.push(e.path());
            }
        }
        v.iter()
            .filter_map(|p| {
                Some(format!(
                    "{} {}",
                    std::fs::metadata(p).ok()?.ino(),
                    p.display()
                ))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn ids(&self) -> Vec<u64> {
        fn walk(p: &Path, out: &mut Vec<u64>) {
            if let Ok(m) = std::fs::metadata(p) {
                out.push(m.ino());
            }
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
        let mut v = Vec::new();
        walk(&self.path, &mut v);
        v
    }

    /// Freezes the cgroup and waits until the kernel says every task in it is frozen.
    pub fn freeze(&self) -> Result<Duration> {
        let t = Instant::now();
        std::fs::write(self.path.join("cgroup.freeze"), "1")?;
        while !self.events().contains("frozen 1") {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("{} not frozen after 30 s", self.path.display());
            }
            thread::sleep(Duration::from_millis(2));
        }
        Ok(t.elapsed())
    }

    pub fn thaw(&self) -> Result<()> {
        std::fs::write(self.path.join("cgroup.freeze"), "0")
            .with_context(|| format!("thawing {}", self.path.display()))
    }

    fn events(&self) -> String {
        std::fs::read_to_string(self.path.join("cgroup.events")).unwrap_or_default()
    }

    /// Every process in the cgroup or below, from cgroup.procs.
    fn procs(&self) -> Vec<i32> {
        let mut v = Vec::new();
        for d in std::iter::once(self.path.clone()).chain(SUBDIRS.iter().map(|s| self.path.join(s)))
        {
            let s = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            v.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        v
    }

    /// Kills everything in the cgroup (cgroup.kill, else SIGKILL while frozen) and waits
    /// until it is empty.
    pub fn kill_all(&self) {
        let _ = self.thaw();
        let end = Instant::now() + Duration::from_secs(30);
        while self.events().contains("populated 1") && Instant::now() < end {
            if std::fs::write(self.path.join("cgroup.kill"), "1").is_err() {
                // Before Linux 5.14: frozen, nothing forks between the read and the kill.
                let _ = std::fs::write(self.path.join("cgroup.freeze"), "1");
                for pid in self.procs() {
                    // SAFETY: plain syscall; these pids are in our cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                let _ = self.thaw();
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_all();
        for _ in 0..100 {
            for d in SUBDIRS {
                let _ = std::fs::remove_dir(self.path.join(d));
            }
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("torture: could not remove {}", self.path.display());
    }
}

/// A pids limit on the workload: a v1 `pids` cgroup where that controller is mounted on
/// its own (hybrid hosts), else `pids.max` of the cgroup2 cgroup when the controller is
/// enabled for it. `cgroup.procs` files the workload's first process joins.
pub struct PidsLimit {
    v1: Option<PathBuf>,
    pub join: Vec<PathBuf>,
}

impl PidsLimit {
    pub fn new(cg: &Cgroup, max: u32) -> Result<PidsLimit> {
        if let Some(v1) = mount_of("cgroup", Some("pids")) {
            let dir = v1.join(cg.path.file_name().expect("named"));
            let _ = std::fs::remove_dir(&dir);
            std::fs::create_dir(&dir)?;
            std::fs::write(dir.join("pids.max"), max.to_string())?;
            return Ok(PidsLimit {
                join: vec![dir.join("cgroup.procs")],
                v1: Some(dir),
            });
        }
        match std::fs::write(cg.path.join("pids.max"), max.to_string()) {
            Ok(()) => {}
            Err(e) => eprintln!("torture: no pids limit on the workload ({e})"),
        }
        Ok(PidsLimit {
            v1: None,
            join: Vec::new(),
        })
    }
}

impl Drop for PidsLimit {
    fn drop(&mut self) {
        let Some(dir) = &self.v1 else { return };
        for _ in 0..100 {
            if std::fs::remove_dir(dir).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("torture: could not remove {}", dir.display());
    }
}

/// C strings of files a child writes "0" into between fork and exec (joining cgroups),
/// prepared before the fork: nothing may allocate there.
pub fn join_paths(paths: &[PathBuf]) -> Vec<CString> {
    paths
        .iter()
        .map(|p| CString::new(p.as_os_str().as_encoded_bytes()).expect("no NUL in a path"))
        .collect()
}

/// In a child between fork and exec: writes "0" (itself) into each file.
pub fn join_now(files: &[CString]) -> std::io::Result<()> {
    for f in files {
        // SAFETY: open/write/close are async-signal-safe; f is a valid C string.
        unsafe {
            let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
        }
    }
    Ok(())
}
