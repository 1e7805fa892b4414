//! Containers as the table sees them: cgroup paths interned once and attributed once (the
//! parse result is cached per path), a registry of containers keyed by (runtime, id), and
//! the pid-namespace rule for processes outside any runtime cgroup: a process entered with
//! setns into a known container's pid namespace belongs to that container; otherwise a
//! non-initial pid namespace forms a "bare" container keyed by its inode.

pub mod cgroup;
pub mod names;
pub mod oci;
pub(crate) mod pods;
pub(crate) mod state_file;
pub(crate) mod state_index;

use cgroup::{CgroupMatch, Role, Runtime};
use rustc_hash::FxHashMap;

use crate::intern::Interner;

#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub(crate) struct ContainerKey {
    pub(crate) runtime: Runtime,
    /// Runtime id (64 hex for docker/podman/CRI; any string for containerd/lxc/launcher;
    /// the pid-ns inode for bare containers).
    pub(crate) id: String,
    /// A bare container's generation: the kernel reuses pid-namespace inodes, so a
    /// namespace whose processes started after the end of the init of an earlier one with
    /// the same inode is another container. Its generation is that end (boot-clock ns): its
    /// processes started after it (the history store's rule, store/write.rs). 0 for the
    /// first the agent saw, and for every runtime's container.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) generation: u64,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ContainerKey {
    pub(crate) fn new(runtime: Runtime, id: impl Into<String>) -> ContainerKey {
        ContainerKey {
            runtime,
            id: id.into(),
            generation: 0,
        }
    }

    /// The key without its generation: what the history store and the runtimes know it by.
    pub(crate) fn base(&self) -> ContainerKey {
        ContainerKey::new(self.runtime, self.id.clone())
    }

    /// Whether both are generations of the same runtime container or pid-namespace inode.
    pub(crate) fn same_base(&self, other: &ContainerKey) -> bool {
        self.runtime == other.runtime && self.id == other.id
    }
}

/// Per-container event counters (monotonic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) forks: u64,
    pub(crate) execs: u64,
    pub(crate) exits: u64,
}

/// Per-container counts (metrics): by (signal, result), OOM victims, exit classes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SignalCounters {
    pub(crate) signals: Vec<(u32, u32, u64)>,
    pub(crate) oom_victims: u64,
    /// Exits by class: code 0, 1–125, 126/127 (not executable / not found), by a signal.
    pub(crate) exit_classes: [u64; 4],
}

/// A container's record in a form views and the API can carry (the table fills it in from
/// the registry: `Table::container_data`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct ContainerData {
    #[serde(flatten)]
    pub(crate) key: ContainerKey,
    pub(crate) pod_uid: Option<String>,
    /// Podman pod id from the cgroup path.
    #[serde(default)]
    pub(crate) pod_id: Option<String>,
    pub(crate) ctr_namespace: Option<String>,
    pub(crate) cgroup: String,
    pub(crate) pidns: u32,
    pub(crate) forks: u64,
    pub(crate) execs: u64,
    pub(crate) exits: u64,
    /// (signal, result, count) of the signals its processes were sent.
    #[serde(default)]
    pub(crate) signals: Vec<(u32, u32, u64)>,
    #[serde(default)]
    pub(crate) oom_victims: u64,
    /// Exits by class (table::signal_facts::EXIT_CLASSES).
    #[serde(default)]
    pub(crate) exit_classes: [u64; 4],
}

#[derive(Clone, Debug)]
pub(crate) struct Container {
    pub(crate) key: ContainerKey,
    pub(crate) pod_uid: Option<String>,
    /// Podman pod id from the cgroup path.
    pub(crate) pod_id: Option<String>,
    /// containerd namespace when the cgroup path names it.
    pub(crate) ctr_namespace: Option<String>,
    /// Interned cgroup path of the container (for resource files); 0 for bare containers.
    pub(crate) cgroup: u32,
    /// The pid namespace of its processes (0 until a member in a non-host namespace is seen).
    pub(crate) pidns: u32,
    /// Host pids of the live processes attributed to it (zombies included), kept by the
    /// table as it attributes: a container's snapshot reads these, not the process map.
    pub(crate) members: rustc_hash::FxHashSet<u32>,
    /// Threads of those members (the sum of their `threads`), kept with the set: /metrics
    /// reads it instead of a pass over every process.
    pub(crate) threads: u64,
    pub(crate) counters: Counters,
    pub(crate) signals: SignalCounters,
    /// Boot-clock ns since which it has had no members, as first noticed by the table's
    /// collection pass (0 while it has members).
    pub(crate) idle_since_ns: u64,
    /// Boot-clock ns the init of its pid namespace ended (0: not seen). The namespace ended
    /// with it: a process with its inode that started later is of another namespace.
    pub(crate) init_end_ns: u64,
}

impl Container {
    /// A container just seen: no pod facts, members or counts yet.
    fn new(key: ContainerKey, cgroup: u32, pidns: u32) -> Container {
        Container {
            key,
            pod_uid: None,
            pod_id: None,
            ctr_namespace: None,
            cgroup,
            pidns,
            members: Default::default(),
            threads: 0,
            counters: Counters::default(),
            signals: SignalCounters::default(),
            idle_since_ns: 0,
            init_end_ns: 0,
        }
    }
}

/// Index 0 of the path table: "no path known".
pub(crate) const NO_PATH: u32 = 0;

pub struct Registry {
    paths: Interner,
    /// Per interned path: the container it names and the role of processes in it.
    path_match: Vec<Option<(u32, Role)>>,
    containers: Vec<Container>,
    by_key: FxHashMap<ContainerKey, u32>,
    by_pidns: FxHashMap<u32, u32>,
    /// Per pid-namespace inode, the end of the last init seen of a namespace that had it:
    /// the generation of the next bare container with it (kept after its container is
    /// evicted, so that no two generations get one key; `forget_bare_ends`).
    bare_ends: FxHashMap<u32, u64>,
    /// cgroup v2 ids seen with their interned paths.
    cgroup_ids: FxHashMap<u64, u32>,
    host_pidns: u32,
    /// Bumped by every compaction (container indices change then).
    generation: u64,
}

/// What a compaction kept: old index or id → new (None / NO_PATH when dropped).
pub(crate) struct Remap {
    pub(crate) containers: Vec<Option<u32>>,
    pub(crate) paths: Vec<u32>,
    pub(crate) dropped_containers: u64,
    pub(crate) dropped_paths: u64,
    pub(crate) dropped_cgroup_ids: u64,
}

impl Registry {
    pub fn new(host_pidns: u32) -> Self {
        Registry {
            paths: Interner::new(),
            path_match: vec![None],
            containers: Vec::new(),
            by_key: FxHashMap::default(),
            by_pidns: FxHashMap::default(),
            bare_ends: FxHashMap::default(),
            cgroup_ids: FxHashMap::default(),
            host_pidns,
            generation: 0,
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn paths_len(&self) -> usize {
        self.paths.len()
    }

    pub(crate) fn cgroup_ids_len(&self) -> usize {
        self.cgroup_ids.len()
    }

    /// Keeps the containers `keep_container` accepts and the paths `keep_path` accepts
    /// (plus the cgroup paths of kept containers), dropping the rest and the cgroup ids of
    /// dropped paths. Indices change: holders must apply the returned remap.
    pub(crate) fn compact(
        &mut self,
        keep_container: impl Fn(u32, &Container) -> bool,
        keep_path: impl Fn(u32) -> bool,
    ) -> Remap {
        let mut containers = vec![None; self.containers.len()];
        let mut kept = Vec::new();
        for (i, c) in std::mem::take(&mut self.containers).into_iter().enumerate() {
            if keep_container(i as u32, &c) {
                containers[i] = Some(kept.len() as u32);
                kept.push(c);
            }
        }
        let dropped_containers = (containers.len() - kept.len()) as u64;
        let container_paths: rustc_hash::FxHashSet<u32> = kept.iter().map(|c| c.cgroup).collect();
        let old_match = std::mem::take(&mut self.path_match);
        let before = self.paths.len();
        let paths = self
            .paths
            .compact(|id| keep_path(id) || container_paths.contains(&id));
        self.path_match = vec![None; self.paths.len()];
        let mut orphaned = Vec::new();
        for (old, m) in old_match.into_iter().enumerate() {
            let new = paths.get(old).copied().unwrap_or(NO_PATH);
            if let (true, Some((c, role))) = (new != NO_PATH, m) {
                match containers[c as usize] {
                    Some(n) => self.path_match[new as usize] = Some((n, role)),
                    None => orphaned.push(new),
                }
            }
        }
        for c in &mut kept {
            c.cgroup = paths.get(c.cgroup as usize).copied().unwrap_or(NO_PATH);
        }
        let ids_before = self.cgroup_ids.len();
        self.cgroup_ids.retain(|_, p| {
            *p = paths.get(*p as usize).copied().unwrap_or(NO_PATH);
            *p != NO_PATH
        });
        self.by_key = kept
            .iter()
            .enumerate()
            .map(|(i, c)| (c.key.clone(), i as u32))
            .collect();
        self.by_pidns.retain(|_, c| match containers[*c as usize] {
            Some(n) => {
                *c = n;
                true
            }
            None => false,
        });
        self.containers = kept;
        // A kept path whose container was dropped (a shim outliving its container's
        // retention) names a container again: attributed afresh.
        for p in orphaned {
            let path = self.paths.get(p).to_string();
            self.path_match[p as usize] = cgroup::parse_path(&path).map(|m| {
                let role = m.role;
                (self.container_for(m, p), role)
            });
        }
        self.generation += 1;
        Remap {
            dropped_paths: (before - self.paths.len()) as u64,
            dropped_cgroup_ids: (ids_before - self.cgroup_ids.len()) as u64,
            containers,
            paths,
            dropped_containers,
        }
    }

    /// Interns a cgroup path, attributing it on first sight.
    pub(crate) fn intern_path(&mut self, path: &str) -> u32 {
        let (i, new) = self.paths.intern(path);
        if !new {
            return i;
        }
        let m = cgroup::parse_path(path).map(|m| {
            let role = m.role;
            (self.container_for(m, i), role)
        });
        self.path_match.push(m);
        i
    }

    /// Interns the attribution path of a whole /proc/<pid>/cgroup file: the first path that
    /// names a container (v2 first, then v1: `cgroup::ranked_lines`), else the v2 path, else
    /// the first line's.
    pub fn intern_file(&mut self, content: &str) -> u32 {
        // A file where a name smuggled in a line names no path at all.
        let Some(lines) = cgroup::ranked_lines(content) else {
            return NO_PATH;
        };
        if let Some(l) = lines.iter().find(|l| cgroup::parse_path(l.path).is_some()) {
            return self.intern_path(l.path);
        }
        lines
            .first()
            .map(|l| self.intern_path(l.path))
            .unwrap_or(NO_PATH)
    }

    pub(crate) fn path(&self, i: u32) -> &str {
        self.paths.get(i)
    }

    /// Records the cgroup v2 id of an interned path.
    pub(crate) fn learn_cgroup_id(&mut self, id: u64, path: u32) {
        if id != 0 && path != NO_PATH {
            self.cgroup_ids.insert(id, path);
        }
    }

    pub(crate) fn path_of_cgroup_id(&self, id: u64) -> Option<u32> {
        self.cgroup_ids.get(&id).copied()
    }

    fn container_for(&mut self, m: CgroupMatch, path: u32) -> u32 {
        let key = ContainerKey::new(m.runtime, m.id);
        if let Some(&c) = self.by_key.get(&key) {
            let c_ref = &mut self.containers[c as usize];
            if m.role == Role::Member && c_ref.cgroup == NO_PATH {
                c_ref.cgroup = path;
            }
            return c;
        }
        let c = self.containers.len() as u32;
        let cgroup = if m.role == Role::Member {
            path
        } else {
            NO_PATH
        };
        self.containers.push(Container {
            pod_uid: m.pod_uid,
            pod_id: m.pod_id,
            ctr_namespace: m.namespace,
            ..Container::new(key.clone(), cgroup, 0)
        });
        self.by_key.insert(key, c);
        c
    }

    /// The container a process with this cgroup path and pid namespace, started at
    /// `start_ns` (boot clock), belongs to.
    pub fn attribute(&mut self, path: u32, pidns: u32, start_ns: u64) -> Option<u32> {
        match self.path_match.get(path as usize).copied().flatten() {
            Some((c, Role::Member)) => {
                if pidns != 0 && pidns != self.host_pidns {
                    let cont = &mut self.containers[c as usize];
                    if cont.pidns == 0 {
                        cont.pidns = pidns;
                    }
                    // A namespace that ended (its init did) no longer holds the inode.
                    let held = self
                        .by_pidns
                        .get(&pidns)
                        .is_some_and(|&o| o == c || self.containers[o as usize].init_end_ns == 0);
                    if !held {
                        self.by_pidns.insert(pidns, c);
                    }
                }
                Some(c)
            }
            Some((_, Role::Shim)) => None,
            None => {
                if pidns == 0 || pidns == self.host_pidns {
                    return None;
                }
                if let Some(&c) = self.by_pidns.get(&pidns) {
                    let end = self.containers[c as usize].init_end_ns;
                    if end == 0 || start_ns <= end {
                        return Some(c);
                    }
                    // Its namespace ended with its init, before this process started: this
                    // one is of a new namespace the kernel gave the same inode.
                    self.by_pidns.remove(&pidns);
                }
                Some(self.new_bare(pidns, start_ns))
            }
        }
    }

    /// A bare container for pid namespace `pidns`, of the generation a process started at
    /// `start_ns` is of.
    fn new_bare(&mut self, pidns: u32, start_ns: u64) -> u32 {
        let generation = self
            .bare_ends
            .get(&pidns)
            .copied()
            .filter(|&end| start_ns > end)
            .unwrap_or(0);
        let key = ContainerKey {
            generation,
            ..ContainerKey::new(Runtime::Bare, pidns.to_string())
        };
        let c = self.containers.len() as u32;
        self.containers
            .push(Container::new(key.clone(), NO_PATH, pidns));
        self.by_key.insert(key, c);
        self.by_pidns.insert(pidns, c);
        c
    }

    /// The init of container `c`'s pid namespace `pidns` (PID 1 in it) ended at `at_ns`:
    /// so did the namespace (the kernel killed the rest of it).
    pub(crate) fn init_ended(&mut self, c: u32, pidns: u32, at_ns: u64) {
        let Some(cont) = self.containers.get_mut(c as usize) else {
            return;
        };
        if cont.pidns != pidns || pidns == 0 || pidns == self.host_pidns {
            return;
        }
        cont.init_end_ns = at_ns.max(1);
        let end = self.bare_ends.entry(pidns).or_default();
        *end = (*end).max(cont.init_end_ns);
    }

    /// Forgets the inits that ended before `before_ns`: the histories of their generations
    /// have expired, so a key of theirs names nothing any more.
    pub(crate) fn forget_bare_ends(&mut self, before_ns: u64) {
        self.bare_ends.retain(|_, end| *end >= before_ns);
    }

    /// Whether the path names a runtime container's member cgroup.
    /// Empties every container's member set (the table is being replaced).
    pub(crate) fn clear_members(&mut self) {
        for c in &mut self.containers {
            c.members.clear();
            c.threads = 0;
        }
    }

    pub(crate) fn attribute_is_runtime(&self, path: u32) -> bool {
        matches!(
            self.path_match.get(path as usize).copied().flatten(),
            Some((_, Role::Member))
        )
    }

    /// The shim role of a path: Some(container) when the path is a conmon/monitor cgroup.
    #[cfg(test)]
    pub(crate) fn shim_of_path(&self, path: u32) -> Option<u32> {
        match self.path_match.get(path as usize).copied().flatten() {
            Some((c, Role::Shim)) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn get(&self, c: u32) -> Option<&Container> {
        self.containers.get(c as usize)
    }

    pub(crate) fn get_mut(&mut self, c: u32) -> Option<&mut Container> {
        self.containers.get_mut(c as usize)
    }

    /// All containers ever seen, with their index.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Container)> {
        self.containers
            .iter()
            .enumerate()
            .map(|(i, c)| (i as u32, c))
    }

    pub(crate) fn len(&self) -> usize {
        self.containers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_interned_and_attributed_once() {
        let mut r = Registry::new(100);
        let id = "a".repeat(64);
        let p = r.intern_path(&format!("/docker/{id}"));
        assert_eq!(r.intern_path(&format!("/docker/{id}")), p);
        let c = r.attribute(p, 200, 1).unwrap();
        assert_eq!(
            r.get(c).unwrap().key,
            ContainerKey::new(Runtime::Docker, id.clone())
        );
        assert_eq!(r.get(c).unwrap().pidns, 200);
        // A process entered into that pid namespace from a host cgroup joins the container.
        let host = r.intern_path("/user.slice/session-1.scope");
        assert_eq!(r.attribute(host, 200, 1), Some(c));
        // The host pid namespace never makes a container.
        assert_eq!(r.attribute(host, 100, 1), None);
    }

    #[test]
    fn unknown_pid_namespace_outside_runtime_cgroups_is_a_bare_container() {
        let mut r = Registry::new(100);
        let c = r.attribute(NO_PATH, 4026532177, 1).unwrap();
        let cont = r.get(c).unwrap();
        assert_eq!(cont.key.runtime, Runtime::Bare);
        assert_eq!(cont.key.id, "4026532177");
        assert_eq!(r.attribute(NO_PATH, 4026532177, 1), Some(c));
    }

    #[test]
    fn conmon_scope_names_a_shim_not_a_member() {
        let mut r = Registry::new(100);
        let id = "b".repeat(64);
        let p = r.intern_path(&format!("/machine.slice/libpod-conmon-{id}.scope"));
        assert_eq!(r.attribute(p, 100, 1), None);
        assert!(r.shim_of_path(p).is_some());
    }

    #[test]
    fn hybrid_file_attributes_through_v1_lines() {
        let mut r = Registry::new(100);
        let p = r.intern_file("4:memory:/default/fxc\n0::/system.slice/containerd.service\n");
        assert_eq!(r.path(p), "/default/fxc");
        let p2 = r.intern_file("0::/user.slice\n1:name=systemd:/user.slice\n");
        assert_eq!(r.path(p2), "/user.slice");
    }
}
