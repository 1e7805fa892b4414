//! The event pump: takes the kernel's records from the ring buffer, masks secrets, applies
//! them to the table and passes them on to API subscribers and to the export sinks (with
//! the history entries the table recorded meanwhile). It wakes when the kernel side
//! says the buffer filled past an eighth, else on its own drain timer — every DRAIN_EVERY
//! while someone waits for the events (a stream subscriber, an export sink) or processes
//! of new executables end before their files could be opened, every UNWATCHED_DRAIN_EVERY
//! while events flow with no one waiting for them (views and scrapes drain first), once a
//! second on an idle node. Each wake-up costs more than the work there: 40–60 µs of a core
//! on a 2-core VM, most of it scheduling — in a spawn storm two thirds of the loop's CPU
//! (docs/performance.md); the timer is the kernel's (alarm.rs), so a drain is one wake-up.

use std::time::Duration;

use anyhow::Context;
use tokio::sync::broadcast;

use crate::{
    events::{
        reader::{EventReader, ReaderStats},
        redact::Redactor,
        Event,
    },
    export::Exporter,
    host::scan,
    probes::DRAIN_EVERY,
    store,
    table::{exe_hash::Hasher, Published, Table},
};

/// How often an idle agent (no event in its last drain, no stream subscriber, nothing to
/// settle) drains the ring buffer.
const IDLE_DRAIN_EVERY: Duration = Duration::from_secs(1);

/// How often the ring buffer is drained while events flow and no one waits for them: no
/// stream subscriber, no export sink, every exec's executable known to the hash cache or
/// opened.
/// Requests apply what waits before they are answered, so views never lag; what waits
/// longer is only the table's own copy.
const UNWATCHED_DRAIN_EVERY: Duration = Duration::from_millis(50);

pub(super) struct Pump<'a> {
    reader: EventReader,
    subscribers: broadcast::Sender<Published>,
    redact: Option<&'a Redactor>,
    exporter: Exporter,
    store: store::Writer,
    /// Hashes the executables execs run (the reads run on its own workers).
    hasher: Hasher,
    /// The last drain found events (housekeeping runs at its busy pace meanwhile).
    busy: bool,
    /// Export sinks are on (fixed at start): applied events are waited for.
    exporting: bool,
    /// Execs whose executable could not be opened, when the drain timer was last set.
    unopened_seen: u64,
    /// The drain timer (the kernel's: one wake-up a drain).
    drain: super::alarm::Alarm,
}

impl<'a> Pump<'a> {
    /// Starts the drain timer: the first drain is due DRAIN_EVERY from now.
    pub(super) fn new(
        reader: EventReader,
        subscribers: broadcast::Sender<Published>,
        redact: Option<&'a Redactor>,
        out: (Exporter, store::Writer),
        hasher: Hasher,
    ) -> std::io::Result<Pump<'a>> {
        let (exporter, store) = out;
        Ok(Pump {
            reader,
            subscribers,
            redact,
            exporting: !exporter.counts().is_empty(),
            exporter,
            store,
            unopened_seen: hasher.unopened(),
            hasher,
            busy: true,
            drain: super::alarm::Alarm::new(DRAIN_EVERY)?,
        })
    }

    /// Waits until the ring buffer has data or the drain timer fires.
    pub(super) async fn wait(&mut self) -> anyhow::Result<()> {
        let r = tokio::select! {
            r = self.reader.readable() => r,
            r = self.drain.fired() => r,
        };
        r.context("waiting on the ring buffer")
    }

    /// A wake-up: applies what waits, records adoptions, and sets the next drain; returns
    /// how far off that is.
    pub(super) fn on_wake(&mut self, table: &mut Table) -> Duration {
        self.busy = self.apply(table) > 0;
        adopt_orphans(table);
        let unopened = self.hasher.unopened();
        let next = next_drain(Pace {
            busy: self.busy,
            streaming: self.subscribers.receiver_count() > 0,
            exporting: self.exporting,
            orphans_pending: table.has_pending(),
            new_exes: unopened != self.unopened_seen,
        });
        self.unopened_seen = unopened;
        self.set_drain(next);
        next
    }

    /// Before answering a request: everything that happened before the question is applied
    /// (events wait in the ring buffer up to a drain interval between wake-ups), and the
    /// orphans it made are adopted now, as a drain would (their new parent is read from
    /// /proc before their PID can be reused).
    pub(super) fn catch_up(&mut self, table: &mut Table) {
        if self.apply(table) > 0 {
            self.busy = true;
            self.set_drain(DRAIN_EVERY);
        }
        adopt_orphans(table);
    }

    /// The next drain is due `after` from now.
    fn set_drain(&mut self, after: Duration) {
        if let Err(e) = self.drain.set(after) {
            // Not seen: the timer takes any duration. The buffer's own wake-ups still come.
            log::warn!("setting the drain timer: {e}");
        }
    }

    /// Applies every event waiting in the ring buffer; returns how many.
    pub(super) fn apply(&mut self, table: &mut Table) -> usize {
        let mut out = Outlets {
            subscribers: &self.subscribers,
            exporter: &mut self.exporter,
            store: &self.store,
        };
        apply(
            &mut self.reader,
            table,
            &mut out,
            &mut self.hasher,
            self.redact,
        )
    }

    /// What became of the executables of the execs applied, and the cache's size.
    pub(super) fn hash_counts(&self) -> crate::views::status::ExeHashCounts {
        crate::views::status::ExeHashCounts::of(&self.hasher)
    }

    /// The agent stops: the export sinks and the history store write what waits for them
    /// (half a second at most each, the stop must stay within systemd's and the kubelet's
    /// patience).
    pub(super) fn finish(self) {
        self.exporter.finish(Duration::from_millis(500));
        self.store.finish(Duration::from_millis(500));
    }

    /// The history store's state and counts (None: it is off).
    pub(super) fn store_status(&self) -> Option<crate::views::status::StoreStatus> {
        self.store.status()
    }

    /// Lines written and dropped by each export sink.
    pub(super) fn export_counts(&self) -> Vec<crate::views::status::ExportCounts> {
        self.exporter.counts()
    }

    pub(super) fn busy(&self) -> bool {
        self.busy
    }

    pub(super) fn stats(&self) -> &ReaderStats {
        &self.reader.stats
    }
}

/// Where applied events go on to.
pub(super) struct Outlets<'a> {
    pub(super) subscribers: &'a broadcast::Sender<Published>,
    pub(super) exporter: &'a mut Exporter,
    pub(super) store: &'a store::Writer,
}

/// Applies every event waiting in the ring buffer (secrets masked first), and passes them
/// on to API subscribers and the exporter, then the history entries they ended to the
/// exporter and the history store; the exporter hands the drain's items to its sinks at
/// the end. An exec's executable is opened at once by an opener thread, while its process
/// may still live, and hashed by another: never on this loop. A fork, exec or exit goes on
/// with its process's exec session as the table has it once the event is applied: the setns, fork
/// or cgroup move that made a session came before its first exec.
pub(super) fn apply(
    reader: &mut EventReader,
    table: &mut Table,
    out: &mut Outlets,
    hasher: &mut Hasher,
    redact: Option<&Redactor>,
) -> usize {
    // Asked once a drain (the count takes a lock): a subscriber that comes during a drain
    // gets the events from the next one on, as if it had come just after.
    let streamed = out.subscribers.receiver_count() > 0;
    let n = reader.drain(&mut |mut ev| {
        if let Some(r) = redact {
            r.event(&mut ev);
        }
        let exe = match &ev {
            Event::Exec(e) => Some(hasher.on_exec(e.header.tgid, e)),
            _ => None,
        };
        // A reaped process is gone from the table once its free event is applied.
        let before = out
            .exporter
            .wants(&ev)
            .then(|| out.exporter.origin(table, &ev))
            .flatten();
        table.apply(&ev);
        if let Some(h) = &exe {
            table.set_exe_hash(ev.header().tgid, h.clone());
        }
        let session = (streamed || out.exporter.wants(&ev))
            .then(|| table.session_of(&ev))
            .flatten();
        out.exporter
            .event(&ev, table, before, exe.as_ref(), session.as_ref());
        if streamed {
            let _ = out.subscribers.send(Published { ev, exe, session });
        }
    });
    if out.exporter.wants_history() || out.store.wants() {
        let ended = table.take_ended();
        out.store.offer(&ended);
        out.exporter.history(ended);
    }
    out.exporter.flush();
    n
}

/// Records who adopted the orphans that exits left, from their new parent in /proc (read
/// at once: with PIDs wrapping fast an orphan's PID may soon name another process).
pub(super) fn adopt_orphans(table: &mut Table) {
    if table.has_pending() {
        table.resolve_pending(|pid| scan::live(pid).map(|l| (l.ppid, l.start_ticks)));
    }
}

/// What a drain found, and who waits for the events.
#[derive(Clone, Copy, Default)]
struct Pace {
    /// The drain found events.
    busy: bool,
    /// A stream subscriber is connected.
    streaming: bool,
    /// Export sinks are on.
    exporting: bool,
    /// Orphans wait for their new parent to be read from /proc.
    orphans_pending: bool,
    /// Since the last drain an exec's executable was not in the hash cache and could not be
    /// opened (its process gone, its path naming another file): more execs of it may
    /// follow, to be opened while their processes live.
    new_exes: bool,
}

/// When the next drain is due. Every DRAIN_EVERY while someone streams, orphans wait, or
/// events flow to an export sink or with new executables that could not be opened; every
/// UNWATCHED_DRAIN_EVERY while events flow with no one waiting for them; when a drain
/// found nothing, once a second (views and scrapes drain first, and the kernel side wakes
/// the agent when the buffer fills past an eighth).
fn next_drain(p: Pace) -> Duration {
    if p.streaming || p.orphans_pending {
        DRAIN_EVERY
    } else if !p.busy {
        IDLE_DRAIN_EVERY
    } else if p.exporting || p.new_exes {
        DRAIN_EVERY
    } else {
        UNWATCHED_DRAIN_EVERY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_node_is_drained_once_a_second_and_any_work_brings_the_fast_pace_back() {
        let idle = Pace::default();
        assert_eq!(next_drain(idle), IDLE_DRAIN_EVERY);
        let streaming = Pace {
            streaming: true,
            ..idle
        };
        assert_eq!(next_drain(streaming), DRAIN_EVERY, "a stream subscriber");
        let orphans = Pace {
            orphans_pending: true,
            ..idle
        };
        assert_eq!(next_drain(orphans), DRAIN_EVERY, "orphans to adopt");
        let exporting = Pace {
            exporting: true,
            ..idle
        };
        assert_eq!(next_drain(exporting), IDLE_DRAIN_EVERY, "sinks, no events");
    }

    #[test]
    fn events_no_one_waits_for_are_drained_less_often_unless_new_executables_turn_up() {
        let busy = Pace {
            busy: true,
            ..Pace::default()
        };
        assert_eq!(next_drain(busy), UNWATCHED_DRAIN_EVERY);
        assert!(UNWATCHED_DRAIN_EVERY > DRAIN_EVERY);
        for (p, why) in [
            (
                Pace {
                    streaming: true,
                    ..busy
                },
                "a stream subscriber",
            ),
            (
                Pace {
                    exporting: true,
                    ..busy
                },
                "export sinks",
            ),
            (
                Pace {
                    new_exes: true,
                    ..busy
                },
                "an executable the hash cache did not know",
            ),
            (
                Pace {
                    orphans_pending: true,
                    ..busy
                },
                "orphans to adopt",
            ),
        ] {
            assert_eq!(next_drain(p), DRAIN_EVERY, "{why}");
        }
    }
}
