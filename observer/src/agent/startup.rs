//! Start-up: load and attach the programs, seed the table (from the task iterator or
//! /proc), apply what the ring buffer caught meanwhile, then say ready. The ring buffer is
//! open and the programs attached before the seed, so whatever starts during the scan is in
//! the buffer and applied right after it. The command lines and executables of the
//! processes found are read after ready, in the background (`Reconciler`).

use std::{
    collections::BTreeMap,
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::sync::oneshot;

use super::{
    health, housekeeping::Housekeeping, pump, readiness::Readiness, reconciler::Reconciler,
    trim_heap, Agent, AgentConfig, Seed,
};
use crate::{
    api::listeners::Servers,
    events::{reader::EventReader, redact::Redactor},
    export::Exporter,
    host::{cgroupfs::CgroupFs, clock::boot_now_ns, resource_files::ResourceFiles, scan},
    probes::{phase, Probes},
    table::{exe_hash::Hasher, Table},
};

/// What the seed found, for the agent's status.
struct Seeded {
    /// `iterator` or `proc`.
    source: &'static str,
    took: Duration,
    states: BTreeMap<String, u64>,
}

/// Runs start-up through ready; returns the agent with its timers started.
pub(super) async fn start<'a>(
    cfg: &'a AgentConfig,
    servers: &'a Servers,
    cgroupfs: CgroupFs,
    cgroup_files: &Mutex<ResourceFiles>,
    outputs: super::Outputs,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<Agent<'a>> {
    let super::Outputs { events, store } = outputs;
    crate::host::heap::tune();
    let mut readiness = Readiness::new(ready);
    let t = Instant::now();
    let (probes, mut reader) = load(cfg, cgroup_files).await?;
    phase("the programs loaded and attached", t);
    let host_pidns = scan::ns_inode(std::process::id(), "pid");
    let cgroup2 = cgroupfs.v2.clone();
    let mut table = Table::new(host_pidns, cgroupfs);
    table.history_limits = cfg.memory.history;
    let lost_before_seed = Housekeeping::kernel_lost(&probes).unwrap_or(0);
    let t = Instant::now();
    let (probes, seeded) = seed(cfg, probes, &mut table).await?;
    phase("the seed", t);
    let details = read_details(&table, cfg.redact.clone(), cgroup2);
    let t = Instant::now();
    let mut exporter =
        Exporter::start(&cfg.export, &cfg.state_dirs).context("starting the export sinks")?;
    if exporter.wants_history() || store.wants() {
        table.keep_ended_for_export();
    }
    let mut out = pump::Outlets {
        subscribers: &events,
        exporter: &mut exporter,
        store: &store,
    };
    let mut hasher =
        Hasher::start(cfg.hash).context("starting the executables' hashing workers")?;
    let buffered = pump::apply(
        &mut reader,
        &mut table,
        &mut out,
        &mut hasher,
        cfg.redact.as_ref(),
    );
    phase("the exporter, hashers and buffered events", t);
    log::info!(
        "seeded {} processes from {} in {:.0} ms, then applied {buffered} events buffered meanwhile",
        table.len(),
        seeded.source,
        seeded.took.as_secs_f64() * 1e3
    );
    readiness.declare_ready(cfg, servers, &table);
    let reconciler = Reconciler::new(
        cfg,
        details,
        seeded.source,
        seeded.took,
        seeded.states,
        lost_before_seed,
    )
    .await;
    let housekeeping = Housekeeping::new().context("creating the settle timer")?;
    readiness.start_watchdog();
    let pump = pump::Pump::new(
        reader,
        events,
        cfg.redact.as_ref(),
        (exporter, store),
        hasher,
    )
    .context("creating the drain timer")?;
    Ok(Agent {
        cfg,
        servers,
        table,
        probes,
        pump,
        reconciler,
        housekeeping,
        readiness,
        seed: seeded.source,
    })
}

/// Loads and attaches the programs (off the runtime thread: the listeners keep answering,
/// /readyz 503, meanwhile) and opens the ring buffer.
async fn load(
    cfg: &AgentConfig,
    cgroup_files: &Mutex<ResourceFiles>,
) -> anyhow::Result<(Probes, EventReader)> {
    let probe_cfg = cfg.probes.clone();
    let (mut probes, ring) =
        tokio::task::spawn_blocking(move || Probes::load(&probe_cfg)).await??;
    probes.forward_kernel_log();
    // OOM counters can be kept between scrapes only if OOM kills arrive as events.
    cgroup_files
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .set_oom_events(probes.attached.iter().any(|a| a == "oom:mark_victim"));
    let reader = EventReader::new(ring).context("registering the ring buffer with tokio")?;
    Ok((probes, reader))
}

/// Seeds `table` (on a blocking thread: the probes go there and back).
async fn seed(
    cfg: &AgentConfig,
    mut probes: Probes,
    table: &mut Table,
) -> anyhow::Result<(Probes, Seeded)> {
    let t = Instant::now();
    let (seed, btf) = (cfg.seed, cfg.probes.btf.clone());
    let (probes, seeded) = tokio::task::spawn_blocking(move || {
        let r = seed_scan(&mut probes, seed, &btf);
        (probes, r)
    })
    .await?;
    let (scans, source) = seeded?;
    let took = t.elapsed();
    table.seed(&scans, boot_now_ns());
    let states = health::states(&scans);
    drop(scans);
    trim_heap();
    Ok((
        probes,
        Seeded {
            source,
            took,
            states,
        },
    ))
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
    Ok((scan::scan_all(false, false), "proc"))
}

/// Starts reading the command lines and executables (secrets masked) of the processes the
/// seed found, on a blocking thread; they are merged when ready.
fn read_details(
    table: &Table,
    redact: Option<Redactor>,
    cgroup2: Option<std::path::PathBuf>,
) -> oneshot::Receiver<Vec<scan::Details>> {
    let (tx, rx) = oneshot::channel();
    let missing = table.missing_details();
    tokio::task::spawn_blocking(move || {
        let found = scan::parallel(&missing, |&(pid, start, ns)| {
            let mut d = scan::Details::read(pid, start, true, ns, cgroup2.as_deref());
            if let Some(masked) = redact.as_ref().and_then(|r| r.argv(&d.argv)) {
                d.argv = masked;
            }
            Some(d)
        });
        let _ = tx.send(found);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_details_pass_reads_the_seeded_processes_command_lines_masked() {
        let me = std::process::id();
        let host = scan::ns_inode(me, "pid");
        let scanned = scan::scan_pid(me, host, false, None).expect("our own /proc entry");
        let mut table = Table::new(host, CgroupFs::default());
        table.seed(&[scanned], boot_now_ns());
        let redact = Redactor::new("[a-z]+").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _in = rt.enter();
        let found = rt
            .block_on(read_details(&table, Some(redact), None))
            .unwrap();
        let mine = found.iter().find(|d| d.pid == me).expect("this process");
        assert!(!mine.exe.is_empty());
        let argv = String::from_utf8_lossy(&mine.argv);
        assert!(argv.contains("***"), "{argv:?}");
        assert!(!argv.contains(|c: char| c.is_ascii_lowercase()), "{argv:?}");
    }
}
