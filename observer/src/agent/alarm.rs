//! A one-shot timer of the kernel's (timerfd) for the event loop's own paces: it wakes the
//! loop once, at its deadline. tokio's timers may wake it up to three times for one
//! deadline — at the start of the coarser wheel slot a deadline past the next 64 ms
//! boundary sits in (to move it to the finer level), at a deadline since pushed later (the
//! old one stays in the wheel), and at the deadline — and on a busy node each wake-up costs
//! ~64 µs of CPU, more than a drain of hundreds of events (docs/performance.md).

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use tokio::{
    io::{unix::AsyncFd, Interest},
    time::Instant,
};

pub(super) struct Alarm {
    fd: AsyncFd<OwnedFd>,
    deadline: Instant,
}

impl Alarm {
    /// An alarm due `after` from now.
    pub(super) fn new(after: Duration) -> io::Result<Alarm> {
        // SAFETY: no pointers; the result is checked.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the OwnedFd keeps its descriptor open and unchanged for as long as the
        // AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }?;
        let mut a = Alarm {
            fd,
            deadline: Instant::now(),
        };
        a.set(after)?;
        Ok(a)
    }

    /// Due `after` from now (any earlier deadline, fired or not, is forgotten).
    pub(super) fn set(&mut self, after: Duration) -> io::Result<()> {
        // A zero it_value would disarm the timer: due now is due in a nanosecond.
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                // At most ~34 years: fits any time_t.
                tv_sec: after.as_secs().min(1 << 30).try_into().unwrap_or_default(),
                tv_nsec: after.subsec_nanos().into(),
            },
        };
        // SAFETY: a valid itimerspec; the old value is not asked for.
        let r =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.deadline = Instant::now() + after;
        Ok(())
    }

    /// When it is due.
    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Waits until it fires (at once if it fired and was not waited for since it was set).
    pub(super) async fn fired(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            let mut expirations = [0u8; 8];
            // SAFETY: reads at most 8 bytes into the buffer.
            let n = unsafe {
                libc::read(
                    guard.get_inner().as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            if n == 8 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
            // Re-armed since it was readable: wait for the new deadline.
            guard.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn an_alarm_fires_once_at_its_deadline_and_a_new_one_replaces_the_old() {
        rt().block_on(async {
            let t0 = std::time::Instant::now();
            let mut a = Alarm::new(Duration::from_millis(30)).unwrap();
            a.fired().await.unwrap();
            let took = t0.elapsed();
            assert!(took >= Duration::from_millis(30), "{took:?}");
            // Fired once: no second wake-up without a new deadline.
            let again = tokio::time::timeout(Duration::from_millis(60), a.fired()).await;
            assert!(again.is_err(), "a one-shot alarm fired twice");
            // Pushed later before it fired: only the later deadline counts.
            a.set(Duration::from_millis(10)).unwrap();
            let t1 = std::time::Instant::now();
            a.set(Duration::from_millis(50)).unwrap();
            assert!(a.deadline() >= Instant::now() + Duration::from_millis(40));
            a.fired().await.unwrap();
            assert!(
                t1.elapsed() >= Duration::from_millis(50),
                "{:?}",
                t1.elapsed()
            );
            // Due now fires at once.
            a.set(Duration::ZERO).unwrap();
            tokio::time::timeout(Duration::from_secs(5), a.fired())
                .await
                .unwrap()
                .unwrap();
        });
    }
}
