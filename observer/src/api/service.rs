//! What each API endpoint answers, independent of transport: the agent serves these over
//! HTTP; the CLI without an agent calls them on a one-shot /proc scan. Same code, same JSON.
//! Each view is assembled from snapshots and what the host says (assemble.rs).

use serde::{Deserialize, Serialize};

use super::assemble::{self, ViewCtx};
use crate::{
    containers::{pods::Pod, ContainerKey},
    store::{Bounds, Gens},
    table::{
        history::Ended,
        snapshot::{Scope, Snapshot},
        summary::ContainerSummary,
    },
    views::{
        endings::{self, EndedView, HistoryFilter, HistoryView},
        model::{ContainerView, ProcessView, TreeView, ZombieView},
        pods::{PodTreeView, PodView},
        select::Selection,
        text::Escaped,
    },
};

/// Where snapshots come from: the agent's table task, or a table built from one scan.
pub(crate) trait Source {
    fn snapshot(&self, scope: Scope) -> Option<Snapshot>;
    /// The container index of a host pid.
    fn member_of(&self, pid: u32) -> Option<u32>;
}

#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub(crate) enum ApiError {
    #[error("no container matches `{query}`")]
    NotFound {
        query: String,
        candidates: Vec<String>,
    },
    #[error("`{query}` matches several containers")]
    Ambiguous {
        query: String,
        candidates: Vec<String>,
    },
    /// The reference names a pod: its tree is the pod's (`/v1/pods/{ref}/tree`).
    #[error("`{query}` is a pod")]
    IsPod { query: String },
    /// A pod was asked for and the reference names a container in none.
    #[error("`{query}` is a container in no pod")]
    NotAPod { query: String },
    #[error("the agent is shutting down")]
    Unavailable,
    /// The containers changed under every try at a consistent answer (registry compactions).
    #[error("the containers changed while the answer was made; ask again")]
    Changed,
    /// A boot was asked for (`--boot`) and the container has no record in it: `boots`
    /// are those it has records in (0 this one, -1 the one before...).
    #[error("no record of `{query}` in boot {boot}")]
    NotInBoot {
        query: String,
        boot: i32,
        boots: Vec<i32>,
    },
}

impl Escaped<ApiError> {
    /// The message with the candidate list, as the CLI prints it: the query and the
    /// candidates' names escaped (an error is a text view too).
    pub(crate) fn explain(&self) -> String {
        match &**self {
            ApiError::NotFound { candidates, .. } if candidates.is_empty() => {
                format!("{}; no containers are running", **self)
            }
            ApiError::NotFound { candidates, .. } | ApiError::Ambiguous { candidates, .. } => {
                format!("{}; candidates:\n  {}", **self, candidates.join("\n  "))
            }
            ApiError::NotInBoot { boots, .. } if boots.is_empty() => {
                format!("{}; it has none in any boot the agent knows of", **self)
            }
            ApiError::NotInBoot { boots, .. } => {
                let b: Vec<String> = boots.iter().map(i32::to_string).collect();
                format!("{}; it has records in boot {}", **self, b.join(", "))
            }
            e @ (ApiError::IsPod { .. }
            | ApiError::NotAPod { .. }
            | ApiError::Unavailable
            | ApiError::Changed) => e.to_string(),
        }
    }
}

pub(super) fn snap(src: &dyn Source, scope: Scope) -> Result<Snapshot, ApiError> {
    src.snapshot(scope).ok_or(ApiError::Unavailable)
}

/// What a reference names.
pub(crate) enum Target {
    Container(u32),
    Pod(Pod),
}

/// Resolves a user's container or pod reference; container indices are valid in the
/// returned registry generation.
pub(crate) fn resolve(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    query: &str,
) -> Result<(Target, u64), ApiError> {
    let s = snap(src, Scope::Registry)?;
    match assemble::select(ctx, &s.containers, query, |pid| src.member_of(pid)) {
        Selection::Found(i) => Ok((Target::Container(i), s.generation)),
        Selection::Pod(p) => Ok((Target::Pod(p), s.generation)),
        Selection::Ambiguous(candidates) => Err(ApiError::Ambiguous {
            query: query.into(),
            candidates,
        }),
        Selection::NotFound(candidates) => Err(ApiError::NotFound {
            query: query.into(),
            candidates,
        }),
    }
}

pub(crate) fn containers(
    src: &dyn Source,
    ctx: &mut ViewCtx,
) -> Result<Vec<ContainerView>, ApiError> {
    Ok(assemble::containers(ctx, &snap(src, Scope::Containers)?))
}

pub(crate) fn processes(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    container: Option<&str>,
) -> Result<Vec<ProcessView>, ApiError> {
    let s = match container {
        Some(q) => container_snapshot(src, ctx, q)?.0,
        None => snap(src, Scope::All)?,
    };
    Ok(assemble::ps(ctx, &s))
}

/// The snapshot of what `query` names (one container's or one pod's processes). Indices
/// change when the table compacts its registry (table/gc.rs): a snapshot from another
/// generation than the resolution is retried.
pub(super) fn container_snapshot(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    query: &str,
) -> Result<(Snapshot, Target), ApiError> {
    for _ in 0..3 {
        let (t, generation) = resolve(src, ctx, query)?;
        let scope = match &t {
            Target::Container(i) => Scope::Container(*i),
            Target::Pod(p) => Scope::Pod(p.containers.clone()),
        };
        let s = snap(src, scope)?;
        if s.generation == generation {
            return Ok((s, t));
        }
    }
    Err(ApiError::Changed)
}

/// A container's tree; a pod reference answers `IsPod` (its tree is `pod_tree`).
pub(crate) fn tree(src: &dyn Source, ctx: &mut ViewCtx, query: &str) -> Result<TreeView, ApiError> {
    let (s, t) = container_snapshot(src, ctx, query)?;
    let i = match t {
        Target::Container(i) => i,
        Target::Pod(_) => {
            return Err(ApiError::IsPod {
                query: query.into(),
            })
        }
    };
    let summary = s.container(i).cloned().ok_or_else(|| ApiError::NotFound {
        query: query.into(),
        candidates: vec![],
    })?;
    Ok(assemble::tree(ctx, &s, &summary))
}

/// A pod's tree: the pod `query` names, or the pod of the container it names.
pub(crate) fn pod_tree(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    query: &str,
) -> Result<PodTreeView, ApiError> {
    for _ in 0..3 {
        let (s, t) = container_snapshot(src, ctx, query)?;
        let pod = match t {
            Target::Pod(p) => p,
            Target::Container(i) => {
                let all = snap(src, Scope::Registry)?;
                if all.generation != s.generation {
                    continue;
                }
                let list = assemble::pod_index(ctx, &all.containers);
                let Some(p) = list.into_iter().find(|p| p.containers.contains(&i)) else {
                    return Err(ApiError::NotAPod {
                        query: query.into(),
                    });
                };
                let s = snap(src, Scope::Pod(p.containers.clone()))?;
                if s.generation != all.generation {
                    continue;
                }
                return Ok(assemble::pod_tree(ctx, &s, &p));
            }
        };
        return Ok(assemble::pod_tree(ctx, &s, &pod));
    }
    Err(ApiError::Changed)
}

pub(crate) fn pods(src: &dyn Source, ctx: &mut ViewCtx) -> Result<Vec<PodView>, ApiError> {
    let containers = snap(src, Scope::Containers)?;
    let zombies = snap(src, Scope::Zombies)?;
    Ok(assemble::pods(ctx, &containers, &zombies))
}

pub(crate) fn zombies(src: &dyn Source, ctx: &mut ViewCtx) -> Result<Vec<ZombieView>, ApiError> {
    Ok(assemble::zombies(ctx, &snap(src, Scope::Zombies)?))
}

/// What a history or `why` reference names: a container's key, its summary while it runs,
/// and which of its stored generations answer.
pub(crate) struct Named {
    pub(crate) key: ContainerKey,
    pub(crate) summary: Option<ContainerSummary>,
    /// `Gens::All` but for a container only the history store knows by the name asked (a
    /// bare container's earlier generation, the agent's memory knowing none by it): the
    /// generations that bore the name, and only the store answers for them — the memory's
    /// history of the same inode is another namespace's (issue #26).
    pub(crate) gens: Gens,
}

impl Named {
    fn of(key: ContainerKey, summary: Option<ContainerSummary>) -> Named {
        Named {
            key,
            summary,
            gens: Gens::All,
        }
    }
}

/// The container a history or `why` reference names: a container the registry has, or
/// one only a history remains of (its runtime removed it and the registry let it go),
/// by id, id prefix or the name it last had.
pub(super) fn history_key(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    query: &str,
) -> Result<Named, ApiError> {
    // The container's own snapshot (from its member set, checked to be of the registry
    // generation the reference was resolved in), not every container's summary.
    match container_snapshot(src, ctx, query) {
        Ok((s, Target::Container(i))) => match s.container(i) {
            Some(c) => Ok(Named::of(c.container.key.clone(), Some(c.clone()))),
            // Its last process ended between the two looks: only its history remains.
            None => ended_container_key(src, ctx, query, Vec::new()),
        },
        Ok((_, Target::Pod(_))) => Err(ApiError::IsPod {
            query: query.into(),
        }),
        Err(ApiError::NotFound { candidates, .. }) => {
            ended_container_key(src, ctx, query, candidates)
        }
        Err(e) => Err(e),
    }
}

/// The key of a container only a history remains of (in memory, or in the history
/// store), by id, id prefix or last name. What the memory knows answers for it; what only
/// the store knows, with the generations the reference named.
fn ended_container_key(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    query: &str,
    candidates: Vec<String>,
) -> Result<Named, ApiError> {
    let keys = snap(src, Scope::History(Vec::new()))?.history_keys;
    let q = query.trim();
    let mut hits: Vec<Named> = Vec::new();
    let found = keys.into_iter().filter(|k| {
        k.id == q
            || (q.len() >= 4 && k.id.starts_with(q))
            || ctx.meta(k, None, None).name.as_deref() == Some(q)
    });
    // Generations of one bare container's inode (containers::ContainerKey): the newest.
    for k in found {
        match hits.iter_mut().find(|h| h.key.same_base(&k)) {
            Some(h) if h.key.generation < k.generation => h.key = k,
            Some(_) => {}
            None => hits.push(Named::of(k, None)),
        }
    }
    for f in ctx.store.map(|s| s.find(q)).unwrap_or_default() {
        if !hits.iter().any(|h| h.key.same_base(&f.key)) {
            hits.push(Named {
                gens: f.gens,
                ..Named::of(f.key, None)
            });
        }
    }
    match hits.len() {
        1 => Ok(hits.into_iter().next().expect("one")),
        0 => Err(ApiError::NotFound {
            query: query.into(),
            candidates,
        }),
        _ => Err(ApiError::Ambiguous {
            query: query.into(),
            candidates: hits.iter().map(|h| h.key.id.clone()).collect(),
        }),
    }
}

/// An ended process's view, with the time its ages are counted from (now, on the clock
/// of the boot it ended in).
pub(super) struct Dated {
    pub(super) view: EndedView,
    pub(super) now_ns: u64,
}

/// The ended processes of a container, from memory and from the history store (an entry
/// in both once), oldest first; and the evictions from the in-memory histories. `gens`:
/// its stored generations that answer (`Named::gens`: when not all, the store alone).
/// `boot`: only of that boot (0 this one, -1 the one before...); of a bare container's
/// inode, the generation that has entries in it.
pub(super) fn dated_entries(
    src: &dyn Source,
    ctx: &ViewCtx,
    key: &ContainerKey,
    gens: &Gens,
    boot: Option<i32>,
) -> Result<(Vec<Dated>, u64), ApiError> {
    let s = snap(src, Scope::History(vec![key.clone()]))?;
    let mut seen = rustc_hash::FxHashSet::default();
    let mut out: Vec<Dated> = Vec::new();
    let memory = s
        .history
        .iter()
        .filter(|_| *gens == Gens::All && boot.is_none_or(|b| b == 0));
    for e in memory.flat_map(|(_, es)| es) {
        seen.insert((e.pid, e.start_ns));
        out.push(Dated {
            view: endings::ended_view(e, ctx.now_ns),
            now_ns: ctx.now_ns,
        });
    }
    let bounds = generation_bounds(&s, key).filter(|_| *gens == Gens::All);
    let stored = ctx.store.map(|st| match (boot, bounds) {
        (Some(0) | None, Some(b)) => st.entries_within(key, b),
        _ => st.entries_of(key, gens, boot),
    });
    for st in stored.unwrap_or_default() {
        if st.boot == 0 && seen.contains(&(st.ended.pid, st.ended.start_ns)) {
            continue;
        }
        let mut view = endings::ended_view(&st.ended, st.now_ns);
        view.boot = st.boot;
        out.push(Dated {
            view,
            now_ns: st.now_ns,
        });
    }
    out.sort_by_key(|d| (d.view.boot, d.view.end_time_ns));
    Ok((out, s.history_evicted))
}

/// The bounds of a bare container's generation when the table knows another of its inode
/// (else None: the store's newest generation answers): its processes started after its
/// generation and up to the next one the table knows, under the init its entries name.
/// The store's entries within them answer for it, whichever of the store's generations
/// has them: the store's newest may be a later namespace's, and an earlier agent's entries
/// (before a restart) only the store has.
fn generation_bounds(s: &Snapshot, key: &ContainerKey) -> Option<Bounds> {
    let next = s
        .history_keys
        .iter()
        .filter(|k| k.same_base(key) && k.generation > key.generation)
        .map(|k| k.generation)
        .min();
    (key.generation > 0 || next.is_some()).then(|| Bounds {
        after: key.generation,
        until: next,
        init_pid: s
            .history
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, es)| es)
            .find_map(Ended::init_pid),
    })
}

/// The processes of a container that already ended (`observer history`).
pub(crate) fn history(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    query: &str,
    filter: &HistoryFilter,
) -> Result<HistoryView, ApiError> {
    let Named { key, gens, .. } = history_key(src, ctx, query)?;
    let (entries, evicted_total) = dated_entries(src, ctx, &key, &gens, filter.boot)?;
    let entries = entries
        .into_iter()
        .filter(|d| filter.keep(&d.view, d.now_ns))
        .map(|d| d.view)
        .collect();
    let stored = |ctx: &ViewCtx| ctx.store.and_then(|s| s.name_of(&key, &gens));
    // The runtime's name of the key is the memory's generation's.
    let name = match &gens {
        Gens::All => ctx.meta(&key, None, None).name.or_else(|| stored(ctx)),
        Gens::Named(_) => stored(ctx),
    };
    Ok(HistoryView {
        runtime: key.runtime.as_str().to_string(),
        id: key.id,
        name,
        entries,
        evicted_total,
    })
}

/// `observer why <container|pod|pid>` (reasons.rs).
pub(crate) use super::reasons::why;

#[cfg(test)]
mod tests {
    use super::ApiError;
    use crate::views::tests::{assert_clean, esc, h};

    /// An error is a text view too: the query and the candidates show escaped.
    #[test]
    fn error_messages_escape_the_query_and_the_candidates() {
        let e = ApiError::NotFound {
            query: h("query"),
            candidates: vec![h("one"), h("two")],
        };
        let out = esc(e).explain();
        assert_clean("not found", &out);
        assert_eq!(out.lines().count(), 3, "one line per candidate: {out}");
        let out = esc(ApiError::IsPod { query: h("pod") }).explain();
        assert_clean("is a pod", &out);
        assert_eq!(out.lines().count(), 1);
    }
}
