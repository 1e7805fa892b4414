//! The shim, like containerd-shim: one per container, started detached by `observer run`
//! (a re-exec of this binary as `observer __shim <name>`), so it outlives the command that
//! started it. It is a child subreaper and the host parent of the container's PID 1; it
//! creates the container, records that it runs, reaps it, and records how it ended (exit
//! code, signal, OOM kill). The container's stdout and stderr go to its log file.

use std::{fs, io::Read, os::fd::OwnedFd, process::ExitCode};

use nix::{
    fcntl::OFlag,
    sched::{unshare, CloneFlags},
    sys::wait::{waitpid, WaitStatus},
    unistd::{fork, pipe2, ForkResult, Pid},
};

use super::{
    cgroups, container, identity, security,
    state::{self, Config, State, Status},
};
use crate::host::cgroupfs::CgroupFs;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn record(name: &str, st: &State) {
    if let Err(e) = state::save_state(name, st) {
        eprintln!("observer shim {name}: {e}");
    }
}

/// Marks the start failed (exit code 125, like a runtime's own failures) and records it.
fn fail(name: &str, st: &mut State, msg: String) -> ExitCode {
    st.status = Status::Failed;
    st.error = Some(msg);
    st.exit_code = Some(125);
    record(name, st);
    ExitCode::FAILURE
}

pub(crate) fn main(name: &str) -> ExitCode {
    // Whatever `observer run` inherited from its caller stays out of the shim and so out of
    // the container (its stdio is /dev/null).
    if let Err(e) = security::close_inherited(None) {
        eprintln!("observer shim: {e}");
        return ExitCode::FAILURE;
    }
    let cfg = match state::load_config(name) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("observer shim: {e}");
            return ExitCode::FAILURE;
        }
    };
    let me = std::process::id();
    let mut st = State {
        shim_pid: Some(me),
        shim_start: identity::start_ticks(me),
        ..State::default()
    };
    let _ = nix::sys::prctl::set_name(c"observer-shim");
    // The log stays open in the shim for as long as the container runs, as before.
    let (child, rd, _log) = match start(name, &cfg, &mut st) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut report = String::new();
    let _ = fs::File::from(rd).read_to_string(&mut report);
    if !report.is_empty() {
        let (code, msg) = report.split_once(' ').unwrap_or(("125", report.as_str()));
        st.status = Status::Failed;
        st.exit_code = code.parse().ok();
        st.error = Some(msg.to_string());
        let _ = waitpid(child, None);
        record(name, &st);
        return ExitCode::FAILURE;
    }
    st.status = Status::Running;
    st.pid = Some(child.as_raw() as u32);
    // Our child until we reap it, so its pid cannot have been reused yet.
    st.pid_start = identity::start_time(child.as_raw() as u32);
    record(name, &st);

    let cg = CgroupFs::discover();
    reap_until(child, &mut st);
    st.oom_killed = cgroups::oom_kills(&cg, &cfg.cgroups) > 0;
    st.status = Status::Exited;
    st.finished = Some(now_secs());
    record(name, &st);
    ExitCode::SUCCESS
}

/// Becomes a subreaper and forks the container's PID 1 into a new pid namespace. Returns
/// it with the pipe's read end on which it reports a failed start (closed on exec) and the
/// log; Err once a failure is recorded.
fn start(name: &str, cfg: &Config, st: &mut State) -> Result<(Pid, OwnedFd, fs::File), ExitCode> {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        return Err(fail(name, st, format!("PR_SET_CHILD_SUBREAPER: {e}")));
    }
    let log = state::open_log(name).map_err(|e| fail(name, st, format!("opening the log: {e}")))?;
    let (rd, wr) = pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(name, st, format!("pipe: {e}")))?;
    // The next child is PID 1 of a new pid namespace; the shim stays in the host's.
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
        return Err(fail(name, st, format!("creating the pid namespace: {e}")));
    }
    // SAFETY: the shim is single-threaded.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(rd);
            container::child_main(cfg, wr, &log)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(fail(name, st, format!("fork: {e}"))),
    };
    drop(wr);
    Ok((child, rd, log))
}

/// Reaps everything re-parented to the shim; returns when PID 1 has ended, with how.
fn reap_until(child: Pid, st: &mut State) {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                st.exit_code = Some(code);
                break;
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                st.signal = Some(sig as i32);
                st.exit_code = Some(128 + sig as i32);
                break;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                st.error = Some(format!("waiting for the container: {e}"));
                break;
            }
        }
    }
}
