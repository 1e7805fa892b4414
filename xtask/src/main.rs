//! Project tasks: `cargo xtask setup | build | run | test | vm-test | package | image | bench
//! | fuzz | torture | hygiene-check` (and the hidden `__runner` the test command runs its tests
//! under).

mod arch;
mod bench;
mod ci;
mod fuzz;
mod hygiene;
mod image;
mod package;
mod setup;
mod tools;
mod torture;
mod util;
mod vm;

use std::{
    os::unix::process::CommandExt,
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};
use arch::Arch;
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
    /// Set up, then build the release binary (target/release/observer); with --arch, the
    /// static (musl) binary for that machine (target/<arch>-unknown-linux-musl/release/).
    Build {
        /// amd64 or arm64 (cross-built here).
        #[arg(long)]
        arch: Option<Arch>,
    },
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
        /// Only the tests whose `module::name` contains this (e.g. `pid_reuse::`).
        #[arg(long)]
        only: Option<String>,
        /// The guests' machine: amd64, or arm64 (cross-built, emulated by qemu-system-aarch64).
        #[arg(long, default_value = "amd64")]
        arch: Arch,
    },
    /// Build the Debian package (static musl binary, systemd unit, config, completions, man
    /// pages) into target/package/ with cargo-deb.
    Package {
        /// amd64 or arm64 (cross-built here).
        #[arg(long, default_value = "amd64")]
        arch: Arch,
    },
    /// Build the packages of both machines and the container image from them: one
    /// manifest list (linux/amd64, linux/arm64) in podman's local storage, checked.
    Image,
    /// Measure the product's goals (storm overhead, tree, /metrics, scan, RSS, memory under
    /// churn) as root.
    Bench {
        /// Only these: scan, tree, metrics, storm, hostile, churn, bpf-stats, store, export,
        /// export-million, scale (comma-separated; scale runs only when named).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Run the peers side by side instead (execsnoop+exitsnoop, podman top, ps,
        /// prometheus-process-exporter) and write BENCHMARKS.md; with --only, both.
        #[arg(long)]
        peers: bool,
        /// Instead of the rest: the peers' spawn storm with an older observer binary beside
        /// this build (wall time and in-kernel time per spawn, interleaved round by round),
        /// the before/after of a change to the kernel programs; written to
        /// target/bench-baseline.md.
        #[arg(long, value_name = "OBSERVER")]
        baseline: Option<std::path::PathBuf>,
    },
    /// Fuzz the parsers of untrusted input (libFuzzer via cargo-fuzz, pinned nightly):
    /// event decoder, cgroup paths, /proc and tracefs files, runtime state files, API requests.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// Only these targets (comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// The test command's quick build (unoptimized, ~3× cheaper to build, ~10× fewer
        /// inputs a second) instead of the release one.
        #[arg(long)]
        dev: bool,
    },
    /// Check that the test command's hygiene stops only what its run started: others'
    /// daemon, launcher container and cgroup survive it, the run's own leaks do not (as root;
    /// needs a built observer: target/<musl>/release or target/release).
    HygieneCheck,
    /// The test runner (a child subreaper below which `cargo xtask test` runs the tests).
    #[command(name = hygiene::RUNNER_CMD, hide = true)]
    Runner {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// A mixed workload (stress-ng and more) in a cgroup beside a real agent, frozen at
    /// random moments and compared with /proc process by process; fails on any mismatch or
    /// a correction the agent made without a loss of events.
    Torture {
        /// Seconds to run.
        #[arg(long, default_value_t = 600)]
        time: u64,
        /// (internal) Run one part of the workload.
        #[arg(long, hide = true)]
        worker: Option<String>,
        #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build and run every test (as root: they load real eBPF programs): the host
    /// tests, the fuzz targets briefly (and their regression inputs), then the kernel
    /// matrix in qemu and the VM tests on the newest arm64 kernel.
    Test {
        /// Skip the kernel matrix and the arm64 leg (quicker local loops).
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `cargo build --release --locked -p observer`, plus `extra` arguments.
pub(crate) fn build_observer(extra: &[&str]) -> Result<()> {
    run(Command::new("cargo")
        .current_dir(root())
        .args(["build", "--release", "--locked", "-p", "observer"])
        .args(extra))
}

/// `cargo test` of the host crates as the test command runs it: the release profile and
/// the musl target of the package build, so the tests reuse its observer and the VM matrix
/// reuses the tests' binaries.
pub(crate) fn cargo_test() -> Command {
    cargo_test_for(Arch::host())
}

/// [`cargo_test`] for the static build of `arch`. A cross build (arm64 on this host) is
/// only ever run by the VM guests, so it builds what they run and nothing else: the
/// integration tests `it` (and with them observer), not the unit tests, which never run
/// here, and without debug information, which the guests' binaries are stripped of anyway
/// (vm/initramfs.rs). The binaries' code is the release profile's, as the host's.
pub(crate) fn cargo_test_for(arch: Arch) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root())
        .args(["test", "--release", "--locked", "-p", "observer"]);
    if arch.is_host() {
        c.args(["-p", "observer-common"]);
    } else {
        c.args(["--test", "it", "--config", "profile.release.debug=0"]);
    }
    c.args(["--target", arch.musl()]);
    c
}

/// Builds the test binaries (`cargo_test() --no-run`, plus `extra`); returns the path of the
/// integration-test binary (observer/tests/it).
pub(crate) fn build_tests(extra: &[&str]) -> Result<std::path::PathBuf> {
    build_tests_for(Arch::host(), extra)
}

/// [`build_tests`] for the static build of `arch`.
pub(crate) fn build_tests_for(arch: Arch, extra: &[&str]) -> Result<std::path::PathBuf> {
    let out = cargo_test_for(arch)
        .args(["--no-run", "--message-format", "json-render-diagnostics"])
        .args(extra)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("building the test binaries")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            v["reason"] == "compiler-artifact"
                && v["target"]["kind"][0] == "test"
                && v["target"]["name"] == "it"
        })
        .and_then(|v| v["executable"].as_str().map(std::path::PathBuf::from))
        .context("cargo built no integration-test binary `it`")
}

pub(crate) fn build() -> Result<()> {
    build_observer(&[])
}

/// Puts `observer` on PATH (/usr/local/bin) unless something else is there already.
fn install_link(bin: &std::path::Path) {
    let link = std::path::Path::new("/usr/local/bin/observer");
    let ours = std::fs::read_link(link).is_ok_and(|t| t.ends_with("target/release/observer"));
    if !link.exists() || ours {
        let _ = std::fs::remove_file(link);
        if std::os::unix::fs::symlink(bin, link).is_ok() {
            eprintln!("run: /usr/local/bin/observer → {}", bin.display());
        }
    }
}

/// A launcher container worth looking at: a parent that never reaps (a zombie), an orphan
/// adopted by PID 1, and a busy child forking every second.
const DEMO: &str = "sh -c 'sleep 100000 &'; \
sh -c 'sleep 0.5 & exec sleep 100000' & \
while true; do sleep 1; done";

fn demo(bin: &std::path::Path) -> Result<()> {
    let running = Command::new(bin)
        .args(["ls", "-o", "json"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .is_some_and(|v| {
            v.as_array().is_some_and(|a| {
                // `state` is what is true now; `status` is what the state file last
                // recorded (a demo whose processes died with a reboot still says running).
                a.iter()
                    .any(|c| c["name"] == "demo" && c["state"] == "running")
            })
        });
    if !running {
        let _ = Command::new(bin).args(["rm", "-f", "demo"]).output();
        run(Command::new(bin).args([
            "run",
            "-d",
            "--name",
            "demo",
            "--memory",
            "64M",
            "--pids-max",
            "64",
            "--",
            "sh",
            "-c",
            DEMO,
        ]))?;
    }
    eprintln!(
        "run: a demo container `demo` is running. In another shell try:\n  \
         observer tree demo\n  observer containers\n  observer zombies\n  \
         observer events --type exec,exit\n  curl -s 127.0.0.1:19100/metrics | grep demo\n\
         (remove it with `observer rm -f demo`)"
    );
    Ok(())
}

/// Forgets the variables `cargo run` (the `cargo xtask` alias) set for xtask itself. The
/// builds xtask starts would otherwise see them, and build scripts that read them (ring's
/// reads CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ...) would run again with other values: the
/// dependencies built inside `cargo xtask` and by a plain `cargo build` in a shell would
/// not be shared, and each would compile them again after the other.
fn forget_cargo_run_env() {
    let ours: Vec<_> = std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| {
            let k = k.to_string_lossy();
            k.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_MANIFEST_LINKS",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                ]
                .contains(&k.as_ref())
        })
        .collect();
    for k in ours {
        std::env::remove_var(k);
    }
}

fn main() -> ExitCode {
    // Before any thread starts.
    forget_cargo_run_env();
    let cmd = Cli::parse().cmd;
    if let Cmd::Runner { cmd } = &cmd {
        return hygiene::runner_main(cmd);
    }
    match dispatch(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Fails with `why` unless xtask runs as root.
fn require_root(why: &str) -> Result<()> {
    if is_root() {
        Ok(())
    } else {
        bail!("{why}")
    }
}

fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Setup { tests } => setup::setup(tests),
        Cmd::Build { arch } => build_cmd(arch),
        Cmd::Run { args } => run_cmd(args),
        Cmd::VmTest {
            kernels,
            refresh,
            timeout,
            only,
            arch,
        } => {
            require_root("vm-test installs packages and builds an initramfs: run it as root")?;
            setup::setup(true)?;
            vm::vm_test(vm::VmArgs {
                kernels,
                refresh,
                timeout: std::time::Duration::from_secs(timeout),
                only,
                arch,
            })
        }
        Cmd::Package { arch } => {
            setup::setup(false)?;
            package::package(arch).map(|_| ())
        }
        Cmd::Image => {
            setup::setup(false)?;
            image::image()
        }
        Cmd::Bench {
            only,
            peers,
            baseline,
        } => {
            require_root(
                "the benchmarks load eBPF programs and start containers: run them as root",
            )?;
            setup::setup(true)?;
            bench::bench(&only, peers, baseline.as_deref())
        }
        Cmd::HygieneCheck => hygiene_check_cmd(),
        Cmd::Runner { .. } => unreachable!("handled in main"),
        Cmd::Fuzz { time, only, dev } => {
            setup::setup(false)?;
            let opt = if dev {
                fuzz::Opt::Quick
            } else {
                fuzz::Opt::Release
            };
            fuzz::fuzz(&only, time, opt)
        }
        Cmd::Torture { worker, args, .. } if worker.is_some() => {
            torture::worker(worker.as_deref().unwrap_or_default(), &args)
        }
        Cmd::Torture { time, .. } => {
            setup::setup(false)?;
            torture::torture(time, true)
        }
        Cmd::Test { no_vm, args } => {
            require_root(
                "the tests load eBPF programs and create namespaces: run `cargo xtask test` as root",
            )?;
            ci::test(no_vm, &args)
        }
    }
}

/// `cargo xtask build [--arch A]`: the host's builds, or the static observer for `A`.
fn build_cmd(arch: Option<Arch>) -> Result<()> {
    setup::setup(false)?;
    match arch {
        None => build(),
        Some(a) => {
            arch::cross_setup(a)?;
            build_observer(&["--target", a.musl()])
        }
    }
}

/// `cargo xtask run [ARGS]`: builds, installs the link, starts the demo and execs the agent
/// (or `observer ARGS`).
fn run_cmd(args: Vec<String>) -> Result<()> {
    require_root("observer loads eBPF programs: run `cargo xtask run` as root")?;
    setup::apt_install(&["busybox-static"])?;
    setup::setup(false)?;
    build()?;
    let bin = root().join("target/release/observer");
    install_link(&bin);
    let args = if args.is_empty() {
        demo(&bin)?;
        vec!["agent".to_string()]
    } else {
        args
    };
    let err = Command::new(&bin).args(&args).exec();
    bail!("starting observer: {err}")
}

/// `cargo xtask hygiene-check`: the test command's hygiene against daemons, containers and
/// cgroups it did not start, with whichever observer binary is built.
fn hygiene_check_cmd() -> Result<()> {
    require_root("the hygiene check starts daemons, containers and cgroups: run it as root")?;
    let observer = [
        vm::static_observer(),
        root().join("target/release/observer"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .context("no observer binary: build one first (cargo build --release -p observer)")?;
    hygiene::selfcheck::check(&observer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_host_test_build_builds_every_test_with_the_release_profile() {
        let a = args(&cargo_test_for(Arch::host()));
        assert!(
            a.windows(2).any(|w| w == ["-p", "observer-common"]),
            "{a:?}"
        );
        assert!(!a.iter().any(|x| x == "--test" || x == "--config"), "{a:?}");
    }

    #[test]
    fn a_cross_test_build_builds_only_what_the_guests_run_without_debug_info() {
        let cross = [Arch::Amd64, Arch::Arm64]
            .into_iter()
            .find(|a| !a.is_host())
            .expect("one machine is not the host");
        let a = args(&cargo_test_for(cross));
        assert!(a.windows(2).any(|w| w == ["--test", "it"]), "{a:?}");
        assert!(!a.iter().any(|x| x == "observer-common"), "{a:?}");
        assert!(
            a.windows(2)
                .any(|w| w == ["--config", "profile.release.debug=0"]),
            "{a:?}"
        );
        assert!(
            a.windows(2).any(|w| w == ["--target", cross.musl()]),
            "{a:?}"
        );
    }
}
