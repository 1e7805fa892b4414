//! Test tools Debian 12 lacks in a usable form, fetched once into `.vm-cache/tools/` from
//! Debian's own archive (apt-get download from sid with a private sources list, as for the
//! VM kernels): bookworm's promtool 2.42 is built without Kubernetes service discovery, so
//! it cannot check deploy/prometheus/prometheus.yml; sid's promtool (3.5, a static Go
//! binary) can.

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
