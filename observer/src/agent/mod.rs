//! `observer agent`: starts the listeners, loads the probes, seeds the table from the
//! kernel's task iterator (or /proc: `--seed`), then applies kernel events as they come
//! while serving the API. This task is the table's only owner: API handlers send it
//! requests and get snapshots back.
//!
//! Start order: the listeners first (/healthz answers, /readyz says 503); the ring buffer is
//! open and the programs attached before the seed is read, so whatever starts during the
//! seed is in the buffer and applied right after it.

pub mod health;
pub mod http;
mod marker;
mod server;
mod systemd;
pub mod web;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{broadcast, mpsc, oneshot},
};

use crate::{
    api::{ApiState, Request},
    containers::names::{Resolver, StateDirs},
    events::{reader::EventReader, redact::Redactor, Event},
    host::{
        cgroupfs::CgroupFs, clock::boot_now_ns, resource_files::ResourceFiles, scan,
        stat_files::StatFiles,
    },
    probes::{ProbeConfig, Probes},
    table::Table,
};

#[derive(Clone)]
pub struct AgentConfig {
    pub probes: ProbeConfig,
    pub listen: SocketAddr,
    /// A listener with only /metrics, /healthz and /readyz.
    pub metrics_listen: Option<SocketAddr>,
    pub socket: PathBuf,
    /// A check runs every `reconcile_every`; a full scan when it finds a difference, when
    /// events were lost, and every `full_reconcile_every`.
    pub reconcile_every: Duration,
    pub full_reconcile_every: Duration,
    pub seed: Seed,
    pub state_dirs: StateDirs,
    pub metrics_labels: Vec<String>,
    pub http_limits: http::Limits,
    /// Masks secrets in command lines before they are stored or served.
    pub redact: Option<Redactor>,
    pub memory: crate::table::gc::Limits,
    /// The agent's own status lines as JSON objects, like the log (`--log-format json`).
    pub json_logs: bool,
    /// TLS and credentials for the TCP listeners (`--web-config`).
    pub web: web::Web,
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

/// How often ended containers and unreferenced paths are looked for (table/gc.rs).
const COLLECT_EVERY: Duration = Duration::from_secs(5);
/// Orphans, zombies and unconfirmed processes are settled this often while there are any.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(200);
/// How often an idle agent (no event in its last drain, no stream subscriber, nothing to
/// settle) drains the ring buffer.
const IDLE_DRAIN_EVERY: Duration = Duration::from_secs(1);
/// ...and checks the kernel's loss counters (events that flow make it busy again: losses
/// are then noticed within HOUSEKEEPING_EVERY).
const IDLE_HOUSEKEEPING_EVERY: Duration = Duration::from_secs(5);

/// Where the start-up table comes from (`--seed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Seed {
    /// The task iterator where the kernel has one (5.8+), else /proc.
    Auto,
    /// The task iterator, or the agent does not start.
    Iterator,
    /// /proc.
    Proc,
}

/// The start-up table: from the task iterator (unless `--seed proc`), else from /proc.
/// Returns the processes and which source gave them.
fn seed_scan(
    probes: &mut Probes,
    seed: Seed,
    btf: &std::path::Path,
) -> anyhow::Result<(Vec<scan::Scanned>, &'static str)> {
    let from_iterator = match seed {
        Seed::Proc => None,
        _ => Some(crate::probes::seed::scan_all(probes, btf)),
    };
    // Loading the iterators (both, with one parse) was the kept BTF's last use.
    probes.release_kernel_btf();
    match from_iterator {
        Some(Ok(s)) => return Ok((s, "iterator")),
        Some(Err(e)) if seed == Seed::Iterator => {
            return Err(anyhow::Error::new(e).context("--seed iterator: the task iterator"))
        }
        Some(Err(e)) => log::info!("seeding from /proc: the task iterator is unavailable ({e})"),
        None => {}
    }
    Ok((scan::scan_all(false), "proc"))
}

/// A reconciliation scan running on a blocking thread.
struct ScanJob {
    started_ns: u64,
    rx: oneshot::Receiver<(Vec<scan::Scanned>, Duration)>,
}

fn start_scan(redact: Option<Redactor>) -> ScanJob {
    let (tx, rx) = oneshot::channel();
    let started_ns = boot_now_ns();
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let mut s = scan::scan_all(true);
        if let Some(r) = &redact {
            for p in &mut s {
                if let Some(masked) = r.argv(&p.cmdline) {
                    p.cmdline = masked;
                }
            }
        }
        let _ = tx.send((s, t.elapsed()));
    });
    ScanJob { started_ns, rx }
}

/// The cheap reconciliation check: every process id, compared with the table on the event
/// loop. From the pid iterator when the seed came from the task iterator (a pass is started
/// here and run by reading it on a blocking thread: ~55 ms at 51,000 processes against ~80
/// for /proc's directory, whose read instantiates a dentry per process), else, or once the
/// iterator failed (`iterator` is cleared), from /proc's directory.
fn start_check(
    probes: &mut Probes,
    btf: &std::path::Path,
    iterator: &mut bool,
) -> oneshot::Receiver<(Vec<u32>, u64)> {
    let (tx, rx) = oneshot::channel();
    let started_ns = boot_now_ns();
    let pass = iterator.then(|| probes.pid_iter(btf)).and_then(|r| {
        r.map_err(|e| {
            log::info!("the pid iterator is unavailable ({e}): checks read /proc from now on");
            *iterator = false;
        })
        .ok()
    });
    tokio::task::spawn_blocking(move || {
        let pids = pass
            .and_then(|f| crate::probes::seed::read_pids(f).ok())
            .unwrap_or_else(scan::pids);
        let _ = tx.send((pids, started_ns));
    });
    rx
}

/// Why a check starts a full scan: each disagreement with both sides (the first 20).
fn log_disagreements(d: &[crate::table::Disagreement]) {
    log::info!(
        "/proc and the table disagree on {} processes: reading all of /proc",
        d.len()
    );
    for x in d.iter().take(20) {
        log::info!("check: {x}");
    }
    if d.len() > 20 {
        log::info!("check: and {} more", d.len() - 20);
    }
}

/// Applies every event waiting in the ring buffer (secrets masked first), and passes them
/// on to API subscribers.
fn pump(
    reader: &mut EventReader,
    table: &mut Table,
    subscribers: &broadcast::Sender<Event>,
    redact: Option<&Redactor>,
) -> usize {
    reader.drain(&mut |mut ev| {
        if let Some(r) = redact {
            r.event(&mut ev);
        }
        table.apply(&ev);
        if subscribers.receiver_count() > 0 {
            let _ = subscribers.send(ev);
        }
    })
}

/// Records who adopted the orphans that exits left, from their new parent in /proc (read
/// at once: with PIDs wrapping fast an orphan's PID may soon name another process).
fn adopt_orphans(table: &mut Table) {
    if table.has_pending() {
        table.resolve_pending(|pid| scan::live(pid).map(|l| (l.ppid, l.start_ticks)));
    }
}

/// Returns memory freed after a scan to the system (glibc keeps it in its arenas, so one
/// scan of 10,000 processes would otherwise stay in the agent's RSS for good).
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What asks the agent to act: API requests, SIGINT and SIGTERM.
struct Inbox {
    requests: mpsc::Receiver<Request>,
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
}

/// The agent: `api` is the runtime the listeners run on (TLS handshakes, credential
/// checks, request parsing and view building), so that what clients choose to cost never
/// runs on this thread, which applies the kernel's events.
pub async fn run(cfg: AgentConfig, api: tokio::runtime::Handle) -> anyhow::Result<()> {
    // The listeners come first, so /healthz answers and /readyz says 503 while the
    // programs load and the table is seeded.
    let cgroupfs = CgroupFs::discover();
    let (ev_tx, _) = broadcast::channel(8192);
    let (req_tx, req_rx) = mpsc::channel::<Request>(64);
    // Before the listeners: a SIGTERM or SIGINT during start-up is then a clean stop once
    // the main loop runs (socket removed), not the default action's kill mid-way.
    let inbox = Inbox {
        requests: req_rx,
        sigint: signal(SignalKind::interrupt())?,
        sigterm: signal(SignalKind::terminate())?,
    };
    let ready = Arc::new(AtomicBool::new(false));
    let cgroup_files = Arc::new(Mutex::new(ResourceFiles::default()));
    let state = ApiState {
        requests: req_tx,
        events: ev_tx.clone(),
        resolver: Arc::new(Mutex::new(Resolver::with_cap(
            cfg.state_dirs.clone(),
            cfg.memory.max_containers,
        ))),
        cgroupfs: Arc::new(cgroupfs.clone()),
        metrics_labels: Arc::new(cfg.metrics_labels.clone()),
        cgroup_files: cgroup_files.clone(),
        stat_files: Arc::new(Mutex::new(StatFiles::default())),
        ready: ready.clone(),
    };
    let servers = {
        let cfg = cfg.clone();
        api.spawn(async move { server::start(&cfg, state).await })
            .await
            .context("starting the listeners")??
    };
    match serve(&cfg, &servers, cgroupfs, &cgroup_files, ev_tx, inbox, ready).await {
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

async fn serve(
    cfg: &AgentConfig,
    servers: &server::Servers,
    cgroupfs: CgroupFs,
    cgroup_files: &Mutex<ResourceFiles>,
    ev_tx: broadcast::Sender<Event>,
    inbox: Inbox,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let Inbox {
        requests: mut req_rx,
        mut sigint,
        mut sigterm,
    } = inbox;
    let started = Instant::now();
    let notifier = systemd::Notifier::from_env();
    // Off the runtime thread: the listeners keep answering (/readyz 503) meanwhile.
    let probe_cfg = cfg.probes.clone();
    let (mut probes, ring) =
        tokio::task::spawn_blocking(move || Probes::load(&probe_cfg)).await??;
    probes.forward_kernel_log();
    // OOM counters can be kept between scrapes only if OOM kills arrive as events.
    cgroup_files
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .set_oom_events(probes.attached.iter().any(|a| a == "oom:mark_victim"));
    let mut reader = EventReader::new(ring).context("registering the ring buffer with tokio")?;
    let host_pidns = scan::ns_inode(std::process::id(), "pid");
    let cgroup2 = cgroupfs.v2.clone();
    let mut table = Table::new(host_pidns, cgroupfs);
    table.history_limits = cfg.memory.history;

    let t = Instant::now();
    let (seed, btf) = (cfg.seed, cfg.probes.btf.clone());
    let (mut probes, seeded) = tokio::task::spawn_blocking(move || {
        let r = seed_scan(&mut probes, seed, &btf);
        (probes, r)
    })
    .await?;
    let (scans, seed) = seeded?;
    let mut last_scan = t.elapsed();
    table.seed(&scans, boot_now_ns());
    let mut states = health::states(&scans);
    drop(scans);
    trim_heap();
    // Command lines and executables are read after the seed, in the background, and
    // merged when ready.
    let (argv_tx, mut argv_rx) = oneshot::channel();
    let missing = table.missing_details();
    let redact = cfg.redact.clone();
    tokio::task::spawn_blocking(move || {
        let found = scan::parallel(&missing, |&(pid, start, ns)| {
            let mut d = scan::Details::read(pid, start, true, ns, cgroup2.as_deref());
            if let Some(masked) = redact.as_ref().and_then(|r| r.argv(&d.argv)) {
                d.argv = masked;
            }
            Some(d)
        });
        let _ = argv_tx.send(found);
    });
    let mut argv_pending = true;
    let redact = cfg.redact.as_ref();
    let buffered = pump(&mut reader, &mut table, &ev_tx, redact);
    log::info!(
        "seeded {} processes from {seed} in {:.0} ms, then applied {buffered} events buffered meanwhile",
        table.len(),
        last_scan.as_secs_f64() * 1e3
    );
    ready.store(true, Ordering::Release);
    // The socket is ours from here: no other agent runs with this state file.
    let marker = marker::path_for(&cfg.socket);
    let restarts = marker::on_start(&marker);
    let scheme = cfg.web.scheme();
    let protected = cfg.web.describe();
    let status = format!(
        "{} processes, {} containers; API on {scheme}://{}{} and {}{}{}",
        table.len(),
        table.live_containers(),
        servers.tcp_addr,
        if cfg.web.authenticates_every_client() {
            ""
        } else {
            " (metrics and status; process views on the socket only)"
        },
        cfg.socket.display(),
        servers
            .metrics_addr
            .map(|a| format!("; metrics on {scheme}://{a}/metrics"))
            .unwrap_or_default(),
        if protected.is_empty() {
            String::new()
        } else {
            format!(" ({protected})")
        }
    );
    say(cfg, &status);
    notifier.ready(&status);

    let mut reconcile = tokio::time::interval(cfg.reconcile_every);
    reconcile.tick().await; // the seed was the first scan
                            // Timers that wake the agent only as often as there is work: on an idle node each
                            // wakeup costs more than the work (about 0.2 ms of a core here, most of it scheduling).
    let housekeeping = tokio::time::sleep(HOUSEKEEPING_EVERY);
    tokio::pin!(housekeeping);
    let mut collect = tokio::time::interval(COLLECT_EVERY);
    collect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let watchdog_every = notifier.watchdog_every();
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    let drain = tokio::time::sleep(crate::probes::DRAIN_EVERY);
    tokio::pin!(drain);
    let mut busy = true;
    let mut job: Option<ScanJob> = None;
    let mut last_dropped = probes
        .kernel_stats()
        .map(|k| k.total_dropped())
        .unwrap_or(0);
    let mut reconciliations = 0u64;
    let mut checks = 0u64;
    let mut check: Option<oneshot::Receiver<(Vec<u32>, u64)>> = None;
    // The checks' pid list comes from the pid iterator while it works.
    let mut pid_iter = seed == "iterator";
    let mut last_full = Instant::now();
    // Events were lost while a scan ran: that scan may predate what they described.
    let mut rescan = false;

    loop {
        tokio::select! {
            r = async {
                tokio::select! {
                    r = reader.readable() => r,
                    _ = &mut drain => Ok(()),
                }
            } => {
                r.context("waiting on the ring buffer")?;
                busy = pump(&mut reader, &mut table, &ev_tx, redact) > 0;
                adopt_orphans(&mut table);
                // While events flow or someone streams them, drain every DRAIN_EVERY; when
                // a drain found nothing, once a second (views and scrapes drain first, and
                // the kernel side wakes the agent when the buffer fills past an eighth).
                let next = if busy || ev_tx.receiver_count() > 0 || table.has_pending() {
                    crate::probes::DRAIN_EVERY
                } else {
                    IDLE_DRAIN_EVERY
                };
                drain.as_mut().reset(tokio::time::Instant::now() + next);
            }
            Some(req) = req_rx.recv() => {
                // Answer with everything that happened before the question: events wait in
                // the ring buffer up to DRAIN_EVERY (IDLE_DRAIN_EVERY when idle) between
                // wakeups. Orphans they made are adopted now, as a drain would (their new
                // parent is read from /proc before their PID can be reused).
                if pump(&mut reader, &mut table, &ev_tx, redact) > 0 {
                    busy = true;
                    drain.as_mut().reset(tokio::time::Instant::now() + crate::probes::DRAIN_EVERY);
                }
                adopt_orphans(&mut table);
                // Every request already queued is answered from this one state: concurrent
                // requests for the same view share one snapshot.
                let mut batch = vec![req];
                while let Ok(r) = req_rx.try_recv() {
                    batch.push(r);
                }
                let mut built: Vec<(crate::table::snapshot::Scope, Arc<crate::table::snapshot::Snapshot>)> = Vec::new();
                for req in batch {
                match req {
                Request::Snapshot(scope, tx) => {
                    let snap = match built.iter().find(|(s, _)| *s == scope) {
                        Some((_, snap)) => snap.clone(),
                        None => {
                            // Views must not count a reaped process whose free event is
                            // still due.
                            table.reap_gone(scan::exists);
                            let snap = Arc::new(table.snapshot(scope.clone()));
                            built.push((scope, snap.clone()));
                            snap
                        }
                    };
                    let _ = tx.send(snap);
                }
                Request::MemberOf(pid, tx) => { let _ = tx.send(table.get(pid).and_then(|p| p.container)); }
                Request::Status(tx) => {
                    let _ = tx.send(health::health(health::Inputs {
                        table: &table,
                        kernel: probes.kernel_stats().unwrap_or_default(),
                        reader: &reader.stats,
                        uptime_s: started.elapsed().as_secs_f64(),
                        ringbuf_bytes: probes.ringbuf_bytes,
                        attached: &probes.attached,
                        btf_attached: &probes.btf_attached,
                        missing: &probes.missing,
                        reconciliations,
                        checks,
                        startup_details_pending: argv_pending,
                        seed,
                        last_scan_s: last_scan.as_secs_f64(),
                        states: &states,
                        http: servers.counts(),
                        restarts,
                    }));
                }
                }
                }
            }
            lines = &mut argv_rx, if argv_pending => {
                argv_pending = false;
                if let Ok(lines) = lines {
                    table.fill_details(lines);
                    trim_heap();
                }
            }
            _ = reconcile.tick(), if job.is_none() && check.is_none() => {
                if last_full.elapsed() >= cfg.full_reconcile_every {
                    job = Some(start_scan(cfg.redact.clone()));
                } else {
                    check = Some(start_check(&mut probes, &cfg.probes.btf, &mut pid_iter));
                }
            }
            pids = async { check.as_mut().expect("guarded").await }, if check.is_some() => {
                check = None;
                // The table as of now: what happened while /proc was read applied first.
                pump(&mut reader, &mut table, &ev_tx, redact);
                let differ = match pids {
                    Ok((pids, started_ns)) => table.disagreements(
                        &pids,
                        started_ns,
                        |pid| scan::live(pid).map(|l| l.start_ticks),
                        scan::exists,
                    ),
                    Err(_) => vec![],
                };
                checks += 1;
                if !differ.is_empty() && job.is_none() {
                    log_disagreements(&differ);
                    job = Some(start_scan(cfg.redact.clone()));
                }
            }
            r = async { (&mut job.as_mut().expect("guarded").rx).await }, if job.is_some() => {
                let started_ns = job.take().expect("guarded").started_ns;
                if let Ok((scans, took)) = r {
                    // Apply what happened during the scan first: the scan must not undo it.
                    pump(&mut reader, &mut table, &ev_tx, redact);
                    let fixes = table.reconcile(&scans, started_ns, boot_now_ns(), |pid| {
                        scan::live(pid).map(|l| l.start_ticks)
                    });
                    states = health::states(&scans);
                    drop(scans);
                    trim_heap();
                    last_scan = took;
                    reconciliations += 1;
                    last_full = Instant::now();
                    if fixes > 0 {
                        log::info!("reconciliation fixed {fixes} entries ({} processes)", table.len());
                    }
                }
                if std::mem::take(&mut rescan) {
                    job = Some(start_scan(cfg.redact.clone()));
                }
            }
            _ = &mut housekeeping => {
                let work = busy || table.has_unconfirmed() || table.has_exited() || table.has_pending();
                housekeeping.as_mut().reset(
                    tokio::time::Instant::now()
                        + if work { HOUSEKEEPING_EVERY } else { IDLE_HOUSEKEEPING_EVERY },
                );
                if table.has_unconfirmed() {
                    pump(&mut reader, &mut table, &ev_tx, redact);
                    let missed = table.settle(boot_now_ns());
                    if missed > 0 {
                        log::info!("reconciliation added {missed} processes whose fork events were missed");
                    }
                }
                if table.has_exited() {
                    table.reap_gone(scan::exists);
                }
                adopt_orphans(&mut table);
                let dropped = probes.kernel_stats().map(|k| k.total_dropped()).unwrap_or(last_dropped);
                if dropped > last_dropped {
                    log::warn!(
                        "{} events lost in the kernel (ring buffer full, or a program's run skipped): reconciling with /proc now",
                        dropped - last_dropped
                    );
                    last_dropped = dropped;
                    if job.is_none() {
                        job = Some(start_scan(cfg.redact.clone()));
                    } else {
                        rescan = true;
                    }
                }
            }
            _ = collect.tick() => {
                if table.collect(boot_now_ns(), &cfg.memory) {
                    trim_heap();
                }
            }
            _ = watchdog.tick(), if watchdog_every.is_some() => notifier.alive(),
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    ready.store(false, Ordering::Release);
    notifier.stopping();
    drop(probes);
    marker::on_clean_stop(&marker, restarts);
    Ok(())
}
