//! The calibration programs of observer-ebpf/src/calib.rs. The agent attaches one, before
//! its own programs (so it runs first on each event and meets the caches as observer's
//! programs do), with `--calibrate NAME`: `cargo xtask bench --peers` runs one storm per
//! program and splits observer's time per program with their bpf_stats times into what any
//! program on that tracepoint pays and what each group of observer's reads adds.

use std::path::Path;

use aya::{programs::RawTracePoint, Ebpf};

use super::{tracefs, Hook, ProbeError, PROGRAMS};

/// Raw tracepoint programs for every lifecycle tracepoint and signal_generate, each adding
/// one piece to the one before.
pub const FIXED: [&str; 4] = ["calib_empty", "calib_record", "calib_write", "calib_clock"];

/// BTF tracepoint programs on sched_process_exit, one group of the task's facts each.
pub const READS: [&str; 5] = [
    "calib_ident",
    "calib_creds",
    "calib_pids",
    "calib_ns",
    "calib_cgroup",
];

/// Every calibration program.
pub const ALL: [&str; 9] = [
    FIXED[0], FIXED[1], FIXED[2], FIXED[3], READS[0], READS[1], READS[2], READS[3], READS[4],
];

/// Loads and attaches the calibration program `name` (one of ALL): a fixed-cost one to
/// every lifecycle tracepoint and signal_generate, a read one to sched_process_exit.
pub fn attach(
    ebpf: &mut Ebpf,
    name: &str,
    tracefs_root: &Path,
    btf_path: &Path,
    kernel_btf: &mut Option<aya::Btf>,
) -> Result<(), ProbeError> {
    let Some(name) = ALL.into_iter().find(|n| *n == name) else {
        return Err(ProbeError::Map("calibration", format!("no program {name}")));
    };
    if READS.contains(&name) {
        return super::attach_btf(ebpf, name, "sched_process_exit", btf_path, kernel_btf);
    }
    let tracepoints = PROGRAMS
        .iter()
        .filter(|(_, n, hook, _)| matches!(hook, Hook::Btf(_)) || *n == "signal_generate")
        .filter(|(c, n, ..)| tracefs::exists(tracefs_root, c, n));
    let perr = |source| ProbeError::Program { name, source };
    let p: &mut RawTracePoint = super::program(ebpf, name)?;
    p.load().map_err(perr)?;
    for (_, tp, ..) in tracepoints {
        p.attach(tp).map_err(perr)?;
    }
    Ok(())
}
