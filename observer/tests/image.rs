//! The container image: Containerfile (FROM scratch, the packaged static binary) built by
//! podman — no registry — and run as a node agent runs: privileged, in the host's pid,
//! network and cgroup namespaces, with /sys/kernel/btf, /sys/fs/cgroup, tracefs and the
//! runtimes' state directories mounted read-only. Its /metrics must name a Docker and a
//! podman container running on the host, and `observer tree <name>` run inside the agent's
//! container must equal the host's /proc. `cargo xtask test` builds the package first and
//! passes it in OBSERVER_DEB; the binary beside it is the image's build context.

mod common;

use std::{path::PathBuf, time::Duration};

use common::{agent::tree_vs_proc, eventually, http_body, http_get, runtimes::*};
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
    assert!(
        context.join("observer").is_file(),
        "{context:?} has no observer binary"
    );
    let containerfile = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Containerfile");
    let _cleanup = Cleanup;
    ok(podman(&["build", "-q", "-t", IMAGE, "-f"])
        .arg(&containerfile)
        .arg(context));

    docker_run_cmd(DOCKER_NAME);
    podman_run_cmd(PODMAN_NAME);

    let (api, metrics) = (free_port(), free_port());
    let ro = |p: &str| format!("{p}:{p}:ro");
    let _ = podman(&["rm", "-f", AGENT]).output();
    ok(&mut podman(&[
        "run",
        "-d",
        "--name",
        AGENT,
        "--privileged",
        "--pid=host",
        "--network=host",
        "--cgroupns=host",
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
        "-v",
        &ro("/sys/kernel/btf"),
        "-v",
        &ro("/sys/fs/cgroup"),
        "-v",
        &ro("/sys/kernel/tracing"),
        "-v",
        &ro(DOCKER_ROOT),
        "-v",
        &ro(PODMAN_ROOT),
        "-v",
        &ro(PODMAN_RUNROOT),
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
    ]));
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
}
