//! Which binary a process runs, by content: the SHA-256 of its executable, computed once per
//! identity (device, inode, size, mtime — what the exec event read of `bprm->file`). At the
//! exec the event loop only looks the identity up in an LRU cache, or queues the opening of
//! the file on a small pool of openers; one opens `/proc/<pid>/exe` (checked by fstat
//! against the event: a replaced file is never hashed under the old identity) and queues
//! the read on the readers, whose reads are paced (`--hash` reads at most 128 MiB a
//! second). The loop never touches the file. A process holds its identity's entry (an
//! `Arc`), so that an eviction from the cache never takes a hash from a process that has
//! it; readers of a result still being computed may wait for it, bounded, on their own
//! thread.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex,
    },
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::host::exe_file::{self, DigestError, FileId, Workers};

/// The executable's identity at the exec: device (major:minor), inode, size, mtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct ExeId {
    pub(crate) dev: u32,
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) mtime_ns: i64,
}

impl ExeId {
    pub(crate) fn of(e: &observer_common::ExecEvent) -> ExeId {
        ExeId {
            // The kernel's dev_t (major << 20 | minor) as userspace's (stat(2)'s st_dev).
            dev: libc::makedev(e.exe_dev >> 20, e.exe_dev & 0xfffff) as u32,
            ino: e.exe_ino,
            size: e.exe_size,
            mtime_ns: e
                .exe_mtime_sec
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(e.exe_mtime_nsec)),
        }
    }

    /// This identity as fstat(2) says it.
    fn file_id(&self) -> FileId {
        FileId {
            dev: u64::from(self.dev),
            ino: self.ino,
            size: self.size,
            mtime_ns: self.mtime_ns,
        }
    }

    /// Whether an open file is this executable (not another one, nor this one rewritten).
    fn is(&self, f: &FileId) -> bool {
        u64::from(self.dev) == f.dev
            && self.ino == f.ino
            && self.size == f.size
            && self.mtime_ns == f.mtime_ns
    }
}

/// Why a process has no executable hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reason {
    /// Hashing is off (`--hash off`).
    Off,
    /// The process (or its file, as it was at the exec) was gone before it could be opened,
    /// and the exec's path named another file by then, or none.
    Gone,
    /// Larger than `--hash-max-size`.
    TooLarge,
    /// The workers' queue was full.
    Busy,
    /// Reading the file failed, or it changed while it was read.
    Error,
    /// Still being computed when it was shown.
    Pending,
    /// No exec of its image was seen (it ran before the agent started).
    NotSeen,
}

impl Reason {
    /// Its name, as JSON (`exe_hash_reason`) and the text line say it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Reason::Off => "off",
            Reason::Gone => "gone",
            Reason::TooLarge => "too_large",
            Reason::Busy => "busy",
            Reason::Error => "error",
            Reason::Pending => "pending",
            Reason::NotSeen => "not_seen",
        }
    }
}

pub(crate) type Digest = [u8; 32];

/// One identity's result, set once by a worker; readers may wait for it.
#[derive(Debug, Default)]
pub(crate) struct Entry {
    result: Mutex<Option<Result<Digest, Reason>>>,
    set: Condvar,
}

impl Entry {
    #[cfg(test)]
    fn done(digest: Digest) -> Entry {
        Entry {
            result: Mutex::new(Some(Ok(digest))),
            set: Condvar::new(),
        }
    }

    fn finish(&self, r: Result<Digest, Reason>) {
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        self.set.notify_all();
    }

    fn failed(&self) -> bool {
        matches!(
            *self.result.lock().unwrap_or_else(|e| e.into_inner()),
            Some(Err(_))
        )
    }

    /// The result, waiting for it up to `wait` (Pending after that).
    fn get(&self, wait: Duration) -> Result<Digest, Reason> {
        let until = Instant::now() + wait;
        let mut r = self.result.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = *r {
                return r;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Reason::Pending);
            }
            r = self
                .set
                .wait_timeout(r, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A process's executable hash: its identity's entry, or why there is none.
#[derive(Clone, Debug)]
pub(crate) enum ExeHash {
    Null(Reason),
    Entry(Arc<Entry>),
}

/// The same reason, or the same entry (tables compare in tests; an entry has no `Eq`).
impl PartialEq for ExeHash {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ExeHash::Null(a), ExeHash::Null(b)) => a == b,
            (ExeHash::Entry(a), ExeHash::Entry(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for ExeHash {}

impl ExeHash {
    /// A result known already (one the durable store kept).
    pub(crate) fn known(r: Result<Digest, Reason>) -> ExeHash {
        match r {
            Ok(d) => ExeHash::Entry(Arc::new(Entry {
                result: Mutex::new(Some(Ok(d))),
                set: Condvar::new(),
            })),
            Err(why) => ExeHash::Null(why),
        }
    }

    /// The hash, waiting up to `wait` while it is computed (only off the event loop).
    pub(crate) fn get(&self, wait: Duration) -> Result<Digest, Reason> {
        match self {
            ExeHash::Null(r) => Err(*r),
            ExeHash::Entry(e) => e.get(wait),
        }
    }

    /// The hash as it is now.
    pub(crate) fn now(&self) -> Result<Digest, Reason> {
        self.get(Duration::ZERO)
    }
}

/// A digest as lower-case hex (what sha256sum prints): by table rather than the formatter
/// per byte, since every exported exec line carries one.
pub(crate) fn hex(d: &Digest) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in d {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// `--hash`, `--hash-cache`, `--hash-max-size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HashConfig {
    pub(crate) on: bool,
    /// Identities the cache keeps.
    pub(crate) cache: usize,
    /// Larger executables are not read.
    pub(crate) max_size: u64,
    pub(crate) workers: usize,
    /// Reads that may wait for a worker.
    pub(crate) queue: usize,
}

impl Default for HashConfig {
    fn default() -> Self {
        HashConfig {
            on: true,
            cache: 4096,
            max_size: 256 << 20,
            workers: 2,
            queue: 256,
        }
    }
}

/// What became of the executables of the execs seen, by outcome.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) computed: AtomicU64,
    pub(crate) cached: AtomicU64,
    pub(crate) gone: AtomicU64,
    pub(crate) too_large: AtomicU64,
    pub(crate) busy: AtomicU64,
    pub(crate) error: AtomicU64,
    pub(crate) evicted: AtomicU64,
}

impl Counts {
    /// (result, count) pairs, as /metrics labels them.
    pub(crate) fn pairs(&self) -> [(&'static str, u64); 7] {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("computed", l(&self.computed)),
            ("cached", l(&self.cached)),
            ("gone", l(&self.gone)),
            ("too_large", l(&self.too_large)),
            ("busy", l(&self.busy)),
            ("error", l(&self.error)),
            ("evicted", l(&self.evicted)),
        ]
    }
}

fn add(n: &AtomicU64) {
    n.fetch_add(1, Ordering::Relaxed);
}

/// Identities by recent use, at most `cap` of them.
struct Lru {
    cap: usize,
    clock: u64,
    map: FxHashMap<ExeId, (Arc<Entry>, u64)>,
    order: std::collections::BTreeMap<u64, ExeId>,
}

impl Lru {
    fn new(cap: usize) -> Lru {
        Lru {
            cap: cap.max(1),
            clock: 0,
            map: FxHashMap::default(),
            order: std::collections::BTreeMap::new(),
        }
    }

    /// The entry of `id`, now the most recently used (already so: the order is left alone —
    /// a storm of one program's execs asks for the same identity every time).
    fn get(&mut self, id: &ExeId) -> Option<Arc<Entry>> {
        let (e, used) = self.map.get_mut(id)?;
        if *used == self.clock {
            return Some(e.clone());
        }
        self.order.remove(used);
        self.clock += 1;
        *used = self.clock;
        self.order.insert(self.clock, *id);
        Some(e.clone())
    }

    fn remove(&mut self, id: &ExeId) {
        if let Some((_, used)) = self.map.remove(id) {
            self.order.remove(&used);
        }
    }

    /// Inserts `id`; returns how many least recently used entries made room for it.
    fn insert(&mut self, id: ExeId, e: Arc<Entry>) -> u64 {
        self.remove(&id);
        let mut evicted = 0;
        while self.map.len() >= self.cap {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&old);
            evicted += 1;
        }
        self.clock += 1;
        self.order.insert(self.clock, id);
        self.map.insert(id, (e, self.clock));
        evicted
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The executable of an exec of `id` by `pid`, to be checked against `id`: what the process
/// runs, else — it is gone, or runs another file by now — what the exec's absolute `path`
/// names, if that is still the same file: here, then in the root of the parent `ppid`. A
/// short-lived process is gone by the time its exec is read (a shell's loop of `/bin/true`:
/// dozens of misses in a row at a storm's start, each keeping the quick drain pace): the
/// path finds its file all the same; a container's process ran a file of the container's
/// root, which its parent (a shell in the container, alive still) has too. Its identity is
/// the one the exec read (device, inode, size, mtime: what the cache trusts for every later
/// exec too): a path that names another file, here or there, leaves the exec `gone`.
fn open_exec(
    id: ExeId,
    pid: u32,
    ppid: u32,
    path: &[u8],
) -> std::io::Result<(std::fs::File, FileId)> {
    let want = id.file_id();
    let same = |r: std::io::Result<(std::fs::File, FileId)>| match r {
        Ok((f, fid)) if id.is(&fid) => Ok((f, fid)),
        Ok(_) => Err(std::io::Error::other("another file")),
        Err(e) => Err(e),
    };
    same(exe_file::open_exe(pid, &want))
        .or_else(|_| same(exe_file::open_path(path, &want)))
        .or_else(|_| same(exe_file::open_in_root(ppid, path, &want)))
}

/// An opener's job for a miss: the exec's file opened (`gone` when it cannot be, or is
/// another file now), then its read queued on the readers (`busy` when they are full).
fn open_then_read(
    (id, entry): (ExeId, Arc<Entry>),
    open: impl FnOnce() -> std::io::Result<(std::fs::File, FileId)>,
    readers: &Workers,
    counts: &Arc<Counts>,
) {
    let file = match open() {
        Ok((f, fid)) if id.is(&fid) => f,
        _ => {
            add(&counts.gone);
            return entry.finish(Err(Reason::Gone));
        }
    };
    let (e, c) = (entry.clone(), counts.clone());
    let queued = readers.try_run(move || {
        let r = exe_file::sha256(file, id.file_id());
        match &r {
            Ok(_) => add(&c.computed),
            Err(DigestError::Changed | DigestError::Io(_)) => add(&c.error),
        }
        e.finish(r.map_err(|_| Reason::Error));
    });
    if !queued {
        add(&counts.busy);
        entry.finish(Err(Reason::Busy));
    }
}

/// The event loop's end: answers each exec from the cache or queues a read.
pub(crate) struct Hasher {
    cfg: HashConfig,
    lru: Lru,
    /// Openers, then readers (none when hashing is off).
    workers: Option<(Workers, Workers)>,
    counts: Arc<Counts>,
    /// Execs the cache could not answer (hashing on): a file opened, or why not.
    misses: u64,
}

impl Hasher {
    /// Starts the workers (none when hashing is off).
    pub(crate) fn start(cfg: HashConfig) -> std::io::Result<Hasher> {
        let workers = if cfg.on {
            Some((
                Workers::start(cfg.workers, cfg.queue, "exe-open")?,
                Workers::start(cfg.workers, cfg.queue, "exe-hash")?,
            ))
        } else {
            None
        };
        Ok(Hasher {
            cfg,
            lru: Lru::new(cfg.cache),
            workers,
            counts: Arc::default(),
            misses: 0,
        })
    }

    /// A hasher that hashes nothing (`--hash off`).
    pub(crate) fn off() -> Hasher {
        Hasher {
            cfg: HashConfig {
                on: false,
                ..HashConfig::default()
            },
            lru: Lru::new(1),
            workers: None,
            counts: Arc::default(),
            misses: 0,
        }
    }

    pub(crate) fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Identities in the cache.
    pub(crate) fn cached(&self) -> usize {
        self.lru.len()
    }

    pub(crate) fn is_on(&self) -> bool {
        self.workers.is_some()
    }

    /// Execs so far that the cache could not answer (none while hashing is off).
    #[cfg(test)]
    pub(crate) fn misses(&self) -> u64 {
        self.misses
    }

    /// Execs so far whose executable could be opened neither through their process nor by
    /// their path (`gone`): short-lived processes of a binary this agent cannot reach but
    /// through them, so the event loop keeps its quick drain pace while they turn up, to
    /// catch one of them alive. (A miss that found its file needs no haste: the cache now
    /// answers the next exec of that binary.) Counted by the workers, which open the files.
    pub(crate) fn unopened(&self) -> u64 {
        self.counts.gone.load(Ordering::Relaxed)
    }

    /// The exec of `e` by process `pid`, just read from the ring buffer: its hash from the
    /// cache, or a read queued (the file opened by an opener at once, while the process may
    /// still live, else by the exec's path: see [`open_exec`]).
    pub(crate) fn on_exec(&mut self, pid: u32, e: &observer_common::ExecEvent) -> ExeHash {
        let id = ExeId::of(e);
        let ppid = e.task.ppid;
        self.exec_with(id, || {
            let path = crate::events::c_bytes(&e.filename).to_vec();
            move || open_exec(id, pid, ppid, &path)
        })
    }

    /// `on_exec` with the opening of the file given (made on a miss only). The file is
    /// opened by an opener, never on the event loop: opening it (or only looking it up, or
    /// its attributes) waits for its filesystem, and a FUSE daemon — rootless podman's
    /// fuse-overlayfs, any user's in a user namespace — answers when it likes. A stalled one
    /// holds an opener (two of them hold both: execs of files not seen before are `pending`
    /// and then `busy` until it answers), not the loop. The openers do not wait for the
    /// readers' pace, so a short-lived process is opened while it may still live.
    fn exec_with<O>(&mut self, id: ExeId, opener: impl FnOnce() -> O) -> ExeHash
    where
        O: FnOnce() -> std::io::Result<(std::fs::File, FileId)> + Send + 'static,
    {
        let Some((openers, readers)) = &self.workers else {
            return ExeHash::Null(Reason::Off);
        };
        if let Some(e) = self.lru.get(&id) {
            // A failed read is tried again by the next exec (the file may be readable now).
            if !e.failed() {
                add(&self.counts.cached);
                return ExeHash::Entry(e);
            }
            self.lru.remove(&id);
        }
        self.misses += 1;
        if id.size > self.cfg.max_size {
            add(&self.counts.too_large);
            return ExeHash::Null(Reason::TooLarge);
        }
        let open = opener();
        let entry = Arc::new(Entry::default());
        let (e, counts, readers) = (entry.clone(), self.counts.clone(), readers.clone());
        let queued = openers.try_run(move || open_then_read((id, e), open, &readers, &counts));
        if !queued {
            add(&self.counts.busy);
            return ExeHash::Null(Reason::Busy);
        }
        let evicted = self.lru.insert(id, entry.clone());
        self.counts.evicted.fetch_add(evicted, Ordering::Relaxed);
        ExeHash::Entry(entry)
    }

    /// Remembers a hash known otherwise (tests).
    #[cfg(test)]
    fn learn(&mut self, id: ExeId, d: Digest) {
        let evicted = self.lru.insert(id, Arc::new(Entry::done(d)));
        self.counts.evicted.fetch_add(evicted, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[path = "tests/exe_hash.rs"]
mod tests;
