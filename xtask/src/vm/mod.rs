//! `cargo xtask vm-test`: the tests that load eBPF, run inside qemu on Debian kernels from
//! 5.10 to the newest, with a kernel × test summary at the end.

mod guest;
mod initramfs;
pub(crate) mod kernels;
mod modules;
mod qemu;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use crate::{arch::Arch, setup, util::root};
use qemu::Outcome;

/// Modules of the integration-test binary (observer/tests/it) that run inside the VMs (the
/// real-runtime and Prometheus tests need Docker, containerd, podman and Prometheus, which
/// the guests do not have). The guest runs the tests named `<module>::...`.
pub const VM_MODULES: &[&str] = &[
    "events",
    "tree",
    "launcher",
    "pid_reuse",
    "oci",
    "seed",
    "truth",
    "hostile_cgroups",
    "credentials",
    "store",
    "exe_hash",
];
pub const DEFAULT_KERNELS: &[&str] = &["5.10", "6.1", "6.12", "newest"];
/// The Rust target of the host's static build.
pub(crate) const MUSL: &str = Arch::host().musl();

/// One kernel's run: label, package, seconds, per-test outcomes, why it was aborted.
struct KernelRun {
    label: String,
    package: String,
    seconds: f64,
    /// qemu's CPU time, both boots.
    cpu: Duration,
    results: Vec<(String, Outcome)>,
    aborted: Option<String>,
}

pub struct VmArgs {
    pub kernels: Vec<String>,
    pub refresh: bool,
    pub timeout: Duration,
    /// Only the tests whose `module::name` contains this.
    pub only: Option<String>,
    /// The guests' machine.
    pub arch: Arch,
}

/// How long the matrix took: preparing (builds, initramfs, kernel packages), then each
/// kernel's boot (two at a time, so these overlap).
#[derive(Default)]
pub struct VmTimes {
    pub prepare: Duration,
    pub prepare_ok: bool,
    pub kernels: Vec<KernelTime>,
}

pub struct KernelTime {
    pub label: String,
    pub took: Duration,
    /// qemu's CPU time for the kernel's guest.
    pub cpu: Duration,
    pub ok: bool,
}

pub fn vm_test(args: VmArgs) -> Result<()> {
    vm_matrix(args).1
}

/// Runs the matrix; its times also when it fails.
pub fn vm_matrix(args: VmArgs) -> (VmTimes, Result<()>) {
    match prepare_matrix(args) {
        Ok(p) => p.boot(),
        Err((times, e)) => (times, Err(e)),
    }
}

/// A matrix ready to boot: what [`prepare_matrix`] built and fetched.
pub struct Prepared {
    args: VmArgs,
    times: VmTimes,
    initrd: PathBuf,
    kernels: Vec<kernels::Kernel>,
}

/// The matrix's builds, initramfs and kernels; its times also when it fails.
pub fn prepare_matrix(args: VmArgs) -> std::result::Result<Prepared, (VmTimes, anyhow::Error)> {
    let mut times = VmTimes::default();
    let t = Instant::now();
    let prepared = prepare(&args);
    times.prepare = t.elapsed();
    times.prepare_ok = prepared.is_ok();
    match prepared {
        Ok((initrd, kernels)) => Ok(Prepared {
            args,
            times,
            initrd,
            kernels,
        }),
        Err(e) => Err((times, e)),
    }
}

impl Prepared {
    /// Boots every kernel (two at a time); the times of the whole matrix and its verdict.
    pub fn boot(self) -> (VmTimes, Result<()>) {
        let Prepared {
            args,
            mut times,
            initrd,
            kernels,
        } = self;
        let table = boot_all(&kernels, &initrd, &args);
        times.kernels = table
            .iter()
            .map(|k| KernelTime {
                label: k.label.clone(),
                took: Duration::from_secs_f64(k.seconds),
                cpu: k.cpu,
                ok: k.aborted.is_none()
                    && k.results.iter().all(|(_, o)| *o != Outcome::Fail)
                    && !k.results.is_empty(),
            })
            .collect();
        (times, summary(&table))
    }
}

/// The static builds, the initramfs and the kernels (fetched with apt, one after another).
fn prepare(args: &VmArgs) -> Result<(PathBuf, Vec<kernels::Kernel>)> {
    let qemu = match args.arch {
        Arch::Amd64 => "qemu-system-x86",
        Arch::Arm64 => "qemu-system-arm",
    };
    // e2fsprogs makes the guest's disk; xz and zstd decompress its kernel modules.
    setup::apt_install(&[
        qemu,
        "cpio",
        "busybox-static",
        "util-linux",
        "e2fsprogs",
        "xz-utils",
        "zstd",
    ])?;
    if !args.arch.is_host() {
        // readelf finds the libraries of another machine's tools (guest.rs).
        setup::apt_install(&["binutils"])?;
    }
    crate::arch::cross_setup(args.arch)?;
    let cache = root().join(".vm-cache");
    std::fs::create_dir_all(cache.join("logs"))?;

    let (observer, tests) = build_static(args.arch)?;
    // The host's tools for amd64 guests; another machine's from its Debian packages.
    let (work, sysroot) = if args.arch.is_host() {
        (cache.clone(), None)
    } else {
        (
            cache.join(args.arch.deb()),
            Some(guest::sysroot(&cache, args.arch)?),
        )
    };
    let kernels: Vec<kernels::Kernel> = args
        .kernels
        .iter()
        .map(|label| kernels::fetch(&cache, kernels::series(label)?, args.arch, args.refresh))
        .collect::<Result<_>>()?;
    let initrd = work.join("initramfs.gz");
    std::fs::create_dir_all(&work)?;
    let modules: Vec<&Path> = kernels.iter().map(|k| k.modules.as_path()).collect();
    initramfs::build(
        &work,
        &observer,
        &tests,
        VM_MODULES,
        sysroot.as_deref(),
        &modules,
        &initrd,
    )?;
    Ok((initrd, kernels))
}

/// Boots the kernels `workers` at a time: TCG runs a guest on one host thread, so on a
/// 2-core host two guests take the time of one. A kernel that could not boot at all is a
/// run with `aborted` set.
fn boot_all(kernels: &[kernels::Kernel], initrd: &Path, args: &VmArgs) -> Vec<KernelRun> {
    let cache = root().join(".vm-cache");
    // KVM when it works (it hangs on some hosts, this one included): the first boot finds
    // out. Another machine's guests are always emulated.
    let accel = Mutex::new(if args.arch.is_host() && Path::new("/dev/kvm").exists() {
        qemu::Accel::Kvm
    } else {
        qemu::Accel::Tcg
    });
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, kernels.len().max(1));
    // Each worker takes the next kernel not yet taken, the list's last first: the newer
    // kernels take longest under TCG (newest 3:28 of CPU, 5.10 2:35), and the longest first
    // end together. The runs come back in the kernels' order.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut runs: Vec<(usize, KernelRun)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (cache, accel, next) = (&cache, &accel, &next);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(i) = kernels.len().checked_sub(n + 1) else {
                            return mine;
                        };
                        mine.push((i, boot_or_abort(&kernels[i], initrd, cache, args, accel)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("vm-test worker panicked"))
            .collect()
    });
    runs.sort_by_key(|(i, _)| *i);
    runs.into_iter().map(|(_, run)| run).collect()
}

/// [`boot_kernel`], with a failure to run qemu at all as an aborted run.
fn boot_or_abort(
    k: &kernels::Kernel,
    initrd: &Path,
    cache: &Path,
    args: &VmArgs,
    accel: &Mutex<qemu::Accel>,
) -> KernelRun {
    boot_kernel(k, initrd, cache, args, accel).unwrap_or_else(|e| KernelRun {
        label: k.label.clone(),
        package: k.package.clone(),
        seconds: 0.0,
        cpu: Duration::ZERO,
        results: Vec::new(),
        aborted: Some(format!("{e:#}")),
    })
}

/// How long a KVM guest may take to print its init's first line before KVM counts as
/// hanging (as it does on this host: it never prints). A KVM boot of the stripped
/// initramfs prints within a few seconds even beside the host tests; both workers wait this
/// long once per leg (30 s before).
const KVM_BOOT_LIMIT: Duration = Duration::from_secs(15);

/// Boots one kernel with the tests; falls back to TCG for good when KVM does not boot.
fn boot_kernel(
    k: &kernels::Kernel,
    initrd: &Path,
    cache: &Path,
    args: &VmArgs,
    accel: &Mutex<qemu::Accel>,
) -> Result<KernelRun> {
    eprintln!("vm-test: {} ({})", k.label, k.package);
    let log = cache.join("logs").join(format!("{}.log", k.label));
    let disk = Disk::new(cache, &k.label)?;
    // The guest's init runs only the tests whose name contains `observer.only`.
    let cmdline = args
        .only
        .as_ref()
        .map(|o| format!("observer.only={o}"))
        .unwrap_or_default();
    let boot = |a: qemu::Accel| {
        qemu::boot(
            args.arch,
            &k.label,
            &k.vmlinuz,
            initrd,
            &disk.0,
            &log,
            args.timeout,
            a,
            (a == qemu::Accel::Kvm).then_some(KVM_BOOT_LIMIT),
            &cmdline,
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
    if run.aborted.is_none() && !run.reboots.is_empty() {
        let accel = *accel.lock().unwrap_or_else(|e| e.into_inner());
        reboot(k, initrd, &disk.0, cache, args, accel, &mut run)?;
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
        cpu: run.cpu,
        results: run.results,
        aborted: run.aborted,
    })
}

/// The guest's disk for one kernel's run, both boots of it: a sparse raw image with an
/// ext4 file system, made on the host (the guest's init mounts it on /disk). Removed when
/// dropped.
struct Disk(PathBuf);

/// Its size: the store's file of a test is a few MiB; an ext4 of this size has 1 KiB blocks
/// and a 4 MiB journal.
const DISK_BYTES: u64 = 128 << 20;

impl Disk {
    fn new(cache: &Path, label: &str) -> Result<Disk> {
        let disk = Disk(cache.join(format!("disk-{label}.img")));
        let _ = std::fs::remove_file(&disk.0);
        std::fs::File::create(&disk.0)?.set_len(DISK_BYTES)?;
        // Its inode tables and journal written now, not by the guest's kernel in the
        // background while the tests run.
        crate::util::run(
            Command::new("mkfs.ext4")
                .args(["-F", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
                .arg(&disk.0),
        )?;
        Ok(disk)
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The guest's next boot, for each test whose first boot asked for one (`observer-vm:
/// reboot <test>`): the same initramfs and the same disk, with what the first boot wrote on
/// it and no more — that boot powered off without unmounting or syncing it (initramfs.rs),
/// as at a power cut. The second half of each such test runs with `observer.boot=2`; its
/// result is named `<test> (after a reboot)`.
fn reboot(
    k: &kernels::Kernel,
    initrd: &Path,
    disk: &Path,
    cache: &Path,
    args: &VmArgs,
    accel: qemu::Accel,
    run: &mut qemu::Boot,
) -> Result<()> {
    for test in std::mem::take(&mut run.reboots) {
        let log = cache.join("logs").join(format!("{}-reboot.log", k.label));
        let second = qemu::boot(
            args.arch,
            &k.label,
            &k.vmlinuz,
            initrd,
            disk,
            &log,
            args.timeout,
            accel,
            None,
            &format!("observer.only={test} observer.boot=2"),
        )?;
        run.seconds += second.seconds;
        run.cpu += second.cpu;
        run.aborted = second.aborted;
        let again = format!("{test} (after a reboot)");
        let outcome = second.results.into_iter().find(|(t, _)| *t == test);
        run.results
            .push((again, outcome.map_or(Outcome::Fail, |(_, o)| o)));
        if run.aborted.is_some() {
            break;
        }
    }
    Ok(())
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
        cpu,
        aborted,
        ..
    } in table
    {
        println!(
            "{k:<7} {pkg}: {secs:.0}s, qemu's CPU {:.0}s{}",
            cpu.as_secs_f64(),
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
    static_observer_for(Arch::host())
}

/// [`static_observer`] of `arch`.
pub(crate) fn static_observer_for(arch: Arch) -> PathBuf {
    root()
        .join("target")
        .join(arch.musl())
        .join("release/observer")
}

/// The static (musl) observer and integration-test binary: what `cargo xtask test` built for
/// the host tests already (then nothing is compiled here), or built now. The test build
/// builds the observer binary too (the integration tests run it), with the features the
/// dev-dependencies add to shared crates: a `cargo build` of it first would compile observer
/// a second time for nothing (measured for arm64: 2 builds of observer, one overwriting the
/// other's binary).
fn build_static(arch: Arch) -> Result<(PathBuf, PathBuf)> {
    let tests = crate::build_tests_for(arch, &[])?;
    let observer = static_observer_for(arch);
    if !observer.is_file() {
        bail!("the test build left no {}", observer.display());
    }
    Ok((observer, tests))
}
