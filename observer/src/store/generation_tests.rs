//! Bare containers are known by their pid namespace's inode, which the kernel reuses
//! (review item 4): a namespace made after another's init ended, or in another boot, is a
//! new container in the store — its own entries and name — and a query of the inode
//! answers for the newest.

use super::{
    codec::tests::{comm, full},
    db,
    find::Found,
    open_store,
    read::containers_for_test,
    tests::{Dir, DAY_NS},
    write, Gens, Store,
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

/// A PID 1 of INODE's namespace `init` that exited with `code` at `end` after 10 s.
fn init_exit(init: u32, code: u32, end: u64) -> Ended {
    let mut e = ended(init, init, 1, end - 10_000_000_000, end);
    (e.status, e.signal) = (code << 8, None);
    e
}

/// Three generations of INODE's bare container, each named by its OCI runtime's id and
/// each stored by an agent of its own (restarted in between), the newest last: `then` in
/// the boot before (its init 41 exited 1), `first` in this boot (its child 500 exited 4,
/// then its init 499 exited 2) and `second` after it (its init 700 exited 3).
pub(crate) fn three_generations(dir: &std::path::Path) -> std::sync::Arc<Store> {
    let s = Store::new(super::StoreConfig {
        dir: dir.to_path_buf(),
        limits: super::Limits {
            disk_max: 64 << 20,
            retention_ns: 7 * DAY_NS,
        },
    });
    let file = db::open(dir, &s).unwrap();
    let off = (unix_now_ns() - DAY_NS) as i64;
    let (b, offsets) = db::register_boot(&file, &[5u8; 16], off).unwrap();
    let mut o = write::Open::load(file, b, offsets).unwrap();
    commit_named(&s, &mut o, "then", &[init_exit(41, 1, 20_000_000_000)]);
    drop(o);
    let t = boot_now_ns() - 100_000_000_000;
    let sec = 1_000_000_000;
    let mut child = ended(499, 500, 2, t, t + 5 * sec);
    (child.status, child.signal) = (4 << 8, None);
    let mut o = open_store(&s).unwrap();
    commit_named(
        &s,
        &mut o,
        "first",
        &[child, init_exit(499, 2, t + 10 * sec)],
    );
    drop(o);
    let mut o = open_store(&s).unwrap();
    commit_named(&s, &mut o, "second", &[init_exit(700, 3, t + 30 * sec)]);
    s
}

/// Issue #26: a name names the generation that bore it — its entries, its name and its
/// boots — and the inode names them all (the newest answers). Before, `find` answered the
/// inode's key alone, and its entries were the newest generation's whichever name was asked.
#[test]
fn a_name_finds_the_generation_that_bore_it_and_the_inode_finds_them_all() {
    let dir = Dir::new("genname");
    let s = three_generations(&dir.0);
    let pids = |f: &Found, boot| -> Vec<(u32, i32)> {
        s.entries_of(&f.key, &f.gens, boot)
            .iter()
            .map(|e| (e.ended.pid, e.boot))
            .collect()
    };
    let one = |q: &str| {
        let mut f = s.find(q);
        assert_eq!(f.len(), 1, "{q}: {f:?}");
        f.remove(0)
    };
    let first = one("first");
    assert_eq!(first.key, bare());
    assert_eq!(first.name.as_deref(), Some("first"));
    assert_eq!(pids(&first, None), [(500, 0), (499, 0)]);
    assert_eq!(
        pids(&first, Some(-1)),
        [],
        "not the boot before's generation"
    );
    assert_eq!(s.boots_of(&first.key, &first.gens), [0]);
    assert_eq!(s.name_of(&first.key, &first.gens).as_deref(), Some("first"));
    let then = one("then");
    assert_eq!(pids(&then, None), [(41, -1)]);
    assert_eq!(pids(&then, Some(-1)), [(41, -1)]);
    assert_eq!(pids(&then, Some(0)), []);
    assert_eq!(s.boots_of(&then.key, &then.gens), [-1]);
    assert_eq!(pids(&one("second"), None), [(700, 0)]);
    // The inode: every generation, the newest answering (in a boot, its newest there).
    let inode = one(INODE);
    assert_eq!(
        (inode.gens, inode.name.as_deref()),
        (Gens::All, Some("second"))
    );
    let all = one(INODE);
    assert_eq!(pids(&all, None), [(700, 0)]);
    assert_eq!(pids(&all, Some(-1)), [(41, -1)]);
    assert_eq!(s.boots_of(&all.key, &all.gens), [0, -1]);
    // A name no generation bore, and one a generation's entries' senders' container has.
    assert!(s.find("third").is_empty());
}

/// Names are chosen by whoever starts the container: one that is another generation's
/// inode, or that two generations bore, never merges them nor panics — the inode is
/// several containers (ambiguous: the API lists them), and a name two generations bore
/// answers with the newest of them (the boot tells the others apart).
#[test]
fn hostile_names_of_generations_answer_no_other_generation() {
    let dir = Dir::new("genhostile");
    let s = three_generations(&dir.0);
    let mut o = open_store(&s).unwrap();
    let t = boot_now_ns() - 50_000_000_000;
    // A fourth namespace with the inode, named like the first one.
    commit_named(&s, &mut o, "first", &[init_exit(800, 5, t)]);
    let f = s.find("first");
    assert_eq!(f.len(), 1, "{f:?}");
    let got: Vec<u32> = s
        .entries_of(&f[0].key, &f[0].gens, None)
        .iter()
        .map(|e| e.ended.pid)
        .collect();
    assert_eq!(got, [800], "the newest that bore it");
    let got: Vec<u32> = s
        .entries_of(&f[0].key, &f[0].gens, Some(0))
        .iter()
        .map(|e| e.ended.pid)
        .collect();
    assert_eq!(got, [800]);
    assert_eq!(s.boots_of(&f[0].key, &f[0].gens), [0]);
    // Another inode's container named like this inode: two containers, none merged.
    let other = ContainerKey::new(Runtime::Bare, "4026532999");
    let mut meta = |_: &ContainerKey, _| {
        Some(Meta {
            name: Some(INODE.into()),
            ..Meta::default()
        })
    };
    let e = init_exit(900, 6, t);
    o.commit(
        &[(other.clone(), e)],
        &mut meta,
        &s.cfg.limits,
        write::Now::read(),
    )
    .unwrap();
    let mut f = s.find(INODE);
    f.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!((&f[0].key, &f[0].gens), (&bare(), &Gens::All));
    assert_eq!(f[1].key, other);
    assert!(
        matches!(&f[1].gens, Gens::Named(v) if v.len() == 1),
        "{f:?}"
    );
    let got: Vec<u32> = s
        .entries_of(&f[1].key, &f[1].gens, None)
        .iter()
        .map(|e| e.ended.pid)
        .collect();
    assert_eq!(got, [900]);
}

/// A pod only the store knows answers with its members' generations: a bare container
/// whose inode a later pod's container reused is the earlier pod's generation, not the
/// newest (`why <pod>` of the earlier pod named the later pod's processes).
#[test]
fn a_stored_pods_bare_member_is_the_generation_it_had() {
    let dir = Dir::new("genpod");
    let s = super::tests::store(&dir, 64 << 20);
    let mut o = open_store(&s).unwrap();
    let t = boot_now_ns() - 100_000_000_000;
    let sec = 1_000_000_000;
    for (pod, init, end) in [("pod-a", 499, t + 10 * sec), ("pod-b", 700, t + 30 * sec)] {
        let mut meta = |_: &ContainerKey, _| {
            Some(Meta {
                name: Some(format!("{pod}-app")),
                pod: Some(pod.into()),
                pod_namespace: Some("default".into()),
                ..Meta::default()
            })
        };
        let b = [(bare(), init_exit(init, 0, end))];
        o.commit(&b, &mut meta, &s.cfg.limits, write::Now::read())
            .unwrap();
    }
    for (pod, want) in [("default/pod-a", 499), ("pod-b", 700)] {
        let p = s.pod(pod).unwrap();
        assert_eq!(p.members.len(), 1, "{p:?}");
        let m = &p.members[0];
        let got: Vec<u32> = s
            .entries_of(&m.key, &m.gens, None)
            .iter()
            .map(|e| e.ended.pid)
            .collect();
        assert_eq!(got, [want], "{pod}");
    }
}
