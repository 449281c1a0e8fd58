//! One serving generation of the hub, and the only code that stops it and
//! serves it again: [`Serving`] serves the hub's application on one address,
//! drains it, binds the same address again on a bounded [`RetrySchedule`] and
//! reports the outcome. The runner owns it; the recovery side reaches it
//! through a [`ServingControl`] (restart, emergency stop, draining flag,
//! restart count), whose requests the runner hands to
//! [`Serving::handle`]; the in-process tests drive the same pair.
//!
//! A restart (`restart_service`, or the runner's own self-check) drains the
//! current generation (clients see "transport close"), binds the address
//! again on [`ServingSettings::rebind`] and serves a fresh application. When
//! every bind fails the restart fails (the breaker counts it) and the
//! generation keeps **retrying the bind** on [`ServingSettings::retries`],
//! one bind per retry; when those run out too, [`Serving::handle`] asks for
//! an emergency stop, so the daemon is never left without a socket for good.
//! The PID file and its lock are not touched here (they belong to the runner).
//!
//! Where the listening socket comes from is the [`Listen`] seam: [`TcpListen`]
//! binds and serves OS sockets (the binary), and the simulation's listener
//! (`sim/src/net.rs`) binds turmoil's, so its restart scenario drives this
//! very generation, its rebind schedule and retries included.
//!
//! Not here: deciding to restart (the recovery manager), process exit and
//! the PID file (the runner), the HTTP application itself (`http`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::daemon::hub::http::{self, CorsError, HealthProvider};
use crate::daemon::hub::{Hub, HubAdapter};
use crate::daemon::serve::server::{self, BindError, ServingHandle, ShutdownReport};
use crate::errors::log_markers;
use crate::health::HealthStatus;
pub use crate::retry::RetrySchedule;
use socketioxide::adapter::LocalAdapter;

/// Requests from the recovery side waiting to be handled.
pub const CONTROL_QUEUE: usize = 16;

/// What the daemon merges into its HTTP application. The self-healing layer
/// replaces the defaults with the health monitor and its routes.
#[derive(Clone)]
pub struct Services {
    /// Answers `/status`'s `health`.
    pub health: Arc<dyn HealthProvider>,
    /// Routes merged next to `/status`, `/stats` and `/api/events`.
    pub extra_routes: Router,
}

impl Services {
    /// `/status` reports healthy; no extra routes.
    pub fn basic() -> Self {
        Services {
            health: Arc::new(|| HealthStatus::Healthy),
            extra_routes: Router::new(),
        }
    }
}

/// How a serving generation gets a listening socket and serves on it.
pub trait Listen {
    /// A bound, listening socket.
    type Listener;
    /// Binds `addr` (the restart's rebind, once per attempt).
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = Result<Self::Listener, BindError>>;
    /// Serves `app` for `hub` on `listener` until the handle's shutdown.
    fn serve<A: HubAdapter>(
        &self,
        listener: Self::Listener,
        app: Router,
        hub: &Hub<A>,
    ) -> ServingHandle;
}

/// OS sockets: [`server::bind`] and [`server::serve_tcp`] (the health lane,
/// `TCP_NODELAY`). What the binary serves on.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpListen;

impl Listen for TcpListen {
    type Listener = TcpListener;

    fn bind(&self, addr: SocketAddr) -> impl Future<Output = Result<TcpListener, BindError>> {
        server::bind(addr)
    }

    fn serve<A: HubAdapter>(
        &self,
        listener: TcpListener,
        app: Router,
        hub: &Hub<A>,
    ) -> ServingHandle {
        server::serve_tcp(listener, app, hub)
    }
}

/// How a generation is stopped and served again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingSettings {
    /// How long a stop waits for in-flight HTTP requests after closing every
    /// transport, before aborting them. Keeps "exit within a second".
    pub drain_timeout: Duration,
    /// A restart's binds of the same address.
    pub rebind: RetrySchedule,
    /// After a failed restart: one bind per retry, then an emergency stop.
    pub retries: RetrySchedule,
    /// Pause between releasing the old socket and binding again: zero, except
    /// in the tests that take the port in that window (see
    /// [`ServingSettings::with_test_hooks`]).
    pub rebind_pause: Duration,
}

impl Default for ServingSettings {
    fn default() -> Self {
        ServingSettings {
            drain_timeout: Duration::from_millis(750),
            rebind: RetrySchedule::new(40, Duration::from_millis(50)),
            retries: RetrySchedule::new(120, Duration::from_secs(1)),
            rebind_pause: Duration::ZERO,
        }
    }
}

/// `WARDEN_TEST_REBIND_PAUSE_MS`: the [`ServingSettings::rebind_pause`].
pub const TEST_REBIND_PAUSE_MS: &str = "WARDEN_TEST_REBIND_PAUSE_MS";
/// `WARDEN_TEST_REBIND_RETRIES`: the number of [`ServingSettings::retries`].
pub const TEST_REBIND_RETRIES: &str = "WARDEN_TEST_REBIND_RETRIES";
/// `WARDEN_TEST_REBIND_RETRY_MS`: the pause of [`ServingSettings::retries`].
pub const TEST_REBIND_RETRY_MS: &str = "WARDEN_TEST_REBIND_RETRY_MS";

impl ServingSettings {
    /// These settings with the real-binary tests' hooks applied, each read
    /// once from `var` (the environment, at startup): they open the restart
    /// window wide enough to take the port in it and shorten the retries.
    /// Unset or unparsable hooks change nothing.
    pub fn with_test_hooks(mut self, var: impl Fn(&str) -> Option<String>) -> Self {
        let number = |name: &str| var(name).and_then(|v| v.trim().parse::<u32>().ok());
        if let Some(ms) = number(TEST_REBIND_PAUSE_MS) {
            self.rebind_pause = Duration::from_millis(u64::from(ms));
        }
        if let Some(n) = number(TEST_REBIND_RETRIES) {
            self.retries = RetrySchedule::new(n, self.retries.first_pause());
        }
        if let Some(ms) = number(TEST_REBIND_RETRY_MS) {
            let attempts = self.retries.attempts().unwrap_or(u32::MAX);
            self.retries = RetrySchedule::new(attempts, Duration::from_millis(u64::from(ms)));
        }
        self
    }
}

/// Why serving could not be restarted; the daemon then has no socket and
/// retries the bind (see the module doc).
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("could not rebind {addr} after {attempts} attempts: {source}")]
    Rebind {
        addr: SocketAddr,
        attempts: u32,
        source: BindError,
    },
    #[error("{0}")]
    Cors(#[from] CorsError),
    #[error("the daemon is no longer running")]
    Gone,
}

impl RestartError {
    /// What went wrong, without the attempt count (for the logs).
    fn cause(&self) -> String {
        match self {
            RestartError::Rebind { source, .. } => source.to_string(),
            other => other.to_string(),
        }
    }
}

/// What the recovery side can ask of the serving generation.
#[derive(Debug)]
pub enum ServingRequest {
    /// Stop serving and serve again on the same address.
    Restart {
        reply: oneshot::Sender<Result<ShutdownReport, RestartError>>,
    },
    /// Stop the daemon with the emergency-stop exit code.
    EmergencyStop { reason: String },
}

/// What the outside can read of the serving generation: the one set of
/// serving counters.
#[derive(Debug)]
struct ServingState {
    /// True while a generation is drained or no socket is bound (`/readyz`).
    draining: AtomicBool,
    /// Successful restarts (a restart, or a retry after a failed one).
    restarts: AtomicU64,
}

/// A handle to a [`Serving`]: send it [`ServingRequest`]s, read its state.
/// Cheap to clone; this is what the recovery actions and endpoints hold.
/// It holds no part of the hub, so it makes no reference cycle.
#[derive(Clone, Debug)]
pub struct ServingControl {
    tx: mpsc::Sender<ServingRequest>,
    state: Arc<ServingState>,
}

/// The receiving side of a [`ServingControl`], handed to [`Serving::new`].
#[derive(Debug)]
pub struct ServingRequests {
    rx: mpsc::Receiver<ServingRequest>,
    /// Kept so that more controls can be made and the channel never closes.
    tx: mpsc::Sender<ServingRequest>,
    state: Arc<ServingState>,
}

/// A control handle and the requests it sends, before anything serves (the
/// recovery side is built before the port is bound). Reads as draining until
/// the first generation serves.
pub fn channel() -> (ServingControl, ServingRequests) {
    let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
    let state = Arc::new(ServingState {
        draining: AtomicBool::new(true),
        restarts: AtomicU64::new(0),
    });
    let control = ServingControl {
        tx: tx.clone(),
        state: Arc::clone(&state),
    };
    (control, ServingRequests { rx, tx, state })
}

impl ServingControl {
    /// True while serving is drained for a restart or no socket is bound.
    pub fn is_draining(&self) -> bool {
        self.state.draining.load(Ordering::Acquire)
    }

    /// Successful in-process restarts so far.
    pub fn restarts(&self) -> u64 {
        self.state.restarts.load(Ordering::Relaxed)
    }

    /// Restarts serving; resolves when the new generation serves or the
    /// restart failed (the retries are then under way).
    pub async fn restart_service(&self) -> Result<ShutdownReport, RestartError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(ServingRequest::Restart { reply })
            .await
            .map_err(|_| RestartError::Gone)?;
        answer.await.map_err(|_| RestartError::Gone)?
    }

    /// Asks the daemon to stop with the emergency-stop exit code; reads as
    /// draining from now on.
    pub async fn emergency_stop(&self, reason: impl Into<String>) -> Result<(), RestartError> {
        self.state.draining.store(true, Ordering::Release);
        self.tx
            .send(ServingRequest::EmergencyStop {
                reason: reason.into(),
            })
            .await
            .map_err(|_| RestartError::Gone)
    }
}

/// What [`Serving::next_event`] waits for.
#[derive(Debug)]
pub enum ServingEvent {
    Request(ServingRequest),
    /// The next rebind retry is due.
    RetryDue,
}

/// Rebind retries under way after a failed restart.
#[derive(Debug)]
struct Retrying {
    done: u32,
    next: Instant,
}

/// The hub served on one address (see the module doc).
pub struct Serving<A: HubAdapter = LocalAdapter, L: Listen = TcpListen> {
    listen: L,
    hub: Hub<A>,
    addr: SocketAddr,
    services: Services,
    settings: ServingSettings,
    handle: Option<ServingHandle>,
    requests: ServingRequests,
    retrying: Option<Retrying>,
}

impl<A: HubAdapter, L: Listen> std::fmt::Debug for Serving<A, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("addr", &self.addr)
            .field("serving", &self.handle.is_some())
            .field("retrying", &self.retrying)
            .finish()
    }
}

impl<A: HubAdapter> Serving<A> {
    /// Serves `hub` with `services` on `listener`, bound to `addr`; `requests`
    /// come from the [`ServingControl`] of the same [`channel`].
    pub fn start(
        hub: Hub<A>,
        listener: TcpListener,
        addr: SocketAddr,
        services: Services,
        settings: ServingSettings,
        requests: ServingRequests,
    ) -> Result<Self, CorsError> {
        Serving::start_on(TcpListen, hub, listener, addr, services, settings, requests)
    }
}

impl<A: HubAdapter, L: Listen> Serving<A, L> {
    /// [`Serving::start`] on any [`Listen`]: `listener` was bound by
    /// `listen` to `addr`, and restarts bind there again through it.
    pub fn start_on(
        listen: L,
        hub: Hub<A>,
        listener: L::Listener,
        addr: SocketAddr,
        services: Services,
        settings: ServingSettings,
        requests: ServingRequests,
    ) -> Result<Self, CorsError> {
        let mut serving = Serving {
            listen,
            hub,
            addr,
            services,
            settings,
            handle: None,
            requests,
            retrying: None,
        };
        serving.serve(listener)?;
        Ok(serving)
    }

    pub fn hub(&self) -> &Hub<A> {
        &self.hub
    }

    /// The address served (rebound on restart).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn settings(&self) -> &ServingSettings {
        &self.settings
    }

    /// A handle for the recovery side.
    pub fn control(&self) -> ServingControl {
        ServingControl {
            tx: self.requests.tx.clone(),
            state: Arc::clone(&self.requests.state),
        }
    }

    /// True once the serving task ended by itself (a panic).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| h.is_finished())
    }

    fn serve(&mut self, listener: L::Listener) -> Result<(), CorsError> {
        let app = http::app(
            &self.hub,
            Arc::clone(&self.services.health),
            self.services.extra_routes.clone(),
        )?;
        self.handle = Some(self.listen.serve(listener, app, &self.hub));
        self.requests.state.draining.store(false, Ordering::Release);
        Ok(())
    }

    /// The next request, or the next rebind retry falling due. Cancel-safe:
    /// nothing is lost when another branch of a `select!` wins.
    pub async fn next_event(&mut self) -> ServingEvent {
        let retry_at = self.retrying.as_ref().map(|r| r.next);
        let retry_due = async move {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            // `requests` holds a sender, so the channel never closes.
            Some(request) = self.requests.rx.recv() => ServingEvent::Request(request),
            () = retry_due => ServingEvent::RetryDue,
        }
    }

    /// Acts on `event`; `Some(reason)` when the daemon must stop with the
    /// emergency-stop code (asked for, or the rebind retries ran out).
    pub async fn handle(&mut self, event: ServingEvent) -> Option<String> {
        match event {
            ServingEvent::Request(ServingRequest::Restart { reply }) => {
                let result = self.restart().await;
                // The requester may have given up (its action timed out).
                let _ = reply.send(result);
                None
            }
            ServingEvent::Request(ServingRequest::EmergencyStop { reason }) => Some(reason),
            ServingEvent::RetryDue => self.retry().await.err(),
        }
    }

    /// Stops the current generation and serves again on the same address.
    /// Its Socket.IO transports are cut first, without a CLOSE packet, so
    /// every stock client (python-socketio too) sees a transport error and
    /// reconnects. On error no socket is bound and the bounded retries are
    /// under way.
    pub async fn restart(&mut self) -> Result<ShutdownReport, RestartError> {
        let report = self.sever_and_stop().await;
        if !self.settings.rebind_pause.is_zero() {
            tokio::time::sleep(self.settings.rebind_pause).await;
        }
        match self.rebind(self.settings.rebind).await {
            Ok(()) => {
                self.retrying = None;
                tracing::info!(
                    "serving restarted on {} ({} clients closed)",
                    self.addr,
                    report.clients_closed
                );
                Ok(report)
            }
            Err(error) => {
                tracing::error!("could not rebind {}: {}", self.addr, error.cause());
                if self.retrying.is_none() {
                    self.retrying = Some(Retrying {
                        done: 0,
                        // The restart's own binds just failed: the
                        // first retry waits the schedule's first pause.
                        next: Instant::now() + self.settings.retries.first_pause(),
                    });
                }
                Err(error)
            }
        }
    }

    /// One rebind retry; `Err(reason)` once the retries ran out.
    async fn retry(&mut self) -> Result<(), String> {
        let Some(done) = self.retrying.as_ref().map(|r| r.done) else {
            return Ok(());
        };
        let schedule = self.settings.retries;
        let attempts = schedule.attempts().unwrap_or(u32::MAX);
        let attempt = done + 1;
        if schedule.pause_before(attempt).is_some() {
            match self.rebind(RetrySchedule::new(1, Duration::ZERO)).await {
                Ok(()) => {
                    self.retrying = None;
                    tracing::warn!(
                        "{}: restart_service rebind retry {attempt} succeeded; serving again",
                        log_markers::RECOVERY_ACTION
                    );
                    return Ok(());
                }
                Err(error) => tracing::warn!(
                    "{}: restart_service rebind retry {attempt}/{attempts} failed: {}",
                    log_markers::RECOVERY_ACTION,
                    error.cause()
                ),
            }
            if let Some(pause) = schedule.pause_before(attempt + 1) {
                self.retrying = Some(Retrying {
                    done: attempt,
                    next: Instant::now() + pause,
                });
                return Ok(());
            }
        }
        self.retrying = None;
        let reason =
            format!("the listening address could not be bound again after {attempts} retries");
        tracing::error!("{}: emergency_stop: {reason}", log_markers::RECOVERY_ACTION);
        Err(reason)
    }

    /// Binds the address on `schedule` and serves a fresh application.
    async fn rebind(&mut self, schedule: RetrySchedule) -> Result<(), RestartError> {
        let mut last = None;
        let mut attempt = 1;
        while let Some(pause) = schedule.pause_before(attempt) {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            match self.listen.bind(self.addr).await {
                Ok(listener) => {
                    self.serve(listener)?;
                    self.requests.state.restarts.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            attempt += 1;
        }
        Err(RestartError::Rebind {
            addr: self.addr,
            attempts: attempt - 1,
            source: last.unwrap_or(BindError::NoAddress {
                host: self.addr.to_string(),
            }),
        })
    }

    /// Drains the current generation, if any: every transport closed,
    /// in-flight requests given [`ServingSettings::drain_timeout`]. Reads as
    /// draining from now on, until something serves again.
    pub async fn stop(&mut self) -> ShutdownReport {
        self.requests.state.draining.store(true, Ordering::Release);
        match self.handle.take() {
            Some(handle) => match handle.shutdown(self.settings.drain_timeout).await {
                Ok(report) => report,
                Err(e) => {
                    tracing::error!("serving ended abnormally: {e}");
                    ShutdownReport {
                        clients_closed: 0,
                        forced: true,
                    }
                }
            },
            None => ShutdownReport {
                clients_closed: 0,
                forced: false,
            },
        }
    }

    /// Stops for good: no retry serves again afterwards. Like a restart, it
    /// cuts the transports first, so that stock clients (python-socketio
    /// too) reconnect when warden is started again.
    pub async fn shutdown(&mut self) -> ShutdownReport {
        self.retrying = None;
        self.sever_and_stop().await
    }

    /// Cuts every Socket.IO transport without a CLOSE packet, then drains.
    /// The clients closed are those connected when the cut came (a severed
    /// client may leave the hub before or after the drain counts it).
    async fn sever_and_stop(&mut self) -> ShutdownReport {
        let connected = usize::try_from(self.hub.stats().clients_connected()).unwrap_or(usize::MAX);
        self.hub.transports().sever_generation();
        let mut report = self.stop().await;
        report.clients_closed = report.clients_closed.max(connected);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_hooks_are_read_once_and_only_valid_numbers_count() {
        let hooks = |name: &str| match name {
            TEST_REBIND_PAUSE_MS => Some("2000".to_string()),
            TEST_REBIND_RETRIES => Some(" 3 ".to_string()),
            TEST_REBIND_RETRY_MS => Some("soon".to_string()),
            _ => None,
        };
        let s = ServingSettings::default().with_test_hooks(hooks);
        assert_eq!(s.rebind_pause, Duration::from_millis(2000));
        assert_eq!(s.retries, RetrySchedule::new(3, Duration::from_secs(1)));
        assert_eq!(s.rebind, ServingSettings::default().rebind);
        assert_eq!(
            ServingSettings::default().with_test_hooks(|_| None),
            ServingSettings::default()
        );
    }
}
