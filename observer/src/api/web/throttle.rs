//! What an unauthenticated client may cost: each failed credential check costs a bcrypt
//! (tens of milliseconds of CPU by design), so failures are limited per client address — a
//! burst, then one per [`REFILL`] — and a client past its limit is refused (429) without a
//! bcrypt. Checks themselves run one at a time (auth.rs), so all clients together use at
//! most one core for bcrypt, whatever their number. The table of addresses is bounded: when
//! full, the entries that have refilled are forgotten first, then all.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Failures a client may have at once before it is throttled (a client with a stale
/// password on both listeners, retried a few times, stays within it).
const BURST: f64 = 10.0;
/// One more failure allowed per this long.
const REFILL: Duration = Duration::from_secs(2);
/// Addresses remembered at most.
const MAX_CLIENTS: usize = 4096;

#[derive(Default)]
pub(crate) struct Throttle {
    /// Per address: failures still allowed (refilling), as of when.
    clients: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (f64, Instant)>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn allowance(left: f64, at: Instant, now: Instant) -> f64 {
        (left + now.duration_since(at).as_secs_f64() / REFILL.as_secs_f64()).min(BURST)
    }

    /// Whether `ip` may have its credentials checked now (None: not a network client).
    pub(crate) fn allows(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else { return true };
        let now = Instant::now();
        self.lock()
            .get(&ip)
            .is_none_or(|&(left, at)| Self::allowance(left, at, now) >= 1.0)
    }

    /// Records a failed check by `ip`.
    pub(crate) fn failed(&self, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        let now = Instant::now();
        let mut clients = self.lock();
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&ip) {
            clients.retain(|_, &mut (left, at)| Self::allowance(left, at, now) < BURST);
            if clients.len() >= MAX_CLIENTS {
                clients.clear();
            }
        }
        let (left, at) = clients.get(&ip).copied().unwrap_or((BURST, now));
        clients.insert(ip, ((Self::allowance(left, at, now) - 1.0).max(0.0), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_past_its_failures_is_throttled_others_are_not() {
        let t = Throttle::default();
        let a_ip = IpAddr::from([127, 0, 0, 2]);
        let a = Some(a_ip);
        let b = Some(IpAddr::from([127, 0, 0, 3]));
        for _ in 0..BURST as usize {
            assert!(t.allows(a));
            t.failed(a);
        }
        assert!(!t.allows(a), "a burst of failures, then throttled");
        assert!(t.allows(b), "another client is not");
        assert!(t.allows(None), "the unix socket is never throttled");
        // Refilled after REFILL.
        let mut c = t.lock();
        let e = c.get_mut(&a_ip).unwrap();
        e.1 -= REFILL;
        drop(c);
        assert!(t.allows(a));
    }

    #[test]
    fn the_table_of_clients_stays_bounded() {
        let t = Throttle::default();
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            t.failed(Some(IpAddr::from(i.to_be_bytes())));
        }
        assert!(t.lock().len() <= MAX_CLIENTS);
    }
}
