//! The cgroup file systems of this host — cgroup2 and the v1 hierarchies, whichever are
//! mounted (pure v2, v1, or hybrid with v2 at /sys/fs/cgroup/unified) — and the resource
//! files of one cgroup: CPU, memory, pids and OOM kills, read from v2 where the controller
//! lives there and from the v1 hierarchy otherwise.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::facts::Resources;

#[derive(Clone, Debug, Default)]
pub(crate) struct CgroupFs {
    /// cgroup2 mount point.
    pub(crate) v2: Option<PathBuf>,
    /// Controllers enabled at the cgroup2 root (cgroup.controllers).
    pub(crate) v2_controllers: Vec<String>,
    /// v1 mount point per controller (`cpu`, `cpuacct`, `memory`, `pids`, `name=systemd`...).
    pub(crate) v1: Vec<(String, PathBuf)>,
}

impl CgroupFs {
    /// Reads /proc/self/mountinfo.
    pub(crate) fn discover() -> CgroupFs {
        let mut fs_ = CgroupFs::default();
        let Ok(mounts) = procfs::process::Process::myself().and_then(|p| p.mountinfo()) else {
            return fs_;
        };
        for m in mounts {
            match m.fs_type.as_str() {
                "cgroup2" if fs_.v2.is_none() => fs_.v2 = Some(m.mount_point.clone()),
                "cgroup" => {
                    for opt in m.super_options.keys() {
                        let known = [
                            "cpu", "cpuacct", "memory", "pids", "cpuset", "blkio", "devices",
                            "freezer",
                        ];
                        if known.contains(&opt.as_str()) || opt.starts_with("name=") {
                            fs_.v1.push((opt.clone(), m.mount_point.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(v2) = &fs_.v2 {
            fs_.v2_controllers = fs::read_to_string(v2.join("cgroup.controllers"))
                .map(|s| s.split_whitespace().map(String::from).collect())
                .unwrap_or_default();
        }
        fs_
    }

    pub(crate) fn v1_mount(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, p)| p.as_path())
    }

    fn has_v2(&self, controller: &str) -> bool {
        self.v2_controllers.iter().any(|c| c == controller)
    }

    /// Directory of `path` for `controller`: the cgroup2 tree when the controller is enabled
    /// there, else its v1 hierarchy.
    pub(crate) fn dir_for(&self, controller: &str, path: &str) -> Option<PathBuf> {
        let rel = path.trim_start_matches('/');
        if self.has_v2(controller) {
            return self.v2.as_ref().map(|m| m.join(rel));
        }
        self.v1_mount(controller).map(|m| m.join(rel))
    }

    /// Every cgroup2 directory with its id (inode), for resolving ids of cgroups entered
    /// without an attach event (clone3 CLONE_INTO_CGROUP), and the seed's cgroup2 paths.
    pub(crate) fn walk_v2(&self) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        if let Some(root) = &self.v2 {
            walk(root, |dir, rel| {
                if let Ok(md) = fs::metadata(dir) {
                    out.push((md.ino(), rel.to_string()));
                }
            });
        }
        out
    }

    /// The v1 hierarchy container attribution looks at (name=systemd, else pids, else
    /// memory): its line prefix in `/proc/<pid>/cgroup` and its mount point.
    fn attribution_v1(&self) -> Option<(String, PathBuf)> {
        ["name=systemd", "pids", "memory"].iter().find_map(|c| {
            self.v1_mount(c)
                .map(|m| (format!("1:{c}:"), m.to_path_buf()))
        })
    }

    /// Every process's cgroup, from the hierarchies' `cgroup.procs` files rather than one
    /// `/proc/<pid>/cgroup` per process (each of those takes the kernel's css_set lock and
    /// formats every hierarchy's path: a third of a 10,000-process scan). Returns, per pid,
    /// the lines of a `/proc/<pid>/cgroup` with the cgroup2 path and one v1 hierarchy's
    /// (name=systemd, else pids, else memory): what container attribution looks at.
    pub(crate) fn members(&self) -> HashMap<u32, String> {
        let mut out = HashMap::new();
        if let Some(v2) = &self.v2 {
            procs_lines(v2, "0::", &mut out);
        }
        if let Some((prefix, root)) = self.attribution_v1() {
            procs_lines(&root, &prefix, &mut out);
        }
        out
    }

    /// `members` without the cgroup2 lines, for a caller that has each process's cgroup2
    /// id (the task iterator): a `walk_v2` names those without reading any `cgroup.procs`.
    /// None when no v1 hierarchy is mounted.
    pub(crate) fn v1_members(&self) -> Option<HashMap<u32, String>> {
        let (prefix, root) = self.attribution_v1()?;
        let mut out = HashMap::new();
        procs_lines(&root, &prefix, &mut out);
        Some(out)
    }

    /// Resource use and limits of the cgroup at `path` (as in /proc/<pid>/cgroup).
    pub(crate) fn resources(&self, path: &str) -> Resources {
        let mut r = Resources::default();
        for (field, file) in self.resource_files(path) {
            if !field.needed(&r) {
                continue;
            }
            if let Ok(s) = fs::read_to_string(&file) {
                field.apply(&mut r, &s);
            }
        }
        r
    }

    /// The files `resources` reads for the cgroup at `path`, in order, with what each
    /// gives.
    pub(crate) fn resource_files(&self, path: &str) -> Vec<(UsageField, PathBuf)> {
        let mut out = Vec::with_capacity(8);
        let rel = path.trim_start_matches('/');
        // cgroup2 keeps cpu.stat usage in every cgroup, controller enabled or not (this is
        // what hybrid hosts have); v1 hosts have cpuacct.usage.
        if let Some(v2) = &self.v2 {
            out.push((UsageField::CpuStat, v2.join(rel).join("cpu.stat")));
        }
        if let Some(m) = self.v1_mount("cpuacct") {
            out.push((UsageField::CpuacctUsage, m.join(rel).join("cpuacct.usage")));
        }
        if let Some(d) = self.dir_for("memory", path) {
            if self.has_v2("memory") {
                out.push((UsageField::Memory, d.join("memory.current")));
                out.push((UsageField::OomKills, d.join("memory.events")));
                out.push((UsageField::MemoryMax, d.join("memory.max")));
            } else {
                out.push((UsageField::Memory, d.join("memory.usage_in_bytes")));
                out.push((UsageField::OomKills, d.join("memory.oom_control")));
                out.push((UsageField::MemoryLimitV1, d.join("memory.limit_in_bytes")));
            }
        }
        if let Some(d) = self.dir_for("pids", path) {
            out.push((UsageField::Pids, d.join("pids.current")));
            out.push((UsageField::PidsMax, d.join("pids.max")));
        }
        out
    }
}

/// What one usage file gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UsageField {
    /// cgroup2 cpu.stat `usage_usec`.
    CpuStat,
    /// v1 cpuacct.usage (ns), when cpu.stat gave nothing.
    CpuacctUsage,
    Memory,
    /// `oom_kill` of memory.events (v2) or memory.oom_control (v1).
    OomKills,
    Pids,
    /// cgroup2 memory.max (`max`: none).
    MemoryMax,
    /// v1 memory.limit_in_bytes (a huge page-rounded number: none).
    MemoryLimitV1,
    /// pids.max (`max`: none).
    PidsMax,
}

impl UsageField {
    /// cpuacct.usage is read only when cpu.stat gave nothing.
    pub(crate) fn needed(self, r: &Resources) -> bool {
        self != UsageField::CpuacctUsage || r.cpu_usage_ns.is_none()
    }

    /// A limit (rarely changes) rather than a use.
    pub(crate) fn is_limit(self) -> bool {
        matches!(
            self,
            UsageField::MemoryMax | UsageField::MemoryLimitV1 | UsageField::PidsMax
        )
    }

    /// Takes this field's value from the file's text into `r`.
    pub(crate) fn apply(self, r: &mut Resources, text: &str) {
        match self {
            UsageField::CpuStat => r.cpu_usage_ns = keyed(text, "usage_usec").map(|us| us * 1000),
            UsageField::CpuacctUsage => r.cpu_usage_ns = number(text),
            UsageField::Memory => r.memory_bytes = number(text),
            UsageField::OomKills => r.oom_kills = keyed(text, "oom_kill"),
            UsageField::Pids => r.pids = number(text),
            UsageField::MemoryMax => r.memory_limit_bytes = limit(text),
            UsageField::MemoryLimitV1 => {
                r.memory_limit_bytes = number(text).filter(|v| *v < (1u64 << 62));
            }
            UsageField::PidsMax => r.pids_limit = limit(text),
        }
    }
}

fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A limit file's text: a number, or "max" for none.
fn limit(text: &str) -> Option<u64> {
    let s = text.trim();
    if s == "max" {
        None
    } else {
        s.parse().ok()
    }
}

/// The value of `key` in a flat keyed file's text (`key value` lines: cpu.stat,
/// memory.events).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Calls `each` with every cgroup directory under `root` (root included) and its path
/// relative to root as `/proc/<pid>/cgroup` writes it ("/" for the root).
fn walk(root: &Path, mut each: impl FnMut(&Path, &str)) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rel = match dir.strip_prefix(root) {
            Ok(r) if r.as_os_str().is_empty() => "/".to_string(),
            Ok(r) => format!("/{}", r.display()),
            Err(_) => continue,
        };
        each(&dir, &rel);
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
}

/// Adds `prefix` + path + newline to `out[pid]` for every pid in every `cgroup.procs`
/// of the hierarchy at `root`.
fn procs_lines(root: &Path, prefix: &str, out: &mut HashMap<u32, String>) {
    walk(root, |dir, rel| {
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.parse::<u32>().ok()) {
                let e = out.entry(pid).or_default();
                e.push_str(prefix);
                e.push_str(rel);
                e.push('\n');
            }
        }
    });
}
