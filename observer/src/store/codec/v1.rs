//! Schema 1's entry: what schema 2 keeps first, without the exec's credentials, executable
//! identity and hash. Read only to migrate a schema 1 file (migrate.rs); written only by
//! tests (a schema 1 file to migrate).

use serde::{Deserialize, Serialize};

use super::{Body, Entry};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(in crate::store) struct EntryV1 {
    container: u32,
    boot: u32,
    end_ns: u64,
    body: Body,
}

/// Decodes schema 1 bytes (any bytes: an error, never a panic).
pub(in crate::store) fn decode(bytes: &[u8]) -> Result<EntryV1, postcard::Error> {
    postcard::from_bytes(bytes)
}

impl EntryV1 {
    /// The schema 2 entry: the same, its credentials, executable identity and hash absent.
    pub(in crate::store) fn upgrade(self) -> Entry {
        Entry {
            container: self.container,
            boot: self.boot,
            end_ns: self.end_ns,
            body: self.body,
            exec: None,
            hash: None,
            session: None,
        }
    }
}

/// The schema 1 bytes of `e` (a file as an agent of schema 1 wrote it).
#[cfg(test)]
pub(in crate::store) fn encode(
    e: &crate::table::history::Ended,
    container: u32,
    boot: u32,
    refs: &mut dyn super::Refs,
) -> Vec<u8> {
    let entry = EntryV1 {
        container,
        boot,
        end_ns: e.end_ns,
        body: super::body(e, refs),
    };
    postcard::to_allocvec(&entry).unwrap_or_default()
}
