//! `cargo xtask vm-test`: the tests that load eBPF, run inside qemu on Debian kernels from
//! 5.10 to the newest, with a kernel × test summary at the end.

mod initramfs;
pub(crate) mod kernels;
mod qemu;

use std::{collections::BTreeMap, path::PathBuf, process::Command, sync::Mutex, time::Duration};

use anyhow::{bail, Context, Result};

use crate::{setup, util::root};
use qemu::Outcome;

/// Integration test targets that run inside the VMs (the real-runtime and Prometheus tests
/// need Docker, containerd, podman and Prometheus, which the guests do not have).
pub const VM_TESTS: &[&str] = &[
    "events",
    "tree",
    "launcher",
    "pid_reuse",
    "oci",
    "seed",
    "truth",
    "hostile_cgroups",
];
pub const DEFAULT_KERNELS: &[&str] = &["5.10", "6.1", "6.12", "newest"];
pub(crate) const MUSL: &str = "x86_64-unknown-linux-musl";

/// One kernel's run: label, package, seconds, per-test outcomes, why it was aborted.
struct KernelRun {
    label: String,
    package: String,
    seconds: f64,
    results: Vec<(String, Outcome)>,
    aborted: Option<String>,
}

pub struct VmArgs {
    pub kernels: Vec<String>,
    pub refresh: bool,
    pub timeout: Duration,
    /// Only the tests whose `target::name` contains this.
    pub only: Option<String>,
}

pub fn vm_test(args: VmArgs) -> Result<()> {
    setup::apt_install(&["qemu-system-x86", "cpio", "busybox-static", "util-linux"])?;
    setup::rust_target(MUSL)?;
    let cache = root().join(".vm-cache");
    std::fs::create_dir_all(cache.join("logs"))?;

    let (observer, tests) = build_static()?;
    let initrd = cache.join("initramfs.gz");
    initramfs::build(&cache, &observer, &tests, &initrd)?;

    // Every kernel fetched first (apt, one after another), then booted `workers` at a time:
    // TCG runs a guest on one host thread, so on a 2-core host two guests take the time
    // of one.
    let kernels: Vec<kernels::Kernel> = args
        .kernels
        .iter()
        .map(|label| kernels::fetch(&cache, kernels::series(label)?, args.refresh))
        .collect::<Result<_>>()?;
    // KVM when it works (it hangs on some hosts, this one included): the first boot finds out.
    let accel = Mutex::new(if std::path::Path::new("/dev/kvm").exists() {
        qemu::Accel::Kvm
    } else {
        qemu::Accel::Tcg
    });
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, kernels.len().max(1));
    // Worker w boots kernels w, w + workers, ...; the runs come back in the kernels' order.
    let mut runs: Vec<(usize, Result<KernelRun>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (kernels, initrd, cache, args, accel) =
                    (&kernels, &initrd, &cache, &args, &accel);
                s.spawn(move || {
                    let mine = kernels.iter().enumerate().skip(w).step_by(workers);
                    mine.map(|(i, k)| (i, boot_kernel(k, initrd, cache, args, accel)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("vm-test worker panicked"))
            .collect()
    });
    runs.sort_by_key(|(i, _)| *i);
    let table = runs
        .into_iter()
        .map(|(_, run)| run)
        .collect::<Result<Vec<_>>>()?;
    summary(&table)
}

/// Boots one kernel with the tests; falls back to TCG for good when KVM does not boot.
fn boot_kernel(
    k: &kernels::Kernel,
    initrd: &std::path::Path,
    cache: &std::path::Path,
    args: &VmArgs,
    accel: &Mutex<qemu::Accel>,
) -> Result<KernelRun> {
    eprintln!("vm-test: {} ({})", k.label, k.package);
    let log = cache.join("logs").join(format!("{}.log", k.label));
    let boot = |a: qemu::Accel| {
        qemu::boot(
            &k.label,
            &k.vmlinuz,
            initrd,
            &log,
            args.timeout,
            a,
            (a == qemu::Accel::Kvm).then_some(Duration::from_secs(30)),
            args.only.as_deref(),
        )
    };
    let tried = *accel.lock().unwrap_or_else(|e| e.into_inner());
    let mut run = boot(tried)?;
    if tried == qemu::Accel::Kvm && !run.booted {
        eprintln!(
            "vm-test: KVM did not boot the guest ({}); using TCG",
            run.aborted.as_deref().unwrap_or("?")
        );
        *accel.lock().unwrap_or_else(|e| e.into_inner()) = qemu::Accel::Tcg;
        run = boot(qemu::Accel::Tcg)?;
    }
    if let Some(why) = &run.aborted {
        eprintln!(
            "vm-test: {} aborted: {why} (log: {})",
            k.label,
            log.display()
        );
    }
    Ok(KernelRun {
        label: k.label.clone(),
        package: k.package.clone(),
        seconds: run.seconds,
        results: run.results,
        aborted: run.aborted,
    })
}

fn summary(table: &[KernelRun]) -> Result<()> {
    let mut names: Vec<&str> = Vec::new();
    for run in table {
        for (n, _) in &run.results {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
    }
    let w = names.iter().map(|n| n.len()).max().unwrap_or(4).max(6);
    println!(
        "\n{:<w$}  {}",
        "test",
        table
            .iter()
            .map(|t| format!("{:<8}", t.label))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut failures = 0;
    let mut skips: BTreeMap<String, String> = BTreeMap::new();
    for n in &names {
        let mut row = format!("{n:<w$} ");
        for KernelRun {
            label: k,
            results: res,
            ..
        } in table
        {
            let cell = match res.iter().find(|(t, _)| t == n).map(|(_, o)| o) {
                Some(Outcome::Pass) => "pass".to_string(),
                Some(Outcome::Fail) => {
                    failures += 1;
                    "FAIL".to_string()
                }
                Some(Outcome::Skip(why)) => {
                    skips.insert(format!("{k} {n}"), why.clone());
                    "skip".to_string()
                }
                None => {
                    failures += 1;
                    "MISSING".to_string()
                }
            };
            row.push_str(&format!(" {cell:<8}"));
        }
        println!("{row}");
    }
    println!();
    for KernelRun {
        label: k,
        package: pkg,
        seconds: secs,
        aborted,
        ..
    } in table
    {
        println!(
            "{k:<7} {pkg}: {secs:.0}s{}",
            aborted
                .as_ref()
                .map(|a| format!(" — ABORTED: {a}"))
                .unwrap_or_default()
        );
        if aborted.is_some() {
            failures += 1;
        }
    }
    for (what, why) in &skips {
        println!("skipped {what}: {why}");
    }
    if failures > 0 {
        bail!("{failures} failures in the kernel matrix (logs in .vm-cache/logs)");
    }
    Ok(())
}

/// Where the static (musl) observer is built: what the package ships, the kernel matrix
/// runs and the host tests use.
pub(crate) fn static_observer() -> PathBuf {
    root().join("target").join(MUSL).join("release/observer")
}

/// Static (musl) builds of observer and of the VM test binaries.
fn build_static() -> Result<(PathBuf, Vec<(String, PathBuf)>)> {
    crate::build_observer(&["--target", MUSL])?;
    let out = Command::new("cargo")
        .current_dir(root())
        .args([
            "test",
            "--release",
            "--locked",
            "-p",
            "observer",
            "--target",
            MUSL,
            "--no-run",
        ])
        .args(["--message-format", "json-render-diagnostics"])
        .args(VM_TESTS.iter().flat_map(|t| ["--test", t]))
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("building the test binaries")?;
    if !out.status.success() {
        bail!("building the static test binaries failed");
    }
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["target"]["kind"][0] != "test" {
            continue;
        }
        if let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) {
            tests.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    if tests.len() != VM_TESTS.len() {
        bail!("expected test binaries {VM_TESTS:?}, cargo built {tests:?}");
    }
    Ok((static_observer(), tests))
}
