//! The store's file: `history.redb` in the state directory, its tables and schema version,
//! and what happens to a file that is not one this agent can read — truncated, corrupt,
//! another program's, or of a newer schema: it is moved aside as
//! `history.redb.corrupt-<unix ns>` (logged with both paths, counted) and a new store
//! is started, so the agent always starts. A file another agent holds open (redb locks it)
//! or a state directory that cannot be written is left alone: the store is unavailable
//! and the agent runs on its in-memory history.
//!
//! A file of schema 1 is migrated to schema 2 as it is opened (migrate.rs), in one write
//! transaction: never moved aside.
//!
//! Tables (schema version 2):
//! - `meta`: `version` (2), `bytes` (the entries' accounted size), `next_container`;
//! - `boots`: boot number → the boot id (16 bytes) and the wall clock minus the boot clock
//!   (i64 ns, little endian) as last seen in that boot: a stored boot-clock time becomes a
//!   wall-clock time with it;
//! - `containers`: container number → (runtime, id, name when known, Kubernetes namespace,
//!   pod name and uid when known, whether it is the pod's sandbox), postcard; then, added
//!   later in schema 2 (an older agent's postcard ignores trailing bytes), the record's
//!   tail: a bare container's init (its host pid, and its end with that boot's number) and
//!   the names the container had before its current one (a `docker rename`);
//! - `entries`: sequence number (insertion order, so the oldest first) → codec.rs bytes;
//! - `by_container`: (container number, sequence number) → (), the per-container index.

use std::{
    path::{Path, PathBuf},
    sync::atomic::Ordering,
};

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, StorageError, TableDefinition,
};
use serde::{Deserialize, Serialize};

use super::Store as Shared;
use crate::containers::{cgroup::Runtime, names::Meta, ContainerKey};

/// The schema this agent writes. A file without it is moved aside; one with a newer
/// version too (rather than misread); one of version 1 is migrated (migrate.rs).
pub(super) const VERSION: u64 = 2;
pub(super) const FILE: &str = "history.redb";

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const BOOTS: TableDefinition<u32, &[u8]> = TableDefinition::new("boots");
pub(super) const CONTAINERS: TableDefinition<u32, &[u8]> = TableDefinition::new("containers");
pub(super) const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
pub(super) const BY_CONTAINER: TableDefinition<(u32, u64), ()> =
    TableDefinition::new("by_container");

/// redb's page cache: the store is written once a second and read by rare queries.
const CACHE_BYTES: usize = 4 << 20;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// Not a store this agent can read: moved aside.
    #[error("{0}")]
    Unreadable(String),
    /// The file or directory cannot be used now (read-only, full, held by another agent).
    #[error("{0}")]
    Unavailable(String),
}

/// A container as the store keeps it (schema 2; migrate.rs has schema 1's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct ContainerRec {
    pub(super) runtime: String,
    pub(super) id: String,
    pub(super) name: Option<String>,
    /// Its pod's Kubernetes namespace, name and uid, when it is in one.
    pub(super) pod_namespace: Option<String>,
    pub(super) pod: Option<String>,
    pub(super) pod_uid: Option<String>,
    /// It is its pod's sandbox (pause/infra container).
    pub(super) sandbox: bool,
    /// Encoded after the fields above (`bytes`, `decode`).
    #[serde(skip)]
    pub(super) tail: RecTail,
}

/// What a container's record holds after its first fields: an older agent reads the
/// record without it (postcard ignores trailing bytes); a record without it has none.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct RecTail {
    /// A bare container's init: its host pid (a namespace has one init: another pid is
    /// another namespace with the same inode) ...
    pub(super) init_pid: Option<u32>,
    /// ... and its end, with the number of the boot it ended in (write.rs generation).
    pub(super) init_end: Option<(u32, u64)>,
    /// The names it had before `name` (a `docker rename`, a name learnt later), the
    /// oldest first: a query of one still finds it.
    pub(super) earlier_names: Vec<String>,
}

/// Names a record keeps besides its current one, at most (the newest).
const EARLIER_NAMES: usize = 4;

impl ContainerRec {
    /// `key` as its runtime's metadata (the resolver's) describe it.
    pub(super) fn of(key: &ContainerKey, m: Meta) -> ContainerRec {
        ContainerRec {
            runtime: key.runtime.as_str().into(),
            id: key.id.clone(),
            name: m.name,
            pod_namespace: m.pod_namespace,
            pod: m.pod,
            pod_uid: m.pod_uid,
            sandbox: m.sandbox,
            tail: RecTail::default(),
        }
    }

    /// Whether `q` names its pod: `<namespace>/<pod>`, the pod's name or its uid.
    pub(super) fn in_pod(&self, q: &str) -> bool {
        let Some(pod) = self.pod.as_deref() else {
            return false;
        };
        let qualified = match (self.pod_namespace.as_deref(), q.split_once('/')) {
            (Some(ns), Some((qns, qpod))) => ns == qns && pod == qpod,
            _ => false,
        };
        qualified || pod == q || self.pod_uid.as_deref() == Some(q)
    }

    /// Its bytes: the fields, then the tail when it holds anything.
    pub(super) fn bytes(&self) -> Vec<u8> {
        let mut b = postcard::to_allocvec(self).unwrap_or_default();
        if self.tail != RecTail::default() {
            b.extend(postcard::to_allocvec(&self.tail).unwrap_or_default());
        }
        b
    }

    /// A record from its bytes (any bytes: None, never a panic); a tail that does not
    /// decode is left out.
    pub(super) fn decode(bytes: &[u8]) -> Option<ContainerRec> {
        let (mut rec, rest): (ContainerRec, _) = postcard::take_from_bytes(bytes).ok()?;
        if !rest.is_empty() {
            rec.tail = postcard::from_bytes(rest).unwrap_or_default();
        }
        Some(rec)
    }

    /// Takes `name` as its current name, keeping the one it had among its earlier names;
    /// false when it had it already.
    pub(super) fn rename(&mut self, name: &str) -> bool {
        if self.name.as_deref() == Some(name) {
            return false;
        }
        let earlier = &mut self.tail.earlier_names;
        earlier.retain(|n| n != name);
        if let Some(old) = self.name.take() {
            earlier.retain(|n| *n != old);
            earlier.push(old);
        }
        if earlier.len() > EARLIER_NAMES {
            earlier.drain(..earlier.len() - EARLIER_NAMES);
        }
        self.name = Some(name.to_string());
        true
    }

    /// Pod facts its runtime gave after it was first stored (its state was not readable
    /// then); false when it had some already, or `m` has none.
    pub(super) fn learn_pod(&mut self, m: &Meta) -> bool {
        if self.pod.is_some() || m.pod.is_none() {
            return false;
        }
        self.pod.clone_from(&m.pod);
        self.pod_namespace.clone_from(&m.pod_namespace);
        self.pod_uid.clone_from(&m.pod_uid);
        self.sandbox = m.sandbox;
        true
    }

    pub(super) fn key(&self) -> Option<ContainerKey> {
        Some(ContainerKey::new(
            runtime_from(&self.runtime)?,
            self.id.clone(),
        ))
    }
}

fn runtime_from(s: &str) -> Option<Runtime> {
    use Runtime::*;
    [
        Docker, Containerd, Cri, Crio, Podman, Lxc, Nspawn, Observer, Bare, Runc, Crun,
    ]
    .into_iter()
    .find(|r| r.as_str() == s)
}

/// A boot's record: its id and wall-minus-boot clock offset.
pub(super) fn boot_rec(id: &[u8; 16], offset_ns: i64) -> Vec<u8> {
    let mut v = id.to_vec();
    v.extend_from_slice(&offset_ns.to_le_bytes());
    v
}

pub(super) fn parse_boot(b: &[u8]) -> Option<([u8; 16], i64)> {
    let id: [u8; 16] = b.get(..16)?.try_into().ok()?;
    let off: [u8; 8] = b.get(16..24)?.try_into().ok()?;
    Some((id, i64::from_le_bytes(off)))
}

/// Opens (or creates) the store in `dir`; a file that cannot be read is moved aside and a
/// new one started.
pub(super) fn open(dir: &Path, shared: &Shared) -> Result<Database, OpenError> {
    create_dir(dir)?;
    let path = dir.join(FILE);
    match open_file(&path) {
        Ok(db) => Ok(db),
        Err(OpenError::Unreadable(why)) => {
            move_aside(&path, &why, shared)?;
            open_file(&path)
        }
        Err(e) => Err(e),
    }
}

fn create_dir(dir: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| OpenError::Unavailable(format!("creating {}: {e}", dir.display())))
}

/// Opens one file: redb checks every page's checksum first (a file altered outside redb
/// is an error, not a panic; a panic all the same is caught), then the schema version.
fn open_file(path: &Path) -> Result<Database, OpenError> {
    private(path)?;
    let opened = std::panic::catch_unwind(|| {
        Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(path)
    });
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => return Err(classify(path, e)),
        Err(_) => return Err(OpenError::Unreadable("reading it panicked".into())),
    };
    check_schema(&db)?;
    Ok(db)
}

/// The file is root's alone (0600), whatever the directory's mode: its entries hold every
/// command line, which /proc can hide from other users (`hidepid`) and the API serves to
/// root only. Created so if missing; an existing one's mode is set.
fn private(path: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let unavailable =
        |e: std::io::Error| OpenError::Unavailable(format!("{}: {e}", path.display()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(unavailable)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(unavailable)
}

/// What an open's error means: a file to move aside, or a store unavailable for now.
fn classify(path: &Path, e: DatabaseError) -> OpenError {
    let msg = format!("{}: {e}", path.display());
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            OpenError::Unavailable(format!("{msg} (another agent has it open)"))
        }
        DatabaseError::Storage(StorageError::Io(io))
            if !matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            OpenError::Unavailable(msg)
        }
        _ => OpenError::Unreadable(msg),
    }
}

/// A new file gets the version; an existing one must have this agent's.
fn check_schema(db: &Database) -> Result<(), OpenError> {
    let bad = |e: &dyn std::fmt::Display| OpenError::Unreadable(format!("its tables: {e}"));
    let found = {
        let r = db.begin_read().map_err(|e| bad(&e))?;
        let tables = r.list_tables().map_err(|e| bad(&e))?.count();
        match r.open_table(META) {
            Ok(t) => Some(t.get("version").map_err(|e| bad(&e))?.map(|v| v.value())),
            Err(redb::TableError::TableDoesNotExist(_)) if tables == 0 => None,
            Err(e) => return Err(bad(&e)),
        }
    };
    match found {
        None => {
            // Writing a new file's version fails on a full or failing disk: that is the
            // disk, not the file (moving it aside would repeat at every retry).
            let io = |e: &dyn std::fmt::Display| {
                OpenError::Unavailable(format!("writing a new store: {e}"))
            };
            let w = db.begin_write().map_err(|e| io(&e))?;
            {
                let mut m = w.open_table(META).map_err(|e| io(&e))?;
                m.insert("version", VERSION).map_err(|e| io(&e))?;
            }
            w.commit().map_err(|e| io(&e))
        }
        Some(Some(VERSION)) => Ok(()),
        Some(Some(1)) => super::migrate::from_v1(db),
        Some(Some(v)) => Err(OpenError::Unreadable(format!(
            "schema version {v}, this agent reads {VERSION}"
        ))),
        Some(None) => Err(OpenError::Unreadable("no schema version".into())),
    }
}

/// Renames `path` to `<path>.corrupt-<unix ns>` (a name no earlier move took).
fn move_aside(path: &Path, why: &str, shared: &Shared) -> Result<(), OpenError> {
    let ns = crate::host::clock::unix_now_ns();
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{ns}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside).map_err(|e| {
        OpenError::Unavailable(format!(
            "{why}; moving it aside to {} failed: {e}",
            aside.display()
        ))
    })?;
    shared.counts.moved_aside.fetch_add(1, Ordering::Relaxed);
    log::warn!(
        "history store: {why}; moved it aside to {} and started a new store",
        aside.display()
    );
    Ok(())
}

/// This boot's number in the store (a new one for a boot not seen before), with its clock
/// offset brought up to date; and every boot's offset.
pub(super) fn register_boot(
    db: &Database,
    id: &[u8; 16],
    offset_ns: i64,
) -> Result<(u32, Vec<(u32, i64)>), redb::Error> {
    let w = db.begin_write()?;
    let mut boots = Vec::new();
    let this = {
        let mut t = w.open_table(BOOTS)?;
        let mut found = None;
        let mut last = 0;
        for row in t.iter()? {
            let (k, v) = row?;
            last = last.max(k.value());
            if let Some((bid, off)) = parse_boot(v.value()) {
                if &bid == id {
                    found = Some(k.value());
                }
                boots.push((k.value(), off));
            }
        }
        let n = found.unwrap_or(last + 1);
        t.insert(n, boot_rec(id, offset_ns).as_slice())?;
        boots.retain(|b| b.0 != n);
        boots.push((n, offset_ns));
        n
    };
    w.commit()?;
    Ok((this, boots))
}
