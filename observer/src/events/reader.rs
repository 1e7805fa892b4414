//! Draining the ring buffer from tokio: one epoll wake-up, then every available record is
//! decoded and handed on without allocating.

use std::io;

use aya::maps::{MapData, RingBuf};
use observer_common::{EventKind, KIND_SLOTS};
use tokio::io::{unix::AsyncFd, Interest};

use super::Event;

/// Userspace side of the accounting: what was received, and what could not be decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReaderStats {
    pub(crate) received: [u64; KIND_SLOTS],
    pub(crate) decode_errors: u64,
}

impl ReaderStats {
    pub(crate) fn received(&self, k: EventKind) -> u64 {
        self.received[k as usize]
    }
}

pub(crate) struct EventReader {
    fd: AsyncFd<RingBuf<MapData>>,
    pub(crate) stats: ReaderStats,
}

impl EventReader {
    pub(crate) fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long as
        // the AsyncFd owns the RingBuf.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?;
        Ok(EventReader {
            fd,
            stats: ReaderStats::default(),
        })
    }

    /// Hands every record currently in the ring buffer to `f`; returns how many.
    pub(crate) fn drain(&mut self, f: &mut impl FnMut(Event)) -> usize {
        drain_ring(self.fd.get_mut(), &mut self.stats, f)
    }

    /// Waits until the ring buffer has data; `drain` then takes it. Readiness is cleared
    /// before draining, so a record that lands during the drain wakes the next wait.
    pub(crate) async fn readable(&mut self) -> io::Result<()> {
        let mut guard = self.fd.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }
}

fn drain_ring(
    ring: &mut RingBuf<MapData>,
    stats: &mut ReaderStats,
    f: &mut impl FnMut(Event),
) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        match Event::decode(&item) {
            Ok(ev) => {
                stats.received[ev.kind() as usize] += 1;
                f(ev);
            }
            Err(e) => {
                stats.decode_errors += 1;
                log::debug!("undecodable record: {e}");
            }
        }
        n += 1;
    }
    n
}
