//! The store's cost with many containers (attacker review, item 6): evicting the entries
//! of many containers and reading one container's entries take time in proportion to the
//! entries, not to entries × containers (a search of every container per entry made a
//! store of 50,000 bare containers — one `unshare --pid` each — take seconds per commit).

use std::time::{Duration, Instant};

use super::{
    codec::tests::{full, key},
    open_store,
    tests::{store, Dir, DAY_NS},
    write,
};
use crate::{
    containers::{names::Meta, ContainerKey},
    host::clock::boot_now_ns,
};

const CONTAINERS: u32 = 50_000;

#[test]
fn many_containers_are_evicted_and_read_in_time_linear_in_the_entries() {
    let dir = Dir::new("scale");
    let s = store(&dir, 1 << 30);
    let mut o = open_store(&s).unwrap();
    let now = boot_now_ns();
    let mut meta = |_: &ContainerKey, _| Some(Meta::default());
    let batch: Vec<_> = (0..CONTAINERS)
        .map(|i| (key(&format!("c{i}")), full(i + 1, now)))
        .collect();
    let t = Instant::now();
    o.commit(&batch, &mut meta, &s.cfg.limits, write::Now::read())
        .unwrap();
    let written = t.elapsed();
    // One container's entries, read with every container in the table.
    let many: Vec<_> = (0..10_000).map(|p| (key("c7"), full(p + 1, now))).collect();
    o.commit(&many, &mut meta, &s.cfg.limits, write::Now::read())
        .unwrap();
    let t = Instant::now();
    assert_eq!(s.entries(&key("c7")).len(), 10_000, "the newest 10,000");
    let read = t.elapsed();
    // Every entry past the retention: every container emptied and forgotten.
    let mut later = write::Now::read();
    later.boot_ns += 8 * DAY_NS;
    let t = Instant::now();
    let c = o.commit(&[], &mut meta, &s.cfg.limits, later).unwrap();
    let evicted = t.elapsed();
    assert_eq!(c.evicted, u64::from(CONTAINERS) + 10_000);
    assert!(s.find("c1").is_empty() && s.find("c49999").is_empty());
    let said = format!(
        "writing {CONTAINERS} containers took {written:?}; evicting them {evicted:?}, reading \
         one's entries {read:?}"
    );
    eprintln!("{said}");
    // Measured (2 busy cores): 0.8 s to write; 3.2 s to evict and 2.2 s to read with a
    // search per entry (4× and 2.75× the writing), well under the writing's time without.
    // The bounds leave room for a load that changes between the phases.
    assert!(evicted < written * 3 + Duration::from_millis(400), "{said}");
    assert!(read < written + Duration::from_millis(200), "{said}");
}
