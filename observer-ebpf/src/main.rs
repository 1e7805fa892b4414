//! observer's kernel side: one program per process-lifecycle tracepoint. Each reserves a
//! fixed-layout record in the ring buffer, fills it from the task concerned (namespace PIDs,
//! namespace inodes and cgroup id are read here, at the event, so a task that lives 1 ms is
//! described as exactly as one that lives a day) and submits it. Records that do not fit are
//! counted, never silently lost.
//!
//! The four sched events (fork, exec, exit, free) are each built twice from one body: a BTF
//! tracepoint (`tp_btf`, plain loads through typed `task_struct` arguments) that the loader
//! attaches where the kernel accepts it, and a raw tracepoint (probe reads) otherwise; their
//! argument lists have not moved between kernels (unlike the `sched_process_fork` record
//! layout, which did). `cgroup_attach_task` and `signal_generate` are raw tracepoints; the
//! syscall exits (setns, unshare) and `oom:mark_victim` are ordinary tracepoints whose field
//! offsets come from their format files. `seed.rs` holds the task iterators of the start-up
//! seed and the cheap check, `calib.rs` the calibration programs of the benchmark.
#![no_std]
#![no_main]

mod calib;
mod diag;
mod memcg;
mod seed;
mod task;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_smp_processor_id,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str_bytes, generated::bpf_probe_read_user,
    },
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
    EbpfContext,
};
use memcg::memcg_limit;
use observer_common::{
    signal_bit, CgroupAttachEvent, EventHeader, EventKind, ExecEvent, ExitEvent, ForkEvent,
    FreeEvent, NsEvent, Offsets, OomEvent, SignalEvent, Stats, TaskInfo, ABSENT, ARGS_LEN,
    CGROUP_PATH_LEN, OOM_HAS_MEMCG, OOM_HAS_RSS, OOM_HAS_SCORE_ADJ, PF_EXITING, SIGCHLD,
    TASK_FLAG_CGROUP_PATH_CUT, TASK_FLAG_EXITING,
};
use task::{cgroup_id, fill_identity, fill_task, own_pid, Probe, Reader};

/// Member offsets of the running kernel, written by the loader (`override_global("OFFS")`).
#[unsafe(no_mangle)]
static OFFS: Offsets = Offsets::ALL_ABSENT;

/// Read one field of OFFS. A volatile read of the field's own address: the compiler must not
/// fold the placeholder value, and only 4 bytes are loaded (not the whole struct).
#[macro_export]
macro_rules! off {
    ($f:ident) => {
        $crate::read_offset(core::ptr::addr_of!($crate::OFFS.$f))
    };
}

#[inline(always)]
pub fn read_offset(p: *const u32) -> u32 {
    // SAFETY: `p` points at a field of the initialised static OFFS.
    unsafe { core::ptr::read_volatile(p) }
}

/// Wake the reader only once this many bytes wait in the ring buffer; below that, records
/// are submitted without a wakeup and the reader drains on its own timer. One wakeup per
/// event would cost the agent a context switch per event. Set by the loader.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

/// Signals reported (bit n-1 for signal n, observer_common::signal_bit). Set by the loader
/// (`--signals`); the rest are dropped here, before a record is reserved.
#[unsafe(no_mangle)]
static SIGNAL_MASK: u64 = 0;

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Submit flags for a record: batch wakeups unless the buffer is filling up.
#[inline(always)]
fn wakeup_flags() -> u64 {
    // SAFETY: reading an initialised static.
    let threshold = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(WAKEUP_BYTES)) };
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// The size here is a placeholder; the loader sets it (`--ringbuf-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map]
static STATS: PerCpuArray<Stats> = PerCpuArray::with_max_entries(1, 0);

#[derive(Clone, Copy)]
enum Counter {
    Emitted,
    Dropped,
    ReadError,
}

#[inline(always)]
fn count(kind: EventKind, counter: Counter) {
    if let Some(s) = STATS.get_ptr_mut(0) {
        let s = unsafe { &mut *s };
        let slot = match counter {
            Counter::Emitted => s.emitted.get_mut(kind as usize),
            Counter::Dropped => s.dropped.get_mut(kind as usize),
            Counter::ReadError => s.read_errors.get_mut(kind as usize),
        };
        if let Some(v) = slot {
            *v += 1;
        }
    }
}

#[inline(always)]
fn header(h: &mut EventHeader, kind: EventKind, tgid: u32, pid: u32) {
    header_at(h, kind, tgid, pid, 0);
}

/// The header, stamped `at` (boot-clock ns), or now when `at` is 0.
#[inline(always)]
fn header_at(h: &mut EventHeader, kind: EventKind, tgid: u32, pid: u32, at: u64) {
    h.kind = kind as u32;
    h.cpu = unsafe { bpf_get_smp_processor_id() };
    h.ktime_ns = if at != 0 {
        at
    } else {
        unsafe { bpf_ktime_get_boot_ns() }
    };
    h.tgid = tgid;
    h.pid = pid;
}

/// Header + TaskInfo for `task`, read through its struct (not the current task).
#[inline(always)]
fn describe<const D: bool>(
    h: &mut EventHeader,
    t: &mut TaskInfo,
    kind: EventKind,
    task: u64,
    r: &mut Reader<D>,
) {
    let tgid = r.read(task, off!(task_tgid));
    let pid = r.read(task, off!(task_pid));
    header(h, kind, tgid, pid);
    fill_task(task, t, r);
}

/// Header + TaskInfo for the current task (`task`: the current task, as the tracepoint
/// passes it; typed for the direct reader, unlike bpf_get_current_task's).
#[inline(always)]
fn describe_current<const D: bool>(
    h: &mut EventHeader,
    t: &mut TaskInfo,
    kind: EventKind,
    task: u64,
    r: &mut Reader<D>,
) {
    let id = bpf_get_current_pid_tgid();
    header(h, kind, (id >> 32) as u32, id as u32);
    fill_task(task, t, r);
}

/// Reserve a record of type `T` or count it as dropped (and say so, rate-limited).
macro_rules! reserve {
    ($ty:ty, $kind:expr, $ctx:expr) => {
        match EVENTS.reserve::<$ty>(0) {
            Some(e) => e,
            None => {
                count($kind, Counter::Dropped);
                diag::dropped($ctx, $kind);
                return 0;
            }
        }
    };
}

#[inline(always)]
fn finish<C: EbpfContext, const D: bool>(ctx: &C, kind: EventKind, r: &Reader<D>) {
    count(kind, Counter::Emitted);
    if r.failed() {
        count(kind, Counter::ReadError);
        diag::read_failed(ctx, kind);
    }
}

// The four lifecycle programs are each built twice from one body: a BTF tracepoint
// (`tp_btf_*`, Direct reader: plain loads through the typed arguments) that the loader
// attaches where the kernel accepts it, and a raw tracepoint (Probe reader) otherwise.
macro_rules! lifecycle {
    ($tp:literal, $raw:ident, $btf:ident, $body:ident, $nargs:literal) => {
        #[raw_tracepoint(tracepoint = $tp)]
        pub fn $raw(ctx: RawTracePointContext) -> i32 {
            let a = args::<_, $nargs>(|i| ctx.arg(i));
            $body(&ctx, a, Probe::new())
        }

        #[btf_tracepoint(function = $tp)]
        pub fn $btf(ctx: BtfTracePointContext) -> i32 {
            let a = args::<_, $nargs>(|i| ctx.arg(i));
            $body(&ctx, a, task::Direct::new())
        }
    };
}

/// The first N arguments of a tracepoint, as the kernel passes them (u64 each).
#[inline(always)]
fn args<F: Fn(usize) -> u64, const N: usize>(arg: F) -> [u64; N] {
    let mut a = [0u64; N];
    let mut i = 0;
    while i < N {
        a[i] = arg(i);
        i += 1;
    }
    a
}

// sched_process_fork(struct task_struct *parent, struct task_struct *child)
lifecycle!(
    "sched_process_fork",
    sched_process_fork,
    tp_btf_fork,
    fork,
    2
);

#[inline(always)]
fn fork<C: EbpfContext, const D: bool>(ctx: &C, a: [u64; 2], mut r: Reader<D>) -> i32 {
    let [parent, child] = a;
    let kind = EventKind::Fork;
    let mut entry = reserve!(ForkEvent, kind, ctx);
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    // The child's start time is the fork's time (copy_process stamps it just before this
    // tracepoint): no clock read of our own.
    let tgid = r.read(child, off!(task_tgid));
    let pid = r.read(child, off!(task_pid));
    fill_task(child, &mut ev.task, &mut r);
    let start = ev.task.start_time_ns;
    header_at(&mut ev.header, kind, tgid, pid, start);
    ev.parent_tid = r.read(parent, off!(task_pid));
    let parent_tgid: u32 = r.read(parent, off!(task_tgid));
    ev.is_thread = (parent_tgid == ev.header.tgid) as u32;
    entry.submit(wakeup_flags());
    finish(ctx, kind, &r);
    0
}

// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm);
// p is the current task.
lifecycle!(
    "sched_process_exec",
    sched_process_exec,
    tp_btf_exec,
    exec,
    3
);

#[inline(always)]
fn exec<C: EbpfContext, const D: bool>(ctx: &C, a: [u64; 3], mut r: Reader<D>) -> i32 {
    let [task, old_pid, bprm] = a;
    let kind = EventKind::Exec;
    let mut entry = reserve!(ExecEvent, kind, ctx);
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    describe_current(&mut ev.header, &mut ev.task, kind, task, &mut r);
    ev.old_tid = old_pid as u32;
    exec_credentials(ev, task, bprm, &mut r);
    exec_identity(ev, bprm, &mut r);

    ev.filename[0] = 0;
    let filename: u64 = r.read(bprm, off!(binprm_filename));
    if filename != 0
        && unsafe { bpf_probe_read_kernel_str_bytes(filename as *const u8, &mut ev.filename) }
            .is_err()
    {
        r.fail();
    }

    // argv of the new image: [mm->arg_start, mm->arg_end) in user memory of the current task.
    ev.args_len = 0;
    let mm: u64 = r.read(task, off!(task_mm));
    let start: u64 = r.read(mm, off!(mm_arg_start));
    let end: u64 = r.read(mm, off!(mm_arg_end));
    if start != 0 && end > start {
        let mut len = end - start;
        if len > ARGS_LEN as u64 {
            len = ARGS_LEN as u64;
        }
        let ret = unsafe {
            bpf_probe_read_user(ev.args.as_mut_ptr().cast(), len as u32, start as *const _)
        };
        if ret == 0 {
            ev.args_len = len as u32;
        } else {
            r.fail();
        }
    }
    entry.submit(wakeup_flags());
    finish(ctx, kind, &r);
    0
}

/// The credentials the exec left the task with (committed before this tracepoint), and
/// whether the kernel judged the exec privilege-gaining (`bprm->secureexec`, a bitfield).
#[inline(always)]
fn exec_credentials<const D: bool>(ev: &mut ExecEvent, task: u64, bprm: u64, r: &mut Reader<D>) {
    let cred: u64 = r.read(task, off!(task_cred));
    ev.euid = r.read(cred, off!(cred_euid));
    ev.egid = r.read(cred, off!(cred_egid));
    ev.suid = r.read(cred, off!(cred_suid));
    ev.sgid = r.read(cred, off!(cred_sgid));
    ev.cap_eff = r.read(cred, off!(cred_cap_effective));
    let bit = off!(binprm_secureexec_bit);
    ev.secureexec = if bit == ABSENT {
        0
    } else {
        let byte: u8 = r.read(bprm, bit / 8);
        ((byte >> (bit % 8)) & 1) as u32
    };
}

/// The executable's identity: device, inode, size and modification time of `bprm->file`.
#[inline(always)]
fn exec_identity<const D: bool>(ev: &mut ExecEvent, bprm: u64, r: &mut Reader<D>) {
    let file: u64 = r.read(bprm, off!(binprm_file));
    let inode: u64 = r.read(file, off!(file_inode));
    ev.exe_ino = r.read(inode, off!(inode_ino));
    ev.exe_size = r.read(inode, off!(inode_size));
    ev.exe_mtime_sec = r.read(inode, off!(inode_mtime_sec));
    ev.exe_mtime_nsec = r.read(inode, off!(inode_mtime_nsec));
    let sb: u64 = r.read(inode, off!(inode_sb));
    ev.exe_dev = r.read(sb, off!(sb_dev));
    ev._pad = 0;
}

// sched_process_exit(struct task_struct *p [, bool group_dead on newer kernels])
lifecycle!(
    "sched_process_exit",
    sched_process_exit,
    tp_btf_exit,
    exit,
    1
);

#[inline(always)]
fn exit<C: EbpfContext, const D: bool>(ctx: &C, a: [u64; 1], mut r: Reader<D>) -> i32 {
    let [task] = a;
    let kind = EventKind::Exit;
    let mut entry = reserve!(ExitEvent, kind, ctx);
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    describe(&mut ev.header, &mut ev.task, kind, task, &mut r);
    ev.exit_code = r.read(task, off!(task_exit_code));
    ev.is_leader = (ev.header.tgid == ev.header.pid) as u32;
    // do_exit() decrements signal->live before this tracepoint fires.
    let signal: u64 = r.read(task, off!(task_signal));
    let live: i32 = if signal == 0 {
        0
    } else {
        r.read(signal, off!(signal_live))
    };
    ev.group_dead = (signal != 0 && live == 0) as u32;
    ev._pad = 0;
    entry.submit(wakeup_flags());
    finish(ctx, kind, &r);
    0
}

// sched_process_free(struct task_struct *p): the task is released (a zombie was reaped).
lifecycle!(
    "sched_process_free",
    sched_process_free,
    tp_btf_free,
    free,
    1
);

#[inline(always)]
fn free<C: EbpfContext, const D: bool>(ctx: &C, a: [u64; 1], mut r: Reader<D>) -> i32 {
    let [task] = a;
    let kind = EventKind::Free;
    let mut entry = reserve!(FreeEvent, kind, ctx);
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    let tgid = r.read(task, off!(task_tgid));
    let pid = r.read(task, off!(task_pid));
    header(&mut ev.header, kind, tgid, pid);
    fill_identity(task, &mut ev.task, &mut r);
    entry.submit(wakeup_flags());
    finish(ctx, kind, &r);
    0
}

#[inline(always)]
fn ns_syscall_exit(ctx: &TracePointContext, kind: EventKind) -> i32 {
    let ret: i64 = match unsafe { ctx.read_at::<i64>(off!(tp_sys_exit_ret) as usize) } {
        Ok(v) => v,
        Err(_) => return 0,
    };
    if ret != 0 {
        return 0;
    }
    let mut entry = reserve!(NsEvent, kind, ctx);
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    let mut r = Probe::new();
    let current = unsafe { bpf_get_current_task() };
    describe_current(&mut ev.header, &mut ev.task, kind, current, &mut r);
    ev.ret = ret;
    entry.submit(wakeup_flags());
    finish(ctx, kind, &r);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_setns")]
pub fn sys_exit_setns(ctx: TracePointContext) -> i32 {
    ns_syscall_exit(&ctx, EventKind::Setns)
}

#[tracepoint(category = "syscalls", name = "sys_exit_unshare")]
pub fn sys_exit_unshare(ctx: TracePointContext) -> i32 {
    ns_syscall_exit(&ctx, EventKind::Unshare)
}

// cgroup_attach_task(struct cgroup *dst_cgrp, const char *path, struct task_struct *task,
//                    bool threadgroup)
#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn cgroup_attach_task(ctx: RawTracePointContext) -> i32 {
    let cgrp: u64 = ctx.arg(0);
    let path: u64 = ctx.arg(1);
    let task: u64 = ctx.arg(2);
    let threadgroup: u64 = ctx.arg(3);
    let kind = EventKind::CgroupAttach;
    let mut entry = reserve!(CgroupAttachEvent, kind, &ctx);
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    let mut r = Probe::new();
    describe(&mut ev.header, &mut ev.task, kind, task, &mut r);
    // The tracepoint fires even for a task the kernel skipped because it was exiting (a
    // zombie's pid written to cgroup.procs): say so, such a task did not move.
    let pf: u32 = r.read(task, off!(task_flags));
    if pf & PF_EXITING != 0 {
        ev.task.flags |= TASK_FLAG_EXITING;
    }
    let kn: u64 = r.read(cgrp, off!(cgroup_kn));
    ev.dst_cgroup_id = r.read(kn, off!(kernfs_node_id));
    ev.dst_level = r.read(cgrp, off!(cgroup_level));
    let root: u64 = r.read(cgrp, off!(cgroup_root));
    ev.hierarchy_id = r.read(root, off!(cgroup_root_hierarchy_id));
    ev.threadgroup = (threadgroup & 0xff != 0) as u32;
    ev._pad = 0;
    ev.path[0] = 0;
    if path != 0 {
        match unsafe { bpf_probe_read_kernel_str_bytes(path as *const u8, &mut ev.path) } {
            // The helper always ends the copy with a NUL: a path that filled it may be cut.
            Ok(s) if s.len() >= CGROUP_PATH_LEN - 1 => {
                ev.task.flags |= TASK_FLAG_CGROUP_PATH_CUT;
            }
            Ok(_) => {}
            Err(_) => r.fail(),
        }
    }
    entry.submit(wakeup_flags());
    finish(&ctx, kind, &r);
    0
}

// signal_generate(int sig, struct kernel_siginfo *info, struct task_struct *task,
//                 int group, int result)
#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn signal_generate(ctx: RawTracePointContext) -> i32 {
    let sig = ctx.arg::<u64>(0) as u32;
    let info: u64 = ctx.arg(1);
    let task: u64 = ctx.arg(2);
    let group: u64 = ctx.arg(3);
    let result: u64 = ctx.arg(4);
    // SAFETY: reading an initialised static.
    let mask = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(SIGNAL_MASK)) };
    if mask & signal_bit(sig) == 0 {
        if sig == SIGCHLD {
            return 0;
        }
        // Any other signal to PID 1 of a container's pid namespace is reported: that is
        // where a missing handler makes `docker stop` wait for its timeout.
        let mut r = Probe::new();
        let (level, nr, _) = own_pid(task, &mut r);
        if level == 0 || nr != 1 {
            return 0;
        }
    }
    let kind = EventKind::Signal;
    let mut entry = reserve!(SignalEvent, kind, &ctx);
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    let mut r = Probe::new();
    describe(&mut ev.header, &mut ev.task, kind, task, &mut r);
    let id = bpf_get_current_pid_tgid();
    ev.sender_tgid = (id >> 32) as u32;
    ev.sender_pid = id as u32;
    let current = unsafe { bpf_get_current_task() };
    ev.sender_start_ns = r.read(current, off!(task_start_boottime));
    ev.sender_cgroup_id = cgroup_id(current, &mut r);
    ev.sender_pidns = own_pid(current, &mut r).2;
    r.read_comm(&mut ev.sender_comm, current, off!(task_comm));
    ev.sig = sig;
    // As TP_STORE_SIGINFO: SEND_SIG_NOINFO (0) is a user's kill, SEND_SIG_PRIV (1) the
    // kernel's; otherwise kernel_siginfo.si_code (after si_signo and si_errno).
    ev.code = match info {
        0 => 0,
        1 => 0x80,
        _ => r.read(info, 8),
    };
    ev.group = (group as u32 != 0) as u32;
    ev.result = result as u32;
    ev._pad = 0;
    entry.submit(wakeup_flags());
    finish(&ctx, kind, &r);
    0
}

/// A field of a tracepoint record at a load-time offset; 0 when this kernel lacks it.
#[inline(always)]
fn tp_field<T: Copy + Default>(ctx: &TracePointContext, off: u32, r: &mut Probe) -> T {
    if off == ABSENT {
        return T::default();
    }
    match unsafe { ctx.read_at::<T>(off as usize) } {
        Ok(v) => v,
        Err(_) => {
            r.fail();
            T::default()
        }
    }
}

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim(ctx: TracePointContext) -> i32 {
    let kind = EventKind::Oom;
    let mut entry = reserve!(OomEvent, kind, &ctx);
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    let mut r = Probe::new();
    let id = bpf_get_current_pid_tgid();
    header(&mut ev.header, kind, (id >> 32) as u32, id as u32);
    ev.victim_pid = tp_field::<i32>(&ctx, off!(tp_oom_pid), &mut r) as u32;
    ev.total_vm_kb = tp_field(&ctx, off!(tp_oom_total_vm), &mut r);
    ev.anon_rss_kb = tp_field(&ctx, off!(tp_oom_anon_rss), &mut r);
    ev.file_rss_kb = tp_field(&ctx, off!(tp_oom_file_rss), &mut r);
    ev.shmem_rss_kb = tp_field(&ctx, off!(tp_oom_shmem_rss), &mut r);
    ev.oom_score_adj = tp_field::<i16>(&ctx, off!(tp_oom_score_adj), &mut r) as i32;
    let mut flags = 0;
    if off!(tp_oom_anon_rss) != ABSENT {
        flags |= OOM_HAS_RSS;
    }
    if off!(tp_oom_score_adj) != ABSENT {
        flags |= OOM_HAS_SCORE_ADJ;
    }
    let (max, usage) = memcg_limit(&mut r);
    if max != 0 {
        flags |= OOM_HAS_MEMCG;
    }
    let page = off!(page_size) as u64;
    ev.memcg_max_bytes = max.wrapping_mul(page);
    ev.memcg_usage_bytes = usage.wrapping_mul(page);
    ev.flags = flags;
    ev._pad = 0;
    entry.submit(wakeup_flags());
    finish(&ctx, kind, &r);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
