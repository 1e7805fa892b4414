//! deploy/systemd/observer.service as systemd and the kernel see it: `systemd-analyze verify`
//! and `security` (the exposure score the README quotes); the agent started as the unit
//! starts it — root, exactly the unit's CapabilityBoundingSet, no new privileges (via
//! setpriv; this machine's PID 1 is not systemd) — has every fact of processes of another
//! user and of a fully privileged one, and without any one capability of the set it either
//! refuses to start naming it or misses those facts and warns; and the sd_notify protocol of
//! `Type=notify` + `WatchdogSec` (READY=1 when /readyz turns 200, WATCHDOG=1, STOPPING=1).

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use crate::common::{self, agent::Agent, observer, observer_bin};

fn unit_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/observer.service")
}

fn unit() -> String {
    std::fs::read_to_string(unit_path()).unwrap()
}

/// The values of `key=` in the unit (every line that sets it).
fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

/// The unit as shipped, with ExecStart pointing at the binary under test (verify checks that
/// the executable exists), in a directory of its own.
fn unit_for_test(dir: &Path) -> PathBuf {
    let text = unit();
    assert_eq!(values(&text, "ExecStart"), ["/usr/bin/observer agent"]);
    let p = dir.join("observer.service");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&p, text.replace("/usr/bin/observer", &observer_bin())).unwrap();
    p
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("observer-systemd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_security() {
    let dir = tmpdir("analyze");
    let unit = unit_for_test(&dir);
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && text.trim().is_empty(),
        "verify: {text}"
    );

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for observer.service: ")
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    eprintln!("systemd-analyze security: exposure {score}");
    // The README quotes this number; a change that raises it must update it there.
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    assert!(
        readme.contains(&format!("exposure level {score}")),
        "README must quote `exposure level {score}`"
    );
    assert!(score <= 3.0, "exposure {score}: {text}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Capability numbers (linux/capability.h) of the names the unit may use.
fn cap_number(name: &str) -> u32 {
    match name {
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_SYS_PTRACE" => 19,
        "CAP_SYS_ADMIN" => 21,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("add {other} to cap_number"),
    }
}

/// `observer agent` as systemd would start it with these capabilities.
fn agent_with(caps: &[&str]) -> Command {
    let set: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--bounding-set=-all,{}", set.join(",")))
        .args(["--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs"])
        .arg(observer_bin())
        .arg("agent");
    cmd
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (exe, pid-namespace inode) of `pid` as the agent has them.
fn agent_facts(agent: &Agent, pid: u32) -> (String, u64) {
    let ps = agent.json(&["ps"]);
    let p = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"].as_u64() == Some(pid as u64))
        .unwrap_or_else(|| panic!("{pid} not in ps"));
    (
        p["exe"].as_str().unwrap_or("").to_string(),
        p["pidns"].as_u64().unwrap_or(0),
    )
}

fn proc_facts(pid: u32) -> (String, u64) {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    (
        exe.to_string_lossy().into_owned(),
        common::ns_inode(pid, "pid"),
    )
}

#[test]
fn the_units_capability_set_is_enough_and_each_capability_in_it_is_needed() {
    let text = unit();
    let caps_line = values(&text, "CapabilityBoundingSet");
    assert_eq!(caps_line.len(), 1, "one CapabilityBoundingSet line");
    let caps: Vec<&str> = caps_line[0].split_whitespace().collect();
    assert!(values(&text, "AmbientCapabilities")
        .iter()
        .all(|v| v.is_empty()));
    assert_eq!(values(&text, "NoNewPrivileges"), ["yes"]);

    // A process of another user, and one with every capability (this test), both running
    // before the agent: it can learn their executable and namespaces only from /proc.
    let nobody = Kill(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sleep",
                "600",
            ])
            .spawn()
            .unwrap(),
    );
    // setpriv has become the sleep (its exec is not for the agent to see).
    common::eventually(Duration::from_secs(10), "setpriv to exec sleep", || {
        (std::fs::read_to_string(format!("/proc/{}/comm", nobody.0.id()))
            .ok()?
            .trim()
            == "sleep")
            .then_some(())
    });
    let subjects = [nobody.0.id(), std::process::id()];
    let socket = std::env::temp_dir().join(format!("observer-caps-{}.sock", std::process::id()));

    let agent = Agent::launch(agent_with(&caps), &socket, &[])
        .unwrap_or_else(|e| panic!("with exactly {caps:?}: {e}"));
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    let want: u64 = caps.iter().map(|c| 1u64 << cap_number(c)).sum();
    assert_eq!(eff, want, "the agent runs with exactly {caps:?}");
    agent.wait_startup_details();
    for &pid in &subjects {
        assert_eq!(agent_facts(&agent, pid), proc_facts(pid), "pid {pid}");
    }
    assert!(
        agent.startup_log.iter().all(|l| !l.contains("WARN")),
        "{:?}",
        agent.startup_log
    );
    drop(agent);

    for &without in &caps {
        let fewer: Vec<&str> = caps.iter().copied().filter(|&c| c != without).collect();
        match Agent::launch(agent_with(&fewer), &socket, &[]) {
            Err(e) => assert!(
                e.contains("needs root") && e.contains(without),
                "without {without} the agent must say so: {e}"
            ),
            Ok(agent) => {
                agent.wait_startup_details();
                let (exe, pidns) = agent_facts(&agent, nobody.0.id());
                assert!(
                    exe.is_empty(),
                    "without {without} nothing should be missing, so it is not needed: {exe}"
                );
                // The task iterator reads namespaces in the kernel, with no ptrace check;
                // a /proc seed cannot read another user's.
                let status: serde_json::Value =
                    serde_json::from_str(&common::http_body(&agent.http_get("/v1/status")))
                        .unwrap();
                let want = if status["seed"] == "iterator" {
                    common::ns_inode(nobody.0.id(), "pid")
                } else {
                    0
                };
                assert_eq!(
                    pidns, want,
                    "without {without}, seeded by {}",
                    status["seed"]
                );
                assert!(
                    agent
                        .startup_log
                        .iter()
                        .any(|l| l.contains(&format!("without {without}"))),
                    "the agent warns that it lacks {without}: {:?}",
                    agent.startup_log
                );
            }
        }
    }
}

#[test]
fn type_notify_ready_watchdog_and_stopping_reach_the_service_manager() {
    let text = unit();
    assert_eq!(values(&text, "Type"), ["notify"]);
    assert_eq!(values(&text, "WatchdogSec").len(), 1);
    let dir = tmpdir("notify");
    let path = dir.join("notify.sock");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let recv = || {
        let mut buf = [0u8; 4096];
        let n = manager.recv(&mut buf).expect("a message from the agent");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut cmd = observer();
    cmd.arg("agent")
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000");
    let socket = dir.join("observer.sock");
    let agent = Agent::launch(cmd, &socket, &[]).unwrap();
    let ready = recv();
    assert!(ready.contains("READY=1\n"), "{ready}");
    assert!(
        ready.contains("STATUS=") && ready.contains(" processes, "),
        "{ready}"
    );
    let readyz = agent.http_get("/readyz");
    assert_eq!(
        readyz.split_whitespace().nth(1),
        Some("200"),
        "ready means ready: {readyz}"
    );

    let t = Instant::now();
    for _ in 0..3 {
        assert_eq!(recv(), "WATCHDOG=1\n");
    }
    // Three at least every 100 ms (half of WATCHDOG_USEC), with slack for a loaded machine.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    let (status, _) = agent.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status:?}");
    let mut last = recv();
    while last == "WATCHDOG=1\n" {
        last = recv();
    }
    assert_eq!(last, "STOPPING=1\n");
    let _ = std::fs::remove_dir_all(dir);
}
