//! `cargo xtask package`: the Debian package of the static (musl) observer, made by cargo-deb
//! from `[package.metadata.deb]` in observer/Cargo.toml: the binary, the systemd unit
//! (deploy/systemd, enabled and started by the maintainer scripts cargo-deb generates), the
//! default /etc/observer/config.toml (a conffile), shell completions and man pages — the
//! last two generated here by the binary itself (`observer completions`, `observer man`),
//! so they always match its command line.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::{
    setup,
    util::{output, root, run},
    vm::MUSL,
};

const CARGO_DEB_VERSION: &str = "3.8.0";

/// Builds the package; returns the path of the .deb.
pub fn package() -> Result<PathBuf> {
    setup::rust_target(MUSL)?;
    crate::build_observer(&["--target", MUSL])?;
    let bin = crate::vm::static_observer();
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
    let _ = fs::remove_dir_all(&dest);
    run(Command::new("cargo")
        .current_dir(root())
        .args([
            "deb",
            "-p",
            "observer",
            "--no-build",
            "--strip",
            "--target",
            MUSL,
        ])
        .arg("--output")
        .arg(&dest))?;
    let deb = fs::read_dir(&dest)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("cargo deb wrote no .deb")?;
    // The packaged (stripped) binary also stands alone, as the container image's context.
    let unpacked = dest.join("unpacked");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    fs::rename(unpacked.join("usr/bin/observer"), dest.join("observer"))?;
    fs::remove_dir_all(&unpacked)?;
    eprintln!("package: {}", deb.display());
    Ok(deb)
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
