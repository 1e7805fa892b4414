//! The agent's listeners (the agent starts them first): TCP (127.0.0.1 by default), the root-only unix socket, and with
//! `--metrics-listen` a third that serves only /metrics, /healthz and /readyz (so Prometheus
//! can scrape from the network). The process views list every command line: on TCP they
//! answer only when `--web-config` makes every client authenticate, since /proc mounted
//! with `hidepid` hides them from other local users. A stale
//! socket file left by a crashed agent is replaced; a live one means another agent runs.
//! Each listener has its own connection limits (`connections`), so a flood of TCP clients never
//! locks the CLI out of the unix socket. `--web-config` puts TLS and credentials on the two
//! TCP listeners (`web`); the unix socket's file mode is its access control.

use std::{
    net::SocketAddr,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{bail, Context};
use tokio::net::{TcpListener, UnixListener};

use super::{
    connections::{self, ConnStats, Limits},
    metrics_router, public_router, router,
    web::Web,
    ApiState,
};
use crate::views::status::ConnCounts;

/// Where and how the agent listens: `--listen`, `--metrics-listen`, `--socket`, the
/// connection limits and `--web-config`.
#[derive(Clone)]
pub(crate) struct ListenConfig {
    pub(crate) listen: SocketAddr,
    /// A listener with only /metrics, /healthz and /readyz.
    pub(crate) metrics_listen: Option<SocketAddr>,
    pub(crate) socket: PathBuf,
    pub(crate) limits: Limits,
    /// TLS and credentials for the TCP listeners.
    pub(crate) web: Web,
}

pub(crate) struct Servers {
    pub(crate) tcp_addr: SocketAddr,
    /// The metrics-only listener's address (`--metrics-listen`).
    pub(crate) metrics_addr: Option<SocketAddr>,
    socket: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stats: Vec<(&'static str, Arc<ConnStats>)>,
}

impl Servers {
    /// Connection counters per listener (`http`, `unix`).
    pub(crate) fn counts(&self) -> Vec<ConnCounts> {
        self.stats.iter().map(|(n, s)| s.counts(n)).collect()
    }

    pub(crate) fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Binds the unix socket so that it is never reachable with another mode than 0600: it is
/// bound inside a fresh 0700 directory beside `path`, made 0600 there, then hard-linked into
/// place — link(2) fails when anything is at `path` by then, so a socket or file that
/// appeared meanwhile is never replaced. A live socket at `path` means another agent runs;
/// a stale one (or a symlink: removing it leaves its target alone) is removed first;
/// anything else there stops the agent.
async fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_socket() && tokio::net::UnixStream::connect(path).await.is_ok() {
            bail!(
                "another observer agent is already serving {}",
                path.display()
            );
        }
        if !(m.file_type().is_socket() || m.file_type().is_symlink()) {
            bail!(
                "{} exists and is not a socket (choose another path with --socket)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let staging = private_dir(dir)?;
    let staged = staging.join("s");
    let bound = (|| {
        let l = UnixListener::bind(&staged)
            .with_context(|| format!("binding {} (for {})", staged.display(), path.display()))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::hard_link(&staged, path).with_context(|| {
            format!(
                "placing the socket at {} (another agent starting?)",
                path.display()
            )
        })?;
        anyhow::Ok(l)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&staging);
    bound
}

/// A new directory in `dir` that only root can enter (mode 0700 at creation, so no window).
fn private_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let mut last = None;
    for attempt in 0..8u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = dir.join(format!(".{:08x}", nanos ^ std::process::id() ^ attempt));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e).with_context(|| format!("creating {}", p.display())),
        }
    }
    Err(last.expect("tried")).with_context(|| format!("creating a directory in {}", dir.display()))
}

pub(crate) async fn start(cfg: &ListenConfig, state: ApiState) -> anyhow::Result<Servers> {
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
        tasks.push(tokio::spawn(connections::serve(
            m,
            cfg.web.guard(metrics_router(state.clone()), s.clone()),
            cfg.limits,
            s,
            cfg.web.tls.clone(),
        )));
    }
    // The process views answer on TCP only when every client there authenticates.
    let tcp_app = if cfg.web.authenticates_every_client() {
        router(state.clone())
    } else {
        public_router(state.clone(), &cfg.socket)
    };
    let app = router(state);
    tasks.push(tokio::spawn(connections::serve(
        tcp,
        cfg.web.guard(tcp_app, stats[0].1.clone()),
        cfg.limits,
        stats[0].1.clone(),
        cfg.web.tls.clone(),
    )));
    tasks.push(tokio::spawn(connections::serve(
        unix,
        app,
        cfg.limits,
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

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeSet,
        os::unix::fs::MetadataExt,
        sync::atomic::{AtomicBool, Ordering},
    };

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A directory of the test's own, removed when it ends (passing or failing).
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(what: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("observer-unit-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    #[test]
    fn the_socket_never_appears_with_another_mode_than_0600() {
        // A watcher stats the path in a tight loop while the socket is bound again and
        // again. Bound in place and then chmod-ed, it saw the umask's mode (0755) within
        // a few hundred binds; bound aside and linked into place, only 0600 is ever there.
        let scratch = scratch("bind");
        let dir = &scratch.0;
        let path = dir.join("observer.sock");
        let stop = AtomicBool::new(false);
        let rt = runtime();
        let seen = std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let mut seen = BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(m) = std::fs::symlink_metadata(&path) {
                        seen.insert(m.mode() & 0o7777);
                    }
                }
                seen
            });
            for _ in 0..500 {
                let l = rt.block_on(bind_unix(&path)).unwrap();
                drop(l);
                std::fs::remove_file(&path).unwrap();
            }
            stop.store(true, Ordering::Relaxed);
            watcher.join().unwrap()
        });
        assert!(seen.contains(&0o600), "the watcher never saw the socket");
        let modes: Vec<String> = seen.iter().map(|m| format!("{m:o}")).collect();
        assert_eq!(modes, ["600"], "modes the socket was seen with");
        let left: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        assert!(left.is_empty(), "staging directories left behind: {left:?}");
    }

    #[test]
    fn a_live_socket_stops_the_agent_and_stale_ones_and_links_are_replaced() {
        let scratch = scratch("stale");
        let dir = &scratch.0;
        let path = dir.join("observer.sock");
        let rt = runtime();
        let live = rt.block_on(bind_unix(&path)).unwrap();
        let err = rt.block_on(bind_unix(&path)).unwrap_err().to_string();
        assert!(err.contains("another observer agent"), "{err}");
        // Its listener gone, the file is stale: replaced.
        drop(live);
        let again = rt.block_on(bind_unix(&path)).unwrap();
        drop(again);
        // A symlink is removed, never what it points to.
        let target = dir.join("target");
        std::fs::write(&target, b"keep").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        drop(rt.block_on(bind_unix(&path)).unwrap());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket());
        // A regular file is not the agent's to remove.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"mine").unwrap();
        let err = rt.block_on(bind_unix(&path)).unwrap_err().to_string();
        assert!(err.contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"mine");
    }
}
