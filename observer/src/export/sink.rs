//! A sink's writer thread: takes what waits in its queue, makes lines of it in one buffer,
//! and writes them to its target — a file rotated by size and count, or stdout — through
//! the same code. Nothing here can stop the agent: a failed write (disk full, read-only
//! file system) drops that batch's unwritten lines (counted), is logged once per kind of
//! failure with the path, and the file is opened again a second later.
//!
//! Rotation keeps the layout node log shippers tail (Fluent Bit, Vector, Promtail):
//! PATH is written, PATH.1 is the newest rotated file, PATH.keep the oldest; on rotation
//! each moves one up, the oldest is replaced, and a new PATH is created. A line is never
//! split: a file is rotated before a line that would take it past `max` (only a line
//! longer than `max` gets a file of its own), and a write that failed half-way is cut
//! back to the last whole line. With gzip, rotated files are PATH.1.gz … PATH.keep.gz:
//! PATH is compressed into PATH.1.gz.tmp first (nothing has moved if that fails), then the
//! others move up and it takes its place. Compressing runs on this thread (about 1 s per
//! 100 MB at the fast level): the queue takes the events meanwhile.

use std::{
    collections::HashSet,
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{origin::SinkNames, Counts, Inbox};

/// A batch is written once it holds this much, or when the queue is empty.
const BATCH_BYTES: usize = 256 << 10;
/// After a failed open, write or rotation, the file is opened again this long after.
const RETRY_EVERY: Duration = Duration::from_secs(1);

pub(super) enum Target {
    File(RotatingFile),
    Stdout,
}

impl Target {
    pub(super) fn file(path: &Path, max: u64, keep: u32, gzip: bool) -> Target {
        let mut f = RotatingFile::new(path, max, keep);
        f.gzip = gzip;
        Target::File(f)
    }

    fn write(&mut self, b: &Batch) -> Result<(), Failure> {
        match self {
            Target::File(f) => f.write(b),
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&b.buf)
                    .and_then(|()| out.flush())
                    .map_err(|e| Failure::new(0, "write", e))
            }
        }
    }

    fn name(&self) -> String {
        match self {
            Target::File(f) => f.path.display().to_string(),
            Target::Stdout => "stdout".into(),
        }
    }
}

/// Lines in one buffer, with where each ends.
#[derive(Default)]
pub(super) struct Batch {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    /// A whole line, its newline included.
    fn push(&mut self, line: &[u8]) {
        self.buf.extend_from_slice(line);
        self.ends.push(self.buf.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1]
        }
    }

    /// Lines `from..to`.
    fn bytes(&self, from: usize, to: usize) -> &[u8] {
        &self.buf[self.start(from)..self.start(to)]
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }
}

/// A write that failed after the batch's first `written` lines made it; `err` is None
/// while the file waits to be opened again (not worth a log line).
#[derive(Debug)]
pub(super) struct Failure {
    written: usize,
    what: &'static str,
    err: Option<io::Error>,
}

impl Failure {
    fn new(written: usize, what: &'static str, err: io::Error) -> Failure {
        Failure {
            written,
            what,
            err: Some(err),
        }
    }
}

/// The writer thread: until the agent drops the queue's sender.
pub(super) fn run(mut inbox: Inbox, mut target: Target, counts: &Counts, names: &mut SinkNames) {
    let mut batch = Batch::default();
    let mut logged = Logged::default();
    while inbox.blocking_wait() {
        while let Some(next) = inbox.next() {
            match next.line(names) {
                Some(line) => batch.push(line),
                None => Counts::add(&counts.dropped, 1),
            }
            if batch.buf.len() >= BATCH_BYTES {
                break;
            }
        }
        let n = batch.len();
        match target.write(&batch) {
            Ok(()) => {
                Counts::add(&counts.sent, n as u64);
                logged.recovered(&target);
            }
            Err(f) => {
                Counts::add(&counts.sent, f.written as u64);
                Counts::add(&counts.dropped, (n - f.written) as u64);
                logged.failed(&target, &f);
            }
        }
        batch.clear();
    }
}

/// Failures already logged (once per operation and kind of error), and whether the
/// target is failing now.
#[derive(Default)]
struct Logged {
    seen: HashSet<(&'static str, io::ErrorKind)>,
    failing: bool,
}

impl Logged {
    fn failed(&mut self, t: &Target, f: &Failure) {
        self.failing = true;
        let Some(err) = &f.err else { return };
        if self.seen.insert((f.what, err.kind())) {
            log::warn!(
                "export to {}: {} failed: {err}; lines are dropped (counted in \
                 observer_export_dropped_total) until it works again",
                t.name(),
                f.what
            );
        }
    }

    fn recovered(&mut self, t: &Target) {
        if std::mem::take(&mut self.failing) {
            log::warn!("export to {}: writing again", t.name());
        }
    }
}

/// PATH, rotated to PATH.1 … PATH.keep.
pub(super) struct RotatingFile {
    path: PathBuf,
    max: u64,
    keep: u32,
    /// Rotated files are compressed (PATH.n.gz).
    gzip: bool,
    file: Option<File>,
    /// Bytes in the open file, all of them whole lines.
    len: u64,
    retry_at: Option<Instant>,
}

impl RotatingFile {
    pub(super) fn new(path: &Path, max: u64, keep: u32) -> RotatingFile {
        RotatingFile {
            path: path.to_path_buf(),
            max: max.max(1),
            keep,
            gzip: false,
            file: None,
            len: 0,
            retry_at: None,
        }
    }

    fn write(&mut self, b: &Batch) -> Result<(), Failure> {
        let mut i = 0;
        while i < b.len() {
            self.open().map_err(|e| Failure { written: i, ..e })?;
            let j = fitting(self.len, self.max, b, i);
            if j == i {
                self.rotate().map_err(|e| self.failed(i, "rotate", e))?;
                continue;
            }
            let bytes = b.bytes(i, j);
            let file = self.file.as_mut().expect("opened");
            if let Err(e) = file.write_all(bytes) {
                // Cut a half-written line back off: a reader never sees it.
                let _ = file.set_len(self.len);
                return Err(self.failed(i, "write", e));
            }
            self.len += bytes.len() as u64;
            i = j;
        }
        Ok(())
    }

    fn open(&mut self) -> Result<(), Failure> {
        if self.file.is_some() {
            return Ok(());
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return Err(Failure {
                written: 0,
                what: "open",
                err: None,
            });
        }
        let opened = private_file(OpenOptions::new().create(true).append(true))
            .open(&self.path)
            .and_then(|f| Ok((f.metadata()?.len(), f)));
        match opened {
            Ok((len, f)) => {
                self.file = Some(f);
                self.len = len;
                self.retry_at = None;
                Ok(())
            }
            Err(e) => Err(self.failed(0, "open", e)),
        }
    }

    /// Closes the file, to be opened again after RETRY_EVERY.
    fn failed(&mut self, written: usize, what: &'static str, err: io::Error) -> Failure {
        self.file = None;
        self.retry_at = Some(Instant::now() + RETRY_EVERY);
        Failure::new(written, what, err)
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        if self.gzip {
            p.push(".gz");
        }
        p.into()
    }

    /// PATH.n → PATH.n+1 (the oldest replaced), PATH → PATH.1; the next open creates PATH.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let gone_is_fine = |r: io::Result<()>| match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        if self.keep == 0 {
            gone_is_fine(std::fs::remove_file(&self.path))?;
        } else {
            let gz = self.gzip.then(|| self.compress()).transpose()?;
            for n in (1..self.keep).rev() {
                gone_is_fine(std::fs::rename(self.numbered(n), self.numbered(n + 1)))?;
            }
            match gz {
                Some(tmp) => {
                    std::fs::rename(tmp, self.numbered(1))?;
                    gone_is_fine(std::fs::remove_file(&self.path))?;
                }
                None => gone_is_fine(std::fs::rename(&self.path, self.numbered(1)))?,
            }
        }
        self.len = 0;
        Ok(())
    }
}

impl RotatingFile {
    /// PATH compressed into PATH.1.gz.tmp (removed again if that fails).
    fn compress(&self) -> io::Result<PathBuf> {
        let mut tmp = self.numbered(1).into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let r = (|| {
            let mut from = File::open(&self.path)?;
            // A leftover (or planted) temporary is removed, never written through.
            let _ = std::fs::remove_file(&tmp);
            let to = private_file(OpenOptions::new().write(true).create_new(true)).open(&tmp)?;
            let mut gz = flate2::write::GzEncoder::new(to, flate2::Compression::fast());
            io::copy(&mut from, &mut gz)?;
            gz.finish()?.sync_data()
        })();
        match r {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

/// Options for an export file: lines hold every command line on the node, which other
/// users must not read (0640: root and a log shipper's group), and a symlink at the path —
/// planted in a directory others can write — is refused, not followed (O_NOFOLLOW).
fn private_file(o: &mut OpenOptions) -> &mut OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    o.mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
}

/// The end of the lines from `i` that fit in a file of `len` bytes bounded by `max`; a
/// line longer than `max` fits an empty file alone.
fn fitting(len: u64, max: u64, b: &Batch, i: usize) -> usize {
    let base = b.start(i) as u64;
    let mut j = i;
    while j < b.len() && len + (b.ends[j] as u64 - base) <= max {
        j += 1;
    }
    if j == i && len == 0 {
        j + 1
    } else {
        j
    }
}

#[cfg(test)]
#[path = "sink_tests.rs"]
mod tests;
