//! Which of the kernel's lost events the table has been reconciled after: a loss is the
//! agent's cue to rescan /proc, and until a scan begun after the agent noticed it has ended,
//! the table may be wrong about what the lost events described. Counts are the kernel's
//! (dropped and skipped events, every type), as the agent read them.

/// The loss counts the reconciler keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Losses {
    /// The kernel's count when the agent last read it.
    seen: u64,
    /// The count when the last full scan that ended began: the table reflects every loss up
    /// to it.
    reconciled: u64,
}

impl Losses {
    /// Counting from `before_seed`, read before the seed: the seed reflects what was lost
    /// until then; a loss during it is noticed at the first settle and starts a scan.
    pub(super) fn from(before_seed: u64) -> Losses {
        Losses {
            seen: before_seed,
            reconciled: before_seed,
        }
    }

    /// The agent read the kernel's count `lost`; returns how many events it lost since the
    /// last reading, if any (only a rising count means lost events).
    pub(super) fn noticed(&mut self, lost: u64) -> Option<u64> {
        let new = (lost > self.seen).then(|| lost - self.seen);
        self.seen = self.seen.max(lost);
        new
    }

    /// What a scan starting now will have reconciled once it ends.
    pub(super) fn at_scan_start(&self) -> u64 {
        self.seen
    }

    /// A scan begun at `lost_before` ended (`ok`: it was applied); returns whether another
    /// is needed (it failed with losses it was to reconcile left unreconciled).
    pub(super) fn scan_ended(&mut self, lost_before: u64, ok: bool) -> bool {
        if ok {
            self.reconciled = self.reconciled.max(lost_before);
        }
        !ok && lost_before > self.reconciled
    }

    pub(super) fn reconciled(&self) -> u64 {
        self.reconciled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_is_reconciled_by_a_scan_begun_after_it_was_noticed_only() {
        let mut l = Losses::from(5);
        assert_eq!(
            l.reconciled(),
            5,
            "the seed reflects what was lost before it"
        );
        let running = l.at_scan_start();
        // While that scan ran: it may predate what was lost.
        assert_eq!(l.noticed(12), Some(7));
        assert!(!l.scan_ended(running, true));
        assert_eq!(l.reconciled(), 5);
        let next = l.at_scan_start();
        assert!(!l.scan_ended(next, true));
        assert_eq!(l.reconciled(), 12);
        assert_eq!(l.noticed(12), None);
        // A count read late never lowers what is known.
        assert_eq!(l.noticed(7), None, "a lower count is no loss");
        assert_eq!(l.at_scan_start(), 12);
    }

    #[test]
    fn a_failed_scan_reconciles_nothing_and_asks_for_another_if_it_had_losses_to() {
        let mut l = Losses::from(0);
        assert_eq!(l.noticed(3), Some(3));
        let job = l.at_scan_start();
        assert!(l.scan_ended(job, false), "a retry: 3 losses unreconciled");
        assert_eq!(l.reconciled(), 0);
        assert!(!l.scan_ended(job, true), "the retry applied");
        assert_eq!(l.reconciled(), 3);
        assert!(
            !l.scan_ended(0, false),
            "nothing left to reconcile: no retry"
        );
    }
}
