//! `observer events`: the live event stream, straight from the ring buffer, with the exec
//! session of each fork, exec and exit's process from a table of its own
//! (event_sessions.rs).

use std::{
    collections::VecDeque,
    io::{self, BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use observer_common::EventKind;
use tokio::signal::unix::{signal, SignalKind};

use super::event_sessions::Sessions;
use crate::{
    events::{
        kind_from_name,
        reader::{EventReader, ReaderStats},
        Event,
    },
    probes::{self, btf::DEFAULT_BTF, KernelStats, ProbeConfig, Probes},
    table::{
        exe_hash::{ExeHash, HashConfig, Hasher, Reason},
        sessions::Session,
    },
    views::event_line::{text_line_with, EventJson},
};

#[derive(Args)]
pub(crate) struct EventsArgs {
    /// One JSON object per line instead of readable lines.
    #[arg(long)]
    json: bool,
    /// Only these event types (comma-separated or repeated): fork, exec, exit, free, setns,
    /// unshare, cgroup_attach, signal, oom.
    #[arg(long = "type", value_name = "TYPE", value_delimiter = ',', value_parser = parse_kind)]
    types: Vec<EventKind>,
    /// Only events about this host process id (tgid), or its children for fork.
    #[arg(long)]
    pid: Option<u32>,
    /// Print kernel and userspace event counters on exit.
    #[arg(long)]
    stats: bool,
    /// Ring buffer size (power of two, e.g. 4M).
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = probes::parse_size)]
    ringbuf_size: u32,
    /// Kernel BTF to read struct layouts from.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_BTF)]
    btf: PathBuf,
    /// Signals reported (as `observer agent --signals`).
    #[arg(long, value_name = "LIST", default_value = "default", value_parser = crate::events::signals::parse_mask)]
    signals: u64,
    /// How the lifecycle programs attach (as `observer agent --tracepoint-kind`).
    #[arg(long, value_name = "KIND", default_value = "auto")]
    tracepoint_kind: probes::TracepointKind,
    /// Hash each exec's executable (`exe_sha256`, as `observer agent --hash`); an exec's
    /// line, and those after it, wait up to 2 s for its hash.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = super::agent::parse_on_off, action = clap::ArgAction::Set)]
    hash: bool,
    /// Mark the fork, exec and exit events of exec sessions' processes (`entered`, `[exec
    /// by …]`): a /proc scan before streaming starts, and a process table kept meanwhile.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = super::agent::parse_on_off, action = clap::ArgAction::Set)]
    sessions: bool,
}

/// How long an exec's line waits for its executable's hash.
const HASH_WAIT: Duration = Duration::from_secs(2);

fn parse_kind(s: &str) -> anyhow::Result<EventKind> {
    kind_from_name(s).ok_or_else(|| {
        let names: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
        anyhow::anyhow!("unknown event type `{s}` (one of: {})", names.join(", "))
    })
}

pub(crate) fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(stream(args))
}

struct Filter {
    mask: u32,
    pid: Option<u32>,
}

impl Filter {
    fn accepts(&self, ev: &Event) -> bool {
        if self.mask & (1 << ev.kind() as u32) == 0 {
            return false;
        }
        match self.pid {
            None => true,
            Some(p) => {
                ev.header().tgid == p
                    || (ev.kind() == EventKind::Fork && ev.task().is_some_and(|t| t.ppid == p))
            }
        }
    }
}

/// An accepted event waiting for its line: an exec's hash, its process's session, and how
/// long it may wait for the hash.
struct Held {
    ev: Event,
    exe: Option<ExeHash>,
    session: Option<Arc<Session>>,
    until: Instant,
}

/// Where events go; the first write error stops the stream (a closed pipe is a normal way
/// to stop, e.g. `observer events | head`). Every event is applied to the sessions' table,
/// accepted or not. An exec whose executable is being hashed holds its line, and the lines
/// after it, until the hash is known or HASH_WAIT passed: the order stays the kernel's.
struct Sink<W: Write> {
    out: W,
    err: Option<io::Error>,
    json: bool,
    filter: Filter,
    hasher: Hasher,
    sessions: Sessions,
    held: VecDeque<Held>,
}

impl<W: Write> Sink<W> {
    fn emit(&mut self, ev: Event) {
        if self.err.is_some() {
            return;
        }
        let session = self.sessions.apply(&ev);
        if !self.filter.accepts(&ev) {
            return;
        }
        let exe = match &ev {
            Event::Exec(e) => Some(self.hasher.on_exec(e.header.tgid, e)),
            _ => None,
        };
        self.held.push_back(Held {
            ev,
            exe,
            session,
            until: Instant::now() + HASH_WAIT,
        });
        self.release(false);
    }

    /// Writes the held lines that may go (all of them when `all`).
    fn release(&mut self, all: bool) {
        while let Some(h) = self.held.front() {
            let pending = h
                .exe
                .as_ref()
                .is_some_and(|h| h.now() == Err(Reason::Pending));
            if pending && !all && Instant::now() < h.until {
                return;
            }
            let h = self.held.pop_front().expect("front");
            self.write(&h.ev, h.session.as_deref(), h.exe.map(|h| h.now()));
        }
    }

    fn write(
        &mut self,
        ev: &Event,
        session: Option<&Session>,
        hash: Option<Result<crate::table::exe_hash::Digest, Reason>>,
    ) {
        if self.err.is_some() {
            return;
        }
        let r = if self.json {
            let json = EventJson::new(ev).with_exe_hash(hash).with_session(session);
            serde_json::to_writer(&mut self.out, &json)
                .map_err(io::Error::from)
                .and_then(|_| self.out.write_all(b"\n"))
        } else {
            writeln!(self.out, "{}", text_line_with(ev, session, hash))
        };
        if let Err(e) = r {
            self.err = Some(e);
        }
    }

    /// Writes what may go and flushes; false once writing has failed.
    fn flush(&mut self) -> bool {
        self.sessions.tidy();
        self.release(false);
        if self.err.is_none() {
            if let Err(e) = self.out.flush() {
                self.err = Some(e);
            }
        }
        self.err.is_none()
    }
}

async fn stream(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let cfg = ProbeConfig {
        ringbuf_bytes: args.ringbuf_size,
        btf: args.btf.clone(),
        signal_mask: args.signals,
        // `observer events -v`
        kernel_log: log::max_level() >= log::LevelFilter::Info,
        tracepoint_kind: args.tracepoint_kind,
        calibrate: Vec::new(),
        bpf_stats: false,
    };
    let (mut probes, ring) = Probes::load(&cfg)?;
    // The sessions' table is seeded from /proc: the BTF parse kept for the task iterators
    // is not needed.
    probes.release_kernel_btf();
    probes.forward_kernel_log();
    let mut reader = EventReader::new(ring).context("registering the ring buffer with tokio")?;
    // After the ring buffer opened: what starts during the scan is applied from it.
    let sessions = Sessions::new(args.sessions);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let filter = Filter {
        mask: if args.types.is_empty() {
            u32::MAX
        } else {
            args.types.iter().fold(0, |m, k| m | 1 << *k as u32)
        },
        pid: args.pid,
    };
    eprintln!(
        "observer: streaming events from {} tracepoints, ring buffer {} KiB (Ctrl-C to stop)",
        probes.attached.len(),
        probes.ringbuf_bytes / 1024
    );

    let mut sink = Sink {
        out: BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
        err: None,
        json: args.json,
        filter,
        hasher: if args.hash {
            Hasher::start(HashConfig::default()).context("starting the hashing workers")?
        } else {
            Hasher::off()
        },
        sessions,
        held: VecDeque::new(),
    };
    let stop = async {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    };
    copy(&mut reader, &mut sink, stop).await?;
    // Detached first: the ring buffer then holds the last of what the counters count (a
    // node's exec between a last drain and the counts' read was emitted, never received).
    let kstats = probes.detach()?;
    deliver_the_rest(&mut reader, &mut sink);
    let broken_pipe = match sink.err {
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => true,
        Some(e) => return Err(e).context("writing events to stdout"),
        None => false,
    };
    drop(probes);
    if args.stats {
        print_stats(&kstats, &reader.stats, &sink.hasher);
    }
    report_losses(&kstats);
    if broken_pipe {
        // The reader went away (`observer events | head`): the programs are detached, now
        // end as a Unix filter does.
        crate::stdout::die_of_sigpipe();
    }
    Ok(ExitCode::SUCCESS)
}

/// Hands the ring buffer's events to `sink` until `stop` completes or writing fails (the
/// caller delivers what is still buffered once the programs are detached).
async fn copy<W: Write>(
    reader: &mut EventReader,
    sink: &mut Sink<W>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    let mut drain = tokio::time::interval(probes::DRAIN_EVERY);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            r = reader.readable() => {
                r.context("waiting on the ring buffer")?;
                reader.drain(&mut |ev| sink.emit(ev));
            }
            _ = drain.tick() => {
                reader.drain(&mut |ev| sink.emit(ev));
            }
            () = &mut stop => break,
        }
        if !sink.flush() {
            break;
        }
    }
    Ok(())
}

/// Whatever is still buffered was produced before the stop: delivered, held lines too.
fn deliver_the_rest<W: Write>(reader: &mut EventReader, sink: &mut Sink<W>) {
    reader.drain(&mut |ev| sink.emit(ev));
    sink.release(true);
    sink.flush();
}

/// `--stats`: the kernel's and this reader's counts by type, and the hashers' results.
fn print_stats(kstats: &KernelStats, received: &ReaderStats, hasher: &Hasher) {
    eprintln!(
        "{:<14} {:>10} {:>10} {:>10} {:>10} {:>11}",
        "type", "emitted", "dropped", "skipped", "received", "read_errors"
    );
    for k in EventKind::ALL {
        eprintln!(
            "{:<14} {:>10} {:>10} {:>10} {:>10} {:>11}",
            k.name(),
            kstats.emitted(k),
            kstats.dropped(k),
            kstats.skipped(k),
            received.received(k),
            kstats.read_errors(k)
        );
    }
    if received.decode_errors > 0 {
        eprintln!("undecodable records: {}", received.decode_errors);
    }
    if hasher.is_on() {
        let counts: Vec<String> = (hasher.counts().pairs().iter())
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        eprintln!("executable hashes: {}", counts.join(", "));
    }
}

/// Says how many events were lost in the kernel, and why.
fn report_losses(kstats: &KernelStats) {
    let full = kstats.total_full();
    if full > 0 {
        eprintln!(
            "observer: {full} events were lost because the ring buffer was full (raise --ringbuf-size)"
        );
    }
    let skipped = kstats.total_skipped();
    if skipped > 0 {
        eprintln!(
            "observer: {skipped} events were lost because the kernel skipped a program's run \
             (it was already running on that CPU)"
        );
    }
}
