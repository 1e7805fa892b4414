//! What each runtime's state file says, from the typed subset of it observer reads
//! (`state_file`): wrong types and missing keys give no name, never a panic (fuzzed:
//! fuzz/fuzz_targets/state_files.rs).

use std::{collections::HashMap, fmt};

use serde::{
    de::{self, Visitor},
    Deserialize, Deserializer,
};

use super::Meta;
use crate::containers::state_file::{FirstStr, Obj, Str};

/// Docker's `containers/<id>/config.v2.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DockerConfig {
    #[serde(rename = "Name")]
    pub(crate) name: Str,
    #[serde(rename = "Config")]
    pub(crate) config: Obj<DockerInner>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct DockerInner {
    #[serde(rename = "Image")]
    pub(crate) image: Str,
    #[serde(rename = "Labels")]
    pub(crate) labels: Obj<DockerLabels>,
}

/// The labels dockershim and cri-dockerd put on Kubernetes containers.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct DockerLabels {
    #[serde(rename = "io.kubernetes.pod.name")]
    pub(crate) pod: Str,
    #[serde(rename = "io.kubernetes.pod.namespace")]
    pub(crate) pod_namespace: Str,
    #[serde(rename = "io.kubernetes.docker.type")]
    pub(crate) docker_type: Str,
    #[serde(rename = "io.kubernetes.sandbox.id")]
    pub(crate) sandbox_id: Str,
    #[serde(rename = "io.kubernetes.pod.uid")]
    pub(crate) pod_uid: Str,
}

/// An OCI runtime config (`config.json` of a containerd task bundle, of cri-o's and
/// podman's `userdata`, of any bundle): its hostname and the annotations CRI runtimes and
/// podman write.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct OciConfig {
    pub(crate) annotations: Obj<Annotations>,
    pub(crate) hostname: Str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Annotations {
    #[serde(rename = "io.kubernetes.cri.container-type")]
    pub(crate) cri_container_type: Str,
    #[serde(rename = "io.kubernetes.cri.container-name")]
    pub(crate) cri_container_name: Str,
    #[serde(rename = "io.kubernetes.cri.sandbox-name")]
    pub(crate) cri_sandbox_name: Str,
    #[serde(rename = "io.kubernetes.cri.sandbox-namespace")]
    pub(crate) cri_sandbox_namespace: Str,
    #[serde(rename = "io.kubernetes.cri.sandbox-id")]
    pub(crate) cri_sandbox_id: Str,
    #[serde(rename = "io.kubernetes.cri.sandbox-uid")]
    pub(crate) cri_sandbox_uid: Str,
    #[serde(rename = "io.kubernetes.cri.image-name")]
    pub(crate) cri_image_name: Str,
    #[serde(rename = "io.kubernetes.pod.name")]
    pub(crate) pod_name: Str,
    #[serde(rename = "io.kubernetes.pod.namespace")]
    pub(crate) pod_namespace: Str,
    #[serde(rename = "io.kubernetes.pod.uid")]
    pub(crate) pod_uid: Str,
    #[serde(rename = "io.kubernetes.container.name")]
    pub(crate) container_name: Str,
    #[serde(rename = "io.kubernetes.cri-o.ContainerType")]
    pub(crate) crio_container_type: Str,
    #[serde(rename = "io.kubernetes.cri-o.ImageName")]
    pub(crate) crio_image_name: Str,
    #[serde(rename = "io.kubernetes.cri-o.SandboxID")]
    pub(crate) crio_sandbox_id: Str,
}

/// The launcher's `<name>/config.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LauncherConfig {
    pub(crate) id: Str,
    pub(crate) name: Str,
    pub(crate) rootfs: Str,
}

/// One entry of podman's containers.json.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PodmanEntry {
    id: Str,
    names: FirstStr,
}

/// containers/storage's `overlay-containers/containers.json` (podman): every container's
/// name by id, at most `MAX_PODMAN_ENTRIES` of them (the rest skipped, logged): entries cost
/// memory beyond their text, so their number is bounded as well as the file's size.
#[derive(Debug, Default)]
pub struct PodmanContainers(pub(crate) HashMap<String, Meta>);

pub(crate) const MAX_PODMAN_ENTRIES: usize = 32_768;

impl<'de> Deserialize<'de> for PodmanContainers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PodmanContainers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of containers")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut out = HashMap::new();
                let mut skipped = 0u64;
                while let Some(Obj(e)) = a.next_element::<Obj<PodmanEntry>>()? {
                    let Some(id) = e.id.0 else { continue };
                    if out.len() >= MAX_PODMAN_ENTRIES && !out.contains_key(&id) {
                        skipped += 1;
                        continue;
                    }
                    let meta = Meta {
                        name: e.names.0,
                        ..Meta::default()
                    };
                    out.insert(id, meta);
                }
                if skipped > 0 {
                    log::warn!(
                        "podman's containers.json lists more than {MAX_PODMAN_ENTRIES} containers: {skipped} left unnamed"
                    );
                }
                Ok(PodmanContainers(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Docker's `containers/<id>/config.v2.json`.
pub fn docker(v: &DockerConfig) -> Meta {
    let labels = &v.config.0.labels.0;
    Meta {
        name: v
            .name
            .0
            .as_deref()
            .map(|n| n.trim_start_matches('/').to_string()),
        pod: labels.pod.get(),
        pod_namespace: labels.pod_namespace.get(),
        image: v.config.0.image.get(),
        // dockershim and cri-dockerd label sandboxes `io.kubernetes.docker.type: podsandbox`.
        sandbox: labels.docker_type.is("podsandbox"),
        sandbox_id: labels.sandbox_id.get(),
        pod_uid: labels.pod_uid.get(),
        ..Meta::default()
    }
}

/// A containerd task bundle's `config.json` (CRI annotations); the id names it otherwise.
pub fn containerd(v: &OciConfig, id: &str) -> Meta {
    let a = &v.annotations.0;
    Meta {
        name: a.cri_container_name.get().or_else(|| Some(id.to_string())),
        pod: a.cri_sandbox_name.get().or_else(|| a.pod_name.get()),
        pod_namespace: a
            .cri_sandbox_namespace
            .get()
            .or_else(|| a.pod_namespace.get()),
        image: a.cri_image_name.get(),
        runtime: None,
        sandbox_id: a.cri_sandbox_id.get(),
        sandbox: a.cri_container_type.is("sandbox"),
        pod_uid: a.cri_sandbox_uid.get().or_else(|| a.pod_uid.get()),
        hostname: v.hostname.get(),
    }
}

/// containers/storage's `overlay-containers/containers.json` (podman): every container by id.
pub fn podman(v: PodmanContainers) -> HashMap<String, Meta> {
    v.0
}

/// A podman container's `userdata/config.json`: members of a pod name its infra
/// container in `io.kubernetes.cri-o.SandboxID`; the infra's hostname is the pod name.
pub fn podman_config(v: &OciConfig, m: &mut Meta) {
    let a = &v.annotations.0;
    m.sandbox_id = a.crio_sandbox_id.get();
    m.sandbox = a.crio_container_type.is("sandbox");
    m.hostname = v.hostname.get();
}

/// cri-o's `overlay-containers/<id>/userdata/config.json`.
pub fn crio(v: &OciConfig) -> Meta {
    let a = &v.annotations.0;
    Meta {
        name: a.container_name.get(),
        pod: a.pod_name.get(),
        pod_namespace: a.pod_namespace.get(),
        image: a.crio_image_name.get(),
        runtime: None,
        sandbox_id: a.crio_sandbox_id.get(),
        sandbox: a.crio_container_type.is("sandbox"),
        pod_uid: a.pod_uid.get(),
        hostname: v.hostname.get(),
    }
}

/// The launcher's `<name>/config.json`: its container's id and facts.
pub fn launcher(v: &LauncherConfig) -> Option<(String, Meta)> {
    let meta = Meta {
        name: v.name.get(),
        image: v.rootfs.get(),
        ..Meta::default()
    };
    Some((v.id.get()?, meta))
}
