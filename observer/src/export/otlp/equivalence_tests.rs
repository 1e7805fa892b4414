//! The items the typed encoder (`typed.rs` into `wire::Request`, what the sink sends) is
//! held to the builder it replaced with (`reference.rs`: serde_json tree → `LogRecord` →
//! prost; `equivalence_tests/typed.rs`), and the timing harness of docs/export.md's
//! per-record figure (`equivalence_tests/cost.rs`).

mod cost;
mod typed;

use std::sync::Arc;

use observer_common::*;
use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest, logs::v1::LogRecord, resource::v1::Resource,
};
use prost::Message;

use super::{reference, resource, Batch};
use crate::{
    containers::{cgroup::Runtime, ContainerKey},
    events::Event,
    export::{origin::Names, Item, Origin},
    table::{
        exe_hash::{ExeHash, Reason},
        history::{Ended, ExecOf, InitEnd, Link},
        sessions::{HostLink, Seen, Session, Via},
        signal_facts::{OomFacts, Sender, SignalFact},
    },
};

const OFFSET: u64 = 1_733_000_000_000_000_000;
const NOW: u64 = 1_733_000_100_000_000_000;

fn comm(s: &str) -> [u8; COMM_LEN] {
    let mut c = [0; COMM_LEN];
    let n = s.len().min(COMM_LEN - 1);
    c[..n].copy_from_slice(&s.as_bytes()[..n]);
    c
}

fn task(ppid: u32, name: &str, ns_pids: &[u32], flags: u32) -> TaskInfo {
    let mut pids = [0; MAX_PID_LEVELS];
    pids[..ns_pids.len()].copy_from_slice(ns_pids);
    let mut ns = [0; NS_COUNT];
    ns[0] = 4_026_532_771;
    ns[3] = 4_026_531_840;
    TaskInfo {
        start_time_ns: 81_235_400_000,
        cgroup_id: 9841,
        ppid,
        uid: 1000,
        gid: 1000,
        pid_level: ns_pids.len().saturating_sub(1) as u32,
        ns_pids: pids,
        ns,
        flags,
        comm: comm(name),
    }
}

fn header(kind: EventKind, pid: u32) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        cpu: 1,
        ktime_ns: 81_235_500_123,
        tgid: pid,
        pid,
    }
}

/// An event of every kind (exec twice: plain, and setuid with odd bytes in its names).
fn events() -> Vec<Event> {
    let t = task(41_177, "true", &[41_210, 2], 0);
    // SAFETY (each zeroed): plain integers and byte arrays, all zeroes is a valid value.
    let mut exec: ExecEvent = unsafe { std::mem::zeroed() };
    (exec.header, exec.task, exec.old_tid) = (header(EventKind::Exec, 41_210), t, 41_210);
    exec.filename[..9].copy_from_slice(b"/bin/true");
    let args = b"/bin/true\0--password=hunter2\0\xff\xfe\0";
    exec.args[..args.len()].copy_from_slice(args);
    exec.args_len = args.len() as u32;
    (
        exec.euid,
        exec.egid,
        exec.cap_eff,
        exec.exe_ino,
        exec.exe_size,
    ) = (1000, 1000, 0, 77, 4096);
    let mut odd = exec;
    odd.task.comm = *b"q\"\\\x01\t\xc3\xa9\xf0\x9f\x98\x80\xff!\0\0\0";
    let path = "/tmp/dir with \"quotes\"/\u{202e}evil\u{0}.sh".as_bytes();
    odd.filename[..path.len()].copy_from_slice(path);
    let many: Vec<u8> = (0..200)
        .flat_map(|i| format!("a{i}\0").into_bytes())
        .collect();
    odd.args.copy_from_slice(&many[..ARGS_LEN]);
    (odd.args_len, odd.euid, odd.suid, odd.secureexec) = (ARGS_LEN as u32, 0, 0, 1);
    odd.cap_eff = u64::MAX >> 23;
    let mut fork: ForkEvent = unsafe { std::mem::zeroed() };
    (fork.header, fork.task, fork.parent_tid) = (header(EventKind::Fork, 41_211), t, 41_210);
    let mut exit: ExitEvent = unsafe { std::mem::zeroed() };
    (exit.header, exit.task, exit.is_leader, exit.group_dead) =
        (header(EventKind::Exit, 41_210), t, 1, 1);
    let mut killed = exit;
    killed.exit_code = 9 | 0x80;
    exit.exit_code = 7 << 8;
    let mut free: FreeEvent = unsafe { std::mem::zeroed() };
    (free.header, free.task) = (header(EventKind::Free, 41_210), t);
    let mut setns: NsEvent = unsafe { std::mem::zeroed() };
    (setns.header, setns.task, setns.ret) = (header(EventKind::Setns, 5), t, -1);
    let mut unshare = setns;
    (unshare.header.kind, unshare.task.flags) = (EventKind::Unshare as u32, TASK_FLAG_READ_ERROR);
    let mut cg: CgroupAttachEvent = unsafe { std::mem::zeroed() };
    (cg.header, cg.task, cg.dst_cgroup_id, cg.dst_level) =
        (header(EventKind::CgroupAttach, 5), t, u64::MAX, 3);
    cg.path[..20].copy_from_slice(b"/kubepods/pod-\xe2\x80\x8bx/a");
    let mut sig: SignalEvent = unsafe { std::mem::zeroed() };
    (
        sig.header, sig.task, sig.sig, sig.code, sig.group, sig.result,
    ) = (header(EventKind::Signal, 5), t, 15, -6, 1, 1);
    (sig.sender_tgid, sig.sender_pid, sig.sender_comm) = (77, 78, comm("containerd-shim"));
    let mut oom: OomEvent = unsafe { std::mem::zeroed() };
    (oom.header, oom.victim_pid, oom.total_vm_kb) = (header(EventKind::Oom, 5), 5, 1 << 20);
    let mut oom_full = oom;
    oom_full.flags = OOM_HAS_RSS | OOM_HAS_SCORE_ADJ | OOM_HAS_MEMCG;
    (oom_full.anon_rss_kb, oom_full.oom_score_adj) = (90_000, -1000);
    (oom_full.memcg_max_bytes, oom_full.memcg_usage_bytes) = (64 << 20, (64 << 20) - 4096);
    vec![
        Event::Exec(exec),
        Event::Exec(odd),
        Event::Fork(fork),
        Event::Exit(exit),
        Event::Exit(killed),
        Event::Free(free),
        Event::Setns(setns),
        Event::Unshare(unshare),
        Event::CgroupAttach(cg),
        Event::Signal(sig),
        Event::Oom(oom),
        Event::Oom(oom_full),
    ]
}

fn signal(sig: u32, code: i32, at_ns: u64, from: Option<ContainerKey>) -> SignalFact {
    SignalFact {
        sig,
        result: 0,
        code,
        group: true,
        at_ns,
        sender: Sender {
            pid: 77,
            comm: comm("containerd-shim"),
            pidns: 4_026_531_836,
            ns_pid: Some(77),
            container: from,
        },
    }
}

/// A history entry: with `full`, killed after an ignored SIGTERM, OOM facts, death with its
/// pid namespace, an exec's credentials and hash, in a `kubectl exec` session.
fn ended(pid: u32, argv: &[u8], full: bool) -> Ended {
    let end_ns = 96_120_000_000;
    let mut e = Ended {
        ns_pid: 7,
        chain: vec![Link {
            pid: 41_170,
            ns_pid: 1,
            comm: comm("sh"),
        }]
        .into(),
        start_ns: 81_230_000_000,
        end_ns,
        status: 7 << 8,
        ..Ended::fixture(pid, "worker", argv, "/usr/bin/dash")
    };
    if !full {
        return e;
    }
    let other = ContainerKey {
        runtime: Runtime::Docker,
        id: "f".repeat(64),
        generation: 0,
    };
    e.adopted_from = Some(99);
    e.status = 9;
    e.signal = Some(Box::new(signal(9, 128, end_ns - 10, None)));
    e.oom = Some(Box::new(OomFacts::fixture(end_ns - 20)));
    e.with_namespace = Some(Box::new(InitEnd {
        pid: 41_170,
        comm: comm("sh"),
        status: Some(15),
        cause: Some(signal(15, 0, end_ns - 30, Some(other.clone()))),
    }));
    e.ignored = vec![signal(15, 0, end_ns - 1_000_000_000, Some(other))].into();
    e.exec = Some(Box::new(ExecOf::setuid_fixture()));
    e.exe_hash = Some(ExeHash::known(Ok([0xab; 32])));
    e.session = Some(Arc::new(Session {
        root: pid,
        via: Via::KubectlExec,
        by: vec![
            HostLink {
                pid: 50,
                comm: comm("runc"),
            },
            HostLink {
                pid: 10,
                comm: comm("containerd-shim"),
            },
        ]
        .into(),
        at_ns: end_ns - 2_000_000_000,
        seen: Seen::Startup,
    }));
    e
}

/// The container names a line can carry: a pod's, a bare container's, one without state.
fn names() -> [Names; 3] {
    [
        Names {
            container_id: "c0ffee".repeat(10),
            container_name: Some("web".into()),
            runtime: "containerd".into(),
            pod: Some("web-0".into()),
            pod_namespace: Some("shop".into()),
            pod_uid: Some("6f1c-\u{e9}".into()),
        },
        Names {
            container_id: "4026532771".into(),
            runtime: "bare".into(),
            ..Names::default()
        },
        Names {
            container_id: "x".into(),
            runtime: "cri".into(),
            pod_uid: Some("u".into()),
            ..Names::default()
        },
    ]
}

fn written(item: &Item, names: Option<&Names>) -> Vec<u8> {
    let mut line = Vec::new();
    assert!(crate::export::line::write(&mut line, item, names));
    assert_eq!(line.pop(), Some(b'\n'));
    line
}

/// Every kind of item: events (with and without hash, session and names) and history
/// entries, with the container names of each.
fn items() -> Vec<(Item, Option<Names>)> {
    let mut out = Vec::new();
    let names = names();
    for (i, ev) in events().into_iter().enumerate() {
        let hash = matches!(ev, Event::Exec(_)).then(|| ExeHash::known(Ok([i as u8; 32])));
        out.push((Item::Event(ev, None, None, None), None));
        let session = (i % 2 == 0)
            .then(|| ended(900, b"sh", true).session)
            .flatten();
        out.push((
            Item::Event(ev, None, hash, session),
            Some(names[i % 3].clone()),
        ));
    }
    let key = ContainerKey {
        runtime: Runtime::Bare,
        id: "4026532771".into(),
        generation: 7,
    };
    let origin = Arc::new(Origin::bare_for_tests(&key));
    let huge: Vec<u8> = (0..3000)
        .flat_map(|i| format!("arg-{i}\0").into_bytes())
        .collect();
    let mut no_hash = ended(9, b"sh\0-c\0exit 7\0", true);
    no_hash.exe_hash = Some(ExeHash::known(Err(Reason::TooLarge)));
    let mut pid1 = ended(1, b"sleep\0inf\0", false);
    pid1.chain = Box::new([]);
    for (i, e) in [
        ended(9, b"sh\0-c\0exit 7\0", false),
        ended(9, b"sh\0-c\0exit 7\0", true),
        no_hash,
        pid1,
        ended(10, &huge, true),
    ]
    .into_iter()
    .enumerate()
    {
        let item = Item::History(Box::new((key.clone(), e)), origin.clone());
        out.push((item, Some(names[i % 3].clone())));
    }
    out
}

/// The old path's request for `lines` (None for a line it made no record of).
#[inline(never)]
fn reference_request(res: &Resource, lines: &[Vec<u8>]) -> (Vec<u8>, usize) {
    let records: Vec<LogRecord> = lines
        .iter()
        .filter_map(|l| reference::log_record(l, OFFSET, NOW))
        .collect();
    let n = records.len();
    (reference::request(res, records).encode_to_vec(), n)
}
