//! Reads the fields of a `task_struct` that every event carries, following the member
//! offsets the loader found in this kernel's BTF (observer_common::Offsets).
//!
//! Two readers, one code path (`Reader<DIRECT>`):
//! - `Probe` (raw tracepoints, the task iterator): every read goes through
//!   `bpf_probe_read_kernel` at `base + offset`. A failed read yields 0 and sets
//!   TASK_FLAG_READ_ERROR.
//! - `Direct` (BTF tracepoints, `tp_btf`): the tracepoint's arguments are BTF-typed
//!   pointers, so the verifier checks each `base + offset` against the kernel's own struct
//!   layout at load time and the read is a plain load (a fault reads as 0 through the JIT's
//!   exception table). Measured here: ~52 ns per probe read against ~1 ns per load — most of
//!   a program's time. Only constant offsets are allowed on typed pointers: the pid-number
//!   array is walked with a constant index per step.
//!
//! A member the running kernel lacks (offset ABSENT, a load-time constant the verifier
//! folds) yields 0 without counting as an error in both, as do the pointers that are
//! legitimately NULL once a task is freed (thread_pid, nsproxy), which are checked.
//!
//! Records are written field by field, never from zeroed stack arrays: the compiler turns
//! those into calls of a byte-at-a-time `memset` (~5 instructions a byte, 0.5 µs a record).

use core::mem::{size_of, MaybeUninit};

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use observer_common::{
    TaskInfo, ABSENT, COMM_LEN, MAX_PID_LEVELS, NS_CGROUP, NS_IPC, NS_MNT, NS_NET, NS_PID,
    NS_PID_FOR_CHILDREN, NS_TIME, NS_USER, NS_UTS, TASK_FLAG_PID_LEVELS_TRUNCATED,
    TASK_FLAG_READ_ERROR,
};

use crate::off;

/// Words of `struct nsproxy` read at once by the probe reader (72 bytes on the kernels of
/// the matrix).
const NSPROXY_WORDS: usize = 16;

/// Reads through `bpf_probe_read_kernel` (raw tracepoints, iterators).
pub type Probe = Reader<false>;
/// Reads with plain loads through BTF-typed pointers (BTF tracepoints).
pub type Direct = Reader<true>;

/// Reads kernel memory without branching on the outcome: a probe read zeroes its
/// destination when it faults, and the return codes are OR-ed into `err`. Branch-free reads
/// keep the verifier's state count small; with a branch per read, kernels before ~6.8 give
/// up on the fork program ("BPF program is too large", 1M instructions processed on 6.1).
pub struct Reader<const DIRECT: bool> {
    err: i64,
}

impl<const DIRECT: bool> Reader<DIRECT> {
    pub const fn new() -> Self {
        Reader { err: 0 }
    }

    pub fn failed(&self) -> bool {
        self.err != 0
    }

    pub fn fail(&mut self) {
        self.err = -1;
    }

    /// Reads a `T` at `base + off`; zero when the member is absent in this kernel (`off` is a
    /// load-time constant, so the verifier drops the untaken side) or the read faults.
    #[inline(always)]
    pub fn read<T: Copy>(&mut self, base: u64, off: u32) -> T {
        if off == ABSENT {
            // SAFETY: only used with integer and integer-array types.
            return unsafe { core::mem::zeroed() };
        }
        let at = base.wrapping_add(off as u64);
        if DIRECT {
            // SAFETY: `base` is a BTF-typed kernel pointer and `off` a member of its type:
            // the verifier checked both, and a faulting load reads as 0.
            unsafe { core::ptr::read_volatile(at as *const T) }
        } else {
            probe_read(&mut self.err, at)
        }
    }

    /// Reads COMM_LEN bytes at `base + off` straight into `dst` (no stack copy, which
    /// the compiler does a byte at a time).
    #[inline(always)]
    pub fn read_comm(&mut self, dst: &mut [u8; COMM_LEN], base: u64, off: u32) {
        let d = dst.as_mut_ptr();
        if DIRECT {
            let lo: u64 = self.read(base, off);
            let hi: u64 = self.read(base, off.wrapping_add(8));
            // SAFETY: `dst` is a TaskInfo's comm, 8-byte aligned (asserted in
            // observer_common), 16 bytes long.
            unsafe {
                core::ptr::write_volatile(d.cast::<u64>(), lo);
                core::ptr::write_volatile(d.cast::<u64>().add(1), hi);
            }
        } else {
            // SAFETY: the helper writes COMM_LEN bytes to `dst` (zeros on failure).
            self.err |= unsafe {
                bpf_probe_read_kernel(
                    d.cast(),
                    COMM_LEN as u32,
                    base.wrapping_add(off as u64) as *const _,
                )
            };
        }
    }

    /// A probe read whatever the reader (a variable offset, which typed pointers refuse).
    #[inline(always)]
    pub fn probe<T: Copy>(&mut self, base: u64, off: u32) -> T {
        if off == ABSENT {
            // SAFETY: only used with integer types.
            return unsafe { core::mem::zeroed() };
        }
        probe_read(&mut self.err, base.wrapping_add(off as u64))
    }

    /// Follows a pointer member, then reads a u32 at `inner_off` of what it points to.
    #[inline(always)]
    fn read_via(&mut self, base: u64, ptr_off: u32, inner_off: u32) -> u32 {
        let p: u64 = self.read(base, ptr_off);
        self.read(p, inner_off)
    }
}

/// One `bpf_probe_read_kernel` of a `T` at `at`, its return code OR-ed into `err`.
#[inline(always)]
fn probe_read<T: Copy>(err: &mut i64, at: u64) -> T {
    let mut v = MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes size_of::<T>() bytes to `v` (zeros on failure).
    *err |= unsafe {
        bpf_probe_read_kernel(v.as_mut_ptr().cast(), size_of::<T>() as u32, at as *const _)
    };
    // SAFETY: fully written by the helper either way.
    unsafe { v.assume_init() }
}

/// A store the compiler may not merge with its neighbours into a `memset` call.
#[inline(always)]
fn put<T: Copy>(slot: &mut T, v: T) {
    // SAFETY: `slot` is a valid, aligned T.
    unsafe { core::ptr::write_volatile(slot, v) }
}

/// Fills `t` entirely (every byte written: ring-buffer memory is not zeroed) for `task`.
#[inline(always)]
pub fn fill_task<const D: bool>(task: u64, t: &mut TaskInfo, r: &mut Reader<D>) {
    t.start_time_ns = r.read(task, off!(task_start_boottime));
    fill_parent_creds(task, t, r);
    let (level, mut flags) = fill_pids(task, t, r);
    fill_namespaces(task, t, r);
    t.cgroup_id = cgroup_id(task, r);
    r.read_comm(&mut t.comm, task, off!(task_comm));
    t.pid_level = level;
    if r.failed() {
        flags |= TASK_FLAG_READ_ERROR;
    }
    t.flags = flags;
}

/// The parent's tgid, the credentials' uid and gid and their user namespace.
#[inline(always)]
pub fn fill_parent_creds<const D: bool>(task: u64, t: &mut TaskInfo, r: &mut Reader<D>) {
    let parent: u64 = r.read(task, off!(task_real_parent));
    t.ppid = r.read(parent, off!(task_tgid));

    let cred: u64 = r.read(task, off!(task_real_cred));
    t.uid = r.read(cred, off!(cred_uid));
    t.gid = r.read(cred, off!(cred_gid));
    put(
        &mut t.ns[NS_USER],
        r.read_via(cred, off!(cred_user_ns), off!(userns_inum)),
    );
}

/// The pid numbers from the host's level down and the task's own pid namespace; returns
/// the level and TASK_FLAG_PID_LEVELS_TRUNCATED when it is deeper than the array.
#[inline(always)]
pub fn fill_pids<const D: bool>(task: u64, t: &mut TaskInfo, r: &mut Reader<D>) -> (u32, u32) {
    let mut flags = 0u32;
    // The NSpid chain: thread_pid->numbers[0..=level].nr, host level first, walked with a
    // constant index per step (typed pointers allow no variable offset).
    let pid: u64 = r.read(task, off!(task_thread_pid));
    let level: u32 = if pid == 0 {
        0
    } else {
        r.read(pid, off!(pid_level))
    };
    let numbers = pid.wrapping_add(off!(pid_numbers) as u64);
    let stride = off!(upid_size) as u64;
    // The task's own pid namespace is the one of its innermost pid number; not
    // nsproxy->pid_ns_for_children, which differs right after unshare(CLONE_NEWPID).
    let mut own_ns = 0u32;
    let mut i = 0usize;
    while i < MAX_PID_LEVELS {
        let upid = numbers.wrapping_add(i as u64 * stride);
        let mut nr = 0u32;
        if pid != 0 && i as u32 <= level {
            if i == 0 {
                nr = r.read(upid, off!(upid_nr));
                if level == 0 {
                    own_ns = r.read_via(upid, off!(upid_ns), off!(pidns_inum));
                }
            } else {
                // Beyond numbers[0]: kernels that declare `numbers[1]` (5.10) refuse a typed
                // load past the struct's end, so these are probe reads in both readers.
                nr = r.probe(upid, off!(upid_nr));
                if i as u32 == level {
                    let ns: u64 = r.probe(upid, off!(upid_ns));
                    own_ns = r.probe(ns, off!(pidns_inum));
                }
            }
        }
        if let Some(slot) = t.ns_pids.get_mut(i) {
            put(slot, nr);
        }
        i += 1;
    }
    if pid != 0 && level as usize >= MAX_PID_LEVELS {
        flags |= TASK_FLAG_PID_LEVELS_TRUNCATED;
        // Deeper than the array: a variable offset, so probe reads of an untyped copy.
        let pid: u64 = r.probe(task, off!(task_thread_pid));
        let upid = pid
            .wrapping_add(off!(pid_numbers) as u64)
            .wrapping_add(level as u64 * stride);
        let ns: u64 = r.probe(upid, off!(upid_ns));
        own_ns = r.probe(ns, off!(pidns_inum));
    }
    put(&mut t.ns[NS_PID], own_ns);
    (level, flags)
}

/// The seven namespaces of the task's nsproxy (all but user and its own pid namespace).
#[inline(always)]
pub fn fill_namespaces<const D: bool>(task: u64, t: &mut TaskInfo, r: &mut Reader<D>) {
    let nsproxy: u64 = r.read(task, off!(task_nsproxy));
    const OTHERS: [usize; 7] = [
        NS_PID_FOR_CHILDREN,
        NS_MNT,
        NS_UTS,
        NS_IPC,
        NS_NET,
        NS_CGROUP,
        NS_TIME,
    ];
    if nsproxy == 0 {
        for k in OTHERS {
            if let Some(slot) = t.ns.get_mut(k) {
                put(slot, 0);
            }
        }
    } else {
        // The probe reader takes the whole nsproxy (about 72 bytes) in one read instead of
        // one per member pointer; the direct one loads each member. Every offset below is a
        // load-time constant (no table of them: a constant spilled to the stack may come
        // back unknown to older verifiers, which then refuse it as a typed pointer's offset).
        let mut words = MaybeUninit::<[u64; NSPROXY_WORDS]>::uninit();
        let mut size = off!(nsproxy_size);
        if size == ABSENT || size as usize > NSPROXY_WORDS * 8 {
            size = (NSPROXY_WORDS * 8) as u32;
        }
        if !D {
            // SAFETY: the helper writes `size` ≤ the buffer's bytes (zeros on failure).
            r.err |= unsafe {
                bpf_probe_read_kernel(words.as_mut_ptr().cast(), size, nsproxy as *const _)
            };
        }
        macro_rules! member_ns {
            ($slot:expr, $member:ident, $inum:ident) => {{
                let m = off!($member);
                let p: u64 = if D {
                    r.read(nsproxy, m)
                } else if m == ABSENT || m % 8 != 0 || m + 8 > size {
                    0
                } else {
                    // SAFETY: within the `size` bytes the helper wrote.
                    unsafe { *words.as_ptr().cast::<u64>().add(m as usize / 8) }
                };
                let inum = if p == 0 { 0 } else { r.read(p, off!($inum)) };
                put(&mut t.ns[$slot], inum);
            }};
        }
        member_ns!(NS_PID_FOR_CHILDREN, nsproxy_pid_for_children, pidns_inum);
        member_ns!(NS_MNT, nsproxy_mnt, mntns_inum);
        member_ns!(NS_UTS, nsproxy_uts, utsns_inum);
        member_ns!(NS_IPC, nsproxy_ipc, ipcns_inum);
        member_ns!(NS_NET, nsproxy_net, netns_inum);
        member_ns!(NS_CGROUP, nsproxy_cgroup, cgroupns_inum);
        member_ns!(NS_TIME, nsproxy_time, timens_inum);
    }
}

/// The identity only (start time, comm; the rest zero), for the free event: the task is
/// already detached from its pid and namespaces, and this keeps the reap path cheap.
#[inline(always)]
pub fn fill_identity<const D: bool>(task: u64, t: &mut TaskInfo, r: &mut Reader<D>) {
    t.start_time_ns = r.read(task, off!(task_start_boottime));
    put(&mut t.cgroup_id, 0);
    put(&mut t.ppid, 0);
    put(&mut t.uid, 0);
    put(&mut t.gid, 0);
    put(&mut t.pid_level, 0);
    for slot in t.ns_pids.iter_mut() {
        put(slot, 0);
    }
    for slot in t.ns.iter_mut() {
        put(slot, 0);
    }
    r.read_comm(&mut t.comm, task, off!(task_comm));
    t.flags = if r.failed() { TASK_FLAG_READ_ERROR } else { 0 };
}

/// The pid-namespace depth of `task`, its PID at that innermost level and that namespace's
/// inode: (0, host pid, host pidns) on the host. For the signal program's filter (is the
/// target PID 1 of a container's namespace?) and the sender's namespace.
#[inline(always)]
pub fn own_pid(task: u64, r: &mut Probe) -> (u32, u32, u32) {
    let pid: u64 = r.read(task, off!(task_thread_pid));
    if pid == 0 {
        return (0, 0, 0);
    }
    let level: u32 = r.read(pid, off!(pid_level));
    let own = pid + off!(pid_numbers) as u64 + level as u64 * off!(upid_size) as u64;
    let nr = r.read(own, off!(upid_nr));
    let ns = r.read_via(own, off!(upid_ns), off!(pidns_inum));
    (level, nr, ns)
}

/// The cgroup v2 id of `task` (`cgroups->dfl_cgrp->kn->id`).
#[inline(always)]
pub fn cgroup_id<const D: bool>(task: u64, r: &mut Reader<D>) -> u64 {
    let css_set: u64 = r.read(task, off!(task_cgroups));
    let cgrp: u64 = r.read(css_set, off!(css_set_dfl_cgrp));
    let kn: u64 = r.read(cgrp, off!(cgroup_kn));
    r.read(kn, off!(kernfs_node_id))
}
