//! The daemon runner behind `warden start`: claim the PID file, bind the port,
//! serve the hub, wait for a signal or a request, shut down cleanly.
//!
//! Order of a start, and what a failure leaves behind:
//! 1. the configuration is loaded and validated by the caller (a bad config
//!    starts nothing and writes nothing);
//! 2. logging starts;
//! 3. the PID file is claimed ([`crate::daemon::pidfile`]): a stale file is
//!    taken over and its reason logged; a live owner means
//!    [`DaemonConflictError`] and nothing is touched;
//! 4. the port is bound; when it is taken, [`PortConflictError`] names the
//!    owner where the OS tells, and our PID file is released (removed);
//! 5. the hub serves until SIGTERM/SIGINT or an emergency stop; then every
//!    transport is closed (clients see "transport close"), the PID file is
//!    removed and the process exits. SIGHUP never stops it: it reloads the
//!    configuration (see `reload`), its handler installed before anything
//!    else so that a SIGHUP during startup is not fatal either.
//!
//! [`Daemon`] holds the parts that live as long as the process: the hub, the
//! serving generation, the PID guard and the services merged into the router
//! ([`Services`]: the health provider for `/status`, extra routes). The
//! recovery manager acts on it through a [`DaemonControl`] (restart serving on
//! the same address, emergency stop). [`spawn_detached`] is `--detach`.
//!
//! Not here: command-line parsing and exit-code policy (see `cli`), the
//! decisions about PID files (the core's lifecycle) and about recovery.

use std::ffi::OsString;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::sync::{mpsc, oneshot};

use crate::config::WardenConfig;
use crate::daemon::clock::{SystemClock, wall_now};
use crate::daemon::cluster::{self, Cluster, ClusterSettings};
use crate::daemon::healing;
use crate::daemon::http::{self, AuthToken, CorsError, HealthProvider};
use crate::daemon::hub::{Hub, HubAdapter, HubSettings};
use crate::daemon::logging::LevelControl;
use crate::daemon::pidfile::{LockOnly, PidFile, PidFileError, PidGuard, PidRecordDraft};
use crate::daemon::port;
use crate::daemon::reload::Reloader;
use crate::daemon::server::{self, BindError, ServingHandle, ShutdownReport, ShutdownSignal};
use crate::daemon::settings::{ConfigRequest, Effective};
use crate::daemon::sysprobe::SysinfoProbe;
use crate::errors::{
    ConflictingProcess, DaemonConflictError, PortConflictError, PortHolder, log_markers,
};
use crate::health::HealthStatus;
use crate::pidfile::PidRecord;
use crate::probe::{ProcessProbe, ProcessSnapshot};
use socketioxide::adapter::LocalAdapter;

/// How long a shutdown waits for in-flight HTTP requests after closing every
/// transport, before aborting them. Keeps "exit within a second".
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_millis(750);
/// Rebinding the same address after a restart: attempts and pause between.
pub const REBIND_ATTEMPTS: usize = 40;
pub const REBIND_PAUSE: Duration = Duration::from_millis(50);
/// Requests from the recovery side waiting to be handled.
pub const CONTROL_QUEUE: usize = 16;
/// How often the running daemon checks its PID file and serving task.
pub const SELF_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// `--detach`: how long the parent waits for the child to be ready.
pub const DETACH_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// `--detach`: the most of the child's startup output the parent keeps.
pub const DETACH_OUTPUT_LIMIT: usize = 256 * 1024;

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

/// The hub's settings from the configuration.
pub fn hub_settings(cfg: &WardenConfig) -> HubSettings {
    let server = &cfg.server;
    let mut s = HubSettings::new(
        PidRecord::server_id_for_port(server.port),
        env!("CARGO_PKG_VERSION"),
    );
    s.max_payload_bytes = server.max_payload_bytes;
    s.socket_buffer_packets = usize::try_from(server.socket_buffer_packets).unwrap_or(usize::MAX);
    s.event_history_size = usize::try_from(server.event_history_size).unwrap_or(usize::MAX);
    s.client_error_budget = server.client_error_budget;
    s.max_clients = usize::try_from(server.max_clients).unwrap_or(usize::MAX);
    s.event_history_max_bytes =
        usize::try_from(server.event_history_max_bytes).unwrap_or(usize::MAX);
    s.history_answer_max_bytes =
        usize::try_from(server.history_answer_max_bytes).unwrap_or(usize::MAX);
    s.inbound_queue_events = usize::try_from(server.inbound_queue_events).unwrap_or(usize::MAX);
    s.inbound_queue_bytes = usize::try_from(server.inbound_queue_bytes).unwrap_or(usize::MAX);
    s.slow_reader_timeout = server.slow_reader_timeout;
    s.client_error_window = server.client_error_window;
    s.cors_allowed_origins = server
        .enable_cors
        .then(|| server.cors_allowed_origins.clone());
    s.door.header_read_timeout = server.header_read_timeout;
    s.door.idle_timeout = server.idle_timeout;
    s.door.handshake_timeout = server.handshake_timeout;
    s.door.max_connections_per_ip =
        (server.max_connections_per_ip > 0).then_some(server.max_connections_per_ip);
    s.door.max_connections = Some(connection_cap(
        server.max_connections,
        crate::daemon::metrics::max_fds(),
    ));
    s.door.auth_token = server.auth_token.clone().map(AuthToken::new);
    s
}

/// Descriptors kept for the daemon's own use (log, PID file, listener,
/// Redis, checks) when the connection cap follows the descriptor limit.
pub const OWN_FD_RESERVE: u64 = 128;

/// `server.max_connections`, lowered to the soft descriptor limit less
/// [`OWN_FD_RESERVE`] when that is lower, so clients can never take the
/// descriptors the daemon needs (at least 16 either way).
pub fn connection_cap(configured: u32, fd_limit: Option<u64>) -> u32 {
    let by_limit = fd_limit
        .map(|limit| limit.saturating_sub(OWN_FD_RESERVE).max(16))
        .and_then(|cap| u32::try_from(cap).ok())
        .unwrap_or(u32::MAX);
    configured.min(by_limit)
}

/// Why the daemon did not start. Nothing was left behind: no PID file of
/// ours, no socket.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    DaemonConflict(Box<DaemonConflictError>),
    #[error("{0}")]
    PortConflict(Box<PortConflictError>),
    #[error("{0}")]
    PidFile(PidFileError),
    #[error("{0}")]
    Bind(BindError),
    #[error("{0}")]
    Cors(CorsError),
    #[error("internal error while starting: {0}")]
    Internal(String),
}

/// Why serving could not be restarted; the daemon then has no socket and the
/// caller decides (the recovery manager escalates).
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("could not rebind {addr} after {attempts} attempts: {source}")]
    Rebind {
        addr: SocketAddr,
        attempts: usize,
        source: BindError,
    },
    #[error("the previous serving generation ended abnormally: {0}")]
    Serve(#[from] server::ServeError),
    #[error("{0}")]
    Cors(#[from] CorsError),
    #[error("the daemon is no longer running")]
    Gone,
    /// The daemon tried and failed; the message is the daemon's error.
    #[error("{0}")]
    Failed(String),
}

/// What the recovery side can ask of the running daemon.
#[derive(Debug)]
pub enum DaemonRequest {
    /// Stop serving and serve again on the same address, keeping the PID lock.
    RestartService {
        reply: oneshot::Sender<Result<ShutdownReport, String>>,
    },
    /// Shut down cleanly and exit with the emergency-stop code.
    EmergencyStop { reason: String },
}

/// What the outside can read of the serving generation, shared between the
/// daemon and its control handles.
#[derive(Debug, Default)]
struct ServingState {
    /// True while a generation is drained or no socket is bound.
    draining: AtomicBool,
    /// Successful in-process restarts.
    restarts: AtomicU64,
}

/// A handle to send [`DaemonRequest`]s and read the serving state; cheap to
/// clone. This is what the recovery manager's actions hold.
#[derive(Clone, Debug)]
pub struct DaemonControl {
    tx: mpsc::Sender<DaemonRequest>,
    state: Arc<ServingState>,
}

impl DaemonControl {
    /// True while serving is drained for a restart or no socket is bound.
    pub fn is_draining(&self) -> bool {
        self.state.draining.load(Ordering::Acquire)
    }

    /// Successful in-process restarts so far.
    pub fn restarts(&self) -> u64 {
        self.state.restarts.load(Ordering::Relaxed)
    }

    /// Restarts serving; resolves when the new generation serves.
    pub async fn restart_service(&self) -> Result<ShutdownReport, RestartError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(DaemonRequest::RestartService { reply })
            .await
            .map_err(|_| RestartError::Gone)?;
        match answer.await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(message)) => Err(RestartError::Failed(message)),
            Err(_) => Err(RestartError::Gone),
        }
    }

    /// Asks the daemon to stop with the emergency-stop exit code.
    pub async fn emergency_stop(&self, reason: impl Into<String>) -> Result<(), RestartError> {
        self.tx
            .send(DaemonRequest::EmergencyStop {
                reason: reason.into(),
            })
            .await
            .map_err(|_| RestartError::Gone)
    }
}

/// How the daemon's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonExit {
    Signal(ShutdownSignal),
    EmergencyStop { reason: String },
}

/// The running daemon.
pub struct Daemon<A: HubAdapter = LocalAdapter> {
    config: WardenConfig,
    hub: Hub<A>,
    addr: SocketAddr,
    serving: Option<ServingHandle>,
    pid_guard: PidGuard,
    services: Services,
    probe: Arc<SysinfoProbe>,
    control_tx: mpsc::Sender<DaemonRequest>,
    control_rx: mpsc::Receiver<DaemonRequest>,
    state: Arc<ServingState>,
    /// Set once the PID file was found replaced, so it is reported once.
    pid_file_lost: bool,
    /// SIGHUP, and what it reloads (see [`Daemon::reload_on_hangup`]).
    hangup: Option<tokio::signal::unix::Signal>,
    reloader: Option<Reloader>,
}

/// What a SIGHUP reload reads again: the original invocation's request, and
/// the logging level control.
#[derive(Clone, Debug, Default)]
pub struct ReloadSource {
    pub request: ConfigRequest,
    pub level: Option<LevelControl>,
    /// `WARDEN_DEBUG` asked for debug at start (kept across reloads).
    pub env_debug: bool,
}

/// Registers the SIGHUP handler (replacing the default action, which ends
/// the process).
pub fn install_hangup() -> io::Result<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
}

/// The next SIGHUP, or never when none is registered.
async fn next_hangup(hangup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

impl<A: HubAdapter> std::fmt::Debug for Daemon<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("addr", &self.addr)
            .field("pid_file", &self.pid_guard.path())
            .field("serving", &self.serving.is_some())
            .finish()
    }
}

impl<A: HubAdapter> Daemon<A> {
    /// Claims the PID file, binds the port and serves `hub` with `services`.
    pub async fn start(
        effective: &Effective,
        hub: Hub<A>,
        services: Services,
    ) -> Result<Daemon<A>, StartError> {
        let config = effective.config.clone();
        let host = config.server.host.clone();
        let port = config.server.port;
        let state_dir = effective.state_dir.clone();
        let probe = Arc::new(SysinfoProbe::new());

        let claim_probe = Arc::clone(&probe);
        let draft = PidRecordDraft::new(&host, port);
        let claim_dir = state_dir.clone();
        let validation = config.pid_validation.clone();
        let claimed = tokio::task::spawn_blocking(move || {
            let inspect = validation.enhanced && validation.use_psutil;
            let lock_only = LockOnly(claim_probe.as_ref());
            let probe: &dyn ProcessProbe = if inspect {
                claim_probe.as_ref()
            } else {
                &lock_only
            };
            PidFile::claim_sync_later(&claim_dir, port, draft, probe, validation.lock_timeout)
        })
        .await
        .map_err(|e| StartError::Internal(format!("the PID file claim panicked: {e}")))?;
        let (pid_guard, pending_sync) = match claimed {
            Ok((guard, stale, pending)) => {
                if let Some(reason) = stale {
                    tracing::warn!(
                        "{}: removed a stale PID file {} and took it over: {reason}",
                        log_markers::PID_VALIDATION,
                        guard.path().display()
                    );
                }
                tracing::info!(
                    "{}: PID file {} locked and written (pid {})",
                    log_markers::PID_VALIDATION,
                    guard.path().display(),
                    guard.record().pid
                );
                (guard, pending)
            }
            Err(PidFileError::Conflict {
                path,
                port,
                pid,
                record,
                process,
            }) => {
                let err = DaemonConflictError {
                    port,
                    existing_pid: pid,
                    server_id: record.as_ref().map(|r| r.server_id.clone()),
                    pid_file: path,
                    process: process.as_deref().map(conflicting_process),
                    observed_at: wall_now(),
                };
                tracing::error!(
                    "{}: another warden holds the PID file of port {port} (pid {})",
                    log_markers::PID_VALIDATION,
                    pid.map_or_else(|| "unknown".to_string(), |p| p.to_string())
                );
                return Err(StartError::DaemonConflict(Box::new(err)));
            }
            Err(other) => {
                tracing::error!("{}: {other}", log_markers::PID_VALIDATION);
                return Err(StartError::PidFile(other));
            }
        };

        let listener = match bind_exclusive(&host, port).await {
            Ok(listener) => listener,
            Err(error) => {
                release_logged(&pid_guard);
                return Err(match error {
                    BindError::AddrInUse { .. } => {
                        let owner = tokio::task::spawn_blocking(move || port::port_owner(port))
                            .await
                            .ok()
                            .flatten();
                        let err = PortConflictError {
                            host: host.clone(),
                            port,
                            conflicting_process: owner.map(|o| PortHolder {
                                pid: o.pid,
                                cmdline: (!o.cmdline.is_empty()).then(|| o.command()),
                                name: o.name,
                            }),
                        };
                        tracing::error!("port {port} on {host} is already in use");
                        StartError::PortConflict(Box::new(err))
                    }
                    other => {
                        tracing::error!("{other}");
                        StartError::Bind(other)
                    }
                });
            }
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => {
                release_logged(&pid_guard);
                return Err(StartError::Internal(format!(
                    "cannot read the bound address: {e}"
                )));
            }
        };
        let app = match http::app(
            &hub,
            Arc::clone(&services.health),
            services.extra_routes.clone(),
        ) {
            Ok(app) => app,
            Err(e) => {
                release_logged(&pid_guard);
                return Err(StartError::Cors(e));
            }
        };
        let serving = server::serve_tcp(listener, app, &hub);
        // Serving first, then the PID record's fsync (see `claim_sync_later`).
        tokio::task::spawn_blocking(move || {
            if let Err(e) = pending_sync.run() {
                tracing::warn!("{}: {e}", log_markers::PID_VALIDATION);
            }
        });
        tracing::info!(
            "warden {} serving Socket.IO and HTTP on {addr} (host {host}, pid {}, server id {})",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            hub.settings().server_id
        );
        if let Some(warning) =
            server::exposure_warning(addr, hub.settings().door.auth_token.is_some())
        {
            tracing::warn!("{warning}");
        }
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        Ok(Daemon {
            config,
            hub,
            addr,
            serving: Some(serving),
            pid_guard,
            services,
            probe,
            control_tx,
            control_rx,
            state: Arc::new(ServingState::default()),
            pid_file_lost: false,
            hangup: None,
            reloader: None,
        })
    }

    /// From now on, SIGHUP (`hangup`, from [`install_hangup`]) runs
    /// `reloader` and logs what it did; without a reloader SIGHUP is logged
    /// and ignored.
    pub fn reload_on_hangup(
        &mut self,
        hangup: tokio::signal::unix::Signal,
        reloader: Option<Reloader>,
    ) {
        self.hangup = Some(hangup);
        self.reloader = reloader;
    }

    fn on_hangup(&mut self) {
        match &mut self.reloader {
            Some(reloader) => {
                let outcome = reloader.reload();
                match outcome {
                    crate::daemon::reload::ReloadOutcome::Refused { .. } => {
                        tracing::error!("received SIGHUP: {}", outcome.describe());
                    }
                    _ => tracing::info!("received SIGHUP: {}", outcome.describe()),
                }
            }
            None => tracing::warn!("received SIGHUP: no configuration to reload; ignored"),
        }
    }

    pub fn hub(&self) -> &Hub<A> {
        &self.hub
    }

    pub fn config(&self) -> &WardenConfig {
        &self.config
    }

    /// The address being served (rebound on restart).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid_guard(&self) -> &PidGuard {
        &self.pid_guard
    }

    /// The process probe the daemon uses (shared with health checkers).
    pub fn probe(&self) -> &Arc<SysinfoProbe> {
        &self.probe
    }

    /// A handle for the recovery side.
    pub fn control(&self) -> DaemonControl {
        DaemonControl {
            tx: self.control_tx.clone(),
            state: Arc::clone(&self.state),
        }
    }

    /// Stops the current serving generation (clients see "transport close")
    /// and serves again on the same address; the PID lock is kept
    /// throughout. On error the daemon has no socket.
    pub async fn restart_serving(&mut self) -> Result<ShutdownReport, RestartError> {
        self.state.draining.store(true, Ordering::Release);
        self.hub.transports().sever_generation();
        let report = match self.serving.take() {
            Some(handle) => handle.shutdown(SHUTDOWN_DRAIN_TIMEOUT).await?,
            None => ShutdownReport {
                clients_closed: 0,
                forced: false,
            },
        };
        // Test hook (the self-healing tests take the port in this window to
        // force a failed rebind through this real path); zero when unset.
        if let Some(pause) = std::env::var("WARDEN_TEST_REBIND_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let mut last = None;
        for attempt in 0..REBIND_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(REBIND_PAUSE).await;
            }
            match server::bind(self.addr).await {
                Ok(listener) => {
                    let app = http::app(
                        &self.hub,
                        Arc::clone(&self.services.health),
                        self.services.extra_routes.clone(),
                    )?;
                    self.serving = Some(server::serve_tcp(listener, app, &self.hub));
                    self.state.draining.store(false, Ordering::Release);
                    self.state.restarts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        "serving restarted on {} ({} clients closed)",
                        self.addr,
                        report.clients_closed
                    );
                    return Ok(report);
                }
                Err(e) => last = Some(e),
            }
        }
        let source = last.unwrap_or(BindError::NoAddress {
            host: self.addr.to_string(),
        });
        tracing::error!("could not rebind {}: {source}", self.addr);
        Err(RestartError::Rebind {
            addr: self.addr,
            attempts: REBIND_ATTEMPTS,
            source,
        })
    }

    /// Serves until a signal or an emergency stop, handling restart requests.
    /// Every [`SELF_CHECK_INTERVAL`] it also checks its own parts (see
    /// [`Daemon::self_check`]). Does not shut down: call [`Daemon::shutdown`]
    /// next.
    pub async fn run_until_stopped(&mut self, signals: &mut server::ShutdownSignals) -> DaemonExit {
        let mut tick = tokio::time::interval(SELF_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                signal = signals.recv() => {
                    tracing::info!("received {signal:?}: shutting down");
                    return DaemonExit::Signal(signal);
                }
                request = self.control_rx.recv() => match request {
                    // We hold a sender ourselves, so the channel never closes.
                    None => continue,
                    Some(DaemonRequest::RestartService { reply }) => {
                        let result = self.restart_serving().await.map_err(|e| e.to_string());
                        let _ = reply.send(result);
                    }
                    Some(DaemonRequest::EmergencyStop { reason }) => {
                        tracing::error!("emergency stop: {reason}");
                        return DaemonExit::EmergencyStop { reason };
                    }
                },
                Some(()) = next_hangup(&mut self.hangup) => self.on_hangup(),
                _ = tick.tick() => self.self_check().await,
            }
        }
    }

    /// The runner's own watch, independent of the health monitor: the PID
    /// file must still be ours (reported once if it was removed or
    /// replaced, since a second instance could then start on this port), and
    /// a serving task that ended by itself (a panic) is served again.
    pub async fn self_check(&mut self) {
        if !self.pid_file_lost
            && let Err(e) = self.pid_guard.verify()
        {
            self.pid_file_lost = true;
            tracing::error!("{}: {e}", log_markers::PID_VALIDATION);
        }
        if self.serving.as_ref().is_some_and(|s| s.is_finished()) {
            tracing::error!(
                "the serving task ended unexpectedly: serving again on {}",
                self.addr
            );
            if let Err(e) = self.restart_serving().await {
                tracing::error!("could not serve again: {e}");
            }
        }
    }

    /// Closes every transport, stops serving and removes the PID file.
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.state.draining.store(true, Ordering::Release);
        let report = match self.serving.take() {
            Some(handle) => match handle.shutdown(SHUTDOWN_DRAIN_TIMEOUT).await {
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
        };
        release_logged(&self.pid_guard);
        tracing::info!(
            "stopped: {} clients closed{}",
            report.clients_closed,
            if report.forced {
                ", in-flight requests aborted"
            } else {
                ""
            }
        );
        report
    }
}

fn release_logged(guard: &PidGuard) {
    match guard.release() {
        Ok(true) => tracing::info!(
            "{}: PID file {} removed",
            log_markers::PID_VALIDATION,
            guard.path().display()
        ),
        Ok(false) => tracing::warn!(
            "{}: PID file {} was no longer ours; left untouched",
            log_markers::PID_VALIDATION,
            guard.path().display()
        ),
        Err(e) => tracing::error!("{}: {e}", log_markers::PID_VALIDATION),
    }
}

fn conflicting_process(s: &ProcessSnapshot) -> ConflictingProcess {
    ConflictingProcess {
        name: s.name.clone(),
        status: s.status.as_str().to_string(),
        started: Some(s.start_time),
        memory_mb: Some(s.memory_mb()),
        cmdline: (!s.cmdline.is_empty()).then(|| s.cmdline.join(" ")),
    }
}

/// Binds `host:port` for serving. Every address `host` resolves to is tried:
/// if any of them is in use, the port counts as taken (a client resolving
/// `localhost` could otherwise reach the other program), so that
/// `AddrInUse` is returned. Otherwise the first address bound is served.
pub async fn bind_exclusive(host: &str, port: u16) -> Result<tokio::net::TcpListener, BindError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| BindError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    let mut bound = Vec::new();
    let mut first_error = None;
    for addr in addrs {
        match server::bind(addr).await {
            Ok(listener) => bound.push(listener),
            Err(e @ BindError::AddrInUse { .. }) => return Err(e),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let mut bound = bound.into_iter();
    match bound.next() {
        Some(listener) => Ok(listener),
        None => Err(first_error.unwrap_or(BindError::NoAddress {
            host: host.to_owned(),
        })),
    }
}

/// Runs the daemon in this process until it stops; returns how it ended.
/// `on_ready` runs once the daemon serves (the detached child uses it to
/// let go of its startup output).
///
/// With `cluster.redis_url` set, the hub uses the Redis adapter (see
/// `cluster.rs`); Redis being unreachable does not stop the start.
pub async fn run(
    effective: &Effective,
    reload: ReloadSource,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<DaemonExit, StartError> {
    let hangup = install_hangup()
        .map_err(|e| StartError::Internal(format!("cannot install signal handlers: {e}")))?;
    let signals = server::ShutdownSignals::install()
        .map_err(|e| StartError::Internal(format!("cannot install signal handlers: {e}")))?;
    let hangup = (hangup, reload);
    let clock = Arc::new(SystemClock::new());
    let settings = hub_settings(&effective.config);
    match ClusterSettings::from_config(&effective.config, &cluster::hostname()) {
        None => {
            let hub = Hub::new(settings, clock);
            let prepared =
                healing::Prepared::new(&effective.config, &hub, Arc::new(SysinfoProbe::new()));
            run_hub(effective, hub, prepared, signals, hangup, on_ready).await
        }
        Some(cluster_settings) => {
            let cluster = Cluster::start(cluster_settings, clock.clone())
                .map_err(|e| StartError::Internal(format!("cannot start cluster mode: {e}")))?;
            let hub = cluster.hub(settings, clock);
            let prepared = healing::Prepared::clustered(
                &effective.config,
                &hub,
                Arc::new(SysinfoProbe::new()),
                cluster.clone(),
            );
            let exit = run_hub(effective, hub, prepared, signals, hangup, on_ready).await;
            cluster.shutdown().await;
            exit
        }
    }
}

async fn run_hub<A: HubAdapter>(
    effective: &Effective,
    hub: Hub<A>,
    prepared: Result<healing::Prepared, healing::HealingError>,
    mut signals: server::ShutdownSignals,
    (hangup, reload): (tokio::signal::unix::Signal, ReloadSource),
    on_ready: impl FnOnce(SocketAddr),
) -> Result<DaemonExit, StartError> {
    let prepared =
        prepared.map_err(|e| StartError::Internal(format!("cannot set up self-healing: {e}")))?;
    let services = Services {
        health: prepared.health_provider(),
        extra_routes: prepared.routes(),
    };
    let mut daemon = Daemon::start(effective, hub, services).await?;
    let reloader = Reloader::new(
        reload.request,
        &effective.config,
        prepared.live.clone(),
        reload.level.unwrap_or_else(LevelControl::none),
        reload.env_debug,
    );
    daemon.reload_on_hangup(hangup, Some(reloader));
    let healing = prepared.activate(
        daemon.local_addr(),
        Arc::new(healing::RunnerControl::new(
            daemon.control(),
            healing::RebindRetry::default(),
        )),
    );
    on_ready(daemon.local_addr());
    let exit = daemon.run_until_stopped(&mut signals).await;
    if matches!(exit, DaemonExit::EmergencyStop { .. }) {
        // Clients reconnect when a supervisor starts warden again.
        daemon.hub().transports().sever_generation();
    }
    healing.shutdown().await;
    daemon.shutdown().await;
    Ok(exit)
}

/// The child's side of `--detach`: once serving, stdin, stdout and stderr
/// go to /dev/null, which closes the pipe the parent reads (its signal that
/// startup is over). Logging goes on into the log file.
pub fn detach_stdio() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 on two valid descriptors (ours, and 0/1/2) has no
        // memory-safety preconditions; it atomically replaces fd.
        if unsafe { libc::dup2(devnull.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What became of a detached start.
#[derive(Debug)]
pub enum DetachOutcome {
    /// The child serves: its pid.
    Ready { pid: u32, output: String },
    /// The child exited during startup: its exit code and what it printed.
    Failed { code: i32, output: String },
    /// The child did not become ready in time; it was left running.
    NotReady { pid: u32, output: String },
}

/// `--detach`: runs `exe child_args` in a new session with its stderr on a
/// pipe, and waits (bounded) until either the child exits (startup failed)
/// or closes the pipe (it serves), its PID file names it and `host:port`
/// accepts connections.
pub fn spawn_detached(
    exe: PathBuf,
    child_args: Vec<OsString>,
    effective: &Effective,
) -> io::Result<DetachOutcome> {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(exe);
    command
        .args(child_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setsid(2), which is async-signal-safe and touches no Rust state.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let pid = child.id();
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| io::Error::other("the child's stderr pipe is missing"))?;
    let reader = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = DETACH_OUTPUT_LIMIT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    });
    let deadline = Instant::now() + DETACH_READY_TIMEOUT;
    let mut output = None;
    let mut reader = Some(reader);
    loop {
        if let Some(status) = child.try_wait()? {
            let output = match reader.take() {
                Some(r) => r.join().unwrap_or_default(),
                None => output.unwrap_or_default(),
            };
            return Ok(DetachOutcome::Failed {
                code: status.code().unwrap_or(1),
                output,
            });
        }
        if reader.as_ref().is_some_and(|r| r.is_finished()) {
            output = reader.take().map(|r| r.join().unwrap_or_default());
        }
        if output.is_some() && child_ready(pid, effective) {
            return Ok(DetachOutcome::Ready {
                pid,
                output: output.unwrap_or_default(),
            });
        }
        if Instant::now() >= deadline {
            return Ok(DetachOutcome::NotReady {
                pid,
                output: output.unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The PID file names `pid` and is locked, and the port accepts.
fn child_ready(pid: u32, effective: &Effective) -> bool {
    let named = matches!(
        PidFile::read(&effective.state_dir, effective.port()),
        Ok(Some((content, true))) if content.pid() == Some(pid)
    );
    named && port_accepts(effective.host(), effective.port())
}

/// Whether something accepts TCP connections on `host:port`.
pub fn port_accepts(host: &str, port: u16) -> bool {
    use std::net::ToSocketAddrs;
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|addr| TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok())
}
