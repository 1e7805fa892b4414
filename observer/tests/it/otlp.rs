//! The OTLP sink (`--otlp-endpoint`) against a real agent and an OTLP/HTTP receiver in
//! Python (tools/otlp_receiver.py) that decodes every request with OpenTelemetry's own
//! protobuf definitions (PyPI `opentelemetry-proto`, in the venv `cargo xtask test` makes:
//! OBSERVER_PY_VENV). Proved: a `docker stop` and an OOM kill in a pod arrive with every
//! semantic-convention and observer attribute; redaction applies before a record leaves;
//! https with a private CA and an authentication header, and retries after 503; a
//! collector that accepts connections and never answers drops records (counted under
//! `sink="otlp"`) while events are applied as fast as ever. Run as root.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::common::{agent::Agent, runtimes::*, *};

const T: Duration = Duration::from_secs(90);
const NODE: &str = "otlp-test-node";

/// A directory of the test's own, removed at the end.
/// The venv's python with `opentelemetry-proto`.
fn python() -> PathBuf {
    let bin = std::env::var_os("OBSERVER_PY_VENV").unwrap_or_else(|| {
        panic!("OBSERVER_PY_VENV: the venv bin directory with opentelemetry-proto (cargo xtask test makes it)")
    });
    PathBuf::from(bin).join("python3")
}

/// The Python receiver this test started; killed (only it) when dropped.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, extra: &[&str]) -> Receiver {
        let out = dir.join(format!("records-{}.jsonl", rand_port_tag()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/tools/otlp_receiver.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let port = first
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the receiver said {first:?}"));
        Receiver { child, port, out }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits for a record for which `f` holds.
    fn wait_for(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        eventually(T, what, || {
            std::thread::sleep(Duration::from_millis(200));
            self.records().into_iter().find(&f)
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_port_tag() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// An agent with `NODE_NAME` set, as the DaemonSet's downward API sets it.
fn agent(extra: &[&str]) -> Agent {
    let socket = std::env::temp_dir().join(format!(
        "observer-otlp-{}-{}.sock",
        std::process::id(),
        rand_port_tag()
    ));
    let mut cmd = observer();
    cmd.arg("agent").env("NODE_NAME", NODE);
    Agent::launch(cmd, &socket, extra).unwrap_or_else(|e| panic!("{e}"))
}

fn status(a: &Agent) -> Value {
    serde_json::from_str(&http_body(&a.http_get("/v1/status"))).unwrap()
}

/// (sent, dropped) of the OTLP sink.
fn otlp_counts(a: &Agent) -> (u64, u64) {
    let st = status(a);
    let s = st["export"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["sink"] == "otlp"))
        .unwrap_or_else(|| panic!("no otlp sink in /v1/status: {}", st["export"]))
        .clone();
    (u64_of(&s, "sent"), u64_of(&s, "dropped"))
}

fn applied(a: &Agent) -> u64 {
    status(a)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| u64_of(e, "applied"))
        .sum()
}

/// The resource every record carries.
fn check_resource(r: &Value) {
    let res = &r["resource"];
    // The node's name is the host's name where the DaemonSet says it.
    assert_eq!(res["host.name"], NODE, "{r}");
    assert_eq!(res["k8s.node.name"], NODE, "{r}");
    assert_eq!(res["service.name"], "observer", "{r}");
    assert_eq!(r["scope"], "observer", "{r}");
}

#[test]
fn a_docker_stop_reaches_the_collector_with_process_container_and_signal_attributes() {
    let dir = TempDir::new("otlp", "stop");
    let rx = Receiver::start(&dir.0, &[]);
    let a = agent(&[
        "--docker-root",
        DOCKER_ROOT,
        "--otlp-endpoint",
        &rx.url("http"),
        "--export-types",
        "exec,signal,history",
    ]);
    let name = "observer-test-otlp-stop";
    let (c, id) = Docker::run(name, &[], &["sleep", "1000"]);
    let pid1 = u64::from(c.pid1());
    // PID 1 without a handler: SIGTERM ignored, SIGKILL after the timeout.
    ok(docker().args(["stop", "-t", "1", name]));
    let in_it = |r: &Value| r["attributes"]["container.name"] == name;
    // (runc's own processes in the container's cgroup end there too.)
    let ended = rx.wait_for("the history record of the stopped PID 1", |r| {
        in_it(r)
            && r["event_name"] == "observer.process.ended"
            && r["attributes"]["process.pid"] == pid1
    });
    check_resource(&ended);
    let at = &ended["attributes"];
    for (k, v) in [
        ("observer.schema", Value::from("observer.history/v2")),
        ("container.id", id.clone().into()),
        ("container.runtime", "docker".into()),
        ("process.pid", pid1.into()),
        ("process.command_line", "sleep 1000".into()),
        ("process.executable.name", "sleep".into()),
        ("process.exit.code", 137.into()),
        ("observer.ns_pid", 1.into()),
        ("observer.signal.name", "SIGKILL".into()),
        ("observer.signal.number", 9.into()),
    ] {
        assert_eq!(at[k], v, "{k}: {ended:#}");
    }
    assert!(
        at["process.executable.path"]
            .as_str()
            .is_some_and(|p| p.starts_with('/')),
        "{ended:#}"
    );
    assert!(at["observer.signal.sender.pid"].is_u64(), "{ended:#}");
    assert!(at["observer.signal.sender.origin"].is_string(), "{ended:#}");
    assert_eq!(ended["severity_text"], "WARN", "killed: a failure");
    assert!(ended["time_unix_nano"].as_u64().unwrap() > 1_600_000_000_000_000_000);
    assert_eq!(ended["content_encoding"], "gzip", "the default");
    let body: Value = serde_json::from_str(ended["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["container_name"], name, "the body is the JSON line");

    let term = rx.wait_for("the SIGTERM PID 1 ignored", |r| {
        in_it(r) && r["attributes"]["observer.signal.name"] == "SIGTERM"
    });
    let at = &term["attributes"];
    assert_eq!(term["event_name"], "observer.signal");
    assert_eq!(at["observer.signal.result"], "ignored", "{term:#}");
    assert_eq!(at["process.pid"], pid1, "{term:#}");
    assert!(at["observer.signal.sender.comm"].is_string(), "{term:#}");
    assert!(at["observer.signal.sender.pid"].is_u64(), "{term:#}");

    let exec = rx.wait_for("the exec of PID 1", |r| {
        in_it(r) && r["event_name"] == "observer.exec" && r["attributes"]["process.pid"] == pid1
    });
    let at = &exec["attributes"];
    assert!(at["process.parent_pid"].is_u64(), "{exec:#}");
    assert_eq!(
        at["observer.ns_pids"],
        serde_json::json!([pid1, 1]),
        "{exec:#}"
    );
    assert_eq!(
        at["process.command_args"],
        serde_json::json!(["sleep", "1000"])
    );
    assert_eq!(at["container.id"], id.as_str());
    // The agent counts a batch sent once the collector's answer came: after the collector
    // wrote it down.
    let (sent, _) = last_until(T, || otlp_counts(&a), |c| c.0 >= 3);
    assert!(sent >= 3, "sent {sent}");
}

/// A containerd container with a pod's CRI annotations; removed however the test ends.
struct CtrRm(&'static str);

impl Drop for CtrRm {
    fn drop(&mut self) {
        let _ = ctr().args(["task", "kill", "-s", "KILL", self.0]).output();
        std::thread::sleep(Duration::from_millis(300));
        let _ = ctr().args(["task", "delete", self.0]).output();
        let _ = ctr().args(["container", "rm", self.0]).output();
        let _ = ctr().args(["snapshot", "rm", self.0]).output();
    }
}

#[test]
fn an_oom_kill_in_a_pod_reaches_the_collector_with_pod_and_oom_attributes() {
    const UID: &str = "0b5e55ed-0000-4000-8000-000000000026";
    let dir = TempDir::new("otlp", "oom");
    let rx = Receiver::start(&dir.0, &[]);
    let image = containerd_ready();
    let a = agent(&[
        "--containerd-state",
        CTR_STATE,
        "--otlp-endpoint",
        &rx.url("http"),
        "--export-types",
        "oom,history",
    ]);
    let id = "observer-test-otlp-oom";
    drop(CtrRm(id));
    let _rm = CtrRm(id);
    let ann = |k: &str, v: &str| format!("io.kubernetes.cri.{k}={v}");
    let mut run = ctr();
    run.args(["run", "-d", "--memory-limit", "33554432"]);
    for (k, v) in [
        ("container-type", "container"),
        ("container-name", "oomer"),
        ("sandbox-name", "observer-otlp-pod"),
        ("sandbox-namespace", "observer-otlp-ns"),
        ("sandbox-uid", UID),
    ] {
        run.args(["--annotation", &ann(k, v)]);
    }
    // tail a child of the shell (not exec'd as the last command), so it has a parent.
    ok(run.args([image, id, "sh", "-c", "sleep 1; tail /dev/zero; echo ended"]));
    let ended = rx.wait_for("the OOM victim's history record", |r| {
        r["attributes"]["container.id"] == id
            && r["event_name"] == "observer.process.ended"
            && r["attributes"]["observer.oom.anon_rss_kb"].is_u64()
    });
    check_resource(&ended);
    let at = &ended["attributes"];
    for (k, v) in [
        ("container.name", "oomer"),
        ("container.runtime", "containerd"),
        ("k8s.pod.name", "observer-otlp-pod"),
        ("k8s.namespace.name", "observer-otlp-ns"),
        ("k8s.pod.uid", UID),
        ("process.executable.name", "tail"),
        ("observer.signal.name", "SIGKILL"),
    ] {
        assert_eq!(at[k], v, "{k}: {ended:#}");
    }
    assert_eq!(at["process.exit.code"], 137, "{ended:#}");
    assert_eq!(at["process.command_line"], "tail /dev/zero", "{ended:#}");
    assert!(
        at["process.parent_pid"].is_u64(),
        "tail's parent is the shell"
    );
    for k in [
        "total_vm_kb",
        "trigger_pid",
        "memory_limit_bytes",
        "time_ns",
    ] {
        assert!(at[&format!("observer.oom.{k}")].is_u64(), "{k}: {ended:#}");
    }
    assert_eq!(at["observer.signal.sender.origin"], "kernel", "{ended:#}");
    let oom = rx.wait_for("the OOM event", |r| {
        r["attributes"]["container.id"] == id && r["event_name"] == "observer.oom"
    });
    assert_eq!(oom["severity_text"], "WARN");
    assert_eq!(
        oom["attributes"]["observer.oom.victim_pid"], at["process.pid"],
        "{oom:#}"
    );
    assert_eq!(oom["attributes"]["k8s.pod.uid"], UID);
    drop(a);
}

/// A CA and a server certificate for 127.0.0.1 made with openssl in `dir`: (ca, cert, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let script = "set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=otlp-test-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout srv.key -out srv.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\\n' > ext
openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out srv.pem 2>/dev/null";
    ok(Command::new("sh").args(["-c", script]).current_dir(dir));
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}

#[test]
fn https_with_a_private_ca_and_a_header_retried_after_503_and_arguments_redacted() {
    let dir = TempDir::new("otlp", "tls");
    let (ca, cert, key) = certificates(&dir.0);
    let rx = Receiver::start(
        &dir.0,
        &[
            "--tls",
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
            "--require-header",
            "Authorization",
            "Bearer t0ken",
            "--fail-first",
            "2",
        ],
    );
    let a = agent(&[
        "--otlp-endpoint",
        &rx.url("https"),
        "--otlp-ca",
        ca.to_str().unwrap(),
        "--otlp-header",
        "Authorization=Bearer t0ken",
        "--otlp-compression",
        "none",
        "--export-types",
        "exec",
        "--redact-args",
        "secret=\\S*",
    ]);
    let mark = format!("otlp-tls-{}", std::process::id());
    ok(Command::new("/bin/true").args(["secret=hunter2", &mark]));
    let exec = rx.wait_for("the exec record over https", |r| {
        r["attributes"]["process.command_line"]
            .as_str()
            .is_some_and(|c| c.contains(&mark))
    });
    check_resource(&exec);
    assert_eq!(exec["content_encoding"], "identity");
    assert_eq!(
        exec["attributes"]["process.command_line"],
        format!("/bin/true *** {mark}"),
        "{exec:#}"
    );
    let all = std::fs::read_to_string(&rx.out).unwrap();
    assert!(!all.contains("hunter2"), "a secret reached the collector");
    let (sent, dropped) = last_until(T, || otlp_counts(&a), |c| c.0 > 0);
    assert!(
        sent > 0 && dropped == 0,
        "two 503s were retried: {sent} {dropped}"
    );
    drop(a);

    // A wrong header: 401 is final, the batch is dropped, counted and logged once.
    let a = agent(&[
        "--otlp-endpoint",
        &rx.url("https"),
        "--otlp-ca",
        ca.to_str().unwrap(),
        "--otlp-header",
        "Authorization=Bearer wrong",
        "--export-types",
        "exec",
    ]);
    ok(Command::new("/bin/true").arg(&mark));
    eventually(T, "the refused records counted", || {
        (otlp_counts(&a).1 > 0).then_some(())
    });
    // Logged when the answer came, perhaps after it was counted: read until it is there.
    let mut log = Vec::new();
    a.wait_for_log(&mut log, T, "the 401 logged", |l| l.contains("401"));
    let logged = log.iter().filter(|l| l.contains("401")).count();
    assert_eq!(logged, 1, "logged once: {log:?}");
}

#[test]
fn a_collector_that_never_answers_drops_and_counts_while_events_are_applied() {
    // Accepts every connection and never reads or answers.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let _held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in l.incoming().take(64) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(600));
    });
    let dir = TempDir::new("otlp", "stall");
    let file = dir.0.join("events.jsonl");
    let a = agent(&[
        "--otlp-endpoint",
        &format!("http://127.0.0.1:{port}"),
        "--otlp-timeout",
        "1s",
        "--export-file",
        file.to_str().unwrap(),
        "--export-file-max",
        "1G",
    ]);
    let before = applied(&a);
    let mark = format!("otlp-stall-{}", std::process::id());
    // ~5 events each: more than the OTLP queue holds while its sends time out.
    let script = format!(
        "i=0; while [ $i -lt 6000 ]; do /bin/true {mark} $i; i=$((i+1)); done; /bin/true {mark}-end"
    );
    let t = std::time::Instant::now();
    ok(Command::new("sh").args(["-c", &script]));
    let took = t.elapsed();
    let end = format!("{mark}-end");
    eventually(T, "the file sink to have the storm's last exec", || {
        std::fs::read_to_string(&file)
            .is_ok_and(|t| t.contains(&end))
            .then_some(())
    });
    let dropped = eventually(T, "OTLP drops counted", || {
        let (_, d) = otlp_counts(&a);
        (d > 0).then_some(d)
    });
    let after = applied(&a);
    assert!(
        after >= before + 6000 * 3,
        "events applied: {before} → {after}"
    );
    // The file sink, beside it, lost nothing: the stalled sink slowed no one.
    let text = std::fs::read_to_string(&file).unwrap();
    let execs = text
        .lines()
        .filter(|l| {
            l.contains("\"type\":\"exec\"")
                && l.contains("\"filename\":\"/bin/true\"")
                && l.contains(&mark)
        })
        .count();
    let st = status(&a);
    let file_dropped = st["export"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sink"] == "file")
        .map(|s| u64_of(s, "dropped"))
        .unwrap();
    if file_dropped == 0 {
        assert_eq!(execs, 6001, "every exec in the file");
    }
    eprintln!("6000 spawns in {took:?}; OTLP dropped {dropped}, file had {execs} execs");
    let m = http_body(&a.http_get("/metrics"));
    assert!(
        m.lines()
            .any(|l| l.starts_with("observer_export_dropped_total{sink=\"otlp\"}")),
        "{m}"
    );
    drop(a);
}
