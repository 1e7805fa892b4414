//! The launcher's default seccomp profile: Docker's (moby `profiles/seccomp/default.json`,
//! written in Go as `DefaultProfile()` in `profiles/seccomp/default_linux.go`, read at
//! moby commit b985e2313a86), re-authored here as Rust data and compiled to BPF with
//! `seccompiler` (Firecracker's pure-Rust compiler: the agent is a static musl binary, and
//! libseccomp would need a C library). Syscall numbers come from the `libc` crate's per-arch
//! tables, so x86_64 and aarch64 each get their own; a name an arch lacks is simply absent.
//!
//! Semantics kept from Docker: an allowlist, everything else fails with EPERM; syscalls that
//! need a capability are allowed when the container keeps it (CAP_SYS_ADMIN → mount,
//! unshare, setns, clone3…); without CAP_SYS_ADMIN, `clone` is allowed only without
//! namespace flags and `clone3` fails with ENOSYS (so glibc falls back to `clone`);
//! `personality` only with the five values Docker allows; `socket` for every family but
//! AF_ALG and AF_VSOCK.
//!
//! Where this differs from Docker's profile, on purpose or by the tools:
//! - One native ABI per filter (seccompiler's arch check): 32-bit x86 (`int 0x80`) and
//!   32-bit arm syscalls kill the process, and x32 syscall numbers get EPERM. Docker allows
//!   those sub-architectures; run 32-bit binaries with `--security-opt seccomp=unconfined`.
//! - `int` arguments (socket's family, personality's persona) are compared on their low
//!   32 bits, as the kernel reads them; libseccomp compares all 64, so under Docker a family
//!   with high bits set passes the `> AF_VSOCK` rule while the kernel sees AF_ALG.
//! - Syscalls newer than this table get EPERM; runc answers ENOSYS above the highest number
//!   its profile knows. Numbers 451..=466 are written out below (Linux 6.5 to 6.13 share one
//!   number on every arch; the `libc` crate does not have them all yet).
//! - Docker's "kernel >= 4.8" rule (ptrace, process_vm_readv/writev) is unconditional: the
//!   launcher's kernel floor is 5.10.

use std::collections::BTreeMap;

use caps::{Capability, CapsHashSet};
use libc::c_long;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::SetupError;

macro_rules! nrs {
    ($($n:ident),* $(,)?) => { &[$(libc::$n),*] };
}

/// Syscalls of Linux 6.5 to 6.13 (one number on every architecture since 5.1's unified
/// table; the `libc` crate's tables stop short of some of them).
mod newer {
    use libc::c_long;
    pub(crate) const CACHESTAT: c_long = 451;
    pub(crate) const FCHMODAT2: c_long = 452;
    pub(crate) const MAP_SHADOW_STACK: c_long = 453;
    pub(crate) const FUTEX_WAKE: c_long = 454;
    pub(crate) const FUTEX_WAIT: c_long = 455;
    pub(crate) const FUTEX_REQUEUE: c_long = 456;
    pub(crate) const STATMOUNT: c_long = 457;
    pub(crate) const LISTMOUNT: c_long = 458;
    pub(crate) const LSM_GET_SELF_ATTR: c_long = 459;
    pub(crate) const LSM_SET_SELF_ATTR: c_long = 460;
    pub(crate) const LSM_LIST_MODULES: c_long = 461;
    pub(crate) const SETXATTRAT: c_long = 463;
    pub(crate) const GETXATTRAT: c_long = 464;
    pub(crate) const LISTXATTRAT: c_long = 465;
    pub(crate) const REMOVEXATTRAT: c_long = 466;
    /// io_pgetevents (4.18): in musl's table of the `libc` crate, not in glibc's.
    #[cfg(target_arch = "x86_64")]
    pub(crate) const IO_PGETEVENTS: c_long = 333;
    #[cfg(target_arch = "aarch64")]
    pub(crate) const IO_PGETEVENTS: c_long = 292;
}

/// Docker's unconditional allowlist: the names every architecture has.
#[rustfmt::skip]
const ALLOW: &[c_long] = nrs![
    SYS_accept, SYS_accept4, SYS_adjtimex, SYS_bind, SYS_brk, SYS_capget, SYS_capset,
    SYS_chdir, SYS_clock_adjtime, SYS_clock_getres, SYS_clock_gettime, SYS_clock_nanosleep,
    SYS_close, SYS_close_range, SYS_connect, SYS_copy_file_range, SYS_dup, SYS_dup3,
    SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_pwait, SYS_epoll_pwait2, SYS_eventfd2,
    SYS_execve, SYS_execveat, SYS_exit, SYS_exit_group, SYS_faccessat, SYS_faccessat2,
    SYS_fadvise64, SYS_fallocate, SYS_fanotify_mark, SYS_fchdir, SYS_fchmod, SYS_fchmodat,
    SYS_fchown, SYS_fchownat, SYS_fcntl, SYS_fdatasync, SYS_fgetxattr, SYS_flistxattr,
    SYS_flock, SYS_fremovexattr, SYS_fsetxattr, SYS_fstat, SYS_fstatfs, SYS_fsync,
    SYS_ftruncate, SYS_futex, SYS_futex_waitv, SYS_getcpu, SYS_getcwd, SYS_getdents64,
    SYS_getegid, SYS_geteuid, SYS_getgid, SYS_getgroups, SYS_getitimer, SYS_getpeername,
    SYS_getpgid, SYS_getpid, SYS_getppid, SYS_getpriority, SYS_getrandom, SYS_getresgid,
    SYS_getresuid, SYS_getrlimit, SYS_get_robust_list, SYS_getrusage, SYS_getsid,
    SYS_getsockname, SYS_getsockopt, SYS_gettid, SYS_gettimeofday, SYS_getuid, SYS_getxattr,
    SYS_inotify_add_watch, SYS_inotify_init1, SYS_inotify_rm_watch, SYS_io_cancel,
    SYS_ioctl, SYS_io_destroy, SYS_io_getevents, SYS_ioprio_get,
    SYS_ioprio_set, SYS_io_setup, SYS_io_submit, SYS_kill, SYS_landlock_add_rule,
    SYS_landlock_create_ruleset, SYS_landlock_restrict_self, SYS_lgetxattr, SYS_linkat,
    SYS_listen, SYS_listxattr, SYS_llistxattr, SYS_lremovexattr, SYS_lseek, SYS_lsetxattr,
    SYS_madvise, SYS_membarrier, SYS_memfd_create, SYS_memfd_secret, SYS_mincore,
    SYS_mkdirat, SYS_mknodat, SYS_mlock, SYS_mlock2, SYS_mlockall, SYS_mmap, SYS_mprotect,
    SYS_mq_getsetattr, SYS_mq_notify, SYS_mq_open, SYS_mq_timedreceive, SYS_mq_timedsend,
    SYS_mq_unlink, SYS_mremap, SYS_mseal, SYS_msgctl, SYS_msgget, SYS_msgrcv, SYS_msgsnd,
    SYS_msync, SYS_munlock, SYS_munlockall, SYS_munmap, SYS_name_to_handle_at,
    SYS_nanosleep, SYS_newfstatat, SYS_openat, SYS_openat2, SYS_pidfd_open,
    SYS_pidfd_send_signal, SYS_pipe2, SYS_pkey_alloc, SYS_pkey_free, SYS_pkey_mprotect,
    SYS_ppoll, SYS_prctl, SYS_pread64, SYS_preadv, SYS_preadv2, SYS_prlimit64,
    SYS_process_mrelease, SYS_pselect6, SYS_pwrite64, SYS_pwritev, SYS_pwritev2, SYS_read,
    SYS_readahead, SYS_readlinkat, SYS_readv, SYS_recvfrom, SYS_recvmmsg, SYS_recvmsg,
    SYS_remap_file_pages, SYS_removexattr, SYS_renameat, SYS_renameat2, SYS_restart_syscall,
    SYS_rseq, SYS_rt_sigaction, SYS_rt_sigpending, SYS_rt_sigprocmask, SYS_rt_sigqueueinfo,
    SYS_rt_sigreturn, SYS_rt_sigsuspend, SYS_rt_sigtimedwait, SYS_rt_tgsigqueueinfo,
    SYS_sched_getaffinity, SYS_sched_getattr, SYS_sched_getparam,
    SYS_sched_get_priority_max, SYS_sched_get_priority_min, SYS_sched_getscheduler,
    SYS_sched_rr_get_interval, SYS_sched_setaffinity, SYS_sched_setattr, SYS_sched_setparam,
    SYS_sched_setscheduler, SYS_sched_yield, SYS_seccomp, SYS_semctl, SYS_semget, SYS_semop,
    SYS_semtimedop, SYS_sendfile, SYS_sendmmsg, SYS_sendmsg, SYS_sendto, SYS_setfsgid,
    SYS_setfsuid, SYS_setgid, SYS_setgroups, SYS_setitimer, SYS_setpgid, SYS_setpriority,
    SYS_setregid, SYS_setresgid, SYS_setresuid, SYS_setreuid, SYS_setrlimit,
    SYS_set_robust_list, SYS_setsid, SYS_setsockopt, SYS_set_tid_address, SYS_setuid,
    SYS_setxattr, SYS_shmat, SYS_shmctl, SYS_shmdt, SYS_shmget, SYS_shutdown,
    SYS_sigaltstack, SYS_signalfd4, SYS_socketpair, SYS_splice, SYS_statfs, SYS_statx,
    SYS_symlinkat, SYS_sync, SYS_sync_file_range, SYS_syncfs, SYS_sysinfo, SYS_tee,
    SYS_tgkill, SYS_timer_create, SYS_timer_delete, SYS_timer_getoverrun, SYS_timer_gettime,
    SYS_timer_settime, SYS_timerfd_create, SYS_timerfd_gettime, SYS_timerfd_settime,
    SYS_times, SYS_tkill, SYS_truncate, SYS_umask, SYS_uname, SYS_unlinkat, SYS_utimensat,
    SYS_vmsplice, SYS_wait4, SYS_waitid, SYS_write, SYS_writev,
    // Docker's "minKernel 4.8" rule.
    SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev,
];

/// The rest of Docker's allowlist on x86_64: the legacy calls arm64 never had, and the
/// x86-only `arch_prctl` and `modify_ldt` rules.
#[rustfmt::skip]
#[cfg(target_arch = "x86_64")]
const ALLOW_ARCH: &[c_long] = nrs![
    SYS_access, SYS_alarm, SYS_chmod, SYS_chown, SYS_creat, SYS_dup2, SYS_epoll_create,
    SYS_epoll_ctl_old, SYS_epoll_wait, SYS_epoll_wait_old, SYS_eventfd, SYS_fork,
    SYS_futimesat, SYS_getdents, SYS_getpgrp, SYS_get_thread_area, SYS_inotify_init,
    SYS_lchown, SYS_link, SYS_lstat, SYS_mkdir, SYS_mknod, SYS_open, SYS_pause, SYS_pipe,
    SYS_poll, SYS_readlink, SYS_rename, SYS_rmdir, SYS_select, SYS_set_thread_area,
    SYS_signalfd, SYS_stat, SYS_symlink, SYS_time, SYS_unlink, SYS_utime, SYS_utimes,
    SYS_vfork, SYS_arch_prctl, SYS_modify_ldt,
];
/// Docker's arm/arm64 rule names only 32-bit arm calls: nothing to add on aarch64.
#[cfg(target_arch = "aarch64")]
const ALLOW_ARCH: &[c_long] = &[];

/// Docker's allowlist entries newer than the `libc` crate (`uretprobe` is x86_64's own).
const ALLOW_NEWER: &[c_long] = &[
    newer::IO_PGETEVENTS,
    newer::CACHESTAT,
    newer::FCHMODAT2,
    newer::MAP_SHADOW_STACK,
    newer::FUTEX_WAKE,
    newer::FUTEX_WAIT,
    newer::FUTEX_REQUEUE,
    newer::STATMOUNT,
    newer::LISTMOUNT,
    newer::SETXATTRAT,
    newer::GETXATTRAT,
    newer::LISTXATTRAT,
    newer::REMOVEXATTRAT,
    #[cfg(target_arch = "x86_64")]
    335, // uretprobe
];

/// Docker's rules that a capability unlocks (`includes.caps`), in the profile's order.
fn by_capability() -> Vec<(Capability, Vec<c_long>)> {
    use Capability::*;
    let admin: &[c_long] = nrs![
        SYS_bpf,
        SYS_clone,
        SYS_clone3,
        SYS_fanotify_init,
        SYS_fsconfig,
        SYS_fsmount,
        SYS_fsopen,
        SYS_fspick,
        SYS_lookup_dcookie,
        SYS_mount,
        SYS_mount_setattr,
        SYS_move_mount,
        SYS_open_tree,
        SYS_perf_event_open,
        SYS_quotactl,
        SYS_quotactl_fd,
        SYS_setdomainname,
        SYS_sethostname,
        SYS_setns,
        SYS_syslog,
        SYS_umount2,
        SYS_unshare,
    ];
    let mut admin = admin.to_vec();
    admin.extend([
        newer::LSM_GET_SELF_ATTR,
        newer::LSM_LIST_MODULES,
        newer::LSM_SET_SELF_ATTR,
    ]);
    #[cfg(target_arch = "x86_64")]
    let rawio: &[c_long] = nrs![SYS_iopl, SYS_ioperm];
    #[cfg(target_arch = "aarch64")]
    let rawio: &[c_long] = &[];
    vec![
        (CAP_DAC_READ_SEARCH, nrs![SYS_open_by_handle_at].to_vec()),
        (CAP_SYS_ADMIN, admin),
        (CAP_SYS_BOOT, nrs![SYS_reboot].to_vec()),
        (CAP_SYS_CHROOT, nrs![SYS_chroot].to_vec()),
        (
            CAP_SYS_MODULE,
            nrs![SYS_delete_module, SYS_init_module, SYS_finit_module].to_vec(),
        ),
        (CAP_SYS_PACCT, nrs![SYS_acct].to_vec()),
        (
            CAP_SYS_PTRACE,
            nrs![SYS_kcmp, SYS_pidfd_getfd, SYS_process_madvise].to_vec(),
        ),
        (CAP_SYS_RAWIO, rawio.to_vec()),
        (
            CAP_SYS_TIME,
            nrs![SYS_settimeofday, SYS_clock_settime].to_vec(),
        ),
        (CAP_SYS_TTY_CONFIG, nrs![SYS_vhangup].to_vec()),
        (
            CAP_SYS_NICE,
            nrs![
                SYS_get_mempolicy,
                SYS_mbind,
                SYS_set_mempolicy,
                SYS_set_mempolicy_home_node
            ]
            .to_vec(),
        ),
        (CAP_SYSLOG, nrs![SYS_syslog].to_vec()),
        (CAP_BPF, nrs![SYS_bpf].to_vec()),
        (CAP_PERFMON, nrs![SYS_perf_event_open].to_vec()),
    ]
}

/// The namespace flags `clone` may not carry without CAP_SYS_ADMIN.
const CLONE_NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// The personas Docker allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and
/// 0xffffffff (the query).
const PERSONAS: [u64; 5] = [0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

fn cond(arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> SeccompRule {
    // Both constructors only fail on an argument index above 5 or an empty rule.
    SeccompRule::new(vec![
        SeccompCondition::new(arg, len, op, value).expect("argument index is at most 5")
    ])
    .expect("one condition")
}

/// The tables above are written for x86_64 and aarch64 only.
fn arch() -> Result<TargetArch, SetupError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        "aarch64" => Ok(TargetArch::aarch64),
        other => Err(SetupError::NoSeccompProfile(other.to_string())),
    }
}

/// The allowlist for a container that keeps `caps` (the filter whose default is EPERM).
fn allowlist(caps: &CapsHashSet) -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let all = ALLOW.iter().chain(ALLOW_ARCH).chain(ALLOW_NEWER);
    for nr in all.copied().chain(
        by_capability()
            .into_iter()
            .filter(|(c, _)| caps.contains(c))
            .flat_map(|(_, v)| v),
    ) {
        rules.insert(nr, Vec::new());
    }
    use SeccompCmpArgLen::{Dword, Qword};
    use SeccompCmpOp::{Eq, Gt, Lt, MaskedEq};
    let (alg, vsock) = (libc::AF_ALG as u64, libc::AF_VSOCK as u64);
    rules.insert(
        libc::SYS_socket,
        vec![
            cond(0, Dword, Lt, alg),
            cond(0, Dword, Eq, alg + 1),
            cond(0, Dword, Gt, vsock),
        ],
    );
    rules.insert(
        libc::SYS_personality,
        PERSONAS.iter().map(|p| cond(0, Dword, Eq, *p)).collect(),
    );
    if !caps.contains(&Capability::CAP_SYS_ADMIN) {
        rules.insert(
            libc::SYS_clone,
            vec![cond(0, Qword, MaskedEq(CLONE_NS_FLAGS), 0)],
        );
    }
    rules
}

/// Docker's default profile for a container keeping `caps`, as the BPF programs to install
/// in this order: the allowlist (EPERM otherwise), then — without CAP_SYS_ADMIN — `clone3`
/// answered ENOSYS. (seccompiler gives a filter one match action; the kernel runs every
/// installed filter and, between two errno answers, the later filter's wins.)
pub(crate) fn programs(caps: &CapsHashSet) -> Result<Vec<BpfProgram>, SetupError> {
    let arch = arch()?;
    let compile = |rules, mismatch, matched| {
        SeccompFilter::new(rules, mismatch, matched, arch)
            .and_then(BpfProgram::try_from)
            .map_err(SetupError::at("compiling the seccomp profile"))
    };
    let mut out = vec![compile(
        allowlist(caps),
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
    )?];
    if !caps.contains(&Capability::CAP_SYS_ADMIN) {
        out.push(compile(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
        )?);
    }
    Ok(out)
}

/// Installs one program on the calling thread. Unlike `seccompiler::apply_filter` it does
/// not set no_new_privs itself: that is the container's own setting (without it, the
/// kernel asks for CAP_SYS_ADMIN here, which the launcher still holds).
pub(crate) fn install(prog: &BpfProgram) -> std::io::Result<()> {
    const _: () = assert!(
        std::mem::size_of::<seccompiler::sock_filter>() == std::mem::size_of::<libc::sock_filter>()
    );
    let len = u16::try_from(prog.len())
        .map_err(|_| std::io::Error::other("seccomp program longer than 65535 instructions"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`'s instructions (same layout as libc's sock_filter,
    // asserted above), which the kernel copies before returning.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a syscall returned: Ok or its errno.
    fn rc(r: c_long) -> Result<(), i32> {
        if r >= 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    }

    /// Runs each probe in a forked child confined by the profile for `caps` (no_new_privs,
    /// then the programs), and returns what each returned. The child does nothing but raw
    /// syscalls after fork; the probes are built so that none succeeds in doing anything
    /// (bad pointers, invalid flag combinations, descriptors closed at once).
    fn confined(caps: &CapsHashSet, probes: &[fn() -> Result<(), i32>]) -> Vec<Result<(), i32>> {
        let progs = programs(caps).unwrap();
        let mut out = Vec::new();
        for probe in probes {
            // SAFETY: the child only makes syscalls and leaves with _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                // SAFETY: prctl and _exit in the forked child.
                unsafe {
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                        libc::_exit(254);
                    }
                }
                for p in &progs {
                    if install(p).is_err() {
                        unsafe { libc::_exit(255) };
                    }
                }
                let code = match probe() {
                    Ok(()) => 0,
                    Err(e) => e.clamp(1, 200),
                };
                unsafe { libc::_exit(code) };
            }
            let mut status = 0;
            // SAFETY: waits for the child forked above.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(libc::WIFEXITED(status), "probe killed: {status:#x}");
            let code = libc::WEXITSTATUS(status);
            assert!(code < 254, "installing the profile failed ({code})");
            out.push(if code == 0 { Ok(()) } else { Err(code) });
        }
        out
    }

    fn socket(family: u64) -> Result<(), i32> {
        // SAFETY: a raw socket call; the descriptor is closed at once.
        let fd = unsafe { libc::syscall(libc::SYS_socket, family, libc::SOCK_DGRAM, 0) };
        rc(fd)?;
        unsafe { libc::close(fd as i32) };
        Ok(())
    }

    const PROBES: [fn() -> Result<(), i32>; 10] = [
        // 0: an ordinary call.
        || rc(unsafe { libc::syscall(libc::SYS_getpid) }),
        // 1: unshare(0) changes nothing, but the profile allows unshare only with SYS_ADMIN.
        || rc(unsafe { libc::syscall(libc::SYS_unshare, 0) }),
        // 2: clone3 with a null argument: EFAULT/EINVAL from the kernel, ENOSYS from the profile.
        || rc(unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) }),
        // 3: clone with a namespace flag and CLONE_SIGHAND without CLONE_VM: EINVAL if it
        //    passes the profile, so no process is ever made.
        || {
            let flags = (libc::CLONE_NEWUTS | libc::CLONE_SIGHAND) as u64;
            rc(unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) })
        },
        // 4: the same invalid clone without a namespace flag.
        || {
            let flags = libc::CLONE_SIGHAND as u64;
            rc(unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) })
        },
        // 5: keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0): not in the allowlist.
        || rc(unsafe { libc::syscall(libc::SYS_keyctl, 0, -3i64, 0) }),
        // 6: AF_ALG, also with high bits the kernel ignores.
        || socket(libc::AF_ALG as u64).and_then(|_| socket((1 << 32) | libc::AF_ALG as u64)),
        // 7: AF_UNIX and AF_INET.
        || socket(libc::AF_UNIX as u64).and_then(|_| socket(libc::AF_INET as u64)),
        // 8: personality(0xffffffff) only queries.
        || rc(unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) }),
        // 9: ADDR_NO_RANDOMIZE is not one of Docker's personas (the child exits right after).
        || rc(unsafe { libc::syscall(libc::SYS_personality, 0x0040000u64) }),
    ];

    #[test]
    fn the_default_profile_denies_what_docker_denies() {
        let default: CapsHashSet = crate::launcher::security::DEFAULT_CAPS
            .into_iter()
            .collect();
        let got = confined(&default, &PROBES);
        let (eperm, enosys) = (Err(libc::EPERM), Err(libc::ENOSYS));
        assert_eq!(got[0], Ok(()), "getpid");
        assert_eq!(got[1], eperm, "unshare without CAP_SYS_ADMIN");
        assert_eq!(
            got[2], enosys,
            "clone3 answers ENOSYS so libc falls back to clone"
        );
        assert_eq!(got[3], eperm, "clone with a namespace flag");
        assert_eq!(
            got[4],
            Err(libc::EINVAL),
            "clone without one reaches the kernel"
        );
        assert_eq!(got[5], eperm, "keyctl");
        assert_eq!(got[6], eperm, "socket(AF_ALG)");
        assert_eq!(got[7], Ok(()), "socket(AF_UNIX), socket(AF_INET)");
        assert_eq!(got[8], Ok(()), "personality query");
        assert_eq!(got[9], eperm, "personality(ADDR_NO_RANDOMIZE)");
    }

    #[test]
    fn cap_sys_admin_unlocks_what_dockers_profile_gives_it() {
        let mut admin: CapsHashSet = crate::launcher::security::DEFAULT_CAPS
            .into_iter()
            .collect();
        admin.insert(Capability::CAP_SYS_ADMIN);
        let got = confined(&admin, &PROBES[..5]);
        assert_eq!(got[1], Ok(()), "unshare");
        assert_ne!(got[2], Err(libc::ENOSYS), "clone3 reaches the kernel");
        assert_eq!(
            got[3],
            Err(libc::EINVAL),
            "clone with a namespace flag reaches the kernel"
        );
    }
}
