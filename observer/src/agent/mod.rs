//! `observer agent`: starts the listeners, loads the probes, seeds the table from the
//! kernel's task iterator (or /proc: `--seed`), then applies kernel events as they come
//! while serving the API. This task is the table's only owner: API handlers send it
//! requests and get snapshots back.
//!
//! Start order: the listeners first (/healthz answers, /readyz says 503); the ring buffer is
//! open and the programs attached before the seed is read, so whatever starts during the
//! seed is in the buffer and applied right after it.
//!
//! `serve` is a loop over the agent's parts, each with its own state and timers:
//! `startup` (load, seed, ready), `pump` (the ring buffer into the table), `requests`
//! (answering the API from one state of the table), `reconciler` (the start-up details pass,
//! cheap checks and full scans of /proc), `housekeeping` (settling, reaping, adopting, losses,
//! collection), `readiness` (/readyz, the service manager and its watchdog, the state file)
//! and `shutdown` (signals and the clean stop).

mod alarm;
pub(crate) mod health;
mod housekeeping;
mod losses;
mod marker;
mod pace;
mod pump;
mod readiness;
mod reconciler;
mod requests;
mod shutdown;
mod startup;
mod systemd;

use std::{
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use tokio::sync::{broadcast, mpsc};

use self::{
    housekeeping::{Chore, Housekeeping},
    pump::Pump,
    readiness::Readiness,
    reconciler::Reconciler,
    requests::Snapshots,
    shutdown::Signals,
};
use crate::{
    api::{
        listeners::{self, ListenConfig, Servers},
        ApiState, Request,
    },
    containers::names::{Resolver, StateDirs},
    events::redact::Redactor,
    host::{cgroupfs::CgroupFs, resource_files::ResourceFiles, stat_files::StatFiles},
    probes::{ProbeConfig, Probes},
    store::{Store, Writer},
    table::Table,
};

#[derive(Clone)]
pub(crate) struct AgentConfig {
    pub(crate) probes: ProbeConfig,
    /// The listeners: addresses, the socket, connection limits, TLS and credentials.
    pub(crate) listen: ListenConfig,
    /// A check runs every `reconcile_every`; a full scan when it finds a difference, when
    /// events were lost, and every `full_reconcile_every`.
    pub(crate) reconcile_every: Duration,
    pub(crate) full_reconcile_every: Duration,
    pub(crate) seed: Seed,
    pub(crate) state_dirs: StateDirs,
    pub(crate) metrics_labels: Vec<String>,
    /// Masks secrets in command lines before they are stored or served.
    pub(crate) redact: Option<Redactor>,
    pub(crate) memory: crate::table::gc::Limits,
    /// The agent's own status lines as JSON objects, like the log (`--log-format json`).
    pub(crate) json_logs: bool,
    /// Events and history entries exported as JSON lines (`--export-*`).
    pub(crate) export: crate::export::ExportConfig,
    /// The durable history store (`--state-dir`, ...; None: off).
    pub(crate) store: Option<crate::store::StoreConfig>,
    /// The executables' SHA-256 (`--hash`, `--hash-cache`, `--hash-max-size`).
    pub(crate) hash: crate::table::exe_hash::HashConfig,
}

/// Where the event loop's output goes besides the table: API subscribers and the
/// history store's writer.
pub(crate) struct Outputs {
    events: broadcast::Sender<crate::table::Published>,
    store: crate::store::Writer,
}

/// One status line on stderr (start-up, stop): the line tests and operators wait for.
fn say(cfg: &AgentConfig, msg: &str) {
    if cfg.json_logs {
        let line = serde_json::json!({
            "ts": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "level": "info",
            "target": "observer::agent",
            "msg": format!("observer agent: {msg}"),
        });
        eprintln!("{line}");
    } else {
        eprintln!("observer agent: {msg}");
    }
}

/// Where the start-up table comes from (`--seed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Seed {
    /// The task iterator where the kernel has one (5.8+), else /proc.
    Auto,
    /// The task iterator, or the agent does not start.
    Iterator,
    /// /proc.
    Proc,
}

/// Returns memory freed after a scan to the system (glibc keeps it in its arenas, so one
/// scan of 10,000 processes would otherwise stay in the agent's RSS for good).
fn trim_heap() {
    crate::host::heap::trim();
}

/// What asks the agent to act: API requests, SIGINT and SIGTERM.
struct Inbox {
    requests: mpsc::Receiver<Request>,
    signals: Signals,
}

/// The agent: `api` is the runtime the listeners run on (TLS handshakes, credential
/// checks, request parsing and view building), so that what clients choose to cost never
/// runs on this thread, which applies the kernel's events.
pub(crate) async fn run(cfg: AgentConfig, api: tokio::runtime::Handle) -> anyhow::Result<()> {
    // The listeners come first, so /healthz answers and /readyz says 503 while the
    // programs load and the table is seeded.
    let t = std::time::Instant::now();
    let cgroupfs = CgroupFs::discover();
    let (ev_tx, _) = broadcast::channel(8192);
    let (req_tx, req_rx) = mpsc::channel::<Request>(64);
    // Before the listeners: a SIGTERM or SIGINT during start-up is then a clean stop once
    // the main loop runs (socket removed), not the default action's kill mid-way.
    let inbox = Inbox {
        requests: req_rx,
        signals: Signals::catch()?,
    };
    let ready = Arc::new(AtomicBool::new(false));
    let cgroup_files = Arc::new(Mutex::new(ResourceFiles::default()));
    let resolver = Arc::new(Mutex::new(Resolver::with_cap(
        cfg.state_dirs.clone(),
        cfg.memory.max_containers,
    )));
    let store = cfg.store.clone().map(Store::new);
    let state = ApiState {
        requests: req_tx,
        events: ev_tx.clone(),
        resolver: resolver.clone(),
        store: store.clone(),
        cgroupfs: Arc::new(cgroupfs.clone()),
        metrics_labels: Arc::new(cfg.metrics_labels.clone()),
        cgroup_files: cgroup_files.clone(),
        stat_files: Arc::new(Mutex::new(StatFiles::default())),
        ready: ready.clone(),
    };
    let servers = {
        let cfg = cfg.clone();
        api.spawn(async move { listeners::start(&cfg.listen, state).await })
            .await
            .context("starting the listeners")??
    };
    crate::probes::phase("the listeners", t);
    // Its thread opens the file (a check of a big one reads it whole) while start-up goes on.
    let writer = match store {
        Some(s) => Writer::start(s, resolver).context("starting the history store's writer")?,
        None => Writer::none(),
    };
    let outputs = Outputs {
        events: ev_tx,
        store: writer,
    };
    match serve(
        &cfg,
        &servers,
        cgroupfs,
        &cgroup_files,
        outputs,
        inbox,
        ready,
    )
    .await
    {
        Ok(()) => {
            servers.stop();
            say(&cfg, "stopped");
            Ok(())
        }
        Err(e) => {
            servers.stop();
            Err(e)
        }
    }
}

/// Start-up, then the event loop until SIGINT or SIGTERM, then shutdown. The table is the
/// loop's alone; each part wakes it for its own reason and works on it in turn.
async fn serve(
    cfg: &AgentConfig,
    servers: &Servers,
    cgroupfs: CgroupFs,
    cgroup_files: &Mutex<ResourceFiles>,
    outputs: Outputs,
    inbox: Inbox,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let Inbox {
        mut requests,
        mut signals,
    } = inbox;
    let mut agent = startup::start(cfg, servers, cgroupfs, cgroup_files, outputs, ready).await?;
    loop {
        tokio::select! {
            r = agent.pump.wait() => {
                r?;
                let next = agent.pump.on_wake(&mut agent.table);
                if agent.housekeeping.settle_due_within(next) {
                    agent.chore(Chore::Settle);
                }
            }
            Some(req) = requests.recv() => agent.answer(req, &mut requests),
            due = agent.reconciler.due() => {
                agent.reconciler.handle(due, &mut agent.table, &mut agent.pump, &mut agent.probes);
            }
            chore = agent.housekeeping.due() => agent.chore(chore),
            () = agent.readiness.watchdog_due() => agent.readiness.alive(),
            () = signals.stop_asked() => break,
        }
    }
    shutdown::shutdown(&agent.readiness, agent.probes);
    agent.pump.finish();
    Ok(())
}

/// The running agent: the table and the parts that keep it.
struct Agent<'a> {
    cfg: &'a AgentConfig,
    servers: &'a Servers,
    table: Table,
    probes: Probes,
    pump: Pump<'a>,
    reconciler: Reconciler<'a>,
    housekeeping: Housekeeping,
    readiness: Readiness,
    /// Where the start-up table came from: `iterator` or `proc`.
    seed: &'static str,
}

impl Agent<'_> {
    /// Answers `first` and every request queued behind it, from the table as of now.
    fn answer(&mut self, first: Request, queued: &mut mpsc::Receiver<Request>) {
        self.pump.catch_up(&mut self.table);
        let mut built = Snapshots::default();
        for req in requests::batch(first, queued) {
            match req {
                Request::Snapshot(scope, tx) => {
                    let _ = tx.send(built.get(&mut self.table, scope));
                }
                Request::MemberOf(pid, tx) => {
                    let _ = tx.send(self.table.get(pid).and_then(|p| p.container));
                }
                Request::Status(tx) => {
                    let _ = tx.send(self.status());
                }
            }
        }
    }

    fn status(&self) -> crate::views::status::Health {
        let mut h = health::health(health::Inputs {
            table: &self.table,
            kernel: self.probes.kernel_stats().unwrap_or_default(),
            reader: self.pump.stats(),
            uptime_s: self.readiness.uptime().as_secs_f64(),
            ringbuf_bytes: self.probes.ringbuf_bytes,
            attached: &self.probes.attached,
            btf_attached: &self.probes.btf_attached,
            missing: &self.probes.missing,
            reconciliations: self.reconciler.reconciliations,
            lost_reconciled: self.reconciler.losses.reconciled(),
            checks: self.reconciler.checks,
            startup_details_pending: self.reconciler.details_pending(),
            seed: self.seed,
            last_scan_s: self.reconciler.last_scan.as_secs_f64(),
            states: &self.reconciler.states,
            http: self.servers.counts(),
            restarts: self.readiness.restarts(),
            bpf_stats: self.probes.counts_runs(),
        });
        h.export = self.pump.export_counts();
        h.exe_hashes = self.pump.hash_counts();
        h.history_store = self.pump.store_status();
        h
    }

    fn chore(&mut self, chore: Chore) {
        match chore {
            Chore::Settle => {
                if let Some(lost) =
                    self.housekeeping
                        .settle(&mut self.table, &mut self.pump, &self.probes)
                {
                    self.reconciler.on_kernel_losses(lost);
                }
            }
            Chore::Collect => Housekeeping::collect(&mut self.table, &self.cfg.memory),
        }
    }
}
