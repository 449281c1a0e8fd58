//! The threshold rule every checker judges a measured value by.
//!
//! A value **above** its threshold is `warning`; a value above
//! [`CRITICAL_MULTIPLE`] × the threshold (1.5×) is `critical`; at or below
//! the threshold it is `healthy`. So with `memory_mb: 500`, 501–750 MB warns
//! and 751 MB is critical. The checkers (`daemon::checkers`) measure; this
//! judges, so the simulation and the property tests judge the same way.

use crate::health::HealthStatus;

/// A value above `CRITICAL_MULTIPLE × threshold` is critical (see the module doc).
pub const CRITICAL_MULTIPLE: f64 = 1.5;

/// The threshold rule of the module doc.
pub fn judge(value: f64, threshold: f64) -> HealthStatus {
    if value > threshold * CRITICAL_MULTIPLE {
        HealthStatus::Critical
    } else if value > threshold {
        HealthStatus::Warning
    } else {
        HealthStatus::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn above_warns_and_above_one_and_a_half_times_is_critical() {
        assert_eq!(judge(500.0, 500.0), HealthStatus::Healthy);
        assert_eq!(judge(501.0, 500.0), HealthStatus::Warning);
        assert_eq!(judge(750.0, 500.0), HealthStatus::Warning);
        assert_eq!(judge(751.0, 500.0), HealthStatus::Critical);
    }
}
