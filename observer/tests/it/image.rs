//! The container image: Containerfile (FROM scratch, the packaged static binary) built by
//! podman — no registry — and run as a node agent runs: privileged, in the host's pid,
//! network and cgroup namespaces, with /sys/kernel/btf, /sys/fs/cgroup, tracefs and the
//! runtimes' state directories mounted read-only. Its /metrics must name a Docker and a
//! podman container running on the host, and `observer tree <name>` run inside the agent's
//! container must equal the host's /proc. `cargo xtask test` builds the package first and
//! passes it in OBSERVER_DEB; the directory beside it, holding `<arch>/observer`, is the
//! image's build context.

use std::{path::PathBuf, time::Duration};

use crate::common::{agent::tree_vs_proc, eventually, http_body, http_get, runtimes::*};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const IMAGE: &str = "localhost/observer-test-agent:1";
const AGENT: &str = "observer-test-image-agent";
const DOCKER_NAME: &str = "observer-test-image-docker";
const PODMAN_NAME: &str = "observer-test-image-podman";

/// Removes what the test started, however it ends.
struct Cleanup;
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "2", AGENT]).output();
        let _ = podman(&["rm", "-f", "-t", "0", PODMAN_NAME]).output();
        let _ = docker().args(["rm", "-f", DOCKER_NAME]).output();
        let _ = podman(&["rmi", "-f", IMAGE]).output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (status code, body) of GET `path` on 127.0.0.1:`port`; None while nothing listens.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let response = http_get(&format!("127.0.0.1:{port}"), path).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, http_body(&response)))
}

#[test]
fn the_image_runs_as_a_node_agent_and_sees_the_hosts_docker_and_podman_containers() {
    let deb = PathBuf::from(std::env::var("OBSERVER_DEB").expect(
        "OBSERVER_DEB: build the package with `cargo xtask package` (cargo xtask test does)",
    ));
    let context = deb.parent().unwrap();
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    assert!(
        context.join(arch).join("observer").is_file(),
        "{context:?} has no {arch}/observer binary"
    );
    let containerfile = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Containerfile");
    let _cleanup = Cleanup;
    ok(podman(&["build", "-q", "-t", IMAGE, "-f"])
        .arg(&containerfile)
        .arg(context));

    docker_run_cmd(DOCKER_NAME);
    podman_run_cmd(PODMAN_NAME);

    let (api, metrics) = (free_port(), free_port());
    ok(&mut run_agent(&["--privileged"], api, metrics));
    let logs = || ok(&mut podman(&["logs", AGENT]));
    eventually(T, "the agent in its container to be ready", || {
        (get(metrics, "/readyz").map(|r| r.0) == Some(200)).then_some(())
    });
    eprintln!("agent container: {}", logs());
    for name in [DOCKER_NAME, PODMAN_NAME] {
        eventually(T, &format!("/metrics to name {name}"), || {
            let (_, body) = get(metrics, "/metrics")?;
            body.contains(&format!("container_name=\"{name}\""))
                .then_some(())
        });
    }

    for name in [DOCKER_NAME, PODMAN_NAME] {
        let mut last = String::new();
        let tree = eventually(T, &format!("tree {name} inside the agent == /proc"), || {
            let out = podman(&[
                "exec",
                AGENT,
                "/usr/bin/observer",
                "tree",
                name,
                "-o",
                "json",
            ])
            .output()
            .ok()?;
            let t: Value = serde_json::from_slice(&out.stdout).ok()?;
            let diffs = tree_vs_proc(&t);
            last = format!("{diffs:?} {t}");
            (diffs.is_empty() && t["processes"].as_array()?.len() >= 2).then_some(t)
        });
        assert_eq!(tree["container"]["name"], name, "{last}");
    }

    // As the DaemonSet runs it: not privileged, only BPF, PERFMON and SYS_PTRACE, read-only
    // root. Under podman's default seccomp profile bpf() is refused, and the agent says so.
    let _ = podman(&["rm", "-f", "-t", "2", AGENT]).output();
    let caps = [
        "--cap-drop=all",
        "--cap-add=bpf,perfmon,sys_ptrace",
        "--read-only",
    ];
    ok(&mut run_agent(&caps, api, metrics));
    let code = ok(&mut podman(&["wait", AGENT]));
    let said = String::from_utf8(podman(&["logs", AGENT]).output().unwrap().stderr).unwrap();
    assert_ne!(code.trim(), "0", "{said}");
    assert!(
        said.contains("a seccomp profile") && said.contains("seccomp=unconfined"),
        "{said}"
    );
    let _ = podman(&["rm", "-f", AGENT]).output();
    let mut unconfined = caps.to_vec();
    unconfined.push("--security-opt=seccomp=unconfined");
    ok(&mut run_agent(&unconfined, api, metrics));
    eventually(
        T,
        "the capabilities-only agent to see the containers",
        || {
            let (_, body) = get(metrics, "/metrics")?;
            [DOCKER_NAME, PODMAN_NAME]
                .iter()
                .all(|n| body.contains(&format!("container_name=\"{n}\"")))
                .then_some(())
        },
    );
}

/// `podman run` of the agent image as a node agent, with `security` options: host pid,
/// network and cgroup namespaces, read-only kernel and runtime state mounts.
fn run_agent(security: &[&str], api: u16, metrics: u16) -> std::process::Command {
    let ro = |p: &str| format!("{p}:{p}:ro");
    let mut a: Vec<String> = ["run", "-d", "--name", AGENT]
        .iter()
        .chain(security)
        .map(|s| s.to_string())
        .collect();
    for x in [
        "--pid=host",
        "--network=host",
        "--cgroupns=host",
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
    ] {
        a.push(x.into());
    }
    for dir in [
        "/sys/kernel/btf",
        "/sys/fs/cgroup",
        "/sys/kernel/tracing",
        DOCKER_ROOT,
        PODMAN_ROOT,
        PODMAN_RUNROOT,
    ] {
        a.push("-v".into());
        a.push(ro(dir));
    }
    for x in [
        IMAGE,
        "agent",
        "--listen",
        &format!("127.0.0.1:{api}"),
        "--metrics-listen",
        &format!("127.0.0.1:{metrics}"),
        "--docker-root",
        DOCKER_ROOT,
        "--storage-root",
        PODMAN_ROOT,
        "--storage-root",
        PODMAN_RUNROOT,
    ] {
        a.push(x.to_string());
    }
    podman(&a.iter().map(String::as_str).collect::<Vec<_>>())
}
