//! Bare containers are known by their pid namespace's inode, which the kernel reuses
//! (review item 4): a namespace made after another's init ended, or in another boot, is a
//! new container in the store — its own entries and name — and a query of the inode
//! answers for the newest.

use super::{
    codec::tests::{comm, full},
    db, open_store,
    read::containers_for_test,
    tests::{Dir, DAY_NS},
    write, Store,
};
use crate::{
    containers::{cgroup::Runtime, names::Meta, ContainerKey},
    host::clock::{boot_now_ns, unix_now_ns},
    table::history::{Ended, Link},
};

const INODE: &str = "4026532300";

fn bare() -> ContainerKey {
    ContainerKey::new(Runtime::Bare, INODE)
}

/// The stored bare containers (the entries' signal senders are stored too).
fn bare_records(s: &Store) -> Vec<super::db::ContainerRec> {
    containers_for_test(s)
        .into_iter()
        .filter(|c| c.runtime == "bare")
        .collect()
}

/// A process of the namespace whose init is `init` (its parents reach it; 0: they do not),
/// `ns_pid` in it, that ran from `start` to `end`.
fn ended(init: u32, pid: u32, ns_pid: u32, start: u64, end: u64) -> Ended {
    let mut e = full(pid, end);
    (e.ns_pid, e.start_ns) = (ns_pid, start);
    e.chain = match (ns_pid, init) {
        (1, _) | (_, 0) => Vec::new(),
        _ => vec![Link {
            pid: init,
            ns_pid: 1,
            comm: comm("init"),
        }],
    }
    .into();
    e
}

fn commit_named(s: &Store, o: &mut write::Open, name: &str, b: &[Ended]) {
    let mut meta = |_: &ContainerKey, _| {
        Some(Meta {
            name: Some(name.to_string()),
            ..Meta::default()
        })
    };
    let b: Vec<_> = b.iter().map(|e| (bare(), e.clone())).collect();
    o.commit(&b, &mut meta, &s.cfg.limits, write::Now::read())
        .unwrap();
}

#[test]
fn a_reused_pid_namespace_inode_is_a_new_container_after_its_init_ended() {
    let dir = Dir::new("gen");
    let s = super::tests::store(&dir, 64 << 20);
    let mut o = open_store(&s).unwrap();
    let t = boot_now_ns() - 100_000_000_000;
    let sec = 1_000_000_000;
    // The first namespace: a child, then its init, ended at t + 10 s.
    commit_named(
        &s,
        &mut o,
        "first",
        &[
            ended(499, 500, 2, t, t + 5 * sec),
            ended(499, 499, 1, t, t + 10 * sec),
        ],
    );
    // A child of the first one reaped late (started before its init ended), then a new
    // namespace with the same inode: its processes started after.
    commit_named(
        &s,
        &mut o,
        "second",
        &[
            ended(499, 501, 3, t + sec, t + 11 * sec),
            ended(700, 700, 1, t + 20 * sec, t + 30 * sec),
        ],
    );
    let got: Vec<u32> = s.entries(&bare()).iter().map(|e| e.ended.pid).collect();
    assert_eq!(got, vec![700], "the newest container's entries only");
    assert_eq!(s.find(INODE).len(), 1, "one answer, not an ambiguity");
    assert_eq!(s.name(&bare()).as_deref(), Some("second"), "named afresh");
    let mut names: Vec<Option<String>> = bare_records(&s).into_iter().map(|c| c.name).collect();
    names.sort();
    assert_eq!(names, vec![Some("first".into()), Some("second".into())]);
    assert_eq!(s.by_pid(501, 5)[0].name.as_deref(), Some("first"));
}

#[test]
fn a_pid_namespace_inode_of_an_earlier_boot_is_another_container() {
    let dir = Dir::new("genboot");
    let s = super::tests::store(&dir, 64 << 20);
    let file = db::open(&dir.0, &s).unwrap();
    let off = (unix_now_ns() - DAY_NS) as i64;
    let (b, offsets) = db::register_boot(&file, &[5u8; 16], off).unwrap();
    let mut o = write::Open::load(file, b, offsets).unwrap();
    commit_named(
        &s,
        &mut o,
        "then",
        &[ended(41, 42, 2, 1_000, 2_000_000_000)],
    );
    drop(o);
    let mut o = open_store(&s).unwrap();
    let now = boot_now_ns();
    commit_named(
        &s,
        &mut o,
        "now",
        &[ended(41, 43, 2, now - 2_000_000_000, now)],
    );
    let got: Vec<(u32, i32)> = s
        .entries(&bare())
        .iter()
        .map(|e| (e.ended.pid, e.boot))
        .collect();
    assert_eq!(got, vec![(43, 0)], "this boot's container only");
    assert_eq!(s.name(&bare()).as_deref(), Some("now"));
    // An agent restarted in this boot writes to this boot's container.
    drop(o);
    let mut o = open_store(&s).unwrap();
    commit_named(
        &s,
        &mut o,
        "later",
        &[ended(41, 44, 2, now - 1_000_000_000, now)],
    );
    assert_eq!(s.entries(&bare()).len(), 2);
    assert_eq!(bare_records(&s).len(), 2);
    // Each boot's generation, by its boot.
    let of = |b| -> Vec<u32> {
        s.entries_in(&bare(), b)
            .iter()
            .map(|e| e.ended.pid)
            .collect()
    };
    assert_eq!((of(0), of(-1), of(-2)), (vec![43, 44], vec![42], vec![]));
    assert_eq!(s.boots(&bare()), [0, -1]);
}

/// Review item 4, after a restart: the writer knew which inits had ended only in its own
/// life, so a namespace made after the restart with the inode of one whose init ended
/// before it was merged into that one. The init's end is in the container's record now.
#[test]
fn a_restarted_agent_knows_which_inits_had_ended() {
    let dir = Dir::new("genrestart");
    let s = super::tests::store(&dir, 64 << 20);
    let mut o = open_store(&s).unwrap();
    let t = boot_now_ns() - 100_000_000_000;
    let sec = 1_000_000_000;
    commit_named(
        &s,
        &mut o,
        "first",
        &[
            ended(499, 500, 2, t, t + 5 * sec),
            ended(499, 499, 1, t, t + 10 * sec),
        ],
    );
    drop(o);
    let mut o = open_store(&s).unwrap();
    // A process entered into a new namespace with the inode (its parents are outside it:
    // only its start tells), then a child of the first one reaped late.
    commit_named(
        &s,
        &mut o,
        "second",
        &[
            ended(0, 800, 5, t + 20 * sec, t + 30 * sec),
            ended(499, 501, 3, t + sec, t + 31 * sec),
        ],
    );
    let got: Vec<u32> = s.entries(&bare()).iter().map(|e| e.ended.pid).collect();
    assert_eq!(got, [800], "the new namespace is a container of its own");
    assert_eq!(s.name(&bare()).as_deref(), Some("second"));
    assert_eq!(s.by_pid(501, 5)[0].name.as_deref(), Some("first"));
    assert_eq!(bare_records(&s).len(), 2);
}

/// A namespace has one init for its life: entries under another init are of another
/// namespace with the inode — also when the first one's init ended while no agent ran
/// (its end was never stored). A process of the first one reaped late stays its.
#[test]
fn an_inode_under_another_init_is_a_new_container_even_if_no_agent_saw_the_first_end() {
    let dir = Dir::new("geninit");
    let s = super::tests::store(&dir, 64 << 20);
    let mut o = open_store(&s).unwrap();
    let t = boot_now_ns() - 100_000_000_000;
    let sec = 1_000_000_000;
    commit_named(&s, &mut o, "first", &[ended(499, 500, 2, t, t + 5 * sec)]);
    drop(o);
    let mut o = open_store(&s).unwrap();
    commit_named(
        &s,
        &mut o,
        "second",
        &[
            ended(700, 701, 2, t + 20 * sec, t + 25 * sec),
            ended(499, 502, 3, t + sec, t + 26 * sec),
            ended(700, 702, 3, t + 21 * sec, t + 27 * sec),
        ],
    );
    let got: Vec<u32> = s.entries(&bare()).iter().map(|e| e.ended.pid).collect();
    assert_eq!(got, [701, 702]);
    assert_eq!(s.by_pid(502, 5)[0].name.as_deref(), Some("first"));
    assert_eq!(bare_records(&s).len(), 2);
}
