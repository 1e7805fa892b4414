//! `observer exec`: a new process inside a running container, like `docker exec` — into the
//! container's cgroups and every one of its namespaces (setns), then fork and exec. The
//! exec'd process's host parent is this command, outside the container; it is confined
//! like PID 1 (capabilities, no_new_privs, seccomp, no inherited descriptors).

use std::{fs, io::Read, os::fd::AsRawFd, path::Path};

use nix::{
    fcntl::OFlag,
    sched::{setns, CloneFlags},
    sys::wait::{waitpid, WaitStatus},
    unistd::{fork, pipe2, ForkResult},
};

use super::{
    cgroups, check_env, container, identity, rootfs, security,
    state::{self, Config, State, Status},
    LauncherError,
};

/// Runs `cmd` in container `name`; returns its exit code (126/127 when it cannot start).
pub(crate) fn exec(name: &str, env_extra: &[String], cmd: &[String]) -> Result<u8, LauncherError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(LauncherError::NotRoot);
    }
    if cmd.is_empty() {
        return Err(LauncherError::Other(
            "no command given: observer exec NAME -- CMD [ARGS...]".into(),
        ));
    }
    check_env(env_extra)?;
    let cfg = state::load_config(name)?;
    let st = state::load_state(name)?;
    // PID 1 as recorded (pid and start time): a reused pid is never entered.
    let pid = match identity::pid1(&st, &cfg) {
        Some(p) if st.status == Status::Running => p,
        _ => return Err(LauncherError::NotRunning(name.into())),
    };
    enter(name, &cfg, &st, pid)?;
    // Now "/" is the container's root.
    let env = container::environment(&cfg, env_extra);
    let path = rootfs::resolve(Path::new("/"), &cmd[0], &container::path_of(&env))
        .map_err(|(c, m)| LauncherError::Command(c, m))?;
    let (rd, wr) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| LauncherError::Other(format!("pipe: {e}")))?;
    // SAFETY: the CLI is single-threaded here (setns into a mount namespace requires it).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(rd);
            let mut err = fs::File::from(wr);
            if let Err(e) = security::confine(&cfg.security, err.as_raw_fd()) {
                container::fail(&mut err, 125, &e.to_string())
            }
            container::exec(&mut err, &path, cmd, &env)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(wr);
            wait_for(child, rd)
        }
        Err(e) => Err(LauncherError::Other(format!("fork: {e}"))),
    }
}

/// Moves this process into the cgroups and every namespace of the container's PID 1
/// (`pid`, as recorded in `st`).
fn enter(name: &str, cfg: &Config, st: &State, pid: u32) -> Result<(), LauncherError> {
    // Open every namespace first: /proc/<pid> must stay reachable while we switch.
    let order = [
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut fds = Vec::new();
    for (ns, flag) in order {
        let f = fs::File::open(format!("/proc/{pid}/ns/{ns}"))
            .map_err(|e| LauncherError::Io(format!("opening the {ns} namespace of {pid}"), e))?;
        fds.push((ns, flag, f));
    }
    // Still the recorded PID 1 after opening: the namespaces are that process's.
    if identity::pid1(st, cfg) != Some(pid) {
        return Err(LauncherError::NotRunning(name.into()));
    }
    cgroups::join(&cfg.cgroups, std::process::id())?;
    for (ns, flag, f) in &fds {
        setns(f, *flag)
            .map_err(|e| LauncherError::Other(format!("entering the {ns} namespace: {e}")))?;
    }
    Ok(())
}

/// The command's exit code, once it ended; its failure to start, as reported on `rd`.
fn wait_for(child: nix::unistd::Pid, rd: std::os::fd::OwnedFd) -> Result<u8, LauncherError> {
    let mut report = String::new();
    let _ = fs::File::from(rd).read_to_string(&mut report);
    let status = loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, c)) => break c,
            Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(LauncherError::Other(format!(
                    "waiting for the command: {e}"
                )))
            }
        }
    };
    if !report.is_empty() {
        let (code, msg) = report.split_once(' ').unwrap_or(("126", report.as_str()));
        return Err(LauncherError::Command(
            code.parse().unwrap_or(126),
            msg.to_string(),
        ));
    }
    Ok(status as u8)
}
