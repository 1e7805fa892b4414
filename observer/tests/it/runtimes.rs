//! Real container runtimes from Debian — Docker (dockerd), containerd via `ctr` with
//! containerd-shim-runc-v2, podman with runc and conmon — observed by a real agent: the
//! container's runtime, id, name and shim are right, PID 1 has ns PPID 0 while its host parent
//! is the shim, a process entered with the runtime's exec has its host parent outside the
//! container, and `observer tree <name>` equals /proc. Run as root.
//! The runtimes run from test-owned roots (tests/it/common/runtimes.rs).

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use crate::common::{agent::*, runtimes::*, *};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
/// The checks every runtime shares, on a container running CMD plus one exec'd `sleep 999`.
fn check(agent: &Agent, name: &str, runtime: &str, id: &str, shim_comm: &str) {
    eventually(T, "the container's four processes", || {
        let (code, out, _) = agent.cli(&["tree", name, "-o", "json"]);
        let t: Value = serde_json::from_str(&out).ok().filter(|_| code == 0)?;
        let procs = t["processes"].as_array()?;
        (procs.len() == 4
            && procs.iter().any(|p| p["cmdline"] == "sleep 999")
            && procs.iter().any(|p| p["state"] == "Z"))
        .then_some(())
    });
    let tree = tree_equal_to_proc(agent, name, T);
    let c = &tree["container"];
    assert_eq!(c["runtime"], runtime, "{c:#}");
    assert_eq!(c["id"], id);
    assert_eq!(c["name"], name);
    let shim = c["shim_pid"].as_u64().expect("a shim above PID 1");
    let facts = proc_facts(shim).unwrap();
    assert_eq!(facts.comm, shim_comm);
    assert_eq!(c["shim_comm"], shim_comm);

    let procs = tree["processes"].as_array().unwrap();
    let pid1 = procs.iter().find(|p| p["ns_pid"] == 1).expect("PID 1");
    assert_eq!(pid1["pid"].as_u64(), c["init_pid"].as_u64());
    assert_eq!(pid1["ns_ppid"], 0, "PID 1 inside has ns PPID 0");
    assert_eq!(
        pid1["ppid"].as_u64(),
        Some(shim),
        "PID 1's host parent is the shim"
    );
    assert_eq!(pid1["cmdline"], "sleep 1001");

    let z = procs.iter().find(|p| p["state"] == "Z").unwrap();
    assert_eq!(
        z["ppid"], pid1["pid"],
        "the zombie's parent is PID 1, which never reaps"
    );
    assert_eq!(c["zombies"], 1);

    let exec = procs.iter().find(|p| p["cmdline"] == "sleep 999").unwrap();
    let members: Vec<u64> = procs.iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    assert!(
        !members.contains(&exec["ppid"].as_u64().unwrap()),
        "the exec'd process's host parent is outside the container"
    );
    assert_eq!(exec["ns_ppid"], 0);
    assert!(exec["ns_pid"].as_u64().unwrap() > 1);

    // The same container by a member's host pid and by an id prefix.
    for reference in [exec["pid"].to_string(), id[..id.len().min(8)].to_string()] {
        assert_eq!(
            agent.json(&["tree", &reference])["container"]["id"],
            id,
            "tree {reference}"
        );
    }
    let text = agent.cli(&["tree", name]).1;
    assert!(text.contains(&format!("{shim_comm} ({shim})")), "{text}");
    assert!(
        text.contains(&format!("not reaped by sleep ({})", pid1["pid"])),
        "{text}"
    );

    let listed = agent.json(&["containers"]);
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .expect("listed");
    assert_eq!(row["processes"], 4);
    assert!(
        row["resources"]["memory_bytes"].as_u64().unwrap_or(0) > 0,
        "{row:#}"
    );
    assert_eq!(row["resources"]["pids"].as_u64(), Some(4), "{row:#}");
}

#[test]
fn docker_container_by_name_with_containerd_shim_and_docker_exec() {
    // The daemon and image first: the agent starts on a machine where dockerd runs.
    docker_ready();
    let agent = Agent::start(&["--docker-root", DOCKER_ROOT]);
    let name = "observer-test-docker";
    let id = docker_run_cmd(name);
    ok(docker().args(["exec", "-d", name, "sleep", "999"]));
    check(&agent, name, "docker", &id, "containerd-shim");
    ok(docker().args(["rm", "-f", name]));
}

#[test]
fn containerd_ctr_container_with_shim_runc_v2_and_task_exec() {
    let image = containerd_ready();
    let agent = Agent::start(&["--containerd-state", CTR_STATE]);
    let name = "observer-test-ctr";
    let _ = ctr().args(["task", "kill", "-s", "KILL", name]).output();
    std::thread::sleep(Duration::from_millis(300));
    let _ = ctr().args(["container", "rm", name]).output();
    let _ = ctr().args(["snapshot", "rm", name]).output();
    ok(ctr().args(["run", "-d", image, name, "sh", "-c", CMD]));
    // `ctr task exec` stays attached: it runs in the background for the test.
    let mut exec: Child = ctr()
        .args([
            "task",
            "exec",
            "--exec-id",
            "observer-exec",
            name,
            "sleep",
            "999",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    check(&agent, name, "containerd", name, "containerd-shim");
    let _ = exec.kill();
    let _ = exec.wait();
    let _ = ctr().args(["task", "kill", "-s", "KILL", name]).output();
    eventually(T, "the ctr task to stop", || {
        succeeds(ctr().args(["task", "delete", name])).then_some(())
    });
    ok(ctr().args(["container", "rm", name]));
}

#[test]
fn podman_container_with_runc_conmon_and_podman_exec() {
    podman_ready();
    let agent = podman_agent();
    let name = "observer-test-podman";
    let id = podman_run_cmd(name);
    ok(&mut podman(&["exec", "-d", name, "sleep", "999"]));
    check(&agent, name, "podman", &id, "conmon");
    ok(&mut podman(&["rm", "-f", name]));
}
