//! Pods with real podman: a pod sharing its pid namespace (infra built by podman from
//! Debian's catatonit), one that does not, and one whose infra does not reap (busybox
//! `sleep` as PID 1). What observer says is compared with `podman pod inspect`, `podman ps`
//! and /proc. Run as root.

use std::time::Duration;

use crate::common::{agent::*, eventually, runtimes::*};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const SHARED: &str = "observer-test-sharedpod";
const PLAIN: &str = "observer-test-plainpod";
const LAZY: &str = "observer-test-lazypod";

/// Removes the test's pods (and their containers), however the test ends.
struct Cleanup;
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman(&["pod", "rm", "-f", "-t", "0", SHARED, PLAIN, LAZY]).output();
    }
}

fn pod_create(name: &str, extra: &[&str]) {
    let _ = podman(&["pod", "rm", "-f", "-t", "0", name]).output();
    let mut a = vec!["pod", "create", "--name", name, "--network", "none"];
    a.extend(extra);
    ok(&mut podman(&a));
}

fn run_in(pod: &str, name: &str, cmd: &str) {
    ok(&mut podman(&[
        "run",
        "-d",
        "--pod",
        pod,
        "--name",
        name,
        podman_ready(),
        "sh",
        "-c",
        cmd,
    ]));
}

fn inspect(pod: &str, field: &str) -> String {
    ok(&mut podman(&["pod", "inspect", pod, "--format", field]))
}

/// The ids of a pod's containers as podman lists them.
fn podman_members(pod: &str) -> Vec<String> {
    let mut v: Vec<String> = ok(&mut podman(&[
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &format!("pod={pod}"),
        "--format",
        "{{.ID}}",
    ]))
    .lines()
    .map(String::from)
    .collect();
    v.sort();
    v
}

fn pid_of(container: &str) -> u64 {
    ok(&mut podman(&[
        "inspect",
        container,
        "--format",
        "{{.State.Pid}}",
    ]))
    .parse()
    .unwrap()
}

fn ns_inode(pid: u64, kind: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .ino()
}

fn pod_of<'a>(pods: &'a Value, name: &str) -> Option<&'a Value> {
    pods.as_array()?.iter().find(|p| p["name"] == name)
}

#[test]
fn podman_pods_are_grouped_drawn_and_match_podman_and_proc() {
    let _cleanup = Cleanup;
    podman_ready();
    // Running first, so that it sees the orphans' adoption by the lazy sandbox.
    let agent = podman_agent();

    pod_create(SHARED, &["--share", "pid,ipc,net,uts"]);
    run_in(
        SHARED,
        "observer-test-podweb",
        "sleep 1000 & exec sleep 2000",
    );
    run_in(SHARED, "observer-test-poddb", "exec sleep 3000");
    pod_create(PLAIN, &[]);
    run_in(PLAIN, "observer-test-podplain", "exec sleep 3000");
    // An infra that never reaps: orphans of the pod's pid namespace become its zombies.
    let lazy_infra = "localhost/observer-test-lazy-infra:1";
    ok(podman(&[
        "import",
        "--change",
        "ENV=PATH=/bin",
        "--change",
        "ENTRYPOINT [\"sleep\", \"100000\"]",
    ])
    .arg(rootfs_tar())
    .arg(lazy_infra));
    pod_create(
        LAZY,
        &["--share", "pid,ipc,net,uts", "--infra-image", lazy_infra],
    );
    run_in(
        LAZY,
        "observer-test-podlazy",
        "(sleep 0.2 &); (sleep 0.3 &); exec sleep 3000",
    );

    // `observer pods` against `podman pod inspect` and `podman ps`.
    let pods = eventually(T, "three pods with their containers", || {
        let v = agent.json(&["pods"]);
        let n = |name| pod_of(&v, name).map_or(0, |p| p["containers"].as_array().unwrap().len());
        (n(SHARED) == 3 && n(PLAIN) == 2 && n(LAZY) == 2).then_some(v)
    });
    for name in [SHARED, PLAIN, LAZY] {
        let p = pod_of(&pods, name).unwrap();
        assert_eq!(p["kind"], "podman", "{p}");
        assert_eq!(p["id"], inspect(name, "{{.Id}}"), "{p}");
        let infra = inspect(name, "{{.InfraContainerID}}");
        assert_eq!(p["sandbox"], infra[..12], "{p}");
        let mut ids: Vec<String> = p["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(p["containers"][0]["id"], infra, "the sandbox first: {p}");
        assert_eq!(p["containers"][0]["sandbox"], true);
        ids.sort();
        assert_eq!(ids, podman_members(name), "{p}");
        // Shared namespaces as /proc has them.
        let infra_pid = pid_of(&infra);
        let member = p["containers"][1]["init_pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("no init pid: {p:#}"));
        let conmon = proc_facts(infra_pid).unwrap().ppid;
        for kind in ["pid", "net", "ipc", "uts", "cgroup", "user"] {
            // Shared by the pod: the same, and not the host's (conmon's).
            let same = ns_inode(infra_pid, kind) == ns_inode(member, kind)
                && ns_inode(infra_pid, kind) != ns_inode(conmon, kind);
            let listed = p["shared_namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == kind);
            assert_eq!(listed, same, "{name} {kind}: {p}");
        }
    }
    let shared = pod_of(&pods, SHARED).unwrap();
    let pidns = shared["shared_pidns"]
        .as_u64()
        .expect("a shared pid namespace");
    let infra_pid = pid_of(&inspect(SHARED, "{{.InfraContainerID}}"));
    assert_eq!(pidns, ns_inode(infra_pid, "pid"));
    assert!(pod_of(&pods, PLAIN).unwrap()["shared_pidns"].is_null());

    // The pod's tree equals /proc; with a shared pid namespace every process is in it,
    // under the sandbox's PID 1.
    for (reference, name) in [
        (SHARED, SHARED),
        (&pidns.to_string()[..], SHARED),
        (PLAIN, PLAIN),
    ] {
        let mut last = String::new();
        let t = eventually(T, &format!("tree {reference} == /proc"), || {
            let t = agent.json(&["tree", reference]);
            let diffs = pod_tree_vs_proc(&t);
            last = format!("{diffs:?}");
            diffs.is_empty().then_some(t)
        });
        assert_eq!(t["pod"]["name"], name, "{last}");
    }
    let (code, text, err) = agent.cli(&["tree", SHARED]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!("pod {SHARED} (podman")),
        "{text}"
    );
    assert!(lines[0].contains("shares pid,net,ipc,uts "), "{text}");
    assert!(
        lines[1].starts_with("catatonit ("),
        "PID 1 of the pod first:\n{text}"
    );
    assert!(
        lines[1].contains(&format!("({infra_pid} / ns 1)")),
        "{text}"
    );
    for c in ["observer-test-podweb", "observer-test-poddb"] {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("[{c}]")) && l.contains("sleep"))
            .unwrap_or_else(|| panic!("{c} not drawn:\n{text}"));
        assert!(line.starts_with("├─ ") || line.starts_with("└─ "), "{text}");
        assert!(line.contains("outside the pod's pid namespace"), "{line}");
    }
    eprintln!("observer tree {SHARED}:\n{text}");
    // A container of the pod is still a container.
    let t = agent.json(&["tree", "observer-test-podweb"]);
    assert_eq!(t["container"]["name"], "observer-test-podweb");
    // The API sends a pod reference's container tree to the pod's.
    let r = agent.socket_get(&format!("/v1/containers/{SHARED}/tree"));
    assert!(r.starts_with("HTTP/1.0 303"), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains(&format!("location: /v1/pods/{SHARED}/tree")),
        "{r}"
    );

    // The lazy sandbox leaves the pod's orphans as zombies; observer names it.
    let t = eventually(T, "two zombies not reaped by the sandbox", || {
        let t = agent.json(&["tree", LAZY]);
        (t["pod"]["sandbox_zombies"].as_u64() == Some(2)).then_some(t)
    });
    let infra_pid = pid_of(&inspect(LAZY, "{{.InfraContainerID}}"));
    let zombies: Vec<&Value> = t["containers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["processes"].as_array().unwrap())
        .filter(|p| p["state"] == "Z")
        .collect();
    assert_eq!(zombies.len(), 2, "{t:#}");
    for z in zombies {
        assert_eq!(z["ppid"].as_u64(), Some(infra_pid), "{z}");
        assert_eq!(z["adopter"], "pod_sandbox", "{z}");
        let f = proc_facts(z["pid"].as_u64().unwrap()).expect("in /proc");
        assert_eq!((f.state.as_str(), f.ppid), ("Z", infra_pid));
    }
    let (_, text, _) = agent.cli(&["tree", LAZY]);
    assert!(
        text.contains(&format!(
            "the sandbox's PID 1 sleep ({infra_pid}) is not reaping 2 zombies"
        )),
        "{text}"
    );
    eprintln!("observer tree {LAZY}:\n{text}");
    let (_, text, _) = agent.cli(&["pods"]);
    assert!(text.contains("2 (2 by sandbox)"), "{text}");
    eprintln!("observer pods:\n{text}");
}
