//! `--web-config`: TLS and authentication on the agent's TCP listeners (the API's
//! `--listen` and the metrics listener), configured like Prometheus exporters. The unix
//! socket is not concerned: its file mode (root only) is its access control.

pub(crate) mod auth;
pub(crate) mod file;
mod throttle;
mod tls;

use std::{path::Path, sync::Arc};

use anyhow::anyhow;
use axum::{
    extract::{Request, State},
    http::{header, HeaderName, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Router,
};
use tokio_rustls::TlsAcceptor;

use super::connections::{ConnStats, Peer};
use auth::Credentials;

/// A loaded web config: everything checked and read before the agent listens.
#[derive(Clone, Default)]
pub(crate) struct Web {
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) credentials: Option<Arc<Credentials>>,
    /// The TLS handshake requires a client certificate and verifies it
    /// (`RequireAndVerifyClientCert`).
    client_certs_required: bool,
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
}

impl Web {
    /// Reads, checks and loads `path` (certificates, keys, CA and hashes included); the
    /// error names the file and the key or file at fault.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Web> {
        let at = |e: anyhow::Error| anyhow!("web config {}: {e}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| at(e.into()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let s = file::parse(&text, dir).map_err(at)?;
        let tls = s.tls.as_ref().map(tls::acceptor).transpose().map_err(at)?;
        let client_certs_required = s
            .tls
            .as_ref()
            .is_some_and(|t| t.client_auth == file::ClientAuth::Require);
        let credentials = (!s.users.is_empty() || !s.tokens.is_empty())
            .then(|| Arc::new(Credentials::new(s.users, s.tokens)));
        let headers = s
            .headers
            .iter()
            .map(|(n, v)| {
                Ok((
                    HeaderName::from_bytes(n.as_bytes())?,
                    HeaderValue::from_str(v)?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(at)?;
        Ok(Web {
            tls,
            credentials,
            client_certs_required,
            headers: Arc::new(headers),
        })
    }

    /// Whether every client of the TCP listeners proves who it is (a password or token, or
    /// a client certificate the handshake requires and verifies). Only then does the JSON
    /// API's process views answer on TCP: they list every process's command line, which
    /// /proc mounted with `hidepid` hides from other users.
    pub(crate) fn authenticates_every_client(&self) -> bool {
        self.credentials.is_some() || self.client_certs_required
    }

    /// `http` or `https`.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// What protects the TCP listeners, for the start-up line ("" when nothing does).
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.tls.is_some() {
            parts.push("TLS".to_string());
        }
        if let Some(c) = &self.credentials {
            parts.push(c.describe());
        }
        parts.join(", ")
    }

    /// `router` behind this config's credentials and response headers; refusals are
    /// counted in `stats`.
    pub(crate) fn guard(&self, router: Router, stats: Arc<ConnStats>) -> Router {
        if self.credentials.is_none() && self.headers.is_empty() {
            return router;
        }
        let g = Guard {
            credentials: self.credentials.clone(),
            headers: self.headers.clone(),
            stats,
        };
        router.layer(axum::middleware::from_fn_with_state(g, guard))
    }
}

#[derive(Clone)]
struct Guard {
    credentials: Option<Arc<Credentials>>,
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
    stats: Arc<ConnStats>,
}

async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let open = matches!(req.uri().path(), "/healthz" | "/readyz");
    let peer = req.extensions().get::<Peer>().and_then(|p| p.0);
    let allowed = match &g.credentials {
        Some(c) if !open => match c.remembered(req.headers()) {
            Some(_) => Some(true),
            // Nothing to check: 401, and not a failed attempt.
            None if !Credentials::presents(req.headers()) => Some(false),
            // Past its failures: refused without a bcrypt.
            None if !c.throttle.allows(peer) => None,
            None => {
                let (c, h) = (c.clone(), req.headers().clone());
                let ok = tokio::task::spawn_blocking(move || {
                    let who = c.check(&h);
                    if who.is_none() {
                        c.throttle.failed(peer);
                    }
                    who
                })
                .await
                .ok()
                .flatten()
                .is_some();
                Some(ok)
            }
        },
        _ => Some(true),
    };
    let mut resp = if allowed == Some(true) {
        next.run(req).await
    } else if allowed.is_none() {
        g.stats
            .unauthorized
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut r = (StatusCode::TOO_MANY_REQUESTS, "too many failed attempts\n").into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        r
    } else {
        g.stats
            .unauthorized
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        log::debug!(
            "refused {} {}: no valid credentials",
            req.method(),
            req.uri().path()
        );
        let mut r = (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
        for c in g.credentials.iter().flat_map(|c| c.challenges()) {
            r.headers_mut().append(header::WWW_AUTHENTICATE, c);
        }
        r
    };
    for (n, v) in g.headers.iter() {
        resp.headers_mut().insert(n.clone(), v.clone());
    }
    resp
}
