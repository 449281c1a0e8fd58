//! Fuzz target: health folding and window aggregation over a bounded history.
//!
//! The input builds check results (from metrics, or failed checkers), folds
//! them into reports, pushes the reports into a `HealthHistory` of arbitrary
//! capacity at arbitrary (also out-of-order) times, and asks for window
//! aggregates at arbitrary times. Asserted:
//! - nothing panics (huge windows, times near the ends of the time line);
//! - the history never holds more than its capacity;
//! - an aggregate's counts sum to its samples, and the samples are exactly
//!   the reports with `now - window <= at <= now`;
//! - a fold is the most severe status (unknown when empty), a failed checker
//!   is unknown; the window status is the documented "persisted worst".
//! - an aggregate survives a JSON round trip unchanged.

use std::time::Duration;

use arbitrary::Arbitrary;
use warden::health::{
    AggregatedHealth, HealthCheckResult, HealthHistory, HealthMetric, HealthReport, HealthStatus,
    persisted_worst,
};
use warden::time::{Moment, WallTime};

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Status {
    Healthy,
    Warning,
    Critical,
    Unknown,
}

impl From<Status> for HealthStatus {
    fn from(s: Status) -> HealthStatus {
        match s {
            Status::Healthy => HealthStatus::Healthy,
            Status::Warning => HealthStatus::Warning,
            Status::Critical => HealthStatus::Critical,
            Status::Unknown => HealthStatus::Unknown,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Checker {
    Ran { metrics: Vec<(Status, f64)> },
    Failed { error: String },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Push { checkers: Vec<Checker>, at_ms: u64 },
    PushNear { status: Status, dt_ms: u16 },
    Aggregate { window_ms: u64, now_ms: u64 },
    AggregateNear { window_ms: u16, back_ms: u16 },
}

#[derive(Arbitrary, Debug)]
pub struct Input {
    capacity: u16,
    ops: Vec<Op>,
}

fn severity_fold(statuses: &[HealthStatus]) -> HealthStatus {
    let mut worst: Option<HealthStatus> = None;
    for &s in statuses {
        worst = Some(match worst {
            Some(w) if w.severity() >= s.severity() => w,
            _ => s,
        });
    }
    worst.unwrap_or(HealthStatus::Unknown)
}

fn report_at(checkers: &[Checker], at: Moment) -> HealthReport {
    let wall = WallTime::from_millis(at.as_millis());
    let mut results = Vec::new();
    for (i, c) in checkers.iter().enumerate() {
        let r = match c {
            Checker::Ran { metrics } => {
                let metrics: Vec<HealthMetric> = metrics
                    .iter()
                    .map(|&(s, v)| HealthMetric::new("m", v, s.into()))
                    .collect();
                let statuses: Vec<HealthStatus> = metrics.iter().map(|m| m.status).collect();
                let r = HealthCheckResult::from_metrics(
                    format!("c{i}"),
                    metrics,
                    at,
                    wall,
                    Duration::from_micros(i as u64),
                );
                assert_eq!(r.status, severity_fold(&statuses), "metric fold");
                r
            }
            Checker::Failed { error } => {
                let r = HealthCheckResult::failed(
                    format!("c{i}"),
                    error.clone(),
                    at,
                    wall,
                    Duration::ZERO,
                );
                assert_eq!(
                    r.status,
                    HealthStatus::Unknown,
                    "a failed checker is unknown"
                );
                assert_eq!(r.error.as_deref(), Some(error.as_str()));
                r
            }
        };
        results.push(r);
    }
    let statuses: Vec<HealthStatus> = results.iter().map(|r| r.status).collect();
    let report = HealthReport::from_results(results, at, wall);
    assert_eq!(
        report.overall_status,
        severity_fold(&statuses),
        "result fold"
    );
    report
}

/// The window rule restated: worst of (latest, every status seen twice in a row).
fn expected_window_status(samples: &[HealthStatus]) -> HealthStatus {
    let Some(&latest) = samples.last() else {
        return HealthStatus::Unknown;
    };
    let mut candidates = vec![latest];
    for pair in samples.windows(2) {
        if pair[0] == pair[1] {
            candidates.push(pair[0]);
        }
    }
    severity_fold(&candidates)
}

fn check_aggregate(history: &HealthHistory, window: Duration, now: Moment) {
    let agg = history.aggregate(window, now);
    let start = now - window;
    let inside: Vec<&HealthReport> = history
        .iter()
        .filter(|r| r.at >= start && r.at <= now)
        .collect();
    assert_eq!(agg.samples, inside.len());
    assert_eq!(
        agg.counts.total(),
        agg.samples,
        "counts must sum to samples"
    );
    for s in HealthStatus::BY_SEVERITY {
        let n = inside.iter().filter(|r| r.overall_status == s).count();
        assert_eq!(agg.counts.get(s), n, "count of {s}");
    }
    let statuses: Vec<HealthStatus> = inside.iter().map(|r| r.overall_status).collect();
    assert_eq!(agg.overall_status, expected_window_status(&statuses));
    assert_eq!(agg.overall_status, persisted_worst(&statuses));
    assert_eq!(agg.first_at, inside.first().map(|r| r.at));
    assert_eq!(agg.last_at, inside.last().map(|r| r.at));
    assert_eq!(
        agg.window_ms,
        u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
    );
    let json = serde_json::to_string(&agg).expect("an aggregate serializes");
    let back: AggregatedHealth = serde_json::from_str(&json).expect("and parses back");
    assert_eq!(back, agg, "JSON round trip");
}

/// One fuzz input, checked: the body of the fuzz target, shared with
/// `tests/fuzz_regressions.rs`, which replays the saved inputs on stable.
pub fn check(input: Input) {
    let mut history = HealthHistory::new(usize::from(input.capacity));
    assert_eq!(history.capacity(), usize::from(input.capacity).max(1));
    let mut now = Moment::ZERO;
    let mut pushed = 0usize;
    for op in &input.ops {
        match op {
            Op::Push { checkers, at_ms } => {
                let at = Moment::from_millis(*at_ms);
                now = now.max(at);
                history.push(report_at(checkers, at));
                pushed += 1;
            }
            Op::PushNear { status, dt_ms } => {
                now = now + Duration::from_millis(u64::from(*dt_ms));
                let checkers = [Checker::Ran {
                    metrics: vec![(*status, 1.0)],
                }];
                history.push(report_at(&checkers, now));
                pushed += 1;
            }
            Op::Aggregate { window_ms, now_ms } => {
                check_aggregate(
                    &history,
                    Duration::from_millis(*window_ms),
                    Moment::from_millis(*now_ms),
                );
            }
            Op::AggregateNear { window_ms, back_ms } => {
                let at = now - Duration::from_millis(u64::from(*back_ms));
                check_aggregate(&history, Duration::from_millis(u64::from(*window_ms)), at);
            }
        }
        assert!(
            history.len() <= history.capacity(),
            "history exceeded its capacity"
        );
        assert_eq!(history.len(), pushed.min(history.capacity()));
    }
    // A window covering the whole time line sees every report kept.
    let all = history.aggregate(Duration::MAX, Moment::from_millis(u64::MAX));
    assert_eq!(all.samples, history.len());
    assert_eq!(all.counts.total(), history.len());
}
