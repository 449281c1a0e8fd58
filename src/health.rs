//! Health vocabulary and aggregation, shared by every layer.
//!
//! Checkers produce [`HealthMetric`]s folded into a [`HealthCheckResult`]; one
//! check cycle over all checkers is a [`HealthReport`]; the monitor keeps a
//! bounded [`HealthHistory`] of reports and summarises a time window as
//! [`AggregatedHealth`]. This module only folds and counts: it runs no checker,
//! reads no clock (times arrive as arguments) and decides no recovery.
//!
//! # Severity
//! [`HealthStatus::severity`] orders statuses `healthy < unknown < warning < critical`.
//! Unknown ranks above healthy because nobody may claim health for what they
//! cannot see; it ranks below warning because a *known* elevated reading is
//! more specific, actionable information than blindness.
//!
//! # Fold rules (metrics → result, results → report)
//! - The status is the most severe status present (any critical → critical;
//!   else any warning → warning; else any unknown → unknown; else healthy).
//! - Nothing to fold (no metrics, no checkers) → unknown: absence of evidence
//!   is not health.
//! - A checker that fails ([`HealthCheckResult::failed`]) is unknown, carries
//!   its error message, and is folded like any other result; it never panics
//!   and never makes anything critical by itself.
//!
//! # Window aggregation ([`HealthHistory::aggregate`])
//! The samples are the reports with `now - window <= at <= now`. The overall
//! status is **the most severe status that persisted**: one that appears in at
//! least two consecutive samples of the window, or is the latest sample's
//! status (an ongoing condition counts even if it just began). A one-sample
//! blip that has since cleared does not colour the window. No samples →
//! unknown. Only sample statuses are read, never the time between them, so
//! idle time alone never makes a window critical.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::{Moment, WallTime};

/// How healthy something is. One vocabulary end to end: checkers produce it,
/// the monitor aggregates it, the strategy reads it, `/health` prints it and
/// `/metrics` encodes it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Warning,
    Critical,
    Unknown,
}

impl HealthStatus {
    /// Every status, from least to most severe.
    pub const BY_SEVERITY: [HealthStatus; 4] = [
        HealthStatus::Healthy,
        HealthStatus::Unknown,
        HealthStatus::Warning,
        HealthStatus::Critical,
    ];

    /// Severity rank: healthy 0 < unknown 1 < warning 2 < critical 3 (see the module doc).
    pub fn severity(self) -> u8 {
        match self {
            HealthStatus::Healthy => 0,
            HealthStatus::Unknown => 1,
            HealthStatus::Warning => 2,
            HealthStatus::Critical => 3,
        }
    }

    /// The more severe of two statuses.
    pub fn worst(self, other: HealthStatus) -> HealthStatus {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    /// The fold of the module doc: the most severe status, unknown when empty.
    pub fn fold(statuses: impl IntoIterator<Item = HealthStatus>) -> HealthStatus {
        statuses
            .into_iter()
            .reduce(HealthStatus::worst)
            .unwrap_or(HealthStatus::Unknown)
    }

    /// The value of the `socketio_health_status` gauge:
    /// 0 = unknown, 1 = healthy, 2 = warning, 3 = critical (as in the seed).
    pub fn prometheus_code(self) -> u8 {
        match self {
            HealthStatus::Unknown => 0,
            HealthStatus::Healthy => 1,
            HealthStatus::Warning => 2,
            HealthStatus::Critical => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
            HealthStatus::Unknown => "unknown",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which checker produced a result: the daemon's four checkers, by the
/// names `/health`'s `checks` object prints (the seed's keys). Results carry
/// the name as text (it is what `/health` serialises and what tests and
/// foreign checkers use); [`CheckerId::from_name`] reads it back for the
/// rules that depend on the checker (`crate::recovery::attribution`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckerId {
    ProcessResources,
    NetworkConnectivity,
    ServiceHealth,
    /// Redis, in cluster mode: a dependency, not this process.
    RedisDependency,
}

impl CheckerId {
    pub const ALL: [CheckerId; 4] = [
        CheckerId::ProcessResources,
        CheckerId::NetworkConnectivity,
        CheckerId::ServiceHealth,
        CheckerId::RedisDependency,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            CheckerId::ProcessResources => "process_resources",
            CheckerId::NetworkConnectivity => "network_connectivity",
            CheckerId::ServiceHealth => "service_health",
            CheckerId::RedisDependency => "redis_dependency",
        }
    }

    /// The checker a result's name stands for; `None` for any other name.
    pub fn from_name(name: &str) -> Option<CheckerId> {
        CheckerId::ALL.into_iter().find(|id| id.as_str() == name)
    }
}

impl fmt::Display for CheckerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A metric's value; serializes as the plain JSON value (`15.2`, `true`, `"running"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricValue {
    Number(f64),
    Bool(bool),
    Text(String),
}

impl From<f64> for MetricValue {
    fn from(v: f64) -> Self {
        MetricValue::Number(v)
    }
}

impl From<u64> for MetricValue {
    fn from(v: u64) -> Self {
        MetricValue::Number(v as f64)
    }
}

impl From<bool> for MetricValue {
    fn from(v: bool) -> Self {
        MetricValue::Bool(v)
    }
}

impl From<&str> for MetricValue {
    fn from(v: &str) -> Self {
        MetricValue::Text(v.to_string())
    }
}

impl From<String> for MetricValue {
    fn from(v: String) -> Self {
        MetricValue::Text(v)
    }
}

/// One measured value with its own verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthMetric {
    pub name: String,
    pub value: MetricValue,
    pub status: HealthStatus,
    /// The limit the value was judged against, if any.
    pub threshold: Option<f64>,
    pub unit: Option<String>,
    pub message: Option<String>,
}

impl HealthMetric {
    /// A metric with no threshold, unit or message.
    pub fn new(
        name: impl Into<String>,
        value: impl Into<MetricValue>,
        status: HealthStatus,
    ) -> Self {
        HealthMetric {
            name: name.into(),
            value: value.into(),
            status,
            threshold: None,
            unit: None,
            message: None,
        }
    }
}

/// What one checker found in one check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthCheckResult {
    pub checker: String,
    pub status: HealthStatus,
    pub metrics: Vec<HealthMetric>,
    /// Monotonic time of the check (for windows).
    pub at: Moment,
    /// Wall time of the check (for people).
    pub timestamp: WallTime,
    pub duration_ms: f64,
    /// Why the checker failed, if it did.
    pub error: Option<String>,
}

impl HealthCheckResult {
    /// The result of a checker that ran: its status is the fold of its metrics.
    pub fn from_metrics(
        checker: impl Into<String>,
        metrics: Vec<HealthMetric>,
        at: Moment,
        timestamp: WallTime,
        duration: Duration,
    ) -> Self {
        HealthCheckResult {
            checker: checker.into(),
            status: HealthStatus::fold(metrics.iter().map(|m| m.status)),
            metrics,
            at,
            timestamp,
            duration_ms: duration.as_secs_f64() * 1000.0,
            error: None,
        }
    }

    /// The result of a checker that could not run: unknown, with the error.
    pub fn failed(
        checker: impl Into<String>,
        error: impl Into<String>,
        at: Moment,
        timestamp: WallTime,
        duration: Duration,
    ) -> Self {
        HealthCheckResult {
            checker: checker.into(),
            status: HealthStatus::Unknown,
            metrics: Vec::new(),
            at,
            timestamp,
            duration_ms: duration.as_secs_f64() * 1000.0,
            error: Some(error.into()),
        }
    }
}

/// One check cycle over all checkers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    pub overall_status: HealthStatus,
    pub results: Vec<HealthCheckResult>,
    pub at: Moment,
    pub timestamp: WallTime,
}

impl HealthReport {
    /// Folds the results (see the module doc); no results → unknown.
    pub fn from_results(results: Vec<HealthCheckResult>, at: Moment, timestamp: WallTime) -> Self {
        HealthReport {
            overall_status: HealthStatus::fold(results.iter().map(|r| r.status)),
            results,
            at,
            timestamp,
        }
    }
}

/// How many samples had each status.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    pub healthy: usize,
    pub warning: usize,
    pub critical: usize,
    pub unknown: usize,
}

impl StatusCounts {
    pub fn get(&self, status: HealthStatus) -> usize {
        match status {
            HealthStatus::Healthy => self.healthy,
            HealthStatus::Warning => self.warning,
            HealthStatus::Critical => self.critical,
            HealthStatus::Unknown => self.unknown,
        }
    }

    fn bump(&mut self, status: HealthStatus) {
        match status {
            HealthStatus::Healthy => self.healthy += 1,
            HealthStatus::Warning => self.warning += 1,
            HealthStatus::Critical => self.critical += 1,
            HealthStatus::Unknown => self.unknown += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.healthy + self.warning + self.critical + self.unknown
    }
}

/// A window of history summarised (see the module doc for the rule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AggregatedHealth {
    pub window_ms: u64,
    pub samples: usize,
    pub counts: StatusCounts,
    pub overall_status: HealthStatus,
    pub first_at: Option<Moment>,
    pub last_at: Option<Moment>,
}

/// A bounded ring of reports, oldest first.
#[derive(Clone, Debug)]
pub struct HealthHistory {
    capacity: usize,
    reports: VecDeque<HealthReport>,
}

impl HealthHistory {
    /// A history keeping at most `capacity` reports (at least 1: a capacity of 0
    /// is raised to 1 so that `latest()` always answers after a push).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        HealthHistory {
            capacity,
            reports: VecDeque::with_capacity(capacity),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends a report, dropping the oldest when full.
    pub fn push(&mut self, report: HealthReport) {
        if self.reports.len() == self.capacity {
            self.reports.pop_front();
        }
        self.reports.push_back(report);
        debug_assert!(self.reports.len() <= self.capacity);
    }

    pub fn latest(&self) -> Option<&HealthReport> {
        self.reports.back()
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &HealthReport> + ExactSizeIterator {
        self.reports.iter()
    }

    pub fn len(&self) -> usize {
        self.reports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }

    /// Summarises the reports with `now - window <= at <= now` (in push order).
    pub fn aggregate(&self, window: Duration, now: Moment) -> AggregatedHealth {
        let start = now - window;
        let statuses: Vec<(HealthStatus, Moment)> = self
            .reports
            .iter()
            .filter(|r| r.at >= start && r.at <= now)
            .map(|r| (r.overall_status, r.at))
            .collect();
        let mut counts = StatusCounts::default();
        for (s, _) in &statuses {
            counts.bump(*s);
        }
        let only: Vec<HealthStatus> = statuses.iter().map(|(s, _)| *s).collect();
        AggregatedHealth {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            samples: statuses.len(),
            counts,
            overall_status: persisted_worst(&only),
            first_at: statuses.first().map(|(_, t)| *t),
            last_at: statuses.last().map(|(_, t)| *t),
        }
    }
}

/// The window rule: the most severe status that appears in two consecutive
/// samples or is the latest sample; unknown when there are no samples.
pub fn persisted_worst(samples: &[HealthStatus]) -> HealthStatus {
    let Some(&latest) = samples.last() else {
        return HealthStatus::Unknown;
    };
    samples
        .windows(2)
        .filter(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
        .fold(latest, HealthStatus::worst)
}

// ---------------------------------------------------------------------------
// Dependencies (cluster mode): what the daemon's cluster link reports.

/// What the cluster link last saw of Redis (facts, not judgements).
#[derive(Clone, Debug, PartialEq)]
pub struct DependencyFacts {
    pub connected: bool,
    /// `connected`, `connecting` or `disconnected`, as reported.
    pub state: String,
    pub rtt_ms: Option<f64>,
    pub heartbeat_age_ms: Option<u64>,
    pub heartbeat_interval_ms: u64,
    pub peers_seen: usize,
    pub last_error: Option<String>,
}

/// Where the dependency checker reads its facts: the cluster link, or a
/// closure in tests. Facts only: the judgement is the checker's.
pub trait DependencySource: Send + Sync {
    fn facts(&self) -> DependencyFacts;
}

impl<F: Fn() -> DependencyFacts + Send + Sync> DependencySource for F {
    fn facts(&self) -> DependencyFacts {
        self()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::{Critical, Healthy, Unknown, Warning};

    fn report(status: HealthStatus, at_s: u64) -> HealthReport {
        let at = Moment::from_secs(at_s);
        let result = HealthCheckResult::from_metrics(
            "probe",
            vec![HealthMetric::new("x", 1.0, status)],
            at,
            WallTime::from_secs(1_700_000_000 + at_s),
            Duration::from_millis(3),
        );
        HealthReport::from_results(vec![result], at, WallTime::from_secs(1_700_000_000 + at_s))
    }

    fn history(statuses: &[HealthStatus]) -> HealthHistory {
        let mut h = HealthHistory::new(100);
        for (i, s) in statuses.iter().enumerate() {
            h.push(report(*s, i as u64 * 10));
        }
        h
    }

    #[test]
    fn severity_orders_healthy_unknown_warning_critical() {
        let ranks: Vec<u8> = HealthStatus::BY_SEVERITY
            .iter()
            .map(|s| s.severity())
            .collect();
        assert_eq!(ranks, vec![0, 1, 2, 3]);
        assert_eq!(Warning.worst(Unknown), Warning);
        assert_eq!(Healthy.worst(Unknown), Unknown);
        assert_eq!(Critical.worst(Warning), Critical);
    }

    #[test]
    fn prometheus_codes_and_names_match_the_seed() {
        let codes: Vec<_> = [Unknown, Healthy, Warning, Critical]
            .iter()
            .map(|s| (s.to_string(), s.prometheus_code()))
            .collect();
        assert_eq!(
            codes,
            vec![
                ("unknown".to_string(), 0),
                ("healthy".to_string(), 1),
                ("warning".to_string(), 2),
                ("critical".to_string(), 3)
            ]
        );
    }

    #[test]
    fn a_result_takes_its_worst_metric_and_empty_is_unknown() {
        let at = Moment::from_secs(1);
        let wall = WallTime::from_secs(1);
        let d = Duration::from_millis(2);
        let fold = |statuses: &[HealthStatus]| {
            let metrics = statuses
                .iter()
                .map(|s| HealthMetric::new("m", true, *s))
                .collect();
            HealthCheckResult::from_metrics("c", metrics, at, wall, d).status
        };
        assert_eq!(fold(&[Healthy, Healthy]), Healthy);
        assert_eq!(fold(&[Healthy, Unknown]), Unknown);
        assert_eq!(fold(&[Unknown, Warning, Healthy]), Warning);
        assert_eq!(fold(&[Warning, Critical, Unknown]), Critical);
        assert_eq!(fold(&[]), Unknown);
    }

    #[test]
    fn a_failing_checker_is_unknown_with_its_error_and_never_critical() {
        let at = Moment::from_secs(5);
        let failed = HealthCheckResult::failed(
            "network_connectivity",
            "connect timed out",
            at,
            WallTime::from_secs(5),
            Duration::from_millis(1500),
        );
        assert_eq!(failed.status, Unknown);
        assert_eq!(failed.error.as_deref(), Some("connect timed out"));
        assert_eq!(failed.duration_ms, 1500.0);
        let ok = report(Healthy, 5).results.remove(0);
        let r = HealthReport::from_results(vec![ok, failed], at, WallTime::from_secs(5));
        assert_eq!(r.overall_status, Unknown);
        assert_eq!(
            HealthReport::from_results(vec![], at, WallTime::from_secs(5)).overall_status,
            Unknown
        );
    }

    #[test]
    fn metrics_serialize_their_value_as_plain_json() {
        let mut m = HealthMetric::new("cpu_percent", 15.2, Healthy);
        m.threshold = Some(80.0);
        m.unit = Some("%".into());
        let v = serde_json::to_value(&m).expect("json");
        assert_eq!(v["value"], 15.2);
        assert_eq!(v["status"], "healthy");
        assert_eq!(
            serde_json::to_value(MetricValue::from("running")).expect("json"),
            "running"
        );
        assert_eq!(
            serde_json::to_value(MetricValue::from(true)).expect("json"),
            true
        );
        let back: HealthMetric = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, m);
    }

    #[test]
    fn history_keeps_at_most_capacity_reports_dropping_the_oldest() {
        for capacity in [1usize, 3, 10] {
            let mut h = HealthHistory::new(capacity);
            for i in 0..25 {
                h.push(report(Healthy, i));
            }
            assert_eq!(h.len(), capacity);
            assert_eq!(h.latest().map(|r| r.at), Some(Moment::from_secs(24)));
            assert_eq!(
                h.iter().next().map(|r| r.at),
                Some(Moment::from_secs(25 - capacity as u64))
            );
        }
        assert_eq!(HealthHistory::new(0).capacity(), 1);
    }

    #[test]
    fn aggregation_counts_only_the_window() {
        // Samples every 10 s from 0 to 90.
        let h = history(&[
            Critical, Critical, Warning, Healthy, Healthy, Healthy, Healthy, Healthy, Healthy,
            Healthy,
        ]);
        let now = Moment::from_secs(90);
        let wide = h.aggregate(Duration::from_secs(90), now);
        assert_eq!(wide.samples, 10);
        assert_eq!(
            (
                wide.counts.critical,
                wide.counts.warning,
                wide.counts.healthy
            ),
            (2, 1, 7)
        );
        assert_eq!(
            wide.overall_status, Critical,
            "two consecutive criticals persisted"
        );
        assert_eq!(
            (wide.first_at, wide.last_at),
            (Some(Moment::ZERO), Some(now))
        );
        let narrow = h.aggregate(Duration::from_secs(75), now);
        assert_eq!(narrow.samples, 8);
        assert_eq!(narrow.counts.critical, 0);
        assert_eq!(
            narrow.overall_status, Healthy,
            "the lone warning was a blip"
        );
        assert_eq!(narrow.window_ms, 75_000);
    }

    #[test]
    fn the_window_status_is_the_worst_that_persisted() {
        assert_eq!(persisted_worst(&[]), Unknown);
        assert_eq!(persisted_worst(&[Warning]), Warning);
        assert_eq!(
            persisted_worst(&[Healthy, Critical, Healthy, Healthy]),
            Healthy
        );
        assert_eq!(
            persisted_worst(&[Healthy, Healthy, Warning]),
            Warning,
            "ongoing"
        );
        assert_eq!(
            persisted_worst(&[Warning, Warning, Healthy, Critical, Healthy]),
            Warning
        );
        assert_eq!(persisted_worst(&[Unknown, Unknown, Healthy]), Unknown);
        let empty = HealthHistory::new(5).aggregate(Duration::from_secs(60), Moment::from_secs(60));
        assert_eq!((empty.samples, empty.overall_status), (0, Unknown));
    }
}
