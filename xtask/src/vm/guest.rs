//! The guest's tools for a machine that is not the host's: busybox, util-linux's unshare,
//! nsenter and setpriv, crun, coreutils' id, true and sleep, and libcap's setcap, from Debian's packages of that machine (the host's own
//! suite, so they are the versions the amd64 guests copy from the host), unpacked into a
//! sysroot under .vm-cache once. Their shared libraries are found by reading the ELF
//! binaries (`readelf`), as `ldd` cannot run a foreign binary.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use super::kernels::Apt;
use crate::{
    arch::Arch,
    util::{output, run},
};

/// The packages holding the guest's tools and every library they load (the libraries
/// `ldd` lists for the host's tools on Debian 12).
const PACKAGES: &[&str] = &[
    "busybox-static",
    "util-linux",
    "crun",
    "coreutils",
    "libcap2-bin",
    "libc6",
    "libselinux1",
    "libpcre2-8-0",
    "libcap-ng0",
    "libsystemd0",
    "libseccomp2",
    "libcap2",
    "libyajl2",
    "libgcrypt20",
    "liblzma5",
    "libzstd1",
    "liblz4-1",
    "libgpg-error0",
];

/// The host's Debian suite (`VERSION_CODENAME` of /etc/os-release).
fn host_suite() -> Result<String> {
    let os = fs::read_to_string("/etc/os-release").context("/etc/os-release")?;
    os.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|s| s.trim_matches('"').to_string())
        .context("no VERSION_CODENAME in /etc/os-release")
}

/// The unpacked packages of `arch` (cached: a `packages` marker lists what is in it).
pub fn sysroot(cache: &Path, arch: Arch) -> Result<PathBuf> {
    let dir = cache.join(format!("sysroot-{arch}"));
    let marker = dir.join(".packages");
    if fs::read_to_string(&marker).is_ok_and(|m| m == PACKAGES.join("\n")) {
        return Ok(dir);
    }
    let _ = fs::remove_dir_all(&dir);
    let debs = cache.join(format!("debs-{arch}"));
    let _ = fs::remove_dir_all(&debs);
    fs::create_dir_all(&debs)?;
    let suite = host_suite()?;
    let apt = Apt::for_arch(cache, &[&suite, &format!("{suite}-security")], arch)?;
    apt.update()?;
    for p in PACKAGES {
        apt.download(p, &debs)?;
    }
    for deb in fs::read_dir(&debs)?.flatten() {
        run(Command::new("dpkg").arg("-x").arg(deb.path()).arg(&dir))?;
    }
    fs::remove_dir_all(&debs)?;
    fs::write(&marker, PACKAGES.join("\n"))?;
    Ok(dir)
}

/// `rel` (a path inside the sysroot, e.g. `lib/ld-linux-aarch64.so.1`) with its symbolic
/// links followed inside the sysroot (absolute targets mean the sysroot's, not the host's).
fn resolve(sysroot: &Path, rel: &Path) -> Option<PathBuf> {
    let mut rel = rel.to_path_buf();
    for _ in 0..16 {
        let p = sysroot.join(&rel);
        match fs::read_link(&p) {
            Ok(t) if t.is_absolute() => rel = t.strip_prefix("/").ok()?.to_path_buf(),
            Ok(t) => rel = rel.parent()?.join(t),
            Err(_) => return p.is_file().then_some(rel),
        }
    }
    None
}

/// What `readelf` says a binary needs: its interpreter and its NEEDED sonames.
fn needs(bin: &Path) -> Result<(Option<String>, Vec<String>)> {
    let dynamic = output(Command::new("readelf").args(["-W", "-d"]).arg(bin))
        .with_context(|| format!("readelf -d {}", bin.display()))?;
    let sonames = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_string()))
        .collect();
    let headers = output(Command::new("readelf").args(["-W", "-l"]).arg(bin))
        .with_context(|| format!("readelf -l {}", bin.display()))?;
    let interp = headers
        .lines()
        .find_map(|l| l.split_once("program interpreter: "))
        .and_then(|(_, r)| r.strip_suffix(']'))
        .map(String::from);
    Ok((interp, sonames))
}

/// Where the packages put `rel` (`usr/bin/true`): there, or without the `usr/` (or with
/// one) — the host's /bin is /usr/bin (merged /usr), the packages' files are not moved.
fn locate(sysroot: &Path, rel: &Path) -> Option<PathBuf> {
    let other = match rel.strip_prefix("usr") {
        Ok(r) => r.to_path_buf(),
        Err(_) => Path::new("usr").join(rel),
    };
    resolve(sysroot, rel).or_else(|| resolve(sysroot, &other))
}

/// Copies `tool` (a path inside the sysroot) and the libraries it loads, transitively, to
/// the same paths under `root`.
pub fn copy_with_libs(sysroot: &Path, tool: &str, root: &Path) -> Result<()> {
    let mut todo = vec![PathBuf::from(tool.trim_start_matches('/'))];
    let mut done: Vec<PathBuf> = Vec::new();
    while let Some(rel) = todo.pop() {
        if done.contains(&rel) {
            continue;
        }
        let real = locate(sysroot, &rel)
            .with_context(|| format!("{} is not in {}", rel.display(), sysroot.display()))?;
        let (interp, sonames) = needs(&sysroot.join(&real))?;
        let dst = root.join(&rel);
        fs::create_dir_all(dst.parent().context("a path without a parent")?)?;
        fs::copy(sysroot.join(&real), &dst)
            .with_context(|| format!("copying {}", real.display()))?;
        todo.extend(interp.map(|i| PathBuf::from(i.trim_start_matches('/'))));
        for so in sonames {
            let found = ["lib", "usr/lib"]
                .iter()
                .map(|d| Path::new(d).join(lib_dir(sysroot)).join(&so))
                .find(|p| resolve(sysroot, p).is_some());
            match found {
                Some(p) => todo.push(p),
                None => bail!("{so} (needed by {tool}) is in none of the guest's packages"),
            }
        }
        done.push(rel);
    }
    Ok(())
}

/// The multiarch library directory of the sysroot (`aarch64-linux-gnu`).
fn lib_dir(sysroot: &Path) -> String {
    fs::read_dir(sysroot.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with("-linux-gnu"))
        .unwrap_or_default()
}
