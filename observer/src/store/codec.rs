//! The encoding of one stored history entry, schema version 1: a `postcard` (serde, varint
//! integers, length-prefixed byte strings) of the compact records below. Compact on
//! purpose — about a hundred bytes for a shell command: comm and argv are stored as the
//! bytes in use (not the fixed arrays), times as the end (boot clock of the entry's boot)
//! and signed offsets from it, containers (the entry's own and its signals' senders') as
//! numbers into the store's container table.
//!
//! The bytes come back from a file on disk: decoding any bytes returns an error or an
//! entry, never panics, and allocates no more than the bytes it was given can describe.
//! A change to these records is a new schema version (db.rs `VERSION`) with a migration.

use observer_common::COMM_LEN;
use serde::{Deserialize, Serialize};

use crate::{
    containers::ContainerKey,
    table::{
        history::{Ended, InitEnd, Link},
        signal_facts::{OomFacts, Sender, SignalFact},
    },
};

/// One stored entry: its container and boot (numbers into the store's tables) and the
/// ended process.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct EntryV1 {
    pub(super) container: u32,
    pub(super) boot: u32,
    /// When it ended, on its boot's clock (ns).
    pub(super) end_ns: u64,
    rec: Rec,
}

/// The head of an entry's bytes (container, boot, end), read without the rest.
pub(super) fn head(bytes: &[u8]) -> Option<(u32, u32, u64)> {
    postcard::take_from_bytes::<(u32, u32, u64)>(bytes)
        .ok()
        .map(|(h, _)| h)
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Rec {
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

/// The bytes of `e`, which ended in container number `container` during boot `boot`.
pub(super) fn encode(e: &Ended, container: u32, boot: u32, refs: &mut dyn Refs) -> Vec<u8> {
    let end = e.end_ns;
    let rec = Rec {
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
    };
    let entry = EntryV1 {
        container,
        boot,
        end_ns: end,
        rec,
    };
    postcard::to_allocvec(&entry).unwrap_or_default()
}

/// Decodes stored bytes (any bytes: an error, never a panic).
pub(super) fn decode(bytes: &[u8]) -> Result<EntryV1, postcard::Error> {
    postcard::from_bytes(bytes)
}

impl EntryV1 {
    /// The ended process, with its senders' containers looked up in `refs`.
    pub(super) fn ended(self, refs: &dyn Refs) -> Ended {
        let (r, end) = (self.rec, self.end_ns);
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
            // Schema 1 does not keep the executable's hash.
            exe_hash: None,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::containers::cgroup::Runtime;

    /// Container numbers in a vector (the store keeps them in a table).
    #[derive(Default)]
    pub(crate) struct VecRefs(pub(crate) Vec<ContainerKey>);

    impl Refs for VecRefs {
        fn number(&mut self, key: &ContainerKey) -> u32 {
            match self.0.iter().position(|k| k == key) {
                Some(i) => i as u32,
                None => {
                    self.0.push(key.clone());
                    (self.0.len() - 1) as u32
                }
            }
        }
        fn key(&self, n: u32) -> Option<ContainerKey> {
            self.0.get(n as usize).cloned()
        }
    }

    pub(crate) fn comm(s: &str) -> [u8; COMM_LEN] {
        comm_array(s.as_bytes())
    }

    pub(crate) fn key(id: &str) -> ContainerKey {
        ContainerKey {
            runtime: Runtime::Docker,
            id: id.into(),
        }
    }

    fn signal(sig: u32, at_ns: u64, from: Option<ContainerKey>) -> SignalFact {
        SignalFact {
            sig,
            result: 1,
            code: 0,
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

    /// An entry with every part filled in: a SIGKILL after an ignored SIGTERM, an OOM kill,
    /// death with the pid namespace.
    pub(crate) fn full(pid: u32, end_ns: u64) -> Ended {
        Ended {
            pid,
            ns_pid: 7,
            comm: comm("worker"),
            argv: b"sh\0-c\0sleep 1\0".to_vec().into(),
            exe: "/bin/busybox".into(),
            chain: vec![Link {
                pid: 100,
                ns_pid: 1,
                comm: comm("sh"),
            }]
            .into(),
            adopted_from: Some(99),
            start_ns: end_ns - 5_000_000_000,
            end_ns,
            status: 9,
            signal: Some(Box::new(signal(9, end_ns - 10, Some(key("other"))))),
            oom: Some(Box::new(OomFacts {
                at_ns: end_ns - 20,
                total_vm_kb: 1 << 20,
                anon_rss_kb: Some(1000),
                file_rss_kb: None,
                shmem_rss_kb: Some(0),
                oom_score_adj: Some(-1000),
                trigger_pid: 8,
                trigger_comm: comm("alloc"),
                memory_limit_bytes: Some(64 << 20),
                memory_bytes: None,
            })),
            with_namespace: Some(Box::new(InitEnd {
                pid: 100,
                comm: comm("sh"),
                status: Some(15),
                cause: Some(signal(15, end_ns - 30, None)),
            })),
            ignored: vec![signal(15, end_ns - 1_000_000_000, None)].into(),
            exe_hash: None,
        }
    }

    #[test]
    fn an_entry_comes_back_as_it_went_in_with_its_signals_oom_and_senders_containers() {
        let mut refs = VecRefs::default();
        let e = full(1234, 9_000_000_000_000);
        let bytes = encode(&e, 3, 2, &mut refs);
        let back = decode(&bytes).unwrap();
        assert_eq!((back.container, back.boot), (3, 2));
        assert_eq!(head(&bytes), Some((3, 2, e.end_ns)));
        assert_eq!(back.ended(&refs), e);
    }

    #[test]
    fn a_plain_shell_command_takes_well_under_200_bytes() {
        let mut e = full(123_456, 86_400_000_000_000);
        (e.signal, e.oom, e.with_namespace, e.ignored, e.status) = (None, None, None, [].into(), 0);
        let n = encode(&e, 12, 1, &mut VecRefs::default()).len();
        assert!(n < 100, "{n} bytes");
    }

    /// A cheap fuzz of the decoder: random bytes, and every truncation and bit flip of a
    /// real entry, decode to an error or an entry, never a panic.
    #[test]
    fn decoding_any_bytes_never_panics() {
        let mut refs = VecRefs::default();
        let good = encode(&full(1, 1 << 40), 0, 0, &mut refs);
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 300) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Ok(e) = decode(&bytes) {
                let _ = e.ended(&refs);
            }
        }
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        for bit in 0..good.len() * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            if let Ok(e) = decode(&b) {
                let _ = e.ended(&refs);
            }
        }
        // A huge length prefix does not allocate what it claims.
        let mut huge = vec![0u8, 0, 1, 0, 0];
        huge.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode(&huge).is_err());
    }
}
