//! Resolving what a user typed for `<container>` or `<pod>`: a container name, a full or
//! unique-prefix id, a pid-namespace inode (a pod's when its containers share it), the host
//! PID of any member, a pod name (`name` or `namespace/name`), or a pod id or UID.

use super::model::{meta_of, short_id, ViewCtx};
use crate::{containers::pods::Pod, table::summary::ContainerSummary};

#[derive(Debug, PartialEq, Eq)]
pub enum Selection {
    Found(u32),
    /// A pod (its containers' indices are valid in the resolved generation).
    Pod(Pod),
    /// Several containers match: their descriptions.
    Ambiguous(Vec<String>),
    /// Nothing matches: every container's description, to choose from.
    NotFound(Vec<String>),
}

fn describe(ctx: &mut ViewCtx, s: &ContainerSummary) -> String {
    let m = meta_of(ctx, s);
    let mut d = format!(
        "{} {}",
        s.container.key.runtime,
        short_id(&s.container.key.id)
    );
    if let Some(n) = m.name {
        d.push_str(&format!(" {n}"));
    }
    if let Some(p) = m.pod {
        d.push_str(&format!(" (pod {p})"));
    }
    d
}

/// `member_of(pid)` gives the container index of a host pid, if any.
pub fn select(
    ctx: &mut ViewCtx,
    containers: &[ContainerSummary],
    query: &str,
    member_of: impl Fn(u32) -> Option<u32>,
) -> Selection {
    let q = query.trim();
    // 1. exact name, 2. exact id
    if let Some(s) = by_name_or_id(ctx, containers, q) {
        return s;
    }
    // 3. a member's host PID, or a pid-namespace inode
    if let Ok(n) = q.parse::<u64>() {
        if let Some(s) = by_number(ctx, containers, n, &member_of) {
            return s;
        }
    }
    // 4. unique id prefix, 5. pod name
    if let Some(s) = pick(
        ctx,
        containers
            .iter()
            .filter(|s| s.container.key.id.starts_with(q))
            .collect(),
    ) {
        return s;
    }
    // 5. a pod: name, namespace/name, id or UID, unique id prefix
    let pods = super::pods::index(ctx, containers);
    if let Some(s) = pod_by(&pods, q) {
        return s;
    }
    let mut all: Vec<String> = containers.iter().map(|s| describe(ctx, s)).collect();
    all.extend(pods.iter().map(describe_pod));
    Selection::NotFound(all)
}

/// One hit is the selection, several are ambiguous, none leaves it to the next test.
fn pick(ctx: &mut ViewCtx, hits: Vec<&ContainerSummary>) -> Option<Selection> {
    match hits.len() {
        0 => None,
        1 => Some(Selection::Found(hits[0].index)),
        _ => Some(Selection::Ambiguous(
            hits.iter().map(|s| describe(ctx, s)).collect(),
        )),
    }
}

/// A container by its exact name, else its exact id.
fn by_name_or_id(ctx: &mut ViewCtx, containers: &[ContainerSummary], q: &str) -> Option<Selection> {
    let names: Vec<(u32, Option<String>, Option<String>)> = containers
        .iter()
        .map(|s| {
            let m = meta_of(ctx, s);
            (s.index, m.name, m.pod)
        })
        .collect();
    let by_index = |i: u32| containers.iter().find(|s| s.index == i).expect("listed");
    let hits: Vec<_> = names
        .iter()
        .filter(|(_, n, _)| n.as_deref() == Some(q))
        .map(|(i, _, _)| by_index(*i))
        .collect();
    pick(ctx, hits).or_else(|| {
        pick(
            ctx,
            containers
                .iter()
                .filter(|s| s.container.key.id == q)
                .collect(),
        )
    })
}

/// A container by a member's host PID, else by its pid-namespace inode (a pod when its
/// containers share that namespace).
fn by_number(
    ctx: &mut ViewCtx,
    containers: &[ContainerSummary],
    n: u64,
    member_of: &impl Fn(u32) -> Option<u32>,
) -> Option<Selection> {
    if let Some(i) = u32::try_from(n).ok().and_then(member_of) {
        if containers.iter().any(|s| s.index == i) {
            return Some(Selection::Found(i));
        }
    }
    let sharing: Vec<&ContainerSummary> = containers
        .iter()
        .filter(|s| s.container.pidns as u64 == n)
        .collect();
    if sharing.len() > 1 {
        // One pod's shared pid namespace: the pod.
        let pods = super::pods::index(ctx, containers);
        if let Some(p) = pods
            .iter()
            .find(|p| sharing.iter().all(|s| p.containers.contains(&s.index)))
        {
            return Some(Selection::Pod(p.clone()));
        }
    }
    pick(ctx, sharing)
}

/// A pod by name (or namespace/name), else id or UID, else unique id prefix.
fn pod_by(pods: &[Pod], q: &str) -> Option<Selection> {
    let tests: [&dyn Fn(&Pod) -> bool; 3] = [
        &|p| {
            p.name.as_deref() == Some(q)
                || p.namespace
                    .as_ref()
                    .zip(p.name.as_ref())
                    .is_some_and(|(n, m)| {
                        q.strip_prefix(n.as_str()).and_then(|r| r.strip_prefix('/')) == Some(m)
                    })
        },
        &|p| p.key.id == q || p.uid.as_deref() == Some(q),
        &|p| !q.is_empty() && p.key.id.starts_with(q),
    ];
    for test in tests {
        let hits: Vec<&Pod> = pods.iter().filter(|p| test(p)).collect();
        match hits.len() {
            0 => {}
            1 => return Some(Selection::Pod(hits[0].clone())),
            _ => {
                return Some(Selection::Ambiguous(
                    hits.iter().map(|p| describe_pod(p)).collect(),
                ))
            }
        }
    }
    None
}

fn describe_pod(p: &Pod) -> String {
    let mut d = format!("pod {} {}", p.key.kind.as_str(), short_id(&p.key.id));
    if let Some(n) = &p.name {
        d.push(' ');
        if let Some(ns) = &p.namespace {
            d.push_str(&format!("{ns}/"));
        }
        d.push_str(n);
    }
    d
}
