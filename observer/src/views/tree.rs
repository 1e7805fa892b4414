//! `observer tree <container>`: the container's processes as a tree, with the shim drawn
//! above PID 1, zombies with their age and the parent not reaping them, adopted orphans
//! with whom they came from.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
};

use super::{
    model::{ContainerView, OutsideParent, ProcessView, TreeView},
    text::{bytes, duration, Escaped, Style},
};
use crate::table::{snapshot::Snapshot, summary::ContainerSummary, Process};

/// The processes of `summary`'s container in `snap`: those a tree views.
pub(crate) fn members<'a>(snap: &'a Snapshot, summary: &ContainerSummary) -> Vec<&'a Process> {
    snap.processes
        .iter()
        .filter(|p| p.container == Some(summary.index))
        .collect()
}

/// The tree of `container` from the views of its `members` (each labelled with the
/// container's short id), in any order.
pub(crate) fn build(
    snap: &Snapshot,
    container: ContainerView,
    views: Vec<ProcessView>,
) -> TreeView {
    let order = tree_order(&views);
    // Moved into tree order, not cloned (a view is a few hundred bytes and allocations).
    let mut slots: Vec<Option<ProcessView>> = views.into_iter().map(Some).collect();
    let mut processes: Vec<ProcessView> = Vec::with_capacity(order.len());
    processes.extend(order.into_iter().filter_map(|i| slots[i].take()));
    let inside: std::collections::HashSet<u32> = processes.iter().map(|p| p.pid).collect();
    let mut outside_parents: Vec<OutsideParent> = processes
        .iter()
        .filter(|p| !inside.contains(&p.ppid) && Some(p.pid) != container.init_pid)
        .filter_map(|p| {
            snap.process(p.ppid).map(|par| OutsideParent {
                pid: par.pid,
                comm: par.comm_str().to_string(),
            })
        })
        .collect();
    outside_parents.sort_by_key(|o| o.pid);
    outside_parents.dedup();
    TreeView {
        container,
        processes,
        outside_parents,
    }
}

/// Indices of `views` in depth-first order (roots: processes whose parent is not listed),
/// siblings by pid.
fn tree_order(views: &[ProcessView]) -> Vec<usize> {
    let pids: std::collections::HashMap<u32, usize> =
        views.iter().enumerate().map(|(i, v)| (v.pid, i)).collect();
    let mut kids: std::collections::HashMap<u32, Vec<usize>> = std::collections::HashMap::new();
    let mut roots = Vec::new();
    let mut by_pid: Vec<usize> = (0..views.len()).collect();
    by_pid.sort_unstable_by_key(|&i| views[i].pid);
    for i in by_pid {
        let v = &views[i];
        if pids.contains_key(&v.ppid) && v.ppid != v.pid {
            kids.entry(v.ppid).or_default().push(i);
        } else {
            roots.push(i);
        }
    }
    let mut out = Vec::with_capacity(views.len());
    let mut stack: Vec<usize> = roots.into_iter().rev().collect();
    while let Some(i) = stack.pop() {
        out.push(i);
        if let Some(ch) = kids.get(&views[i].pid) {
            stack.extend(ch.iter().rev());
        }
    }
    out
}

/// Children of each pid, in the order of `processes`.
pub(crate) fn children(processes: &[ProcessView]) -> BTreeMap<u32, Vec<&ProcessView>> {
    let mut kids: BTreeMap<u32, Vec<&ProcessView>> = BTreeMap::new();
    for p in processes {
        kids.entry(p.ppid).or_default().push(p);
    }
    kids
}

/// One process's line: comm (host PID / ns PID), state, ns PPID, age, CPU, RSS; zombies
/// with their age and the parent not reaping them, adopted orphans with whence, a session's
/// mark, an ignored signal; the command last. The command is the process's own text: last,
/// nothing in it ("  ZOMBIE for 1s…", "[exec by …]") can stand where observer's marks stand.
/// The views' strings are escaped already (the public renderers take [`Escaped`] views).
pub(super) fn label(p: &ProcessView, by_pid: &HashMap<u32, &ProcessView>, style: Style) -> String {
    let mut line = marked(p, by_pid, style);
    push_command(&mut line, p);
    line
}

/// The line of [`label`] without its command, for callers that add marks of their own.
pub(super) fn marked(p: &ProcessView, by_pid: &HashMap<u32, &ProcessView>, style: Style) -> String {
    // Room for the marks and the command, which `label` appends: one allocation a line.
    let mut line = String::with_capacity(160 + p.cmdline.len());
    let _ = write!(
        line,
        "{} ({} / ns {})  {}  nsppid {}  age {}  cpu {:.2}s  rss {}",
        style.bold(&p.comm),
        p.pid,
        p.ns_pid,
        p.state,
        p.ns_ppid,
        duration(p.age_s),
        p.cpu_s,
        bytes(p.rss_bytes),
    );
    if p.threads > 1 {
        line.push_str(&format!("  {} threads", p.threads));
    }
    if let Some(z) = p.zombie_age_s {
        let parent = by_pid
            .get(&p.ppid)
            .map(|par| format!("{} ({})", par.comm, par.pid))
            .unwrap_or_else(|| p.ppid.to_string());
        line.push_str(&style.red(&format!(
            "  ZOMBIE for {}, not reaped by {parent}",
            duration(z)
        )));
    }
    if let (Some(from), Some(by)) = (p.adopted_from, &p.adopter) {
        line.push_str(&style.yellow(&format!("  adopted from {from} by {by}")));
    }
    if let Some(e) = p.entered.as_ref().filter(|e| e.root) {
        line.push_str(&style.yellow(&format!("  {}", super::sessions::mark(e))));
    }
    if let Some(s) = p.ignored_signals.last() {
        line.push_str(&style.red(&format!(
            "  ignored {} from {} {}s ago",
            s.signal,
            crate::views::endings::from(&s.sender),
            s.ago_s.round()
        )));
    }
    line
}

/// Ends a line with the process's command (`[comm]` for a kernel thread).
pub(super) fn push_command(line: &mut String, p: &ProcessView) {
    line.push_str("  ");
    if p.cmdline.is_empty() {
        line.push_str(&format!("[{}]", p.comm));
    } else {
        line.push_str(&p.cmdline);
    }
}

/// Draws `p` and its descendants depth-first with box-drawing connectors; `seen` guards
/// against parent loops.
#[allow(clippy::too_many_arguments)]
pub(super) fn walk<'a>(
    p: &'a ProcessView,
    prefix: &str,
    last: bool,
    top: bool,
    kids: &BTreeMap<u32, Vec<&'a ProcessView>>,
    label: &dyn Fn(&ProcessView) -> String,
    seen: &mut std::collections::HashSet<u32>,
    out: &mut String,
) {
    if !seen.insert(p.pid) {
        return;
    }
    let branch = if top {
        ""
    } else if last {
        "└─ "
    } else {
        "├─ "
    };
    out.push_str(prefix);
    out.push_str(branch);
    out.push_str(&label(p));
    out.push('\n');
    if let Some(ch) = kids.get(&p.pid).filter(|_| p.ppid != p.pid) {
        let child_prefix = if top {
            prefix.to_string()
        } else {
            format!("{prefix}{}", if last { "   " } else { "│  " })
        };
        for (i, c) in ch.iter().enumerate() {
            walk(
                c,
                &child_prefix,
                i + 1 == ch.len(),
                false,
                kids,
                label,
                seen,
                out,
            );
        }
    }
}

/// The pstree-like text: one line per process, host PID / ns PID, state, ns PPID, age, CPU,
/// RSS, command.
pub fn render(t: &Escaped<TreeView>, style: Style) -> String {
    draw(t, style)
}

/// [`render`] of a tree whose strings are escaped already (a pod's trees).
pub(super) fn draw(t: &TreeView, style: Style) -> String {
    let mut out = String::new();
    let c = &t.container;
    let _ = writeln!(
        out,
        "{} {} {}{}{}  pidns {}  {} processes, {} zombies",
        style.bold(&c.runtime),
        c.short_id,
        c.name.as_deref().unwrap_or("-"),
        c.pod
            .as_deref()
            .map(|p| format!(" pod {p}"))
            .unwrap_or_default(),
        c.namespace
            .as_deref()
            .map(|n| format!(" ns {n}"))
            .unwrap_or_default(),
        c.pidns,
        c.processes,
        c.zombies
    );
    let by_pid: HashMap<u32, &ProcessView> = t.processes.iter().map(|p| (p.pid, p)).collect();
    let kids = children(&t.processes);
    let label = |p: &ProcessView| label(p, &by_pid, style);
    let mut seen = std::collections::HashSet::new();
    // Members whose parent is outside the container, grouped under that parent.
    let mut outside: Vec<(u32, String, &str)> = Vec::new();
    if let (Some(shim), Some(comm)) = (c.shim_pid, &c.shim_comm) {
        outside.push((shim, comm.clone(), "[shim, outside the container]"));
    }
    for o in &t.outside_parents {
        if Some(o.pid) != c.shim_pid {
            outside.push((
                o.pid,
                o.comm.clone(),
                "[host parent, outside the container]",
            ));
        }
    }
    for (pid, comm, note) in &outside {
        let Some(ch) = kids.get(pid) else { continue };
        let _ = writeln!(out, "{} ({pid})  {}", style.dim(comm), style.dim(note));
        for (i, p) in ch.iter().enumerate() {
            walk(
                p,
                "",
                i + 1 == ch.len(),
                false,
                &kids,
                &label,
                &mut seen,
                &mut out,
            );
        }
    }
    for p in &t.processes {
        if !by_pid.contains_key(&p.ppid) && !outside.iter().any(|(o, _, _)| *o == p.ppid) {
            walk(p, "", true, true, &kids, &label, &mut seen, &mut out);
        }
    }
    out
}
