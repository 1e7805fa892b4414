//! The container an exported item came from, and its names. The event loop only hands on
//! what the table already holds (the container's key, its containerd namespace and pod UID
//! from the cgroup path, its PID 1), shared once per container; the sink's thread asks the
//! runtimes' state files for the names (`containers::names::Resolver`, cached there), so no
//! state-file read ever runs on the event loop.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::{
    containers::{
        names::{Meta, Resolver, StateDirs},
        Container, ContainerKey,
    },
    table::Table,
};

/// Containers remembered by the event loop's cache before it starts again (a node runs a
/// few hundred; a churn of short-lived containers must not grow it for good).
const CACHE_MAX: usize = 4096;

/// What the table knows of a container, as the resolver takes it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(super) key: ContainerKey,
    ctr_namespace: Option<String>,
    pod_uid: Option<String>,
    init_pid: Option<u32>,
}

/// The event loop's origins, one shared `Arc` per container.
#[derive(Default)]
pub(super) struct Origins(Mutex<FxHashMap<ContainerKey, Arc<Origin>>>);

impl Origins {
    /// The origin of `pid`'s container (None for a host process).
    pub(super) fn of(&self, table: &Table, pid: u32) -> Option<Arc<Origin>> {
        let c = table.container_of(pid)?;
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = cache.get(&c.key) {
            return Some(o.clone());
        }
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        let o = Arc::new(origin(c, table.init_of(c)));
        cache.insert(c.key.clone(), o.clone());
        Some(o)
    }
}

impl Origins {
    /// The origin of a history entry's container: as the events saw it, else its key alone
    /// (the resolver then searches every containerd namespace).
    pub(super) fn of_key(&self, key: &ContainerKey) -> Arc<Origin> {
        let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(key).cloned().unwrap_or_else(|| {
            Arc::new(Origin {
                key: key.clone(),
                ctr_namespace: None,
                pod_uid: None,
                init_pid: None,
            })
        })
    }
}

#[cfg(test)]
impl Origin {
    pub(super) fn bare_for_tests(key: &ContainerKey) -> Origin {
        Origin {
            key: key.clone(),
            ctr_namespace: None,
            pod_uid: None,
            init_pid: None,
        }
    }
}

fn origin(c: &Container, init_pid: Option<u32>) -> Origin {
    Origin {
        key: c.key.clone(),
        ctr_namespace: c.ctr_namespace.clone(),
        pod_uid: c.pod_uid.clone(),
        init_pid,
    }
}

/// A container's fields in every exported record (docs/export.md): the runtime's id, the
/// runtime as the views name it (a CRI container's real runtime once its state is read),
/// and the names and pod the runtime's state gives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Names {
    pub(crate) container_id: String,
    pub(crate) container_name: Option<String>,
    pub(crate) runtime: String,
    pub(crate) pod: Option<String>,
    pub(crate) pod_namespace: Option<String>,
    pub(crate) pod_uid: Option<String>,
}

impl Names {
    pub(super) fn new(o: &Origin, meta: Meta) -> Names {
        Names {
            container_id: o.key.id.clone(),
            container_name: meta.name,
            runtime: meta.runtime.unwrap_or(o.key.runtime).as_str().to_string(),
            pod: meta.pod,
            pod_namespace: meta.pod_namespace,
            pod_uid: o.pod_uid.clone().or(meta.pod_uid),
        }
    }
}

/// Of each second, the time a sink spends reading runtime state files at most: the rest
/// is its own (review item 7: a bare container's miss reads every runc state.json of the
/// node, and any user can make bare containers without end — `unshare --user --pid` — so
/// unbounded look-ups made the sinks drop everything).
const LOOKUP_BUDGET: Duration = Duration::from_millis(100);

/// A sink's names: its own resolver (no sink waits for another's look-ups, nor for the
/// API's), cached there per container; a container that is not cached is looked up while
/// the second's budget lasts, and past it goes out with its runtime and id only (looked up
/// for a later item).
pub(super) struct SinkNames {
    resolver: Resolver,
    window: Instant,
    spent: Duration,
    /// Items that went out without the look-up their names needed.
    pub(super) deferred: u64,
}

impl SinkNames {
    pub(super) fn new(dirs: StateDirs) -> SinkNames {
        SinkNames {
            resolver: Resolver::new(dirs),
            window: Instant::now(),
            spent: Duration::ZERO,
            deferred: 0,
        }
    }

    /// `o`'s names, on a sink's thread.
    pub(super) fn names(&mut self, o: &Origin) -> Names {
        if let Some(m) = self.resolver.fresh(&o.key) {
            return Names::new(o, m);
        }
        if self.window.elapsed() >= Duration::from_secs(1) {
            (self.window, self.spent) = (Instant::now(), Duration::ZERO);
        }
        if self.spent >= LOOKUP_BUDGET {
            self.deferred += 1;
            return Names::new(o, Meta::default());
        }
        let t = Instant::now();
        let m = self
            .resolver
            .meta(&o.key, o.ctr_namespace.as_deref(), o.init_pid);
        self.spent += t.elapsed();
        Names::new(o, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::cgroup::Runtime;

    #[test]
    fn names_take_the_resolved_runtime_and_the_cgroup_paths_pod_uid_first() {
        let o = Origin {
            key: ContainerKey::new(Runtime::Cri, "abc"),
            ctr_namespace: Some("k8s.io".into()),
            pod_uid: Some("uid-from-cgroup".into()),
            init_pid: None,
        };
        let meta = Meta {
            name: Some("web".into()),
            pod: Some("web-0".into()),
            pod_namespace: Some("shop".into()),
            runtime: Some(Runtime::Containerd),
            pod_uid: Some("uid-from-annotations".into()),
            ..Meta::default()
        };
        let n = Names::new(&o, meta);
        assert_eq!(n.runtime, "containerd");
        assert_eq!(n.pod_uid.as_deref(), Some("uid-from-cgroup"));
        assert_eq!(
            (n.container_name.as_deref(), n.pod.as_deref()),
            (Some("web"), Some("web-0"))
        );
        let bare = Names::new(
            &Origin {
                key: ContainerKey::new(Runtime::Bare, "4026532771"),
                ctr_namespace: None,
                pod_uid: None,
                init_pid: Some(7),
            },
            Meta::default(),
        );
        assert_eq!(
            (bare.runtime.as_str(), bare.container_name),
            ("bare", None),
            "nothing known: the id and runtime only"
        );
    }

    /// Review item 7: a burst of items from thousands of bare containers (any user's
    /// `unshare --user --pid`), each of whose look-ups reads every runc state file of the
    /// node, goes out within the look-up budget — names deferred, not the sink stalled.
    #[test]
    fn misses_of_many_bare_containers_do_not_stall_a_sink() {
        use crate::containers::oci::OciRoot;
        let dir = std::env::temp_dir().join(format!("observer-sink-names-{}", std::process::id()));
        let padding = format!("\"{}\"", "x".repeat(16 << 10));
        for i in 0..300 {
            let d = dir.join(format!("ctr{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let state = format!(
                r#"{{"id":"ctr{i}","init_process_pid":{},"init_process_start":1,"config":{{"labels":[{padding}]}}}}"#,
                900_000 + i
            );
            std::fs::write(d.join("state.json"), state).unwrap();
        }
        let dirs = StateDirs {
            oci: vec![OciRoot {
                runtime: Runtime::Runc,
                dir: dir.clone(),
            }],
            ..StateDirs::default()
        };
        let bare = |i: u32| Origin {
            key: ContainerKey::new(Runtime::Bare, (4_026_000_000 + i).to_string()),
            ctr_namespace: None,
            pod_uid: None,
            // A live process: its state is searched for in every state file.
            init_pid: Some(std::process::id()),
        };
        let mut names = SinkNames::new(dirs);
        let t = Instant::now();
        names.names(&bare(0));
        let one = t.elapsed();
        let n = 3000;
        let t = Instant::now();
        for i in 1..=n {
            let got = names.names(&bare(i));
            assert_eq!(got.runtime, "bare");
        }
        let all = t.elapsed();
        let _ = std::fs::remove_dir_all(&dir);
        let said = format!(
            "one look-up {one:?}; {n} items {all:?}, {} deferred",
            names.deferred
        );
        eprintln!("{said}");
        assert!(
            one * n > all * 4,
            "each item looked up would take 4 times as long: {said}"
        );
        assert!(names.deferred > 0, "{said}");
        let seconds = all.as_secs_f64().ceil() + 1.0;
        assert!(
            all.as_secs_f64()
                < 0.2 + seconds * LOOKUP_BUDGET.as_secs_f64() + one.as_secs_f64() * seconds,
            "{said}"
        );
    }
}
