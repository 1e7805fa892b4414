//! Small process helpers shared by the xtask commands.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
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

/// The CPU time (user + system) process `pid` has used, from /proc/<pid>/stat: zero when it
/// cannot be read. An exited child's stays readable until it is reaped.
pub fn process_cpu(pid: u32) -> Duration {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_cpu(&s))
        .unwrap_or_default()
}

/// utime + stime of a /proc/<pid>/stat line (fields 14 and 15, counted after the
/// parenthesised command name, which may hold spaces and parentheses).
fn stat_cpu(stat: &str) -> Option<Duration> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut f = rest.split_whitespace().skip(11);
    let ticks: u64 = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_cpu_is_its_user_and_system_time() {
        // SAFETY: sysconf reads a constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let line = format!(
            "4242 (qemu-system-x86 (a) b) S 1 2 3 0 -1 4194560 9 0 0 0 {} {} 0 0 20 0 3 0",
            3 * hz,
            hz / 2
        );
        assert_eq!(stat_cpu(&line), Some(Duration::from_millis(3500)));
        assert_eq!(stat_cpu("garbage"), None);
        assert!(process_cpu(std::process::id()) <= process_cpu(std::process::id()));
    }
}
