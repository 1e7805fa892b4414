//! The agent's listeners: TCP (127.0.0.1 by default), the root-only unix socket, and with
//! `--metrics-listen` a third that serves only /metrics, /healthz and /readyz (so Prometheus
//! can scrape from the network while the JSON API, which lists every command line, stays
//! local). A stale
//! socket file left by a crashed agent is replaced; a live one means another agent runs.
//! Each listener has its own connection limits (`http`), so a flood of TCP clients never
//! locks the CLI out of the unix socket. `--web-config` puts TLS and credentials on the two
//! TCP listeners (`web`); the unix socket's file mode is its access control.

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{bail, Context};
use tokio::net::{TcpListener, UnixListener};

use super::{
    http::{self, ConnCounts, ConnStats},
    AgentConfig,
};
use crate::api::{metrics_router, router, ApiState};

pub struct Servers {
    pub tcp_addr: SocketAddr,
    /// The metrics-only listener's address (`--metrics-listen`).
    pub metrics_addr: Option<SocketAddr>,
    socket: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stats: Vec<(&'static str, Arc<ConnStats>)>,
}

impl Servers {
    /// Connection counters per listener (`http`, `unix`).
    pub fn counts(&self) -> Vec<ConnCounts> {
        self.stats.iter().map(|(n, s)| s.counts(n)).collect()
    }

    pub fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

async fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            bail!(
                "another observer agent is already serving {}",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

pub async fn start(cfg: &AgentConfig, state: ApiState) -> anyhow::Result<Servers> {
    // TCP first: an address in use must not leave a socket file behind.
    let tcp = TcpListener::bind(cfg.listen).await.with_context(|| {
        format!(
            "listening on {} (choose another address with --listen)",
            cfg.listen
        )
    })?;
    let metrics = match cfg.metrics_listen {
        Some(a) => Some(TcpListener::bind(a).await.with_context(|| {
            format!("listening on {a} (choose another address with --metrics-listen)")
        })?),
        None => None,
    };
    let unix = bind_unix(&cfg.socket).await?;
    let tcp_addr = tcp.local_addr()?;
    let metrics_addr = metrics.as_ref().map(|m| m.local_addr()).transpose()?;
    let mut stats: Vec<(&'static str, Arc<ConnStats>)> =
        vec![("http", Arc::default()), ("unix", Arc::default())];
    let mut tasks = Vec::new();
    if let Some(m) = metrics {
        let s: Arc<ConnStats> = Arc::default();
        stats.push(("metrics", s.clone()));
        tasks.push(tokio::spawn(http::serve(
            m,
            cfg.web.guard(metrics_router(state.clone()), s.clone()),
            cfg.http_limits,
            s,
            cfg.web.tls.clone(),
        )));
    }
    let app = router(state);
    tasks.push(tokio::spawn(http::serve(
        tcp,
        cfg.web.guard(app.clone(), stats[0].1.clone()),
        cfg.http_limits,
        stats[0].1.clone(),
        cfg.web.tls.clone(),
    )));
    tasks.push(tokio::spawn(http::serve(
        unix,
        app,
        cfg.http_limits,
        stats[1].1.clone(),
        None,
    )));
    Ok(Servers {
        tcp_addr,
        metrics_addr,
        socket: cfg.socket.clone(),
        tasks,
        stats,
    })
}
