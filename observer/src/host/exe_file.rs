//! A process's executable, read for hashing: opened through `/proc/<pid>/exe` while the
//! process lives (the descriptor stays valid after it ends, so the file can be read later),
//! its identity from fstat(2), and its SHA-256 read. Both happen on workers, never on the
//! event loop: small pools with a bounded queue, whose jobs are refused at once when it is
//! full, never waited for.

use std::{
    fs::File,
    io::{self, Read},
    os::unix::fs::MetadataExt,
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

/// Bytes a second all hashing workers read together. Anyone can exec files of their own
/// (a 256 MiB ELF under /tmp, touched before each run to be new): without a bound that
/// costs the root agent as much CPU as they like. 128 MiB/s is a fraction of a core for
/// SHA-256; beyond it the queue fills and executables get `busy`.
pub(crate) const HASH_BYTES_PER_SEC: u64 = 128 << 20;

/// What may be read ahead of the rate (a burst: the first binaries of a node at once).
const BURST: Duration = Duration::from_millis(250);

/// A shared reading budget: each read reserves its bytes, waiting when ahead of the rate.
pub(crate) struct Budget {
    rate: u64,
    /// When the bytes reserved so far are paid for at `rate`.
    paid_until: Mutex<Option<Instant>>,
}

impl Budget {
    pub(crate) const fn new(rate: u64) -> Budget {
        Budget {
            rate,
            paid_until: Mutex::new(None),
        }
    }

    /// Reserves `n` bytes at `now`: how long to wait before reading them.
    fn reserve(&self, now: Instant, n: u64) -> Duration {
        let mut p = self.paid_until.lock().unwrap_or_else(|e| e.into_inner());
        let from = p.filter(|t| *t > now).unwrap_or(now);
        let until = from + Duration::from_secs_f64(n as f64 / self.rate.max(1) as f64);
        *p = Some(until);
        until.saturating_duration_since(now + BURST)
    }

    fn take(&self, n: u64) {
        let wait = self.reserve(Instant::now(), n);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// The budget every hashing worker shares.
static HASHING: Budget = Budget::new(HASH_BYTES_PER_SEC);

/// What fstat(2) says of an open executable: the fields an exec event carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    /// st_dev (userspace encoding, makedev).
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) mtime_ns: i64,
}

impl FileId {
    fn of(f: &File) -> io::Result<FileId> {
        Ok(FileId::of_meta(&f.metadata()?))
    }

    fn of_meta(m: &std::fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
        }
    }
}

/// Opens the executable of `pid` (the one it runs now) if it is the regular file `want`:
/// looked up as `O_PATH` and opened for reading only once its identity is the exec's (the
/// pid may be another process's by now, running another file).
pub(crate) fn open_exe(pid: u32, want: &FileId) -> io::Result<(File, FileId)> {
    let c = std::ffi::CString::new(format!("/proc/{pid}/exe")).expect("no NUL");
    open_regular(&c, want)
}

/// Opens the file an exec's absolute `path` names now, if it is still the exec's file `want`
/// (the process that ran it may be gone). The path is resolved with `O_PATH`, which opens
/// nothing — a FIFO, a device or a socket an unprivileged user swapped in for the file is
/// never opened, nor waited for — and only a regular file of identity `want` is then opened
/// for reading, through its descriptor (the same inode, no second lookup): the path is the
/// exec's, named in its process's mount namespace, and here names what its user chose.
pub(crate) fn open_path(path: &[u8], want: &FileId) -> io::Result<(File, FileId)> {
    if !path.starts_with(b"/") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an absolute path",
        ));
    }
    let c = std::ffi::CString::new(path)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    open_regular(&c, want)
}

/// `path` looked up as `O_PATH` (nothing opened), then [`regular`]. Not std's OpenOptions:
/// on musl it masks O_PATH out of custom flags (musl's O_ACCMODE holds it), and a FIFO would
/// be opened for reading — waited for.
fn open_regular(path: &std::ffi::CStr, want: &FileId) -> io::Result<(File, FileId)> {
    use std::os::fd::FromRawFd;
    // SAFETY: a NUL-terminated path; the result is checked.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    regular(
        File::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) }),
        want,
    )
}

/// Opens the file an exec's absolute `path` names in the root of process `pid`: a
/// container's short-lived process ran a file of its own root, which its parent (alive
/// still) shares. Resolved by openat2 under /proc/<pid>/root with `RESOLVE_IN_ROOT` — `..`
/// and absolute symlinks stay inside that root, as they did for the exec — and
/// `RESOLVE_NO_MAGICLINKS` (no /proc/<pid>/fd/… way out), as `O_PATH`; then only a
/// regular file of identity `want` is opened (as `open_path`). No openat2 (before 5.6): an
/// error.
pub(crate) fn open_in_root(pid: u32, path: &[u8], want: &FileId) -> io::Result<(File, FileId)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let Some(rel) = path.strip_prefix(b"/") else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an absolute path",
        ));
    };
    let c = std::ffi::CString::new(rel)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    // The root as `O_PATH` too: not opened for reading (a FUSE daemon's directory is).
    let proc_root = std::ffi::CString::new(format!("/proc/{pid}/root")).expect("no NUL");
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            proc_root.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    let root = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: three integers (libc marks the struct non-exhaustive): zeroes are valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: a NUL-terminated path and an open_how of the size passed; the result is
    // checked.
    let raw = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    regular(
        File::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw as i32) }),
        want,
    )
}

/// `at` (an `O_PATH` descriptor) opened for reading if it is a regular file of identity
/// `want`, through its descriptor (the same inode, no second lookup). The identity is
/// checked before: no other file is opened for reading (an open has effects of its own on
/// some files: a FUSE daemon's, a pseudo-file's).
fn regular(at: File, want: &FileId) -> io::Result<(File, FileId)> {
    let m = at.metadata()?;
    if !m.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if FileId::of_meta(&m) != *want {
        return Err(io::Error::other("another file"));
    }
    let f = File::open(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&at)
    ))?;
    let id = FileId::of(&f)?;
    Ok((f, id))
}

/// Why a file's digest was not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DigestError {
    /// The file changed while it was read (another identity now: its digest would lie).
    #[error("the file changed while it was read")]
    Changed,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The SHA-256 of `f` from its start, provided it is still `id` once read whole.
pub(crate) fn sha256(mut f: File, id: FileId) -> Result<[u8; 32], DigestError> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        HASHING.take(n as u64);
        ctx.update(&buf[..n]);
    }
    if FileId::of(&f)? != id {
        return Err(DigestError::Changed);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

type Job = Box<dyn FnOnce() + Send>;

/// A few threads taking jobs from one bounded queue (a clone queues to the same threads).
#[derive(Clone)]
pub(crate) struct Workers {
    tx: mpsc::SyncSender<Job>,
}

impl Workers {
    /// `threads` (at least one) named `name`, and room for `queue` waiting jobs.
    pub(crate) fn start(threads: usize, queue: usize, name: &str) -> io::Result<Workers> {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || loop {
                    // The lock is held while waiting only: one waiter takes the next job.
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })?;
        }
        Ok(Workers { tx })
    }

    /// Queues `job`; false when the queue is full (nothing waits).
    pub(crate) fn try_run(&self, job: impl FnOnce() + Send + 'static) -> bool {
        self.tx.try_send(Box::new(job)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_budget_lets_a_burst_through_then_paces_reads_at_its_rate() {
        use std::time::{Duration, Instant};
        let b = super::Budget::new(1000);
        let t0 = Instant::now();
        // 250 bytes are a quarter second at 1000 B/s: within the burst.
        assert_eq!(b.reserve(t0, 250), Duration::ZERO);
        // The next 1000 are paid until 1.25 s: wait until 1.0 s (the burst ahead).
        assert_eq!(b.reserve(t0, 1000), Duration::from_secs(1));
        // Later, once paid for, nothing is owed.
        assert_eq!(b.reserve(t0 + Duration::from_secs(5), 100), Duration::ZERO);
    }

    use super::*;

    #[test]
    fn the_digest_of_a_file_is_its_sha256_and_a_changed_file_has_none() {
        let p = std::env::temp_dir().join(format!("observer-sha-{}", std::process::id()));
        std::fs::write(&p, b"abc").unwrap();
        let f = File::open(&p).unwrap();
        let id = FileId::of(&f).unwrap();
        let d = sha256(f, id).unwrap();
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let f = File::open(&p).unwrap();
        let stale = FileId { size: 4, ..id };
        assert!(matches!(sha256(f, stale), Err(DigestError::Changed)));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_path_opens_a_regular_file_only_and_never_waits_for_a_fifo() {
        use std::os::unix::ffi::OsStrExt;
        let dir = std::env::temp_dir().join(format!("observer-open-path-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bin");
        std::fs::write(&file, b"abc").unwrap();
        let want = FileId::of(&File::open(&file).unwrap()).unwrap();
        let (mut f, id) = open_path(file.as_os_str().as_bytes(), &want).unwrap();
        assert_eq!(id, want);
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc", "opened for reading");
        // Opening a FIFO for reading would block until a writer came: it is not opened.
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let fifo_id = FileId::of_meta(&std::fs::metadata(&fifo).unwrap());
        let e = open_path(fifo.as_os_str().as_bytes(), &fifo_id).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(
            open_path(b"bin", &want).is_err(),
            "a relative path names nothing here"
        );
        assert!(open_path(dir.join("none").as_os_str().as_bytes(), &want).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let (hold_tx, hold_rx) = mpsc::channel::<()>();
        let w = Workers::start(1, 1, "test-workers").unwrap();
        let (started_tx, started_rx) = mpsc::channel::<()>();
        assert!(w.try_run(move || {
            started_tx.send(()).unwrap();
            let _ = hold_rx.recv();
        }));
        started_rx.recv().unwrap();
        assert!(w.try_run(|| {}), "one waits in the queue");
        assert!(!w.try_run(|| {}), "the queue is full");
        drop(hold_tx);
    }

    /// Whether anything was opened (not as `O_PATH`) in directory `dir`, or `dir` itself,
    /// since this was called (inotify's IN_OPEN).
    fn open_watch(dir: &std::path::Path) -> impl Fn() -> bool {
        // SAFETY: plain syscalls, results checked (the descriptor lives as long as the test).
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0);
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        assert!(unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_OPEN) } >= 0);
        move || {
            let mut buf = [0u8; 4096];
            // SAFETY: a buffer of the length passed.
            unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) > 0 }
        }
    }

    /// A process chrooted into a directory: a path is found in its root, an absolute
    /// symlink there stays in it, and `..` cannot climb out of it.
    #[test]
    fn a_path_in_another_processs_root_is_resolved_inside_that_root() {
        let dir = std::env::temp_dir().join(format!("observer-in-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/x"), b"inside").unwrap();
        std::os::unix::fs::symlink("/bin/x", dir.join("bin/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/hostname", dir.join("bin/up")).unwrap();
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: the child calls only async-signal-safe functions (chroot, pause, _exit)
        // before it is killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                libc::chroot(c.as_ptr());
                loop {
                    libc::pause();
                }
            }
        }
        assert!(pid > 0);
        let pid = pid as u32;
        // Killed and reaped however the test ends (a failed assertion too).
        struct Reap(u32);
        impl Drop for Reap {
            fn drop(&mut self) {
                // SAFETY: the child this test forked.
                unsafe {
                    libc::kill(self.0 as i32, libc::SIGKILL);
                    libc::waitpid(self.0 as i32, std::ptr::null_mut(), 0);
                }
            }
        }
        let reap = Reap(pid);
        // Until the child's chroot took effect.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/root")).unwrap() != dir {
            assert!(std::time::Instant::now() < until, "chroot");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let id = |p: &str| FileId::of_meta(&std::fs::metadata(p).unwrap());
        let (x, hostname) = (id(dir.join("bin/x").to_str().unwrap()), id("/etc/hostname"));
        let read = |p: &[u8], want: &FileId| -> io::Result<Vec<u8>> {
            let (mut f, _) = open_in_root(pid, p, want)?;
            let mut v = Vec::new();
            f.read_to_end(&mut v)?;
            Ok(v)
        };
        assert_eq!(read(b"/bin/x", &x).unwrap(), b"inside");
        assert_eq!(
            read(b"/bin/abs", &x).unwrap(),
            b"inside",
            "an absolute link stays inside"
        );
        assert!(read(b"/bin/up", &hostname).is_err(), "no way out by ..");
        let bin = id(dir.join("bin").to_str().unwrap());
        assert!(read(b"/bin", &bin).is_err(), "a directory is not opened");
        assert!(read(b"bin/x", &x).is_err(), "a relative path is refused");
        let opened = open_watch(&dir);
        assert!(
            read(b"/bin/x", &hostname).is_err(),
            "another file is not opened"
        );
        assert!(!opened(), "nothing of the root is opened for reading");
        drop(reap);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
