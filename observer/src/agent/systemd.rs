//! The service manager's side (systemd `Type=notify`, sd_notify(3) via the sd-notify crate):
//! READY=1 once the programs are attached and the first scan is applied — the moment
//! /readyz turns 200, so `systemctl start` returns with a complete table — STOPPING=1 on a
//! clean stop, and WATCHDOG=1 from the event loop itself when the unit sets WatchdogSec, so
//! a wedged loop gets the agent restarted. Without NOTIFY_SOCKET each call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

pub(crate) struct Notifier {
    watchdog: Option<Duration>,
}

impl Notifier {
    pub(crate) fn from_env() -> Notifier {
        Notifier {
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// How often the event loop must say it is alive: half the unit's WatchdogSec, as
    /// sd_watchdog_enabled(3) advises; None without a watchdog.
    pub(crate) fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog
            .map(|d| (d / 2).max(Duration::from_millis(10)))
    }

    pub(crate) fn ready(&self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub(crate) fn alive(&self) {
        send(&[NotifyState::Watchdog]);
    }

    pub(crate) fn stopping(&self) {
        send(&[NotifyState::Stopping]);
    }
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("notifying the service manager (NOTIFY_SOCKET): {e}");
    }
}
