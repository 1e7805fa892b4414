//! Reads the fields of a `task_struct` that every event carries, following the member
//! offsets the loader found in this kernel's BTF (observer_common::Offsets).
//!
//! Every read goes through `bpf_probe_read_kernel` at `base + offset`: a member the running
//! kernel lacks (offset ABSENT) yields 0 without counting as an error, as do the pointers
//! that are legitimately NULL once a task is freed (thread_pid, nsproxy), which are checked;
//! any other failed read yields 0 and sets TASK_FLAG_READ_ERROR.

use core::mem::{size_of, MaybeUninit};

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use observer_common::{
    TaskInfo, ABSENT, COMM_LEN, MAX_PID_LEVELS, NS_CGROUP, NS_COUNT, NS_IPC, NS_MNT, NS_NET,
    NS_PID, NS_PID_FOR_CHILDREN, NS_TIME, NS_USER, NS_UTS, TASK_FLAG_PID_LEVELS_TRUNCATED,
    TASK_FLAG_READ_ERROR,
};

use crate::off;

/// Bytes of `struct nsproxy` read at once (72 on the kernels of the matrix).
const NSPROXY_MAX: usize = 128;

/// Reads kernel memory without branching on the outcome: the helper zeroes its destination
/// when a read faults, and the return codes are OR-ed into `err`. Branch-free reads keep the
/// verifier's state count small; with a branch per read, kernels before ~6.8 give up on the
/// fork program ("BPF program is too large", 1M instructions processed on 6.1).
pub struct Reader {
    err: i64,
}

impl Reader {
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
        let mut v = MaybeUninit::<T>::uninit();
        // SAFETY: the helper writes size_of::<T>() bytes to `v` (zeros on failure).
        let ret = unsafe {
            bpf_probe_read_kernel(
                v.as_mut_ptr().cast(),
                size_of::<T>() as u32,
                base.wrapping_add(off as u64) as *const _,
            )
        };
        self.err |= ret;
        // SAFETY: fully written by the helper either way.
        unsafe { v.assume_init() }
    }

    /// Reads `size` (≤ N) bytes at `base`; the rest of the buffer is zero.
    #[inline(always)]
    pub fn read_struct<const N: usize>(&mut self, base: u64, size: u32) -> [u8; N] {
        let mut buf = [0u8; N];
        let len = if size as usize > N { N as u32 } else { size };
        if size == ABSENT || len == 0 {
            return buf;
        }
        // SAFETY: the helper writes at most `len` ≤ N bytes into `buf`.
        let ret = unsafe { bpf_probe_read_kernel(buf.as_mut_ptr().cast(), len, base as *const _) };
        self.err |= ret;
        buf
    }

    /// Follows a pointer member, then reads a u32 at `inner_off` of what it points to.
    #[inline(always)]
    fn read_via(&mut self, base: u64, ptr_off: u32, inner_off: u32) -> u32 {
        let p: u64 = self.read(base, ptr_off);
        self.read(p, inner_off)
    }
}

/// Fills `t` entirely (every byte written: ring-buffer memory is not zeroed) for `task`.
#[inline(always)]
pub fn fill_task(task: u64, t: &mut TaskInfo, r: &mut Reader) {
    let mut flags = 0u32;
    t.start_time_ns = r.read(task, off!(task_start_boottime));

    let parent: u64 = r.read(task, off!(task_real_parent));
    t.ppid = r.read(parent, off!(task_tgid));

    let cred: u64 = r.read(task, off!(task_real_cred));
    t.uid = r.read(cred, off!(cred_uid));
    t.gid = r.read(cred, off!(cred_gid));

    let mut ns = [0u32; NS_COUNT];
    ns[NS_USER] = r.read_via(cred, off!(cred_user_ns), off!(userns_inum));

    // The NSpid chain: thread_pid->numbers[0..=level].nr, host level first.
    let pid: u64 = r.read(task, off!(task_thread_pid));
    let mut ns_pids = [0u32; MAX_PID_LEVELS];
    let mut level = 0u32;
    if pid != 0 {
        level = r.read(pid, off!(pid_level));
        let numbers = pid + off!(pid_numbers) as u64;
        let stride = off!(upid_size) as u64;
        let nr_off = off!(upid_nr);
        let mut i = 0usize;
        while i < MAX_PID_LEVELS {
            if i as u32 > level {
                break;
            }
            if let Some(slot) = ns_pids.get_mut(i) {
                *slot = r.read(numbers + i as u64 * stride, nr_off);
            }
            i += 1;
        }
        if level as usize >= MAX_PID_LEVELS {
            flags |= TASK_FLAG_PID_LEVELS_TRUNCATED;
        }
        // The task's own pid namespace is the one of its innermost pid number; not
        // nsproxy->pid_ns_for_children, which differs right after unshare(CLONE_NEWPID).
        let own = numbers + level as u64 * stride;
        ns[NS_PID] = r.read_via(own, off!(upid_ns), off!(pidns_inum));
    }

    let nsproxy: u64 = r.read(task, off!(task_nsproxy));
    if nsproxy != 0 {
        // One read of the whole nsproxy (about 72 bytes) instead of one per member pointer.
        let np = r.read_struct::<NSPROXY_MAX>(nsproxy, off!(nsproxy_size));
        let member = |off: u32| -> u64 {
            np.get(off as usize..off as usize + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_ne_bytes)
                .unwrap_or(0)
        };
        let mut inum = |member_off: u32, inum_off: u32| -> u32 {
            let p = member(member_off);
            if p == 0 {
                0
            } else {
                r.read(p, inum_off)
            }
        };
        ns[NS_PID_FOR_CHILDREN] = inum(off!(nsproxy_pid_for_children), off!(pidns_inum));
        ns[NS_MNT] = inum(off!(nsproxy_mnt), off!(mntns_inum));
        ns[NS_UTS] = inum(off!(nsproxy_uts), off!(utsns_inum));
        ns[NS_IPC] = inum(off!(nsproxy_ipc), off!(ipcns_inum));
        ns[NS_NET] = inum(off!(nsproxy_net), off!(netns_inum));
        ns[NS_CGROUP] = inum(off!(nsproxy_cgroup), off!(cgroupns_inum));
        ns[NS_TIME] = inum(off!(nsproxy_time), off!(timens_inum));
    }

    t.cgroup_id = cgroup_id(task, r);

    t.comm = r.read::<[u8; COMM_LEN]>(task, off!(task_comm));
    t.pid_level = level;
    t.ns_pids = ns_pids;
    t.ns = ns;
    if r.failed() {
        flags |= TASK_FLAG_READ_ERROR;
    }
    t.flags = flags;
}

/// The identity only (start time, comm; the rest zero), for the free event: the task is
/// already detached from its pid and namespaces, and this keeps the reap path cheap.
#[inline(always)]
pub fn fill_identity(task: u64, t: &mut TaskInfo, r: &mut Reader) {
    t.start_time_ns = r.read(task, off!(task_start_boottime));
    t.cgroup_id = 0;
    t.ppid = 0;
    t.uid = 0;
    t.gid = 0;
    t.pid_level = 0;
    t.ns_pids = [0; MAX_PID_LEVELS];
    t.ns = [0; NS_COUNT];
    t.comm = r.read::<[u8; COMM_LEN]>(task, off!(task_comm));
    t.flags = if r.failed() { TASK_FLAG_READ_ERROR } else { 0 };
}

/// The pid-namespace depth of `task`, its PID at that innermost level and that namespace's
/// inode: (0, host pid, host pidns) on the host. For the signal program's filter (is the
/// target PID 1 of a container's namespace?) and the sender's namespace.
#[inline(always)]
pub fn own_pid(task: u64, r: &mut Reader) -> (u32, u32, u32) {
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
pub fn cgroup_id(task: u64, r: &mut Reader) -> u64 {
    let css_set: u64 = r.read(task, off!(task_cgroups));
    let cgrp: u64 = r.read(css_set, off!(css_set_dfl_cgrp));
    let kn: u64 = r.read(cgrp, off!(cgroup_kn));
    r.read(kn, off!(kernfs_node_id))
}
