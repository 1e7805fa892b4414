//! `cargo xtask test`, CI's command: setup, lint, the package, the host tests, the torture
//! and fuzzing one phase after another, beside them from the host tests on the kernel
//! matrix, and last the arm64 leg (the VM set on the newest arm64 kernel) on its own; a
//! table of how long each took is printed at the end (also when a phase failed), with the
//! run's time before the arm64 leg (the budget is that time, plus the leg's).
//!
//! Everything is compiled once per target: the musl release build of observer that the
//! package ships is the binary the host tests, the torture, the hygiene check and the VM
//! guests run, and the integration-test binary the host tests built is the one the guests
//! run. Only the fuzz targets need builds of their own (another compiler: the pinned nightly
//! with sanitizers).

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{arch::Arch, fuzz, hygiene, package, setup, tools, torture, util::root, vm};

/// One row of the table: a phase, its wall time, the machine's busy CPU time meanwhile
/// (for a guest's row its qemu's own CPU time, inside the overlapping phases' figures;
/// none for a leg's prepare and wall rows), whether it passed.
struct Phase {
    name: String,
    took: Duration,
    busy: Option<Duration>,
    ok: bool,
}

/// CPU time the whole machine has spent busy (not idle, not waiting for I/O) since boot,
/// from /proc/stat's `cpu` line: what tells a phase that waits from one that computes, and
/// how far the run is from what two cores can do at all.
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(busy * 1000 / hz)
}

/// The phases run so far.
struct Phases {
    rows: Vec<Phase>,
    /// When the run began, and the machine's busy time then.
    start: (Instant, Duration),
}

impl Phases {
    fn new() -> Phases {
        Phases {
            rows: Vec::new(),
            start: (Instant::now(), machine_busy()),
        }
    }

    /// A row for the run so far (its time and the machine's busy CPU time since the start).
    fn mark(&mut self, name: &str) {
        let (t, busy) = self.start;
        self.add(
            name,
            t.elapsed(),
            Some(machine_busy().saturating_sub(busy)),
            true,
        );
    }

    /// Runs `f` as the phase `name`, timed.
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        eprintln!("test: phase {name}");
        let (t, busy) = (Instant::now(), machine_busy());
        let r = f();
        self.rows.push(Phase {
            name: name.to_string(),
            took: t.elapsed(),
            busy: Some(machine_busy().saturating_sub(busy)),
            ok: r.is_ok(),
        });
        r.with_context(|| format!("phase {name}"))
    }

    fn add(&mut self, name: &str, took: Duration, busy: Option<Duration>, ok: bool) {
        self.rows.push(Phase {
            name: name.to_string(),
            took,
            busy,
            ok,
        });
    }

    /// The table; `cpu` is the machine's busy CPU time during the phase (guests beside it
    /// included), and the total's says how close the run is to what the cores can do.
    fn print(&self) {
        let (t, busy) = self.start;
        let (total, busy) = (t.elapsed(), machine_busy().saturating_sub(busy));
        println!("\nphase                  time      cpu   result");
        for p in &self.rows {
            println!(
                "{:<20} {:>6}   {:>6}   {}",
                p.name,
                mmss(p.took),
                p.busy.map_or(String::new(), mmss),
                if p.ok { "ok" } else { "FAILED" }
            );
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "{:<20} {:>6}   {:>6}   ({cores} cores busy {:.0}% of the run)",
            "total",
            mmss(total),
            mmss(busy),
            100.0 * busy.as_secs_f64() / (total.as_secs_f64() * cores as f64).max(1e-9)
        );
    }
}

fn mmss(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

/// The test command: every phase, then the table of phase times.
pub fn test(no_vm: bool, args: &[String]) -> Result<()> {
    let mut phases = Phases::new();
    let r = phases_in_order(&mut phases, no_vm, args);
    phases.print();
    r
}

fn phases_in_order(phases: &mut Phases, no_vm: bool, args: &[String]) -> Result<()> {
    let (promtool, kube) = phases.run("setup", || {
        setup::setup(true)?;
        hygiene::survive_interrupts();
        Ok((tools::promtool()?, tools::kube_validators()?))
    })?;
    // The fuzz targets' build (another toolchain, nothing shared; the quick profile, a
    // third of `-O`'s CPU) runs at nice 19 from here on: it takes what the lint, the host
    // build's serial stretches (its build scripts, the eBPF link, the test binary's link),
    // the host tests and the torture leave idle.
    let fuzz_build = fuzz::build_in_background(fuzz::Opt::Quick)?;
    phases.run("lint", lint)?;
    // observer is compiled once: by the test build, whose binary the package holds.
    phases.run("host tests (build)", || {
        crate::arch::cross_setup(Arch::host())?;
        crate::build_tests(&[]).map(|_| ())
    })?;
    let deb = phases.run("package", || package::pack(Arch::host()))?;
    // The kernel matrix boots its guests now, beside the host tests (TCG keeps a core busy
    // per guest while the host tests mostly wait on runtimes, agents and timers).
    let matrix = (!no_vm)
        .then(|| std::thread::spawn(|| LegRun::run(Arch::host(), vm::DEFAULT_KERNELS, "matrix")));
    let host = phases.run("host tests (run)", || {
        host_tests(
            args,
            &[
                ("OBSERVER_PROMTOOL", promtool.as_os_str()),
                ("OBSERVER_DEB", deb.as_os_str()),
                ("OBSERVER_KUBE_VENV", kube.as_os_str()),
                ("OBSERVER_PY_VENV", kube.as_os_str()),
            ],
        )
    });
    let torture = host.and_then(|()| phases.run("torture", || torture::torture(60, false)));
    // Each fuzz target briefly: its regressions, then new inputs from its seeds.
    let fuzz = torture.and_then(|()| {
        phases.run("fuzz", || {
            fuzz::wait_for_build(fuzz_build)?;
            fuzz::fuzz(&[], 10, fuzz::Opt::Quick)
        })
    });
    // The matrix is waited for (its guests are stopped), whatever failed first.
    let matrix = join(matrix, phases);
    fuzz?;
    matrix?;
    // The arm64 leg last, on its own: what #27 adds to the run's budget is its row alone.
    // It runs the whole VM set on the newest arm64 kernel, cross-built and emulated (its
    // prepare builds the arm64 integration tests, and with them observer; 6.1 and 5.10 run
    // on demand with `cargo xtask vm-test --arch arm64`).
    phases.mark("before the arm64 leg");
    if !no_vm && Arch::host() != Arch::Arm64 {
        LegRun::run(Arch::Arm64, &["newest"], "arm64 leg").rows(phases)?;
    }
    Ok(())
}

/// The leg's rows once its thread ended (none when it did not run).
fn join(leg: Option<std::thread::JoinHandle<LegRun>>, phases: &mut Phases) -> Result<()> {
    match leg.map(std::thread::JoinHandle::join) {
        None => Ok(()),
        Some(Ok(leg)) => leg.rows(phases),
        Some(Err(_)) => Err(anyhow::anyhow!("the VM matrix's thread panicked")),
    }
}

/// A VM leg that ran: its prepare (builds, initramfs, kernel packages), then its guests,
/// two at a time.
struct LegRun {
    name: &'static str,
    label: String,
    times: vm::VmTimes,
    result: Result<()>,
    /// From its prepare's start to its last guest's end.
    wall: Duration,
}

impl LegRun {
    fn run(arch: Arch, kernels: &[&str], name: &'static str) -> LegRun {
        let start = Instant::now();
        let args = vm::VmArgs {
            kernels: kernels.iter().map(|k| k.to_string()).collect(),
            refresh: false,
            timeout: Duration::from_secs(900),
            only: None,
            arch,
        };
        let label = match arch {
            a if a.is_host() => "vm prepare".to_string(),
            a => format!("vm {a} prepare"),
        };
        let prepared = vm::prepare_matrix(args);
        let (times, result) = match prepared {
            Ok(p) => p.boot(),
            Err((times, e)) => (times, Err(e)),
        };
        LegRun {
            name,
            label,
            times,
            result,
            wall: start.elapsed(),
        }
    }

    /// Adds the leg's rows: the prepare, each kernel (the kernels overlap, each with its
    /// qemu's CPU time) and the leg's wall time.
    fn rows(self, phases: &mut Phases) -> Result<()> {
        let LegRun {
            name,
            label,
            times,
            result,
            wall,
        } = self;
        phases.add(&label, times.prepare, None, times.prepare_ok);
        for k in &times.kernels {
            phases.add(&format!("vm {}", k.label), k.took, Some(k.cpu), k.ok);
        }
        phases.add(&format!("vm {name} (wall)"), wall, None, result.is_ok());
        result
    }
}

/// `cargo fmt --check` and clippy with warnings denied, for the host crates. The eBPF crate
/// is linted as it builds today: observer/build.rs builds it with the workspace's rustc
/// `[lints]` (warnings shown, not denied). Clippy runs with the package build's profile and
/// target, so it shares that build's proc macros and dependencies' build scripts (~50 s
/// from a clean clone, ~25 s of it observer's build script, which runs again under clippy).
pub fn lint() -> Result<()> {
    let fmt = Command::new("cargo")
        .current_dir(root())
        .args(["fmt", "--all", "--check"])
        .status()
        .context("cargo fmt")?;
    if !fmt.success() {
        bail!("the code is not formatted as rustfmt.toml says: run `cargo fmt --all`");
    }
    let clippy = Command::new("cargo")
        .current_dir(root())
        .args([
            "clippy",
            "--release",
            "--locked",
            "--workspace",
            "--exclude",
            "observer-ebpf",
            "--all-targets",
        ])
        .args(["--target", vm::MUSL, "--", "-D", "warnings"])
        .status()
        .context("cargo clippy")?;
    if !clippy.success() {
        bail!(
            "clippy found problems (the lints are [workspace.lints] in Cargo.toml): fix them, \
             or allow one where it is wrong with #[expect(clippy::..., reason = \"...\")]"
        );
    }
    Ok(())
}

/// The host tests (unit and integration) below the hygiene's runner, then its teardown.
fn host_tests(args: &[String], env: &[(&str, &std::ffi::OsStr)]) -> Result<()> {
    // Whatever the tests do, and however they end, what they started is stopped and
    // nothing else is touched: first proven here, then done for the tests.
    hygiene::selfcheck::check(&vm::static_observer())?;
    let before = hygiene::before();
    let mut cargo_test = crate::cargo_test();
    cargo_test
        .envs(env.iter().copied())
        // Every test binary runs: one failure does not hide the others'.
        .arg("--no-fail-fast")
        .args(args)
        .args(["--", "--test-threads=1"]);
    // Below a runner that is a subreaper: the tests' processes are known positively.
    let mut tests = hygiene::Run::start(&cargo_test)?;
    let tests_result = tests.wait();
    let clean = hygiene::teardown(&before, &mut tests, &vm::static_observer(), true);
    drop(tests);
    tests_result?;
    clean.into_result()
}
