//! Project tasks: `cargo xtask setup | build | run | test`.

mod bench;
mod setup;
mod util;
mod vm;

use std::{
    os::unix::process::CommandExt,
    process::{Command, ExitCode},
};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use util::{is_root, root, run};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build needs (Debian packages, pinned nightly + rust-src, bpf-linker).
    Setup {
        /// Also the packages the tests use.
        #[arg(long)]
        tests: bool,
    },
    /// Set up, then build the release binary (target/release/observer).
    Build,
    /// Set up, build, then run observer (default: `observer agent`); extra args go to it.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the eBPF tests inside qemu on Debian kernels (5.10, 6.1, 6.12, newest).
    VmTest {
        /// Comma-separated kernels to boot.
        #[arg(long, value_delimiter = ',', default_values_t = vm::DEFAULT_KERNELS.iter().map(|k| k.to_string()))]
        kernels: Vec<String>,
        /// Look for newer kernel packages instead of using the cached ones.
        #[arg(long)]
        refresh: bool,
        /// Per-kernel time limit in seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
    /// Measure the product's goals (storm overhead, tree, /metrics, scan, RSS) as root.
    Bench {
        /// Only these: scan, tree, metrics, storm (comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Set up, build and run every test (as root: they load real eBPF programs): the host
    /// tests, then the kernel matrix in qemu.
    Test {
        /// Skip the kernel matrix (quicker local loops).
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn build() -> Result<()> {
    run(Command::new("cargo")
        .current_dir(root())
        .args(["build", "--release", "--locked", "-p", "observer"]))
}

fn main() -> ExitCode {
    match dispatch(Cli::parse().cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Setup { tests } => setup::setup(tests),
        Cmd::Build => {
            setup::setup(false)?;
            build()
        }
        Cmd::Run { args } => {
            setup::setup(false)?;
            build()?;
            let args = if args.is_empty() { vec!["agent".to_string()] } else { args };
            let err = Command::new(root().join("target/release/observer")).args(&args).exec();
            bail!("starting observer: {err}")
        }
        Cmd::VmTest { kernels, refresh, timeout } => {
            if !is_root() {
                bail!("vm-test installs packages and builds an initramfs: run it as root");
            }
            setup::setup(true)?;
            vm::vm_test(vm::VmArgs { kernels, refresh, timeout: std::time::Duration::from_secs(timeout) })
        }
        Cmd::Bench { only } => {
            if !is_root() {
                bail!("the benchmarks load eBPF programs and start containers: run them as root");
            }
            setup::setup(true)?;
            bench::bench(&only)
        }
        Cmd::Test { no_vm, args } => {
            if !is_root() {
                bail!("the tests load eBPF programs and create namespaces: run `cargo xtask test` as root");
            }
            setup::setup(true)?;
            run(Command::new("cargo")
                .current_dir(root())
                .args(["test", "--release", "--locked", "--workspace", "--exclude", "observer-ebpf"])
                .args(&args)
                .args(["--", "--test-threads=1"]))?;
            if no_vm {
                return Ok(());
            }
            vm::vm_test(vm::VmArgs {
                kernels: vm::DEFAULT_KERNELS.iter().map(|k| k.to_string()).collect(),
                refresh: false,
                timeout: std::time::Duration::from_secs(900),
            })
        }
    }
}
