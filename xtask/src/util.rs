//! Small process helpers shared by the xtask commands.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// Runs `cmd`, echoing it, and fails with its exit status.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", show(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout when it succeeds.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

const PID_MAX: &str = "/proc/sys/kernel/pid_max";

/// kernel.pid_max raised or lowered for a run, restored on drop.
pub struct PidMax {
    old: String,
    pub now: u64,
}

impl PidMax {
    /// Raises pid_max to at least `to` (never lowers it).
    pub fn raise(to: u64) -> Result<PidMax> {
        let old = std::fs::read_to_string(PID_MAX)?.trim().to_string();
        let cur: u64 = old.parse().context("kernel.pid_max")?;
        let now = cur.max(to);
        std::fs::write(PID_MAX, now.to_string()).context("raising kernel.pid_max")?;
        Ok(PidMax { old, now })
    }

    /// Lowers pid_max to `want` (never raises it; never below 4 times the tasks running).
    pub fn lower(want: u64) -> Result<PidMax> {
        let old = std::fs::read_to_string(PID_MAX)?.trim().to_string();
        let cur: u64 = old.parse().context("kernel.pid_max")?;
        let tasks: u64 = std::fs::read_dir("/proc")?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .map(|e| std::fs::read_dir(e.path().join("task")).map_or(1, |t| t.count() as u64))
            .sum();
        let now = want.max(tasks * 4).min(cur);
        std::fs::write(PID_MAX, now.to_string()).context("lowering kernel.pid_max")?;
        Ok(PidMax { old, now })
    }
}

impl Drop for PidMax {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(PID_MAX, &self.old) {
            eprintln!(
                "xtask: could not restore kernel.pid_max to {}: {e}",
                self.old
            );
        }
    }
}
