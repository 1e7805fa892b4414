//! observer's built-in launcher: real containers for tests and users on any Linux box
//! without Docker — namespaces, a pivoted rootfs, cgroup limits, and a shim that is the
//! subreaper above PID 1, like containerd-shim. It stands apart from the observer pipeline;
//! the agent sees its containers like any runtime's (cgroup `/observer/<id>`).

pub(crate) mod cgroups;
mod container;
pub(crate) mod exec;
pub(crate) mod identity;
pub(crate) mod rootfs;
mod seccomp;
pub(crate) mod security;
pub(crate) mod shim;
pub(crate) mod state;

use std::{
    io::{Read, Write},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use security::{CapArg, SecurityOpt};
use state::{Config, Limits, State, Status};

use crate::host::cgroupfs::CgroupFs;

/// An `observer run` option that does not parse (`--cap-add`, `--cap-drop`,
/// `--security-opt`): clap reports it as a usage error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OptionError {
    #[error("unknown capability `{0}` (see capabilities(7): e.g. NET_ADMIN, SYS_PTRACE, or ALL)")]
    UnknownCap(String),
    #[error("`{0}`: only seccomp=unconfined is supported (the default profile is Docker's)")]
    SeccompProfile(String),
    #[error("unsupported security option `{0}`: use seccomp=unconfined or no-new-privileges[=true|false]")]
    SecurityOpt(String),
}

/// Setting a container up from inside — mounts, /dev, the loopback, descriptors, the
/// seccomp profile, capabilities — as the container's process reports it before it exits
/// 125: the step and the system's answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    #[error("{step}: {source}")]
    Step {
        step: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("unknown capability `{0}` in the container's config")]
    UnknownCap(String),
    #[error("no default seccomp profile for {0}: run with --security-opt seccomp=unconfined")]
    NoSeccompProfile(String),
    #[error(transparent)]
    Caps(#[from] caps::errors::CapsError),
}

impl SetupError {
    /// What `step` failed with: `.map_err(SetupError::at("pivot_root"))`.
    pub(crate) fn at<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
        step: impl std::fmt::Display,
    ) -> impl FnOnce(E) -> SetupError {
        move |e| SetupError::Step {
            step: step.to_string(),
            source: e.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LauncherError {
    #[error("the launcher needs root: run it with sudo")]
    NotRoot,
    #[error("container name `{0}` is already in use: remove it with `observer rm -f {0}` or choose another --name")]
    NameInUse(String),
    #[error("invalid container name `{0}`: use letters, digits, `_`, `.` and `-`, starting with a letter or digit")]
    BadName(String),
    #[error("no container named `{0}` (see `observer ls`)")]
    NoSuchContainer(String),
    #[error("rootfs {0} does not exist")]
    RootfsMissing(PathBuf),
    #[error("rootfs {0} is not a directory")]
    RootfsNotDir(PathBuf),
    #[error("rootfs {0} is the host's own root file system (/): give the directory of a container's root file system")]
    RootfsIsHost(PathBuf),
    #[error("/bin/busybox is missing or not static: install Debian's busybox-static (the default rootfs is built from it) or pass --rootfs DIR")]
    NoBusybox,
    #[error("{1}")]
    Command(i32, String),
    #[error("the {0} cgroup controller is not available on this host: run without {1}, or pass --ignore-missing-limits to run without that limit")]
    MissingController(String, String),
    #[error("the limit in {0} reads back as `{1}`, not what was asked")]
    LimitNotApplied(PathBuf, String),
    #[error("container `{0}` is running: stop it first (`observer stop {0}`) or use `observer rm -f {0}`")]
    Running(String),
    #[error("container `{0}` is not running")]
    NotRunning(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{0} is not a valid launcher state file: {1}")]
    Corrupt(PathBuf, String),
    #[error("{0}")]
    Other(String),
}

impl LauncherError {
    /// docker's convention: 125 launcher error, 126 not executable, 127 not found.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            LauncherError::Command(code, _) => *code as u8,
            _ => 125,
        }
    }
}

pub(crate) struct RunOptions {
    pub(crate) name: Option<String>,
    pub(crate) rootfs: Option<PathBuf>,
    pub(crate) hostname: Option<String>,
    pub(crate) limits: Limits,
    pub(crate) net_host: bool,
    pub(crate) init: bool,
    pub(crate) detach: bool,
    pub(crate) env: Vec<String>,
    pub(crate) ignore_missing_limits: bool,
    pub(crate) privileged: bool,
    pub(crate) cap_add: Vec<CapArg>,
    pub(crate) cap_drop: Vec<CapArg>,
    pub(crate) security_opt: Vec<SecurityOpt>,
    pub(crate) cmd: Vec<String>,
}

fn require_root() -> Result<(), LauncherError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(LauncherError::NotRoot)
    }
}

/// `-e` values: KEY=VALUE with a non-empty key.
fn check_env(env: &[String]) -> Result<(), LauncherError> {
    match env
        .iter()
        .find(|kv| !kv.contains('=') || kv.starts_with('='))
    {
        Some(kv) => Err(LauncherError::Other(format!(
            "-e expects KEY=VALUE, got `{kv}`"
        ))),
        None => Ok(()),
    }
}

/// A hostname the kernel takes: 1 to 64 bytes of letters, digits, `-` and `.`.
fn check_hostname(h: &str) -> Result<(), LauncherError> {
    let ok = (1..=64).contains(&h.len())
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(LauncherError::Other(format!(
            "invalid --hostname `{h}`: use 1 to 64 letters, digits, `-` and `.`"
        )))
    }
}

fn random_id() -> Result<String, LauncherError> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| LauncherError::Io("reading /dev/urandom".into(), e))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What `run` was asked for, checked, as the container's config (no cgroups yet).
fn checked_config(o: &RunOptions) -> Result<Config, LauncherError> {
    if o.cmd.is_empty() {
        return Err(LauncherError::Other(
            "no command given: observer run [OPTIONS] -- CMD [ARGS...]".into(),
        ));
    }
    let security = security::resolve(o.privileged, &o.cap_add, &o.cap_drop, &o.security_opt)?;
    let id = random_id()?;
    let name = o.name.clone().unwrap_or_else(|| format!("c-{}", &id[..8]));
    state::check_name(&name)?;
    check_env(&o.env)?;
    // The default hostname is the name, cut to the kernel's 64 bytes (names are ASCII).
    let hostname = o
        .hostname
        .clone()
        .unwrap_or_else(|| name.chars().take(64).collect());
    check_hostname(&hostname)?;
    if state::dir(&name).exists() {
        return Err(LauncherError::NameInUse(name));
    }
    let (rootfs, readonly) = match &o.rootfs {
        Some(r) => (rootfs::check(r)?, false),
        None => (rootfs::ensure_default()?, true),
    };
    let cfg = Config {
        hostname,
        name,
        id,
        rootfs,
        rootfs_readonly: readonly,
        cmd: o.cmd.clone(),
        env: o.env.clone(),
        limits: o.limits.clone(),
        net_host: o.net_host,
        init: o.init,
        created: now_secs(),
        cgroups: Vec::new(),
        security,
    };
    // The command must exist in the rootfs: checked before anything is created.
    let env = container::environment(&cfg, &[]);
    rootfs::resolve(&cfg.rootfs, &cfg.cmd[0], &container::path_of(&env))
        .map_err(|(c, m)| LauncherError::Command(c, m))?;
    Ok(cfg)
}

/// Starts `observer __shim <name>` in its own session, stdio on /dev/null.
fn spawn_shim(name: &str) -> Result<std::process::Child, LauncherError> {
    let exe = std::env::current_exe()
        .map_err(|e| LauncherError::Io("locating the observer binary".into(), e))?;
    let mut shim = Command::new(exe);
    shim.arg("__shim")
        .arg(name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid in the child before exec: the shim leaves our session and terminal.
    unsafe {
        shim.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    shim.spawn()
        .map_err(|e| LauncherError::Io("starting the shim".into(), e))
}

/// Creates and starts a container; returns the exit code for `observer run` (0 when
/// detached, the command's when attached).
pub(crate) fn run(o: RunOptions) -> Result<u8, LauncherError> {
    require_root()?;
    let mut cfg = checked_config(&o)?;
    let name = cfg.name.clone();
    state::create_dir(&name)?;
    let cleanup = |cfg: &Config| {
        cgroups::remove(&cfg.cgroups);
        let _ = std::fs::remove_dir_all(state::dir(&cfg.name));
    };
    let cg = CgroupFs::discover();
    let started = cgroups::create(&cg, &cfg.id, &o.limits, o.ignore_missing_limits)
        .and_then(|dirs| {
            cfg.cgroups = dirs;
            state::save_config(&cfg)
        })
        .and_then(|_| state::save_state(&name, &State::default()))
        .and_then(|_| spawn_shim(&name));
    let mut shim = match started {
        Ok(s) => s,
        Err(e) => {
            cleanup(&cfg);
            return Err(e);
        }
    };
    let st = wait_state(&name, Duration::from_secs(30), |s| {
        s.status != Status::Created
    })?;
    if st.status == Status::Failed {
        let _ = shim.wait();
        cleanup(&cfg);
        let msg = st
            .error
            .unwrap_or_else(|| "the container failed to start".into());
        return Err(LauncherError::Command(st.exit_code.unwrap_or(125), msg));
    }
    if o.detach {
        crate::stdout::print(&format!("{name}\n"))
            .map_err(|e| LauncherError::Io("writing to stdout".into(), e))?;
        return Ok(0);
    }
    let code = follow_log(&name, true)?;
    let _ = shim.wait();
    Ok(code)
}

fn wait_state(
    name: &str,
    timeout: Duration,
    done: impl Fn(&State) -> bool,
) -> Result<State, LauncherError> {
    // A timeout past what Instant can hold (`stop -t` takes any u64) waits for ever.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        let st = state::load_state(name)?;
        if done(&st) {
            return Ok(st);
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Err(LauncherError::Other(format!(
                "container `{name}` did not reach the expected state in {timeout:?} (state: {})",
                state::effective(&st)
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Copies the log to stdout; with `follow`, until the container has exited. Returns the
/// container's exit code when it has exited.
fn follow_log(name: &str, follow: bool) -> Result<u8, LauncherError> {
    let path = state::log_path(name);
    let mut f = std::fs::File::open(&path)
        .map_err(|e| LauncherError::Io(format!("opening {}", path.display()), e))?;
    let mut out = std::io::stdout();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let st = state::load_state(name)?;
        let running = st.status == Status::Running && identity::shim_alive(&st);
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| LauncherError::Io("reading the log".into(), e))?;
            if n == 0 {
                break;
            }
            crate::stdout::check(out.write_all(&buf[..n]))
                .map_err(|e| LauncherError::Io("writing the log to stdout".into(), e))?;
        }
        crate::stdout::check(out.flush())
            .map_err(|e| LauncherError::Io("writing the log to stdout".into(), e))?;
        if !follow || !running {
            return Ok(st.exit_code.unwrap_or(0) as u8);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn logs(name: &str, follow: bool) -> Result<u8, LauncherError> {
    state::load_config(name)?;
    follow_log(name, follow).map(|_| 0)
}

/// SIGTERM to PID 1, then SIGKILL after `timeout`; waits for the shim to record the end.
/// Only the processes the state recorded (pid and start time) are ever signalled.
pub(crate) fn stop(name: &str, timeout: Duration) -> Result<State, LauncherError> {
    require_root()?;
    let cfg = state::load_config(name)?;
    let st = state::load_state(name)?;
    if st.status != Status::Running || st.pid.is_none() {
        return Ok(st);
    }
    if !identity::shim_alive(&st) {
        return Err(LauncherError::Other(format!(
            "the shim of `{name}` is gone; remove the container with `observer rm -f {name}`"
        )));
    }
    identity::signal_pid1(&st, &cfg, Signal::SIGTERM)?;
    let ended = |s: &State| s.status != Status::Running;
    match wait_state(name, timeout, ended) {
        Ok(s) => Ok(s),
        Err(_) => {
            identity::signal_pid1(&st, &cfg, Signal::SIGKILL)?;
            wait_state(name, Duration::from_secs(30), ended)
        }
    }
}

/// Removes a container: its cgroups and state (with `force`, stopping it first).
pub(crate) fn rm(name: &str, force: bool) -> Result<(), LauncherError> {
    require_root()?;
    let cfg = state::load_config(name)?;
    let st = state::load_state(name)?;
    let running = st.status == Status::Running && identity::shim_alive(&st);
    if running {
        if !force {
            return Err(LauncherError::Running(name.into()));
        }
        stop(name, Duration::ZERO)?;
    }
    // A shim that died left PID 1 without a reaper: make sure nothing of it remains.
    identity::signal_pid1(&st, &cfg, Signal::SIGKILL)?;
    let left = cgroups::remove(&cfg.cgroups);
    if !left.is_empty() {
        return Err(LauncherError::Other(format!(
            "cgroups still busy, not removed: {left:?}"
        )));
    }
    std::fs::remove_dir_all(state::dir(name))
        .map_err(|e| LauncherError::Io(format!("removing {}", state::dir(name).display()), e))
}

#[derive(serde::Serialize)]
pub(crate) struct Listed {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) state: String,
    pub(crate) status: Status,
    /// Host pid of PID 1 while running.
    pub(crate) pid: Option<u32>,
    pub(crate) shim_pid: Option<u32>,
    pub(crate) created: u64,
    pub(crate) command: Vec<String>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) oom_killed: bool,
    pub(crate) limits: Limits,
}

pub(crate) fn ls() -> Result<Vec<Listed>, LauncherError> {
    let mut out = Vec::new();
    for name in state::names()? {
        let (Ok(cfg), Ok(st)) = (state::load_config(&name), state::load_state(&name)) else {
            continue;
        };
        out.push(Listed {
            state: state::effective(&st),
            pid: st.pid.filter(|_| st.status == Status::Running),
            name,
            id: cfg.id,
            status: st.status,
            shim_pid: st.shim_pid,
            created: cfg.created,
            command: cfg.cmd,
            exit_code: st.exit_code,
            oom_killed: st.oom_killed,
            limits: cfg.limits,
        });
    }
    Ok(out)
}
