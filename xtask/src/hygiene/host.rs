//! What the hygiene reads from the host — processes and their parents, mounts, cgroup
//! directories, network namespaces — and the two things it does to the file system
//! (unmount, remove a tree). Deciding what belongs to a run is the caller's.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// One process as /proc/<pid>/stat shows it.
#[derive(Clone, Copy, Debug)]
pub struct Proc {
    pub ppid: u32,
    pub zombie: bool,
    /// Clock ticks after boot.
    pub starttime: u64,
}

/// Every process of this pid namespace (read through procfs; a process that ends while it
/// is read is left out).
pub fn processes() -> HashMap<u32, Proc> {
    let Ok(all) = procfs::process::all_processes() else {
        return HashMap::new();
    };
    all.flatten()
        .filter_map(|p| {
            let s = p.stat().ok()?;
            let proc = Proc {
                ppid: u32::try_from(s.ppid).ok()?,
                zombie: s.state == 'Z' || s.state == 'X',
                starttime: s.starttime,
            };
            Some((u32::try_from(p.pid()).ok()?, proc))
        })
        .collect()
}

/// The live processes whose chain of parents reaches `root` (`root` itself excluded).
pub fn descendants(root: u32) -> HashSet<u32> {
    descendants_in(&processes(), root)
}

/// [`descendants`] over a given process table.
pub fn descendants_in(procs: &HashMap<u32, Proc>, root: u32) -> HashSet<u32> {
    let mut memo: HashMap<u32, bool> = HashMap::new();
    procs
        .iter()
        .filter(|(pid, p)| **pid != root && !p.zombie)
        .filter(|(pid, _)| under(procs, **pid, root, &mut memo))
        .map(|(pid, _)| *pid)
        .collect()
}

/// Whether `root` is an ancestor of `pid`; remembers the answer for the whole chain walked.
fn under(procs: &HashMap<u32, Proc>, pid: u32, root: u32, memo: &mut HashMap<u32, bool>) -> bool {
    let mut chain = Vec::new();
    let mut cur = pid;
    let found = loop {
        if let Some(&known) = memo.get(&cur) {
            break known;
        }
        let Some(p) = procs.get(&cur) else {
            break false;
        };
        chain.push(cur);
        if p.ppid == root {
            break true;
        }
        // PID 0 is "no parent here"; a chain longer than the table is a loop (pids reused
        // while the table was read).
        if p.ppid == 0 || chain.len() > procs.len() {
            break false;
        }
        cur = p.ppid;
    };
    for c in chain {
        memo.insert(c, found);
    }
    found
}

pub fn alive(pid: u32) -> bool {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.state != 'Z' && s.state != 'X')
}

/// The command line, NULs as spaces (empty for kernel threads and processes gone).
pub fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .replace('\0', " ")
        .trim()
        .to_string()
}

/// The inode of the process's network namespace.
pub fn net_ns(pid: u32) -> Option<u64> {
    let ns = procfs::process::Process::new(pid as i32)
        .ok()?
        .namespaces()
        .ok()?;
    ns.0.get(std::ffi::OsStr::new("net")).map(|n| n.identifier)
}

/// Clock ticks since boot now (the unit of [`Proc::starttime`]).
pub fn now_ticks() -> u64 {
    let up = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs: f64 = up
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    (secs * hz as f64) as u64
}

fn mountinfo() -> Vec<procfs::process::MountInfo> {
    procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map(|m| m.0)
        .unwrap_or_default()
}

/// Mount points, in mount order.
pub fn mounts() -> Vec<PathBuf> {
    mountinfo().into_iter().map(|m| m.mount_point).collect()
}

pub fn umount(target: &Path) {
    let Ok(c) = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: umount2 with a valid C string; MNT_DETACH never blocks.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// Where each cgroup hierarchy (v1 and v2) is mounted.
pub fn cgroup_roots() -> Vec<PathBuf> {
    mountinfo()
        .into_iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .map(|m| m.mount_point)
        .collect()
}

/// The cgroup2 hierarchy, else the first v1 one.
pub fn cgroup_root_for_tests() -> Option<PathBuf> {
    let v2 = mountinfo()
        .into_iter()
        .find(|m| m.fs_type == "cgroup2")
        .map(|m| m.mount_point);
    v2.or_else(|| cgroup_roots().into_iter().next())
}

/// Every cgroup directory of every mounted hierarchy.
pub fn cgroups() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = cgroup_roots();
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path());
                stack.push(e.path());
            }
        }
    }
    out
}

/// The processes in a cgroup (none when it is gone or unreadable).
pub fn cgroup_procs(cg: &Path) -> Vec<u32> {
    std::fs::read_to_string(cg.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether a cgroup has neither processes nor child cgroups.
pub fn cgroup_empty(cg: &Path) -> bool {
    let no_children = std::fs::read_dir(cg).is_ok_and(|rd| {
        !rd.flatten()
            .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
    });
    no_children && cg.join("cgroup.procs").exists() && cgroup_procs(cg).is_empty()
}

/// Removes a cgroup directory, retrying for a moment while its last processes exit.
pub fn remove_cgroup(cg: &Path) -> bool {
    for _ in 0..25 {
        if std::fs::remove_dir(cg).is_ok() || !cg.exists() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(40));
    }
    false
}

/// The entries of the given directories.
pub fn entries(dirs: &[&str]) -> HashSet<PathBuf> {
    dirs.iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .collect()
}

/// The inode a path names (for a namespace pin: the namespace's inode).
pub fn inode(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.ino())
}

/// Removes a directory tree, unmounting whatever is mounted inside it first.
pub fn remove_tree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let mut inside: Vec<PathBuf> = mounts()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    inside.reverse();
    for m in &inside {
        umount(m);
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("hygiene: could not remove {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(u32, u32, bool)]) -> HashMap<u32, Proc> {
        rows.iter()
            .map(|&(pid, ppid, zombie)| {
                let p = Proc {
                    ppid,
                    zombie,
                    starttime: 0,
                };
                (pid, p)
            })
            .collect()
    }

    #[test]
    fn descendants_are_the_live_processes_below_the_root_only() {
        // 10 is the runner; 11 its child, 12 an orphan it adopted, 13 a grandchild, 14 a
        // zombie child; 20 and 21 are another tree under PID 1; 30 has a parent not shown.
        let t = table(&[
            (1, 0, false),
            (10, 1, false),
            (11, 10, false),
            (12, 10, false),
            (13, 11, false),
            (14, 11, true),
            (20, 1, false),
            (21, 20, false),
            (30, 99, false),
        ]);
        let got = descendants_in(&t, 10);
        assert_eq!(got, HashSet::from([11, 12, 13]));
    }

    #[test]
    fn a_parent_loop_from_reused_pids_ends_the_walk() {
        let t = table(&[(10, 1, false), (5, 6, false), (6, 5, false)]);
        assert!(descendants_in(&t, 10).is_empty());
    }

    #[test]
    fn the_current_process_descends_from_its_parent_and_not_from_pid_1s_siblings() {
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        assert!(descendants(parent).contains(&me));
        assert!(!descendants(me).contains(&parent));
    }
}
