//! `cargo xtask vm-test`: the tests that load eBPF, run inside qemu on Debian kernels from
//! 5.10 to the newest, with a kernel × test summary at the end.

mod initramfs;
mod kernels;
mod qemu;

use std::{collections::BTreeMap, path::PathBuf, process::Command, time::Duration};

use anyhow::{bail, Context, Result};

use crate::{
    setup,
    util::{root, run},
};
use qemu::Outcome;

/// Integration test targets that run inside the VMs (the real-runtime tests need Docker,
/// containerd and podman, which the guests do not have).
pub const VM_TESTS: &[&str] = &["events", "tree"];
pub const DEFAULT_KERNELS: &[&str] = &["5.10", "6.1", "6.12", "newest"];
const MUSL: &str = "x86_64-unknown-linux-musl";

pub struct VmArgs {
    pub kernels: Vec<String>,
    pub refresh: bool,
    pub timeout: Duration,
}

pub fn vm_test(args: VmArgs) -> Result<()> {
    setup::apt_install(&["qemu-system-x86", "cpio", "busybox-static", "util-linux"])?;
    setup::rust_target(MUSL)?;
    let cache = root().join(".vm-cache");
    std::fs::create_dir_all(cache.join("logs"))?;

    let (observer, tests) = build_static()?;
    let initrd = cache.join("initramfs.gz");
    initramfs::build(&cache, &observer, &tests, &initrd)?;

    let accel = "tcg,thread=single";
    let mut table: Vec<(String, String, f64, Vec<(String, Outcome)>, Option<String>)> = Vec::new();
    for label in &args.kernels {
        let series = kernels::series(label)?;
        let k = kernels::fetch(&cache, series, args.refresh)?;
        eprintln!("vm-test: {} ({})", k.label, k.package);
        let log = cache.join("logs").join(format!("{}.log", k.label));
        let boot = qemu::boot(&k.vmlinuz, &initrd, &log, args.timeout, accel)?;
        if let Some(why) = &boot.aborted {
            eprintln!("vm-test: {} aborted: {why} (log: {})", k.label, log.display());
        }
        table.push((k.label.clone(), k.package.clone(), boot.seconds, boot.results, boot.aborted));
    }
    summary(&table)
}

fn summary(table: &[(String, String, f64, Vec<(String, Outcome)>, Option<String>)]) -> Result<()> {
    let mut names: Vec<&str> = Vec::new();
    for (_, _, _, res, _) in table {
        for (n, _) in res {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
    }
    let w = names.iter().map(|n| n.len()).max().unwrap_or(4).max(6);
    println!("\n{:<w$}  {}", "test", table.iter().map(|t| format!("{:<8}", t.0)).collect::<Vec<_>>().join(" "));
    let mut failures = 0;
    let mut skips: BTreeMap<String, String> = BTreeMap::new();
    for n in &names {
        let mut row = format!("{n:<w$} ");
        for (k, _, _, res, _) in table {
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
    for (k, pkg, secs, _, aborted) in table {
        println!("{k:<7} {pkg}: {secs:.0}s{}", aborted.as_ref().map(|a| format!(" — ABORTED: {a}")).unwrap_or_default());
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
    run(Command::new("cargo")
        .current_dir(root())
        .args(["build", "--release", "--locked", "-p", "observer", "--target", MUSL]))?;
    let out = Command::new("cargo")
        .current_dir(root())
        .args(["test", "--release", "--locked", "-p", "observer", "--target", MUSL, "--no-run"])
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
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
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
    Ok((root().join("target").join(MUSL).join("release/observer"), tests))
}
