//! Runtime state files (docker config.v2.json, containerd and cri-o bundle config.json,
//! podman containers.json and userdata config.json, launcher config.json, runc state.json,
//! crun status) as a crashed or hostile writer leaves them, read into the typed subsets
//! observer keeps (containers::state_file).
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::containers::{
    names::parse::{self, DockerConfig, LauncherConfig, OciConfig, PodmanContainers},
    oci::parse::{self as oci, CrunStatus, RuncState},
};

fuzz_target!(|data: &[u8]| {
    let id = "0123456789ab";
    if let Ok(v) = serde_json::from_slice::<DockerConfig>(data) {
        let _ = parse::docker(&v);
    }
    if let Ok(v) = serde_json::from_slice::<OciConfig>(data) {
        let _ = parse::containerd(&v, id);
        let mut m = parse::crio(&v);
        parse::podman_config(&v, &mut m);
    }
    if let Ok(v) = serde_json::from_slice::<PodmanContainers>(data) {
        let _ = parse::podman(v);
    }
    if let Ok(v) = serde_json::from_slice::<LauncherConfig>(data) {
        let _ = parse::launcher(&v);
    }
    if let Ok(v) = serde_json::from_slice::<RuncState>(data) {
        let _ = oci::runc(&v);
    }
    if let Ok(v) = serde_json::from_slice::<CrunStatus>(data) {
        let _ = oci::crun(&v, id);
    }
});
