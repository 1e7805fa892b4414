//! The /proc and tracefs text the agent parses: `stat` (scan::parse_stat, a guard before
//! procfs, and scan::live_from, the in-place parser of kept-open stat files) and `status` (scan::parse_status_ids), `cmdline` argv splitting, exit statuses,
//! and tracepoint `format` files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::{
    events::{exit_status, split_args},
    host::scan::{live_from, parse_stat, parse_status_ids},
    probes::tracefs::parse_field_offset,
};

fuzz_target!(|data: &[u8]| {
    let _ = parse_stat(data);
    let _ = live_from(data);
    let _ = parse_status_ids(data);
    let _ = split_args(data, data.len()).count();
    let _ = split_args(data, usize::MAX).count();
    if data.len() >= 4 {
        let _ = exit_status(u32::from_le_bytes([data[0], data[1], data[2], data[3]]));
    }
    let text = String::from_utf8_lossy(data);
    for field in ["parent_pid", "child_pid", "ret", ""] {
        let _ = parse_field_offset(&text, field);
    }
});
