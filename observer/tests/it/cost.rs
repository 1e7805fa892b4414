//! What observer costs the node, as the agent reports it: its programs' in-kernel runs and
//! time from the kernel's BPF statistics (`--bpf-stats on`, held only while the agent
//! runs), its own CPU and memory — on /metrics, /v1/status and `observer status`.

use std::time::Duration;

use serde_json::Value;

use crate::common::{agent::Agent, eventually, http_body, observer, sh};

const T: Duration = Duration::from_secs(30);

/// The value of the metric line starting with `series` (name and labels).
fn metric(m: &str, series: &str) -> Option<f64> {
    m.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn status(agent: &Agent) -> Value {
    serde_json::from_str(&http_body(&agent.http_get("/v1/status"))).unwrap()
}

/// The runs of `kind`'s program as /v1/status counts them.
fn runs(st: &Value, kind: &str) -> (u64, u64) {
    let e = st["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {st}"));
    (e["runs"].as_u64().unwrap(), e["run_ns"].as_u64().unwrap())
}

#[test]
fn with_bpf_stats_on_every_program_run_and_its_time_is_on_metrics_and_in_status() {
    let agent = Agent::start(&["--bpf-stats", "on"]);
    let before = runs(&status(&agent), "exec").0;
    sh("for i in $(seq 300); do /bin/true; done");
    // The free program runs when the kernel frees a task: after an RCU grace period, which
    // a loaded machine delays past the last exec. Asked until every kind has run.
    let ran = |m: &str, kind: &str| {
        metric(
            m,
            &format!("observer_bpf_program_run_seconds_total{{program=\"{kind}\"}}"),
        )
        .is_some_and(|s| s > 0.0)
    };
    let m = eventually(T, "300 exec runs and every kind's time on /metrics", || {
        let m = http_body(&agent.http_get("/metrics"));
        let n = metric(&m, "observer_bpf_program_runs_total{program=\"exec\"}")?;
        let all = ["fork", "exec", "exit", "free"].iter().all(|k| ran(&m, k));
        (n >= (before + 300) as f64 && all).then_some(m)
    });
    for kind in ["fork", "exec", "exit", "free"] {
        let secs = metric(
            &m,
            &format!("observer_bpf_program_run_seconds_total{{program=\"{kind}\"}}"),
        )
        .unwrap_or_else(|| panic!("no run time of {kind}:\n{m}"));
        assert!(secs > 0.0, "{kind}: {secs} s");
    }
    assert!(metric(&m, "observer_agent_cpu_seconds_total ").unwrap() > 0.0);
    assert!(metric(&m, "observer_agent_resident_bytes ").unwrap() > 1e6);

    let st = status(&agent);
    assert_eq!(st["bpf_stats"], true);
    let (n, ns) = runs(&st, "exec");
    assert!(n >= before + 300 && ns > 0, "exec: {n} runs, {ns} ns");

    let (code, out, err) = agent.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    let exec = out
        .lines()
        .find(|l| l.starts_with("exec "))
        .unwrap_or_else(|| panic!("no exec row:\n{out}"));
    assert!(
        exec.ends_with(" µs"),
        "in-kernel µs per run of exec: {exec}"
    );
    assert!(out.contains("in observer's programs"), "{out}");
}

/// Off (the default), the agent turns no statistics on: no program metrics, and its
/// programs count no runs once no one else holds the kernel's statistics on — which also
/// shows that the previous agent's `--bpf-stats on` ended with it.
#[test]
fn without_bpf_stats_the_agent_reports_its_cpu_but_no_program_time() {
    drop(Agent::start(&["--bpf-stats", "on"]));
    let agent = Agent::start(&[]);
    sh("for i in $(seq 50); do /bin/true; done");
    eventually(T, "the 50 execs applied", || {
        let st = status(&agent);
        let e = st["events"]
            .as_array()?
            .iter()
            .find(|e| e["type"] == "exec")?
            .clone();
        (e["applied"].as_u64()? >= 50).then_some(())
    });
    let m = http_body(&agent.http_get("/metrics"));
    assert!(!m.contains("observer_bpf_program_runs_total"), "{m}");
    assert!(metric(&m, "observer_agent_cpu_seconds_total ").is_some());
    let st = status(&agent);
    assert_eq!(st["bpf_stats"], false);
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap();
    if sysctl.trim() == "0" {
        assert_eq!(
            runs(&st, "exec").0,
            0,
            "statistics stayed on after the agent that held them stopped"
        );
    }
    let (code, out, err) = agent.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("--bpf-stats on"), "{out}");
}

#[test]
fn status_without_an_agent_says_so_and_fails() {
    let out = observer()
        .args(["status", "--socket", "/nonexistent/observer.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("describes a running agent"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
