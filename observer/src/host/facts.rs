//! The facts the host readers give about a process or a cgroup, as plain data: what views
//! are handed (views read nothing themselves: `views` may import this module of `host`
//! and no other).

use serde::{Deserialize, Serialize};

/// Live facts about a running process that only /proc has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    pub(crate) state: char,
    /// Current comm: programs rename themselves (prctl PR_SET_NAME; busybox applets do).
    pub(crate) comm: String,
    pub(crate) ppid: u32,
    pub(crate) start_ticks: u64,
    pub(crate) cpu_ticks: u64,
    pub(crate) rss_pages: u64,
    pub(crate) threads: u32,
}

impl Live {
    /// Exited and not reaped. A leader thread that exited while other threads run also
    /// reads as `Z` in /proc (with Threads > 1): that process is alive.
    pub(crate) fn is_zombie(&self) -> bool {
        self.state == 'Z' && self.threads <= 1
    }

    /// Whether these facts are of the process that started at `start_time_ns` (the pid not
    /// reused since): /proc's start time in clock ticks against the caller's.
    pub(crate) fn is_of(&self, start_time_ns: u64) -> bool {
        self.start_ticks == start_time_ns / super::scan::tick_ns()
    }
}

/// One cgroup's resource use; None where this host does not account it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Resources {
    pub(crate) cpu_usage_ns: Option<u64>,
    pub(crate) memory_bytes: Option<u64>,
    /// None: no limit.
    pub(crate) memory_limit_bytes: Option<u64>,
    pub(crate) pids: Option<u64>,
    /// None: no limit.
    pub(crate) pids_limit: Option<u64>,
    pub(crate) oom_kills: Option<u64>,
}
