//! String interning for values many processes share (cgroup paths, executable paths): each
//! distinct string is stored once and referred to by a u32, so the per-event path allocates
//! only the first time a string is seen.

use rustc_hash::FxHashMap;

pub struct Interner {
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
    pub fn new() -> Self {
        Interner {
            strings: vec!["".into()],
            ids: FxHashMap::default(),
        }
    }

    /// The id of `s`, and whether it was new.
    pub fn intern(&mut self, s: &str) -> (u32, bool) {
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

    pub fn get(&self, id: u32) -> &str {
        self.strings.get(id as usize).map(|s| &**s).unwrap_or("")
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.len() <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::Interner;

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
