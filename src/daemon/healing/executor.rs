//! The `RecoveryManager`: executes the pure [`RecoveryLoop`] (the strategy
//! and the breaker, `crate::recovery`) with real actions on the hub.
//!
//! # How a report becomes an action
//! The decisions are the core's [`RecoveryLoop`] (`crate::recovery`: the
//! check-interval gate, the attribution rule, the strategy, the per-episode
//! budget, the breaker, the bounded event history); this manager executes.
//! The monitor's callback queues each report (queue of one: while a recovery
//! runs, newer reports are dropped). The manager's task then, for each report:
//! 1. feeds it to the loop with the clock's `now` and wall time, and logs
//!    the notes it emits (breaker changes, a decision not executed because
//!    recovery is disabled, a spent episode budget as a
//!    `RecoveryFailedError`, an action blocked by the breaker);
//! 2. runs the command the loop emits, if any, under
//!    `tokio::time::timeout(command.timeout)`, logging "Recovery action ...
//!    started";
//! 3. feeds the typed outcome back (a timeout is [`ActionError::TimedOut`]),
//!    logs "succeeded" or the rendered `RecoveryFailedError`, and tells the
//!    listeners (alerts) of the recorded [`RecoveryEvent`].
//!
//! # The actions ([`HubActions`])
//! - `log_warning`: a structured warning naming every failing metric.
//! - `clear_connections`: `Hub::sever_transports` (clients reconnect on
//!   their own; each is uncounted when socketioxide sees its transport go).
//! - `restart_service` and `emergency_stop` go through a [`ServiceControl`]:
//!   the runner's serving generation (`serving::ServingControl`), which
//!   drains, rebinds the same address and, when that fails, keeps retrying
//!   the bind on a bounded schedule before it stops the daemon. A failed
//!   rebind is a failed recovery (the breaker counts it). Emergency stop asks
//!   the runner to stop; it drains, removes the PID file and exits with the
//!   emergency exit code.
//!
//! Not here: deciding which action (the strategy), guarding against loops (the
//! breaker), the PID file and process exit (the runner).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::breaker::CircuitState;
use crate::daemon::healing::monitor::HealthCallback;
use crate::daemon::hub::Hub;
use crate::daemon::serve::server::ShutdownReport;
use crate::daemon::serve::serving::RestartError;
use crate::errors::{RecoveryFailedError, log_markers};
use crate::escalation::RecoveryAction;
use crate::health::{HealthReport, HealthStatus};
pub use crate::recovery::{
    ActionDone, ActionError, DEFAULT_RECOVERY_HISTORY, RecoveryCounts, RecoveryEvent,
    RecoverySetupError, RecoveryStatus,
};
use crate::recovery::{ActionOutcome, Input, LoopSettings, Note, Output, RecoveryLoop};
use crate::time::Clock;
use socketioxide::adapter::{Adapter, LocalAdapter};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks (machines, histories) stays valid after a panic elsewhere.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Actions.

/// A boxed future of a [`ServiceControl`] request, typed as the serving
/// generation answers it.
pub type ActionFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, RestartError>> + Send + 'a>>;

/// A boxed future returned by [`RecoveryActions::execute`]: the typed result
/// the recovery loop records.
pub type ActionRun<'a> = Pin<Box<dyn Future<Output = Result<ActionDone, ActionError>> + Send + 'a>>;

/// Executes the recovery loop's commands.
pub trait RecoveryActions: Send + Sync {
    fn execute<'a>(&'a self, action: RecoveryAction, report: &'a HealthReport) -> ActionRun<'a>;
}

/// What the actions need from whoever serves the hub (the runner's serving
/// generation). Futures resolve when the request is done.
pub trait ServiceControl: Send + Sync {
    /// restart_service: drain, bind the same address again, serve.
    fn restart(&self) -> ActionFuture<'_, ShutdownReport>;
    /// emergency_stop: drain and have the runner exit with the emergency code.
    fn emergency_stop(&self, reason: String) -> ActionFuture<'_, ()>;
    /// True while serving is being drained or no socket is bound (`/readyz`).
    fn is_draining(&self) -> bool;
    /// Successful in-process restarts so far.
    fn restarts(&self) -> u64;
}

/// The real actions on the hub (see the module doc).
pub struct HubActions<A: Adapter = LocalAdapter> {
    hub: Hub<A>,
    control: Arc<dyn ServiceControl>,
}

impl<A: Adapter> HubActions<A> {
    pub fn new(hub: Hub<A>, control: Arc<dyn ServiceControl>) -> Self {
        HubActions { hub, control }
    }
}

/// `name=value (status)` for every metric that is not healthy.
pub fn failing_metrics(report: &HealthReport) -> Vec<String> {
    let mut out = Vec::new();
    for result in &report.results {
        if let Some(error) = &result.error {
            out.push(format!("{}: {error}", result.checker));
        }
        for m in result
            .metrics
            .iter()
            .filter(|m| m.status != HealthStatus::Healthy)
        {
            let value = serde_json::to_string(&m.value).unwrap_or_default();
            let threshold = m.threshold.map(|t| format!(" > {t}")).unwrap_or_default();
            out.push(format!(
                "{}.{}={value}{threshold} ({})",
                result.checker, m.name, m.status
            ));
        }
    }
    out
}

impl<A: Adapter> RecoveryActions for HubActions<A> {
    fn execute<'a>(&'a self, action: RecoveryAction, report: &'a HealthReport) -> ActionRun<'a> {
        Box::pin(async move {
            let failed = |error: RestartError| ActionError::Service {
                reason: error.to_string(),
            };
            match action {
                RecoveryAction::None => Ok(ActionDone::NothingToDo),
                RecoveryAction::LogWarning => {
                    let failing = failing_metrics(report);
                    tracing::warn!(
                        health_status = %report.overall_status,
                        failing = %failing.join(", "),
                        "{}: log_warning: health is {}; failing metrics: {}",
                        log_markers::RECOVERY_ACTION,
                        report.overall_status,
                        failing.join(", ")
                    );
                    Ok(ActionDone::WarningLogged {
                        failing_metrics: failing.len(),
                    })
                }
                RecoveryAction::ClearConnections => Ok(ActionDone::ConnectionsCleared {
                    clients: self.hub.sever_transports(),
                }),
                RecoveryAction::RestartService => self
                    .control
                    .restart()
                    .await
                    .map(|report| ActionDone::Restarted {
                        clients_closed: report.clients_closed,
                        forced: report.forced,
                    })
                    .map_err(failed),
                RecoveryAction::EmergencyStop => {
                    let reason = format!(
                        "recovery escalated to emergency_stop (health {}): {}",
                        report.overall_status,
                        failing_metrics(report).join(", ")
                    );
                    self.control
                        .emergency_stop(reason)
                        .await
                        .map(|()| ActionDone::StopRequested)
                        .map_err(failed)
                }
            }
        })
    }
}

// ---------------------------------------------------------------------------
// The manager: the executor of the core's recovery loop.

/// The manager's parameters (config `recovery`): the core loop's own, and
/// the address its rendered `RecoveryFailedError` names.
#[derive(Clone, Debug, PartialEq)]
pub struct RecoverySettings {
    pub core: LoopSettings,
    pub host: String,
    pub port: u16,
}

/// Told of each recovery event once it is recorded (e.g. the alerts). Must
/// not block: it runs on the recovery task.
pub type RecoveryListener = Arc<dyn Fn(&RecoveryEvent) + Send + Sync>;

/// The recovery manager: feeds the core's [`RecoveryLoop`], runs the
/// commands it emits (under the timeout they carry), feeds back the
/// outcomes, and logs what the loop notes. Register
/// [`RecoveryManager::callback`] with the monitor and spawn
/// [`RecoveryManager::run`].
pub struct RecoveryManager {
    listeners: Mutex<Vec<RecoveryListener>>,
    settings: RecoverySettings,
    clock: Arc<dyn Clock>,
    actions: Arc<dyn RecoveryActions>,
    machine: Mutex<RecoveryLoop>,
    /// True while a command runs (the callback drops reports meanwhile).
    busy: AtomicBool,
    /// True from an action's start until its event is recorded and told to
    /// the listeners (`busy` clears earlier, when the action returns).
    acting: AtomicBool,
    queue_tx: mpsc::Sender<HealthReport>,
    queue_rx: tokio::sync::Mutex<mpsc::Receiver<HealthReport>>,
}

impl RecoveryManager {
    pub fn new(
        settings: RecoverySettings,
        clock: Arc<dyn Clock>,
        actions: Arc<dyn RecoveryActions>,
    ) -> Result<Arc<Self>, RecoverySetupError> {
        let machine = RecoveryLoop::new(settings.core.clone())?;
        let (queue_tx, queue_rx) = mpsc::channel(1);
        Ok(Arc::new(RecoveryManager {
            listeners: Mutex::new(Vec::new()),
            machine: Mutex::new(machine),
            settings,
            clock,
            actions,
            busy: AtomicBool::new(false),
            acting: AtomicBool::new(false),
            queue_tx,
            queue_rx: tokio::sync::Mutex::new(queue_rx),
        }))
    }

    pub fn enabled(&self) -> bool {
        self.settings.core.enabled
    }

    /// Waits, at most `max`, for an action under way to be recorded and told
    /// to the listeners: the shutdown calls it before it stops the manager,
    /// so the emergency stop that caused the shutdown is not lost.
    pub async fn settle(&self, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        while self.acting.load(Ordering::Acquire) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Registers `listener` for every recovery event recorded from now on.
    pub fn add_listener(&self, listener: RecoveryListener) {
        lock(&self.listeners).push(listener);
    }

    /// The monitor callback: queues the report for [`RecoveryManager::run`]
    /// (dropped while a recovery is running; see the module doc).
    pub fn callback(self: &Arc<Self>) -> Arc<dyn HealthCallback> {
        let me = Arc::clone(self);
        Arc::new(move |report: &HealthReport| {
            if me.busy.load(Ordering::Acquire) {
                return;
            }
            // Full means the previous report is not yet taken; drop this one.
            let _ = me.queue_tx.try_send(report.clone());
        })
    }

    /// Handles queued reports until the monitor (every sender) is gone.
    pub async fn run(self: Arc<Self>) {
        let mut rx = self.queue_rx.lock().await;
        while let Some(report) = rx.recv().await {
            self.handle_report(&report).await;
        }
    }

    /// Feeds one input to the loop and drains its outputs: notes are logged,
    /// the command (at most one) or the finished record is returned.
    fn step(&self, input: Input<'_>) -> Option<Output> {
        let mut machine = lock(&self.machine);
        machine.handle_input(input);
        let mut step = None;
        while let Some(output) = machine.poll_output() {
            match output {
                Output::Note(note) => self.log_note(note),
                other => {
                    debug_assert!(step.is_none(), "one command or record per input");
                    step = Some(other);
                }
            }
        }
        step
    }

    /// Observes one report and runs the command the loop emits for it, if
    /// any. Returns the recorded event when an action ran.
    pub async fn handle_report(&self, report: &HealthReport) -> Option<RecoveryEvent> {
        let input = Input::Report {
            report,
            now: self.clock.now(),
            wall: self.clock.wall(),
        };
        let Some(Output::Command(command)) = self.step(input) else {
            return None;
        };
        self.busy.store(true, Ordering::Release);
        self.acting.store(true, Ordering::Release);
        let action = command.action;
        tracing::warn!(
            action = %action,
            health_status = %command.health_status,
            cause = ?command.cause,
            attempt = command.attempt,
            "{}: {action} started (health {}, attempt {}/{})",
            log_markers::RECOVERY_ACTION,
            command.health_status,
            command.attempt,
            command.max_attempts
        );
        let started = Instant::now();
        let result = tokio::time::timeout(command.timeout, self.actions.execute(action, report))
            .await
            .unwrap_or(Err(ActionError::TimedOut {
                timeout: command.timeout,
            }));
        let outcome = ActionOutcome {
            result,
            elapsed: started.elapsed(),
        };
        self.busy.store(false, Ordering::Release);
        let finished = self.step(Input::Outcome {
            id: command.id,
            outcome,
            now: self.clock.now(),
        });
        let event = match finished {
            Some(Output::Finished {
                event,
                attempt,
                result,
                ..
            }) => {
                self.log_finished(&event, attempt, &result);
                let listeners = lock(&self.listeners).clone();
                for listener in listeners {
                    listener(&event);
                }
                Some(event)
            }
            _ => None,
        };
        self.acting.store(false, Ordering::Release);
        event
    }

    fn log_finished(
        &self,
        event: &RecoveryEvent,
        attempt: u32,
        result: &Result<ActionDone, ActionError>,
    ) {
        let (action, duration_ms) = (event.action, event.duration_ms);
        match result {
            Ok(detail) => tracing::warn!(
                action = %action,
                duration_ms,
                "{}: {action} succeeded in {duration_ms:.1} ms: {detail}",
                log_markers::RECOVERY_ACTION
            ),
            Err(reason) => {
                let err = self.failure(action, reason.to_string(), attempt, event.health_status);
                tracing::error!(
                    action = %action,
                    duration_ms,
                    "{}: {action} failed: {reason}\n{err}",
                    log_markers::RECOVERY_ACTION
                );
            }
        }
    }

    fn log_note(&self, note: Note) {
        match note {
            Note::BreakerChanged { from, to } => tracing::warn!(
                from = %from,
                to = %to,
                "{} {from} -> {to}",
                log_markers::CIRCUIT_BREAKER
            ),
            Note::RateLimited { allowed_at } => tracing::debug!(
                allowed_at_ms = allowed_at.as_millis(),
                "recovery rate-limited"
            ),
            Note::Disabled { action } => tracing::warn!(
                action = %action,
                "{}: {action} decided but not executed: recovery is disabled",
                log_markers::RECOVERY_ACTION
            ),
            Note::BudgetSpent {
                action,
                attempts,
                max_attempts,
                health_status,
            } => {
                let err = self.failure(
                    action,
                    format!(
                        "max_recovery_attempts ({max_attempts}) reached in this episode; no further action until health returns"
                    ),
                    attempts,
                    health_status,
                );
                tracing::error!("{}: {action} skipped\n{err}", log_markers::RECOVERY_ACTION);
            }
            Note::Blocked {
                action,
                state,
                rejected,
            } => tracing::warn!(
                action = %action,
                state = %state,
                "{} {state}: {action} blocked: {rejected}",
                log_markers::CIRCUIT_BREAKER
            ),
            Note::StaleOutcome => tracing::debug!("breaker permit was stale when reported"),
        }
    }

    fn failure(
        &self,
        action: RecoveryAction,
        reason: String,
        attempt: u32,
        health_status: HealthStatus,
    ) -> RecoveryFailedError {
        RecoveryFailedError {
            action,
            reason,
            attempt,
            max_attempts: self.settings.core.max_recovery_attempts,
            health_status,
            host: self.settings.host.clone(),
            port: self.settings.port,
            pid: Some(std::process::id()),
            observed_at: self.clock.wall(),
        }
    }

    /// Up to `limit` most recent events, oldest first.
    pub fn history(&self, limit: usize) -> Vec<RecoveryEvent> {
        lock(&self.machine).history(limit)
    }

    pub fn breaker_state(&self) -> CircuitState {
        lock(&self.machine).breaker_state()
    }

    /// A snapshot for `/diagnostics`; never changes the breaker or strategy.
    pub fn status(&self, recent: usize) -> RecoveryStatus {
        let now = self.clock.now();
        lock(&self.machine).status(recent, now)
    }

    /// Counters for `/metrics`.
    pub fn counts(&self) -> RecoveryCounts {
        let now = self.clock.now();
        lock(&self.machine).counts(now)
    }
}

/// The settings from the configuration tree.
pub fn settings_from_config(cfg: &crate::config::WardenConfig) -> RecoverySettings {
    RecoverySettings {
        core: LoopSettings {
            enabled: cfg.recovery.enabled,
            max_recovery_attempts: cfg.recovery.max_recovery_attempts,
            recovery_timeout: cfg.recovery.recovery_timeout,
            check_interval: cfg.recovery.check_interval,
            history_size: DEFAULT_RECOVERY_HISTORY,
            breaker: cfg.recovery.breaker_settings(),
            strategy: cfg.recovery.strategy_settings(),
        },
        host: cfg.server.host.clone(),
        port: cfg.server.port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerSettings;
    use crate::escalation::StrategySettings;
    use crate::health::{HealthCheckResult, HealthMetric};
    use crate::time::{ManualClock, Moment, WallTime};

    /// Records actions; fails or hangs on request.
    #[derive(Default)]
    struct Script {
        done: Mutex<Vec<RecoveryAction>>,
        fail: Mutex<Vec<RecoveryAction>>,
        hang: Mutex<Vec<RecoveryAction>>,
    }

    impl RecoveryActions for Script {
        fn execute<'a>(&'a self, action: RecoveryAction, _: &'a HealthReport) -> ActionRun<'a> {
            Box::pin(async move {
                lock(&self.done).push(action);
                if lock(&self.hang).contains(&action) {
                    std::future::pending::<()>().await;
                }
                if lock(&self.fail).contains(&action) {
                    Err(ActionError::Service {
                        reason: "scripted failure".to_string(),
                    })
                } else {
                    Ok(ActionDone::NothingToDo)
                }
            })
        }
    }

    fn settings() -> RecoverySettings {
        RecoverySettings {
            core: LoopSettings {
                enabled: true,
                max_recovery_attempts: 5,
                recovery_timeout: Duration::from_millis(200),
                check_interval: None,
                history_size: 4,
                breaker: BreakerSettings::default(),
                strategy: StrategySettings {
                    min_recovery_interval: Duration::ZERO,
                    ..StrategySettings::default()
                },
            },
            host: "localhost".into(),
            port: 8765,
        }
    }

    fn report(status: HealthStatus, s: u64) -> HealthReport {
        let at = Moment::from_secs(s);
        let wall = WallTime::from_secs(1_700_000_000 + s);
        let mut m = HealthMetric::new("memory_mb", 900.0, status);
        m.threshold = Some(500.0);
        let r =
            HealthCheckResult::from_metrics("process_resources", vec![m], at, wall, Duration::ZERO);
        HealthReport::from_results(vec![r], at, wall)
    }

    fn manager(s: RecoverySettings, script: &Arc<Script>) -> (Arc<RecoveryManager>, ManualClock) {
        let clock = ManualClock::new(WallTime::from_secs(1_700_000_000));
        let m = RecoveryManager::new(
            s,
            Arc::new(clock.clone()),
            Arc::clone(script) as Arc<dyn RecoveryActions>,
        )
        .expect("valid settings");
        (m, clock)
    }

    async fn feed(m: &RecoveryManager, clock: &ManualClock, statuses: &[HealthStatus]) {
        for (i, st) in statuses.iter().enumerate() {
            clock.set(Moment::from_secs(i as u64));
            m.handle_report(&report(*st, i as u64)).await;
        }
    }

    use HealthStatus::{Critical, Healthy, Warning};

    #[tokio::test]
    async fn check_interval_limits_which_reports_are_evaluated() {
        // Ten criticals one second apart: every report evaluated climbs the
        // whole ladder; with a 10 s check interval only the first counts.
        let script = Arc::new(Script::default());
        let (m, clock) = manager(settings(), &script);
        feed(&m, &clock, &[Critical; 10]).await;
        assert_eq!(lock(&script.done).len(), 3);

        let script = Arc::new(Script::default());
        let mut spaced = settings();
        spaced.core.check_interval = Some(Duration::from_secs(10));
        let (m, clock) = manager(spaced, &script);
        feed(&m, &clock, &[Critical; 10]).await;
        assert_eq!(*lock(&script.done), vec![RecoveryAction::ClearConnections]);
        // The next report due (at 10 s) is evaluated again.
        clock.set(Moment::from_secs(10));
        m.handle_report(&report(Critical, 10)).await;
        assert_eq!(lock(&script.done).len(), 2);
    }

    #[tokio::test]
    async fn criticals_run_the_ladder_and_record_seed_shaped_events() {
        let script = Arc::new(Script::default());
        let (m, clock) = manager(settings(), &script);
        feed(&m, &clock, &[Critical, Critical, Critical]).await;
        assert_eq!(
            *lock(&script.done),
            vec![
                RecoveryAction::ClearConnections,
                RecoveryAction::RestartService,
                RecoveryAction::EmergencyStop
            ]
        );
        let st = m.status(10);
        assert_eq!((st.total_recoveries, st.successful_recoveries), (3, 3));
        let v = serde_json::to_value(&st.recent_events[0]).expect("json");
        for key in [
            "timestamp",
            "timestamp_iso",
            "action",
            "trigger",
            "health_status",
            "success",
            "duration_ms",
            "error_message",
        ] {
            assert!(v.get(key).is_some(), "{key} in {v}");
        }
        assert_eq!(v["action"], "clear_connections");
        assert_eq!(v["trigger"], "health_check");
        assert_eq!(v["health_status"], "critical");
    }

    #[tokio::test]
    async fn a_warning_only_process_is_logged_then_cleared() {
        let script = Arc::new(Script::default());
        let (m, clock) = manager(settings(), &script);
        feed(&m, &clock, &[Warning; 4]).await;
        assert_eq!(
            *lock(&script.done),
            vec![RecoveryAction::LogWarning, RecoveryAction::ClearConnections]
        );
    }

    #[tokio::test]
    async fn disabled_recovery_decides_but_never_acts() {
        let script = Arc::new(Script::default());
        let mut s = settings();
        s.core.enabled = false;
        let (m, clock) = manager(s, &script);
        feed(&m, &clock, &[Critical, Critical, Critical]).await;
        assert!(lock(&script.done).is_empty());
        assert_eq!(m.status(10).strategy.rung, RecoveryAction::EmergencyStop);
    }

    #[tokio::test]
    async fn a_hung_action_times_out_as_a_failure_counted_by_the_breaker() {
        let script = Arc::new(Script::default());
        lock(&script.hang).push(RecoveryAction::ClearConnections);
        let mut s = settings();
        s.core.breaker.failure_threshold = 1;
        let (m, clock) = manager(s, &script);
        feed(&m, &clock, &[Critical]).await;
        let st = m.status(10);
        assert_eq!(st.failed_recoveries, 1);
        assert!(
            st.recent_events[0]
                .error_message
                .as_deref()
                .unwrap_or("")
                .contains("timed out")
        );
        assert_eq!(st.circuit_breaker_state, CircuitState::Open);
    }

    #[tokio::test]
    async fn an_open_breaker_blocks_further_actions() {
        let script = Arc::new(Script::default());
        lock(&script.fail).push(RecoveryAction::RestartService);
        let mut s = settings();
        s.core.breaker.failure_threshold = 1;
        let (m, clock) = manager(s, &script);
        feed(&m, &clock, &[Critical, Critical, Critical, Critical]).await;
        assert_eq!(
            *lock(&script.done),
            vec![
                RecoveryAction::ClearConnections,
                RecoveryAction::RestartService
            ],
            "emergency_stop was blocked by the open breaker"
        );
        let st = m.status(10);
        assert_eq!(st.circuit_breaker_state, CircuitState::Open);
        assert_eq!((st.failed_recoveries, st.rejected_by_breaker), (1, 1));
        // Reading the status twice changes nothing.
        assert_eq!(m.status(10), st);
    }

    #[tokio::test]
    async fn max_recovery_attempts_bounds_an_episode_and_health_ends_it() {
        let script = Arc::new(Script::default());
        let mut s = settings();
        s.core.max_recovery_attempts = 2;
        let (m, clock) = manager(s, &script);
        feed(&m, &clock, &[Warning; 12]).await;
        assert_eq!(lock(&script.done).len(), 2, "{:?}", lock(&script.done));
        assert!(m.status(10).skipped_attempts_exhausted > 0);
        clock.set(Moment::from_secs(100));
        m.handle_report(&report(Healthy, 100)).await;
        assert_eq!(m.status(10).episode_attempts, 0);
        for t in 101..105 {
            clock.set(Moment::from_secs(t));
            m.handle_report(&report(Warning, t)).await;
        }
        assert!(lock(&script.done).len() > 2, "a new episode acts again");
    }

    #[tokio::test]
    async fn the_history_is_bounded() {
        let script = Arc::new(Script::default());
        let (m, clock) = manager(settings(), &script);
        feed(&m, &clock, &[Warning; 12]).await;
        assert_eq!(m.history(100).len(), 4);
        assert_eq!(m.status(2).recent_events.len(), 2);
    }

    #[test]
    fn failing_metrics_name_the_metric_value_and_threshold() {
        let lines = failing_metrics(&report(Critical, 1));
        assert_eq!(
            lines,
            vec!["process_resources.memory_mb=900.0 > 500 (critical)"]
        );
    }
}
