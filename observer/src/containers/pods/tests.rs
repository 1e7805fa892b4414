//! Pod grouping from the layouts runtimes write: containerd and cri-o bundles (fixtures in
//! tests/fixtures/pods written as those runtimes write them), kubelet cgroup trees in both
//! drivers, and the podman pod captured on this machine.

use super::*;
use crate::containers::{cgroup::parse_path, names::parse};

const SB: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const C1: &str = "b1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const C2: &str = "d1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const UID1: &str = "4f1c3e2a-9b7d-4c5e-8f6a-1b2c3d4e5f60";
const SB2: &str = "c1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const C3: &str = "e1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const UID2: &str = "7e6d5c4b-3a29-4817-a6b5-c4d3e2f1a0b9";

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let p = format!("{}/tests/fixtures/pods/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// A state file's typed fields from its JSON.
fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn data(path: &str) -> ContainerData {
    let m = parse_path(path).unwrap_or_else(|| panic!("{path}"));
    ContainerData {
        key: crate::containers::ContainerKey::new(m.runtime, m.id),
        pod_uid: m.pod_uid,
        pod_id: m.pod_id,
        ctr_namespace: m.namespace,
        cgroup: path.into(),
        pidns: 0,
        forks: 0,
        execs: 0,
        exits: 0,
        signals: vec![],
        oom_victims: 0,
        exit_classes: [0; 4],
    }
}

fn pods(items: &[(ContainerData, Meta)]) -> Vec<Pod> {
    let members: Vec<Member> = items
        .iter()
        .enumerate()
        .map(|(i, (d, m))| Member {
            index: i as u32,
            data: d,
            meta: m,
        })
        .collect();
    group(&members)
}

fn containerd(file: &str, id: &str) -> Meta {
    parse::containerd(&fixture(file), id)
}

#[test]
fn a_containerd_pod_under_kubelets_systemd_driver() {
    let slice = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        UID1.replace('-', "_")
    );
    let items = [
        (
            data(&format!("{slice}/cri-containerd-{C1}.scope")),
            containerd("containerd-container.json", C1),
        ),
        (
            data(&format!("{slice}/cri-containerd-{SB}.scope")),
            containerd("containerd-sandbox.json", SB),
        ),
    ];
    let p = pods(&items);
    assert_eq!(p.len(), 1, "{p:?}");
    let p = &p[0];
    assert_eq!(
        p.key,
        PodKey {
            kind: PodKind::Kubernetes,
            id: UID1.into()
        }
    );
    assert_eq!(
        (p.name.as_deref(), p.namespace.as_deref()),
        (Some("web-0"), Some("shop"))
    );
    // The sandbox (index 1 of the slice) first.
    assert_eq!((p.sandbox, p.containers.as_slice()), (Some(1), &[1, 0][..]));
}

#[test]
fn kubelets_cgroupfs_driver_and_bundles_without_kubelet_cgroups() {
    // cgroupfs driver: /kubepods/<qos>/pod<uid>/<id> (the runtime is told by the state files).
    let items = vec![
        (
            data(&format!("/kubepods/besteffort/pod{UID1}/{SB}")),
            containerd("containerd-sandbox.json", SB),
        ),
        (
            data(&format!("/kubepods/besteffort/pod{UID1}/{C1}")),
            containerd("containerd-container.json", C1),
        ),
    ];
    let p = pods(&items);
    assert_eq!(
        (p.len(), p[0].sandbox, p[0].key.kind),
        (1, Some(0), PodKind::Kubernetes)
    );
    // A containerd not under kubelet's cgroups (`/k8s.io/<id>`): the annotations tie them.
    let items = vec![
        (
            data(&format!("/k8s.io/{C1}")),
            containerd("containerd-container.json", C1),
        ),
        (
            data(&format!("/k8s.io/{SB}")),
            containerd("containerd-sandbox.json", SB),
        ),
        (data(&format!("/k8s.io/{C2}")), Meta::default()),
    ];
    let p = pods(&items);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].key.id.as_str(), p[0].sandbox), (UID1, Some(1)));
    assert_eq!(p[0].containers, [1, 0]);
    // With neither UIDs nor kubelet cgroups, the sandbox id alone groups them.
    let strip = |mut m: Meta| {
        m.pod_uid = None;
        m
    };
    let items = vec![
        (
            data(&format!("/k8s.io/{C1}")),
            strip(containerd("containerd-container.json", C1)),
        ),
        (
            data(&format!("/k8s.io/{SB}")),
            strip(containerd("containerd-sandbox.json", SB)),
        ),
    ];
    let p = pods(&items);
    assert_eq!(
        p[0].key,
        PodKey {
            kind: PodKind::Cri,
            id: SB.into()
        }
    );
    assert_eq!(
        (p[0].sandbox, p[0].name.as_deref()),
        (Some(1), Some("web-0"))
    );
}

#[test]
fn a_crio_pod_with_its_sandbox() {
    let items = vec![
        (
            data(&format!("/kubepods/burstable/pod{UID2}/crio-{C3}")),
            parse::crio(&fixture("crio-container.json")),
        ),
        (
            data(&format!("/kubepods/burstable/pod{UID2}/crio-{SB2}")),
            parse::crio(&fixture("crio-sandbox.json")),
        ),
    ];
    let p = pods(&items);
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0].key,
        PodKey {
            kind: PodKind::Kubernetes,
            id: UID2.into()
        }
    );
    assert_eq!(
        (p[0].name.as_deref(), p[0].sandbox),
        (Some("db-0"), Some(1))
    );
}

#[test]
fn a_podman_pod_named_by_its_infra_hostname() {
    // As captured here: `podman pod create --name probepod --share pid,ipc,uts` (cgroupfs).
    let pod = "819899278f7f5cbadf809ebd9a9e8c190236f256f08c9c9883728da79c28b551";
    let infra = "bfbd750c261281edc7b6c186be71d411e9f3d3f11be990bc700b6393cc970e5d";
    let web = "99fb2db21c6cff43f30994adbcdb37999082b412144007bb56aad6996a01cd28";
    let mut infra_meta = parse::podman(typed(
        serde_json::json!([{"id": infra, "names": ["819899278f7f-infra"]}]),
    ))
    .remove(infra)
    .unwrap();
    parse::podman_config(
        &typed(
            serde_json::json!({"hostname": "probepod", "annotations": {"io.container.manager": "libpod"}}),
        ),
        &mut infra_meta,
    );
    let mut web_meta = parse::podman(typed(serde_json::json!([{"id": web, "names": ["podweb"]}])))
        .remove(web)
        .unwrap();
    parse::podman_config(
        &typed(serde_json::json!({"annotations": {
            "io.kubernetes.cri-o.ContainerType": "container",
            "io.kubernetes.cri-o.SandboxID": infra}})),
        &mut web_meta,
    );
    let items = vec![
        (
            data(&format!("/libpod_parent/{pod}/libpod-{web}")),
            web_meta,
        ),
        (
            data(&format!("/libpod_parent/{pod}/libpod-{infra}")),
            infra_meta.clone(),
        ),
        // A podman container outside any pod.
        (
            data(&format!("/libpod_parent/libpod-{C2}")),
            Meta::default(),
        ),
    ];
    let p = pods(&items);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        p[0].key,
        PodKey {
            kind: PodKind::Podman,
            id: pod.into()
        }
    );
    assert_eq!(
        (p[0].name.as_deref(), p[0].sandbox),
        (Some("probepod"), Some(1))
    );
    assert_eq!(p[0].containers, [1, 0]);
    // The infra is recognised by its name even when no member has started yet.
    let p = pods(&[(
        data(&format!("/libpod_parent/{pod}/libpod-{infra}")),
        infra_meta,
    )]);
    assert_eq!(p[0].sandbox, Some(0));
}
