//! The cost curve on a big node: the agent's start-up, idle CPU, RSS, /metrics, tree and
//! whole-node `ps` (beside procps' `ps -e`, then the RSS after it) as
//! the node grows from ~1,000 to ~10,000 to ~50,000 processes, in launcher containers of 50
//! processes each (981 of them at the top, plus one 1,000-process container whose tree is
//! timed at every size); then 0 events lost while containers start and stop. Raises
//! kernel.pid_max for the run and puts it back afterwards.

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use super::{launcher, median, observer, rm, time_cmd, Agent, Report};

/// (small containers, label): each size adds small containers to the node.
const SIZES: [(usize, &str); 3] = [(0, "1k"), (180, "10k"), (980, "50k")];
/// One idle window; the node's size decides how many (`idle_windows`).
const IDLE_S: u64 = 30;
const CHURN: usize = 1000;
const CHURN_WORKERS: usize = 4;

/// Containers started by the benchmark, removed on drop.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        rm(&self.0);
    }
}

fn procs_on_node() -> usize {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0)
}

/// Starts a container of `n` processes (a shell and n-1 sleeps).
fn start(name: &str, n: usize) -> Result<()> {
    let script = format!(
        "i=0; while [ $i -lt {} ]; do sleep 36000 & i=$((i+1)); done; wait",
        n - 1
    );
    launcher(&[
        "run",
        "-d",
        "--name",
        name,
        "--pids-max",
        "4096",
        "--",
        "sh",
        "-c",
        &script,
    ])
}

/// What one size measured.
struct Point {
    procs: usize,
    seed_ms: f64,
    ready_ms: f64,
    /// The worst idle window (the cost of a full scan shows in one window, not in a mean).
    idle_pct: f64,
    idle_median_pct: f64,
    idle_windows: usize,
    /// Full scans started and corrections made during the idle windows (0 on a quiet node:
    /// a check that disagrees only because processes came or went must not scan).
    idle_scans: u64,
    idle_corrections: u64,
    rss_mb: f64,
    metrics_ms: f64,
    tree_ms: f64,
    /// Whole-node `observer ps -o json` and, beside it, procps' `ps -e` (medians).
    ps_ms: f64,
    ps_e_ms: f64,
    /// The agent's RSS after the whole-node views.
    rss_views_mb: f64,
}

/// Windows of IDLE_S: ≥ 10 on the big node, where a spurious full scan costs seconds.
fn idle_windows(procs: usize) -> usize {
    if procs >= 30_000 {
        10
    } else {
        3
    }
}

struct Idle {
    worst: f64,
    median: f64,
    windows: usize,
    scans: u64,
    corrections: u64,
}

/// The agent's CPU (% of a core) in each of `n` windows with the node's usual background
/// activity and nothing started by the bench.
fn idle(agent: &Agent, n: usize) -> Result<Idle> {
    let counters = |a: &Agent| -> Result<(u64, u64)> {
        let st = a.status()?;
        let n = |k: &str| st[k].as_u64().unwrap_or(0);
        Ok((n("reconciliations"), n("corrections")))
    };
    let (scans0, corr0) = counters(agent)?;
    let mut pcts = Vec::with_capacity(n);
    for i in 0..n {
        // Its cgroup's count (or /proc/<pid>/stat's), which keeps the time of threads that
        // have exited (the runtime's blocking threads end when idle).
        let cpu0 = agent.cpu_s();
        thread::sleep(Duration::from_secs(IDLE_S));
        let pct = (agent.cpu_s() - cpu0) / IDLE_S as f64 * 100.0;
        eprintln!("bench: idle window {}/{n}: {pct:.3}% of a core", i + 1);
        pcts.push(pct);
    }
    let (scans1, corr1) = counters(agent)?;
    Ok(Idle {
        worst: pcts.iter().copied().fold(0.0, f64::max),
        median: median(pcts),
        windows: n,
        scans: scans1 - scans0,
        corrections: corr1 - corr0,
    })
}

fn measure(big: &str) -> Result<Point> {
    let procs = procs_on_node();
    let (mut seeds, mut readies) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        let a = Agent::start()?;
        readies.push(t.elapsed().as_secs_f64() * 1e3);
        seeds.push(a.status()?["last_scan_s"].as_f64().unwrap_or(f64::NAN) * 1e3);
    }
    let agent = Agent::start()?;
    // Past the start-up work (the background pass over command lines).
    while agent.status()?["startup_details_pending"] == true {
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_secs(5));
    let idle = idle(&agent, idle_windows(procs))?;
    let rss_mb = agent.rss_kb() as f64 / 1024.0;
    let mut m = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        agent.get("/metrics")?;
        m.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut tr = Vec::new();
    for _ in 0..10 {
        let mut c = Command::new(observer());
        c.args(["tree", big, "-o", "json", "--socket"])
            .arg(&agent.socket);
        tr.push(time_cmd(&mut c)? * 1e3);
    }
    let (ps_ms, ps_e_ms, rss_views_mb) = whole_node(&agent)?;
    Ok(Point {
        procs,
        seed_ms: median(seeds),
        ready_ms: median(readies),
        idle_pct: idle.worst,
        idle_median_pct: idle.median,
        idle_windows: idle.windows,
        idle_scans: idle.scans,
        idle_corrections: idle.corrections,
        rss_mb,
        metrics_ms: median(m),
        tree_ms: median(tr),
        ps_ms,
        ps_e_ms,
        rss_views_mb,
    })
}

/// Whole-node `observer ps -o json` (every process, with live facts) beside `ps -e`,
/// alternating, medians of 5; then the agent's RSS (MB) after those views.
fn whole_node(agent: &Agent) -> Result<(f64, f64, f64)> {
    let (mut ps, mut ps_e) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let mut c = Command::new(observer());
        c.args(["ps", "-o", "json", "--socket"]).arg(&agent.socket);
        ps.push(time_cmd(&mut c)? * 1e3);
        ps_e.push(time_cmd(Command::new("ps").arg("-e"))? * 1e3);
    }
    Ok((median(ps), median(ps_e), agent.rss_kb() as f64 / 1024.0))
}

/// 1,000 containers started and removed by CHURN_WORKERS at once (one launcher start and
/// removal takes ~120 ms here: one after another would take two minutes, not one), with the
/// agent running: the events the kernel lost meanwhile, those received, and the seconds
/// it took.
fn churn() -> Result<(u64, u64, f64)> {
    let agent = Agent::start()?;
    let (_, lost0) = agent.event_totals()?;
    let t = Instant::now();
    let res = thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..CHURN_WORKERS)
            .map(|w| {
                s.spawn(move || -> Result<()> {
                    for i in (w..CHURN).step_by(CHURN_WORKERS) {
                        let name = format!("bench-scale-churn-{i}");
                        launcher(&["run", "-d", "--name", &name, "--", "sleep", "36000"])?;
                        let _ = Command::new(observer())
                            .args(["rm", "-f", &name])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status();
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("churn worker panicked"))??;
        }
        Ok(())
    });
    if res.is_err() {
        // A worker stopped between a start and its removal.
        rm(&(0..CHURN)
            .map(|i| format!("bench-scale-churn-{i}"))
            .collect::<Vec<_>>());
    }
    res?;
    let took = t.elapsed().as_secs_f64();
    thread::sleep(Duration::from_secs(1));
    let (received, lost) = agent.event_totals()?;
    Ok((lost - lost0, received, took))
}

/// The cost curve: one point per size, then the churn.
pub struct Scale {
    points: Vec<(&'static str, usize, Point)>,
    churn: (u64, u64, f64),
}

/// Grows the node size by size, measuring at each; then the churn on the biggest.
pub fn run() -> Result<Scale> {
    let _pid_max = crate::util::PidMax::raise(1 << 20)?;
    let big = "bench-scale-big".to_string();
    let mut ctrs = Containers(vec![big.clone()]);
    rm(&ctrs.0);
    start(&big, 1000)?;
    let mut points = Vec::new();
    for (small, label) in SIZES {
        let have = ctrs.0.len() - 1;
        for i in have..small {
            let name = format!("bench-scale-{i}");
            rm(std::slice::from_ref(&name));
            ctrs.0.push(name.clone());
            start(&name, 50)?;
        }
        // Every container's processes are up.
        let want = 1000 + small * 50;
        let deadline = Instant::now() + Duration::from_secs(600);
        while procs_on_node() < want {
            if Instant::now() > deadline {
                bail!(
                    "{label}: {} processes on the node, {want} wanted",
                    procs_on_node()
                );
            }
            thread::sleep(Duration::from_secs(1));
        }
        let p = measure(&big)?;
        eprintln!(
            "bench: scale {label}: {} processes in {} containers: seed {:.0} ms, ready {:.0} ms, idle worst {:.3}% (median {:.3}%) of a core over {} windows, {} full scans, {} corrections, RSS {:.1} MB, /metrics {:.1} ms, tree {:.1} ms",
            p.procs, small + 1, p.seed_ms, p.ready_ms, p.idle_pct, p.idle_median_pct, p.idle_windows, p.idle_scans, p.idle_corrections, p.rss_mb, p.metrics_ms, p.tree_ms
        );
        points.push((label, small + 1, p));
    }
    let churn = churn()?;
    drop(ctrs);
    Ok(Scale { points, churn })
}

/// The cost curve as benchmark report lines.
pub fn scale(r: &mut Report) -> Result<()> {
    let Scale { points, churn } = run()?;
    let curve = |f: &dyn Fn(&Point) -> String| {
        points
            .iter()
            .map(|(l, _, p)| format!("{l}: {}", f(p)))
            .collect::<Vec<_>>()
            .join(" → ")
    };
    let top = &points.last().expect("three sizes").2;
    r.add(
        "scale: start-up to ready (seed)",
        curve(&|p| format!("{:.0} ms ({:.0})", p.ready_ms, p.seed_ms)),
        "≤ 1 s at 50,000",
        top.ready_ms <= 1000.0,
    );
    r.add(
        "scale: idle agent CPU, worst window (median)",
        curve(&|p| {
            format!(
                "{:.3}% ({:.3}%) of {}",
                p.idle_pct, p.idle_median_pct, p.idle_windows
            )
        }),
        "≤ 0.1% in every window",
        points.iter().all(|(_, _, p)| p.idle_pct <= 0.1),
    );
    r.add(
        "scale: full scans and corrections while idle",
        curve(&|p| format!("{} scans, {} corrections", p.idle_scans, p.idle_corrections)),
        "0 (nothing lost, nothing to correct)",
        points
            .iter()
            .all(|(_, _, p)| p.idle_scans == 0 && p.idle_corrections == 0),
    );
    r.add(
        "scale: agent RSS",
        curve(&|p| format!("{:.1} MB", p.rss_mb)),
        "≤ 64 MB at 50,000",
        top.rss_mb <= 64.0,
    );
    r.add(
        "scale: /metrics",
        curve(&|p| format!("{:.1} ms", p.metrics_ms)),
        "≤ 30 ms at 1,000 containers",
        top.metrics_ms <= 30.0,
    );
    r.add(
        "scale: `observer tree` of the 1,000-process container",
        curve(&|p| format!("{:.1} ms", p.tree_ms)),
        "≤ 20 ms",
        top.tree_ms <= 20.0,
    );
    r.add(
        "scale: whole-node `observer ps -o json` (`ps -e`)",
        curve(&|p| format!("{:.0} ms ({:.0} ms)", p.ps_ms, p.ps_e_ms)),
        "≤ `ps -e`",
        top.ps_ms <= top.ps_e_ms,
    );
    r.add(
        "scale: agent RSS after whole-node views",
        curve(&|p| format!("{:.1} MB", p.rss_views_mb)),
        "≤ 64 MB at 50,000",
        top.rss_views_mb <= 64.0,
    );
    let (lost, received, took) = churn;
    r.add(
        &format!("scale: {CHURN} containers started and removed on the 50k node ({CHURN_WORKERS} at a time)"),
        format!("{lost} events lost ({received} received; {took:.0} s)"),
        "0 lost",
        lost == 0,
    );
    Ok(())
}

/// A row of the cost curve: what, one point's cell, the goal (the brief's targets).
type Row = (&'static str, fn(&Point) -> String, &'static str);

const ROWS: &[Row] = &[
    (
        "start-up to ready (seed)",
        |p| format!("{:.0} ms ({:.0} ms)", p.ready_ms, p.seed_ms),
        "≤ 0.4 s at 50k",
    ),
    (
        "idle agent CPU, worst window (median)",
        |p| format!("{:.3}% ({:.3}%) of a core", p.idle_pct, p.idle_median_pct),
        "≤ 0.1% in every window",
    ),
    (
        "full scans and corrections while idle",
        |p| format!("{} / {}", p.idle_scans, p.idle_corrections),
        "0 / 0",
    ),
    (
        "agent RSS",
        |p| format!("{:.1} MB", p.rss_mb),
        "≤ 48 MB at 50k",
    ),
    (
        "/metrics",
        |p| format!("{:.1} ms", p.metrics_ms),
        "≤ 10 ms at 1,000 containers",
    ),
    (
        "`observer tree` of the 1,000-process container",
        |p| format!("{:.1} ms", p.tree_ms),
        "≤ 5 ms",
    ),
    (
        "whole-node `observer ps -o json` (procps `ps -e`)",
        |p| format!("{:.0} ms ({:.0} ms)", p.ps_ms, p.ps_e_ms),
        "≤ `ps -e`",
    ),
    (
        "agent RSS after whole-node views",
        |p| format!("{:.1} MB", p.rss_views_mb),
        "≤ 48 MB at 50k",
    ),
];

/// The cost curve as a BENCHMARKS.md table.
pub fn markdown(md: &mut String, s: &Scale) {
    use std::fmt::Write;
    let _ = writeln!(
        md,
        "\n### The cost curve: observer on a node of ~1k, ~10k and ~50k processes\n\n\
         Launcher containers of 50 processes plus one of 1,000 (whose tree is timed). Ready: \
         agent start to API answering (median of 3; seed = the start-up scan alone). Idle: \
         agent CPU in windows of {IDLE_S} s (3, or 10 at ~50k) with the node's usual \
         background activity; the worst window, the median in brackets, and the full scans and \
         corrections made meanwhile. /metrics and tree: medians of 10; \
         whole-node `observer ps` beside procps `ps -e`: medians of 5, then the agent's RSS.\n"
    );
    let mut head = "| | ".to_string();
    let mut sep = "|---|".to_string();
    for (label, ctrs, p) in &s.points {
        let _ = write!(
            head,
            "{label}: {} processes, {ctrs} container{} | ",
            p.procs,
            if *ctrs == 1 { "" } else { "s" }
        );
        sep.push_str("---|");
    }
    let _ = writeln!(md, "{head}goal |\n{sep}---|");
    for (what, f, goal) in ROWS {
        let cells: Vec<String> = s.points.iter().map(|(_, _, p)| f(p)).collect();
        let _ = writeln!(md, "| {what} | {} | {goal} |", cells.join(" | "));
    }
    let (lost, received, took) = s.churn;
    let _ = writeln!(
        md,
        "\n{CHURN} containers started and removed on the ~50k node with the agent running \
         ({CHURN_WORKERS} at a time): {lost} events lost ({received} received) \
         in {took:.0} s (goal: 0 lost, in 60 s).",
    );
}
