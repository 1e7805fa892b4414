//! The agent's CPU time as its own cgroup counts it. /proc/<pid>/stat gives utime + stime
//! in clock ticks (10 ms here): the storm's agent CPU is ~15 ms a pair at the goal of 1 µs
//! an event, so a tick either way moved the figure by a third between runs of one build.
//! A cgroup2 group's `cpu.stat` `usage_usec` counts every thread's run time in
//! microseconds, threads that ended included, and is there whether or not the cpu
//! controller is enabled.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// The cgroup2 mount: /sys/fs/cgroup on pure v2, /sys/fs/cgroup/unified on hybrid.
pub(super) fn cgroup2_root() -> Result<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo")?;
    mi.lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|t| t.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .context("no cgroup2 mount")
}

/// A cgroup2 group the benchmark made for one process (the agent), which it moved there;
/// moved back to where it was, and the group removed, when dropped.
pub(super) struct CpuGroup {
    dir: PathBuf,
    /// The process moved in (read by tests only: the drop moves what the group holds).
    #[cfg_attr(not(test), allow(dead_code))]
    pid: u32,
    /// The process's cgroup2 group before (a path under the mount).
    home: PathBuf,
}

impl CpuGroup {
    /// Moves `pid` (all its threads) into a new group of its own.
    pub(super) fn adopt(pid: u32) -> Result<CpuGroup> {
        let root = cgroup2_root()?;
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        // The v2 line is `0::/path`.
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .context("no cgroup2 line in /proc/<pid>/cgroup")?;
        let home = root.join(rel.trim_start_matches('/'));
        let dir = root.join(format!("observer-bench-cpu-{}-{pid}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let g = CpuGroup { dir, pid, home };
        std::fs::write(g.dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("move {pid} into {}", g.dir.display()))?;
        Ok(g)
    }

    /// CPU time of every thread that ran in the group, in seconds.
    pub(super) fn seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
        let usec: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))?
            .trim()
            .parse()
            .ok()?;
        Some(usec as f64 / 1e6)
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        // What is still in the group (the agent, if it runs still, and what it started) goes
        // back where the agent was. Not `pid` blindly: the bench drops this after the agent
        // was reaped, when its pid may name another process by now, which is not the
        // bench's to move.
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for p in procs.split_whitespace() {
            let _ = std::fs::write(self.home.join("cgroup.procs"), p);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_moved_into_its_own_group_has_its_cpu_counted_there_and_the_group_removed() {
        use std::io::Write;
        if !nix_root() || cgroup2_root().is_err() {
            return;
        }
        // Waits for a line, counts to 200,000 (~0.1 s of a core), waits for the end.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "read _; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; read _",
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let g = CpuGroup::adopt(child.id()).unwrap();
        let dir = g.dir.clone();
        let t0 = g.seconds().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while g.seconds().unwrap() - t0 < 0.05 {
            assert!(
                std::time::Instant::now() < until,
                "no CPU counted in the group"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(g);
        assert!(!dir.exists(), "{} removed", dir.display());
        drop(stdin);
        child.wait().unwrap();
    }

    /// The agent was reaped before the group drops, and its pid is another process's by
    /// now: that process stays where it is.
    #[test]
    fn a_reused_pid_is_not_moved_when_the_group_drops() {
        if !nix_root() || cgroup2_root().is_err() {
            return;
        }
        let cgroup = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let mut agent = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let mut g = CpuGroup::adopt(agent.id()).unwrap();
        let dir = g.dir.clone();
        agent.kill().unwrap();
        agent.wait().unwrap();
        // Another process, as if it had the agent's pid now, and the agent's home elsewhere
        // than that process's group.
        let mut other = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let before = cgroup(other.id());
        let home = cgroup2_root()
            .unwrap()
            .join(format!("observer-bench-cpu-home-{}", std::process::id()));
        std::fs::create_dir(&home).unwrap();
        g.pid = other.id();
        g.home = home.clone();
        drop(g);
        let after = cgroup(other.id());
        other.kill().unwrap();
        other.wait().unwrap();
        let _ = std::fs::remove_dir(&home);
        assert_eq!(after, before, "a process the bench did not start was moved");
        assert!(!dir.exists(), "{} removed", dir.display());
    }

    fn nix_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }
}
