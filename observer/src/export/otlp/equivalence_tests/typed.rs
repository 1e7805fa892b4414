//! The typed encoder (`typed.rs`, what the sink sends) against the tree builder it replaced
//! (`reference.rs`): for every item of the equivalence tests — exec with a hash, exit with
//! a signal, OOM, history entries with and without their parent, a redacted argv — the
//! request is the same bytes, so no attribute is lost, renamed or changed; and for every
//! shape serde's data model has (what a view may grow), the record is the tree builder's
//! record of its JSON.

use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use serde::Serialize;

use super::{
    super::{
        schema::Kind,
        typed::{self, Head, Records},
    },
    *,
};
use crate::{events::redact::Redactor, export::line};

/// Each item's line and its typed request, made as the sink makes them (one pass).
fn typed_request(batch: &mut Batch, items: &[(Item, Option<Names>)]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let (mut buf, mut ends, mut recs) = (Vec::new(), Vec::new(), Records::default());
    for (item, names) in items {
        assert!(line::write_with(
            &mut buf,
            item,
            names.as_ref(),
            Some(&mut recs),
            std::time::Instant::now(),
        ));
        ends.push(buf.len());
    }
    let mut lines = Vec::new();
    batch.request.clear();
    for (i, &end) in ends.iter().enumerate() {
        let start = i.checked_sub(1).map_or(0, |p| ends[p]);
        let line = &buf[start..end];
        lines.push(line.strip_suffix(b"\n").unwrap().to_vec());
        batch.push(line, recs.get(i).expect("a record"), OFFSET, NOW);
    }
    (lines, batch.request.finish().to_vec())
}

/// The items, and an exec whose secret `--redact-args` masked before export.
fn all_items() -> Vec<(Item, Option<Names>)> {
    let mut v = items();
    let mut ev = events()[0];
    Redactor::new("password=.*").unwrap().event(&mut ev);
    v.push((Item::Event(ev, None, None, None), Some(names()[0].clone())));
    v
}

#[test]
fn every_item_makes_the_bytes_the_tree_builder_made() {
    let res = resource();
    let mut batch = Batch::new(&res);
    for item in all_items() {
        let (lines, got) = typed_request(&mut batch, std::slice::from_ref(&item));
        let shown = String::from_utf8_lossy(&lines[0][..lines[0].len().min(300)]).into_owned();
        assert!(
            got == reference_request(&res, &lines).0,
            "the tree builder's bytes: {shown}"
        );
    }
    // All in one request, the encoder's buffers carried from item to item.
    let (lines, got) = typed_request(&mut batch, &all_items());
    assert_eq!(got, reference_request(&res, &lines).0);
}

/// The attributes of the request's records by key (a record each).
fn attributes(request: &[u8]) -> Vec<Vec<(String, String)>> {
    let req = ExportLogsServiceRequest::decode(request).unwrap();
    req.resource_logs[0].scope_logs[0]
        .log_records
        .iter()
        .map(|r| {
            r.attributes
                .iter()
                .map(|kv| (kv.key.clone(), format!("{:?}", kv.value)))
                .collect()
        })
        .collect()
}

#[test]
fn the_attributes_that_matter_are_there_and_a_secret_is_not() {
    let mut batch = Batch::new(&resource());
    let (lines, got) = typed_request(&mut batch, &all_items());
    let records = attributes(&got);
    let has = |i: usize, key: &str, value: &str| {
        records[i]
            .iter()
            .any(|(k, v)| k == key && v.contains(value))
    };
    let line = |i: usize| String::from_utf8_lossy(&lines[i]).into_owned();
    // items(): per event, without then with names; events() order.
    assert!(
        has(3, "process.executable.hash.sha256", "01010101"),
        "{}",
        line(3)
    );
    assert!(has(1, "container.id", "c0ffee") && has(1, "k8s.pod.name", "web-0"));
    assert!(has(
        1,
        "process.command_line",
        "/bin/true --password=hunter2"
    ));
    assert!(
        has(9, "observer.signal.number", "IntValue(9)"),
        "{}",
        line(9)
    );
    assert!(has(21, "observer.oom.total_vm_kb", "IntValue(1048576)"));
    assert!(has(
        23,
        "observer.oom.memory_limit_bytes",
        "IntValue(67108864)"
    ));
    let history = 24;
    assert!(has(history, "process.parent_pid", "IntValue(41170)"));
    assert!(has(history, "observer.schema", "observer.history/v2"));
    assert!(has(
        history + 1,
        "observer.signal.sender.comm",
        "containerd-shim"
    ));
    assert!(has(history + 1, "observer.exec.via", "kubectl exec"));
    assert!(
        !records[history + 3]
            .iter()
            .any(|(k, _)| k == "process.parent_pid"),
        "a container's PID 1 has no parent in it"
    );
    let redacted = records.len() - 1;
    assert!(has(redacted, "process.command_line", "/bin/true --***"));
    assert!(
        !records[redacted].iter().any(|(_, v)| v.contains("hunter2")),
        "the secret is not in the redacted record"
    );
}

/// Every shape of serde's data model, as a view might grow one.
#[derive(Serialize)]
struct Shapes {
    unit: (),
    none: Option<u8>,
    #[expect(clippy::option_option, reason = "a nested option is one of the shapes")]
    some: Option<Option<i8>>,
    big: u64,
    neg: i64,
    small: f32,
    nan: f64,
    inf: f32,
    ch: char,
    #[serde(with = "serde_bytes_like")]
    bytes: Vec<u8>,
    tuple: (u8, &'static str, ()),
    unit_variant: E,
    newtype_variant: E,
    list_variant: Vec<E>,
    map: std::collections::BTreeMap<i32, Vec<Option<f64>>>,
    dup: Dup,
    argv: Vec<&'static str>,
    nested: Nested,
    empty: Nested0,
    unit_struct: U,
    newtype: N,
}

#[derive(Serialize)]
enum E {
    Plain,
    Wrapped(Nested),
}

#[derive(Serialize)]
struct Nested {
    z: [u16; 2],
    argv: &'static str,
    a: Option<Nested0>,
    #[serde(flatten)]
    more: std::collections::BTreeMap<&'static str, bool>,
}

#[derive(Serialize)]
struct Nested0 {}

#[derive(Serialize)]
struct U;

#[derive(Serialize)]
struct N(&'static str);

/// A map with the same key twice (serde_json keeps the last).
struct Dup;

impl Serialize for Dup {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("k", &1)?;
        m.serialize_entry("", &[Some(true), None])?;
        m.serialize_entry("k", &"last")?;
        m.end()
    }
}

mod serde_bytes_like {
    pub(super) fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }
}

fn nested() -> Nested {
    Nested {
        z: [7, 65535],
        argv: "not top-level",
        a: Some(Nested0 {}),
        more: [("flag", true), ("a", false)].into_iter().collect(),
    }
}

#[test]
fn every_shape_of_a_view_is_written_as_the_tree_builder_wrote_its_json() {
    let res = resource();
    let mut batch = Batch::new(&res);
    let shapes = Shapes {
        unit: (),
        none: None,
        some: Some(Some(-3)),
        big: u64::MAX,
        neg: i64::MIN,
        small: 0.1,
        nan: f64::NAN,
        inf: f32::INFINITY,
        ch: 'é',
        bytes: vec![0, 255],
        tuple: (1, "two", ()),
        unit_variant: E::Plain,
        newtype_variant: E::Wrapped(nested()),
        list_variant: vec![E::Plain, E::Wrapped(nested())],
        map: [(-1, vec![Some(1.5), None]), (10, vec![])]
            .into_iter()
            .collect(),
        dup: Dup,
        argv: vec!["a b", "", "c"],
        nested: nested(),
        empty: Nested0 {},
        unit_struct: U,
        newtype: N("n"),
    };
    for kind in [Kind::History, Kind::Signal, Kind::Oom, Kind::Exit] {
        let event_type = match kind {
            Kind::History => None,
            Kind::Signal => Some("signal"),
            Kind::Oom => Some("oom"),
            _ => Some("exit"),
        };
        let typed_shapes = Typed {
            t: event_type,
            s: &shapes,
        };
        let line = serde_json::to_vec(&typed_shapes).unwrap();
        let mut enc = typed::Encoder::default();
        enc.object(kind, |o| o.flatten(&typed_shapes)).unwrap();
        let head = Head {
            time_ns: 0,
            warn: kind == Kind::Oom,
            event_type,
        };
        batch.request.clear();
        batch.request.push(|out| {
            typed::write(out, &line, (enc.attributes(), head), 0, NOW);
            true
        });
        let got = batch.request.finish().to_vec();
        let record = reference::log_record(&line, 0, NOW).expect("a JSON object");
        let want = reference::request(&res, vec![record]).encode_to_vec();
        assert!(got == want, "{}", String::from_utf8_lossy(&line));
    }
}

/// `Shapes` with an event's `type` first, as a line has it.
#[derive(Serialize)]
struct Typed<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    t: Option<&'static str>,
    #[serde(flatten)]
    s: &'a Shapes,
}

/// A fixed pseudo-random sequence (xorshift64), so that a failure comes back.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number at a limit half the time (0, 1, the largest, the largest signed, ...).
    fn num(&mut self) -> u64 {
        const EDGES: [u64; 7] = [0, 1, 127, 128, u64::MAX, i64::MAX as u64, 1 << 63];
        match self.next() % 2 {
            0 => EDGES[(self.next() % 7) as usize],
            _ => self.next() >> (self.next() % 64),
        }
    }

    /// `n` bytes that are anything: NULs, control bytes, quotes, broken UTF-8.
    fn fill(&mut self, b: &mut [u8]) {
        for x in b {
            *x = self.next() as u8;
        }
    }

    fn text(&mut self, n: usize) -> String {
        let mut b = vec![0; n];
        self.fill(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    }
}

/// Every event kind with what a process controls (its name, argv, executable path,
/// cgroup path) as any bytes and its numbers at their limits; history entries of such
/// processes; container names of any text and length (a runtime's state file).
fn hostile_items(r: &mut Rng) -> Vec<(Item, Option<Names>)> {
    let mut out = Vec::new();
    for mut ev in events() {
        let task = |t: &mut TaskInfo, r: &mut Rng| {
            r.fill(&mut t.comm);
            (t.start_time_ns, t.cgroup_id) = (r.num(), r.num());
            (t.uid, t.gid, t.ppid, t.flags) = (r.num() as u32, r.num() as u32, 7, r.num() as u32);
        };
        match &mut ev {
            Event::Exec(e) => {
                task(&mut e.task, r);
                r.fill(&mut e.filename);
                r.fill(&mut e.args);
                e.args_len = (r.num() % (ARGS_LEN as u64 + 2)) as u32;
                (e.cap_eff, e.exe_size, e.exe_ino) = (r.num(), r.num(), r.num());
                (e.euid, e.suid, e.secureexec) = (r.num() as u32, r.num() as u32, 1);
                e.exe_mtime_sec = r.num() as i64;
            }
            Event::Exit(e) => {
                task(&mut e.task, r);
                e.exit_code = r.num() as u32;
            }
            Event::CgroupAttach(e) => {
                task(&mut e.task, r);
                r.fill(&mut e.path);
                e.dst_cgroup_id = r.num();
            }
            Event::Signal(e) => {
                task(&mut e.task, r);
                r.fill(&mut e.sender_comm);
                (e.sig, e.code, e.result) = (r.num() as u32, r.num() as i32, r.num() as u32);
            }
            Event::Oom(e) => {
                (e.total_vm_kb, e.anon_rss_kb, e.memcg_max_bytes) = (r.num(), r.num(), r.num());
                e.oom_score_adj = r.num() as i32;
            }
            _ => {}
        }
        let hash = ExeHash::known(Ok([r.next() as u8; 32]));
        out.push((
            Item::Event(ev, None, Some(hash), None),
            Some(hostile_names(r)),
        ));
    }
    let key = ContainerKey {
        runtime: Runtime::Docker,
        id: r.text(64),
        generation: 0,
    };
    let origin = Arc::new(Origin::bare_for_tests(&key));
    for full in [false, true] {
        let mut argv = vec![0; (r.next() % 5000) as usize];
        r.fill(&mut argv);
        let mut e = ended(r.num() as u32, &argv, full);
        r.fill(&mut e.comm);
        e.exe = r.text(4096).into();
        e.status = r.num() as u32;
        e.chain = (0..17)
            .map(|_| {
                let mut comm = [0; COMM_LEN];
                r.fill(&mut comm);
                Link {
                    pid: r.num() as u32,
                    ns_pid: 2,
                    comm,
                }
            })
            .collect();
        let item = Item::History(Box::new((key.clone(), e)), origin.clone());
        out.push((item, Some(hostile_names(r))));
    }
    out
}

fn hostile_names(r: &mut Rng) -> Names {
    // Now and then a name of 100 KB: lengths of three varint bytes.
    let mut len = || match r.next() % 8 {
        0 => 100_000,
        n => (r.next() % (n * 40)) as usize,
    };
    let (a, b, c, d) = (len(), len(), len(), len());
    Names {
        container_id: r.text(a),
        container_name: Some(r.text(b)),
        runtime: "containerd".into(),
        pod: Some(r.text(c)),
        pod_namespace: (d % 2 == 0).then(|| r.text(d)),
        pod_uid: Some(String::from("\0\u{2028}\u{feff}\u{10ffff}")),
    }
}

/// What others control, as hostile as it gets: the typed request is the tree builder's to
/// the byte (so valid protobuf, every string valid UTF-8 — prost's decoder checks), its
/// body is the JSON line, and making it never panics.
#[test]
fn hostile_names_argv_paths_and_numbers_make_the_tree_builders_bytes() {
    let res = resource();
    let mut batch = Batch::new(&res);
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..40 {
        let items = hostile_items(&mut r);
        let (lines, got) = typed_request(&mut batch, &items);
        let (want, n) = reference_request(&res, &lines);
        assert_eq!(n, items.len(), "round {round}: a record of every item");
        let decoded = ExportLogsServiceRequest::decode(&got[..]).expect("valid protobuf");
        let records = &decoded.resource_logs[0].scope_logs[0].log_records;
        for (rec, line) in records.iter().zip(&lines) {
            let body = rec.body.as_ref().and_then(|b| b.value.as_ref());
            assert!(
                matches!(body, Some(Any::StringValue(s)) if s.as_bytes() == &line[..]),
                "round {round}: the body is the line"
            );
        }
        assert!(got == want, "round {round}: the tree builder's bytes");
    }
}

/// A batch with an item of megabytes (names a runtime's state file holds) makes its
/// record, but the encoder this thread keeps for the next batch gives the megabytes back.
#[test]
fn a_huge_item_is_encoded_but_not_kept_in_the_threads_encoder() {
    let big = Names {
        container_name: Some("n".repeat(6 << 20)),
        pod: Some("\u{1}".repeat(3 << 20)),
        ..names()[0].clone()
    };
    let ev = events()[0];
    std::thread::spawn(move || {
        let mut line = Vec::new();
        let mut recs = Records::for_items(1);
        assert!(line::write_with(
            &mut line,
            &Item::Event(ev, None, None, None),
            Some(&big),
            Some(&mut recs),
            std::time::Instant::now(),
        ));
        recs.made();
        assert!(recs.get(0).is_some_and(|(a, _)| a.len() > 9 << 20));
        let kept = typed::kept_capacity();
        assert!(kept > 0 && kept <= 6 << 20, "{kept} bytes kept");
    })
    .join()
    .unwrap();
}

/// The fuzz target's way in makes what a sink makes: the line, and a request of its one
/// record whose body is that line.
#[test]
fn the_fuzz_targets_entry_makes_the_line_and_its_request() {
    let mut r = Rng(7);
    for ev in events() {
        let texts = [r.text(70), r.text(300), r.text(3), String::new()];
        let names = [&*texts[0], &*texts[1], &*texts[2], &*texts[3]];
        let (line, request) = super::super::line_and_request(&ev, names).expect("a line");
        let (lines, want) = typed_request(
            &mut Batch::new(&resource()),
            &[(
                Item::Event(ev, None, None, None),
                Some(Names {
                    container_id: texts[0].clone(),
                    container_name: Some(texts[1].clone()),
                    runtime: "containerd".into(),
                    pod: Some(texts[2].clone()),
                    pod_namespace: Some(texts[3].clone()),
                    pod_uid: None,
                }),
            )],
        );
        assert_eq!(line, lines[0]);
        let (got, want) = (
            ExportLogsServiceRequest::decode(&request[..]).unwrap(),
            ExportLogsServiceRequest::decode(&want[..]).unwrap(),
        );
        let attrs = |q: &ExportLogsServiceRequest| {
            q.resource_logs[0].scope_logs[0].log_records[0]
                .attributes
                .clone()
        };
        assert_eq!(attrs(&got), attrs(&want));
    }
}
