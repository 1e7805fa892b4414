//! A reused pid-namespace inode's earlier container, by the name runc's state gave it: after
//! a restart the store answers that name with that generation's entries only (#26).

use std::{path::PathBuf, process::Command};

use serde_json::Value;

use super::*;

/// runc's state root of the generations test, its own.
const GEN_ROOT: &str = "/run/observer-test/runc-gen";
const GEN_FIRST: &str = "observer-test-gen-first";
/// The second container's tries: the inode is given again to the namespace made next,
/// unless another process of the node made one first.
const GEN_TRIES: u32 = 5;

fn gen_second(n: u32) -> String {
    format!("observer-test-gen-second{n}")
}

/// Deletes the generations test's runc containers and bundles, however it ends.
struct GenCleanup(PathBuf);

impl Drop for GenCleanup {
    fn drop(&mut self) {
        let _ = gen_runc(&["delete", "-f", GEN_FIRST]).output();
        for n in 0..GEN_TRIES {
            let _ = gen_runc(&["delete", "-f", &gen_second(n)]).output();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gen_runc(args: &[&str]) -> Command {
    let mut c = Command::new("runc");
    c.args(["--root", GEN_ROOT]).args(args);
    c
}

/// `runc run -d <id>` of a bundle whose shell waits for `/stop` in its rootfs, then exits
/// `code`; returns its PID 1's pid-namespace inode and the file that stops it.
fn gen_run(dir: &std::path::Path, id: &str, code: u32) -> (u64, PathBuf) {
    use crate::common::runtimes::{ok, spec_bundle, write_config};
    let _ = std::fs::remove_dir_all(dir.join(id));
    let script = format!("while [ ! -e /stop ]; do sleep 0.1; done; exit {code}");
    let (b, cfg) = spec_bundle("runc", dir, id, &["sh", "-c", &script]);
    write_config(&b, &cfg);
    let _ = gen_runc(&["delete", "-f", id]).output();
    let st = gen_runc(&["run", "-d", "--bundle", b.to_str().unwrap(), id])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(b.join("run.out")).unwrap())
        .stderr(std::fs::File::create(b.join("run.err")).unwrap())
        .status()
        .unwrap();
    assert!(
        st.success(),
        "runc run {id}: {:?}",
        std::fs::read_to_string(b.join("run.err"))
    );
    let state: Value = serde_json::from_str(&ok(&mut gen_runc(&["state", id]))).unwrap();
    let pid = state["pid"].as_u64().unwrap() as u32;
    (ns_inode(pid, "pid"), b.join("rootfs/stop"))
}

/// One generation of the inode: named by its runc state in the agent (the name resolver
/// reads it while the container runs), then ended with its code and committed.
fn gen_generation(agent: &Agent, dir: &std::path::Path, id: &str, code: u32) -> u64 {
    let (inode, stop) = gen_run(dir, id, code);
    eventually(T, &format!("{id} by its name"), || {
        agent
            .json(&["containers"])
            .as_array()?
            .iter()
            .any(|c| c["name"] == id)
            .then_some(())
    });
    std::fs::write(&stop, "").unwrap();
    eventually(T, &format!("{id}'s PID 1 ended"), || {
        let (code, out, _) = agent.cli(&["why", id, "-o", "json"]);
        let w: Value = serde_json::from_str(&out).ok().filter(|_| code == 0)?;
        (w["alive"] == false && !w["ended"].is_null()).then_some(())
    });
    all_committed(agent);
    assert!(gen_runc(&["delete", "-f", id]).status().unwrap().success());
    inode
}

/// Issue #26 on a real agent: two runc containers one after the other in one pid-namespace
/// inode (the kernel gives a freed inode again), each named by runc's state; a new agent on
/// the same store, which saw neither, answers each name with its own generation (before,
/// both names answered with the second's PID 1), and the inode with the newest.
#[test]
fn a_reused_inodes_earlier_name_answers_with_its_own_generation_after_a_restart() {
    if skipped_in_vm("runc is not in the VM image; runs on the host") {
        return;
    }
    let dir = Dir::new("gen");
    let bundles = std::env::temp_dir().join(format!("observer-test-gen-{}", std::process::id()));
    let _cleanup = GenCleanup(bundles.clone());
    let args = ["--state-dir", dir.arg(), "--runc-root", GEN_ROOT];
    let first = Agent::start(&args);
    let inode = gen_generation(&first, &bundles, GEN_FIRST, 3);
    // Each try named afresh: a try in another inode is another container.
    let reused = (0..GEN_TRIES)
        .map(gen_second)
        .find(|id| gen_generation(&first, &bundles, id, 5) == inode);
    drop(first.crash());
    let Some(later) = reused else {
        eprintln!("pid-namespace inode {inode} not given again in {GEN_TRIES} tries: not checked");
        return;
    };
    let second = Agent::start(&args);
    // The exit codes of a history's entries (its shell's `sleep`s exit 0).
    let codes = |h: &Value| -> std::collections::BTreeSet<i64> {
        h["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["exit_code"].as_i64().unwrap())
            .filter(|c| *c != 0)
            .collect()
    };
    let ino = inode.to_string();
    for (q, name, code) in [
        (GEN_FIRST, GEN_FIRST, 3),
        (&later[..], &later[..], 5),
        (&ino[..], &later[..], 5),
    ] {
        let h = second.json(&["history", q]);
        let got = (h["name"].as_str(), codes(&h));
        assert_eq!(got, (Some(name), [code].into()), "history {q}: {h:#}");
        let w = second.json(&["why", q]);
        assert_eq!(w["ended"]["exit_code"], code, "why {q}: {w:#}");
    }
    drop(second);
}
