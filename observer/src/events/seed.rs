//! The task iterators' records (observer-ebpf/src/seed.rs), decoded: a `SeedTask` per
//! process from the seed's pass, a pid per process from the reconciliation check's, and a
//! task's record as the /proc scan would describe the process. `probes::seed` runs the
//! iterators and reads their bytes; interpreting them is done here, with the ring buffer's.

use observer_common::{SeedTask, COMM_LEN};

use crate::host::scan::Scanned;

/// The records of an iterator read (a partial trailing record, which the kernel never
/// writes, is ignored).
pub(crate) fn decode(bytes: &[u8]) -> Vec<SeedTask> {
    bytes
        .chunks_exact(std::mem::size_of::<SeedTask>())
        // SAFETY: SeedTask is plain old data (repr(C), integers only); any bytes are valid.
        .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<SeedTask>()) })
        .collect()
}

/// The state letter /proc shows for a task's raw `__state` and `exit_state`
/// (fs/proc/array.c: `task_state_index`, "RSDTtXZPI").
pub(crate) fn state_letter(state: u32, exit_state: u32) -> char {
    const TASK_REPORT: u32 = 0x7f;
    const TASK_IDLE: u32 = 0x402; // TASK_UNINTERRUPTIBLE | TASK_NOLOAD
    const TASK_RTLOCK_WAIT: u32 = 0x1000;
    let raw = state | exit_state;
    let mut s = raw & TASK_REPORT;
    if raw == TASK_IDLE {
        return 'I';
    }
    if raw == TASK_RTLOCK_WAIT {
        s = 2;
    }
    let index = 32 - s.leading_zeros(); // fls()
    b"RSDTtXZPI"
        .get(index as usize)
        .map(|&c| c as char)
        .unwrap_or('?')
}

/// A record as the /proc scan would describe the process (plus what only the kernel side
/// reads: every namespace, the cgroup id, the exact start time), with `cgroup` the lines
/// of its `/proc/<pid>/cgroup` that container attribution reads.
pub(crate) fn scanned(t: &SeedTask, cgroup: String) -> Scanned {
    let i = &t.task;
    let levels = (i.pid_level as usize + 1).min(i.ns_pids.len());
    let comm_len = i.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    let state = state_letter(t.state, t.exit_state);
    Scanned {
        pid: t.tgid,
        ppid: i.ppid,
        start_time_ns: i.start_time_ns,
        start_exact: true,
        state,
        comm: String::from_utf8_lossy(&i.comm[..comm_len]).into_owned(),
        threads: t.nr_threads.max(1),
        uid: i.uid,
        gid: i.gid,
        ns_pids: i.ns_pids[..levels].to_vec(),
        ns: i.ns,
        cgroup,
        cgroup_id: i.cgroup_id,
        cmdline: Vec::new(),
        exit_status: (state == 'Z').then_some(t.exit_code),
    }
}

/// The pids of one pass of the pid iterator: one native-endian u32 each.
pub(crate) fn pids(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::state_letter;

    #[test]
    fn state_letters_match_proc() {
        assert_eq!(state_letter(0, 0), 'R');
        assert_eq!(state_letter(1, 0), 'S');
        assert_eq!(state_letter(2, 0), 'D');
        assert_eq!(state_letter(0x402, 0), 'I');
        assert_eq!(state_letter(4, 0), 'T');
        assert_eq!(state_letter(8, 0), 't');
        assert_eq!(state_letter(0x80, 0x20), 'Z'); // TASK_DEAD | EXIT_ZOMBIE
        assert_eq!(state_letter(0, 0x10), 'X');
    }
}
