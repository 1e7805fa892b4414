//! A container's files under /run/observer/containers/<name>/: config.json (what was asked),
//! state.json (what happened: shim, PID 1, exit), and the log. Every write is a rename of a
//! complete file, so any command in any shell reads a consistent state.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::LauncherError;

pub const STATE_ROOT: &str = "/run/observer/containers";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids_max: Option<u64>,
    /// CPUs as a fraction (0.5 = half a CPU).
    pub cpus: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Config {
    pub name: String,
    /// 64 hex characters; also the cgroup directory name.
    pub id: String,
    pub rootfs: PathBuf,
    /// The default busybox rootfs is shared, so it is mounted read-only.
    pub rootfs_readonly: bool,
    pub hostname: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub limits: Limits,
    pub net_host: bool,
    pub init: bool,
    /// Boot-independent wall-clock creation time (seconds since the epoch).
    pub created: u64,
    /// cgroup directories made for the container (one per hierarchy).
    pub cgroups: Vec<PathBuf>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Exited,
    /// The command could not be started (see `error`).
    Failed,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub status: Status,
    pub shim_pid: Option<u32>,
    /// Host pid of the container's PID 1.
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished: Option<u64>,
    /// Why the start failed, and the exit code that says so (126, 127).
    pub error: Option<String>,
}

pub fn dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

pub fn log_path(name: &str) -> PathBuf {
    dir(name).join("log")
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), LauncherError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(v).expect("serialisable"))
        .and_then(|_| fs::rename(&tmp, path))
        .map_err(|e| LauncherError::Io(format!("writing {}", path.display()), e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, LauncherError> {
    let b =
        fs::read(path).map_err(|e| LauncherError::Io(format!("reading {}", path.display()), e))?;
    serde_json::from_slice(&b)
        .map_err(|e| LauncherError::Corrupt(path.to_path_buf(), e.to_string()))
}

pub fn save_config(c: &Config) -> Result<(), LauncherError> {
    write_json(&dir(&c.name).join("config.json"), c)
}

pub fn load_config(name: &str) -> Result<Config, LauncherError> {
    if !dir(name).join("config.json").exists() {
        return Err(LauncherError::NoSuchContainer(name.to_string()));
    }
    read_json(&dir(name).join("config.json"))
}

pub fn save_state(name: &str, s: &State) -> Result<(), LauncherError> {
    write_json(&dir(name).join("state.json"), s)
}

pub fn load_state(name: &str) -> Result<State, LauncherError> {
    let p = dir(name).join("state.json");
    if !p.exists() {
        return Ok(State::default());
    }
    read_json(&p)
}

/// Names of every container with a state directory.
pub fn names() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(STATE_ROOT)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("config.json").exists())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The status as the user sees it: a "running" container whose shim died is reported as such.
pub fn effective(s: &State) -> String {
    match s.status {
        Status::Running if !s.shim_pid.is_some_and(alive) => "dead (shim gone)".into(),
        Status::Running => "running".into(),
        Status::Created => "created".into(),
        Status::Exited => match (s.exit_code, s.oom_killed) {
            (_, true) => format!("exited ({}, OOM killed)", s.exit_code.unwrap_or(137)),
            (Some(c), _) => format!("exited ({c})"),
            _ => "exited".into(),
        },
        Status::Failed => format!("failed ({})", s.error.as_deref().unwrap_or("?")),
    }
}
