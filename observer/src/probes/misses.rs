//! What the kernel counts of each of our programs, from its `bpf_prog_info`
//! (`BPF_OBJ_GET_INFO_BY_FD`): the runs it skipped, and its runs and their time.
//!
//! A raw tracepoint program is not run when it is already running on the same CPU (the
//! task running it was preempted, or an interrupt fired the same tracepoint): the kernel
//! counts that in `recursion_misses` (Linux 5.12+), and the event never reaches the ring
//! buffer — a loss like a full buffer. aya 0.14's `ProgramInfo` does not expose the field,
//! so the info is read here, once for all three figures. Runs and run time are counted
//! only while the kernel's BPF statistics are on (`BPF_ENABLE_STATS`, or the
//! `kernel.bpf_stats_enabled` sysctl).

use std::os::fd::{AsRawFd, BorrowedFd};

use aya_obj::generated::bpf_prog_info;

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `info` member of `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// One program's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProgramRuns {
    /// Runs skipped; None when the kernel does not report them (before 5.12).
    pub(crate) misses: Option<u64>,
    /// Runs, and their time in ns, counted while BPF statistics were on.
    pub(crate) runs: u64,
    pub(crate) run_ns: u64,
}

/// The program's counters; None when the call fails.
pub(crate) fn program_runs(fd: BorrowedFd<'_>) -> Option<ProgramRuns> {
    // SAFETY: bpf_prog_info is plain old data; all zeroes is its empty value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let len = std::mem::size_of::<bpf_prog_info>() as u32;
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: len,
        info: &mut info as *mut bpf_prog_info as u64,
    };
    // SAFETY: attr points at a live, writable bpf_prog_info of info_len bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>() as u32,
        )
    };
    // The kernel writes back how much of the struct it knows: an older kernel's shorter
    // struct ends before the field.
    if r != 0 {
        return None;
    }
    let end = std::mem::offset_of!(bpf_prog_info, recursion_misses) + 8;
    Some(ProgramRuns {
        misses: (attr.info_len as usize >= end).then_some(info.recursion_misses),
        runs: info.run_cnt,
        run_ns: info.run_time_ns,
    })
}
