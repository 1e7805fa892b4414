//! `cargo xtask setup`: installs what building and testing observer needs on a Debian 12
//! machine that has only rustup's stable toolchain — Debian packages, the pinned nightly with
//! rust-src, bpf-linker built against LLVM 22. Each piece is checked first, so with
//! everything present the check takes well under a second.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{is_root, output, run};

/// Must match observer/build.rs (EBPF_TOOLCHAIN): the nightly whose LLVM (22) bpf-linker uses.
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_MAJOR: &str = "22";

/// Packages needed to build (bpf-linker links libLLVM 22; ring, the TLS crypto, has C and
/// assembly that the static musl build compiles with musl-gcc; the integration tests' CRI
/// client, k8s-cri, generates its gRPC code from cri-api's proto with protoc, and so does
/// every `--all-targets` build such as clippy's).
const BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "musl-tools",
    "protobuf-compiler",
];
/// Packages the tests use besides the build ones.
pub const TEST_PACKAGES: &[&str] = &[
    "util-linux",
    "procps",
    "busybox-static",
    // the workload of `cargo xtask torture` (its process stressors)
    "stress-ng",
    // real runtimes for tests/it/runtimes.rs (containerd's CRI plugin: tests/it/cri.rs, whose
    // pause binary is built with musl-gcc)
    "docker.io",
    "containerd",
    "runc",
    "podman",
    "conmon",
    // podman builds its pod infra (pause) image from catatonit when it cannot pull one
    "catatonit",
    // tests/it/oci.rs: containers runc and crun start by themselves (crun in the VM matrix)
    "crun",
    // a FUSE filesystem the test stops: tests/it/stalls.rs
    "bindfs",
    // bpftool: tests/it/resilience.rs checks that a killed agent leaves no program behind
    "bpftool",
    // a real Prometheus and promtool for tests/it/metrics.rs
    "prometheus",
    // tests/it/deploy.rs checks the Debian package
    "lintian",
    // a venv for the Kubernetes manifest validators (PyPI)
    "python3-venv",
    // tests/it/web.rs: an OpenSSL-based HTTPS client beside Prometheus, and bcrypt hashes
    // made the way exporter-toolkit's docs make them (htpasswd -B)
    "curl",
    "apache2-utils",
    // tests/it/credentials.rs: a file with capabilities (setcap)
    "libcap2-bin",
];

pub fn setup(with_test_deps: bool) -> Result<()> {
    let mut pkgs: Vec<&str> = BUILD_PACKAGES.to_vec();
    if with_test_deps {
        pkgs.extend_from_slice(TEST_PACKAGES);
    }
    apt_install(&pkgs)?;
    nightly()?;
    bpf_linker()?;
    Ok(())
}

fn missing_packages(pkgs: &[&str]) -> Vec<String> {
    // dpkg-query exits 1 when some package is unknown, but still lists the others.
    let listed = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev} ${Package}\\n"])
        .args(pkgs)
        .stderr(std::process::Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let installed: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.strip_prefix("ii "))
        .map(|n| n.trim().split(':').next().unwrap_or(""))
        .collect();
    pkgs.iter()
        .filter(|p| !installed.contains(p))
        .map(|p| p.to_string())
        .collect()
}

pub fn apt_install(pkgs: &[&str]) -> Result<()> {
    let missing = missing_packages(pkgs);
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "Debian packages missing: {} — run as root so setup can install them",
            missing.join(" ")
        );
    }
    eprintln!("setup: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
    .context("installing Debian packages")
}

fn nightly() -> Result<()> {
    let has_src =
        output(Command::new("rustup").args(["run", EBPF_TOOLCHAIN, "rustc", "--print", "sysroot"]))
            .map(|s| {
                std::path::Path::new(s.trim())
                    .join("lib/rustlib/src/rust/library/core")
                    .is_dir()
            })
            .unwrap_or(false);
    if has_src {
        return Ok(());
    }
    eprintln!("setup: installing Rust {EBPF_TOOLCHAIN} with rust-src (eBPF build)");
    run(Command::new("rustup").args([
        "toolchain",
        "install",
        EBPF_TOOLCHAIN,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn bpf_linker_ok() -> bool {
    let Some(path) = output(Command::new("sh").args(["-c", "command -v bpf-linker"])) else {
        return false;
    };
    let path = path.trim().to_string();
    let version_ok = output(Command::new(&path).arg("--version"))
        .is_some_and(|v| v.split_whitespace().nth(1) == Some(BPF_LINKER_VERSION));
    let llvm_ok = output(Command::new("ldd").arg(&path))
        .is_some_and(|l| l.contains(&format!("libLLVM.so.{LLVM_MAJOR}")));
    version_ok && llvm_ok
}

fn bpf_linker() -> Result<()> {
    if bpf_linker_ok() {
        return Ok(());
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} (takes a few minutes)");
    let llvm = format!("/usr/lib/llvm-{LLVM_MAJOR}");
    let path = format!("{llvm}/bin:{}", std::env::var("PATH").unwrap_or_default());
    run(Command::new("cargo")
        .env("LLVM_PREFIX", &llvm)
        .env("PATH", path)
        .args([
            "+stable",
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{LLVM_MAJOR}"),
        ]))?;
    if !bpf_linker_ok() {
        bail!("bpf-linker was installed but is not on PATH or not linked against LLVM {LLVM_MAJOR}: add ~/.cargo/bin to PATH");
    }
    Ok(())
}

/// Adds a rustup target to the stable toolchain when missing (the VM matrix needs musl).
pub fn rust_target(target: &str) -> Result<()> {
    let installed =
        output(Command::new("rustup").args(["+stable", "target", "list", "--installed"]))
            .unwrap_or_default();
    if installed.lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    run(Command::new("rustup").args(["+stable", "target", "add", target]))
}
