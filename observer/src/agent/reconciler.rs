//! Keeping the table true to /proc when events cannot: the pass that reads the start-up
//! processes' command lines and executables, a cheap check every `reconcile_every` (every
//! process id, compared with the table), and a full scan when a check finds a difference,
//! when events were lost, and every `full_reconcile_every`. Checks and scans read on a
//! blocking thread; their results are applied here, on the event loop, after the events
//! that arrived meanwhile. On a big node checks read the pid space a slice at a time
//! (pace.rs) and full scans are spaced further apart than configured, so that each costs at
//! most [`BUDGET`] of a core on average (a check of 50,000 processes takes ~60 ms of CPU, a
//! full scan seconds).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use tokio::{
    sync::oneshot::{self, error::RecvError},
    time::Interval,
};

use super::{
    losses::Losses,
    pace::{Pace, BUDGET},
    pump::Pump,
    trim_heap, AgentConfig,
};
use crate::{
    events::redact::Redactor,
    host::{
        clock::{boot_now_ns, process_cpu, thread_cpu},
        pid_range, scan,
    },
    probes::Probes,
    table::{Disagreement, Table},
};

/// What a check found, with when it started (boot-time ns) and the CPU its read took.
type CheckResult = Result<(Vec<u32>, u64, Duration), RecvError>;
/// What a scan found, with how long it took and the CPU it used.
type ScanResult = Result<(Vec<scan::Scanned>, Duration, Duration), RecvError>;
type DetailsResult = Result<Vec<scan::Details>, RecvError>;

/// A reconciliation scan running on a blocking thread.
struct ScanJob {
    started_ns: u64,
    /// The kernel's loss count as the agent knew it when the scan began.
    lost_before: u64,
    rx: oneshot::Receiver<(Vec<scan::Scanned>, Duration, Duration)>,
}

/// What the reconciler has to do next.
pub(super) enum Due {
    /// The start-up processes' details were read.
    Details(DetailsResult),
    /// Time for a check (or a full scan, when the last is `full_reconcile_every` old).
    Tick,
    Check(CheckResult),
    Scan(ScanResult),
}

pub(super) struct Reconciler<'a> {
    cfg: &'a AgentConfig,
    timer: Interval,
    details: oneshot::Receiver<Vec<scan::Details>>,
    details_pending: bool,
    check: Option<oneshot::Receiver<(Vec<u32>, u64, Duration)>>,
    job: Option<ScanJob>,
    /// The checks' pid list comes from the pid iterator while it works.
    pid_iter: bool,
    last_full: Instant,
    /// The pace of checks, and the range of the running one (None: every pid).
    pace: Pace,
    check_range: Option<std::ops::Range<u32>>,
    /// The spacing of full scans now: the configured one, or longer where the last one's
    /// cost would exceed [`BUDGET`].
    full_every: Duration,
    /// Events were lost while a scan ran: that scan may predate what they described.
    rescan: bool,
    /// The kernel's losses the agent knows of, and those the table was reconciled after.
    pub(super) losses: Losses,
    pub(super) reconciliations: u64,
    pub(super) checks: u64,
    /// How long the last scan (the seed's first) took.
    pub(super) last_scan: Duration,
    /// Processes by /proc state letter as of the last scan.
    pub(super) states: BTreeMap<String, u64>,
}

impl<'a> Reconciler<'a> {
    /// Starts the check timer; the seed was the first scan. Losses count from
    /// `lost_before_seed`, the kernel's count read before the seed: one during start-up (the
    /// ring buffer is not read meanwhile) is noticed at the first settle and starts a scan.
    pub(super) async fn new(
        cfg: &'a AgentConfig,
        details: oneshot::Receiver<Vec<scan::Details>>,
        seed: &str,
        last_scan: Duration,
        states: BTreeMap<String, u64>,
        lost_before_seed: u64,
    ) -> Reconciler<'a> {
        let mut timer = tokio::time::interval(cfg.reconcile_every);
        timer.tick().await; // the seed was the first scan
        Reconciler {
            cfg,
            timer,
            details,
            details_pending: true,
            check: None,
            job: None,
            pid_iter: seed == "iterator",
            last_full: Instant::now(),
            pace: Pace::for_node(cfg.reconcile_every, states.values().sum::<u64>() as usize),
            check_range: None,
            full_every: cfg.full_reconcile_every,
            rescan: false,
            losses: Losses::from(lost_before_seed),
            reconciliations: 0,
            checks: 0,
            last_scan,
            states,
        }
    }

    /// The start-up details pass is still running.
    pub(super) fn details_pending(&self) -> bool {
        self.details_pending
    }

    /// Waits for the next thing to do: the details pass ending, the check timer (while no
    /// check or scan runs), a check or a scan ending.
    pub(super) async fn due(&mut self) -> Due {
        tokio::select! {
            lines = &mut self.details, if self.details_pending => Due::Details(lines),
            _ = self.timer.tick(), if self.job.is_none() && self.check.is_none() => Due::Tick,
            pids = async { self.check.as_mut().expect("guarded").await }, if self.check.is_some() => {
                Due::Check(pids)
            }
            r = async { (&mut self.job.as_mut().expect("guarded").rx).await }, if self.job.is_some() => {
                Due::Scan(r)
            }
        }
    }

    pub(super) fn handle(
        &mut self,
        due: Due,
        table: &mut Table,
        pump: &mut Pump,
        probes: &mut Probes,
    ) {
        match due {
            Due::Details(lines) => self.on_details(lines, table),
            Due::Tick => self.on_tick(probes, table),
            Due::Check(pids) => self.on_check(pids, table, pump),
            Due::Scan(r) => self.on_scan(r, table, pump),
        }
    }

    /// The kernel's loss count is `lost`: if it rose, a full scan now, or again after the
    /// running one.
    pub(super) fn on_kernel_losses(&mut self, lost: u64) {
        let Some(new) = self.losses.noticed(lost) else {
            return;
        };
        log::warn!(
            "{new} events lost in the kernel (ring buffer full, or a program's run skipped): reconciling with /proc now"
        );
        if self.job.is_none() {
            self.start_full();
        } else {
            self.rescan = true;
        }
    }

    fn on_details(&mut self, lines: DetailsResult, table: &mut Table) {
        self.details_pending = false;
        if let Ok(lines) = lines {
            table.fill_details(lines);
            trim_heap();
        }
    }

    fn on_tick(&mut self, probes: &mut Probes, table: &Table) {
        if full_due(self.last_full.elapsed(), self.full_every) {
            self.start_full();
        } else {
            self.check_range = self.pace.next_range(|| table.pids());
            self.check = Some(match &self.check_range {
                None => start_check(probes, &self.cfg.probes.btf, &mut self.pid_iter),
                Some(r) => start_slice_check(r.clone()),
            });
        }
    }

    fn on_check(&mut self, pids: CheckResult, table: &mut Table, pump: &mut Pump) {
        self.check = None;
        // The table as of now: what happened while /proc was read applied first.
        pump.apply(table);
        let cpu = thread_cpu();
        let (differ, read_cpu) = match pids {
            Ok((pids, started_ns, read_cpu)) => (
                table.disagreements_in(
                    self.check_range.clone().unwrap_or(0..u32::MAX),
                    &pids,
                    started_ns,
                    |pid| scan::live(pid).map(|l| l.start_ticks),
                    scan::exists,
                ),
                read_cpu,
            ),
            Err(_) => (vec![], Duration::ZERO),
        };
        self.checks += 1;
        let next = self.pace.after(
            self.check_range.is_none(),
            read_cpu + thread_cpu().saturating_sub(cpu),
            self.cfg.reconcile_every,
        );
        self.timer.reset_after(next);
        if !differ.is_empty() && self.job.is_none() {
            for line in disagreement_lines(&differ) {
                log::info!("{line}");
            }
            self.start_full();
        }
    }

    fn start_full(&mut self) {
        self.job = Some(start_scan(
            self.cfg.redact.clone(),
            self.losses.at_scan_start(),
        ));
    }

    fn on_scan(&mut self, r: ScanResult, table: &mut Table, pump: &mut Pump) {
        let job = self.job.take().expect("guarded");
        let started_ns = job.started_ns;
        // A failed scan (its thread panicked) is retried if it had losses to reconcile.
        self.rescan |= self.losses.scan_ended(job.lost_before, r.is_ok());
        if let Ok((scans, took, cpu)) = r {
            self.full_every = spaced(
                "full scans",
                self.full_every,
                self.cfg.full_reconcile_every,
                cpu,
            );
            // Apply what happened during the scan first: the scan must not undo it.
            pump.apply(table);
            let fixes = table.reconcile_with(
                &scans,
                started_ns,
                boot_now_ns(),
                |pid| scan::live(pid).map(|l| l.start_ticks),
                &|pid| {
                    std::fs::read(format!("/proc/{pid}/cgroup"))
                        .ok()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                },
            );
            self.states = super::health::states(&scans);
            drop(scans);
            trim_heap();
            self.last_scan = took;
            self.reconciliations += 1;
            self.last_full = Instant::now();
            if fixes > 0 {
                log::info!(
                    "reconciliation fixed {fixes} entries ({} processes)",
                    table.len()
                );
            }
        }
        if std::mem::take(&mut self.rescan) {
            self.start_full();
        }
    }
}

/// The spacing of full scans after one that cost `cpu`: the configured one, or as long as
/// keeps them within [`BUDGET`] of a core. A change is logged when it at least doubles or
/// halves.
fn spaced(what: &str, now: Duration, configured: Duration, cpu: Duration) -> Duration {
    // At most an hour (or the configured interval, if longer) between full scans: their
    // CPU is the process's, which a busy event loop meanwhile inflates.
    let cap = configured.max(Duration::from_secs(3600));
    let next = configured.max(cpu.div_f64(BUDGET)).min(cap);
    if next >= now * 2 || next * 2 <= now {
        log::info!(
            "{what} every {:.0?} now (the last cost {:.0?} of CPU; at most {}% of a core)",
            next,
            cpu,
            BUDGET * 100.0
        );
    }
    next
}

/// A tick starts a full scan rather than a check once the last is `every` old.
fn full_due(since_last_full: Duration, every: Duration) -> bool {
    since_last_full >= every
}

/// Starts a full scan two clock ticks from now: the reconciliation judges only processes
/// that began two ticks before the scan (/proc's start times have tick precision), and one
/// younger than that whose move was lost must have lost it after the losses `lost_before`
/// counts (they were read before this call) — another loss, another scan.
fn start_scan(redact: Option<Redactor>, lost_before: u64) -> ScanJob {
    let (tx, rx) = oneshot::channel();
    let delay = Duration::from_nanos(2 * scan::tick_ns());
    let started_ns = boot_now_ns() + delay.as_nanos() as u64;
    tokio::task::spawn_blocking(move || {
        std::thread::sleep(delay);
        let t = Instant::now();
        // The scan's own threads are not this one: the process's CPU, which also counts
        // the event loop meanwhile (a little more than the scan cost, never less).
        let cpu = process_cpu();
        let mut s = scan::scan_all(true, true);
        if let Some(r) = &redact {
            for p in &mut s {
                if let Some(masked) = r.argv(&p.cmdline) {
                    p.cmdline = masked;
                }
            }
        }
        let _ = tx.send((s, t.elapsed(), process_cpu().saturating_sub(cpu)));
    });
    ScanJob {
        started_ns,
        lost_before,
        rx,
    }
}

/// The cheap reconciliation check: every process id, compared with the table on the event
/// loop. From the pid iterator when the seed came from the task iterator (a pass is started
/// here and run by reading it on a blocking thread: ~55 ms at 51,000 processes against ~80
/// for /proc's directory, whose read instantiates a dentry per process), else, or once the
/// iterator failed (`iterator` is cleared), from /proc's directory.
fn start_check(
    probes: &mut Probes,
    btf: &std::path::Path,
    iterator: &mut bool,
) -> oneshot::Receiver<(Vec<u32>, u64, Duration)> {
    let pass = iterator.then(|| probes.pid_iter(btf)).and_then(|r| {
        r.map_err(|e| {
            log::info!("the pid iterator is unavailable ({e}): checks read /proc from now on");
            *iterator = false;
        })
        .ok()
    });
    read_pids(move || {
        pass.and_then(|f| crate::probes::seed::read_pids(f).ok())
            .unwrap_or_else(scan::pids)
    })
}

/// A check of one slice of the pid space, read from /proc's directory.
fn start_slice_check(range: std::ops::Range<u32>) -> oneshot::Receiver<(Vec<u32>, u64, Duration)> {
    read_pids(move || pid_range::pids_in(range))
}

/// Runs a check's read on a blocking thread: the pids, when it began, the CPU it took.
fn read_pids(
    read: impl FnOnce() -> Vec<u32> + Send + 'static,
) -> oneshot::Receiver<(Vec<u32>, u64, Duration)> {
    let (tx, rx) = oneshot::channel();
    let started_ns = boot_now_ns();
    tokio::task::spawn_blocking(move || {
        let cpu = thread_cpu();
        let pids = read();
        let _ = tx.send((pids, started_ns, thread_cpu().saturating_sub(cpu)));
    });
    rx
}

/// Why a check starts a full scan: each disagreement with both sides (the first 20).
fn disagreement_lines(d: &[Disagreement]) -> Vec<String> {
    let mut lines = vec![format!(
        "/proc and the table disagree on {} processes: reading all of /proc",
        d.len()
    )];
    lines.extend(d.iter().take(20).map(|x| format!("check: {x}")));
    if d.len() > 20 {
        lines.push(format!("check: and {} more", d.len() - 20));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_scans_are_spaced_to_cost_at_most_the_budget() {
        let cfg = Duration::from_secs(600);
        // 100 ms of CPU every 10 minutes is within the budget: the configured spacing.
        assert_eq!(
            spaced("full scans", cfg, cfg, Duration::from_millis(100)),
            cfg
        );
        // 0.5 s is spaced to 2,000 s.
        let big = spaced("full scans", cfg, cfg, Duration::from_millis(500));
        assert_eq!(big, Duration::from_secs(2000));
        // However costly, at most an hour apart.
        assert_eq!(
            spaced("full scans", cfg, cfg, Duration::from_secs(60)),
            Duration::from_secs(3600)
        );
        // A node that shrank gets its configured spacing back.
        assert_eq!(spaced("full scans", big, cfg, Duration::ZERO), cfg);
    }

    #[test]
    fn a_tick_runs_a_full_scan_once_the_last_is_old_enough() {
        let every = Duration::from_secs(300);
        assert!(!full_due(Duration::from_secs(299), every));
        assert!(full_due(every, every));
        assert!(full_due(Duration::from_secs(301), every));
    }

    #[test]
    fn disagreements_are_logged_up_to_twenty_then_counted() {
        let d: Vec<Disagreement> = (1..=25)
            .map(|pid| Disagreement::Unknown { pid, start_ns: 0 })
            .collect();
        let lines = disagreement_lines(&d);
        assert_eq!(
            lines[0],
            "/proc and the table disagree on 25 processes: reading all of /proc"
        );
        assert_eq!(lines.len(), 1 + 20 + 1);
        assert!(lines[1].starts_with("check: pid 1 "), "{}", lines[1]);
        assert_eq!(lines[21], "check: and 5 more");
        assert_eq!(
            disagreement_lines(&d[..3]).len(),
            4,
            "no count when all are shown"
        );
    }
}
