//! The timing harness of docs/export.md's per-record figure and the profilers' workloads,
//! on the equivalence tests' lines (ignored by default: measurements, not tests).

use std::hint::black_box;

use super::{
    super::{client::gzip, typed::Records, BATCH},
    *,
};

/// `cargo test --release --lib -- --ignored --nocapture otlp_record_cost`: µs per record
/// (thread CPU time) of the tree builder (`reference.rs`, from the lines) and of the typed
/// path (the line and its record's attributes in one pass, then the record) on a storm's
/// mix — fork, exec, exit, free and a history line per process — in batches of 2,048 as
/// the sink sends them; then gzip of the batch, and `line::write` of the storm's items.
#[test]
#[ignore = "a measurement, not a test: run it in release with --ignored --nocapture"]
fn otlp_record_cost() {
    let res = resource();
    let mut batch = Batch::new(&res);
    let items = storm_batch();
    let lines = storm_lines_batch(&storm_items());
    let old = best(|| black_box(reference_request(&res, &lines).0.len()));
    let typed = best(|| black_box(typed_batch(&mut batch, &items)));
    let with = best(|| black_box(typed_lines(&items).0.len()));
    typed_batch(&mut batch, &items);
    let body = batch.request.finish().to_vec();
    let gz = best(|| black_box(gzip(&body).len()));
    let mut line = Vec::new();
    let write = best(|| {
        for (item, names) in &items {
            line.clear();
            black_box(crate::export::line::write(&mut line, item, names.as_ref()));
        }
    });
    let per = |t: f64| t * 1e6 / BATCH as f64;
    println!(
        "storm mix: tree builder {:.2} µs/record; typed: the line and its record's \
         attributes {:.2} µs/item, then the record {:.2} µs/record (line and record {:.2} µs, \
         {:.1}x less than line::write {:.2} + the tree builder); gzip level 1 {:.2} µs/record, \
         {} → {} bytes/record",
        per(old),
        per(with),
        per(typed - with),
        per(typed),
        (write + old) / typed,
        per(write),
        per(gz),
        body.len() / BATCH,
        gzip(&body).len() / BATCH
    );
}

/// BATCH items of the storm's mix.
fn storm_batch() -> Vec<(Item, Option<Names>)> {
    std::iter::repeat_with(storm_items)
        .flatten()
        .take(BATCH)
        .collect()
}

fn storm_lines_batch(storm: &[(Item, Option<Names>)]) -> Vec<Vec<u8>> {
    storm
        .iter()
        .map(|(i, n)| written(i, n.as_ref()))
        .cycle()
        .take(BATCH)
        .collect()
}

/// Lines and their records' attributes for `items`, as a batch's first sink makes them.
fn typed_lines(items: &[(Item, Option<Names>)]) -> (Vec<u8>, Vec<usize>, Records) {
    let mut buf = Vec::with_capacity(items.len() * 640);
    let (mut ends, mut recs) = (Vec::new(), Records::for_items(items.len()));
    for (item, names) in items {
        crate::export::line::write_with(
            &mut buf,
            item,
            names.as_ref(),
            Some(&mut recs),
            std::time::Instant::now(),
        );
        ends.push(buf.len());
    }
    recs.made();
    (buf, ends, recs)
}

/// The typed path whole: lines and attributes, then the request (as the sink has it).
#[inline(never)]
fn typed_batch(batch: &mut Batch, items: &[(Item, Option<Names>)]) -> usize {
    let (buf, ends, recs) = typed_lines(items);
    batch.request.clear();
    let mut start = 0;
    for (i, &end) in ends.iter().enumerate() {
        if let Some(part) = recs.get(i) {
            batch.push(&buf[start..end], part, OFFSET, NOW);
        }
        start = end;
    }
    batch.request.finish().len()
}

/// The storm's items in batches (204,800 in all), each made into lines and a request by
/// the typed path, for a profiler or an instruction count, which the machine's load does
/// not change: `valgrind --tool=callgrind --toggle-collect='*typed_batch*' … --ignored
/// --exact export::otlp::equivalence_tests::cost::otlp_typed_profile`.
#[test]
#[ignore = "a profile's workload, not a test"]
fn otlp_typed_profile() {
    let mut batch = Batch::new(&resource());
    let items = storm_batch();
    for _ in 0..100 {
        black_box(typed_batch(&mut batch, &items));
    }
}

/// The same records by the old path (`--toggle-collect='*reference_request*'`).
#[test]
#[ignore = "a profile's workload, not a test"]
fn otlp_reference_profile() {
    let res = resource();
    for lines in profile_batches() {
        black_box(reference_request(&res, &lines).0.len());
    }
}

fn profile_batches() -> impl Iterator<Item = Vec<Vec<u8>>> {
    let lines: Vec<Vec<u8>> = storm_items()
        .iter()
        .map(|(i, n)| written(i, n.as_ref()))
        .collect();
    let lines: Vec<Vec<u8>> = lines.iter().cycle().take(BATCH).cloned().collect();
    std::iter::repeat_n(lines, 100)
}

/// The items of one storm process in a container: fork, exec, exit, free, its history.
fn storm_items() -> Vec<(Item, Option<Names>)> {
    let ev = events();
    let [_, bare, _] = names();
    let key = ContainerKey {
        runtime: Runtime::Bare,
        id: "4026532771".into(),
        generation: 0,
    };
    let origin = Arc::new(Origin::bare_for_tests(&key));
    let pick = |i: usize| (Item::Event(ev[i], None, None, None), Some(bare.clone()));
    vec![
        pick(2),
        pick(0),
        pick(3),
        pick(5),
        (
            Item::History(
                Box::new((key.clone(), ended(41_210, b"/bin/true\0", false))),
                origin,
            ),
            Some(bare.clone()),
        ),
    ]
}

/// The fastest of a few runs of `f`, in seconds of this thread's CPU time: the least
/// disturbed by other work on a shared machine (time waiting for a core is not counted).
fn best<T>(mut f: impl FnMut() -> T) -> f64 {
    (0..25)
        .map(|_| {
            let t = thread_cpu();
            black_box(f());
            thread_cpu() - t
        })
        .fold(f64::INFINITY, f64::min)
}

fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to write.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0);
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
