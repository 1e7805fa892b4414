//! The process ids of one range of the pid space, read from /proc's directory without
//! listing the rest: the reconciliation check of a big node reads the space a slice at a
//! time (a whole read of 50,000 processes costs ~80 ms of CPU, most of it the kernel making
//! a dentry per process).
//!
//! /proc's directory offset of process `p` is `TGID_OFFSET + p` (fs/proc/base.c,
//! `proc_pid_readdir`: `iter.tgid = pos - TGID_OFFSET`, with `TGID_OFFSET` =
//! `FIRST_PROCESS_ENTRY + 2` = 258 since Linux 2.6): seeking there starts the listing at the
//! first process at or above `p`. A kernel that numbered its directory otherwise would
//! list fewer or other processes; the range is checked on every entry, and a process the
//! table has that a slice lacks is looked up by itself before the check calls it gone.

use std::{
    ops::Range,
    os::fd::{AsRawFd, OwnedFd},
};

use nix::{dir::Dir, fcntl::OFlag, sys::stat::Mode};

/// `proc_pid_readdir`'s offset of pid 0.
const TGID_OFFSET: i64 = 258;

/// The process ids in /proc within `range`, in order.
pub(crate) fn pids_in(range: Range<u32>) -> Vec<u32> {
    read(range).0
}

/// `pids_in`, with how many directory entries were read for it.
fn read(range: Range<u32>) -> (Vec<u32>, usize) {
    let Ok(fd) = nix::fcntl::open(
        "/proc",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return (Vec::new(), 0);
    };
    seek(&fd, TGID_OFFSET + i64::from(range.start));
    let Ok(mut dir) = Dir::from_fd(fd) else {
        return (Vec::new(), 0);
    };
    let (mut out, mut entries) = (Vec::new(), 0);
    for e in dir.iter().flatten() {
        entries += 1;
        let Some(pid) = e
            .file_name()
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid >= range.end {
            break;
        }
        if pid >= range.start {
            out.push(pid);
        }
    }
    (out, entries)
}

/// Whether this kernel's /proc seeks to a pid as [`pids_in`] expects: this process's own
/// slice lists it alone.
pub(crate) fn seeks() -> bool {
    let me = std::process::id();
    let (slice, entries) = read(me..me + 1);
    slice == [me] && entries <= 2
}

fn seek(fd: &OwnedFd, to: i64) {
    // SAFETY: lseek on a descriptor this function owns; a failure leaves it at the start,
    // which lists the whole directory (filtered by range).
    unsafe {
        libc::lseek(fd.as_raw_fd(), to, libc::SEEK_SET);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_lists_the_processes_of_its_range_and_only_those() {
        let me = std::process::id();
        assert_eq!(pids_in(me..me + 1), vec![me], "this process, alone");
        let all = crate::host::scan::pids();
        let (lo, hi) = (me.saturating_sub(5_000), me + 5_000);
        let got = pids_in(lo..hi);
        assert!(got.iter().all(|p| (lo..hi).contains(p)), "{got:?}");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
        assert!(got.contains(&me));
        // Every process of the range /proc listed before is in the slice, or gone since.
        let missing: Vec<u32> = all
            .into_iter()
            .filter(|p| (lo..hi).contains(p) && !got.contains(p))
            .filter(|&p| crate::host::scan::exists(p))
            .collect();
        assert!(missing.is_empty(), "{missing:?}");
        assert!(pids_in(0..1).is_empty(), "no process 0");
        // The listing starts at the range: /proc's other entries and the processes below
        // it are not read (one entry past the end ends it).
        let (slice, entries) = read(me..me + 1);
        assert_eq!(
            (slice.len(), entries <= 2),
            (1, true),
            "{entries} entries read"
        );
        assert!(seeks());
    }
}
