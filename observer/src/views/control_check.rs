//! Whether a view holds a control character anywhere a terminal would see it: the strings
//! and keys its JSON form has (`Escaped::new` rewrites a view only then). A serde
//! serializer that writes nothing: it visits the view's strings, characters, map keys, field
//! and variant names (what JSON writes as strings) and stops at the first control character
//! (C0, DEL, C1). Serialising a 1,000-process tree to JSON only to look for these cost as
//! much as the rest of its text rendering.

use serde::ser::{self, Serialize};

/// The characters `escaped_json` rewrites: C0, DEL and C1.
fn is_control(c: char) -> bool {
    let c = c as u32;
    c < 0x20 || (0x7f..=0x9f).contains(&c)
}

/// Whether no string of `v`'s serde form (keys and names included) has a control
/// character; false too when `v` fails to serialise (its JSON would say why).
pub(crate) fn is_clean<T: Serialize + ?Sized>(v: &T) -> bool {
    v.serialize(Finder).is_ok()
}

/// Why the walk stopped early: a control character, or the value's own serialiser failed.
#[derive(Debug)]
enum Stop {
    Found,
    Failed,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Found => "a control character",
            Stop::Failed => "the value failed to serialise",
        })
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Stop::Failed
    }
}

#[derive(Clone, Copy)]
struct Finder;

fn text(s: &str) -> Result<(), Stop> {
    // Control characters are all below U+00A0: only bytes < 0x20, 0x7f and the C2 lead
    // byte of U+0080..U+009F can start one.
    if s.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2) && s.chars().any(is_control) {
        return Err(Stop::Found);
    }
    Ok(())
}

macro_rules! nothing_to_see {
    ($($f:ident: $t:ty),*) => {
        $(fn $f(self, _: $t) -> Result<(), Stop> { Ok(()) })*
    };
}

impl ser::Serializer for Finder {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    nothing_to_see!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16,
        serialize_i32: i32, serialize_i64: i64, serialize_i128: i128, serialize_u8: u8,
        serialize_u16: u16, serialize_u32: u32, serialize_u64: u64, serialize_u128: u128,
        serialize_f32: f32, serialize_f64: f64, serialize_bytes: &[u8],
        serialize_unit_struct: &'static str);

    fn serialize_char(self, c: char) -> Result<(), Stop> {
        text(c.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, s: &str) -> Result<(), Stop> {
        text(s)
    }
    fn serialize_none(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Stop> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, v: &'static str) -> Result<(), Stop> {
        text(v)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Stop> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), Stop> {
        text(variant)?;
        v.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Stop> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Stop> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Stop> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, Stop> {
        text(variant).map(|()| self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Stop> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Stop> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, Stop> {
        text(variant).map(|()| self)
    }
}

/// The compound forms: each element, key and value is visited the same way.
macro_rules! compound {
    ($($tr:ident :: $m:ident),*) => {
        $(impl ser::$tr for Finder {
            type Ok = ();
            type Error = Stop;
            fn $m<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Stop> {
                v.serialize(*self)
            }
            fn end(self) -> Result<(), Stop> {
                Ok(())
            }
        })*
    };
}

compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Finder {
    type Ok = ();
    type Error = Stop;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Stop> {
        k.serialize(*self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Stop> {
        v.serialize(*self)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

/// Struct fields (plain and of variants): the field's name as a key, then its value.
macro_rules! fields {
    ($($tr:ident),*) => {
        $(impl ser::$tr for Finder {
            type Ok = ();
            type Error = Stop;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                v: &T,
            ) -> Result<(), Stop> {
                text(key)?;
                v.serialize(*self)
            }
            fn end(self) -> Result<(), Stop> {
                Ok(())
            }
        })*
    };
}

fields!(SerializeStruct, SerializeStructVariant);
