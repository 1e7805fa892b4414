//! The cost curve on a big node: the agent's start-up, idle CPU, RSS, /metrics and tree as
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
const IDLE_S: u64 = 60;
const CHURN: usize = 1000;

/// kernel.pid_max raised for the run, restored on drop.
struct PidMax(String);

impl PidMax {
    fn raise(to: u64) -> Result<PidMax> {
        let old = std::fs::read_to_string("/proc/sys/kernel/pid_max")?;
        if old.trim().parse::<u64>().unwrap_or(0) < to {
            std::fs::write("/proc/sys/kernel/pid_max", to.to_string())?;
        }
        Ok(PidMax(old.trim().to_string()))
    }
}

impl Drop for PidMax {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/pid_max", &self.0);
    }
}

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

/// utime + stime of a whole process, exited threads included, in seconds.
fn process_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// What one size measured.
struct Point {
    procs: usize,
    seed_ms: f64,
    ready_ms: f64,
    idle_pct: f64,
    rss_mb: f64,
    metrics_ms: f64,
    tree_ms: f64,
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
    // From /proc/<pid>/stat, which keeps the time of threads that have exited (the
    // runtime's blocking threads end when idle; a sum over /proc/<pid>/task loses theirs).
    let cpu0 = process_cpu_s(agent.child.id());
    thread::sleep(Duration::from_secs(IDLE_S));
    let idle_pct = (process_cpu_s(agent.child.id()) - cpu0) / IDLE_S as f64 * 100.0;
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
    Ok(Point {
        procs,
        seed_ms: median(seeds),
        ready_ms: median(readies),
        idle_pct,
        rss_mb,
        metrics_ms: median(m),
        tree_ms: median(tr),
    })
}

/// 1,000 containers started and removed, one after another, with the agent running: the
/// events the kernel lost meanwhile.
fn churn(r: &mut Report) -> Result<()> {
    let agent = Agent::start()?;
    let (_, lost0) = agent.event_totals()?;
    let t = Instant::now();
    for i in 0..CHURN {
        let name = format!("bench-scale-churn-{i}");
        launcher(&["run", "-d", "--name", &name, "--", "sleep", "36000"])?;
        let _ = Command::new(observer())
            .args(["rm", "-f", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let took = t.elapsed().as_secs_f64();
    thread::sleep(Duration::from_secs(1));
    let (received, lost) = agent.event_totals()?;
    let lost = lost - lost0;
    r.add(
        &format!("scale: {CHURN} containers started and removed on the 50k node"),
        format!("{lost} events lost ({received} received; {took:.0} s)"),
        "0 lost",
        lost == 0,
    );
    Ok(())
}

pub fn scale(r: &mut Report) -> Result<()> {
    let _pid_max = PidMax::raise(1 << 20)?;
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
            "bench: scale {label}: {} processes in {} containers: seed {:.0} ms, ready {:.0} ms, idle {:.3}% of a core, RSS {:.1} MB, /metrics {:.1} ms, tree {:.1} ms",
            p.procs, small + 1, p.seed_ms, p.ready_ms, p.idle_pct, p.rss_mb, p.metrics_ms, p.tree_ms
        );
        points.push((label, small + 1, p));
    }
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
        "scale: idle agent CPU",
        curve(&|p| format!("{:.3}%", p.idle_pct)),
        "≤ 0.1% at 10k, ≤ 0.3% at 50k",
        top.idle_pct <= 0.3 && points[1].2.idle_pct <= 0.1,
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
    churn(r)?;
    drop(ctrs);
    Ok(())
}
