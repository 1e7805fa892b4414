//! What `observer agent --bpf-stats on` costs: the same storm under an agent without and
//! with the kernel's BPF statistics held on, interleaved round by round (the order
//! alternating), and the in-kernel time per spawn the statistics report.

use std::{thread, time::Duration};

use anyhow::Result;

use super::{median, time_workload, Agent, Report, STORM_SPAWNS};

const ROUNDS: usize = 7;

/// One storm under an agent started with `extra`: (wall s, workload CPU s, in-kernel ns of
/// fork+exec+exit+free as the agent's status reports them).
fn round(extra: &[&str]) -> Result<(f64, f64, u64)> {
    let agent = Agent::start_with(extra)?;
    thread::sleep(Duration::from_secs(2));
    let kernel_ns = |a: &Agent| -> Result<u64> {
        let st = a.status()?;
        Ok(st["events"]
            .as_array()
            .map(|es| {
                es.iter()
                    .filter(|e| {
                        ["fork", "exec", "exit", "free"]
                            .iter()
                            .any(|k| e["type"] == *k)
                    })
                    .map(|e| e["run_ns"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0))
    };
    let ns0 = kernel_ns(&agent)?;
    let (wall, cpu) = time_workload(&mut super::storm_cmd())?;
    Ok((wall, cpu, kernel_ns(&agent)? - ns0))
}

pub(super) fn bpf_stats(r: &mut Report) -> Result<()> {
    let (mut wall, mut cpu, mut per_spawn) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let (off, on) = if i % 2 == 0 {
            let off = round(&[])?;
            (off, round(&["--bpf-stats", "on"])?)
        } else {
            let on = round(&["--bpf-stats", "on"])?;
            (round(&[])?, on)
        };
        wall.push(on.0 / off.0);
        cpu.push(on.1 / off.1);
        per_spawn.push(on.2 as f64 / f64::from(STORM_SPAWNS) / 1e3);
    }
    let (w, c) = ((median(wall) - 1.0) * 100.0, (median(cpu) - 1.0) * 100.0);
    let us = median(per_spawn);
    r.add(
        "--bpf-stats on: storm slowdown against off (wall; workload CPU)",
        format!("{w:+.1}%; {c:+.1}% (median of {ROUNDS} interleaved pairs)"),
        "≤ 1% to be on by default",
        c <= 1.0,
    );
    r.add(
        "--bpf-stats on: in-kernel time per spawn it reports",
        format!("{us:.2} µs (fork+exec+exit+free)"),
        "≤ 2 µs",
        us <= 2.0,
    );
    Ok(())
}
