//! The timing harness of docs/performance.md's table figure: the storm benchmark's events
//! (a shell spawning `/bin/true`: fork, exec, exit, free) applied to a table, with no
//! ring buffer, wake-ups or I/O (ignored by default: a measurement, not a test).

use std::hint::black_box;

use super::{exec, exit, fork, free, table, task, HOST_NS, TICK};
use crate::events::Event;

/// The events of `n` spawns of `/bin/true` by the shell `sh` (pid 100), PIDs cycling
/// through 1,000..31,000 as a busy host's do.
fn storm(n: u32) -> Vec<Event> {
    let mut out = Vec::with_capacity(4 * n as usize);
    for i in 0..n {
        let pid = 1000 + i % 30_000;
        let start = (10 + u64::from(i)) * TICK;
        let t = task(100, &[pid], HOST_NS, start, "sh");
        out.push(fork(pid, t));
        let mut te = t;
        te.comm[..4].copy_from_slice(b"true");
        out.push(exec(pid, te, "/usr/bin/true", &["/bin/true"]));
        out.push(exit(pid, pid, te, 0, true, start + 500_000));
        out.push(free(pid, te));
    }
    out
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    // SAFETY: clock_gettime fills the timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// `cargo test --release --lib -- --ignored --nocapture table_event_cost`: ns per event
/// (thread CPU time, best of 5) of applying the storm's events, on a table that holds the
/// shell and 10,000 other processes. Under callgrind (`--toggle-collect='*apply_storm*'`)
/// it counts instructions, which the machine's load does not change.
#[test]
#[ignore = "a measurement, not a test: run it in release with --ignored --nocapture"]
fn table_event_cost() {
    let events = storm(20_000);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let mut tb = table();
        tb.apply(&fork(100, task(1, &[100], HOST_NS, TICK, "sh")));
        for pid in 40_000..50_000 {
            tb.apply(&fork(pid, task(1, &[pid], HOST_NS, 2 * TICK, "sleep")));
        }
        let t0 = thread_cpu();
        apply_storm(&mut tb, &events);
        best = best.min(thread_cpu() - t0);
        assert_eq!(tb.len(), 10_001, "every spawn ended and was reaped");
    }
    println!(
        "table: {:.0} ns per event ({} events, best of 5); a Process is {} bytes",
        best * 1e9 / events.len() as f64,
        events.len(),
        std::mem::size_of::<crate::table::Process>()
    );
}

#[inline(never)]
fn apply_storm(tb: &mut crate::table::Table, events: &[Event]) {
    for ev in events {
        tb.apply(black_box(ev));
        black_box(tb.take_ended());
    }
}

/// Resident KiB of this process (VmRSS).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `cargo test --release --lib -- --ignored --nocapture table_memory_at_50k`: what a table
/// seeded with the scale benchmark's node (981 containers of a shell and 49 `sleep`s, one
/// of 1,000; each container its own namespaces; 51,095 processes) adds to the resident
/// size, and the process map's share of it by its bucket count.
#[test]
#[ignore = "a measurement, not a test: run it in release with --ignored --nocapture"]
fn table_memory_at_50k() {
    use super::scanned;
    let mut scans = Vec::with_capacity(51_095);
    let mut pid = 1000;
    for c in 0..981u32 {
        let n = if c == 0 { 1000 } else { 50 };
        let (pidns, shell) = (4_026_600_000 + c, pid);
        for i in 0..n {
            let mut s = scanned(
                pid,
                if i == 0 { 1 } else { shell },
                TICK,
                "/",
                &[pid, i + 1],
                pidns,
                'S',
            );
            s.ns[observer_common::NS_MNT] = pidns + 1_000_000;
            s.cmdline = if i == 0 {
                b"sh\0-c\0loop\0".to_vec()
            } else {
                b"sleep\x0036000\0".to_vec()
            };
            scans.push(s);
            pid += 1;
        }
    }
    let before = rss_kib();
    let mut tb = table();
    tb.seed(&scans, 0);
    let after = rss_kib();
    let buckets = (tb.len() * 8 / 7).next_power_of_two();
    let entry = std::mem::size_of::<(u32, crate::table::Process)>();
    println!(
        "table of {} processes: +{:.1} MB resident; the process map {} buckets × {} bytes = {:.1} MB",
        tb.len(),
        (after - before) as f64 / 1024.0,
        buckets,
        entry,
        (buckets * (entry + 1)) as f64 / 1048576.0
    );
    black_box(&tb);
}
