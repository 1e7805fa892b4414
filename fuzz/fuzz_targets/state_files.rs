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
    let _ = parse::podman(&v, id);
    let _ = parse::crio(&v);
    let _ = parse::launcher(&v, id);
    let mut m = parse::podman(&v, id).unwrap_or_default();
    parse::podman_config(&v, &mut m);
    let _ = oci::parse::runc(&v);
    let _ = oci::parse::crun(&v, id);
});
