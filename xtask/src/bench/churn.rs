//! Memory under churn: the agent's RSS while 1,000,000 short-lived processes (1 in 50 exec'ing
//! under a new executable path) and then 10,000 short-lived containers come and go. Each
//! container is what the agent sees of one: a cgroup named as docker names them
//! (`…/docker/<64 hex>`), a process attached to it that execs and exits, then the cgroup is
//! removed — the launcher or a runtime would take minutes for 10,000. The agent runs with a
//! short --container-retention so that ended containers are evicted during the run.

use std::{
    ffi::CString,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{Agent, Report};

const PROCESSES: u32 = 1_000_000;
const CONTAINERS: u32 = 10_000;
/// --container-retention of the agent, seconds.
const RETENTION_S: u64 = 10;

/// Grows tolerated between the warm measurement and the end.
const FLAT: f64 = 1.10;

pub fn churn(r: &mut Report) -> Result<()> {
    let exes = std::env::temp_dir().join(format!("observer-bench-exes-{}", std::process::id()));
    let cg = super::cpu::cgroup2_root()?.join(format!("observer-bench-{}", std::process::id()));
    let result = (|| {
        let agent = Agent::start_with(&["--container-retention", &format!("{RETENTION_S}s")])?;
        processes(r, &agent, &exes)?;
        containers(r, &agent, &cg)
    })();
    let _ = std::fs::remove_dir_all(&exes);
    remove_cgroups(&cg);
    result
}

fn processes(r: &mut Report, agent: &Agent, exes: &Path) -> Result<()> {
    std::fs::create_dir_all(exes)?;
    let n_exes = PROCESSES / 50;
    let paths: Vec<CString> = (0..n_exes)
        .map(|i| {
            let p = exes.join(format!("true-{i}"));
            std::os::unix::fs::symlink("/bin/true", &p)?;
            Ok(CString::new(p.into_os_string().into_encoded_bytes())?)
        })
        .collect::<Result<_>>()?;
    let warm = PROCESSES / 10;
    let t = Instant::now();
    spawn(&paths, 0, warm)?;
    settle(agent)?;
    let rss_warm = agent.rss_kb();
    spawn(&paths, warm, PROCESSES)?;
    settle(agent)?;
    let secs = t.elapsed().as_secs_f64();
    let rss_end = agent.rss_kb();
    let st = agent.status()?;
    let (received, dropped) = agent.event_totals()?;
    r.add(
        &format!("churn: RSS through {PROCESSES} short-lived processes"),
        format!(
            "{:.1} MB after {warm} → {:.1} MB after {PROCESSES} ({secs:.0} s, {n_exes} exe paths; \
             {} exe paths held, {} evicted; {received} events, {dropped} lost)",
            mb(rss_warm),
            mb(rss_end),
            st["retained"]["exes"],
            st["evictions"]["exes"],
        ),
        "flat (≤ +10%)",
        rss_end as f64 <= rss_warm as f64 * FLAT,
    );
    Ok(())
}

/// Forks processes `from..to` on two threads; every 50th execs its own path.
fn spawn(paths: &[CString], from: u32, to: u32) -> Result<()> {
    vfork_range(from, to, |i| {
        (i % 50 == 0).then(|| &paths[(i / 50) as usize % paths.len()])
    })
}

/// Forks processes `from..to` on two threads, each waited for: process `i` execs
/// `exe_of(i)` (argv `true`) or, when None, exits at once. A failed exec fails the run.
pub(super) fn vfork_range<'a>(
    from: u32,
    to: u32,
    exe_of: impl Fn(u32) -> Option<&'a CString> + Sync,
) -> Result<()> {
    let mid = from + (to - from) / 2;
    thread::scope(|s| {
        let a = s.spawn(|| fork_range(&exe_of, from, mid));
        let b = fork_range(&exe_of, mid, to);
        a.join()
            .map_err(|_| anyhow::anyhow!("spawner panicked"))??;
        b
    })
}

fn fork_range<'a>(exe_of: &impl Fn(u32) -> Option<&'a CString>, from: u32, to: u32) -> Result<()> {
    let argv0 = c"true";
    for i in from..to {
        let exe = exe_of(i);
        // SAFETY: vfork's child shares our memory until it execs or exits: it only calls
        // execv and _exit on memory prepared before (vfork, not fork: 1,000,000 page-table
        // copies of this process would take most of the benchmark's time).
        #[allow(deprecated)]
        let pid = unsafe { libc::vfork() };
        match pid {
            -1 => bail!("fork: {}", std::io::Error::last_os_error()),
            0 => unsafe {
                if let Some(p) = exe {
                    let argv = [argv0.as_ptr(), std::ptr::null()];
                    libc::execv(p.as_ptr(), argv.as_ptr());
                    libc::_exit(127)
                }
                libc::_exit(0)
            },
            _ => {
                let mut status = 0;
                unsafe { libc::waitpid(pid, &mut status, 0) };
                if status != 0 {
                    bail!("{exe:?} exited with status {status}");
                }
            }
        }
    }
    Ok(())
}

/// Waits until the agent has taken every event the kernel wrote (or 30 s).
fn settle(agent: &Agent) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (u64::MAX, 0);
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(500));
        let now = agent.event_totals()?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(())
}

fn containers(r: &mut Report, agent: &Agent, cg: &Path) -> Result<()> {
    let parent = cg.join("docker");
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let warm = CONTAINERS / 10;
    let t = Instant::now();
    for i in 0..warm {
        container(&parent, i)?;
    }
    settle(agent)?;
    let rss_warm = agent.rss_kb();
    for i in warm..CONTAINERS {
        container(&parent, i)?;
    }
    settle(agent)?;
    let secs = t.elapsed().as_secs_f64();
    let rss_peak = agent.rss_kb();
    // Retention counts from the collection pass (every 5 s) that first sees a container
    // ended; evicted at the first pass after it.
    let deadline = Instant::now() + Duration::from_secs(RETENTION_S + 30);
    let mut st = agent.status()?;
    let evicted = loop {
        let evicted = st["evictions"]["containers"].as_u64().unwrap_or(0);
        if evicted >= CONTAINERS as u64 || Instant::now() > deadline {
            break evicted;
        }
        thread::sleep(Duration::from_secs(1));
        st = agent.status()?;
    };
    thread::sleep(Duration::from_secs(1));
    let rss_end = agent.rss_kb();
    r.add(
        &format!("churn: RSS through {CONTAINERS} short-lived containers"),
        format!(
            "{:.1} MB after {warm} → {:.1} MB after {CONTAINERS} ({secs:.0} s), {:.1} MB after \
             retention; {evicted} evicted, {} held",
            mb(rss_warm),
            mb(rss_peak),
            mb(rss_end),
            st["retained"]["containers"],
        ),
        "flat (≤ +10%), all evicted",
        rss_end as f64 <= rss_warm as f64 * FLAT && evicted >= CONTAINERS as u64,
    );
    Ok(())
}

/// One short-lived container: a cgroup, a process attached to it that execs /bin/true, then
/// the cgroup removed.
fn container(parent: &Path, i: u32) -> Result<()> {
    let dir = parent.join(format!(
        "{:016x}{:048x}",
        0x0b5e_7e00_0000_0000u64 | i as u64,
        i
    ));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let procs = CString::new(
        dir.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )?;
    let tru = c"/bin/true";
    // SAFETY: as in fork_range; the child writes its own pid into the cgroup first.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => bail!("fork: {}", std::io::Error::last_os_error()),
        0 => unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(2);
            }
            libc::close(fd);
            let argv = [tru.as_ptr(), std::ptr::null()];
            libc::execv(tru.as_ptr(), argv.as_ptr());
            libc::_exit(3)
        },
        _ => {
            let mut status = 0;
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if status != 0 {
                bail!("could not attach a process to {}", dir.display());
            }
        }
    }
    std::fs::remove_dir(&dir).with_context(|| format!("removing {}", dir.display()))
}

fn remove_cgroups(cg: &Path) {
    if let Ok(rd) = std::fs::read_dir(cg.join("docker")) {
        for e in rd.flatten().filter(|e| e.path().is_dir()) {
            let _ = std::fs::remove_dir(e.path());
        }
    }
    let _ = std::fs::remove_dir(cg.join("docker"));
    let _ = std::fs::remove_dir(cg);
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}
