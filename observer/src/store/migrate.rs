//! Schema 1 → 2, as a file of schema 1 is opened: in one write transaction every entry is
//! decoded as schema 1 and written again as schema 2 (its exec's credentials, executable
//! identity and hash absent: schema 1 did not keep them), every container likewise (its pod
//! unknown), the entries' accounted size recomputed and the version set to 2. A crash
//! before the commit leaves the schema 1 file as it was, to be migrated at the next open;
//! a failure (a full disk) leaves the store unavailable for now, the file untouched — it is
//! never moved aside. An entry that does not decode as schema 1 (there should be none: redb
//! checked every page) is dropped with its index key, and logged.

use redb::{Database, ReadableTable};
use serde::{Deserialize, Serialize};

use super::{
    codec::{self, v1},
    db::{ContainerRec, OpenError, BY_CONTAINER, CONTAINERS, ENTRIES, META},
    write::ENTRY_OVERHEAD,
};

/// A container as schema 1 kept it.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct ContainerRecV1 {
    pub(super) runtime: String,
    pub(super) id: String,
    pub(super) name: Option<String>,
}

/// Entries rewritten per pass (the transaction is one; this bounds what is in memory).
const CHUNK: usize = 4096;

/// Migrates `db` (of schema 1) to schema 2.
pub(super) fn from_v1(db: &Database) -> Result<(), OpenError> {
    let fail = |e: &dyn std::fmt::Display| {
        OpenError::Unavailable(format!("migrating the store from schema 1 to 2: {e}"))
    };
    let w = db.begin_write().map_err(|e| fail(&e))?;
    let (n, dropped, bytes) = entries(&w).map_err(|e| fail(&e))?;
    containers(&w).map_err(|e| fail(&e))?;
    {
        let mut m = w.open_table(META).map_err(|e| fail(&e))?;
        m.insert("bytes", bytes).map_err(|e| fail(&e))?;
        m.insert("version", 2).map_err(|e| fail(&e))?;
    }
    w.commit().map_err(|e| fail(&e))?;
    if dropped > 0 {
        log::warn!("history store: {dropped} entries of schema 1 could not be read: dropped");
    }
    log::info!("history store: migrated {n} entries from schema 1 to 2");
    Ok(())
}

/// Rewrites every entry; returns how many were migrated and dropped, and their accounted
/// size.
fn entries(w: &redb::WriteTransaction) -> Result<(u64, u64, u64), redb::Error> {
    let mut t = w.open_table(ENTRIES)?;
    let mut index = w.open_table(BY_CONTAINER)?;
    let (mut n, mut dropped, mut bytes) = (0, 0, 0);
    let mut from = 0u64;
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        for row in t.range(from..)?.take(CHUNK) {
            let (k, v) = row?;
            chunk.push((k.value(), v.value().to_vec()));
        }
        let Some(&(last, _)) = chunk.last() else {
            break;
        };
        for (seq, old) in chunk {
            match v1::decode(&old) {
                Ok(e) => {
                    let new = e.upgrade().bytes();
                    bytes += new.len() as u64 + ENTRY_OVERHEAD;
                    t.insert(seq, new.as_slice())?;
                    n += 1;
                }
                Err(_) => {
                    t.remove(seq)?;
                    if let Some((c, _, _)) = codec::head(&old) {
                        index.remove((c, seq))?;
                    }
                    dropped += 1;
                }
            }
        }
        match last.checked_add(1) {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok((n, dropped, bytes))
}

/// Rewrites every container (one that does not decode is left: readers skip it).
fn containers(w: &redb::WriteTransaction) -> Result<(), redb::Error> {
    let mut t = w.open_table(CONTAINERS)?;
    let mut all = Vec::new();
    for row in t.iter()? {
        let (k, v) = row?;
        if let Ok(c) = postcard::from_bytes::<ContainerRecV1>(v.value()) {
            all.push((k.value(), c));
        }
    }
    for (k, c) in all {
        let rec = ContainerRec {
            runtime: c.runtime,
            id: c.id,
            name: c.name,
            ..ContainerRec::default()
        };
        t.insert(k, rec.bytes().as_slice())?;
    }
    Ok(())
}
