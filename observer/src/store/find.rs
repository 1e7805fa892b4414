//! Which stored containers a reference names (`observer history`/`why` of a container the
//! agent's memory does not know): by id, id prefix (4 characters or more) or name, else by
//! a name one had before (a `docker rename`), unless another has it now.
//!
//! A bare container's pid-namespace inode is reused by the kernel: the store keeps each
//! namespace as a generation of its own, with its own name (records.rs). A name names the
//! generations that bore it, not the inode: an earlier generation's name answers with that
//! generation's entries, never the newest's (issue #26: it answered with the newest's after
//! an agent restart). The id (the inode) names them all, and the newest answers.

use super::{db::ContainerRec, read::containers, Store};
use crate::containers::{cgroup::Runtime, ContainerKey};

/// Which of a stored container's generations a reference named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Gens {
    /// All of them (its id or id prefix; any reference of a container that is not bare,
    /// which has one): the newest answers.
    #[default]
    All,
    /// Those that bore the name asked for (the store's numbers, the newest first): the
    /// newest of them answers.
    Named(Vec<u32>),
}

impl Gens {
    /// Whether generation `n` is one of them.
    pub(super) fn has(&self, n: u32) -> bool {
        match self {
            Gens::All => true,
            Gens::Named(v) => v.contains(&n),
        }
    }
}

/// A stored container a reference names: its key (without a generation), the name it had
/// (of the newest generation named) and which of its generations were named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) key: ContainerKey,
    pub(crate) name: Option<String>,
    pub(crate) gens: Gens,
}

/// How a record matches a query.
#[derive(Clone, Copy, PartialEq, Eq)]
enum By {
    Id,
    Name,
}

impl Store {
    /// Stored containers `query` names: by id, id prefix (4 characters or more) or name;
    /// else by a name one had before (a `docker rename`), unless another has it now. One
    /// answer per container, with the generations the query named.
    pub(crate) fn find(&self, query: &str) -> Vec<Found> {
        let q = query.trim();
        let Some(all) = self.reading().and_then(|r| containers(&r).ok()) else {
            return Vec::new();
        };
        let now = |c: &ContainerRec| {
            if c.id == q || (q.len() >= 4 && c.id.starts_with(q)) {
                Some(By::Id)
            } else {
                (c.name.as_deref() == Some(q)).then_some(By::Name)
            }
        };
        let before = |c: &ContainerRec| {
            c.tail
                .earlier_names
                .iter()
                .any(|n| n == q)
                .then_some(By::Name)
        };
        let named: &dyn Fn(&ContainerRec) -> Option<By> =
            if all.0.values().any(|c| now(c).is_some()) {
                &now
            } else {
                &before
            };
        // A key that is not a bare container's is one container (its memory's history is
        // its own): all of it.
        let by = |key: &ContainerKey, c: &ContainerRec| match named(c)? {
            By::Name if key.runtime == Runtime::Bare => Some(By::Name),
            _ => Some(By::Id),
        };
        let mut hits: Vec<(u32, ContainerKey, By)> = all
            .0
            .iter()
            .filter_map(|(n, c)| {
                let key = c.key()?;
                let b = by(&key, c)?;
                Some((*n, key, b))
            })
            .collect();
        // Each key's generations together, the newest first.
        hits.sort_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
        let mut out: Vec<Found> = Vec::new();
        for (n, key, by) in hits {
            match out.last_mut().filter(|f| f.key == key) {
                Some(f) => match (&mut f.gens, by) {
                    (Gens::Named(v), By::Name) => v.push(n),
                    (g, By::Id) => *g = Gens::All,
                    (Gens::All, By::Name) => {}
                },
                None => out.push(Found {
                    name: all.rec(n).and_then(|c| c.name.clone()),
                    gens: match by {
                        By::Id => Gens::All,
                        By::Name => Gens::Named(vec![n]),
                    },
                    key,
                }),
            }
        }
        // By id, the newest generation's name.
        for f in out.iter_mut().filter(|f| f.gens == Gens::All) {
            f.name = all.newest(&f.key).and_then(|n| all.rec(n)?.name.clone());
        }
        out
    }
}

/// The keys and names of `find`'s answer (for tests that look at nothing else).
#[cfg(test)]
pub(super) fn pairs(found: Vec<Found>) -> Vec<(ContainerKey, Option<String>)> {
    found.into_iter().map(|f| (f.key, f.name)).collect()
}
