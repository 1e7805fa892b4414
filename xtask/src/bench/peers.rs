//! `cargo xtask bench --peers`: observer beside the tools it is compared with, on the same
//! workload and machine in one run, interleaved round by round so drift hits all alike:
//!
//! - spawn storm: no tracer, observer's agent, libbpf-tools `execsnoop` + `exitsnoop` (wall
//!   ratio to the untraced run, and in-kernel ns per spawn from `kernel.bpf_stats_enabled`
//!   for the programs each holds — the same method for both), and one more storm with the
//!   calibration programs (`observer agent --calibrate`) to split observer's time per
//!   program into the fixed cost any program pays and its reads;
//! - tree of one 1,000-process podman container: `observer tree`, `podman top`, and
//!   `ps -e --forest` (the node; ps cannot select a container);
//! - one scrape of the node: observer's `/metrics` and Debian's
//!   `prometheus-process-exporter` (every process, grouped by comm).
//!
//! Writes BENCHMARKS.md: machine, kernel, date, medians, min–max and ratios per table.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{
    bpf_run_ns, bpf_runs_by_program, median, observer, time_cmd, time_workload, Agent, STORM_SPAWNS,
};
use crate::util::root;

const ROUNDS: usize = 7;
const PODMAN_ROOT: &str = "/var/lib/observer-bench/podman";
const PODMAN_RUNROOT: &str = "/run/observer-bench/podman";

/// One measured quantity per contender: every round's value.
struct Row {
    who: String,
    values: Vec<f64>,
}

impl Row {
    fn new(who: &str) -> Row {
        Row {
            who: who.to_string(),
            values: Vec::new(),
        }
    }
    fn min_max(&self) -> (f64, f64) {
        let min = self.values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self
            .values
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }
}

/// A markdown table: contender, median, min–max, ratio to the first row's median.
fn table(md: &mut String, title: &str, unit: &str, scale: f64, rows: &[Row]) {
    let base = median(rows[0].values.clone());
    let _ = writeln!(
        md,
        "\n### {title}\n\n| | median ({unit}) | min–max | vs {} |\n|---|---|---|---|",
        rows[0].who
    );
    for r in rows {
        let m = median(r.values.clone());
        let (lo, hi) = r.min_max();
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.2}–{:.2} | {:.2}× |",
            r.who,
            m * scale,
            lo * scale,
            hi * scale,
            m / base
        );
    }
}

/// A tracer running for the duration of a measurement; killed on drop.
struct Tracer(Vec<Child>);

impl Tracer {
    fn start(cmds: &[&str]) -> Result<Tracer> {
        let mut kids = Vec::new();
        for c in cmds {
            kids.push(
                Command::new(c)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .with_context(|| format!("starting {c}"))?,
            );
        }
        // libbpf-tools attach within a second; wait until each holds its programs.
        let deadline = Instant::now() + Duration::from_secs(20);
        while kids.iter().any(|k| bpf_progs(k.id()) == 0) {
            if Instant::now() > deadline {
                bail!("{cmds:?} did not load their programs");
            }
            thread::sleep(Duration::from_millis(100));
        }
        thread::sleep(Duration::from_millis(500));
        Ok(Tracer(kids))
    }
    fn bpf_ns(&self) -> u64 {
        self.0.iter().map(|k| bpf_run_ns(k.id())).sum()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        for k in &mut self.0 {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}

/// BPF programs a process holds (its fdinfo entries with a prog_type).
fn bpf_progs(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|f| std::fs::read_to_string(f.path()).ok())
                .filter(|s| s.contains("prog_type"))
                .count()
        })
        .unwrap_or(0)
}

fn storm(md: &mut String, baseline: Option<&Path>) -> Result<()> {
    let sh = super::storm_cmd;
    time_cmd(&mut sh())?;
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let mut wall = vec![
        Row::new("no tracer"),
        Row::new("observer agent"),
        Row::new("execsnoop + exitsnoop"),
    ];
    let mut kernel = vec![
        Row::new("observer agent"),
        Row::new("observer agent, raw tracepoints (--tracepoint-kind raw)"),
        Row::new("execsnoop + exitsnoop"),
    ];
    if let Some(b) = baseline {
        let label = format!("baseline observer agent ({})", b.display());
        wall.push(Row::new(&label));
        kernel.push(Row::new(&label));
    }
    // observer's time per program, summed over the rounds: BTF tracepoints (the default)
    // and raw ones, so the table shows what the probe reads cost.
    let mut programs = ProgramRuns::new();
    let mut raw_programs = ProgramRuns::new();
    // One storm under an agent started with `args`: its in-kernel ns per spawn, its
    // programs' counters added to `per_program`, and the wall time.
    let observed_by = |bin: &Path, args: &[&str], per_program: &mut ProgramRuns| {
        let agent = Agent::start_bin(bin, args)?;
        thread::sleep(Duration::from_secs(2));
        let b0 = bpf_run_ns(agent.pid());
        let p0 = bpf_runs_by_program(agent.pid());
        let wall = time_workload(&mut sh())?.0;
        let ns = bpf_run_ns(agent.pid()) - b0;
        for (name, runs) in bpf_runs_by_program(agent.pid()) {
            let d = runs - p0.get(&name).copied().unwrap_or_default();
            let sum = per_program.entry(name).or_default();
            sum.ns += d.ns;
            sum.count += d.count;
        }
        anyhow::Ok((wall, ns as f64 / STORM_SPAWNS as f64))
    };
    let this = observer();
    let observed =
        |args: &[&str], per_program: &mut ProgramRuns| observed_by(&this, args, per_program);
    for _ in 0..ROUNDS {
        wall[0].values.push(time_workload(&mut sh())?.0);
        let (w, ns) = observed(&[], &mut programs)?;
        wall[1].values.push(w);
        kernel[0].values.push(ns);
        let (_, ns) = observed(&["--tracepoint-kind", "raw"], &mut raw_programs)?;
        kernel[1].values.push(ns);
        {
            let t = Tracer::start(&["/usr/sbin/execsnoop", "/usr/sbin/exitsnoop"])?;
            let b0 = t.bpf_ns();
            wall[2].values.push(time_workload(&mut sh())?.0);
            kernel[2]
                .values
                .push((t.bpf_ns() - b0) as f64 / STORM_SPAWNS as f64);
        }
        if let Some(b) = baseline {
            let (w, ns) = observed_by(b, &[], &mut ProgramRuns::new())?;
            wall[3].values.push(w);
            kernel[3].values.push(ns);
        }
    }
    // One more storm per calibration program, alone before observer's (not in the rows
    // above: it adds to every event's cost).
    let mut calib = ProgramRuns::new();
    for (name, _) in calibration() {
        observed(&["--calibrate", name], &mut calib)?;
    }
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    table(
        md,
        &format!("Spawn storm: {STORM_SPAWNS} × fork+exec+exit of /bin/true, wall time"),
        "ms",
        1e3,
        &wall,
    );
    table(
        md,
        "Spawn storm: in-kernel time per spawn (bpf_stats run_time_ns of the tracer's programs)",
        "µs",
        1e-3,
        &kernel,
    );
    per_program_table(md, &programs, &raw_programs, &calib);
    Ok(())
}

type ProgramRuns = std::collections::BTreeMap<String, super::Runs>;

/// Nanoseconds per run of a program, if it ran.
fn per_run(runs: &ProgramRuns, name: &str) -> Option<f64> {
    let r = runs.get(name)?;
    (r.count > 0).then(|| r.ns as f64 / r.count as f64)
}

/// observer-ebpf/src/calib.rs's programs (`observer agent --calibrate`) and what each
/// adds to the one it is compared with: the fixed costs on every tracepoint, each on top
/// of the one before...
const FIXED_PIECES: [(&str, &str); 4] = [
    ("calib_empty", "a program run (empty program; bpf_stats' own clock reads included)"),
    ("calib_record", "+ reserving a 152-byte ring-buffer record (and discarding it)"),
    ("calib_write", "+ writing those 152 bytes"),
    ("calib_clock", "+ the event's time (`bpf_ktime_get_boot_ns`) stamped into it: a program that records nothing of the task"),
];

/// ...then the groups of facts the exit program reads, each against the empty program.
const READ_GROUPS: [(&str, &str); 5] = [
    ("calib_ident", "exit: tgid, pid, start time, comm"),
    (
        "calib_creds",
        "exit: parent's tgid, credentials (uid, gid), user namespace",
    ),
    (
        "calib_pids",
        "exit: pid numbers and the task's own pid namespace",
    ),
    ("calib_ns", "exit: nsproxy and its seven namespaces"),
    ("calib_cgroup", "exit: css_set → cgroup → kernfs id"),
];

/// Every calibration program, fixed pieces first.
fn calibration() -> impl Iterator<Item = (&'static str, &'static str)> {
    FIXED_PIECES.into_iter().chain(READ_GROUPS)
}

/// observer's time per tracepoint (BTF and raw builds), and how it splits, from the
/// calibration programs.
fn per_program_table(
    md: &mut String,
    programs: &ProgramRuns,
    raw_programs: &ProgramRuns,
    calib: &ProgramRuns,
) {
    let spawns = (STORM_SPAWNS as usize * ROUNDS) as f64;
    let c = |name| per_run(calib, name).unwrap_or(f64::NAN);
    // The empty program, the written record, and a stamped record that reads nothing.
    let (empty, written, stamped) = (
        c(FIXED_PIECES[0].0),
        c(FIXED_PIECES[2].0),
        c(FIXED_PIECES[3].0),
    );
    let _ = writeln!(
        md,
        "\n### Where observer's in-kernel time goes\n\nOne more storm per calibration program (observer-ebpf/src/calib.rs, `observer agent --calibrate NAME`), each attached alone and before observer's programs, so it runs first on each event and meets the caches as observer's programs otherwise do. The fixed-cost ones run on all five tracepoints the storm fires; the read ones on sched_process_exit, each doing one group of the exit program's reads (same code, same reader). Each row: the program's ns per run less that of the one it builds on (the read groups: less the empty program's).\n\n| piece | ns per run |\n|---|---|"
    );
    let mut before = 0.0;
    for (name, what) in FIXED_PIECES {
        let _ = writeln!(md, "| {what} | {:.0} |", c(name) - before);
        before = c(name);
    }
    let mut reads = 0.0;
    for (name, what) in READ_GROUPS {
        let ns = c(name) - empty;
        reads += ns;
        let _ = writeln!(md, "| {what} | {ns:.0} |");
    }
    let exit = per_run(programs, "tp_btf_exit").unwrap_or(f64::NAN);
    let _ = writeln!(
        md,
        "\nA program that writes a stamped record and reads nothing of the task costs {stamped:.0} ns per run here. The exit program: that, plus its five read groups measured one at a time ({reads:.0} ns), is {:.0} ns against {exit:.0} ns measured per run — each group alone pays for cache lines the others would share (the task_struct's), so alone they overstate; exit's own bookkeeping (exit code, thread-group liveness, counters, the submit) is in the measured figure only.",
        stamped + reads
    );
    let _ = writeln!(
        md,
        "\n### observer's programs in the storm (mean of {ROUNDS} rounds; goal ≤ 2 µs for fork+exec+exit+free)\n\nThe lifecycle programs are BTF tracepoints (`tp_btf_*`: plain reads of the task the verifier checked against the kernel's types) unless the kernel refuses them; beside them the raw-tracepoint build of the same code (`sched_process_*`: every read a `bpf_probe_read_kernel`). *Fixed* is what a program that writes a record and stamps it pays before its first read (the stamped record above, measured as one program; fork stamps its record with the child's start time, which it reads anyway, so its fixed part is the written record without the clock; signal_generate drops SIGCHLD before either: its fixed part is the run alone); *reads* is the rest of the BTF program's time: the task's facts and, for exec, copying the file name and argv. Programs that did not run in the storm are left out.\n\n| tracepoint | µs per spawn (BTF) | raw tracepoint | fixed | reads |\n|---|---|---|---|---|"
    );
    // By tracepoint: tp_btf_fork and sched_process_fork are the same code.
    let mut rows: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    let tracepoint = |name: &str| match name.strip_prefix("tp_btf_") {
        Some(t) => format!("sched_process_{t}"),
        None => name.to_string(),
    };
    for (name, r) in programs.iter().filter(|(n, _)| !n.starts_with("calib_")) {
        rows.entry(tracepoint(name)).or_default().0 += r.ns as f64 / spawns / 1e3;
    }
    for (name, r) in raw_programs {
        rows.entry(tracepoint(name)).or_default().1 += r.ns as f64 / spawns / 1e3;
    }
    let (mut total, mut raw_total, mut fixed_total) = (0.0, 0.0, 0.0);
    for (name, (us, raw)) in rows.iter().filter(|(_, (a, b))| *a >= 0.005 || *b >= 0.005) {
        let fixed = match name.as_str() {
            "signal_generate" => empty,
            "sched_process_fork" => written,
            _ => stamped,
        } / 1e3;
        total += us;
        raw_total += raw;
        fixed_total += fixed;
        let _ = writeln!(
            md,
            "| {name} | {us:.2} | {raw:.2} | {fixed:.2} | {:.2} |",
            us - fixed
        );
    }
    let _ = writeln!(
        md,
        "| all | {total:.2} | {raw_total:.2} | {fixed_total:.2} | {:.2} |",
        total - fixed_total
    );
}

fn podman(args: &[&str]) -> Command {
    let mut c = Command::new("podman");
    c.args([
        "--root",
        PODMAN_ROOT,
        "--runroot",
        PODMAN_RUNROOT,
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
    ])
    .args(args);
    c
}

fn ok(c: &mut Command) -> Result<String> {
    let out = c.stderr(Stdio::piped()).output()?;
    if !out.status.success() {
        bail!("{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A busybox image for podman, imported from a rootfs built from the host's static busybox
/// (no registry here).
fn podman_image(tmp: &Path) -> Result<&'static str> {
    let image = "localhost/observer-bench-busybox:1";
    if podman(&["image", "exists", image]).status()?.success() {
        return Ok(image);
    }
    let dir = tmp.join("rootfs");
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .context("busybox-static provides /bin/busybox")?;
    for applet in ok(Command::new("/bin/busybox").arg("--list"))?.lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
        }
    }
    let tar = tmp.join("rootfs.tar");
    ok(Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    ok(podman(&["import", "--change", "ENV=PATH=/bin"])
        .arg(&tar)
        .arg(image))?;
    Ok(image)
}

fn tree(md: &mut String) -> Result<()> {
    let name = "observer-bench-top";
    let tmp = std::env::temp_dir().join(format!("observer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let image = podman_image(&tmp)?;
    let _ = podman(&["rm", "-f", "-t", "0", name]).output();
    let result = (|| -> Result<()> {
        ok(&mut podman(&[
            "run",
            "-d",
            "--network",
            "none",
            "--pids-limit",
            "4096",
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=8192:8192",
            "--name",
            name,
            image,
            "sh",
            "-c",
            "i=0; while [ $i -lt 999 ]; do sleep 3600 & i=$((i+1)); done; wait",
        ]))?;
        let agent = Agent::start_with(&[
            "--storage-root",
            PODMAN_ROOT,
            "--storage-root",
            PODMAN_RUNROOT,
        ])?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = ok(Command::new(observer())
                .args(["containers", "-o", "json", "--socket"])
                .arg(&agent.socket))?;
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            if v.as_array().is_some_and(|a| {
                a.iter()
                    .any(|c| c["name"] == name && c["processes"] == 1000)
            }) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the 1,000-process podman container did not come up");
            }
            thread::sleep(Duration::from_millis(200));
        }
        let mut rows = [
            Row::new("observer tree (text)"),
            Row::new("observer tree -o json"),
            Row::new("podman top"),
            Row::new("ps -e --forest"),
        ];
        for _ in 0..ROUNDS * 2 {
            let mut o = Command::new(observer());
            o.args(["tree", name, "--socket"]).arg(&agent.socket);
            rows[0].values.push(time_cmd(&mut o)?);
            let mut o = Command::new(observer());
            o.args(["tree", name, "-o", "json", "--socket"])
                .arg(&agent.socket);
            rows[1].values.push(time_cmd(&mut o)?);
            rows[2].values.push(time_cmd(&mut podman(&["top", name]))?);
            rows[3]
                .values
                .push(time_cmd(Command::new("ps").args(["-e", "--forest"]))?);
        }
        table(
            md,
            "Tree of a 1,000-process podman container",
            "ms",
            1e3,
            &rows,
        );
        Ok(())
    })();
    let _ = podman(&["rm", "-f", "-t", "0", name]).output();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn scrape(md: &mut String) -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    // Every process, grouped by its comm (the exporter's documented catch-all).
    let conf = std::env::temp_dir().join(format!("observer-bench-pe-{}.yml", std::process::id()));
    std::fs::write(
        &conf,
        "process_names:\n  - name: \"{{.Comm}}\"\n    cmdline:\n    - '.+'\n",
    )?;
    let mut exporter = Command::new("/usr/bin/prometheus-process-exporter")
        .args(["-web.listen-address", &addr, "-config.path"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting prometheus-process-exporter")?;
    let result = (|| -> Result<()> {
        let agent = Agent::start()?;
        let get = |a: &str, path: &str| -> Result<usize> {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(a)?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut b = Vec::new();
            s.read_to_end(&mut b)?;
            Ok(b.len())
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(&addr, "/metrics").is_err() {
            if Instant::now() > deadline {
                bail!("prometheus-process-exporter did not listen on {addr}");
            }
            thread::sleep(Duration::from_millis(100));
        }
        let mut rows = [
            Row::new("observer /metrics"),
            Row::new("process-exporter /metrics"),
        ];
        let mut bytes = [0usize; 2];
        for _ in 0..ROUNDS * 3 {
            let t = Instant::now();
            bytes[0] = get(&agent.http, "/metrics")?;
            rows[0].values.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            bytes[1] = get(&addr, "/metrics")?;
            rows[1].values.push(t.elapsed().as_secs_f64());
        }
        let procs = std::fs::read_dir("/proc")?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .count();
        table(
            md,
            &format!(
                "One scrape of the node ({procs} processes; {} and {} bytes)",
                bytes[0], bytes[1]
            ),
            "ms",
            1e3,
            &rows,
        );
        Ok(())
    })();
    let _ = exporter.kill();
    let _ = exporter.wait();
    let _ = std::fs::remove_file(&conf);
    result
}

/// The spawn storm's tables with an older observer binary beside this build and the peers
/// (`bench --baseline`), printed and written to target/bench-baseline.md.
pub fn storm_against(baseline: &Path) -> Result<PathBuf> {
    crate::setup::apt_install(&["libbpf-tools"])?;
    let date = ok(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    let mut md = format!(
        "# The spawn storm beside a baseline build\n\n`cargo xtask bench --baseline {}` on \
         {date}, kernel {}.\n",
        baseline.display(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    );
    storm(&mut md, Some(baseline))?;
    print!("{md}");
    let out = root().join("target/bench-baseline.md");
    std::fs::write(&out, md)?;
    Ok(out)
}

/// Runs every peer comparison and writes BENCHMARKS.md at the repository root.
pub fn peers() -> Result<PathBuf> {
    crate::setup::apt_install(&["libbpf-tools", "prometheus-process-exporter"])?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let date = ok(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    let mut md = format!(
        "# observer beside its peers\n\nProduced by `cargo xtask bench --peers` (as root) on \
         {date}: {cores} × {cpu}, kernel {}. Each table interleaves the contenders round by \
         round ({ROUNDS} rounds or more) on the same workload; medians, min–max, and the ratio \
         of each median to the first row's.\n",
        kernel.trim()
    );
    storm(&mut md, None)?;
    tree(&mut md)?;
    scrape(&mut md)?;
    super::scale::markdown(&mut md, &super::scale::run()?);
    md.push_str(
        "\n## Reproduce\n\n```\ncargo xtask bench --peers\n```\n\nIt installs Debian's \
         `libbpf-tools` and `prometheus-process-exporter`, runs observer's release build \
         against them, then grows the node to ~50,000 processes for the cost curve \
         (kernel.pid_max raised for the run and restored), and rewrites this file. The \
         figures are this machine's: run it on yours.\n",
    );
    let out = root().join("BENCHMARKS.md");
    std::fs::write(&out, md)?;
    Ok(out)
}
