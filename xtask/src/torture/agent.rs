//! The agent under torture: the release build, started by the run on its own socket and an
//! ephemeral port, its log kept in a file; asked through the CLI (as a user would) and its
//! status counters read to know when it has applied everything up to a moment.

use std::{
    io::Write,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The shared harness's agent (observer-harness, as the integration tests and the
/// benchmarks start it), with what the torture asks of it.
pub struct Agent {
    inner: observer_harness::Agent,
    bin: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

/// Event loss as the agent counts it: events the kernel dropped (ring buffer full) or
/// skipped (a program run that would nest), read errors and undecodable records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub corrections: u64,
    pub reconciliations: u64,
    /// Cheap checks of the table against /proc.
    pub checks: u64,
    /// Events taken from the ring buffer.
    pub received: u64,
    pub dropped: u64,
    pub skipped: u64,
    pub errors: u64,
}

impl Counters {
    pub fn lost(&self) -> u64 {
        self.dropped + self.skipped + self.errors
    }
}

impl Agent {
    /// Starts `bin agent` in a process group of its own (a Ctrl-C reaches the run, which
    /// stops it) with `extra` flags; its stderr goes to `log`.
    pub fn start(bin: &Path, dir: &Path, extra: &[&str]) -> Result<Agent> {
        let socket = dir.join("agent.sock");
        let log = dir.join("agent.log");
        let _ = std::fs::remove_file(&socket);
        let mut cmd = Command::new(bin);
        cmd.env("RUST_LOG", "info,observer::table::reconcile=debug")
            .arg("agent")
            .process_group(0);
        let mut file = std::fs::File::create(&log)?;
        let inner = observer_harness::Agent::start(observer_harness::Start {
            cmd,
            socket: &socket,
            extra,
            state_dir: true,
            ready_within: Duration::from_secs(120),
            on_line: Box::new(move |l| {
                let _ = writeln!(file, "{l}");
            }),
        })
        .with_context(|| format!("the agent did not start (log: {})", log.display()))?;
        Ok(Agent {
            inner,
            bin: bin.to_path_buf(),
            socket,
            log,
        })
    }

    /// `observer <args> -o json` against this agent; an error if the CLI fell back to its
    /// own /proc scan (no agent answering).
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let out = Command::new(&self.bin)
            .args(args)
            .args(["-o", "json", "--socket"])
            .arg(&self.socket)
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || err.contains("no agent") {
            bail!("observer {args:?} failed ({}): {err}", out.status);
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("JSON of observer {args:?}"))
    }

    pub fn status(&self) -> Result<Value> {
        Ok(self.inner.status()?)
    }

    pub fn counters(&self) -> Result<Counters> {
        let st = self.status()?;
        let sum = |k: &str| -> u64 {
            st["events"]
                .as_array()
                .map(|a| a.iter().map(|e| e[k].as_u64().unwrap_or(0)).sum())
                .unwrap_or(0)
        };
        Ok(Counters {
            corrections: st["corrections"].as_u64().unwrap_or(0),
            reconciliations: st["reconciliations"].as_u64().unwrap_or(0),
            checks: st["checks"].as_u64().unwrap_or(0),
            received: sum("received"),
            dropped: sum("dropped"),
            skipped: sum("skipped"),
            errors: sum("read_errors") + st["decode_errors"].as_u64().unwrap_or(0),
        })
    }

    /// Waits until the agent has applied, of every event type, at least as many events as
    /// the kernel had emitted when this was called: everything that happened before now
    /// (the ring buffer is read in order) is in its table.
    pub fn caught_up(&self) -> Result<Duration> {
        let t = Instant::now();
        let per_type = |st: &Value, k: &str| -> Vec<u64> {
            st["events"]
                .as_array()
                .map(|a| a.iter().map(|e| e[k].as_u64().unwrap_or(0)).collect())
                .unwrap_or_default()
        };
        let emitted = per_type(&self.status()?, "emitted");
        loop {
            let st = self.status()?;
            let applied = per_type(&st, "applied");
            if applied.len() == emitted.len() && applied.iter().zip(&emitted).all(|(a, e)| a >= e) {
                return Ok(t.elapsed());
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("the agent had not applied the events emitted 30 s ago: emitted {emitted:?}, applied {applied:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the agent has reconciled every event lost so far — a full scan begun
    /// after it noticed the loss has ended (status `lost_reconciled`): a loss is its cue to
    /// rescan /proc, and a round that compared before that scan ended would count what the
    /// agent was about to correct. Returns how long it waited (None: nothing to wait for).
    pub fn reconciled(&self) -> Result<Option<Duration>> {
        let t = Instant::now();
        let c = self.counters()?;
        let lost = c.dropped + c.skipped;
        let reconciled = |st: &Value| st["lost_reconciled"].as_u64().unwrap_or(0);
        if reconciled(&self.status()?) >= lost {
            return Ok(None);
        }
        loop {
            thread::sleep(Duration::from_millis(10));
            let st = self.status()?;
            if reconciled(&st) >= lost {
                return Ok(Some(t.elapsed()));
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!(
                    "the agent had not reconciled 30 s after losing {lost} events in all (reconciled up to {})",
                    reconciled(&st)
                );
            }
        }
    }

    /// The agent's own pid (its RSS and CPU are reported).
    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }
}
