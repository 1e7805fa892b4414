//! Test tools Debian 12 lacks in a usable form, fetched once into `.vm-cache/tools/`: from
//! Debian's own archive (apt-get download from sid with a private sources list, as for the
//! VM kernels), promtool — bookworm's promtool 2.42 is built without Kubernetes service
//! discovery, so it cannot check deploy/prometheus/prometheus.yml; sid's promtool (3.5, a
//! static Go binary) can — and from PyPI (pinned, into a venv) the Kubernetes manifest
//! validators and OpenTelemetry's protobuf definitions (the OTLP test's receiver).

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context, Result};

use crate::{util::root, vm::kernels::Apt};

pub fn promtool() -> Result<PathBuf> {
    let cache = root().join(".vm-cache");
    let dir = cache.join("tools");
    let bin = dir.join("promtool");
    if bin.exists() {
        return Ok(bin);
    }
    fs::create_dir_all(&dir)?;
    let apt = Apt::new(&cache, &["sid"])?;
    apt.update()?;
    let work = dir.join("promtool-deb");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    apt.download("promtool", &work)?;
    let deb = fs::read_dir(&work)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download promtool produced no .deb")?;
    crate::util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&work))?;
    fs::rename(work.join("usr/bin/promtool"), &bin).context("promtool not in the package")?;
    let _ = fs::remove_dir_all(&work);
    Ok(bin)
}

/// A Python venv with the Kubernetes manifest validators from PyPI (pinned): kubernetes-validate
/// (the built-in kinds' OpenAPI schemas) and the prometheus-operator CRD models (for the
/// ServiceMonitor); and opentelemetry-proto, with which the OTLP test's receiver decodes
/// what the agent sends. Returns the venv's bin directory.
pub fn kube_validators() -> Result<PathBuf> {
    let venv = root().join(".vm-cache/tools/kube-venv");
    let bin = venv.join("bin");
    let ready = venv.join(".installed-2");
    if ready.exists() {
        return Ok(bin);
    }
    let _ = fs::remove_dir_all(&venv);
    crate::util::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    crate::util::run(Command::new(bin.join("pip")).args([
        "install",
        "-q",
        "kubernetes-validate==1.37.0",
        "cloudcoil-models-prometheus-operator==0.80.1.0",
        "opentelemetry-proto==1.45.2",
    ]))?;
    fs::write(&ready, "")?;
    Ok(bin)
}
