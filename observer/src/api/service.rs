//! What each API endpoint answers, independent of transport: the agent serves these over
//! HTTP; the CLI without an agent calls them on a one-shot /proc scan. Same code, same JSON.

use serde::{Deserialize, Serialize};

use crate::{
    table::snapshot::{Scope, Snapshot},
    views::{
        lists,
        model::{ContainerView, ProcessView, TreeView, ViewCtx, ZombieView},
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
            ApiError::Unavailable => self.to_string(),
        }
    }
}

fn snap(src: &dyn Source, scope: Scope) -> Result<Snapshot, ApiError> {
    src.snapshot(scope).ok_or(ApiError::Unavailable)
}

/// Resolves a user's container reference to a container index, valid in the returned
/// registry generation.
pub fn resolve(src: &dyn Source, ctx: &mut ViewCtx, query: &str) -> Result<(u32, u64), ApiError> {
    let s = snap(src, Scope::Containers)?;
    match select(ctx, &s.containers, query, |pid| src.member_of(pid)) {
        Selection::Found(i) => Ok((i, s.generation)),
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

/// The snapshot of one container and its index. Indices change when the table compacts its
/// registry (table/gc.rs): a snapshot from another generation than the resolution is
/// retried.
fn container_snapshot(
    src: &dyn Source,
    ctx: &mut ViewCtx,
    query: &str,
) -> Result<(Snapshot, u32), ApiError> {
    for _ in 0..3 {
        let (i, generation) = resolve(src, ctx, query)?;
        let s = snap(src, Scope::Container(i))?;
        if s.generation == generation {
            return Ok((s, i));
        }
    }
    Err(ApiError::Unavailable)
}

pub fn tree(src: &dyn Source, ctx: &mut ViewCtx, query: &str) -> Result<TreeView, ApiError> {
    let (s, i) = container_snapshot(src, ctx, query)?;
    let summary = s.container(i).cloned().ok_or_else(|| ApiError::NotFound {
        query: query.into(),
        candidates: vec![],
    })?;
    Ok(tree::build(ctx, &s, &summary))
}

pub fn zombies(src: &dyn Source, ctx: &mut ViewCtx) -> Result<Vec<ZombieView>, ApiError> {
    Ok(lists::zombies(ctx, &snap(src, Scope::Zombies)?))
}
