//! Helpers for the root-only integration tests: run the real `observer` binary, collect what
//! it prints, make cgroups and namespaces to observe.
#![allow(dead_code)]

pub mod agent;
pub mod cri;
pub mod launcher;
pub mod prometheus;
pub mod runtimes;
pub mod tiny;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{channel, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The binary under test: the one cargo built, or $OBSERVER_BIN (the VM matrix copies a
/// static build into its initramfs).
/// In a VM guest of the kernel matrix (`OBSERVER_VM`, set by its init), says the test is
/// skipped and why, in the line the guest's runner reads; true there (the test returns).
pub fn skipped_in_vm(why: &str) -> bool {
    let in_vm = std::env::var_os("OBSERVER_VM").is_some();
    if in_vm {
        println!("observer-test-skip: {why}");
    }
    in_vm
}

pub fn observer_bin() -> String {
    std::env::var("OBSERVER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_observer").to_string())
}

pub fn observer() -> Command {
    Command::new(observer_bin())
}

/// A running `observer events --json`, its lines delivered through a channel.
pub struct EventStream {
    child: Child,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    pub seen: Vec<Value>,
}

impl EventStream {
    pub fn start(extra: &[&str]) -> EventStream {
        let mut child = observer()
            .args(["events", "--json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start observer events");
        let (tx, lines) = channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let (etx, stderr) = channel();
        let err = child.stderr.take().unwrap();
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if etx.send(l).is_err() {
                    break;
                }
            }
        });
        // Wait for the "streaming" line: programs are attached from then on.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) if l.contains("streaming events") => break,
                Ok(l) => eprintln!("observer: {l}"),
                Err(_) => {
                    let _ = child.kill();
                    panic!("observer events did not become ready: {:?}", child.wait());
                }
            }
        }
        EventStream {
            child,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Reads events until `pred` holds for one of them (returned), or panics after `timeout`.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    let v: Value = serde_json::from_str(&l)
                        .unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"));
                    let hit = pred(&v);
                    self.seen.push(v);
                    if hit {
                        return self.seen.last().unwrap().clone();
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!(
                        "no event {what} within {timeout:?}; saw {} events",
                        self.seen.len()
                    )
                }
            }
        }
    }

    /// Every event seen so far (after `wait_for` calls) matching `pred`.
    pub fn all(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.seen.iter().filter(|v| pred(v)).cloned().collect()
    }

    /// SIGTERM, then the exit status and everything printed on stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(2)) {
            err.push_str(&l);
            err.push('\n');
        }
        (status, err)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where cgroup2 is mounted (/sys/fs/cgroup on v2 hosts, /sys/fs/cgroup/unified on hybrid).
pub fn cgroup2_mount() -> PathBuf {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mi.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if post.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            Some(PathBuf::from(pre.split_whitespace().nth(4)?))
        })
        .expect("no cgroup2 mount on this machine")
}

/// A cgroup2 directory removed on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> TestCgroup {
        let path = cgroup2_mount().join(format!("observer-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).expect("create test cgroup");
        TestCgroup { path }
    }

    pub fn inode(&self) -> u64 {
        inode(&self.path)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Processes may take a moment to leave after exiting.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .ino()
}

/// Inode of /proc/<pid>/ns/<name>.
pub fn ns_inode(pid: u32, name: &str) -> u64 {
    inode(Path::new(&format!("/proc/{pid}/ns/{name}")))
}

/// `cmd` with RLIMIT_NOFILE set to `n` (soft and hard, so it cannot be raised) at exec.
pub fn with_nofile(mut cmd: Command, n: u64) -> Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let l = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Plain HTTP/1.0 GETs on a TCP address or a unix socket, and a response's body: the
/// shared harness's.
pub use observer_harness::{http_body, http_get, http_get_with, unix_get};

/// `GET <path>` (a stream such as /v1/events) on the agent's unix socket, read until the
/// response's header has come: the agent subscribes before it answers, so everything that
/// happens after this returns is in the stream. The stream and what was read of it.
pub fn subscribe(socket: &Path, path: &str) -> (std::os::unix::net::UnixStream, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).expect("the stream's header");
        assert_ne!(
            n,
            0,
            "the agent closed {path}: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    (s, text)
}

/// A directory of the test's own under the system's temporary one, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str, name: &str) -> TempDir {
        let d =
            std::env::temp_dir().join(format!("observer-{prefix}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `why` (JSON `w`) of a PID 1 a runtime's stop killed (`took`: the stop's wall time):
/// it ignored SIGTERM, and SIGKILL followed 2.5 s or more later within the stop, both sent
/// from the host by runc or containerd's shim; the paragraph says so. Returns it.
pub fn ignored_term_then_kill(w: &Value, took: Duration, stop: &str) -> String {
    let e = &w["ended"];
    let term = e["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["signal"] == "SIGTERM")
        .unwrap_or_else(|| panic!("SIGTERM ignored: {w:#}"));
    let kill = &e["killed_by"];
    assert_eq!(kill["result"], "delivered");
    for s in [term, kill] {
        // The runtime sends them from the host: the shim's runc (or the shim itself).
        assert_eq!(s["sender"]["origin"], "host", "{s:#}");
        let comm = s["sender"]["comm"].as_str().unwrap();
        assert!(
            comm.starts_with("runc") || comm.starts_with("containerd-shim"),
            "{s:#}"
        );
    }
    let gap = (kill["time_ns"].as_u64().unwrap() - term["time_ns"].as_u64().unwrap()) as f64 / 1e9;
    assert!(
        (2.5..took.as_secs_f64() + 0.5).contains(&gap),
        "SIGKILL {gap:.2} s after SIGTERM; {stop} took {took:?}"
    );
    let p = w["paragraph"].as_str().unwrap().to_string();
    assert!(
        p.contains("ignored SIGTERM") && p.contains("SIGKILL"),
        "{p}"
    );
    p
}

pub fn sh(script: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("run sh")
}

/// Polls `f` until it returns Some, or panics after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `f` until `done` holds for its value or `timeout` passed; returns the last value,
/// for the caller to assert on (with everything it says when it is still wrong).
pub fn last_until<T>(timeout: Duration, mut f: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let v = f();
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

pub fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

pub fn ns_pids(v: &Value) -> Vec<u64> {
    v["ns_pids"]
        .as_array()
        .expect("ns_pids")
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// Runs observer as user nobody with no capabilities (setpriv).
pub fn observer_as_nobody(args: &[&str]) -> std::process::Output {
    let bin = observer_bin();
    let mut a = vec![
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        bin.as_str(),
    ];
    a.extend(args);
    Command::new("setpriv").args(&a).output().expect("setpriv")
}

/// The first child of `pid`'s main thread (/proc/<pid>/task/<pid>/children).
pub fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// argv of a launcher container limited to 32 MiB whose `tail /dev/zero` the OOM killer
/// ends (`observer run ...`; `detach` adds -d).
pub fn oom_container_args(name: &str, detach: bool) -> Vec<String> {
    oom_container_args_with(name, detach, "tail /dev/zero")
}

/// `oom_container_args` running `script` instead.
pub fn oom_container_args_with(name: &str, detach: bool, script: &str) -> Vec<String> {
    let mut a = vec!["run".to_string()];
    if detach {
        a.push("-d".into());
    }
    for s in ["--name", name, "--memory", "32M", "--", "sh", "-c", script] {
        a.push(s.into());
    }
    a
}

/// Stopped (SIGSTOP) for as long as it lives: a stopped agent's ring buffer fills, and what
/// happens then is lost. Continued on drop, also when the test fails.
pub struct Stopped(u32);

impl Stopped {
    pub fn new(pid: u32) -> Stopped {
        // SAFETY: kill(2) on the test's own agent.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

/// A child killed and reaped on drop.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `observer events <extra>` as text, written to a file.
pub struct TextStream {
    child: Killed,
    file: PathBuf,
}

impl TextStream {
    pub fn start(file: &Path, extra: &[&str]) -> TextStream {
        let mut child = observer()
            .arg("events")
            .args(extra)
            .stdout(std::fs::File::create(file).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(first.contains("streaming events"), "{first}");
        TextStream {
            child: Killed(child),
            file: file.to_path_buf(),
        }
    }

    /// The first line `want` accepts, waiting for it (a held exec line comes with its hash).
    pub fn line(&mut self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(self.child.0.try_wait().unwrap().is_none(), "events stopped");
            let text = std::fs::read_to_string(&self.file).unwrap_or_default();
            // Whole lines only: the file may end mid-line.
            let found = text
                .split_inclusive('\n')
                .filter_map(|l| l.strip_suffix('\n'))
                .find(|l| want(l));
            if let Some(l) = found {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for the event's text line; `observer events` wrote:\n{text}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}
