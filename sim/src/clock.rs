//! A [`Clock`] that follows turmoil's simulated time, so the hub stamps
//! events and measures uptime in the simulation's time, not the machine's.
//!
//! Inside a simulated host, time is [`turmoil::sim_elapsed`] since the start
//! of the simulation; the wall clock is a fixed epoch plus that. Read outside
//! a running host (the test's own code between steps), the clock answers the
//! last simulated time it saw, so it never goes backwards and never touches
//! the real clock. Not a timer: sleeping is tokio's (virtual) time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use warden::time::{Clock, Moment, WallTime};

/// 2025-01-01T00:00:00Z: the wall-clock reading at the start of every
/// simulation (turmoil's own default is the machine's clock, which would
/// leak into traces).
pub const SIM_EPOCH_MS: u64 = 1_735_689_600_000;

/// The same epoch for `turmoil::Builder::epoch`.
pub fn sim_epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(SIM_EPOCH_MS)
}

/// Simulated time; clones share the last-seen reading.
#[derive(Clone, Debug, Default)]
pub struct SimClock {
    last_ms: Arc<AtomicU64>,
}

impl SimClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// As an `Arc<dyn Clock>` for `Hub::new`.
    pub fn shared(&self) -> Arc<dyn Clock> {
        Arc::new(self.clone())
    }

    fn elapsed_ms(&self) -> u64 {
        match turmoil::sim_elapsed() {
            Some(elapsed) => {
                let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
                // Monotonic even if hosts' views differ by part of a tick.
                self.last_ms.fetch_max(ms, Ordering::SeqCst).max(ms)
            }
            None => self.last_ms.load(Ordering::SeqCst),
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Moment {
        Moment::from_millis(self.elapsed_ms())
    }

    fn wall(&self) -> WallTime {
        WallTime::from_millis(SIM_EPOCH_MS.saturating_add(self.elapsed_ms()))
    }
}

/// Simulated time since the start of the simulation, in milliseconds, for
/// traces (0 outside a running host).
pub fn sim_ms() -> u64 {
    turmoil::sim_elapsed()
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
