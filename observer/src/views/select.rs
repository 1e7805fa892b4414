//! Resolving what a user typed for `<container>` or `<pod>`: a container name, a full or
//! unique-prefix id, a pid-namespace inode (a pod's when its containers share it), the host
//! PID of any member, a pod name (`name` or `namespace/name`), or a pod id or UID.

use super::model::short_id;
use crate::{
    containers::{names::Meta, pods::Pod},
    table::summary::ContainerSummary,
};

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Selection {
    Found(u32),
    /// A pod (its containers' indices are valid in the resolved generation).
    Pod(Pod),
    /// Several containers match: their descriptions.
    Ambiguous(Vec<String>),
    /// Nothing matches: every container's description, to choose from.
    NotFound(Vec<String>),
}

fn describe(s: &ContainerSummary, m: &Meta) -> String {
    let mut d = format!(
        "{} {}",
        s.container.key.runtime,
        short_id(&s.container.key.id)
    );
    if let Some(n) = &m.name {
        d.push_str(&format!(" {n}"));
    }
    if let Some(p) = &m.pod {
        d.push_str(&format!(" (pod {p})"));
    }
    d
}

/// What `query` names among `containers` (each with its metadata: `metas`, in the same
/// order); `member` is the container index of the host pid `query` is, if it is one.
pub(crate) fn select(
    containers: &[ContainerSummary],
    metas: &[&Meta],
    query: &str,
    member: Option<u32>,
) -> Selection {
    let q = query.trim();
    let listed: Vec<(&ContainerSummary, &Meta)> =
        containers.iter().zip(metas.iter().copied()).collect();
    let pick = |hits: Vec<&(&ContainerSummary, &Meta)>| -> Option<Selection> {
        let first = &hits.first()?.0.container.key;
        match hits.len() {
            1 => Some(Selection::Found(hits[0].0.index)),
            // Generations of one bare container's inode (a namespace's processes reaped
            // late beside the next one's): the newest.
            _ if hits.iter().all(|h| h.0.container.key.same_base(first)) => hits
                .iter()
                .max_by_key(|h| h.0.container.key.generation)
                .map(|h| Selection::Found(h.0.index)),
            _ => Some(Selection::Ambiguous(
                hits.iter().map(|(s, m)| describe(s, m)).collect(),
            )),
        }
    };
    let hits_by = |keep: &dyn Fn(&ContainerSummary, &Meta) -> bool| -> Vec<_> {
        listed.iter().filter(|(s, m)| keep(s, m)).collect()
    };
    // 1. exact name, 2. exact id
    if let Some(s) = pick(hits_by(&|_, m| m.name.as_deref() == Some(q))) {
        return s;
    }
    if let Some(s) = pick(hits_by(&|s, _| s.container.key.id == q)) {
        return s;
    }
    // 3. a member's host PID, or a pid-namespace inode
    if let Ok(n) = q.parse::<u64>() {
        if let Some(i) = member {
            if containers.iter().any(|s| s.index == i) {
                return Selection::Found(i);
            }
        }
        let sharing = hits_by(&|s, _| s.container.pidns as u64 == n);
        if sharing.len() > 1 {
            // One pod's shared pid namespace: the pod.
            let pods = super::pods::index(containers, metas);
            if let Some(p) = pods
                .iter()
                .find(|p| sharing.iter().all(|(s, _)| p.containers.contains(&s.index)))
            {
                return Selection::Pod(p.clone());
            }
        }
        if let Some(s) = pick(sharing) {
            return s;
        }
    }
    // 4. unique id prefix
    if let Some(s) = pick(hits_by(&|s, _| s.container.key.id.starts_with(q))) {
        return s;
    }
    // 5. a pod: name, namespace/name, id or UID, unique id prefix
    let pods = super::pods::index(containers, metas);
    if let Some(s) = select_pod(&pods, q) {
        return s;
    }
    let mut all: Vec<String> = listed.iter().map(|(s, m)| describe(s, m)).collect();
    all.extend(pods.iter().map(describe_pod));
    Selection::NotFound(all)
}

/// The pod `q` names: by name or namespace/name, then id or UID, then unique id prefix.
fn select_pod(pods: &[Pod], q: &str) -> Option<Selection> {
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
