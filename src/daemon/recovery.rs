//! The `RecoveryManager`: connects the pure [`GradedRecoveryStrategy`] and
//! [`CircuitBreaker`] to real actions on the hub, and [`HubService`], the
//! serving generation that `restart_service` stops and starts again inside
//! the same process.
//!
//! # How a report becomes an action
//! The monitor's callback queues each report (queue of one: while a recovery
//! runs, newer reports are dropped, so there is **one recovery at a time**
//! and the strategy never decides on the transient state a recovery causes).
//! The manager's task then, for each report:
//! 1. feeds its status to the strategy, which decides an action (or none);
//! 2. if recovery is disabled (`recovery.enabled: false`), logs the decision
//!    and does nothing;
//! 3. if the episode's budget is spent, logs a `RecoveryFailedError` once and
//!    does nothing. An **episode** starts with the first action after a
//!    healthy report and ends at the next healthy report; at most
//!    `max_recovery_attempts` actions (any action, log_warning included) run
//!    per episode;
//! 4. asks the breaker for a permit; an open breaker blocks the action
//!    (logged with "Circuit breaker", counted in `rejected_by_breaker`);
//! 5. runs the action under `tokio::time::timeout(recovery_timeout)` (a
//!    timeout is a failure), reports the outcome to the breaker, records a
//!    [`RecoveryEvent`] (bounded history) and logs "Recovery action ...";
//!    a failure also logs the rendered `RecoveryFailedError`.
//!
//! # The actions ([`HubActions`])
//! - `log_warning`: a structured warning naming every failing metric.
//! - `clear_connections`: `Hub::sever_transports` (clients reconnect on
//!   their own; each is uncounted when socketioxide sees its transport go).
//! - `restart_service` and `emergency_stop` go through a [`ServiceControl`]:
//!   the runner's control handle in the daemon, or [`HubService`] (through
//!   [`WeakService`]) when this module serves the hub itself.
//!
//! [`HubService::restart`] drains the current serving generation, binds the
//! same address again and serves a fresh application; the PID file and its
//! lock are not touched (they belong to the runner). A failed rebind is a
//! failed recovery (the breaker counts it), and the service then **keeps
//! retrying the bind** every `rebind_retry_interval`, at most
//! `rebind_max_retries` times; if every retry fails it falls to an emergency
//! stop ([`StopReason::LostSocket`]), so the daemon is never left without a
//! socket for good. Emergency stop drains, then asks the runner to stop; the
//! runner removes the PID file and exits with the emergency exit code.
//!
//! Not here: deciding which action (the strategy), guarding against loops (the
//! breaker), the PID file and process exit (the runner).

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use axum::Router;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::breaker::{BreakerSettings, BreakerStatus, CircuitBreaker, CircuitState, Report};
use crate::daemon::http::CorsError;
use crate::daemon::hub::Hub;
use crate::daemon::monitor::HealthCallback;
use crate::daemon::server::{self, BindError, ServingHandle, ShutdownReport};
use crate::errors::{RecoveryFailedError, log_markers};
use crate::escalation::{
    DecisionCause, GradedRecoveryStrategy, RecoveryAction, StrategySettings, StrategyStatus,
};
use crate::health::{HealthReport, HealthStatus};
use crate::time::{Clock, Moment};
use socketioxide::adapter::{Adapter, LocalAdapter};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks (machines, histories) stays valid after a panic elsewhere.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// HubService: one restartable serving generation.

/// Why the daemon is asked to stop from inside.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The recovery manager's emergency_stop.
    Emergency,
    /// A failed rebind whose bounded retries all failed.
    LostSocket,
}

/// Builds the application for one serving generation (called on every (re)start).
pub type RouterFactory = Arc<dyn Fn() -> Result<Router, CorsError> + Send + Sync>;

/// Parameters of [`HubService`].
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSettings {
    /// How long a shutdown waits for in-flight HTTP requests.
    pub drain_timeout: Duration,
    /// Pause between releasing the old socket and binding again. Zero in
    /// production; the real-binary tests set it (env `WARDEN_TEST_REBIND_PAUSE_MS`)
    /// to take the port during the restart window.
    pub rebind_pause: Duration,
    pub rebind_retry_interval: Duration,
    pub rebind_max_retries: u32,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            drain_timeout: Duration::from_secs(5),
            rebind_pause: Duration::ZERO,
            rebind_retry_interval: Duration::from_secs(1),
            rebind_max_retries: 120,
        }
    }
}

impl ServiceSettings {
    /// The defaults, with `rebind_pause` from `WARDEN_TEST_REBIND_PAUSE_MS` if set.
    pub fn from_env() -> Self {
        let rebind_pause = std::env::var("WARDEN_TEST_REBIND_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        ServiceSettings {
            rebind_pause,
            ..ServiceSettings::default()
        }
    }
}

/// Why a restart failed.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("could not bind {addr} again: {source}")]
    Rebind { addr: SocketAddr, source: BindError },
    #[error("could not build the application: {0}")]
    Router(#[from] CorsError),
    #[error("the previous serving generation panicked while shutting down")]
    Panicked,
    #[error("the service is stopping")]
    Stopping,
}

/// The hub's serving generation on one address, restartable in-process.
pub struct HubService {
    hub: Hub,
    addr: SocketAddr,
    settings: ServiceSettings,
    make_router: Mutex<Option<RouterFactory>>,
    serving: tokio::sync::Mutex<Option<ServingHandle>>,
    draining: AtomicBool,
    stopping: AtomicBool,
    rebinding: AtomicBool,
    restarts: AtomicU64,
    stop_tx: watch::Sender<Option<StopReason>>,
}

impl HubService {
    /// A service for `addr` (the address the first listener is bound to).
    pub fn new(hub: Hub, addr: SocketAddr, settings: ServiceSettings) -> Arc<Self> {
        let (stop_tx, _) = watch::channel(None);
        Arc::new(HubService {
            hub,
            addr,
            settings,
            make_router: Mutex::new(None),
            serving: tokio::sync::Mutex::new(None),
            draining: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            rebinding: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
            stop_tx,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Serves the first generation on `listener` (bound to `addr`).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        make_router: RouterFactory,
    ) -> Result<(), CorsError> {
        let router = make_router()?;
        *lock(&self.make_router) = Some(make_router);
        let mut serving = self.serving.lock().await;
        *serving = Some(server::serve_tcp(listener, router, &self.hub));
        self.draining.store(false, Ordering::Release);
        Ok(())
    }

    /// True while a generation is being drained or no socket is bound.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Successful in-process restarts so far.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Stops the current generation (if any) for good: no restart or rebind
    /// retry serves again afterwards. Idempotent.
    pub async fn shutdown(&self) -> Option<ShutdownReport> {
        self.stopping.store(true, Ordering::Release);
        self.draining.store(true, Ordering::Release);
        let handle = self.serving.lock().await.take()?;
        match handle.shutdown(self.settings.drain_timeout).await {
            Ok(report) => Some(report),
            Err(error) => {
                tracing::error!(%error, "serving task ended abnormally during shutdown");
                None
            }
        }
    }

    /// Asks the runner to stop (it waits on [`HubService::stop_requested`]).
    pub fn request_stop(&self, reason: StopReason) {
        self.stop_tx.send_replace(Some(reason));
    }

    /// Resolves when something inside the daemon asked it to stop.
    pub async fn stop_requested(&self) -> StopReason {
        let mut rx = self.stop_tx.subscribe();
        loop {
            if let Some(reason) = *rx.borrow_and_update() {
                return reason;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`, so this cannot happen while we
                // are borrowed; answer the safe way if it does.
                return StopReason::Emergency;
            }
        }
    }

    fn router(&self) -> Result<Router, RestartError> {
        let factory = lock(&self.make_router).clone();
        match factory {
            Some(f) => Ok(f()?),
            None => Err(RestartError::Stopping),
        }
    }

    /// Drains the current generation, binds the same address and serves a
    /// fresh application. On a failed bind, starts the bounded rebind retries
    /// (see the module doc) and returns the error.
    pub async fn restart(self: &Arc<Self>) -> Result<ShutdownReport, RestartError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(RestartError::Stopping);
        }
        let mut serving = self.serving.lock().await;
        self.draining.store(true, Ordering::Release);
        self.hub.transports().sever_generation();
        let report = match serving.take() {
            Some(handle) => handle
                .shutdown(self.settings.drain_timeout)
                .await
                .map_err(|_| RestartError::Panicked)?,
            None => ShutdownReport {
                clients_closed: 0,
                forced: false,
            },
        };
        if !self.settings.rebind_pause.is_zero() {
            tokio::time::sleep(self.settings.rebind_pause).await;
        }
        match server::bind(self.addr).await {
            Ok(listener) => {
                let router = self.router()?;
                *serving = Some(server::serve_tcp(listener, router, &self.hub));
                self.draining.store(false, Ordering::Release);
                self.restarts.fetch_add(1, Ordering::Relaxed);
                Ok(report)
            }
            Err(source) => {
                drop(serving);
                self.spawn_rebind_retries();
                Err(RestartError::Rebind {
                    addr: self.addr,
                    source,
                })
            }
        }
    }

    fn spawn_rebind_retries(self: &Arc<Self>) {
        if self.rebinding.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<HubService> = Arc::downgrade(self);
        let interval = self.settings.rebind_retry_interval;
        let max = self.settings.rebind_max_retries;
        tokio::spawn(async move {
            for attempt in 1..=max {
                tokio::time::sleep(interval).await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                if service.stopping.load(Ordering::Acquire) {
                    service.rebinding.store(false, Ordering::Release);
                    return;
                }
                let mut serving = service.serving.lock().await;
                if serving.is_some() {
                    service.rebinding.store(false, Ordering::Release);
                    return;
                }
                match server::bind(service.addr).await {
                    Ok(listener) => match service.router() {
                        Ok(router) => {
                            *serving = Some(server::serve_tcp(listener, router, &service.hub));
                            service.draining.store(false, Ordering::Release);
                            service.rebinding.store(false, Ordering::Release);
                            tracing::warn!(
                                addr = %service.addr,
                                attempt,
                                "{}: restart_service rebind retry {attempt} succeeded; serving again",
                                log_markers::RECOVERY_ACTION
                            );
                            return;
                        }
                        Err(error) => {
                            tracing::error!(%error, "rebind retry could not build the application");
                        }
                    },
                    Err(error) => {
                        tracing::warn!(
                            addr = %service.addr,
                            attempt,
                            max,
                            %error,
                            "{}: restart_service rebind retry {attempt}/{max} failed",
                            log_markers::RECOVERY_ACTION
                        );
                    }
                }
            }
            if let Some(service) = weak.upgrade() {
                service.rebinding.store(false, Ordering::Release);
                tracing::error!(
                    addr = %service.addr,
                    "{}: emergency_stop: the address could not be bound again after {max} retries",
                    log_markers::RECOVERY_ACTION
                );
                service.request_stop(StopReason::LostSocket);
            }
        });
    }
}

// ---------------------------------------------------------------------------
// Actions.

/// A boxed future returned by [`RecoveryActions::execute`].
pub type ActionFuture<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// Executes recovery actions. `Ok` carries a short description of what was
/// done, `Err` the reason it failed.
pub trait RecoveryActions: Send + Sync {
    fn execute<'a>(&'a self, action: RecoveryAction, report: &'a HealthReport) -> ActionFuture<'a>;
}

/// What the actions need from whoever serves the hub: [`HubService`] here,
/// or the runner's control handle. Futures resolve when the request is done.
pub trait ServiceControl: Send + Sync {
    /// restart_service: drain, bind the same address again, serve.
    fn restart(&self) -> ActionFuture<'_>;
    /// emergency_stop: drain and have the runner exit with the emergency code.
    fn emergency_stop(&self, reason: String) -> ActionFuture<'_>;
    /// True while serving is being drained or no socket is bound (`/readyz`).
    fn is_draining(&self) -> bool;
    /// Successful in-process restarts so far.
    fn restarts(&self) -> u64;
}

/// A [`ServiceControl`] set after the actions are built (the runner binds
/// the port after the routes that report on recovery exist). Until set,
/// actions fail with "not serving yet" and it reads as draining.
#[derive(Default)]
pub struct LateControl {
    inner: std::sync::OnceLock<Arc<dyn ServiceControl>>,
}

impl LateControl {
    /// Sets the control; false if it was already set.
    pub fn set(&self, control: Arc<dyn ServiceControl>) -> bool {
        self.inner.set(control).is_ok()
    }
}

impl ServiceControl for LateControl {
    fn restart(&self) -> ActionFuture<'_> {
        match self.inner.get() {
            Some(c) => c.restart(),
            None => Box::pin(async { Err("not serving yet".to_string()) }),
        }
    }
    fn emergency_stop(&self, reason: String) -> ActionFuture<'_> {
        match self.inner.get() {
            Some(c) => c.emergency_stop(reason),
            None => Box::pin(async { Err("not serving yet".to_string()) }),
        }
    }
    fn is_draining(&self) -> bool {
        self.inner.get().is_none_or(|c| c.is_draining())
    }
    fn restarts(&self) -> u64 {
        self.inner.get().map_or(0, |c| c.restarts())
    }
}

/// [`HubService`] as a [`ServiceControl`], held weakly (the service owns the
/// router whose endpoints read the recovery manager that holds this).
pub struct WeakService(pub Weak<HubService>);

impl ServiceControl for WeakService {
    fn restart(&self) -> ActionFuture<'_> {
        Box::pin(async move {
            let service = self.0.upgrade().ok_or("the service is gone")?;
            match service.restart().await {
                Ok(report) => Ok(format!(
                    "rebound {} ({} clients closed, forced: {})",
                    service.addr(),
                    report.clients_closed,
                    report.forced
                )),
                Err(error) => Err(error.to_string()),
            }
        })
    }
    fn emergency_stop(&self, _reason: String) -> ActionFuture<'_> {
        Box::pin(async move {
            let service = self.0.upgrade().ok_or("the service is gone")?;
            let report = service.shutdown().await;
            service.request_stop(StopReason::Emergency);
            Ok(format!(
                "drained ({} clients closed); stop requested",
                report.map_or(0, |r| r.clients_closed)
            ))
        })
    }
    fn is_draining(&self) -> bool {
        self.0.upgrade().is_none_or(|s| s.is_draining())
    }
    fn restarts(&self) -> u64 {
        self.0.upgrade().map_or(0, |s| s.restarts())
    }
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
    fn execute<'a>(&'a self, action: RecoveryAction, report: &'a HealthReport) -> ActionFuture<'a> {
        Box::pin(async move {
            match action {
                RecoveryAction::None => Ok("nothing to do".to_string()),
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
                    Ok(format!("{} failing metrics logged", failing.len()))
                }
                RecoveryAction::ClearConnections => {
                    let n = self.hub.sever_transports();
                    Ok(format!("{n} clients' transports closed; they reconnect"))
                }
                RecoveryAction::RestartService => self.control.restart().await,
                RecoveryAction::EmergencyStop => {
                    let reason = format!(
                        "recovery escalated to emergency_stop (health {}): {}",
                        report.overall_status,
                        failing_metrics(report).join(", ")
                    );
                    self.control.emergency_stop(reason).await
                }
            }
        })
    }
}

// ---------------------------------------------------------------------------
// The manager.

/// One executed recovery, with the seed's fields.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecoveryEvent {
    /// Epoch seconds.
    pub timestamp: f64,
    pub timestamp_iso: String,
    pub action: RecoveryAction,
    /// What triggered it: `health_check`.
    pub trigger: String,
    pub health_status: HealthStatus,
    pub success: bool,
    pub duration_ms: f64,
    pub error_message: Option<String>,
}

/// The manager's parameters (config `recovery`).
#[derive(Clone, Debug, PartialEq)]
pub struct RecoverySettings {
    pub enabled: bool,
    pub max_recovery_attempts: u32,
    pub recovery_timeout: Duration,
    /// `recovery.check_interval`: the least time between two health reports
    /// the manager evaluates. Reports in between still reach `/health` and the
    /// monitor's history; they are not fed to the strategy. `None` evaluates
    /// every report (each `health_monitoring.check_interval`).
    pub check_interval: Option<Duration>,
    pub history_size: usize,
    pub breaker: BreakerSettings,
    pub strategy: StrategySettings,
    /// For the rendered `RecoveryFailedError`.
    pub host: String,
    pub port: u16,
}

/// Recovery events kept for `/diagnostics`.
pub const DEFAULT_RECOVERY_HISTORY: usize = 100;

/// Why a [`RecoveryManager`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RecoverySetupError {
    #[error(transparent)]
    Breaker(#[from] crate::breaker::BreakerSettingsError),
    #[error(transparent)]
    Strategy(#[from] crate::escalation::StrategySettingsError),
}

/// `/diagnostics`' `recovery_manager` object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecoveryStatus {
    pub enabled: bool,
    pub circuit_breaker_state: CircuitState,
    pub circuit_breaker: BreakerStatus,
    pub strategy: StrategyStatus,
    pub total_recoveries: u64,
    pub successful_recoveries: u64,
    pub failed_recoveries: u64,
    pub rejected_by_breaker: u64,
    pub skipped_attempts_exhausted: u64,
    pub episode_attempts: u32,
    pub max_recovery_attempts: u32,
    pub recovery_in_progress: bool,
    pub recent_events: Vec<RecoveryEvent>,
}

/// Counters for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecoveryCounts {
    /// (action, success) → count.
    pub by_action: Vec<(RecoveryAction, bool, u64)>,
    pub rejected_by_breaker: u64,
    pub breaker_trips: u64,
    pub breaker_state: Option<CircuitState>,
}

struct State {
    strategy: GradedRecoveryStrategy,
    breaker: CircuitBreaker,
    history: VecDeque<RecoveryEvent>,
    total: u64,
    successful: u64,
    failed: u64,
    rejected: u64,
    exhausted_skips: u64,
    episode_attempts: u32,
    exhausted_logged: bool,
    by_action: [[u64; 2]; 5],
    /// When the last report was evaluated (for `check_interval`).
    last_evaluated: Option<Moment>,
}

fn action_index(action: RecoveryAction) -> usize {
    match action {
        RecoveryAction::None => 0,
        RecoveryAction::LogWarning => 1,
        RecoveryAction::ClearConnections => 2,
        RecoveryAction::RestartService => 3,
        RecoveryAction::EmergencyStop => 4,
    }
}

const ACTIONS: [RecoveryAction; 5] = [
    RecoveryAction::None,
    RecoveryAction::LogWarning,
    RecoveryAction::ClearConnections,
    RecoveryAction::RestartService,
    RecoveryAction::EmergencyStop,
];

/// Told of each recovery event once it is recorded (e.g. the alerts). Must
/// not block: it runs on the recovery task.
pub type RecoveryListener = Arc<dyn Fn(&RecoveryEvent) + Send + Sync>;

/// The recovery manager. Register [`RecoveryManager::callback`] with the
/// monitor and spawn [`RecoveryManager::run`].
pub struct RecoveryManager {
    listeners: Mutex<Vec<RecoveryListener>>,
    settings: RecoverySettings,
    clock: Arc<dyn Clock>,
    actions: Arc<dyn RecoveryActions>,
    state: Mutex<State>,
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
        let strategy = GradedRecoveryStrategy::new(settings.strategy.clone())?;
        let breaker = CircuitBreaker::new(settings.breaker.clone())?;
        let (queue_tx, queue_rx) = mpsc::channel(1);
        Ok(Arc::new(RecoveryManager {
            listeners: Mutex::new(Vec::new()),
            state: Mutex::new(State {
                strategy,
                breaker,
                history: VecDeque::with_capacity(settings.history_size.clamp(1, 1024)),
                total: 0,
                successful: 0,
                failed: 0,
                rejected: 0,
                exhausted_skips: 0,
                episode_attempts: 0,
                exhausted_logged: false,
                by_action: [[0; 2]; 5],
                last_evaluated: None,
            }),
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
        self.settings.enabled
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

    /// Observes one report and runs the action it calls for, if any.
    /// Returns the recorded event when an action ran.
    pub async fn handle_report(&self, report: &HealthReport) -> Option<RecoveryEvent> {
        let now = self.clock.now();
        let (action, cause, permit, attempt) = {
            let mut st = lock(&self.state);
            if let (Some(interval), Some(last)) = (self.settings.check_interval, st.last_evaluated)
                && report.at < last + interval
            {
                return None;
            }
            st.last_evaluated = Some(report.at);
            let before = st.breaker.state();
            st.breaker.tick(now);
            log_breaker_change(before, st.breaker.state());
            let decision = st.strategy.observe(report.overall_status, report.at);
            if report.overall_status == HealthStatus::Healthy {
                st.episode_attempts = 0;
                st.exhausted_logged = false;
            }
            let action = decision.action;
            if action == RecoveryAction::None {
                if let DecisionCause::RateLimited { allowed_at } = decision.cause {
                    tracing::debug!(
                        allowed_at_ms = allowed_at.as_millis(),
                        "recovery rate-limited"
                    );
                }
                return None;
            }
            if !self.settings.enabled {
                tracing::warn!(
                    action = %action,
                    "{}: {action} decided but not executed: recovery is disabled",
                    log_markers::RECOVERY_ACTION
                );
                return None;
            }
            if st.episode_attempts >= self.settings.max_recovery_attempts {
                st.exhausted_skips += 1;
                if !st.exhausted_logged {
                    st.exhausted_logged = true;
                    let err = self.failure(
                        action,
                        format!(
                            "max_recovery_attempts ({}) reached in this episode; no further action until health returns",
                            self.settings.max_recovery_attempts
                        ),
                        st.episode_attempts,
                        report.overall_status,
                    );
                    tracing::error!("{}: {action} skipped\n{err}", log_markers::RECOVERY_ACTION);
                }
                return None;
            }
            let permit = match st.breaker.try_acquire(now) {
                Ok(permit) => permit,
                Err(rejected) => {
                    st.rejected += 1;
                    tracing::warn!(
                        action = %action,
                        state = %st.breaker.state(),
                        "{} {}: {action} blocked: {rejected}",
                        log_markers::CIRCUIT_BREAKER,
                        st.breaker.state()
                    );
                    return None;
                }
            };
            st.episode_attempts += 1;
            (action, decision.cause, permit, st.episode_attempts)
        };

        self.busy.store(true, Ordering::Release);
        self.acting.store(true, Ordering::Release);
        tracing::warn!(
            action = %action,
            health_status = %report.overall_status,
            cause = ?cause,
            attempt,
            "{}: {action} started (health {}, attempt {attempt}/{})",
            log_markers::RECOVERY_ACTION,
            report.overall_status,
            self.settings.max_recovery_attempts
        );
        let wall = self.clock.wall();
        let started = Instant::now();
        let outcome = match tokio::time::timeout(
            self.settings.recovery_timeout,
            self.actions.execute(action, report),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(format!(
                "timed out after {} ms (recovery_timeout)",
                self.settings.recovery_timeout.as_millis()
            )),
        };
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.busy.store(false, Ordering::Release);

        let event = RecoveryEvent {
            timestamp: wall.as_secs_f64(),
            timestamp_iso: wall.to_iso8601(),
            action,
            trigger: "health_check".to_string(),
            health_status: report.overall_status,
            success: outcome.is_ok(),
            duration_ms,
            error_message: outcome.as_ref().err().cloned(),
        };
        let now = self.clock.now();
        let mut st = lock(&self.state);
        let before = st.breaker.state();
        let counted = match &outcome {
            Ok(_) => st.breaker.on_success(permit, now),
            Err(_) => st.breaker.on_failure(permit, now),
        };
        if counted == Report::Stale {
            tracing::debug!("breaker permit was stale when reported");
        }
        log_breaker_change(before, st.breaker.state());
        st.total += 1;
        st.by_action[action_index(action)][usize::from(outcome.is_ok())] += 1;
        match &outcome {
            Ok(detail) => {
                st.successful += 1;
                tracing::warn!(
                    action = %action,
                    duration_ms,
                    "{}: {action} succeeded in {duration_ms:.1} ms: {detail}",
                    log_markers::RECOVERY_ACTION
                );
            }
            Err(reason) => {
                st.failed += 1;
                let err = self.failure(action, reason.clone(), attempt, report.overall_status);
                tracing::error!(
                    action = %action,
                    duration_ms,
                    "{}: {action} failed: {reason}\n{err}",
                    log_markers::RECOVERY_ACTION
                );
            }
        }
        let cap = self.settings.history_size.max(1);
        while st.history.len() >= cap {
            st.history.pop_front();
        }
        st.history.push_back(event.clone());
        drop(st);
        let listeners = lock(&self.listeners).clone();
        for listener in listeners {
            listener(&event);
        }
        self.acting.store(false, Ordering::Release);
        Some(event)
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
            max_attempts: self.settings.max_recovery_attempts,
            health_status,
            host: self.settings.host.clone(),
            port: self.settings.port,
            pid: Some(std::process::id()),
            observed_at: self.clock.wall(),
        }
    }

    /// Up to `limit` most recent events, oldest first.
    pub fn history(&self, limit: usize) -> Vec<RecoveryEvent> {
        let st = lock(&self.state);
        let skip = st.history.len().saturating_sub(limit);
        st.history.iter().skip(skip).cloned().collect()
    }

    pub fn breaker_state(&self) -> CircuitState {
        lock(&self.state).breaker.state()
    }

    /// A snapshot for `/diagnostics`; never changes the breaker or strategy.
    pub fn status(&self, recent: usize) -> RecoveryStatus {
        let now = self.clock.now();
        let st = lock(&self.state);
        let skip = st.history.len().saturating_sub(recent);
        RecoveryStatus {
            enabled: self.settings.enabled,
            circuit_breaker_state: st.breaker.state(),
            circuit_breaker: st.breaker.status(now),
            strategy: st.strategy.status(),
            total_recoveries: st.total,
            successful_recoveries: st.successful,
            failed_recoveries: st.failed,
            rejected_by_breaker: st.rejected,
            skipped_attempts_exhausted: st.exhausted_skips,
            episode_attempts: st.episode_attempts,
            max_recovery_attempts: self.settings.max_recovery_attempts,
            recovery_in_progress: self.busy.load(Ordering::Acquire),
            recent_events: st.history.iter().skip(skip).cloned().collect(),
        }
    }

    /// Counters for `/metrics`.
    pub fn counts(&self) -> RecoveryCounts {
        let now = self.clock.now();
        let st = lock(&self.state);
        let mut by_action = Vec::new();
        for action in ACTIONS.iter().skip(1) {
            for success in [true, false] {
                by_action.push((
                    *action,
                    success,
                    st.by_action[action_index(*action)][usize::from(success)],
                ));
            }
        }
        RecoveryCounts {
            by_action,
            rejected_by_breaker: st.rejected,
            breaker_trips: st.breaker.status(now).trip_count,
            breaker_state: Some(st.breaker.state()),
        }
    }
}

fn log_breaker_change(before: CircuitState, after: CircuitState) {
    if before != after {
        tracing::warn!(
            from = %before,
            to = %after,
            "{} {before} -> {after}",
            log_markers::CIRCUIT_BREAKER
        );
    }
}

/// The settings from the configuration tree.
pub fn settings_from_config(cfg: &crate::config::WardenConfig) -> RecoverySettings {
    RecoverySettings {
        enabled: cfg.recovery.enabled,
        max_recovery_attempts: cfg.recovery.max_recovery_attempts,
        recovery_timeout: cfg.recovery.recovery_timeout,
        check_interval: cfg.recovery.check_interval,
        history_size: DEFAULT_RECOVERY_HISTORY,
        breaker: cfg.recovery.breaker_settings(),
        strategy: cfg.recovery.strategy_settings(),
        host: cfg.server.host.clone(),
        port: cfg.server.port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{HealthCheckResult, HealthMetric};
    use crate::time::{ManualClock, WallTime};

    /// Records actions; fails or hangs on request.
    #[derive(Default)]
    struct Script {
        done: Mutex<Vec<RecoveryAction>>,
        fail: Mutex<Vec<RecoveryAction>>,
        hang: Mutex<Vec<RecoveryAction>>,
    }

    impl RecoveryActions for Script {
        fn execute<'a>(&'a self, action: RecoveryAction, _: &'a HealthReport) -> ActionFuture<'a> {
            Box::pin(async move {
                lock(&self.done).push(action);
                if lock(&self.hang).contains(&action) {
                    std::future::pending::<()>().await;
                }
                if lock(&self.fail).contains(&action) {
                    Err("scripted failure".to_string())
                } else {
                    Ok("ok".to_string())
                }
            })
        }
    }

    fn settings() -> RecoverySettings {
        RecoverySettings {
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
        let spaced = RecoverySettings {
            check_interval: Some(Duration::from_secs(10)),
            ..settings()
        };
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
        s.enabled = false;
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
        s.breaker.failure_threshold = 1;
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
        s.breaker.failure_threshold = 1;
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
        s.max_recovery_attempts = 2;
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
