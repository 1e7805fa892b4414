//! Byte offsets of the kernel struct members the programs read, as found in the running
//! kernel's BTF by the agent at load time and handed to the programs as a read-only global.
//!
//! Rust eBPF has no `preserve_access_index`, so this table is how one object file reads the
//! right bytes on every kernel: layouts differ between releases (even inside `ns_common`).
//! Every field is a u32; [`ABSENT`] means "this kernel has no such member: skip the read".
//! Composite offsets (`pidns_inum` = offsetof(pid_namespace, ns) + offsetof(ns_common, inum))
//! are pre-summed by userspace so the kernel side does one read per pointer hop.

/// Marks a member the running kernel does not have.
pub const ABSENT: u32 = u32::MAX;

macro_rules! offsets {
    ($($(#[$m:meta])* $field:ident),* $(,)?) => {
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct Offsets {
            $($(#[$m])* pub $field: u32,)*
        }

        impl Offsets {
            /// Every offset absent: what the object carries until the loader overrides it.
            pub const ALL_ABSENT: Offsets = Offsets { $($field: ABSENT,)* };

            /// (name, value) of each field, for diagnostics.
            pub fn fields(&self) -> [(&'static str, u32); Self::COUNT] {
                [$((stringify!($field), self.$field),)*]
            }

            pub const COUNT: usize = [$(stringify!($field),)*].len();
        }
    };
}

offsets! {
    // struct task_struct
    task_pid,
    task_tgid,
    task_real_parent,
    /// `start_boottime` (≥ 5.5) or `real_start_time` (older).
    task_start_boottime,
    task_comm,
    task_real_cred,
    /// `cred` (the effective credentials; after an exec the same as `real_cred`).
    task_cred,
    task_thread_pid,
    task_nsproxy,
    task_cgroups,
    task_exit_code,
    task_signal,
    task_mm,
    /// `__state` (≥ 5.14) or `state`.
    task_state,
    task_exit_state,
    /// `flags` (PF_* bits).
    task_flags,
    // struct signal_struct
    /// `signal->live` (atomic_t: its counter is at the same offset).
    signal_live,
    signal_nr_threads,
    // struct cred
    cred_uid,
    cred_gid,
    cred_suid,
    cred_sgid,
    cred_euid,
    cred_egid,
    /// `cap_effective` (kernel_cap_t: 8 bytes, `u64 val` since 6.3, `u32 cap[2]` before).
    cred_cap_effective,
    cred_user_ns,
    // struct pid / struct upid
    pid_level,
    pid_numbers,
    /// sizeof(struct upid): stride of the `numbers[]` flexible array.
    upid_size,
    upid_nr,
    upid_ns,
    // namespace inode numbers: offsetof(X, ns) + offsetof(ns_common, inum)
    pidns_inum,
    utsns_inum,
    ipcns_inum,
    mntns_inum,
    netns_inum,
    userns_inum,
    cgroupns_inum,
    timens_inum,
    // struct nsproxy (read whole: `nsproxy_size` bytes)
    nsproxy_size,
    nsproxy_uts,
    nsproxy_ipc,
    nsproxy_mnt,
    nsproxy_pid_for_children,
    nsproxy_net,
    nsproxy_time,
    nsproxy_cgroup,
    // struct css_set / cgroup / kernfs_node / cgroup_root
    css_set_dfl_cgrp,
    cgroup_kn,
    cgroup_level,
    cgroup_root,
    cgroup_root_hierarchy_id,
    kernfs_node_id,
    /// `subsys[memory_cgrp_id]` of struct css_set (the memory controller's css pointer);
    /// absent without a memory controller.
    css_set_memory_css,
    /// struct cgroup_subsys_state `parent`.
    css_parent,
    /// Of struct mem_cgroup: `css`, `memory.usage` and `memory.max` (page_counter).
    memcg_css,
    memcg_usage,
    memcg_max,
    /// Not an offset: the kernel's page size (page counters count pages).
    page_size,
    // struct mm_struct
    mm_arg_start,
    mm_arg_end,
    // struct linux_binprm
    binprm_filename,
    binprm_file,
    /// Bit offset (not byte) of the `secureexec:1` bitfield in linux_binprm.
    binprm_secureexec_bit,
    // struct file / inode / super_block: the executable's identity
    file_inode,
    inode_ino,
    inode_size,
    inode_sb,
    /// `i_mtime.tv_sec` (< 6.6), `__i_mtime.tv_sec` (6.6–6.10) or `i_mtime_sec` (≥ 6.11).
    inode_mtime_sec,
    /// The nanoseconds beside it (read as a u32).
    inode_mtime_nsec,
    sb_dev,
    /// Offset of `ret` in the `syscalls:sys_exit_*` tracepoint record (from its format file).
    tp_sys_exit_ret,
    /// Fields of the `oom:mark_victim` record (from its format file); all but the pid are
    /// absent before Linux 6.1.
    tp_oom_pid,
    tp_oom_total_vm,
    tp_oom_anon_rss,
    tp_oom_file_rss,
    tp_oom_shmem_rss,
    tp_oom_score_adj,
}

const _: () = assert!(core::mem::size_of::<Offsets>() == Offsets::COUNT * 4);
