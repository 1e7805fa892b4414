//! `Probes::load`'s steps: the member offsets the programs read (from BTF and tracefs), the
//! object loaded with them, one attach per tracepoint (a BTF tracepoint where asked and
//! accepted, else the raw or ordinary one; those the kernel lacks are reported and
//! skipped), then the maps and the kernel side's logger taken from it.

use std::path::Path;

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use observer_common::{EventKind, Offsets, Stats, ABSENT};

use super::{
    attach_btf, btf, calib, privileges, program, tracefs, Hook, ProbeConfig, ProbeError,
    TracepointKind, OBJECT, PROGRAMS,
};

/// The kernel's member offsets (BTF) and tracepoint record fields (tracefs) the programs
/// read.
pub(super) fn offsets(btf_path: &Path, tracefs: &Path) -> Result<Offsets, ProbeError> {
    let kbtf = btf::KernelBtf::open(btf_path)?;
    let mut offsets = kbtf.offsets()?;
    offsets.tp_sys_exit_ret =
        tracefs::field_offset(tracefs, "syscalls", "sys_exit_setns", "ret").unwrap_or(ABSENT);
    let oom = |field| tracefs::field_offset(tracefs, "oom", "mark_victim", field).unwrap_or(ABSENT);
    offsets.tp_oom_pid = oom("pid");
    offsets.tp_oom_total_vm = oom("total_vm");
    offsets.tp_oom_anon_rss = oom("anon_rss");
    offsets.tp_oom_file_rss = oom("file_rss");
    offsets.tp_oom_shmem_rss = oom("shmem_rss");
    offsets.tp_oom_score_adj = oom("oom_score_adj");
    Ok(offsets)
}

/// Loads the object with this kernel's offsets and the agent's settings in its globals.
pub(super) fn load_object(cfg: &ProbeConfig, offsets: &Offsets) -> Result<Ebpf, ProbeError> {
    // No kernel BTF for aya: the programs carry no CO-RE relocations (offsets come from
    // OFFS), so parsing vmlinux a second time would only cost time and memory.
    // Wake the reader when an eighth of the buffer is used (else it drains on its tick).
    let wakeup_bytes = (cfg.ringbuf_bytes / 8) as u64;
    EbpfLoader::new()
        .btf(None)
        .override_global("OFFS", offsets, true)
        .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
        .override_global("SIGNAL_MASK", &cfg.signal_mask, true)
        // aya-log's level gate: Info (3) when asked for, else every statement is off.
        .override_global(
            "AYA_LOG_LEVEL",
            &(if cfg.kernel_log { 3u8 } else { 0u8 }),
            true,
        )
        .map_max_entries("EVENTS", cfg.ringbuf_bytes)
        .load(OBJECT)
        .map_err(|e| if privileges::refused_by_seccomp(&e) { ProbeError::Seccomp(e.to_string()) } else { ProbeError::Load(e) })
}

/// What `attach_all` attached, and what it could not.
#[derive(Default)]
pub(super) struct Attached {
    /// As `category:name`.
    pub(super) attached: Vec<String>,
    /// Those attached as BTF tracepoints.
    pub(super) btf_attached: Vec<String>,
    /// The program attached for each event kind.
    pub(super) programs: Vec<(&'static str, EventKind)>,
    /// Tracepoints this kernel lacks, with the reason.
    pub(super) missing: Vec<(String, String)>,
}

/// Attaches the calibration programs asked for, then observer's own: every tracepoint the
/// kernel has. Fails when none could be attached.
pub(super) fn attach_all(
    ebpf: &mut Ebpf,
    cfg: &ProbeConfig,
    tracefs: &Path,
    offsets: &Offsets,
    kernel_btf: &mut Option<aya::Btf>,
) -> Result<Attached, ProbeError> {
    let mut a = Attached::default();
    // Before observer's programs: they run first on each event.
    for name in calib::ALL
        .into_iter()
        .filter(|n| cfg.calibrate.iter().any(|c| c == n))
    {
        calib::attach(ebpf, name, tracefs, &cfg.btf, kernel_btf)?;
    }
    // The process's end before its start: a process whose fork event is recorded has its
    // exit and free recorded too. Attached fork first, a process that forked and ended
    // before the exit and free programs were attached stayed in the table until a full
    // scan (30 of them per start beside a shell loop; the seed, read after every attach,
    // cannot know it ever was).
    for prog @ (category, name, _, _) in PROGRAMS.iter().rev() {
        let full = format!("{category}:{name}");
        let t = std::time::Instant::now();
        match unavailable(tracefs, offsets, category, name) {
            Some(why) => a.missing.push((full, why.to_string())),
            None => attach_one(ebpf, cfg, kernel_btf, *prog, full, &mut a)?,
        }
        super::phase(&format!("{category}:{name} loaded and attached"), t);
    }
    // Listed in PROGRAMS' order, as before.
    let at = |tp: &String| {
        PROGRAMS
            .iter()
            .position(|(c, n, _, _)| *tp == format!("{c}:{n}"))
    };
    a.attached.sort_by_key(at);
    a.btf_attached.sort_by_key(at);
    a.missing.reverse();
    for (tp, why) in &a.missing {
        log::warn!("{tp} not attached: {why}; its events will be missing");
    }
    if a.attached.is_empty() {
        return Err(ProbeError::NothingAttached);
    }
    Ok(a)
}

/// Why tracepoint `category:name` cannot be attached on this kernel, if it cannot.
fn unavailable(
    tracefs: &Path,
    offsets: &Offsets,
    category: &str,
    name: &str,
) -> Option<&'static str> {
    if !tracefs::exists(tracefs, category, name) {
        return Some("tracepoint not present in this kernel");
    }
    if category == "syscalls" && offsets.tp_sys_exit_ret == ABSENT {
        return Some("syscall exit record has no `ret` field");
    }
    if category == "oom" && offsets.tp_oom_pid == ABSENT {
        return Some("mark_victim record has no `pid` field");
    }
    None
}

/// Attaches one of `PROGRAMS` (named `full` in the lists): its BTF twin where the hook has
/// one and `--tracepoint-kind` allows (`btf` insists), else the raw or ordinary tracepoint.
fn attach_one(
    ebpf: &mut Ebpf,
    cfg: &ProbeConfig,
    kernel_btf: &mut Option<aya::Btf>,
    (category, name, hook, event): (&'static str, &'static str, Hook, EventKind),
    full: String,
    a: &mut Attached,
) -> Result<(), ProbeError> {
    let mut hook = hook;
    if let Hook::Btf(btf_name) = hook {
        match cfg.tracepoint_kind {
            TracepointKind::Raw => hook = Hook::Raw,
            wanted => match attach_btf(ebpf, btf_name, name, &cfg.btf, kernel_btf) {
                Ok(()) => {
                    a.btf_attached.push(full.clone());
                    a.attached.push(full);
                    a.programs.push((btf_name, event));
                    return Ok(());
                }
                Err(e) if wanted == TracepointKind::Btf => return Err(e),
                Err(e) => {
                    log::info!("{full}: the BTF tracepoint was refused, using the raw one ({e})");
                    hook = Hook::Raw;
                }
            },
        }
    }
    attach_tracepoint(ebpf, category, name, hook)?;
    a.attached.push(full);
    a.programs.push((name, event));
    Ok(())
}

/// Loads and attaches program `name` on its raw or ordinary tracepoint.
fn attach_tracepoint(
    ebpf: &mut Ebpf,
    category: &str,
    name: &'static str,
    hook: Hook,
) -> Result<(), ProbeError> {
    let perr = |source| ProbeError::Program { name, source };
    match hook {
        Hook::Raw | Hook::Btf(_) => {
            let p: &mut RawTracePoint = program(ebpf, name)?;
            p.load().map_err(perr)?;
            p.attach(name).map_err(perr)?;
        }
        Hook::Tp => {
            let p: &mut TracePoint = program(ebpf, name)?;
            p.load().map_err(perr)?;
            p.attach(category, name).map_err(perr)?;
        }
    }
    Ok(())
}

/// The ring buffer and the counters' map.
pub(super) fn take_maps(
    ebpf: &mut Ebpf,
) -> Result<(RingBuf<MapData>, PerCpuArray<MapData, Stats>), ProbeError> {
    let events = ebpf
        .take_map("EVENTS")
        .ok_or(ProbeError::Map("EVENTS", "missing from the object".into()))?;
    let events = RingBuf::try_from(events).map_err(|e| ProbeError::Map("EVENTS", e.to_string()))?;
    let stats = ebpf
        .take_map("STATS")
        .ok_or(ProbeError::Map("STATS", "missing from the object".into()))?;
    let stats =
        PerCpuArray::try_from(stats).map_err(|e| ProbeError::Map("STATS", e.to_string()))?;
    Ok((events, stats))
}

/// The kernel side's logger (`kernel_log`); None, with a warning, when it cannot start.
pub(super) fn kernel_logger(
    cfg: &ProbeConfig,
    ebpf: &mut Ebpf,
) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
    if !cfg.kernel_log {
        return None;
    }
    match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            log::warn!("the kernel side's diagnostics are unavailable: {e}");
            None
        }
    }
}
