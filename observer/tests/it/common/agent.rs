//! A real `observer agent` for a test (the shared harness, observer-harness): its own
//! socket and an ephemeral TCP port.
#![allow(dead_code)]

use std::{thread, time::Duration};

use serde_json::Value;

use super::observer;

/// The bearer token `Agent::start_with_token` agents require on TCP, and its bcrypt hash
/// (cost 4, made once with `htpasswd -nbBC 4 "" observer-test-token`).
pub const TEST_TOKEN: &str = "observer-test-token";
const TEST_TOKEN_HASH: &str = "$2y$04$iLa8PfO4sS5joAkwzikZo.95321eMJL8lqjx7hFSDw5uzyZtH9.F.";

/// The shared harness's agent ([`observer_harness::Agent`]: its fields and non-panicking
/// methods through `Deref`), with what the tests add: the binary under test, a socket of
/// the test's, CLI calls, and answers that panic instead of returning errors.
pub struct Agent {
    inner: observer_harness::Agent,
}

impl std::ops::Deref for Agent {
    type Target = observer_harness::Agent;

    fn deref(&self) -> &observer_harness::Agent {
        &self.inner
    }
}

impl Agent {
    pub fn start(extra: &[&str]) -> Agent {
        let socket = std::env::temp_dir().join(format!(
            "observer-test-{}-{}.sock",
            std::process::id(),
            rand_suffix()
        ));
        Agent::start_at(&socket, extra)
    }

    /// An agent on a given socket path (e.g. the one a killed agent left).
    pub fn start_at(socket: &std::path::Path, extra: &[&str]) -> Agent {
        let mut cmd = observer();
        cmd.arg("agent");
        Agent::launch(cmd, socket, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// An agent run by `cmd` (which ends in `observer agent`, perhaps behind a wrapper such
    /// as setpriv, perhaps with its own environment) on `socket`; Err with what it printed
    /// if it exits before it is ready.
    pub fn launch(
        cmd: std::process::Command,
        socket: &std::path::Path,
        extra: &[&str],
    ) -> Result<Agent, String> {
        observer_harness::Agent::start(observer_harness::Start {
            cmd,
            socket,
            extra,
            state_dir: true,
            ready_within: Duration::from_secs(60),
            on_line: Box::new(|l| eprintln!("agent: {l}")),
        })
        .map(|inner| Agent { inner })
        .map_err(|e| e.to_string())
    }

    /// An agent whose TCP listeners require the bearer token [`TEST_TOKEN`] (a
    /// `--web-config` with only that): every route answers there to a client that sends it.
    pub fn start_with_token(extra: &[&str]) -> Agent {
        let web = std::env::temp_dir().join(format!(
            "observer-test-web-{}-{}.yml",
            std::process::id(),
            rand_suffix()
        ));
        // Read once at start-up (only certificate files are watched): removed right after.
        std::fs::write(&web, format!("bearer_tokens:\n  test: {TEST_TOKEN_HASH}\n")).unwrap();
        let mut a = vec!["--web-config", web.to_str().unwrap()];
        a.extend(extra);
        let started = std::panic::catch_unwind(|| Agent::start(&a));
        let _ = std::fs::remove_file(&web);
        started.unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Sends `sig` and waits for the agent to exit: its status and how long it took.
    pub fn stop_with(self, sig: i32) -> (std::process::ExitStatus, Duration) {
        self.inner.stop_with(sig)
    }

    /// SIGKILL, as the OOM killer or an operator would: the agent gets no chance to clean up.
    /// What it left (socket, restart record) is removed when the returned guard drops.
    #[must_use = "the killed agent's socket and restart record are removed when this drops"]
    pub fn crash(self) -> observer_harness::Crashed {
        self.inner.crash()
    }

    /// Runs an observer CLI command against this agent; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = observer()
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `observer <args> -o json` parsed; panics on a non-zero exit.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let (code, out, err) = self.cli(&a);
        assert_eq!(code, 0, "observer {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}: {out}"))
    }

    /// Adds the lines the agent printed since the last call to `log` until one of `log`
    /// satisfies `pred`, and returns it: the agent may print a line after what it describes
    /// shows in its answers, so a single read of the log can come too early.
    pub fn wait_for_log(
        &self,
        log: &mut Vec<String>,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        super::eventually(timeout, what, || {
            log.extend(self.log_lines());
            log.iter().find(|l| pred(l)).cloned()
        })
    }

    /// Waits for the pass right after ready that reads the command lines, executables,
    /// namespaces and cgroup ids of the processes found at start-up.
    pub fn wait_startup_details(&self) {
        super::eventually(Duration::from_secs(30), "the start-up details pass", || {
            let st: Value =
                serde_json::from_str(&super::http_body(&self.http_get("/v1/status"))).ok()?;
            (st["startup_details_pending"] == false).then_some(())
        });
    }

    /// GET on the HTTP listener (plain HTTP/1.0 over TCP): health, readiness, /metrics and
    /// /v1/status; the process views answer there only to clients that authenticate.
    pub fn http_get(&self, path: &str) -> String {
        self.inner.http_get(path).unwrap()
    }

    /// GET on the HTTP listener with the [`TEST_TOKEN`] bearer token.
    pub fn http_get_with_token(&self, path: &str) -> String {
        let auth = format!("Authorization: Bearer {TEST_TOKEN}");
        super::http_get_with(&self.http, path, &[&auth]).unwrap()
    }

    /// GET on the agent's unix socket, where every route answers (the CLI's way in).
    pub fn socket_get(&self, path: &str) -> String {
        self.inner.socket_get(path).unwrap()
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000
}

/// What /proc says about a pid: (ppid, state, NSpid chain, pid-ns inode, comm, threads).
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct ProcFacts {
    pub ppid: u64,
    pub state: String,
    pub ns_pids: Vec<u64>,
    pub pidns: u64,
    pub comm: String,
    pub threads: u64,
}

pub fn proc_facts(pid: u64) -> Option<ProcFacts> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ns_pids = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()?;
    Some(ProcFacts {
        ppid: f[1].parse().ok()?,
        state: f[0].to_string(),
        ns_pids,
        // The process may end between the reads: gone, like a failed read above.
        pidns: std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(format!("/proc/{pid}/ns/pid")).ok()?,
        ),
        comm,
        threads,
    })
}

/// Host pids of every process in pid namespace `pidns` according to /proc.
pub fn pids_in_pidns(pidns: u64) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&p| {
            std::fs::metadata(format!("/proc/{p}/ns/pid"))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m) == pidns)
                .unwrap_or(false)
        })
        .collect();
    v.sort_unstable();
    v
}

/// Compares every process of a `tree -o json` answer with /proc read right after, and checks
/// that the tree lists every process of the container's pid namespace. Returns the list of
/// differences (empty when the tree equals /proc).
pub fn tree_vs_proc(tree: &Value) -> Vec<String> {
    let procs = tree["processes"].as_array().expect("processes");
    let pidns = tree["container"]["pidns"].as_u64().unwrap();
    let mut diffs = processes_vs_proc(procs);
    diffs.extend(complete(pidns, procs, "the container's"));
    diffs
}

/// A pod tree (`observer tree <pod> -o json`) against /proc: every container's processes,
/// and every process of each pid namespace listed — the pod's shared one, or each
/// container's own.
pub fn pod_tree_vs_proc(t: &Value) -> Vec<String> {
    let trees = t["containers"].as_array().expect("containers");
    let all: Vec<Value> = trees
        .iter()
        .flat_map(|c| c["processes"].as_array().unwrap().clone())
        .collect();
    let mut diffs = processes_vs_proc(&all);
    match t["pod"]["shared_pidns"].as_u64() {
        Some(ns) => diffs.extend(complete(ns, &all, "the pod's")),
        None => {
            for c in trees {
                let ns = c["container"]["pidns"].as_u64().unwrap();
                diffs.extend(complete(
                    ns,
                    c["processes"].as_array().unwrap(),
                    "a container's",
                ));
            }
        }
    }
    diffs
}

/// Every process of pid namespace `pidns` in `procs`.
fn complete(pidns: u64, procs: &[Value], whose: &str) -> Vec<String> {
    let listed: Vec<u64> = procs.iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    pids_in_pidns(pidns)
        .into_iter()
        .filter(|pid| !listed.contains(pid))
        .map(|pid| format!("{pid} is in {whose} pid namespace but not in the tree"))
        .collect()
}

/// Each listed process's facts against /proc.
pub fn processes_vs_proc(procs: &[Value]) -> Vec<String> {
    let mut diffs = Vec::new();
    for p in procs {
        let pid = p["pid"].as_u64().unwrap();
        let Some(f) = proc_facts(pid) else {
            diffs.push(format!("{pid} listed but gone from /proc"));
            continue;
        };
        let ns: Vec<u64> = p["ns_pids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        if p["ppid"].as_u64() != Some(f.ppid) {
            diffs.push(format!("{pid}: ppid {} vs /proc {}", p["ppid"], f.ppid));
        }
        if ns != f.ns_pids {
            diffs.push(format!("{pid}: ns_pids {ns:?} vs /proc {:?}", f.ns_pids));
        }
        if p["state"].as_str() != Some(f.state.as_str()) {
            diffs.push(format!("{pid}: state {} vs /proc {}", p["state"], f.state));
        }
        if p["comm"].as_str() != Some(f.comm.as_str()) {
            diffs.push(format!("{pid}: comm {} vs /proc {}", p["comm"], f.comm));
        }
        if p["ns_pid"].as_u64() != f.ns_pids.last().copied() {
            diffs.push(format!(
                "{pid}: ns_pid {} vs /proc {:?}",
                p["ns_pid"],
                f.ns_pids.last()
            ));
        }
        // ns PPID: the parent's PID in this namespace, 0 when the parent is outside it.
        let want_ns_ppid = match proc_facts(f.ppid) {
            Some(pf) if pf.pidns == f.pidns => *pf.ns_pids.last().unwrap(),
            _ => 0,
        };
        if p["ns_ppid"].as_u64() != Some(want_ns_ppid) {
            diffs.push(format!(
                "{pid}: ns_ppid {} vs /proc-derived {want_ns_ppid}",
                p["ns_ppid"]
            ));
        }
        if p["threads"].as_u64() != Some(f.threads) {
            diffs.push(format!(
                "{pid}: threads {} vs /proc {}",
                p["threads"], f.threads
            ));
        }
    }
    diffs
}

/// Asks for the tree until it equals /proc (processes may still be starting), or panics
/// with the last differences.
pub fn tree_equal_to_proc(agent: &Agent, reference: &str, timeout: Duration) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let t = agent.json(&["tree", reference]);
        let diffs = tree_vs_proc(&t);
        if diffs.is_empty() {
            return t;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "tree {reference} differs from /proc:\n  {}\ntree: {t:#}",
                diffs.join("\n  ")
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}
