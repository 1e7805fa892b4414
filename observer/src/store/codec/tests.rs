use super::*;
use crate::{containers::cgroup::Runtime, table::exe_hash::ExeHash};

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
    ContainerKey::new(Runtime::Docker, id)
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
        ns_pid: 7,
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
        oom: Some(Box::new(OomFacts::fixture(end_ns - 20))),
        with_namespace: Some(Box::new(InitEnd {
            pid: 100,
            comm: comm("sh"),
            status: Some(15),
            cause: Some(signal(15, end_ns - 30, None)),
        })),
        ignored: vec![signal(15, end_ns - 1_000_000_000, None)].into(),
        ..Ended::fixture(pid, "worker", b"sh\0-c\0sleep 1\0", "/bin/busybox")
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

/// `e` with its exec's credentials and executable hash (or why it has none).
pub(crate) fn with_exec(mut e: Ended, hash: Result<Digest, Reason>) -> Ended {
    e.exec = Some(Box::new(ExecOf::setuid_fixture()));
    e.exe_hash = Some(ExeHash::known(hash));
    e
}

/// The hash an entry has now (an `ExeHash` compares by identity).
fn hash_of(e: &Ended) -> Option<Result<Digest, Reason>> {
    e.exe_hash.as_ref().map(ExeHash::now)
}

/// (The view of an entry is a function of the entry: one read back equal to the one in
/// memory shows the same `cred`, `privileges`, `exe_id` and `exe_sha256`.)
#[test]
fn credentials_a_setuid_change_exe_id_and_hash_or_its_reason_come_back() {
    let mut refs = VecRefs::default();
    for hash in [Ok([0xab; 32]), Err(Reason::TooLarge), Err(Reason::Pending)] {
        let e = with_exec(full(1234, 9_000_000_000_000), hash);
        let mut back = decode(&encode(&e, 3, 2, &mut refs)).unwrap().ended(&refs);
        assert_eq!(hash_of(&back), Some(hash));
        let x = back.exec.as_deref().expect("its exec");
        assert_eq!(
            (x.uid, x.cred.euid, x.cred.suid, x.cred.raised),
            (1000, 0, 0, true)
        );
        assert_eq!(x.cred.exe.ino, 1_234_567);
        back.exe_hash.clone_from(&e.exe_hash);
        assert_eq!(back, e);
    }
}

#[test]
fn a_schema_1_entry_becomes_the_same_entry_without_exec_and_hash() {
    let mut refs = VecRefs::default();
    let e = full(1234, 9_000_000_000_000);
    let old = v1::encode(&with_exec(e.clone(), Ok([1; 32])), 3, 2, &mut refs);
    assert!(
        decode(&old).is_err(),
        "schema 1 bytes are not read as schema 2"
    );
    let new = v1::decode(&old).unwrap().upgrade();
    assert_eq!((new.container, new.boot), (3, 2));
    assert_eq!(head(&new.bytes()), head(&old));
    assert_eq!(decode(&new.bytes()).unwrap().ended(&refs), e);
}

/// `e` as the root of a `docker exec` session that came in 2 s before it ended.
fn in_session(mut e: Ended) -> Ended {
    use crate::table::sessions::{HostLink, Session, Via};
    e.session = Some(std::sync::Arc::new(Session {
        root: e.pid,
        via: Via::DockerExec,
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
        at_ns: e.end_ns - 2_000_000_000,
        seen: crate::table::sessions::Seen::Entry,
    }));
    e
}

#[test]
fn an_exec_session_comes_back_and_an_older_reader_reads_the_entry_without_it() {
    let mut refs = VecRefs::default();
    let e = in_session(with_exec(full(1234, 9_000_000_000_000), Ok([3; 32])));
    let bytes = encode(&e, 3, 2, &mut refs);
    let back = decode(&bytes).unwrap().ended(&refs);
    assert_eq!(back.session, e.session);
    // An agent that does not know the trailing record (postcard leaves it alone).
    let old: Entry = postcard::from_bytes(&bytes).unwrap();
    assert!(old.session.is_none());
    let mut without = e.clone();
    without.session = None;
    let mut read = old.ended(&refs);
    read.exe_hash.clone_from(&without.exe_hash);
    assert_eq!(read, without);
    // A damaged session record loses the session, not the entry.
    let plain = encode(&without, 3, 2, &mut refs).len();
    let cut = decode(&bytes[..plain + 2]).unwrap();
    assert!(cut.session.is_none());
}

#[test]
fn a_session_seen_at_start_up_says_so_after_a_round_trip_and_older_readers_keep_the_rest() {
    use crate::table::sessions::Seen;
    let mut refs = VecRefs::default();
    let e = in_session(full(1234, 9_000_000_000_000));
    let entry_bytes = encode(&e, 3, 2, &mut refs);
    let mut s = (**e.session.as_ref().unwrap()).clone();
    s.seen = Seen::Startup;
    let mut startup = e.clone();
    startup.session = Some(std::sync::Arc::new(s));
    let bytes = encode(&startup, 3, 2, &mut refs);
    assert_eq!(bytes.len(), entry_bytes.len() + 1, "one byte more");
    assert_eq!(
        decode(&bytes).unwrap().ended(&refs).session,
        startup.session
    );
    // A reader of the session record alone (the agent before this one) has it as seen
    // when it came in; entries of that agent read as such.
    let (head, _) = postcard::take_from_bytes::<Entry>(&bytes).unwrap();
    let plain = postcard::to_allocvec(&head).unwrap().len();
    let older: SessionRec = postcard::from_bytes(&bytes[plain..]).unwrap();
    assert_eq!(older.seen, 0);
    assert_eq!(
        decode(&entry_bytes).unwrap().ended(&refs).session,
        e.session
    );
}

#[test]
fn a_plain_shell_command_takes_well_under_200_bytes() {
    let mut e = full(123_456, 86_400_000_000_000);
    (e.signal, e.oom, e.with_namespace, e.ignored, e.status) = (None, None, None, [].into(), 0);
    let bare = encode(&e, 12, 1, &mut VecRefs::default()).len();
    assert!(bare < 100, "{bare} bytes without exec and hash");
    // With its exec's credentials, executable identity and SHA-256 (32 bytes).
    let e = with_exec(e, Ok([0xff; 32]));
    let n = encode(&e, 12, 1, &mut VecRefs::default()).len();
    eprintln!("{bare} bytes bare, {n} with its exec and hash");
    assert!(n < 170, "{n} bytes");
}

/// A cheap fuzz of the decoder: random bytes, and every truncation and bit flip of a
/// real entry, decode to an error or an entry, never a panic.
#[test]
fn decoding_any_bytes_never_panics() {
    let mut refs = VecRefs::default();
    let good = encode(&with_exec(full(1, 1 << 40), Ok([7; 32])), 0, 0, &mut refs);
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
