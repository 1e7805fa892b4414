//! Builds the kernel programs (observer-ebpf) for bpfel-unknown-none with the pinned nightly
//! and bpf-linker; main.rs embeds the object with include_bytes_aligned!.
//! `cargo xtask setup` installs the toolchain pieces this needs.
//!
//! This is aya-build 0.2's `build_ebpf` with one difference: the eBPF crate is built in one
//! directory of the workspace's target, `target/ebpf`, not under this script's OUT_DIR. OUT_DIR differs for every run of the
//! script — the package build, clippy (which builds the script itself differently), each
//! target architecture — and each run compiled `core` and the programs again (~30 s of CPU,
//! on the test command's lint and arm64 paths); in one directory cargo finds them fresh. A
//! lock file there is held from the build to the copy, so builds that run at once (clippy
//! beside a build, two targets) take turns and none copies an object another rewrites. The
//! object does not depend on the target's architecture: the programs are tracepoints whose offsets come from BTF and tracefs at load
//! time, and no `bpf_target_arch` is passed (aya-ebpf then takes the build machine's, which
//! only its kprobe and uprobe register helpers read; observer has neither); the arm64 leg of
//! the test command runs this object.

use std::{
    io::BufReader,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{anyhow, bail, Context as _};

/// The nightly that matches bpf-linker's LLVM 22 (shared/DESIGN.md §6). Keep in sync with
/// xtask/src/setup.rs.
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";
const EBPF_TARGET: &str = "bpfel-unknown-none";

fn main() -> anyhow::Result<()> {
    // cargo-fuzz builds with `--cfg fuzzing`: its targets test parsers and never load the
    // kernel programs, so a fuzzing build skips them (probes/mod.rs embeds no object then).
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        return Ok(());
    }
    if std::env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() != Ok("little") {
        bail!("observer's kernel programs are built for little-endian machines only");
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "observer-ebpf")
        .ok_or_else(|| anyhow!("observer-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("observer-ebpf manifest has no parent directory"))?;
    // observer-ebpf is a build-dependency, so a change to its library (and observer-common)
    // reruns this script; its binary, the programs, is watched here.
    println!("cargo:rerun-if-changed={root_dir}");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let dir = ebpf_dir(&out_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = std::fs::File::create(dir.join("observer-build.lock"))?;
    lock.lock().context("locking the eBPF build")?;
    let built = build(&dir)
        .context("building the eBPF programs failed: run `cargo xtask setup` to install the nightly toolchain, rust-src and bpf-linker")?;
    std::fs::copy(&built, out_dir.join("observer"))
        .with_context(|| format!("copying {}", built.display()))?;
    Ok(())
}

/// `ebpf` in the directory that holds this build's profile directories: OUT_DIR is
/// `<dir>[/<target triple>]/<profile>/build/<package>-<hash>/out`, whatever `--target-dir`,
/// `CARGO_TARGET_DIR` or `build.target-dir` said. Under OUT_DIR itself (aya-build's place:
/// nothing shared) if it is not laid out so.
fn ebpf_dir(out_dir: &Path) -> PathBuf {
    let Some(mut dir) = out_dir.ancestors().nth(4) else {
        return out_dir.join("ebpf");
    };
    let target = std::env::var_os("TARGET");
    if target.is_some() && dir.file_name() == target.as_deref() {
        dir = dir.parent().unwrap_or(dir);
    }
    dir.join("ebpf")
}

/// `cargo build` of observer-ebpf's programs into `target_dir`, as aya-build runs it; the
/// object's path. Compiler messages become cargo warnings.
fn build(target_dir: &Path) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", EBPF_TOOLCHAIN, "cargo", "build", "--package", "observer-ebpf"])
        .args(["--bins", "--message-format=json", "--release"])
        .args(["--target", EBPF_TARGET, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(target_dir)
        // BTF in the object (aya reads the programs' and maps' types from it).
        .env("CARGO_ENCODED_RUSTFLAGS", "-Cdebuginfo=2\x1f-Clink-arg=--btf")
        // The nightly's own compiler, not the one (or the clippy driver) cargo runs us with.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut object = None;
    for message in cargo_metadata::Message::parse_stream(BufReader::new(stdout)) {
        match message.context("cargo's output is not its JSON")? {
            cargo_metadata::Message::CompilerArtifact(a) if a.target.name == "observer" => {
                object = a.executable.map(|e| e.into_std_path_buf());
            }
            cargo_metadata::Message::CompilerMessage(m) => {
                for line in m.message.rendered.unwrap_or_default().lines() {
                    println!("cargo:warning={line}");
                }
            }
            _ => {}
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    object.ok_or_else(|| anyhow!("cargo built no `observer` program object"))
}
