//! An exported item's OpenTelemetry record, written as protobuf straight from the typed view
//! its JSON line is serialised from (`line.rs`: `EventJson`, `EndedView`, the container's
//! `Names`). The views' own `Serialize` impls drive this encoder (`typed_ser.rs`) as they
//! drive serde_json for the line, so there is still one schema: a key added to a view
//! reaches the line and the record alike, under the names `schema.rs` gives.
//!
//! Why not from the line any more (a line reader, since removed, read it back into a tape): that
//! was 37,000 instructions a record on the storm's mix, a third of it reading back bytes
//! just written, a sixth sorting what was read; this is made in the same pass as the line,
//! from the view already built, and the sink's thread then only puts the line (the body),
//! these attribute bytes and the times around them (docs/export.md, "What it costs").
//!
//! The bytes are the tree builder's (`reference.rs`), to the byte
//! (`equivalence_tests/typed.rs` compares them): members
//! in serde_json `Map` order — sorted by key, the last of equal keys kept — so each object's
//! members are written to a scratch buffer first and copied out in that order when the
//! object ends; nulls left out at the top and in flattened objects, kept (as an empty
//! AnyValue) in lists; a number as serde_json reads it back (an integer, a float, null for
//! a float that is not finite).

use super::{
    schema::{
        attribute_name, event_name, head, int, kind_of, Kind, ATTRIBUTES, BOOL, DOUBLE, KEY,
        KVLIST, OBSERVED_TIME, SCOPE_LOG_RECORDS, STRING, VALUE,
    },
    wire::{self, FIXED64, LEN, VARINT},
};
use crate::{
    export::origin::Names,
    views::{endings::EndedView, event_line::EventJson},
};

/// A view serde would serialize but this encoder does not take (a tuple or struct enum
/// variant, a map key that is not a string or an integer): that item gets no record, and
/// the sink counts it dropped.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unencodable(pub(super) String);

impl serde::ser::Error for Unencodable {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Unencodable(msg.to_string())
    }
}

/// Where a value is written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// A member of the line's object, or of an object in it: attributes named after the
    /// member's dotted path.
    Attr,
    /// An AnyValue in field `.0` (an element of a list, the value of a key-value pair).
    Any(u8),
}

/// A scalar as serde_json would read it back from the line.
#[derive(Clone, Copy)]
pub(super) enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(&'a str),
}

/// A member of an object being written: its key (first 16 bytes for sorting, and where it
/// is in `keys`), where its bytes are in `scratch`, and its place in the object.
#[derive(Clone, Copy)]
pub(super) struct Entry {
    prefix: u128,
    key: (u32, u32),
    bytes: (u32, u32),
    seq: u32,
}

/// What an item's attributes are written with; kept from item to item, so that nothing is
/// allocated once its buffers have grown.
#[derive(Default)]
pub(super) struct Encoder {
    /// The open objects' members' bytes.
    pub(super) scratch: Vec<u8>,
    /// Where a finished object's members are put in order.
    pub(super) tmp: Vec<u8>,
    /// The open objects' members' keys.
    pub(super) keys: String,
    pub(super) entries: Vec<Entry>,
    /// The dotted path of the member being written (Attr mode).
    pub(super) path: String,
    /// The strings of `argv`, joined with spaces (`process.command_line`), and how many.
    pub(super) argv: Vec<u8>,
    pub(super) argv_count: usize,
    pub(super) kind: Option<Kind>,
}

impl Encoder {
    /// A scalar where `mode` says: an attribute named after the path (none for a null), or
    /// an AnyValue.
    pub(super) fn scalar(&mut self, mode: Mode, s: Scalar) {
        match mode {
            Mode::Any(field) => any_scalar(&mut self.scratch, field, s),
            Mode::Attr if matches!(s, Scalar::Null) => {}
            Mode::Attr if self.path == "argv" => {
                // Not a list: an empty command line, and the value as the arguments.
                command_line(&mut self.scratch, b"");
                attribute(&mut self.scratch, ["process.command_args", "", ""], |o| {
                    any_scalar(o, VALUE, s);
                });
            }
            Mode::Attr => {
                let Encoder {
                    scratch,
                    path,
                    kind,
                    ..
                } = self;
                let name = attribute_name(kind.unwrap_or(Kind::OtherEvent), path);
                attribute(scratch, name, |o| any_scalar(o, VALUE, s));
            }
        }
    }

    /// Appends `key` to `keys`: where it is.
    pub(super) fn key(&mut self, key: &str) -> (u32, u32) {
        let start = self.keys.len() as u32;
        self.keys.push_str(key);
        (start, self.keys.len() as u32)
    }

    pub(super) fn key_text(&self, k: (u32, u32)) -> &str {
        &self.keys[k.0 as usize..k.1 as usize]
    }

    /// Records a member whose bytes went into `scratch` from `start`.
    pub(super) fn entry(&mut self, key: (u32, u32), start: usize, seq: u32) {
        let prefix = prefix(self.key_text(key));
        self.entries.push(Entry {
            prefix,
            key,
            bytes: (start as u32, self.scratch.len() as u32),
            seq,
        });
    }

    /// The object whose members are `entries[from..]` (bytes from `bytes_from`, keys from
    /// `keys_from`) ends: its members in order, the last of equal keys kept, in place of
    /// what was written — in Any mode as an AnyValue of a key-value list — or, for the
    /// line's own object (`top`), in `tmp` (`attributes`), copied once less.
    pub(super) fn close(
        &mut self,
        mode: Mode,
        top: bool,
        from: usize,
        bytes_from: usize,
        keys_from: usize,
    ) {
        let Encoder {
            scratch,
            tmp,
            keys,
            entries,
            ..
        } = self;
        let text = |k: (u32, u32)| &keys.as_bytes()[k.0 as usize..k.1 as usize];
        let members = &mut entries[from..];
        // By the keys' first 16 bytes (one integer comparison), then, where they tie, by
        // the whole key: with the place in the object last, the order is total.
        members.sort_unstable_by_key(|m| (m.prefix, m.seq));
        let mut i = 0;
        while i < members.len() {
            let run = members[i..]
                .iter()
                .take_while(|m| m.prefix == members[i].prefix)
                .count();
            if run > 1 {
                members[i..i + run]
                    .sort_unstable_by(|a, b| text(a.key).cmp(text(b.key)).then(a.seq.cmp(&b.seq)));
            }
            i += run;
        }
        tmp.clear();
        for (i, m) in members.iter().enumerate() {
            let next_same = members
                .get(i + 1)
                .is_some_and(|n| n.prefix == m.prefix && text(n.key) == text(m.key));
            if !next_same {
                tmp.extend_from_slice(&scratch[m.bytes.0 as usize..m.bytes.1 as usize]);
            }
        }
        entries.truncate(from);
        keys.truncate(keys_from);
        scratch.truncate(bytes_from);
        if top {
            return;
        }
        if let Mode::Any(field) = mode {
            let list = tmp.len() as u64;
            wire::key(scratch, field, LEN);
            wire::varint(scratch, 1 + wire::varint_len(list) as u64 + list);
            wire::key(scratch, KVLIST, LEN);
            wire::varint(scratch, list);
        }
        scratch.extend_from_slice(tmp);
    }

    /// The attributes of the line's object, once `object` has written them.
    pub(super) fn attributes(&self) -> &[u8] {
        &self.tmp
    }

    /// `argv`'s list, written from `start` as `process.command_args`, ends: the command line
    /// of its strings goes in front of it (as the tree builder writes them).
    pub(super) fn argv_done(&mut self, start: usize) {
        self.tmp.clear();
        self.tmp.extend_from_slice(&self.scratch[start..]);
        self.scratch.truncate(start);
        command_line(&mut self.scratch, &self.argv);
        self.scratch.extend_from_slice(&self.tmp);
    }

    /// The element just written from `start`, if it is an AnyValue of a string: added to
    /// the command line.
    pub(super) fn argv_element(&mut self, start: usize) {
        let b = &self.scratch[start..];
        let Some(s) = any_string(b) else { return };
        if self.argv_count > 0 {
            self.argv.push(b' ');
        }
        self.argv.extend_from_slice(s);
        self.argv_count += 1;
    }
}

/// A KeyValue of LogRecord's attributes: its key in parts, its value written by `value`
/// (field VALUE).
pub(super) fn attribute(out: &mut Vec<u8>, key: [&str; 3], value: impl FnOnce(&mut Vec<u8>)) {
    let kv = wire::begin(out, ATTRIBUTES, 1);
    let len = key[0].len() + key[1].len() + key[2].len();
    wire::key(out, KEY, LEN);
    wire::varint(out, len as u64);
    for k in key {
        out.extend_from_slice(k.as_bytes());
    }
    value(out);
    wire::end(out, kv);
}

/// `process.command_line`: `argv`'s strings, joined.
fn command_line(out: &mut Vec<u8>, joined: &[u8]) {
    let len = joined.len() as u64;
    let kv = wire::begin(out, ATTRIBUTES, 1);
    wire::bytes(out, KEY, b"process.command_line");
    wire::key(out, VALUE, LEN);
    wire::varint(out, 1 + wire::varint_len(len) as u64 + len);
    wire::bytes(out, STRING, joined);
    wire::end(out, kv);
}

/// Field `field`: scalar `s` as an AnyValue, whose length is known (written at once).
pub(super) fn any_scalar(out: &mut Vec<u8>, field: u8, s: Scalar) {
    wire::key(out, field, LEN);
    match s {
        Scalar::Null => out.push(0),
        Scalar::Bool(b) => out.extend_from_slice(&[2, (BOOL << 3) | VARINT, u8::from(b)]),
        Scalar::Double(f) => {
            out.extend_from_slice(&[9, (DOUBLE << 3) | FIXED64]);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Scalar::Int(i) => int(out, i),
        Scalar::Str(t) => {
            let b = t.as_bytes();
            wire::varint(out, (1 + wire::varint_len(b.len() as u64) + b.len()) as u64);
            wire::bytes(out, STRING, b);
        }
    }
}

/// The string of `b` if it is exactly one AnyValue field holding a string.
fn any_string(b: &[u8]) -> Option<&[u8]> {
    let (&k, rest) = b.split_first()?;
    let (len, rest) = read_varint(rest)?;
    if k & 7 != LEN || rest.len() as u64 != len {
        return None;
    }
    let (&k, rest) = rest.split_first()?;
    let (len, rest) = read_varint(rest)?;
    (k == (STRING << 3) | LEN && rest.len() as u64 == len).then_some(rest)
}

fn read_varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, &x) in b.iter().enumerate().take(10) {
        v |= u64::from(x & 0x7f) << (7 * i);
        if x < 0x80 {
            return Some((v, &b[i + 1..]));
        }
    }
    None
}

/// A key's first 16 bytes as a big-endian number (zero-padded): ordering these orders the
/// keys, up to ties.
fn prefix(key: &str) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key.as_bytes()[..n]);
    u128::from_be_bytes(b)
}

/// What a record needs besides its attributes and body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head {
    /// Boot-clock ns: an event's time, a history entry's end.
    pub(super) time_ns: u64,
    pub(super) warn: bool,
    /// The event's type (None: a history entry).
    pub(super) event_type: Option<&'static str>,
}

/// The most each of a kept encoder's buffers keeps: an item of the storm takes ~2 KB; one
/// with names of megabytes (a runtime's state file may hold 16 MiB) is written as it is,
/// but its buffers are not kept from batch to batch.
const ENCODER_KEEP: usize = 1 << 20;

impl Encoder {
    /// Done with (the last item's attributes taken): emptied, its buffers down to
    /// ENCODER_KEEP.
    fn shrink(&mut self) {
        for b in [&mut self.scratch, &mut self.tmp, &mut self.argv] {
            b.clear();
        }
        self.keys.clear();
        self.path.clear();
        self.entries.clear();
        self.scratch.shrink_to(ENCODER_KEEP);
        self.tmp.shrink_to(ENCODER_KEEP);
        self.keys.shrink_to(ENCODER_KEEP);
        self.path.shrink_to(ENCODER_KEEP);
        self.argv.shrink_to(ENCODER_KEEP);
        self.entries
            .shrink_to(ENCODER_KEEP / std::mem::size_of::<Entry>());
    }

    /// The bytes its buffers hold on to.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.scratch.capacity()
            + self.tmp.capacity()
            + self.keys.capacity()
            + self.path.capacity()
            + self.argv.capacity()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
    }
}

/// The bytes this thread's kept encoder holds on to (none kept: 0).
#[cfg(test)]
pub(super) fn kept_capacity() -> usize {
    let enc = ENCODER.take();
    let n = enc.as_ref().map_or(0, Encoder::capacity);
    ENCODER.set(enc);
    n
}

thread_local! {
    /// The encoder of the thread making a batch's lines (a sink's), kept from batch to
    /// batch: a new one for every drain's batch regrew its buffers each time (their
    /// reallocation and copying showed in the sink's profile).
    static ENCODER: std::cell::Cell<Option<Encoder>> = const { std::cell::Cell::new(None) };
}

/// An item's record besides its body: its attributes and its head.
pub(crate) type Part<'a> = (&'a [u8], Head);

/// The records' attributes of a batch's items, in one buffer, made with their lines.
#[derive(Default)]
pub(crate) struct Records {
    attrs: Vec<u8>,
    /// Per item: where its attributes are and its head; None when it has no record.
    parts: Vec<Option<(usize, usize, Head)>>,
    enc: Encoder,
}

impl Records {
    /// Records for `n` items, with this thread's kept encoder (`made` gives it back).
    pub(crate) fn for_items(n: usize) -> Records {
        Records {
            // About what a storm's record takes: the buffer seldom grows.
            attrs: Vec::with_capacity(n * 768),
            parts: Vec::with_capacity(n),
            enc: ENCODER.take().unwrap_or_default(),
        }
    }

    /// Every item's attributes are made: the encoder goes back to this thread, without
    /// what an item larger than ENCODER_KEEP grew it by.
    pub(crate) fn made(&mut self) {
        let mut enc = std::mem::take(&mut self.enc);
        enc.shrink();
        ENCODER.set(Some(enc));
    }

    /// The record of an event line: `schema`, the container's `names`, then the event.
    pub(crate) fn event(&mut self, schema: &'static str, names: Option<&Names>, ev: &EventJson) {
        let kind = kind_of(Some(ev.kind));
        let made = self.enc.object(kind, |o| {
            o.member("schema", schema)?;
            if let Some(n) = names {
                o.flatten(n)?;
            }
            o.flatten(ev)
        });
        let head = Head {
            time_ns: ev.time_ns,
            warn: kind == Kind::Oom,
            event_type: Some(ev.kind),
        };
        self.done(made, head, None);
    }

    /// The record of a history line; a history entry names its parent first in its chain
    /// (none for a container's PID 1, whose parent is outside it).
    pub(crate) fn history(&mut self, schema: &'static str, names: &Names, e: &EndedView) {
        let made = self.enc.object(Kind::History, |o| {
            o.member("schema", schema)?;
            o.flatten(names)?;
            o.flatten(e)
        });
        let head = Head {
            time_ns: e.end_time_ns,
            warn: e.failed,
            event_type: None,
        };
        self.done(made, head, e.parents.first().map(|p| p.pid));
    }

    /// An item without a record (its line could not be made).
    pub(crate) fn none(&mut self) {
        self.parts.push(None);
    }

    fn done(&mut self, made: Result<(), Unencodable>, head: Head, parent_pid: Option<u32>) {
        if made.is_err() {
            self.parts.push(None);
            return;
        }
        let start = self.attrs.len();
        self.attrs.extend_from_slice(self.enc.attributes());
        if let Some(ppid) = parent_pid {
            attribute(&mut self.attrs, ["process.parent_pid", "", ""], |o| {
                any_scalar(o, VALUE, Scalar::Int(i64::from(ppid)));
            });
        }
        self.parts.push(Some((start, self.attrs.len(), head)));
    }

    /// Item `i`'s attributes and head, if it has a record.
    pub(crate) fn get(&self, i: usize) -> Option<Part<'_>> {
        let (start, end, head) = (*self.parts.get(i)?)?;
        Some((&self.attrs[start..end], head))
    }
}

/// Appends the record of an item to `out` as ScopeLogs' field 2: its `line` (without its
/// newline) as the body, its `attrs`; `unix_offset_ns` turns the boot clock into Unix time,
/// `now_unix_ns` is when it was observed.
pub(super) fn write(
    out: &mut Vec<u8>,
    line: &[u8],
    (attrs, h): Part,
    unix_offset_ns: u64,
    now_unix_ns: u64,
) {
    let record = wire::begin(out, SCOPE_LOG_RECORDS, 2);
    head(out, h.time_ns.saturating_add(unix_offset_ns), h.warn, line);
    out.extend_from_slice(attrs);
    if now_unix_ns != 0 {
        wire::fixed64(out, OBSERVED_TIME, now_unix_ns);
    }
    event_name(out, h.event_type);
    wire::end(out, record);
}
