//! Containers an OCI runtime starts by itself: `runc run -d` from a bundle has no runtime
//! cgroup that names it, only runc's state (`--runc-root`). A pod built the way a CRI
//! runtime builds one with runc — a sandbox bundle annotated as such, and a container that
//! joins its pid namespace and names it as its sandbox — is grouped from those annotations.
//! crun refuses hybrid cgroup hosts like this one: its test runs in the VM matrix (pure
//! cgroup v2, crun copied into the guest), runc's on the host. Run as root.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::common::{agent::*, eventually, runtimes::*, skipped_in_vm};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);
const ROOT: &str = "/run/observer-test/runc";
const CRUN_ROOT: &str = "/run/observer-test/crun";
const BARE: &str = "observer-test-barrunc";
const BARE_CRUN: &str = "observer-test-barcrun";
/// CRI ids (64 hex) as a CRI runtime gives runc.
const SANDBOX: &str = "0b5e7000000000000000000000000000000000000000000000000000000000aa";
const APP: &str = "0b5e7000000000000000000000000000000000000000000000000000000000bb";
const UID: &str = "0b5e7000-1111-2222-3333-444444444444";
/// kubelet's cgroupfs layout, at the hierarchies' root where kubelet puts it (a `kubepods`
/// anywhere else is only a name: containers::cgroup); the test's pod has its own UID.
const PODS: &str = "kubepods/besteffort";

/// An OCI runtime binary with its test-owned state root.
#[derive(Clone, Copy)]
struct Oci {
    bin: &'static str,
    root: &'static str,
}

const RUNC: Oci = Oci {
    bin: "runc",
    root: ROOT,
};
const CRUN: Oci = Oci {
    bin: "crun",
    root: CRUN_ROOT,
};

impl Oci {
    fn cmd(self, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin);
        c.args(["--root", self.root]).args(args);
        c
    }
}

fn runc(args: &[&str]) -> Command {
    RUNC.cmd(args)
}

/// Deletes the test's containers and bundles, however it ends.
struct Cleanup(PathBuf, Vec<PathBuf>);

impl Cleanup {
    /// Notes which of the pod's parent cgroups exist already: only the others are removed.
    fn new(dir: PathBuf) -> Cleanup {
        let mut ours = Vec::new();
        for root in cgroup_roots() {
            let mut d = root.clone();
            for c in PODS.split('/') {
                d = d.join(c);
                if !d.exists() {
                    ours.push(d.clone());
                }
            }
        }
        Cleanup(dir, ours)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in [APP, SANDBOX, BARE] {
            let _ = runc(&["delete", "-f", id]).output();
        }
        let _ = CRUN.cmd(&["delete", "-f", BARE_CRUN]).output();
        let _ = std::fs::remove_dir_all(&self.0);
        // The pod's cgroup, which runc leaves, and the parents the test made, deepest first.
        for root in cgroup_roots() {
            let _ = std::fs::remove_dir(root.join(PODS).join(format!("pod{UID}")));
        }
        for d in self.1.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A bundle in `dir/<id>`: the busybox rootfs, `<runtime> spec`'s config with `args`,
/// `annotations` and `namespaces` overrides.
#[allow(clippy::too_many_arguments)]
fn bundle(
    rt: Oci,
    dir: &Path,
    id: &str,
    args: &[&str],
    annotations: Value,
    pid_ns: Option<String>,
    cgroup: Option<String>,
) -> PathBuf {
    let (b, mut cfg) = spec_bundle(rt.bin, dir, id, args);
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
    write_config(&b, &cfg);
    b
}

/// `<runtime> run -d` (replacing one an interrupted run left); Err with what it said. The
/// container keeps the runtime's stdio, so they go to files (a pipe would never reach EOF).
fn try_run(rt: Oci, bundle: &Path, id: &str) -> Result<(), String> {
    let _ = rt.cmd(&["delete", "-f", id]).output();
    let err = bundle.join("run.err");
    let status = rt
        .cmd(&["run", "-d", "--bundle", bundle.to_str().unwrap(), id])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(bundle.join("run.out")).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    if status.success() {
        Ok(())
    } else {
        Err(std::fs::read_to_string(&err).unwrap_or_default())
    }
}

fn run(bundle: &Path, id: &str) {
    if let Err(e) = try_run(RUNC, bundle, id) {
        panic!("runc run {id}: {e}");
    }
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

/// A container `rt` started by itself (`sleep 1000` under `sleep 1001`): listed by its id
/// as name, with the runtime and PID 1 of the runtime's state, and its tree equal to /proc.
fn named_by_its_state(agent: &Agent, rt: Oci, id: &str) {
    let pid = oci_pid(rt, id);
    let c = eventually(T, &format!("the {} container by name", rt.bin), || {
        agent
            .json(&["containers"])
            .as_array()?
            .iter()
            .find(|c| c["name"] == id)
            .cloned()
    });
    assert_eq!(c["runtime"], rt.bin, "{c}");
    assert_eq!(c["init_pid"].as_u64(), Some(pid), "{c}");
    // `runc run -d` returns once the init was told to start, maybe before it ran `sleep
    // 1001` and forked: until then the tree (like /proc) holds one `runc:[2:INIT]`.
    eventually(T, "the container's two processes, equal to /proc", || {
        let t = tree_equal_to_proc(agent, id, T);
        (t["processes"].as_array()?.len() == 2).then_some(())
    });
}

fn state_pid(id: &str) -> u64 {
    oci_pid(RUNC, id)
}

fn oci_pid(rt: Oci, id: &str) -> u64 {
    let v: Value = serde_json::from_str(&ok(&mut rt.cmd(&["state", id]))).unwrap();
    v["pid"].as_u64().unwrap()
}

#[test]
fn runc_containers_have_their_names_and_cri_annotations_make_a_pod() {
    if skipped_in_vm("runc is not in the VM image; runs on the host") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("observer-test-oci-{}", std::process::id()));
    let _cleanup = Cleanup::new(dir.clone());
    let agent = Agent::start(&["--runc-root", ROOT]);

    // A bare container: only runc's state names it.
    let b = bundle(
        RUNC,
        &dir,
        BARE,
        &["sh", "-c", "sleep 1000 & exec sleep 1001"],
        json!({}),
        None,
        None,
    );
    run(&b, BARE);
    named_by_its_state(&agent, RUNC, BARE);

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
        RUNC,
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
        RUNC,
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

#[test]
fn crun_containers_have_their_names() {
    let dir = std::env::temp_dir().join(format!("observer-test-crun-{}", std::process::id()));
    let _cleanup = Cleanup::new(dir.clone());
    let b = bundle(
        CRUN,
        &dir,
        BARE_CRUN,
        &["sh", "-c", "sleep 1000 & exec sleep 1001"],
        json!({}),
        None,
        None,
    );
    let agent = Agent::start(&["--crun-root", CRUN_ROOT]);
    if let Err(e) = try_run(CRUN, &b, BARE_CRUN) {
        // crun refuses hosts with hybrid cgroups; the VM matrix (pure v2) runs this test.
        assert!(e.contains("hybrid"), "crun run: {e}");
        println!(
            "observer-test-skip: crun refuses this host's hybrid cgroups: {}",
            e.trim()
        );
        return;
    }
    named_by_its_state(&agent, CRUN, BARE_CRUN);
}
