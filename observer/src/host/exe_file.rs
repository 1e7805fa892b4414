//! A process's executable, read for hashing: opened through `/proc/<pid>/exe` while the
//! process lives (the descriptor stays valid after it ends, so the file can be read later,
//! off the event loop), its identity from fstat(2), and its SHA-256 read on a worker. The
//! workers are a small pool with a bounded queue: what it cannot take is refused at once,
//! never waited for.

use std::{
    fs::File,
    io::{self, Read},
    os::unix::fs::MetadataExt,
    sync::{mpsc, Arc, Mutex},
};

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
        let m = f.metadata()?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
        })
    }
}

/// Opens the executable of `pid` (the one it runs now) and says what it is.
pub(crate) fn open_exe(pid: u32) -> io::Result<(File, FileId)> {
    let f = File::open(format!("/proc/{pid}/exe"))?;
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

/// A few threads taking jobs from one bounded queue.
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
}
