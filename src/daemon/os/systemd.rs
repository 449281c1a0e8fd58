//! systemd integration through sd-notify: `READY=1` once the hub serves,
//! `STOPPING=1` when shutdown begins, and `WATCHDOG=1` pings sent by the
//! health monitor's loop (see `monitor::HealthMonitor::run`) only while check
//! cycles complete, so a wedged monitor lets systemd restart the daemon.
//!
//! Everything here is a no-op when the daemon was not started by systemd
//! (`NOTIFY_SOCKET` unset) or the unit has no `WatchdogSec` (`WATCHDOG_USEC`
//! unset). A failed notification is logged at debug level and otherwise
//! ignored: systemd integration never stops the daemon.
//!
//! The example unit is `contrib/warden.service`.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(state: NotifyState<'_>) {
    if let Err(error) = sd_notify::notify(&[state]) {
        tracing::debug!(%error, "sd_notify failed");
    }
}

/// Tells systemd the daemon is serving (`Type=notify` units wait for this).
pub fn notify_ready() {
    send(NotifyState::Ready);
}

/// Tells systemd the daemon is stopping.
pub fn notify_stopping() {
    send(NotifyState::Stopping);
}

/// The systemd watchdog, when the unit enabled one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watchdog {
    timeout: Duration,
}

impl Watchdog {
    /// `Some` when `WATCHDOG_USEC` is set for this pid.
    pub fn from_env() -> Option<Watchdog> {
        sd_notify::watchdog_enabled()
            .filter(|t| !t.is_zero())
            .map(Watchdog::with_timeout)
    }

    pub fn with_timeout(timeout: Duration) -> Watchdog {
        Watchdog { timeout }
    }

    /// systemd's timeout (`WatchdogSec`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How often to ping: half the timeout, as sd_watchdog_enabled(3) advises.
    pub fn interval(&self) -> Duration {
        self.timeout / 2
    }

    /// Sends `WATCHDOG=1`.
    pub fn ping(&self) {
        send(NotifyState::Watchdog);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_half_the_timeout() {
        let dog = Watchdog::with_timeout(Duration::from_secs(30));
        assert_eq!(dog.interval(), Duration::from_secs(15));
        assert_eq!(dog.timeout(), Duration::from_secs(30));
    }
}
