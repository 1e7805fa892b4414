//! Pods: a sandbox (the pause or infra container holding the shared namespaces) and the
//! containers around it, identified from what the node has:
//!
//! - the Kubernetes pod UID of kubelet's cgroup parents (`kubepods*/pod<uid>`, both drivers)
//!   or of the CRI annotations (`io.kubernetes.cri.sandbox-uid`, `io.kubernetes.pod.uid`);
//! - the podman pod id of the pod's cgroup parent (`/libpod_parent/<pod id>`,
//!   `machine-libpod_pod_<pod id>.slice`);
//! - the sandbox id members carry (`io.kubernetes.cri.sandbox-id`,
//!   `io.kubernetes.cri-o.SandboxID`, also podman's), for bundles outside those cgroups.
//!
//! The sandbox is the container annotated as one (`container-type: sandbox`), the one the
//! others name as their sandbox, or podman's `<pod id 12>-infra`. The pod's name and
//! namespace come from the annotations, or for podman from the infra container's hostname
//! (podman sets it to the pod name). Pure: views pair each container with its metadata and
//! call `group`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{names::Meta, ContainerData};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PodKind {
    /// Identified by its Kubernetes pod UID.
    Kubernetes,
    /// A podman pod, by its pod id.
    Podman,
    /// Only a CRI sandbox id ties the containers together.
    Cri,
}

impl PodKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PodKind::Kubernetes => "kubernetes",
            PodKind::Podman => "podman",
            PodKind::Cri => "cri",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PodKey {
    pub(crate) kind: PodKind,
    pub(crate) id: String,
}

/// A container and what the node's state files say about it.
pub(crate) struct Member<'a> {
    pub(crate) index: u32,
    pub(crate) data: &'a ContainerData,
    pub(crate) meta: &'a Meta,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pod {
    pub(crate) key: PodKey,
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) uid: Option<String>,
    /// Container index of the sandbox, when it runs.
    pub(crate) sandbox: Option<u32>,
    /// Container indices: the sandbox first, then the others in index order.
    pub(crate) containers: Vec<u32>,
}

/// The pod a container names by itself (cgroup path or its own annotations).
fn own_key(m: &Member) -> Option<PodKey> {
    if let Some(uid) = m.data.pod_uid.as_ref().or(m.meta.pod_uid.as_ref()) {
        return Some(PodKey {
            kind: PodKind::Kubernetes,
            id: uid.clone(),
        });
    }
    m.data.pod_id.as_ref().map(|id| PodKey {
        kind: PodKind::Podman,
        id: id.clone(),
    })
}

/// The containers grouped into pods (containers in none are left out), sorted by key.
pub(crate) fn group(members: &[Member]) -> Vec<Pod> {
    // Sandbox container id → the pod it anchors, from containers that know their pod.
    let mut by_sandbox: HashMap<&str, PodKey> = HashMap::new();
    for m in members {
        if let Some(k) = own_key(m) {
            if m.meta.sandbox {
                by_sandbox.insert(&m.data.key.id, k.clone());
            }
            if let Some(sb) = &m.meta.sandbox_id {
                by_sandbox.insert(sb, k);
            }
        }
    }
    let named_sandboxes: std::collections::HashSet<&str> = members
        .iter()
        .filter_map(|m| m.meta.sandbox_id.as_deref())
        .collect();
    let mut pods: BTreeMap<PodKey, Vec<&Member>> = BTreeMap::new();
    for m in members {
        let key = own_key(m).or_else(|| {
            let anchor = m.meta.sandbox_id.as_deref().or((m.meta.sandbox
                || named_sandboxes.contains(m.data.key.id.as_str()))
            .then_some(m.data.key.id.as_str()))?;
            Some(by_sandbox.get(anchor).cloned().unwrap_or(PodKey {
                kind: PodKind::Cri,
                id: anchor.to_string(),
            }))
        });
        if let Some(k) = key {
            pods.entry(k).or_default().push(m);
        }
    }
    pods.into_iter()
        .map(|(key, ms)| {
            let is_sandbox = |m: &Member| {
                m.meta.sandbox
                    || named_sandboxes.contains(m.data.key.id.as_str())
                    || (key.kind == PodKind::Podman
                        && key.id.get(..12).is_some_and(|short| {
                            m.meta.name.as_deref() == Some(&format!("{short}-infra"))
                        }))
            };
            let sandbox = ms.iter().find(|m| is_sandbox(m)).map(|m| m.index);
            let mut containers: Vec<u32> = ms.iter().map(|m| m.index).collect();
            containers.sort_unstable_by_key(|&i| (Some(i) != sandbox, i));
            let first = |f: &dyn Fn(&Meta) -> Option<String>| {
                let sb = ms.iter().find(|m| Some(m.index) == sandbox);
                sb.into_iter().chain(ms.iter()).find_map(|m| f(m.meta))
            };
            let mut name = first(&|m| m.pod.clone());
            if name.is_none() && key.kind == PodKind::Podman {
                name = ms
                    .iter()
                    .find(|m| Some(m.index) == sandbox)
                    .and_then(|m| m.meta.hostname.clone());
            }
            Pod {
                namespace: first(&|m| m.pod_namespace.clone()),
                uid: match key.kind {
                    PodKind::Kubernetes => Some(key.id.clone()),
                    _ => first(&|m| m.pod_uid.clone()),
                },
                name,
                sandbox,
                containers,
                key,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
