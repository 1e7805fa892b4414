//! Calibration programs for `cargo xtask bench` (the agent attaches them with the hidden
//! `--calibrate` flag before its own programs, so they run first on each event and meet
//! the caches as observer's programs do). The benchmark splits a program's measured time
//! with them. Raw tracepoints attached to every lifecycle tracepoint, each adding one piece
//! of what every observer program pays before it reads any fact:
//!
//! - `calib_empty`: a program run itself (and bpf_stats' own clock reads around it);
//! - `calib_record`: + reserving a ForkEvent-sized ring-buffer record and discarding it;
//! - `calib_write`: + writing every byte of that record;
//! - `calib_clock`: + one `bpf_ktime_get_boot_ns` stamped into the record: all of it, a
//!   program that records nothing of the task.
//!
//! And BTF tracepoints on sched_process_exit, each reading one group of the exiting task's
//! facts exactly as the exit program does (task.rs, Direct reader) into a stack copy:
//! `calib_ident` (ids, start time, comm), `calib_creds` (parent, credentials, user
//! namespace), `calib_pids` (pid numbers, own pid namespace), `calib_ns` (nsproxy and its
//! seven namespaces), `calib_cgroup` (css_set → cgroup → kernfs id).
//!
//! Records are discarded, never submitted: the reader skips them, and no event is made up.

use core::mem::MaybeUninit;

use aya_ebpf::{
    helpers::bpf_ktime_get_boot_ns,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use observer_common::{ForkEvent, TaskInfo};

use crate::{
    off,
    task::{cgroup_id, fill_namespaces, fill_parent_creds, fill_pids, Direct},
    BPF_RB_NO_WAKEUP, EVENTS,
};

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
    written(false);
    0
}

#[raw_tracepoint]
pub fn calib_clock(_ctx: RawTracePointContext) -> i32 {
    written(true);
    0
}

/// Reserves a ForkEvent-sized record, writes every byte of it (the boot-clock time first,
/// with `clock`) and discards it.
#[inline(always)]
fn written(clock: bool) {
    const WORDS: usize = core::mem::size_of::<ForkEvent>() / 8;
    if let Some(mut entry) = EVENTS.reserve::<ForkEvent>(0) {
        let p = entry.as_mut_ptr().cast::<u64>();
        // SAFETY: no preconditions.
        let first = if clock {
            unsafe { bpf_ktime_get_boot_ns() }
        } else {
            0
        };
        let mut i = 0;
        while i < WORDS {
            // SAFETY: within the reserved record; volatile so the stores stay stores (not a
            // memset call) and are not dropped before the discard.
            unsafe { core::ptr::write_volatile(p.add(i), if i == 0 { first } else { i as u64 }) };
            i += 1;
        }
        entry.discard(BPF_RB_NO_WAKEUP);
    }
}

/// Reads one group of facts of sched_process_exit's task (its first argument) into a stack
/// TaskInfo that is then dropped: the reads are volatile loads, so they stay.
macro_rules! reads {
    ($name:ident, |$task:ident, $t:ident, $r:ident| $body:expr) => {
        #[btf_tracepoint(function = "sched_process_exit")]
        pub fn $name(ctx: BtfTracePointContext) -> i32 {
            let $task: u64 = ctx.arg(0);
            let mut info = MaybeUninit::<TaskInfo>::uninit();
            // SAFETY: plain integers, only written through this reference.
            let $t = unsafe { &mut *info.as_mut_ptr() };
            let $r = &mut Direct::new();
            $body;
            0
        }
    };
}

reads!(calib_ident, |task, t, r| {
    let _: u32 = r.read(task, off!(task_tgid));
    let _: u32 = r.read(task, off!(task_pid));
    t.start_time_ns = r.read(task, off!(task_start_boottime));
    r.read_comm(&mut t.comm, task, off!(task_comm));
});
reads!(calib_creds, |task, t, r| fill_parent_creds(task, t, r));
reads!(calib_pids, |task, t, r| fill_pids(task, t, r));
reads!(calib_ns, |task, t, r| fill_namespaces(task, t, r));
reads!(calib_cgroup, |task, t, r| t.cgroup_id = cgroup_id(task, r));
