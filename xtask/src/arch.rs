//! The machines observer is built for: x86_64 (this host's, the default) and arm64, each a
//! static musl binary. arm64 is cross-built here with an LLVM-only toolchain that
//! .cargo/config.toml names (rust-lld links against Rust's self-contained musl; clang-22
//! compiles ring's C and assembly without an arm64 sysroot), and its kernels boot under
//! qemu-system-aarch64's emulation.

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    #[value(name = "amd64", alias = "x86_64")]
    Amd64,
    #[value(name = "arm64", alias = "aarch64")]
    Arm64,
}

impl Arch {
    /// The Rust target of the static build.
    pub const fn musl(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-musl",
            Arch::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Debian's name (packages, kernels) — also OCI's `linux/<name>`.
    pub fn deb(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// ELF `e_machine` of its binaries (EM_X86_64, EM_AARCH64).
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => 62,
            Arch::Arm64 => 183,
        }
    }

    /// Whether this host runs its binaries natively.
    pub fn is_host(self) -> bool {
        self == Arch::host()
    }

    pub const fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::Amd64
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.deb())
    }
}

/// What a cross build needs beyond the host's: the rustup target, and clang for ring (the
/// linker, rust-lld, comes with rustup).
pub fn cross_setup(arch: Arch) -> anyhow::Result<()> {
    crate::setup::rust_target(arch.musl())?;
    if !arch.is_host() {
        crate::setup::apt_install(&["clang-22"])?;
    }
    Ok(())
}

/// The `e_machine` of an ELF file's header (bytes 18..20, little-endian on both machines).
pub fn elf_machine(bytes: &[u8]) -> Option<u16> {
    (bytes.get(..4)? == b"\x7fELF" && bytes.get(5)? == &1)
        .then(|| u16::from_le_bytes([bytes[18], bytes[19]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_machine_reads_the_header() {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[5] = 1;
        h[18] = 183;
        assert_eq!(elf_machine(&h), Some(Arch::Arm64.elf_machine()));
        assert_eq!(elf_machine(b"#!/bin/sh\n"), None);
    }
}
