//! `cargo xtask bench`: the product's timing and size goals, measured on this machine with
//! the release binary, as a user would run it. Goals are reported, never asserted by tests.
//!
//! - storm: a fork+exec+exit loop with and without the agent (slowdown, agent CPU per event,
//!   events lost)
//! - tree: `observer tree` of a 1,000-process container
//! - metrics: `/metrics` with 200 containers
//! - scan: start-up of 10,000 processes seeded by the task iterator and by /proc, side by
//!   side, and the agent's RSS with them
//! - scale (only with --only scale): the cost curve from ~1k to ~10k to ~50k processes in
//!   up to 981 containers, and 1,000 containers started and removed (scale.rs)
//! - --peers: observer beside execsnoop+exitsnoop, podman top, ps and process-exporter,
//!   written to BENCHMARKS.md (peers.rs)
//! - hostile: a storm into a 256 KiB ring buffer alone and while 8 clients send wrong
//!   passwords and 8 scrape /metrics (events lost with and without them; hostile.rs)
//! - churn: the agent's RSS through 1,000,000 short-lived processes and 10,000 short-lived
//!   containers (churn.rs)
//! - bpf-stats: the storm under an agent with and without `--bpf-stats on` (bpf_stats.rs)
//! - store: bytes the history store writes to disk per ended process, for 4,000 short-lived
//!   processes in a bare container (store.rs)
//! - export: the storm with the file and OTLP sinks on against none, and the file sink
//!   through 1,000,000 exec'ing processes under rotation, every line counted (export.rs)

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use crate::util::{root, run};

mod bpf_stats;
mod churn;
mod cpu;
mod export;
mod hostile;
mod peers;
mod scale;
mod store;

fn observer() -> PathBuf {
    root().join("target/release/observer")
}

/// The shared harness's agent (observer-harness, as the integration tests start it), run
/// from the release build with `RUST_LOG=info`; its reconciliation lines are echoed. It
/// runs in a cgroup of its own where there is a cgroup2 mount, for its CPU time in µs.
struct Agent {
    agent: observer_harness::Agent,
    /// Dropped after the agent: the group is removed once it is empty.
    cpu: Option<cpu::CpuGroup>,
}

impl std::ops::Deref for Agent {
    type Target = observer_harness::Agent;

    fn deref(&self) -> &observer_harness::Agent {
        &self.agent
    }
}

impl Agent {
    fn start() -> Result<Agent> {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Result<Agent> {
        Self::start_bin(&observer(), extra)
    }

    /// An agent of another observer binary (`bench --baseline`: an older build).
    fn start_bin(bin: &std::path::Path, extra: &[&str]) -> Result<Agent> {
        let socket =
            std::env::temp_dir().join(format!("observer-bench-{}.sock", std::process::id()));
        // A build older than the history store has no --state-dir.
        let state_dir = Command::new(bin)
            .args(["agent", "--help"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--state-dir"));
        let mut cmd = Command::new(bin);
        cmd.env("RUST_LOG", "info").arg("agent");
        let agent = observer_harness::Agent::start(observer_harness::Start {
            cmd,
            socket: &socket,
            extra,
            state_dir,
            ready_within: Duration::from_secs(120),
            on_line: Box::new(|l| {
                // Every check that disagreed and every correction, with both sides: a
                // benchmark window that paid for a full scan says why.
                if ["check:", "correction:", "disagree", "reconciliation "]
                    .iter()
                    .any(|k| l.contains(k))
                {
                    eprintln!("bench: agent: {l}");
                }
            }),
        })?;
        let cpu = cpu::CpuGroup::adopt(agent.pid())
            .inspect_err(|e| eprintln!("bench: agent CPU from /proc in 10 ms ticks: {e:#}"))
            .ok();
        Ok(Agent { agent, cpu })
    }

    /// GET on the HTTP listener: the body.
    fn get(&self, path: &str) -> Result<String> {
        Ok(observer_harness::http_body(&self.http_get(path)?))
    }

    /// CPU time so far, µs-exact from its cgroup where it has one.
    fn cpu_s(&self) -> f64 {
        let group = self.cpu.as_ref().and_then(|g| g.seconds());
        group.unwrap_or_else(|| cpu_seconds(self.pid()))
    }
}

/// Total run time (ns) of the BPF programs `pid` holds, from their fdinfo (counted while
/// kernel.bpf_stats_enabled is 1).
fn bpf_run_ns(pid: u32) -> u64 {
    bpf_runs_by_id(pid).values().map(|r| r.ns).sum()
}

/// bpf_stats counters of one program: run time (ns) and number of runs.
#[derive(Clone, Copy, Debug, Default)]
struct Runs {
    ns: u64,
    count: u64,
}

impl std::ops::Sub for Runs {
    type Output = Runs;
    fn sub(self, b: Runs) -> Runs {
        Runs {
            ns: self.ns.saturating_sub(b.ns),
            count: self.count.saturating_sub(b.count),
        }
    }
}

/// bpf_stats counters of each BPF program `pid` holds, by program id (fdinfo; a program
/// held through several descriptors counts once).
fn bpf_runs_by_id(pid: u32) -> std::collections::BTreeMap<u64, Runs> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for s in rd
        .flatten()
        .filter_map(|f| std::fs::read_to_string(f.path()).ok())
        .filter(|s| s.contains("prog_type"))
    {
        let field = |k: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(ns), Some(count)) = (field("run_time_ns:"), field("run_cnt:")) {
            out.insert(field("prog_id:").unwrap_or(0), Runs { ns, count });
        }
    }
    out
}

/// utime + stime of a whole process in seconds, exited threads included (a sum over
/// /proc/<pid>/task loses the time of the runtime's blocking threads once they end).
fn cpu_seconds(pid: u32) -> f64 {
    crate::util::process_cpu(pid).as_secs_f64()
}

/// bpf_stats counters of each BPF program `pid` holds, by program name (bpftool's names;
/// fdinfo has only ids).
fn bpf_runs_by_program(pid: u32) -> std::collections::BTreeMap<String, Runs> {
    let names: std::collections::HashMap<u64, String> = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str()?.to_string())))
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for (id, runs) in bpf_runs_by_id(pid) {
        let name = names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("id {id}"));
        out.insert(name, runs);
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// CPU time (user + system) of all waited-for children so far, in seconds.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Wall and CPU time of a workload run.
fn time_workload(cmd: &mut Command) -> Result<(f64, f64)> {
    let c0 = children_cpu();
    let wall = time_cmd(cmd)?;
    Ok((wall, children_cpu() - c0))
}

fn time_cmd(cmd: &mut Command) -> Result<f64> {
    let t = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    if !out.success() {
        bail!("{cmd:?} failed: {out}");
    }
    Ok(t.elapsed().as_secs_f64())
}

struct Report(Vec<(String, String, String, bool)>);

impl Report {
    fn add(&mut self, what: &str, measured: String, goal: &str, met: bool) {
        eprintln!("bench: {what}: {measured} (goal {goal})");
        self.0.push((what.into(), measured, goal.into(), met));
    }
}

const STORM_SPAWNS: u32 = 4000;
const STORM_PAIRS: usize = 9;

/// The storm: a shell running `/bin/true` STORM_SPAWNS times, one after another.
fn storm_cmd() -> Command {
    let mut c = Command::new("sh");
    c.args([
        "-c",
        &format!("i=0; while [ $i -lt {STORM_SPAWNS} ]; do /bin/true; i=$((i+1)); done"),
    ]);
    c
}

fn storm(r: &mut Report) -> Result<()> {
    let sh = storm_cmd;
    time_cmd(&mut sh())?; // warm caches
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let (mut bpf_ns, mut workload_cpu) = (0u64, 0.0);
    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    let (mut cpu, mut events, mut lost) = (0.0, 0u64, 0u64);
    for _ in 0..STORM_PAIRS {
        let (base, base_cpu) = time_workload(&mut sh())?;
        without.push(base);
        let agent = Agent::start()?;
        // Let the start-up work (seed, command-line enrichment) finish first.
        thread::sleep(Duration::from_secs(2));
        let (received0, _) = agent.event_totals()?;
        let cpu0 = agent.cpu_s();
        let bpf0 = bpf_run_ns(agent.pid());
        let (t, t_cpu) = time_workload(&mut sh())?;
        bpf_ns += bpf_run_ns(agent.pid()) - bpf0;
        workload_cpu += t_cpu;
        with.push(t);
        ratios.push(t / base);
        cpu_ratios.push(t_cpu / base_cpu);
        thread::sleep(Duration::from_millis(300));
        cpu += agent.cpu_s() - cpu0;
        let (received, dropped) = agent.event_totals()?;
        events += received - received0;
        lost += dropped;
    }
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    let spawns = (STORM_SPAWNS as usize * STORM_PAIRS) as f64;
    let per_spawn = bpf_ns as f64 / spawns / 1e3;
    let share = bpf_ns as f64 / 1e9 / workload_cpu * 100.0;
    r.add(
        "storm: in-kernel probe time per spawn (bpf_stats)",
        format!("{per_spawn:.1} µs = {share:.2}% of the workload's CPU time"),
        "≤ 2 µs",
        per_spawn <= 2.0,
    );
    let (a, b) = (median(without), median(with));
    let slowdown = (median(ratios) - 1.0) * 100.0;
    let cpu_slowdown = (median(cpu_ratios) - 1.0) * 100.0;
    r.add(
        &format!("storm: {STORM_SPAWNS} fork+exec+exit, wall-time slowdown"),
        format!(
            "{slowdown:+.1}% (median of {STORM_PAIRS} pairs; {:.0} → {:.0} ms)",
            a * 1e3,
            b * 1e3
        ),
        "≤ 1%",
        slowdown <= 1.0,
    );
    r.add(
        "storm: workload CPU-time slowdown (incl. in-kernel probes)",
        format!("{cpu_slowdown:+.1}% (median of {STORM_PAIRS} pairs)"),
        "≤ 3%",
        cpu_slowdown <= 3.0,
    );
    let per = cpu / events.max(1) as f64 * 1e6;
    r.add(
        "storm: agent CPU per event",
        format!("{per:.2} µs ({events} events, {cpu:.2} s CPU)"),
        "≤ 1 µs",
        per <= 1.0,
    );
    r.add("storm: events lost", lost.to_string(), "0", lost == 0);
    Ok(())
}

fn launcher(args: &[&str]) -> Result<()> {
    run(Command::new(observer()).args(args).stdout(Stdio::null()))
}

fn rm(names: &[String]) {
    for n in names {
        let _ = Command::new(observer())
            .args(["rm", "-f", n])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn tree(r: &mut Report) -> Result<()> {
    let name = "bench-tree".to_string();
    rm(std::slice::from_ref(&name));
    let agent = Agent::start()?;
    launcher(&[
        "run",
        "-d",
        "--name",
        &name,
        "--pids-max",
        "4096",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 999 ]; do sleep 3600 & i=$((i+1)); done; wait",
    ])?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = Command::new(observer())
            .args(["containers", "-o", "json", "--socket"])
            .arg(&agent.socket)
            .output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v.as_array().is_some_and(|a| {
            a.iter()
                .any(|c| c["name"] == name.as_str() && c["processes"] == 1000)
        }) {
            break;
        }
        if Instant::now() > deadline {
            rm(&[name]);
            bail!("the 1,000-process container did not come up");
        }
        thread::sleep(Duration::from_millis(200));
    }
    let mut times = Vec::new();
    for _ in 0..15 {
        times.push(time_cmd(
            Command::new(observer())
                .args(["tree", &name, "-o", "json", "--socket"])
                .arg(&agent.socket),
        )?);
    }
    let text = median(
        (0..15)
            .map(|_| {
                time_cmd(
                    Command::new(observer())
                        .args(["tree", &name, "--socket"])
                        .arg(&agent.socket),
                )
                .unwrap_or(f64::NAN)
            })
            .collect(),
    );
    let t = median(times);
    r.add(
        "tree: `observer tree` of a 1,000-process container (JSON)",
        format!("{:.1} ms (text: {:.1} ms)", t * 1e3, text * 1e3),
        "≤ 20 ms",
        t <= 0.020,
    );
    rm(&[name]);
    Ok(())
}

fn metrics(r: &mut Report) -> Result<()> {
    let names: Vec<String> = (0..200).map(|i| format!("bench-m-{i}")).collect();
    rm(&names);
    for n in &names {
        launcher(&["run", "-d", "--name", n, "--", "sleep", "3600"])?;
    }
    let agent = Agent::start()?;
    let body = agent.get("/metrics")?;
    let series = body
        .lines()
        .filter(|l| l.starts_with("observer_container_processes{"))
        .count();
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        agent.get("/metrics")?;
        times.push(t.elapsed().as_secs_f64());
    }
    let t = median(times);
    r.add(
        "metrics: /metrics with 200 containers",
        format!(
            "{:.1} ms ({series} containers, {} bytes)",
            t * 1e3,
            body.len()
        ),
        "≤ 10 ms",
        t <= 0.010 && series >= 200,
    );
    drop(agent);
    rm(&names);
    Ok(())
}

fn scan(r: &mut Report) -> Result<()> {
    let before = std::fs::read_dir("/proc")?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count();
    let want = 10_000usize.saturating_sub(before);
    let mut kids: Vec<Child> = Vec::with_capacity(want);
    for _ in 0..want {
        kids.push(
            Command::new("sleep")
                .arg("3600")
                .stdin(Stdio::null())
                .spawn()?,
        );
    }
    let result = (|| -> Result<()> {
        // Both seeds side by side, alternating: start-up to ready (the agent's "API on"
        // line), the seed itself, and until every fact of every process is in the table
        // (the background pass over /proc for command lines — and, for the /proc seed,
        // namespaces and cgroup ids — done).
        /// One seed's runs: ready, seed and every-fact times (s), processes seen.
        struct Runs(&'static str, Vec<f64>, Vec<f64>, Vec<f64>, u64);
        let mut rows = ["iterator", "proc"].map(|s| Runs(s, Vec::new(), Vec::new(), Vec::new(), 0));
        for _ in 0..3 {
            for row in &mut rows {
                let t = Instant::now();
                let agent = Agent::start_with(&["--seed", row.0])?;
                row.1.push(t.elapsed().as_secs_f64());
                let st = agent.status()?;
                if st["seed"] != row.0 {
                    bail!("--seed {} seeded from {}", row.0, st["seed"]);
                }
                row.2.push(st["last_scan_s"].as_f64().unwrap_or(f64::NAN));
                row.4 = st["processes"].as_u64().unwrap_or(0);
                while agent.status()?["startup_details_pending"] == true {
                    thread::sleep(Duration::from_millis(10));
                }
                row.3.push(t.elapsed().as_secs_f64());
            }
        }
        for Runs(seed, ready, seed_s, complete, procs) in rows {
            let (ready, seed_s, complete) = (median(ready), median(seed_s), median(complete));
            r.add(
                &format!("scan: start-up, --seed {seed}"),
                format!(
                    "seed {:.0} ms, ready {:.0} ms, every fact {:.0} ms ({procs} processes)",
                    seed_s * 1e3,
                    ready * 1e3,
                    complete * 1e3
                ),
                "seed ≤ 300 ms for 10,000",
                seed_s <= 0.300 && procs >= 10_000,
            );
        }
        let agent = Agent::start()?;
        thread::sleep(Duration::from_secs(2));
        let rss = agent.rss_kb();
        r.add(
            "rss: agent with 10,000 processes",
            format!("{:.1} MB", rss as f64 / 1024.0),
            "≤ 40 MB",
            rss <= 40 * 1024,
        );
        Ok(())
    })();
    for k in &mut kids {
        let _ = k.kill();
    }
    for k in &mut kids {
        let _ = k.wait();
    }
    result
}

pub fn bench(only: &[String], with_peers: bool, baseline: Option<&std::path::Path>) -> Result<()> {
    crate::build()?;
    if let Some(b) = baseline {
        if !b.is_file() {
            bail!("--baseline {}: no such observer binary", b.display());
        }
        let out = peers::storm_against(b)?;
        println!(
            "bench: the storm beside {} written to {}",
            b.display(),
            out.display()
        );
        return Ok(());
    }
    if with_peers {
        let out = peers::peers()?;
        println!("bench: peers written to {}", out.display());
        if only.is_empty() {
            return Ok(());
        }
    }
    let mut r = Report(Vec::new());
    let all = only.is_empty();
    let want = |k: &str| all || only.iter().any(|o| o == k);
    if want("scan") {
        scan(&mut r)?;
    }
    if want("tree") {
        tree(&mut r)?;
    }
    if want("metrics") {
        metrics(&mut r)?;
    }
    if want("storm") {
        storm(&mut r)?;
    }
    if want("hostile") {
        hostile::hostile(&mut r)?;
    }
    if want("churn") {
        churn::churn(&mut r)?;
    }
    if want("bpf-stats") {
        bpf_stats::bpf_stats(&mut r)?;
    }
    if want("store") {
        store::store(&mut r)?;
    }
    if want("export") {
        export::export(&mut r)?;
    }
    if want("export-million") {
        export::export_million(&mut r)?;
    }
    // Not part of the default set (it takes about 15 minutes): --only scale.
    if only.iter().any(|o| o == "scale") {
        scale::scale(&mut r)?;
    }
    println!("\n{:<58} {:<48} {:<22}", "benchmark", "measured", "goal");
    for (what, m, goal, met) in &r.0 {
        println!(
            "{what:<58} {m:<48} {goal:<22} {}",
            if *met { "met" } else { "MISSED" }
        );
    }
    Ok(())
}
