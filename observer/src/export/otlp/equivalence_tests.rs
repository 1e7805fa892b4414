//! The direct encoder (`record.rs` into `wire::Request`) against the builder it replaced
//! (`reference.rs`: serde_json tree → `LogRecord` → prost): on lines of every kind, made by
//! `line::write` from real items and written by hand for the odd cases, the request bytes
//! are the same bytes, and decode (`ExportLogsServiceRequest::decode`) to equal requests.
//! The timing harness of docs/export.md's per-record figure is `equivalence_tests/cost.rs`.

mod cost;
mod typed;

use std::sync::Arc;

use observer_common::*;
use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest, logs::v1::LogRecord, resource::v1::Resource,
};
use prost::Message;

use super::{record, reference, resource, Batch};
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

/// Lines as `line::write` makes them: every event, with and without a container, and
/// history entries with and without exec, credentials, hash and session, one with a huge
/// argv.
fn item_lines() -> Vec<Vec<u8>> {
    items()
        .iter()
        .map(|(item, names)| written(item, names.as_ref()))
        .collect()
}

/// The items of `item_lines`, with the container names of each.
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

/// Lines written by hand: shapes `line::write` does not make today but a line may have
/// (odd numbers, escapes, duplicate keys, deep nesting, long values), and non-lines.
fn odd_lines() -> Vec<Vec<u8>> {
    let long = "é".repeat(9000);
    let mut v: Vec<Vec<u8>> = [
        "{}",
        r#"{"type":5,"time_ns":3}"#,
        r#"{"type":"exit","signal":9,"time_ns":18446744073709551615}"#,
        r#"{"type":"","time_ns":-5}"#,
        r#"{"schema":"x","argv":"not a list","failed":true,"end_time_ns":1.5}"#,
        r#"{"argv":[1,"a",null,{"k":"v","a":[]},["x"],"b",""],"failed":"true"}"#,
        r#"{"argv":[]}"#,
        r#"{"parents":{"pid":1}}"#,
        r#"{"parents":[{"pid":null}]}"#,
        r#"{"parents":[{"pid":1,"pid":2}],"pid":3,"pid":4}"#,
        r#"{"parents":[[1],{"pid":5}]}"#,
        r#"{"k\u00e9y":1,"kéy":2,"a\"b":3,"a\\b":{"c\nd":"\u0000\b\f\r\t\/"}}"#,
        r#"{"observer_aaaa":1,"observer_aaab":2,"observer":3,"observe":4,"observer\u0000":5}"#,
        r#"{"a":{"b":{"c":{"d":[{"e":{"f":[[{"g":null}]]}}]}}}}"#,
        r#"{"duration_s":0.1,"x":-0.0,"y":1e308,"z":5e-324,"w":-1.5e-7,"v":2.5E+3}"#,
        r#"{"a":-0,"b":-9223372036854775808,"c":-9223372036854775809,"d":18446744073709551616}"#,
        r#"{"a":9223372036854775807,"b":9223372036854775808,"c":0,"d":1.0}"#,
        r#" { "pid" : 1 , "x" : [ 1 , 2 ] , "y" : { } } "#,
        r#"{"":1,"l":[{"":"","b":[null,true,false,{}]}],"e":{"":null,"f":{"":0}}}"#,
        r#"{"type":"signal","signal":"SIGTERM","signo":15,"code":-6,"group":false,"result":"ignored","sender":{"pid":1,"comm":"x"},"killed_by":{"signal":"a"}}"#,
        r#"{"type":"oom","time_ns":1,"pid":2,"tid":2,"ns":{"pid":null,"mnt":4},"victim_pid":2,"cpu":0,"read_error":true,"entered":{"via":"x"}}"#,
        r#"{"killed_by":{"signal":"SIGKILL","signo":9,"sender":{"origin":"kernel"}},"signal":"SIGKILL","entered":{"by":[{"pid":1}],"root":false},"oom":{"time_ns":4}}"#,
        r#"{"type":"exec","emoji":"😀\ud83d\ude00","bidi":"\u202e","argv":["a b","c\td","\"q\""]}"#,
        // Not JSON objects, or not JSON: no record either way.
        "not json",
        "[1,2]",
        "\"str\"",
        "null",
        r#"{"a":1}garbage"#,
        r#"{"a":"\ud800"}"#,
        r#"{"a":"\udc00\ud800"}"#,
        r#"{"a":1e400}"#,
        r#"{"a":01}"#,
        r#"{"a":"b
c"}"#,
        "",
    ]
    .iter()
    .map(|l| l.as_bytes().to_vec())
    .collect();
    v.push(
        format!(
            r#"{{"comm":"{long}","nested":{{"s":"{long}"}},"list":["{long}",{{"k":"{long}"}}]}}"#
        )
        .into_bytes(),
    );
    v.push(b"{\"a\":\"\xff\"}".to_vec());
    v.push(b"{\"a\":\"\xc3\"}".to_vec());
    v
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

fn direct_request(batch: &mut Batch, lines: &[Vec<u8>]) -> Vec<u8> {
    direct_request_in(batch, lines).to_vec()
}

/// The direct path's request for `lines`, in the batch's buffer (as the sink has it).
#[inline(never)]
fn direct_request_in<'b>(batch: &'b mut Batch, lines: &[Vec<u8>]) -> &'b [u8] {
    batch.request.clear();
    for l in lines {
        let s = &mut batch.scratch;
        batch
            .request
            .push(|out| record::write(out, s, l, OFFSET, NOW));
    }
    batch.request.finish()
}

#[test]
fn every_line_makes_the_records_bytes_the_tree_builder_made() {
    let res = resource();
    let mut batch = Batch::new(&res);
    let lines: Vec<Vec<u8>> = item_lines().into_iter().chain(odd_lines()).collect();
    assert!(lines.iter().any(|l| l.len() > 20_000), "a 3-byte length");
    for line in &lines {
        let shown = String::from_utf8_lossy(&line[..line.len().min(300)]).into_owned();
        let (want, n) = reference_request(&res, std::slice::from_ref(line));
        let got = direct_request(&mut batch, std::slice::from_ref(line));
        assert_eq!(
            batch.request.len(),
            n,
            "a record, or none, as before: {shown}"
        );
        let decoded = ExportLogsServiceRequest::decode(&got[..]).expect("protobuf");
        assert_eq!(
            decoded,
            ExportLogsServiceRequest::decode(&want[..]).unwrap(),
            "{shown}"
        );
        assert!(got == want, "the same bytes: {shown}");
    }
    // All in one request, with what records reuse carried from line to line.
    let (want, n) = reference_request(&res, &lines);
    assert_eq!(direct_request(&mut batch, &lines), want);
    assert_eq!(
        (batch.request.len(), n),
        (lines.len() - 13, lines.len() - 13)
    );
}

/// Damaged lines, from every line above: each cut short (every prefix of a short line, a
/// few hundred of a long one) and bytes overwritten, inserted or removed — the JSON
/// syntax bytes, escapes, control bytes, bytes of broken UTF-8 — by a fixed generator, so
/// a failure comes back. The values of a line come from the processes watched: whatever
/// the bytes, the direct path neither panics nor differs from the tree builder — it takes
/// exactly the lines serde_json takes, and makes the same bytes of them.
#[test]
fn damaged_lines_make_the_tree_builders_bytes_or_no_record_as_it_did() {
    const BYTES: &[u8] = b"\"\\{}[],:0-+.eE9u tnf\x00\x1f\x7f\xc3\xa9\xed\xf0\xff";
    let res = resource();
    let mut batch = Batch::new(&res);
    let lines: Vec<Vec<u8>> = item_lines().into_iter().chain(odd_lines()).collect();
    let mut damaged = Vec::new();
    for l in &lines {
        let step = (l.len() / 300).max(1);
        damaged.extend((0..l.len()).step_by(step).map(|n| l[..n].to_vec()));
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rand = |n: usize| {
        // xorshift64: a fixed sequence, no dependency.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for _ in 0..20_000 {
        let mut l = lines[rand(lines.len())].clone();
        for _ in 0..=rand(3) {
            let (at, b) = (rand(l.len() + 1), BYTES[rand(BYTES.len())]);
            match rand(3) {
                0 if at < l.len() => l[at] = b,
                1 if at < l.len() => {
                    l.remove(at);
                }
                _ => l.insert(at, b),
            }
        }
        damaged.push(l);
    }
    let mut taken = 0;
    for line in &damaged {
        let (want, n) = reference_request(&res, std::slice::from_ref(line));
        let got = direct_request(&mut batch, std::slice::from_ref(line));
        let shown = String::from_utf8_lossy(&line[..line.len().min(300)]).into_owned();
        assert_eq!(
            batch.request.len(),
            n,
            "a record, or none, as before: {shown}"
        );
        assert!(got == want, "the same bytes: {shown}");
        taken += n;
    }
    // Both outcomes were exercised, and the lines in one batch (scratch carried over).
    assert!(
        taken > damaged.len() / 20 && taken < damaged.len(),
        "{taken} taken"
    );
    let (want, n) = reference_request(&res, &damaged[..2000]);
    assert_eq!(direct_request(&mut batch, &damaged[..2000]), want);
    assert_eq!(batch.request.len(), n);
}
