//! Property tests for health folding, the bounded history and window
//! aggregation. 512 cases per property.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use warden::health::{HealthCheckResult, HealthHistory, HealthMetric, HealthReport, HealthStatus};
use warden::time::{Moment, WallTime};

fn status() -> impl Strategy<Value = HealthStatus> {
    prop_oneof![
        Just(HealthStatus::Healthy),
        Just(HealthStatus::Warning),
        Just(HealthStatus::Critical),
        Just(HealthStatus::Unknown),
    ]
}

fn report(status: HealthStatus, at: Moment) -> HealthReport {
    let wall = WallTime::from_millis(1_700_000_000_000 + at.as_millis());
    let result = HealthCheckResult::from_metrics(
        "checker",
        vec![HealthMetric::new("m", 1.0, status)],
        at,
        wall,
        Duration::from_millis(1),
    );
    HealthReport::from_results(vec![result], at, wall)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/prop_health.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// A result is exactly as severe as its worst metric; empty is unknown;
    /// critical only if some metric is critical.
    #[test]
    fn folding_takes_the_worst_metric(statuses in prop::collection::vec(status(), 0..12)) {
        let metrics = statuses.iter().map(|s| HealthMetric::new("m", true, *s)).collect();
        let r = HealthCheckResult::from_metrics(
            "c", metrics, Moment::ZERO, WallTime::from_millis(0), Duration::ZERO);
        match statuses.iter().map(|s| s.severity()).max() {
            None => prop_assert_eq!(r.status, HealthStatus::Unknown),
            Some(worst) => {
                prop_assert_eq!(r.status.severity(), worst);
                prop_assert!(statuses.contains(&r.status));
            }
        }
    }

    /// History never exceeds capacity and keeps the newest reports in order;
    /// aggregation counts sum to the samples, which are exactly the reports in
    /// the window; the overall status follows the documented rule.
    #[test]
    fn history_and_aggregation_follow_their_rules(
        capacity in 1usize..30,
        pushes in prop::collection::vec((status(), 0u64..20_000), 0..80),
        window_ms in 0u64..400_000,
        ahead_ms in 0u64..60_000,
    ) {
        let mut h = HealthHistory::new(capacity);
        let mut now = Moment::ZERO;
        let mut all = Vec::new();
        for (st, dt) in &pushes {
            now = now + Duration::from_millis(*dt);
            h.push(report(*st, now));
            all.push((*st, now));
            prop_assert!(h.len() <= capacity);
        }
        prop_assert_eq!(h.len(), all.len().min(capacity));
        let kept: Vec<_> = h.iter().map(|r| (r.overall_status, r.at)).collect();
        prop_assert_eq!(&kept[..], &all[all.len() - kept.len()..]);

        let query_at = now + Duration::from_millis(ahead_ms);
        let agg = h.aggregate(Duration::from_millis(window_ms), query_at);
        let in_window: Vec<HealthStatus> = kept
            .iter()
            .filter(|(_, at)| query_at.saturating_since(*at) <= Duration::from_millis(window_ms))
            .map(|(s, _)| *s)
            .collect();
        prop_assert_eq!(agg.samples, in_window.len());
        prop_assert_eq!(agg.counts.total(), agg.samples);
        for s in HealthStatus::BY_SEVERITY {
            prop_assert_eq!(agg.counts.get(s), in_window.iter().filter(|x| **x == s).count());
        }

        // The rule: unknown when empty; otherwise the most severe status that
        // appears in two consecutive samples or is the latest.
        let persisted = |s: HealthStatus| {
            in_window.last() == Some(&s) || in_window.windows(2).any(|p| p[0] == s && p[1] == s)
        };
        if in_window.is_empty() {
            prop_assert_eq!(agg.overall_status, HealthStatus::Unknown);
        } else {
            prop_assert!(persisted(agg.overall_status));
            for s in HealthStatus::BY_SEVERITY {
                if s.severity() > agg.overall_status.severity() {
                    prop_assert!(!persisted(s), "{:?} persisted but overall is {:?}", s, agg.overall_status);
                }
            }
            // Idle time never makes a window critical: only critical samples do.
            if agg.overall_status == HealthStatus::Critical {
                prop_assert!(agg.counts.critical > 0);
            }
        }
        // Aggregating is a pure query.
        prop_assert_eq!(h.aggregate(Duration::from_millis(window_ms), query_at), agg);
    }
}
