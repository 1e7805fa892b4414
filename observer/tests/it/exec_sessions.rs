//! Exec sessions: a process that came into a container from outside is marked with how
//! (`docker exec`, `podman exec`, `ctr exec`, `nsenter`, `observer exec`), the host
//! processes it came in through and when — in `observer tree` (JSON `entered`, the text's
//! `[exec by …]`) and, once it ended, in `observer history <ctr> --exec` with its duration
//! and exit — with the real runtimes (Docker, podman with runc and conmon, containerd's
//! `ctr`), util-linux nsenter and observer's launcher. A `docker exec -d` session outlives
//! its client and runc. Every test removes the containers it started, also on failure.

use std::{process::Command, time::Duration};

use serde_json::{json, Value};

use crate::common::{agent::*, launcher::Ctr, runtimes::*, *};

const T: Duration = Duration::from_secs(60);
/// A session that runs a second and ends with `code`.
fn script(code: u8) -> String {
    format!("sleep 1; exit {code}")
}

/// The exit code of `cmd` (which must run).
fn code_of(cmd: &mut Command) -> i32 {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    out.status.code().unwrap_or(-1)
}

/// The history entry of the session that ran `sh -c <script>` in container `c`, as
/// `history --exec` lists it.
fn ended_session(agent: &Agent, c: &str, script: &str) -> Value {
    let argv = json!(["sh", "-c", script]);
    eventually(T, "the session's history entry", || {
        let (code, out, _) = agent.cli(&["history", c, "--exec", "-o", "json"]);
        let v: Value = serde_json::from_str(&out).ok().filter(|_| code == 0)?;
        v["entries"]
            .as_array()?
            .iter()
            .find(|e| e["argv"] == argv)
            .cloned()
    })
}

/// The session entry says how it came in, through which host processes (parent first),
/// and that it ran its second and ended with `code`.
fn check_ended(e: &Value, via: &str, by: &[&str], code: i64) {
    let s = &e["entered"];
    assert_eq!(s["via"], via, "{e:#}");
    assert_eq!(s["root"], true, "{e:#}");
    assert_eq!(s["root_pid"], e["pid"], "{e:#}");
    let comms: Vec<&str> = s["by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["comm"].as_str().unwrap())
        .collect();
    assert!(comms.starts_with(by), "by {comms:?}, expected {by:?} first");
    assert_eq!(e["exit_code"], code, "{e:#}");
    assert!(e["duration_s"].as_f64().unwrap() >= 0.9, "{e:#}");
    let at = s["time_ns"].as_u64().unwrap();
    assert!(at >= u64_of(e, "start_time_ns") && at <= u64_of(e, "end_time_ns"));
    assert!(e["ns_pid"].as_u64().unwrap() > 1, "{e:#}");
}

/// The text of `history --exec` marks the session.
fn check_text(agent: &Agent, c: &str, mark: &str) {
    let (code, text, err) = agent.cli(&["history", c, "--exec"]);
    assert_eq!(code, 0, "{err}");
    eprintln!("$ observer history {c} --exec\n{text}");
    assert!(text.contains(mark), "{text}");
}

#[test]
fn docker_exec_is_a_session_by_runc_and_the_shim_kept_in_the_history() {
    docker_ready();
    let agent = Agent::start(&["--docker-root", DOCKER_ROOT]);
    let name = "observer-test-exec-docker";
    let (_c, _id) = Docker::run(name, &[], &["sleep", "1000"]);
    let s = script(3);
    assert_eq!(code_of(docker().args(["exec", name, "sh", "-c", &s])), 3);
    let e = ended_session(&agent, name, &s);
    check_ended(&e, "docker exec", &["runc", "containerd-shim"], 3);
    check_text(&agent, name, "[exec by docker exec: runc (");
    // PID 1 and what it forks are no sessions.
    let (_, all, _) = agent.cli(&["history", name, "-o", "json"]);
    let all: Value = serde_json::from_str(&all).unwrap();
    assert!(all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["argv"] != json!(["sh", "-c", s]))
        .all(|x| x["entered"]["root"] != true));
}

#[test]
fn a_docker_exec_d_session_outlives_its_client_and_runc() {
    docker_ready();
    let agent = Agent::start(&["--docker-root", DOCKER_ROOT]);
    let name = "observer-test-exec-docker-d";
    let (_c, _id) = Docker::run(name, &[], &["sleep", "1000"]);
    let body = "sleep 600 & wait";
    ok(docker().args(["exec", "-d", name, "sh", "-c", body]));
    // The client has returned; runc exec ends and the shim adopts the session's root.
    let (root, tree) = eventually(T, "the session's root under the shim", || {
        let t = agent.json(&["tree", name]);
        let shim = t["container"]["shim_pid"].clone();
        let procs = t["processes"].as_array()?;
        let root = procs
            .iter()
            .find(|p| p["cmdline"] == format!("sh -c {body}") && p["ppid"] == shim)?;
        // And its sleep, exec'd (a view between the fork and the exec shows `sh`).
        procs
            .iter()
            .any(|p| p["ppid"] == root["pid"] && p["cmdline"] == "sleep 600")
            .then(|| (root.clone(), t.clone()))
    });
    let s = &root["entered"];
    assert_eq!(s["via"], "docker exec", "{root:#}");
    assert_eq!(s["root"], true);
    assert_eq!(
        s["by"][0]["comm"], "runc",
        "recorded when it came in: {root:#}"
    );
    let procs = tree["processes"].as_array().unwrap();
    let child = procs
        .iter()
        .find(|p| p["cmdline"] == "sleep 600")
        .expect("its sleep");
    assert_eq!(child["entered"]["root"], false, "inherited: {child:#}");
    assert_eq!(child["entered"]["root_pid"], root["pid"]);
    assert!(procs
        .iter()
        .filter(|p| p["ns_pid"] == 1)
        .all(|p| p.get("entered").is_none()));
    let (_, text, _) = agent.cli(&["tree", name]);
    eprintln!("$ observer tree {name}\n{text}");
    assert!(text.contains("[exec by docker exec: runc ("), "{text}");

    // It ends (killed from the host): the history keeps it with how it ended.
    let pid = root["pid"].as_u64().unwrap() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let e = ended_session(&agent, name, body);
    assert_eq!(e["entered"]["via"], "docker exec");
    assert_eq!(e["signal"], "SIGKILL", "{e:#}");
}

/// A podman container removed on drop.
struct Podman(&'static str);

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", self.0]).output();
    }
}

#[test]
fn podman_exec_is_a_session_by_runc_and_conmon() {
    podman_ready();
    let agent = podman_agent();
    let name = "observer-test-exec-podman";
    let _c = Podman(name);
    podman_run_cmd(name);
    let s = script(4);
    assert_eq!(code_of(&mut podman(&["exec", name, "sh", "-c", &s])), 4);
    let e = ended_session(&agent, name, &s);
    check_ended(&e, "podman exec", &["runc", "conmon"], 4);
    check_text(&agent, name, "[exec by podman exec: runc (");
}

/// A containerd task and container removed on drop.
struct CtrTask(&'static str);

impl CtrTask {
    /// Removes task and container `name` (never panics: it runs on drop, also while a
    /// failed test unwinds).
    fn clear(name: &str) {
        let _ = ctr().args(["task", "kill", "-s", "KILL", name]).output();
        for _ in 0..100 {
            let Ok(out) = ctr().args(["task", "delete", name]).output() else {
                break;
            };
            if out.status.success() || String::from_utf8_lossy(&out.stderr).contains("not found") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = ctr().args(["container", "rm", name]).output();
        let _ = ctr().args(["snapshot", "rm", name]).output();
    }
}

impl Drop for CtrTask {
    fn drop(&mut self) {
        CtrTask::clear(self.0);
    }
}

#[test]
fn ctr_task_exec_is_a_session_by_runc_and_the_shim() {
    let image = containerd_ready();
    let agent = Agent::start(&["--containerd-state", CTR_STATE]);
    let name = "observer-test-exec-ctr";
    CtrTask::clear(name);
    let _c = CtrTask(name);
    ok(ctr().args(["run", "-d", image, name, "sleep", "1000"]));
    let s = script(5);
    let exec = [
        "task",
        "exec",
        "--exec-id",
        "observer-exec",
        name,
        "sh",
        "-c",
        &s,
    ];
    assert_eq!(code_of(ctr().args(exec)), 5);
    let e = ended_session(&agent, name, &s);
    check_ended(&e, "ctr exec", &["runc", "containerd-shim"], 5);
    check_text(&agent, name, "[exec by ctr exec: runc (");
}

#[test]
fn nsenter_into_every_namespace_is_a_session_by_nsenter() {
    docker_ready();
    let agent = Agent::start(&["--docker-root", DOCKER_ROOT]);
    let name = "observer-test-exec-nsenter";
    let (c, _id) = Docker::run(name, &[], &["sleep", "1000"]);
    let pid1 = c.pid1().to_string();
    let s = script(6);
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &pid1, "-a", "sh", "-c", &s]);
    assert_eq!(code_of(&mut cmd), 6);
    let e = ended_session(&agent, name, &s);
    check_ended(&e, "nsenter", &["nsenter"], 6);
    check_text(&agent, name, "[exec by nsenter: nsenter (");
}

#[test]
fn observer_exec_is_a_session_by_the_observer_command_exported_and_stored() {
    let dir = TempDir::new("observer-exec-sessions", "export");
    let file = dir.0.join("history.jsonl");
    let state = dir.0.join("state");
    let state = state.to_str().unwrap();
    let export = [
        "--export-file",
        file.to_str().unwrap(),
        "--export-types",
        "history",
    ];
    let mut args = export.to_vec();
    args.extend(["--state-dir", state]);
    let agent = Agent::start(&args);
    let name = "obs-t-exec-session";
    let c = Ctr::start(name, &[], &["sleep", "1000"]);
    let s = script(7);
    assert_eq!(c.exec(&["sh", "-c", &s]).0, 7);
    let e = ended_session(&agent, name, &s);
    check_ended(&e, "observer exec", &["observer"], 7);
    check_text(&agent, name, "[exec by observer exec: observer (");
    // The history line carries it.
    let line = eventually(T, "the session's history line", || {
        let text = std::fs::read_to_string(&file).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["argv"] == json!(["sh", "-c", s]))
    });
    assert_eq!(line["entered"], e["entered"], "{line}");
    // A new agent has it from the history store, the same.
    let (st, _) = agent.stop_with(libc::SIGTERM);
    assert!(st.success());
    let again = Agent::start(&["--state-dir", state]);
    let stored = ended_session(&again, name, &s);
    assert_eq!(stored["entered"], e["entered"], "{stored}");
}
