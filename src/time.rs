//! Time as data.
//!
//! The reliability core never reads a clock: every event that needs a time
//! carries a [`Moment`] (monotonic, milliseconds since an arbitrary origin) and,
//! where a human will read it, a [`WallTime`] (milliseconds since the Unix
//! epoch). The [`Clock`] trait is how the edge of the program (the daemon, the
//! simulation harness, tests) produces those values; the core only receives
//! them. This module is not for timers or sleeping: that belongs to the daemon.

use std::fmt;
use std::ops::{Add, Sub};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point on a monotonic time line, in milliseconds since an arbitrary origin.
///
/// Arithmetic saturates: a `Moment` never goes below zero and the distance
/// from a later moment to an earlier one is zero, never a panic.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Moment(u64);

impl Moment {
    /// The origin of the time line.
    pub const ZERO: Moment = Moment(0);

    pub const fn from_millis(ms: u64) -> Self {
        Moment(ms)
    }

    pub const fn from_secs(secs: u64) -> Self {
        Moment(secs.saturating_mul(1000))
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Moment) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Moment {
    type Output = Moment;
    fn add(self, rhs: Duration) -> Moment {
        Moment(self.0.saturating_add(duration_millis(rhs)))
    }
}

impl Sub<Duration> for Moment {
    type Output = Moment;
    fn sub(self, rhs: Duration) -> Moment {
        Moment(self.0.saturating_sub(duration_millis(rhs)))
    }
}

impl Sub<Moment> for Moment {
    type Output = Duration;
    fn sub(self, rhs: Moment) -> Duration {
        self.saturating_since(rhs)
    }
}

/// Wall-clock time in milliseconds since the Unix epoch, for display and for
/// records that outlive the process (PID files, recovery events).
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct WallTime(u64);

impl WallTime {
    pub const fn from_millis(epoch_ms: u64) -> Self {
        WallTime(epoch_ms)
    }

    pub const fn from_secs(epoch_secs: u64) -> Self {
        WallTime(epoch_secs.saturating_mul(1000))
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Seconds since the epoch as a float, like Python's `time.time()`.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// `2025-08-06T14:30:00.000Z`.
    pub fn to_iso8601(self) -> String {
        let (y, mo, d, h, mi, s, ms) = civil(self.0);
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }

    /// `2025-08-06 14:30:00` (UTC), for human-facing messages.
    pub fn to_human(self) -> String {
        let (y, mo, d, h, mi, s, _) = civil(self.0);
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
    }

    /// Parses the ISO-8601 UTC forms this crate writes (`YYYY-MM-DDTHH:MM:SS[.fff]Z`,
    /// also accepting `+00:00`). Returns `None` for anything else; never panics.
    pub fn parse_iso8601(text: &str) -> Option<WallTime> {
        let text = text.trim();
        let body = text
            .strip_suffix('Z')
            .or_else(|| text.strip_suffix("+00:00"))?;
        let (date, clock) = body.split_once('T').or_else(|| body.split_once(' '))?;
        let mut dp = date.splitn(3, '-');
        let y: i64 = dp.next()?.parse().ok()?;
        let mo: u32 = dp.next()?.parse().ok()?;
        let d: u32 = dp.next()?.parse().ok()?;
        // Four-digit years only: a huge year would overflow the day arithmetic.
        if !(0..=9999).contains(&y) {
            return None;
        }
        let (hms, frac) = match clock.split_once('.') {
            Some((hms, frac)) => (hms, Some(frac)),
            None => (clock, None),
        };
        let mut cp = hms.splitn(3, ':');
        let h: u64 = cp.next()?.parse().ok()?;
        let mi: u64 = cp.next()?.parse().ok()?;
        let s: u64 = cp.next()?.parse().ok()?;
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
            return None;
        }
        let ms: u64 = match frac {
            None => 0,
            Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
                let padded = format!("{f:0<3}");
                padded[..3].parse().ok()?
            }
            Some(_) => return None,
        };
        let days = days_from_civil(y, mo, d);
        if days < 0 {
            return None;
        }
        let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + s;
        Some(WallTime(secs.checked_mul(1000)?.checked_add(ms)?))
    }
}

impl fmt::Display for WallTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iso8601())
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day, hour, minute, second, millisecond) of an epoch time in UTC.
fn civil(epoch_ms: u64) -> (i64, u32, u32, u64, u64, u64, u64) {
    let ms = epoch_ms % 1000;
    let secs = epoch_ms / 1000;
    let (h, mi, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let z = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, h, mi, s, ms)
}

/// Where the edge of the program gets its time from.
pub trait Clock: Send + Sync {
    /// Monotonic time, for every decision the core makes.
    fn now(&self) -> Moment;
    /// Wall-clock time, for what people read.
    fn wall(&self) -> WallTime;
}

/// A clock that moves only when told to: for tests and simulations.
/// Clones share the same time line.
#[derive(Debug, Clone)]
pub struct ManualClock {
    mono_ms: Arc<AtomicU64>,
    wall_origin_ms: u64,
}

impl ManualClock {
    /// Starts at `Moment::ZERO`, with the wall clock reading `wall_origin` at that moment.
    pub fn new(wall_origin: WallTime) -> Self {
        ManualClock {
            mono_ms: Arc::new(AtomicU64::new(0)),
            wall_origin_ms: wall_origin.0,
        }
    }

    pub fn advance(&self, by: Duration) {
        self.mono_ms
            .fetch_add(duration_millis(by), Ordering::SeqCst);
    }

    pub fn set(&self, to: Moment) {
        self.mono_ms.store(to.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Moment {
        Moment(self.mono_ms.load(Ordering::SeqCst))
    }

    fn wall(&self) -> WallTime {
        WallTime(
            self.wall_origin_ms
                .saturating_add(self.mono_ms.load(Ordering::SeqCst)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_round_trips_known_dates() {
        let t = WallTime::from_millis(1_754_490_600_123); // 2025-08-06T14:30:00.123Z
        assert_eq!(t.to_iso8601(), "2025-08-06T14:30:00.123Z");
        assert_eq!(WallTime::parse_iso8601("2025-08-06T14:30:00.123Z"), Some(t));
        assert_eq!(
            WallTime::from_millis(0).to_iso8601(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            WallTime::parse_iso8601("2000-02-29T00:00:00Z").map(|t| t.to_iso8601()),
            Some("2000-02-29T00:00:00.000Z".to_string())
        );
    }

    #[test]
    fn parse_rejects_garbage_without_panicking() {
        for bad in [
            "",
            "Z",
            "2025-13-01T00:00:00Z",
            "abc",
            "2025-01-01T25:00:00Z",
            "2025-01-01T00:00:00.Z",
        ] {
            assert_eq!(WallTime::parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn moments_saturate() {
        let a = Moment::from_millis(10);
        assert_eq!(a - Duration::from_secs(1), Moment::ZERO);
        assert_eq!(Moment::ZERO - a, Duration::ZERO);
        assert_eq!((a + Duration::from_millis(5)).as_millis(), 15);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(WallTime::from_secs(1000));
        assert_eq!(c.now(), Moment::ZERO);
        c.advance(Duration::from_secs(2));
        assert_eq!(c.now(), Moment::from_secs(2));
        assert_eq!(c.wall(), WallTime::from_secs(1002));
    }
}
