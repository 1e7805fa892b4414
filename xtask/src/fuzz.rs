//! `cargo xtask fuzz`: libFuzzer through cargo-fuzz, with the pinned nightly, on the parsers
//! that read what other processes control (fuzz/fuzz_targets/). Each target starts from its
//! committed seeds (fuzz/corpus/<target>/seed-*); inputs that once crashed a target live in
//! fuzz/regressions/<target>/ and are replayed first, so a fixed crash stays fixed.
//! A new crash is copied there and fails the run: commit it with the fix.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::util::{root, run};

pub const TARGETS: [&str; 6] = [
    "event_decode",
    "cgroup_paths",
    "proc_files",
    "state_files",
    "api_requests",
    "otlp_records",
];

/// cargo-fuzz from crates.io (built with the stable toolchain; it drives the nightly).
pub fn install() -> Result<()> {
    let ok = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz");
    run(Command::new("cargo").args(["+stable", "install", "cargo-fuzz", "--locked"]))
}

/// How the fuzz targets are compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opt {
    /// `-O`, the release profile: for fuzzing campaigns (`cargo xtask fuzz`).
    Release,
    /// `--dev`, fuzz/Cargo.toml's unoptimized profile without debug information: the test
    /// command's, which replays the regressions and fuzzes each target for seconds. Measured
    /// from a clean clone here: 2.9 CPU-minutes to build against 8.1 for `-O`, for ~10×
    /// fewer inputs a second (2,400 against 29,600 for event_decode); `opt-level = 1` costs
    /// as much as `-O` to build (7.7).
    Quick,
}

impl Opt {
    fn flag(self) -> &'static str {
        match self {
            Opt::Release => "-O",
            Opt::Quick => "--dev",
        }
    }

    /// cargo's directory of the profile.
    fn dir(self) -> &'static str {
        match self {
            Opt::Release => "release",
            Opt::Quick => "debug",
        }
    }
}

fn cargo_fuzz() -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root())
        .arg(format!("+{}", crate::setup::EBPF_TOOLCHAIN))
        .arg("fuzz");
    c
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The fuzz targets' build running beside other phases: stopped (its whole process group)
/// if the run ends before it is waited for.
pub struct Build(Option<std::process::Child>);

impl Drop for Build {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // SAFETY: a signal to the process group this build leads (process_group(0)).
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// Starts building every target at the lowest priority, beside the phases before fuzzing
/// (the host tests mostly wait on agents and runtimes): its output goes to
/// fuzz/target/build.log. [`fuzz`] then finds the build done.
pub fn build_in_background(opt: Opt) -> Result<Build> {
    use std::os::unix::process::CommandExt;
    install()?;
    let dir = root().join("fuzz").join("target");
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.join("build.log"))?;
    let mut c = Command::new("nice");
    c.current_dir(root())
        .args(["-n", "19", "cargo"])
        .arg(format!("+{}", crate::setup::EBPF_TOOLCHAIN))
        .args(["fuzz", "build", opt.flag()])
        .process_group(0)
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(Build(Some(
        c.spawn().context("starting the fuzz targets' build")?,
    )))
}

/// Waits for [`build_in_background`]'s build.
pub fn wait_for_build(mut build: Build) -> Result<()> {
    let Some(mut child) = build.0.take() else {
        return Ok(());
    };
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "building the fuzz targets failed ({status}): see {}",
            root().join("fuzz/target/build.log").display()
        );
    }
    Ok(())
}

/// Builds every target, replays the regressions, then fuzzes each for `secs` seconds.
pub fn fuzz(targets: &[String], secs: u64, opt: Opt) -> Result<()> {
    install()?;
    let targets: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!(
                    "unknown fuzz target `{t}` (targets: {})",
                    TARGETS.join(", ")
                );
            }
        }
        targets.iter().map(String::as_str).collect()
    };
    run(cargo_fuzz().args(["build", opt.flag()]))?;
    for t in &targets {
        replay_regressions(t, opt)?;
        fuzz_one(t, secs, opt)?;
    }
    Ok(())
}

/// Replays the inputs that once crashed `t`: a fixed crash stays fixed.
fn replay_regressions(t: &str, opt: Opt) -> Result<()> {
    let regressions = files(&root().join("fuzz/regressions").join(t));
    if !regressions.is_empty() {
        eprintln!(
            "fuzz: {t}: replaying {} regression input(s)",
            regressions.len()
        );
        run(cargo_fuzz()
            .args(["run", opt.flag(), t])
            .args(&regressions)
            .args(["--", "-runs=1"]))
        .with_context(|| format!("a fixed crash of {t} is back"))?;
    }
    Ok(())
}

/// A scratch corpus seeded from the committed seeds: what the run finds stays out of the
/// tree (commit a new seed on purpose with `cargo fuzz cmin`).
fn scratch_corpus(t: &str) -> Result<PathBuf> {
    let dir = root().join("fuzz");
    let work = dir.join("target").join("corpus").join(t);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    for seed in files(&dir.join("corpus").join(t)) {
        if let Some(name) = seed.file_name() {
            std::fs::copy(&seed, work.join(name))?;
        }
    }
    Ok(work)
}

/// libFuzzer's limit for one input (wall time). A loaded machine can starve one input past
/// it; see [`starved`].
const INPUT_TIMEOUT_S: u64 = 10;

/// CPU time (user + system) the waited-for children of this process have used.
fn children_cpu() -> std::time::Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |v: libc::timeval| {
        std::time::Duration::from_secs(v.tv_sec as u64)
            + std::time::Duration::from_micros(v.tv_usec as u64)
    };
    t(u.ru_utime) + t(u.ru_stime)
}

/// Whether a timeout input was starved rather than slow: replayed alone by the built
/// target it uses under a tenth of the limit in CPU time. CPU time, not wall time: the
/// replay runs as starved as the run did (at a load of 50 on 2 cores, inputs that replay
/// in 50 ms of CPU hit the 10 s limit; a real hang spins as long as it is let).
fn starved(t: &str, input: &Path, opt: Opt) -> bool {
    let bin = root()
        .join("fuzz/target")
        .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
        .join(opt.dir())
        .join(t);
    let before = children_cpu();
    let ok = Command::new(&bin)
        .arg(input)
        .args(["-runs=1", &format!("-timeout={INPUT_TIMEOUT_S}")])
        .output()
        .is_ok_and(|o| o.status.success());
    ok && children_cpu() - before < std::time::Duration::from_millis(INPUT_TIMEOUT_S * 100)
}

/// Fuzzes `t` for `secs` seconds. A timeout that replays quickly (starvation, not a hang) is
/// reported and the run goes on for the rest of its time; any other finding fails the run
/// and is copied to fuzz/regressions/<t>/.
fn fuzz_one(t: &str, secs: u64, opt: Opt) -> Result<()> {
    let dir = root().join("fuzz");
    let work = scratch_corpus(t)?;
    let artifacts = dir.join("artifacts").join(t);
    std::fs::create_dir_all(&artifacts)?;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let left = end
            .saturating_duration_since(std::time::Instant::now())
            .as_secs();
        if left == 0 {
            return Ok(());
        }
        let before = files(&artifacts);
        eprintln!("fuzz: {t} for {left} s");
        let r = run(cargo_fuzz().args(["run", opt.flag(), t]).arg(&work).args([
            "--",
            &format!("-max_total_time={left}"),
            "-rss_limit_mb=2048",
            &format!("-timeout={INPUT_TIMEOUT_S}"),
            &format!("-artifact_prefix={}/", artifacts.display()),
            "-print_final_stats=1",
        ]));
        let Err(e) = r else { return Ok(()) };
        let found: Vec<PathBuf> = files(&artifacts)
            .into_iter()
            .filter(|a| !before.contains(a))
            .collect();
        let is_timeout = |a: &PathBuf| {
            a.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("timeout-"))
        };
        if !found.is_empty() && found.iter().all(|a| is_timeout(a) && starved(t, a, opt)) {
            for a in &found {
                eprintln!(
                    "fuzz: {t}: {} timed out under load but replays in under {} ms of CPU: starved, not a hang; going on",
                    a.display(),
                    INPUT_TIMEOUT_S * 100
                );
                let _ = std::fs::remove_file(a);
            }
            continue;
        }
        let keep = dir.join("regressions").join(t);
        std::fs::create_dir_all(&keep)?;
        for a in &found {
            if let Some(name) = a.file_name() {
                std::fs::copy(a, keep.join(name))?;
            }
        }
        bail!(
            "fuzz target {t} failed: {e:#}\nthe input(s) are now in {} — fix the bug and commit them as regression tests",
            keep.display()
        );
    }
}
