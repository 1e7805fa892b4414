//! The launcher's cgroups: one per container under `<hierarchy>/observer/<id>` in cgroup2 and
//! in the v1 memory, pids, cpu and cpuacct hierarchies (hybrid hosts have both), limits
//! written and read back, processes joined, directories removed.

use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use super::{state::Limits, LauncherError};
use crate::{containers::cgroup::LAUNCHER_PARENT, host::cgroupfs::CgroupFs};

const CPU_PERIOD_US: u64 = 100_000;

fn write(p: &Path, v: &str) -> Result<(), LauncherError> {
    fs::write(p, v).map_err(|e| LauncherError::Io(format!("writing {v:?} to {}", p.display()), e))
}

fn read(p: &Path) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn mkdir(p: &Path) -> Result<(), LauncherError> {
    fs::create_dir_all(p)
        .map_err(|e| LauncherError::Io(format!("creating cgroup {}", p.display()), e))
}

/// Where a controller's files for the container live: (directory, is cgroup2).
fn controller_dir(cg: &CgroupFs, dirs: &[PathBuf], controller: &str) -> Option<(PathBuf, bool)> {
    if cg.v2_controllers.iter().any(|c| c == controller) {
        let v2 = cg.v2.as_ref()?;
        return dirs
            .iter()
            .find(|d| d.starts_with(v2))
            .map(|d| (d.clone(), true));
    }
    let m = cg.v1_mount(controller)?;
    dirs.iter()
        .find(|d| d.starts_with(m))
        .map(|d| (d.clone(), false))
}

/// Creates the container's cgroups and applies `limits`, verifying each by reading it back.
/// A limit whose controller is not available is an error unless `ignore_missing`, in which
/// case it is reported on stderr and skipped.
pub(crate) fn create(
    cg: &CgroupFs,
    id: &str,
    limits: &Limits,
    ignore_missing: bool,
) -> Result<Vec<PathBuf>, LauncherError> {
    let mut dirs = Vec::new();
    if let Some(v2) = &cg.v2 {
        let parent = v2.join(LAUNCHER_PARENT);
        mkdir(&parent)?;
        // Delegate the controllers this host runs on cgroup2 down to the containers.
        let wanted: Vec<String> = ["memory", "pids", "cpu"]
            .iter()
            .filter(|c| cg.v2_controllers.iter().any(|h| h == *c))
            .map(|c| format!("+{c}"))
            .collect();
        if !wanted.is_empty() {
            for d in [v2.as_path(), parent.as_path()] {
                let _ = fs::write(d.join("cgroup.subtree_control"), wanted.join(" "));
            }
        }
        let d = parent.join(id);
        mkdir(&d)?;
        dirs.push(d);
    }
    for controller in ["memory", "pids", "cpu", "cpuacct"] {
        if cg.v2_controllers.iter().any(|c| c == controller) {
            continue;
        }
        if let Some(m) = cg.v1_mount(controller) {
            let d = m.join(LAUNCHER_PARENT).join(id);
            if !dirs.contains(&d) {
                mkdir(&d)?;
                dirs.push(d);
            }
        }
    }
    let result = apply(cg, &dirs, limits, ignore_missing);
    if result.is_err() {
        remove(&dirs);
    }
    result.map(|_| dirs)
}

fn missing(controller: &str, flag: &str, ignore: bool) -> Result<(), LauncherError> {
    if ignore {
        eprintln!("observer: the {controller} cgroup controller is not available here: running without {flag}");
        Ok(())
    } else {
        Err(LauncherError::MissingController(
            controller.into(),
            flag.into(),
        ))
    }
}

fn apply(cg: &CgroupFs, dirs: &[PathBuf], l: &Limits, ignore: bool) -> Result<(), LauncherError> {
    if let Some(bytes) = l.memory_bytes {
        match controller_dir(cg, dirs, "memory") {
            Some((d, true)) => {
                write(&d.join("memory.max"), &bytes.to_string())?;
                // No swap, so the limit is enforced by the OOM killer rather than swapping.
                if d.join("memory.swap.max").exists() {
                    write(&d.join("memory.swap.max"), "0")?;
                }
                verify(&d.join("memory.max"), bytes, true)?;
            }
            Some((d, false)) => {
                write(&d.join("memory.limit_in_bytes"), &bytes.to_string())?;
                if d.join("memory.memsw.limit_in_bytes").exists() {
                    write(&d.join("memory.memsw.limit_in_bytes"), &bytes.to_string())?;
                }
                verify(&d.join("memory.limit_in_bytes"), bytes, true)?;
            }
            None => missing("memory", "--memory", ignore)?,
        }
    }
    if let Some(n) = l.pids_max {
        match controller_dir(cg, dirs, "pids") {
            Some((d, _)) => {
                write(&d.join("pids.max"), &n.to_string())?;
                verify(&d.join("pids.max"), n, false)?;
            }
            None => missing("pids", "--pids-max", ignore)?,
        }
    }
    if let Some(cpus) = l.cpus {
        let quota = ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000);
        match controller_dir(cg, dirs, "cpu") {
            Some((d, true)) => {
                write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                let got = read(&d.join("cpu.max"));
                if got != format!("{quota} {CPU_PERIOD_US}") {
                    return Err(LauncherError::LimitNotApplied(d.join("cpu.max"), got));
                }
            }
            Some((d, false)) => {
                write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
                verify(&d.join("cpu.cfs_quota_us"), quota, false)?;
            }
            None => missing("cpu", "--cpus", ignore)?,
        }
    }
    Ok(())
}

/// Reads a limit back; memory limits may be rounded down to a page.
fn verify(p: &Path, want: u64, page_rounded: bool) -> Result<(), LauncherError> {
    let got = read(p);
    let ok = got
        .parse::<u64>()
        .is_ok_and(|g| g == want || (page_rounded && g <= want && want - g < 4096 * 16));
    if ok {
        Ok(())
    } else {
        Err(LauncherError::LimitNotApplied(p.to_path_buf(), got))
    }
}

/// Moves `pid` (0: the caller) into every one of the container's cgroups.
pub(crate) fn join(dirs: &[PathBuf], pid: u32) -> Result<(), LauncherError> {
    for d in dirs {
        write(&d.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(())
}

/// Removes the cgroup directories (retrying while exiting processes leave them).
pub(crate) fn remove(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for d in dirs {
        let mut done = false;
        for _ in 0..100 {
            match fs::remove_dir(d) {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    done = true;
                    break;
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
        if !done {
            left.push(d.clone());
        }
    }
    left
}

/// Number of OOM kills recorded in the container's memory cgroup.
pub(crate) fn oom_kills(cg: &CgroupFs, dirs: &[PathBuf]) -> u64 {
    let key = |p: PathBuf| -> u64 {
        read(&p)
            .lines()
            .find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    };
    match controller_dir(cg, dirs, "memory") {
        Some((d, true)) => key(d.join("memory.events")),
        Some((d, false)) => key(d.join("memory.oom_control")),
        None => 0,
    }
}
