//! Credentials and executable identity as an exec event leaves them: what the views and the
//! event stream say of them, and when an exec raised privileges, how (`setuid: 1000 → euid
//! 0`).

use serde::{Deserialize, Serialize};

use crate::table::process::ExecCred;

/// Capability names by number (include/uapi/linux/capability.h), as `capsh` prints them.
const CAP_NAMES: [&str; 41] = [
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
];

/// The credentials after an exec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Creds {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) euid: u32,
    pub(crate) egid: u32,
    pub(crate) suid: u32,
    pub(crate) sgid: u32,
    /// Effective capabilities, bit n = capability n.
    pub(crate) cap_eff: u64,
    /// The kernel judged the exec privilege-gaining (AT_SECURE).
    pub(crate) secureexec: bool,
}

impl Creds {
    /// The credentials a history entry keeps of its exec.
    pub(crate) fn of_ended(x: &crate::table::history::ExecOf) -> Creds {
        let c = &x.cred;
        Creds {
            uid: x.uid,
            gid: x.gid,
            euid: c.euid,
            egid: c.egid,
            suid: c.suid,
            sgid: c.sgid,
            cap_eff: c.cap_eff,
            secureexec: c.raised,
        }
    }

    pub(crate) fn of(e: &observer_common::ExecEvent) -> Creds {
        Creds {
            uid: e.task.uid,
            gid: e.task.gid,
            euid: e.euid,
            egid: e.egid,
            suid: e.suid,
            sgid: e.sgid,
            cap_eff: e.cap_eff,
            secureexec: e.secureexec != 0,
        }
    }

    /// How the exec raised privileges, if the kernel says it did (see [`privileges`]).
    pub(crate) fn gained(&self) -> Option<String> {
        let c = ExecCred {
            euid: self.euid,
            egid: self.egid,
            suid: self.suid,
            sgid: self.sgid,
            cap_eff: self.cap_eff,
            raised: self.secureexec,
            exe: ExeId::default(),
        };
        privileges(self.uid, self.gid, &c)
    }
}

/// How an exec by real ids `uid`/`gid` that left `c` raised privileges, if the kernel says
/// it did: `setuid: 1000 → euid 0`, `setgid: …`, or the file capabilities it gained.
pub(crate) fn privileges(uid: u32, gid: u32, c: &ExecCred) -> Option<String> {
    if !c.raised {
        return None;
    }
    let mut parts = Vec::new();
    if c.euid != uid {
        parts.push(format!("setuid: {uid} → euid {}", c.euid));
    }
    if c.egid != gid {
        parts.push(format!("setgid: {gid} → egid {}", c.egid));
    }
    if parts.is_empty() {
        parts.push(format!("file capabilities: {}", cap_names(c.cap_eff)));
    }
    Some(parts.join(", "))
}

/// `cap_net_raw,cap_sys_admin`; `all` for every capability this table names, `all but
/// cap_sys_resource` when a few are missing (a container's bounding set), `none`.
pub(crate) fn cap_names(caps: u64) -> String {
    let known = (1u64 << CAP_NAMES.len()) - 1;
    if caps & known == known {
        return "all".into();
    }
    if (caps & known).count_ones() >= 32 {
        return format!("all but {}", names_of(known & !caps));
    }
    names_of(caps)
}

/// The names of the bits of `caps`, comma-separated (`none` for no bit), written into one
/// string: every process of a tree has its capabilities named.
fn names_of(caps: u64) -> String {
    use std::fmt::Write as _;
    let mut names = String::new();
    for b in (0..64).filter(|b| caps & (1u64 << b) != 0) {
        if !names.is_empty() {
            names.push(',');
        }
        match CAP_NAMES.get(b) {
            Some(n) => names.push_str(n),
            None => {
                let _ = write!(names, "cap_{b}");
            }
        }
    }
    if names.is_empty() {
        "none".into()
    } else {
        names
    }
}

/// A process's credentials from the exec of its image (`exec` of process objects).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExecCredView {
    pub(crate) euid: u32,
    pub(crate) egid: u32,
    /// Effective capabilities by name (`none`, `all`, `all but …`, or a list).
    pub(crate) cap_eff: String,
    /// How the exec raised privileges, if it did (`setuid: 1000 → euid 0`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) privileges: Option<String>,
}

/// The view of a table process's exec credentials (its real ids beside them).
pub(crate) fn exec_cred_view(p: &crate::table::Process) -> Option<ExecCredView> {
    let c = *p.exec_cred.as_deref()?;
    Some(ExecCredView {
        euid: c.euid,
        egid: c.egid,
        cap_eff: cap_names(c.cap_eff),
        privileges: privileges(p.uid, p.gid, &c),
    })
}

pub(crate) use crate::table::exe_hash::ExeId;
use crate::table::exe_hash::{hex, ExeHash, Reason};

/// The executable's SHA-256 as events, processes and history entries show it: the hex
/// digest, or null and why (`exe_hash_reason`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExeHashView {
    pub(crate) exe_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) exe_hash_reason: Option<Reason>,
}

impl ExeHashView {
    /// From a result (`None`: no exec of the image was seen).
    pub(crate) fn of(r: Option<Result<crate::table::exe_hash::Digest, Reason>>) -> ExeHashView {
        match r.unwrap_or(Err(Reason::NotSeen)) {
            Ok(d) => ExeHashView {
                exe_sha256: Some(hex(&d)),
                exe_hash_reason: None,
            },
            Err(why) => ExeHashView {
                exe_sha256: None,
                exe_hash_reason: Some(why),
            },
        }
    }

    /// A flattened `Option<ExeHashView>` read back: no field of it there is None (serde
    /// makes an empty `Some` of a flattened option whose fields are all absent).
    pub(crate) fn absent_is_none<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<ExeHashView>, D::Error> {
        let v = Option::<ExeHashView>::deserialize(d)?;
        Ok(v.filter(|v| *v != ExeHashView::default()))
    }

    /// A process's (or history entry's) hash as it is now.
    pub(crate) fn now(h: Option<&ExeHash>) -> ExeHashView {
        ExeHashView::of(h.map(ExeHash::now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setuid_exec_says_from_which_uid_to_which() {
        let c = Creds {
            uid: 1000,
            gid: 1000,
            euid: 0,
            egid: 1000,
            suid: 0,
            sgid: 1000,
            cap_eff: u64::MAX >> 23,
            secureexec: true,
        };
        assert_eq!(c.gained().as_deref(), Some("setuid: 1000 → euid 0"));
    }

    #[test]
    fn a_history_entrys_exec_shows_as_the_exec_event_did() {
        let x = crate::table::history::ExecOf::setuid_fixture();
        let c = Creds::of_ended(&x);
        assert_eq!((c.uid, c.euid, c.suid, c.secureexec), (1000, 0, 0, true));
        assert_eq!(c.gained().as_deref(), Some("setuid: 1000 → euid 0"));
        assert_eq!(cap_names(c.cap_eff), "all");
    }

    #[test]
    fn file_capabilities_are_named_and_an_ordinary_exec_says_nothing() {
        let mut c = Creds {
            uid: 65534,
            gid: 65534,
            euid: 65534,
            egid: 65534,
            suid: 65534,
            sgid: 65534,
            cap_eff: 1 << 13,
            secureexec: true,
        };
        assert_eq!(
            c.gained().as_deref(),
            Some("file capabilities: cap_net_raw")
        );
        c.secureexec = false;
        assert_eq!(c.gained(), None);
        assert_eq!(cap_names(0), "none");
        assert_eq!(cap_names((1 << 41) - 1), "all");
        assert_eq!(cap_names(1 << 21 | 1 << 50), "cap_sys_admin,cap_50");
        assert_eq!(
            cap_names(((1 << 41) - 1) & !(1 << 24)),
            "all but cap_sys_resource"
        );
    }
}
