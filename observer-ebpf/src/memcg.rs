//! The memory cgroup limit an OOM kill hit, read at `oom:mark_victim`: the allocating
//! task's memory cgroup and its ancestors, through the offsets the loader found in BTF.

use aya_ebpf::helpers::bpf_get_current_task;
use observer_common::ABSENT;

use crate::{off, task::Probe};

/// Memory cgroups walked up from the allocating task's: container runtimes nest 3–6 deep;
/// a limit further up than this is not reported (the agent then reads the files).
const MEMCG_DEPTH: usize = 16;

/// The lowest `memory.max` (in pages) on the current task's memory cgroup and its
/// ancestors, with that cgroup's usage; (0, 0) when none has a limit or the kernel has no
/// memory controller. A memory-cgroup OOM is raised for the limit that was hit, which is on
/// this path: the OOM'd cgroup contains the allocating task.
#[inline(always)]
pub fn memcg_limit(r: &mut Probe) -> (u64, u64) {
    if off!(css_set_memory_css) == ABSENT || off!(memcg_max) == ABSENT {
        return (0, 0);
    }
    let task = unsafe { bpf_get_current_task() };
    let css_set: u64 = r.read(task, off!(task_cgroups));
    let mut css: u64 = r.read(css_set, off!(css_set_memory_css));
    // PAGE_COUNTER_MAX is LONG_MAX / PAGE_SIZE: any value above 2^50 pages is "no limit".
    let (mut best, mut usage) = (1u64 << 50, 0u64);
    for _ in 0..MEMCG_DEPTH {
        if css == 0 {
            break;
        }
        let memcg = css.wrapping_sub(off!(memcg_css) as u64);
        let max: u64 = r.read(memcg, off!(memcg_max));
        if max < best {
            best = max;
            usage = r.read(memcg, off!(memcg_usage));
        }
        css = r.read(css, off!(css_parent));
    }
    if best == 1u64 << 50 {
        (0, 0)
    } else {
        (best, usage)
    }
}
