//! `cargo xtask torture --time SECS`: a mixed workload nobody wrote for observer (stress-ng's
//! process stressors, fork/vfork chains, threads entering namespaces, double-fork daemons,
//! zombies, exec storms, processes moving between cgroups, a container with a nested pid
//! namespace, PIDs wrapping under a lowered pid_max) runs in a cgroup of its own beside a
//! real agent. At random moments the cgroup is frozen, the agent given time to apply what
//! the kernel emitted until then, and every process of the workload compared with /proc
//! both ways; the agent's corrections must each follow a counted loss of events. Any
//! mismatch or unexplained correction fails the run. Everything it started or changed is
//! stopped or restored however it ends (Ctrl-C included).

mod agent;
mod compare;
mod history;
mod host;
mod worker;

use std::{
    collections::HashSet,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

pub use worker::worker;

use crate::util::{is_root, root};

/// Debian packages the workload uses (installed by `cargo xtask setup --tests` too).
pub const PACKAGES: &[&str] = &["stress-ng", "busybox-static", "util-linux", "coreutils"];
/// pid_max during the run: PIDs wrap every few seconds under the workload's fork rate.
const SMALL_PID_MAX: u64 = 8192;
/// Processes and threads the workload may hold at once.
const PIDS_MAX: u32 = 2048;

/// Runs the torture for `secs` seconds against the static release build, built first when
/// `build` (the test command's host build made it already: a cargo call there would only
/// wait for the target directory's lock).
pub fn torture(secs: u64, build: bool) -> Result<()> {
    if !is_root() {
        bail!(
            "the torture run loads eBPF, freezes cgroups and sets kernel.pid_max: run it as root"
        );
    }
    crate::setup::apt_install(PACKAGES)?;
    crate::setup::rust_target(crate::vm::MUSL)?;
    if build {
        crate::build_observer(&["--target", crate::vm::MUSL])?;
    }
    host::catch_interrupts();
    let dir = root().join("target/torture");
    std::fs::create_dir_all(dir.join("tmp"))?;
    let t = Instant::now();
    let r = run(&dir, Duration::from_secs(secs));
    eprintln!(
        "torture: ended after {:.0} s (agent log: {})",
        t.elapsed().as_secs_f64(),
        dir.join("agent.log").display()
    );
    r
}

/// The workload's first process and its cgroup: dropping it kills both.
struct Workload {
    root: Child,
    cg: host::Cgroup,
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.cg.kill_all();
        let _ = self.root.wait();
    }
}

/// Everything a run holds, released in this order when dropped: the workload, its pids
/// limit, pid_max, the agent.
struct Run {
    work: Workload,
    _pids: host::PidsLimit,
    pid_max: crate::util::PidMax,
    /// The agent's event stream, kept per PID for the mismatches' reports.
    history: history::History,
    agent: agent::Agent,
    /// The agent's counters before the workload started: what the workload's start cost
    /// (events lost, corrections) is the first round's.
    before: agent::Counters,
}

fn start(dir: &Path, secs: u64) -> Result<Run> {
    let bin = crate::vm::static_observer();
    let agent = agent::Agent::start(&bin, dir, &["--reconcile-interval", "5s"])?;
    let history = history::History::follow(&agent.socket)?;
    let name = format!("observer-torture-{}", std::process::id());
    let cg = host::Cgroup::create(&name)?;
    let pids = host::PidsLimit::new(&cg, PIDS_MAX)?;
    let pid_max = crate::util::PidMax::lower(SMALL_PID_MAX)?;
    let mut join = vec![cg.path.join("cgroup.procs")];
    join.extend(pids.join.iter().cloned());
    let join = host::join_paths(&join);
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["torture", "--worker", "root"])
        .arg(&cg.path)
        .arg(secs.to_string())
        .current_dir(dir.join("tmp"))
        .stdin(Stdio::null());
    // SAFETY: setsid and the cgroup writes are async-signal-safe and allocate nothing.
    unsafe {
        cmd.pre_exec(move || {
            // A session of its own: a Ctrl-C reaches the run, which stops the workload.
            libc::setsid();
            host::join_now(&join)
        });
    }
    let before = agent.counters()?;
    let root = cmd.spawn().context("starting the workload")?;
    Ok(Run {
        work: Workload { root, cg },
        _pids: pids,
        pid_max,
        history,
        agent,
        before,
    })
}

/// What one frozen moment showed.
struct Round {
    procs: usize,
    zombies: usize,
    deepest: usize,
    /// The parents holding the most zombies.
    parents: String,
    mismatches: Vec<String>,
    freeze: Duration,
    catch_up: Duration,
    /// How long the agent took to reconcile after a loss in this round's interval.
    reconcile: Option<Duration>,
}

/// Freezes the workload, waits for the agent, compares, thaws (also when comparing failed).
fn check(run: &Run, ids: &HashSet<u64>) -> Result<Round> {
    let cg = &run.work.cg;
    let freeze = cg.freeze()?;
    let r = compare_frozen(run, ids, freeze);
    cg.thaw()?;
    r
}

/// Compares once the agent has applied every event emitted before the freeze and
/// reconciled every loss.
fn compare_frozen(run: &Run, ids: &HashSet<u64>, freeze: Duration) -> Result<Round> {
    let (agent, cg) = (&run.agent, &run.work.cg);
    let catch_up = agent.caught_up()?;
    let reconcile = agent.reconciled()?;
    // Two answers in a row that agree on the workload: nothing left in flight.
    let mut last = None;
    let mut ps = agent.json(&["ps"])?;
    for _ in 0..50 {
        let side = compare::agent_side(&ps, cg, ids);
        if last.as_ref() == Some(&side) {
            break;
        }
        last = Some(side);
        ps = agent.json(&["ps"])?;
    }
    let listed = compare::agent_side(&ps, cg, ids);
    let proc = compare::proc_side(cg);
    let mut mismatches = compare::diff(&ps, &listed, &proc);
    mismatches.extend(compare::zombies_diff(&agent.json(&["zombies"])?, &proc));
    for m in &mut mismatches {
        explain(m, &run.history, &ps);
    }
    Ok(Round {
        procs: proc.len(),
        zombies: proc.values().filter(|f| f.zombie).count(),
        deepest: proc.values().map(|f| f.ns_pids.len()).max().unwrap_or(0),
        parents: compare::zombie_parents(&proc),
        mismatches,
        freeze,
        catch_up,
        reconcile,
    })
}

/// Appends to a mismatch ("<pid>: …") the agent's last events of the process and of its
/// parent as the agent has it.
fn explain(m: &mut String, history: &history::History, ps: &serde_json::Value) {
    let Some(pid) = m.split(':').next().and_then(|p| p.parse::<u32>().ok()) else {
        return;
    };
    m.push_str(&format!("\n    the agent's last events of {pid}:\n"));
    m.push_str(&history.of(pid));
    let ppid = ps
        .as_array()
        .and_then(|a| a.iter().find(|p| p["pid"] == pid))
        .and_then(|p| p["ppid"].as_u64());
    if let Some(ppid) = ppid {
        m.push_str(&format!("    and of its parent {ppid}:\n"));
        m.push_str(&history.of(ppid as u32));
    }
    if history.lagged() > 0 {
        m.push_str(&format!(
            "    (the event stream lagged by {} events: gaps are possible)\n",
            history.lagged()
        ));
    }
}

/// A small xorshift generator for the moments to freeze at (no crate for one number).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Counts PID wraps (the host's last PID going down) while sleeping `d`.
fn nap_counting_wraps(d: Duration, last: &mut u64, wraps: &mut u32) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if !host::nap(Duration::from_millis(50).min(end - Instant::now())) {
            return false;
        }
        if let Some(n) = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            *wraps += (n < *last) as u32;
            *last = n;
        }
    }
    true
}

fn run(dir: &Path, time: Duration) -> Result<()> {
    let mut run = start(dir, time.as_secs())?;
    let ids: HashSet<u64> = run.work.cg.ids().into_iter().collect();
    eprintln!(
        "torture: workload in {} (pid_max {}), agent pid {}, for {} s",
        run.work.cg.path.display(),
        run.pid_max.now,
        run.agent.pid(),
        time.as_secs()
    );
    eprintln!(
        "torture: its cgroups' ids (as events show them): {}",
        run.work.cg.named_ids()
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = Rng(seed | 1);
    let mut tally = Tally::new(run.before);
    let (mut last_pid, mut wraps) = (0, 0);
    let t0 = Instant::now();
    while t0.elapsed() < time {
        let wait = Duration::from_millis(300 + rng.below(3000)).min(time - t0.elapsed());
        if !nap_counting_wraps(wait, &mut last_pid, &mut wraps) {
            break;
        }
        if let Some(st) = run.work.root.try_wait()? {
            bail!("the workload's first process ended: {st}");
        }
        let round = check(&run, &ids)?;
        tally.add(t0.elapsed(), &round, run.agent.counters()?);
    }
    if host::interrupted() {
        bail!("interrupted");
    }
    tally.finish(&run, wraps)
}

/// The run's findings so far.
/// How long after a counted loss a correction it explains may be counted (see `Tally::add`).
const LOSS_WINDOW: Duration = Duration::from_secs(5);

struct Tally {
    rounds: u32,
    procs: usize,
    zombies: usize,
    deepest: usize,
    mismatches: usize,
    /// Counters at the start and after each round, with when (since the start).
    samples: Vec<(Duration, agent::Counters)>,
    unexplained: u64,
}

impl Tally {
    fn new(c: agent::Counters) -> Tally {
        Tally {
            rounds: 0,
            procs: 0,
            zombies: 0,
            deepest: 0,
            mismatches: 0,
            samples: vec![(Duration::ZERO, c)],
            unexplained: 0,
        }
    }

    fn add(&mut self, at: Duration, r: &Round, c: agent::Counters) {
        self.rounds += 1;
        self.procs += r.procs;
        self.zombies += r.zombies;
        self.deepest = self.deepest.max(r.deepest);
        self.mismatches += r.mismatches.len();
        let n = self.samples.len();
        let prev = self.samples[n - 1].1;
        // A correction is explained by a loss counted in this interval or the one before,
        // or within LOSS_WINDOW: reconciliation runs at once when a loss is counted, but a
        // process it finds without a fork event is a correction only once that event has
        // not come for 2 s (`start missed`), often two rounds later.
        let window_start = self
            .samples
            .iter()
            .rposition(|(t, _)| *t + LOSS_WINDOW < at)
            .unwrap_or(0)
            .min(n.saturating_sub(2));
        let corrected = c.corrections - prev.corrections;
        let unexplained = corrected > 0 && c.lost() == self.samples[window_start].1.lost();
        if unexplained {
            self.unexplained += corrected;
        }
        self.samples.push((at, c));
        eprintln!(
            "torture: {:5.1} s: {} processes ({} zombies: {}) frozen in {} ms, agent caught up in {} ms{}: {} mismatches; corrections {}{}, events lost {}",
            at.as_secs_f64(),
            r.procs,
            r.zombies,
            r.parents,
            r.freeze.as_millis(),
            r.catch_up.as_millis(),
            r.reconcile.map_or(String::new(), |d| format!(
                " and reconciled in {} ms",
                d.as_millis()
            )),
            r.mismatches.len(),
            c.corrections,
            if unexplained { " (NEW, WITHOUT LOSS)" } else { "" },
            c.lost()
        );
        for m in &r.mismatches {
            eprintln!("torture: MISMATCH {m}");
        }
    }

    fn finish(&self, run: &Run, wraps: u32) -> Result<()> {
        let first = self.samples[0].1;
        let last = self.samples.last().expect("the first sample").1;
        eprintln!(
            "torture: {} rounds, {} process comparisons ({} of zombies, ns PID chains up to {} deep), \
             {wraps} PID wraps (pid_max {}): {} mismatches; agent: {} events, {} checks, {} corrections in {} \
             reconciliations, {} events lost ({} dropped, {} skipped, {} errors), {} corrections without any loss",
            self.rounds,
            self.procs,
            self.zombies,
            self.deepest,
            run.pid_max.now,
            self.mismatches,
            last.received - first.received,
            last.checks - first.checks,
            last.corrections - first.corrections,
            last.reconciliations - first.reconciliations,
            last.lost() - first.lost(),
            last.dropped,
            last.skipped,
            last.errors,
            self.unexplained
        );
        if self.rounds == 0 || self.zombies == 0 || self.deepest < 3 {
            bail!("the workload did not run as meant: {} rounds, {} zombies seen, ns PID chains {} deep", self.rounds, self.zombies, self.deepest);
        }
        if self.mismatches > 0 || self.unexplained > 0 {
            bail!(
                "{} mismatches with /proc, {} corrections without loss (agent log: {})",
                self.mismatches,
                self.unexplained,
                run.agent.log.display()
            );
        }
        Ok(())
    }
}
