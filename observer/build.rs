//! Builds the kernel programs (observer-ebpf) for bpfel-unknown-none with the pinned nightly
//! and bpf-linker, through aya-build; main.rs embeds the object with include_bytes_aligned!.
//! `cargo xtask setup` installs the toolchain pieces this needs.

use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

/// The nightly that matches bpf-linker's LLVM 22 (shared/DESIGN.md §6). Keep in sync with
/// xtask/src/setup.rs.
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    // cargo-fuzz builds with `--cfg fuzzing`: its targets test parsers and never load the
    // kernel programs, so a fuzzing build skips them (probes/mod.rs embeds no object then).
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        return Ok(());
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
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "observer-ebpf",
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(EBPF_TOOLCHAIN),
    )
    .context("building the eBPF programs failed: run `cargo xtask setup` to install the nightly toolchain, rust-src and bpf-linker")
}
