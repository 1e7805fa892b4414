//! Project tasks: `cargo xtask setup | build | run | test`.

mod setup;
mod util;

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
    /// Set up, build, then run observer (default: `observer events`); extra args go to it.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build and run every test (as root: they load real eBPF programs).
    Test {
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
            let args = if args.is_empty() { vec!["events".to_string()] } else { args };
            let err = Command::new(root().join("target/release/observer")).args(&args).exec();
            bail!("starting observer: {err}")
        }
        Cmd::Test { args } => {
            if !is_root() {
                bail!("the tests load eBPF programs and create namespaces: run `cargo xtask test` as root");
            }
            setup::setup(true)?;
            run(Command::new("cargo")
                .current_dir(root())
                .args(["test", "--release", "--locked", "--workspace", "--exclude", "observer-ebpf"])
                .args(&args)
                .args(["--", "--test-threads=1"]))
        }
    }
}
