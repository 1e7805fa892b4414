//! The store's properties on real files in a temporary directory: entries survive a
//! reopen, entries of another boot are marked, the bounds evict the oldest first, and an
//! unreadable file is moved aside for a new store.

use std::{path::PathBuf, sync::atomic::Ordering};

pub(crate) use super::codec::tests::full;
use super::{codec::tests::key, db, find::pairs, open_store, write, Limits, Store, StoreConfig};
use crate::{
    containers::{names::Meta, ContainerKey},
    host::clock::{boot_id, boot_now_ns, unix_now_ns},
    table::history::Ended,
};

/// A directory of the test's own, removed when dropped.
pub(super) struct Dir(pub(super) PathBuf);

impl Dir {
    pub(super) fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "observer-store-{name}-{}-{}",
            std::process::id(),
            unix_now_ns() % 1_000_000_000
        ));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) const DAY_NS: u64 = 86_400 * 1_000_000_000;

pub(super) fn store(dir: &Dir, disk_max: u64) -> std::sync::Arc<Store> {
    Store::new(StoreConfig {
        dir: dir.0.clone(),
        limits: Limits {
            disk_max,
            retention_ns: 7 * DAY_NS,
        },
    })
}

/// A store in `dir` holding `before` as an agent of the boot before this one wrote it a day
/// ago, then `now` as this boot's agent did; each container named `ctr-<its id>` (for other
/// modules' tests).
pub(crate) fn two_boots(
    dir: &std::path::Path,
    before: &[(ContainerKey, Ended)],
    now: &[(ContainerKey, Ended)],
) -> std::sync::Arc<Store> {
    let s = Store::new(StoreConfig {
        dir: dir.to_path_buf(),
        limits: Limits {
            disk_max: 64 << 20,
            retention_ns: 7 * DAY_NS,
        },
    });
    let mut meta = |k: &ContainerKey, _| {
        Some(Meta {
            name: Some(format!("ctr-{}", k.id)),
            ..Meta::default()
        })
    };
    let file = db::open(dir, &s).unwrap();
    let then_offset = (unix_now_ns() - DAY_NS - 3_600_000_000_000) as i64;
    let (b, offsets) = db::register_boot(&file, &[7u8; 16], then_offset).unwrap();
    let mut o = write::Open::load(file, b, offsets).unwrap();
    o.commit(before, &mut meta, &s.cfg.limits, write::Now::read())
        .unwrap();
    drop(o);
    let mut o = open_store(&s).unwrap();
    o.commit(now, &mut meta, &s.cfg.limits, write::Now::read())
        .unwrap();
    s
}

fn batch(ctr: &str, pids: std::ops::Range<u32>, end_ns: u64) -> Vec<(ContainerKey, Ended)> {
    pids.map(|p| (key(ctr), full(p, end_ns + u64::from(p))))
        .collect()
}

pub(super) fn commit(
    s: &Store,
    o: &mut write::Open,
    b: &[(ContainerKey, Ended)],
) -> write::Committed {
    let mut meta = |k: &ContainerKey, _| {
        Some(Meta {
            name: (k.id == "abcdef0123").then(|| "web".to_string()),
            ..Meta::default()
        })
    };
    o.commit(b, &mut meta, &s.cfg.limits, write::Now::read())
        .unwrap()
}

#[test]
fn entries_survive_a_reopen_and_are_found_by_id_prefix_and_name() {
    let dir = Dir::new("reopen");
    let s = store(&dir, 64 << 20);
    let mut o = open_store(&s).expect("a new store opens");
    let now = boot_now_ns();
    let c = commit(&s, &mut o, &batch("abcdef0123", 1..4, now - 1_000_000));
    assert_eq!((c.written, c.evicted), (3, 0));
    drop((o, s));
    let s = store(&dir, 64 << 20);
    let o = open_store(&s).expect("the store opens again");
    assert_eq!(o.entries, 3);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.0.join(db::FILE))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "root's alone");
    for q in ["abcdef0123", "abcd", "web"] {
        assert_eq!(
            pairs(s.find(q)),
            vec![(key("abcdef0123"), Some("web".into()))],
            "{q}"
        );
    }
    assert!(s.find("abc").is_empty(), "a prefix of 3 is too short");
    let got = s.entries(&key("abcdef0123"));
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|e| e.boot == 0));
    assert_eq!(
        got[0].ended,
        full(1, now - 1_000_000 + 1),
        "oldest first, whole"
    );
}

#[test]
fn entries_of_another_boot_are_marked_with_their_boot() {
    let dir = Dir::new("boot");
    let s = store(&dir, 64 << 20);
    // The store as an agent of an earlier boot (another boot id) wrote it, a day ago.
    let other = [7u8; 16];
    assert_ne!(Some(other), boot_id());
    let then_offset = (unix_now_ns() - DAY_NS - 3_600_000_000_000) as i64;
    let file = db::open(&dir.0, &s).unwrap();
    let (b, offsets) = db::register_boot(&file, &other, then_offset).unwrap();
    let mut o = write::Open::load(file, b, offsets).unwrap();
    commit(&s, &mut o, &batch("old", 1..3, 3_600_000_000_000));
    drop(o);
    let o = open_store(&s).expect("opens in this boot");
    assert_eq!(o.boot, b + 1, "this boot is the next one");
    let got = s.entries(&key("old"));
    assert_eq!(got.len(), 2);
    for e in &got {
        assert_eq!(e.boot, -1);
        // Its age, counted on its own boot's clock: a day.
        let age_s = e.now_ns.saturating_sub(e.ended.end_ns) as f64 / 1e9;
        assert!((86_000.0..87_000.0).contains(&age_s), "{age_s}");
    }
}

#[test]
fn the_file_stays_within_its_size_bound_evicting_the_oldest_first() {
    let dir = Dir::new("bound");
    let max = 2 << 20;
    let s = store(&dir, max);
    let mut o = open_store(&s).unwrap();
    let now = boot_now_ns();
    let mut evicted = 0;
    for round in 0..60u32 {
        let b = batch("busy", round * 1000..round * 1000 + 1000, now - DAY_NS);
        evicted += commit(&s, &mut o, &b).evicted;
    }
    let size = std::fs::metadata(dir.0.join(db::FILE)).unwrap().len();
    assert!(size <= max, "{size} bytes on disk, bound {max}");
    assert!(
        evicted > 0 && o.entries > 2_000,
        "{evicted} evicted, {} kept",
        o.entries
    );
    let kept = s.entries(&key("busy"));
    assert_eq!(kept.last().unwrap().ended.pid, 59_999, "the newest stay");
    assert!(kept[0].ended.pid > 1000, "the oldest went first");
    eprintln!(
        "{} entries in {size} bytes: {} bytes an entry on disk",
        o.entries,
        size / o.entries
    );
}

#[test]
fn a_container_that_spawns_without_end_evicts_its_own_history_not_its_neighbours() {
    let dir = Dir::new("fair");
    let s = store(&dir, 2 << 20);
    let mut o = open_store(&s).unwrap();
    let now = boot_now_ns();
    // Quiet containers' few entries are the oldest in the store.
    for q in ["quiet-a", "quiet-b", "quiet-c"] {
        commit(&s, &mut o, &batch(q, 1..21, now - DAY_NS));
    }
    let mut evicted = 0;
    for round in 0..60u32 {
        let b = batch("noisy", round * 1000..round * 1000 + 1000, now - DAY_NS / 2);
        evicted += commit(&s, &mut o, &b).evicted;
    }
    assert!(evicted > 10_000, "the bound was reached: {evicted} evicted");
    for q in ["quiet-a", "quiet-b", "quiet-c"] {
        assert_eq!(s.entries(&key(q)).len(), 20, "{q} keeps its whole history");
    }
    let noisy = s.entries(&key("noisy"));
    assert_eq!(noisy.last().unwrap().ended.pid, 59_999, "its newest stay");
    assert!(noisy[0].ended.pid > 1000, "its oldest went first");
    // Reopened, the per-container accounts are rebuilt from the file: the next flood
    // still evicts only the noisy one.
    drop(o);
    let mut o = open_store(&s).unwrap();
    commit(&s, &mut o, &batch("noisy", 60_000..62_000, now));
    for q in ["quiet-a", "quiet-b", "quiet-c"] {
        assert_eq!(s.entries(&key(q)).len(), 20, "{q} after a reopen");
    }
}

#[test]
fn a_step_of_the_wall_clock_ages_no_entry_of_this_boot() {
    let dir = Dir::new("step");
    let s = store(&dir, 64 << 20);
    let mut o = open_store(&s).unwrap();
    let now = boot_now_ns();
    commit(&s, &mut o, &batch("a", 1..4, now));
    // The node's time is set 30 days ahead after the agent started (a fresh VM, NTP).
    let mut stepped = write::Now::read();
    stepped.unix_ns += 30 * DAY_NS;
    let mut name = |_: &ContainerKey, _| Some(Meta::default());
    let c = o
        .commit(&batch("b", 1..2, now), &mut name, &s.cfg.limits, stepped)
        .unwrap();
    assert_eq!(
        c.evicted, 0,
        "retention counts this boot's entries on its own clock"
    );
    assert_eq!(s.entries(&key("a")).len(), 3);
}

#[test]
fn entries_past_the_retention_are_evicted() {
    let dir = Dir::new("retention");
    let s = store(&dir, 64 << 20);
    let mut o = open_store(&s).unwrap();
    let now = boot_now_ns();
    // Ended 8 days ago on this boot's clock (a clock that far back may be before boot:
    // then the entry is as old as the boot, and the bound is a day).
    let old = now.saturating_sub(8 * DAY_NS);
    commit(&s, &mut o, &batch("a", 1..3, old));
    let c = commit(&s, &mut o, &batch("b", 1..2, now));
    let age = unix_now_ns() - (old as i128 + *o.offsets.get(&o.boot).unwrap() as i128) as u64;
    if age > 7 * DAY_NS {
        assert_eq!(c.evicted, 2);
        assert!(
            s.find("a").is_empty(),
            "a container without entries is forgotten"
        );
    }
    assert_eq!(s.entries(&key("b")).len(), 1);
}

#[test]
fn an_unreadable_file_is_moved_aside_and_a_new_store_started() {
    type Spoil = fn(&Dir, &Store);
    let cases: [(&str, Spoil); 4] = [
        ("garbage", |d, _| {
            std::fs::write(d.0.join(db::FILE), b"not a database at all\n".repeat(300)).unwrap();
        }),
        ("foreign", |d, _| {
            let f = redb::Database::create(d.0.join(db::FILE)).unwrap();
            let w = f.begin_write().unwrap();
            let t: redb::TableDefinition<u32, u32> = redb::TableDefinition::new("theirs");
            w.open_table(t).unwrap().insert(1, 2).unwrap();
            w.commit().unwrap();
        }),
        ("newer", |d, s| {
            let o = open_store(s).unwrap();
            let w = o.db.begin_write().unwrap();
            w.open_table(db::META)
                .unwrap()
                .insert("version", db::VERSION + 1)
                .unwrap();
            w.commit().unwrap();
            drop(o);
            let _ = d;
        }),
        ("truncated", |d, s| {
            let mut o = open_store(s).unwrap();
            commit(s, &mut o, &batch("t", 1..500, boot_now_ns()));
            drop(o);
            let p = d.0.join(db::FILE);
            let len = std::fs::metadata(&p).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            f.set_len(len / 3).unwrap();
        }),
    ];
    for (name, spoil) in cases {
        let dir = Dir::new(name);
        let s = store(&dir, 64 << 20);
        spoil(&dir, &s);
        let before = s.counts.moved_aside.load(Ordering::Relaxed);
        let mut o = open_store(&s).unwrap_or_else(|| panic!("{name}: the store must open"));
        let aside: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
            .collect();
        let moved = s.counts.moved_aside.load(Ordering::Relaxed) - before;
        assert_eq!(aside.len() as u64, moved, "{name}");
        if name != "truncated" {
            assert_eq!(moved, 1, "{name}: moved aside");
        }
        let c = commit(&s, &mut o, &batch("new", 1..2, boot_now_ns()));
        assert_eq!(c.written, 1, "{name}: the new store is written");
    }
}

#[test]
fn a_state_dir_that_cannot_be_created_leaves_the_store_failing_not_stopped() {
    let dir = Dir::new("nodir");
    let file = dir.0.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let s = Store::new(StoreConfig {
        dir: file.join("sub"),
        limits: Limits {
            disk_max: 1 << 20,
            retention_ns: DAY_NS,
        },
    });
    assert!(open_store(&s).is_none());
    let st = s.status();
    assert_eq!((st.state.as_str(), st.errors), ("failing", 1));
}

/// Writes a store of schema 1 in `dir`, as an agent of that schema would have: `batch`'s
/// entries, their containers named `name-<id>`.
fn write_v1(dir: &Dir, s: &Store, batch: &[(ContainerKey, Ended)]) {
    use super::{codec::tests::VecRefs, codec::v1, codec::Refs, migrate::ContainerRecV1};
    let file = db::open(&dir.0, s).unwrap();
    let id = boot_id().unwrap_or_default();
    let offset = (i128::from(unix_now_ns()) - i128::from(boot_now_ns())) as i64;
    let (boot, _) = db::register_boot(&file, &id, offset).unwrap();
    let w = file.begin_write().unwrap();
    {
        let mut entries = w.open_table(db::ENTRIES).unwrap();
        let mut index = w.open_table(db::BY_CONTAINER).unwrap();
        let mut refs = VecRefs::default();
        let mut bytes = 0;
        for (seq, (k, e)) in batch.iter().enumerate() {
            let c = refs.number(k);
            let b = v1::encode(e, c, boot, &mut refs);
            bytes += b.len() as u64 + write::ENTRY_OVERHEAD;
            entries.insert(seq as u64, b.as_slice()).unwrap();
            index.insert((c, seq as u64), ()).unwrap();
        }
        let mut ctrs = w.open_table(db::CONTAINERS).unwrap();
        for (n, k) in refs.0.iter().enumerate() {
            let rec = ContainerRecV1 {
                runtime: k.runtime.as_str().into(),
                id: k.id.clone(),
                name: Some(format!("name-{}", k.id)),
            };
            let rec = postcard::to_allocvec(&rec).unwrap();
            ctrs.insert(n as u32, rec.as_slice()).unwrap();
        }
        let mut meta = w.open_table(db::META).unwrap();
        meta.insert("version", 1).unwrap();
        meta.insert("bytes", bytes).unwrap();
        meta.insert("next_container", refs.0.len() as u64).unwrap();
    }
    w.commit().unwrap();
}

fn version(o: &write::Open) -> Option<u64> {
    use redb::{ReadableDatabase, ReadableTable};
    let r = o.db.begin_read().unwrap();
    let t = r.open_table(db::META).unwrap();
    t.get("version").unwrap().map(|v| v.value())
}

#[test]
fn a_schema_1_file_is_migrated_in_place_and_written_after() {
    use super::codec::tests::with_exec;
    let dir = Dir::new("migrate");
    let s = store(&dir, 64 << 20);
    let now = boot_now_ns();
    let mut old = batch("abcdef0123", 1..4, now - 1_000_000);
    old.extend(batch("fedcba9876", 10..12, now - 500_000));
    write_v1(&dir, &s, &old);
    drop(s);
    let s = store(&dir, 64 << 20);
    let mut o = open_store(&s).expect("a schema 1 file opens");
    assert_eq!(version(&o), Some(2));
    assert_eq!(s.counts.moved_aside.load(Ordering::Relaxed), 0);
    let aside = std::fs::read_dir(&dir.0)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .count();
    assert_eq!(aside, 0, "nothing moved aside");
    assert_eq!(o.entries, 5);
    for ctr in ["abcdef0123", "fedcba9876"] {
        let want: Vec<&Ended> = old
            .iter()
            .filter(|(k, _)| k.id == ctr)
            .map(|e| &e.1)
            .collect();
        let got = s.entries(&key(ctr));
        assert_eq!(got.len(), want.len(), "{ctr}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(&g.ended, w, "{ctr}: as before, exec and hash absent");
        }
        assert_eq!(
            pairs(s.find(&format!("name-{ctr}"))),
            vec![(key(ctr), Some(format!("name-{ctr}")))]
        );
    }
    let new = with_exec(full(99, now), Ok([5; 32]));
    let c = commit(&s, &mut o, &[(key("fedcba9876"), new.clone())]);
    assert_eq!(c.written, 1);
    drop(o);
    let o = open_store(&s).expect("the migrated file opens again");
    assert_eq!((version(&o), o.entries), (Some(2), 6));
    let got = s.entries(&key("fedcba9876"));
    let last = &got.last().unwrap().ended;
    assert_eq!(last.exec, new.exec);
    assert_eq!(last.exe_hash.as_ref().map(|h| h.now()), Some(Ok([5; 32])));
}

#[test]
fn a_containers_pod_is_kept_and_finds_its_containers() {
    let dir = Dir::new("pod");
    let s = store(&dir, 64 << 20);
    let mut o = open_store(&s).unwrap();
    let now = boot_now_ns();
    // pause and app are web-0's; lonely (and the senders' container) are in no pod.
    let mut meta = |k: &ContainerKey, _| {
        let in_pod = k.id == "pause" || k.id == "app";
        Some(Meta {
            name: Some(format!("c-{}", k.id)),
            pod_namespace: in_pod.then(|| "shop".to_string()),
            pod: in_pod.then(|| "web-0".to_string()),
            pod_uid: in_pod.then(|| "0b5c1b7e-uid".to_string()),
            sandbox: k.id == "pause",
            ..Meta::default()
        })
    };
    let mut b = batch("pause", 1..2, now);
    b.extend(batch("app", 2..4, now));
    b.extend(batch("lonely", 4..5, now));
    o.commit(&b, &mut meta, &s.cfg.limits, write::Now::read())
        .unwrap();
    drop(o);
    let _o = open_store(&s).unwrap();
    for q in ["shop/web-0", "web-0", "0b5c1b7e-uid"] {
        let pod = s.pod(q).unwrap_or_else(|| panic!("{q} names the pod"));
        assert_eq!(
            (
                pod.namespace.as_deref(),
                pod.name.as_str(),
                pod.uid.as_deref()
            ),
            (Some("shop"), "web-0", Some("0b5c1b7e-uid"))
        );
        let members: Vec<(&str, bool)> = pod
            .members
            .iter()
            .map(|m| (m.key.id.as_str(), m.sandbox))
            .collect();
        assert_eq!(
            members,
            [("pause", true), ("app", false)],
            "{q}: the sandbox first"
        );
        assert_eq!(pod.members[1].name.as_deref(), Some("c-app"));
    }
    assert!(s.pod("other/web-0").is_none(), "another namespace's pod");
    assert!(s.pod("lonely").is_none(), "a container in no pod");
    assert!(s.find("web-0").is_empty(), "a pod is not a container");
    let recs = super::read::containers_for_test(&s);
    let pause = recs.iter().find(|c| c.id == "pause").unwrap();
    assert_eq!(
        (
            pause.pod_namespace.as_deref(),
            pause.pod.as_deref(),
            pause.sandbox
        ),
        (Some("shop"), Some("web-0"), true)
    );
    assert_eq!(s.entries(&key("app")).len(), 2);
}
