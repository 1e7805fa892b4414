//! Boots one kernel with the test initramfs under qemu and collects the guest's result lines.
//! The guest powers off when done; the runner kills qemu on a kernel panic, soft lockup or
//! timeout, and keeps the whole console log.

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc::{channel, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::initramfs::TAG;
use crate::arch::Arch;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Skip(String),
}

pub struct Boot {
    /// Whether the guest's init ran at all.
    pub booted: bool,
    pub results: Vec<(String, Outcome)>,
    /// Why the run ended early (panic, lockup, timeout, qemu failure), if it did.
    pub aborted: Option<String>,
    pub seconds: f64,
}

const FATAL: &[&str] = &["Kernel panic", "soft lockup", "BUG: ", "Oops: "];

/// How qemu runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// Software emulation; single-threaded (multi-threaded TCG hit spurious int3 oopses on
    /// 6.12 guests here).
    Tcg,
}

/// The qemu program, its first arguments (machine, CPU, acceleration) and the guest's
/// console for `arch`. Emulated arm64 guests get `virt` with the `max` CPU, whose pointer
/// authentication uses QEMU's own cheap algorithm (`pauth-impdef`), not the architected
/// QARMA that costs TCG dearly on every call and return of the kernel.
fn machine(arch: Arch, accel: Accel) -> (&'static str, Vec<&'static str>, &'static str) {
    let (accel_arg, cpu) = match accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => ("tcg,thread=single", "max"),
    };
    match arch {
        Arch::Amd64 => (
            "qemu-system-x86_64",
            vec!["-accel", accel_arg, "-cpu", cpu],
            "ttyS0",
        ),
        Arch::Arm64 => (
            "qemu-system-aarch64",
            vec![
                "-M",
                "virt",
                "-accel",
                accel_arg,
                "-cpu",
                if accel == Accel::Tcg {
                    "max,pauth-impdef=on"
                } else {
                    cpu
                },
            ],
            "ttyAMA0",
        ),
    }
}

/// Boots and runs the guest. With `boot_timeout`, gives up early (`Boot::booted` false) when
/// the guest's init has not printed its first line by then — how a hanging KVM shows.
#[allow(clippy::too_many_arguments)]
#[expect(
    clippy::too_many_lines,
    reason = "split once the arm64 work (qemu-system-aarch64) has landed"
)]
pub fn boot(
    arch: Arch,
    label: &str,
    vmlinuz: &Path,
    initrd: &Path,
    log: &Path,
    timeout: Duration,
    accel: Accel,
    boot_timeout: Option<Duration>,
    only: Option<&str>,
) -> Result<Boot> {
    let started = Instant::now();
    let (qemu, first, console) = machine(arch, accel);
    let mut child = Command::new(qemu)
        .args(first)
        .args(["-smp", "2", "-m", "1536", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(match only {
            // The guest's init runs only the tests whose name contains this.
            Some(o) => format!("console={console} panic=-1 quiet loglevel=3 observer.only={o}"),
            None => format!("console={console} panic=-1 quiet loglevel=3"),
        })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {qemu}"))?;
    let (tx, rx) = channel();
    let out = child.stdout.take().unwrap();
    let tx2 = tx.clone();
    thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let err = child.stderr.take().unwrap();
    thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send(format!("qemu: {l}"));
        }
    });
    let mut logf = File::create(log)?;
    let deadline = started + timeout;
    let mut results = Vec::new();
    let mut aborted = None;
    let mut done = false;
    let mut booted = false;
    loop {
        let limit = match boot_timeout {
            Some(b) if !booted => deadline.min(started + b),
            _ => deadline,
        };
        match rx.recv_timeout(limit.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_string();
                writeln!(logf, "{line}")?;
                if let Some(rest) = line.strip_prefix(TAG) {
                    let rest = rest.trim();
                    if let Some(r) = rest.strip_prefix("result ") {
                        let mut f = r.splitn(3, ' ');
                        let name = f.next().unwrap_or("?").to_string();
                        let outcome = match f.next() {
                            Some("pass") => Outcome::Pass,
                            Some("skip") => Outcome::Skip(f.next().unwrap_or("").to_string()),
                            _ => Outcome::Fail,
                        };
                        eprintln!("  {label}: {name}: {outcome:?}");
                        results.push((name, outcome));
                    } else if rest == "done" {
                        done = true;
                    } else if let Some(k) = rest.strip_prefix("kernel ") {
                        booted = true;
                        eprintln!(
                            "  {label}: booted {k} after {:.1}s",
                            started.elapsed().as_secs_f64()
                        );
                    }
                } else if let Some(f) = FATAL.iter().find(|f| line.contains(*f)) {
                    aborted = Some(format!("guest kernel reported `{f}`: {line}"));
                    // Keep the trace that follows in the log.
                    let until = Instant::now() + Duration::from_secs(3);
                    while let Ok(l) =
                        rx.recv_timeout(until.saturating_duration_since(Instant::now()))
                    {
                        writeln!(logf, "{}", l.trim_end_matches('\r'))?;
                    }
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) if !booted && Instant::now() < deadline => {
                aborted = Some(format!(
                    "no boot within {}s with {accel:?}",
                    boot_timeout.unwrap_or_default().as_secs()
                ));
                break;
            }
            Err(RecvTimeoutError::Timeout) => {
                aborted = Some(format!("timed out after {}s", timeout.as_secs()));
                break;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if aborted.is_some() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    if aborted.is_none() && !done {
        aborted = Some(format!("guest stopped before finishing (qemu {status})"));
    }
    Ok(Boot {
        booted,
        results,
        aborted,
        seconds: started.elapsed().as_secs_f64(),
    })
}
