//! Calibration programs for `cargo xtask bench` (the agent attaches them with the hidden
//! `--calibrate` flag, beside its own programs, to each lifecycle tracepoint). Each adds one
//! piece of what every observer program pays before it reads any fact, so the benchmark can
//! split a program's measured time into that fixed part and the reads of the task:
//!
//! - `calib_empty`: a program run itself (and bpf_stats' own clock reads around it);
//! - `calib_record`: + reserving a ForkEvent-sized ring-buffer record and discarding it;
//! - `calib_write`: + writing every byte of that record;
//! - `calib_clock`: + one `bpf_ktime_get_boot_ns`.
//!
//! Records are discarded, never submitted: the reader skips them, and no event is made up.

use aya_ebpf::{
    helpers::bpf_ktime_get_boot_ns, macros::raw_tracepoint, programs::RawTracePointContext,
};
use observer_common::ForkEvent;

use crate::{BPF_RB_NO_WAKEUP, EVENTS};

#[raw_tracepoint]
pub fn calib_empty(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint]
pub fn calib_record(_ctx: RawTracePointContext) -> i32 {
    if let Some(entry) = EVENTS.reserve::<ForkEvent>(0) {
        entry.discard(BPF_RB_NO_WAKEUP);
    }
    0
}

#[raw_tracepoint]
pub fn calib_write(_ctx: RawTracePointContext) -> i32 {
    const WORDS: usize = core::mem::size_of::<ForkEvent>() / 8;
    if let Some(mut entry) = EVENTS.reserve::<ForkEvent>(0) {
        let p = entry.as_mut_ptr().cast::<u64>();
        let mut i = 0;
        while i < WORDS {
            // SAFETY: within the reserved record; volatile so the stores stay stores (not a
            // memset call) and are not dropped before the discard.
            unsafe { core::ptr::write_volatile(p.add(i), i as u64) };
            i += 1;
        }
        entry.discard(BPF_RB_NO_WAKEUP);
    }
    0
}

#[raw_tracepoint]
pub fn calib_clock(_ctx: RawTracePointContext) -> i32 {
    // SAFETY: no preconditions; volatile so the call is not optimised away.
    let t = unsafe { bpf_ktime_get_boot_ns() };
    unsafe { core::ptr::read_volatile(&t) as i32 & 0 }
}
