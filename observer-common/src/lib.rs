//! Wire types shared by the kernel programs (observer-ebpf) and the agent (observer).
//!
//! Every struct here is `#[repr(C)]`, has no implicit padding (explicit `_pad` fields where
//! alignment needs them) and is guarded by a compile-time size/offset assert, so the two sides
//! cannot drift apart silently. Each ring-buffer record starts with [`EventHeader`]; its `kind`
//! says which payload struct follows. Type numbers are stable: never renumber, only append.
#![no_std]

mod offsets;

pub use offsets::{Offsets, ABSENT};

/// Length of `task_struct.comm` (TASK_COMM_LEN in the kernel).
pub const COMM_LEN: usize = 16;
/// PIDs captured from `thread_pid->numbers[]`, host level first. Deeper tasks set
/// [`TASK_FLAG_PID_LEVELS_TRUNCATED`].
pub const MAX_PID_LEVELS: usize = 8;
/// Bytes of the exec'd filename kept (NUL-terminated, truncated beyond).
pub const FILENAME_LEN: usize = 256;
/// Bytes of argv kept from the new image's `mm->arg_start..arg_end` (NUL-separated).
pub const ARGS_LEN: usize = 256;
/// Bytes of the destination cgroup path kept for `cgroup_attach`.
pub const CGROUP_PATH_LEN: usize = 256;

/// Index of each namespace inode in [`TaskInfo::ns`]. Names match `/proc/<pid>/ns/<name>`.
pub const NS_PID: usize = 0;
pub const NS_PID_FOR_CHILDREN: usize = 1;
pub const NS_MNT: usize = 2;
pub const NS_UTS: usize = 3;
pub const NS_IPC: usize = 4;
pub const NS_NET: usize = 5;
pub const NS_USER: usize = 6;
pub const NS_CGROUP: usize = 7;
pub const NS_TIME: usize = 8;
pub const NS_COUNT: usize = 9;
pub const NS_NAMES: [&str; NS_COUNT] = [
    "pid",
    "pid_for_children",
    "mnt",
    "uts",
    "ipc",
    "net",
    "user",
    "cgroup",
    "time",
];

/// Set in [`TaskInfo::flags`] when at least one kernel read for this task failed (the field
/// reads 0). Counted per event kind in [`Stats::read_errors`] too.
pub const TASK_FLAG_READ_ERROR: u32 = 1 << 0;
/// The task's pid namespace is nested deeper than [`MAX_PID_LEVELS`]; `ns_pids` holds the
/// outermost levels only.
pub const TASK_FLAG_PID_LEVELS_TRUNCATED: u32 = 1 << 1;
/// The task was exiting (`PF_EXITING`) when the event was made. Set on cgroup attach
/// events: the kernel reports an attach of a task it skipped because it was exiting (a
/// zombie's pid written to `cgroup.procs`), and such a task stays where it was.
pub const TASK_FLAG_EXITING: u32 = 1 << 2;
/// The cgroup path did not fit the record: `path` holds its first `CGROUP_PATH_LEN - 1`
/// bytes (a path of exactly that length is flagged too). Set on cgroup attach events.
pub const TASK_FLAG_CGROUP_PATH_CUT: u32 = 1 << 3;
/// `PF_EXITING` in `task_struct.flags` (include/linux/sched.h, the same on every kernel).
pub const PF_EXITING: u32 = 0x4;

/// Event type numbers: stable on the wire.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Fork = 1,
    Exec = 2,
    Exit = 3,
    Free = 4,
    Setns = 5,
    Unshare = 6,
    CgroupAttach = 7,
    Signal = 8,
    Oom = 9,
}

/// Number of slots in the per-kind counter arrays (index = kind number; slot 0 unused).
pub const KIND_SLOTS: usize = 10;

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::Fork,
        EventKind::Exec,
        EventKind::Exit,
        EventKind::Free,
        EventKind::Setns,
        EventKind::Unshare,
        EventKind::CgroupAttach,
        EventKind::Signal,
        EventKind::Oom,
    ];

    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => EventKind::Fork,
            2 => EventKind::Exec,
            3 => EventKind::Exit,
            4 => EventKind::Free,
            5 => EventKind::Setns,
            6 => EventKind::Unshare,
            7 => EventKind::CgroupAttach,
            8 => EventKind::Signal,
            9 => EventKind::Oom,
            _ => return None,
        })
    }

    /// The name used by the CLI and the JSON `type` key.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Fork => "fork",
            EventKind::Exec => "exec",
            EventKind::Exit => "exit",
            EventKind::Free => "free",
            EventKind::Setns => "setns",
            EventKind::Unshare => "unshare",
            EventKind::CgroupAttach => "cgroup_attach",
            EventKind::Signal => "signal",
            EventKind::Oom => "oom",
        }
    }

    /// Size in bytes of the whole record (header included) of this kind.
    pub const fn record_size(self) -> usize {
        match self {
            EventKind::Fork => core::mem::size_of::<ForkEvent>(),
            EventKind::Exec => core::mem::size_of::<ExecEvent>(),
            EventKind::Exit => core::mem::size_of::<ExitEvent>(),
            EventKind::Free => core::mem::size_of::<FreeEvent>(),
            EventKind::Setns | EventKind::Unshare => core::mem::size_of::<NsEvent>(),
            EventKind::CgroupAttach => core::mem::size_of::<CgroupAttachEvent>(),
            EventKind::Signal => core::mem::size_of::<SignalEvent>(),
            EventKind::Oom => core::mem::size_of::<OomEvent>(),
        }
    }
}

/// Fixed header at offset 0 of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] number (kept as u32: userspace must survive unknown values).
    pub kind: u32,
    /// CPU the program ran on.
    pub cpu: u32,
    /// `bpf_ktime_get_boot_ns()` at the event: same clock as `start_time_ns`. For a fork,
    /// the child's start time (stamped by the kernel just before the tracepoint).
    pub ktime_ns: u64,
    /// Host tgid of the task concerned (the child for fork).
    pub tgid: u32,
    /// Host tid of the task concerned.
    pub pid: u32,
}

/// What the kernel side reads from the `task_struct` concerned by an event.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    /// `task->start_boottime` (ns since boot, suspend included): /proc stat field 22 in ns.
    pub start_time_ns: u64,
    /// cgroup v2 id (`cgroups->dfl_cgrp->kn->id`): the inode of the cgroup2 directory.
    pub cgroup_id: u64,
    /// `real_parent->tgid` (host).
    pub ppid: u32,
    /// Real uid/gid (`real_cred`), as /proc status shows first.
    pub uid: u32,
    pub gid: u32,
    /// `thread_pid->level`: 0 on the host pid namespace.
    pub pid_level: u32,
    /// `thread_pid->numbers[i].nr` for i in 0..=min(level, MAX_PID_LEVELS-1); rest 0.
    pub ns_pids: [u32; MAX_PID_LEVELS],
    /// Namespace inode numbers, indexed by the `NS_*` constants; 0 = unknown/absent.
    pub ns: [u32; NS_COUNT],
    /// `TASK_FLAG_*` bits.
    pub flags: u32,
    pub comm: [u8; COMM_LEN],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkEvent {
    pub header: EventHeader,
    /// The child.
    pub task: TaskInfo,
    /// Host tid of the thread that called fork/clone.
    pub parent_tid: u32,
    /// 1 when the child is a new thread of the same thread group (u32, not bool: no padding
    /// and no invalid bit patterns on the wire).
    pub is_thread: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// Tid before exec (differs from `header.pid` when a non-leader thread exec'd).
    pub old_tid: u32,
    /// Bytes of `args` in use (≤ ARGS_LEN).
    pub args_len: u32,
    /// Credentials after the exec (`task->cred`; the real uid/gid are `task.uid`/`gid`).
    pub euid: u32,
    pub egid: u32,
    pub suid: u32,
    pub sgid: u32,
    /// Effective capabilities after the exec (bit n = capability n).
    pub cap_eff: u64,
    /// The executable's device (`i_sb->s_dev`, the kernel's encoding: major << 20 | minor).
    pub exe_dev: u32,
    /// 1 when the kernel judged the exec privilege-gaining (`bprm->secureexec`, what glibc
    /// sees as AT_SECURE: a setuid or setgid bit, or file capabilities, took effect).
    pub secureexec: u32,
    /// The executable's inode number, size and modification time (`bprm->file`'s inode):
    /// with the device, what identifies its content for hashing.
    pub exe_ino: u64,
    pub exe_size: u64,
    pub exe_mtime_sec: i64,
    pub exe_mtime_nsec: u32,
    pub _pad: u32,
    /// `bprm->filename`, NUL-terminated.
    pub filename: [u8; FILENAME_LEN],
    /// argv, each argument NUL-terminated, truncated at ARGS_LEN.
    pub args: [u8; ARGS_LEN],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// `task->exit_code` in wait(2) status encoding: `(status << 8) | signal | core<<7`.
    pub exit_code: u32,
    /// 1 when the exiting thread is the thread-group leader.
    pub is_leader: u32,
    /// 1 when this is the last live thread of its group (`signal->live` reached 0): the
    /// process as a whole has exited and becomes a zombie until reaped.
    pub group_dead: u32,
    pub _pad: u32,
}

/// `sched_process_free`: the task_struct is released (the zombie was reaped, often some
/// time before: this runs from an RCU callback). Only the identity is filled in — start time
/// and comm; the other TaskInfo fields are zero (pid and namespaces are detached by then).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
}

/// Successful `setns(2)` or `unshare(2)`: `task.ns` holds the namespaces after the call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// Syscall return value (0: only successful calls are reported).
    pub ret: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupAttachEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    /// kernfs id (inode) of the destination cgroup in its hierarchy.
    pub dst_cgroup_id: u64,
    /// `cgroup_root.hierarchy_id`: 0 is the cgroup2 (default) hierarchy; v1 hierarchies > 0.
    pub hierarchy_id: u32,
    pub dst_level: u32,
    /// 1 when the whole thread group moved.
    pub threadgroup: u32,
    pub _pad: u32,
    /// Destination path inside its hierarchy, NUL-terminated.
    pub path: [u8; CGROUP_PATH_LEN],
}

/// One task as the task iterator (`iter/task`, the agent's start-up seed) sees it: the
/// same TaskInfo an event carries, plus what /proc's stat would add. Written with
/// `bpf_seq_write` for each thread-group leader, one after another, no header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedTask {
    pub task: TaskInfo,
    /// Host tgid (= pid: only leaders are written).
    pub tgid: u32,
    /// `task->__state` (`state` before 5.14), raw.
    pub state: u32,
    /// `task->exit_state` (EXIT_ZOMBIE 0x20, EXIT_DEAD 0x10).
    pub exit_state: u32,
    /// `task->exit_code`: a zombie's wait status.
    pub exit_code: u32,
    /// `signal->nr_threads` (/proc's Threads).
    pub nr_threads: u32,
    pub _pad: u32,
}

/// Bit `n` of the wanted-signals mask set by the loader: signal `n` (1..=64) is reported.
pub const fn signal_bit(sig: u32) -> u64 {
    if sig == 0 || sig > 64 {
        0
    } else {
        1u64 << (sig - 1)
    }
}

/// SIGCHLD: sent to a parent for every child that ends, so never reported unless asked for,
/// not even when its target is a pid-namespace init.
pub const SIGCHLD: u32 = 17;

/// `signal:signal_generate`: a signal was generated for a task. The header and `task`
/// describe the target; the sender is the task that was running (for signals the kernel
/// raises itself — the OOM killer, a fault, a dying pid-namespace init — the task in whose
/// context it happened). Reported when the signal is in the loader's mask, or when the
/// target is PID 1 of a pid namespace other than the host's (any signal but SIGCHLD).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalEvent {
    pub header: EventHeader,
    pub task: TaskInfo,
    pub sender_start_ns: u64,
    pub sender_cgroup_id: u64,
    pub sender_tgid: u32,
    pub sender_pid: u32,
    /// Inode of the sender's pid namespace.
    pub sender_pidns: u32,
    pub sig: u32,
    /// `si_code` as the tracepoint records it (SI_USER 0 for kill(2), SI_TKILL -6, SI_KERNEL
    /// 0x80, a fault's positive code...).
    pub code: i32,
    /// 1 when sent to the whole thread group.
    pub group: u32,
    /// TRACE_SIGNAL_*: 0 delivered, 1 ignored, 2 already pending, 3 overflow, 4 lost info.
    pub result: u32,
    pub _pad: u32,
    pub sender_comm: [u8; COMM_LEN],
}

/// Which optional fields of [`OomEvent`] this kernel's `oom:mark_victim` record has.
pub const OOM_HAS_RSS: u32 = 1 << 0;
pub const OOM_HAS_SCORE_ADJ: u32 = 1 << 1;
/// `memcg_max_bytes`/`memcg_usage_bytes` were read (the kernel has a memory controller
/// and the allocating task's memory cgroup or an ancestor of it has a limit).
pub const OOM_HAS_MEMCG: u32 = 1 << 2;

/// `oom:mark_victim`: the OOM killer chose a victim (its SIGKILL follows). The header is
/// the task in whose context the kill happened (the one whose allocation failed).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomEvent {
    pub header: EventHeader,
    /// The victim's host tgid.
    pub victim_pid: u32,
    /// `OOM_HAS_*` bits (kernels before 6.1 report the pid only).
    pub flags: u32,
    /// In KiB, as the tracepoint records them.
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub oom_score_adj: i32,
    pub _pad: u32,
    /// The lowest memory limit on the allocating task's memory cgroup and its ancestors,
    /// in bytes, read at the kill: the cgroup may be gone by the time anyone reads its
    /// files (a container whose PID 1 is the victim is removed at once).
    pub memcg_max_bytes: u64,
    /// That cgroup's usage at the same moment, in bytes.
    pub memcg_usage_bytes: u64,
}

/// In-kernel counters, one copy per CPU (a `PerCpuArray` with a single entry); userspace
/// sums the CPUs. Index = [`EventKind`] number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records submitted to the ring buffer.
    pub emitted: [u64; KIND_SLOTS],
    /// Records lost because the ring buffer was full.
    pub dropped: [u64; KIND_SLOTS],
    /// Events where at least one kernel read failed.
    pub read_errors: [u64; KIND_SLOTS],
}

// Layout guards: the decoder relies on these exact sizes and offsets.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<EventHeader>() == 24);
    assert!(offset_of!(EventHeader, ktime_ns) == 8);
    assert!(offset_of!(EventHeader, tgid) == 16);
    assert!(size_of::<TaskInfo>() == 120);
    assert!(offset_of!(TaskInfo, ppid) == 16);
    assert!(offset_of!(TaskInfo, ns_pids) == 32);
    assert!(offset_of!(TaskInfo, ns) == 64);
    assert!(offset_of!(TaskInfo, flags) == 100);
    assert!(offset_of!(TaskInfo, comm) == 104);
    assert!(size_of::<SeedTask>() == 144);
    assert!(offset_of!(SeedTask, _pad) == 140);
    assert!(size_of::<ForkEvent>() == 152);
    assert!(offset_of!(ForkEvent, task) == 24);
    assert!(offset_of!(ForkEvent, parent_tid) == 144);
    assert!(size_of::<ExecEvent>() == 728);
    assert!(offset_of!(ExecEvent, cap_eff) == 168);
    assert!(offset_of!(ExecEvent, exe_ino) == 184);
    assert!(offset_of!(ExecEvent, filename) == 216);
    assert!(offset_of!(ExecEvent, args) == 472);
    assert!(size_of::<ExitEvent>() == 160);
    assert!(offset_of!(ExitEvent, exit_code) == 144);
    assert!(size_of::<FreeEvent>() == 144);
    assert!(size_of::<NsEvent>() == 152);
    assert!(offset_of!(NsEvent, ret) == 144);
    assert!(size_of::<CgroupAttachEvent>() == 424);
    assert!(offset_of!(CgroupAttachEvent, dst_cgroup_id) == 144);
    assert!(offset_of!(CgroupAttachEvent, path) == 168);
    assert!(size_of::<SignalEvent>() == 208);
    assert!(offset_of!(SignalEvent, sender_start_ns) == 144);
    assert!(offset_of!(SignalEvent, sig) == 172);
    assert!(offset_of!(SignalEvent, sender_comm) == 192);
    assert!(size_of::<OomEvent>() == 88);
    assert!(offset_of!(OomEvent, memcg_max_bytes) == 72);
    assert!(offset_of!(OomEvent, total_vm_kb) == 32);
    assert!(offset_of!(OomEvent, oom_score_adj) == 64);
    assert!(size_of::<Stats>() == 240);
};

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are #[repr(C)], Copy, contain only integers/arrays of integers and have no
    // implicit padding (checked by the size asserts above), so any byte pattern is valid.
    unsafe impl aya::Pod for Offsets {}
    unsafe impl aya::Pod for Stats {}
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for TaskInfo {}
}

// The BTF tracepoints store a comm as two u64 words (observer-ebpf task.rs read_comm).
const _: () = assert!(
    core::mem::offset_of!(TaskInfo, comm) % 8 == 0 && core::mem::align_of::<TaskInfo>() == 8
);
