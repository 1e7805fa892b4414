//! The query strings of the history and `why` routes.

use serde::Deserialize;

/// `?since=10m&failed=true&comm=sh&boot=-1&exec=true` of `/v1/containers/{ref}/history`.
#[derive(Deserialize)]
pub(super) struct HistoryQuery {
    since: Option<String>,
    #[serde(default)]
    failed: bool,
    comm: Option<String>,
    boot: Option<i32>,
    #[serde(default)]
    exec: bool,
}

/// A `?since=` that is not a duration (400).
#[derive(Debug, thiserror::Error)]
#[error("since={since}: {source} (e.g. 10m, 90s, 2h)\n")]
pub(super) struct BadSince {
    since: String,
    source: humantime::DurationError,
}

impl HistoryQuery {
    pub(super) fn filter(self) -> Result<crate::views::endings::HistoryFilter, BadSince> {
        let since_s = match self.since {
            Some(s) => Some(
                humantime::parse_duration(&s)
                    .map_err(|source| BadSince { since: s, source })?
                    .as_secs_f64(),
            ),
            None => None,
        };
        Ok(crate::views::endings::HistoryFilter {
            since_s,
            failed: self.failed,
            comm: self.comm,
            boot: self.boot,
            exec: self.exec,
        })
    }
}

/// `?boot=-1` of `/v1/why/{ref}`: the boot to answer from (default: this one when the
/// container is known in it, else the latest it has records in).
#[derive(Deserialize)]
pub(super) struct WhyQuery {
    pub(super) boot: Option<i32>,
}
