//! How long to wait before trying again: one schedule for every retry the
//! daemon makes (the serving generation's rebinds and the retries after a
//! failed restart, the cluster link's reconnects to Redis). Pure: it answers
//! "how long before try `n`", the caller sleeps.
//!
//! The pause before the second try is `first`; each later pause doubles, up
//! to `max` (a schedule with `first == max` pauses evenly). A bounded
//! schedule ends after `attempts` tries; an unbounded one never ends (the
//! cluster link keeps trying, behind its breaker).

use std::time::Duration;

/// A schedule of tries: the first at once, the others after a pause that
/// doubles from `first` up to `max`, at most `attempts` of them (`None`:
/// no end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    attempts: Option<u32>,
    first: Duration,
    max: Duration,
}

impl RetrySchedule {
    /// At most `attempts` tries, `pause` apart.
    pub const fn new(attempts: u32, pause: Duration) -> Self {
        RetrySchedule {
            attempts: Some(attempts),
            first: pause,
            max: pause,
        }
    }

    /// Tries without end, the pause doubling from `first` up to `max`.
    pub const fn doubling(first: Duration, max: Duration) -> Self {
        RetrySchedule {
            attempts: None,
            first,
            max,
        }
    }

    /// The first pause (before the second try).
    pub fn first_pause(&self) -> Duration {
        self.first
    }

    /// How many tries, if bounded.
    pub fn attempts(&self) -> Option<u32> {
        self.attempts
    }

    /// The wait before try `attempt` (1-based): nothing before the first,
    /// a growing pause before the others, `None` past the last.
    pub fn pause_before(&self, attempt: u32) -> Option<Duration> {
        if attempt == 0 || self.attempts.is_some_and(|a| attempt > a) {
            return None;
        }
        if attempt == 1 {
            return Some(Duration::ZERO);
        }
        // 2^(attempt - 2), saturating: past 2^31 the cap has long been hit.
        let factor = 1u32.checked_shl(attempt - 2).unwrap_or(u32::MAX);
        Some(self.first.saturating_mul(factor).min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_even_schedule_pauses_between_tries_only_and_ends() {
        let s = RetrySchedule::new(3, 50 * MS);
        let pauses: Vec<_> = (0..=4).map(|n| s.pause_before(n)).collect();
        assert_eq!(
            pauses,
            [
                None,
                Some(Duration::ZERO),
                Some(50 * MS),
                Some(50 * MS),
                None
            ]
        );
        assert_eq!(RetrySchedule::new(0, Duration::ZERO).pause_before(1), None);
        assert_eq!(s.attempts(), Some(3));
    }

    #[test]
    fn a_doubling_schedule_grows_to_its_cap_and_never_ends() {
        let s = RetrySchedule::doubling(100 * MS, 1000 * MS);
        let pauses: Vec<_> = (1..=7).map(|n| s.pause_before(n)).collect();
        assert_eq!(
            pauses,
            [
                Some(Duration::ZERO),
                Some(100 * MS),
                Some(200 * MS),
                Some(400 * MS),
                Some(800 * MS),
                Some(1000 * MS),
                Some(1000 * MS)
            ]
        );
        assert_eq!(s.pause_before(u32::MAX), Some(1000 * MS));
        assert_eq!(s.attempts(), None);
    }
}
