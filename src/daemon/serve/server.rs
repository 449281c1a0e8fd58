//! Serving the hub's application on a listener, in a way that can be stopped
//! and started again inside the same process (`restart_service` rebinds the
//! same address while the PID lock is kept), and the signal helper the daemon
//! waits on.
//!
//! A serving generation is: [`bind`] (or [`bind_host`]) → [`serve_tcp`] (or
//! the generic [`serve`], for simulated listeners) → [`ServingHandle::shutdown`].
//! Shutdown closes every Socket.IO transport through [`Hub::close`] inside a
//! graceful shutdown (as `axum::serve` does it), so clients see "transport
//! close" and reconnect, long-polling requests end at once, and the
//! listening socket is released when `shutdown` returns, ready to be bound
//! again.
//!
//! Every Socket.IO connection (a request under `/socket.io/`, and the
//! WebSocket it may become) is enlisted in the hub's [`Transports`], which
//! can sever them all without a word: reads and writes fail, the connection
//! is dropped and the client sees its TCP connection close. Stock clients
//! (socket.io-client and python-socketio) treat that as a transport failure
//! and reconnect with their usual backoff, where a Socket.IO DISCONNECT or an
//! Engine.IO CLOSE is final for some of them (`clear_connections`,
//! `restart_service` and `emergency_stop` sever first; see README).
//!
//! Connections are served here, not by `axum::serve`, because the door's
//! bounds need hyper's timer ([`DoorSettings`]: header-read and idle
//! timeouts, a cap per address): a client that holds connections open is
//! shed at the door, never answered by a restart.
//!
//! Not here: what to serve (see `http`), the hub (see `hub`), the PID file and
//! the decision to restart (the daemon and the recovery manager).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::{Listener, ListenerExt};

use socketioxide::adapter::Adapter;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::daemon::hub::Hub;
pub use crate::daemon::hub::door::AuthToken;
pub use crate::daemon::hub::door::{DoorSettings, Transports};
use crate::daemon::serve::conn::{self, Door};
use crate::daemon::serve::lane::{self, Lane};

/// Why a listening socket could not be bound. `AddrInUse` is separate so the
/// daemon can look up the owner and report a `PortConflictError`.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("address {addr} is already in use")]
    AddrInUse { addr: SocketAddr, source: io::Error },
    #[error("permission denied binding {addr} (ports below 1024 need privileges)")]
    PermissionDenied { addr: SocketAddr, source: io::Error },
    #[error("address {addr} is not available on this machine")]
    AddrNotAvailable { addr: SocketAddr, source: io::Error },
    #[error("could not bind {addr}: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    #[error("could not resolve host {host:?}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("host {host:?} resolves to no address")]
    NoAddress { host: String },
}

impl BindError {
    fn from_io(addr: SocketAddr, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::AddrInUse => BindError::AddrInUse { addr, source },
            io::ErrorKind::PermissionDenied => BindError::PermissionDenied { addr, source },
            io::ErrorKind::AddrNotAvailable => BindError::AddrNotAvailable { addr, source },
            _ => BindError::Io { addr, source },
        }
    }
}

/// Binds a TCP listener on `addr` (port 0 picks a free port: read it back
/// with `local_addr`). tokio sets `SO_REUSEADDR`, so a restart can rebind
/// the address its previous generation just released.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    bind_with_backlog(addr).map_err(|source| BindError::from_io(addr, source))
}

/// Pending connections the kernel queues before `accept`. The usual 128
/// overflows when a thousand dashboards reconnect at once (after a restart),
/// and every dropped SYN costs its client a one-second retransmit.
pub const LISTEN_BACKLOG: u32 = 1024;

fn bind_with_backlog(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // Like `TcpListener::bind`: lets a restart rebind the address its previous
    // generation just released (connections in TIME_WAIT do not block it).
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Resolves `host` (e.g. `localhost`) and binds the first address that
/// accepts. If none does, returns the error for the first address (an
/// address-in-use error is preferred, since it is the actionable one).
pub async fn bind_host(host: &str, port: u16) -> Result<TcpListener, BindError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| BindError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    let mut first_error = None;
    for addr in addrs {
        match bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(error) => {
                let replace = match &first_error {
                    None => true,
                    Some(BindError::AddrInUse { .. }) => false,
                    Some(_) => matches!(error, BindError::AddrInUse { .. }),
                };
                if replace {
                    first_error = Some(error);
                }
            }
        }
    }
    Err(first_error.unwrap_or(BindError::NoAddress {
        host: host.to_owned(),
    }))
}

/// How a serving generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Socket.IO clients whose transport was closed.
    pub clients_closed: usize,
    /// True if connections were still open after the drain timeout and the
    /// server task was aborted.
    pub forced: bool,
}

/// The serving task ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the HTTP server task panicked")]
    Panicked,
}

/// A running serving generation. Dropping it without calling
/// [`ServingHandle::shutdown`] also starts a graceful shutdown, in the
/// background.
#[derive(Debug)]
pub struct ServingHandle {
    trigger: oneshot::Sender<()>,
    closed: oneshot::Receiver<usize>,
    task: JoinHandle<()>,
    /// The health lane that owns the listening socket ([`serve_tcp`]).
    lane: Option<Lane>,
}

impl ServingHandle {
    /// Stops accepting, closes every Socket.IO transport (counters corrected),
    /// waits up to `drain_timeout` for in-flight HTTP requests, then returns
    /// with the listening socket released.
    pub async fn shutdown(self, drain_timeout: Duration) -> Result<ShutdownReport, ServeError> {
        let ServingHandle {
            trigger,
            closed,
            mut task,
            lane,
        } = self;
        // Stop accepting first: the lane owns the listening socket and
        // releases it here, before the drain, as axum does.
        if let Some(lane) = lane
            && tokio::time::timeout(drain_timeout, lane.stop())
                .await
                .is_err()
        {
            tracing::warn!("the health lane did not release the listener in time");
        }
        // The receiver is gone only if the task already ended; then there is
        // nothing left to trigger.
        let _ = trigger.send(());
        let forced = match tokio::time::timeout(drain_timeout, &mut task).await {
            Ok(Ok(())) => false,
            Ok(Err(join_error)) if join_error.is_panic() => return Err(ServeError::Panicked),
            Ok(Err(_cancelled)) => false,
            Err(_elapsed) => {
                task.abort();
                // Wait for the abort so the listener is dropped before we return.
                let _ = task.await;
                true
            }
        };
        let clients_closed = closed.await.unwrap_or(0);
        Ok(ShutdownReport {
            clients_closed,
            forced,
        })
    }

    /// True once the serving task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Serves `router` on a TCP listener with `TCP_NODELAY` on every accepted
/// socket (axum does not set it; Socket.IO's small frames pay Nagle's delay
/// otherwise). The health lane (see `lane`) accepts on its own thread and
/// answers `/health`, `/livez` and `/readyz` there, so probes are not queued
/// behind the relay; if its thread cannot start, the runtime accepts alone.
/// The hub's [`DoorSettings`] bound every connection, on both sides.
pub fn serve_tcp<A: Adapter>(listener: TcpListener, router: Router, hub: &Hub<A>) -> ServingHandle {
    let door = Door::new(
        hub.settings().door.clone(),
        Arc::clone(hub.stats()),
        Arc::clone(hub.transports()),
    );
    let listener = match lane::start(listener, router.clone(), door.for_probes()) {
        Ok((handoff, lane)) => {
            let mut handle = serve_with(handoff, router, hub, door);
            handle.lane = Some(lane);
            return handle;
        }
        Err(listener) => listener,
    };
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    serve_with(listener, router, hub, door)
}

/// Serves `router` on any axum listener (a simulated one in the turmoil
/// suites) until [`ServingHandle::shutdown`], with the hub's
/// [`DoorSettings`]. Must be called inside a tokio runtime.
pub fn serve<L, A>(listener: L, router: Router, hub: &Hub<A>) -> ServingHandle
where
    L: Listener<Addr = SocketAddr>,
    A: Adapter,
{
    let door = Door::new(
        hub.settings().door.clone(),
        Arc::clone(hub.stats()),
        Arc::clone(hub.transports()),
    );
    serve_with(listener, router, hub, door)
}

fn serve_with<L, A>(listener: L, router: Router, hub: &Hub<A>, door: Arc<Door>) -> ServingHandle
where
    L: Listener<Addr = SocketAddr>,
    A: Adapter,
{
    let (trigger, triggered) = oneshot::channel::<()>();
    let (report_closed, closed) = oneshot::channel::<usize>();
    // A new generation: connections are no longer severed as they enlist.
    hub.transports().resume();
    let hub = hub.clone();
    let drain = async move {
        // Either an explicit shutdown or a dropped handle.
        let _ = triggered.await;
        let clients = hub.close().await;
        let _ = report_closed.send(clients);
    };
    let task = tokio::spawn(conn::serve_connections(listener, router, door, drain));
    ServingHandle {
        trigger,
        closed,
        task,
        lane: None,
    }
}

/// The startup warning for a daemon that other machines can reach and that
/// requires no token; `None` on a loopback address or with a token.
pub fn exposure_warning(addr: SocketAddr, token_set: bool) -> Option<String> {
    (!addr.ip().is_loopback() && !token_set).then(|| {
        format!(
            "listening on {addr}, reachable from other machines, without server.auth_token: \
             anyone who can connect can post events, receive every relayed event and read \
             /diagnostics and /metrics. Set server.auth_token, or listen on 127.0.0.1 (--host)"
        )
    })
}

/// The signal that asked the daemon to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownSignal {
    Terminate,
    Interrupt,
}

/// SIGTERM and SIGINT handlers. Install them before serving so that a
/// signal arriving during startup is not lost (tokio keeps it for `recv`).
#[derive(Debug)]
pub struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Registers the handlers; fails only if the OS refuses. Must be called
    /// inside a tokio runtime.
    pub fn install() -> io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) -> ShutdownSignal {
        tokio::select! {
            _ = self.terminate.recv() => ShutdownSignal::Terminate,
            _ = self.interrupt.recv() => ShutdownSignal::Interrupt,
        }
    }
}
