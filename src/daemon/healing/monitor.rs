//! The `HealthMonitor` (the seed's AdvancedHealthMonitor): runs every
//! [`Checker`] each `check_interval`, keeps a bounded [`HealthHistory`],
//! answers the current status and the status over a window, counts checks,
//! logs failed checks and hands each report to the registered callbacks (the
//! recovery manager is one).
//!
//! Checkers run on tokio's blocking pool, never on the reactor, each bounded
//! by `check_timeout`; one that declares it never blocks
//! ([`Checker::blocks`]: the service checker reads counters) is called inline. A checker that panics or overruns yields `unknown` for
//! that cycle, never a crash; a checker whose previous call is still running
//! is not started again (it answers `unknown` at once), so a wedged probe
//! holds at most one blocking thread.
//!
//! Counting: `checks_performed` is the number of completed cycles;
//! `checks_failed` the cycles whose overall status was not healthy.
//!
//! Not here: what the checkers measure (`checkers`), what to do about a bad
//! report (`recovery`), how a window is folded (`crate::health`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::daemon::healing::checkers::Checker;
use crate::daemon::os::systemd::Watchdog;
use crate::errors::log_markers;
use crate::health::{
    AggregatedHealth, HealthCheckResult, HealthHistory, HealthReport, HealthStatus,
};
use crate::time::{Clock, Moment, WallTime};

/// The monitor's parameters (config `health_monitoring`).
#[derive(Clone, Debug, PartialEq)]
pub struct MonitorSettings {
    pub check_interval: Duration,
    pub history_size: usize,
    pub aggregation_window: Duration,
    /// Longest one checker may run before its result is `unknown`.
    pub check_timeout: Duration,
}

impl MonitorSettings {
    /// The check timeout the daemon uses: the network checker's own timeout
    /// plus one second of slack, so a slow connect is judged by the checker
    /// (warning) rather than cut off by the monitor (unknown).
    pub fn check_timeout_for(network_timeout: Duration) -> Duration {
        network_timeout + Duration::from_secs(1)
    }
}

/// Called with every report, on the monitor's task. Must be quick: hand
/// slow work to another task (the recovery manager queues the report).
pub trait HealthCallback: Send + Sync {
    fn on_report(&self, report: &HealthReport);
}

impl<F> HealthCallback for F
where
    F: Fn(&HealthReport) + Send + Sync,
{
    fn on_report(&self, report: &HealthReport) {
        self(report)
    }
}

/// `/diagnostics`' `health_monitor` object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MonitorStatus {
    pub enabled: bool,
    /// ISO-8601 of the latest completed cycle.
    pub last_check: Option<String>,
    pub overall_status: HealthStatus,
    pub checks_performed: u64,
    pub checks_failed: u64,
    pub check_interval_seconds: f64,
    pub history_size: usize,
    pub history_len: usize,
    pub aggregated: AggregatedHealth,
}

/// A checker's call in one cycle: finished inline, or running on the
/// blocking pool.
enum Pending {
    Done(std::thread::Result<HealthCheckResult>),
    Running(tokio::task::JoinHandle<HealthCheckResult>),
}

struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

struct Slot {
    checker: Arc<dyn Checker>,
    running: Arc<AtomicBool>,
}

struct State {
    history: HealthHistory,
    checks_performed: u64,
    checks_failed: u64,
    last_check: Option<WallTime>,
}

struct Inner {
    /// `check_interval` and `aggregation_window` change on a config reload
    /// ([`HealthMonitor::set_timing`]); the rest is fixed at start.
    settings: RwLock<MonitorSettings>,
    /// Wakes the run loop when the interval changed.
    timing_changed: tokio::sync::Notify,
    enabled: bool,
    clock: Arc<dyn Clock>,
    slots: Vec<Slot>,
    state: Mutex<State>,
    callbacks: Mutex<Vec<Arc<dyn HealthCallback>>>,
}

/// The health monitor. Cheap to clone; every clone is the same monitor.
#[derive(Clone)]
pub struct HealthMonitor {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every value behind these locks stays valid after a panic elsewhere.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HealthMonitor {
    /// `enabled: false` builds a monitor that never runs checks (its status
    /// stays `unknown`), so the endpoints still answer honestly.
    pub fn new(
        settings: MonitorSettings,
        enabled: bool,
        clock: Arc<dyn Clock>,
        checkers: Vec<Arc<dyn Checker>>,
    ) -> Self {
        let history = HealthHistory::new(settings.history_size);
        HealthMonitor {
            inner: Arc::new(Inner {
                settings: RwLock::new(settings),
                timing_changed: tokio::sync::Notify::new(),
                enabled,
                clock,
                slots: checkers
                    .into_iter()
                    .map(|checker| Slot {
                        checker,
                        running: Arc::new(AtomicBool::new(false)),
                    })
                    .collect(),
                state: Mutex::new(State {
                    history,
                    checks_performed: 0,
                    checks_failed: 0,
                    last_check: None,
                }),
                callbacks: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn settings(&self) -> MonitorSettings {
        self.inner
            .settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the interval between cycles (from the next one on: a shorter
    /// interval takes effect at once) and the aggregation window of the
    /// status (config reload).
    pub fn set_timing(&self, check_interval: Duration, aggregation_window: Duration) {
        {
            let mut s = self
                .inner
                .settings
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            s.check_interval = check_interval;
            s.aggregation_window = aggregation_window;
        }
        self.inner.timing_changed.notify_one();
    }

    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    pub fn add_callback(&self, callback: Arc<dyn HealthCallback>) {
        lock(&self.inner.callbacks).push(callback);
    }

    /// Runs every checker once (concurrently, on the blocking pool), records
    /// the report, logs failures and calls the callbacks.
    pub async fn run_cycle(&self) -> HealthReport {
        let clock = &self.inner.clock;
        let (at, wall) = (clock.now(), clock.wall());
        let timeout = self.settings().check_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let pending = self.start_checks(at, wall);
        let mut results = Vec::with_capacity(pending.len());
        for (name, check) in pending {
            let failed = |why: String, took: Duration| {
                HealthCheckResult::failed(name.clone(), why, at, wall, took)
            };
            results.push(match check {
                None => failed(
                    "the previous check of this checker is still running".into(),
                    Duration::ZERO,
                ),
                Some(Pending::Done(Ok(result))) => result,
                Some(Pending::Done(Err(_panic))) => {
                    failed("checker panicked".into(), clock.now().saturating_since(at))
                }
                Some(Pending::Running(task)) => match tokio::time::timeout_at(deadline, task).await
                {
                    Ok(Ok(result)) => result,
                    Ok(Err(join_error)) => failed(
                        format!("checker panicked: {join_error}"),
                        clock.now().saturating_since(at),
                    ),
                    Err(_elapsed) => failed(
                        format!("checker did not answer within {} ms", timeout.as_millis()),
                        timeout,
                    ),
                },
            });
        }
        let report = HealthReport::from_results(results, at, wall);
        self.record(&report);
        report
    }

    /// Starts every checker that is not still running from the last cycle:
    /// a cheap one in place, one that may block on the blocking pool.
    fn start_checks(&self, at: Moment, wall: WallTime) -> Vec<(String, Option<Pending>)> {
        let mut pending = Vec::with_capacity(self.inner.slots.len());
        for slot in &self.inner.slots {
            let name = slot.checker.id().as_str().to_string();
            if slot.running.swap(true, Ordering::AcqRel) {
                pending.push((name, None));
                continue;
            }
            let checker = Arc::clone(&slot.checker);
            let running = Arc::clone(&slot.running);
            if !checker.blocks() {
                let _clear = ClearOnDrop(running);
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    checker.check(at, wall)
                }));
                pending.push((name, Some(Pending::Done(outcome))));
                continue;
            }
            let task = tokio::task::spawn_blocking(move || {
                // Cleared on drop, so a panicking checker can run again next cycle.
                let _clear = ClearOnDrop(running);
                checker.check(at, wall)
            });
            pending.push((name, Some(Pending::Running(task))));
        }
        pending
    }

    fn record(&self, report: &HealthReport) {
        for result in &report.results {
            if result.status != HealthStatus::Healthy {
                let failing: Vec<String> = result
                    .metrics
                    .iter()
                    .filter(|m| m.status != HealthStatus::Healthy)
                    .map(|m| match &m.message {
                        Some(msg) => format!("{}={} ({msg})", m.name, m.status),
                        None => format!("{}={}", m.name, m.status),
                    })
                    .collect();
                tracing::warn!(
                    checker = %result.checker,
                    status = %result.status,
                    error = result.error.as_deref().unwrap_or(""),
                    failing = %failing.join(", "),
                    "{}: {} is {}",
                    log_markers::HEALTH_CHECK_FAILED,
                    result.checker,
                    result.status
                );
            }
        }
        {
            let mut state = lock(&self.inner.state);
            state.history.push(report.clone());
            state.checks_performed += 1;
            if report.overall_status != HealthStatus::Healthy {
                state.checks_failed += 1;
            }
            state.last_check = Some(report.timestamp);
        }
        let callbacks = lock(&self.inner.callbacks).clone();
        for callback in callbacks {
            callback.on_report(report);
        }
    }

    /// The latest report, if a cycle has completed.
    pub fn latest(&self) -> Option<HealthReport> {
        lock(&self.inner.state).history.latest().cloned()
    }

    /// The kept reports, oldest first (at most `history_size`).
    pub fn history(&self) -> Vec<HealthReport> {
        lock(&self.inner.state).history.iter().cloned().collect()
    }

    /// The latest overall status; `unknown` before the first cycle.
    pub fn current_status(&self) -> HealthStatus {
        lock(&self.inner.state)
            .history
            .latest()
            .map_or(HealthStatus::Unknown, |r| r.overall_status)
    }

    /// The history folded over `window` ending now (see `crate::health`).
    pub fn aggregated(&self, window: Duration) -> AggregatedHealth {
        let now = self.inner.clock.now();
        lock(&self.inner.state).history.aggregate(window, now)
    }

    /// The monitor's status, aggregated over the configured window.
    pub fn status(&self) -> MonitorStatus {
        self.status_over(self.settings().aggregation_window)
    }

    /// The monitor's status with the history aggregated over `window`
    /// (`/diagnostics?window_seconds=`).
    pub fn status_over(&self, window: Duration) -> MonitorStatus {
        let settings = self.settings();
        let aggregated = self.aggregated(window);
        let state = lock(&self.inner.state);
        MonitorStatus {
            enabled: self.inner.enabled,
            last_check: state.last_check.map(WallTime::to_iso8601),
            overall_status: state
                .history
                .latest()
                .map_or(HealthStatus::Unknown, |r| r.overall_status),
            checks_performed: state.checks_performed,
            checks_failed: state.checks_failed,
            check_interval_seconds: settings.check_interval.as_secs_f64(),
            history_size: state.history.capacity(),
            history_len: state.history.len(),
            aggregated,
        }
    }

    /// Runs cycles every `check_interval` until `stop` is cancelled. When a
    /// systemd watchdog is given, pings it from this loop after each check
    /// that completed, at least every `watchdog.interval()`: the loop wakes
    /// for the ping but sends it only if the most recent cycle completed
    /// within `check_interval + check_timeout`; a wedged monitor stops pinging.
    pub async fn run(self, stop: CancellationToken, watchdog: Option<Watchdog>) {
        if !self.inner.enabled {
            stop.cancelled().await;
            return;
        }
        let mut interval = self.settings().check_interval;
        let mut next_check = tokio::time::Instant::now();
        let mut last_started = next_check;
        let mut last_completed: Option<tokio::time::Instant> = None;
        let mut next_ping = tokio::time::Instant::now();
        loop {
            let wake = match &watchdog {
                Some(_) => next_check.min(next_ping),
                None => next_check,
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = self.inner.timing_changed.notified() => {
                    interval = self.settings().check_interval;
                    next_check = last_started + interval;
                    continue;
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            let now = tokio::time::Instant::now();
            if now >= next_check {
                last_started = now;
                self.run_cycle().await;
                last_completed = Some(tokio::time::Instant::now());
                next_check = now + interval;
            }
            if let Some(dog) = &watchdog {
                let now = tokio::time::Instant::now();
                if now >= next_ping {
                    let allowed_age = interval + self.settings().check_timeout;
                    if last_completed.is_some_and(|t| now.duration_since(t) <= allowed_age) {
                        dog.ping();
                    }
                    next_ping = now + dog.interval();
                }
            }
        }
    }
}

impl crate::daemon::hub::http::HealthProvider for HealthMonitor {
    fn current_status(&self) -> HealthStatus {
        HealthMonitor::current_status(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{CheckerId, HealthMetric};
    use crate::time::{ManualClock, Moment};
    use std::sync::atomic::AtomicU64;

    struct Fixed(CheckerId, HealthStatus);
    impl Checker for Fixed {
        fn id(&self) -> CheckerId {
            self.0
        }
        fn check(&self, at: Moment, wall: WallTime) -> HealthCheckResult {
            HealthCheckResult::from_metrics(
                self.0.as_str(),
                vec![HealthMetric::new("m", 1.0, self.1)],
                at,
                wall,
                Duration::ZERO,
            )
        }
    }

    struct Panics;
    impl Checker for Panics {
        fn id(&self) -> CheckerId {
            CheckerId::NetworkConnectivity
        }
        fn check(&self, _: Moment, _: WallTime) -> HealthCheckResult {
            panic!("probe exploded")
        }
    }

    /// Declares that it never blocks, so the monitor calls it in place.
    struct InPlace(bool);
    impl Checker for InPlace {
        fn id(&self) -> CheckerId {
            CheckerId::ServiceHealth
        }
        fn check(&self, at: Moment, wall: WallTime) -> HealthCheckResult {
            assert!(!self.0, "in-place checker exploded");
            HealthCheckResult::from_metrics(
                CheckerId::ServiceHealth.as_str(),
                vec![HealthMetric::new("m", 1.0, HealthStatus::Healthy)],
                at,
                wall,
                Duration::ZERO,
            )
        }
        fn blocks(&self) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn an_in_place_checker_is_folded_like_the_others_and_its_panic_is_unknown() {
        let clock = ManualClock::new(WallTime::from_secs(1_700_000_000));
        let m = monitor(
            vec![
                Arc::new(Fixed(CheckerId::ProcessResources, HealthStatus::Warning)),
                Arc::new(InPlace(false)),
            ],
            &clock,
        );
        let r = m.run_cycle().await;
        let names: Vec<&str> = r.results.iter().map(|c| c.checker.as_str()).collect();
        assert_eq!(
            names,
            ["process_resources", "service_health"],
            "report keeps the checkers' order"
        );
        assert_eq!(r.results[1].status, HealthStatus::Healthy);
        assert_eq!(r.overall_status, HealthStatus::Warning);

        let m = monitor(vec![Arc::new(InPlace(true))], &clock);
        for _ in 0..2 {
            // Unknown each time: the panic neither crashes nor wedges the slot.
            let r = m.run_cycle().await;
            assert_eq!(r.results[0].status, HealthStatus::Unknown);
            assert_eq!(r.overall_status, HealthStatus::Unknown);
        }
    }

    /// Blocks until released, counting how many calls started.
    struct Wedged {
        release: Arc<(Mutex<bool>, std::sync::Condvar)>,
        calls: Arc<AtomicU64>,
    }
    impl Checker for Wedged {
        fn id(&self) -> CheckerId {
            CheckerId::NetworkConnectivity
        }
        fn check(&self, at: Moment, wall: WallTime) -> HealthCheckResult {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let (lock, cv) = &*self.release;
            let mut released = lock.lock().expect("lock");
            while !*released {
                released = cv.wait(released).expect("wait");
            }
            HealthCheckResult::from_metrics(
                CheckerId::NetworkConnectivity.as_str(),
                vec![],
                at,
                wall,
                Duration::ZERO,
            )
        }
    }

    fn settings(history: usize) -> MonitorSettings {
        MonitorSettings {
            check_interval: Duration::from_secs(1),
            history_size: history,
            aggregation_window: Duration::from_secs(60),
            check_timeout: Duration::from_secs(20),
        }
    }

    fn monitor(checkers: Vec<Arc<dyn Checker>>, clock: &ManualClock) -> HealthMonitor {
        HealthMonitor::new(settings(3), true, Arc::new(clock.clone()), checkers)
    }

    #[tokio::test]
    async fn a_cycle_folds_every_checker_counts_and_calls_back() {
        let clock = ManualClock::new(WallTime::from_secs(1_700_000_000));
        let m = monitor(
            vec![
                Arc::new(Fixed(CheckerId::ProcessResources, HealthStatus::Healthy)),
                Arc::new(Fixed(CheckerId::ServiceHealth, HealthStatus::Warning)),
            ],
            &clock,
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        m.add_callback(Arc::new(move |r: &HealthReport| {
            sink.lock().expect("sink").push(r.overall_status)
        }));
        assert_eq!(m.current_status(), HealthStatus::Unknown);
        let r = m.run_cycle().await;
        assert_eq!(r.overall_status, HealthStatus::Warning);
        assert_eq!(r.results.len(), 2);
        assert_eq!(*seen.lock().expect("seen"), vec![HealthStatus::Warning]);
        let st = m.status();
        assert_eq!((st.checks_performed, st.checks_failed), (1, 1));
        assert_eq!(
            st.last_check,
            Some(WallTime::from_secs(1_700_000_000).to_iso8601())
        );
    }

    #[tokio::test]
    async fn history_is_bounded_and_windows_aggregate() {
        let clock = ManualClock::new(WallTime::from_secs(1_700_000_000));
        let m = monitor(
            vec![Arc::new(Fixed(
                CheckerId::ProcessResources,
                HealthStatus::Healthy,
            ))],
            &clock,
        );
        for _ in 0..10 {
            m.run_cycle().await;
            clock.advance(Duration::from_secs(10));
        }
        let st = m.status();
        assert_eq!(
            (st.history_len, st.history_size, st.checks_performed),
            (3, 3, 10)
        );
        assert_eq!(m.aggregated(Duration::from_secs(25)).samples, 2);
        assert_eq!(st.aggregated.overall_status, HealthStatus::Healthy);
    }

    #[tokio::test]
    async fn a_panicking_checker_is_unknown_and_the_monitor_goes_on() {
        let clock = ManualClock::new(WallTime::from_secs(1));
        let m = monitor(
            vec![
                Arc::new(Panics),
                Arc::new(Fixed(CheckerId::ServiceHealth, HealthStatus::Healthy)),
            ],
            &clock,
        );
        for _ in 0..2 {
            let r = m.run_cycle().await;
            assert_eq!(r.results[0].status, HealthStatus::Unknown);
            let error = r.results[0].error.clone().unwrap_or_default();
            assert!(error.contains("panicked"), "{error}");
            assert_eq!(r.results[1].status, HealthStatus::Healthy);
        }
    }

    #[tokio::test]
    async fn a_wedged_checker_times_out_and_is_never_stacked() {
        let clock = ManualClock::new(WallTime::from_secs(1));
        let release = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let calls = Arc::new(AtomicU64::new(0));
        let mut s = settings(3);
        s.check_timeout = Duration::from_millis(300);
        let m = HealthMonitor::new(
            s,
            true,
            Arc::new(clock.clone()),
            vec![Arc::new(Wedged {
                release: Arc::clone(&release),
                calls: Arc::clone(&calls),
            })],
        );
        let first = m.run_cycle().await;
        assert!(
            first.results[0]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("did not answer")
        );
        let second = m.run_cycle().await;
        assert!(
            second.results[0]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("still running")
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one blocked thread at most"
        );
        *release.0.lock().expect("lock") = true;
        release.1.notify_all();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = m.run_cycle().await;
            if r.results[0].error.is_none() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the checker came back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn the_run_loop_checks_until_stopped() {
        let clock = ManualClock::new(WallTime::from_secs(1));
        let mut s = settings(10);
        s.check_interval = Duration::from_millis(10);
        let m = HealthMonitor::new(
            s,
            true,
            Arc::new(clock),
            vec![Arc::new(Fixed(
                CheckerId::ProcessResources,
                HealthStatus::Healthy,
            ))],
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(m.clone().run(stop.clone(), None));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while m.status().checks_performed < 3 {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        task.await.expect("loop ends");
    }
}
