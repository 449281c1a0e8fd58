//! The machine's clocks: the one place the daemon reads them. The core never
//! does (`clippy::disallowed_methods` is denied there, see `src/lib.rs`);
//! it is handed a [`Clock`] and takes time as data.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::time::{Clock, Moment, WallTime};

/// The real clocks: monotonic from the clock's creation, wall from the epoch.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Moment {
        Moment::from_millis(millis(self.origin.elapsed()))
    }

    fn wall(&self) -> WallTime {
        wall_now()
    }
}

/// The wall clock now, for a command that has no [`Clock`] of its own (the
/// CLI's messages).
pub fn wall_now() -> WallTime {
    WallTime::from_millis(millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    ))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
