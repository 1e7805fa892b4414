//! One exported item as an OpenTelemetry log record. The record is made from the very JSON
//! line the file sink writes (`line::write`): its body is that line, and its attributes are
//! the line's members under OpenTelemetry's semantic-convention names where one exists
//! (`process.pid`, `container.name`, `k8s.pod.name`, …) and `observer.<key>` otherwise,
//! nested objects flattened with dots. One schema serves both sinks, and a key added to
//! the line reaches the collector without a change here. docs/export.md has the table.
//!
//! The record is written as protobuf straight into the request's buffer (`wire.rs`) from
//! a tape of the line (`json.rs`): no serde_json tree, no `LogRecord` with a String per
//! attribute, no second walk for lengths (about 7x less CPU a record than before:
//! docs/export.md, "What it costs"). Why from the line and not from the typed item
//! `line::write` serialises: the line is needed anyway (it is the body), reading back
//! bytes we just wrote costs little, and a second serialisation of the views' types would
//! be a second schema to keep in step with the first. Members come in serde_json `Map`
//! order — sorted by key, the last of equal keys kept — as the records built from its
//! tree had them (`reference.rs`, the old builder, is what `equivalence_tests.rs` holds
//! these bytes to).

use super::{
    json::{Doc, Node, Num, Tape, Text},
    schema::{
        attribute_name, event_name, head, int, key_field, kind_of, Kind, ARRAY, ATTRIBUTES, BOOL,
        DOUBLE, KEY, KVLIST, OBSERVED_TIME, SCOPE_LOG_RECORDS, STRING, VALUE, VALUES,
    },
    wire::{self, FIXED64, LEN, VARINT},
};

/// An object's member: its key (and the key's first 16 bytes, for sorting) and the node
/// of its value.
#[derive(Clone, Copy)]
struct Member {
    prefix: u128,
    key: Text,
    value: usize,
}

/// What records reuse: the tape, the members of the objects being written, the dotted
/// path of a nested member.
#[derive(Default)]
pub(super) struct Scratch {
    tape: Tape,
    members: Vec<Member>,
    path: String,
}

/// Appends the record of one JSON `line` (without its newline) to `out` as ScopeLogs'
/// field 2; false (nothing appended) when the line is not a JSON object. `unix_offset_ns`
/// turns the boot clock of its times into Unix time; `now_unix_ns` is when it was observed.
pub(super) fn write(
    out: &mut Vec<u8>,
    s: &mut Scratch,
    line: &[u8],
    unix_offset_ns: u64,
    now_unix_ns: u64,
) -> bool {
    let Ok(text) = std::str::from_utf8(line) else {
        return false;
    };
    let Scratch {
        tape,
        members,
        path,
    } = s;
    let Some(doc) = tape.parse(text) else {
        return false;
    };
    if !matches!(doc.node(0), Node::Obj { .. }) {
        return false;
    }
    members.clear();
    sort_members(doc, 0, members);
    let top = members.len();
    let get = |k: &str| find(doc, &members[..top], k);
    let event_type = get("type").and_then(|v| match doc.node(v) {
        Node::Str(t) => Some(doc.text(t)),
        _ => None,
    });
    let kind = kind_of(event_type);
    let time = get(if kind == Kind::History {
        "end_time_ns"
    } else {
        "time_ns"
    })
    .and_then(|v| match doc.node(v) {
        Node::Num(Num::Pos(t)) => Some(t.saturating_add(unix_offset_ns)),
        _ => None,
    })
    .unwrap_or(0);
    let warn = match kind {
        Kind::Oom => true,
        Kind::History => get("failed").is_some_and(|v| matches!(doc.node(v), Node::Bool(true))),
        _ => false,
    };
    let parent_pid = get("parents").and_then(|v| first_parents_pid(doc, v));

    let record = wire::begin(out, SCOPE_LOG_RECORDS, 2);
    head(out, time, warn, line);
    let mut w = Values { out, doc, members };
    for i in 0..top {
        let m = w.members[i];
        let key = doc.text(m.key);
        if let Node::Obj { .. } = doc.node(m.value) {
            path.clear();
            path.push_str(key);
            put_object(&mut w, path, kind, m.value);
        } else {
            put(&mut w, key, kind, m.value);
        }
    }
    // A history entry names its parent first in its chain (none for a container's PID 1,
    // whose parent is outside it).
    if let Some(ppid) = parent_pid {
        w.attribute(["process.parent_pid", "", ""], ppid);
    }
    if now_unix_ns != 0 {
        wire::fixed64(out, OBSERVED_TIME, now_unix_ns);
    }
    event_name(out, event_type);
    wire::end(out, record);
    true
}

/// `parents[0].pid`: the node of the first element's `pid`, when `parents` is a list whose
/// first element is an object with one.
fn first_parents_pid(doc: Doc, parents: usize) -> Option<usize> {
    let Node::Arr { end } = doc.node(parents) else {
        return None;
    };
    let first = parents + 1;
    if first >= end as usize || !matches!(doc.node(first), Node::Obj { .. }) {
        return None;
    }
    let (mut i, end, mut pid) = (first + 1, doc.skip(first), None);
    while i < end {
        if matches!(doc.node(i), Node::Str(k) if doc.text(k) == "pid") {
            pid = Some(i + 1);
        }
        i = doc.skip(i + 1);
    }
    pid
}

/// Appends the members of object `obj` to `members` in serde_json `Map` order.
///
/// Sorted by the keys' first 16 bytes (one integer comparison, which almost always
/// decides), then by the whole key, then by place in the line, so that the order is
/// total and an unstable sort gives the stable one: of equal keys, the last is kept.
fn sort_members(doc: Doc, obj: usize, members: &mut Vec<Member>) {
    let from = members.len();
    let end = doc.skip(obj);
    let mut i = obj + 1;
    while i < end {
        if let Node::Str(key) = doc.node(i) {
            members.push(Member {
                prefix: prefix(doc.text(key)),
                key,
                value: i + 1,
            });
        }
        i = doc.skip(i + 1);
    }
    members[from..].sort_unstable_by(|a, b| {
        a.prefix
            .cmp(&b.prefix)
            .then_with(|| doc.text(a.key).cmp(doc.text(b.key)))
            .then(a.value.cmp(&b.value))
    });
    let mut kept = from;
    for r in from..members.len() {
        let m = members[r];
        let next_same = members
            .get(r + 1)
            .is_some_and(|n| n.prefix == m.prefix && doc.text(n.key) == doc.text(m.key));
        if !next_same {
            members[kept] = m;
            kept += 1;
        }
    }
    members.truncate(kept);
}

/// A key's first 16 bytes as a big-endian number (zero-padded): ordering these orders the
/// keys, up to ties.
fn prefix(key: &str) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key.as_bytes()[..n]);
    u128::from_be_bytes(b)
}

/// The value node of member `key` among sorted `members`.
fn find(doc: Doc, members: &[Member], key: &str) -> Option<usize> {
    let p = prefix(key);
    members
        .binary_search_by(|m| m.prefix.cmp(&p).then_with(|| doc.text(m.key).cmp(key)))
        .ok()
        .map(|i| members[i].value)
}

/// The members of object `v`, member `path` (dotted below the top), as attributes.
fn put_object(w: &mut Values, path: &mut String, kind: Kind, v: usize) {
    let from = w.members.len();
    sort_members(w.doc, v, w.members);
    for j in from..w.members.len() {
        let m = w.members[j];
        let len = path.len();
        path.push('.');
        path.push_str(w.doc.text(m.key));
        if let Node::Obj { .. } = w.doc.node(m.value) {
            put_object(w, path, kind, m.value);
        } else {
            put(w, path, kind, m.value);
        }
        path.truncate(len);
    }
    w.members.truncate(from);
}

/// Member `path` with value node `v` (not an object) as an attribute; a null is none.
fn put(w: &mut Values, path: &str, kind: Kind, v: usize) {
    match w.doc.node(v) {
        Node::Null => {}
        _ if path == "argv" => {
            w.command_line(v);
            w.attribute(["process.command_args", "", ""], v);
        }
        _ => w.attribute(attribute_name(kind, path), v),
    }
}

/// Writes a record's attributes and values.
struct Values<'a, 'd> {
    out: &'a mut Vec<u8>,
    doc: Doc<'d>,
    members: &'a mut Vec<Member>,
}

impl Values<'_, '_> {
    /// A KeyValue of LogRecord's attributes, its key in parts.
    fn attribute(&mut self, key: [&str; 3], v: usize) {
        let kv = wire::begin(self.out, ATTRIBUTES, 1);
        let len = key[0].len() + key[1].len() + key[2].len();
        wire::key(self.out, KEY, LEN);
        wire::varint(self.out, len as u64);
        for k in key {
            self.out.extend_from_slice(k.as_bytes());
        }
        self.any(VALUE, v);
        wire::end(self.out, kv);
    }

    /// `process.command_line`: the strings of `argv` joined with spaces.
    fn command_line(&mut self, argv: usize) {
        let doc = self.doc;
        let args = || {
            elements(doc, argv).filter_map(|i| match doc.node(i) {
                Node::Str(t) => Some(doc.text(t)),
                _ => None,
            })
        };
        let (n, bytes) = args().fold((0, 0), |(n, b), a| (n + 1, b + a.len()));
        let len = bytes + n.max(1) - 1;
        let kv = wire::begin(self.out, ATTRIBUTES, 1);
        wire::bytes(self.out, KEY, b"process.command_line");
        wire::key(self.out, VALUE, LEN);
        wire::varint(self.out, (1 + wire::varint_len(len as u64) + len) as u64);
        wire::key(self.out, STRING, LEN);
        wire::varint(self.out, len as u64);
        for (i, a) in args().enumerate() {
            if i > 0 {
                self.out.push(b' ');
            }
            self.out.extend_from_slice(a.as_bytes());
        }
        wire::end(self.out, kv);
    }

    /// Field `field`: node `v` as an AnyValue — integers stay integers, objects in lists
    /// become key-value lists, null is an AnyValue without a value.
    fn any(&mut self, field: u8, v: usize) {
        match self.doc.node(v) {
            Node::Arr { .. } => {
                let m = wire::begin(self.out, field, 1);
                let list = wire::begin(self.out, ARRAY, 1);
                for e in elements(self.doc, v) {
                    self.any(VALUES, e);
                }
                wire::end(self.out, list);
                wire::end(self.out, m);
            }
            Node::Obj { .. } => {
                let m = wire::begin(self.out, field, 1);
                let list = wire::begin(self.out, KVLIST, 1);
                let from = self.members.len();
                sort_members(self.doc, v, self.members);
                for j in from..self.members.len() {
                    let member = self.members[j];
                    let kv = wire::begin(self.out, VALUES, 1);
                    key_field(self.out, self.doc.text(member.key));
                    self.any(VALUE, member.value);
                    wire::end(self.out, kv);
                }
                self.members.truncate(from);
                wire::end(self.out, list);
                wire::end(self.out, m);
            }
            n => scalar(self.out, self.doc, field, n),
        }
    }
}

/// Field `field`: scalar `n` as an AnyValue, whose length is known (written at once).
fn scalar(out: &mut Vec<u8>, doc: Doc, field: u8, n: Node) {
    wire::key(out, field, LEN);
    match n {
        Node::Null => out.push(0),
        Node::Bool(b) => out.extend_from_slice(&[2, (BOOL << 3) | VARINT, u8::from(b)]),
        Node::Num(Num::Float(f)) => {
            out.extend_from_slice(&[9, (DOUBLE << 3) | FIXED64]);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Node::Num(Num::Pos(u)) => int(out, i64::try_from(u).unwrap_or(i64::MAX)),
        Node::Num(Num::Neg(i)) => int(out, i),
        Node::Str(t) => {
            let s = doc.text(t).as_bytes();
            wire::varint(out, (1 + wire::varint_len(s.len() as u64) + s.len()) as u64);
            wire::bytes(out, STRING, s);
        }
        Node::Arr { .. } | Node::Obj { .. } => unreachable!("lists are Values::any's"),
    }
}

/// The element nodes of list `v` (none if it is not a list).
fn elements<'d>(doc: Doc<'d>, v: usize) -> impl Iterator<Item = usize> + 'd {
    let end = match doc.node(v) {
        Node::Arr { end } => end as usize,
        _ => v + 1,
    };
    std::iter::successors(Some(v + 1), move |&i| (i < end).then(|| doc.skip(i)))
        .take_while(move |&i| i < end)
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
