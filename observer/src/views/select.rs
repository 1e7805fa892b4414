//! Resolving what a user typed for `<container>`: a name, a full or unique-prefix id, a pod
//! name, a pid-namespace inode, or the host PID of any member.

use super::model::{meta_of, short_id, ViewCtx};
use crate::table::summary::ContainerSummary;

#[derive(Debug, PartialEq, Eq)]
pub enum Selection {
    Found(u32),
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
    let pick = |ctx: &mut ViewCtx, hits: Vec<&ContainerSummary>| -> Option<Selection> {
        match hits.len() {
            0 => None,
            1 => Some(Selection::Found(hits[0].index)),
            _ => Some(Selection::Ambiguous(
                hits.iter().map(|s| describe(ctx, s)).collect(),
            )),
        }
    };
    let names: Vec<(u32, Option<String>, Option<String>)> = containers
        .iter()
        .map(|s| {
            let m = meta_of(ctx, s);
            (s.index, m.name, m.pod)
        })
        .collect();
    let by_index = |i: u32| containers.iter().find(|s| s.index == i).expect("listed");
    // 1. exact name, 2. exact id
    let hits: Vec<_> = names
        .iter()
        .filter(|(_, n, _)| n.as_deref() == Some(q))
        .map(|(i, _, _)| by_index(*i))
        .collect();
    if let Some(s) = pick(ctx, hits) {
        return s;
    }
    if let Some(s) = pick(
        ctx,
        containers
            .iter()
            .filter(|s| s.container.key.id == q)
            .collect(),
    ) {
        return s;
    }
    // 3. a member's host PID, or a pid-namespace inode
    if let Ok(n) = q.parse::<u64>() {
        if let Some(i) = u32::try_from(n).ok().and_then(&member_of) {
            if containers.iter().any(|s| s.index == i) {
                return Selection::Found(i);
            }
        }
        if let Some(s) = pick(
            ctx,
            containers
                .iter()
                .filter(|s| s.container.pidns as u64 == n)
                .collect(),
        ) {
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
    let hits: Vec<_> = names
        .iter()
        .filter(|(_, _, p)| p.as_deref() == Some(q))
        .map(|(i, _, _)| by_index(*i))
        .collect();
    if let Some(s) = pick(ctx, hits) {
        return s;
    }
    Selection::NotFound(containers.iter().map(|s| describe(ctx, s)).collect())
}
