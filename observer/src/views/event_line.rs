//! How one kernel event is shown: a JSON object per line (`observer events --json`, the
//! agent's event stream) or a readable line. What the table knew of the event's process
//! when it was applied (its exec session) is handed in by the caller that applied it.

use std::fmt::Write as _;

use observer_common::{TaskInfo, NS_COUNT, NS_NAMES};
use serde::Serialize;

use crate::{
    events::{c_str, exit_status, split_args, Event, TaskInfoExt},
    table::sessions::Session,
};

#[derive(Serialize)]
pub struct EventJson<'a> {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// Boot-clock ns at the event (same clock as start_time_ns).
    pub(crate) time_ns: u64,
    pub(crate) cpu: u32,
    /// Host tgid.
    pub(crate) pid: u32,
    /// Host tid.
    pub(crate) tid: u32,
    /// Host tgid of the real parent.
    pub(crate) ppid: u32,
    /// Host level first, innermost last.
    pub(crate) ns_pids: &'a [u32],
    pub(crate) ns: NsJson,
    pub(crate) cgroup_id: u64,
    pub(crate) start_time_ns: u64,
    pub(crate) comm: std::borrow::Cow<'a, str>,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// True when a kernel read failed for this event (some fields may read 0).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) read_error: bool,
    /// The exec session of the process (fork, exec and exit events; absent outside one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) entered: Option<super::sessions::EnteredView>,
    #[serde(flatten)]
    pub(crate) detail: Detail<'a>,
}

/// The 9 namespace inodes by /proc/<pid>/ns name; null when unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NsJson(pub(crate) [u32; NS_COUNT]);

/// Read straight into the array (keys matched by name, unknown ones skipped): the CLI
/// decodes one of these per process of a view, and a map of owned keys per process was a
/// tenth of decoding a 1,000-process tree.
impl<'de> serde::Deserialize<'de> for NsJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{MapAccess, Visitor};
        /// A key: the index of the namespace it names, if any.
        struct Key(Option<usize>);
        impl<'de> serde::Deserialize<'de> for Key {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct K;
                impl Visitor<'_> for K {
                    type Value = Key;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a namespace name")
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                        Ok(Key(NS_NAMES.iter().position(|n| *n == v)))
                    }
                }
                d.deserialize_str(K)
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NsJson;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of namespace inodes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<NsJson, A::Error> {
                let mut ns = [0u32; NS_COUNT];
                while let Some(Key(i)) = a.next_key()? {
                    let v: Option<u32> = a.next_value()?;
                    if let Some(i) = i {
                        ns[i] = v.unwrap_or(0);
                    }
                }
                Ok(NsJson(ns))
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for NsJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(NS_COUNT))?;
        for (name, v) in NS_NAMES.iter().zip(self.0) {
            m.serialize_entry(name, &(v != 0).then_some(v))?;
        }
        m.end()
    }
}

#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum Detail<'a> {
    Fork {
        parent_tid: u32,
        is_thread: bool,
    },
    Exec {
        filename: std::borrow::Cow<'a, str>,
        argv: Vec<String>,
        old_tid: u32,
        /// Credentials after the exec; `cap_eff` by name.
        cred: super::credentials::Creds,
        cap_eff: String,
        /// How the exec raised privileges (setuid/setgid bit, file capabilities), if it did.
        #[serde(skip_serializing_if = "Option::is_none")]
        privileges: Option<String>,
        /// The executable's device, inode, size and modification time.
        exe_id: super::credentials::ExeId,
        /// Its SHA-256, or null and why.
        #[serde(flatten)]
        exe_hash: super::credentials::ExeHashView,
    },
    Exit {
        exit_code: Option<u8>,
        signal: Option<u8>,
        core_dumped: bool,
        /// Raw wait(2) status.
        status: u32,
        leader: bool,
        group_dead: bool,
    },
    Ns {
        ret: i64,
    },
    CgroupAttach {
        cgroup_path: std::borrow::Cow<'a, str>,
        dst_cgroup_id: u64,
        hierarchy_id: u32,
        level: u32,
        threadgroup: bool,
    },
    Signal {
        signal: String,
        signo: u32,
        /// si_code (0 kill(2), -6 tkill, 128 the kernel, > 0 a fault).
        code: i32,
        group: bool,
        result: &'static str,
        sender: SenderJson<'a>,
    },
    Oom {
        victim_pid: u32,
        total_vm_kb: u64,
        /// Absent before Linux 6.1 (the tracepoint had the pid only).
        anon_rss_kb: Option<u64>,
        file_rss_kb: Option<u64>,
        shmem_rss_kb: Option<u64>,
        oom_score_adj: Option<i32>,
        /// The lowest memory limit over the allocating task's memory cgroup and its
        /// ancestors, and that cgroup's usage, at the kill (absent without one).
        memory_limit_bytes: Option<u64>,
        memory_bytes: Option<u64>,
    },
    None {},
}

/// The task that was running when a signal was generated.
#[derive(Serialize)]
pub(crate) struct SenderJson<'a> {
    pub(crate) pid: u32,
    pub(crate) tid: u32,
    pub(crate) comm: std::borrow::Cow<'a, str>,
    pub(crate) pidns: u32,
    pub(crate) cgroup_id: u64,
    pub(crate) start_time_ns: u64,
}

/// What an OOM record shows in the task fields: it has only the victim's pid.
static NO_TASK: TaskInfo = TaskInfo {
    start_time_ns: 0,
    cgroup_id: 0,
    ppid: 0,
    uid: 0,
    gid: 0,
    pid_level: 0,
    ns_pids: [0; observer_common::MAX_PID_LEVELS],
    ns: [0; NS_COUNT],
    flags: 0,
    comm: [0; observer_common::COMM_LEN],
};

impl<'a> Detail<'a> {
    fn exec(e: &'a observer_common::ExecEvent) -> Self {
        let cred = super::credentials::Creds::of(e);
        Detail::Exec {
            filename: c_str(&e.filename),
            argv: split_args(&e.args, e.args_len as usize).collect(),
            old_tid: e.old_tid,
            cred,
            cap_eff: super::credentials::cap_names(cred.cap_eff),
            privileges: cred.gained(),
            exe_id: super::credentials::ExeId::of(e),
            exe_hash: super::credentials::ExeHashView::of(Some(Err(
                crate::table::exe_hash::Reason::Pending,
            ))),
        }
    }
}

impl<'a> EventJson<'a> {
    /// An exec event's executable hash, as its caller resolved it (`new` says pending).
    pub(crate) fn with_exe_hash(
        mut self,
        r: Option<Result<crate::table::exe_hash::Digest, crate::table::exe_hash::Reason>>,
    ) -> Self {
        if let (Detail::Exec { exe_hash, .. }, Some(r)) = (&mut self.detail, r) {
            *exe_hash = super::credentials::ExeHashView::of(Some(r));
        }
        self
    }

    /// The exec session the event's process was in when the event was applied (the caller
    /// asks the table: `Table::session_of`).
    pub(crate) fn with_session(mut self, s: Option<&Session>) -> Self {
        self.entered = s.map(|s| super::sessions::entered_view(s, self.pid));
        self
    }

    pub fn new(ev: &'a Event) -> Self {
        let h = ev.header();
        let t: &TaskInfo = ev.task().unwrap_or(&NO_TASK);
        let detail = match ev {
            Event::Fork(e) => Detail::Fork {
                parent_tid: e.parent_tid,
                is_thread: e.is_thread != 0,
            },
            Event::Exec(e) => Detail::exec(e),
            Event::Exit(e) => {
                let st = exit_status(e.exit_code);
                Detail::Exit {
                    exit_code: st.code,
                    signal: st.signal,
                    core_dumped: st.core_dumped,
                    status: e.exit_code,
                    leader: e.is_leader != 0,
                    group_dead: e.group_dead != 0,
                }
            }
            Event::Setns(e) | Event::Unshare(e) => Detail::Ns { ret: e.ret },
            Event::CgroupAttach(e) => Detail::CgroupAttach {
                cgroup_path: c_str(&e.path),
                dst_cgroup_id: e.dst_cgroup_id,
                hierarchy_id: e.hierarchy_id,
                level: e.dst_level,
                threadgroup: e.threadgroup != 0,
            },
            Event::Signal(e) => Detail::Signal {
                signal: crate::events::signals::name(e.sig),
                signo: e.sig,
                code: e.code,
                group: e.group != 0,
                result: crate::events::signals::result_name(e.result),
                sender: SenderJson {
                    pid: e.sender_tgid,
                    tid: e.sender_pid,
                    comm: c_str(&e.sender_comm),
                    pidns: e.sender_pidns,
                    cgroup_id: e.sender_cgroup_id,
                    start_time_ns: e.sender_start_ns,
                },
            },
            Event::Oom(e) => {
                let rss = e.flags & observer_common::OOM_HAS_RSS != 0;
                let memcg = e.flags & observer_common::OOM_HAS_MEMCG != 0;
                Detail::Oom {
                    victim_pid: e.victim_pid,
                    total_vm_kb: e.total_vm_kb,
                    anon_rss_kb: rss.then_some(e.anon_rss_kb),
                    file_rss_kb: rss.then_some(e.file_rss_kb),
                    shmem_rss_kb: rss.then_some(e.shmem_rss_kb),
                    oom_score_adj: (e.flags & observer_common::OOM_HAS_SCORE_ADJ != 0)
                        .then_some(e.oom_score_adj),
                    memory_limit_bytes: memcg.then_some(e.memcg_max_bytes),
                    memory_bytes: memcg.then_some(e.memcg_usage_bytes),
                }
            }
            Event::Free(_) => Detail::None {},
        };
        EventJson {
            kind: ev.kind().name(),
            time_ns: h.ktime_ns,
            cpu: h.cpu,
            pid: h.tgid,
            tid: h.pid,
            ppid: t.ppid,
            ns_pids: t.ns_pids(),
            ns: NsJson(t.ns),
            cgroup_id: t.cgroup_id,
            start_time_ns: t.start_time_ns,
            comm: t.comm_str(),
            uid: t.uid,
            gid: t.gid,
            read_error: t.flags & observer_common::TASK_FLAG_READ_ERROR != 0,
            entered: None,
            detail,
        }
    }
}

/// One readable line: boot time, type, pid/tid, ppid, NSpid chain, comm, then the details.
pub fn text_line(ev: &Event) -> String {
    line_marked(ev, None)
}

/// `text_line` with `mark` (an exec session's) right after the type: before `pid=`, where
/// nothing a process names (comm, argv, file names) can reach, so no name can forge a mark
/// or hide one.
fn line_marked(ev: &Event, mark: Option<&str>) -> String {
    let h = ev.header();
    let t = ev.task().unwrap_or(&NO_TASK);
    let mut s = String::with_capacity(160);
    let chain = t
        .ns_pids()
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("/");
    let _ = write!(
        s,
        "{:>6}.{:06} {:<13} ",
        h.ktime_ns / 1_000_000_000,
        (h.ktime_ns % 1_000_000_000) / 1000,
        ev.kind().name(),
    );
    if let Some(m) = mark {
        let _ = write!(s, "{m} ");
    }
    let _ = write!(
        s,
        "pid={:<7} tid={:<7} ppid={:<7} nspid={:<12} {:<16}",
        h.tgid,
        h.pid,
        t.ppid,
        if chain.is_empty() {
            "-".to_string()
        } else {
            chain
        },
        super::text::one_line(&t.comm_str()),
    );
    write_detail(&mut s, ev, t);
    s
}

/// `text_line` with the exec session of the event's process after its type (`[exec by
/// docker exec]`, as `sessions::short_mark`), and for an exec its executable's SHA-256 at
/// the end (`sha256=<hex>`, or `sha256=-(gone)` and the like saying why there is none;
/// nothing when hashing is off).
pub(crate) fn text_line_with(
    ev: &Event,
    session: Option<&Session>,
    hash: Option<Result<crate::table::exe_hash::Digest, crate::table::exe_hash::Reason>>,
) -> String {
    use crate::table::exe_hash::{hex, Reason};
    // The mark is the observer's own words (a fixed name and a pid), never a process's.
    let mark = session.map(|session| {
        let e = super::sessions::entered_view(session, ev.header().tgid);
        super::sessions::short_mark(&e)
    });
    let mut s = line_marked(ev, mark.as_deref());
    match hash {
        Some(Ok(d)) => {
            let _ = write!(s, " sha256={}", hex(&d));
        }
        None | Some(Err(Reason::Off)) => {}
        Some(Err(why)) => {
            let _ = write!(s, " sha256=-({})", why.name());
        }
    }
    s
}

/// The event's own fields, after the common ones.
fn write_detail(s: &mut String, ev: &Event, t: &TaskInfo) {
    match ev {
        Event::Fork(e) => {
            let _ = write!(
                s,
                " by={}{}",
                e.parent_tid,
                if e.is_thread != 0 { " thread" } else { "" }
            );
        }
        Event::Exec(e) => {
            let argv: Vec<String> = split_args(&e.args, e.args_len as usize).collect();
            let _ = write!(
                s,
                " {} [{}]",
                super::text::one_line(&c_str(&e.filename)),
                super::text::one_line(&argv.join(" "))
            );
            if let Some(g) = super::credentials::Creds::of(e).gained() {
                let _ = write!(s, " ({g})");
            }
        }
        Event::Exit(e) => write_exit(s, e),
        Event::Setns(_) | Event::Unshare(_) => write_namespaces(s, t),
        Event::CgroupAttach(e) => {
            let _ = write!(
                s,
                " -> {} (hierarchy {}, id {})",
                super::text::one_line(&c_str(&e.path)),
                e.hierarchy_id,
                e.dst_cgroup_id
            );
        }
        Event::Signal(e) => {
            let _ = write!(
                s,
                " {} {} from pid={} ({}){}{}",
                crate::events::signals::name(e.sig),
                crate::events::signals::result_name(e.result),
                e.sender_tgid,
                super::text::one_line(&c_str(&e.sender_comm)),
                if e.code > 0 { " by the kernel" } else { "" },
                if e.group != 0 { " group" } else { "" },
            );
        }
        Event::Oom(e) => {
            let _ = write!(
                s,
                " victim={} total_vm={}kB anon_rss={}kB file_rss={}kB shmem_rss={}kB",
                e.victim_pid, e.total_vm_kb, e.anon_rss_kb, e.file_rss_kb, e.shmem_rss_kb
            );
        }
        Event::Free(_) => {}
    }
}

/// How it ended (exit code, or signal and core dump), and whether a thread or the group's last.
fn write_exit(s: &mut String, e: &observer_common::ExitEvent) {
    let st = exit_status(e.exit_code);
    match (st.code, st.signal) {
        (Some(c), _) => {
            let _ = write!(s, " code={c}");
        }
        (_, Some(sig)) => {
            let _ = write!(
                s,
                " signal={sig}{}",
                if st.core_dumped { " (core)" } else { "" }
            );
        }
        _ => {}
    }
    if e.is_leader == 0 {
        s.push_str(" thread");
    }
    if e.group_dead != 0 {
        s.push_str(" group-dead");
    }
}

/// The task's namespace inodes after a setns or unshare.
fn write_namespaces(s: &mut String, t: &TaskInfo) {
    let _ = write!(
        s,
        " mnt={} pid={} pid_for_children={} net={} uts={} ipc={} cgroup={} user={}",
        t.ns[observer_common::NS_MNT],
        t.ns[observer_common::NS_PID],
        t.ns[observer_common::NS_PID_FOR_CHILDREN],
        t.ns[observer_common::NS_NET],
        t.ns[observer_common::NS_UTS],
        t.ns[observer_common::NS_IPC],
        t.ns[observer_common::NS_CGROUP],
        t.ns[observer_common::NS_USER],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_inodes_round_trip_through_json() {
        let mut ns = [0u32; NS_COUNT];
        for (i, v) in ns.iter_mut().enumerate().skip(1) {
            *v = 4026531835 + i as u32;
        }
        let text = serde_json::to_string(&NsJson(ns)).unwrap();
        let back: NsJson = serde_json::from_str(&text).unwrap();
        assert_eq!(back.0, ns);
        // Unknown names are skipped, absent and null ones read 0, escapes are decoded.
        let other = format!(r#"{{"future": 7, "{}": null, "\u0070id": 5}}"#, NS_NAMES[1]);
        let back: NsJson = serde_json::from_str(&other).unwrap();
        let mut want = [0u32; NS_COUNT];
        if let Some(i) = NS_NAMES.iter().position(|n| *n == "pid") {
            want[i] = 5;
        }
        assert_eq!(back.0, want);
        assert!(serde_json::from_str::<NsJson>("[1]").is_err());
    }
}

#[cfg(test)]
mod hash_tests {
    use super::*;
    use crate::table::exe_hash::Reason;
    use observer_common::{EventKind, ExecEvent};

    #[test]
    fn an_exec_line_ends_with_its_hash_or_why_there_is_none() {
        // SAFETY: plain integers: all zeroes is a valid value.
        let mut e: ExecEvent = unsafe { std::mem::zeroed() };
        e.header.kind = EventKind::Exec as u32;
        let ev = Event::Exec(e);
        let plain = text_line(&ev);
        let d = [0xab; 32];
        assert_eq!(
            text_line_with(&ev, None, Some(Ok(d))),
            format!("{plain} sha256={}", "ab".repeat(32))
        );
        assert_eq!(
            text_line_with(&ev, None, Some(Err(Reason::TooLarge))),
            format!("{plain} sha256=-(too_large)")
        );
        // Hashing off, or not an exec: the line as before.
        assert_eq!(text_line_with(&ev, None, Some(Err(Reason::Off))), plain);
        assert_eq!(text_line_with(&ev, None, None), plain);
        // The names are the JSON's.
        for r in [Reason::Gone, Reason::NotSeen, Reason::Pending, Reason::Busy] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.name());
        }
    }

    #[test]
    fn a_session_processs_event_carries_entered_and_its_line_the_mark_where_no_name_reaches() {
        use crate::table::sessions::{HostLink, Seen, Via};
        // SAFETY: plain integers: all zeroes is a valid value.
        let mut e: ExecEvent = unsafe { std::mem::zeroed() };
        e.header.kind = EventKind::Exec as u32;
        e.header.tgid = 901;
        // Names that try to look marked: comm, file name and argv are the process's.
        let forged = b"[exec by setns]";
        e.task.comm[..forged.len()].copy_from_slice(forged);
        let file = b"/tmp/[exec by docker exec]";
        e.filename[..file.len()].copy_from_slice(file);
        let args = b"sh\0] [exec by docker exec, root 1]\0";
        e.args[..args.len()].copy_from_slice(args);
        e.args_len = args.len() as u32;
        let ev = Event::Exec(e);
        let mut comm = [0u8; observer_common::COMM_LEN];
        comm[..4].copy_from_slice(b"runc");
        let s = Session {
            root: 900,
            via: Via::DockerExec,
            by: vec![HostLink { pid: 812, comm }].into(),
            at_ns: 7,
            seen: Seen::Entry,
        };
        let d = [0xab; 32];
        let line = text_line_with(&ev, Some(&s), Some(Ok(d)));
        let plain = text_line(&ev);
        let want = format!(
            "{} sha256={}",
            plain.replacen(" pid=", " [exec by docker exec, root 900] pid=", 1),
            "ab".repeat(32)
        );
        assert_eq!(line, want);
        // Where a mark goes, before `pid=`, an unmarked line has none, whatever its names.
        let before_pid = |l: &str| l.split(" pid=").next().unwrap().to_string();
        assert!(before_pid(&line).ends_with("exec          [exec by docker exec, root 900]"));
        assert!(!before_pid(&plain).contains('['), "{plain}");
        assert!(!before_pid(&text_line_with(&ev, None, None)).contains('['));
        let json = serde_json::to_value(EventJson::new(&ev).with_session(Some(&s))).unwrap();
        assert_eq!(json["entered"]["via"], "docker exec");
        assert_eq!(json["entered"]["root_pid"], 900);
        assert_eq!(json["entered"]["root"], false);
        assert_eq!(json["entered"]["by"][0]["pid"], 812);
        let plain = serde_json::to_value(EventJson::new(&ev).with_session(None)).unwrap();
        assert!(plain.get("entered").is_none(), "{plain}");
    }
}
