//! `scan.rs`'s tests: stat parsing against what fuzzing found, the status ids, the scan.

use super::*;

/// A reconciliation's scan has every namespace /proc shows, not the pid one alone: what
/// it adds after lost events keeps them (the torture run of 2026-12-06: reconciled
/// processes without further events had mnt, net, … unknown for good).
#[test]
fn a_full_scans_process_has_every_namespace_proc_shows() {
    let me = std::process::id();
    let s = scan_all(false, true)
        .into_iter()
        .find(|s| s.pid == me)
        .expect("listed");
    for (i, name) in NS_NAMES.iter().enumerate() {
        assert_eq!(s.ns[i], ns_inode(me, name), "{name}");
    }
    assert!(s.ns.iter().filter(|n| **n != 0).count() >= 7, "{:?}", s.ns);
}

#[test]
fn stat_parsing_survives_what_fuzzing_found_and_hostile_comms() {
    // Inputs that once panicked procfs' parser (fuzz/regressions/proc_files).
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/regressions/proc_files"
    );
    for f in std::fs::read_dir(dir).unwrap().flatten() {
        let _ = parse_stat(&std::fs::read(f.path()).unwrap());
    }
    for bad in [
        &b"1 (x)"[..],
        b"(x) S 1",
        b"1 (x)\xc3\xa9 S",
        b"\xc3\xa9(x) S 1",
        b"1 )x( S",
    ] {
        assert!(parse_stat(bad).is_none(), "{bad:?}");
    }
    // status of a process named with invalid UTF-8 (procfs' reader refused it).
    let status = b"Name:\tsl\xff\xfeep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t7\n\
Uid:\t1000\t0\t0\t0\nGid:\t1001\t0\t0\t0\nNSpid:\t7\t2\t1\n";
    let ids = super::parse_status_ids(status).expect("parses");
    assert_eq!((ids.nspid, ids.ruid, ids.rgid), (vec![7, 2, 1], 1000, 1001));
    assert!(super::parse_status_ids(b"Name:\tx\nUid:\tnope\n").is_none());
    assert!(super::parse_status_ids(b"").is_none());
    // A comm with parentheses, spaces and invalid UTF-8, as a process can name itself.
    let mut line = b"42 (a) (b\xff) c) S 1 42 42 0 -1 4194560".to_vec();
    line.extend_from_slice(&b" 0".repeat(45));
    line.push(b'\n');
    let s = parse_stat(&line).expect("a kernel-shaped line parses");
    assert_eq!((s.pid, s.ppid, s.state), (42, 1, 'S'));
    assert!(s.comm.starts_with("a) (b"), "{}", s.comm);
}

/// The in-place parser of the live fields answers what procfs' parser answers.
#[test]
fn live_fields_parse_as_procfs_parses_them() {
    use super::{live_from, Live};
    let via_procfs = |b: &[u8]| {
        parse_stat(b).map(|s| Live {
            state: s.state,
            comm: s.comm,
            ppid: s.ppid as u32,
            start_ticks: s.starttime,
            cpu_ticks: s.utime + s.stime,
            rss_pages: s.rss,
            threads: s.num_threads as u32,
        })
    };
    let me = std::fs::read("/proc/self/stat").unwrap();
    assert!(live_from(&me).is_some());
    let mut hostile = b"42 (a) (b\xff) c) Z 1 42 42 0 -1 4194560".to_vec();
    for i in 10..52 {
        hostile.extend_from_slice(format!(" {}", i * 7).as_bytes());
    }
    hostile.push(b'\n');
    let mut inputs = vec![me, hostile];
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/regressions/proc_files"
    );
    for f in std::fs::read_dir(dir).unwrap().flatten() {
        inputs.push(std::fs::read(f.path()).unwrap());
    }
    for pid in std::fs::read_dir("/proc").unwrap().flatten().take(50) {
        if let Ok(b) = std::fs::read(pid.path().join("stat")) {
            inputs.push(b);
        }
    }
    for b in &inputs {
        if let Some(want) = via_procfs(b) {
            assert_eq!(live_from(b), Some(want), "{:?}", String::from_utf8_lossy(b));
        }
    }
    for bad in [&b"1 (x)"[..], b"(x) S 1", b"1 )x( S", b"1 (x) S"] {
        assert_eq!(live_from(bad), None, "{bad:?}");
    }
}

#[test]
fn a_zombie_exists_but_is_not_alive() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while super::alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Exited, not yet reaped: it holds its pid.
    assert!(!super::alive(pid), "a zombie is not alive");
    assert!(super::exists(pid), "a zombie still holds its pid");
    child.wait().unwrap();
}
