//! A run's own processes, known positively. The command under test runs below a small
//! runner process (this binary's hidden `__runner` command) that is a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`): every orphan of the run — daemons that double-fork,
//! containerd-shim, conmon, the launcher's shim — is re-parented to the runner instead of
//! PID 1, so "descends from the runner" is exactly "started by this run". The runner reaps
//! what it adopts (reporting those pids), reports the command's exit status, and stays
//! until xtask closes its control pipe, so that leftovers stay in its subtree while the
//! hygiene looks. The run also gets a temporary directory of its own (TMPDIR).

use std::{
    fs::File,
    io::{BufRead, BufReader, PipeWriter, Write},
    os::{
        fd::{AsRawFd, FromRawFd, RawFd},
        unix::{fs::PermissionsExt, process::CommandExt, process::ExitStatusExt},
    },
    path::PathBuf,
    process::{Child, Command, ExitCode, ExitStatus},
    sync::mpsc::{self, Receiver},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};

use crate::util::show;

/// The hidden subcommand that is the runner.
pub const RUNNER_CMD: &str = "__runner";
/// In the runner: where it writes its reports, and where xtask's control pipe arrives.
const REPORT_FD: RawFd = 3;
const CONTROL_FD: RawFd = 4;

/// A process the runner adopted and reaped, and when (seconds since the epoch).
#[derive(Clone, Copy, Debug)]
pub struct Reaped {
    pub pid: u32,
    pub at: u64,
}

enum Report {
    Exit(i32),
    Reaped(Reaped),
    Failed(String),
}

impl Report {
    fn parse(line: &str) -> Option<Report> {
        let (kind, rest) = line.split_once(' ')?;
        match kind {
            "exit" => rest.parse().ok().map(Report::Exit),
            "reaped" => {
                let (pid, at) = rest.split_once(' ')?;
                let r = Reaped {
                    pid: pid.parse().ok()?,
                    at: at.parse().ok()?,
                };
                Some(Report::Reaped(r))
            }
            "failed" => Some(Report::Failed(rest.to_string())),
            _ => None,
        }
    }
}

/// A command running under a runner; dropping it lets the runner go.
pub struct Run {
    runner: Child,
    control: Option<PipeWriter>,
    reports: Receiver<Report>,
    reaped: Vec<Reaped>,
    shown: String,
    /// The run's own temporary directory (its TMPDIR).
    pub tmp: PathBuf,
}

impl Run {
    /// Starts `cmd` (its program, arguments, environment and directory) under a runner.
    pub fn start(cmd: &Command) -> Result<Run> {
        let shown = show(cmd);
        eprintln!("+ {shown}");
        let tmp = own_tmp()?;
        let (report_r, report_w) = std::io::pipe()?;
        let (control_r, control_w) = std::io::pipe()?;
        let mut r = Command::new(std::env::current_exe().context("locating xtask")?);
        r.arg(RUNNER_CMD).arg("--").arg(cmd.get_program());
        r.args(cmd.get_args()).env("TMPDIR", &tmp);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => r.env(k, v),
                None => r.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            r.current_dir(d);
        }
        let fds = [report_w.as_raw_fd(), control_r.as_raw_fd()];
        // SAFETY: place_fds only calls fcntl and dup2, which are async-signal-safe.
        unsafe { r.pre_exec(move || place_fds(fds)) };
        let runner = r.spawn().context("starting the test runner")?;
        drop((report_w, control_r));
        let (tx, reports) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(report_r).lines().map_while(|l| l.ok()) {
                if let Some(r) = Report::parse(&line) {
                    if tx.send(r).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Run {
            runner,
            control: Some(control_w),
            reports,
            reaped: Vec::new(),
            shown,
            tmp,
        })
    }

    /// The runner's pid: the run's processes are the ones below it.
    pub fn root(&self) -> u32 {
        self.runner.id()
    }

    /// Waits for the command to end; an error when it failed or could not start.
    pub fn wait(&mut self) -> Result<()> {
        loop {
            match self.reports.recv() {
                Ok(Report::Exit(raw)) => {
                    let status = ExitStatus::from_raw(raw);
                    if !status.success() {
                        bail!("{} failed: {status}", self.shown);
                    }
                    return Ok(());
                }
                Ok(Report::Reaped(r)) => self.reaped.push(r),
                Ok(Report::Failed(e)) => bail!("starting {}: {e}", self.shown),
                Err(_) => bail!("the test runner ended before {}", self.shown),
            }
        }
    }

    /// The processes the runner adopted and reaped so far.
    pub fn reaped(&mut self) -> &[Reaped] {
        while let Ok(r) = self.reports.try_recv() {
            if let Report::Reaped(r) = r {
                self.reaped.push(r);
            }
        }
        &self.reaped
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // Closing the control pipe ends the runner once it has reaped what is left.
        self.control.take();
        let _ = self.runner.wait();
        // Gone already when the hygiene ran; not when an error ended the run first.
        super::host::remove_tree(&self.tmp);
    }
}

/// A fresh temporary directory for one run, as open as /tmp (tests run tools as nobody).
fn own_tmp() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..1000 {
        let d = base.join(format!("xtask-run.{}.{n}", std::process::id()));
        match std::fs::create_dir(&d) {
            Ok(()) => {
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777))?;
                return Ok(d);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", d.display())),
        }
    }
    bail!("no free temporary directory name under {}", base.display())
}

/// In the runner's child before exec: the report and control pipes become fds 3 and 4.
fn place_fds(fds: [RawFd; 2]) -> std::io::Result<()> {
    // Copies above both targets first, so that one dup2 cannot overwrite the other's
    // source; the copies close at exec, the dup2 targets stay open.
    let mut high = [0; 2];
    for (h, fd) in high.iter_mut().zip(fds) {
        // SAFETY: fcntl on a descriptor this process owns.
        *h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        if *h < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (h, target) in high.into_iter().zip([REPORT_FD, CONTROL_FD]) {
        // SAFETY: as above.
        if unsafe { libc::dup2(h, target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The runner itself: become a subreaper, start `cmd`, reap and report until told to go.
pub fn runner_main(cmd: &[String]) -> ExitCode {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        eprintln!(
            "xtask runner: PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::FAILURE;
    }
    super::survive_interrupts();
    for fd in [REPORT_FD, CONTROL_FD] {
        // SAFETY: fcntl on the two descriptors Run::start placed; the command must not
        // inherit them.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: fd 3 is this process's report pipe (Run::start), owned by nothing else here.
    let mut report = unsafe { File::from_raw_fd(REPORT_FD) };
    let child = match cmd.split_first() {
        Some((prog, args)) => Command::new(prog).args(args).spawn().map(|c| c.id()),
        None => Err(std::io::Error::other("no command")),
    };
    let child = match child {
        Ok(pid) => Some(pid),
        Err(e) => {
            let _ = writeln!(report, "failed {e}");
            None
        }
    };
    while !control_closed() {
        reap(child, &mut report);
    }
    reap(child, &mut report);
    ExitCode::SUCCESS
}

/// Reaps every child that has ended: the command (its exit status goes to xtask) and
/// the adopted orphans (their pids go to xtask).
fn reap(child: Option<u32>, report: &mut File) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        let line = if Some(pid as u32) == child {
            format!("exit {status}\n")
        } else {
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("reaped {pid} {at}\n")
        };
        // xtask gone: nothing to tell, but keep reaping.
        let _ = report.write_all(line.as_bytes());
    }
}

/// Waits up to 100 ms for xtask to close the control pipe (or to end).
fn control_closed() -> bool {
    let mut p = libc::pollfd {
        fd: CONTROL_FD,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd.
    if unsafe { libc::poll(&mut p, 1, 100) } <= 0 {
        return false; // timeout, or a signal (Ctrl-C) that the runner survives
    }
    let mut b = [0u8; 16];
    // SAFETY: read into a buffer of the given length.
    let n = unsafe { libc::read(CONTROL_FD, b.as_mut_ptr().cast(), b.len()) };
    n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted)
}
