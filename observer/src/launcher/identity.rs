//! The processes a container's state names — its shim and PID 1 — known by pid *and* start
//! time, never by pid alone: after a crash or a reboot-less cleanup the recorded pids may
//! belong to anyone, and `stop`, `rm` and `exec` must not signal or enter them. Signals go
//! through a pidfd opened before the identity check, so the process checked is the one
//! signalled even if the pid is reused in between.

use std::{fs, os::fd::AsRawFd};

use nix::sys::signal::Signal;

use super::{
    state::{Config, State},
    LauncherError,
};
use crate::host::scan;

/// A process's start time: clock ticks after boot, /proc/<pid>/stat field 22.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    scan::live(pid).map(|l| l.start_ticks)
}

/// The start time of a process that is alive (a zombie is not: `scan::alive`).
pub(crate) fn start_ticks(pid: u32) -> Option<u64> {
    scan::live(pid)
        .filter(|l| !l.is_zombie())
        .map(|l| l.start_ticks)
}

/// Whether `pid` is now the live process recorded with start time `start`. States written
/// before start times were recorded fall back to `legacy` (what that process must look like).
fn is_recorded(pid: u32, start: Option<u64>, legacy: impl Fn(u32) -> bool) -> bool {
    match (start_ticks(pid), start) {
        (None, _) => false,
        (Some(now), Some(recorded)) => now == recorded,
        (Some(_), None) => legacy(pid),
    }
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// Whether the process is in the container's cgroup (`/observer/<id>` in some hierarchy).
fn in_cgroup(pid: u32, id: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .is_ok_and(|s| s.lines().any(|l| l.ends_with(&format!("/{id}"))))
}

/// Whether the container's shim is still the process the state recorded.
pub(crate) fn shim_alive(st: &State) -> bool {
    st.shim_pid
        .is_some_and(|p| is_recorded(p, st.shim_start, |p| comm(p) == "observer-shim"))
}

/// PID 1's host pid, if the recorded PID 1 is still that process.
pub(crate) fn pid1(st: &State, cfg: &Config) -> Option<u32> {
    st.pid
        .filter(|p| is_recorded(*p, st.pid_start, |p| in_cgroup(p, &cfg.id)))
}

/// Sends `sig` to the recorded PID 1. Ok(false) when it is gone or its pid now names
/// another process (nothing is signalled then).
pub(crate) fn signal_pid1(st: &State, cfg: &Config, sig: Signal) -> Result<bool, LauncherError> {
    let Some(pid) = st.pid else { return Ok(false) };
    // SAFETY: pidfd_open takes a pid and flags; the descriptor is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        // ESRCH: gone; EINVAL: a pid no process can have (a damaged state file).
        return match std::io::Error::last_os_error() {
            e if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::EINVAL)) => Ok(false),
            e => Err(LauncherError::Io(format!("pidfd_open({pid})"), e)),
        };
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    if pid1(st, cfg) != Some(pid) {
        return Ok(false);
    }
    // SAFETY: pidfd_send_signal on the pidfd opened above, no siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    match rc {
        0 => Ok(true),
        _ => match std::io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
            e => Err(LauncherError::Io(format!("signalling {pid}"), e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_known_by_pid_and_start_time() {
        let me = std::process::id();
        let start = start_ticks(me).expect("this process is alive");
        assert!(is_recorded(me, Some(start), |_| false));
        assert!(
            !is_recorded(me, Some(start + 1), |_| true),
            "another start time"
        );
        assert!(
            is_recorded(me, None, |_| true),
            "legacy states use the fallback"
        );
        assert!(!is_recorded(me, None, |_| false));
        assert_eq!(start_ticks(u32::MAX), None);
    }
}
