//! Protobuf written straight into one buffer: the few primitives the OTLP records need
//! (varints, keys, fixed64, length-delimited fields) and the request around a batch of
//! records. Our own ten-line varint rather than `prost::encoding`'s: that module is
//! `#[doc(hidden)]`, outside prost's stable API.
//!
//! A nested message's length comes before its content, and computing it first (prost's
//! `encoded_len` walk) walks every record twice. Here a field reserves the bytes its length
//! usually takes, its content is written, and `end` writes the length — moving the content
//! only when the guess was wrong (a nested value of 128 bytes or more in a 1-byte slot).
//! The output is canonical protobuf, the very bytes prost writes for the same message:
//! `equivalence_tests.rs` compares them.

use opentelemetry_proto::tonic::{common::v1::InstrumentationScope, resource::v1::Resource};
use prost::Message;

/// Protobuf wire types used here.
pub(super) const VARINT: u8 = 0;
pub(super) const FIXED64: u8 = 1;
pub(super) const LEN: u8 = 2;

/// The longest varint (a u64).
const MAX_VARINT: usize = 10;

/// The most a request's buffer keeps between batches: about three of the storm's batches
/// (2,048 records of ~1,300 bytes). A batch of larger records — long names from a runtime's
/// state files, paths and argv of control bytes that the line escapes six times over —
/// grows it as far as it needs, and the next batch gives the excess back instead of the
/// agent keeping its largest batch ever for good.
pub(super) const KEEP: usize = 8 << 20;

/// The key of field `field` (< 16: every field number used here is) of wire type `wt`.
pub(super) fn key(out: &mut Vec<u8>, field: u8, wt: u8) {
    debug_assert!(field < 16);
    out.push((field << 3) | wt);
}

pub(super) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes `v` takes as a varint.
pub(super) const fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

pub(super) fn fixed64(out: &mut Vec<u8>, field: u8, v: u64) {
    key(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

/// A length-delimited field whose content is `bytes` (a string, or an encoded message).
pub(super) fn bytes(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    key(out, field, LEN);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A nested message being written: where its length goes and the bytes reserved for it.
#[must_use = "a nested field is finished with `end`"]
pub(super) struct Mark {
    at: usize,
    reserved: usize,
}

/// Starts length-delimited field `field`, reserving `reserved` bytes for its length.
pub(super) fn begin(out: &mut Vec<u8>, field: u8, reserved: usize) -> Mark {
    key(out, field, LEN);
    let at = out.len();
    out.resize(at + reserved, 0);
    Mark { at, reserved }
}

/// Ends the field `m` began: its length in front of what was written since.
pub(super) fn end(out: &mut Vec<u8>, m: Mark) {
    let content = m.at + m.reserved;
    let len = out.len() - content;
    if m.reserved == 1 && len < 0x80 {
        // The usual case.
        out[m.at] = len as u8;
        return;
    }
    let need = varint_len(len as u64);
    if need > m.reserved {
        out.resize(out.len() + need - m.reserved, 0);
        out.copy_within(content..content + len, m.at + need);
    } else if need < m.reserved {
        out.copy_within(content.., m.at + need);
        out.truncate(m.at + need + len);
    }
    let mut v = len as u64;
    for b in &mut out[m.at..m.at + need] {
        *b = (v as u8 & 0x7f) | if v >= 0x80 { 0x80 } else { 0 };
        v >>= 7;
    }
}

/// One ExportLogsServiceRequest being written: its records go straight into `out` after
/// room for the request's head, which `finish` writes in front of them once their length
/// is known. The buffer is kept from batch to batch.
pub(super) struct Request {
    out: Vec<u8>,
    /// ResourceLogs field 1, the node (`Resource`), encoded once.
    resource: Vec<u8>,
    /// ScopeLogs field 1, observer's scope, encoded once.
    scope: Vec<u8>,
    records: usize,
}

impl Request {
    pub(super) fn new(resource: &Resource) -> Request {
        let scope = InstrumentationScope {
            name: "observer".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..InstrumentationScope::default()
        };
        let field = |m: Vec<u8>| {
            let mut f = Vec::with_capacity(m.len() + 1 + MAX_VARINT);
            bytes(&mut f, 1, &m);
            f
        };
        let mut r = Request {
            out: Vec::new(),
            resource: field(resource.encode_to_vec()),
            scope: field(scope.encode_to_vec()),
            records: 0,
        };
        r.clear();
        r
    }

    /// Room for the head: resource_logs' key and length, the resource, scope_logs' key
    /// and length.
    fn head_room(&self) -> usize {
        1 + MAX_VARINT + self.resource.len() + 1 + MAX_VARINT
    }

    /// An empty request (its buffer back to KEEP if a batch grew it beyond).
    pub(super) fn clear(&mut self) {
        self.out.clear();
        self.out.shrink_to(KEEP);
        self.out.resize(self.head_room(), 0);
        self.out.extend_from_slice(&self.scope);
        self.records = 0;
    }

    /// The records written so far.
    pub(super) fn len(&self) -> usize {
        self.records
    }

    /// The buffer a record (ScopeLogs field 2) is appended to, with a function that
    /// appends it and says whether it did (out unchanged when not).
    pub(super) fn push(&mut self, f: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        let ok = f(&mut self.out);
        self.records += usize::from(ok);
        ok
    }

    /// The whole encoded request: ExportLogsServiceRequest { resource_logs: [ResourceLogs {
    /// resource, scope_logs: [ScopeLogs { scope, log_records }] }] }.
    pub(super) fn finish(&mut self) -> &[u8] {
        let room = self.head_room();
        let scope_logs = (self.out.len() - room) as u64;
        let resource_logs =
            self.resource.len() as u64 + 1 + varint_len(scope_logs) as u64 + scope_logs;
        let mut head = Vec::with_capacity(room);
        key(&mut head, 1, LEN);
        varint(&mut head, resource_logs);
        head.extend_from_slice(&self.resource);
        key(&mut head, 2, LEN);
        varint(&mut head, scope_logs);
        let start = room - head.len();
        self.out[start..room].copy_from_slice(&head);
        &self.out[start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_batch_does_not_stay_in_the_kept_buffer() {
        let mut r = Request::new(&Resource::default());
        let record = vec![b'x'; 1 << 20];
        for _ in 0..2 * KEEP / record.len() {
            r.push(|out| {
                bytes(out, 2, &record);
                true
            });
        }
        assert!(r.finish().len() > 2 * KEEP);
        r.clear();
        assert!(r.out.capacity() <= KEEP, "{}", r.out.capacity());
        // A batch within KEEP keeps its buffer: no allocation from batch to batch.
        r.push(|out| {
            bytes(out, 2, &record);
            true
        });
        let _ = r.finish();
        let (at, cap) = (r.out.as_ptr(), r.out.capacity());
        r.clear();
        assert_eq!((r.out.as_ptr(), r.out.capacity()), (at, cap));
    }

    #[test]
    fn varints_and_nested_lengths_are_protobufs_own() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut a = Vec::new();
            varint(&mut a, v);
            let mut b = Vec::new();
            prost::encoding::encode_varint(v, &mut b);
            assert_eq!(a, b, "{v}");
            assert_eq!(varint_len(v), b.len(), "{v}");
        }
        // Every content length across the 1-, 2- and 3-byte boundaries, from every guess.
        for len in [0, 1, 127, 128, 129, 16_383, 16_384, 20_000] {
            for reserved in 0..=3 {
                let mut out = vec![0xee];
                let m = begin(&mut out, 5, reserved);
                out.extend((0..len).map(|i| i as u8));
                end(&mut out, m);
                let mut want = vec![0xee];
                prost::encoding::bytes::encode(
                    5,
                    &(0..len).map(|i| i as u8).collect::<Vec<u8>>(),
                    &mut want,
                );
                assert_eq!(out, want, "len {len}, reserved {reserved}");
            }
        }
    }
}
