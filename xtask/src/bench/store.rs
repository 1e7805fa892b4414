//! The history store's disk writes: bytes its writer thread writes (`wchar` of the
//! `history-store` thread, so every page a commit copies counts) per ended process, for a
//! burst of short-lived processes in a bare container (a pid namespace of its own).

use std::{process::Command, thread, time::Duration};

use anyhow::{bail, Context, Result};

use super::{Agent, Report};

const ENDED: u32 = 4000;

/// Bytes the agent's history-store thread has written.
fn writer_wchar(pid: u32) -> Result<u64> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == "history-store" {
            let io = std::fs::read_to_string(t.path().join("io"))?;
            return io
                .lines()
                .find_map(|l| l.strip_prefix("wchar: "))
                .context("wchar in /proc/<pid>/task/<tid>/io")?
                .trim()
                .parse()
                .context("wchar");
        }
    }
    bail!("no history-store thread in the agent")
}

pub(super) fn store(r: &mut Report) -> Result<()> {
    let agent = Agent::start()?;
    thread::sleep(Duration::from_secs(2));
    let w0 = writer_wchar(agent.pid())?;
    let script = format!("i=0; while [ $i -lt {ENDED} ]; do sh -c 'exit 3'; i=$((i+1)); done");
    let st = Command::new("unshare")
        .args(["--pid", "--fork", "sh", "-c", &script])
        .status()?;
    if !st.success() {
        bail!("the bare container's loop failed: {st}");
    }
    // Two commits' time: everything queued is on disk.
    thread::sleep(Duration::from_secs(3));
    let written = writer_wchar(agent.pid())? - w0;
    let status: serde_json::Value = serde_json::from_str(&agent.get("/v1/status")?)?;
    let entries = status["history_store"]["written"].as_u64().unwrap_or(0);
    let per = written as f64 / f64::from(ENDED);
    r.add(
        "store: bytes written per ended process (burst)",
        format!("{per:.0} B ({written} B for {ENDED} processes, {entries} entries)"),
        "≤ 200 B",
        per <= 200.0 && entries >= u64::from(ENDED),
    );
    Ok(())
}
