//! Two small serializers of the typed encoder: `Members`, which takes a struct's (or a
//! map's) members into an object already open — the container's names and the view on
//! the line's top object, as `line.rs` splices them — and `Key`, a map's key as serde_json
//! writes it (a string; an integer, a bool or a unit variant as its text).

use std::fmt::Write as _;

use serde::{
    ser::{Impossible, SerializeMap, SerializeStruct},
    Serialize, Serializer,
};

use super::{
    typed::Unencodable,
    typed_ser::{unsupported, Obj, Result},
};

/// Members into the open object `.0`; a None or a unit adds none.
pub(super) struct Members<'o, 'e>(pub(super) &'o mut Obj<'e>);

impl SerializeStruct for Members<'_, '_> {
    type Ok = ();
    type Error = Unencodable;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<()> {
        self.0.member(key, v)
    }

    fn end(self) -> Result<()> {
        Ok(())
    }
}

impl SerializeMap for Members<'_, '_> {
    type Ok = ();
    type Error = Unencodable;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        SerializeMap::serialize_key(self.0, key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        SerializeMap::serialize_value(self.0, v)
    }

    fn end(self) -> Result<()> {
        Ok(())
    }
}

/// What is not a struct or a map cannot be taken into an object.
macro_rules! not_an_object {
    ($($f:ident($($t:ty),*)),* $(,)?) => {
        $(fn $f(self, $(_: $t),*) -> Result<()> {
            unsupported("a value that is not an object, where members are taken,")
        })*
    };
}

impl<'o, 'e> Serializer for Members<'o, 'e> {
    type Ok = ();
    type Error = Unencodable;
    type SerializeSeq = Impossible<(), Unencodable>;
    type SerializeTuple = Impossible<(), Unencodable>;
    type SerializeTupleStruct = Impossible<(), Unencodable>;
    type SerializeTupleVariant = Impossible<(), Unencodable>;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Unencodable>;

    not_an_object!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_none(self) -> Result<()> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<()> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<()> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<()> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<()> {
        self.0.member(variant, v)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq> {
        unsupported("a list where members are taken")
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple> {
        unsupported("a tuple where members are taken")
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTuple> {
        unsupported("a tuple where members are taken")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        unsupported("a tuple variant")
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant> {
        unsupported("a struct variant")
    }
}

/// A map's key, appended to the encoder's keys.
pub(super) struct Key<'k>(pub(super) &'k mut String);

impl Key<'_> {
    fn text(self, t: impl std::fmt::Display) {
        let _ = write!(self.0, "{t}");
    }
}

/// What serde_json does not take as a key.
macro_rules! not_a_key {
    ($($f:ident($($t:ty),*)),* $(,)?) => {
        $(fn $f(self, $(_: $t),*) -> Result<()> {
            unsupported("a map key that is not a string")
        })*
    };
}

impl Serializer for Key<'_> {
    type Ok = ();
    type Error = Unencodable;
    type SerializeSeq = Impossible<(), Unencodable>;
    type SerializeTuple = Impossible<(), Unencodable>;
    type SerializeTupleStruct = Impossible<(), Unencodable>;
    type SerializeTupleVariant = Impossible<(), Unencodable>;
    type SerializeMap = Impossible<(), Unencodable>;
    type SerializeStruct = Impossible<(), Unencodable>;
    type SerializeStructVariant = Impossible<(), Unencodable>;

    not_a_key!(
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
    );

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.text(v);
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<()> {
        self.text(v);
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<()> {
        self.text(v);
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<()> {
        self.text(v);
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<()> {
        self.text(v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<()> {
        self.text(v);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<()> {
        self.text(v);
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<()> {
        self.text(v);
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<()> {
        self.text(v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<()> {
        self.text(v);
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        self.0.push_str(v);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<()> {
        unsupported("a map key that is not a string")
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<()> {
        self.0.push_str(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<()> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<()> {
        unsupported("a map key that is not a string")
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq> {
        unsupported("a map key that is not a string")
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple> {
        unsupported("a map key that is not a string")
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTuple> {
        unsupported("a map key that is not a string")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        unsupported("a map key that is not a string")
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap> {
        unsupported("a map key that is not a string")
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct> {
        unsupported("a map key that is not a string")
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant> {
        unsupported("a map key that is not a string")
    }
}
