//! Container names and Kubernetes pod metadata from the runtimes' own state files on the node,
//! read lazily (when a view asks) and cached: Docker's config.v2.json, the containerd task
//! bundle's config.json annotations, podman's containers.json, cri-o's userdata config.json,
//! and observer's launcher state directory.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{
    cgroup::Runtime,
    oci::{self, OciRoot},
    state_file,
    state_index::StateIndex,
    ContainerKey,
};

/// Where each runtime keeps its state (flags of the agent; defaults are the runtimes').
#[derive(Clone, Debug)]
pub(crate) struct StateDirs {
    pub(crate) docker: PathBuf,
    /// containerd state directories (`--state` of containerd), holding
    /// `io.containerd.runtime.v2.task/<namespace>/<id>/config.json`.
    pub(crate) containerd: Vec<PathBuf>,
    /// containers/storage roots (podman, cri-o).
    pub(crate) storage: Vec<PathBuf>,
    pub(crate) launcher: PathBuf,
    /// OCI runtimes' state roots (runc, crun) naming containers they started directly.
    pub(crate) oci: Vec<OciRoot>,
}

impl Default for StateDirs {
    fn default() -> Self {
        StateDirs {
            docker: "/var/lib/docker".into(),
            containerd: vec!["/run/containerd".into()],
            storage: vec![
                "/var/lib/containers/storage".into(),
                "/run/containers/storage".into(),
            ],
            launcher: "/run/observer/containers".into(),
            oci: OciRoot::defaults(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub(crate) name: Option<String>,
    pub(crate) pod: Option<String>,
    pub(crate) pod_namespace: Option<String>,
    /// The runtime when the cgroup path alone could not tell (kubelet cgroupfs layout).
    pub(crate) runtime: Option<Runtime>,
    pub(crate) image: Option<String>,
    /// The pod's sandbox container (CRI `sandbox-id`, cri-o and podman `SandboxID`).
    pub(crate) sandbox_id: Option<String>,
    /// This container is a pod's sandbox (pause/infra): CRI `container-type: sandbox`.
    pub(crate) sandbox: bool,
    /// Kubernetes pod UID from the annotations.
    pub(crate) pod_uid: Option<String>,
    /// The OCI config's hostname (podman sets a pod's infra hostname to the pod name).
    pub(crate) hostname: Option<String>,
}

pub(crate) struct Resolver {
    dirs: StateDirs,
    cache: HashMap<ContainerKey, (Instant, Meta)>,
    ttl: Duration,
    /// Most cached entries; beyond it expired entries go, then the oldest.
    cap: usize,
    /// Entries dropped to stay within `cap`.
    pub(crate) evictions: u64,
    /// The launcher's state directory and podman's containers.json (one per storage root),
    /// each read once for all containers.
    launcher_index: StateIndex,
    podman_index: Vec<StateIndex>,
}

impl Resolver {
    pub(crate) fn new(dirs: StateDirs) -> Self {
        Self::with_cap(dirs, 10_000)
    }

    pub(crate) fn with_cap(dirs: StateDirs, cap: usize) -> Self {
        Resolver {
            dirs,
            cache: HashMap::new(),
            ttl: Duration::from_secs(30),
            cap: cap.max(1),
            evictions: 0,
            launcher_index: StateIndex::default(),
            podman_index: Vec::new(),
        }
    }

    /// Keeps the cache within its cap: expired entries first, then the oldest.
    fn make_room(&mut self) {
        if self.cache.len() < self.cap {
            return;
        }
        let before = self.cache.len();
        let ttl = self.ttl;
        self.cache.retain(|_, (at, _)| at.elapsed() < ttl);
        if self.cache.len() >= self.cap {
            // The newest half stays (none with a cap of 1: `--max-containers 1`).
            let keep = self.cap / 2;
            let mut ages: Vec<Instant> = self.cache.values().map(|(at, _)| *at).collect();
            ages.sort_unstable();
            match ages.len().checked_sub(keep).and_then(|i| ages.get(i)) {
                Some(&cut) if keep > 0 => self.cache.retain(|_, (at, _)| *at >= cut),
                _ => self.cache.clear(),
            }
        }
        self.evictions += (before - self.cache.len()) as u64;
    }

    /// A container's metadata when the cache has it fresh: what `meta` answers without
    /// reading a file.
    pub(crate) fn fresh(&self, key: &ContainerKey) -> Option<Meta> {
        let (at, m) = self.cache.get(key)?;
        let ttl = if m.name.is_some() {
            self.ttl
        } else {
            Duration::from_secs(2)
        };
        (at.elapsed() < ttl).then(|| m.clone())
    }

    /// Metadata of a container (`ctr_namespace`: its containerd namespace when the cgroup
    /// path named one; `init_pid`: its PID 1, which names a bare container to its OCI
    /// runtime's state); a miss (no state file yet) is retried after a short time.
    pub(crate) fn meta(
        &mut self,
        key: &ContainerKey,
        ctr_namespace: Option<&str>,
        init_pid: Option<u32>,
    ) -> Meta {
        if let Some(m) = self.fresh(key) {
            return m;
        }
        self.meta_now(key, ctr_namespace, init_pid)
    }

    /// `meta` read from the runtime's state now, whatever is cached (the history store
    /// asks when a container's PID 1 ended: the name it has after a `docker rename`).
    pub(crate) fn meta_now(
        &mut self,
        key: &ContainerKey,
        ctr_namespace: Option<&str>,
        init_pid: Option<u32>,
    ) -> Meta {
        let mut m = self.lookup(key, ctr_namespace, init_pid);
        if m.name.is_none() {
            // Its runtime removed it: the name it had still names its history.
            if let Some((_, old)) = self.cache.get(key).filter(|(_, o)| o.name.is_some()) {
                m = old.clone();
            }
        }
        if !self.cache.contains_key(key) {
            self.make_room();
        }
        self.cache.insert(key.clone(), (Instant::now(), m.clone()));
        m
    }

    fn lookup(
        &mut self,
        key: &ContainerKey,
        ctr_namespace: Option<&str>,
        init: Option<u32>,
    ) -> Meta {
        let id = key.id.as_str();
        match key.runtime {
            Runtime::Docker => docker(&self.dirs.docker, id),
            Runtime::Containerd => self.containerd(id, ctr_namespace).unwrap_or_default(),
            Runtime::Podman => self.podman(id),
            Runtime::Crio => crio(&self.dirs.storage, id).unwrap_or_default(),
            Runtime::Cri => {
                if let Some(mut m) = self.containerd(id, Some("k8s.io")) {
                    m.runtime = Some(Runtime::Containerd);
                    m
                } else if let Some(mut m) = crio(&self.dirs.storage, id) {
                    m.runtime = Some(Runtime::Crio);
                    m
                } else {
                    // A CRI layout some other tool made with runc or crun directly.
                    init.and_then(|pid| self.oci(pid)).unwrap_or_default()
                }
            }
            Runtime::Observer => {
                let dir = &self.dirs.launcher;
                self.launcher_index
                    .get(dir, id, || launcher(dir))
                    .unwrap_or_default()
            }
            Runtime::Lxc | Runtime::Nspawn => Meta {
                name: Some(id.to_string()),
                ..Meta::default()
            },
            Runtime::Bare => init.and_then(|pid| self.oci(pid)).unwrap_or_default(),
            Runtime::Runc | Runtime::Crun => Meta::default(),
        }
    }

    /// podman: the name from containers.json (indexed), pod facts from the container's OCI
    /// config.
    fn podman(&mut self, id: &str) -> Meta {
        let storage = &self.dirs.storage;
        self.podman_index
            .resize_with(storage.len(), StateIndex::default);
        storage
            .iter()
            .zip(self.podman_index.iter_mut())
            .find_map(|(s, idx)| {
                let dir = s.join("overlay-containers");
                let file = dir.join("containers.json");
                let mut m = idx.get(&file, id, || {
                    read_state(&file).map(parse::podman).unwrap_or_default()
                })?;
                if let Some(cfg) = read_state(&dir.join(id).join("userdata/config.json")) {
                    parse::podman_config(&cfg, &mut m);
                }
                Some(m)
            })
            .unwrap_or_default()
    }

    /// A bare container's name, runtime and pod facts from its OCI runtime's state.
    fn oci(&self, pid: u32) -> Option<Meta> {
        let start = crate::host::scan::live(pid)?.start_ticks;
        let state = oci::find(&self.dirs.oci, pid, start)?;
        let cfg = state.bundle.as_deref().and_then(oci::bundle_config);
        let mut m = cfg
            .as_ref()
            .map(|c| parse::containerd(c, &state.id))
            .unwrap_or_default();
        if let Some(c) = &cfg {
            // cri-o's and podman's annotations, where containerd's are absent.
            let o = parse::crio(c);
            m.pod = m.pod.or(o.pod);
            m.pod_namespace = m.pod_namespace.or(o.pod_namespace);
            m.sandbox_id = m.sandbox_id.or(o.sandbox_id);
            m.sandbox |= o.sandbox;
            m.pod_uid = m.pod_uid.or(o.pod_uid);
        }
        // The CRI container name when annotated, else the runtime's id.
        m.name = m.name.or(Some(state.id));
        m.runtime = Some(state.runtime);
        Some(m)
    }

    fn containerd(&self, id: &str, ns: Option<&str>) -> Option<Meta> {
        for state in &self.dirs.containerd {
            let tasks = state.join("io.containerd.runtime.v2.task");
            let namespaces: Vec<String> = match ns {
                Some(n) => vec![n.to_string()],
                None => fs::read_dir(&tasks)
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            for n in namespaces {
                let cfg = tasks.join(&n).join(id).join("config.json");
                if let Some(v) = read_state(&cfg) {
                    return Some(parse::containerd(&v, id));
                }
            }
        }
        None
    }

    /// Whether a containerd task `<namespace>/<id>` exists (a cgroup `/<ns>/<id>` outside the
    /// well-known namespaces is containerd's only when it does).
    #[cfg(test)]
    pub(crate) fn containerd_task_exists(&self, ns: &str, id: &str) -> bool {
        self.dirs.containerd.iter().any(|s| {
            s.join("io.containerd.runtime.v2.task")
                .join(ns)
                .join(id)
                .is_dir()
        })
    }
}

/// Reads a runtime state file as `T`, within bounds (`state_file`).
pub(crate) fn read_state<T: serde::de::DeserializeOwned>(p: &Path) -> Option<T> {
    state_file::read(p)
}

fn docker(root: &Path, id: &str) -> Meta {
    read_state(&root.join("containers").join(id).join("config.v2.json"))
        .map(|v| parse::docker(&v))
        .unwrap_or_default()
}

/// observer's launcher: `<dir>/<name>/config.json` holds the id (the cgroup's name); every
/// container of the directory by id.
fn launcher(dir: &Path) -> HashMap<String, Meta> {
    let Ok(rd) = fs::read_dir(dir) else {
        return HashMap::new();
    };
    rd.flatten()
        .filter_map(|e| parse::launcher(&read_state(&e.path().join("config.json"))?))
        .collect()
}

fn crio(storage: &[PathBuf], id: &str) -> Option<Meta> {
    storage.iter().find_map(|s| {
        let v = read_state(
            &s.join("overlay-containers")
                .join(id)
                .join("userdata/config.json"),
        )?;
        Some(parse::crio(&v))
    })
}

pub mod parse;

#[cfg(test)]
mod tests {
    use super::*;

    fn key(runtime: Runtime, id: &str) -> ContainerKey {
        ContainerKey::new(runtime, id)
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("observer-names-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// `--max-containers 1` sizes the cache to one entry: a second container makes room
    /// (it panicked on an index past the end).
    #[test]
    fn a_cache_of_one_makes_room_for_each_new_container() {
        let mut r = Resolver::with_cap(StateDirs::default(), 1);
        for id in ["a", "b", "c"] {
            r.meta(&key(Runtime::Docker, id), None, None);
            assert_eq!(r.cache.len(), 1);
        }
        assert_eq!(r.evictions, 2);
    }

    #[test]
    fn docker_name_and_pod_labels_from_config_v2() {
        let root = tmp("docker");
        let id = "c".repeat(64);
        fs::create_dir_all(root.join("containers").join(&id)).unwrap();
        fs::write(
            root.join("containers").join(&id).join("config.v2.json"),
            r#"{"Name":"/web","Config":{"Image":"busybox","Labels":{"io.kubernetes.pod.name":"p1","io.kubernetes.pod.namespace":"ns1"}}}"#,
        )
        .unwrap();
        let mut r = Resolver::new(StateDirs {
            docker: root.clone(),
            ..StateDirs::default()
        });
        let m = r.meta(&key(Runtime::Docker, &id), None, None);
        assert_eq!(m.name.as_deref(), Some("web"));
        assert_eq!(m.pod.as_deref(), Some("p1"));
        assert_eq!(m.pod_namespace.as_deref(), Some("ns1"));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn containerd_annotations_give_kubernetes_names() {
        let state = tmp("containerd");
        let dir = state.join("io.containerd.runtime.v2.task/k8s.io/abc");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.container-name":"app","io.kubernetes.cri.sandbox-name":"web-0","io.kubernetes.cri.sandbox-namespace":"prod"}}"#,
        )
        .unwrap();
        let mut r = Resolver::new(StateDirs {
            containerd: vec![state.clone()],
            ..StateDirs::default()
        });
        let m = r.meta(&key(Runtime::Cri, "abc"), None, None);
        assert_eq!(
            (
                m.name.as_deref(),
                m.pod.as_deref(),
                m.pod_namespace.as_deref()
            ),
            (Some("app"), Some("web-0"), Some("prod"))
        );
        assert_eq!(m.runtime, Some(Runtime::Containerd));
        // A plain `ctr run` container: no annotations, the id is the name; namespace found by search.
        let dir = state.join("io.containerd.runtime.v2.task/default/fxc");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
        assert_eq!(
            r.meta(&key(Runtime::Containerd, "fxc"), None, None)
                .name
                .as_deref(),
            Some("fxc")
        );
        assert!(r.containerd_task_exists("default", "fxc"));
        fs::remove_dir_all(state).unwrap();
    }

    #[test]
    fn podman_names_from_containers_json() {
        let s = tmp("podman");
        fs::create_dir_all(s.join("overlay-containers")).unwrap();
        fs::write(
            s.join("overlay-containers/containers.json"),
            r#"[{"id":"dd","names":["db"]}]"#,
        )
        .unwrap();
        let mut r = Resolver::new(StateDirs {
            storage: vec![s.clone()],
            ..StateDirs::default()
        });
        assert_eq!(
            r.meta(&key(Runtime::Podman, "dd"), None, None)
                .name
                .as_deref(),
            Some("db")
        );
        assert_eq!(r.meta(&key(Runtime::Podman, "ee"), None, None).name, None);
        fs::remove_dir_all(s).unwrap();
    }

    #[test]
    fn corrupt_or_huge_state_files_give_no_name_and_no_panic() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state");
        let huge = tmp("huge").join("huge.json");
        fs::File::create(&huge)
            .unwrap()
            .set_len(state_file::MAX_STATE_FILE + 1)
            .unwrap();
        let mut files: Vec<PathBuf> = fs::read_dir(&fixtures)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        assert!(files.len() >= 4, "fixtures: {files:?}");
        files.push(huge.clone());
        let id = "d".repeat(64);
        for f in &files {
            let root = tmp("corrupt");
            let place = |rel: &str| {
                let p = root.join(rel);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::copy(f, &p).unwrap();
            };
            place(&format!("docker/containers/{id}/config.v2.json"));
            place(&format!(
                "ctr/io.containerd.runtime.v2.task/k8s.io/{id}/config.json"
            ));
            place("storage/overlay-containers/containers.json");
            place(&format!(
                "storage/overlay-containers/{id}/userdata/config.json"
            ));
            place("launcher/x/config.json");
            let mut r = Resolver::new(StateDirs {
                docker: root.join("docker"),
                containerd: vec![root.join("ctr")],
                storage: vec![root.join("storage")],
                launcher: root.join("launcher"),
                oci: Vec::new(),
            });
            for rt in [
                Runtime::Docker,
                Runtime::Cri,
                Runtime::Containerd,
                Runtime::Podman,
                Runtime::Crio,
                Runtime::Observer,
            ] {
                let m = r.meta(&key(rt, &id), None, None);
                assert_eq!(m.pod, None, "{rt:?} from {}", f.display());
                assert!(
                    m.name.is_none() || m.name.as_deref() == Some(id.as_str()),
                    "{rt:?} from {}: {m:?}",
                    f.display()
                );
            }
            fs::remove_dir_all(root).unwrap();
        }
        fs::remove_dir_all(huge.parent().unwrap()).unwrap();
    }
}
