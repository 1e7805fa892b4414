//! The calibration programs of observer-ebpf/src/calib.rs, attached beside observer's own
//! programs when the agent runs with `--calibrate` (`cargo xtask bench --peers` does, for
//! one round of its spawn storm): their bpf_stats times split a program's cost into what
//! any program on that tracepoint pays and what observer's reads add.

use aya::{programs::RawTracePoint, Ebpf};

use super::ProbeError;

/// The calibration programs, each adding one piece to the one before.
pub const PROGRAMS: [&str; 4] = ["calib_empty", "calib_record", "calib_write", "calib_clock"];

/// Loads each calibration program once and attaches it to every raw tracepoint in
/// `tracepoints` (a raw tracepoint program is bound to its tracepoint at attach, not load).
pub fn attach(ebpf: &mut Ebpf, tracepoints: &[&str]) -> Result<(), ProbeError> {
    for name in PROGRAMS {
        let perr = |source| ProbeError::Program { name, source };
        let p: &mut RawTracePoint = super::program(ebpf, name)?;
        p.load().map_err(perr)?;
        for tp in tracepoints {
            p.attach(tp).map_err(perr)?;
        }
    }
    Ok(())
}
