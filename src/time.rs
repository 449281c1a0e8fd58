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
        let (date, clock) = self.civil();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            date.year(),
            u8::from(date.month()),
            date.day(),
            clock.hour(),
            clock.minute(),
            clock.second(),
            clock.millisecond()
        )
    }

    /// `2025-08-06 14:30:00` (UTC), for human-facing messages.
    pub fn to_human(self) -> String {
        let (date, clock) = self.civil();
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            date.year(),
            u8::from(date.month()),
            date.day(),
            clock.hour(),
            clock.minute(),
            clock.second()
        )
    }

    /// The UTC calendar date and time of day (the `time` crate's civil
    /// arithmetic: pure, no clock). Beyond `time`'s range (year 9999, far
    /// past any clock this runs on) it saturates at its last instant.
    fn civil(self) -> (::time::Date, ::time::Time) {
        let at = i64::try_from(self.0 / 1000)
            .ok()
            .and_then(|secs| ::time::UtcDateTime::from_unix_timestamp(secs).ok())
            .unwrap_or(::time::UtcDateTime::MAX);
        let millis = u16::try_from(self.0 % 1000).unwrap_or(0);
        let clock = at.time().replace_millisecond(millis).unwrap_or(at.time());
        (at.date(), clock)
    }

    /// Parses the ISO-8601 UTC forms this crate writes (`YYYY-MM-DDTHH:MM:SS[.fff]Z`,
    /// also accepting `+00:00` and a space for the `T`; up to nine fraction
    /// digits, kept to the millisecond). Returns `None` for anything else,
    /// including dates that do not exist (`2025-02-30`); never panics.
    pub fn parse_iso8601(text: &str) -> Option<WallTime> {
        let text = text.trim();
        let body = text
            .strip_suffix('Z')
            .or_else(|| text.strip_suffix("+00:00"))?;
        let (date, clock) = body.split_once('T').or_else(|| body.split_once(' '))?;
        let mut dp = date.splitn(3, '-');
        let y: i32 = dp.next()?.parse().ok()?;
        let mo: u8 = dp.next()?.parse().ok()?;
        let d: u8 = dp.next()?.parse().ok()?;
        // Four-digit years from the epoch on: what a WallTime can hold.
        if !(1970..=9999).contains(&y) {
            return None;
        }
        let (hms, frac) = match clock.split_once('.') {
            Some((hms, frac)) => (hms, Some(frac)),
            None => (clock, None),
        };
        let mut cp = hms.splitn(3, ':');
        let h: u8 = cp.next()?.parse().ok()?;
        let mi: u8 = cp.next()?.parse().ok()?;
        let s: u8 = cp.next()?.parse().ok()?;
        let ms: u16 = match frac {
            None => 0,
            Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
                let padded = format!("{f:0<3}");
                padded[..3].parse().ok()?
            }
            Some(_) => return None,
        };
        // A leap second (`:60`, as a clock may write it) counts as the next second.
        let (s, leap) = if s == 60 { (59, 1) } else { (s, 0) };
        let date =
            ::time::Date::from_calendar_date(y, ::time::Month::try_from(mo).ok()?, d).ok()?;
        let clock = ::time::Time::from_hms_milli(h, mi, s, ms).ok()?;
        let secs = u64::try_from(date.with_time(clock).as_utc().unix_timestamp()).ok()? + leap;
        Some(WallTime(
            secs.checked_mul(1000)?.checked_add(u64::from(ms))?,
        ))
    }
}

impl fmt::Display for WallTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iso8601())
    }
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
    fn parse_rejects_dates_that_do_not_exist() {
        // The hand-written arithmetic this replaced accepted these.
        for bad in [
            "2025-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2025-04-31T12:00:00Z",
        ] {
            assert_eq!(WallTime::parse_iso8601(bad), None, "{bad}");
        }
        assert_eq!(WallTime::parse_iso8601("1969-12-31T23:59:59Z"), None);
    }

    #[test]
    fn parse_accepts_the_forms_it_promises() {
        let t = WallTime::from_millis(1_754_490_600_000);
        for good in [
            "2025-08-06T14:30:00Z",
            "2025-08-06 14:30:00Z",
            "2025-08-06T14:30:00+00:00",
            "2025-08-06T14:30:00.000000000Z",
        ] {
            assert_eq!(WallTime::parse_iso8601(good), Some(t), "{good}");
        }
        // A leap second reads as the next second.
        assert_eq!(
            WallTime::parse_iso8601("2016-12-31T23:59:60Z").map(|t| t.to_iso8601()),
            Some("2017-01-01T00:00:00.000Z".to_string())
        );
    }

    #[test]
    fn formatting_round_trips_across_the_range() {
        // Every 37 days and a bit from the epoch to 9999, with milliseconds.
        let step = 37 * 86_400_000 + 3_723_456;
        let last = WallTime::parse_iso8601("9999-12-31T23:59:59.999Z")
            .unwrap()
            .as_millis();
        let mut ms = 0;
        while ms <= last {
            let t = WallTime::from_millis(ms);
            assert_eq!(WallTime::parse_iso8601(&t.to_iso8601()), Some(t));
            ms += step;
        }
        // Past time's range it saturates rather than panicking.
        assert!(
            WallTime::from_millis(u64::MAX)
                .to_iso8601()
                .starts_with("9999-12-31")
        );
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
