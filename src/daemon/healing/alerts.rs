//! Alerts for operators (config `alerts`): the seed's health callbacks, for
//! people who run the daemon rather than embed it. On each change of the
//! overall health status and on each recovery event, one JSON document (an
//! [`Alert`]) is POSTed to every configured webhook and written, as one
//! line, to the standard input of the configured command.
//!
//! Nothing here can slow a check or a recovery: the monitor's callback and
//! the recovery manager's listener only `try_send` into a bounded queue
//! (`queue_size`; a full queue drops the alert and counts it), after a rate
//! limit (`max_per_minute`; the next alert sent says how many were
//! suppressed, so a flapping status never floods anyone). One worker task
//! delivers the queue in order. Each destination has its own
//! [`CircuitBreaker`] from the core: after `failure_threshold` alerts that
//! failed every attempt, the destination is skipped (counted) until the
//! breaker lets a trial through, so a dead webhook costs one timeout per
//! breaker period, not one per alert. An attempt is bounded by
//! `timeout_seconds` (a command still running then is killed), retried up to
//! `max_attempts` times with a doubling backoff.
//!
//! At shutdown the queue is drained for a bounded grace period, so the
//! `emergency_stop` event of a daemon that stops itself still goes out.
//!
//! Webhooks are plain `http://` (the body is small and the destination is
//! usually a local Alertmanager or relay); for `https://` run curl from the
//! command. Not here: deciding what is unhealthy (the monitor), recovering
//! (the recovery manager).

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::breaker::{CircuitBreaker, CircuitState};
use crate::config::{AlertsConfig, WebhookUrl};
use crate::daemon::healing::executor::{RecoveryEvent, RecoveryListener};
use crate::daemon::healing::monitor::HealthCallback;
use crate::health::{HealthReport, HealthStatus};
use crate::time::{Clock, Moment};

/// The rate limit's window.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// The most of a webhook's answer that is read (its status line is enough).
const MAX_ANSWER_BYTES: usize = 1024;
/// The longest the shutdown waits for the queue to drain.
const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Who sends the alerts, stamped on each.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertSource {
    pub server_id: String,
    pub host: String,
    pub port: u16,
    pub pid: u32,
    pub version: String,
}

/// One alert, as delivered (JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    /// `status_change` or `recovery`.
    pub kind: AlertKind,
    /// The overall status now (for a recovery: the status that triggered it).
    pub status: HealthStatus,
    /// The status before the change (`status_change` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<HealthStatus>,
    /// One line for a chat message or an Alertmanager summary.
    pub summary: String,
    pub timestamp: String,
    pub source: AlertSource,
    /// Each checker's status (`status_change` only).
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub checks: Map<String, Value>,
    /// The recovery event, with the seed's fields (`recovery` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryEvent>,
    /// Alerts not sent since the previous one, by the rate limit.
    pub suppressed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    StatusChange,
    Recovery,
}

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("timed out after {} ms", .0.as_millis())]
    TimedOut(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answered something that is not HTTP: {0:?}")]
    NotHttp(String),
    #[error("exited with {0}")]
    Exit(std::process::ExitStatus),
}

/// Counters of one destination, for `/diagnostics` and `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
}

/// A destination's counters and breaker state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DestinationStatus {
    /// The webhook URL, or the command's program.
    pub destination: String,
    pub sent: u64,
    /// Alerts that failed every attempt.
    pub failed: u64,
    /// Alerts not tried while the destination's breaker was open.
    pub skipped: u64,
    pub breaker_state: CircuitState,
    pub last_error: Option<String>,
}

/// Everything `/diagnostics` and `/metrics` show of the alerts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertsStatus {
    pub queued: u64,
    /// Dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Not queued by the rate limit.
    pub suppressed: u64,
    pub destinations: Vec<DestinationStatus>,
}

enum Target {
    Webhook(WebhookUrl),
    Command(Vec<String>),
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Webhook(url) => url.as_str().to_string(),
            Target::Command(argv) => argv.first().cloned().unwrap_or_default(),
        }
    }
}

struct Destination {
    target: Target,
    breaker: Mutex<CircuitBreaker>,
    counters: Counters,
    last_error: Mutex<Option<String>>,
}

struct RateLimit {
    window_start: Option<Moment>,
    in_window: u32,
    suppressed: u64,
}

struct Shared {
    settings: AlertsConfig,
    source: AlertSource,
    clock: Arc<dyn Clock>,
    destinations: Vec<Destination>,
    last_status: Mutex<HealthStatus>,
    rate: Mutex<RateLimit>,
    queued: AtomicU64,
    dropped: AtomicU64,
    suppressed_total: AtomicU64,
}

/// The alerter: callbacks in, deliveries out. Cheap to share (`Arc`).
pub struct Alerter {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Alert>>>,
    rx: Mutex<Option<mpsc::Receiver<Alert>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Alerter {
    /// An alerter for `settings`; `None` when no destination is configured.
    /// Nothing is delivered until [`Alerter::start`].
    pub fn new(
        settings: &AlertsConfig,
        source: AlertSource,
        clock: Arc<dyn Clock>,
    ) -> Option<Arc<Alerter>> {
        if !settings.enabled() {
            return None;
        }
        let mut targets: Vec<Target> = settings
            .webhooks
            .iter()
            .cloned()
            .map(Target::Webhook)
            .collect();
        if !settings.command.is_empty() {
            targets.push(Target::Command(settings.command.clone()));
        }
        let mut destinations = Vec::with_capacity(targets.len());
        for target in targets {
            // The settings come from a validated config: thresholds ≥ 1 and a
            // positive open timeout, which is all the breaker checks. A
            // destination whose breaker cannot be built is left out, loudly.
            match CircuitBreaker::new(settings.breaker_settings()) {
                Ok(breaker) => destinations.push(Destination {
                    target,
                    breaker: Mutex::new(breaker),
                    counters: Counters::default(),
                    last_error: Mutex::new(None),
                }),
                Err(error) => {
                    tracing::error!(%error, destination = %target.describe(), "alert destination left out");
                }
            }
        }
        let capacity = usize::try_from(settings.queue_size)
            .unwrap_or(usize::MAX)
            .max(1);
        let (tx, rx) = mpsc::channel(capacity);
        Some(Arc::new(Alerter {
            shared: Arc::new(Shared {
                settings: settings.clone(),
                source,
                clock,
                destinations,
                last_status: Mutex::new(HealthStatus::Unknown),
                rate: Mutex::new(RateLimit {
                    window_start: None,
                    in_window: 0,
                    suppressed: 0,
                }),
                queued: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                suppressed_total: AtomicU64::new(0),
            }),
            tx: Mutex::new(Some(tx)),
            rx: Mutex::new(Some(rx)),
            worker: Mutex::new(None),
        }))
    }

    /// Spawns the delivery worker (once; later calls do nothing).
    pub fn start(&self) {
        let Some(rx) = lock(&self.rx).take() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        *lock(&self.worker) = Some(tokio::spawn(deliver(shared, rx)));
    }

    /// The monitor callback: an alert when the overall status changed.
    pub fn report_callback(self: &Arc<Self>) -> Arc<dyn HealthCallback> {
        let me = Arc::clone(self);
        Arc::new(move |report: &HealthReport| me.on_report(report))
    }

    /// The recovery manager's listener: an alert per recovery event.
    pub fn recovery_listener(self: &Arc<Self>) -> RecoveryListener {
        let me = Arc::clone(self);
        Arc::new(move |event: &RecoveryEvent| me.on_recovery(event))
    }

    /// Queues a `status_change` alert if `report`'s status differs from the
    /// last one seen (the first report is compared with `unknown`).
    pub fn on_report(&self, report: &HealthReport) {
        let status = report.overall_status;
        let previous = std::mem::replace(&mut *lock(&self.shared.last_status), status);
        if previous == status {
            return;
        }
        let checks: Map<String, Value> = report
            .results
            .iter()
            .map(|r| (r.checker.clone(), Value::from(r.status.as_str())))
            .collect();
        let failing: Vec<String> = report
            .results
            .iter()
            .filter(|r| r.status != HealthStatus::Healthy)
            .map(|r| format!("{} {}", r.checker, r.status.as_str()))
            .collect();
        let mut summary = format!(
            "warden {} is {} (was {})",
            self.shared.source.server_id,
            status.as_str(),
            previous.as_str()
        );
        if !failing.is_empty() {
            summary.push_str(&format!(": {}", failing.join(", ")));
        }
        self.enqueue(Alert {
            kind: AlertKind::StatusChange,
            status,
            previous_status: Some(previous),
            summary,
            timestamp: report.timestamp.to_iso8601(),
            source: self.shared.source.clone(),
            checks,
            recovery: None,
            suppressed: 0,
        });
    }

    /// Queues a `recovery` alert for `event`.
    pub fn on_recovery(&self, event: &RecoveryEvent) {
        let summary = format!(
            "warden {}: recovery action {} {} ({} health)",
            self.shared.source.server_id,
            event.action,
            if event.success { "succeeded" } else { "failed" },
            event.health_status.as_str()
        );
        self.enqueue(Alert {
            kind: AlertKind::Recovery,
            status: event.health_status,
            previous_status: None,
            summary,
            timestamp: event.timestamp_iso.clone(),
            source: self.shared.source.clone(),
            checks: Map::new(),
            recovery: Some(event.clone()),
            suppressed: 0,
        });
    }

    /// The rate limit, then a `try_send`: never waits.
    fn enqueue(&self, mut alert: Alert) {
        let shared = &self.shared;
        let now = shared.clock.now();
        {
            let mut rate = lock(&shared.rate);
            let fresh = rate
                .window_start
                .is_none_or(|start| now.saturating_since(start) >= RATE_WINDOW);
            if fresh {
                rate.window_start = Some(now);
                rate.in_window = 0;
            }
            if rate.in_window >= shared.settings.max_per_minute {
                rate.suppressed += 1;
                shared.suppressed_total.fetch_add(1, Ordering::Relaxed);
                return;
            }
            rate.in_window += 1;
            alert.suppressed = std::mem::take(&mut rate.suppressed);
        }
        let Some(tx) = lock(&self.tx).clone() else {
            return;
        };
        match tx.try_send(alert) {
            Ok(()) => {
                shared.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counters and breaker states.
    pub fn status(&self) -> AlertsStatus {
        let shared = &self.shared;
        AlertsStatus {
            queued: shared.queued.load(Ordering::Relaxed),
            dropped_queue_full: shared.dropped.load(Ordering::Relaxed),
            suppressed: shared.suppressed_total.load(Ordering::Relaxed),
            destinations: shared
                .destinations
                .iter()
                .map(|d| DestinationStatus {
                    destination: d.target.describe(),
                    sent: d.counters.sent.load(Ordering::Relaxed),
                    failed: d.counters.failed.load(Ordering::Relaxed),
                    skipped: d.counters.skipped.load(Ordering::Relaxed),
                    breaker_state: lock(&d.breaker).state(),
                    last_error: lock(&d.last_error).clone(),
                })
                .collect(),
        }
    }

    /// Stops taking alerts and waits (at most `timeout_seconds`, capped at
    /// 10 s) for the queued ones to be delivered.
    pub async fn shutdown(&self) {
        drop(lock(&self.tx).take());
        let worker = lock(&self.worker).take();
        if let Some(mut worker) = worker {
            let grace = self.shared.settings.timeout_seconds.min(MAX_SHUTDOWN_GRACE);
            if tokio::time::timeout(grace, &mut worker).await.is_err() {
                worker.abort();
                tracing::warn!("alerts still queued at shutdown were not delivered");
            }
        }
    }
}

/// The worker: each alert, in order, to each destination.
async fn deliver(shared: Arc<Shared>, mut rx: mpsc::Receiver<Alert>) {
    while let Some(alert) = rx.recv().await {
        let body = match serde_json::to_vec(&alert) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(%error, "an alert could not be encoded");
                continue;
            }
        };
        for destination in &shared.destinations {
            deliver_one(&shared, destination, &body).await;
        }
    }
}

/// One alert to one destination: breaker permit, attempts with backoff,
/// outcome reported to the breaker and counted.
async fn deliver_one(shared: &Shared, destination: &Destination, body: &[u8]) {
    let settings = &shared.settings;
    let permit = lock(&destination.breaker).try_acquire(shared.clock.now());
    let Ok(permit) = permit else {
        destination.counters.skipped.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut backoff = settings.retry_backoff_seconds;
    let mut outcome = Ok(());
    for attempt in 1..=settings.max_attempts {
        if attempt > 1 {
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
        outcome = attempt_once(&destination.target, body, settings.timeout_seconds).await;
        if outcome.is_ok() {
            break;
        }
    }
    let now = shared.clock.now();
    match outcome {
        Ok(()) => {
            lock(&destination.breaker).on_success(permit, now);
            destination.counters.sent.fetch_add(1, Ordering::Relaxed);
            *lock(&destination.last_error) = None;
        }
        Err(error) => {
            let mut breaker = lock(&destination.breaker);
            let before = breaker.state();
            breaker.on_failure(permit, now);
            let after = breaker.state();
            drop(breaker);
            destination.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                destination = %destination.target.describe(),
                %error,
                attempts = settings.max_attempts,
                "alert not delivered{}",
                if before != after && after == CircuitState::Open {
                    "; the destination is skipped until its breaker allows a trial"
                } else {
                    ""
                }
            );
            *lock(&destination.last_error) = Some(error.to_string());
        }
    }
}

async fn attempt_once(
    target: &Target,
    body: &[u8],
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let attempt = async {
        match target {
            Target::Webhook(url) => post(url, body).await,
            Target::Command(argv) => run_command(argv, body).await,
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(DeliveryError::TimedOut(timeout)))
}

/// `POST` with `Connection: close`; any 2xx status is a success.
async fn post(url: &WebhookUrl, body: &[u8]) -> Result<(), DeliveryError> {
    let mut stream = tokio::net::TcpStream::connect((url.host(), url.port())).await?;
    let host = if url.host().contains(':') {
        format!("[{}]:{}", url.host(), url.port())
    } else {
        format!("{}:{}", url.host(), url.port())
    };
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: warden/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path(),
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut answer = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    while !answer.windows(2).any(|w| w == b"\r\n") && answer.len() < MAX_ANSWER_BYTES {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&answer);
    let line = line.lines().next().unwrap_or_default();
    let code = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| DeliveryError::NotHttp(line.chars().take(80).collect()))?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(DeliveryError::Status(code))
    }
}

/// Runs the command with the alert as one JSON line on its standard input;
/// success is exit status 0. Killed if the caller's timeout drops it.
async fn run_command(argv: &[String], body: &[u8]) -> Result<(), DeliveryError> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits without reading its input is not a failure
        // of the delivery: its exit status says whether it worked.
        let _ = stdin.write_all(body).await;
        let _ = stdin.write_all(b"\n").await;
    }
    let status = child.wait().await?;
    if status.success() {
        Ok(())
    } else {
        Err(DeliveryError::Exit(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthCheckResult;
    use crate::time::{ManualClock, WallTime};

    fn source() -> AlertSource {
        AlertSource {
            server_id: "socketio-server-8765".into(),
            host: "localhost".into(),
            port: 8765,
            pid: 1,
            version: "0.1.0".into(),
        }
    }

    fn report(status: HealthStatus, at_secs: u64) -> HealthReport {
        let at = Moment::from_secs(at_secs);
        let wall = WallTime::from_secs(1_754_490_600 + at_secs);
        let mut result = HealthCheckResult::failed("service_health", "x", at, wall, Duration::ZERO);
        result.status = status;
        HealthReport::from_results(vec![result], at, wall)
    }

    fn alerter(max_per_minute: u32, clock: Arc<ManualClock>) -> Arc<Alerter> {
        let settings = AlertsConfig {
            command: vec!["true".into()],
            max_per_minute,
            queue_size: 1000,
            ..AlertsConfig::default()
        };
        Alerter::new(&settings, source(), clock).expect("a destination")
    }

    #[test]
    fn only_changes_of_status_are_alerts() {
        let clock = Arc::new(ManualClock::new(WallTime::from_secs(1_754_490_600)));
        let a = alerter(100, Arc::clone(&clock));
        for (i, status) in [
            HealthStatus::Healthy,
            HealthStatus::Healthy,
            HealthStatus::Warning,
            HealthStatus::Warning,
            HealthStatus::Healthy,
        ]
        .into_iter()
        .enumerate()
        {
            a.on_report(&report(status, i as u64));
        }
        assert_eq!(a.status().queued, 3, "unknown→healthy, →warning, →healthy");
    }

    #[test]
    fn a_flapping_status_is_rate_limited_and_the_next_alert_counts_what_was_suppressed() {
        let clock = Arc::new(ManualClock::new(WallTime::from_secs(1_754_490_600)));
        let a = alerter(2, Arc::clone(&clock));
        let flap = [HealthStatus::Healthy, HealthStatus::Critical];
        for i in 0..50u64 {
            a.on_report(&report(flap[(i % 2) as usize], i));
        }
        let status = a.status();
        assert_eq!(status.queued, 2);
        assert_eq!(status.suppressed, 48);
        // A minute later the window opens again, and the first alert says
        // how many were left out.
        clock.advance(RATE_WINDOW);
        a.on_report(&report(HealthStatus::Warning, 100));
        let mut rx = lock(&a.rx).take().expect("not started");
        let mut last = None;
        while let Ok(alert) = rx.try_recv() {
            last = Some(alert);
        }
        let last = last.expect("an alert");
        assert_eq!(last.suppressed, 48);
        assert_eq!(last.previous_status, Some(HealthStatus::Critical));
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let clock = Arc::new(ManualClock::new(WallTime::from_secs(1_754_490_600)));
        let settings = AlertsConfig {
            command: vec!["true".into()],
            queue_size: 1,
            ..AlertsConfig::default()
        };
        let a = Alerter::new(&settings, source(), clock).expect("a destination");
        a.on_report(&report(HealthStatus::Healthy, 1));
        a.on_report(&report(HealthStatus::Critical, 2));
        a.on_report(&report(HealthStatus::Healthy, 3));
        let status = a.status();
        assert_eq!((status.queued, status.dropped_queue_full), (1, 2));
    }

    #[tokio::test]
    async fn a_failing_destination_opens_its_breaker_and_later_alerts_are_skipped() {
        let clock = Arc::new(ManualClock::new(WallTime::from_secs(1_754_490_600)));
        let settings = AlertsConfig {
            command: vec!["false".into()],
            max_attempts: 2,
            retry_backoff_seconds: Duration::ZERO,
            failure_threshold: 1,
            ..AlertsConfig::default()
        };
        let a = Alerter::new(&settings, source(), clock).expect("a destination");
        a.start();
        a.on_report(&report(HealthStatus::Healthy, 1));
        a.on_report(&report(HealthStatus::Critical, 2));
        a.on_report(&report(HealthStatus::Healthy, 3));
        a.shutdown().await;
        let d = &a.status().destinations[0];
        assert_eq!((d.sent, d.failed, d.skipped), (0, 1, 2), "{d:?}");
        assert_eq!(d.breaker_state, CircuitState::Open);
        assert!(
            d.last_error
                .as_deref()
                .is_some_and(|e| e.contains("exited"))
        );
    }

    #[test]
    fn nothing_configured_is_no_alerter() {
        let clock = Arc::new(ManualClock::new(WallTime::from_secs(1_754_490_600)));
        assert!(Alerter::new(&AlertsConfig::default(), source(), clock).is_none());
    }
}
