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

/// The NDJSON events of a stream read so far (chunk-size lines and a line cut by the last
/// read are skipped).
fn events_in(seen: &str) -> Vec<Value> {
    seen.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Reads the stream `s` (`seen`: what was read of it) until `found` finds what it wants in
/// its events.
fn read_until<R>(
    s: &mut std::os::unix::net::UnixStream,
    seen: &mut String,
    found: impl Fn(&[Value]) -> Option<R>,
) -> R {
    use std::io::Read;
    let deadline = std::time::Instant::now() + T;
    let mut buf = [0u8; 65536];
    loop {
        if let Some(r) = found(&events_in(seen)) {
            return r;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "not found in /v1/events within {T:?}:\n{seen}"
        );
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(n @ 1..) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            r => panic!("/v1/events ended ({r:?}):\n{seen}"),
        }
    }
}

fn is(e: &Value, kind: &str, pid: u64) -> bool {
    e["type"] == kind && e["pid"].as_u64() == Some(pid) && e["tid"] == e["pid"]
}

fn argv_is(e: &Value, argv: &[&str]) -> bool {
    e["type"] == "exec" && e["argv"] == json!(argv)
}

/// The events of a session whose root ran `sh -c <body>` and forked and exec'd `sleep 0.5`
/// (root exec, child fork, child exec, child exit, root exit), and the exec of a `sleep
/// 0.2` PID 1 (`pid1`) forked: None until all are in `evs`.
fn session_events(evs: &[Value], body: &str, pid1: u64) -> Option<(Vec<Value>, Value)> {
    let root_exec = evs.iter().find(|e| argv_is(e, &["sh", "-c", body]))?;
    let root = root_exec["pid"].as_u64()?;
    let child_exec = evs
        .iter()
        .find(|e| argv_is(e, &["sleep", "0.5"]) && e["ppid"].as_u64() == Some(root))?;
    let child = child_exec["pid"].as_u64()?;
    let mut all = vec![root_exec.clone(), child_exec.clone()];
    for (kind, pid) in [("fork", child), ("exit", child), ("exit", root)] {
        all.push(evs.iter().find(|e| is(e, kind, pid))?.clone());
    }
    let init_child = evs
        .iter()
        .find(|e| argv_is(e, &["sleep", "0.2"]) && e["ppid"].as_u64() == Some(pid1))?;
    Some((all, init_child.clone()))
}

/// Every event of a session's process says so, with its root; none of PID 1's or its
/// children's does.
fn check_session_events(all: &[Value], evs: &[Value], pid1: u64, whose: &str) {
    let root = all[0]["pid"].clone();
    for e in all {
        let s = &e["entered"];
        assert_eq!(s["via"], "docker exec", "{whose}: {e}");
        assert_eq!(s["root_pid"], root, "{whose}: {e}");
        assert_eq!(s["root"], e["pid"] == root, "{whose}: {e}");
        assert_eq!(s["seen_at"], "entry", "{whose}: {e}");
        assert_eq!(s["by"][0]["comm"], "runc", "{whose}: {e}");
    }
    let init: Vec<&Value> = evs
        .iter()
        .filter(|e| e["pid"].as_u64() == Some(pid1) || e["ppid"].as_u64() == Some(pid1))
        .collect();
    assert!(
        init.iter().any(|e| e["type"] == "exec"),
        "{whose}: {init:?}"
    );
    for e in init {
        assert!(e.get("entered").is_none(), "{whose}: {e}");
    }
}

#[test]
fn a_docker_exec_sessions_events_carry_entered_and_the_containers_own_do_not() {
    docker_ready();
    let agent = Agent::start(&["--docker-root", DOCKER_ROOT]);
    let dir = TempDir::new("observer-exec-sessions", "events");
    let text_file = dir.0.join("events.txt");
    let mut text = TextStream::start(&text_file, &["--type", "exec", "--hash", "off"]);
    let mut stream = EventStream::start(&["--type", "fork,exec,exit", "--hash", "off"]);
    // Subscribed once the header has come: the container's start is in the stream too.
    let (mut api, mut seen) = subscribe(&agent.socket, "/v1/events?type=fork,exec,exit");
    let name = "observer-test-exec-events";
    let init = "while :; do sleep 0.2 & wait; done";
    let (c, _id) = Docker::run(name, &[], &["sh", "-c", init]);
    let pid1 = u64::from(c.pid1());
    let body = "sleep 0.5 & wait";
    ok(docker().args(["exec", name, "sh", "-c", body]));

    let (all, _) = read_until(&mut api, &mut seen, |evs| session_events(evs, body, pid1));
    check_session_events(&all, &events_in(&seen), pid1, "/v1/events");
    assert!(
        events_in(&seen)
            .iter()
            .any(|e| is(e, "exec", pid1) && e.get("entered").is_none()),
        "PID 1's own exec, without entered"
    );

    // `observer events` (its own table) says the same, as JSON and as text.
    let root = all[0]["pid"].as_u64().unwrap();
    stream.wait_for(T, "the session root's exit", |e| is(e, "exit", root));
    stream.wait_for(T, "an exec PID 1 forked", |e| {
        argv_is(e, &["sleep", "0.2"]) && e["ppid"].as_u64() == Some(pid1)
    });
    let (all, _) = session_events(&stream.seen, body, pid1).expect("in observer events");
    check_session_events(&all, &stream.seen, pid1, "observer events --json");
    let child = &all[1]["pid"];
    // The mark sits right before `pid=`, where no name of a process reaches.
    let root_line = text.line(|l| l.contains(&format!(" pid={root} ")));
    assert!(
        root_line.contains(&format!(" [exec by docker exec] pid={root} ")),
        "{root_line}"
    );
    let child_line = text.line(|l| l.contains(&format!(" pid={child} ")));
    assert!(
        child_line.contains(&format!(" [exec by docker exec, root {root}] pid={child} ")),
        "{child_line}"
    );
    let init_line = text.line(|l| l.contains(&format!(" ppid={pid1} ")));
    assert!(!init_line.contains("[exec by"), "{init_line}");
}

/// The host pid of the process in pid namespace `pidns` whose argv is `argv`.
fn pid_in(pidns: u64, argv: &[&str]) -> u64 {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    eventually(T, &argv.join(" "), || {
        pids_in_pidns(pidns)
            .into_iter()
            .find(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == want))
    })
}

/// Its start time in clock ticks since boot (/proc/<pid>/stat field 22).
fn start_ticks(pid: u64) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// The process object of `pid` in `tree`, checked against /proc: a session seen at
/// start-up, `via`, its host parent first in `by`, its start as when it came in.
fn check_seen_at_startup(tree: &Value, pid: u64, via: &str, parent_comm: &str) -> Value {
    let p = tree["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("{pid} not in {tree:#}"))
        .clone();
    let facts = proc_facts(pid).expect("it runs");
    let s = &p["entered"];
    assert_eq!(s["via"], via, "{p:#}");
    assert_eq!((&s["root"], &s["root_pid"]), (&json!(true), &json!(pid)));
    assert_eq!(s["seen_at"], "startup", "{p:#}");
    assert_eq!(
        s["by"][0]["pid"], facts.ppid,
        "its host parent: {p:#} {facts:?}"
    );
    assert_eq!(s["by"][0]["comm"], parent_comm, "{p:#}");
    assert!(
        facts.ns_pids.len() == 2 && facts.ns_pids[1] > 1,
        "{facts:?}"
    );
    assert_eq!(s["time_ns"], p["start_time_ns"], "{p:#}");
    let tick = 1_000_000_000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert_eq!(
        s["time_ns"].as_u64().unwrap() / tick,
        start_ticks(pid),
        "{p:#}"
    );
    p
}

#[test]
fn sessions_that_began_before_the_agent_are_marked_at_start_up_and_the_init_is_not() {
    docker_ready();
    let name = "observer-test-exec-before";
    let (c, _id) = Docker::run(name, &[], &["sleep", "1000"]);
    let pid1 = c.pid1();
    let pidns = ns_inode(pid1, "pid");
    ok(docker().args(["exec", "-d", name, "sleep", "1001"]));
    let nsenter = Killed(
        Command::new("nsenter")
            .args(["-t", &pid1.to_string(), "-a", "sleep", "1002"])
            .spawn()
            .unwrap(),
    );
    let exec_pid = pid_in(pidns, &["sleep", "1001"]);
    let entered_pid = pid_in(pidns, &["sleep", "1002"]);
    // Docker's own account of its exec (`docker exec -d` printed nothing): its pid.
    let exec_ids = c.inspect("{{range .ExecIDs}}{{.}} {{end}}");
    let exec_id = exec_ids.split_whitespace().next().expect("an exec id");
    let api = ok(Command::new("curl").args([
        "-sf",
        "--unix-socket",
        DOCKER_SOCK.trim_start_matches("unix://"),
        &format!("http://docker/exec/{exec_id}/json"),
    ]));
    let exec: Value = serde_json::from_str(&api).unwrap();
    assert_eq!(exec["Pid"], exec_pid, "{exec:#}");

    let agent = Agent::start(&["--docker-root", DOCKER_ROOT]);
    agent.wait_startup_details();
    let (mut api, mut seen) = subscribe(&agent.socket, "/v1/events?type=exit");
    let tree = agent.json(&["tree", name]);
    check_seen_at_startup(&tree, exec_pid, "docker exec", "containerd-shim");
    let p = check_seen_at_startup(&tree, entered_pid, "nsenter", "nsenter");
    assert_eq!(p["entered"]["by"][0]["pid"], nsenter.0.id());
    let procs = tree["processes"].as_array().unwrap();
    let init = procs.iter().find(|p| p["pid"] == pid1).expect("PID 1");
    assert_eq!(init["ns_pid"], 1);
    assert!(init.get("entered").is_none(), "{init:#}");
    let marked = procs.iter().filter(|p| p.get("entered").is_some()).count();
    assert_eq!(marked, 2, "{tree:#}");
    let (_, text, _) = agent.cli(&["tree", name]);
    eprintln!("$ observer tree {name}\n{text}");
    assert!(
        text.contains("[exec by docker exec: containerd-shim ("),
        "{text}"
    );
    assert!(text.contains(", seen at start-up]"), "{text}");

    // Its end, as an event, says so too.
    assert_eq!(unsafe { libc::kill(exec_pid as i32, libc::SIGKILL) }, 0);
    let exit = read_until(&mut api, &mut seen, |evs| {
        evs.iter().find(|e| is(e, "exit", exec_pid)).cloned()
    });
    assert_eq!(exit["entered"]["via"], "docker exec", "{exit}");
    assert_eq!(exit["entered"]["seen_at"], "startup", "{exit}");
    unsafe { libc::kill(entered_pid as i32, libc::SIGKILL) };
}
