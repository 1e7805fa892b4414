//! What loading eBPF needs from the process: capabilities and, on kernels before 5.11
//! (no memcg accounting of BPF memory), a raised RLIMIT_MEMLOCK.

use aya::util::KernelVersion;

use super::ProbeError;

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability mask of this process, from /proc/self/status.
pub(crate) fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

pub(crate) fn check() -> Result<(), ProbeError> {
    let caps = effective_caps().unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
        let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
            .into_iter()
            .filter(|&(c, _)| !has(c))
            .map(|(_, n)| n)
            .collect();
        return Err(ProbeError::NotPrivileged(missing.join(" and ")));
    }
    if !has(CAP_SYS_PTRACE) {
        log::warn!(
            "without CAP_SYS_PTRACE /proc/<pid>/exe and /proc/<pid>/ns/* of processes of other \
             users (or with capabilities this agent lacks) cannot be read: processes that were \
             running before the agent start have no executable (nor, unless the task iterator \
             seeds the table, namespaces, and then may not be attributed to their containers)"
        );
    }
    Ok(())
}

/// Whether a seccomp filter explains `e`: an EPERM somewhere in its chain (bpf() refused)
/// while this process has the capabilities (checked before loading) and runs under a
/// seccomp filter.
pub(crate) fn refused_by_seccomp(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    let mut eperm = false;
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            eperm |= io.raw_os_error() == Some(libc::EPERM);
        }
        cur = err.source();
    }
    eperm && seccomp_filtered()
}

/// `Seccomp: 2` (filter mode) in /proc/self/status.
fn seccomp_filtered() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .is_some_and(|v| v.trim() == "2")
    })
}

/// Raises RLIMIT_MEMLOCK to infinity. Failure matters only before 5.11; there it is a warning
/// (the load then fails with a clear EPERM if the limit really is too low).
pub(crate) fn raise_memlock() {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) } == 0
        && cur.rlim_cur == libc::RLIM_INFINITY
    {
        return; // e.g. LimitMEMLOCK=infinity in the systemd unit
    }
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid, initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        let err = std::io::Error::last_os_error();
        let needs_it = KernelVersion::current()
            .map(|v| v < KernelVersion::new(5, 11, 0))
            .unwrap_or(true);
        if needs_it {
            log::warn!("raising RLIMIT_MEMLOCK failed ({err}); loading may fail on this kernel");
        } else {
            log::debug!("raising RLIMIT_MEMLOCK failed ({err}); not needed on this kernel");
        }
    }
}
