//! Stopping: SIGINT and SIGTERM end the event loop, then the agent stops in order —
//! /readyz off and the service manager told, the programs detached, the clean stop
//! recorded — before the listeners close and the socket is removed (`run`).

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::readiness::Readiness;
use crate::probes::Probes;

/// SIGINT and SIGTERM, caught from before the listeners start: one during start-up is then
/// a clean stop once the event loop runs (socket removed), not the default action's kill
/// mid-way.
pub(super) struct Signals {
    sigint: Signal,
    sigterm: Signal,
}

impl Signals {
    pub(super) fn catch() -> std::io::Result<Signals> {
        Ok(Signals {
            sigint: signal(SignalKind::interrupt())?,
            sigterm: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for either.
    pub(super) async fn stop_asked(&mut self) {
        tokio::select! {
            _ = self.sigint.recv() => {}
            _ = self.sigterm.recv() => {}
        }
    }
}

/// The event loop has ended: stops the agent's side of the kernel.
pub(super) fn shutdown(readiness: &Readiness, probes: Probes) {
    readiness.stopping();
    drop(probes);
    readiness.stopped();
}
