//! Every event and every history entry, out of the node as JSON lines (`--export-file`,
//! `--export-stdout`; docs/export.md has the schema). The event loop only offers: each
//! sink has a bounded queue to a writer thread of its own, handed what a drain exported
//! in one batch at the drain's end (`queue.rs`), and what a queue cannot take is dropped
//! and counted there and then — a slow disk never slows the table. The first sink that
//! wants a batch's lines makes them (`line.rs`) for every sink (`queue.rs`); a writer
//! writes them in batches to a rotated file or to stdout (`sink.rs`), both through the
//! same code, or makes OpenTelemetry records of them (`otlp/`).

mod line;
mod origin;
mod otlp;
mod queue;
mod sink;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use observer_common::EventKind;

use crate::{
    containers::{names::StateDirs, ContainerKey},
    events::{kind_from_name, Event},
    table::{exe_hash::ExeHash, history::Ended, sessions::Session, Table},
    views::status::ExportCounts,
};
pub(crate) use origin::Origin;
use origin::{Origins, SinkNames};
use queue::Inbox;

/// Items a sink's queue holds before it drops: about a second of a storm of short-lived
/// processes (4 to 5 events each at ~3,000 per second); the queue's memory grows with
/// what waits in it, not with this bound.
const QUEUE: usize = 16_384;

/// What the agent exports and where (`--export-*`).
#[derive(Clone, Debug, Default)]
pub(crate) struct ExportConfig {
    pub(crate) file: Option<PathBuf>,
    /// Bytes a file grows to before it is rotated.
    pub(crate) file_max: u64,
    /// Rotated files kept (PATH.1 … PATH.keep).
    pub(crate) file_keep: u32,
    /// Rotated files are gzip-compressed (PATH.1.gz …).
    pub(crate) file_gzip: bool,
    pub(crate) stdout: bool,
    /// The OTLP sink (`--otlp-endpoint`).
    pub(crate) otlp: Option<OtlpConfig>,
    pub(crate) types: Types,
}

pub use otlp::line_and_request;
pub(crate) use otlp::OtlpConfig;

/// A sink's thread: its queue, its counts and its own names.
type Runner = Box<dyn FnOnce(Inbox, &Counts, &mut SinkNames) + Send>;

/// `--export-types`: event types by the names /v1/events uses, plus `history`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Types {
    /// Bit `k` for EventKind `k`.
    events: u32,
    history: bool,
}

impl Default for Types {
    fn default() -> Self {
        Types {
            events: u32::MAX,
            history: true,
        }
    }
}

/// An `--export-types` entry that names nothing.
#[derive(Debug, thiserror::Error)]
#[error("unknown export type `{0}` (known: {known}, history, all)", known = known_kinds())]
pub(crate) struct UnknownType(String);

fn known_kinds() -> String {
    EventKind::ALL.map(|k| k.name()).join(", ")
}

impl Types {
    /// A comma-separated list (`exec,exit,history`); `all` (or nothing) is everything.
    pub(crate) fn parse(s: &str) -> Result<Types, UnknownType> {
        let names: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() || names.contains(&"all") {
            return Ok(Types::default());
        }
        let mut t = Types {
            events: 0,
            history: false,
        };
        for name in names {
            match (name, kind_from_name(name)) {
                ("history", _) => t.history = true,
                (_, Some(k)) => t.events |= 1 << k as u32,
                (_, None) => return Err(UnknownType(name.to_string())),
            }
        }
        Ok(t)
    }

    pub(crate) fn event(self, k: EventKind) -> bool {
        self.events & (1 << k as u32) != 0
    }
}

/// What a writer thread is handed: an event or a history entry, with the container it
/// came from (None: a host process).
#[expect(
    clippy::large_enum_variant,
    reason = "events are the stream: boxing each would allocate on the event loop; \
              history entries are rare"
)]
enum Item {
    /// An event, its process's container, for an exec its executable's hash, and its
    /// process's exec session.
    Event(
        Event,
        Option<Arc<Origin>>,
        Option<ExeHash>,
        Option<Arc<Session>>,
    ),
    History(Box<(ContainerKey, Ended)>, Arc<Origin>),
}

impl Item {
    fn origin(&self) -> Option<&Origin> {
        match self {
            Item::Event(_, o, ..) => o.as_deref(),
            Item::History(_, o) => Some(o),
        }
    }
}

/// Lines a sink wrote and lines it could not take or write.
#[derive(Debug, Default)]
struct Counts {
    sent: AtomicU64,
    dropped: AtomicU64,
}

impl Counts {
    fn add(n: &AtomicU64, by: u64) {
        n.fetch_add(by, Ordering::Relaxed);
    }
}

/// The event loop's end of one sink.
struct Queue {
    name: &'static str,
    tx: queue::Sender,
    counts: Arc<Counts>,
    /// Disconnected when the writer thread has ended.
    done: std::sync::mpsc::Receiver<()>,
}

/// The event loop's end of the sinks: gathers a drain's events and history entries and
/// offers them at its end (`flush`), never waits.
#[derive(Default)]
pub(crate) struct Exporter {
    queues: Vec<Queue>,
    types: Types,
    origins: Origins,
    /// What this drain exported so far.
    batch: Vec<Item>,
    /// An OTLP sink is on: a batch's lines are made with its records' attributes.
    records: bool,
}

impl Exporter {
    /// Starts a writer thread per configured sink (none: an exporter that takes nothing);
    /// `dirs` are the runtimes' state, where the sinks' threads read container names.
    pub(crate) fn start(cfg: &ExportConfig, dirs: &StateDirs) -> anyhow::Result<Exporter> {
        let mut runners: Vec<(&'static str, Runner)> = Vec::new();
        if let Some(path) = &cfg.file {
            let t = sink::Target::file(path, cfg.file_max, cfg.file_keep, cfg.file_gzip);
            runners.push(("file", Box::new(move |rx, c, r| sink::run(rx, t, c, r))));
        }
        if cfg.stdout {
            let t = sink::Target::Stdout;
            runners.push(("stdout", Box::new(move |rx, c, r| sink::run(rx, t, c, r))));
        }
        if let Some(o) = &cfg.otlp {
            let s = otlp::Sink::new(o)?;
            runners.push(("otlp", Box::new(move |rx, c, r| otlp::run(rx, s, c, r))));
        }
        let mut queues = Vec::new();
        for (name, runner) in runners {
            let (tx, rx) = queue::bounded(QUEUE);
            let counts = Arc::new(Counts::default());
            let c = counts.clone();
            let mut names = SinkNames::new(dirs.clone());
            let (done_tx, done) = std::sync::mpsc::channel::<()>();
            std::thread::Builder::new()
                .name(format!("export-{name}"))
                .spawn(move || {
                    runner(rx, &c, &mut names);
                    drop(done_tx);
                })?;
            queues.push(Queue {
                name,
                tx,
                counts,
                done,
            });
        }
        Ok(Exporter {
            queues,
            types: cfg.types,
            origins: Origins::default(),
            batch: Vec::new(),
            records: cfg.otlp.is_some(),
        })
    }

    /// Whether ended processes' history entries are wanted (the table then keeps them for
    /// `history` until they are taken).
    pub(crate) fn wants_history(&self) -> bool {
        !self.queues.is_empty() && self.types.history
    }

    /// Whether `ev` is exported: then its container is looked up (before the table
    /// applies it: a reaped process is gone after).
    pub(crate) fn wants(&self, ev: &Event) -> bool {
        !self.queues.is_empty() && self.types.event(ev.kind())
    }

    /// The container of `ev`'s process as the table has it now.
    pub(crate) fn origin(&self, table: &Table, ev: &Event) -> Option<Arc<Origin>> {
        self.origins.of(table, ev.header().tgid)
    }

    /// An event as it was applied (secrets already masked), with its process's container
    /// (`before`: looked up before it was applied; else it is looked up now), an exec's
    /// executable hash (the writer waits for it) and the process's exec session; the sinks
    /// get it at the next `flush`.
    pub(crate) fn event(
        &mut self,
        ev: &Event,
        table: &Table,
        before: Option<Arc<Origin>>,
        exe: Option<&ExeHash>,
        session: Option<&Arc<Session>>,
    ) {
        if !self.wants(ev) {
            return;
        }
        let origin = before.or_else(|| self.origin(table, ev));
        self.batch
            .push(Item::Event(*ev, origin, exe.cloned(), session.cloned()));
    }

    /// History entries the table recorded since the last call (the sinks get them at the
    /// next `flush`).
    pub(crate) fn history(&mut self, entries: Vec<(ContainerKey, Ended)>) {
        if !self.wants_history() {
            return;
        }
        for e in entries {
            let origin = self.origins.of_key(&e.0);
            self.batch.push(Item::History(Box::new(e), origin));
        }
    }

    /// Hands what was gathered since the last call to every sink's queue, as one batch
    /// they share (a drain's end: one wake-up of each sink's thread, not one per item).
    pub(crate) fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        // The next drain's buffer starts at this one's size: no regrowth while it fills.
        let next = Vec::with_capacity(self.batch.len());
        let items = queue::Drained::with(std::mem::replace(&mut self.batch, next), self.records);
        for q in &self.queues {
            q.tx.offer(&items, &q.counts);
        }
    }

    /// The agent stops: what waits in the queues is written, for `within` at most.
    pub(crate) fn finish(self, within: std::time::Duration) {
        let until = std::time::Instant::now() + within;
        let waits: Vec<_> = self.queues.into_iter().map(|q| q.done).collect();
        for done in waits {
            let left = until.saturating_duration_since(std::time::Instant::now());
            let _ = done.recv_timeout(left);
        }
    }

    /// Per sink: lines written, lines dropped (a full queue or a failed write), and lines
    /// waiting in its queue.
    pub(crate) fn counts(&self) -> Vec<ExportCounts> {
        self.queues
            .iter()
            .map(|q| ExportCounts {
                sink: q.name.to_string(),
                sent: q.counts.sent.load(Ordering::Relaxed),
                dropped: q.counts.dropped.load(Ordering::Relaxed),
                queued: q.tx.queued() as u64,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_types_name_event_types_as_the_events_route_does_plus_history() {
        let t = Types::parse("exec, exit").unwrap();
        assert!(t.event(EventKind::Exec) && t.event(EventKind::Exit));
        assert!(!t.event(EventKind::Fork) && !t.history);
        let t = Types::parse("history").unwrap();
        assert!(t.history && !t.event(EventKind::Exec));
        assert_eq!(Types::parse("all").unwrap(), Types::default());
        assert_eq!(Types::parse("").unwrap(), Types::default());
        let e = Types::parse("exec,nope").unwrap_err().to_string();
        assert!(
            e.contains("`nope`") && e.contains("exec") && e.contains("history"),
            "{e}"
        );
    }

    #[test]
    fn what_a_full_queue_cannot_take_is_dropped_and_counted_without_waiting() {
        let (tx, mut rx) = queue::bounded(2);
        let (_done_tx, done) = std::sync::mpsc::channel();
        let mut x = Exporter {
            queues: vec![Queue {
                name: "file",
                tx,
                counts: Arc::new(Counts::default()),
                done,
            }],
            types: Types::parse("free").unwrap(),
            origins: Origins::default(),
            batch: Vec::new(),
            records: false,
        };
        let free = Event::Free(observer_common::FreeEvent {
            header: observer_common::EventHeader {
                kind: EventKind::Free as u32,
                cpu: 0,
                ktime_ns: 1,
                tgid: 5,
                pid: 5,
            },
            task: observer_common::TaskInfo {
                start_time_ns: 1,
                cgroup_id: 0,
                ppid: 1,
                uid: 0,
                gid: 0,
                pid_level: 0,
                ns_pids: [0; observer_common::MAX_PID_LEVELS],
                ns: [0; observer_common::NS_COUNT],
                flags: 0,
                comm: [0; observer_common::COMM_LEN],
            },
        });
        let table = Table::new(1, Default::default());
        for _ in 0..5 {
            x.event(&free, &table, None, None, None);
        }
        assert_eq!(x.counts()[0].dropped, 0, "offered at the flush");
        x.flush();
        assert!(x.batch.is_empty());
        assert!(!x.wants_history(), "history was not asked for");
        let c = &x.counts()[0];
        assert_eq!((c.sink.as_str(), c.sent, c.dropped), ("file", 0, 3));
        assert!(rx.next().is_some() && rx.next().is_some() && rx.next().is_none());
    }

    #[test]
    fn an_exporter_without_sinks_takes_nothing_and_wants_no_history() {
        let x = Exporter::default();
        assert!(!x.wants_history());
        assert!(x.counts().is_empty());
    }
}
