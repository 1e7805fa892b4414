//! `cargo xtask package`: the Debian package of the static (musl) observer, made by cargo-deb
//! from `[package.metadata.deb]` in observer/Cargo.toml: the binary, the systemd unit
//! (deploy/systemd, enabled and started by the maintainer scripts cargo-deb generates), the
//! default /etc/observer/config.toml (a conffile), shell completions and man pages — the
//! last two generated here by the binary itself (`observer completions`, `observer man`),
//! so they always match its command line. One package per machine (`--arch`): the arm64
//! one is cross-built, and its completions and man pages come from the host's binary
//! (they are text, the same on every machine).

use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::{
    arch::{self, Arch},
    util::{output, root, run},
    vm::{static_observer, MUSL},
};

const CARGO_DEB_VERSION: &str = "3.8.0";

/// Builds the package of `arch` (target/package/observer_<version>-1_<arch>.deb, its
/// binary beside it in target/package/<arch>/, the image's context); returns the .deb.
pub fn package(arch: Arch) -> Result<PathBuf> {
    arch::cross_setup(Arch::host())?;
    crate::build_observer(&["--target", MUSL])?;
    if !arch.is_host() {
        arch::cross_setup(arch)?;
        crate::build_observer(&["--target", arch.musl()])?;
    }
    pack(arch)
}

/// The package of `arch` from the static observer already built (target/<musl>/release/
/// observer, the host's too for the completions and man pages). The test command packs the
/// binary its test build made: `cargo test` builds observer with the features the
/// dev-dependencies add to shared crates (the CRI test's gRPC stack turns on more of hyper,
/// tower and syn), so a `cargo build` before it would compile observer and most of its
/// dependencies a second time — same code, other feature sets of those crates.
pub fn pack(arch: Arch) -> Result<PathBuf> {
    let bin = static_observer();
    if !bin.is_file() {
        bail!("{} is not built", bin.display());
    }
    // Generated assets outside target/ (cargo-deb reads paths under target/ as build
    // products); the .deb goes to target/package/.
    let out = root().join(".package");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(out.join("completions"))?;
    for (shell, file) in [
        ("bash", "observer.bash"),
        ("zsh", "_observer"),
        ("fish", "observer.fish"),
    ] {
        let script = Command::new(&bin)
            .args(["completions", shell])
            .output()
            .context("observer completions")?;
        if !script.status.success() {
            bail!("observer completions {shell} failed");
        }
        fs::write(out.join("completions").join(file), script.stdout)?;
    }
    run(Command::new(&bin)
        .args(["man", "--dir"])
        .arg(out.join("man")))?;
    cargo_deb()?;
    let dest = root().join("target/package");
    let staging = dest.join(format!("{arch}.deb"));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    // Where the binary was before there was one per machine.
    let _ = fs::remove_file(dest.join("observer"));
    run(Command::new("cargo")
        .current_dir(root())
        .args([
            "deb",
            "-p",
            "observer",
            "--no-build",
            "--strip",
            "--target",
            arch.musl(),
        ])
        .arg("--output")
        .arg(&staging))?;
    let built = fs::read_dir(&staging)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("cargo deb wrote no .deb")?;
    let deb = dest.join(built.file_name().context("a .deb without a name")?);
    fs::rename(&built, &deb)?;
    fs::remove_dir_all(&staging)?;
    // The packaged (stripped) binary also stands alone, as the container image's context
    // (the Containerfile copies <arch>/observer).
    let unpacked = dest.join(format!("{arch}.unpacked"));
    let _ = fs::remove_dir_all(&unpacked);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let _ = fs::remove_dir_all(dest.join(arch.deb()));
    fs::create_dir_all(dest.join(arch.deb()))?;
    fs::rename(
        unpacked.join("usr/bin/observer"),
        dest.join(arch.deb()).join("observer"),
    )?;
    fs::remove_dir_all(&unpacked)?;
    check_machine(&dest.join(arch.deb()).join("observer"), arch)?;
    eprintln!("package: {}", deb.display());
    Ok(deb)
}

/// Fails unless `bin` is an ELF binary for `arch`.
pub fn check_machine(bin: &std::path::Path, arch: Arch) -> Result<()> {
    let head = fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    match arch::elf_machine(&head) {
        Some(m) if m == arch.elf_machine() => Ok(()),
        other => bail!(
            "{} is not an {arch} ELF binary (e_machine {other:?}, want {})",
            bin.display(),
            arch.elf_machine()
        ),
    }
}

/// cargo-deb, pinned, installed with cargo like bpf-linker when missing (about 80 s, once).
fn cargo_deb() -> Result<()> {
    let installed = output(Command::new("cargo").args(["deb", "--version"]))
        .is_some_and(|v| v.contains(CARGO_DEB_VERSION));
    if installed {
        return Ok(());
    }
    eprintln!("setup: installing cargo-deb {CARGO_DEB_VERSION}");
    run(Command::new("cargo").args([
        "+stable",
        "install",
        "cargo-deb",
        "--locked",
        "--force",
        "--version",
        CARGO_DEB_VERSION,
    ]))
}
