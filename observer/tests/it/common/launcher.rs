//! Launcher containers as the tests drive them: `observer run -d` with a name, removed
//! (forcibly) when dropped, and what `observer ls` and the state files say about them.

use std::path::PathBuf;

use serde_json::Value;

use super::observer;

/// Runs `observer ARGS`: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = observer().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A launcher container removed (forcibly) on drop.
pub struct Ctr(pub String);

impl Ctr {
    pub fn start(name: &str, opts: &[&str], cmd: &[&str]) -> Ctr {
        let _ = run(&["rm", "-f", name]);
        let mut a = vec!["run", "-d", "--name", name];
        a.extend(opts);
        a.push("--");
        a.extend(cmd);
        let (code, out, err) = run(&a);
        assert_eq!(code, 0, "observer run failed: {err}");
        assert_eq!(out.trim(), name);
        Ctr(name.to_string())
    }

    pub fn info(&self) -> Value {
        let (code, out, _) = run(&["ls", "-o", "json"]);
        assert_eq!(code, 0);
        let list: Value = serde_json::from_str(&out).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == self.0.as_str())
            .cloned()
            .expect("listed")
    }

    pub fn pid1(&self) -> u64 {
        self.info()["pid"].as_u64().expect("running")
    }

    pub fn config(&self) -> Value {
        serde_json::from_slice(
            &std::fs::read(format!("/run/observer/containers/{}/config.json", self.0)).unwrap(),
        )
        .unwrap()
    }

    pub fn cgroups(&self) -> Vec<PathBuf> {
        self.config()["cgroups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| PathBuf::from(p.as_str().unwrap()))
            .collect()
    }

    pub fn exec(&self, cmd: &[&str]) -> (i32, String, String) {
        let mut a = vec!["exec", self.0.as_str(), "--"];
        a.extend(cmd);
        run(&a)
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = run(&["rm", "-f", &self.0]);
    }
}
