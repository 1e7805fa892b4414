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
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;

use super::{facts::Live, scan};

/// A process as the caller knows it: its pid and the start time (boot-clock ns) that
/// together name it — a pid alone may name another process by the time it is read.
pub(crate) trait Identity {
    fn pid(&self) -> u32;
    fn start_time_ns(&self) -> u64;
}

/// Files kept open at most (~9 MB of kernel memory at a page and a bit each).
pub(crate) const MAX_OPEN: usize = 2048;
/// A file not read for this long is closed.
const IDLE: Duration = Duration::from_secs(60);

struct Entry {
    start_ns: u64,
    file: Arc<File>,
    used: Instant,
}

pub(crate) struct StatFiles {
    files: FxHashMap<u32, Entry>,
    budget: usize,
    swept: Instant,
    unreadable: u64,
}

impl Default for StatFiles {
    fn default() -> Self {
        Self::for_rlimit()
    }
}

/// What one process's read gave: `f` of its facts, whether it was read at all, and the
/// file to keep when it was opened now (only while the budget has room: past it, a file is
/// closed right after its read, so a view of 50,000 processes never holds 50,000 files).
struct Read<R> {
    out: Option<R>,
    live: bool,
    opened: Option<File>,
}

/// How a live read of one process ended.
enum Outcome {
    Live(Live),
    /// Reaped, or the pid names another process now.
    Gone,
    /// Not read for another reason (EMFILE, ENFILE, EACCES, ...): the process is listed
    /// with the table's facts.
    Unreadable,
}

impl StatFiles {
    pub(crate) fn with_budget(budget: usize) -> Self {
        Self {
            files: FxHashMap::default(),
            budget,
            swept: Instant::now(),
            unreadable: 0,
        }
    }

    /// A budget that leaves most of RLIMIT_NOFILE to everything else: at most
    /// [`MAX_OPEN`], at most a quarter of the soft limit.
    pub(crate) fn for_rlimit() -> Self {
        Self::with_budget(MAX_OPEN.min(scan::nofile_soft() / 4))
    }

    #[cfg(test)]
    pub(crate) fn open_files(&self) -> usize {
        self.files.len()
    }

    /// Live reads that failed for a reason other than the process being gone.
    pub(crate) fn unreadable(&self) -> u64 {
        self.unreadable
    }

    /// The live facts of each of `procs`, in order: None where the process is gone, or the
    /// pid now names another process; `Some(None)` where it could not be read.
    #[cfg(test)]
    #[allow(clippy::option_option)] // the three cases are the tests' subject
    pub(crate) fn read<P: Identity + Sync>(
        files: Option<&Mutex<StatFiles>>,
        procs: &[&P],
    ) -> Vec<Option<Option<Live>>> {
        Self::read_with(files, procs, |_, l| Some(l))
    }

    /// `f(process, its live facts)` for each of `procs`, in order: None where the process
    /// is gone or the pid names another process now; `f` gets None for the live facts of a
    /// process whose read failed for another reason (it is still there as far as anyone
    /// knows). Reads, and runs `f`, on up to 4 threads (scan::parallel), through the files
    /// `files` keeps (or opens and then keeps, within its budget); without a cache, each
    /// file is opened, read and closed.
    pub(crate) fn read_with<P: Identity + Sync, R: Send>(
        files: Option<&Mutex<StatFiles>>,
        procs: &[&P],
        f: impl Fn(&P, Option<Live>) -> Option<R> + Sync,
    ) -> Vec<Option<R>> {
        let (kept, room) = match files {
            Some(m) => {
                let g = m.lock().unwrap_or_else(|e| e.into_inner());
                let kept = procs
                    .iter()
                    .map(|p| {
                        g.files
                            .get(&p.pid())
                            .filter(|e| e.start_ns == p.start_time_ns())
                            .map(|e| e.file.clone())
                    })
                    .collect();
                (kept, g.budget.saturating_sub(g.files.len()))
            }
            None => (vec![None; procs.len()], 0),
        };
        let room = AtomicUsize::new(room);
        let idx: Vec<usize> = (0..procs.len()).collect();
        let reads: Vec<Read<R>> = scan::parallel(&idx, |&i| {
            let p = procs[i];
            let (outcome, opened) = match &kept[i] {
                Some(file) => (outcome_of(read_at(file), p.start_time_ns()), None),
                None => open_and_read(p),
            };
            // Keep a file opened now only while there is room; else it closes here.
            let keep = |f: File| {
                room.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                    .then_some(f)
            };
            Some(match outcome {
                Outcome::Live(l) => Read {
                    live: true,
                    opened: opened.and_then(keep),
                    out: f(p, Some(l)),
                },
                Outcome::Gone => Read {
                    live: false,
                    opened: None,
                    out: None,
                },
                Outcome::Unreadable => Read {
                    live: false,
                    opened: None,
                    out: f(p, None),
                },
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
    /// closes those whose read failed, counts the unreadable, and now and then closes the
    /// idle ones.
    fn settle<P: Identity, R>(
        &mut self,
        procs: &[&P],
        kept: &[Option<Arc<File>>],
        reads: Vec<Read<R>>,
    ) -> Vec<Option<R>> {
        let now = Instant::now();
        let mut outs = Vec::with_capacity(reads.len());
        for ((p, k), r) in procs.iter().zip(kept).zip(reads) {
            if !r.live && r.out.is_some() {
                self.unreadable += 1;
            }
            match (k, r.live, r.opened) {
                (Some(_), true, _) => {
                    if let Some(e) = self.files.get_mut(&p.pid()) {
                        e.used = now;
                    }
                }
                (Some(_), false, _) => {
                    self.files.remove(&p.pid());
                }
                (None, _, Some(f)) => {
                    if self.files.len() < self.budget || self.files.contains_key(&p.pid()) {
                        let file = Arc::new(f);
                        let start_ns = p.start_time_ns();
                        self.files.insert(
                            p.pid(),
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

/// Opens and reads the stat file of `p`: what the read says, and the open file.
fn open_and_read(p: &impl Identity) -> (Outcome, Option<File>) {
    match File::open(format!("/proc/{}/stat", p.pid())) {
        Ok(file) => (outcome_of(read_at(&file), p.start_time_ns()), Some(file)),
        Err(e) if scan::is_gone(&e) => (Outcome::Gone, None),
        Err(_) => (Outcome::Unreadable, None),
    }
}

/// What a read says of the process that started at `start_ns`.
fn outcome_of(read: std::io::Result<Option<Live>>, start_ns: u64) -> Outcome {
    match read {
        Ok(Some(l)) if l.is_of(start_ns) => Outcome::Live(l),
        // Another process holds the pid now, or the text is not a stat line of a task.
        Ok(_) => Outcome::Gone,
        Err(e) if scan::is_gone(&e) => Outcome::Gone,
        Err(_) => Outcome::Unreadable,
    }
}

/// One read at offset 0 (a stat file is far shorter than the buffer).
fn read_at(f: &File) -> std::io::Result<Option<Live>> {
    let mut buf = [0u8; 4096];
    let n = f.read_at(&mut buf, 0)?;
    Ok(scan::live_from(&buf[..n]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process as a table would know it: its pid and the start time /proc gives.
    #[derive(Clone)]
    struct Known {
        pid: u32,
        start_time_ns: u64,
    }

    impl Identity for Known {
        fn pid(&self) -> u32 {
            self.pid
        }
        fn start_time_ns(&self) -> u64 {
            self.start_time_ns
        }
    }

    fn known(pid: u32) -> Option<Known> {
        let host = scan::ns_inode(std::process::id(), "pid");
        let s = scan::scan_pid(pid, host, true, None)?;
        Some(Known {
            pid,
            start_time_ns: s.start_time_ns,
        })
    }

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
        let p = known(pid).unwrap();
        let fresh = scan::live(pid).unwrap();
        let files = Mutex::new(StatFiles::default());
        let first = StatFiles::read(Some(&files), &[&p]);
        assert_eq!(
            first[0].clone().flatten().map(|l| l.start_ticks),
            Some(fresh.start_ticks)
        );
        assert_eq!(files.lock().unwrap().open_files(), 1);
        let again = StatFiles::read(Some(&files), &[&p]);
        assert_eq!(
            again[0].clone().flatten().map(|l| (l.ppid, l.state)),
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

    /// Far more processes than the budget: every one is read, and no more files than the
    /// budget stay open afterwards (the rest were closed right after their read).
    #[test]
    fn a_view_past_the_budget_reads_every_process_and_keeps_only_the_budget_open() {
        let mut kids: Vec<_> = (0..150)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("60")
                    .spawn()
                    .unwrap()
            })
            .collect();
        let procs: Vec<Known> = kids.iter().map(|k| known(k.id()).unwrap()).collect();
        let refs: Vec<&Known> = procs.iter().collect();
        let files = Mutex::new(StatFiles::with_budget(10));
        let fds_before = std::fs::read_dir("/proc/self/fd").unwrap().count();
        let read = StatFiles::read(Some(&files), &refs);
        assert_eq!(
            read.iter().filter(|r| matches!(r, Some(Some(_)))).count(),
            150
        );
        assert_eq!(files.lock().unwrap().open_files(), 10);
        let fds_after = std::fs::read_dir("/proc/self/fd").unwrap().count();
        // Other tests of this binary open files too: allow them some slack.
        assert!(
            fds_after < fds_before + 10 + 20,
            "{fds_before} -> {fds_after}"
        );
        for k in &mut kids {
            let _ = k.kill();
            let _ = k.wait();
        }
    }

    /// Only ENOENT and ESRCH (and a stat line of another process) mean "gone": any other
    /// failure keeps the process in the view.
    #[test]
    fn only_a_vanished_process_is_gone() {
        let p = known(std::process::id()).unwrap();
        let err = |n| Err(std::io::Error::from_raw_os_error(n));
        for gone in [libc::ENOENT, libc::ESRCH] {
            assert!(matches!(
                outcome_of(err(gone), p.start_time_ns),
                Outcome::Gone
            ));
        }
        for unreadable in [libc::EMFILE, libc::ENFILE, libc::EACCES, libc::EIO] {
            assert!(matches!(
                outcome_of(err(unreadable), p.start_time_ns),
                Outcome::Unreadable
            ));
        }
        assert!(matches!(
            outcome_of(Ok(None), p.start_time_ns),
            Outcome::Gone
        ));
        assert!(matches!(
            outcome_of(Ok(scan::live(p.pid)), p.start_time_ns),
            Outcome::Live(_)
        ));
    }
}
