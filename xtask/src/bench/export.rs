//! What exporting costs, and that the file sink loses nothing at scale:
//! - cost: the storm under an agent that exports nothing and under one that exports every
//!   event and history entry to both sinks at once — a rotated JSON-lines file and OTLP/HTTP
//!   to a receiver in this process that takes every request and answers 200 (a collector
//!   that keeps up) — interleaved pair by pair, the order alternating;
//! - a million: 1,000,000 short-lived processes, each exec'ing, through a file sink rotated
//!   every 64 MiB: the exec lines across the file and its rotated copies equal the spawns.

use std::{
    ffi::CString,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{median, time_workload, Agent, Report};

const PAIRS: usize = 7;
const MILLION: u32 = 1_000_000;

/// A directory of the benchmark's own under /var/tmp, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(what: &str) -> Result<Dir> {
        let d = PathBuf::from(format!(
            "/var/tmp/observer-bench-{what}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(Dir(d))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An OTLP/HTTP receiver that reads each request whole and answers 200 with an empty
/// `ExportLogsServiceResponse` (the empty message: no partial rejection). Its thread ends
/// with the process.
fn discarding_receiver() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    thread::spawn(move || {
        for c in l.incoming().flatten() {
            thread::spawn(move || {
                let _ = answer_all(c);
            });
        }
    });
    Ok(port)
}

/// Requests of one keep-alive connection: headers, then `content-length` bytes of body.
/// (HTTP/1.1 as the agent's client sends it; no chunked bodies: it always sets a length.)
fn answer_all(c: TcpStream) -> std::io::Result<()> {
    let mut w = c.try_clone()?;
    let mut r = BufReader::new(c);
    loop {
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        std::io::copy(&mut (&mut r).take(len as u64), &mut std::io::sink())?;
        w.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        )?;
    }
}

/// One storm under an agent started with `extra`: (wall s, workload CPU s, agent CPU s,
/// events received).
fn round(extra: &[&str]) -> Result<(f64, f64, f64, u64)> {
    let agent = Agent::start_with(extra)?;
    thread::sleep(Duration::from_secs(2));
    let (e0, _) = agent.event_totals()?;
    let cpu0 = agent.cpu_s();
    let (wall, cpu) = time_workload(&mut super::storm_cmd())?;
    // The OTLP sink holds a batch up to a second (otlp/mod.rs, DELAY): the agent's CPU
    // is read once the storm's last batch was sent, so that its records are counted.
    thread::sleep(Duration::from_millis(1500));
    let (e1, lost) = agent.event_totals()?;
    if lost > 0 {
        bail!("the agent lost {lost} events in an export round ({extra:?})");
    }
    Ok((wall, cpu, agent.cpu_s() - cpu0, e1 - e0))
}

/// `sent` and `dropped` of each sink in the agent's status, as `sink sent/dropped`.
fn sink_counts(agent: &Agent) -> Result<Vec<(String, u64, u64)>> {
    let st = agent.status()?;
    Ok(st["export"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["sink"].as_str().unwrap_or("?").to_string(),
                        s["sent"].as_u64().unwrap_or(0),
                        s["dropped"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

fn cost(r: &mut Report) -> Result<()> {
    let port = discarding_receiver()?;
    let dir = Dir::new("export")?;
    let file = dir.0.join("events.jsonl");
    let endpoint = format!("http://127.0.0.1:{port}");
    let both = [
        "--export-file",
        file.to_str().context("path")?,
        "--otlp-endpoint",
        &endpoint,
    ];
    let (mut wall, mut cpu, mut per_off, mut per_on) = (vec![], vec![], vec![], vec![]);
    for i in 0..PAIRS {
        let (off, on) = if i % 2 == 0 {
            let off = round(&[])?;
            (off, round(&both)?)
        } else {
            let on = round(&both)?;
            (round(&[])?, on)
        };
        wall.push(on.0 / off.0);
        cpu.push(on.1 / off.1);
        per_off.push(off.2 / off.3.max(1) as f64 * 1e6);
        per_on.push(on.2 / on.3.max(1) as f64 * 1e6);
        for f in std::fs::read_dir(&dir.0)?.flatten() {
            let _ = std::fs::remove_file(f.path());
        }
    }
    let (w, c) = ((median(wall) - 1.0) * 100.0, (median(cpu) - 1.0) * 100.0);
    r.add(
        "export: storm with the file and OTLP sinks against none (wall; workload CPU)",
        format!("{w:+.1}%; {c:+.1}% (median of {PAIRS} interleaved pairs)"),
        "≤ 2%",
        w <= 2.0 && c <= 2.0,
    );
    let (a, b) = (median(per_off), median(per_on));
    r.add(
        "export: agent CPU per event, without → with both sinks",
        format!("{a:.2} → {b:.2} µs"),
        "≤ 1 µs",
        b <= 1.0,
    );
    Ok(())
}

/// Exec lines naming `exe` in `file` and its rotated copies `file.1`, `file.2`, …
fn exec_lines(file: &Path, exe: &str) -> Result<(u64, usize)> {
    let needle = format!("\"filename\":\"{exe}\"");
    let (mut n, mut files) = (0, 0);
    for i in 0.. {
        let p = if i == 0 {
            file.to_path_buf()
        } else {
            PathBuf::from(format!("{}.{i}", file.display()))
        };
        let Ok(f) = std::fs::File::open(&p) else {
            if i == 0 {
                continue;
            }
            break;
        };
        files += 1;
        for l in BufReader::new(f).lines() {
            let l = l?;
            n += u64::from(l.contains("\"type\":\"exec\"") && l.contains(&needle));
        }
    }
    Ok((n, files))
}

fn million(r: &mut Report) -> Result<()> {
    let dir = Dir::new("export-million")?;
    // busybox is static (no loader to run): a name of our own to count by.
    let exe = dir.0.join("true");
    std::os::unix::fs::symlink("/bin/busybox", &exe)?;
    let file = dir.0.join("events.jsonl");
    let agent = Agent::start_with(&[
        "--export-file",
        file.to_str().context("path")?,
        "--export-file-max",
        "64M",
        "--export-file-keep",
        "100",
        "--export-types",
        "exec",
        "--ringbuf-size",
        "64M",
    ])?;
    thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let c = CString::new(exe.to_str().context("path")?)?;
    super::churn::vfork_range(0, MILLION, |_| Some(&c))?;
    let secs = t.elapsed().as_secs_f64();
    // Until the sink has written everything it took.
    let mut last = Vec::new();
    for _ in 0..120 {
        thread::sleep(Duration::from_millis(500));
        let now = sink_counts(&agent)?;
        if now == last {
            break;
        }
        last = now;
    }
    let (_, lost) = agent.event_totals()?;
    let (lines, files) = exec_lines(&file, exe.to_str().context("path")?)?;
    let dropped: u64 = last.iter().map(|s| s.2).sum();
    r.add(
        "export: file sink through 1,000,000 exec'ing processes, rotated at 64 MiB",
        format!(
            "{lines} exec lines of {MILLION} in {files} files ({secs:.0} s; {dropped} dropped, \
             {lost} events lost)"
        ),
        "every spawn's line",
        lines == u64::from(MILLION),
    );
    Ok(())
}

/// The cost pairs (`--only export`).
pub(super) fn export(r: &mut Report) -> Result<()> {
    cost(r)
}

/// The million processes through a rotated file sink (`--only export-million`, ~9 minutes).
pub(super) fn export_million(r: &mut Report) -> Result<()> {
    million(r)
}
