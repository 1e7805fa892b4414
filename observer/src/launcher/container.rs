//! Inside the container, before the command runs: the child of the shim (already PID 1 of
//! a new pid namespace) joins its cgroups, takes new mount, uts, ipc, cgroup and (unless
//! --net host) net namespaces, builds its mounts — the rootfs, a fresh /proc, a read-only
//! /sys, a minimal /dev, /tmp — pivots into the rootfs and execs the command. With --init
//! it forks the command and stays PID 1 as a tiny init that reaps every orphan. Last, it
//! takes a container's defaults (`security.rs`): masked and read-only /proc paths,
//! Docker's capabilities and seccomp profile, no_new_privs, no inherited descriptors.
//!
//! Failures before exec are written to `err` (a close-on-exec pipe the shim reads) as
//! "<exit code> <message>": an empty pipe means the exec succeeded.

use std::{
    ffi::CString,
    fs,
    io::Write,
    os::fd::{AsRawFd, OwnedFd},
    path::Path,
};

use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{unshare, CloneFlags},
    sys::{
        signal::{kill, SigSet, Signal},
        stat::{makedev, mknod, Mode, SFlag},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{chdir, execve, fork, pivot_root, sethostname, ForkResult, Pid},
};

use super::{cgroups, rootfs, security, state::Config, SetupError};

pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Reports a failure to the shim and exits with `code`.
pub(crate) fn fail(err: &mut fs::File, code: i32, msg: &str) -> ! {
    let _ = write!(err, "{code} {msg}");
    // SAFETY: _exit is async-signal-safe and ends the process at once.
    unsafe { libc::_exit(code) }
}

/// The container's environment: PATH, HOSTNAME, HOME, TERM, then the user's -e values.
pub(crate) fn environment(cfg: &Config, extra: &[String]) -> Vec<String> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={}", cfg.hostname),
        "HOME=/root".into(),
        "TERM=xterm".into(),
    ];
    for kv in cfg.env.iter().chain(extra) {
        let key = kv.split('=').next().unwrap_or("");
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    env
}

pub(crate) fn path_of(env: &[String]) -> String {
    env.iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string()
}

fn cstrings(v: &[String]) -> Vec<CString> {
    v.iter()
        .map(|s| CString::new(s.as_bytes()).unwrap_or_default())
        .collect()
}

/// Execs `path` (already resolved inside the container) or reports why it could not.
pub(crate) fn exec(err: &mut fs::File, path: &str, argv: &[String], env: &[String]) -> ! {
    let p = CString::new(path).unwrap_or_default();
    let e = execve(&p, &cstrings(argv), &cstrings(env)).unwrap_err();
    let code = if e == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    };
    fail(err, code, &format!("cannot execute `{path}`: {e}"))
}

fn m(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), SetupError> {
    mount(src, target, fstype, flags, data).map_err(SetupError::at(format_args!(
        "mounting {} on {}",
        fstype.or(src).unwrap_or("?"),
        target.display()
    )))
}

/// A minimal /dev: a tmpfs with the standard character devices, links, pts and shm.
fn make_dev(dev: &Path) -> Result<(), SetupError> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    m(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        mknod(
            &dev.join(name),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(SetupError::at(format_args!("mknod /dev/{name}")))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))
            .map_err(SetupError::at(format_args!("/dev/{link}")))?;
    }
    for d in ["pts", "shm"] {
        fs::create_dir(dev.join(d)).map_err(SetupError::at(format_args!("/dev/{d}")))?;
    }
    m(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )?;
    m(
        Some("shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        nosuid,
        Some("mode=1777,size=65536k"),
    )?;
    Ok(())
}

/// Mounts and pivots into the rootfs. Runs in the new mount namespace.
fn build_mounts(cfg: &Config) -> Result<(), SetupError> {
    let root = cfg.rootfs.as_path();
    m(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    m(
        Some(root.to_str().unwrap_or("/")),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    if !cfg.rootfs_readonly {
        for d in rootfs::MOUNT_POINTS {
            let _ = fs::create_dir_all(root.join(d));
        }
    }
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    m(Some("proc"), &root.join("proc"), Some("proc"), nosuid, None)?;
    // Read-only unless --privileged (as Docker).
    let sys_ro = if cfg.security.privileged {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    m(
        Some("sysfs"),
        &root.join("sys"),
        Some("sysfs"),
        nosuid | sys_ro,
        None,
    )?;
    m(
        Some("tmpfs"),
        &root.join("tmp"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    make_dev(&root.join("dev"))?;
    if cfg.rootfs_readonly {
        m(
            None,
            root,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None,
        )?;
    }
    // pivot_root(".", "."), then detach the old root stacked underneath (no put_old
    // directory is needed, so a read-only rootfs works too).
    chdir(root).map_err(SetupError::at(format_args!("chdir {}", root.display())))?;
    pivot_root(".", ".").map_err(SetupError::at("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(SetupError::at("detaching the old root"))?;
    chdir("/").map_err(SetupError::at("chdir /"))?;
    if !cfg.security.privileged {
        security::protect_paths()?;
    }
    Ok(())
}

/// Brings the loopback interface up in a new network namespace.
fn loopback_up() -> Result<(), SetupError> {
    // SAFETY: plain socket/ioctl calls on a zero-initialised ifreq.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(SetupError::at("socket")(std::io::Error::last_os_error()));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, c) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = libc::c_char::from_ne_bytes([*c]);
        }
        let r = if libc::ioctl(s, libc::SIOCGIFFLAGS as _, &mut ifr) == 0 {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS as _, &ifr)
        } else {
            -1
        };
        let e = std::io::Error::last_os_error();
        libc::close(s);
        if r != 0 {
            return Err(SetupError::at("bringing lo up")(e));
        }
    }
    Ok(())
}

/// The container's PID 1 side; never returns.
pub(crate) fn child_main(cfg: &Config, err: OwnedFd, log: &fs::File) -> ! {
    let mut err = fs::File::from(err);
    let null = fs::File::open("/dev/null").ok();
    // SAFETY: dup2 onto the standard descriptors of this (single-threaded) child.
    unsafe {
        if let Some(n) = &null {
            libc::dup2(n.as_raw_fd(), 0);
        }
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
    if let Err(e) = cgroups::join(&cfg.cgroups, 0) {
        fail(&mut err, 125, &e.to_string());
    }
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if !cfg.net_host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if let Err(e) = unshare(flags) {
        fail(&mut err, 125, &format!("creating namespaces: {e}"));
    }
    let env = environment(cfg, &[]);
    // Resolve the command while the rootfs is still visible at its host path.
    let path = match rootfs::resolve(&cfg.rootfs, &cfg.cmd[0], &path_of(&env)) {
        Ok(p) => p,
        Err((code, msg)) => fail(&mut err, code, &msg),
    };
    if let Err(e) = build_mounts(cfg) {
        fail(&mut err, 125, &e.to_string());
    }
    if let Err(e) = sethostname(&cfg.hostname) {
        fail(&mut err, 125, &format!("sethostname: {e}"));
    }
    if !cfg.net_host {
        if let Err(e) = loopback_up() {
            fail(&mut err, 125, &e.to_string());
        }
    }
    // Also --init's PID 1: it and the command it forks are the container's.
    if let Err(e) = security::confine(&cfg.security, err.as_raw_fd()) {
        fail(&mut err, 125, &e.to_string());
    }
    if !cfg.init {
        exec(&mut err, &path, &cfg.cmd, &env);
    }
    // --init: PID 1 stays here, reaping; the command runs as its child.
    let mut block = SigSet::all();
    block.remove(Signal::SIGKILL);
    block.remove(Signal::SIGSTOP);
    let _ = block.thread_block();
    // SAFETY: this process is single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = SigSet::all().thread_unblock();
            exec(&mut err, &path, &cfg.cmd, &env)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(err);
            let _ = nix::sys::prctl::set_name(c"init");
            init_loop(child, &block)
        }
        Err(e) => fail(&mut err, 125, &format!("fork: {e}")),
    }
}

/// The built-in init: forwards signals to the command, reaps every child (orphans included),
/// and exits with the command's status once it has exited.
fn init_loop(child: Pid, set: &SigSet) -> ! {
    let mut status: Option<i32> = None;
    loop {
        let sig = set.wait().unwrap_or(Signal::SIGCHLD);
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => status = Some(code),
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => {
                    status = Some(128 + s as i32);
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if let Some(code) = status {
            // SAFETY: ends PID 1; the kernel then ends the namespace's other processes.
            unsafe { libc::_exit(code) }
        }
    }
}
