//! A filesystem that stops answering. Any local user can run one: unprivileged FUSE in a
//! user namespace, rootless podman's fuse-overlayfs. Here it is bindfs, started by the
//! test and stopped with SIGSTOP, so every open of its files waits. The agent opens the
//! executables it hashes; an executable on such a filesystem may hold a hash worker, never
//! the event loop: a process started meanwhile is listed, and the stalled file's hash
//! follows once the daemon answers again. (Host only: the guests have no bindfs, and FUSE
//! waits the same on every kernel.)

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use crate::common::{agent::*, runtimes::ok, *};

const T: Duration = Duration::from_secs(20);

/// A bindfs mount of the test's (`src` shown at `mnt`), its daemon a child of the test:
/// resumed, unmounted and stopped on drop, whatever the test did.
struct Fuse {
    daemon: Child,
    base: PathBuf,
}

impl Fuse {
    fn mount() -> Fuse {
        // Under /var/lib: /tmp may be noexec.
        let base = PathBuf::from(format!(
            "/var/lib/observer-test/fuse-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&base);
        for d in ["src", "mnt"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        let daemon = Command::new("bindfs")
            .arg("-f")
            .args([base.join("src"), base.join("mnt")])
            .stdout(Stdio::null())
            .spawn()
            .expect("bindfs (cargo xtask setup --tests installs it)");
        let fuse = Fuse { daemon, base };
        let mnt = fuse.mnt();
        eventually(T, "the bindfs mount", || {
            let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            info.lines()
                .any(|l| l.split(' ').nth(4) == mnt.to_str())
                .then_some(())
        });
        fuse
    }

    fn src(&self) -> PathBuf {
        self.base.join("src")
    }

    fn mnt(&self) -> PathBuf {
        self.base.join("mnt")
    }

    fn signal(&self, sig: i32) {
        // SAFETY: a signal to the test's own child.
        unsafe { libc::kill(self.daemon.id() as i32, sig) };
    }
}

impl Drop for Fuse {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let mnt = std::ffi::CString::new(self.mnt().to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path of the test's own mount.
        unsafe { libc::umount2(mnt.as_ptr(), libc::MNT_DETACH) };
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// A child process, killed and reaped on drop.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `observer ps` against `agent`, or None when it did not answer within `T` (then killed).
fn ps_within(agent: &Agent) -> Option<serde_json::Value> {
    let mut child = observer()
        .args(["ps", "-o", "json", "--socket"])
        .arg(&agent.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut bytes);
        let _ = tx.send(bytes);
    });
    let answer = rx.recv_timeout(T).ok();
    let _ = child.kill();
    let _ = child.wait();
    serde_json::from_slice(&answer?).ok()
}

fn listed(ps: &serde_json::Value, pid: u32) -> Option<&serde_json::Value> {
    ps.as_array()?
        .iter()
        .find(|p| p["pid"].as_u64() == Some(u64::from(pid)))
}

fn sha256sum(p: &Path) -> String {
    let out = ok(Command::new("sha256sum").arg(p));
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_stalled_filesystem_holds_a_hash_worker_not_the_event_loop() {
    // Before the mount: dropped after it, so a failure resumes the daemon first (an agent
    // stuck in it would not stop).
    let agent = Agent::start(&[]);
    let fuse = Fuse::mount();
    // A copy no agent has hashed (an ELF runs with trailing bytes).
    let bin = fuse.src().join("sleep");
    let mut bytes = std::fs::read("/bin/sleep").unwrap();
    bytes.extend_from_slice(format!("observer-test fuse {}", std::process::id()).as_bytes());
    std::fs::write(&bin, bytes).unwrap();
    sh(&format!("chmod 755 {}", bin.display()));
    // The agent stopped, a process execs from the mount and the daemon is stopped in turn:
    // the agent reads that exec when every open of the file waits. (Resumed on drop too: a
    // stopped agent would never stop.)
    let stopped = Stopped::new(agent.pid());
    let fused = Kid(Command::new(fuse.mnt().join("sleep"))
        .arg("600")
        .spawn()
        .unwrap());
    // Asleep: its exec is done (the kernel reports an exec once the binary is loaded, and
    // loading it reads the mount) and in the ring buffer.
    eventually(T, "the process of the mount asleep", || {
        let wchan = std::fs::read_to_string(format!("/proc/{}/wchan", fused.0.id())).ok()?;
        wchan.contains("nanosleep").then_some(())
    });
    fuse.signal(libc::SIGSTOP);
    drop(stopped);
    let other = Kid(Command::new("/bin/sleep").arg("601").spawn().unwrap());
    let ps = eventually(
        T,
        "the agent to list a process started after the stall",
        || {
            let ps = ps_within(&agent).expect(
            "the agent did not answer `ps` while a filesystem stalled: its event loop waits for it",
        );
            listed(&ps, other.0.id()).is_some().then_some(ps)
        },
    );
    let stalled = listed(&ps, fused.0.id()).expect("the process of the stalled mount");
    assert!(stalled["exe_sha256"].is_null(), "{stalled}");
    // Answering again, the daemon serves the open the worker waits in: the hash follows.
    fuse.signal(libc::SIGCONT);
    let hashed = eventually(T, "the stalled file's hash", || {
        let ps = ps_within(&agent)?;
        let p = listed(&ps, fused.0.id())?;
        p["exe_sha256"].as_str().map(str::to_string)
    });
    assert_eq!(hashed, sha256sum(&bin));
}
