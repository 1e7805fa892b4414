//! The agent's start-up seed: a task iterator (`iter/task`, Linux 5.8+) that writes one
//! `SeedTask` per thread-group leader, read by the same `fill_task` the tracepoint programs
//! use, so a process found at start-up carries exactly the facts an event would give it.
//! The agent reads the records from the iterator's file; /proc stays the fallback.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel, bpf_seq_write},
    macros::map,
    maps::PerCpuArray,
};
use observer_common::SeedTask;

use crate::{
    off,
    task::{fill_task, Probe},
};

/// `struct bpf_iter__task`: `{ struct bpf_iter_meta *meta; struct task_struct *task; }`.
#[repr(C)]
struct IterTask {
    meta: *const IterMeta,
    task: u64,
}

/// `struct bpf_iter_meta`: the seq_file comes first.
#[repr(C)]
struct IterMeta {
    seq: *mut c_void,
}

/// The record being written (too big for the 512-byte stack next to the reader's buffers).
#[map]
static SEED_RECORD: PerCpuArray<SeedTask> = PerCpuArray::with_max_entries(1, 0);

/// The context's task pointer, copied out with a helper so the verifier sees a plain
/// number (like a raw tracepoint's arguments) rather than a typed pointer that forbids the
/// offset arithmetic the reader does; 0 at the end of the pass.
fn ctx_task(ctx: *const IterTask) -> u64 {
    let mut task = 0u64;
    // SAFETY: reads the 8-byte `task` member of the context into a local.
    let ret = unsafe {
        bpf_probe_read_kernel(
            (&mut task as *mut u64).cast(),
            8,
            core::ptr::addr_of!((*ctx).task).cast(),
        )
    };
    if ret != 0 {
        0
    } else {
        task
    }
}

/// Writes `len` bytes at `data` to the iterator's output.
fn emit(ctx: *const IterTask, data: *const c_void, len: u32) {
    // SAFETY: the context's meta and its seq_file are valid for the whole call; `data`
    // points to `len` readable bytes.
    unsafe {
        let meta = core::ptr::read_volatile(core::ptr::addr_of!((*ctx).meta));
        let seq = core::ptr::read_volatile(core::ptr::addr_of!((*meta).seq));
        bpf_seq_write(seq.cast(), data, len);
    }
}

/// The context's task when it leads its thread group (/proc lists processes, not threads),
/// with its tgid and the reader that read them.
fn leader(ctx: *const IterTask) -> Option<(u64, u32, Probe)> {
    let task = ctx_task(ctx);
    if task == 0 {
        return None;
    }
    let mut r = Probe::new();
    let tgid: u32 = r.read(task, off!(task_tgid));
    let pid: u32 = r.read(task, off!(task_pid));
    (pid == tgid && !r.failed()).then_some((task, tgid, r))
}

/// Called once per task, then once with a NULL task at the end.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub extern "C" fn seed_tasks(ctx: *mut c_void) -> i32 {
    let ctx = ctx as *const IterTask;
    let Some((task, tgid, mut r)) = leader(ctx) else {
        return 0;
    };
    let Some(rec) = SEED_RECORD.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot, used by this run only; every field is written below.
    let s = unsafe { &mut *rec };
    fill_task(task, &mut s.task, &mut r);
    s.tgid = tgid;
    s.state = r.read(task, off!(task_state));
    s.exit_state = r.read(task, off!(task_exit_state));
    s.exit_code = r.read(task, off!(task_exit_code));
    s._pad = 0;
    let signal: u64 = r.read(task, off!(task_signal));
    s.nr_threads = if signal == 0 {
        0
    } else {
        r.read(signal, off!(signal_nr_threads))
    };
    if r.failed() {
        s.task.flags |= observer_common::TASK_FLAG_READ_ERROR;
    }
    emit(
        ctx,
        (rec as *const SeedTask).cast(),
        core::mem::size_of::<SeedTask>() as u32,
    );
    0
}

/// The reconciliation check's pid list: every thread-group leader's pid (4 bytes each),
/// cheaper than reading /proc's directory, which instantiates a dentry and an inode per
/// process (~55 against ~80 ms at 51,000 processes, most of it the kernel's own walk).
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub extern "C" fn seed_pids(ctx: *mut c_void) -> i32 {
    let ctx = ctx as *const IterTask;
    if let Some((_, tgid, _)) = leader(ctx) {
        emit(ctx, (&tgid as *const u32).cast(), 4);
    }
    0
}
