//! The daemon runner behind `warden start`: claim the PID file, bind the port,
//! serve the hub, wait for a signal or a request, shut down cleanly.
//!
//! Order of a start, and what a failure leaves behind:
//! 1. the configuration is loaded and validated by the caller (a bad config
//!    starts nothing and writes nothing);
//! 2. logging starts;
//! 3. the PID file is claimed ([`crate::daemon::os::pidfile`]): a stale file is
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
//! [`Daemon`] holds the parts that live as long as the process: the serving
//! generation ([`Serving`], with the hub and the services merged into the
//! router) and the PID guard. The recovery manager acts on it through a
//! [`ServingControl`] (restart serving on the same address, emergency stop),
//! whose requests the run loop hands to the serving generation.
//! [`spawn_detached`] is `--detach`.
//!
//! Not here: command-line parsing and exit-code policy (see `cli`), the
//! decisions about PID files (the core's lifecycle) and about recovery.

use std::ffi::OsString;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::WardenConfig;
use crate::daemon::cluster::{self, Cluster, ClusterSettings};
use crate::daemon::healing::assemble;
use crate::daemon::healing::reload::Reloader;
use crate::daemon::hub::door::AuthToken;
use crate::daemon::hub::http::CorsError;
use crate::daemon::hub::{Hub, HubAdapter, HubSettings};
use crate::daemon::os::clock::{SystemClock, wall_now};
use crate::daemon::os::logging::LevelControl;
use crate::daemon::os::pidfile::{
    LockOnly, PendingSync, PidFile, PidFileError, PidGuard, PidRecordDraft,
};
use crate::daemon::os::port;
use crate::daemon::os::settings::{ConfigRequest, Effective};
use crate::daemon::os::sysprobe::SysinfoProbe;
use crate::daemon::runner::memory;
use crate::daemon::serve::server::{self, BindError, ShutdownReport, ShutdownSignal};
use crate::daemon::serve::serving::{
    self, Services, Serving, ServingControl, ServingRequests, ServingSettings,
};
use crate::errors::{
    ConflictingProcess, DaemonConflictError, PortConflictError, PortHolder, log_markers,
};
use crate::pidfile::PidRecord;
use crate::probe::{ProcessProbe, ProcessSnapshot};
use crate::sessions::SessionLimits;
use socketioxide::adapter::LocalAdapter;

/// How often the running daemon checks its PID file and serving task.
pub const SELF_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// `--detach`: how long the parent waits for the child to be ready.
pub const DETACH_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// `--detach`: the most of the child's startup output the parent keeps.
pub const DETACH_OUTPUT_LIMIT: usize = 256 * 1024;

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
    s.door.body_read_timeout = server.body_read_timeout;
    s.door.idle_timeout = server.idle_timeout;
    s.door.handshake_timeout = server.handshake_timeout;
    s.door.max_connections_per_ip =
        (server.max_connections_per_ip > 0).then_some(server.max_connections_per_ip);
    s.door.max_connections = Some(connection_cap(
        server.max_connections,
        crate::daemon::os::sysprobe::max_fds(),
    ));
    s.door.auth_token = server.auth_token.clone().map(AuthToken::new);
    // The machine's own name is how people on the network reach a daemon
    // listening beyond loopback.
    let machine = cluster::machine_hostname();
    s.door.host_names = std::iter::once(server.host.clone())
        .chain(machine)
        .chain(server.allowed_hosts.iter().cloned())
        .collect();
    // In cluster mode the cluster runs in ordered mode so that offsets mean
    // the same on every node (cluster/ordered.rs).
    let recovery = &cfg.connection_state_recovery;
    s.recovery = recovery.enabled.then(|| SessionLimits {
        max_disconnection: recovery.max_disconnection_duration,
        max_sessions: usize::try_from(recovery.max_sessions).unwrap_or(usize::MAX),
        // A replay must fit in a fresh socket's buffer, with room to spare.
        max_replay_events: s.socket_buffer_packets / 2,
    });
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

/// How the daemon's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonExit {
    Signal(ShutdownSignal),
    EmergencyStop { reason: String },
}

/// The running daemon.
pub struct Daemon<A: HubAdapter = LocalAdapter> {
    config: WardenConfig,
    serving: Serving<A>,
    pid_guard: PidGuard,
    probe: Arc<SysinfoProbe>,
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
            .field("pid_file", &self.pid_guard.path())
            .field("serving", &self.serving)
            .finish()
    }
}

impl<A: HubAdapter> Daemon<A> {
    /// Claims the PID file, binds the port and serves `hub` with `services`,
    /// with the default [`ServingSettings`] and a fresh control channel.
    pub async fn start(
        effective: &Effective,
        hub: Hub<A>,
        services: Services,
    ) -> Result<Daemon<A>, StartError> {
        let (_, requests) = serving::channel();
        Daemon::start_with(
            effective,
            hub,
            services,
            ServingSettings::default(),
            requests,
        )
        .await
    }

    /// [`Daemon::start`] with `settings`, taking requests from the
    /// [`ServingControl`] of `requests`' channel (the recovery side holds it).
    pub async fn start_with(
        effective: &Effective,
        hub: Hub<A>,
        services: Services,
        settings: ServingSettings,
        requests: ServingRequests,
    ) -> Result<Daemon<A>, StartError> {
        let config = effective.config.clone();
        let host = config.server.host.clone();
        let port = config.server.port;
        let probe = Arc::new(SysinfoProbe::new());
        let (pid_guard, pending_sync) = claim_pid_file(effective, Arc::clone(&probe)).await?;
        // From here on, a failed start releases the claim (on drop).
        let claim = ReleaseOnFailure(Some(pid_guard));
        let listener = bind_or_conflict(&host, port).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Internal(format!("cannot read the bound address: {e}")))?;
        let serving = Serving::start(hub, listener, addr, services, settings, requests)
            .map_err(StartError::Cors)?;
        let pid_guard = claim.keep();
        let hub = serving.hub();
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
        Ok(Daemon {
            config,
            serving,
            pid_guard,
            probe,
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
                    crate::daemon::healing::reload::ReloadOutcome::Refused { .. } => {
                        tracing::error!("received SIGHUP: {}", outcome.describe());
                    }
                    _ => tracing::info!("received SIGHUP: {}", outcome.describe()),
                }
            }
            None => tracing::warn!("received SIGHUP: no configuration to reload; ignored"),
        }
    }

    pub fn hub(&self) -> &Hub<A> {
        self.serving.hub()
    }

    pub fn config(&self) -> &WardenConfig {
        &self.config
    }

    /// The address being served (rebound on restart).
    pub fn local_addr(&self) -> SocketAddr {
        self.serving.addr()
    }

    pub fn pid_guard(&self) -> &PidGuard {
        &self.pid_guard
    }

    /// The process probe the daemon uses (shared with health checkers).
    pub fn probe(&self) -> &Arc<SysinfoProbe> {
        &self.probe
    }

    /// A handle for the recovery side.
    pub fn control(&self) -> ServingControl {
        self.serving.control()
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
                event = self.serving.next_event() => {
                    if let Some(reason) = self.serving.handle(event).await {
                        tracing::error!("emergency stop: {reason}");
                        return DaemonExit::EmergencyStop { reason };
                    }
                }
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
        if self.serving.is_finished() {
            tracing::error!(
                "the serving task ended unexpectedly: serving again on {}",
                self.serving.addr()
            );
            if let Err(e) = self.serving.restart().await {
                tracing::error!("could not serve again: {e}");
            }
        }
    }

    /// Closes every transport, stops serving and removes the PID file.
    pub async fn shutdown(mut self) -> ShutdownReport {
        let report = self.serving.shutdown().await;
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

/// `start`'s port conflict, naming the port's holder when it is known.
fn port_conflict(host: &str, port: u16, holder: Option<PortHolder>) -> StartError {
    StartError::PortConflict(Box::new(PortConflictError {
        host: host.to_string(),
        port,
        conflicting_process: holder,
    }))
}

/// Claims the PID file of `effective`'s port on a blocking thread, as the
/// config's `pid_validation` says (a lock-only probe when process
/// inspection is off), and logs what it found.
async fn claim_pid_file(
    effective: &Effective,
    probe: Arc<SysinfoProbe>,
) -> Result<(PidGuard, PendingSync), StartError> {
    let config = &effective.config;
    let (host, port) = (config.server.host.clone(), config.server.port);
    let draft = PidRecordDraft {
        invocation: Some(effective.invocation.clone()),
        ..PidRecordDraft::new(&host, port)
    };
    let state_dir = effective.state_dir.clone();
    let validation = config.pid_validation.clone();
    let claimed = tokio::task::spawn_blocking(move || {
        let inspect = validation.enhanced && validation.use_psutil;
        let lock_only = LockOnly(probe.as_ref());
        let probe: &dyn ProcessProbe = if inspect { probe.as_ref() } else { &lock_only };
        PidFile::claim_sync_later(&state_dir, port, draft, probe, validation.lock_timeout)
    })
    .await
    .map_err(|e| StartError::Internal(format!("the PID file claim panicked: {e}")))?;
    match claimed {
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
            Ok((guard, pending))
        }
        Err(conflict @ PidFileError::Conflict { .. }) => Err(claim_conflict(&host, conflict)),
        Err(other) => {
            tracing::error!("{}: {other}", log_markers::PID_VALIDATION);
            Err(StartError::PidFile(other))
        }
    }
}

/// `start`'s error for a PID file another process holds: another warden
/// (a daemon conflict), or a bare-pid file naming the program that serves
/// the port with the lock free (a port conflict naming that program; the
/// file is left as it is, it may be the original server's).
fn claim_conflict(host: &str, conflict: PidFileError) -> StartError {
    let PidFileError::Conflict {
        path,
        port,
        pid,
        record,
        process,
        serves_port,
    } = conflict
    else {
        return StartError::PidFile(conflict);
    };
    if record.is_none()
        && serves_port
        && let (Some(pid), Some(process)) = (pid, process.as_deref())
    {
        tracing::error!(
            "{}: port {port} is served by pid {pid}, which the bare-pid PID file {} \
             names; it holds no warden lock",
            log_markers::PID_VALIDATION,
            path.display()
        );
        let holder = PortHolder {
            pid,
            name: process.name.clone(),
            cmdline: (!process.cmdline.is_empty()).then(|| process.command_line()),
        };
        return port_conflict(host, port, Some(holder));
    }
    tracing::error!(
        "{}: another warden holds the PID file of port {port} (pid {})",
        log_markers::PID_VALIDATION,
        pid.map_or_else(|| "unknown".to_string(), |p| p.to_string())
    );
    StartError::DaemonConflict(Box::new(DaemonConflictError {
        port,
        existing_pid: pid,
        server_id: record.as_ref().map(|r| r.server_id.clone()),
        pid_file: path,
        process: process.as_deref().map(conflicting_process),
        observed_at: wall_now(),
    }))
}

/// Binds `host:port` for `start`; a port in use is a port conflict naming
/// its holder when /proc tells it.
async fn bind_or_conflict(host: &str, port: u16) -> Result<tokio::net::TcpListener, StartError> {
    match bind_exclusive(host, port).await {
        Ok(listener) => Ok(listener),
        Err(BindError::AddrInUse { .. }) => {
            let owner = tokio::task::spawn_blocking(move || port::port_owner(port))
                .await
                .ok()
                .flatten();
            tracing::error!("port {port} on {host} is already in use");
            let holder = owner.map(|o| PortHolder {
                pid: o.pid,
                cmdline: (!o.cmdline.is_empty()).then(|| o.command()),
                name: o.name,
            });
            Err(port_conflict(host, port, holder))
        }
        Err(other) => {
            tracing::error!("{other}");
            Err(StartError::Bind(other))
        }
    }
}

/// A PID claim that is released (file removed, logged) if the start fails
/// before [`ReleaseOnFailure::keep`]: every early return of a start lets go
/// of the claim in one place.
struct ReleaseOnFailure(Option<PidGuard>);

impl ReleaseOnFailure {
    /// The start succeeded: the daemon keeps the claim.
    fn keep(mut self) -> PidGuard {
        // Invariant: the guard is only taken here, once, consuming self.
        self.0.take().expect("a claim is kept once")
    }
}

impl Drop for ReleaseOnFailure {
    fn drop(&mut self) {
        if let Some(guard) = self.0.take() {
            release_logged(&guard);
        }
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
    // The test hooks are read here, once; nothing later reads the environment.
    let serving = ServingSettings::default().with_test_hooks(|name| std::env::var(name).ok());
    let config = &effective.config;
    match ClusterSettings::from_config(config, &cluster::hostname()) {
        None => {
            let hub = Hub::new(settings, clock);
            let started = start_healing(effective, hub, serving, |hub, control| {
                assemble::Prepared::new(config, hub, Arc::new(SysinfoProbe::new()), control)
            })
            .await?;
            run_started(started, signals, hangup, on_ready).await
        }
        Some(cluster_settings) => {
            let cluster = Cluster::start(cluster_settings, clock.clone())
                .map_err(|e| StartError::Internal(format!("cannot start cluster mode: {e}")))?;
            let hub = cluster.hub(settings, clock);
            let probe = Arc::new(SysinfoProbe::new());
            let node = cluster.clone();
            let started = start_healing(effective, hub, serving, |hub, control| {
                assemble::Prepared::clustered(config, hub, probe, node, control)
            })
            .await;
            let exit = match started {
                Ok(started) => run_started(started, signals, hangup, on_ready).await,
                Err(e) => Err(e),
            };
            cluster.shutdown().await;
            exit
        }
    }
}

/// The daemon serving `hub`, with the self-healing stack `prepare` builds
/// around the daemon's [`ServingControl`] checking and recovering: what
/// [`run`] runs until a stop (the in-process tests start it the same way).
pub async fn start_healing<A: HubAdapter>(
    effective: &Effective,
    hub: Hub<A>,
    settings: ServingSettings,
    prepare: impl FnOnce(&Hub<A>, ServingControl) -> Result<assemble::Prepared, assemble::HealingError>,
) -> Result<(Daemon<A>, assemble::Healing), StartError> {
    let (control, requests) = serving::channel();
    let prepared = prepare(&hub, control)
        .map_err(|e| StartError::Internal(format!("cannot set up self-healing: {e}")))?;
    let daemon =
        Daemon::start_with(effective, hub, prepared.services(), settings, requests).await?;
    let healing = prepared.activate(daemon.local_addr());
    Ok((daemon, healing))
}

async fn run_started<A: HubAdapter>(
    (mut daemon, healing): (Daemon<A>, assemble::Healing),
    mut signals: server::ShutdownSignals,
    (hangup, reload): (tokio::signal::unix::Signal, ReloadSource),
    on_ready: impl FnOnce(SocketAddr),
) -> Result<DaemonExit, StartError> {
    let reloader = Reloader::new(
        reload.request,
        daemon.config(),
        healing.live.clone(),
        reload.level.unwrap_or_else(LevelControl::none),
        reload.env_debug,
    );
    daemon.reload_on_hangup(hangup, Some(reloader));
    let stop_trimming = tokio_util::sync::CancellationToken::new();
    let trimming = tokio::spawn(memory::trim_after_load(
        Arc::clone(daemon.hub().stats()),
        memory::TRIM_CHECK_INTERVAL,
        stop_trimming.clone(),
    ));
    on_ready(daemon.local_addr());
    let exit = daemon.run_until_stopped(&mut signals).await;
    stop_trimming.cancel();
    let _ = trimming.await;
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
    let mut child = spawn_in_new_session(exe, child_args)?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| io::Error::other("the child's stderr pipe is missing"))?;
    let reader = keep_output(stderr);
    wait_until_ready(child, reader, effective)
}

/// Starts `exe child_args` in a new session (setsid), its stdin and stdout
/// null and its stderr on a pipe.
fn spawn_in_new_session(exe: PathBuf, child_args: Vec<OsString>) -> io::Result<Child> {
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
    command.spawn()
}

/// A thread reading `stderr` until it closes, keeping its first
/// [`DETACH_OUTPUT_LIMIT`] bytes.
fn keep_output(mut stderr: ChildStderr) -> JoinHandle<String> {
    std::thread::spawn(move || {
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
    })
}

/// Polls until `child` exits (failed), or its stderr closed and it is
/// [`child_ready`], or [`DETACH_READY_TIMEOUT`] passes.
fn wait_until_ready(
    mut child: Child,
    reader: JoinHandle<String>,
    effective: &Effective,
) -> io::Result<DetachOutcome> {
    let pid = child.id();
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
