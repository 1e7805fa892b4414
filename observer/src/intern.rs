//! String interning for values many processes share (cgroup paths, executable paths): each
//! distinct string is stored once and referred to by a u32, so the per-event path allocates
//! only the first time a string is seen.

use rustc_hash::FxHashMap;

pub(crate) struct Interner {
    strings: Vec<Box<str>>,
    ids: FxHashMap<Box<str>, u32>,
}

impl Default for Interner {
    fn default() -> Self {
        Self::new()
    }
}

impl Interner {
    /// Id 0 is the empty string ("unknown").
    pub(crate) fn new() -> Self {
        Interner {
            strings: vec!["".into()],
            ids: FxHashMap::default(),
        }
    }

    /// The id of `s`, and whether it was new.
    pub(crate) fn intern(&mut self, s: &str) -> (u32, bool) {
        if s.is_empty() {
            return (0, false);
        }
        if let Some(&i) = self.ids.get(s) {
            return (i, false);
        }
        let i = self.strings.len() as u32;
        self.strings.push(s.into());
        self.ids.insert(s.into(), i);
        (i, true)
    }

    pub(crate) fn get(&self, id: u32) -> &str {
        self.strings.get(id as usize).map(|s| &**s).unwrap_or("")
    }

    pub(crate) fn len(&self) -> usize {
        self.strings.len()
    }

    /// Drops every string `keep` refuses; returns the new id of each old id (0 for a dropped
    /// one). Holders of ids must remap theirs with it.
    pub(crate) fn compact(&mut self, keep: impl Fn(u32) -> bool) -> Vec<u32> {
        let old = std::mem::take(self);
        let mut remap = vec![0u32; old.strings.len()];
        for (i, s) in old.strings.into_iter().enumerate().skip(1) {
            if keep(i as u32) {
                remap[i] = self.intern(&s).0;
            }
        }
        remap
    }
}

#[cfg(test)]
mod tests {
    use super::Interner;

    #[test]
    fn compaction_keeps_what_is_asked_and_remaps_it() {
        let mut i = Interner::new();
        let a = i.intern("a").0;
        let b = i.intern("b").0;
        let c = i.intern("c").0;
        let remap = i.compact(|id| id != b);
        assert_eq!(remap[b as usize], 0);
        assert_eq!(i.get(remap[a as usize]), "a");
        assert_eq!(i.get(remap[c as usize]), "c");
        assert_eq!(i.len(), 3);
        assert_eq!(i.intern("c"), (remap[c as usize], false));
    }

    #[test]
    fn strings_are_stored_once() {
        let mut i = Interner::new();
        assert_eq!(i.intern(""), (0, false));
        let (a, new) = i.intern("/bin/sh");
        assert!(new);
        assert_eq!(i.intern("/bin/sh"), (a, false));
        assert_ne!(i.intern("/bin/true").0, a);
        assert_eq!(i.get(a), "/bin/sh");
        assert_eq!(i.get(99), "");
    }
}
