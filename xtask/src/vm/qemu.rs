//! Boots one kernel with the test initramfs and the run's disk under qemu and collects the
//! guest's result lines. The guest powers off when done; the runner kills qemu on a kernel
//! panic, soft lockup or timeout, and keeps the whole console log.

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{channel, Receiver, RecvTimeoutError},
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
    /// The CPU time qemu used (user + system): what the guest cost the host, which its
    /// wall time does not say when guests and builds share the cores.
    pub cpu: Duration,
    /// The tests whose second half runs in the guest's next boot (mod.rs `reboot`).
    pub reboots: Vec<String>,
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

/// Starts qemu for the guest, `disk` its virtio block device (`/dev/vda`: on PCI on both
/// machines, arm64's `virt` included); its console (stdout, and stderr prefixed `qemu: `)
/// arrives line by line on the receiver.
fn spawn(
    arch: Arch,
    accel: Accel,
    vmlinuz: &Path,
    (initrd, disk): (&Path, &Path),
    cmdline: &str,
) -> Result<(Child, Receiver<String>)> {
    let (qemu, first, console) = machine(arch, accel);
    // A comma in qemu's option values is written twice.
    let drive = format!(
        "file={},if=virtio,format=raw",
        disk.to_string_lossy().replace(',', ",,")
    );
    let mut child = Command::new(qemu)
        .args(first)
        .args(["-smp", "2", "-m", "1536", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-drive")
        .arg(drive)
        .arg("-append")
        .arg(format!(
            "console={console} panic=-1 quiet loglevel=3 {cmdline}"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {qemu}"))?;
    let (tx, rx) = channel();
    let out = child.stdout.take().context("qemu's stdout")?;
    let tx2 = tx.clone();
    thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let err = child.stderr.take().context("qemu's stderr")?;
    thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send(format!("qemu: {l}"));
        }
    });
    Ok((child, rx))
}

/// What the guest's console has said so far.
#[derive(Default)]
struct Console {
    booted: bool,
    done: bool,
    results: Vec<(String, Outcome)>,
    reboots: Vec<String>,
    /// When the test running now started (its `start` line): each result says how long
    /// its test took, so the matrix's slow tests can be found from its output.
    test_started: Option<Instant>,
}

impl Console {
    /// Takes one line of the console; returns why the run must stop when the guest's
    /// kernel reported a fatal error.
    fn line(&mut self, label: &str, started: Instant, line: &str) -> Option<String> {
        let Some(rest) = line.strip_prefix(TAG) else {
            return FATAL
                .iter()
                .find(|f| line.contains(*f))
                .map(|f| format!("guest kernel reported `{f}`: {line}"));
        };
        let rest = rest.trim();
        if let Some(r) = rest.strip_prefix("result ") {
            let mut f = r.splitn(3, ' ');
            let name = f.next().unwrap_or("?").to_string();
            let outcome = match f.next() {
                Some("pass") => Outcome::Pass,
                Some("skip") => Outcome::Skip(f.next().unwrap_or("").to_string()),
                _ => Outcome::Fail,
            };
            let took = self.test_started.take().map(|t| t.elapsed().as_secs_f64());
            eprintln!(
                "  {label}: {name}: {outcome:?} ({:.1}s)",
                took.unwrap_or(0.0)
            );
            self.results.push((name, outcome));
        } else if rest.starts_with("start ") {
            self.test_started = Some(Instant::now());
        } else if let Some(test) = rest.strip_prefix("reboot ") {
            self.reboots.push(test.to_string());
        } else if rest == "done" {
            self.done = true;
        } else if let Some(k) = rest.strip_prefix("kernel ") {
            self.booted = true;
            eprintln!(
                "  {label}: booted {k} after {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
        None
    }
}

/// A console line as the log keeps it: prefixed with the seconds since qemu started, so
/// that where a guest's time goes (boot, each test) can be read from its log.
fn stamped(started: Instant, line: &str) -> String {
    format!("[{:8.2}] {line}", started.elapsed().as_secs_f64())
}

/// Boots and runs the guest (`cmdline`: the runner's `observer.*` parameters for its init).
/// With `boot_timeout`, gives up early (`Boot::booted` false) when
/// the guest's init has not printed its first line by then — how a hanging KVM shows.
#[allow(clippy::too_many_arguments)]
pub fn boot(
    arch: Arch,
    label: &str,
    vmlinuz: &Path,
    initrd: &Path,
    disk: &Path,
    log: &Path,
    timeout: Duration,
    accel: Accel,
    boot_timeout: Option<Duration>,
    cmdline: &str,
) -> Result<Boot> {
    let started = Instant::now();
    let (mut child, rx) = spawn(arch, accel, vmlinuz, (initrd, disk), cmdline)?;
    let mut logf = File::create(log)?;
    let deadline = started + timeout;
    let mut con = Console::default();
    let mut aborted = loop {
        let limit = match boot_timeout {
            Some(b) if !con.booted => deadline.min(started + b),
            _ => deadline,
        };
        match rx.recv_timeout(limit.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let line = line.trim_end_matches('\r');
                writeln!(logf, "{}", stamped(started, line))?;
                if let Some(why) = con.line(label, started, line) {
                    // Keep the trace that follows in the log.
                    let until = Instant::now() + Duration::from_secs(3);
                    while let Ok(l) =
                        rx.recv_timeout(until.saturating_duration_since(Instant::now()))
                    {
                        writeln!(logf, "{}", stamped(started, l.trim_end_matches('\r')))?;
                    }
                    break Some(why);
                }
            }
            Err(RecvTimeoutError::Timeout) if !con.booted && Instant::now() < deadline => {
                break Some(format!(
                    "no boot within {}s with {accel:?}",
                    boot_timeout.unwrap_or_default().as_secs()
                ));
            }
            Err(RecvTimeoutError::Timeout) => {
                break Some(format!("timed out after {}s", timeout.as_secs()));
            }
            Err(RecvTimeoutError::Disconnected) => break None,
        }
    };
    if aborted.is_some() {
        let _ = child.kill();
    }
    let cpu = cpu_at_exit(child.id());
    let status = child.wait()?;
    if aborted.is_none() && !con.done {
        aborted = Some(format!("guest stopped before finishing (qemu {status})"));
    }
    Ok(Boot {
        booted: con.booted,
        results: con.results,
        aborted,
        seconds: started.elapsed().as_secs_f64(),
        cpu,
        reboots: con.reboots,
    })
}

/// The CPU time of the exited (not yet reaped) child `pid`: waited for without reaping
/// (`WNOWAIT`), so its /proc/<pid>/stat still holds its times; zero if that fails.
fn cpu_at_exit(pid: u32) -> Duration {
    // SAFETY: waitid on our own child, writing only into the zeroed siginfo it is given.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
    if r != 0 {
        return Duration::ZERO;
    }
    crate::util::process_cpu(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_carry_the_seconds_since_qemu_started() {
        let started = Instant::now() - Duration::from_millis(12_345);
        let l = stamped(started, "observer-vm: start tree::x");
        let (secs, rest) = l.split_once("] ").unwrap();
        let secs: f64 = secs.trim_start_matches('[').trim().parse().unwrap();
        assert!((12.3..13.5).contains(&secs), "{l}");
        assert_eq!(rest, "observer-vm: start tree::x");
    }
}
