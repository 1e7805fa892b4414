//! The durable history: every ended process's history entry (with the signals it got or
//! ignored and the OOM killer's facts, as the table's `Ended` carries them) kept on the
//! node's disk, in `<state dir>/history.redb` (`--state-dir`, default /var/lib/observer),
//! so `observer history` and `observer why` answer across agent restarts, crashes and
//! reboots.
//!
//! The file is a redb database: pure Rust (no C to build for the static musl binary),
//! ACID with copy-on-write pages and checksums, crash-safe on `kill -9` and power loss
//! (a commit is durable when it returns; a torn commit is rolled back on open), kept by
//! one maintainer since 2021 with a stable file format since 1.0. SQLite would need a C
//! build; sled is unmaintained; an append-only log of our own would need its own recovery.
//! Entries are encoded compactly (codec/): under 200 bytes for a shell command.
//!
//! Off the event loop: the loop only offers entries to a bounded queue (what it cannot
//! take is counted, never waited for); a writer thread commits what waits at most once a
//! second, so a crash loses at most the last second of entries, never an older one. The
//! store is bounded by age (`--history-disk-retention`, the oldest entries evicted first) and
//! size (`--history-disk-max`: the oldest entries of the container that holds the most),
//! evictions counted. A store that cannot be written (full disk,
//! read-only directory) leaves the agent on its in-memory history: a warning, the
//! `observer_history_store_errors_total` metric and the state in /v1/status; the writer
//! tries again later. Queries (read.rs) run on the API's blocking threads, beside the
//! writer (redb readers do not block it).

mod codec;
mod db;
mod find;
#[cfg(test)]
pub(crate) mod generation_tests;
mod migrate;
#[cfg(test)]
mod name_tests;
#[cfg(test)]
mod pid_tests;
mod read;
mod records;
#[cfg(test)]
mod scale_tests;
#[cfg(test)]
pub(crate) mod tests;
mod write;

pub(crate) use find::Gens;
pub(crate) use read::Bounds;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, AtomicU8, Ordering},
        mpsc::{self, RecvTimeoutError},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use crate::{
    containers::{names::Resolver, ContainerKey},
    host::clock::{boot_id, boot_now_ns, unix_now_ns},
    table::history::Ended,
    views::status::StoreStatus,
};

/// Entries the queue holds before it drops (a second of a storm of short-lived processes).
const QUEUE: usize = 8192;
/// The writer commits what waits at most this often.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// After a failed open or commit, the store is opened again this long after.
const RETRY_EVERY: Duration = Duration::from_secs(10);
/// The retention is enforced at least this often on a node where nothing ends.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// `--state-dir`, `--history-disk-max`, `--history-disk-retention`.
#[derive(Clone, Debug)]
pub(crate) struct StoreConfig {
    pub(crate) dir: PathBuf,
    pub(crate) limits: Limits,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// The file's size bound (bytes).
    pub(crate) disk_max: u64,
    pub(crate) retention_ns: u64,
}

impl Limits {
    /// The entries' accounted size that keeps the file within `disk_max`. Their pages
    /// take about 1.4 times their accounted size (B-tree pages are not full, a commit
    /// copies the pages it changes; freed pages are reused, never returned), and redb
    /// doubles the file when it must grow: a file of up to 2.8 times the accounted size
    /// (tests.rs `the_file_stays_within_its_size_bound_evicting_the_oldest_first`).
    fn budget(&self) -> u64 {
        self.disk_max / 10 * 3
    }
}

/// Counters the status and metrics show.
#[derive(Default)]
struct Counts {
    written: AtomicU64,
    /// Entries offered and not yet committed (or dropped): 0 once everything the table
    /// ended before is on disk.
    queued: AtomicU64,
    /// Entries never stored: the queue was full, or the store could not be written.
    dropped: AtomicU64,
    evicted: AtomicU64,
    errors: AtomicU64,
    moved_aside: AtomicU64,
    entries: AtomicU64,
    bytes: AtomicU64,
}

/// The store's state, for the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum State {
    Opening = 0,
    Ok = 1,
    /// It cannot be opened or written now; tried again every RETRY_EVERY.
    Failing = 2,
    Stopped = 3,
}

impl State {
    fn name(v: u8) -> &'static str {
        match v {
            0 => "opening",
            1 => "ok",
            2 => "failing",
            _ => "stopped",
        }
    }
}

/// The open file as queries see it.
#[derive(Clone)]
struct Reading {
    db: Arc<redb::Database>,
    boot: u32,
    offsets: rustc_hash::FxHashMap<u32, i64>,
}

/// The store shared by the writer thread and the API's queries.
pub(crate) struct Store {
    cfg: StoreConfig,
    counts: Counts,
    state: AtomicU8,
    reading: RwLock<Option<Reading>>,
}

impl Store {
    pub(crate) fn new(cfg: StoreConfig) -> Arc<Store> {
        Arc::new(Store {
            cfg,
            counts: Counts::default(),
            state: AtomicU8::new(State::Opening as u8),
            reading: RwLock::new(None),
        })
    }

    fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// The status /v1/status and the metrics show.
    pub(crate) fn status(&self) -> StoreStatus {
        let c = &self.counts;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        StoreStatus {
            state: State::name(self.state.load(Ordering::Relaxed)).into(),
            path: self.cfg.dir.join(db::FILE).display().to_string(),
            entries: get(&c.entries),
            bytes: get(&c.bytes),
            written: get(&c.written),
            queued: get(&c.queued),
            dropped: get(&c.dropped),
            evicted: get(&c.evicted),
            errors: get(&c.errors),
            moved_aside: get(&c.moved_aside),
        }
    }
}

#[cfg(test)]
impl Store {
    /// A store whose opening failed: queries stop waiting for it.
    pub(crate) fn fail_for_test(&self) {
        self.set_state(State::Failing);
    }
}

/// Marks the store stopped when dropped (unwinding included), warning if by a panic.
struct StopGuard<'a>(&'a Store);

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.counts.errors.fetch_add(1, Ordering::Relaxed);
            log::error!(
                "history store: its writer stopped (a bug: please report the panic above); \
                 ended processes stay in memory only"
            );
        }
        self.0.set_state(State::Stopped);
    }
}

/// The event loop's end of the store: offers ended processes, never waits.
pub(crate) struct Writer {
    tx: Option<mpsc::SyncSender<(ContainerKey, Ended)>>,
    store: Option<Arc<Store>>,
    done: Option<mpsc::Receiver<()>>,
}

impl Writer {
    /// No store (`--history-disk-max 0`, the CLI): takes nothing.
    pub(crate) fn none() -> Writer {
        Writer {
            tx: None,
            store: None,
            done: None,
        }
    }

    /// Starts the writer thread, which opens the store (off the event loop: the check of
    /// a big file reads it whole) and names containers through `names`.
    pub(crate) fn start(store: Arc<Store>, names: Arc<Mutex<Resolver>>) -> anyhow::Result<Writer> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let (done_tx, done) = mpsc::channel::<()>();
        let s = store.clone();
        std::thread::Builder::new()
            .name("history-store".into())
            .spawn(move || {
                // Stopped however the thread ends: a panic in it (a bug, a redb assertion)
                // must show in the status and metrics, not leave "ok" for ever.
                let _stopped = StopGuard(&s);
                run(&s, &rx, &names);
                drop(done_tx);
            })?;
        Ok(Writer {
            tx: Some(tx),
            store: Some(store),
            done: Some(done),
        })
    }

    pub(crate) fn wants(&self) -> bool {
        self.tx.is_some()
    }

    /// Ended processes the table recorded (clones: the exporter may take them too).
    pub(crate) fn offer(&self, entries: &[(ContainerKey, Ended)]) {
        let (Some(tx), Some(store)) = (&self.tx, &self.store) else {
            return;
        };
        for e in entries {
            // Counted before it is sent: the writer may take it (and count it done) at once.
            store.counts.queued.fetch_add(1, Ordering::Relaxed);
            if tx.try_send(e.clone()).is_err() {
                store.counts.queued.fetch_sub(1, Ordering::Relaxed);
                store.counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The agent stops: what waits is committed, for `within` at most.
    pub(crate) fn finish(mut self, within: Duration) {
        drop(self.tx.take());
        if let Some(done) = self.done.take() {
            let _ = done.recv_timeout(within);
        }
    }

    pub(crate) fn status(&self) -> Option<StoreStatus> {
        self.store.as_ref().map(|s| s.status())
    }
}

/// The writer thread: opens the store, then commits what the queue brings once a second
/// until the queue is closed (the agent stops), committing what is left.
fn run(store: &Store, rx: &mpsc::Receiver<(ContainerKey, Ended)>, names: &Mutex<Resolver>) {
    let mut open: Option<write::Open> = None;
    let mut retry_at = Instant::now();
    let mut expire_at = Instant::now();
    let mut batch = Vec::new();
    let mut meta = |k: &ContainerKey, look: records::Look| {
        let mut r = names.lock().unwrap_or_else(|e| e.into_inner());
        match look {
            records::Look::Cached => r.fresh(k),
            records::Look::Any => Some(r.meta(k, None, None)),
            records::Look::Now => Some(r.meta_now(k, None, None)),
        }
    };
    loop {
        let due = Instant::now() + COMMIT_EVERY;
        let closed = collect(rx, &mut batch, due);
        if open.is_none() && Instant::now() >= retry_at {
            open = open_store(store);
            retry_at = Instant::now() + RETRY_EVERY;
        }
        let expire = Instant::now() >= expire_at;
        if let Some(o) = open.as_mut().filter(|_| !batch.is_empty() || expire) {
            if commit(store, o, &batch, &mut meta).is_err() {
                open = None;
                *store.reading.write().unwrap_or_else(|e| e.into_inner()) = None;
                retry_at = Instant::now() + RETRY_EVERY;
            }
            expire_at = Instant::now() + EXPIRE_EVERY;
        } else if open.is_none() && !batch.is_empty() {
            store
                .counts
                .dropped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        // Committed or counted as dropped: no longer waiting.
        store
            .counts
            .queued
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        batch.clear();
        if closed {
            return;
        }
    }
}

/// Takes what the queue brings until `due`; true when the queue is closed.
fn collect(
    rx: &mpsc::Receiver<(ContainerKey, Ended)>,
    batch: &mut Vec<(ContainerKey, Ended)>,
    due: Instant,
) -> bool {
    loop {
        match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Ok(e) => batch.push(e),
            Err(RecvTimeoutError::Timeout) => return false,
            Err(RecvTimeoutError::Disconnected) => return true,
        }
    }
}

/// Opens the store and registers this boot; None (state failing, counted, warned) when
/// it cannot be.
fn open_store(store: &Store) -> Option<write::Open> {
    let fail = |what: String| {
        store.counts.errors.fetch_add(1, Ordering::Relaxed);
        let was = store.state.swap(State::Failing as u8, Ordering::Relaxed);
        if was == State::Failing as u8 {
            log::debug!("history store: {what}");
            return;
        }
        log::warn!(
            "history store: {what}; the history stays in memory only (retrying every {}s)",
            RETRY_EVERY.as_secs()
        );
    };
    // A handle of an earlier open (a failed one) holds the file's lock until dropped.
    *store.reading.write().unwrap_or_else(|e| e.into_inner()) = None;
    let db = match db::open(&store.cfg.dir, store) {
        Ok(db) => db,
        Err(e) => {
            fail(e.to_string());
            return None;
        }
    };
    let id = boot_id().unwrap_or_default();
    let offset = (i128::from(unix_now_ns()) - i128::from(boot_now_ns())) as i64;
    let opened = db::register_boot(&db, &id, offset)
        .and_then(|(boot, offsets)| write::Open::load(db, boot, offsets));
    match opened {
        Ok(o) => {
            publish(store, &o);
            store.set_state(State::Ok);
            log::info!(
                "history store: {} ({} entries)",
                store.cfg.dir.join(db::FILE).display(),
                o.entries
            );
            Some(o)
        }
        Err(e) => {
            fail(format!("{}: {e}", store.cfg.dir.display()));
            None
        }
    }
}

/// Lets queries see the open file (again).
fn publish(store: &Store, o: &write::Open) {
    store.counts.entries.store(o.entries, Ordering::Relaxed);
    store.counts.bytes.store(o.bytes, Ordering::Relaxed);
    *store.reading.write().unwrap_or_else(|e| e.into_inner()) = Some(Reading {
        db: o.db.clone(),
        boot: o.boot,
        offsets: o.offsets.clone(),
    });
}

fn commit(
    store: &Store,
    o: &mut write::Open,
    batch: &[(ContainerKey, Ended)],
    meta: &mut records::MetaFn,
) -> Result<(), redb::Error> {
    match o.commit(batch, meta, &store.cfg.limits, write::Now::read()) {
        Ok(c) => {
            let n = &store.counts;
            n.written.fetch_add(c.written, Ordering::Relaxed);
            n.evicted.fetch_add(c.evicted, Ordering::Relaxed);
            n.entries.store(o.entries, Ordering::Relaxed);
            n.bytes.store(o.bytes, Ordering::Relaxed);
            if store.state.load(Ordering::Relaxed) != State::Ok as u8 {
                store.set_state(State::Ok);
            }
            Ok(())
        }
        Err(e) => {
            let n = &store.counts;
            n.errors.fetch_add(1, Ordering::Relaxed);
            n.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
            store.set_state(State::Failing);
            log::warn!(
                "history store: writing {} entries to {} failed: {e}; the history stays in \
                 memory only (retrying every {}s)",
                batch.len(),
                store.cfg.dir.join(db::FILE).display(),
                RETRY_EVERY.as_secs()
            );
            Err(e)
        }
    }
}
