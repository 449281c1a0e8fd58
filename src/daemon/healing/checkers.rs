//! The three health checkers of the seed behind one [`Checker`] trait:
//! [`ProcessResourceChecker`], [`NetworkConnectivityChecker`] and
//! [`ServiceHealthChecker`]. Each measures, judges every metric against its
//! threshold, and folds the metrics into a [`HealthCheckResult`] with the
//! core's rules (`crate::health`).
//!
//! # Threshold rule (every thresholded metric)
//! The core's [`judge`] (`crate::recovery::judge`): a value **above** its
//! threshold is `warning`; a value above [`CRITICAL_MULTIPLE`] × the
//! threshold (1.5×) is `critical`; at or below the threshold it is `healthy`.
//! Which of these verdicts may drive which remedy is the core's attribution
//! rule (`crate::recovery::attribution`), not the checkers'.
//!
//! # What is never a failure
//! - Idleness: the service checker reports seconds since the last activity,
//!   always `healthy` (the original went critical after 30 idle minutes and
//!   sent itself SIGTERM).
//! - A metric the platform does not expose (fds and threads outside Linux) is
//!   left out of the result rather than reported `unknown`.
//!
//! `check` may block (the process checker reads /proc, the network checker
//! connects): the monitor runs it on tokio's blocking pool with a timeout,
//! except a checker that reads memory only ([`Checker::blocks`]): the service
//! checker (counters) and the process checker once its probe answers the
//! daemon's own pid from `/proc/self`. A checker that
//! cannot measure returns [`HealthCheckResult::failed`] (`unknown`).
//!
//! Not here: scheduling, history and recovery (see `monitor`, `recovery`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::daemon::hub::{ServiceStats, ServiceStatsSnapshot};
use crate::daemon::os::netif::{self, InterfaceState};
use crate::health::DependencySource;
use crate::health::{CheckerId, HealthCheckResult, HealthMetric, HealthStatus, MetricValue};
use crate::probe::{ProbeOutcome, ProcessProbe, ProcessSnapshot};
pub use crate::recovery::judge::{CRITICAL_MULTIPLE, judge};
use crate::time::{Moment, WallTime};

/// Checker names, as `/health`'s `checks` object prints them (the seed's keys).
pub const PROCESS_RESOURCES: &str = CheckerId::ProcessResources.as_str();
pub const NETWORK_CONNECTIVITY: &str = CheckerId::NetworkConnectivity.as_str();
pub const SERVICE_HEALTH: &str = CheckerId::ServiceHealth.as_str();

/// One health checker. `check` may block; it must not panic on bad input
/// (the monitor still catches a panic and reports `unknown`).
pub trait Checker: Send + Sync {
    /// Which checker this is: the name its results carry.
    fn id(&self) -> CheckerId;
    fn check(&self, at: Moment, wall: WallTime) -> HealthCheckResult;
    /// False for a checker that only reads memory (atomics, a mutex held for
    /// a copy): the monitor then calls it inline instead of paying a hop to
    /// the blocking pool and back. True (the default) for anything that may
    /// touch a file, a socket or a lock held across I/O.
    fn blocks(&self) -> bool {
        true
    }
}

fn thresholded(name: &str, value: f64, threshold: f64, unit: &str) -> HealthMetric {
    let status = judge(value, threshold);
    let mut metric = HealthMetric::new(name, value, status);
    metric.threshold = Some(threshold);
    metric.unit = Some(unit.to_string());
    if status != HealthStatus::Healthy {
        metric.message = Some(format!(
            "{name} {value:.1}{unit} is above {threshold}{unit}{}",
            if status == HealthStatus::Critical {
                format!(" × {CRITICAL_MULTIPLE}")
            } else {
                String::new()
            }
        ));
    }
    metric
}

fn reported(name: &str, value: impl Into<MetricValue>, unit: Option<&str>) -> HealthMetric {
    let mut metric = HealthMetric::new(name, value, HealthStatus::Healthy);
    metric.unit = unit.map(str::to_string);
    metric
}

// ---------------------------------------------------------------------------
// Process resources

/// Limits for [`ProcessResourceChecker`] (config `health_monitoring.thresholds`).
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceThresholds {
    /// CPU of the process in percent of one core, as psutil's per-process
    /// `cpu_percent` (the seed's unit): 100 is one core busy, and a process
    /// on several cores can exceed 100.
    pub cpu_percent: f64,
    pub memory_mb: f64,
    pub file_descriptors: f64,
}

/// One measurement of the process, kept for `/health`, `/diagnostics` and
/// `/metrics` so that they print what the checker judged.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessSample {
    pub snapshot: ProcessSnapshot,
    /// The process's CPU in percent of one core (`snapshot.cpu_percent`):
    /// what the checker judged. 100 is one core busy; up to `100 × cores`.
    pub cpu_percent: f64,
    /// Cores available to the process, reported next to `cpu_percent`.
    pub cores: usize,
    pub wall: WallTime,
}

/// CPU, RSS, VMS, fds, threads, status and start time of one process.
pub struct ProcessResourceChecker {
    pid: u32,
    probe: Arc<dyn ProcessProbe>,
    /// Read at each check: a config reload changes it in place.
    thresholds: Arc<RwLock<ResourceThresholds>>,
    cores: usize,
    latest: Arc<RwLock<Option<ProcessSample>>>,
    /// Client connections open now (the hub's count at the door): their
    /// descriptors are the clients', shed at the door, not the daemon's.
    client_connections: Option<ConnectionCount>,
}

/// How many client connections are open now.
pub type ConnectionCount = Arc<dyn Fn() -> u64 + Send + Sync>;

impl ProcessResourceChecker {
    /// `cores` is reported beside the CPU metric (use [`available_cores`] in the daemon).
    pub fn new(
        pid: u32,
        probe: Arc<dyn ProcessProbe>,
        thresholds: ResourceThresholds,
        cores: usize,
    ) -> Self {
        ProcessResourceChecker {
            pid,
            probe,
            thresholds: Arc::new(RwLock::new(thresholds)),
            cores: cores.max(1),
            latest: Arc::new(RwLock::new(None)),
            client_connections: None,
        }
    }

    /// Attribution before remedy: `file_descriptors` is judged on the
    /// daemon's own descriptors, those of open client connections
    /// (`count`) left out. Clients that hold connections are shed at the
    /// door (timeouts, `max_connections`); a restart cannot fix them (they
    /// come back), a descriptor leak of the daemon's own it can.
    pub fn with_client_connections(mut self, count: ConnectionCount) -> Self {
        self.client_connections = Some(count);
        self
    }

    /// The thresholds the next checks judge by; writing them changes the
    /// running checker (config reload).
    pub fn thresholds_handle(&self) -> Arc<RwLock<ResourceThresholds>> {
        Arc::clone(&self.thresholds)
    }

    /// The sample of the latest successful check (shared with the endpoints).
    pub fn latest_sample(&self) -> Option<ProcessSample> {
        self.latest
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A handle on the latest sample that outlives the checker's borrow.
    pub fn sample_handle(&self) -> SampleHandle {
        SampleHandle(Arc::clone(&self.latest))
    }
}

/// Read access to a [`ProcessResourceChecker`]'s latest sample.
#[derive(Clone, Debug, Default)]
pub struct SampleHandle(Arc<RwLock<Option<ProcessSample>>>);

impl SampleHandle {
    pub fn get(&self) -> Option<ProcessSample> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Cores the process may run on (1 when the OS will not say).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Checker for ProcessResourceChecker {
    fn id(&self) -> CheckerId {
        CheckerId::ProcessResources
    }

    /// Blocking unless the probe answers this pid from memory.
    fn blocks(&self) -> bool {
        !self.probe.probes_in_memory(self.pid)
    }

    fn check(&self, at: Moment, wall: WallTime) -> HealthCheckResult {
        let started = Instant::now();
        let snapshot = match self.probe.probe(self.pid) {
            ProbeOutcome::Found(snapshot) => snapshot,
            ProbeOutcome::NotFound => {
                return HealthCheckResult::failed(
                    PROCESS_RESOURCES,
                    format!("process {} not found", self.pid),
                    at,
                    wall,
                    started.elapsed(),
                );
            }
            ProbeOutcome::Unavailable { reason } => {
                return HealthCheckResult::failed(
                    PROCESS_RESOURCES,
                    reason,
                    at,
                    wall,
                    started.elapsed(),
                );
            }
        };
        let cpu = f64::from(snapshot.cpu_percent);
        let metrics = self.judge_snapshot(&snapshot, cpu);
        *self.latest.write().unwrap_or_else(PoisonError::into_inner) = Some(ProcessSample {
            snapshot,
            cpu_percent: cpu,
            cores: self.cores,
            wall,
        });
        HealthCheckResult::from_metrics(PROCESS_RESOURCES, metrics, at, wall, started.elapsed())
    }
}

impl ProcessResourceChecker {
    /// The metrics of one snapshot against the thresholds in force. Open
    /// descriptors are judged without the clients' connections (the door
    /// sheds those; a restart cannot fix them), which are reported beside.
    fn judge_snapshot(&self, snapshot: &ProcessSnapshot, cpu: f64) -> Vec<HealthMetric> {
        let t = self
            .thresholds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut metrics = vec![
            thresholded("cpu_percent", cpu, t.cpu_percent, "%"),
            thresholded("memory_mb", snapshot.memory_mb(), t.memory_mb, "MB"),
            reported(
                "virtual_memory_mb",
                snapshot.virtual_memory_mb(),
                Some("MB"),
            ),
        ];
        if let Some(fds) = snapshot.open_fds {
            let clients = self.client_connections.as_ref().map_or(0, |count| count());
            let clients = clients.min(fds);
            metrics.push(thresholded(
                "file_descriptors",
                (fds - clients) as f64,
                t.file_descriptors,
                "",
            ));
            if self.client_connections.is_some() {
                metrics.push(reported("client_connections", clients as f64, None));
                metrics.push(reported("open_fds_total", fds as f64, None));
            }
        }
        if let Some(threads) = snapshot.threads {
            metrics.push(reported("thread_count", threads, None));
        }
        let mut status = reported("process_status", snapshot.status.as_str(), None);
        if snapshot.status.has_exited() {
            status.status = HealthStatus::Critical;
            status.message = Some(format!("process is {}", snapshot.status));
        }
        metrics.push(status);
        metrics.push(reported(
            "start_time",
            snapshot.start_time.to_iso8601(),
            None,
        ));
        metrics
    }
}

// ---------------------------------------------------------------------------
// Network connectivity

/// Whether the hub's own address accepts a TCP connection within `timeout`,
/// and whether a socket can be created at all.
///
/// Verdicts: accepted → healthy; refused or unreachable → critical (the
/// daemon is not reachable); no answer within the timeout → warning (slow is
/// degraded, not down); a socket cannot be created → critical.
pub struct NetworkConnectivityChecker {
    addr: Arc<OnceLock<SocketAddr>>,
    timeout: Duration,
}

/// Sets the address of a [`NetworkConnectivityChecker::deferred`] checker.
#[derive(Clone, Debug)]
pub struct TargetSetter(Arc<OnceLock<SocketAddr>>);

impl TargetSetter {
    /// Sets the bound address (wildcards are checked through loopback);
    /// false if it was already set.
    pub fn set(&self, addr: SocketAddr) -> bool {
        self.0.set(addr).is_ok()
    }
}

fn loopback_for(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

impl NetworkConnectivityChecker {
    /// `addr` is the address the hub is bound to; a wildcard bind
    /// (`0.0.0.0`, `::`) is checked through loopback.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        let (checker, setter) = Self::deferred(timeout);
        setter.set(addr);
        checker
    }

    /// A checker whose address is set later (once the daemon has bound it);
    /// until then its result is `unknown` ("not bound yet").
    pub fn deferred(timeout: Duration) -> (Self, TargetSetter) {
        let addr = Arc::new(OnceLock::new());
        (
            NetworkConnectivityChecker {
                addr: Arc::clone(&addr),
                timeout,
            },
            TargetSetter(addr),
        )
    }

    /// The address the check connects to (loopback for a wildcard bind).
    pub fn target(&self) -> Option<SocketAddr> {
        self.addr.get().copied().map(loopback_for)
    }
}

impl Checker for NetworkConnectivityChecker {
    fn id(&self) -> CheckerId {
        CheckerId::NetworkConnectivity
    }

    fn check(&self, at: Moment, wall: WallTime) -> HealthCheckResult {
        let started = Instant::now();
        let Some(&bound) = self.addr.get() else {
            return HealthCheckResult::failed(
                NETWORK_CONNECTIVITY,
                "the hub's address is not bound yet",
                at,
                wall,
                started.elapsed(),
            );
        };
        let target = loopback_for(bound);
        let mut metrics = Vec::new();

        let connect_started = Instant::now();
        let outcome = TcpStream::connect_timeout(&target, self.timeout);
        let connect_ms = connect_started.elapsed().as_secs_f64() * 1000.0;

        // A connected stream proves a socket could be created; only a failed
        // connect needs a separate attempt to tell the two apart.
        let mut creation = reported("socket_creation", true, None);
        if outcome.is_err() {
            let unspecified: SocketAddr = match target {
                SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
            };
            if let Err(error) = UdpSocket::bind(unspecified) {
                creation.value = MetricValue::Bool(false);
                creation.status = HealthStatus::Critical;
                creation.message = Some(format!("cannot create a socket: {error}"));
            }
        }
        metrics.push(creation);

        let mut port = reported("port_accessible", outcome.is_ok(), None);
        port.threshold = Some(self.timeout.as_secs_f64() * 1000.0);
        if let Err(error) = &outcome {
            let timed_out = matches!(
                error.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            );
            port.status = if timed_out {
                HealthStatus::Warning
            } else {
                HealthStatus::Critical
            };
            port.message = Some(format!("{target} did not accept: {error}"));
        }
        metrics.push(port);
        metrics.push(reported("connect_ms", connect_ms, Some("ms")));
        metrics.extend(interface_metrics(bound.ip()));
        if let Ok(stream) = &outcome {
            reset_on_close(stream);
        }
        drop(outcome);
        HealthCheckResult::from_metrics(NETWORK_CONNECTIVITY, metrics, at, wall, started.elapsed())
    }
}

/// `interface` (its name, `*` for a wildcard bind) and `interface_status`
/// (`up`, `no_carrier`, `down`, `missing`) of the interface carrying the
/// hub's address. Anything but `up` is a warning, never critical: a restart
/// cannot bring a link back, so the ladder must not climb to one for it.
fn interface_metrics(ip: IpAddr) -> Vec<HealthMetric> {
    match netif::interface_for(ip) {
        Ok(state) => {
            let mut status = reported("interface_status", state.as_str(), None);
            if !matches!(state, InterfaceState::Up { .. }) {
                status.status = HealthStatus::Warning;
                status.message = Some(match state.name() {
                    Some(name) => format!("interface {name} carrying {ip} is {}", state.as_str()),
                    None => format!("no interface holds {ip} any more"),
                });
            }
            vec![
                reported("interface", state.name().unwrap_or("none"), None),
                status,
            ]
        }
        Err(error) => {
            let mut status = reported("interface_status", "unknown", None);
            status.status = HealthStatus::Unknown;
            status.message = Some(format!("cannot list the interfaces: {error}"));
            vec![status]
        }
    }
}

/// Makes `close` send a reset instead of the FIN handshake (`SO_LINGER` 0):
/// the check's connection carries nothing, and the reset spares both ends
/// the teardown's packets and the TIME_WAIT entry, every cycle.
fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a valid,
    // aligned `linger` that outlives the call; the fd is the open stream's.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "SO_LINGER not set");
    }
}

// ---------------------------------------------------------------------------
// Service health

/// Where the service checker reads counters: the hub's [`ServiceStats`], or a
/// closure in tests.
pub trait StatsSource: Send + Sync {
    fn snapshot(&self) -> ServiceStatsSnapshot;
}

impl StatsSource for ServiceStats {
    fn snapshot(&self) -> ServiceStatsSnapshot {
        ServiceStats::snapshot(self)
    }
}

impl<F> StatsSource for F
where
    F: Fn() -> ServiceStatsSnapshot + Send + Sync,
{
    fn snapshot(&self) -> ServiceStatsSnapshot {
        self()
    }
}

/// Limits for [`ServiceHealthChecker`].
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceThresholds {
    pub max_clients: f64,
    /// Errors per processed event within one check window (seed `max_error_rate`).
    pub max_error_rate: f64,
}

/// Fewer operations (events + errors) than this in a window are too few to
/// judge an error *rate*: one bad packet on an idle hub is not a 100% error rate.
pub const MIN_OPERATIONS_FOR_ERROR_RATE: u64 = 10;

/// Clients, event rate, error rate, dropped events and time since last
/// activity, from the hub's real counters.
///
/// Rates are over the window since the **previous check** (not since boot):
/// a burst of errors an hour ago does not colour every later check, and a
/// fresh burst is not diluted by a long history. The first check compares
/// against zero counters. `error_rate = errors / events` of the window,
/// judged only when the window saw at least [`MIN_OPERATIONS_FOR_ERROR_RATE`]
/// operations. `errors` are the hub's own failures only: a client's bad
/// packets (`client_errors`) are that client's, reported here but never part
/// of the rate, so no client can drive the recovery ladder. Dropped events
/// and idleness are reported, never judged.
pub struct ServiceHealthChecker {
    stats: Arc<dyn StatsSource>,
    /// Read at each check: a config reload changes it in place.
    thresholds: Arc<RwLock<ServiceThresholds>>,
    previous: Mutex<Option<(Moment, ServiceStatsSnapshot)>>,
}

impl ServiceHealthChecker {
    pub fn new(stats: Arc<dyn StatsSource>, thresholds: ServiceThresholds) -> Self {
        ServiceHealthChecker {
            stats,
            thresholds: Arc::new(RwLock::new(thresholds)),
            previous: Mutex::new(None),
        }
    }

    /// The thresholds the next checks judge by (config reload writes them).
    pub fn thresholds_handle(&self) -> Arc<RwLock<ServiceThresholds>> {
        Arc::clone(&self.thresholds)
    }
}

impl Checker for ServiceHealthChecker {
    fn id(&self) -> CheckerId {
        CheckerId::ServiceHealth
    }

    /// Reads the hub's counters only.
    fn blocks(&self) -> bool {
        false
    }

    fn check(&self, at: Moment, wall: WallTime) -> HealthCheckResult {
        let started = Instant::now();
        let now = self.stats.snapshot();
        let previous = {
            let mut guard = self.previous.lock().unwrap_or_else(PoisonError::into_inner);
            guard.replace((at, now))
        };
        let (since, before) = previous.unwrap_or((at, ServiceStatsSnapshot::default()));
        let window = at.saturating_since(since);
        let events = now.events_processed.saturating_sub(before.events_processed);
        let errors = now.errors.saturating_sub(before.errors);
        let dropped = now.events_dropped.saturating_sub(before.events_dropped);
        let t = self
            .thresholds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();

        let mut metrics = vec![thresholded(
            "clients_connected",
            now.clients_connected as f64,
            t.max_clients,
            "",
        )];
        let rate = if window.is_zero() {
            0.0
        } else {
            events as f64 / window.as_secs_f64()
        };
        metrics.push(reported("event_rate", rate, Some("events/s")));
        metrics.push(reported("events_processed", now.events_processed, None));

        let error_rate = if events == 0 {
            if errors == 0 { 0.0 } else { 1.0 }
        } else {
            errors as f64 / events as f64
        };
        let mut rate_metric = if events + errors >= MIN_OPERATIONS_FOR_ERROR_RATE {
            thresholded("error_rate", error_rate, t.max_error_rate, "")
        } else {
            let mut m = reported("error_rate", error_rate, None);
            m.threshold = Some(t.max_error_rate);
            m.message = Some(format!(
                "{} operations in the window: too few to judge a rate",
                events + errors
            ));
            m
        };
        rate_metric.unit = None;
        metrics.push(rate_metric);
        metrics.push(reported("errors_in_window", errors, None));
        metrics.push(reported(
            "client_errors_in_window",
            now.client_errors.saturating_sub(before.client_errors),
            None,
        ));
        metrics.push(reported("events_dropped_in_window", dropped, None));
        metrics.push(reported("events_dropped", now.events_dropped, None));
        let idle = match now.last_activity {
            Some(last) => reported(
                "seconds_since_last_activity",
                wall.as_millis().saturating_sub(last.as_millis()) as f64 / 1000.0,
                Some("s"),
            ),
            None => reported("seconds_since_last_activity", "never", None),
        };
        metrics.push(idle);
        HealthCheckResult::from_metrics(SERVICE_HEALTH, metrics, at, wall, started.elapsed())
    }
}

// ---------------------------------------------------------------------------
// Dependencies (cluster mode)

/// Name of the Redis dependency checker in reports and `/health`.
pub const REDIS_DEPENDENCY: &str = CheckerId::RedisDependency.as_str();
/// A Redis round trip above this is a warning.
pub const DEPENDENCY_RTT_WARNING_MS: f64 = 100.0;
/// A heartbeat older than this many intervals is a warning.
pub const DEPENDENCY_STALE_INTERVALS: u64 = 3;

/// Reports a dependency (Redis, in cluster mode) in the same vocabulary as
/// the other checkers. Never critical: an unreachable, slow or silent Redis
/// is a `warning` (the node still serves its own clients); the recovery
/// ladder ignores this checker (see `healing.rs`) and `/readyz` reports the
/// node not ready instead.
pub struct DependencyChecker {
    source: Arc<dyn DependencySource>,
}

impl DependencyChecker {
    pub fn new(source: Arc<dyn DependencySource>) -> Self {
        DependencyChecker { source }
    }
}

impl Checker for DependencyChecker {
    fn id(&self) -> CheckerId {
        CheckerId::RedisDependency
    }

    fn check(&self, at: Moment, wall: WallTime) -> HealthCheckResult {
        let started = Instant::now();
        let f = self.source.facts();
        let mut metrics = Vec::new();

        let mut reachable = reported("redis_reachable", f.connected, None);
        if !f.connected {
            reachable.status = HealthStatus::Warning;
            reachable.message = Some(format!(
                "Redis is {}{}; relaying to this node's clients only",
                f.state,
                f.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
        metrics.push(reachable);

        if let Some(rtt) = f.rtt_ms {
            let mut m = reported("redis_rtt_ms", rtt, Some("ms"));
            m.threshold = Some(DEPENDENCY_RTT_WARNING_MS);
            if f.connected && rtt > DEPENDENCY_RTT_WARNING_MS {
                m.status = HealthStatus::Warning;
                m.message = Some(format!("Redis answered in {rtt:.1} ms"));
            }
            metrics.push(m);
        }

        let stale_after = f
            .heartbeat_interval_ms
            .saturating_mul(DEPENDENCY_STALE_INTERVALS);
        if let Some(age) = f.heartbeat_age_ms {
            let mut m = reported("heartbeat_age_ms", age as f64, Some("ms"));
            m.threshold = Some(stale_after as f64);
            if f.connected && age > stale_after {
                m.status = HealthStatus::Warning;
                m.message = Some(format!("no heartbeat answer from Redis for {age} ms"));
            }
            metrics.push(m);
        }
        metrics.push(reported("peers_seen", f.peers_seen as f64, None));
        HealthCheckResult::from_metrics(REDIS_DEPENDENCY, metrics, at, wall, started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::DependencyFacts;
    use crate::probe::{FakeProbe, ProcessStatus};
    use HealthStatus::{Critical, Healthy, Unknown, Warning};

    const MB: u64 = 1024 * 1024;

    fn at(s: u64) -> (Moment, WallTime) {
        (Moment::from_secs(s), WallTime::from_secs(1_700_000_000 + s))
    }

    fn metric<'a>(r: &'a HealthCheckResult, name: &str) -> &'a HealthMetric {
        r.metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no metric {name} in {r:?}"))
    }

    fn redis_facts(connected: bool, rtt_ms: f64, age_ms: u64) -> DependencyFacts {
        DependencyFacts {
            connected,
            state: if connected {
                "connected"
            } else {
                "disconnected"
            }
            .to_string(),
            rtt_ms: Some(rtt_ms),
            heartbeat_age_ms: Some(age_ms),
            heartbeat_interval_ms: 1000,
            peers_seen: 2,
            last_error: (!connected).then(|| "connection refused".to_string()),
        }
    }

    fn check_dependency(facts: DependencyFacts) -> HealthCheckResult {
        let checker = DependencyChecker::new(Arc::new(move || facts.clone()));
        let (m, w) = at(1);
        checker.check(m, w)
    }

    #[test]
    fn a_reachable_quick_redis_is_healthy() {
        let r = check_dependency(redis_facts(true, 0.4, 200));
        assert_eq!(r.checker, REDIS_DEPENDENCY);
        assert_eq!(r.status, Healthy);
        assert_eq!(metric(&r, "peers_seen").value, MetricValue::from(2.0));
    }

    #[test]
    fn an_unreachable_redis_is_a_warning_never_critical() {
        let r = check_dependency(redis_facts(false, 0.4, 60_000));
        assert_eq!(r.status, Warning);
        let m = metric(&r, "redis_reachable");
        assert_eq!(m.status, Warning);
        assert!(m.message.as_deref().unwrap().contains("connection refused"));
        // A stale heartbeat of a Redis already known down is not counted twice.
        assert_eq!(metric(&r, "heartbeat_age_ms").status, Healthy);
    }

    #[test]
    fn a_slow_or_silent_redis_is_a_warning() {
        let slow = check_dependency(redis_facts(true, 250.0, 200));
        assert_eq!(slow.status, Warning);
        assert_eq!(metric(&slow, "redis_rtt_ms").status, Warning);
        let silent = check_dependency(redis_facts(true, 0.4, 3_001));
        assert_eq!(silent.status, Warning);
        assert_eq!(metric(&silent, "heartbeat_age_ms").status, Warning);
        let on_time = check_dependency(redis_facts(true, 0.4, 3_000));
        assert_eq!(on_time.status, Healthy);
    }

    fn process_checker(probe: &Arc<FakeProbe>, cores: usize) -> ProcessResourceChecker {
        ProcessResourceChecker::new(
            42,
            Arc::clone(probe) as Arc<dyn ProcessProbe>,
            ResourceThresholds {
                cpu_percent: 80.0,
                memory_mb: 100.0,
                file_descriptors: 1000.0,
            },
            cores,
        )
    }

    fn snapshot(cpu: f32, rss_mb: u64, fds: u64) -> ProcessSnapshot {
        let mut s = ProcessSnapshot::new(42, "warden", &["warden"], WallTime::from_secs(1_000));
        s.cpu_percent = cpu;
        s.memory_rss_bytes = rss_mb * MB;
        s.memory_virtual_bytes = 4 * rss_mb * MB;
        s.open_fds = Some(fds);
        s.threads = Some(7);
        s
    }

    #[test]
    fn the_threshold_rule_is_warning_above_and_critical_above_one_and_a_half() {
        assert_eq!(judge(100.0, 100.0), Healthy);
        assert_eq!(judge(100.1, 100.0), Warning);
        assert_eq!(judge(150.0, 100.0), Warning);
        assert_eq!(judge(150.1, 100.0), Critical);
    }

    #[test]
    fn memory_over_its_threshold_warns_then_goes_critical() {
        let probe = Arc::new(FakeProbe::new());
        let checker = process_checker(&probe, 1);
        let (m, w) = at(1);
        for (rss, want) in [(50, Healthy), (120, Warning), (151, Critical)] {
            probe.set(snapshot(1.0, rss, 10));
            let r = checker.check(m, w);
            assert_eq!((metric(&r, "memory_mb").status, r.status), (want, want));
            assert_eq!(metric(&r, "memory_mb").threshold, Some(100.0));
        }
        let r = checker.check(m, w);
        assert_eq!(
            metric(&r, "virtual_memory_mb").value,
            MetricValue::Number(604.0)
        );
        assert_eq!(metric(&r, "thread_count").value, MetricValue::Number(7.0));
        assert_eq!(
            metric(&r, "start_time").value,
            MetricValue::Text(WallTime::from_secs(1_000).to_iso8601())
        );
        assert_eq!(
            checker.latest_sample().map(|s| s.snapshot.memory_rss_bytes),
            Some(151 * MB)
        );
    }

    #[test]
    fn cpu_is_per_process_one_core_is_100_whatever_the_core_count() {
        // The seed's (psutil's) unit: one spinning core reads 100 on a
        // 16-core host too, not 6. Threshold 80: warning above 80, critical
        // above 120.
        let probe = Arc::new(FakeProbe::new());
        let (m, w) = at(1);
        probe.set(snapshot(100.0, 10, 10));
        let on_sixteen = process_checker(&probe, 16).check(m, w);
        assert_eq!(
            metric(&on_sixteen, "cpu_percent").value,
            MetricValue::Number(100.0)
        );
        assert_eq!(metric(&on_sixteen, "cpu_percent").status, Warning);
        probe.set(snapshot(300.0, 10, 10));
        let on_four = process_checker(&probe, 4).check(m, w);
        assert_eq!(metric(&on_four, "cpu_percent").status, Critical);
        assert_eq!(
            process_checker(&probe, 4)
                .latest_sample()
                .map(|s| s.cpu_percent),
            None,
            "a fresh checker has no sample"
        );
        let checker = process_checker(&probe, 4);
        checker.check(m, w);
        assert_eq!(checker.latest_sample().map(|s| s.cpu_percent), Some(300.0));
        probe.set(snapshot(50.0, 10, 10));
        assert_eq!(process_checker(&probe, 1).check(m, w).status, Healthy);
    }

    #[test]
    fn client_connections_descriptors_are_the_clients_not_the_daemons() {
        let probe = Arc::new(FakeProbe::new());
        let (m, w) = at(1);
        probe.set(snapshot(0.0, 10, 1600));
        let clients = Arc::new(std::sync::atomic::AtomicU64::new(1580));
        let count = Arc::clone(&clients);
        let checker = process_checker(&probe, 1).with_client_connections(Arc::new(move || {
            count.load(std::sync::atomic::Ordering::Relaxed)
        }));
        let r = checker.check(m, w);
        assert_eq!(
            metric(&r, "file_descriptors").value,
            MetricValue::Number(20.0)
        );
        assert_eq!(metric(&r, "file_descriptors").status, Healthy);
        assert_eq!(
            metric(&r, "client_connections").value,
            MetricValue::Number(1580.0)
        );
        assert_eq!(
            metric(&r, "open_fds_total").value,
            MetricValue::Number(1600.0)
        );
        // A leak of the daemon's own is still judged.
        clients.store(0, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            metric(&checker.check(m, w), "file_descriptors").status,
            Critical
        );
    }

    #[test]
    fn file_descriptors_and_a_zombie_status_are_judged() {
        let probe = Arc::new(FakeProbe::new());
        let checker = process_checker(&probe, 1);
        let (m, w) = at(1);
        probe.set(snapshot(0.0, 10, 1200));
        assert_eq!(
            metric(&checker.check(m, w), "file_descriptors").status,
            Warning
        );
        probe.set(snapshot(0.0, 10, 10).with_status(ProcessStatus::Zombie));
        let r = checker.check(m, w);
        assert_eq!(metric(&r, "process_status").status, Critical);
        assert_eq!(r.status, Critical);
    }

    #[test]
    fn a_process_the_probe_cannot_see_is_unknown_not_a_crash() {
        let probe = Arc::new(FakeProbe::new());
        let checker = process_checker(&probe, 1);
        let (m, w) = at(1);
        let r = checker.check(m, w);
        assert_eq!(r.status, Unknown);
        assert!(r.error.as_deref().unwrap_or("").contains("not found"));
        probe.set_unavailable("no /proc");
        assert_eq!(checker.check(m, w).error.as_deref(), Some("no /proc"));
        assert_eq!(checker.latest_sample(), None);
    }

    #[test]
    fn an_accepting_port_is_healthy_and_a_closed_one_critical() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let checker = NetworkConnectivityChecker::new(addr, Duration::from_secs(5));
        let (m, w) = at(1);
        let r = checker.check(m, w);
        assert_eq!(r.status, Healthy, "{r:?}");
        assert_eq!(metric(&r, "port_accessible").value, MetricValue::Bool(true));
        assert_eq!(metric(&r, "socket_creation").value, MetricValue::Bool(true));
        assert_eq!(
            metric(&r, "interface_status").value,
            MetricValue::Text("up".into())
        );
        drop(listener);
        // A port bound but not listening: connections to it are refused, and
        // no other test can take it meanwhile (a port merely freed could be
        // handed to one at once, and then accept).
        let closed = tokio::net::TcpSocket::new_v4().expect("socket");
        closed
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = closed.local_addr().expect("addr");
        let checker = NetworkConnectivityChecker::new(addr, Duration::from_secs(5));
        let r = checker.check(m, w);
        assert_eq!(metric(&r, "port_accessible").status, Critical);
        assert_eq!(r.status, Critical);
    }

    #[test]
    fn a_wildcard_bind_is_checked_through_loopback() {
        let c = NetworkConnectivityChecker::new(
            "0.0.0.0:8765".parse().expect("addr"),
            Duration::from_secs(1),
        );
        assert_eq!(
            c.target(),
            Some("127.0.0.1:8765".parse::<SocketAddr>().expect("addr"))
        );
        let (late, setter) = NetworkConnectivityChecker::deferred(Duration::from_secs(1));
        let r = late.check(Moment::from_secs(1), WallTime::from_secs(1));
        assert_eq!(r.status, Unknown);
        assert!(setter.set("[::]:9".parse().expect("addr")));
        assert_eq!(late.target(), Some("[::1]:9".parse().expect("addr")));
    }

    fn stats(
        clients: u64,
        events: u64,
        errors: u64,
        last: Option<WallTime>,
    ) -> ServiceStatsSnapshot {
        ServiceStatsSnapshot {
            clients_connected: clients,
            events_processed: events,
            events_relayed: events,
            events_dropped: 0,
            errors,
            last_activity: last,
            ..ServiceStatsSnapshot::default()
        }
    }

    fn service_checker(feed: &Arc<Mutex<ServiceStatsSnapshot>>) -> ServiceHealthChecker {
        let feed = Arc::clone(feed);
        ServiceHealthChecker::new(
            Arc::new(move || *feed.lock().expect("feed")),
            ServiceThresholds {
                max_clients: 2.0,
                max_error_rate: 0.1,
            },
        )
    }

    #[test]
    fn error_rate_is_measured_over_the_window_since_the_previous_check() {
        let feed = Arc::new(Mutex::new(stats(0, 0, 0, None)));
        let checker = service_checker(&feed);
        checker.check(Moment::from_secs(0), WallTime::from_secs(0));
        // A bad window: 30 errors in 100 events.
        *feed.lock().expect("feed") = stats(0, 100, 30, None);
        let bad = checker.check(Moment::from_secs(10), WallTime::from_secs(10));
        assert_eq!(metric(&bad, "error_rate").status, Critical);
        assert_eq!(metric(&bad, "event_rate").value, MetricValue::Number(10.0));
        // A clean window after it: since boot the rate would still be 30/1100.
        *feed.lock().expect("feed") = stats(0, 1100, 30, None);
        let good = checker.check(Moment::from_secs(20), WallTime::from_secs(20));
        assert_eq!(metric(&good, "error_rate").value, MetricValue::Number(0.0));
        assert_eq!(good.status, Healthy);
        // 12 errors in 100 events: over 0.1, under 0.15.
        *feed.lock().expect("feed") = stats(0, 1200, 42, None);
        let warn = checker.check(Moment::from_secs(30), WallTime::from_secs(30));
        assert_eq!(metric(&warn, "error_rate").status, Warning);
    }

    #[test]
    fn one_error_on_an_idle_hub_is_too_few_to_judge() {
        let feed = Arc::new(Mutex::new(stats(0, 0, 1, None)));
        let r = service_checker(&feed).check(Moment::from_secs(1), WallTime::from_secs(1));
        assert_eq!(metric(&r, "error_rate").status, Healthy);
        assert_eq!(r.status, Healthy);
    }

    #[test]
    fn clients_over_max_clients_warn() {
        let feed = Arc::new(Mutex::new(stats(3, 0, 0, None)));
        let r = service_checker(&feed).check(Moment::from_secs(1), WallTime::from_secs(1));
        assert_eq!(metric(&r, "clients_connected").status, Warning);
        *feed.lock().expect("feed") = stats(4, 0, 0, None);
        let r = service_checker(&feed).check(Moment::from_secs(1), WallTime::from_secs(1));
        assert_eq!(r.status, Critical);
    }

    #[test]
    fn a_day_of_idleness_is_reported_and_healthy() {
        let last = WallTime::from_secs(1_700_000_000);
        let feed = Arc::new(Mutex::new(stats(0, 5, 0, Some(last))));
        let checker = service_checker(&feed);
        let r = checker.check(
            Moment::from_secs(86_400),
            WallTime::from_secs(1_700_086_400),
        );
        assert_eq!(
            metric(&r, "seconds_since_last_activity").value,
            MetricValue::Number(86_400.0)
        );
        assert_eq!(r.status, Healthy);
        let never = service_checker(&Arc::new(Mutex::new(stats(0, 0, 0, None))))
            .check(Moment::from_secs(1), WallTime::from_secs(1));
        assert_eq!(never.status, Healthy);
    }
}
