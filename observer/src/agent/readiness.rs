//! The agent's word to the outside about its own state: /readyz (the `ready` flag the API
//! reads), the service manager (READY=1 with the start-up line, WATCHDOG=1 from the event
//! loop itself, STOPPING=1), the start-up line on stderr, and the state file that tells the
//! next agent whether this one stopped cleanly.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::time::Interval;

use super::{marker, say, systemd::Notifier, AgentConfig};
use crate::{
    api::{listeners::Servers, web::Web},
    table::Table,
};

pub(super) struct Readiness {
    ready: Arc<AtomicBool>,
    notifier: Notifier,
    started: Instant,
    /// Where this agent's start and clean stop are recorded, and the counts it found.
    marker: PathBuf,
    restarts: marker::Restarts,
    watchdog: Option<Interval>,
}

impl Readiness {
    /// Takes the service manager's settings from the environment; the agent's uptime counts
    /// from here.
    pub(super) fn new(ready: Arc<AtomicBool>) -> Readiness {
        Readiness {
            ready,
            notifier: Notifier::from_env(),
            started: Instant::now(),
            marker: PathBuf::new(),
            restarts: marker::Restarts::default(),
            watchdog: None,
        }
    }

    /// The table is complete: /readyz turns 200, the state file records this agent (the
    /// socket is ours from here: no other agent runs with this state file), the start-up
    /// line is written and the service manager told.
    pub(super) fn declare_ready(&mut self, cfg: &AgentConfig, servers: &Servers, table: &Table) {
        self.ready.store(true, Ordering::Release);
        self.marker = marker::path_for(&cfg.listen.socket);
        self.restarts = marker::on_start(&self.marker);
        let status = status_line(
            (table.len(), table.live_containers()),
            &cfg.listen.web,
            servers.tcp_addr,
            servers.metrics_addr,
            &cfg.listen.socket,
        );
        say(cfg, &status);
        self.notifier.ready(&status);
    }

    /// Starts the watchdog timer when the unit has one: its first tick is at once.
    pub(super) fn start_watchdog(&mut self) {
        self.watchdog = self.notifier.watchdog_every().map(tokio::time::interval);
    }

    /// Waits for the next watchdog tick; never without a watchdog.
    pub(super) async fn watchdog_due(&mut self) {
        match &mut self.watchdog {
            Some(w) => {
                w.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Tells the service manager the event loop is alive.
    pub(super) fn alive(&self) {
        self.notifier.alive();
    }

    /// A clean stop begins: /readyz says 503, the service manager is told.
    pub(super) fn stopping(&self) {
        self.ready.store(false, Ordering::Release);
        self.notifier.stopping();
    }

    /// The stop is done: the state file says so.
    pub(super) fn stopped(&self) {
        marker::on_clean_stop(&self.marker, self.restarts);
    }

    pub(super) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub(super) fn restarts(&self) -> marker::Restarts {
        self.restarts
    }
}

/// The start-up line: what the table holds and where the API answers.
fn status_line(
    (processes, containers): (usize, usize),
    web: &Web,
    tcp: SocketAddr,
    metrics: Option<SocketAddr>,
    socket: &Path,
) -> String {
    let scheme = web.scheme();
    let protected = web.describe();
    format!(
        "{processes} processes, {containers} containers; API on {scheme}://{tcp}{} and {}{}{}",
        if web.authenticates_every_client() {
            ""
        } else {
            " (metrics and status; process views on the socket only)"
        },
        socket.display(),
        metrics
            .map(|a| format!("; metrics on {scheme}://{a}/metrics"))
            .unwrap_or_default(),
        if protected.is_empty() {
            String::new()
        } else {
            format!(" ({protected})")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_up_line_says_where_each_view_answers() {
        let tcp: SocketAddr = "127.0.0.1:9100".parse().unwrap();
        let line = status_line(
            (12, 3),
            &Web::default(),
            tcp,
            None,
            Path::new("/run/o.sock"),
        );
        assert_eq!(
            line,
            "12 processes, 3 containers; API on http://127.0.0.1:9100 (metrics and status; \
             process views on the socket only) and /run/o.sock"
        );
        let metrics: SocketAddr = "0.0.0.0:9101".parse().unwrap();
        let line = status_line((1, 0), &Web::default(), tcp, Some(metrics), Path::new("s"));
        assert!(
            line.ends_with(" and s; metrics on http://0.0.0.0:9101/metrics"),
            "{line}"
        );
    }

    #[test]
    fn a_clean_stop_turns_readyz_off_and_is_recorded() {
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            eprintln!("skipped: STOPPING=1 would go to the service manager running the tests");
            return;
        }
        let dir = std::env::temp_dir().join(format!("observer-unit-ready-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ready = Arc::new(AtomicBool::new(true));
        let mut r = Readiness::new(ready.clone());
        r.marker = dir.join("a.state");
        r.restarts = marker::on_start(&r.marker);
        r.stopping();
        assert!(!ready.load(Ordering::Acquire));
        r.stopped();
        let next = marker::on_start(&r.marker);
        assert_eq!((next.starts, next.unclean), (2, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
