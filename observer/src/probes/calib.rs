//! The calibration programs of observer-ebpf/src/calib.rs. The agent attaches one, before
//! its own programs (so it runs first on each event and meets the caches as observer's
//! programs do), with `--calibrate NAME`: `cargo xtask bench --peers` runs one storm per
//! program and splits observer's time per program with their bpf_stats times into what any
//! program on that tracepoint pays and what each group of observer's reads adds.

use std::path::Path;

use aya::{programs::RawTracePoint, Ebpf};

use observer_common::EventKind;

use super::{tracefs, ProbeError, PROGRAMS};

/// Raw tracepoint programs for every tracepoint a spawn fires (SPAWN), each adding
/// one piece to the one before.
pub(crate) const FIXED: [&str; 4] = ["calib_empty", "calib_record", "calib_write", "calib_clock"];

/// BTF tracepoint programs on sched_process_exit, one group of the task's facts each.
pub(crate) const READS: [&str; 5] = [
    "calib_ident",
    "calib_creds",
    "calib_pids",
    "calib_ns",
    "calib_cgroup",
];

/// Every calibration program.
pub(crate) const ALL: [&str; 9] = [
    FIXED[0], FIXED[1], FIXED[2], FIXED[3], READS[0], READS[1], READS[2], READS[3], READS[4],
];

/// What one spawn fires: fork, exec, exit and free, and the SIGCHLD to the parent.
const SPAWN: [EventKind; 5] = [
    EventKind::Fork,
    EventKind::Exec,
    EventKind::Exit,
    EventKind::Free,
    EventKind::Signal,
];

/// Loads and attaches the calibration program `name` (one of ALL): a fixed-cost one to
/// every tracepoint a spawn fires, a read one to sched_process_exit. `cfg.calibrate` names
/// outside ALL cannot get here: the command line accepts only ALL.
pub(crate) fn attach(
    ebpf: &mut Ebpf,
    name: &'static str,
    tracefs_root: &Path,
    btf_path: &Path,
    kernel_btf: &mut Option<aya::Btf>,
) -> Result<(), ProbeError> {
    if READS.contains(&name) {
        return super::attach_btf(ebpf, name, "sched_process_exit", btf_path, kernel_btf);
    }
    let tracepoints = PROGRAMS
        .iter()
        .filter(|(.., kind)| SPAWN.contains(kind))
        .filter(|(c, n, ..)| tracefs::exists(tracefs_root, c, n));
    let perr = |source| ProbeError::Program { name, source };
    let p: &mut RawTracePoint = super::program(ebpf, name)?;
    p.load().map_err(perr)?;
    for (_, tp, ..) in tracepoints {
        p.attach(tp).map_err(perr)?;
    }
    Ok(())
}
