//! /metrics against a real Prometheus (Debian's `prometheus`): it scrapes a real agent while
//! launcher containers run a workload (forks, a zombie, a memory allocation); every PromQL
//! expression of every dashboard panel must return data; values are checked against the
//! cgroup files; `promtool check metrics` must accept a live scrape. Run as root.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::common::{self, agent::*, prometheus::Prometheus, *};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// A plain HTTP/1.0 GET; the body, or an error for a refused connection.
fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    common::http_get(addr, path).map(|r| http_body(&r))
}

fn launcher(args: &[&str]) {
    let out = observer().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "observer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Cleanup(Vec<&'static str>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = observer().args(["rm", "-f", n]).output();
        }
    }
}

fn cgroup_file(name: &str, files: &[&str]) -> u64 {
    let cfg: Value = serde_json::from_slice(
        &std::fs::read(format!("/run/observer/containers/{name}/config.json")).unwrap(),
    )
    .unwrap();
    for d in cfg["cgroups"].as_array().unwrap() {
        for f in files {
            let p = Path::new(d.as_str().unwrap()).join(f);
            if let Ok(s) = std::fs::read_to_string(&p) {
                return s.trim().parse().unwrap();
            }
        }
    }
    panic!("none of {files:?} in {cfg}");
}

/// Every PromQL expression of a dashboard, with its template variables filled in.
fn dashboard_exprs(file: &str, container: &str) -> Vec<(String, String)> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dashboards")
        .join(file);
    let d: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in d["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "15s")
                .replace("$container", container);
            out.push((
                format!("{file} / {}", panel["title"].as_str().unwrap()),
                expr,
            ));
        }
    }
    assert!(!out.is_empty());
    out
}

#[test]
fn prometheus_scrapes_every_dashboard_query_and_values_match_the_cgroups() {
    // --bpf-stats on: the agent dashboard's cost panels read the programs' run time.
    let agent = Agent::start(&["--bpf-stats", "on"]);
    let _cleanup = Cleanup(vec!["obs-m-work", "obs-m-zombie"]);
    for n in ["obs-m-work", "obs-m-zombie"] {
        let _ = observer().args(["rm", "-f", n]).output();
    }
    // Forks all the time and holds ~24 MB in a shell variable.
    launcher(&[
        "run",
        "-d",
        "--name",
        "obs-m-work",
        "--memory",
        "128M",
        "--pids-max",
        "200",
        "--",
        "sh",
        "-c",
        "x=$(head -c 25000000 /dev/zero | tr '\\0' a); while true; do /bin/true; sleep 0.05; done",
    ]);
    // PID 1 never reaps: one zombie, a stable pid count.
    launcher(&[
        "run",
        "-d",
        "--name",
        "obs-m-zombie",
        "--pids-max",
        "20",
        "--",
        "sh",
        "-c",
        "sleep 0.1 & exec sleep 1000",
    ]);
    // A SIGTERM its PID 1 (sleep, no handler, a pid-namespace init) ignores.
    let zombie_pid1 = eventually(T, "obs-m-zombie's PID 1", || {
        let ls: Value =
            serde_json::from_slice(&observer().args(["ls", "-o", "json"]).output().ok()?.stdout)
                .ok()?;
        ls.as_array()?
            .iter()
            .find(|c| c["name"] == "obs-m-zombie")?["pid"]
            .as_u64()
    });
    eventually(T, "PID 1 to be sleep", || {
        (std::fs::read_to_string(format!("/proc/{zombie_pid1}/comm"))
            .ok()?
            .trim()
            == "sleep")
            .then_some(())
    });
    unsafe { libc::kill(zombie_pid1 as i32, libc::SIGTERM) };
    let prom = Prometheus::start(&agent.http);
    eventually(
        T,
        "scrapes with both containers, a fork rate and an ignored SIGTERM",
        || {
            let forks = prom.scalar(
                r#"rate(observer_container_forks_total{container_name="obs-m-work"}[15s])"#,
            )?;
            let z = prom.scalar(r#"observer_container_zombies{container_name="obs-m-zombie"}"#)?;
            let term = prom.scalar(
            r#"observer_container_signals_total{container_name="obs-m-zombie",signal="SIGTERM",result="ignored"}"#,
        )?;
            (forks > 0.0 && z == 1.0 && term == 1.0).then_some(())
        },
    );

    for file in [
        "observer-node.json",
        "observer-container.json",
        "observer-agent.json",
    ] {
        for (panel, expr) in dashboard_exprs(file, "obs-m-work|obs-m-zombie") {
            let r = prom.query(&expr);
            assert!(
                r.as_array().is_some_and(|a| !a.is_empty()),
                "{panel}: `{expr}` returned no data"
            );
        }
    }

    // Values against the cgroup files (Prometheus holds the last scrape, a second old).
    let mem_q = r#"observer_container_memory_usage_bytes{container_name="obs-m-work"}"#;
    let mem = prom.scalar(mem_q).unwrap();
    let file = cgroup_file("obs-m-work", &["memory.current", "memory.usage_in_bytes"]) as f64;
    assert!(
        (mem - file).abs() <= 0.10 * file,
        "memory {mem} vs cgroup {file}"
    );
    assert!(mem > 20e6, "the 25 MB allocation is charged: {mem}");
    let limit = prom
        .scalar(r#"observer_container_memory_limit_bytes{container_name="obs-m-work"}"#)
        .unwrap();
    assert_eq!(limit, (128u64 << 20) as f64);
    let pids = prom
        .scalar(r#"observer_container_pids{container_name="obs-m-zombie"}"#)
        .unwrap();
    assert_eq!(pids as u64, cgroup_file("obs-m-zombie", &["pids.current"]));
    assert_eq!(pids, 2.0, "PID 1 and its zombie");
    assert_eq!(
        prom.scalar(r#"observer_container_pids_limit{container_name="obs-m-zombie"}"#),
        Some(20.0)
    );
    let zombie_init: u64 = {
        let ls: Value = serde_json::from_slice(
            &observer()
                .args(["ls", "-o", "json"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        ls.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "obs-m-zombie")
            .unwrap()["pid"]
            .as_u64()
            .unwrap()
    };
    let in_proc = pids_in_pidns(ns_inode(zombie_init as u32, "pid"))
        .into_iter()
        .filter(|p| proc_facts(*p).is_some_and(|f| f.state == "Z"))
        .count();
    assert_eq!(
        prom.scalar(r#"observer_container_zombies{container_name="obs-m-zombie"}"#),
        Some(in_proc as f64)
    );
    assert_eq!(
        prom.scalar(r#"observer_container_processes{container_name="obs-m-zombie"}"#),
        Some(2.0)
    );
    assert_eq!(prom.scalar(r"sum(observer_events_lost_total)"), Some(0.0));

    // No per-process label anywhere.
    let text = http_get(&agent.http, "/metrics").unwrap();
    assert!(
        !text.contains("pid=\"") && !text.contains("process="),
        "per-process labels"
    );
}

#[test]
fn promtool_accepts_a_live_scrape_and_labels_can_be_restricted() {
    let agent = Agent::start(&["--metrics-labels", "runtime"]);
    let _cleanup = Cleanup(vec!["obs-m-lab"]);
    let _ = observer().args(["rm", "-f", "obs-m-lab"]).output();
    launcher(&["run", "-d", "--name", "obs-m-lab", "--", "sleep", "1000"]);
    let text = eventually(T, "the container in /metrics", || {
        let t = http_get(&agent.http, "/metrics").ok()?;
        t.contains("observer_container_processes{runtime=\"observer\"}")
            .then_some(t)
    });
    assert!(!text.contains("container_name="), "only the allowed labels");
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for family in [
        "observer_build_info",
        "observer_events_received_total",
        "observer_processes_by_state",
        "observer_orphan_adoptions_total",
        "observer_scan_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing"
        );
    }
    let out = observer()
        .args(["agent", "--metrics-labels", "pid"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2)); // refused by the flag's own parser
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown metrics label `pid`"));
}
