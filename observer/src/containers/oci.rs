//! Containers an OCI runtime started by itself (`runc run -d NAME`, `crun run -d NAME`): no
//! runtime cgroup names them, so the table knows them only by their pid namespace ("bare").
//! The runtimes' own state directories do: runc's `<root>/<id>/state.json`
//! (`init_process_pid`, `init_process_start`, `config.labels` with `bundle=` and the
//! bundle's annotations) and crun's `<root>/<id>/status` (`pid`, `process-start-time`,
//! `bundle`). A state matches a container when its init pid is the container's PID 1 with
//! the same start time (a stale state whose pid was reused matches nothing).

use std::path::{Path, PathBuf};

use super::{cgroup::Runtime, names::parse::OciConfig, state_file::read as read_state};

/// One runtime root to look in: `runc` (default /run/runc) or `crun` (default /run/crun).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OciRoot {
    pub(crate) runtime: Runtime,
    pub(crate) dir: PathBuf,
}

impl OciRoot {
    pub(crate) fn defaults() -> Vec<OciRoot> {
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
    pub(crate) runtime: Runtime,
    pub(crate) id: String,
    pub(crate) pid: u32,
    /// Start time of the init process, clock ticks after boot (/proc/<pid>/stat field 22).
    pub(crate) start_ticks: u64,
    pub(crate) bundle: Option<PathBuf>,
}

/// The state, among `roots`, of the container whose PID 1 is `pid` started at `start_ticks`.
pub(crate) fn find(roots: &[OciRoot], pid: u32, start_ticks: u64) -> Option<OciState> {
    roots.iter().find_map(|root| {
        std::fs::read_dir(&root.dir).ok()?.flatten().find_map(|e| {
            let id = e.file_name().to_string_lossy().into_owned();
            let s = match root.runtime {
                Runtime::Crun => parse::crun(&read_state(&e.path().join("status"))?, &id),
                _ => parse::runc(&read_state(&e.path().join("state.json"))?),
            }?;
            (s.pid == pid && s.start_ticks == start_ticks).then_some(s)
        })
    })
}

/// The bundle's OCI config (its annotations tell pods and names, as containerd's do).
pub(crate) fn bundle_config(bundle: &Path) -> Option<OciConfig> {
    read_state(&bundle.join("config.json"))
}

/// The state files' fields observer reads; wrong types or missing keys give None, never a
/// panic (fuzzed with the other state files: fuzz/fuzz_targets/state_files.rs).
pub mod parse {
    use std::fmt;

    use serde::{
        de::{self, IgnoredAny, Visitor},
        Deserialize, Deserializer,
    };

    use super::{OciState, Runtime};
    use crate::containers::state_file::{capped, Num, Obj, Str};

    /// runc's `state.json` (the whole config inside is skipped but for its labels).
    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct RuncState {
        pub(crate) id: Str,
        pub(crate) init_process_pid: Num,
        pub(crate) init_process_start: Num,
        pub(crate) config: Obj<RuncConfig>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub(crate) struct RuncConfig {
        pub(crate) labels: BundleLabel,
    }

    /// The `bundle=<dir>` entry of runc's `config.labels`; the other labels skipped.
    #[derive(Debug, Default)]
    pub(crate) struct BundleLabel(pub(crate) Option<String>);

    impl<'de> Deserialize<'de> for BundleLabel {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = BundleLabel;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an array of labels")
                }
                fn visit_seq<A: de::SeqAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<BundleLabel, A::Error> {
                    let mut bundle = None;
                    while let Some(Str(l)) = a.next_element::<Str>()? {
                        if bundle.is_none() {
                            bundle = l
                                .as_deref()
                                .and_then(|l| l.strip_prefix("bundle="))
                                .map(capped);
                        }
                    }
                    Ok(BundleLabel(bundle))
                }
                fn visit_map<A: de::MapAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<BundleLabel, A::Error> {
                    while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(BundleLabel(None))
                }
                fn visit_str<E: de::Error>(self, _: &str) -> Result<BundleLabel, E> {
                    Ok(BundleLabel(None))
                }
                fn visit_u64<E: de::Error>(self, _: u64) -> Result<BundleLabel, E> {
                    Ok(BundleLabel(None))
                }
                fn visit_i64<E: de::Error>(self, _: i64) -> Result<BundleLabel, E> {
                    Ok(BundleLabel(None))
                }
                fn visit_f64<E: de::Error>(self, _: f64) -> Result<BundleLabel, E> {
                    Ok(BundleLabel(None))
                }
                fn visit_bool<E: de::Error>(self, _: bool) -> Result<BundleLabel, E> {
                    Ok(BundleLabel(None))
                }
                fn visit_unit<E: de::Error>(self) -> Result<BundleLabel, E> {
                    Ok(BundleLabel(None))
                }
            }
            d.deserialize_any(V)
        }
    }

    /// crun's `status`.
    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct CrunStatus {
        pub(crate) pid: Num,
        #[serde(rename = "process-start-time")]
        pub(crate) process_start_time: Num,
        pub(crate) bundle: Str,
    }

    /// runc's `state.json`.
    pub fn runc(v: &RuncState) -> Option<OciState> {
        Some(OciState {
            runtime: Runtime::Runc,
            id: v.id.get()?,
            pid: u32::try_from(v.init_process_pid.0?).ok()?,
            start_ticks: v.init_process_start.0?,
            bundle: v.config.0.labels.0.clone().map(Into::into),
        })
    }

    /// crun's `status` (the id is its directory's name).
    pub fn crun(v: &CrunStatus, id: &str) -> Option<OciState> {
        Some(OciState {
            runtime: Runtime::Crun,
            id: id.to_string(),
            pid: u32::try_from(v.pid.0?).ok()?,
            start_ticks: v.process_start_time.0?,
            bundle: v.bundle.get().map(Into::into),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
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
        let runc = |v: serde_json::Value| parse::runc(&serde_json::from_value(v).unwrap());
        let crun = |v: serde_json::Value| parse::crun(&serde_json::from_value(v).unwrap(), "x");
        assert_eq!(runc(serde_json::json!({"id": "x"})), None);
        assert_eq!(crun(serde_json::json!({"pid": -1})), None);
        // Wrong types read as absent, never a failure of the whole file.
        let r = runc(serde_json::json!({
            "id": "y", "init_process_pid": 7, "init_process_start": 9,
            "config": {"labels": [1, {"a": 2}, "bundle=/b", "bundle=/c"], "x": [[]]}
        }))
        .unwrap();
        assert_eq!(r.bundle.as_deref(), Some(Path::new("/b")));
        assert_eq!(
            runc(serde_json::json!({"id": "y", "init_process_pid": 7, "init_process_start": 9, "config": "x"}))
                .unwrap()
                .bundle,
            None
        );
        assert_eq!(
            crun(serde_json::json!({"pid": 1.5, "process-start-time": 1})),
            None
        );
    }

    #[test]
    fn a_state_names_only_the_process_it_started() {
        // A crun root whose state is this test process (pid and start time), and a stale
        // one whose pid matches but whose start time does not.
        let me = std::process::id();
        let start = crate::host::scan::live(me).unwrap().start_ticks;
        let dir = std::env::temp_dir().join(format!("observer-oci-{me}"));
        let _ = std::fs::remove_dir_all(&dir);
        for (id, ticks) in [("stale", start + 1), ("live", start)] {
            std::fs::create_dir_all(dir.join(id)).unwrap();
            let mut v: serde_json::Value = fixture("crun-status.json");
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
