//! `cargo xtask hygiene-check`, also a step of `cargo xtask test`: proves on this machine
//! that the hygiene stops only what its run started. While a short run leaks one thing of
//! each kind of its own (a daemon, a launcher container, a cgroup with a process in it, a
//! temporary file), things of others are started from outside the run: an unrelated daemon
//! (setsid and a double fork: re-parented to PID 1 or the nearest subreaper, never the
//! run's runner), a launcher container with a looping command, and a cgroup with a
//! process of its own. The hygiene must find and remove exactly the run's leaks, and the
//! others must survive it untouched: same processes alive, the container still running
//! and starting new `sleep`s, the cgroup still there with its process. Afterwards the
//! check stops exactly what it started, also when it fails.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use super::{host, Leak, Run};
use crate::util::output;

/// The run: its own daemon, launcher container, cgroup with a process, temporary file;
/// the pids go to $OUT for the check to compare with the hygiene's findings.
const OWN_RUN: &str = r#"set -e
setsid sleep 100000 </dev/null >/dev/null 2>&1 &
echo $! > "$OUT/daemon"
"$OBS" run -d --name "$NAME" -- sh -c 'while true; do sleep 1; done' >/dev/null
mkdir "$CG"
setsid sh -c 'echo $$ > "$CG/cgroup.procs" && exec sleep 100000' </dev/null >/dev/null 2>&1 &
echo $! > "$OUT/cgroup-proc"
touch "$TMPDIR/observer-hygiene-own"
sleep 2
"#;

/// Runs the check with the given observer binary (for the launcher containers).
pub fn check(observer: &Path) -> Result<()> {
    eprintln!("hygiene-check: a run leaks its own things while others start theirs");
    let tag = std::process::id();
    let cg_root = host::cgroup_root_for_tests().context("no cgroup hierarchy is mounted")?;
    let out = std::env::temp_dir().join(format!("xtask-hygiene-check.{tag}"));
    std::fs::create_dir(&out).with_context(|| format!("creating {}", out.display()))?;
    let own = Own {
        name: format!("xtask-hygiene-own-{tag}"),
        cgroup: cg_root.join(format!("xtask-hygiene-own-{tag}")),
        out,
    };
    let result = check_with(observer, &own, &cg_root, tag);
    own.clean(observer);
    result
}

fn check_with(observer: &Path, own: &Own, cg_root: &Path, tag: u32) -> Result<()> {
    let before = super::before();
    let script = own.out.join("run.sh");
    std::fs::write(&script, OWN_RUN)?;
    let mut cmd = Command::new("sh");
    cmd.arg(&script)
        .env("OBS", observer)
        .env("OUT", &own.out)
        .env("NAME", &own.name)
        .env("CG", &own.cgroup);
    let mut run = Run::start(&cmd)?;
    // Started while the run goes on, from outside it.
    let others = Others::start(observer, cg_root, tag);
    let ran = run.wait();
    let others = others?;
    let inside = host::descendants(run.root());
    ensure!(
        others
            .processes()
            .iter()
            .all(|(_, p)| !inside.contains(&p.pid)),
        "the check's own setup is wrong: the other daemon or container is below the run's runner"
    );
    if let Err(e) = ran {
        // However the run ended (Ctrl-C), the hygiene runs, as in the test command.
        if let Err(leaks) = super::teardown(&before, &mut run, observer, false).into_result() {
            eprintln!("hygiene-check: {leaks:#}");
        }
        return Err(e);
    }
    // The run's processes as the run left them (identities to clean up by, if need be).
    own.note_pids()?;
    let tmp_file = run.tmp.join("observer-hygiene-own");
    let report = super::teardown(&before, &mut run, observer, false);
    drop(run);
    let after = host::now_ticks();
    for n in &report.notes {
        eprintln!("hygiene-check: note: {n}");
    }
    let mut want = vec![
        Leak::Container(own.name.clone()),
        Leak::Cgroup(own.cgroup.clone()),
        Leak::Tmp(tmp_file),
    ];
    for f in ["daemon", "cgroup-proc"] {
        // Compared by pid: the command line is the hygiene's to report.
        want.push(Leak::Process(own.pid(f)?.pid, "sleep 100000".into()));
    }
    let mut problems = compare(&want, &report.leaks);
    problems.extend(own.still_there());
    problems.extend(others.untouched(after));
    drop(others);
    if !problems.is_empty() {
        bail!("the hygiene check failed:\n  {}", problems.join("\n  "));
    }
    eprintln!(
        "hygiene-check: the run's {} leaks were found and removed; the others' daemon, launcher container and cgroup were left running",
        want.len()
    );
    Ok(())
}

/// What is missing from the hygiene's findings, and what it found that it should not have.
fn compare(want: &[Leak], got: &[Leak]) -> Vec<String> {
    let same = |a: &Leak, b: &Leak| match (a, b) {
        (Leak::Process(p, _), Leak::Process(q, _)) => p == q,
        _ => a == b,
    };
    let mut problems: Vec<String> = want
        .iter()
        .filter(|w| !got.iter().any(|g| same(w, g)))
        .map(|w| format!("the run's leak was not found: {w}"))
        .collect();
    problems.extend(
        got.iter()
            .filter(|g| !want.iter().any(|w| same(w, g)))
            .map(|g| format!("the hygiene reported what the run did not leak: {g}")),
    );
    problems
}

/// The run's own things (the hygiene should remove them; cleaned here if it did not).
struct Own {
    name: String,
    cgroup: PathBuf,
    /// Where the run writes its pids (outside its TMPDIR, which the hygiene judges).
    out: PathBuf,
}

impl Own {
    /// A pid the run wrote, with its start time once `note_pids` has noted it.
    fn pid(&self, file: &str) -> Result<Started> {
        let p = self.out.join(file);
        let s = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let mut f = s.split_whitespace();
        let pid = f.next().and_then(|p| p.parse().ok());
        let pid = pid.with_context(|| format!("a pid in {}", p.display()))?;
        let start = f.next().and_then(|t| t.parse().ok()).unwrap_or(0);
        Ok(Started { pid, start })
    }

    /// Adds each pid's start time to its file.
    fn note_pids(&self) -> Result<()> {
        for f in ["daemon", "cgroup-proc"] {
            let pid = self.pid(f)?.pid;
            let s = Started::now(pid).with_context(|| format!("the run's process {pid} ended"))?;
            std::fs::write(self.out.join(f), format!("{} {}", s.pid, s.start))?;
        }
        Ok(())
    }

    /// What of the run's is still there after the hygiene.
    fn still_there(&self) -> Vec<String> {
        let mut left = Vec::new();
        for f in ["daemon", "cgroup-proc"] {
            if let Ok(p) = self.pid(f) {
                if p.alive() {
                    left.push(format!("the run's process {} is still alive", p.pid));
                }
            }
        }
        if Path::new(super::LAUNCHER_STATE).join(&self.name).exists() {
            left.push(format!(
                "the run's container `{}` is still there",
                self.name
            ));
        }
        if self.cgroup.exists() {
            left.push(format!(
                "the run's cgroup {} is still there",
                self.cgroup.display()
            ));
        }
        left
    }

    /// Removes what of the run's the hygiene left (only when it failed), and the pid files.
    fn clean(&self, observer: &Path) {
        for f in ["daemon", "cgroup-proc"] {
            // Without a start time (the run failed early), only the very command it ran.
            let p = self.pid(f).ok();
            if let Some(p) = p.filter(|p| p.start != 0 || host::cmdline(p.pid) == "sleep 100000") {
                p.kill_group();
            }
        }
        if Path::new(super::LAUNCHER_STATE).join(&self.name).exists() {
            let _ = Command::new(observer)
                .args(["rm", "-f", &self.name])
                .output();
        }
        host::remove_cgroup(&self.cgroup);
        let _ = std::fs::remove_dir_all(&self.out);
    }
}

/// Another's things, started outside the run.
struct Others {
    observer: PathBuf,
    daemon: Started,
    container: String,
    container_shim: Started,
    container_init: Started,
    cgroup: PathBuf,
    cgroup_proc: Started,
}

impl Others {
    fn start(observer: &Path, cg_root: &Path, tag: u32) -> Result<Others> {
        let mut o = Others {
            observer: observer.to_path_buf(),
            daemon: Started::NONE,
            container: format!("xtask-hygiene-other-{tag}"),
            container_shim: Started::NONE,
            container_init: Started::NONE,
            cgroup: cg_root.join(format!("xtask-hygiene-other-{tag}")),
            cgroup_proc: Started::NONE,
        };
        // On failure, dropping `o` stops what was started so far.
        o.start_all()?;
        Ok(o)
    }

    fn start_all(&mut self) -> Result<()> {
        self.daemon = daemon("while :; do sleep 1; done", &[])?;
        let started = Command::new(&self.observer)
            .args(["run", "-d", "--name", &self.container, "--"])
            .args(["sh", "-c", "while true; do sleep 1; done"])
            .output()
            .context("starting the other launcher container")?;
        ensure!(started.status.success(), "observer run: {started:?}");
        let (shim, init) = container_pids(&self.container)
            .context("the other launcher container has no shim or PID 1")?;
        self.container_shim = Started::now(shim).context("the other container's shim ended")?;
        self.container_init = Started::now(init).context("the other container ended")?;
        std::fs::create_dir(&self.cgroup)
            .with_context(|| format!("creating {}", self.cgroup.display()))?;
        let join = r#"echo $$ > "$CG/cgroup.procs" && exec sleep 100000"#;
        self.cgroup_proc = daemon(join, &[("CG", &self.cgroup)])?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !host::cgroup_procs(&self.cgroup).contains(&self.cgroup_proc.pid) {
            ensure!(
                Instant::now() < deadline,
                "the other process did not join {}",
                self.cgroup.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The other processes, as (what, process).
    fn processes(&self) -> [(&'static str, Started); 4] {
        [
            ("daemon", self.daemon),
            ("container's shim", self.container_shim),
            ("container's PID 1", self.container_init),
            ("cgroup's process", self.cgroup_proc),
        ]
    }

    /// What the hygiene did to them, if anything; `after` is when it had finished.
    fn untouched(&self, after: u64) -> Vec<String> {
        let mut harm: Vec<String> = self
            .processes()
            .iter()
            .filter(|(_, p)| !p.alive())
            .map(|(what, p)| format!("the other {what} ({}) is gone", p.pid))
            .collect();
        let pids = (self.container_shim.pid, self.container_init.pid);
        if container_pids(&self.container) != Some(pids) {
            harm.push(format!(
                "the other container `{}` is not running as before",
                self.container
            ));
        }
        if !host::cgroup_procs(&self.cgroup).contains(&self.cgroup_proc.pid) {
            harm.push(format!(
                "the other cgroup {} lost its process",
                self.cgroup.display()
            ));
        }
        // Its loop goes on: a `sleep` started after the hygiene, below its PID 1.
        let deadline = Instant::now() + Duration::from_secs(5);
        let new_sleep = || {
            let procs = host::processes();
            host::descendants_in(&procs, self.container_init.pid)
                .iter()
                .any(|p| procs[p].starttime > after && host::cmdline(*p).starts_with("sleep"))
        };
        while !new_sleep() {
            if Instant::now() > deadline {
                harm.push("the other container started no new `sleep` after the hygiene".into());
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        harm
    }
}

impl Drop for Others {
    /// Stops exactly what `start` started.
    fn drop(&mut self) {
        for p in [self.daemon, self.cgroup_proc] {
            p.kill_group();
        }
        if Path::new(super::LAUNCHER_STATE)
            .join(&self.container)
            .exists()
        {
            let _ = Command::new(&self.observer)
                .args(["rm", "-f", &self.container])
                .output();
        }
        host::remove_cgroup(&self.cgroup);
    }
}

/// A process, known by its pid and its start time (so a reused pid is not taken for it).
#[derive(Clone, Copy, Debug)]
struct Started {
    pid: u32,
    /// Clock ticks after boot; 0 when not known.
    start: u64,
}

impl Started {
    const NONE: Started = Started { pid: 0, start: 0 };

    fn now(pid: u32) -> Option<Started> {
        let p = *host::processes().get(&pid)?;
        (!p.zombie).then_some(Started {
            pid,
            start: p.starttime,
        })
    }

    fn alive(&self) -> bool {
        self.pid != 0
            && host::processes()
                .get(&self.pid)
                .is_some_and(|p| !p.zombie && (self.start == 0 || p.starttime == self.start))
    }

    /// SIGKILL to the session a daemon started (it and its children: setsid made it the
    /// group's leader), if it is still that process.
    fn kill_group(&self) {
        if self.alive() {
            // SAFETY: kill(2) on the process group of a daemon this check started.
            unsafe { libc::kill(-(self.pid as i32), libc::SIGKILL) };
        }
    }
}

/// Starts `script` as a daemon: a new session, and a double fork (the intermediate shell
/// exits at once, so it is re-parented above xtask). Returns its pid.
fn daemon(script: &str, env: &[(&str, &Path)]) -> Result<Started> {
    let mut c = Command::new("sh");
    c.args([
        "-c",
        r#"setsid sh -c "$1" </dev/null >/dev/null 2>&1 & echo $!"#,
        "sh",
        script,
    ]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = output(&mut c).context("starting a daemon")?;
    let pid = out.trim().parse();
    let pid = pid.with_context(|| format!("the daemon's pid: {out:?}"))?;
    Started::now(pid).with_context(|| format!("the daemon {pid} ended at once"))
}

/// The shim and PID 1 of a running launcher container, from its state file.
fn container_pids(name: &str) -> Option<(u32, u32)> {
    let p = Path::new(super::LAUNCHER_STATE)
        .join(name)
        .join("state.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    let pid = |k: &str| v[k].as_u64().and_then(|p| u32::try_from(p).ok());
    (v["status"] == "running").then_some((pid("shim_pid")?, pid("pid")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_names_missing_and_unexpected_leaks() {
        let want = [
            Leak::Process(7, "sleep".into()),
            Leak::Container("a".into()),
        ];
        let got = [
            Leak::Process(7, "other text".into()),
            Leak::Cgroup("/c".into()),
        ];
        let p = compare(&want, &got);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("not found: launcher container `a`"), "{p:?}");
        assert!(p[1].contains("did not leak: cgroup /c"), "{p:?}");
        assert!(compare(&want, &want).is_empty());
    }
}
