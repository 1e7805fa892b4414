//! Kernel-side diagnostics with aya-log: a record the ring buffer had no room for, or an
//! event for which a member read failed, is said — at most once a second per event type
//! and CPU — on top of being counted in STATS. Off unless the loader enables it
//! (`AYA_LOG_LEVEL`, set for `observer events -v` and `observer agent -vv`): then a log
//! statement costs one load of that level.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::PerCpuArray, EbpfContext};
use aya_log_ebpf::info;
use observer_common::{EventKind, KIND_SLOTS};

/// Per event type: when it last logged (ns, per CPU).
#[map]
static LOGGED_AT: PerCpuArray<u64> = PerCpuArray::with_max_entries(KIND_SLOTS as u32, 0);

const EVERY_NS: u64 = 1_000_000_000;

/// Whether `kind` may log now (and remember that it did).
#[inline(always)]
fn due(kind: EventKind) -> bool {
    let Some(at) = LOGGED_AT.get_ptr_mut(kind as u32) else {
        return false;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a valid per-CPU slot.
    let last = unsafe { &mut *at };
    if *last != 0 && now.wrapping_sub(*last) < EVERY_NS {
        return false;
    }
    *last = now;
    true
}

#[inline(always)]
pub fn dropped<C: EbpfContext>(ctx: &C, kind: EventKind) {
    if aya_log_ebpf::macro_support::level_enabled(aya_log_ebpf::macro_support::Level::Info)
        && due(kind)
    {
        info!(
            ctx,
            "{} event dropped: the ring buffer is full (counted in dropped; raise --ringbuf-size)",
            kind.name()
        );
    }
}

#[inline(always)]
pub fn read_failed<C: EbpfContext>(ctx: &C, kind: EventKind) {
    if aya_log_ebpf::macro_support::level_enabled(aya_log_ebpf::macro_support::Level::Info)
        && due(kind)
    {
        info!(
            ctx,
            "{} event: a kernel read failed, the fields it fills read 0 (counted in read_errors)",
            kind.name()
        );
    }
}
