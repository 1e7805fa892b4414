//! Reading processes from /proc (procfs crate): the agent's start-up seed, its periodic
//! reconciliation, and the CLI's one-shot view when no agent runs. Also the cheap per-process
//! reads the views need for facts no event carries (state letter, CPU time, RSS).

use std::{io::Read, os::unix::fs::MetadataExt};

use observer_common::{MAX_PID_LEVELS, NS_COUNT, NS_NAMES};
use procfs::process::Process as ProcProcess;

/// Clock ticks per second of /proc times (USER_HZ).
pub fn ticks_per_second() -> u64 {
    procfs::ticks_per_second().max(1)
}

/// Nanoseconds of one /proc clock tick.
pub fn tick_ns() -> u64 {
    1_000_000_000 / ticks_per_second()
}

/// Page size in bytes (RSS in /proc stat is in pages).
pub fn page_size() -> u64 {
    procfs::page_size()
}

/// What /proc says about one process.
#[derive(Clone, Debug)]
pub struct Scanned {
    pub pid: u32,
    pub ppid: u32,
    /// Boot-clock ns, clock-tick precision.
    pub start_time_ns: u64,
    pub state: char,
    pub comm: String,
    pub threads: u32,
    pub uid: u32,
    pub gid: u32,
    pub ns_pids: Vec<u32>,
    pub ns: [u32; NS_COUNT],
    pub cgroup: String,
    /// NUL-separated argv as in /proc/<pid>/cmdline.
    pub cmdline: Vec<u8>,
    pub exe: String,
    pub cpu_ticks: u64,
    pub rss_pages: u64,
}

/// Live facts about a running process that only /proc has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    pub state: char,
    /// Current comm: programs rename themselves (prctl PR_SET_NAME; busybox applets do).
    pub comm: String,
    pub ppid: u32,
    pub start_ticks: u64,
    pub cpu_ticks: u64,
    pub rss_pages: u64,
    pub threads: u32,
}

/// Reads /proc/<pid>/stat only.
pub fn live(pid: u32) -> Option<Live> {
    let p = ProcProcess::new(pid as i32).ok()?;
    let s = p.stat().ok()?;
    Some(Live {
        state: s.state,
        comm: s.comm,
        ppid: s.ppid as u32,
        start_ticks: s.starttime,
        cpu_ticks: s.utime + s.stime,
        rss_pages: s.rss,
        threads: s.num_threads as u32,
    })
}

/// Inode of /proc/<pid>/ns/<name> (0 when unreadable or absent on this kernel).
pub fn ns_inode(pid: u32, name: &str) -> u32 {
    std::fs::metadata(format!("/proc/{pid}/ns/{name}")).map(|m| m.ino() as u32).unwrap_or(0)
}

/// Reads everything the table keeps about `pid`; None if it vanished meanwhile.
pub fn scan_pid(pid: u32) -> Option<Scanned> {
    let p = ProcProcess::new(pid as i32).ok()?;
    let stat = p.stat().ok()?;
    let status = p.status().ok();
    let mut ns = [0u32; NS_COUNT];
    for (i, name) in NS_NAMES.iter().enumerate() {
        ns[i] = ns_inode(pid, name);
    }
    let ns_pids = status
        .as_ref()
        .and_then(|s| s.nspid.clone())
        .map(|v| v.into_iter().map(|x| x as u32).take(MAX_PID_LEVELS).collect())
        .unwrap_or_else(|| vec![pid]);
    let mut cgroup = String::new();
    if let Ok(mut f) = p.open_relative("cgroup") {
        let _ = f.read_to_string(&mut cgroup);
    }
    let mut cmdline = Vec::new();
    if let Ok(f) = p.open_relative("cmdline") {
        let _ = f.take(super::process::ARGV_BYTES as u64).read_to_end(&mut cmdline);
    }
    let exe = p.exe().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
    Some(Scanned {
        pid,
        ppid: stat.ppid as u32,
        start_time_ns: stat.starttime * tick_ns(),
        state: stat.state,
        comm: stat.comm.clone(),
        threads: stat.num_threads as u32,
        uid: status.as_ref().map(|s| s.ruid).unwrap_or(0),
        gid: status.as_ref().map(|s| s.rgid).unwrap_or(0),
        ns_pids,
        ns,
        cgroup,
        cmdline,
        exe,
        cpu_ticks: stat.utime + stat.stime,
        rss_pages: stat.rss,
    })
}

/// Every process id in /proc.
pub fn pids() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok())).collect()
}

/// Scans all processes, on as many threads as there are CPUs (at most 4).
pub fn scan_all() -> Vec<Scanned> {
    let pids = pids();
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 4);
    if workers == 1 || pids.len() < 256 {
        return pids.into_iter().filter_map(scan_pid).collect();
    }
    let chunk = pids.len().div_ceil(workers);
    std::thread::scope(|s| {
        let handles: Vec<_> = pids
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().filter_map(|&p| scan_pid(p)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}
