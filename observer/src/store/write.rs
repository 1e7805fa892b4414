//! One commit of the writer thread: a batch of ended processes in one write transaction,
//! then entries evicted while the store is over its retention (the oldest first) or its
//! size (the oldest of the container holding the most: one container that spawns without
//! end evicts its own history, not its quiet neighbours') — in the same transaction, so a
//! crash leaves either all of it or none. Any error drops the
//! open store (the thread opens it again later and reloads this state from the file).

use std::sync::Arc;

use redb::{Database, ReadableTable, ReadableTableMetadata};
use rustc_hash::{FxHashMap, FxHashSet};

use super::{
    codec,
    db::{ContainerRec, BY_CONTAINER, CONTAINERS, ENTRIES, META},
    records::{self, Gen, MetaFn, Named, Seen, TxnRefs},
    Limits,
};
use crate::{
    containers::{cgroup::Runtime, ContainerKey},
    table::history::Ended,
};

/// What an entry costs beyond its bytes: its keys in both tables and the B-trees'
/// per-entry overhead (measured: `the_file_stays_within_its_size_bound`).
pub(super) const ENTRY_OVERHEAD: u64 = 40;

/// The writer's view of the open store.
pub(super) struct Open {
    pub(super) db: Arc<Database>,
    pub(super) boot: u32,
    /// Each boot's wall-minus-boot clock offset.
    pub(super) offsets: FxHashMap<u32, i64>,
    containers: FxHashMap<ContainerKey, u32>,
    /// The same, by number: what forgetting an emptied container looks up.
    numbers: FxHashMap<u32, ContainerKey>,
    /// Each bare container's current generation in this boot (records.rs).
    gens: FxHashMap<ContainerKey, Gen>,
    /// Each container's name and whether it has its pod's facts, as stored.
    names: FxHashMap<u32, Named>,
    next_container: u32,
    next_seq: u64,
    /// The entries' accounted size (bytes + ENTRY_OVERHEAD each).
    pub(super) bytes: u64,
    pub(super) entries: u64,
    /// The accounted size of each container's entries.
    per_container: FxHashMap<u32, u64>,
}

/// The time of a commit on both clocks.
#[derive(Clone, Copy, Debug)]
pub(super) struct Now {
    pub(super) unix_ns: u64,
    /// CLOCK_BOOTTIME, the clock of this boot's entries.
    pub(super) boot_ns: u64,
}

impl Now {
    pub(super) fn read() -> Now {
        Now {
            unix_ns: crate::host::clock::unix_now_ns(),
            boot_ns: crate::host::clock::boot_now_ns(),
        }
    }
}

/// What one commit did.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Committed {
    pub(super) written: u64,
    pub(super) evicted: u64,
}

impl Open {
    /// Loads the writer's state from an opened file.
    pub(super) fn load(
        db: Database,
        boot: u32,
        offsets: Vec<(u32, i64)>,
    ) -> Result<Open, redb::Error> {
        let mut meta = (0, 0);
        let mut per_container = FxHashMap::<u32, u64>::default();
        // Each container's last entry's boot.
        let mut last_boot = FxHashMap::<u32, u32>::default();
        let (recs, next_seq, entries) = {
            let r = redb::ReadableDatabase::begin_read(&db)?;
            let mut recs = Vec::new();
            if let Ok(t) = r.open_table(CONTAINERS) {
                for row in t.iter()? {
                    let (k, v) = row?;
                    if let Some(rec) = ContainerRec::decode(v.value()) {
                        recs.push((k.value(), rec));
                    }
                }
            }
            if let Ok(m) = r.open_table(META) {
                let get = |k| m.get(k).map(|v| v.map_or(0, |v| v.value()));
                meta = (get("bytes")?, get("next_container")?);
            }
            match r.open_table(ENTRIES) {
                Ok(t) => {
                    for row in t.iter()? {
                        let (_, v) = row?;
                        if let Some((c, b, _)) = codec::head(v.value()) {
                            *per_container.entry(c).or_default() +=
                                v.value().len() as u64 + ENTRY_OVERHEAD;
                            last_boot.insert(c, b);
                        }
                    }
                    (recs, t.last()?.map_or(0, |(k, _)| k.value() + 1), t.len()?)
                }
                Err(_) => (recs, 0, 0),
            }
        };
        let mut o = Open {
            db: Arc::new(db),
            boot,
            offsets: offsets.into_iter().collect(),
            containers: FxHashMap::default(),
            numbers: FxHashMap::default(),
            gens: FxHashMap::default(),
            names: FxHashMap::default(),
            next_container: meta.1 as u32,
            next_seq,
            bytes: meta.0,
            entries,
            per_container,
        };
        o.take_records(recs, &last_boot);
        Ok(o)
    }

    /// The stored containers' numbers, names and generations. The newest generation of
    /// each container (numbers go up: the records come in their order) is the one written
    /// to; a bare container of an earlier boot is another container (its inode was reused).
    fn take_records(&mut self, recs: Vec<(u32, ContainerRec)>, last_boot: &FxHashMap<u32, u32>) {
        for (n, rec) in recs {
            self.names.insert(n, Named::of(&rec));
            let Some(key) = rec.key() else {
                continue;
            };
            self.numbers.insert(n, key.clone());
            if key.runtime == Runtime::Bare {
                if last_boot.get(&n) != Some(&self.boot) {
                    continue;
                }
                self.gens
                    .insert(key.clone(), records::loaded_gen(n, &rec, self.boot));
            }
            self.containers.insert(key, n);
        }
    }

    /// Writes `batch` and evicts what the bounds require, in one transaction.
    /// `meta` gives a container's name and pod when it is first stored, and when they
    /// change (records.rs).
    pub(super) fn commit(
        &mut self,
        batch: &[(ContainerKey, Ended)],
        meta: &mut MetaFn,
        lim: &Limits,
        now: Now,
    ) -> Result<Committed, redb::Error> {
        let mut w = self.db.begin_write()?;
        w.set_durability(redb::Durability::Immediate)
            .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
        let mut done = Committed::default();
        {
            let mut entries = w.open_table(ENTRIES)?;
            let mut index = w.open_table(BY_CONTAINER)?;
            let mut refs = TxnRefs {
                known: &mut self.containers,
                next: &mut self.next_container,
                new: Vec::new(),
                gens: &mut self.gens,
                inits: FxHashMap::default(),
            };
            let mut seen = Seen::default();
            for (key, e) in batch {
                let base;
                let k = if key.generation == 0 {
                    key
                } else {
                    base = key.base();
                    &base
                };
                let c = refs.generation(k, e);
                records::saw(&mut seen, c, key, e);
                let bytes = codec::encode(e, c, self.boot, &mut refs);
                entries.insert(self.next_seq, bytes.as_slice())?;
                index.insert((c, self.next_seq), ())?;
                self.next_seq += 1;
                self.bytes += bytes.len() as u64 + ENTRY_OVERHEAD;
                *self.per_container.entry(c).or_default() += bytes.len() as u64 + ENTRY_OVERHEAD;
                self.entries += 1;
                done.written += 1;
            }
            let (new, inits) = (
                std::mem::take(&mut refs.new),
                std::mem::take(&mut refs.inits),
            );
            let mut ctrs = w.open_table(CONTAINERS)?;
            let names = &mut self.names;
            records::add_new(&mut ctrs, new, &mut seen, meta, names, &mut self.numbers)?;
            records::update(&mut ctrs, &seen, &inits, self.boot, meta, names)?;
            let touched = self.evict(&mut entries, &mut index, lim, now)?;
            done.evicted = touched.1;
            self.forget_empty(&index, &mut ctrs, touched.0)?;
            let mut meta = w.open_table(META)?;
            meta.insert("bytes", self.bytes)?;
            meta.insert("next_container", u64::from(self.next_container))?;
        }
        if done == Committed::default() {
            w.abort()?;
        } else {
            w.commit()?;
        }
        Ok(done)
    }

    /// Drops the entries past the retention (the oldest first), then, while the store is
    /// over its size, the oldest of the container that holds the most; returns the
    /// containers they were of and how many were dropped.
    fn evict(
        &mut self,
        entries: &mut redb::Table<u64, &[u8]>,
        index: &mut redb::Table<(u32, u64), ()>,
        lim: &Limits,
        now: Now,
    ) -> Result<(FxHashSet<u32>, u64), redb::Error> {
        let (mut touched, mut n) = (FxHashSet::default(), 0);
        loop {
            let Some((seq, head)) = entries
                .first()?
                .map(|(k, v)| (k.value(), codec::head(v.value())))
            else {
                break;
            };
            let too_old = head.is_some_and(|(_, boot, end)| {
                // This boot's entries age on its own clock: a step of the wall clock (a
                // node whose time is set after the agent started) must not age them all.
                if boot == self.boot {
                    return now.boot_ns.saturating_sub(end) > lim.retention_ns;
                }
                let off = self.offsets.get(&boot).copied().unwrap_or(0);
                let wall = (i128::from(end) + i128::from(off)).max(0) as u64;
                now.unix_ns.saturating_sub(wall) > lim.retention_ns
            });
            if !too_old && head.is_some() {
                break;
            }
            self.remove(entries, index, seq, &mut touched)?;
            n += 1;
        }
        while self.bytes > lim.budget() {
            let Some((c, down_to)) = self.heaviest(lim) else {
                break;
            };
            let mut progress = false;
            while self.bytes > lim.budget()
                && self.per_container.get(&c).copied().unwrap_or(0) > down_to
            {
                let Some(seq) = index
                    .range((c, 0)..=(c, u64::MAX))?
                    .next()
                    .transpose()?
                    .map(|(k, _)| k.value().1)
                else {
                    // The index has nothing left of it: its count is stale.
                    self.per_container.remove(&c);
                    break;
                };
                self.remove(entries, index, seq, &mut touched)?;
                n += 1;
                progress = true;
            }
            // Nothing evicted and the container still counted: stop rather than spin.
            if !progress && self.per_container.contains_key(&c) {
                break;
            }
        }
        Ok((touched, n))
    }

    /// The container holding the most, and the size to evict it down to: a little below
    /// the next one (one pass per step, not per entry, when containers are alike).
    fn heaviest(&self, lim: &Limits) -> Option<(u32, u64)> {
        let (mut first, mut second) = (None::<(u32, u64)>, 0u64);
        for (&c, &b) in &self.per_container {
            match first {
                Some((_, fb)) if b <= fb => second = second.max(b),
                _ => {
                    second = second.max(first.map_or(0, |f| f.1));
                    first = Some((c, b));
                }
            }
        }
        let step = (lim.budget() / 256).max(4096);
        first.map(|(c, b)| (c, second.saturating_sub(step).min(b.saturating_sub(1))))
    }

    /// Removes entry `seq` and its index key, and takes it off the accounts.
    fn remove(
        &mut self,
        entries: &mut redb::Table<u64, &[u8]>,
        index: &mut redb::Table<(u32, u64), ()>,
        seq: u64,
        touched: &mut FxHashSet<u32>,
    ) -> Result<(), redb::Error> {
        let Some((len, head)) = entries
            .remove(seq)?
            .map(|v| (v.value().len() as u64, codec::head(v.value())))
        else {
            return Ok(());
        };
        let cost = len + ENTRY_OVERHEAD;
        if let Some((c, _, _)) = head {
            index.remove((c, seq))?;
            touched.insert(c);
            if let Some(b) = self.per_container.get_mut(&c) {
                *b = b.saturating_sub(cost);
                if *b == 0 {
                    self.per_container.remove(&c);
                }
            }
        }
        self.bytes = self.bytes.saturating_sub(cost);
        self.entries = self.entries.saturating_sub(1);
        Ok(())
    }

    /// Removes the containers none of whose entries remain.
    fn forget_empty(
        &mut self,
        index: &redb::Table<(u32, u64), ()>,
        ctrs: &mut redb::Table<u32, &[u8]>,
        touched: FxHashSet<u32>,
    ) -> Result<(), redb::Error> {
        for c in touched {
            if index.range((c, 0)..=(c, u64::MAX))?.next().is_none() {
                ctrs.remove(c)?;
                self.names.remove(&c);
                if let Some(key) = self.numbers.remove(&c) {
                    if let Some(g) = self.gens.get_mut(&key) {
                        g.prev = g.prev.filter(|p| p.0 != c);
                        if g.n == c {
                            self.gens.remove(&key);
                        }
                    }
                    // Unless a newer generation of it has the key now.
                    if self.containers.get(&key) == Some(&c) {
                        self.containers.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }
}
