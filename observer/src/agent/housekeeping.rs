//! The table's chores between events: settling processes not yet confirmed, reaping those
//! whose free event is due, adopting orphans, noticing events the kernel lost (which starts
//! a full scan), and collecting ended containers and unreferenced paths. Its timer wakes the
//! agent only as often as there is work: on an idle node each wake-up costs more than the
//! work.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};

use super::{alarm::Alarm, pump::Pump, trim_heap};
use crate::{
    host::{clock::boot_now_ns, scan},
    probes::Probes,
    table::{gc, Table},
};

/// How often ended containers and unreferenced paths are looked for (table/gc.rs).
const COLLECT_EVERY: Duration = Duration::from_secs(5);
/// Orphans, zombies and unconfirmed processes are settled this often while there are any.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(200);
/// How often an idle agent checks the kernel's loss counters (events that flow make it
/// busy again: losses are then noticed within HOUSEKEEPING_EVERY).
const IDLE_HOUSEKEEPING_EVERY: Duration = Duration::from_secs(5);

/// Which chore is due.
pub(super) enum Chore {
    Settle,
    Collect,
}

pub(super) struct Housekeeping {
    /// The settle timer (the kernel's: see alarm.rs).
    settle: Alarm,
    collect: Interval,
}

impl Housekeeping {
    /// Starts the timers: settling HOUSEKEEPING_EVERY from now, collecting at once and then
    /// every COLLECT_EVERY.
    pub(super) fn new() -> std::io::Result<Housekeeping> {
        let settle = Alarm::new(HOUSEKEEPING_EVERY)?;
        let mut collect = tokio::time::interval(COLLECT_EVERY);
        collect.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Ok(Housekeeping { settle, collect })
    }

    /// The kernel's loss count now: dropped and skipped events of every type (None when
    /// its counters cannot be read).
    pub(super) fn kernel_lost(probes: &Probes) -> Option<u64> {
        probes.kernel_stats().map(|k| k.total_dropped()).ok()
    }

    /// Whether settling is due before `window` has passed: a drain's wake-up then settles
    /// too, rather than the settle timer waking the agent once more a few ms later (while
    /// events flow, each wake-up costs far more than the settling).
    pub(super) fn settle_due_within(&self, window: Duration) -> bool {
        due_within(self.settle.deadline(), tokio::time::Instant::now(), window)
    }

    pub(super) async fn due(&mut self) -> Chore {
        tokio::select! {
            r = self.settle.fired() => {
                if let Err(e) = r {
                    log::warn!("waiting on the settle timer: {e}");
                }
                Chore::Settle
            }
            _ = self.collect.tick() => Chore::Collect,
        }
    }

    /// Settles, reaps and adopts; returns the kernel's loss count, for the reconciler to
    /// tell whether events were lost since it last looked (the table then needs a full scan).
    pub(super) fn settle(
        &mut self,
        table: &mut Table,
        pump: &mut Pump,
        probes: &Probes,
    ) -> Option<u64> {
        let work =
            pump.busy() || table.has_unconfirmed() || table.has_exited() || table.has_pending();
        if let Err(e) = self.settle.set(next_settle(work)) {
            log::warn!("setting the settle timer: {e}");
        }
        if table.has_unconfirmed() {
            pump.apply(table);
            let missed = table.settle(boot_now_ns());
            if missed > 0 {
                log::info!("reconciliation added {missed} processes whose fork events were missed");
            }
        }
        if table.has_exited() {
            table.reap_gone(scan::exists);
        }
        super::pump::adopt_orphans(table);
        Self::kernel_lost(probes)
    }

    /// Forgets ended containers and unreferenced paths past their limits.
    pub(super) fn collect(table: &mut Table, limits: &gc::Limits) {
        if table.collect(boot_now_ns(), limits) {
            trim_heap();
        }
    }
}

fn next_settle(work: bool) -> Duration {
    if work {
        HOUSEKEEPING_EVERY
    } else {
        IDLE_HOUSEKEEPING_EVERY
    }
}

fn due_within(deadline: tokio::time::Instant, now: tokio::time::Instant, window: Duration) -> bool {
    deadline <= now + window
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_table_is_settled_every_five_seconds_a_busy_one_five_times_a_second() {
        assert_eq!(next_settle(true), Duration::from_millis(200));
        assert_eq!(next_settle(false), Duration::from_secs(5));
    }

    #[test]
    fn a_settle_due_before_the_next_drain_is_done_at_this_one() {
        let now = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        assert!(due_within(now + ms(30), now, ms(50)));
        assert!(due_within(now, now, ms(20)), "due now");
        assert!(!due_within(now + ms(180), now, ms(20)));
    }
}
