//! The pace of the reconciliation checks. A check compares every process id /proc lists
//! with the table; on a small node one pass every `--reconcile-interval` costs little, on a
//! node of 50,000 processes a pass costs ~60 ms of CPU. There the pid space is checked a
//! slice at a time (about [`SLICE_COST`] of CPU each), the slices spread evenly, and a
//! whole round is spaced so that checks cost at most [`BUDGET`] of a core: no window of
//! the agent's idle time holds a whole pass.

use std::{ops::Range, time::Duration};

/// The share of one core checks may use on average (full scans may use as much again).
pub(super) const BUDGET: f64 = 0.000_25;
/// What one slice of a check should cost.
const SLICE_COST: Duration = Duration::from_millis(5);
const MAX_SLICES: u32 = 64;
/// However costly a pass, a whole round takes at most this many configured intervals: a
/// pass measured long (a busy or preempted node) never makes checks hours apart.
pub(super) const MAX_STRETCH: u32 = 10;
/// What a whole check costs per process, until one was timed.
const PER_PROCESS: Duration = Duration::from_nanos(1100);

pub(super) struct Pace {
    /// The pid space is checked in this many slices (1: whole, every check).
    slices: u32,
    next: u32,
    /// How long a whole round of slices takes.
    round: Duration,
    /// Where each slice of this round starts: the table's processes in equal shares (pids
    /// crowd the low end of a pid space of 4 million).
    starts: Vec<u32>,
}

impl Pace {
    pub(super) fn new(configured: Duration) -> Pace {
        Pace {
            slices: 1,
            next: 0,
            round: configured,
            starts: Vec::new(),
        }
    }

    /// The pace for a node of `processes`, before any check was timed: a whole pass costs
    /// about [`PER_PROCESS`] a process (the pid iterator here: ~55 ms at 51,000).
    pub(super) fn for_node(configured: Duration, processes: usize) -> Pace {
        let mut p = Pace::new(configured);
        // A kernel whose /proc does not number its entries as pid_range expects reads the
        // whole space every check.
        if !crate::host::pid_range::seeks() {
            log::info!("/proc's directory does not seek to a pid here: checks read it whole");
            return p;
        }
        let guess = PER_PROCESS * u32::try_from(processes).unwrap_or(u32::MAX);
        p.after(true, guess, configured);
        p
    }

    /// The range the next check reads: None for the whole pid space (in one pass), else
    /// the next slice. At a round's start the slices are cut from `pids` (the table's
    /// process ids) so that each holds as many.
    pub(super) fn next_range(&mut self, pids: impl FnOnce() -> Vec<u32>) -> Option<Range<u32>> {
        if self.slices == 1 {
            return None;
        }
        let i = self.next % self.slices;
        self.next = (i + 1) % self.slices;
        if i == 0 || self.starts.len() != self.slices as usize {
            self.starts = cut(pids(), self.slices);
        }
        let start = self.starts[i as usize];
        let end = self.starts.get(i as usize + 1).copied().unwrap_or(u32::MAX);
        Some(start..end)
    }

    /// After a check of a slice (`whole` false) or of the whole space that cost `cpu`:
    /// the time until the next check. Slicing starts when a whole pass every `configured`
    /// would exceed the budget, and ends only when it would use less than a quarter of it:
    /// a whole pass (the pid iterator; /proc's directory before its dentries are cached)
    /// can cost twice what the slices do, and the pace must not flip between them.
    pub(super) fn after(&mut self, whole: bool, cpu: Duration, configured: Duration) -> Duration {
        let pass = if whole { cpu } else { cpu * self.slices };
        let limit = configured.mul_f64(BUDGET);
        let sliced = if self.slices > 1 {
            pass * 4 > limit
        } else {
            pass > limit
        };
        let (slices, round) = if sliced {
            let n = (pass.as_secs_f64() / SLICE_COST.as_secs_f64()).ceil() as u32;
            let round = configured
                .max(pass.div_f64(BUDGET))
                .min(configured * MAX_STRETCH);
            (n.clamp(2, MAX_SLICES), round)
        } else {
            (1, configured)
        };
        if (slices > 1) != (self.slices > 1) {
            log::info!(
                "checks: the pid space in {slices} slice(s), a whole round every {round:.0?} (a whole pass costs {pass:.0?} of CPU; at most {}% of a core)",
                BUDGET * 100.0
            );
        }
        self.slices = slices;
        self.round = round;
        round / slices
    }
}

/// The starts of `n` slices holding equal shares of `pids` (the first starts at 0).
fn cut(mut pids: Vec<u32>, n: u32) -> Vec<u32> {
    pids.sort_unstable();
    let n = n as usize;
    let mut starts: Vec<u32> = (0..n)
        .map(|i| {
            if i == 0 {
                0
            } else {
                pids.get(i * pids.len() / n).copied().unwrap_or(u32::MAX)
            }
        })
        .collect();
    // Strictly rising (a node of fewer processes than slices): empty slices merge away.
    starts.dedup();
    starts.resize(n, u32::MAX);
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: Duration = Duration::from_secs(30);

    /// Process ids every 10 from `lo` to `hi`.
    fn spread(lo: u32, hi: u32) -> Vec<u32> {
        (lo..hi).step_by(10).collect()
    }

    #[test]
    fn slices_hold_equal_shares_of_the_processes_wherever_their_pids_are() {
        // 50,000 processes in pids 300..50,300 of a pid space of 4 million.
        let pids: Vec<u32> = (300..50_300).collect();
        let starts = cut(pids.clone(), 12);
        assert_eq!(starts[0], 0);
        for (i, w) in starts.windows(2).enumerate() {
            let n = pids.iter().filter(|p| (w[0]..w[1]).contains(p)).count();
            assert!((4_100..=4_200).contains(&n), "slice {i}: {n}");
        }
        // Fewer processes than slices: no slice twice.
        let few = cut(vec![5, 9], 4);
        assert_eq!(few, vec![0, 5, 9, u32::MAX]);
    }

    #[test]
    fn a_big_node_is_sliced_from_its_first_check() {
        assert_eq!(Pace::for_node(CFG, 5_000).slices, 1);
        let mut p = Pace::for_node(CFG, 51_000);
        assert!(p.slices > 1);
        assert!(p.next_range(|| spread(0, 100_000)).is_some());
    }

    #[test]
    fn a_small_node_is_checked_whole_every_configured_interval() {
        let mut p = Pace::new(CFG);
        assert_eq!(p.after(true, Duration::from_millis(3), CFG), CFG);
        assert_eq!(p.next_range(|| spread(300, 20_300)), None);
    }

    #[test]
    fn a_big_node_is_checked_in_slices_within_the_budget() {
        let mut p = Pace::new(CFG);
        // A whole pass of 60 ms: 12 slices of 5 ms, a round of 240 s, a slice every 20 s.
        let every = p.after(true, Duration::from_millis(60), CFG);
        assert_eq!(every, Duration::from_secs(20));
        let ranges: Vec<Range<u32>> = (0..12)
            .map(|_| p.next_range(|| spread(0, 120_000)).unwrap())
            .collect();
        assert_eq!(ranges[0], 0..10_000);
        assert_eq!(ranges[11].start, 110_000);
        assert_eq!(
            ranges[11].end,
            u32::MAX,
            "the last slice takes everything above"
        );
        assert!(
            ranges.windows(2).all(|w| w[0].end == w[1].start),
            "no gap, no overlap"
        );
        assert_eq!(
            p.next_range(|| spread(0, 120_000)).unwrap(),
            0..10_000,
            "round and round"
        );
        // Any 30 s window holds at most 2 slices: 10 ms, 0.033% of a core.
        let per_window = Duration::from_millis(5) * (CFG.as_secs() / every.as_secs() + 1) as u32;
        assert!(per_window.as_secs_f64() / CFG.as_secs_f64() <= 2.0 * BUDGET * 1.01);
        // A slice cost what a twelfth should: the pace holds.
        assert_eq!(p.after(false, Duration::from_millis(5), CFG), every);
        // However long a pass, a round is at most MAX_STRETCH intervals.
        let mut q = Pace::new(CFG);
        let every = q.after(true, Duration::from_secs(5), CFG);
        assert_eq!(every * q.slices, CFG * MAX_STRETCH);
        // The node shrank: whole checks at the configured interval again.
        assert_eq!(p.after(false, Duration::from_micros(100), CFG), CFG);
        assert_eq!(p.next_range(|| spread(0, 120_000)), None);
    }

    #[test]
    fn slices_cheaper_than_the_whole_pass_do_not_flip_the_pace() {
        // 20,000 processes here: the pid iterator's whole pass 16 ms, /proc's slices (its
        // dentries cached) 1.5 ms each of 4 — a whole round of 6 ms, under the 7.5 ms budget
        // of a 30 s interval, yet slicing stays.
        let mut p = Pace::new(CFG);
        p.after(true, Duration::from_millis(16), CFG);
        assert!(p.next_range(|| spread(300, 20_300)).is_some());
        for _ in 0..10 {
            let every = p.after(false, Duration::from_millis(6) / p.slices, CFG);
            assert!(
                p.next_range(|| spread(300, 20_300)).is_some(),
                "still sliced"
            );
            assert!(every >= Duration::from_secs(10), "{every:?}");
        }
        // Under a quarter of the budget: whole again.
        p.after(false, Duration::from_micros(1500) / p.slices, CFG);
        assert_eq!(p.next_range(|| spread(300, 20_300)), None);
    }
}
