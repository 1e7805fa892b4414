//! The start-up seed from the kernel's task iterator (observer-ebpf/src/seed.rs): one
//! `SeedTask` per process (decoded in `events::seed`), read by the same code as the events,
//! so every process carries its nine namespace inodes, cgroup id, exact start time and
//! (zombies) exit status from the first second. /proc remains the fallback (kernels before
//! 5.8, or a refused program) and supplies what the kernel side does not read here: command
//! lines and executables (in the background pass that follows the seed) and cgroup paths
//! (one pass over the hierarchies).

use std::{
    collections::{HashMap, HashSet},
    io::Read,
    path::Path,
};

use aya::programs::Iter;
use observer_common::SeedTask;

use super::{ProbeError, Probes};
use crate::{
    events::seed,
    host::scan::{self, Scanned},
};

impl Probes {
    /// Every process, from the task iterator (loaded on first use: it needs the kernel's
    /// BTF id of `bpf_iter_task`, read from `btf`).
    pub(crate) fn seed_tasks(&mut self, btf: &Path) -> Result<Vec<SeedTask>, ProbeError> {
        const NAME: &str = "seed_tasks";
        let mut file = self.task_iter(NAME, btf)?;
        let mut bytes = Vec::with_capacity(64 << 10);
        file.read_to_end(&mut bytes)
            .map_err(|e| ProbeError::Map(NAME, format!("reading the iterator: {e}")))?;
        Ok(seed::decode(&bytes))
    }

    /// Drops the kernel BTF kept from the load for the task iterators (several MB): once
    /// the seed is done, or where nothing seeds (`observer events`).
    pub(crate) fn release_kernel_btf(&mut self) {
        self.kernel_btf = None;
    }

    /// A pass of the pid iterator (every process's pid), run by reading the file: the
    /// reconciliation check reads it on a blocking thread (`read_pids`).
    pub(crate) fn pid_iter(&mut self, btf: &Path) -> Result<std::fs::File, ProbeError> {
        self.task_iter("seed_pids", btf)
    }

    fn iter_prog(&mut self, name: &'static str) -> Result<&mut Iter, ProbeError> {
        super::program(&mut self.ebpf, name)
    }

    /// A new pass of the task iterator program `name`.
    fn task_iter(&mut self, name: &'static str, btf: &Path) -> Result<std::fs::File, ProbeError> {
        self.load_iters(name, btf)?;
        let perr = |source| ProbeError::Program { name, source };
        let prog = self.iter_prog(name)?;
        let link = prog.attach().map_err(perr)?;
        let link = prog.take_link(link).map_err(perr)?;
        link.into_file()
            .map_err(|e| ProbeError::Map(name, format!("creating the iterator: {e}")))
    }

    /// Loads the task iterator program `name` on first use, and the other one with the
    /// same parse of the kernel's BTF (they need its id of `bpf_iter_task`; the parse is
    /// most of a load's time). Only `name` failing is an error.
    fn load_iters(&mut self, name: &'static str, btf: &Path) -> Result<(), ProbeError> {
        let mut kbtf = self.kernel_btf.take();
        let others = ["seed_tasks", "seed_pids"]
            .into_iter()
            .filter(|n| *n != name);
        for n in std::iter::once(name).chain(others) {
            let r = self.load_iter(n, btf, &mut kbtf);
            match r {
                Err(e) if n == name => return Err(e),
                Err(e) => log::debug!("task iterator {n} not loaded: {e}"),
                Ok(()) => {}
            }
        }
        Ok(())
    }

    fn load_iter(
        &mut self,
        name: &'static str,
        btf: &Path,
        kbtf: &mut Option<aya::Btf>,
    ) -> Result<(), ProbeError> {
        let perr = |source| ProbeError::Program { name, source };
        let prog = self.iter_prog(name)?;
        if prog.fd().is_ok() {
            return Ok(());
        }
        let t = std::time::Instant::now();
        prog.load("task", super::parsed_btf(kbtf, btf)?)
            .map_err(perr)?;
        log::debug!(
            "task iterator {name} loaded in {:.0} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        Ok(())
    }
}

/// The pids of one pass of `pid_iter`.
pub(crate) fn read_pids(mut file: std::fs::File) -> std::io::Result<Vec<u32>> {
    let mut bytes = Vec::with_capacity(256 << 10);
    file.read_to_end(&mut bytes)?;
    Ok(seed::pids(&bytes))
}

/// Every process's cgroup as attribution reads it, for the iterator's records: the cgroup2
/// path from the record's cgroup id (a walk of the cgroup2 directories: no `cgroup.procs`
/// read, which is most of the cost on a node of 1,000 containers) and the v1 line from
/// the v1 hierarchy's `cgroup.procs` (hybrid and v1 hosts).
struct Cgroups {
    /// cgroup2 path per cgroup id; None without a cgroup2 mount.
    v2: Option<HashMap<u64, String>>,
    /// The v1 line per pid; None without a v1 hierarchy.
    v1: Option<HashMap<u32, String>>,
}

impl Cgroups {
    fn read() -> Cgroups {
        let fs = crate::host::cgroupfs::CgroupFs::discover();
        Cgroups {
            v2: fs.v2.is_some().then(|| fs.walk_v2().into_iter().collect()),
            v1: fs.v1_members(),
        }
    }

    /// The lines for `t` (taken out of the v1 map, not copied); its `/proc/<pid>/cgroup`
    /// when a hierarchy has not seen it (a cgroup or process newer than the walk).
    fn take(&mut self, t: &SeedTask) -> String {
        let mut lines = String::new();
        if let Some(v2) = &self.v2 {
            match v2.get(&t.task.cgroup_id) {
                Some(path) => {
                    lines.push_str("0::");
                    lines.push_str(path);
                    lines.push('\n');
                }
                None => return proc_cgroup(t.tgid),
            }
        }
        if let Some(v1) = &mut self.v1 {
            match v1.remove(&t.tgid) {
                Some(line) => lines.push_str(&line),
                None => return proc_cgroup(t.tgid),
            }
        }
        lines
    }
}

fn proc_cgroup(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
}

/// The seed from the iterator, as scan records; Err (with the reason) to fall back to /proc.
/// A process /proc lists that the iterator did not visit (a task the kernel hides from it,
/// as this machine's PID 1; or one that started after the pass) is read from /proc, so the
/// seed never has less than /proc.
pub(crate) fn scan_all(probes: &mut Probes, btf: &Path) -> Result<Vec<Scanned>, ProbeError> {
    let t = std::time::Instant::now();
    // The cgroup hierarchies' walk runs on another core meanwhile; /proc's pid list
    // follows the iterator on this one (about as long together as the walk at 50,000
    // processes in 1,000 containers on a hybrid host).
    let (walked, tasks) = std::thread::scope(|s| {
        let walk = s.spawn(|| (Cgroups::read(), t.elapsed()));
        let tasks = probes
            .seed_tasks(btf)
            .map(|tasks| (tasks, t.elapsed(), scan::pids()));
        (walk.join(), tasks)
    });
    let (tasks, t_it, pids) = tasks?;
    let (mut cgroups, t_cg) = walked
        .map_err(|_| ProbeError::Map("cgroup walk", "panicked beside the task iterator".into()))?;
    let t_both = t.elapsed();
    let mut out: Vec<Scanned> = tasks
        .iter()
        .map(|t| seed::scanned(t, cgroups.take(t)))
        .collect();
    let seen: HashSet<u32> = out.iter().map(|s| s.pid).collect();
    let host = scan::ns_inode(std::process::id(), "pid");
    out.extend(
        pids.into_iter()
            .filter(|p| !seen.contains(p))
            .filter_map(|p| scan::scan_pid(p, host, false, None)),
    );
    log::debug!(
        "task iterator seed: cgroups {:.0} ms, iterator {:.0} ms (beside), then /proc's pids until {:.0} ms, the rest {:.0} ms",
        t_cg.as_secs_f64() * 1e3,
        t_it.as_secs_f64() * 1e3,
        t_both.as_secs_f64() * 1e3,
        (t.elapsed() - t_both).as_secs_f64() * 1e3
    );
    Ok(out)
}
