//! The encoding of one stored history entry, schema version 2: a `postcard` (serde, varint
//! integers, length-prefixed byte strings) of the compact records below. Compact on
//! purpose — under 200 bytes for a shell command with its credentials and executable hash:
//! comm and argv are stored as the bytes in use (not the fixed arrays), times as the end
//! (boot clock of the entry's boot) and signed offsets from it, containers (the entry's own
//! and its signals' senders') as numbers into the store's container table.
//!
//! Schema 2 is schema 1's entry (v1.rs) followed by the exec's credentials and executable
//! identity and the executable's hash (postcard writes nested records inline: a schema 1
//! body is a prefix of a schema 2 entry's bytes).
//!
//! An entry of an exec session (table/sessions.rs) is followed by its session record: a
//! trailing record, not a new schema — postcard leaves bytes after a record alone, so an
//! agent that does not know it reads the entry without its session, and an entry without
//! one reads as having none. A session the agent deduced at its start-up (it began before
//! the agent) has one more trailing record after that, its `Seen` code, by the same rule:
//! an agent that does not know it reads the session as seen when it came in.
//!
//! The bytes come back from a file on disk: decoding any bytes returns an error or an
//! entry, never panics, and allocates no more than the bytes it was given can describe.
//! A change to these records is a new schema version (db.rs `VERSION`) with a migration
//! (migrate.rs).

pub(super) mod v1;

use observer_common::COMM_LEN;
use serde::{Deserialize, Serialize};

use crate::{
    containers::ContainerKey,
    table::{
        exe_hash::{Digest, ExeHash, ExeId, Reason},
        history::{Ended, ExecOf, InitEnd, Link},
        process::ExecCred,
        sessions::{HostLink, Seen, Session, Via},
        signal_facts::{OomFacts, Sender, SignalFact},
    },
};

/// One stored entry: its container and boot (numbers into the store's tables) and the
/// ended process.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) container: u32,
    pub(super) boot: u32,
    /// When it ended, on its boot's clock (ns).
    pub(super) end_ns: u64,
    body: Body,
    exec: Option<ExecRec>,
    /// The executable's SHA-256, or why it has none.
    hash: Option<Result<Digest, Reason>>,
    /// The exec session it ran in: after the record's bytes (see above).
    #[serde(skip)]
    session: Option<SessionRec>,
}

/// An exec session as stored after its entry.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct SessionRec {
    root: u32,
    /// `Via::code`.
    via: u8,
    by: Vec<(u32, Vec<u8>)>,
    /// When it came in − the entry's end (negative: before it).
    at_rel: i64,
    /// `Seen::code`: a record of its own after this one, when not `Entry` (see above).
    #[serde(skip)]
    seen: u8,
}

fn session_rec(s: &Session, end: u64) -> SessionRec {
    SessionRec {
        root: s.root,
        via: s.via.code(),
        by: s.by.iter().map(|l| (l.pid, comm_bytes(&l.comm))).collect(),
        at_rel: rel(s.at_ns, end),
        seen: s.seen.code(),
    }
}

fn session(r: SessionRec, end: u64) -> Session {
    Session {
        root: r.root,
        via: Via::from_code(r.via),
        by: r
            .by
            .into_iter()
            .map(|(pid, comm)| HostLink {
                pid,
                comm: comm_array(&comm),
            })
            .collect(),
        at_ns: abs(r.at_rel, end),
        seen: Seen::from_code(r.seen),
    }
}

/// The exec's credentials (beside the real ids) and executable identity.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct ExecRec {
    uid: u32,
    gid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    cap_eff: u64,
    raised: bool,
    exe_dev: u32,
    exe_ino: u64,
    exe_size: u64,
    exe_mtime_ns: i64,
}

/// The head of an entry's bytes (container, boot, end), read without the rest.
pub(super) fn head(bytes: &[u8]) -> Option<(u32, u32, u64)> {
    postcard::take_from_bytes::<(u32, u32, u64)>(bytes)
        .ok()
        .map(|(h, _)| h)
}

/// The head of an entry's bytes with its host pid (the body's first field), read without
/// the rest: what a search by pid looks at.
pub(super) fn head_pid(bytes: &[u8]) -> Option<(u32, u32, u64, u32)> {
    postcard::take_from_bytes::<(u32, u32, u64, u32)>(bytes)
        .ok()
        .map(|(h, _)| h)
}

/// What schema 1 kept of an entry (and schema 2 keeps first).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Body {
    pid: u32,
    ns_pid: u32,
    comm: Vec<u8>,
    argv: Vec<u8>,
    exe: String,
    chain: Vec<LinkRec>,
    adopted_from: Option<u32>,
    /// end − start.
    run_ns: u64,
    status: u32,
    signal: Option<SigRec>,
    oom: Option<OomRec>,
    with_namespace: Option<InitRec>,
    ignored: Vec<SigRec>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct LinkRec {
    pid: u32,
    ns_pid: u32,
    comm: Vec<u8>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct SigRec {
    sig: u32,
    result: u32,
    code: i32,
    group: bool,
    /// at − the entry's end (negative: before it).
    at_rel: i64,
    pid: u32,
    comm: Vec<u8>,
    pidns: u32,
    ns_pid: Option<u32>,
    container: Option<u32>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct OomRec {
    at_rel: i64,
    total_vm_kb: u64,
    anon_rss_kb: Option<u64>,
    file_rss_kb: Option<u64>,
    shmem_rss_kb: Option<u64>,
    oom_score_adj: Option<i32>,
    trigger_pid: u32,
    trigger_comm: Vec<u8>,
    memory_limit_bytes: Option<u64>,
    memory_bytes: Option<u64>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct InitRec {
    pid: u32,
    comm: Vec<u8>,
    status: Option<u32>,
    cause: Option<SigRec>,
}

/// The bytes of a comm in use (up to its NUL).
fn comm_bytes(c: &[u8; COMM_LEN]) -> Vec<u8> {
    let end = c.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    c[..end].to_vec()
}

fn comm_array(b: &[u8]) -> [u8; COMM_LEN] {
    let mut c = [0u8; COMM_LEN];
    let n = b.len().min(COMM_LEN - 1);
    c[..n].copy_from_slice(&b[..n]);
    c
}

fn rel(at: u64, end: u64) -> i64 {
    (i128::from(at) - i128::from(end)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn abs(rel: i64, end: u64) -> u64 {
    (i128::from(end) + i128::from(rel)).clamp(0, i128::from(u64::MAX)) as u64
}

/// Numbers of containers, as the store's container table gives them out.
pub(super) trait Refs {
    fn number(&mut self, key: &ContainerKey) -> u32;
    fn key(&self, n: u32) -> Option<ContainerKey>;
}

fn sig_rec(s: &SignalFact, end: u64, refs: &mut dyn Refs) -> SigRec {
    SigRec {
        sig: s.sig,
        result: s.result,
        code: s.code,
        group: s.group,
        at_rel: rel(s.at_ns, end),
        pid: s.sender.pid,
        comm: comm_bytes(&s.sender.comm),
        pidns: s.sender.pidns,
        ns_pid: s.sender.ns_pid,
        container: s.sender.container.as_ref().map(|k| refs.number(k)),
    }
}

fn sig_fact(r: SigRec, end: u64, refs: &dyn Refs) -> SignalFact {
    SignalFact {
        sig: r.sig,
        result: r.result,
        code: r.code,
        group: r.group,
        at_ns: abs(r.at_rel, end),
        sender: Sender {
            pid: r.pid,
            comm: comm_array(&r.comm),
            pidns: r.pidns,
            ns_pid: r.ns_pid,
            container: r.container.and_then(|n| refs.key(n)),
        },
    }
}

fn oom_rec(o: &OomFacts, end: u64) -> OomRec {
    OomRec {
        at_rel: rel(o.at_ns, end),
        total_vm_kb: o.total_vm_kb,
        anon_rss_kb: o.anon_rss_kb,
        file_rss_kb: o.file_rss_kb,
        shmem_rss_kb: o.shmem_rss_kb,
        oom_score_adj: o.oom_score_adj,
        trigger_pid: o.trigger_pid,
        trigger_comm: comm_bytes(&o.trigger_comm),
        memory_limit_bytes: o.memory_limit_bytes,
        memory_bytes: o.memory_bytes,
    }
}

fn oom_facts(r: OomRec, end: u64) -> OomFacts {
    OomFacts {
        at_ns: abs(r.at_rel, end),
        total_vm_kb: r.total_vm_kb,
        anon_rss_kb: r.anon_rss_kb,
        file_rss_kb: r.file_rss_kb,
        shmem_rss_kb: r.shmem_rss_kb,
        oom_score_adj: r.oom_score_adj,
        trigger_pid: r.trigger_pid,
        trigger_comm: comm_array(&r.trigger_comm),
        memory_limit_bytes: r.memory_limit_bytes,
        memory_bytes: r.memory_bytes,
    }
}

/// What schema 1 keeps of `e`.
fn body(e: &Ended, refs: &mut dyn Refs) -> Body {
    let end = e.end_ns;
    Body {
        pid: e.pid,
        ns_pid: e.ns_pid,
        comm: comm_bytes(&e.comm),
        argv: e.argv.to_vec(),
        exe: e.exe.to_string(),
        chain: e
            .chain
            .iter()
            .map(|l| LinkRec {
                pid: l.pid,
                ns_pid: l.ns_pid,
                comm: comm_bytes(&l.comm),
            })
            .collect(),
        adopted_from: e.adopted_from,
        run_ns: end.saturating_sub(e.start_ns),
        status: e.status,
        signal: e.signal.as_deref().map(|s| sig_rec(s, end, refs)),
        oom: e.oom.as_deref().map(|o| oom_rec(o, end)),
        with_namespace: e.with_namespace.as_deref().map(|i| InitRec {
            pid: i.pid,
            comm: comm_bytes(&i.comm),
            status: i.status,
            cause: i.cause.as_ref().map(|c| sig_rec(c, end, refs)),
        }),
        ignored: e.ignored.iter().map(|s| sig_rec(s, end, refs)).collect(),
    }
}

fn exec_rec(x: &ExecOf) -> ExecRec {
    let c = &x.cred;
    ExecRec {
        uid: x.uid,
        gid: x.gid,
        euid: c.euid,
        egid: c.egid,
        suid: c.suid,
        sgid: c.sgid,
        cap_eff: c.cap_eff,
        raised: c.raised,
        exe_dev: c.exe.dev,
        exe_ino: c.exe.ino,
        exe_size: c.exe.size,
        exe_mtime_ns: c.exe.mtime_ns,
    }
}

fn exec_of(r: ExecRec) -> ExecOf {
    ExecOf {
        uid: r.uid,
        gid: r.gid,
        cred: ExecCred {
            euid: r.euid,
            egid: r.egid,
            suid: r.suid,
            sgid: r.sgid,
            cap_eff: r.cap_eff,
            raised: r.raised,
            exe: ExeId {
                dev: r.exe_dev,
                ino: r.exe_ino,
                size: r.exe_size,
                mtime_ns: r.exe_mtime_ns,
            },
        },
    }
}

/// The bytes of `e`, which ended in container number `container` during boot `boot`. Its
/// executable's hash is stored as it is now (`pending` while a worker still reads it).
pub(super) fn encode(e: &Ended, container: u32, boot: u32, refs: &mut dyn Refs) -> Vec<u8> {
    let entry = Entry {
        container,
        boot,
        end_ns: e.end_ns,
        body: body(e, refs),
        exec: e.exec.as_deref().map(exec_rec),
        hash: e.exe_hash.as_ref().map(ExeHash::now),
        session: e.session.as_deref().map(|s| session_rec(s, e.end_ns)),
    };
    entry.bytes()
}

/// Decodes stored bytes (any bytes: an error, never a panic); a session record after the
/// entry that does not decode is left out, the entry kept.
pub(super) fn decode(bytes: &[u8]) -> Result<Entry, postcard::Error> {
    let (mut entry, rest): (Entry, _) = postcard::take_from_bytes(bytes)?;
    if !rest.is_empty() {
        entry.session =
            postcard::take_from_bytes(rest)
                .ok()
                .map(|(mut s, seen): (SessionRec, &[u8])| {
                    s.seen = postcard::from_bytes(seen).unwrap_or(0);
                    s
                });
    }
    Ok(entry)
}

impl Entry {
    /// This entry's bytes (what a migration writes), its session record after them.
    pub(super) fn bytes(&self) -> Vec<u8> {
        let mut b = postcard::to_allocvec(self).unwrap_or_default();
        if let Some(s) = &self.session {
            b.extend(postcard::to_allocvec(s).unwrap_or_default());
            if s.seen != 0 {
                b.extend(postcard::to_allocvec(&s.seen).unwrap_or_default());
            }
        }
        b
    }

    /// The ended process, with its senders' containers looked up in `refs`.
    pub(super) fn ended(self, refs: &dyn Refs) -> Ended {
        let (r, end) = (self.body, self.end_ns);
        Ended {
            pid: r.pid,
            ns_pid: r.ns_pid,
            comm: comm_array(&r.comm),
            argv: r.argv.into(),
            exe: r.exe.into(),
            chain: r
                .chain
                .into_iter()
                .map(|l| Link {
                    pid: l.pid,
                    ns_pid: l.ns_pid,
                    comm: comm_array(&l.comm),
                })
                .collect(),
            adopted_from: r.adopted_from,
            start_ns: end.saturating_sub(r.run_ns),
            end_ns: end,
            status: r.status,
            signal: r.signal.map(|s| Box::new(sig_fact(s, end, refs))),
            oom: r.oom.map(|o| Box::new(oom_facts(o, end))),
            with_namespace: r.with_namespace.map(|i| {
                Box::new(InitEnd {
                    pid: i.pid,
                    comm: comm_array(&i.comm),
                    status: i.status,
                    cause: i.cause.map(|c| sig_fact(c, end, refs)),
                })
            }),
            ignored: r
                .ignored
                .into_iter()
                .map(|s| sig_fact(s, end, refs))
                .collect(),
            exec: self.exec.map(|x| Box::new(exec_of(x))),
            exe_hash: self.hash.map(ExeHash::known),
            session: self.session.map(|s| std::sync::Arc::new(session(s, end))),
        }
    }
}

#[cfg(test)]
pub(super) mod tests;
