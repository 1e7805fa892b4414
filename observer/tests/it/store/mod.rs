//! The durable history store (`--state-dir`): `observer history` and `observer why` answer
//! after the agent was killed with SIGKILL or stopped with SIGTERM, from a new agent on the
//! same state directory — by name (the container removed meanwhile), id and id prefix,
//! with exit codes and signals, and by both names of a container `docker rename` renamed,
//! and by the name of each of two runc containers one pid-namespace inode had in turn;
//! and a store on a full or read-only file system leaves the agent running on its in-memory
//! history, with a warning and the error metric. Run as root (the full-disk test mounts a
//! small tmpfs of its own, under its own directory).

use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::Value;

use crate::common::{agent::*, *};

const T: Duration = Duration::from_secs(60);

/// A directory of the test's own, removed when dropped (unmounted first when mounted).
struct Dir {
    path: PathBuf,
    mounted: bool,
}

impl Dir {
    fn new(name: &str) -> Dir {
        let path =
            std::env::temp_dir().join(format!("observer-test-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Dir {
            path,
            mounted: false,
        }
    }

    fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// A tmpfs of `size` on it.
    fn mount_tmpfs(&mut self, size: &str) {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("observer-test-store")
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", self.path.display());
        self.mounted = true;
    }

    fn remount_read_only(&self) {
        let st = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.path).status();
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A launcher container removed on drop.
struct Rm(&'static str);

impl Drop for Rm {
    fn drop(&mut self) {
        let _ = observer().args(["rm", "-f", self.0]).output();
    }
}

fn status(agent: &Agent) -> Value {
    serde_json::from_str(&http_body(&agent.http_get("/v1/status"))).unwrap()
}

fn store_status(agent: &Agent) -> Value {
    status(agent)["history_store"].clone()
}

/// The entries' exit codes and signals, sorted: what must come back after a restart.
fn endings(h: &Value) -> Vec<(i64, String, String)> {
    let mut v: Vec<(i64, String, String)> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["exit_code"].as_i64().unwrap(),
                e["signal"].as_str().unwrap_or("").to_string(),
                e["killed_by"]["sender"]["comm"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A launcher container whose shell kills a child with SIGKILL, has one exit 3, and exits
/// 7 itself; returns the agent's history of it once PID 1's end is there and committed.
fn ended_container(agent: &Agent, name: &str) -> Value {
    let out = observer()
        .args(["run", "-d", "--name", name, "--", "sh", "-c"])
        .arg("sleep 100 & kill -KILL $!; wait; sh -c 'exit 3'; exit 7")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let why = eventually(T, "PID 1's end in the history", || {
        let w = agent.json(&["why", name]);
        (w["alive"] == false && !w["ended"].is_null()).then_some(w)
    });
    assert_eq!(why["ended"]["exit_code"], 7, "{why:#}");
    let h = agent.json(&["history", name]);
    all_committed(agent);
    h
}

/// Waits until everything the agent's table had ended when this is called is committed to
/// the store: the writer's queue empty once, with the store ok. (`written` alone says
/// nothing here: other containers of the node, the demo of `cargo xtask run` among them,
/// end processes too.) The agent offers an entry before it answers for it.
pub(crate) fn all_committed(agent: &Agent) {
    eventually(T, "the writer's queue committed to the store", || {
        let s = store_status(agent);
        (s["queued"].as_u64()? == 0 && s["state"] == "ok").then_some(())
    });
}

fn check_answers(agent: &Agent, name: &str, id: &str, want: &[(i64, String, String)]) {
    for q in [name, id, &id[..12]] {
        let h = agent.json(&["history", q]);
        assert_eq!(endings(&h), want, "history {q}: {h:#}");
        assert_eq!(h["name"], name, "the name it had, from the store");
    }
    let h = agent.json(&["history", name, "--since", "2d"]);
    assert_eq!(endings(&h), want, "--since 2d");
    let w = agent.json(&["why", name]);
    assert_eq!(w["alive"], false, "{w:#}");
    assert_eq!(w["ended"]["exit_code"], 7, "{w:#}");
}

#[test]
fn history_and_why_answer_after_sigkill_and_sigterm_from_the_store() {
    let dir = Dir::new("restart");
    let name = "observer-test-store";
    let _ = observer().args(["rm", "-f", name]).output();
    let rm = Rm(name);
    let first = Agent::start(&["--state-dir", dir.arg()]);
    let h = ended_container(&first, name);
    let id = h["id"].as_str().unwrap().to_string();
    let want = endings(&h);
    assert!(
        want.contains(&(137, "SIGKILL".into(), "sh".into())),
        "the child killed by its shell: {want:?}"
    );
    assert!(want.iter().any(|e| e.0 == 3) && want.iter().any(|e| e.0 == 7));
    drop(first.crash());
    // Its runtime forgets it: only the store knows its name now.
    drop(rm);
    let second = Agent::start(&["--state-dir", dir.arg()]);
    check_answers(&second, name, &id, &want);
    let (st, _) = second.stop_with(libc::SIGTERM);
    assert!(st.success());
    let third = Agent::start(&["--state-dir", dir.arg()]);
    check_answers(&third, name, &id, &want);
    let api = http_body(&third.socket_get(&format!("/v1/containers/{name}/history?since=2d")));
    let api: Value = serde_json::from_str(&api).unwrap();
    assert_eq!(endings(&api), want, "the API route");
    let s = store_status(&third);
    assert_eq!(s["state"], "ok", "{s:#}");
    assert!(s["entries"].as_u64().unwrap() >= want.len() as u64, "{s:#}");
}

/// Ended processes of a bare container (a pid namespace of its own): `n` shells, each
/// exiting with its own code. Returns the namespace's inode, its id.
fn bare_container_ends(n: u32) -> u64 {
    let mut child = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "sh", "-c"])
        .arg(format!(
            "sleep 0.5; i=0; while [ $i -lt {n} ]; do sh -c \"exit $((i % 100))\"; i=$((i+1)); done"
        ))
        .spawn()
        .unwrap();
    let ns = eventually(
        Duration::from_secs(10),
        "the bare container's shell",
        || {
            let c = first_child(child.id())?;
            let ns = ns_inode(c, "pid");
            (ns != ns_inode(std::process::id(), "pid")).then_some(ns)
        },
    );
    assert!(child.wait().unwrap().success());
    ns
}

/// The store's directory on `dir` cannot be written: the agent answers from memory and
/// says so (the store state, the error metric, a warning).
fn runs_on_memory(agent: &Agent, n: u32) {
    let ns = bare_container_ends(n).to_string();
    eventually(T, "the ended processes in the in-memory history", || {
        let h = agent.json(&["history", &ns]);
        // The in-memory history keeps 1,000 entries a container by default.
        (h["entries"].as_array()?.len() as u32 > n.min(999)).then_some(())
    });
    let s = eventually(T, "the store's failure in the status", || {
        let s = store_status(agent);
        (s["errors"].as_u64()? > 0 && s["state"] == "failing").then_some(s)
    });
    let health = agent.http_get("/healthz");
    assert!(
        health.lines().next().unwrap().contains(" 200 "),
        "{health} {s}"
    );
    let m = agent.http_get("/metrics");
    let errors = m
        .lines()
        .find_map(|l| l.strip_prefix("observer_history_store_errors_total "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(errors.is_some_and(|e| e > 0.0), "{m}");
    assert!(m.contains("observer_history_store_up 0"));
    // The warning is printed after the status says failing: read until it is there (the
    // store's start-up line names it too: the warning is the one about memory).
    let mut log = agent.startup_log.clone();
    let warned = agent.wait_for_log(&mut log, T, "the store's warning", |l| {
        l.contains("history store") && l.contains("in memory only")
    });
    assert!(warned.contains("WARN"), "a warning: {warned}");
}

/// Why the full-tmpfs tests skip in the kernel matrix.
const FULL_TMPFS_ON_HOST: &str = "a full tmpfs is the same on every kernel (the matrix runs the \
                                  store's file-format tests); runs on the host";

#[test]
fn a_full_disk_leaves_the_agent_on_its_in_memory_history() {
    if skipped_in_vm(FULL_TMPFS_ON_HOST) {
        return;
    }
    let mut dir = Dir::new("full");
    dir.mount_tmpfs("1m");
    let agent = Agent::start(&["--state-dir", dir.arg()]);
    eventually(T, "the store open", || {
        (store_status(&agent)["state"] == "ok").then_some(())
    });
    // What is left of the file system, taken.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}/filler", dir.arg()))
        .output();
    runs_on_memory(&agent, 3000);
    drop(agent);
}

/// A disk that is full before the store's file exists: a new file that cannot be written
/// is the disk's fault, not the file's — nothing is moved aside (before, with a few KiB
/// left, redb created the file, its first commit failed, and each retry moved the file
/// aside as unreadable, every 10 s without end). Which step fails depends on how much is
/// left: every amount from 4 to 32 KiB is tried.
#[test]
fn a_disk_full_before_the_store_exists_moves_nothing_aside() {
    if skipped_in_vm(FULL_TMPFS_ON_HOST) {
        return;
    }
    let mut dir = Dir::new("full0");
    dir.mount_tmpfs("1m");
    for free_kib in (4..=32).step_by(4) {
        let state = format!("{}/s{free_kib}", dir.arg());
        std::fs::create_dir(&state).unwrap();
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4k"])
            .arg(format!("count={}", (1024 - free_kib) / 4))
            .arg(format!("of={}/filler", dir.arg()))
            .output();
        let agent = Agent::start(&["--state-dir", &state]);
        let s = eventually(T, "the store's first open", || {
            let s = store_status(&agent);
            (s["state"] == "ok" || s["state"] == "failing").then_some(s)
        });
        assert_eq!(s["moved_aside"], 0, "{free_kib} KiB free: {s}");
        let aside: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
            .collect();
        assert!(aside.is_empty(), "{free_kib} KiB free: {aside:?}");
        drop(agent);
        std::fs::remove_dir_all(&state).unwrap();
    }
}

#[test]
fn a_read_only_state_dir_leaves_the_agent_on_its_in_memory_history() {
    let mut dir = Dir::new("ro");
    dir.mount_tmpfs("4m");
    dir.remount_read_only();
    let agent = Agent::start(&["--state-dir", dir.arg()]);
    runs_on_memory(&agent, 20);
    drop(agent);
}

/// The VM guest's disk (a virtio block device the runner attaches to both boots, mounted
/// by the guest's init): the reboot test's state directory, and where its first boot
/// leaves what the second checks against (outside the state directory: the store moves
/// foreign files aside).
fn reboot_dirs() -> (PathBuf, PathBuf) {
    let disk = std::env::var_os("OBSERVER_VM_DISK")
        .map(PathBuf::from)
        .expect("the VM runner's disk, mounted by the guest's init (OBSERVER_VM_DISK)");
    (
        disk.join("observer-test-reboot"),
        disk.join("observer-test-reboot-facts"),
    )
}

/// Writes `data` to `path` and makes it durable, with its directory entry: the guest powers
/// off without syncing its disk.
fn write_durably(path: &std::path::Path, data: &str) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(data.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::File::open(path.parent().unwrap())
        .unwrap()
        .sync_all()
        .unwrap();
}

/// A reboot, as at a power cut: in a VM guest's first boot a container ends, its entries
/// are committed and the agent is killed (SIGKILL); the guest powers off without syncing or
/// unmounting its disk, where the state directory is. In the guest's next boot, on the same
/// disk, a new agent answers `why` and `history` for that container, its entries marked as
/// the boot before (`boot: -1`, `--boot -1`). The host cannot be rebooted by a test: there
/// it says it is skipped.
#[test]
fn a_rebooted_guest_answers_why_for_a_container_that_ended_before() {
    let name = "observer-test-reboot";
    let boot_id = || std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    match std::env::var("OBSERVER_VM_BOOT").as_deref() {
        Ok("1") => {
            let (state, facts) = reboot_dirs();
            for d in [&state, &facts] {
                let _ = std::fs::remove_dir_all(d);
                std::fs::create_dir_all(d).unwrap();
            }
            let _rm = Rm(name);
            let agent = Agent::start(&["--state-dir", state.to_str().unwrap()]);
            let h = ended_container(&agent, name);
            drop(agent.crash());
            let want = serde_json::to_string(&endings(&h)).unwrap();
            // The test's own facts, made durable after the agent is gone (its commits were
            // its own to make durable).
            write_durably(&facts.join("endings.json"), &want);
            write_durably(&facts.join("boot_id"), &boot_id());
            println!("observer-test-reboot: its second half runs in the guest's next boot");
        }
        Ok("2") => {
            let (state, facts) = reboot_dirs();
            let before = std::fs::read_to_string(facts.join("boot_id"))
                .expect("the first boot's facts, on the VM runner's disk");
            assert_ne!(before, boot_id(), "a new boot");
            let want: Vec<(i64, String, String)> =
                serde_json::from_str(&std::fs::read_to_string(facts.join("endings.json")).unwrap())
                    .unwrap();
            let agent = Agent::start(&["--state-dir", state.to_str().unwrap()]);
            let w = agent.json(&["why", name]);
            assert_eq!(w["alive"], false, "{w:#}");
            assert_eq!(w["ended"]["exit_code"], 7, "{w:#}");
            for args in [vec!["history", name], vec!["history", name, "--boot", "-1"]] {
                let h = agent.json(&args);
                assert_eq!(endings(&h), want, "{args:?}: {h:#}");
                let boots: Vec<&Value> = h["entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| &e["boot"])
                    .collect();
                assert!(boots.iter().all(|b| **b == -1), "the boot before: {h:#}");
            }
            // Nothing of it in this boot: no entries, or no such container in it.
            let (code, out, err) = agent.cli(&["history", name, "--boot", "0", "-o", "json"]);
            if code == 0 {
                let h: Value = serde_json::from_str(&out).unwrap();
                assert!(h["entries"].as_array().is_none_or(Vec::is_empty), "{h:#}");
            } else {
                assert!(err.contains(name), "{err}");
            }
        }
        _ => println!(
            "observer-test-skip: its two halves run in two boots of a VM guest (cargo xtask vm-test)"
        ),
    }
}

/// `why <pid>` of a process that ended before the agent restarted answers from the store:
/// its exit, and which process it was (its container).
#[test]
fn why_of_a_pid_answers_from_the_store_after_a_restart() {
    let dir = Dir::new("whypid");
    let first = Agent::start(&["--state-dir", dir.arg()]);
    let mut child = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--kill-child",
            "sh",
            "-c",
            "sleep 1; exit 5",
        ])
        .spawn()
        .unwrap();
    let pid = eventually(
        Duration::from_secs(10),
        "the bare container's shell",
        || {
            let c = first_child(child.id())?;
            (ns_inode(c, "pid") != ns_inode(std::process::id(), "pid")).then_some(c)
        },
    );
    assert!(!child.wait().unwrap().success());
    let pid = pid.to_string();
    eventually(T, "its end in the first agent's answer", || {
        // Between its exit and its reaping it is neither running nor in a history.
        let (code, out, _) = first.cli(&["why", &pid, "-o", "json"]);
        let w: Value = serde_json::from_str(&out).ok().filter(|_| code == 0)?;
        (w["alive"] == false && w["ended"]["exit_code"] == 5).then_some(())
    });
    all_committed(&first);
    drop(first.crash());
    let second = Agent::start(&["--state-dir", dir.arg()]);
    let w = second.json(&["why", &pid]);
    assert_eq!(w["alive"], false, "{w:#}");
    assert_eq!(w["ended"]["exit_code"], 5, "{w:#}");
    assert_eq!(w["ended"]["pid"].to_string(), pid, "{w:#}");
    let p = w["paragraph"].as_str().unwrap();
    assert!(p.contains("in bare container"), "which process it was: {p}");
    drop(second);
}

/// `docker rename` (review item 4): the store keeps the name a container ended with, so a
/// new agent answers `why <new name>` after Docker forgot it, and the name it had before
/// still finds it (no other container has it).
#[test]
fn a_renamed_docker_container_is_answered_by_its_new_and_old_name_from_the_store() {
    use crate::common::runtimes::{docker, docker_ready, Docker, DOCKER_ROOT};
    if skipped_in_vm("Docker is not in the VM image; runs on the host") {
        return;
    }
    let dir = Dir::new("rename");
    let (old, new) = ("observer-test-store-old", "observer-test-store-new");
    docker_ready();
    let _ = docker().args(["rm", "-f", new]).output();
    let args = ["--docker-root", DOCKER_ROOT, "--state-dir", dir.arg()];
    let first = Agent::start(&args);
    let mut c = Docker::run(old, &[], &["sh", "-c", "sh -c 'exit 3'; sleep 1000"]).0;
    // A view that may fail while the agent catches up (the new name not known yet).
    let json = |args: &[&str]| -> Option<Value> {
        let (code, out, _) = first.cli(&[args, &["-o", "json"]].concat());
        serde_json::from_str(&out).ok().filter(|_| code == 0)
    };
    // Its child's end stored under its first name, then the rename and PID 1's end.
    eventually(T, "the child's end", || {
        let h = json(&["history", old])?;
        h["entries"]
            .as_array()?
            .iter()
            .any(|e| e["exit_code"] == 3)
            .then_some(())
    });
    all_committed(&first);
    assert!(docker()
        .args(["rename", old, new])
        .status()
        .unwrap()
        .success());
    c.0 = new.into();
    assert!(docker().args(["kill", new]).status().unwrap().success());
    let want = eventually(T, "PID 1's end", || {
        let w = json(&["why", new])?;
        let want = endings(&json(&["history", new])?);
        (w["ended"]["exit_code"] == 137).then_some(want)
    });
    all_committed(&first);
    assert!(want.iter().any(|e| e.0 == 3), "{want:?}");
    drop(first.crash());
    drop(c);
    let second = Agent::start(&args);
    let w = second.json(&["why", new]);
    assert_eq!(w["ended"]["exit_code"], 137, "{w:#}");
    assert_eq!(w["ended"]["ns_pid"], 1, "{w:#}");
    for q in [new, old] {
        let h = second.json(&["history", q]);
        assert_eq!(h["name"], new, "history {q}: {h:#}");
        assert_eq!(endings(&h), want, "history {q}: {h:#}");
    }
}

mod generations;
