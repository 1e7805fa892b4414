//! Reading processes from /proc (procfs crate): the agent's start-up seed when the task
//! iterator is not used, the background pass that adds what a seed lacks (command lines and
//! executables; for a /proc seed, namespaces and cgroup ids), its periodic reconciliation
//! (and the process ids of the cheap check when the pid iterator is not used), and the
//! CLI's one-shot view when no agent runs. Also the cheap per-process reads for facts no
//! event carries (state letter, CPU time, RSS; the agent's views keep the stat files open:
//! stat_files.rs).

use std::{io::Read, os::unix::fs::MetadataExt, path::Path};

use observer_common::{MAX_PID_LEVELS, NS_COUNT, NS_NAMES, NS_PID};

use super::facts::Live;

/// Clock ticks per second of /proc times (USER_HZ).
pub(crate) fn ticks_per_second() -> u64 {
    procfs::ticks_per_second().max(1)
}

/// Nanoseconds of one /proc clock tick.
pub(crate) fn tick_ns() -> u64 {
    1_000_000_000 / ticks_per_second()
}

/// Page size in bytes (RSS in /proc stat is in pages).
pub(crate) fn page_size() -> u64 {
    procfs::page_size()
}

/// What /proc says about one process.
#[derive(Clone, Debug)]
pub(crate) struct Scanned {
    pub(crate) pid: u32,
    pub(crate) ppid: u32,
    /// Boot-clock ns: clock-tick precision from /proc, exact from the task iterator.
    pub(crate) start_time_ns: u64,
    /// Whether start_time_ns is the kernel's exact value (the task iterator's).
    pub(crate) start_exact: bool,
    pub(crate) state: char,
    pub(crate) comm: String,
    pub(crate) threads: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) ns_pids: Vec<u32>,
    pub(crate) ns: [u32; NS_COUNT],
    pub(crate) cgroup: String,
    /// cgroup v2 id, when the task iterator read it (0 from /proc: `Details` reads it).
    pub(crate) cgroup_id: u64,
    /// NUL-separated argv as in /proc/<pid>/cmdline.
    pub(crate) cmdline: Vec<u8>,
    /// A zombie's wait status (/proc/<pid>/stat field 52).
    pub(crate) exit_status: Option<u32>,
}

impl Scanned {
    /// Exited and not reaped. A leader thread that exited while other threads run also
    /// reads as `Z` in /proc (with Threads > 1): that process is alive.
    pub(crate) fn is_zombie(&self) -> bool {
        self.state == 'Z' && self.threads <= 1
    }
}

/// Reads /proc/<pid>/stat only (one open and read: views call this per process).
pub(crate) fn live(pid: u32) -> Option<Live> {
    live_read(pid).ok().flatten()
}

/// [`live`], telling a process that is gone (Ok(None)) from one that could not be read
/// (Err: out of file descriptors, permission, ...): a view still lists the latter.
pub(crate) fn live_read(pid: u32) -> std::io::Result<Option<Live>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(512);
    match std::fs::File::open(format!("/proc/{pid}/stat")).and_then(|mut f| f.read_to_end(&mut buf))
    {
        Ok(_) => Ok(live_from(&buf)),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether an error opening or reading a /proc/<pid> file means the process is gone
/// (ENOENT before the open, ESRCH on a file opened before it was reaped).
pub(crate) fn is_gone(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH))
}

/// The soft RLIMIT_NOFILE (0 if it cannot be read), bounded to 2^20.
pub(crate) fn nofile_soft() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    lim.rlim_cur.min(1 << 20) as usize
}

/// The live facts in the text of a `/proc/<pid>/stat`. Views read these for every process
/// they show, so only the seven fields needed are parsed, in place: procfs' parser builds
/// every field of the line from a lossily decoded copy (~40% of the agent's CPU for a tree
/// once the files are kept open, measured with perf). The same checks as `parse_stat`;
/// a unit test holds the two to the same answers.
pub fn live_from(stat: &[u8]) -> Option<Live> {
    let open = stat.iter().position(|&c| c == b'(')?;
    let close = stat.iter().rposition(|&c| c == b')')?;
    if open < 1 || close <= open || !stat[open - 1].is_ascii() {
        return None;
    }
    // After ") ": field 3 (state) onwards, 1-based as in proc(5).
    let rest = stat.get(close + 2..)?;
    let mut fields = rest
        .split(|&c| c == b' ' || c == b'\n')
        .filter(|f| !f.is_empty());
    let state = match fields.next()? {
        [c] if c.is_ascii() => *c as char,
        _ => return None,
    };
    let mut num = [0u64; 25];
    let mut seen = 0;
    for (i, f) in fields.take(21).enumerate() {
        seen += 1;
        // Field i + 4; ppid (4), utime/stime (14, 15), num_threads (20), starttime (22),
        // rss (24). Some fields are signed (-1): kept only where they are not needed.
        num[i + 4] = match std::str::from_utf8(f).ok()?.parse::<u64>() {
            Ok(v) => v,
            Err(_) if matches!(i + 4, 4 | 14 | 15 | 20 | 22 | 24) => return None,
            Err(_) => 0,
        };
    }
    if seen < 21 {
        return None;
    }
    Some(Live {
        state,
        comm: String::from_utf8_lossy(&stat[open + 1..close]).into_owned(),
        ppid: u32::try_from(num[4]).ok()?,
        start_ticks: num[22],
        cpu_ticks: num[14].checked_add(num[15])?,
        rss_pages: num[24],
        threads: u32::try_from(num[20]).ok()?,
    })
}

/// Whether the process `pid` is alive: it exists and has not ended. A zombie has ended (it
/// only waits for its parent to reap it): callers to whom a zombie still counts, because it
/// holds its pid, ask [`exists`].
pub(crate) fn alive(pid: u32) -> bool {
    live(pid).is_some_and(|l| !l.is_zombie())
}

/// Whether a task with this pid exists, zombies included (a pid is taken until its task is
/// reaped): kill(pid, 0), far cheaper than reading /proc. Not whether it is [`alive`].
pub(crate) fn exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe {
        libc::kill(pid as i32, 0) == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

/// Inode of /proc/<pid>/ns/<name> (0 when unreadable or absent on this kernel).
pub(crate) fn ns_inode(pid: u32, name: &str) -> u32 {
    std::fs::metadata(format!("/proc/{pid}/ns/{name}"))
        .map(|m| m.ino() as u32)
        .unwrap_or(0)
}

/// Reads everything the table keeps about `pid`; None if it vanished meanwhile.
///
/// The start-up scan must cover 10,000 processes in well under a second, so this reads only
/// what the table needs, relative to one `/proc/<pid>` directory descriptor: `stat`, the
/// pid namespace, `cgroup` and `cmdline` (about 30 µs a process). `/proc/<pid>/status`
/// (40 µs by itself) is read only for processes in another pid namespace, for their NSpid
/// chain; elsewhere uid/gid are the owner of `/proc/<pid>` (the effective ids). The other
/// namespace inodes, and the executable path, come from `Details` right after the agent
/// is ready, or from the process's next event.
pub(crate) fn scan_pid(
    pid: u32,
    host_pidns: u32,
    with_cmdline: bool,
    cgroups: Option<&std::collections::HashMap<u32, String>>,
) -> Option<Scanned> {
    use nix::{
        fcntl::{openat, OFlag},
        sys::stat::{fstat, fstatat, Mode},
    };
    let dir = nix::fcntl::open(
        format!("/proc/{pid}").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let file = |name: &str| {
        openat(
            &dir,
            name,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .map(std::fs::File::from)
    };
    let stat = parse_stat(&read_all(file("stat")?)?)?;
    let mut ns = [0u32; NS_COUNT];
    ns[NS_PID] = fstatat(&dir, "ns/pid", nix::fcntl::AtFlags::empty())
        .map(|s| s.st_ino as u32)
        .unwrap_or(0);
    let (ns_pids, uid, gid) = if ns[NS_PID] != host_pidns && ns[NS_PID] != 0 {
        let ids = parse_status_ids(&read_all(file("status")?)?)?;
        let chain = if ids.nspid.is_empty() {
            vec![pid]
        } else {
            ids.nspid
        };
        (chain, ids.ruid, ids.rgid)
    } else {
        let (uid, gid) = fstat(&dir).map(|m| (m.st_uid, m.st_gid)).unwrap_or((0, 0));
        (vec![pid], uid, gid)
    };
    let cgroup = match cgroups.and_then(|m| m.get(&pid)).filter(|c| !c.is_empty()) {
        Some(c) => c.clone(),
        None => read_lossy(file("cgroup")),
    };
    let cmdline = if with_cmdline {
        read_cmdline_at(file("cmdline"))
    } else {
        Vec::new()
    };
    Some(Scanned {
        pid,
        ppid: stat.ppid as u32,
        start_time_ns: stat.starttime * tick_ns(),
        start_exact: false,
        state: stat.state,
        comm: stat.comm,
        threads: stat.num_threads as u32,
        uid,
        gid,
        ns_pids,
        ns,
        cgroup,
        cgroup_id: 0,
        cmdline,
        exit_status: stat.exit_code.map(|c| c as u32),
    })
}

/// A /proc file (cgroup) as text: bytes, decoded lossily — a cgroup named with bytes that
/// are not UTF-8 would fail `read_to_string` and leave the process without any cgroup.
/// Empty when it cannot be read.
fn read_lossy(f: Option<std::fs::File>) -> String {
    let mut bytes = Vec::new();
    match f.map(|mut f| f.read_to_end(&mut bytes)) {
        Some(Ok(_)) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => String::new(),
    }
}

/// A /proc file (stat, status) whole. These are generated whole at each read, so a read
/// that comes back shorter than the buffer is the end: one read into a stack buffer, where
/// `read_to_end` alone also stats the file and reads once more to see the end (a third of
/// the cost of a view of 1,000 processes); a file that fills the buffer reads on.
fn read_all(mut f: std::fs::File) -> Option<Vec<u8>> {
    let mut buf = [0u8; 4096];
    let n = f.read(&mut buf).ok()?;
    let mut b = buf[..n].to_vec();
    if n == buf.len() {
        f.read_to_end(&mut b).ok()?;
    }
    Some(b)
}

/// What the scan needs from `/proc/<pid>/status`.
#[derive(Debug, PartialEq, Eq)]
pub struct StatusIds {
    /// The NSpid chain, outermost first (capped at MAX_PID_LEVELS).
    pub(crate) nspid: Vec<u32>,
    pub(crate) ruid: u32,
    pub(crate) rgid: u32,
}

/// The NSpid, Uid and Gid lines of `/proc/<pid>/status`. Hand-rolled because procfs reads
/// the file as UTF-8 lines and fails on a process whose name is not UTF-8 (the kernel
/// prints comm bytes as they are): the scan then lost such a process, and reconciliation
/// removed it from the table. Lines are matched as bytes; only the three needed are read.
pub fn parse_status_ids(bytes: &[u8]) -> Option<StatusIds> {
    let field = |name: &[u8]| {
        bytes.split(|&b| b == b'\n').find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(b":")?;
            let text = std::str::from_utf8(rest).ok()?;
            Some(
                text.split_whitespace()
                    .map(|x| x.parse::<u32>().ok())
                    .collect::<Option<Vec<u32>>>(),
            )
        })
    };
    let uid = field(b"Uid")??;
    let gid = field(b"Gid")??;
    let mut nspid = field(b"NSpid").unwrap_or(Some(Vec::new()))?;
    nspid.truncate(MAX_PID_LEVELS);
    Some(StatusIds {
        nspid,
        ruid: *uid.first()?,
        rgid: *gid.first()?,
    })
}

/// `/proc/<pid>/stat` through procfs, which slices its text by the positions of the
/// parentheses around comm and panics (found by fuzz/fuzz_targets/proc_files.rs) when they
/// are not where the kernel puts them: `<pid> (<comm>) <state> ...`. Checked here first,
/// on the same lossily decoded, trimmed text procfs looks at.
pub fn parse_stat(bytes: &[u8]) -> Option<procfs::process::Stat> {
    use procfs::FromRead;
    let text = String::from_utf8_lossy(bytes);
    let b = text.trim().as_bytes();
    let open = b.iter().position(|&c| c == b'(')?;
    let close = b.iter().rposition(|&c| c == b')')?;
    let well_formed = open >= 1
        && b[open - 1].is_ascii()
        && close > open
        && close + 2 <= b.len()
        && b[close + 1].is_ascii();
    if !well_formed {
        return None;
    }
    procfs::process::Stat::from_read(bytes).ok()
}

fn read_cmdline_at(f: Option<std::fs::File>) -> Vec<u8> {
    let mut cmdline = Vec::new();
    if let Some(f) = f {
        let _ = f
            .take(observer_common::ARGS_LEN as u64)
            .read_to_end(&mut cmdline);
    }
    cmdline
}

/// /proc/<pid>/cmdline, bounded like the table's argv (the kernel side's ARGS_LEN).
pub(crate) fn cmdline(pid: u32) -> Vec<u8> {
    read_cmdline_at(std::fs::File::open(format!("/proc/{pid}/cmdline")).ok())
}

/// What the start-up scan leaves for later (it must be quick): filled in after the agent
/// is ready, in one background pass.
#[derive(Clone, Debug)]
pub(crate) struct Details {
    pub(crate) pid: u32,
    pub(crate) start_ns: u64,
    pub(crate) argv: Vec<u8>,
    pub(crate) exe: String,
    /// The nine namespace inodes (0 where /proc has none).
    pub(crate) ns: [u32; NS_COUNT],
    /// Its cgroup v2 id: the inode of its cgroup2 directory (0 without cgroup2).
    pub(crate) cgroup_id: u64,
}

impl Details {
    /// Reads them for `pid` (`argv` only when asked: the CLI's one-shot view has no use;
    /// namespaces and cgroup id only `with_ns`); `cgroup2`: where the cgroup2 hierarchy is
    /// mounted.
    pub(crate) fn read(
        pid: u32,
        start_ns: u64,
        with_argv: bool,
        with_ns: bool,
        cgroup2: Option<&Path>,
    ) -> Details {
        Details {
            pid,
            start_ns,
            argv: if with_argv { cmdline(pid) } else { Vec::new() },
            exe: exe(pid),
            ns: if with_ns {
                namespaces(pid)
            } else {
                [0; NS_COUNT]
            },
            cgroup_id: match cgroup2 {
                Some(m) if with_ns => cgroup_id(pid, m),
                _ => 0,
            },
        }
    }
}

/// The inode of `pid`'s cgroup2 directory (what the kernel side reads as the cgroup id):
/// its `0::` line of /proc/<pid>/cgroup under the cgroup2 mount.
pub(crate) fn cgroup_id(pid: u32, cgroup2: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(b) = std::fs::read(format!("/proc/{pid}/cgroup")) else {
        return 0;
    };
    // The path as bytes: a cgroup's name need not be UTF-8.
    b.split(|&c| c == b'\n')
        .find_map(|l| l.strip_prefix(b"0::"))
        .map(|path| {
            let rel = path.strip_prefix(b"/").unwrap_or(path);
            cgroup2.join(std::ffi::OsStr::from_bytes(rel))
        })
        .and_then(|dir| std::fs::metadata(dir).ok())
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// The namespace inodes of `pid`, in observer's order (0 where unreadable).
pub(crate) fn namespaces(pid: u32) -> [u32; NS_COUNT] {
    let mut ns = [0u32; NS_COUNT];
    for (i, name) in NS_NAMES.iter().enumerate() {
        ns[i] = ns_inode(pid, name);
    }
    ns
}

/// The executable of `pid` ("" for kernel threads and gone processes).
pub(crate) fn exe(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every process id in /proc.
pub(crate) fn pids() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Scans all processes, on as many threads as there are CPUs (at most 4). Without
/// `with_cmdline` the command lines are left for `cmdline` to read later (they are a
/// quarter of the cost: reading one locks the process's memory map). With `with_ns` every
/// namespace is read, not the pid one alone: reconciliation adds what it finds, and a
/// process with no event after (a `sleep`, a zombie) would keep them unknown for good (the
/// seeds leave them to their details pass).
pub(crate) fn scan_all(with_cmdline: bool, with_ns: bool) -> Vec<Scanned> {
    let host = ns_inode(std::process::id(), "pid");
    // Cgroups first: a process that starts after this read has its file read instead.
    let cgroups = super::cgroupfs::CgroupFs::discover().members();
    parallel(&pids(), |&p| {
        let mut s = scan_pid(p, host, with_cmdline, Some(&cgroups))?;
        if with_ns {
            s.ns = namespaces(p);
        }
        Some(s)
    })
}

/// Maps `f` over `items` on up to 4 threads (as many as there are CPUs), keeping order.
pub(crate) fn parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Option<R> + Sync,
) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    if workers == 1 || items.len() < 64 {
        return items.iter().filter_map(&f).collect();
    }
    let chunk = items.len().div_ceil(workers);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    let mut part = Vec::with_capacity(c.len());
                    part.extend(c.iter().filter_map(f));
                    part
                })
            })
            .collect();
        // Sized once, here and in each thread: a view's results are a few hundred bytes
        // each (a tree's 1,000 process views), and a growing vector copied them at each
        // doubling (filter_map gives no size hint), into fresh pages each time.
        let mut out = Vec::with_capacity(items.len());
        for h in handles {
            out.extend(h.join().unwrap_or_default());
        }
        out
    })
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
