//! What an exec leaves a process with: its credentials (real, effective and saved ids,
//! effective capabilities) and the kernel's verdict on whether it raised privileges, and
//! the executable's identity (device, inode, size, mtime) — compared with what the process
//! itself reads from /proc and what stat(2) says of the file. Tools by absolute path: the VM
//! guests' busybox sh prefers its own applets (a setpriv without --reuid).

use std::{os::unix::fs::MetadataExt, path::PathBuf, time::Duration};

use serde_json::Value;

use crate::common::{
    runtimes::{docker, docker_ready},
    sh, skipped_in_vm, EventStream, Killed,
};

const T: Duration = Duration::from_secs(15);
const NOBODY: u64 = 65534;

/// A directory of the test's own that `nobody` can enter, removed on drop; under /var/lib
/// (a /tmp mounted nosuid would ignore the setuid bit).
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = PathBuf::from(format!(
            "/var/lib/observer-test/{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        sh(&format!("chmod 755 {}", d.display()));
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn exec_of(stream: &mut EventStream, path: &str) -> Value {
    stream.wait_for(T, &format!("the exec of {path}"), |v| {
        v["type"] == "exec" && v["filename"] == path
    })
}

/// The event's executable identity equals stat(2) of the file.
fn same_file(ev: &Value, path: &str) {
    let m = std::fs::metadata(path).unwrap();
    let id = &ev["exe_id"];
    assert_eq!(id["dev"].as_u64(), Some(m.dev()), "{ev}");
    assert_eq!(id["ino"].as_u64(), Some(m.ino()), "{ev}");
    assert_eq!(id["size"].as_u64(), Some(m.size()), "{ev}");
    let mtime_ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
    assert_eq!(id["mtime_ns"].as_i64(), Some(mtime_ns), "{ev}");
}

#[test]
fn a_setuid_root_binary_run_by_nobody_is_an_exec_that_raised_privileges() {
    let dir = Dir::new("setuid");
    let bin = dir.0.join("suid-id");
    std::fs::copy("/usr/bin/id", &bin).unwrap();
    sh(&format!(
        "chown root:root {0} && chmod 4755 {0}",
        bin.display()
    ));
    let path = bin.to_str().unwrap();
    let mut stream = EventStream::start(&["--type", "exec"]);
    let out = sh(&format!(
        "/usr/bin/setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups {path} -u"
    ));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{out:?}");
    let ev = exec_of(&mut stream, path);
    let c = &ev["cred"];
    assert_eq!(c["uid"].as_u64(), Some(NOBODY), "{ev}");
    assert_eq!(c["euid"].as_u64(), Some(0), "{ev}");
    assert_eq!(c["suid"].as_u64(), Some(0), "{ev}");
    assert_eq!(c["gid"].as_u64(), Some(NOBODY), "{ev}");
    assert_eq!(c["egid"].as_u64(), Some(NOBODY), "{ev}");
    assert_eq!(c["secureexec"], true, "{ev}");
    assert_eq!(
        ev["privileges"],
        format!("setuid: {NOBODY} → euid 0"),
        "{ev}"
    );
    same_file(&ev, path);

    // An ordinary exec by the same user says nothing of privileges.
    sh(&format!(
        "/usr/bin/setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups /usr/bin/id -u"
    ));
    let plain = exec_of(&mut stream, "/usr/bin/id");
    assert_eq!(plain["cred"]["secureexec"], false, "{plain}");
    assert!(plain.get("privileges").is_none(), "{plain}");
    assert_eq!(plain["cap_eff"], "none", "{plain}");
    same_file(&plain, "/usr/bin/id");
}

#[test]
fn a_file_with_capabilities_gives_them_at_exec_and_says_so() {
    let dir = Dir::new("filecaps");
    let bin = dir.0.join("raw-true");
    std::fs::copy("/usr/bin/true", &bin).unwrap();
    let path = bin.to_str().unwrap();
    let set = sh(&format!("/usr/sbin/setcap cap_net_raw+ep {path}"));
    assert!(set.status.success(), "setcap: {set:?}");
    let mut stream = EventStream::start(&["--type", "exec"]);
    let run = sh(&format!(
        "/usr/bin/setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups {path}"
    ));
    assert!(run.status.success(), "{run:?}");
    let ev = exec_of(&mut stream, path);
    assert_eq!(ev["cred"]["euid"].as_u64(), Some(NOBODY), "{ev}");
    assert_eq!(ev["cred"]["cap_eff"].as_u64(), Some(1 << 13), "{ev}");
    assert_eq!(ev["cap_eff"], "cap_net_raw", "{ev}");
    assert_eq!(ev["privileges"], "file capabilities: cap_net_raw", "{ev}");
    same_file(&ev, path);
}

/// A Docker container's process: its effective capabilities at exec are what it reads in
/// its own /proc/self/status, with and without `--cap-add SYS_ADMIN`.
#[test]
fn a_docker_containers_capabilities_at_exec_match_its_proc_status() {
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    if skipped_in_vm("Docker is not in the VM image; runs on the host") {
        return;
    }
    let image = docker_ready();
    let mut stream = EventStream::start(&["--type", "exec"]);
    for (tag, extra) in [("plain", None), ("sysadmin", Some("SYS_ADMIN"))] {
        let mut cmd = docker();
        cmd.args(["run", "--rm", "--network", "none"]);
        if let Some(cap) = extra {
            cmd.args(["--cap-add", cap]);
        }
        let out = cmd
            .args([
                image,
                "grep",
                "-e",
                &format!("CapEff.*{tag}"),
                "-e",
                "^CapEff:",
                "/proc/self/status",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let hex = text
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap_or_else(|| panic!("{text}"))
            .trim()
            .to_string();
        let caps = u64::from_str_radix(&hex, 16).unwrap();
        let ev = stream.wait_for(T, &format!("the {tag} container's grep"), |v| {
            v["type"] == "exec"
                && v["argv"][0] == "grep"
                && v["argv"][2] == format!("CapEff.*{tag}")
        });
        assert_eq!(ev["cred"]["cap_eff"].as_u64(), Some(caps), "{tag}: {ev}");
        assert_eq!(caps & CAP_SYS_ADMIN != 0, extra.is_some(), "{tag}: {hex}");
        assert_eq!(ev["cred"]["euid"].as_u64(), Some(0), "{ev}");
    }
}

/// The effective uid in /proc/<pid>/status (`Uid: real effective saved fs`).
fn proc_euid(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn ps_shows_the_credentials_a_setuid_exec_gave_a_running_process() {
    let agent = crate::common::agent::Agent::start(&[]);
    let dir = Dir::new("setuid-ps");
    let bin = dir.0.join("suid-sleep");
    std::fs::copy("/usr/bin/sleep", &bin).unwrap();
    sh(&format!(
        "chown root:root {0} && chmod 4755 {0}",
        bin.display()
    ));
    let child = Killed(
        std::process::Command::new("/usr/bin/setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(&bin)
            .arg("60")
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let p = crate::common::eventually(T, "the setuid sleep in ps", || {
        let ps = agent.json(&["ps"]);
        ps.as_array()?
            .iter()
            // Its exec of the setuid copy, not setpriv before it (same pid, credentials
            // inherited from the test at fork).
            .find(|p| p["pid"].as_u64() == Some(u64::from(pid)) && p["exe"] == bin.to_str().unwrap())
            .cloned()
    });
    assert_eq!(proc_euid(pid), Some(0), "the kernel's view");
    assert_eq!(p["uid"].as_u64(), Some(NOBODY), "{p}");
    assert_eq!(p["exec"]["euid"].as_u64(), proc_euid(pid), "{p}");
    assert_eq!(
        p["exec"]["privileges"],
        format!("setuid: {NOBODY} → euid 0"),
        "{p}"
    );
    let (code, out, err) = agent.cli(&["ps", "-l"]);
    assert_eq!(code, 0, "{err}");
    let head = out.lines().next().unwrap();
    assert!(
        head.contains(" UID ") && head.contains(" EUID ") && head.contains(" CAPS "),
        "{head}"
    );
    let row = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&pid.to_string()))
        .unwrap_or_else(|| panic!("no row of {pid}:\n{out}"));
    assert!(
        row.contains(&format!("(setuid: {NOBODY} → euid 0)")),
        "{row}"
    );
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[8..10], [&NOBODY.to_string(), "0"], "UID, EUID: {row}");
}
