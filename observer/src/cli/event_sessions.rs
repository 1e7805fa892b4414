//! The exec sessions `observer events` shows (`entered`, `[exec by …]`): it runs without an
//! agent, so it keeps a process table of its own — seeded from /proc as the one-shot views
//! are (sessions that began before it are deduced then), then driven by every event it
//! reads — and asks it for the session of each fork, exec and exit's process once the
//! event is applied, as the agent does for /v1/events (table/sessions.rs).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    events::Event,
    host::{cgroupfs::CgroupFs, clock::boot_now_ns, scan},
    table::{gc, history::HistoryLimits, sessions::Session, Table},
};

/// How often orphans' new parents and reaped zombies are read from /proc (as the agent's
/// housekeeping does while there are any).
const TIDY_EVERY: Duration = Duration::from_millis(200);
/// How often ended containers and unreferenced paths are collected.
const COLLECT_EVERY: Duration = Duration::from_secs(5);
/// The bounds of what is collected: nothing here answers for an ended container, and no
/// history is kept (one entry, the least the history takes).
const LIMITS: gc::Limits = gc::Limits {
    max_containers: 1000,
    retention_ns: 0,
    history: HistoryLimits {
        per_container: 1,
        total: 1,
        retention_ns: 0,
    },
};

/// The table (None: `--sessions off`) and when it was last tidied and collected.
pub(super) struct Sessions {
    table: Option<Table>,
    tidied: Instant,
    collected: Instant,
}

impl Sessions {
    /// `on`: the table of what runs now. The ring buffer must be open already: what starts
    /// during the scan is applied from it afterwards.
    pub(super) fn new(on: bool) -> Sessions {
        let table = on.then(|| {
            let mut t = super::views::scanned_table(&CgroupFs::discover());
            t.history_limits = LIMITS.history;
            t
        });
        Sessions {
            table,
            tidied: Instant::now(),
            collected: Instant::now(),
        }
    }

    /// Applies `ev`; the exec session of its process then, for a fork, exec or exit.
    pub(super) fn apply(&mut self, ev: &Event) -> Option<Arc<Session>> {
        let t = self.table.as_mut()?;
        t.apply(ev);
        t.session_of(ev)
    }

    /// Between drains, now and then: orphans' new parents, zombies reaped without their
    /// free event yet, and what ended containers left.
    pub(super) fn tidy(&mut self) {
        let Some(t) = self.table.as_mut() else {
            return;
        };
        if self.tidied.elapsed() < TIDY_EVERY {
            return;
        }
        self.tidied = Instant::now();
        if t.has_pending() {
            t.resolve_pending(|pid| scan::live(pid).map(|l| (l.ppid, l.start_ticks)));
        }
        if t.has_exited() {
            t.reap_gone(scan::exists);
        }
        if self.collected.elapsed() >= COLLECT_EVERY {
            self.collected = Instant::now();
            t.collect(boot_now_ns(), &LIMITS);
        }
    }
}
