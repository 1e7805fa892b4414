//! /proc/<pid>/cgroup files and cgroup paths, which any process can shape (it names its own
//! cgroups where it may create them): attribution never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::containers::cgroup::{parse_file, parse_line, parse_path};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_file(&text);
    for line in text.lines() {
        let _ = parse_line(line);
        let _ = parse_path(line);
    }
});
