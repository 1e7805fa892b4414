//! `observer ps`, `observer containers` and `observer zombies`: flat lists with a stable JSON
//! form and an aligned text table.

use super::{
    model::{
        container_view, exit_code, short_id, ContainerFacts, ContainerView, ProcessView, ZombieView,
    },
    text::{bytes, duration, table, Escaped},
};
use crate::{
    containers::names::Meta,
    host::facts::Live,
    table::{snapshot::Snapshot, Process},
};

/// `observer ps`: the views of every process (each labelled with `container_label`), by pid.
pub(crate) fn ps(mut v: Vec<ProcessView>) -> Vec<ProcessView> {
    v.sort_by_key(|p| p.pid);
    v
}

/// The short id of `p`'s container, as `ps` labels a process.
pub(crate) fn container_label(snap: &Snapshot, p: &Process) -> Option<String> {
    p.container
        .and_then(|i| snap.container(i))
        .map(|s| short_id(&s.container.key.id))
}

/// `observer ps` as a table; `long` (`ps -l`) adds the real uid, the credentials from
/// the exec of each process's image (effective uid, capabilities, privileges raised) and
/// the first 12 hex digits of its executable's SHA-256 (whole in `-o json`; `-` and why
/// when there is none).
pub(crate) fn render_ps(rows: &Escaped<Vec<ProcessView>>, no_headers: bool, long: bool) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(|p| ps_row(p, long)).collect();
    let mut head = vec!["PID", "PPID", "NSPID", "NSPPID", "S", "AGE", "CPU", "RSS"];
    if long {
        head.extend(["UID", "EUID", "CAPS", "SHA256"]);
    }
    head.extend(["CONTAINER", "COMMAND"]);
    table(&head, &cells, no_headers)
}

fn ps_row(p: &ProcessView, long: bool) -> Vec<String> {
    let mut row = vec![
        p.pid.to_string(),
        p.ppid.to_string(),
        p.ns_pid.to_string(),
        p.ns_ppid.to_string(),
        p.state.clone(),
        duration(p.age_s),
        format!("{:.2}", p.cpu_s),
        bytes(p.rss_bytes),
    ];
    if long {
        let (euid, caps) = p.exec.as_ref().map_or(("-".into(), "-".into()), |e| {
            (e.euid.to_string(), e.cap_eff.clone())
        });
        let sha = match (&p.exe_sha256, p.exe_hash_reason) {
            (Some(h), _) => h.chars().take(12).collect(),
            (None, Some(why)) => format!("-({})", why.name()),
            (None, None) => "-".into(),
        };
        row.extend([p.uid.to_string(), euid, caps, sha]);
    }
    row.push(p.container.clone().unwrap_or_else(|| "-".into()));
    let mut c = if p.cmdline.is_empty() {
        format!("[{}]", p.comm)
    } else {
        p.cmdline.clone()
    };
    if let Some(g) = p.exec.as_ref().and_then(|e| e.privileges.as_ref()) {
        c.push_str(&format!("  ({g})"));
    }
    // What a stuck `docker stop` is waiting on.
    if let Some(s) = p.ignored_signals.last() {
        c.push_str(&format!(
            "  (ignored {} from {} {}s ago)",
            s.signal,
            super::endings::from(&s.sender),
            s.ago_s.round()
        ));
    }
    row.push(c);
    row
}

/// `observer containers`: every container of `snap`, with what was read of each (`facts`,
/// in the order of `snap.containers`).
pub(crate) fn containers(
    snap: &Snapshot,
    facts: Vec<ContainerFacts>,
    now_ns: u64,
) -> Vec<ContainerView> {
    let pods = {
        let metas: Vec<&Meta> = facts.iter().map(|f| &f.meta).collect();
        super::pods::membership(&snap.containers, &metas)
    };
    let mut v: Vec<ContainerView> = snap
        .containers
        .iter()
        .zip(facts)
        .map(|(s, f)| {
            let mut c = container_view(s, f, now_ns);
            // Pod facts the container's own state lacks (podman members name only their
            // infra; the infra's hostname names the pod).
            if let Some((pod, ns, sandbox)) = pods.get(&s.index) {
                c.pod = c.pod.or_else(|| Some(pod.clone()));
                c.namespace = c.namespace.or_else(|| ns.clone());
                c.sandbox |= sandbox;
            }
            c
        })
        .collect();
    v.sort_by(|a, b| (&a.runtime, &a.name, &a.id).cmp(&(&b.runtime, &b.name, &b.id)));
    v
}

pub(crate) fn render_containers(rows: &Escaped<Vec<ContainerView>>, no_headers: bool) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|c| {
            let r = &c.resources;
            vec![
                c.runtime.clone(),
                c.short_id.clone(),
                c.name.clone().unwrap_or_else(|| "-".into()),
                match (&c.pod, c.sandbox) {
                    (Some(p), true) => format!("{p} (sandbox)"),
                    (Some(p), false) => p.clone(),
                    (None, _) => "-".into(),
                },
                c.pidns.to_string(),
                c.processes.to_string(),
                c.zombies.to_string(),
                r.cpu_usage_ns
                    .map(|n| format!("{:.2}s", n as f64 / 1e9))
                    .unwrap_or_else(|| "-".into()),
                match (r.memory_bytes, r.memory_limit_bytes) {
                    (Some(m), Some(l)) => format!("{}/{}", bytes(m), bytes(l)),
                    (Some(m), None) => bytes(m),
                    _ => "-".into(),
                },
                match (r.pids, r.pids_limit) {
                    (Some(p), Some(l)) => format!("{p}/{l}"),
                    (Some(p), None) => p.to_string(),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    table(
        &[
            "RUNTIME", "ID", "NAME", "POD", "PIDNS", "PROCS", "ZOMBIES", "CPU", "MEMORY", "PIDS",
        ],
        &cells,
        no_headers,
    )
}

/// What was read of a zombie before its view: its live facts, confirmed to be of it and
/// in state Z (None: unreadable — out of file descriptors —, listed on the table's word);
/// its parent's live facts; its container's name.
pub(crate) struct ZombieFacts {
    pub(crate) live: Option<Live>,
    pub(crate) parent_live: Option<Live>,
    pub(crate) container_name: Option<String>,
}

/// The view of zombie `p` (None: `p` has not exited).
pub(crate) fn zombie_view(
    snap: &Snapshot,
    p: &Process,
    f: ZombieFacts,
    now_ns: u64,
) -> Option<ZombieView> {
    let e = p.exit?;
    let parent = snap.process(p.ppid);
    let summary = p.container.and_then(|i| snap.container(i));
    Some(ZombieView {
        pid: p.pid,
        ns_pid: p.ns_pid(),
        comm: f.live.map_or_else(|| p.comm_str().into_owned(), |l| l.comm),
        zombie_age_s: now_ns.saturating_sub(e.at_ns) as f64 / 1e9,
        exit_code: e.status.map(exit_code),
        parent_pid: p.ppid,
        parent_comm: f
            .parent_live
            .as_ref()
            .map(|l| l.comm.clone())
            .or_else(|| parent.map(|par| par.comm_str().to_string())),
        parent_state: f.parent_live.map(|l| l.state.to_string()),
        container: summary.map(|s| short_id(&s.container.key.id)),
        container_name: f.container_name,
    })
}

/// `observer zombies`: the zombies' views, the longest dead first.
pub(crate) fn zombies(mut v: Vec<ZombieView>) -> Vec<ZombieView> {
    v.sort_by(|a, b| b.zombie_age_s.total_cmp(&a.zombie_age_s));
    v
}

pub(crate) fn render_zombies(rows: &Escaped<Vec<ZombieView>>, no_headers: bool) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|z| {
            vec![
                z.pid.to_string(),
                z.ns_pid.to_string(),
                z.comm.clone(),
                duration(z.zombie_age_s),
                z.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                format!(
                    "{} ({})",
                    z.parent_comm.as_deref().unwrap_or("?"),
                    z.parent_pid
                ),
                z.parent_state.clone().unwrap_or_else(|| "-".into()),
                match (&z.container, &z.container_name) {
                    (Some(id), Some(n)) => format!("{n} ({id})"),
                    (Some(id), None) => id.clone(),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    table(
        &[
            "PID",
            "NSPID",
            "COMMAND",
            "ZOMBIE FOR",
            "EXIT",
            "NOT REAPED BY",
            "PARENT STATE",
            "CONTAINER",
        ],
        &cells,
        no_headers,
    )
}
