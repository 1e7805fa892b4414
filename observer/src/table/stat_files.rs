//! `/proc/<pid>/stat` files kept open between views. A view of a container reads the live
//! facts (state, CPU, RSS, threads) of each of its processes; on this kind of kernel an
//! open and close of a /proc file cost more than the read itself (~8 of ~17 µs, measured
//! for 1,000 processes), so the files of processes viewed recently stay open and are
//! re-read at offset 0 (proc's seq_file shows the task afresh on every read).
//!
//! An open stat file names the process, not the pid: once the process is reaped its reads
//! fail (ESRCH), so a reused pid is never read through an old file. Entries are also keyed
//! by the start time the table knows, and closed when a read fails or after [`IDLE`]
//! unused. Each open file holds a page of kernel memory (its seq_file buffer, charged to
//! the agent's cgroup): at most [`MAX_OPEN`] stay open.

use std::{
    fs::File,
    os::unix::fs::FileExt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;

use super::{
    scan::{self, Live},
    Process,
};

/// Files kept open at most (~9 MB of kernel memory at a page and a bit each).
pub const MAX_OPEN: usize = 2048;
/// A file not read for this long is closed.
const IDLE: Duration = Duration::from_secs(60);

struct Entry {
    start_ns: u64,
    file: Arc<File>,
    used: Instant,
}

pub struct StatFiles {
    files: FxHashMap<u32, Entry>,
    budget: usize,
    swept: Instant,
}

impl Default for StatFiles {
    fn default() -> Self {
        Self::with_budget(MAX_OPEN)
    }
}

/// What one process's read gave: `f` of its facts, whether it was read at all, and the
/// file to keep when it was opened now.
struct Read<R> {
    out: Option<R>,
    live: bool,
    opened: Option<File>,
}

impl StatFiles {
    pub fn with_budget(budget: usize) -> Self {
        Self {
            files: FxHashMap::default(),
            budget,
            swept: Instant::now(),
        }
    }

    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    /// The live facts of each of `procs`, in order: None where the process is gone, or the
    /// pid now names another process.
    pub fn read(files: Option<&Mutex<StatFiles>>, procs: &[&Process]) -> Vec<Option<Live>> {
        Self::read_with(files, procs, |_, l| Some(l))
    }

    /// `f(process, its live facts)` for each of `procs`, in order (None where the process
    /// is gone or the pid names another process now). Reads, and runs `f`, on up to 4
    /// threads (scan::parallel), through the files `files` keeps (or opens and then
    /// keeps); without a cache, each file is opened and closed.
    pub fn read_with<R: Send>(
        files: Option<&Mutex<StatFiles>>,
        procs: &[&Process],
        f: impl Fn(&Process, Live) -> Option<R> + Sync,
    ) -> Vec<Option<R>> {
        let kept: Vec<Option<Arc<File>>> = match files {
            Some(m) => {
                let g = m.lock().unwrap_or_else(|e| e.into_inner());
                procs
                    .iter()
                    .map(|p| {
                        g.files
                            .get(&p.pid)
                            .filter(|e| e.start_ns == p.start_time_ns)
                            .map(|e| e.file.clone())
                    })
                    .collect()
            }
            None => vec![None; procs.len()],
        };
        let keep = files.is_some();
        let idx: Vec<usize> = (0..procs.len()).collect();
        let reads: Vec<Read<R>> = scan::parallel(&idx, |&i| {
            let p = procs[i];
            let check = |l: Live| l.is_of(p).then_some(l);
            let (live, opened) = match &kept[i] {
                Some(file) => (read_at(file).and_then(check), None),
                None => {
                    let file = File::open(format!("/proc/{}/stat", p.pid)).ok();
                    let live = file.as_ref().and_then(read_at).and_then(check);
                    (live, file)
                }
            };
            Some(Read {
                live: live.is_some(),
                opened: opened.filter(|_| keep && live.is_some()),
                out: live.and_then(|l| f(p, l)),
            })
        });
        match files {
            Some(m) => m
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .settle(procs, &kept, reads),
            None => reads.into_iter().map(|r| r.out).collect(),
        }
    }

    /// After a read: keeps the files opened (within the budget), marks the ones read,
    /// closes those whose read failed, and now and then the idle ones.
    fn settle<R>(
        &mut self,
        procs: &[&Process],
        kept: &[Option<Arc<File>>],
        reads: Vec<Read<R>>,
    ) -> Vec<Option<R>> {
        let now = Instant::now();
        let mut outs = Vec::with_capacity(reads.len());
        for ((p, k), r) in procs.iter().zip(kept).zip(reads) {
            match (k, r.live, r.opened) {
                (Some(_), true, _) => {
                    if let Some(e) = self.files.get_mut(&p.pid) {
                        e.used = now;
                    }
                }
                (Some(_), false, _) => {
                    self.files.remove(&p.pid);
                }
                (None, _, Some(f)) => {
                    if self.files.len() < self.budget || self.files.contains_key(&p.pid) {
                        let file = Arc::new(f);
                        let start_ns = p.start_time_ns;
                        self.files.insert(
                            p.pid,
                            Entry {
                                start_ns,
                                file,
                                used: now,
                            },
                        );
                    }
                }
                (None, _, None) => {}
            }
            outs.push(r.out);
        }
        if now.duration_since(self.swept) >= IDLE / 4 {
            self.swept = now;
            self.files.retain(|_, e| now.duration_since(e.used) < IDLE);
        }
        outs
    }
}

/// One read at offset 0 (a stat file is far shorter than the buffer).
fn read_at(f: &File) -> Option<Live> {
    let mut buf = [0u8; 4096];
    let n = f.read_at(&mut buf, 0).ok()?;
    scan::live_from(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{containers::cgroupfs::CgroupFs, table::Table};

    /// A real child: read through a kept file like an opened one, and once reaped, gone
    /// (its file closed) although the pid may be anyone's by then.
    #[test]
    fn kept_files_read_live_processes_and_close_with_them() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id();
        // Asleep in `sleep` (past its exec), so that the reads below are of one state.
        for _ in 0..500 {
            if scan::live(pid).is_some_and(|l| l.state == 'S' && l.comm == "sleep") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let host = scan::ns_inode(std::process::id(), "pid");
        let mut tb = Table::new(host, CgroupFs::default());
        tb.seed(&[scan::scan_pid(pid, host, true, None).unwrap()], 0);
        let p = tb.get(pid).unwrap().clone();
        let fresh = scan::live(pid).unwrap();
        let files = Mutex::new(StatFiles::default());
        let first = StatFiles::read(Some(&files), &[&p]);
        assert_eq!(
            first[0].as_ref().map(|l| l.start_ticks),
            Some(fresh.start_ticks)
        );
        assert_eq!(files.lock().unwrap().open_files(), 1);
        let again = StatFiles::read(Some(&files), &[&p]);
        assert_eq!(
            again[0].as_ref().map(|l| (l.ppid, l.state)),
            Some((std::process::id(), 'S'))
        );
        // Another process with the table's pid but a different start is not read as it.
        let mut other = p.clone();
        other.start_time_ns += 10 * scan::tick_ns();
        assert_eq!(StatFiles::read(Some(&files), &[&other]), vec![None]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(StatFiles::read(Some(&files), &[&p]), vec![None]);
        assert_eq!(files.lock().unwrap().open_files(), 0);
        // Without a budget (or a cache) nothing stays open.
        let none = Mutex::new(StatFiles::with_budget(0));
        assert_eq!(StatFiles::read(Some(&none), &[&p]), vec![None]);
        assert_eq!(none.lock().unwrap().open_files(), 0);
        assert_eq!(StatFiles::read(None, &[&p]), vec![None]);
    }
}
