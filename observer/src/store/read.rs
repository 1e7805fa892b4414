//! Queries of the store, for the API's history and `why` views: which stored pods a
//! reference names (find.rs: which containers), and a container's
//! entries with their boot (0: this one, -1: the one before...) and wall-clock end. They
//! run on the API's blocking threads; a store that is not open answers nothing.

use redb::{ReadableDatabase, ReadableTable};

use super::{
    codec::{self, Refs},
    db::{parse_boot, ContainerRec, BY_CONTAINER, CONTAINERS, ENTRIES},
    find::Gens,
    Reading, Store,
};
use crate::{
    containers::{cgroup::Runtime, ContainerKey},
    host::clock::{boot_now_ns, unix_now_ns},
    table::history::Ended,
};

/// Entries a query returns at most per container (the newest).
const MAX_ENTRIES: usize = 10_000;

/// An entry as the store gives it back.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) ended: Ended,
    /// 0 for this boot, -1 for the one before it, ...
    pub(crate) boot: i32,
    /// Now, on the clock of the boot it ended in (its times are on that clock): what its
    /// ages are counted from.
    pub(crate) now_ns: u64,
}

/// A generation of a bare container's inode as the table knows it (api/service.rs): its
/// processes started after `after` and up to `until` (boot-clock ns of this boot), under
/// the init `init_pid` when that is known.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub(crate) after: u64,
    pub(crate) until: Option<u64>,
    pub(crate) init_pid: Option<u32>,
}

/// A pod as the store knows it: from its containers' records.
#[derive(Debug, PartialEq)]
pub(crate) struct StoredPod {
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
    pub(crate) uid: Option<String>,
    pub(crate) members: Vec<PodMember>,
}

#[derive(Debug, PartialEq)]
pub(crate) struct PodMember {
    pub(crate) key: ContainerKey,
    pub(crate) name: Option<String>,
    pub(crate) sandbox: bool,
    /// The generation the pod had (a bare container's inode is reused).
    pub(crate) gens: Gens,
}

/// An entry of this boot found by its host pid, with its container and the name that had.
#[derive(Debug)]
pub(crate) struct PidMatch {
    pub(crate) key: ContainerKey,
    pub(crate) name: Option<String>,
    pub(crate) stored: Stored,
}

/// Entries a search by pid looks at at most (this boot's newest): a few seconds of reading
/// on the largest store.
const PID_SCAN_MAX: usize = 2_000_000;

/// The containers table, for looking numbers up while decoding (each entry and each of its
/// signals' senders looks one up: a hash map, not a search of every container).
pub(super) struct Containers(pub(super) rustc_hash::FxHashMap<u32, ContainerRec>);

impl Containers {
    pub(super) fn rec(&self, n: u32) -> Option<&ContainerRec> {
        self.0.get(&n)
    }

    /// The number of `key`'s newest generation (records.rs: a bare container's reused
    /// inode is a new container with a number of its own).
    pub(super) fn newest(&self, key: &ContainerKey) -> Option<u32> {
        self.generations(key, &Gens::All).first().copied()
    }

    /// The numbers of `key`'s generations of `gens`, the newest first.
    fn generations(&self, key: &ContainerKey, gens: &Gens) -> Vec<u32> {
        let key = key.base();
        let mut v: Vec<u32> = self
            .0
            .iter()
            .filter(|(n, c)| gens.has(**n) && c.key().as_ref() == Some(&key))
            .map(|(n, _)| *n)
            .collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v
    }
}

impl Refs for Containers {
    fn number(&mut self, _: &ContainerKey) -> u32 {
        u32::MAX
    }

    fn key(&self, n: u32) -> Option<ContainerKey> {
        self.rec(n).and_then(ContainerRec::key)
    }
}

/// How long a query waits for the store to open (the writer thread opens it as the agent
/// starts; checking a big file takes up to a second or two).
const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Store {
    pub(super) fn reading(&self) -> Option<Reading> {
        let until = std::time::Instant::now() + OPEN_WAIT;
        while self.state.load(std::sync::atomic::Ordering::Relaxed) == super::State::Opening as u8
            && std::time::Instant::now() < until
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.reading
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The stored pod `query` names (`<namespace>/<pod>`, the pod's name or uid), its
    /// sandbox first: of the pods it names (a StatefulSet's pod of an earlier uid), the one
    /// stored last.
    pub(crate) fn pod(&self, query: &str) -> Option<StoredPod> {
        let q = query.trim();
        let all = containers(&self.reading()?).ok()?;
        let newest = all
            .0
            .iter()
            .filter(|(_, c)| c.in_pod(q))
            .max_by_key(|(n, _)| *n)?;
        let same = |c: &ContainerRec| {
            (&c.pod_namespace, &c.pod, &c.pod_uid)
                == (&newest.1.pod_namespace, &newest.1.pod, &newest.1.pod_uid)
        };
        let mut found: Vec<(u32, &ContainerRec)> = all
            .0
            .iter()
            .filter(|(_, c)| same(c))
            .map(|(n, c)| (*n, c))
            .collect();
        // The sandbox first, then in the order they were stored.
        found.sort_by_key(|(n, c)| (!c.sandbox, *n));
        let members = found
            .into_iter()
            .filter_map(|(n, c)| {
                Some(PodMember {
                    key: c.key()?,
                    name: c.name.clone(),
                    sandbox: c.sandbox,
                    gens: if c.runtime == Runtime::Bare.as_str() {
                        Gens::Named(vec![n])
                    } else {
                        Gens::All
                    },
                })
            })
            .collect();
        let c = &newest.1;
        Some(StoredPod {
            namespace: c.pod_namespace.clone(),
            name: c.pod.clone().unwrap_or_default(),
            uid: c.pod_uid.clone(),
            members,
        })
    }

    /// The name a stored container had: the newest of `gens`'s.
    pub(crate) fn name_of(&self, key: &ContainerKey, gens: &Gens) -> Option<String> {
        let r = self.reading()?;
        let mut all = containers(&r).ok()?;
        let n = *all.generations(key, gens).first()?;
        all.0.remove(&n).and_then(|c| c.name)
    }

    /// This boot's stored entries of processes whose host pid was `pid`, the latest ended
    /// first, at most `max` (pids are reused: several processes may have had it).
    pub(crate) fn by_pid(&self, pid: u32, max: usize) -> Vec<PidMatch> {
        let Some(r) = self.reading() else {
            return Vec::new();
        };
        match by_pid(&r, pid, max) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("history store: looking for pid {pid}: {e}");
                Vec::new()
            }
        }
    }

    /// The stored entries (the newest MAX_ENTRIES), oldest first, of the newest of `key`'s
    /// generations `gens` names; with `boot` (0: this one, -1: the one before...), of the
    /// newest of them that has entries in that boot, those only.
    pub(crate) fn entries_of(
        &self,
        key: &ContainerKey,
        gens: &Gens,
        boot: Option<i32>,
    ) -> Vec<Stored> {
        let Some(r) = self.reading() else {
            return Vec::new();
        };
        entries(&r, key, gens, boot).unwrap_or_else(|e| {
            log::warn!("history store: reading {}'s entries: {e}", key.id);
            Vec::new()
        })
    }

    /// This boot's stored entries of a generation of a bare container's inode as the table
    /// bounds it, oldest first, from whichever of the store's generations has them (the
    /// store makes its own: its newest may be a later namespace's, and after an agent
    /// restart the table's generation may span two of the store's).
    pub(crate) fn entries_within(&self, key: &ContainerKey, b: Bounds) -> Vec<Stored> {
        let Some(r) = self.reading() else {
            return Vec::new();
        };
        entries_within(&r, key, b).unwrap_or_else(|e| {
            log::warn!("history store: reading {}'s entries: {e}", key.id);
            Vec::new()
        })
    }

    /// The boots the generations of `key` that `gens` names have entries in (0: this one,
    /// -1: the one before...), the newest first.
    pub(crate) fn boots_of(&self, key: &ContainerKey, gens: &Gens) -> Vec<i32> {
        let Some(r) = self.reading() else {
            return Vec::new();
        };
        boots(&r, key, gens).unwrap_or_else(|e| {
            log::warn!("history store: reading {}'s boots: {e}", key.id);
            Vec::new()
        })
    }
}

/// A stored boot's number as queries count it: 0 this one, -1 the one before...
fn relative(boot: u32, this: u32) -> i32 {
    (i64::from(boot) - i64::from(this)).clamp(i64::from(i32::MIN), 0) as i32
}

pub(super) fn containers(r: &Reading) -> Result<Containers, redb::Error> {
    let txn = r.db.begin_read()?;
    let t = match txn.open_table(CONTAINERS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Containers(Default::default())),
        Err(e) => return Err(e.into()),
    };
    let mut v = rustc_hash::FxHashMap::default();
    for row in t.iter()? {
        let (k, val) = row?;
        if let Some(c) = ContainerRec::decode(val.value()) {
            v.insert(k.value(), c);
        }
    }
    Ok(Containers(v))
}

/// Which of a generation's entries a query takes.
#[derive(Clone, Copy)]
enum Pick {
    /// All of them.
    All,
    /// Those of that boot (0: this one, -1: the one before...).
    Boot(i32),
    /// This boot's within the bounds.
    Within(Bounds),
}

/// A read of stored entries: the entry tables, and each boot's clock offset.
struct Scan {
    index: redb::ReadOnlyTable<(u32, u64), ()>,
    table: redb::ReadOnlyTable<u64, &'static [u8]>,
    offsets: rustc_hash::FxHashMap<u32, i64>,
    /// This boot's number.
    this: u32,
    /// Now, on the boot clock and the wall clock.
    now: (u64, u64),
}

impl Scan {
    /// None: the store has no entries yet.
    fn open(r: &Reading) -> Result<Option<Scan>, redb::Error> {
        let txn = r.db.begin_read()?;
        let (Ok(index), Ok(table)) = (txn.open_table(BY_CONTAINER), txn.open_table(ENTRIES)) else {
            return Ok(None);
        };
        // Boots the store saw in another agent's life may be newer than this one's list.
        let mut offsets = r.offsets.clone();
        if let Ok(b) = txn.open_table(super::db::BOOTS) {
            for row in b.iter()? {
                let (k, v) = row?;
                if let Some((_, off)) = parse_boot(v.value()) {
                    offsets.entry(k.value()).or_insert(off);
                }
            }
        }
        Ok(Some(Scan {
            index,
            table,
            offsets,
            this: r.boot,
            now: (boot_now_ns(), unix_now_ns()),
        }))
    }

    /// Generation `n`'s entries that `pick` takes, the newest first, added to `out` while it
    /// holds fewer than MAX_ENTRIES.
    fn generation(
        &self,
        n: u32,
        pick: Pick,
        ctrs: &Containers,
        out: &mut Vec<Stored>,
    ) -> Result<(), redb::Error> {
        for row in self.index.range((n, 0)..=(n, u64::MAX))?.rev() {
            if out.len() >= MAX_ENTRIES {
                break;
            }
            let seq = row?.0.value().1;
            let Some(bytes) = self.table.get(seq)? else {
                continue;
            };
            let of_boot = codec::head(bytes.value()).map(|h| relative(h.1, self.this));
            let wanted = match pick {
                Pick::All => true,
                Pick::Boot(b) => of_boot == Some(b),
                Pick::Within(_) => of_boot == Some(0),
            };
            let Some(e) = wanted.then(|| codec::decode(bytes.value()).ok()).flatten() else {
                continue;
            };
            let boot = relative(e.boot, self.this);
            let now_ns = if boot == 0 {
                self.now.0
            } else {
                let off = self.offsets.get(&e.boot).copied().unwrap_or(0);
                (i128::from(self.now.1) - i128::from(off)).max(0) as u64
            };
            let ended = e.ended(ctrs);
            if let Pick::Within(b) = pick {
                if ended.start_ns <= b.after || b.until.is_some_and(|u| ended.start_ns > u) {
                    continue;
                }
            }
            out.push(Stored {
                ended,
                boot,
                now_ns,
            });
        }
        Ok(())
    }
}

/// The entries of the newest of `key`'s generations `gens` names; with `boot`, of the newest
/// of them that has entries in that boot, only those.
fn entries(
    r: &Reading,
    key: &ContainerKey,
    gens: &Gens,
    boot: Option<i32>,
) -> Result<Vec<Stored>, redb::Error> {
    let ctrs = containers(r)?;
    let mut numbers = ctrs.generations(key, gens);
    if boot.is_none() {
        numbers.truncate(1);
    }
    let Some(scan) = Scan::open(r)? else {
        return Ok(Vec::new());
    };
    let pick = boot.map_or(Pick::All, Pick::Boot);
    for n in numbers {
        let mut out = Vec::new();
        scan.generation(n, pick, &ctrs, &mut out)?;
        if !out.is_empty() {
            out.reverse();
            return Ok(out);
        }
    }
    Ok(Vec::new())
}

/// This boot's entries of `key`'s generations within `b`, the oldest first. A generation
/// whose init ended by `b.after` (or in another boot) has none: no process enters a
/// namespace whose init ended; nor has one under another init than `b.init_pid`.
fn entries_within(r: &Reading, key: &ContainerKey, b: Bounds) -> Result<Vec<Stored>, redb::Error> {
    let ctrs = containers(r)?;
    let Some(scan) = Scan::open(r)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for n in ctrs.generations(key, &Gens::All) {
        let Some(tail) = ctrs.rec(n).map(|c| &c.tail) else {
            continue;
        };
        let ended_before = tail
            .init_end
            .is_some_and(|(boot, end)| boot != r.boot || end <= b.after);
        let other_init = matches!((tail.init_pid, b.init_pid), (Some(x), Some(y)) if x != y);
        if !ended_before && !other_init {
            scan.generation(n, Pick::Within(b), &ctrs, &mut out)?;
        }
    }
    out.sort_by_key(|s| s.ended.end_ns);
    Ok(out)
}

/// The boots the generations of `key` that `gens` names have entries in, the newest first
/// (their heads only).
fn boots(r: &Reading, key: &ContainerKey, gens: &Gens) -> Result<Vec<i32>, redb::Error> {
    let numbers = containers(r)?.generations(key, gens);
    let txn = r.db.begin_read()?;
    let (Ok(index), Ok(table)) = (txn.open_table(BY_CONTAINER), txn.open_table(ENTRIES)) else {
        return Ok(Vec::new());
    };
    let mut found = std::collections::BTreeSet::new();
    for n in numbers {
        for row in index.range((n, 0)..=(n, u64::MAX))? {
            let seq = row?.0.value().1;
            if let Some(h) = table.get(seq)?.and_then(|v| codec::head(v.value())) {
                found.insert(relative(h.1, r.boot));
            }
        }
    }
    Ok(found.into_iter().rev().collect())
}

/// A scan back from the newest entry: entries are stored in the order they came, so this
/// boot's are the last ones and the scan stops at the first of an earlier boot. Only the
/// entries' heads are read, except those of `pid`.
fn by_pid(r: &Reading, pid: u32, max: usize) -> Result<Vec<PidMatch>, redb::Error> {
    let txn = r.db.begin_read()?;
    let Ok(table) = txn.open_table(ENTRIES) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for row in table.iter()?.rev().take(PID_SCAN_MAX) {
        let (_, v) = row?;
        let Some((_, boot, _, p)) = codec::head_pid(v.value()) else {
            continue;
        };
        if boot != r.boot {
            break;
        }
        if p == pid {
            if let Ok(e) = codec::decode(v.value()) {
                found.push(e);
            }
        }
    }
    if found.is_empty() {
        return Ok(Vec::new());
    }
    found.sort_by_key(|e| std::cmp::Reverse(e.end_ns));
    found.truncate(max);
    let ctrs = containers(r)?;
    let now_ns = boot_now_ns();
    Ok(found
        .into_iter()
        .filter_map(|e| {
            let rec = ctrs.rec(e.container)?;
            Some(PidMatch {
                key: rec.key()?,
                name: rec.name.clone(),
                stored: Stored {
                    ended: e.ended(&ctrs),
                    boot: 0,
                    now_ns,
                },
            })
        })
        .collect())
}

/// The stored containers as they are kept (for tests).
#[cfg(test)]
pub(super) fn containers_for_test(s: &Store) -> Vec<ContainerRec> {
    s.reading()
        .and_then(|r| containers(&r).ok())
        .map(|c| c.0.into_values().collect())
        .unwrap_or_default()
}

/// The shorthands of the tests: every generation of `key` (the newest answers).
#[cfg(test)]
impl Store {
    pub(crate) fn entries(&self, key: &ContainerKey) -> Vec<Stored> {
        self.entries_of(key, &Gens::All, None)
    }

    pub(crate) fn entries_in(&self, key: &ContainerKey, boot: i32) -> Vec<Stored> {
        self.entries_of(key, &Gens::All, Some(boot))
    }

    pub(crate) fn boots(&self, key: &ContainerKey) -> Vec<i32> {
        self.boots_of(key, &Gens::All)
    }

    pub(crate) fn name(&self, key: &ContainerKey) -> Option<String> {
        self.name_of(key, &Gens::All)
    }
}
