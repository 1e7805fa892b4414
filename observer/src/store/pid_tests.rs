//! Finding ended processes by pid in the store: this boot's only, the latest first (pids
//! are reused), with the container each was in.

use super::{
    codec::tests::{full, key},
    db, open_store,
    tests::{commit, store, Dir, DAY_NS},
    write,
};
use crate::host::clock::{boot_now_ns, unix_now_ns};

#[test]
fn a_pid_finds_this_boots_processes_that_had_it_the_latest_first() {
    let dir = Dir::new("pid");
    let s = store(&dir, 64 << 20);
    // An earlier boot's agent stored pid 42 too: another process, another boot.
    let file = db::open(&dir.0, &s).unwrap();
    let off = (unix_now_ns() - DAY_NS) as i64;
    let (b, offsets) = db::register_boot(&file, &[9u8; 16], off).unwrap();
    let mut o = write::Open::load(file, b, offsets).unwrap();
    commit(&s, &mut o, &[(key("old"), full(42, 5_000_000_000))]);
    drop(o);
    let mut o = open_store(&s).expect("opens in this boot");
    let now = boot_now_ns();
    commit(
        &s,
        &mut o,
        &[
            (key("abcdef0123"), full(42, now - 3_000_000_000)),
            (key("other"), full(43, now - 2_000_000_000)),
        ],
    );
    commit(
        &s,
        &mut o,
        &[(key("second"), full(42, now - 1_000_000_000))],
    );
    let got = s.by_pid(42, 10);
    let seen: Vec<(&str, Option<&str>, u64)> = got
        .iter()
        .map(|m| (m.key.id.as_str(), m.name.as_deref(), m.stored.ended.end_ns))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("second", None, now - 1_000_000_000),
            ("abcdef0123", Some("web"), now - 3_000_000_000),
        ],
        "this boot's two, the latest first; not the earlier boot's"
    );
    assert!(got
        .iter()
        .all(|m| m.stored.boot == 0 && m.stored.ended.pid == 42));
    assert_eq!(s.by_pid(42, 1).len(), 1, "at most max");
    assert!(s.by_pid(7, 10).is_empty());
}
