//! What the writer keeps of the stored containers beyond their numbers: which generation of
//! a bare container an ended process is of, and the names containers have now.
//!
//! Generations (review item 4): a bare container is known by its pid namespace's inode,
//! which the kernel reuses. A namespace ends with its init, so a process that started after
//! that end is of a new container; so is one under another init (a namespace has one init
//! for its life: an entry whose parents reach an init with another host pid is of another
//! namespace, also when the first one's init ended while no agent ran). Each generation has
//! a number and a record of its own (named afresh); across boots, `Open::load` starts one.
//! The init's pid and end are kept in the record's tail (db.rs), so an agent restarted in
//! the same boot goes on where the last one left off (before, it did not know which inits
//! had ended: a new namespace with the inode of one whose init had ended before the restart
//! was merged into it).
//!
//! Names: a container's record is written with the name its runtime gave when it was first
//! stored. A later one (a `docker rename`; a runtime whose state was not readable yet)
//! replaces it, the old one kept among its earlier names (`Store::find` still finds it, unless
//! another container has it now); a bare container's name is only learnt, never replaced (it
//! is its OCI runtime's id). The commit that brings a container's PID 1's end reads its
//! runtime's state again; other commits look at what the name resolver has fresh (no
//! reading), or read when the record has no name yet.

use redb::ReadableTable;
use rustc_hash::FxHashMap;

use super::{codec::Refs, db::ContainerRec};
use crate::{
    containers::{cgroup::Runtime, names::Meta, ContainerKey},
    table::history::Ended,
};

/// How a commit asks for a container's metadata (mod.rs: through the agent's resolver).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Look {
    /// Only what is known fresh: nothing is read.
    Cached,
    /// What is known, else read from the runtime's state (a container stored for the
    /// first time, or still without a name).
    Any,
    /// Read from the runtime's state now (its PID 1 ended: the name it ended with).
    Now,
}

/// A container's metadata as a commit asks for it; None: nothing known (`Look::Cached`).
pub(crate) type MetaFn<'a> = dyn FnMut(&ContainerKey, Look) -> Option<Meta> + 'a;

/// A bare namespace's init as its entries tell it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Init {
    /// Its host pid.
    pub(super) pid: Option<u32>,
    /// Its end (boot-clock ns of this boot).
    pub(super) end: Option<u64>,
}

impl Init {
    /// Whether a process that started at `start` under the init `pid` (None: its parents
    /// do not tell) can be of this namespace.
    fn may_hold(&self, start: u64, pid: Option<u32>) -> bool {
        self.end.is_none_or(|end| start <= end)
            && !matches!((self.pid, pid), (Some(a), Some(b)) if a != b)
    }

    /// Whether it is of this namespace for sure: it started before its init ended, or
    /// under it.
    fn holds(&self, start: u64, pid: Option<u32>) -> bool {
        self.end.is_some_and(|end| start <= end) || (self.pid.is_some() && self.pid == pid)
    }

    /// Takes what `e` tells of the init; whether that was new.
    fn learn(&mut self, e: &Ended, pid: Option<u32>) -> bool {
        let before = *self;
        self.pid = self.pid.or(pid);
        if e.ns_pid == 1 {
            self.end = Some(e.end_ns);
        }
        *self != before
    }
}

/// The current generation of a bare container in this boot.
#[derive(Clone, Copy, Debug)]
pub(super) struct Gen {
    pub(super) n: u32,
    pub(super) init: Init,
    /// The one before it, with its init: its processes reaped late are still its.
    pub(super) prev: Option<(u32, Init)>,
}

/// Container numbers, with the containers first seen in this batch to be added.
pub(super) struct TxnRefs<'a> {
    pub(super) known: &'a mut FxHashMap<ContainerKey, u32>,
    pub(super) next: &'a mut u32,
    pub(super) new: Vec<(u32, ContainerKey)>,
    pub(super) gens: &'a mut FxHashMap<ContainerKey, Gen>,
    /// Numbers whose init facts changed in this batch: their records are written again.
    pub(super) inits: FxHashMap<u32, Init>,
}

impl TxnRefs<'_> {
    /// The number of the container `e` ended in (`key` without its generation: the
    /// table's generations are its own, this rule is the store's).
    pub(super) fn generation(&mut self, key: &ContainerKey, e: &Ended) -> u32 {
        if key.runtime != Runtime::Bare {
            return self.number(key);
        }
        let pid = e.init_pid();
        let mut prev = None;
        if let Some(g) = self.gens.get_mut(key) {
            if let Some((n, _)) = g.prev.filter(|(_, i)| i.holds(e.start_ns, pid)) {
                return n;
            }
            if g.init.may_hold(e.start_ns, pid) {
                if g.init.learn(e, pid) {
                    self.inits.insert(g.n, g.init);
                }
                return g.n;
            }
            // Another namespace with the inode: a new generation.
            prev = Some((g.n, g.init));
            if self.known.get(key) == Some(&g.n) {
                self.known.remove(key);
            }
        }
        let n = self.number(key);
        let mut g = Gen {
            n,
            init: Init::default(),
            prev,
        };
        if g.init.learn(e, pid) {
            self.inits.insert(n, g.init);
        }
        self.gens.insert(key.clone(), g);
        n
    }
}

impl Refs for TxnRefs<'_> {
    fn number(&mut self, key: &ContainerKey) -> u32 {
        if key.generation != 0 {
            return self.number(&key.base());
        }
        if let Some(&n) = self.known.get(key) {
            return n;
        }
        let n = *self.next;
        *self.next += 1;
        self.known.insert(key.clone(), n);
        self.new.push((n, key.clone()));
        n
    }

    fn key(&self, _: u32) -> Option<ContainerKey> {
        None
    }
}

/// What the writer knows of a stored container's record: its name, and whether it has
/// its pod's facts.
#[derive(Clone, Debug, Default)]
pub(super) struct Named {
    pub(super) name: Option<String>,
    pub(super) pod: bool,
}

impl Named {
    pub(super) fn of(rec: &ContainerRec) -> Named {
        Named {
            name: rec.name.clone(),
            pod: rec.pod.is_some(),
        }
    }
}

/// The containers of a batch: for each number, the key the table gave (its generation
/// names it to the resolver) and how to look its metadata up.
pub(super) type Seen<'k> = FxHashMap<u32, (&'k ContainerKey, Look)>;

/// Notes that `e` ended in container `n`: its PID 1's end reads its metadata now.
pub(super) fn saw<'k>(seen: &mut Seen<'k>, n: u32, key: &'k ContainerKey, e: &Ended) {
    let look = if e.ns_pid == 1 {
        Look::Now
    } else {
        Look::Cached
    };
    let v = seen.entry(n).or_insert((key, look));
    v.1 = v.1.max(look);
}

/// Writes the records of the containers first stored in this batch (taken out of `seen`).
pub(super) fn add_new(
    ctrs: &mut redb::Table<u32, &[u8]>,
    new: Vec<(u32, ContainerKey)>,
    seen: &mut Seen,
    meta: &mut MetaFn,
    names: &mut FxHashMap<u32, Named>,
    numbers: &mut FxHashMap<u32, ContainerKey>,
) -> Result<(), redb::Error> {
    for (n, key) in new {
        // The table's key (its generation names a bare container to the resolver); a
        // signal sender's container is not of the batch.
        let (asked, look) = seen.remove(&n).unwrap_or((&key, Look::Any));
        let m = meta(asked, look.max(Look::Any)).unwrap_or_default();
        let rec = ContainerRec::of(&key, m);
        names.insert(n, Named::of(&rec));
        ctrs.insert(n, rec.bytes().as_slice())?;
        numbers.insert(n, key);
    }
    Ok(())
}

/// Writes again the records whose name, pod facts or init changed in this batch (`seen`:
/// the batch's containers; `inits`: the inits it told of; `boot`: this boot's number).
pub(super) fn update(
    ctrs: &mut redb::Table<u32, &[u8]>,
    seen: &Seen,
    inits: &FxHashMap<u32, Init>,
    boot: u32,
    meta: &mut MetaFn,
    names: &mut FxHashMap<u32, Named>,
) -> Result<(), redb::Error> {
    let mut changed: Vec<u32> = inits.keys().copied().collect();
    let mut learnt = FxHashMap::default();
    for (&n, &(key, look)) in seen {
        let Some(known) = names.get(&n) else {
            continue;
        };
        let look = if known.name.is_none() {
            look.max(Look::Any)
        } else {
            look
        };
        let Some(m) = meta(key, look) else {
            continue;
        };
        // A bare container's name (its OCI runtime's id) is its for its life: only learnt.
        let renamed = m.name.is_some()
            && m.name != known.name
            && (known.name.is_none() || key.runtime != Runtime::Bare);
        if renamed || (!known.pod && m.pod.is_some()) {
            changed.push(n);
            learnt.insert(n, m);
        }
    }
    changed.sort_unstable();
    changed.dedup();
    for n in changed {
        let Some(mut rec) = ctrs.get(n)?.and_then(|v| ContainerRec::decode(v.value())) else {
            continue;
        };
        if let Some(m) = learnt.get(&n) {
            if let Some(name) = &m.name {
                rec.rename(name);
            }
            rec.learn_pod(m);
        }
        if let Some(i) = inits.get(&n) {
            rec.tail.init_pid = i.pid;
            rec.tail.init_end = i.end.map(|end| (boot, end));
        }
        names.insert(n, Named::of(&rec));
        ctrs.insert(n, rec.bytes().as_slice())?;
    }
    Ok(())
}

/// The generation state of a stored bare container of this boot (`Open::load`).
pub(super) fn loaded_gen(n: u32, rec: &ContainerRec, boot: u32) -> Gen {
    Gen {
        n,
        init: Init {
            pid: rec.tail.init_pid,
            end: rec
                .tail
                .init_end
                .filter(|(b, _)| *b == boot)
                .map(|(_, end)| end),
        },
        prev: None,
    }
}
