//! The hand-off between the event loop and the sinks' threads. What one drain of the ring
//! buffer exports is gathered in one batch, shared by every sink (each event copied once,
//! a history entry never cloned), and handed to each sink's queue when the drain ends: one
//! send, and at most one wake-up of a sink's thread, per drain rather than per item (a
//! wake-up per event cost the agent more than the line it carried). A queue is bounded in
//! items, not batches: what does not fit when a batch is offered is dropped from it and
//! counted there and then, and the loop never waits.
//!
//! Every sink writes the same JSON line of an item (the OTLP record is made from it), so a
//! batch's lines are made once, by the first sink that wants them, and the others read
//! them (`Next::line`): making the line twice was a quarter of the file and OTLP sinks'
//! cost per item beyond the records themselves (docs/export.md, "What it costs").

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, OnceLock,
};

use tokio::sync::mpsc;

use super::{
    line,
    origin::SinkNames,
    otlp::typed::{Part, Records},
    Counts, Item,
};

/// Items of one drain, shared by the sinks, and their lines once a sink made them; the
/// last sink done with it frees it (on its own thread, not the loop's).
pub(super) type Shared = Arc<Drained>;

/// What one drain exported.
pub(super) struct Drained {
    items: Vec<Item>,
    /// The OTLP records' attributes are made with the lines (an OTLP sink is on).
    records: bool,
    lines: OnceLock<Lines>,
}

impl Drained {
    /// Items whose lines are made with their OTLP records' attributes.
    #[cfg(test)]
    pub(super) fn new(items: Vec<Item>) -> Shared {
        Drained::with(items, true)
    }

    /// Items whose lines are made with (`records`) or without their records' attributes.
    pub(super) fn with(items: Vec<Item>, records: bool) -> Shared {
        Arc::new(Drained {
            items,
            records,
            lines: OnceLock::new(),
        })
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    /// Every item's line, made on the first call (the container names from that sink's
    /// `names`; another sink that asks meanwhile waits for them).
    fn lines(&self, names: &mut SinkNames) -> &Lines {
        self.lines
            .get_or_init(|| Lines::of(&self.items, names, self.records))
    }
}

/// The items' lines in one buffer, each with its newline, and where each ends; an item
/// that would not serialize has an empty one. With `records`, the OTLP records'
/// attributes, made from the same views in the same pass.
struct Lines {
    buf: Vec<u8>,
    ends: Vec<usize>,
    records: Option<Records>,
}

impl Lines {
    fn of(items: &[Item], names: &mut SinkNames, records: bool) -> Lines {
        let mut l = Lines {
            // About a storm's line each: the buffer seldom grows.
            buf: Vec::with_capacity(items.len() * 640),
            ends: Vec::with_capacity(items.len()),
            records: records.then(|| Records::for_items(items.len())),
        };
        let hashes_until = std::time::Instant::now() + line::HASH_WAIT;
        for item in items {
            let n = item.origin().map(|o| names.names(o));
            // Nothing is appended when it fails: its line is empty (and no record).
            line::write_with(
                &mut l.buf,
                item,
                n.as_ref(),
                l.records.as_mut(),
                hashes_until,
            );
            l.ends.push(l.buf.len());
        }
        if let Some(r) = &mut l.records {
            r.made();
        }
        l
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p]);
        Some(&self.buf[start..*self.ends.get(i)?]).filter(|l| !l.is_empty())
    }
}

/// The first `take` items of a shared batch: what fitted in one sink's queue.
struct Share {
    items: Shared,
    take: usize,
}

/// One item taken from a sink's queue.
pub(super) struct Next<'a> {
    drained: &'a Drained,
    i: usize,
}

impl<'a> Next<'a> {
    #[cfg(test)]
    pub(super) fn item(&self) -> &'a Item {
        &self.drained.items[self.i]
    }

    /// The item's JSON line with its newline (made once for every sink: the container's
    /// names are looked up in `names` if this sink is the first to ask); None when it
    /// would not serialize.
    pub(super) fn line(&self, names: &mut SinkNames) -> Option<&'a [u8]> {
        self.drained.lines(names).get(self.i)
    }

    /// The item's line and its OTLP record's attributes (made with the lines); None when
    /// it has no record.
    pub(super) fn record(&self, names: &mut SinkNames) -> Option<(&'a [u8], Part<'a>)> {
        let lines = self.drained.lines(names);
        Some((lines.get(self.i)?, lines.records.as_ref()?.get(self.i)?))
    }
}

/// Makes a queue of `bound` items: the event loop's end and the sink's.
pub(super) fn bounded(bound: usize) -> (Sender, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Sender {
            tx,
            queued: queued.clone(),
            bound,
        },
        Inbox {
            rx,
            queued,
            current: None,
            next: 0,
        },
    )
}

/// The event loop's end of one sink's queue.
pub(super) struct Sender {
    tx: mpsc::UnboundedSender<Share>,
    /// Items sent that the sink has not finished taking.
    queued: Arc<AtomicUsize>,
    bound: usize,
}

impl Sender {
    /// Items offered and taken that the sink has not finished taking.
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Offers a drain's items: as many as the queue has room for are queued, the rest are
    /// dropped and counted in `counts`.
    pub(super) fn offer(&self, items: &Shared, counts: &Counts) {
        let n = items.len();
        let room = self
            .bound
            .saturating_sub(self.queued.load(Ordering::Acquire));
        let take = n.min(room);
        Counts::add(&counts.dropped, (n - take) as u64);
        if take == 0 {
            return;
        }
        self.queued.fetch_add(take, Ordering::AcqRel);
        let share = Share {
            items: items.clone(),
            take,
        };
        if self.tx.send(share).is_err() {
            // The sink's thread has ended: nothing it is offered is written.
            self.queued.fetch_sub(take, Ordering::AcqRel);
            Counts::add(&counts.dropped, take as u64);
        }
    }
}

/// A sink's end of its queue: the items of the batches it was handed, one at a time.
pub(super) struct Inbox {
    rx: mpsc::UnboundedReceiver<Share>,
    queued: Arc<AtomicUsize>,
    current: Option<Share>,
    /// The index of the next item of `current`.
    next: usize,
}

impl Inbox {
    /// Waits until an item is there; false once the agent dropped the queue and every item
    /// was taken.
    pub(super) fn blocking_wait(&mut self) -> bool {
        if self.pending() {
            return true;
        }
        self.done_with_current();
        let s = self.rx.blocking_recv();
        self.received(s)
    }

    /// `blocking_wait` for a sink that runs on a runtime of its own.
    pub(super) async fn wait(&mut self) -> bool {
        if self.pending() {
            return true;
        }
        self.done_with_current();
        let s = self.rx.recv().await;
        self.received(s)
    }

    /// The next item already handed over, without waiting.
    pub(super) fn next(&mut self) -> Option<Next<'_>> {
        if !self.pending() {
            self.done_with_current();
            let s = self.rx.try_recv().ok();
            if !self.received(s) {
                return None;
            }
        }
        let s = self.current.as_ref()?;
        self.next += 1;
        Some(Next {
            drained: &s.items,
            i: self.next - 1,
        })
    }

    /// Whether `current` has items left.
    fn pending(&self) -> bool {
        self.current.as_ref().is_some_and(|s| self.next < s.take)
    }

    /// The current batch's items are all taken: they leave the queue's count.
    fn done_with_current(&mut self) {
        if let Some(s) = self.current.take() {
            self.queued.fetch_sub(s.take, Ordering::AcqRel);
        }
    }

    fn received(&mut self, s: Option<Share>) -> bool {
        self.next = 0;
        self.current = s;
        self.current.is_some()
    }
}

impl Drop for Inbox {
    /// A sink that ends leaves nothing counted as queued (the loop's offers then fail).
    fn drop(&mut self) {
        self.done_with_current();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(pid: u32) -> Item {
        // SAFETY: a record of plain integers: all zeroes is a valid value.
        let mut ev: observer_common::FreeEvent = unsafe { std::mem::zeroed() };
        ev.header.kind = observer_common::EventKind::Free as u32;
        ev.header.tgid = pid;
        Item::Event(crate::events::Event::Free(ev), None, None, None)
    }

    fn pid(n: Next) -> u32 {
        match n.item() {
            Item::Event(ev, ..) => ev.header().tgid,
            Item::History(..) => 0,
        }
    }

    #[test]
    fn a_queue_takes_batches_up_to_its_bound_in_items_and_counts_the_rest_dropped() {
        let (tx, mut inbox) = bounded(5);
        let counts = Counts::default();
        tx.offer(&Drained::new((1..=3).map(free).collect()), &counts);
        tx.offer(&Drained::new((4..=7).map(free).collect()), &counts);
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 2, "6 and 7");
        tx.offer(&Drained::new(vec![free(8)]), &counts);
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 3, "full");
        assert!(inbox.blocking_wait());
        let mut got = Vec::new();
        while let Some(i) = inbox.next() {
            got.push(pid(i));
        }
        assert_eq!(got, [1, 2, 3, 4, 5]);
        assert_eq!(inbox.queued.load(Ordering::Relaxed), 0, "taken: room again");
        tx.offer(&Drained::new(vec![free(9)]), &counts);
        assert_eq!(inbox.next().map(pid), Some(9));
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 3);
        assert!(inbox.next().is_none());
    }

    #[test]
    fn a_batchs_lines_are_made_once_and_every_sink_reads_the_same_bytes() {
        let (file, mut a) = bounded(5);
        let (otlp, mut b) = bounded(1);
        let counts = Counts::default();
        let batch = Drained::new(vec![free(1), free(2)]);
        file.offer(&batch, &counts);
        otlp.offer(&batch, &counts);
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 1, "b took one");
        let mut names = SinkNames::new(crate::containers::names::StateDirs::default());
        let (l1, at) = {
            let n = a.next().unwrap();
            let l = n.line(&mut names).unwrap();
            let mut want = Vec::new();
            assert!(line::write(&mut want, n.item(), None));
            assert_eq!(l, &want[..], "the line line::write makes");
            (l.to_vec(), l.as_ptr())
        };
        let l2 = a.next().unwrap().line(&mut names).unwrap().to_vec();
        assert!(l1.ends_with(b"\n") && l2.ends_with(b"\n") && l1 != l2);
        let b1 = b.next().unwrap().line(&mut names).unwrap().as_ptr();
        assert_eq!(
            b1, at,
            "the other sink reads the same line, not one of its own"
        );
        assert!(b.next().is_none());
    }

    /// Execs of executables whose hashes take long (never, here): the drain's lines wait
    /// HASH_WAIT for them together, not each in turn.
    #[test]
    fn a_drains_lines_wait_for_slow_hashes_once_not_once_each() {
        use crate::table::exe_hash::{Entry, ExeHash};
        // SAFETY: a record of plain integers and byte arrays: all zeroes is a valid value.
        let mut ev: observer_common::ExecEvent = unsafe { std::mem::zeroed() };
        ev.header.kind = observer_common::EventKind::Exec as u32;
        let slow = || {
            let hash = ExeHash::Entry(std::sync::Arc::new(Entry::default()));
            Item::Event(crate::events::Event::Exec(ev), None, Some(hash), None)
        };
        let batch = Drained::new(vec![slow(), slow(), slow()]);
        let (tx, mut inbox) = bounded(5);
        tx.offer(&batch, &Counts::default());
        let mut names = SinkNames::new(crate::containers::names::StateDirs::default());
        let at = std::time::Instant::now();
        let l = inbox.next().unwrap().line(&mut names).unwrap();
        let took = at.elapsed();
        assert!(
            took >= line::HASH_WAIT && took < 2 * line::HASH_WAIT,
            "{took:?}"
        );
        assert!(String::from_utf8_lossy(l).contains("pending"));
    }

    #[test]
    fn a_sink_that_ended_takes_nothing_and_what_it_is_offered_is_dropped() {
        let (tx, inbox) = bounded(5);
        let counts = Counts::default();
        tx.offer(&Drained::new(vec![free(1)]), &counts);
        drop(inbox);
        tx.offer(&Drained::new(vec![free(2), free(3)]), &counts);
        assert_eq!(counts.dropped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_inbox_ends_once_the_loop_dropped_its_end_and_everything_was_taken() {
        let (tx, mut inbox) = bounded(5);
        let counts = Counts::default();
        tx.offer(&Drained::new(vec![free(1), free(2)]), &counts);
        drop(tx);
        assert!(inbox.blocking_wait());
        assert_eq!(inbox.next().map(pid), Some(1));
        assert!(inbox.blocking_wait(), "one left");
        assert_eq!(inbox.next().map(pid), Some(2));
        assert!(!inbox.blocking_wait());
        assert_eq!(inbox.queued.load(Ordering::Relaxed), 0);
    }
}
