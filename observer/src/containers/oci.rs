//! Containers an OCI runtime started by itself (`runc run -d NAME`, `crun run -d NAME`): no
//! runtime cgroup names them, so the table knows them only by their pid namespace ("bare").
//! The runtimes' own state directories do: runc's `<root>/<id>/state.json`
//! (`init_process_pid`, `init_process_start`, `config.labels` with `bundle=` and the
//! bundle's annotations) and crun's `<root>/<id>/status` (`pid`, `process-start-time`,
//! `bundle`). A state matches a container when its init pid is the container's PID 1 with
//! the same start time (a stale state whose pid was reused matches nothing).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::cgroup::Runtime;

/// One runtime root to look in: `runc` (default /run/runc) or `crun` (default /run/crun).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciRoot {
    pub runtime: Runtime,
    pub dir: PathBuf,
}

impl OciRoot {
    pub fn defaults() -> Vec<OciRoot> {
        vec![
            OciRoot {
                runtime: Runtime::Runc,
                dir: "/run/runc".into(),
            },
            OciRoot {
                runtime: Runtime::Crun,
                dir: "/run/crun".into(),
            },
        ]
    }
}

/// What a runtime's state says about one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciState {
    pub runtime: Runtime,
    pub id: String,
    pub pid: u32,
    /// Start time of the init process, clock ticks after boot (/proc/<pid>/stat field 22).
    pub start_ticks: u64,
    pub bundle: Option<PathBuf>,
}

/// The state, among `roots`, of the container whose PID 1 is `pid` started at `start_ticks`.
pub fn find(roots: &[OciRoot], pid: u32, start_ticks: u64) -> Option<OciState> {
    roots.iter().find_map(|root| {
        let file = match root.runtime {
            Runtime::Crun => "status",
            _ => "state.json",
        };
        std::fs::read_dir(&root.dir).ok()?.flatten().find_map(|e| {
            let id = e.file_name().to_string_lossy().into_owned();
            let v = super::names::read_json(&e.path().join(file))?;
            let s = match root.runtime {
                Runtime::Crun => parse::crun(&v, &id),
                _ => parse::runc(&v),
            }?;
            (s.pid == pid && s.start_ticks == start_ticks).then_some(s)
        })
    })
}

/// The bundle's OCI config (its annotations tell pods and names, as containerd's do).
pub fn bundle_config(bundle: &Path) -> Option<Value> {
    super::names::read_json(&bundle.join("config.json"))
}

/// The state files' JSON; wrong types or missing keys give None, never a panic (fuzzed
/// with the other state files: fuzz/fuzz_targets/state_files.rs).
pub mod parse {
    use serde_json::Value;

    use super::{OciState, Runtime};

    /// runc's `state.json`.
    pub fn runc(v: &Value) -> Option<OciState> {
        let bundle = v["config"]["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|l| l.as_str()?.strip_prefix("bundle="))
            .map(Into::into);
        Some(OciState {
            runtime: Runtime::Runc,
            id: v["id"].as_str()?.to_string(),
            pid: u32::try_from(v["init_process_pid"].as_u64()?).ok()?,
            start_ticks: v["init_process_start"].as_u64()?,
            bundle,
        })
    }

    /// crun's `status` (the id is its directory's name).
    pub fn crun(v: &Value, id: &str) -> Option<OciState> {
        Some(OciState {
            runtime: Runtime::Crun,
            id: id.to_string(),
            pid: u32::try_from(v["pid"].as_u64()?).ok()?,
            start_ticks: v["process-start-time"].as_u64()?,
            bundle: v["bundle"].as_str().map(Into::into),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let p = format!("{}/tests/fixtures/oci/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    #[test]
    fn runc_and_crun_state_files_parse() {
        let r = parse::runc(&fixture("runc-state.json")).unwrap();
        assert_eq!(
            (r.id.as_str(), r.pid, r.start_ticks, r.bundle.as_deref()),
            ("barrunc", 17638, 4197568, Some(Path::new("/tmp/rb")))
        );
        let c = parse::crun(&fixture("crun-status.json"), "barcrun").unwrap();
        assert_eq!(
            (c.id.as_str(), c.pid, c.start_ticks, c.bundle.as_deref()),
            ("barcrun", 17700, 4197600, Some(Path::new("/tmp/rb")))
        );
        assert_eq!(parse::runc(&serde_json::json!({"id": "x"})), None);
        assert_eq!(parse::crun(&serde_json::json!({"pid": -1}), "x"), None);
    }

    #[test]
    fn a_state_names_only_the_process_it_started() {
        // A crun root whose state is this test process (pid and start time), and a stale
        // one whose pid matches but whose start time does not.
        let me = std::process::id();
        let start = crate::table::scan::live(me).unwrap().start_ticks;
        let dir = std::env::temp_dir().join(format!("observer-oci-{me}"));
        let _ = std::fs::remove_dir_all(&dir);
        for (id, ticks) in [("stale", start + 1), ("live", start)] {
            std::fs::create_dir_all(dir.join(id)).unwrap();
            let mut v = fixture("crun-status.json");
            v["pid"] = me.into();
            v["process-start-time"] = ticks.into();
            std::fs::write(dir.join(id).join("status"), v.to_string()).unwrap();
        }
        let roots = [OciRoot {
            runtime: Runtime::Crun,
            dir: dir.clone(),
        }];
        assert_eq!(
            find(&roots, me, start).map(|s| s.id).as_deref(),
            Some("live")
        );
        assert_eq!(find(&roots, me, start + 2), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
