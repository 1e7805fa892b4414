//! `cargo xtask vm-test`: the tests that load eBPF, run inside qemu on Debian kernels from
//! 5.10 to the newest, with a kernel × test summary at the end.

mod initramfs;
pub(crate) mod kernels;
mod qemu;

use std::{collections::BTreeMap, path::PathBuf, process::Command, time::Duration};

use anyhow::{bail, Context, Result};

use crate::{setup, util::root};
use qemu::Outcome;

/// Integration test targets that run inside the VMs (the real-runtime and Prometheus tests
/// need Docker, containerd, podman and Prometheus, which the guests do not have).
pub const VM_TESTS: &[&str] = &["events", "tree", "launcher", "pid_reuse", "oci", "seed"];
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

    // KVM when it works (it hangs on some hosts, this one included): the first boot finds out.
    let mut accel = if std::path::Path::new("/dev/kvm").exists() {
        qemu::Accel::Kvm
    } else {
        qemu::Accel::Tcg
    };
    let mut table: Vec<KernelRun> = Vec::new();
    for label in &args.kernels {
        let series = kernels::series(label)?;
        let k = kernels::fetch(&cache, series, args.refresh)?;
        eprintln!("vm-test: {} ({})", k.label, k.package);
        let log = cache.join("logs").join(format!("{}.log", k.label));
        let mut boot = qemu::boot(
            &k.vmlinuz,
            &initrd,
            &log,
            args.timeout,
            accel,
            (accel == qemu::Accel::Kvm).then_some(Duration::from_secs(30)),
            args.only.as_deref(),
        )?;
        if accel == qemu::Accel::Kvm && !boot.booted {
            eprintln!(
                "vm-test: KVM did not boot the guest ({}); using TCG",
                boot.aborted.as_deref().unwrap_or("?")
            );
            accel = qemu::Accel::Tcg;
            boot = qemu::boot(
                &k.vmlinuz,
                &initrd,
                &log,
                args.timeout,
                accel,
                None,
                args.only.as_deref(),
            )?;
        }
        if let Some(why) = &boot.aborted {
            eprintln!(
                "vm-test: {} aborted: {why} (log: {})",
                k.label,
                log.display()
            );
        }
        table.push(KernelRun {
            label: k.label,
            package: k.package,
            seconds: boot.seconds,
            results: boot.results,
            aborted: boot.aborted,
        });
    }
    summary(&table)
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
    Ok((
        root().join("target").join(MUSL).join("release/observer"),
        tests,
    ))
}
