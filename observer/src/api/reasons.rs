//! `observer why`: a container's PID 1, a pod's containers or one process — alive (what it
//! ignores) or ended (from the in-memory histories and the history store). A pod is
//! resolved as `tree` resolves it (`assemble::select`), among the running containers and
//! those only a history remains of, so a pod whose containers all ended is still answered;
//! one this agent never saw (it ended before a restart) from the history store's records
//! of its containers (`<namespace>/<pod>`, its name or uid).

use super::{
    assemble::{self, ViewCtx},
    service::{dated_entries, history_key, snap, ApiError, Dated, Named, Source},
};
use crate::{
    containers::{ContainerData, ContainerKey},
    store::Gens,
    table::{
        snapshot::{Scope, Snapshot},
        summary::ContainerSummary,
    },
    views::{
        endings,
        model::short_id,
        select::Selection,
        why::{self, PodMemberWhy, WhyView},
    },
};

/// `observer why <container|pod|pid> [--boot N]`: `boot` is the boot to answer from (0
/// this one, -1 the one before...; a pid is of this one); by default this one when the
/// container is known in it, else the latest it has records in.
pub(crate) fn why(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    query: &str,
    boot: Option<i32>,
) -> Result<WhyView, ApiError> {
    // A number is a pid first: as a container reference a member's pid names its container,
    // and `why <pid>` answers for the process (an ended one still in the table, not yet
    // reaped, answered for its whole container). A pid-namespace inode or an id prefix
    // names no process, and is looked up as a container after.
    if let (Ok(pid), None | Some(0)) = (query.trim().parse::<u32>(), boot) {
        match why_pid(src, ctx, query, pid) {
            Err(ApiError::NotFound { .. }) => {}
            answer => return answer,
        }
    }
    match history_key(src, ctx, query) {
        Ok(named) => why_container(src, ctx, query, named, boot),
        Err(ApiError::IsPod { .. }) => why_pod(src, ctx, query, boot)?.ok_or(ApiError::NotFound {
            query: query.into(),
            candidates: vec![],
        }),
        Err(ApiError::NotFound { candidates, .. }) => {
            if let Ok(pid) = query.trim().parse::<u32>() {
                return match boot {
                    Some(b) if b != 0 => Err(ApiError::NotInBoot {
                        query: query.into(),
                        boot: b,
                        boots: vec![],
                    }),
                    _ => why_pid(src, ctx, query, pid),
                };
            }
            let not_found = |candidates| ApiError::NotFound {
                query: query.into(),
                candidates,
            };
            let stored = |ctx: &mut ViewCtx, candidates| {
                why_stored_pod(src, ctx, query, boot)?.ok_or_else(|| not_found(candidates))
            };
            match why_pod(src, ctx, query, boot) {
                Ok(Some(w)) => Ok(w),
                Ok(None) => stored(ctx, candidates),
                Err(ApiError::NotFound { candidates, .. }) => stored(ctx, candidates),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// A container only a history remains of, as a summary the pod grouping takes (what its
/// runtime's metadata says places it in its pod).
fn ended_summary(key: ContainerKey, index: u32) -> ContainerSummary {
    ContainerSummary {
        index,
        container: ContainerData {
            key,
            pod_uid: None,
            pod_id: None,
            ctr_namespace: None,
            cgroup: String::new(),
            pidns: 0,
            forks: 0,
            execs: 0,
            exits: 0,
            signals: Vec::new(),
            oom_victims: 0,
            exit_classes: [0; 4],
        },
        processes: 0,
        threads: 0,
        zombies: 0,
        oldest_zombie_ns: None,
        init_pid: None,
        shim_pid: None,
        shim_comm: None,
    }
}

/// The running containers (the registry's) and after them those only a history remains
/// of, numbered past the registry's indices; and the registry's generation.
fn with_ended(src: &dyn Source) -> Result<(Vec<ContainerSummary>, u64), ApiError> {
    let reg = snap(src, Scope::Registry)?;
    let mut all = reg.containers;
    let mut next = all.iter().map(|s| s.index + 1).max().unwrap_or(0);
    for k in snap(src, Scope::History(Vec::new()))?.history_keys {
        if !all.iter().any(|s| s.container.key == k) {
            all.push(ended_summary(k, next));
            next += 1;
        }
    }
    Ok((all, reg.generation))
}

/// A pod's answer: each of its containers' (running or ended), then what they add up to.
/// None when `query` names a container rather than a pod.
fn why_pod(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    query: &str,
    boot: Option<i32>,
) -> Result<Option<WhyView>, ApiError> {
    for _ in 0..3 {
        let (all, generation) = with_ended(src)?;
        let pod = match assemble::select(ctx, &all, query, |_| None) {
            Selection::Pod(p) => p,
            Selection::Found(_) => return Ok(None),
            Selection::Ambiguous(candidates) => {
                return Err(ApiError::Ambiguous {
                    query: query.into(),
                    candidates,
                })
            }
            Selection::NotFound(candidates) => {
                return Err(ApiError::NotFound {
                    query: query.into(),
                    candidates,
                })
            }
        };
        let running: Vec<u32> = pod
            .containers
            .iter()
            .copied()
            .filter(|i| all.iter().any(|s| s.index == *i && s.processes > 0))
            .collect();
        let s = snap(src, Scope::Pod(running))?;
        if s.generation != generation {
            continue;
        }
        let mut members = Vec::new();
        for &i in &pod.containers {
            let Some(base) = all.iter().find(|s| s.index == i) else {
                continue;
            };
            // A CRI sandbox's name is its id: shown short.
            let name = assemble::meta_of(ctx, base)
                .name
                .filter(|n| *n != base.container.key.id)
                .unwrap_or_else(|| short_id(&base.container.key.id));
            let key = base.container.key.clone();
            let live = s.container(i).cloned();
            let named = Named {
                key: key.clone(),
                summary: live,
                gens: Gens::All,
            };
            let why = member_why(src, ctx, &name, named, boot)?;
            members.push(PodMemberWhy {
                name,
                id: key.id,
                sandbox: Some(i) == pod.sandbox,
                why,
            });
        }
        let mut label = match (&pod.namespace, &pod.name) {
            (Some(ns), Some(n)) => format!("Pod {ns}/{n}"),
            (None, Some(n)) => format!("Pod {n}"),
            _ => "Pod".to_string(),
        };
        label.push_str(&format!(
            " ({} {})",
            pod.key.kind.as_str(),
            short_id(&pod.key.id)
        ));
        return Ok(Some(why::pod(format!("pod {query}"), &label, members)));
    }
    Err(ApiError::Changed)
}

/// A pod only the history store knows of (its containers ended before this agent
/// started): each container's answer from its stored entries.
fn why_stored_pod(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    query: &str,
    boot: Option<i32>,
) -> Result<Option<WhyView>, ApiError> {
    let Some(pod) = ctx.store.and_then(|s| s.pod(query)) else {
        return Ok(None);
    };
    let mut members = Vec::new();
    for m in pod.members {
        // A CRI sandbox's name is its id: shown short.
        let name = m
            .name
            .filter(|n| *n != m.key.id)
            .unwrap_or_else(|| short_id(&m.key.id));
        // The generation its pod had (a bare container's inode is reused).
        let named = Named {
            key: m.key.clone(),
            summary: None,
            gens: m.gens,
        };
        let why = member_why(src, ctx, &name, named, boot)?;
        members.push(PodMemberWhy {
            name,
            id: m.key.id,
            sandbox: m.sandbox,
            why,
        });
    }
    let mut label = match &pod.namespace {
        Some(ns) => format!("Pod {ns}/{}", pod.name),
        None => format!("Pod {}", pod.name),
    };
    if let Some(uid) = &pod.uid {
        label.push_str(&format!(" (kubernetes {})", short_id(uid)));
    }
    label.push_str(", from the history store");
    Ok(Some(why::pod(format!("pod {query}"), &label, members)))
}

/// The signals `pid` received lately, as views.
fn signals_of(s: &Snapshot, pid: u32, now: u64) -> Vec<endings::SignalView> {
    s.signals
        .get(&pid)
        .map(|f| {
            f.recent
                .iter()
                .map(|x| endings::signal_view(x, now))
                .collect()
        })
        .unwrap_or_default()
}

/// "sh (host pid 12, pid 1 in its namespace)".
fn who(p: &crate::table::Process) -> String {
    format!(
        "{} (host pid {}, pid {} in its namespace)",
        p.comm_str(),
        p.pid,
        p.ns_pid()
    )
}

/// Processes found by pid an answer lists at most (the latest and those before it).
const PID_MATCHES: usize = 10;

/// Why a process runs, or how it ended (from the histories) when `query` names no
/// container.
fn why_pid(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    query: &str,
    pid: u32,
) -> Result<WhyView, ApiError> {
    let now = ctx.now_ns;
    let s = snap(src, Scope::All)?;
    if let Some(p) = s.process(pid).filter(|p| !p.is_zombie()) {
        let ns_init = p.ns_pid() == 1 && p.pid_level > 0;
        return Ok(why::live(
            format!("pid {pid}"),
            &who(p),
            ns_init,
            signals_of(&s, pid, now),
        ));
    }
    let found = ended_with_pid(src, ctx, pid)?;
    why::pid_ended(pid, found, now).ok_or_else(|| ApiError::NotFound {
        query: query.into(),
        candidates: vec![],
    })
}

/// The processes with host pid `pid` that ended in this boot, the latest first: from the
/// in-memory histories and the history store (which has them across agent restarts).
fn ended_with_pid(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    pid: u32,
) -> Result<Vec<why::PidEnded>, ApiError> {
    let now = ctx.now_ns;
    let s = snap(src, Scope::History(Vec::new()))?;
    let keys = s.history_keys;
    let s = snap(src, Scope::History(keys))?;
    let mut seen = rustc_hash::FxHashSet::default();
    let mut found = Vec::new();
    for (key, es) in &s.history {
        for e in es.iter().filter(|e| e.pid == pid) {
            seen.insert(e.start_ns);
            found.push(why::PidEnded {
                container: container_label(ctx, key, None),
                view: endings::ended_view(e, now),
            });
        }
    }
    let stored = ctx.store.map(|st| st.by_pid(pid, PID_MATCHES));
    for m in stored.unwrap_or_default() {
        if seen.insert(m.stored.ended.start_ns) {
            let view = endings::ended_view(&m.stored.ended, m.stored.now_ns);
            found.push(why::PidEnded {
                container: container_label(ctx, &m.key, m.name),
                view,
            });
        }
    }
    found.sort_by_key(|p| std::cmp::Reverse(p.view.end_time_ns));
    found.truncate(PID_MATCHES);
    Ok(found)
}

/// A container as an answer names it: `container <name>` (its runtime's, or the one the
/// store kept), else `<runtime> container <short id>`.
fn container_label(ctx: &mut ViewCtx, key: &ContainerKey, stored: Option<String>) -> String {
    let name = ctx
        .meta(key, None, None)
        .name
        .or(stored)
        .filter(|n| *n != key.id);
    match name {
        Some(n) => format!("container {n}"),
        None => format!("{} container {}", key.runtime.as_str(), short_id(&key.id)),
    }
}

/// A pod member's answer: one without a record in the boot asked for says so (the pod's
/// answer is not an error for it).
fn member_why(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    name: &str,
    named: Named,
    boot: Option<i32>,
) -> Result<WhyView, ApiError> {
    match why_container(src, ctx, name, named, boot) {
        Err(ApiError::NotInBoot { boot, .. }) => Ok(no_record(name, boot)),
        r => r,
    }
}

/// An ended process of `boot` that is its container's PID 1 (or has no parent in it).
fn is_init(d: &Dated, boot: i32) -> bool {
    d.view.boot == boot && (d.view.ns_pid == 1 || d.view.parents.is_empty())
}

/// Why a container's PID 1 runs, or how it ended: in `boot` when asked (an error when the
/// container has no record in it), else in this boot when it is known in it, else in the
/// latest boot it has records in.
fn why_container(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    query: &str,
    named: Named,
    boot: Option<i32>,
) -> Result<WhyView, ApiError> {
    let Named { key, summary, gens } = named;
    let now = ctx.now_ns;
    let subject = format!("container {query}");
    if let Some(c) = summary.as_ref().filter(|_| boot.unwrap_or(0) == 0) {
        let s = snap(src, Scope::Container(c.index))?;
        if let Some(p) = c
            .init_pid
            .and_then(|i| s.process(i))
            .filter(|p| !p.is_zombie())
        {
            let w = format!("PID 1 of {query}, {}", who(p));
            let ns_init = p.ns_pid() == 1 && p.pid_level > 0;
            return Ok(why::live(subject, &w, ns_init, signals_of(&s, p.pid, now)));
        }
    }
    let entries = dated_entries(src, ctx, &key, &gens, boot)?.0;
    let chosen = match boot {
        Some(b) if entries.is_empty() && !(b == 0 && summary.is_some()) => {
            return Err(ApiError::NotInBoot {
                query: query.into(),
                boot: b,
                boots: boots_of(src, ctx, &key, &gens, summary.is_some())?,
            });
        }
        Some(b) => b,
        None if summary.is_some() || entries.iter().any(|d| d.view.boot == 0) => 0,
        None => entries.iter().map(|d| d.view.boot).max().unwrap_or(0),
    };
    let init = entries
        .into_iter()
        .filter(|d| is_init(d, chosen))
        .max_by_key(|d| d.view.end_time_ns);
    let Some(d) = init else {
        return Ok(no_record(query, chosen));
    };
    let e = d.view;
    let in_boot = match e.boot {
        0 => String::new(),
        b => format!(", boot {b}"),
    };
    let w = format!("PID 1 of {query}, {} (host pid {}{in_boot})", e.comm, e.pid);
    Ok(why::ended(subject, &w, e, d.now_ns))
}

/// The boots `key` has records in, the newest first: this one when it runs or the
/// in-memory history has it (unless only the store answers: `Named::gens`), and those of
/// the history store.
fn boots_of(
    src: &dyn Source,
    ctx: &ViewCtx,
    key: &ContainerKey,
    gens: &Gens,
    live: bool,
) -> Result<Vec<i32>, ApiError> {
    let mut boots = ctx.store.map(|s| s.boots_of(key, gens)).unwrap_or_default();
    let s = snap(src, Scope::History(vec![key.clone()]))?;
    let in_memory = *gens == Gens::All && s.history.iter().any(|(_, es)| !es.is_empty());
    if (live || in_memory) && !boots.contains(&0) {
        boots.insert(0, 0);
    }
    Ok(boots)
}

/// A container without a running PID 1 nor a record of how it ended (in `boot`).
fn no_record(query: &str, boot: i32) -> WhyView {
    let paragraph = match boot {
        0 => format!(
            "{query} has no running PID 1 and no record of how it ended: it ended before \
             the agent started, or its history expired"
        ),
        b => format!(
            "{query} has no record of how its PID 1 ended in boot {b}: it ended before an \
             agent with a history store ran, or its history expired"
        ),
    };
    WhyView {
        subject: format!("container {query}"),
        alive: false,
        paragraph,
        signals: vec![],
        ended: None,
        containers: vec![],
        earlier: vec![],
    }
}
