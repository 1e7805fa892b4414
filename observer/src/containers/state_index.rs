//! A runtime's state, indexed by container id and kept between lookups, for the runtimes
//! whose state is one place for all containers (podman's containers.json, the launcher's
//! state directory). Looking a container up there one by one costs a pass over every
//! container's state per container: O(n²) — at 981 launcher containers the first `observer
//! tree` took 11 s and every /metrics after the name cache expired ~150 ms. One pass now
//! answers every container until the place changes (its mtime), an id is missing and the
//! last pass is older than `RETRY` (a state file written after the directory changed), or
//! the pass is older than `MAX_AGE`.

use std::{
    collections::HashMap,
    fs,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use super::names::Meta;

/// A missing id re-reads at most this often (a container's state being written).
const RETRY: Duration = Duration::from_secs(1);
/// Any index re-reads at least this often (a change that kept the mtime).
const MAX_AGE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(crate) struct StateIndex {
    stamp: Option<SystemTime>,
    read_at: Option<Instant>,
    by_id: HashMap<String, Meta>,
}

impl StateIndex {
    /// The entry of `id` in the index of `place` (a file or directory), re-read with
    /// `read` when stale.
    pub(crate) fn get(
        &mut self,
        place: &Path,
        id: &str,
        read: impl FnOnce() -> HashMap<String, Meta>,
    ) -> Option<Meta> {
        let stamp = fs::metadata(place).and_then(|m| m.modified()).ok();
        let age = self.read_at.map(|t| t.elapsed());
        let stale = match age {
            None => true,
            Some(age) => {
                stamp != self.stamp
                    || age >= MAX_AGE
                    || (age >= RETRY && !self.by_id.contains_key(id))
            }
        };
        if stale {
            self.by_id = if stamp.is_some() {
                read()
            } else {
                HashMap::new()
            };
            self.stamp = stamp;
            self.read_at = Some(Instant::now());
        }
        self.by_id.get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_read_answers_every_id_until_the_place_changes() {
        let d = std::env::temp_dir().join(format!("observer-index-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let meta = |n: &str| Meta {
            name: Some(n.into()),
            ..Meta::default()
        };
        let mut idx = StateIndex::default();
        let mut reads = 0;
        let read = |reads: &mut i32| {
            *reads += 1;
            HashMap::from([("a".to_string(), meta("x")), ("b".to_string(), meta("y"))])
        };
        assert_eq!(idx.get(&d, "a", || read(&mut reads)), Some(meta("x")));
        assert_eq!(idx.get(&d, "b", || read(&mut reads)), Some(meta("y")));
        // A missing id right after a read does not read again.
        assert_eq!(idx.get(&d, "c", || read(&mut reads)), None);
        assert_eq!(reads, 1);
        // The place changed: read again.
        std::thread::sleep(Duration::from_millis(20));
        fs::create_dir(d.join("new")).unwrap();
        assert_eq!(idx.get(&d, "a", || read(&mut reads)), Some(meta("x")));
        assert_eq!(reads, 2);
        // Gone: nothing, without calling `read`.
        fs::remove_dir_all(&d).unwrap();
        assert_eq!(idx.get(&d, "a", || unreachable!()), None);
    }
}
