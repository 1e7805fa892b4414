//! What each API endpoint answers, independent of transport: the agent serves these over
//! HTTP; the CLI without an agent calls them on a one-shot /proc scan. Same code, same JSON.

use serde::{Deserialize, Serialize};

use crate::{
    containers::pods::Pod,
    table::snapshot::{Scope, Snapshot},
    views::{
        lists,
        model::{ContainerView, ProcessView, TreeView, ViewCtx, ZombieView},
        pods::{self, PodTreeView, PodView},
        select::{select, Selection},
        tree,
    },
};

/// Where snapshots come from: the agent's table task, or a table built from one scan.
pub trait Source {
    fn snapshot(&self, scope: Scope) -> Option<Snapshot>;
    /// The container index of a host pid.
    fn member_of(&self, pid: u32) -> Option<u32>;
}

#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum ApiError {
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
}

impl ApiError {
    /// The message with the candidate list, as the CLI prints it.
    pub fn explain(&self) -> String {
        match self {
            ApiError::NotFound { candidates, .. } if candidates.is_empty() => {
                format!("{self}; no containers are running")
            }
            ApiError::NotFound { candidates, .. } | ApiError::Ambiguous { candidates, .. } => {
                format!("{self}; candidates:\n  {}", candidates.join("\n  "))
            }
            ApiError::IsPod { .. } | ApiError::NotAPod { .. } | ApiError::Unavailable => {
                self.to_string()
            }
        }
    }
}

fn snap(src: &dyn Source, scope: Scope) -> Result<Snapshot, ApiError> {
    src.snapshot(scope).ok_or(ApiError::Unavailable)
}

/// What a reference names.
pub enum Target {
    Container(u32),
    Pod(Pod),
}

/// Resolves a user's container or pod reference; container indices are valid in the
/// returned registry generation.
pub fn resolve(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    query: &str,
) -> Result<(Target, u64), ApiError> {
    let s = snap(src, Scope::Containers)?;
    match select(ctx, &s.containers, query, |pid| src.member_of(pid)) {
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

pub fn containers(src: &dyn Source, ctx: &mut ViewCtx) -> Result<Vec<ContainerView>, ApiError> {
    Ok(lists::containers(ctx, &snap(src, Scope::Containers)?))
}

pub fn processes(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    container: Option<&str>,
) -> Result<Vec<ProcessView>, ApiError> {
    let s = match container {
        Some(q) => container_snapshot(src, ctx, q)?.0,
        None => snap(src, Scope::All)?,
    };
    Ok(lists::ps(ctx, &s))
}

/// The snapshot of what `query` names (one container's or one pod's processes). Indices
/// change when the table compacts its registry (table/gc.rs): a snapshot from another
/// generation than the resolution is retried.
fn container_snapshot(
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
    Err(ApiError::Unavailable)
}

/// A container's tree; a pod reference answers `IsPod` (its tree is `pod_tree`).
pub fn tree(src: &dyn Source, ctx: &mut ViewCtx, query: &str) -> Result<TreeView, ApiError> {
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
    Ok(tree::build(ctx, &s, &summary))
}

/// A pod's tree: the pod `query` names, or the pod of the container it names.
pub fn pod_tree(src: &dyn Source, ctx: &mut ViewCtx, query: &str) -> Result<PodTreeView, ApiError> {
    for _ in 0..3 {
        let (s, t) = container_snapshot(src, ctx, query)?;
        let pod = match t {
            Target::Pod(p) => p,
            Target::Container(i) => {
                let all = snap(src, Scope::Containers)?;
                if all.generation != s.generation {
                    continue;
                }
                let list = pods::index(ctx, &all.containers);
                let Some(p) = list.into_iter().find(|p| p.containers.contains(&i)) else {
                    return Err(ApiError::NotAPod {
                        query: query.into(),
                    });
                };
                let s = snap(src, Scope::Pod(p.containers.clone()))?;
                if s.generation != all.generation {
                    continue;
                }
                return Ok(pods::build(ctx, &s, &p));
            }
        };
        return Ok(pods::build(ctx, &s, &pod));
    }
    Err(ApiError::Unavailable)
}

pub fn pods(src: &dyn Source, ctx: &mut ViewCtx) -> Result<Vec<PodView>, ApiError> {
    let containers = snap(src, Scope::Containers)?;
    let zombies = snap(src, Scope::Zombies)?;
    Ok(pods::pods(ctx, &containers, &zombies))
}

pub fn zombies(src: &dyn Source, ctx: &mut ViewCtx) -> Result<Vec<ZombieView>, ApiError> {
    Ok(lists::zombies(ctx, &snap(src, Scope::Zombies)?))
}
