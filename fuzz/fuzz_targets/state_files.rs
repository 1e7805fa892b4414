//! Runtime state files (docker config.v2.json, containerd and cri-o bundle config.json,
//! podman containers.json and userdata config.json, launcher config.json, runc state.json,
//! crun status) as a crashed or hostile writer leaves them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::containers::{names::parse, oci};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let id = "0123456789ab";
    let _ = parse::docker(&v);
    let _ = parse::containerd(&v, id);
    let podman = parse::podman(&v);
    let _ = parse::crio(&v);
    let _ = parse::launcher(&v);
    let mut m = podman.into_values().next().unwrap_or_default();
    parse::podman_config(&v, &mut m);
    let _ = oci::parse::runc(&v);
    let _ = oci::parse::crun(&v, id);
});
