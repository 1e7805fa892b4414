//! Containers an OCI runtime starts by itself: `runc run -d` from a bundle has no runtime
//! cgroup that names it, only runc's state (`--runc-root`). A pod built the way a CRI
//! runtime builds one with runc — a sandbox bundle annotated as such, and a container that
//! joins its pid namespace and names it as its sandbox — is grouped from those annotations.
//! crun refuses this machine's hybrid cgroups, so crun's state file is covered by parser
//! fixtures (src/containers/oci.rs). Run as root.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{agent::*, eventually, runtimes::*};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);
const ROOT: &str = "/run/observer-test/runc";
const BARE: &str = "observer-test-barrunc";
/// CRI ids (64 hex) as a CRI runtime gives runc.
const SANDBOX: &str = "0b5e7000000000000000000000000000000000000000000000000000000000aa";
const APP: &str = "0b5e7000000000000000000000000000000000000000000000000000000000bb";
const UID: &str = "0b5e7000-1111-2222-3333-444444444444";
/// kubelet's cgroupfs layout under a test-owned parent.
const PODS: &str = "observer-test/kubepods/besteffort";

fn runc(args: &[&str]) -> Command {
    let mut c = Command::new("runc");
    c.args(["--root", ROOT]).args(args);
    c
}

/// Deletes the test's runc containers and bundles, however it ends.
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in [APP, SANDBOX, BARE] {
            let _ = runc(&["delete", "-f", id]).output();
        }
        let _ = std::fs::remove_dir_all(&self.0);
        // The pod's parent cgroups, which runc leaves, deepest first, in every hierarchy.
        for root in cgroup_roots() {
            let mut dir = root.join(PODS).join(format!("pod{UID}"));
            while dir != root {
                let _ = std::fs::remove_dir(&dir);
                dir = dir.parent().unwrap().to_path_buf();
            }
        }
    }
}

/// A bundle in `dir/<id>`: the busybox rootfs, `runc spec`'s config with `args`,
/// `annotations` and `namespaces` overrides.
fn bundle(
    dir: &Path,
    id: &str,
    args: &[&str],
    annotations: Value,
    pid_ns: Option<String>,
    cgroup: Option<String>,
) -> PathBuf {
    let b = dir.join(id);
    std::fs::create_dir_all(b.join("rootfs")).unwrap();
    ok(Command::new("tar")
        .arg("-C")
        .arg(b.join("rootfs"))
        .arg("-xf")
        .arg(rootfs_tar()));
    ok(Command::new("runc").arg("spec").current_dir(&b));
    let p = b.join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    cfg["process"]["args"] = json!(args);
    cfg["process"]["terminal"] = json!(false);
    cfg["process"]["env"] = json!(["PATH=/bin"]);
    cfg["annotations"] = annotations;
    if let Some(c) = cgroup {
        cfg["linux"]["cgroupsPath"] = json!(c);
    }
    if let Some(path) = pid_ns {
        for ns in cfg["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "pid" {
                ns["path"] = json!(path);
            }
        }
    }
    std::fs::write(&p, cfg.to_string()).unwrap();
    b
}

/// `runc run -d` (replacing one an interrupted run left): the container keeps runc's
/// stdio, so they go to files (a pipe would never reach EOF).
fn run(bundle: &Path, id: &str) {
    let _ = runc(&["delete", "-f", id]).output();
    let err = bundle.join("runc.err");
    let status = runc(&["run", "-d", "--bundle", bundle.to_str().unwrap(), id])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(bundle.join("runc.out")).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "runc run {id}: {}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
}

/// Where each cgroup hierarchy is mounted.
fn cgroup_roots() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect()
}

fn state_pid(id: &str) -> u64 {
    let v: Value = serde_json::from_str(&ok(&mut runc(&["state", id]))).unwrap();
    v["pid"].as_u64().unwrap()
}

#[test]
fn runc_containers_have_their_names_and_cri_annotations_make_a_pod() {
    let dir = std::env::temp_dir().join(format!("observer-test-oci-{}", std::process::id()));
    let _cleanup = Cleanup(dir.clone());
    let agent = Agent::start(&["--runc-root", ROOT]);

    // A bare container: only runc's state names it.
    let b = bundle(
        &dir,
        BARE,
        &["sh", "-c", "sleep 1000 & exec sleep 1001"],
        json!({}),
        None,
        None,
    );
    run(&b, BARE);
    let pid = state_pid(BARE);
    let c = eventually(T, "the runc container by name", || {
        agent
            .json(&["containers"])
            .as_array()?
            .iter()
            .find(|c| c["name"] == BARE)
            .cloned()
    });
    assert_eq!(c["runtime"], "runc", "{c}");
    assert_eq!(c["init_pid"].as_u64(), Some(pid), "{c}");
    let t = tree_equal_to_proc(&agent, BARE, T);
    assert_eq!(t["processes"].as_array().unwrap().len(), 2, "{t:#}");

    // A pod as a CRI runtime makes one with runc: kubelet's cgroup layout, the CRI
    // annotations, the container in the sandbox's pid namespace.
    let cri = |kind: &str, name: Option<&str>| {
        let mut a = json!({
            "io.kubernetes.cri.container-type": kind,
            "io.kubernetes.cri.sandbox-id": SANDBOX,
            "io.kubernetes.cri.sandbox-name": "observer-test-barepod",
            "io.kubernetes.cri.sandbox-namespace": "default",
            "io.kubernetes.cri.sandbox-uid": UID,
        });
        if let Some(n) = name {
            a["io.kubernetes.cri.container-name"] = json!(n);
        }
        a
    };
    let cgroup = |id: &str| Some(format!("/{PODS}/pod{UID}/{id}"));
    let sandbox = bundle(
        &dir,
        SANDBOX,
        &["sleep", "100000"],
        cri("sandbox", None),
        None,
        cgroup(SANDBOX),
    );
    run(&sandbox, SANDBOX);
    let sandbox_pid = state_pid(SANDBOX);
    let app = bundle(
        &dir,
        APP,
        &["sleep", "3000"],
        cri("container", Some("app")),
        Some(format!("/proc/{sandbox_pid}/ns/pid")),
        cgroup(APP),
    );
    run(&app, APP);
    let pod = eventually(T, "the runc pod", || {
        agent
            .json(&["pods"])
            .as_array()?
            .iter()
            .find(|p| {
                p["name"] == "observer-test-barepod"
                    && p["containers"].as_array().map(Vec::len) == Some(2)
            })
            .cloned()
    });
    assert_eq!(
        (&pod["kind"], &pod["id"]),
        (&json!("kubernetes"), &json!(UID)),
        "{pod}"
    );
    assert_eq!(pod["namespace"], "default", "{pod}");
    assert_eq!(pod["containers"][0]["sandbox"], true, "{pod}");
    assert_eq!(
        pod["containers"][0]["init_pid"].as_u64(),
        Some(sandbox_pid),
        "{pod}"
    );
    assert_eq!(pod["containers"][1]["name"], "app", "{pod}");
    assert!(
        pod["shared_namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "pid"),
        "{pod}"
    );
    let t = eventually(T, "the pod's tree == /proc", || {
        let t = agent.json(&["tree", "default/observer-test-barepod"]);
        pod_tree_vs_proc(&t).is_empty().then_some(t)
    });
    assert_eq!(t["containers"].as_array().unwrap().len(), 2, "{t:#}");
    let c = agent.json(&["containers"]);
    let app = c
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "app")
        .unwrap();
    assert_eq!(
        (&app["runtime"], &app["pod"]),
        (&json!("runc"), &json!("observer-test-barepod"))
    );
}
