//! Stored names follow their containers (review item 4): a `docker rename`, or a name its
//! runtime's state gave only after the first entry was stored, replaces the record's name —
//! the old one still finds it — and a record with the fields added for this reads in an
//! agent that does not know them.

use super::{
    codec::tests::{full, key},
    db::{ContainerRec, RecTail},
    find::pairs,
    open_store,
    records::Look,
    tests::{store, Dir},
    write, Store,
};
use crate::{
    containers::{names::Meta, ContainerKey},
    host::clock::boot_now_ns,
    table::history::Ended,
};

fn named(name: &str) -> Meta {
    Meta {
        name: Some(name.into()),
        ..Meta::default()
    }
}

/// One entry of container `id` (its PID 1's when `init`), named by `meta`.
fn commit_one(
    s: &Store,
    o: &mut write::Open,
    id: &str,
    init: bool,
    meta: &mut dyn FnMut(&ContainerKey, Look) -> Option<Meta>,
) {
    let mut e: Ended = full(if init { 1000 } else { 1001 }, boot_now_ns());
    if init {
        e.ns_pid = 1;
    }
    // Its sender's container would be stored (and named) too.
    e.signal = None;
    o.commit(&[(key(id), e)], meta, &s.cfg.limits, write::Now::read())
        .unwrap();
}

#[test]
fn a_renamed_container_is_stored_with_its_new_name_and_found_by_both() {
    let dir = Dir::new("rename");
    let s = store(&dir, 64 << 20);
    let mut o = open_store(&s).unwrap();
    commit_one(&s, &mut o, "abcdef0123", false, &mut |_, _| {
        Some(named("web"))
    });
    // `docker rename web api`: the name resolver's cache still has the old name until
    // read again; the end of the container's PID 1 reads it again.
    let mut renamed = |_: &ContainerKey, look| match look {
        Look::Now => Some(named("api")),
        Look::Any | Look::Cached => Some(named("web")),
    };
    commit_one(&s, &mut o, "abcdef0123", false, &mut renamed);
    assert_eq!(s.name(&key("abcdef0123")).as_deref(), Some("web"));
    commit_one(&s, &mut o, "abcdef0123", true, &mut renamed);
    drop((o, s));
    // A new agent: its store is what answers for an ended container.
    let s = store(&dir, 64 << 20);
    let mut o = open_store(&s).unwrap();
    let found = vec![(key("abcdef0123"), Some("api".to_string()))];
    assert_eq!(pairs(s.find("api")), found, "its new name");
    // One container (not a bare one's generations): the memory's history of it is its own.
    assert_eq!(s.find("api")[0].gens, super::Gens::All);
    assert_eq!(
        pairs(s.find("web")),
        found,
        "the old one, which no other container has"
    );
    assert_eq!(s.entries(&key("abcdef0123")).len(), 3, "one container");
    // Another container takes the old name: it is that one's now.
    commit_one(&s, &mut o, "0123abcdef", false, &mut |_, _| {
        Some(named("web"))
    });
    assert_eq!(
        pairs(s.find("web")),
        vec![(key("0123abcdef"), Some("web".into()))]
    );
    assert_eq!(pairs(s.find("api")), found);
}

#[test]
fn a_name_learnt_after_the_first_entry_is_stored() {
    let dir = Dir::new("learnt");
    let s = store(&dir, 64 << 20);
    let mut o = open_store(&s).unwrap();
    // Its runtime's state was not readable yet.
    commit_one(&s, &mut o, "fedcba9876", false, &mut |_, _| {
        Some(Meta::default())
    });
    assert_eq!(s.name(&key("fedcba9876")), None);
    // Only looked up without a fresh cache entry: a record without a name is read for.
    let mut later = |_: &ContainerKey, look| (look >= Look::Any).then(|| named("late"));
    commit_one(&s, &mut o, "fedcba9876", false, &mut later);
    assert_eq!(
        pairs(s.find("late")),
        vec![(key("fedcba9876"), Some("late".into()))]
    );
    // A name the cache has fresh is taken without reading (no change: no write).
    let mut cached = |_: &ContainerKey, _| Some(named("late"));
    commit_one(&s, &mut o, "fedcba9876", false, &mut cached);
    assert_eq!(s.name(&key("fedcba9876")).as_deref(), Some("late"));
}

/// The record's tail follows its schema-2 fields: an agent without it reads the record
/// (postcard leaves trailing bytes), and this agent reads a record written without it.
#[test]
fn a_records_tail_is_invisible_to_older_agents_and_optional_to_this_one() {
    let mut rec = ContainerRec::of(&key("abcdef0123"), named("api"));
    let plain = rec.clone();
    assert!(rec.rename("web") && !rec.rename("web"));
    rec.tail.init_pid = Some(42);
    rec.tail.init_end = Some((3, 1_000));
    let bytes = rec.bytes();
    let older: ContainerRec = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(older.name.as_deref(), Some("web"));
    assert_eq!(
        older.tail,
        RecTail::default(),
        "an older agent's fields only"
    );
    assert_eq!(ContainerRec::decode(&bytes), Some(rec.clone()));
    assert_eq!(rec.tail.earlier_names, ["api"]);
    let without = postcard::to_allocvec(&plain).unwrap();
    assert_eq!(ContainerRec::decode(&without), Some(plain));
    // The earlier names are bounded (a container renamed without end).
    for i in 0..20 {
        rec.rename(&format!("n{i}"));
    }
    assert_eq!(rec.tail.earlier_names, ["n15", "n16", "n17", "n18"]);
}
