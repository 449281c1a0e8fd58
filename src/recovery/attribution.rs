//! Attribution before remedy: which signals may drive which remedy.
//!
//! warden heals itself from what it measures, and much of what it measures
//! is driven by whoever can open a connection to it. A remedy hits everyone
//! (a restart drops every honest client with the hostile ones), so a signal
//! may drive only the remedies that can fix its cause:
//!
//! | attribution              | signals                                                   | may drive                          |
//! |--------------------------|-----------------------------------------------------------|------------------------------------|
//! | [`Attribution::Process`] | CPU, memory, the daemon's own descriptors, process state, the hub's own error rate, its port and sockets, a checker that cannot see | any remedy: log, clear, restart, emergency stop |
//! | [`Attribution::Clients`] | connected clients, client connections and their descriptors, client errors | at most the warning ladder (log, clear connections); never a restart or a stop: clients are shed at the door |
//! | [`Attribution::Host`]    | the network interface carrying the address               | at most the warning ladder: a restart cannot bring a link back |
//! | [`Attribution::Dependency`] | Redis (cluster mode), any of its results              | nothing: it makes the node not ready (`/readyz`) |
//!
//! The rule is applied as a ceiling on each metric's status
//! ([`Attribution::ceiling`]) before the report is folded into the one
//! status the recovery loop feeds its strategy ([`actionable_status`]): a
//! critical client signal counts as a warning (the warning ladder never
//! restarts or stops anything, see `crate::escalation`), a dependency's as
//! healthy. Reports still print every metric's own verdict (`/health`).
//!
//! A name this table does not know is the process's own: a new checker or
//! metric keeps today's behaviour until it is classified here. What clients
//! buffer (relay queues, history) is bounded in bytes at the door and
//! refused to its sender; no checker reports it as a health signal.

use crate::health::{CheckerId, HealthCheckResult, HealthReport, HealthStatus};

/// Whose ill health a signal shows (see the module doc).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attribution {
    /// The process itself: a restart can fix it.
    Process,
    /// The clients: shed at the door, never a restart.
    Clients,
    /// The host around the process (the network interface).
    Host,
    /// A dependency outside the process (Redis).
    Dependency,
}

impl Attribution {
    /// The most severe status a signal so attributed may bring to the
    /// recovery loop: critical (any remedy), warning (the warning ladder:
    /// log, clear connections) or healthy (no remedy at all).
    pub fn ceiling(self) -> HealthStatus {
        match self {
            Attribution::Process => HealthStatus::Critical,
            Attribution::Clients | Attribution::Host => HealthStatus::Warning,
            Attribution::Dependency => HealthStatus::Healthy,
        }
    }

    /// `status`, lowered to the ceiling if above it.
    pub fn cap(self, status: HealthStatus) -> HealthStatus {
        let ceiling = self.ceiling();
        if status.severity() > ceiling.severity() {
            ceiling
        } else {
            status
        }
    }
}

/// Metrics whose values clients control. The process checker reports the
/// clients' descriptors beside the daemon's own (`file_descriptors` is
/// judged without them); the service checker the clients and their errors.
const CLIENT_METRICS: [(CheckerId, &str); 4] = [
    (CheckerId::ProcessResources, "client_connections"),
    (CheckerId::ProcessResources, "open_fds_total"),
    (CheckerId::ServiceHealth, "clients_connected"),
    (CheckerId::ServiceHealth, "client_errors_in_window"),
];

/// Metrics about the host, not the process.
const HOST_METRICS: [(CheckerId, &str); 2] = [
    (CheckerId::NetworkConnectivity, "interface"),
    (CheckerId::NetworkConnectivity, "interface_status"),
];

/// Whose signal is `metric` of `checker` (a result's names as text; see the
/// module doc for the table).
pub fn attribute(checker: &str, metric: &str) -> Attribution {
    let Some(id) = CheckerId::from_name(checker) else {
        return Attribution::Process;
    };
    if id == CheckerId::RedisDependency {
        Attribution::Dependency
    } else if CLIENT_METRICS.contains(&(id, metric)) {
        Attribution::Clients
    } else if HOST_METRICS.contains(&(id, metric)) {
        Attribution::Host
    } else {
        Attribution::Process
    }
}

/// Whose signal is a checker's result as a whole (a failed checker carries
/// no metric): the dependency's for Redis, the process's otherwise.
pub fn attribute_checker(checker: &str) -> Attribution {
    match CheckerId::from_name(checker) {
        Some(CheckerId::RedisDependency) => Attribution::Dependency,
        _ => Attribution::Process,
    }
}

/// One result's status as the recovery loop may act on it: every metric's
/// status capped by its attribution, folded; a result without metrics (a
/// failed checker) capped by the checker's.
pub fn actionable_result_status(result: &HealthCheckResult) -> HealthStatus {
    let own = if result.metrics.is_empty() || result.error.is_some() {
        attribute_checker(&result.checker).cap(result.status)
    } else {
        HealthStatus::Healthy
    };
    result
        .metrics
        .iter()
        .map(|m| attribute(&result.checker, &m.name).cap(m.status))
        .fold(own, HealthStatus::worst)
}

/// The status the recovery loop feeds its strategy: every result's
/// actionable status folded (no results: unknown, as
/// [`HealthReport::from_results`] folds them).
pub fn actionable_status(report: &HealthReport) -> HealthStatus {
    HealthStatus::fold(report.results.iter().map(actionable_result_status))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::health::HealthMetric;
    use crate::time::{Moment, WallTime};
    use HealthStatus::{Critical, Healthy, Unknown, Warning};

    fn result(checker: CheckerId, metrics: &[(&str, HealthStatus)]) -> HealthCheckResult {
        HealthCheckResult::from_metrics(
            checker.as_str(),
            metrics
                .iter()
                .map(|(name, status)| HealthMetric::new(*name, 1.0, *status))
                .collect(),
            Moment::ZERO,
            WallTime::from_secs(1_700_000_000),
            Duration::ZERO,
        )
    }

    fn report(results: Vec<HealthCheckResult>) -> HealthReport {
        HealthReport::from_results(results, Moment::ZERO, WallTime::from_secs(1_700_000_000))
    }

    #[test]
    fn the_process_own_signals_drive_any_remedy() {
        for metric in [
            "cpu_percent",
            "memory_mb",
            "file_descriptors",
            "process_status",
        ] {
            assert_eq!(attribute("process_resources", metric), Attribution::Process);
        }
        assert_eq!(
            attribute("service_health", "error_rate"),
            Attribution::Process
        );
        assert_eq!(
            attribute("network_connectivity", "port_accessible"),
            Attribution::Process
        );
        let r = report(vec![result(
            CheckerId::ProcessResources,
            &[("memory_mb", Critical)],
        )]);
        assert_eq!(actionable_status(&r), Critical);
    }

    #[test]
    fn client_signals_reach_the_warning_ladder_at_most() {
        let r = report(vec![
            result(CheckerId::ProcessResources, &[("memory_mb", Healthy)]),
            result(CheckerId::ServiceHealth, &[("clients_connected", Critical)]),
        ]);
        assert_eq!(r.overall_status, Critical, "/health still says critical");
        assert_eq!(actionable_status(&r), Warning);
    }

    #[test]
    fn the_interface_reaches_the_warning_ladder_at_most() {
        let r = report(vec![result(
            CheckerId::NetworkConnectivity,
            &[("interface_status", Critical), ("port_accessible", Healthy)],
        )]);
        assert_eq!(actionable_status(&r), Warning);
    }

    #[test]
    fn a_dependency_drives_nothing_even_when_it_fails() {
        let r = report(vec![
            result(CheckerId::ProcessResources, &[("memory_mb", Healthy)]),
            result(CheckerId::RedisDependency, &[("redis_reachable", Critical)]),
            HealthCheckResult::failed(
                CheckerId::RedisDependency.as_str(),
                "down",
                Moment::ZERO,
                WallTime::from_secs(0),
                Duration::ZERO,
            ),
        ]);
        assert_eq!(actionable_status(&r), Healthy);
    }

    #[test]
    fn a_checker_that_cannot_see_is_the_process_own_unknown() {
        let failed = HealthCheckResult::failed(
            "process_resources",
            "probe failed",
            Moment::ZERO,
            WallTime::from_secs(0),
            Duration::ZERO,
        );
        assert_eq!(actionable_status(&report(vec![failed])), Unknown);
        assert_eq!(actionable_status(&report(vec![])), Unknown);
    }

    #[test]
    fn unknown_names_are_the_process_own() {
        assert_eq!(
            attribute("custom", "clients_connected"),
            Attribution::Process
        );
        assert_eq!(
            attribute("service_health", "new_metric"),
            Attribution::Process
        );
    }
}
