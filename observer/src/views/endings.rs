//! How processes ended and what was done to them: `observer history <container>` (the
//! table's history, table/history.rs) and the signal facts of live processes — the JSON
//! shapes of ended processes (with who signalled them, the OOM killer's facts and deaths
//! with a pid namespace) and their text rendering. `why.rs` turns them into a paragraph.

use serde::{Deserialize, Serialize};

use crate::{
    events::{c_str, exit_status, signals},
    table::{
        history::{Ended, InitEnd},
        signal_facts::{OomFacts, SignalFact},
    },
    views::model::{exit_code, short_id},
};

/// Who sent a signal: a process (host pid, comm, its container or the host) or the kernel.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct SenderView {
    /// Host pid of the task that was running (0: an interrupt, no task).
    pub(crate) pid: u32,
    pub(crate) ns_pid: Option<u32>,
    pub(crate) comm: String,
    /// `host`, a container's short id, or `kernel` (the OOM killer, a fault, a dying
    /// pid-namespace init: the kernel raised it in that task's context).
    pub(crate) origin: String,
    pub(crate) container_id: Option<String>,
    pub(crate) runtime: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct SignalView {
    pub(crate) signal: String,
    pub(crate) signo: u32,
    /// delivered, ignored, already_pending, overflow, lost_info.
    pub(crate) result: String,
    pub(crate) si_code: i32,
    pub(crate) group: bool,
    pub(crate) time_ns: u64,
    /// Seconds before the view was made.
    pub(crate) ago_s: f64,
    pub(crate) sender: SenderView,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct OomView {
    pub(crate) time_ns: u64,
    pub(crate) total_vm_kb: u64,
    pub(crate) anon_rss_kb: Option<u64>,
    pub(crate) file_rss_kb: Option<u64>,
    pub(crate) shmem_rss_kb: Option<u64>,
    pub(crate) oom_score_adj: Option<i32>,
    pub(crate) trigger_pid: u32,
    pub(crate) trigger_comm: String,
    /// The victim's memory cgroup right after the kill.
    pub(crate) memory_limit_bytes: Option<u64>,
    pub(crate) memory_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct InitEndView {
    pub(crate) pid: u32,
    pub(crate) comm: String,
    pub(crate) exit_code: Option<i32>,
    pub(crate) signal: Option<String>,
    pub(crate) killed_by: Option<SignalView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct LinkView {
    pub(crate) pid: u32,
    pub(crate) ns_pid: u32,
    pub(crate) comm: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct EndedView {
    pub(crate) pid: u32,
    pub(crate) ns_pid: u32,
    pub(crate) comm: String,
    pub(crate) argv: Vec<String>,
    pub(crate) exe: String,
    /// Parent first, up to the container's PID 1 (for an orphan: before its parent died).
    pub(crate) parents: Vec<LinkView>,
    /// The parent it had before it was orphaned and adopted.
    pub(crate) adopted_from: Option<u32>,
    pub(crate) start_time_ns: u64,
    pub(crate) end_time_ns: u64,
    pub(crate) duration_s: f64,
    /// Exit code, or 128 + signal as shells report it.
    pub(crate) exit_code: i32,
    pub(crate) signal: Option<String>,
    pub(crate) core_dumped: bool,
    /// Ended by a signal or with a code other than 0.
    pub(crate) failed: bool,
    pub(crate) killed_by: Option<SignalView>,
    pub(crate) oom: Option<OomView>,
    /// Killed by the kernel because its pid namespace's init died.
    pub(crate) killed_with_namespace: Option<InitEndView>,
    /// Signals it ignored before it ended (no handler, or SIG_IGN).
    pub(crate) ignored: Vec<SignalView>,
    /// The boot it ended in, when not the node's current one: -1 the one before, ...
    /// (from the history store; its times are on that boot's clock).
    #[serde(default, skip_serializing_if = "is_this_boot")]
    pub(crate) boot: i32,
    /// The credentials its exec left (absent: no exec seen, or an entry the durable store
    /// kept in schema 1), as an exec event's `cred`; `cap_eff` by name beside them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cred: Option<crate::views::credentials::Creds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cap_eff: Option<String>,
    /// How its exec raised privileges, if it did (`setuid: 1000 → euid 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) privileges: Option<String>,
    /// Its executable's device, inode, size and modification time at the exec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exe_id: Option<crate::views::credentials::ExeId>,
    /// Its executable's SHA-256 or why there is none (absent: no exec seen, or an entry
    /// the durable store kept in schema 1).
    #[serde(
        flatten,
        default,
        deserialize_with = "crate::views::credentials::ExeHashView::absent_is_none"
    )]
    pub(crate) exe_hash: Option<crate::views::credentials::ExeHashView>,
    /// In an exec session: how it (or its session's root) came into the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) entered: Option<crate::views::sessions::EnteredView>,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_this_boot(b: &i32) -> bool {
    *b == 0
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct HistoryView {
    pub(crate) runtime: String,
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    /// Entries matching the filters, oldest first.
    pub(crate) entries: Vec<EndedView>,
    /// Entries dropped from all histories since the agent started (bounds).
    pub(crate) evicted_total: u64,
}

/// `observer history` filters.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct HistoryFilter {
    /// Only processes that ended within this many seconds.
    pub(crate) since_s: Option<f64>,
    #[serde(default)]
    pub(crate) failed: bool,
    pub(crate) comm: Option<String>,
    /// Only processes that ended in this boot (0: the current one, -1: the one before...).
    #[serde(default)]
    pub(crate) boot: Option<i32>,
    /// Only exec sessions (their roots: the processes that came in).
    #[serde(default)]
    pub(crate) exec: bool,
}

pub(crate) fn sender_view(f: &SignalFact) -> SenderView {
    let s = &f.sender;
    let (origin, container_id, runtime) = if f.is_from_kernel() || s.pid == 0 {
        ("kernel".to_string(), None, None)
    } else {
        match &s.container {
            Some(k) => (
                short_id(&k.id),
                Some(k.id.clone()),
                Some(k.runtime.as_str().to_string()),
            ),
            None => ("host".to_string(), None, None),
        }
    };
    SenderView {
        pid: s.pid,
        ns_pid: s.ns_pid,
        comm: c_str(&s.comm).into_owned(),
        origin,
        container_id,
        runtime,
    }
}

pub(crate) fn signal_view(f: &SignalFact, now_ns: u64) -> SignalView {
    SignalView {
        signal: signals::name(f.sig),
        signo: f.sig,
        result: signals::result_name(f.result).to_string(),
        si_code: f.code,
        group: f.group,
        time_ns: f.at_ns,
        ago_s: now_ns.saturating_sub(f.at_ns) as f64 / 1e9,
        sender: sender_view(f),
    }
}

pub(crate) fn oom_view(o: &OomFacts) -> OomView {
    OomView {
        time_ns: o.at_ns,
        total_vm_kb: o.total_vm_kb,
        anon_rss_kb: o.anon_rss_kb,
        file_rss_kb: o.file_rss_kb,
        shmem_rss_kb: o.shmem_rss_kb,
        oom_score_adj: o.oom_score_adj,
        trigger_pid: o.trigger_pid,
        trigger_comm: c_str(&o.trigger_comm).into_owned(),
        memory_limit_bytes: o.memory_limit_bytes,
        memory_bytes: o.memory_bytes,
    }
}

fn init_view(i: &InitEnd, now_ns: u64) -> InitEndView {
    let st = i.status.map(exit_status);
    InitEndView {
        pid: i.pid,
        comm: c_str(&i.comm).into_owned(),
        exit_code: i.status.map(exit_code),
        signal: st.and_then(|s| s.signal).map(|s| signals::name(s as u32)),
        killed_by: i.cause.as_ref().map(|c| signal_view(c, now_ns)),
    }
}

pub(crate) fn ended_view(e: &Ended, now_ns: u64) -> EndedView {
    let st = exit_status(e.status);
    let argv = crate::table::Bounded::<{ crate::table::process::ARGV_BYTES }>::from_bytes(&e.argv);
    let cred = e
        .exec
        .as_deref()
        .map(|x| (crate::views::credentials::Creds::of_ended(x), x.cred.exe));
    EndedView {
        pid: e.pid,
        ns_pid: e.ns_pid,
        comm: c_str(&e.comm).into_owned(),
        argv: argv.args(),
        exe: e.exe.to_string(),
        parents: e
            .chain
            .iter()
            .map(|l| LinkView {
                pid: l.pid,
                ns_pid: l.ns_pid,
                comm: c_str(&l.comm).into_owned(),
            })
            .collect(),
        adopted_from: e.adopted_from,
        start_time_ns: e.start_ns,
        end_time_ns: e.end_ns,
        duration_s: e.end_ns.saturating_sub(e.start_ns) as f64 / 1e9,
        exit_code: exit_code(e.status),
        signal: st.signal.map(|s| signals::name(s as u32)),
        core_dumped: st.core_dumped,
        failed: st.signal.is_some() || st.code != Some(0),
        killed_by: e.signal.as_deref().map(|s| signal_view(s, now_ns)),
        oom: e.oom.as_deref().map(oom_view),
        killed_with_namespace: e.with_namespace.as_deref().map(|i| init_view(i, now_ns)),
        ignored: e.ignored.iter().map(|s| signal_view(s, now_ns)).collect(),
        boot: 0,
        cred: cred.as_ref().map(|c| c.0),
        cap_eff: cred
            .as_ref()
            .map(|c| crate::views::credentials::cap_names(c.0.cap_eff)),
        privileges: cred.as_ref().and_then(|c| c.0.gained()),
        exe_id: cred.map(|c| c.1),
        exe_hash: e
            .exe_hash
            .as_ref()
            .map(|h| crate::views::credentials::ExeHashView::now(Some(h))),
        entered: e
            .session
            .as_deref()
            .map(|s| crate::views::sessions::entered_view(s, e.pid)),
    }
}

impl HistoryFilter {
    pub(crate) fn keep(&self, e: &EndedView, now_ns: u64) -> bool {
        self.since_s
            .is_none_or(|s| (now_ns.saturating_sub(e.end_time_ns) as f64) / 1e9 <= s)
            && (!self.failed || e.failed)
            && self.comm.as_deref().is_none_or(|c| e.comm == c)
            && self.boot.is_none_or(|b| b == e.boot)
            && (!self.exec || e.entered.as_ref().is_some_and(|s| s.root))
    }
}

/// How a process ended, in a few words: `exit 0`, `SIGKILL from bash (host pid 812)`.
pub(crate) fn ending(e: &EndedView) -> String {
    let mut s = match &e.signal {
        Some(sig) => sig.clone(),
        None => format!("exit {}", e.exit_code),
    };
    if e.core_dumped {
        s.push_str(" (core dumped)");
    }
    if let Some(i) = &e.killed_with_namespace {
        s.push_str(&format!(
            ", killed with its pid namespace: PID 1 {} (host pid {}) ended ({})",
            i.comm,
            i.pid,
            match (&i.signal, i.exit_code) {
                (Some(sig), _) => sig.clone(),
                (None, Some(c)) => format!("exit {c}"),
                _ => "unknown".into(),
            }
        ));
    } else if let Some(o) = &e.oom {
        s.push_str(&format!(
            ", OOM-killed (anon rss {} kB, limit {})",
            o.anon_rss_kb.map(|v| v.to_string()).unwrap_or("?".into()),
            o.memory_limit_bytes
                .map(|b| format!("{} MiB", b >> 20))
                .unwrap_or("none".into())
        ));
    } else if let Some(k) = &e.killed_by {
        s.push_str(&format!(" from {}", from(&k.sender)));
    }
    s
}

/// `bash (host pid 812)`, `containerd-shim (host pid 90)`, `the kernel (in sleep's context)`.
pub(crate) fn from(s: &SenderView) -> String {
    match s.origin.as_str() {
        "kernel" => format!("the kernel (in the context of {} pid {})", s.comm, s.pid),
        "host" => format!("{} (host pid {})", s.comm, s.pid),
        c => format!("{} (pid {}, container {c})", s.comm, s.pid),
    }
}

pub(crate) fn render(v: &super::text::Escaped<HistoryView>) -> String {
    let mut out = format!(
        "{} {}{}: {} ended processes\n",
        v.runtime,
        short_id(&v.id),
        v.name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        v.entries.len()
    );
    out.push_str(&format!(
        "{:<8} {:<7} {:<16} {:>10}  {:<24} {}\n",
        "PID", "NSPID", "COMM", "DURATION", "PARENTS", "ENDED"
    ));
    for e in &v.entries {
        let parents: Vec<String> = e
            .parents
            .iter()
            .map(|l| format!("{}[{}]", l.comm, l.ns_pid))
            .collect();
        out.push_str(&format!(
            "{:<8} {:<7} {:<16} {:>9.3}s  {:<24} {}\n",
            e.pid,
            e.ns_pid,
            e.comm,
            e.duration_s,
            parents.join(" < "),
            match e.boot {
                0 => ending(e),
                b => format!("[boot {b}] {}", ending(e)),
            },
        ));
        if let Some(s) = e.entered.as_ref().filter(|s| s.root) {
            out.push_str(&format!("{:<8} {}\n", "", crate::views::sessions::mark(s)));
        }
    }
    out
}
