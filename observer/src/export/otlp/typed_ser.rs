//! The serde side of the typed encoder (`typed.rs`): serializers that take a view's values
//! where the JSON line has them and write them as the tree builder would — objects
//! flattened into dotted attributes at the top, lists as ArrayValues, objects in lists as
//! key-value lists — mirroring serde_json's data model (unit and None are null, a unit
//! variant is its name, a newtype variant an object of one member, bytes a list of
//! integers, integer map keys their decimal text).

use serde::{
    ser::{
        Impossible, SerializeMap, SerializeSeq, SerializeStruct, SerializeTuple,
        SerializeTupleStruct,
    },
    Serialize, Serializer,
};

use super::{
    schema::{attribute_name, key_field, Kind, ARRAY, ATTRIBUTES, KEY, VALUE, VALUES},
    typed::{Encoder, Mode, Scalar, Unencodable},
    typed_flat::{Key, Members},
    wire::{self, LEN},
};

pub(super) type Result<T> = std::result::Result<T, Unencodable>;

impl Encoder {
    /// Writes the attributes of one line's object (`attributes`): `f` adds its members; on
    /// an error there are none.
    pub(super) fn object(
        &mut self,
        kind: Kind,
        f: impl FnOnce(&mut Obj) -> Result<()>,
    ) -> Result<()> {
        self.kind = Some(kind);
        self.scratch.clear();
        self.keys.clear();
        self.entries.clear();
        self.path.clear();
        let mut top = Obj::open(self, Mode::Attr);
        top.top = true;
        let r = f(&mut top).and_then(|()| SerializeMap::end(top));
        if r.is_err() {
            self.tmp.clear();
        }
        r
    }
}

/// An object being written: its members' entries from `from`, bytes from `bytes_from`,
/// keys from `keys_from`; a map's key waiting for its value.
pub(super) struct Obj<'e> {
    enc: &'e mut Encoder,
    mode: Mode,
    from: usize,
    bytes_from: usize,
    keys_from: usize,
    seq: u32,
    pending: Option<(u32, u32)>,
    /// The line's own object (its attributes end in `tmp`).
    top: bool,
}

impl<'e> Obj<'e> {
    fn open(enc: &'e mut Encoder, mode: Mode) -> Obj<'e> {
        Obj {
            from: enc.entries.len(),
            bytes_from: enc.scratch.len(),
            keys_from: enc.keys.len(),
            enc,
            mode,
            seq: 0,
            pending: None,
            top: false,
        }
    }

    pub(super) fn member<T: Serialize + ?Sized>(&mut self, key: &str, v: &T) -> Result<()> {
        let k = self.enc.key(key);
        self.value(k, v)
    }

    /// `v`'s members (a struct or a map) as members of this object, as serde's `flatten`.
    pub(super) fn flatten<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        v.serialize(Members(self))
    }

    /// The value of member `k` (its key already in `keys`).
    fn value<T: Serialize + ?Sized>(&mut self, k: (u32, u32), v: &T) -> Result<()> {
        let enc = &mut *self.enc;
        let start = enc.scratch.len();
        match self.mode {
            Mode::Attr => {
                let len = enc.path.len();
                if len > 0 {
                    enc.path.push('.');
                }
                let (a, b) = (k.0 as usize, k.1 as usize);
                let Encoder { path, keys, .. } = enc;
                path.push_str(&keys[a..b]);
                v.serialize(Value {
                    enc: &mut *enc,
                    mode: Mode::Attr,
                })?;
                enc.path.truncate(len);
            }
            Mode::Any(_) => {
                let kv = wire::begin(&mut enc.scratch, VALUES, 1);
                let (a, b) = (k.0 as usize, k.1 as usize);
                let Encoder { scratch, keys, .. } = enc;
                key_field(scratch, &keys[a..b]);
                v.serialize(Value {
                    enc: &mut *enc,
                    mode: Mode::Any(VALUE),
                })?;
                wire::end(&mut enc.scratch, kv);
            }
        }
        enc.entry(k, start, self.seq);
        self.seq += 1;
        Ok(())
    }
}

impl SerializeStruct for Obj<'_> {
    type Ok = ();
    type Error = Unencodable;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<()> {
        self.member(key, v)
    }

    fn end(self) -> Result<()> {
        SerializeMap::end(self)
    }
}

impl SerializeMap for Obj<'_> {
    type Ok = ();
    type Error = Unencodable;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        let start = self.enc.keys.len() as u32;
        key.serialize(Key(&mut self.enc.keys))?;
        self.pending = Some((start, self.enc.keys.len() as u32));
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        let k = self
            .pending
            .take()
            .ok_or_else(|| Unencodable("a map value without its key".into()))?;
        self.value(k, v)
    }

    fn end(self) -> Result<()> {
        self.enc.close(
            self.mode,
            self.top,
            self.from,
            self.bytes_from,
            self.keys_from,
        );
        Ok(())
    }
}

/// A list being written; `argv_from`: where `argv`'s attribute began (its command line is
/// put in front of it at the end).
pub(super) struct Seq<'e> {
    enc: &'e mut Encoder,
    marks: [Option<wire::Mark>; 3],
    argv_from: Option<usize>,
}

impl<'e> Seq<'e> {
    fn open(enc: &'e mut Encoder, mode: Mode) -> Seq<'e> {
        let start = enc.scratch.len();
        let (marks, argv_from) = match mode {
            Mode::Attr => {
                let argv = enc.path == "argv";
                let Encoder {
                    scratch,
                    path,
                    kind,
                    ..
                } = &mut *enc;
                let name = if argv {
                    ["process.command_args", "", ""]
                } else {
                    attribute_name(kind.unwrap_or(Kind::OtherEvent), path)
                };
                let kv = wire::begin(scratch, ATTRIBUTES, 1);
                let len = name.iter().map(|p| p.len()).sum::<usize>();
                wire::key(scratch, KEY, LEN);
                wire::varint(scratch, len as u64);
                for p in name {
                    scratch.extend_from_slice(p.as_bytes());
                }
                let m = wire::begin(scratch, VALUE, 1);
                let list = wire::begin(scratch, ARRAY, 1);
                if argv {
                    enc.argv.clear();
                    enc.argv_count = 0;
                }
                ([Some(kv), Some(m), Some(list)], argv.then_some(start))
            }
            Mode::Any(field) => {
                let m = wire::begin(&mut enc.scratch, field, 1);
                let list = wire::begin(&mut enc.scratch, ARRAY, 1);
                ([None, Some(m), Some(list)], None)
            }
        };
        Seq {
            enc,
            marks,
            argv_from,
        }
    }
}

impl SerializeSeq for Seq<'_> {
    type Ok = ();
    type Error = Unencodable;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        let start = self.enc.scratch.len();
        v.serialize(Value {
            enc: &mut *self.enc,
            mode: Mode::Any(VALUES),
        })?;
        if self.argv_from.is_some() {
            self.enc.argv_element(start);
        }
        Ok(())
    }

    fn end(self) -> Result<()> {
        let [kv, m, list] = self.marks;
        for mark in [list, m, kv].into_iter().flatten() {
            wire::end(&mut self.enc.scratch, mark);
        }
        if let Some(start) = self.argv_from {
            self.enc.argv_done(start);
        }
        Ok(())
    }
}

impl SerializeTuple for Seq<'_> {
    type Ok = ();
    type Error = Unencodable;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        SerializeSeq::serialize_element(self, v)
    }

    fn end(self) -> Result<()> {
        SerializeSeq::end(self)
    }
}

impl SerializeTupleStruct for Seq<'_> {
    type Ok = ();
    type Error = Unencodable;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        SerializeSeq::serialize_element(self, v)
    }

    fn end(self) -> Result<()> {
        SerializeSeq::end(self)
    }
}

pub(super) fn unsupported<T>(what: &str) -> Result<T> {
    Err(Unencodable(format!("{what} is not encoded as OTLP")))
}

/// A value where `mode` says.
struct Value<'e> {
    enc: &'e mut Encoder,
    mode: Mode,
}

impl Value<'_> {
    fn scalar(self, s: Scalar) {
        self.enc.scalar(self.mode, s);
    }
}

/// An integer as the line has it: i64, or i64::MAX for a larger u64 (as the OTLP int64).
fn int<T: TryInto<i64>>(v: T) -> Scalar<'static> {
    Scalar::Int(v.try_into().unwrap_or(i64::MAX))
}

impl<'e> Serializer for Value<'e> {
    type Ok = ();
    type Error = Unencodable;
    type SerializeSeq = Seq<'e>;
    type SerializeTuple = Seq<'e>;
    type SerializeTupleStruct = Seq<'e>;
    type SerializeTupleVariant = Impossible<(), Unencodable>;
    type SerializeMap = Obj<'e>;
    type SerializeStruct = Obj<'e>;
    type SerializeStructVariant = Impossible<(), Unencodable>;

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.scalar(Scalar::Bool(v));
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<()> {
        self.scalar(int(v));
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<()> {
        self.scalar(int(v));
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<()> {
        self.scalar(int(v));
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<()> {
        self.scalar(int(v));
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<()> {
        self.scalar(int(v));
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<()> {
        self.scalar(int(v));
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<()> {
        self.scalar(int(v));
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<()> {
        self.scalar(int(v));
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<()> {
        // serde_json writes an f32's shortest text, which reads back as this f64.
        let back = v.to_string().parse::<f64>().unwrap_or(f64::NAN);
        self.serialize_f64(if v.is_finite() { back } else { f64::NAN })
    }
    fn serialize_f64(self, v: f64) -> Result<()> {
        // serde_json writes a float that is not finite as null.
        self.scalar(if v.is_finite() {
            Scalar::Double(v)
        } else {
            Scalar::Null
        });
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<()> {
        self.scalar(Scalar::Str(v.encode_utf8(&mut [0; 4])));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        self.scalar(Scalar::Str(v));
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        let mut s = self.serialize_seq(Some(v.len()))?;
        for b in v {
            SerializeSeq::serialize_element(&mut s, b)?;
        }
        SerializeSeq::end(s)
    }
    fn serialize_none(self) -> Result<()> {
        self.scalar(Scalar::Null);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<()> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        self.scalar(Scalar::Null);
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<()> {
        self.scalar(Scalar::Null);
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<()> {
        self.scalar(Scalar::Str(variant));
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
        let mut o = Obj::open(self.enc, self.mode);
        o.member(variant, v)?;
        SerializeMap::end(o)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Seq<'e>> {
        Ok(Seq::open(self.enc, self.mode))
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'e>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Seq<'e>> {
        self.serialize_seq(Some(len))
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
    fn serialize_map(self, _: Option<usize>) -> Result<Obj<'e>> {
        Ok(Obj::open(self.enc, self.mode))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Obj<'e>> {
        Ok(Obj::open(self.enc, self.mode))
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
