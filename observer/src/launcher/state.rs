//! A container's files under /run/observer/containers/<name>/: config.json (what was asked),
//! state.json (what happened: shim, PID 1, exit), and the log. Every write is a rename of a
//! complete file, so any command in any shell reads a consistent state. They hold the
//! `-e` values, so they are root's alone: directories 0700, files 0600.

use std::{
    fs,
    io::{ErrorKind, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{security::Security, LauncherError};

pub(crate) const STATE_ROOT: &str = "/run/observer/containers";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Limits {
    pub(crate) memory_bytes: Option<u64>,
    pub(crate) pids_max: Option<u64>,
    /// CPUs as a fraction (0.5 = half a CPU).
    pub(crate) cpus: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Config {
    pub(crate) name: String,
    /// 64 hex characters; also the cgroup directory name.
    pub(crate) id: String,
    pub(crate) rootfs: PathBuf,
    /// The default busybox rootfs is shared, so it is mounted read-only.
    pub(crate) rootfs_readonly: bool,
    pub(crate) hostname: String,
    pub(crate) cmd: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) limits: Limits,
    pub(crate) net_host: bool,
    pub(crate) init: bool,
    /// Boot-independent wall-clock creation time (seconds since the epoch).
    pub(crate) created: u64,
    /// cgroup directories made for the container (one per hierarchy).
    pub(crate) cgroups: Vec<PathBuf>,
    /// Capabilities, seccomp, no_new_privs (a config from before these existed gets the
    /// defaults).
    #[serde(default)]
    pub(crate) security: Security,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    #[default]
    Created,
    Running,
    Exited,
    /// The command could not be started (see `error`).
    Failed,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct State {
    pub(crate) status: Status,
    pub(crate) shim_pid: Option<u32>,
    /// The shim's start time (clock ticks after boot, /proc/<pid>/stat field 22): with the
    /// pid, it names the process, so a reused pid is never taken for it.
    pub(crate) shim_start: Option<u64>,
    /// Host pid of the container's PID 1.
    pub(crate) pid: Option<u32>,
    /// PID 1's start time, as `shim_start`.
    pub(crate) pid_start: Option<u64>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) signal: Option<i32>,
    pub(crate) oom_killed: bool,
    pub(crate) finished: Option<u64>,
    /// Why the start failed, and the exit code that says so (126, 127).
    pub(crate) error: Option<String>,
}

pub(crate) fn dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

/// Container names: letters, digits, `_`, `.` and `-`, starting with a letter or digit, at
/// most 128 bytes — a single path component, never `.` or `..`.
pub(crate) fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && n.len() <= 128
}

pub(crate) fn check_name(n: &str) -> Result<(), LauncherError> {
    if valid_name(n) {
        Ok(())
    } else {
        Err(LauncherError::BadName(n.to_string()))
    }
}

/// Makes a new container's directory, 0700 under a 0700 root (also tightening a root an
/// older observer made world-readable); an existing directory means the name is taken.
pub(crate) fn create_dir(name: &str) -> Result<PathBuf, LauncherError> {
    let root = Path::new(STATE_ROOT);
    let io = |p: &Path, e| LauncherError::Io(format!("creating {}", p.display()), e);
    if let Some(parent) = root.parent() {
        fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(root, e)),
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(|e| io(root, e))?;
    let d = dir(name);
    match fs::DirBuilder::new().mode(0o700).create(&d) {
        Ok(()) => Ok(d),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            Err(LauncherError::NameInUse(name.to_string()))
        }
        Err(e) => Err(io(&d, e)),
    }
}

/// Opens (creating, 0600) a container's log for appending.
pub(crate) fn open_log(name: &str) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log_path(name))
}

pub(crate) fn log_path(name: &str) -> PathBuf {
    dir(name).join("log")
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), LauncherError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&serde_json::to_vec_pretty(v).expect("serialisable")))
        .and_then(|_| fs::rename(&tmp, path))
        .map_err(|e| LauncherError::Io(format!("writing {}", path.display()), e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, LauncherError> {
    let b =
        fs::read(path).map_err(|e| LauncherError::Io(format!("reading {}", path.display()), e))?;
    serde_json::from_slice(&b)
        .map_err(|e| LauncherError::Corrupt(path.to_path_buf(), e.to_string()))
}

pub(crate) fn save_config(c: &Config) -> Result<(), LauncherError> {
    write_json(&dir(&c.name).join("config.json"), c)
}

pub(crate) fn load_config(name: &str) -> Result<Config, LauncherError> {
    check_name(name)?;
    if !dir(name).join("config.json").exists() {
        return Err(LauncherError::NoSuchContainer(name.to_string()));
    }
    read_json(&dir(name).join("config.json"))
}

pub(crate) fn save_state(name: &str, s: &State) -> Result<(), LauncherError> {
    write_json(&dir(name).join("state.json"), s)
}

pub(crate) fn load_state(name: &str) -> Result<State, LauncherError> {
    let p = dir(name).join("state.json");
    if !p.exists() {
        return Ok(State::default());
    }
    read_json(&p)
}

/// Names of every container with a state directory (none when the launcher never ran).
pub(crate) fn names() -> Result<Vec<String>, LauncherError> {
    let rd = match fs::read_dir(STATE_ROOT) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            return Err(LauncherError::Io(
                format!("reading {STATE_ROOT} (the launcher's state is root's: run as root)"),
                e,
            ))
        }
        Err(e) => return Err(LauncherError::Io(format!("reading {STATE_ROOT}"), e)),
    };
    let mut v: Vec<String> = rd
        .flatten()
        .filter(|e| e.path().join("config.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| valid_name(n))
        .collect();
    v.sort();
    Ok(v)
}

/// The status as the user sees it: a "running" container whose shim died is reported as such.
pub(crate) fn effective(s: &State) -> String {
    match s.status {
        Status::Running if !super::identity::shim_alive(s) => "dead (shim gone)".into(),
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
