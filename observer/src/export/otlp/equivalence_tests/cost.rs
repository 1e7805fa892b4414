//! The timing harness of docs/export.md's per-record figure and the profilers' workloads,
//! on the equivalence tests' lines (ignored by default: measurements, not tests).

use std::hint::black_box;

use super::{
    super::{client::gzip, json::Tape, BATCH},
    *,
};

/// `cargo test --release --lib -- --ignored --nocapture otlp_record_cost`: µs per record
/// (thread CPU time) of the old and the direct path on the same lines (a storm's mix —
/// fork, exec, exit, free and a history line per process — and every line of the
/// equivalence tests), in batches of 2,048 as the sink sends them; then gzip of the
/// direct batch, and `line::write` of the storm's items.
#[test]
#[ignore = "a measurement, not a test: run it in release with --ignored --nocapture"]
fn otlp_record_cost() {
    let res = resource();
    let mut batch = Batch::new(&res);
    let all: Vec<Vec<u8>> = item_lines().into_iter().chain(odd_lines()).collect();
    let storm = storm_items();
    let storm_lines: Vec<Vec<u8>> = storm.iter().map(|(i, n)| written(i, n.as_ref())).collect();
    for (what, lines) in [("storm mix", &storm_lines), ("all lines", &all)] {
        let lines: Vec<Vec<u8>> = lines.iter().cycle().take(BATCH).cloned().collect();
        let old = best(|| black_box(reference_request(&res, &lines).0.len()));
        let new = best(|| black_box(direct_request_in(&mut batch, &lines).len()));
        let body = direct_request(&mut batch, &lines);
        let gz = best(|| black_box(gzip(&body).len()));
        let mut tape = Tape::default();
        let parse = best(|| {
            for l in &lines {
                black_box(
                    std::str::from_utf8(l)
                        .ok()
                        .and_then(|t| tape.parse(t))
                        .is_some(),
                );
            }
        });
        let per = |t: f64| t * 1e6 / lines.len() as f64;
        println!(
            "{what}: of which reading the line (json.rs) {:.2} µs/record",
            per(parse)
        );
        println!(
            "{what}: old {:.2} µs/record, direct {:.2} µs/record ({:.1}x); gzip level 1 \
             {:.2} µs/record, {} → {} bytes/record",
            per(old),
            per(new),
            old / new,
            per(gz),
            body.len() / lines.len(),
            gzip(&body).len() / lines.len()
        );
    }
    let mut line = Vec::new();
    let write = best(|| {
        for (item, names) in storm.iter().cycle().take(BATCH) {
            line.clear();
            black_box(crate::export::line::write(&mut line, item, names.as_ref()));
        }
    });
    println!(
        "line::write (storm mix): {:.2} µs/line",
        write * 1e6 / BATCH as f64
    );
}

/// The direct path alone, on 100 batches of the storm's mix (204,800 records), for a
/// profiler or an instruction count, which the machine's load does not change:
/// `valgrind --tool=callgrind --toggle-collect='*direct_request_in*' <test binary>
/// --ignored --exact export::otlp::equivalence_tests::otlp_direct_profile`.
#[test]
#[ignore = "a profile's workload, not a test"]
fn otlp_direct_profile() {
    let mut batch = Batch::new(&resource());
    for lines in profile_batches() {
        black_box(direct_request_in(&mut batch, &lines).len());
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
