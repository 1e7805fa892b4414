//! Debian kernel packages for the VM matrix: resolve the newest package of a series in the
//! suite that carries it, download it once with `apt-get download` (private sources lists for
//! suites the host lacks), extract vmlinuz and the modules the guest's disk needs
//! (modules.rs) with `dpkg -x`, cache under .vm-cache/kernels.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{
    arch::Arch,
    util::{output, run},
};

/// A kernel of the matrix: how the user names it and where Debian has it.
pub struct KernelSeries {
    pub label: &'static str,
    suites: &'static [&'static str],
    /// Package-name regex for `apt-cache search --names-only`; `ARCH` stands for the
    /// machine's Debian name (amd64, arm64).
    pattern: &'static str,
}

pub const SERIES: &[KernelSeries] = &[
    KernelSeries {
        label: "5.10",
        suites: &["bullseye", "bullseye-security"],
        pattern: r"^linux-image-5\.10\.0-[0-9]+-ARCH$",
    },
    KernelSeries {
        label: "6.1",
        suites: &["bookworm", "bookworm-security"],
        pattern: r"^linux-image-6\.1\.0-[0-9]+-ARCH$",
    },
    KernelSeries {
        label: "6.12",
        suites: &["bookworm", "bookworm-security"],
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb12-ARCH$",
    },
    // The newest kernel Debian ships: unstable's.
    KernelSeries {
        label: "newest",
        suites: &["sid"],
        pattern: r"^linux-image-[0-9]+\.[0-9]+\.[0-9]+\+deb[0-9]+-ARCH$",
    },
];

pub fn series(label: &str) -> Result<&'static KernelSeries> {
    SERIES.iter().find(|s| s.label == label).with_context(|| {
        let known: Vec<_> = SERIES.iter().map(|s| s.label).collect();
        format!("unknown kernel `{label}` (known: {})", known.join(", "))
    })
}

/// A private apt configuration for one set of suites, so the host's sources stay untouched.
pub(crate) struct Apt {
    dir: PathBuf,
    /// The packages' machine when it is not the host's.
    foreign: Option<Arch>,
}

impl Apt {
    pub(crate) fn new(cache: &Path, suites: &[&str]) -> Result<Apt> {
        Apt::for_arch(cache, suites, Arch::host())
    }

    /// Lists and downloads packages of `arch` (apt's `APT::Architecture`: only the lists of
    /// that machine are fetched, and a name means its package).
    pub(crate) fn for_arch(cache: &Path, suites: &[&str], arch: Arch) -> Result<Apt> {
        let foreign = (!arch.is_host()).then_some(arch);
        let mut dir = cache.join("apt");
        if let Some(a) = foreign {
            dir = dir.join(a.deb());
        }
        let dir = dir.join(suites.join("+"));
        fs::create_dir_all(dir.join("lists/partial"))?;
        fs::create_dir_all(dir.join("cache/archives/partial"))?;
        let mut list = String::new();
        for s in suites {
            let base = if s.ends_with("-security") {
                "debian-security"
            } else {
                "debian"
            };
            list.push_str(&format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/{base} {s} main\n"
            ));
        }
        fs::write(dir.join("sources.list"), list)?;
        Ok(Apt { dir, foreign })
    }

    fn opts(&self, cmd: &mut Command) {
        let d = self.dir.display();
        for o in [
            format!("Dir::Etc::SourceList={d}/sources.list"),
            "Dir::Etc::SourceParts=/dev/null".to_string(),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}/cache"),
            "APT::Sandbox::User=root".to_string(),
        ] {
            cmd.arg("-o").arg(o);
        }
        if let Some(a) = self.foreign {
            cmd.arg("-o").arg(format!("APT::Architecture={a}"));
            cmd.arg("-o").arg(format!("APT::Architectures={a}"));
        }
    }

    pub(crate) fn update(&self) -> Result<()> {
        let mut c = Command::new("apt-get");
        self.opts(&mut c);
        run(c.args(["-q", "update"]))
    }

    /// The packages whose names match `pattern`, newest first.
    fn newest_first(&self, pattern: &str) -> Vec<String> {
        let mut c = Command::new("apt-cache");
        self.opts(&mut c);
        let out = output(c.args(["search", "--names-only", pattern])).unwrap_or_default();
        let mut names: Vec<String> = out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(String::from)
            .collect();
        names.sort_by_key(|n| std::cmp::Reverse(version_key(n)));
        names
    }

    pub(crate) fn download(&self, pkg: &str, into: &Path) -> Result<()> {
        let mut c = Command::new("apt-get");
        self.opts(&mut c);
        run(c.current_dir(into).args(["-q", "download", pkg]))
    }
}

/// Numeric fields of a package name, for ordering 6.1.0-9 before 6.1.0-10.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A kernel ready to boot.
pub struct Kernel {
    pub label: String,
    pub package: String,
    pub vmlinuz: PathBuf,
    /// `<release>/`: the modules of the guest's disk and their `load` order (modules.rs).
    pub modules: PathBuf,
}

/// How a kernel of `arch` is named in the matrix: the series' label, prefixed by the
/// machine when it is not amd64 (`arm64-6.1`).
pub fn label(arch: Arch, series: &str) -> String {
    match arch {
        Arch::Amd64 => series.to_string(),
        _ => format!("{arch}-{series}"),
    }
}

/// Returns the cached kernel of a series, fetching it when absent. With `refresh`, looks for
/// a newer package first.
pub fn fetch(cache: &Path, s: &KernelSeries, arch: Arch, refresh: bool) -> Result<Kernel> {
    let label = label(arch, s.label);
    let dir = cache.join("kernels").join(&label);
    let marker = dir.join("package");
    // A kernel cached before the guest had a disk lacks its modules: fetched again.
    let cached = |pkg: &str| {
        (dir.join("vmlinuz").is_file() && dir.join("modules").is_dir()).then(|| Kernel {
            label: label.clone(),
            package: pkg.trim().into(),
            vmlinuz: dir.join("vmlinuz"),
            modules: dir.join("modules"),
        })
    };
    if !refresh {
        if let Some(k) = fs::read_to_string(&marker).ok().and_then(|p| cached(&p)) {
            return Ok(k);
        }
    }
    let apt = Apt::for_arch(cache, s.suites, arch)?;
    apt.update()?;
    let pattern = s.pattern.replace("ARCH", arch.deb());
    let names = apt.newest_first(&pattern);
    let newest = names
        .first()
        .with_context(|| format!("no package matching {pattern} in {:?}", s.suites))?;
    if fs::read_to_string(&marker).unwrap_or_default().trim() == newest {
        if let Some(k) = cached(newest) {
            return Ok(k);
        }
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let x = dir.join("x");
    let pkg = extract_first(&apt, &names, &dir, &x)?;
    let image = find_prefixed(&x, "vmlinuz").context("no vmlinuz in the kernel packages")?;
    fs::rename(&image, dir.join("vmlinuz"))?;
    if let Some(cfg) = find_prefixed(&x, "config") {
        fs::rename(cfg, dir.join("config"))?;
    }
    super::modules::keep(&x, &dir.join("modules"))?;
    fs::remove_dir_all(&x)?;
    fs::write(&marker, &pkg)?;
    if !dir.join("vmlinuz").is_file() {
        bail!("extracting {pkg} failed");
    }
    Ok(Kernel {
        label,
        package: pkg,
        vmlinuz: dir.join("vmlinuz"),
        modules: dir.join("modules"),
    })
}

/// Extracts the newest of `names` that the mirror serves into `x`; returns its name. An
/// index may list a package its pool lacks (bullseye-security's arm64 5.10.0-46 here: 404):
/// then the next older one of the series.
fn extract_first(apt: &Apt, names: &[String], dir: &Path, x: &Path) -> Result<String> {
    let mut why = None;
    for pkg in names {
        eprintln!("vm-test: fetching {pkg}");
        let mut got = extract(apt, pkg, dir, x);
        if got.is_ok() && find_prefixed(x, "vmlinuz").is_none() {
            // Newer Debian kernels (≥ 6.17 in sid) moved the image into linux-binary-<version>.
            let binary = pkg.replacen("linux-image-", "linux-binary-", 1);
            got = extract(apt, &binary, dir, x);
        }
        if got.is_ok() && super::modules::tree(x).is_none() {
            // ... and its modules into linux-modules-<version>.
            let modules = pkg.replacen("linux-image-", "linux-modules-", 1);
            got = extract(apt, &modules, dir, x);
        }
        match got {
            Ok(()) => return Ok(pkg.clone()),
            Err(e) => {
                eprintln!("vm-test: {e:#}; trying an older package");
                let _ = fs::remove_dir_all(x);
                why = Some(e);
            }
        }
    }
    Err(why.unwrap_or_else(|| anyhow::anyhow!("no kernel package")))
}

/// Downloads `pkg` into `dir`, extracts it into `x` and deletes the .deb.
fn extract(apt: &Apt, pkg: &str, dir: &Path, x: &Path) -> Result<()> {
    apt.download(pkg, dir)?;
    let deb = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download produced no .deb")?;
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(x))?;
    fs::remove_file(&deb)?;
    Ok(())
}

/// A file named `prefix*` in the places Debian kernel packages put the image and its config:
/// `boot/` (up to 6.16) or `usr/lib/modules/<version>/` (later).
fn find_prefixed(x: &Path, prefix: &str) -> Option<PathBuf> {
    let mut dirs = vec![x.join("boot")];
    if let Ok(rd) = fs::read_dir(x.join("usr/lib/modules")) {
        dirs.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
    }
    dirs.iter()
        .filter_map(|d| fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
}
