//! What a launcher container may do to its host: the defaults of Docker and runc, so that
//! root inside is not root outside. The capability set drops to Docker's 14 (bounding,
//! effective and permitted; inheritable and ambient empty, as moby does since
//! CVE-2022-24769), `no_new_privs` is set, Docker's seccomp profile is installed
//! (`seccomp.rs`), parts of /proc and /sys are masked or read-only (runc's and moby's
//! lists), and no descriptor the launcher inherited reaches the container. PID 1 and every
//! `observer exec` session get the same. `--privileged`, `--cap-add/--cap-drop` and
//! `--security-opt` opt out, with Docker's meaning.

use std::{
    fs,
    io::ErrorKind,
    os::fd::RawFd,
    path::{Path, PathBuf},
};

use caps::{CapSet, Capability, CapsHashSet};
use nix::mount::{mount, MsFlags};
use serde::{Deserialize, Serialize};

use super::{seccomp, LauncherError, OptionError, SetupError};

/// Docker's (and runc's) default capabilities.
pub(crate) const DEFAULT_CAPS: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Masked: runc's list (libcontainer/specconv/example.go) and what moby adds
/// (daemon/pkg/oci/defaults.go: /proc/interrupts, powercap, each CPU's thermal_throttle).
/// Files get /dev/null bound over them, directories an empty read-only tmpfs.
pub(crate) const MASKED: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Bound read-only over themselves (runc's and moby's list).
pub(crate) const READONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A container's security settings, as recorded in its config.json.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Security {
    /// Every capability the launcher holds, no seccomp, nothing masked, /sys writable.
    pub(crate) privileged: bool,
    /// The capabilities the container keeps (bounding, permitted, effective), e.g.
    /// `CAP_CHOWN`; not used when privileged.
    pub(crate) capabilities: Vec<String>,
    /// Docker's default seccomp profile.
    pub(crate) seccomp: bool,
    pub(crate) no_new_privileges: bool,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            privileged: false,
            capabilities: names(&DEFAULT_CAPS.into_iter().collect()),
            seccomp: true,
            no_new_privileges: true,
        }
    }
}

/// A `--cap-add`/`--cap-drop` value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum CapArg {
    All,
    One(Capability),
}

/// Parses `SYS_ADMIN`, `cap_sys_admin` or `ALL` (Docker's spellings).
pub(crate) fn parse_cap(s: &str) -> Result<CapArg, OptionError> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(CapArg::All);
    }
    caps::to_canonical(s)
        .parse()
        .map(CapArg::One)
        .map_err(|_| OptionError::UnknownCap(s.to_string()))
}

/// A `--security-opt` value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum SecurityOpt {
    SeccompUnconfined,
    NoNewPrivileges(bool),
}

pub(crate) fn parse_security_opt(s: &str) -> Result<SecurityOpt, OptionError> {
    let (key, value) = s.split_once('=').unwrap_or((s, ""));
    match (key, value) {
        ("seccomp", "unconfined") => Ok(SecurityOpt::SeccompUnconfined),
        ("seccomp", _) => Err(OptionError::SeccompProfile(s.to_string())),
        ("no-new-privileges", "" | "true") => Ok(SecurityOpt::NoNewPrivileges(true)),
        ("no-new-privileges", "false") => Ok(SecurityOpt::NoNewPrivileges(false)),
        _ => Err(OptionError::SecurityOpt(s.to_string())),
    }
}

fn names(set: &CapsHashSet) -> Vec<String> {
    let mut v: Vec<Capability> = set.iter().copied().collect();
    v.sort_by_key(|c| c.index());
    v.iter().map(|c| c.to_string()).collect()
}

/// The settings `observer run` asked for, with Docker's rules: `--privileged` overrides the
/// capability flags; `--cap-add ALL` keeps everything but the drops; `--cap-drop ALL` keeps
/// only the adds; otherwise the default set minus the drops plus the adds. A capability
/// the launcher does not hold itself cannot be given (ALL means all it holds).
pub(crate) fn resolve(
    privileged: bool,
    add: &[CapArg],
    drop: &[CapArg],
    opts: &[SecurityOpt],
) -> Result<Security, LauncherError> {
    let held = caps::read(None, CapSet::Permitted)
        .map_err(|e| LauncherError::Other(format!("reading the launcher's capabilities: {e}")))?;
    let ones = |v: &[CapArg]| -> CapsHashSet {
        v.iter()
            .filter_map(|c| match c {
                CapArg::One(c) => Some(*c),
                CapArg::All => None,
            })
            .collect()
    };
    let (adds, drops) = (ones(add), ones(drop));
    let keep: CapsHashSet = if add.contains(&CapArg::All) {
        held.difference(&drops).copied().collect()
    } else if drop.contains(&CapArg::All) {
        adds.clone()
    } else {
        let base: CapsHashSet = DEFAULT_CAPS.into_iter().collect();
        base.difference(&drops).chain(&adds).copied().collect()
    };
    if !privileged {
        if let Some(c) = adds.iter().find(|c| !held.contains(c)) {
            return Err(LauncherError::Other(format!(
                "--cap-add {c}: the launcher itself does not hold {c}, so it cannot give it"
            )));
        }
    }
    let mut sec = Security {
        privileged,
        capabilities: names(&keep),
        seccomp: !privileged,
        no_new_privileges: !privileged,
    };
    for o in opts {
        match o {
            SecurityOpt::SeccompUnconfined => sec.seccomp = false,
            SecurityOpt::NoNewPrivileges(v) => sec.no_new_privileges = *v,
        }
    }
    Ok(sec)
}

impl Security {
    fn kept(&self) -> Result<CapsHashSet, SetupError> {
        self.capabilities
            .iter()
            .map(|n| {
                n.parse::<Capability>()
                    .map_err(|_| SetupError::UnknownCap(n.clone()))
            })
            .collect()
    }
}

/// Closes every descriptor from 3 up but `keep` (close_range, Linux 5.9).
pub(crate) fn close_inherited(keep: Option<RawFd>) -> Result<(), SetupError> {
    let close = |from: u32, to: u32| {
        // SAFETY: close_range only closes descriptors; nothing here uses the ones it closes.
        let rc = unsafe { libc::syscall(libc::SYS_close_range, from, to, 0) };
        if rc == 0 {
            Ok(())
        } else {
            Err(SetupError::at("closing inherited descriptors")(
                std::io::Error::last_os_error(),
            ))
        }
    };
    match keep.and_then(|k| u32::try_from(k).ok()).filter(|k| *k >= 3) {
        Some(k) => {
            if k > 3 {
                close(3, k - 1)?;
            }
            close(k + 1, u32::MAX)
        }
        None => close(3, u32::MAX),
    }
}

/// The last steps before the container's command runs, in the calling process: close what
/// was inherited (but `keep`, the close-on-exec error pipe), set no_new_privs, shrink the
/// bounding set, install the seccomp profile (while CAP_SYS_ADMIN still allows it without
/// no_new_privs), then set the capability sets.
pub(crate) fn confine(sec: &Security, keep: RawFd) -> Result<(), SetupError> {
    close_inherited(Some(keep))?;
    if sec.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(SetupError::at("no_new_privs"))?;
    }
    if sec.privileged {
        return Ok(());
    }
    let held = caps::read(None, CapSet::Permitted)?;
    let keep: CapsHashSet = sec.kept()?.intersection(&held).copied().collect();
    for c in caps::all().difference(&keep) {
        if caps::has_cap(None, CapSet::Bounding, *c).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, *c).map_err(SetupError::at(format_args!(
                "dropping {c} from the bounding set"
            )))?;
        }
    }
    if sec.seccomp {
        for p in seccomp::programs(&keep)? {
            seccomp::install(&p).map_err(SetupError::at("installing the seccomp profile"))?;
        }
    }
    let set = |s: CapSet, v: &CapsHashSet| {
        caps::set(None, s, v).map_err(SetupError::at(format_args!(
            "setting the {s:?} capabilities"
        )))
    };
    set(CapSet::Effective, &keep)?;
    set(CapSet::Permitted, &keep)?;
    set(CapSet::Inheritable, &CapsHashSet::new())?;
    caps::clear(None, CapSet::Ambient).map_err(SetupError::at("clearing ambient capabilities"))
}

/// Every CPU's `thermal_throttle` directory (moby masks them: a side channel).
fn thermal_throttle() -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir("/sys/devices/system/cpu") else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("cpu"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path().join("thermal_throttle"))
        .filter(|p| p.exists())
        .collect()
}

fn mnt(src: &str, target: &Path, fstype: Option<&str>, flags: MsFlags) -> Result<(), SetupError> {
    mount(Some(src), target, fstype, flags, None::<&str>).map_err(SetupError::at(format_args!(
        "protecting {}",
        target.display()
    )))
}

/// Masks and write-protects the paths above; runs in the container's mount namespace after
/// pivot_root (so /dev/null is the container's). A path this kernel lacks is skipped.
pub(crate) fn protect_paths() -> Result<(), SetupError> {
    let masked = MASKED.iter().map(PathBuf::from).chain(thermal_throttle());
    for p in masked {
        match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(SetupError::at(p.display())(e)),
            Ok(md) if md.is_dir() => mnt("tmpfs", &p, Some("tmpfs"), MsFlags::MS_RDONLY)?,
            Ok(_) => mnt("/dev/null", &p, None, MsFlags::MS_BIND)?,
        }
    }
    for p in READONLY.iter().map(Path::new) {
        if !p.exists() {
            continue;
        }
        mnt(
            p.to_str().unwrap_or("/"),
            p,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
        )?;
        let ro = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        mnt(p.to_str().unwrap_or("/"), p, None, ro)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_set_is_capeff_a80425fb() {
        let mask: u64 = DEFAULT_CAPS.iter().map(|c| c.bitmask()).sum();
        assert_eq!(mask, 0xa80425fb);
    }

    #[test]
    fn capability_names_parse_as_docker_spells_them() {
        use Capability::*;
        assert_eq!(parse_cap("SYS_ADMIN"), Ok(CapArg::One(CAP_SYS_ADMIN)));
        assert_eq!(parse_cap("cap_net_admin"), Ok(CapArg::One(CAP_NET_ADMIN)));
        assert_eq!(parse_cap("all"), Ok(CapArg::All));
        let e = parse_cap("SYS_ADMN").unwrap_err().to_string();
        assert!(e.contains("unknown capability `SYS_ADMN`"), "{e}");
        assert!(parse_cap("").is_err());
        assert!(parse_cap("é\u{1b}[2J").is_err());
    }

    #[test]
    fn security_opts_accept_docker_forms_and_reject_the_rest() {
        use SecurityOpt::*;
        assert_eq!(
            parse_security_opt("seccomp=unconfined"),
            Ok(SeccompUnconfined)
        );
        assert_eq!(
            parse_security_opt("no-new-privileges"),
            Ok(NoNewPrivileges(true))
        );
        assert_eq!(
            parse_security_opt("no-new-privileges=false"),
            Ok(NoNewPrivileges(false))
        );
        for bad in [
            "seccomp=/etc/profile.json",
            "apparmor=unconfined",
            "nnp",
            "",
        ] {
            assert!(parse_security_opt(bad).is_err(), "{bad}");
        }
    }

    /// Needs the launcher's own capabilities (root), like every launcher command.
    #[test]
    fn cap_add_and_drop_follow_dockers_rules() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        use Capability::*;
        let held = caps::read(None, CapSet::Permitted).unwrap();
        let caps_of = |add: &[CapArg], drop: &[CapArg]| -> CapsHashSet {
            let s = resolve(false, add, drop, &[]).unwrap();
            assert!(s.seccomp && s.no_new_privileges && !s.privileged);
            s.kept().unwrap()
        };
        let default: CapsHashSet = DEFAULT_CAPS.into_iter().collect();
        assert_eq!(caps_of(&[], &[]), default);
        let mut with_admin = default.clone();
        with_admin.insert(CAP_SYS_ADMIN);
        with_admin.remove(&CAP_NET_RAW);
        assert_eq!(
            caps_of(&[CapArg::One(CAP_SYS_ADMIN)], &[CapArg::One(CAP_NET_RAW)]),
            with_admin
        );
        let only_kill = caps_of(&[CapArg::One(CAP_KILL)], &[CapArg::All]);
        assert_eq!(only_kill, [CAP_KILL].into_iter().collect());
        let mut all_but_admin = held.clone();
        all_but_admin.remove(&CAP_SYS_ADMIN);
        assert_eq!(
            caps_of(&[CapArg::All], &[CapArg::One(CAP_SYS_ADMIN)]),
            all_but_admin
        );
        let p = resolve(true, &[], &[CapArg::All], &[]).unwrap();
        assert!(p.privileged && !p.seccomp && !p.no_new_privileges);
        let o = resolve(
            false,
            &[],
            &[],
            &[
                SecurityOpt::SeccompUnconfined,
                SecurityOpt::NoNewPrivileges(false),
            ],
        )
        .unwrap();
        assert!(!o.seccomp && !o.no_new_privileges);
    }
}
