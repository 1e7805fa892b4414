//! Runtime state files (Docker's config.v2.json, OCI configs and states, podman's
//! containers.json, the launcher's config.json) read within bounds. They are written by
//! daemons, but much of what they hold is chosen by others (container names, labels,
//! annotations, a whole OCI config from a bundle anyone may hand to runc), and a JSON value
//! tree costs many times its text: a 16 MiB file of `[{},{},…]` is about 5 million values.
//! So a file over `MAX_STATE_FILE` is refused before it is read, the rest is parsed as it
//! streams into typed structs holding only the fields observer uses (serde skips every
//! other value without building it), and each string kept is at most `MAX_FIELD` bytes.
//! A field of the wrong type reads as absent ([`Str`], [`Num`], [`Obj`]): the file's other
//! fields still count, never a panic.

use std::{fmt, fs, io::Read, marker::PhantomData, path::Path};

use serde::{
    de::{self, value::MapAccessDeserializer, DeserializeOwned, IgnoredAny, Visitor},
    Deserialize, Deserializer,
};

/// A bigger state file than this is refused (corrupt or hostile: real ones are kilobytes,
/// podman's containers.json about a kilobyte per container).
pub(crate) const MAX_STATE_FILE: u64 = 16 << 20;

/// The most bytes of one string field kept (names, images, annotations): longer ones are
/// cut at a character boundary.
pub(crate) const MAX_FIELD: usize = 4096;

/// Reads `p` as a `T`: None (with a log line saying why) when it is missing, bigger than
/// `MAX_STATE_FILE` or not the JSON expected.
pub(crate) fn read<T: DeserializeOwned>(p: &Path) -> Option<T> {
    let f = fs::File::open(p).ok()?;
    let len = f.metadata().ok()?.len();
    if len > MAX_STATE_FILE {
        log::warn!(
            "ignoring {}: {len} bytes, larger than the {} MiB a runtime state file may have",
            p.display(),
            MAX_STATE_FILE >> 20
        );
        return None;
    }
    // Bounded again while reading: a file that grows meanwhile ends as truncated JSON.
    let reader = std::io::BufReader::new(f.take(MAX_STATE_FILE));
    match serde_json::from_reader(reader) {
        Ok(v) => Some(v),
        Err(e) => {
            log::debug!("ignoring {}: not the JSON expected: {e}", p.display());
            None
        }
    }
}

/// `s`, cut to at most `MAX_FIELD` bytes at a character boundary.
pub(crate) fn capped(s: &str) -> String {
    let mut end = s.len().min(MAX_FIELD);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Skips whatever value a visitor was handed (arrays and objects element by element).
fn drain_seq<'de, A: de::SeqAccess<'de>>(mut a: A) -> Result<(), A::Error> {
    while a.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: de::MapAccess<'de>>(mut a: A) -> Result<(), A::Error> {
    while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Implements the visits of a value of the wrong type: skipped, giving `$none`.
macro_rules! wrong_types {
    ($none:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($none)
        }
    };
}

/// A string field: None when absent or of another type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Str(pub(crate) Option<String>);

impl Str {
    pub(crate) fn get(&self) -> Option<String> {
        self.0.clone()
    }

    pub(crate) fn is(&self, s: &str) -> bool {
        self.0.as_deref() == Some(s)
    }
}

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str, E> {
                Ok(Str(Some(capped(v))))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Str, E> {
                Ok(Str(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Str, E> {
                Ok(Str(None))
            }
            wrong_types!(Str(None));
            fn visit_seq<A: de::SeqAccess<'de>>(self, a: A) -> Result<Str, A::Error> {
                drain_seq(a).map(|_| Str(None))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, a: A) -> Result<Str, A::Error> {
                drain_map(a).map(|_| Str(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A non-negative integer field: None when absent, negative, fractional or of another type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Num(pub(crate) Option<u64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(Some(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(u64::try_from(v).ok()))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Num, E> {
                Ok(Num(None))
            }
            wrong_types!(Num(None));
            fn visit_seq<A: de::SeqAccess<'de>>(self, a: A) -> Result<Num, A::Error> {
                drain_seq(a).map(|_| Num(None))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, a: A) -> Result<Num, A::Error> {
                drain_map(a).map(|_| Num(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// An object field read as `T` (its unknown keys skipped); `T::default()` when absent or
/// not an object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Obj<T>(pub(crate) T);

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, a: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(a)).map(Obj)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Obj<T>, E> {
                Ok(Obj(T::default()))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Obj<T>, E> {
                Ok(Obj(T::default()))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Obj<T>, E> {
                Ok(Obj(T::default()))
            }
            wrong_types!(Obj(T::default()));
            fn visit_seq<A: de::SeqAccess<'de>>(self, a: A) -> Result<Obj<T>, A::Error> {
                drain_seq(a).map(|_| Obj(T::default()))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// The first string of an array field (podman's `names`); the rest skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FirstStr(pub(crate) Option<String>);

impl<'de> Deserialize<'de> for FirstStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FirstStr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<FirstStr, A::Error> {
                let first = a.next_element::<Str>()?.and_then(|s| s.0);
                drain_seq(a).map(|_| FirstStr(first))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<FirstStr, E> {
                Ok(FirstStr(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<FirstStr, E> {
                Ok(FirstStr(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<FirstStr, E> {
                Ok(FirstStr(None))
            }
            wrong_types!(FirstStr(None));
            fn visit_map<A: de::MapAccess<'de>>(self, a: A) -> Result<FirstStr, A::Error> {
                drain_map(a).map(|_| FirstStr(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests;
