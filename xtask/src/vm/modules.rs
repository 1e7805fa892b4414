//! The kernel modules the guest's disk needs (a virtio block device with an ext4 file
//! system, qemu.rs): Debian builds virtio_blk, virtio_pci, ext4 and what they depend on as
//! modules. They are taken from the kernel's own package as it is unpacked (kernels.rs),
//! decompressed (Debian compresses them with xz or zstd since 6.x), and kept under the
//! kernel's cache directory as `modules/<release>/<name>.ko` with `load`, their names in the
//! order the guest's init loads them (each after what it depends on). The initramfs carries
//! every kernel's; the guest loads those of the kernel it runs (`uname -r`).

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// What the guest loads, with what these depend on: the disk's transports (PCI on x86_64
/// and on arm64's `virt`, whose generic PCI host may be a module too; MMIO), its driver,
/// ext4, and the crc32c algorithm that ext4 and jbd2 ask the crypto API for on the older
/// kernels (it is loaded on demand, by a modprobe the guest has no index for). A name the
/// kernel has no module of is built in (or absent: then the guest finds no disk and the
/// tests that need it say so).
const ROOTS: &[&str] = &[
    "pci_host_generic",
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
];

/// The directory of an unpacked kernel package's modules (`lib/modules/<release>` or, in
/// newer packages, `usr/lib/modules/<release>`), when it has a `kernel` tree, and the
/// release.
pub fn tree(x: &Path) -> Option<(String, PathBuf)> {
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .filter_map(|d| fs::read_dir(x.join(d)).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .find(|e| e.path().join("kernel").is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
}

/// Writes the modules of ROOTS and their dependencies from the unpacked package `x` into
/// `out/<release>/`, with `out/<release>/load`.
pub fn keep(x: &Path, out: &Path) -> Result<()> {
    let (release, dir) = tree(x).context("no lib/modules/<release>/kernel in the packages")?;
    let mut found = HashMap::new();
    index(&dir.join("kernel"), &mut found)?;
    let to = out.join(&release);
    fs::create_dir_all(&to)?;
    let mut order: Vec<String> = Vec::new();
    for root in ROOTS.iter().filter(|r| found.contains_key(**r)) {
        add(root, &found, &to, &mut order, 0)?;
    }
    fs::write(to.join("load"), order.join("\n") + "\n")?;
    eprintln!(
        "vm-test: modules for the disk on {release}: {}",
        order.join(" ")
    );
    Ok(())
}

/// Every module file under `dir`, by module name (`-` read as `_`, as the kernel does).
fn index(dir: &Path, found: &mut HashMap<String, PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            index(&p, found)?;
        } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
            if let Some((stem, _)) = name.split_once(".ko") {
                found.insert(stem.replace('-', "_"), p.clone());
            }
        }
    }
    Ok(())
}

/// Adds `name` to `order` after the modules it depends on, writing it decompressed.
fn add(
    name: &str,
    found: &HashMap<String, PathBuf>,
    to: &Path,
    order: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    if order.iter().any(|o| o == name) {
        return Ok(());
    }
    if depth > 32 {
        bail!("module dependencies of {name} go round in a circle");
    }
    let path = found
        .get(name)
        .with_context(|| format!("module {name}, a dependency, is not in the package"))?;
    let bytes = decompressed(path)?;
    for dep in depends(&bytes) {
        add(&dep, found, to, order, depth + 1)?;
    }
    fs::write(to.join(format!("{name}.ko")), &bytes)?;
    order.push(name.to_string());
    Ok(())
}

/// A module file's bytes, decompressed with the tool its suffix names.
fn decompressed(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = [(".xz", "xz"), (".zst", "zstd"), (".gz", "gzip")]
        .iter()
        .find(|(suffix, _)| name.ends_with(suffix))
        .map(|(_, tool)| *tool);
    let Some(tool) = tool else {
        return Ok(fs::read(path)?);
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("starting {tool}"))?;
    if !out.status.success() {
        bail!(
            "{tool} -dc {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// The modules a module depends on: the `depends=` of its `.modinfo` section (one
/// NUL-terminated `key=value` string among others).
fn depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &ko[at + KEY.len()..];
    let value = &value[..value.iter().position(|b| *b == 0).unwrap_or(value.len())];
    String::from_utf8_lossy(value)
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::depends;

    #[test]
    fn depends_reads_the_modinfo_string_and_only_it() {
        let ko = b"\x7fELF...depends=fake\0license=GPL\0depends=jbd2,mbcache,crc16\0vermagic=6.1\0";
        assert_eq!(depends(ko), ["jbd2", "mbcache", "crc16"]);
        assert!(depends(b"\0license=GPL\0depends=\0name=x\0").is_empty());
        assert!(depends(b"no modinfo").is_empty());
    }
}
