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

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::serve::{Listener, ListenerExt};
use futures_util::task::AtomicWaker;
use socketioxide::adapter::Adapter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tower::ServiceExt;

pub use crate::daemon::http::AuthToken;
use crate::daemon::hub::{Hub, ServiceStats};
use crate::daemon::lane::{self, Lane};

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
    let task = tokio::spawn(serve_connections(listener, router, door, drain));
    ServingHandle {
        trigger,
        closed,
        task,
        lane: None,
    }
}

/// The bounds the door puts on every connection (`server.*` in the config;
/// README lists them with their defaults). Clients that hold connections
/// open cost the daemon descriptors and memory: these bounds shed them at
/// the door, so that no client-made pressure ever needs a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoorSettings {
    /// A new connection must send its first complete request head within
    /// this time, or it is closed.
    pub header_read_timeout: Duration,
    /// A kept-alive HTTP connection with no request in flight is closed
    /// after this time (a request head after the first must also arrive
    /// within it). Upgraded WebSocket connections are Engine.IO's (pings).
    pub idle_timeout: Duration,
    /// An Engine.IO session that has not joined the Socket.IO namespace
    /// within this time is closed (socketioxide's `connect_timeout`).
    pub handshake_timeout: Duration,
    /// Open connections from one IP address; beyond it a new connection is
    /// answered `429` and closed. `None`: no cap.
    pub max_connections_per_ip: Option<u32>,
    /// Open client connections in all; beyond it a new connection is
    /// answered `429` and closed, so clients can never take the descriptors
    /// the daemon needs. `None`: no cap.
    pub max_connections: Option<u32>,
    /// When set, required by `POST /api/events`, `/diagnostics`, `/metrics`
    /// (`Authorization: Bearer`) and Socket.IO connects (`auth.token`).
    pub auth_token: Option<AuthToken>,
    /// The names a request's `Host` may carry (see
    /// [`crate::daemon::http::HostNames`]): `server.host` and
    /// `server.allowed_hosts`.
    pub host_names: Vec<String>,
}

impl DoorSettings {
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for DoorSettings {
    fn default() -> Self {
        DoorSettings {
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections_per_ip: None,
            max_connections: None,
            auth_token: None,
            host_names: Vec::new(),
        }
    }
}

/// One serving generation's door: its settings and the open connections per
/// address, shared by the main runtime and the health lane.
#[derive(Debug)]
pub struct Door {
    settings: DoorSettings,
    per_ip: Arc<Mutex<HashMap<IpAddr, u32>>>,
    refused: Arc<AtomicU64>,
    /// False for the health lane's own connections (probes answered at once
    /// on their thread): `max_connections` never refuses a probe.
    global_cap: bool,
    /// The hub's counters: open client connections are counted there, across
    /// serving generations (the process checker tells them from the
    /// daemon's own descriptors).
    stats: Arc<ServiceStats>,
    /// The hub's Socket.IO connections, which recovery actions sever.
    transports: Arc<Transports>,
}

impl Door {
    pub fn new(
        settings: DoorSettings,
        stats: Arc<ServiceStats>,
        transports: Arc<Transports>,
    ) -> Arc<Self> {
        Arc::new(Door {
            settings,
            per_ip: Arc::new(Mutex::new(HashMap::new())),
            refused: Arc::new(AtomicU64::new(0)),
            global_cap: true,
            stats,
            transports,
        })
    }

    /// The same door for the health lane's probes: the per-address cap and
    /// the counts are shared, `max_connections` does not apply (a probe is
    /// answered at once; clients at the cap must never make `/livez` fail).
    pub fn for_probes(&self) -> Arc<Door> {
        Arc::new(Door {
            settings: self.settings.clone(),
            per_ip: Arc::clone(&self.per_ip),
            refused: Arc::clone(&self.refused),
            global_cap: false,
            stats: Arc::clone(&self.stats),
            transports: Arc::clone(&self.transports),
        })
    }

    pub fn settings(&self) -> &DoorSettings {
        &self.settings
    }

    /// A slot for one more connection from `ip`, counted among the open
    /// client connections; `None` if `max_connections` are open or the
    /// address already holds `max_connections_per_ip`.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<PeerSlot, &'static [u8]> {
        let max = self
            .settings
            .max_connections
            .filter(|_| self.global_cap)
            .map(u64::from);
        if !self.stats.try_open_connection(max) {
            return Err(REFUSED_FULL);
        }
        let per_ip_counted = match self.settings.max_connections_per_ip {
            None => false,
            Some(cap) => {
                let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
                let open = per_ip.entry(ip).or_insert(0);
                if *open >= cap {
                    drop(per_ip);
                    self.stats.close_connection();
                    self.stats.count_refused_connection();
                    return Err(REFUSED_RESPONSE);
                }
                *open += 1;
                true
            }
        };
        Ok(PeerSlot {
            door: Arc::clone(self),
            ip,
            per_ip_counted,
        })
    }

    /// Counts a refusal; logs the first and then every power of two, so a
    /// flood costs a handful of lines.
    fn note_refused(&self, ip: IpAddr) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if refused.is_power_of_two() {
            tracing::warn!(
                "refused a connection from {ip}: server.max_connections ({}) or \
                 server.max_connections_per_ip ({}) reached ({refused} refused so far in this \
                 serving generation)",
                self.settings.max_connections.unwrap_or(0),
                self.settings.max_connections_per_ip.unwrap_or(0)
            );
        }
    }
}

/// One open connection, counted among the open client connections (and
/// against its address when there is a per-address cap); released on drop.
#[derive(Debug)]
struct PeerSlot {
    door: Arc<Door>,
    ip: IpAddr,
    per_ip_counted: bool,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.door.stats.close_connection();
        if self.per_ip_counted {
            let mut per_ip = self
                .door
                .per_ip
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(open) = per_ip.get_mut(&self.ip) {
                *open = open.saturating_sub(1);
                if *open == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
    }
}

/// The hub's Socket.IO connections, across serving generations, so that a
/// recovery action can close every client's transport without sending
/// anything: no Socket.IO DISCONNECT ("io server disconnect", final for
/// socket.io-client) and no Engine.IO CLOSE (final for python-socketio).
/// A severed connection's reads and writes fail at once, which ends hyper's
/// connection or engineioxide's WebSocket tasks; the socket is dropped and
/// the client sees its connection close, which every stock client answers by
/// reconnecting with its usual backoff. Other connections (hooks posting
/// events, probes, the status page) are never enlisted, so never severed.
#[derive(Debug, Default)]
pub struct Transports {
    inner: Mutex<TransportsInner>,
}

#[derive(Debug, Default)]
struct TransportsInner {
    next_id: u64,
    open: HashMap<u64, Arc<Cut>>,
    /// Set between a generation's severing and the next generation: a
    /// connection that enlists meanwhile is severed at once (it could
    /// otherwise read the closing generation's Engine.IO CLOSE).
    severing: bool,
}

impl Transports {
    /// Severs every enlisted connection; they reconnect to this generation.
    /// Returns how many connections were severed.
    pub fn sever(&self) -> usize {
        self.sever_with(false)
    }

    /// Severs every enlisted connection, and every one that enlists until
    /// the next serving generation starts (a restart or a stop, before the
    /// generation is drained). Returns how many connections were severed.
    pub fn sever_generation(&self) -> usize {
        self.sever_with(true)
    }

    fn sever_with(&self, severing: bool) -> usize {
        let open = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.severing = severing;
            std::mem::take(&mut inner.open)
        };
        for cut in open.values() {
            cut.trip();
        }
        open.len()
    }

    /// A new serving generation: connections enlist normally again.
    pub fn resume(&self) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .severing = false;
    }

    /// Enlisted connections now open.
    pub fn open(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open
            .len()
    }

    /// Enlists a connection that carries Socket.IO (once per connection).
    fn enlist(&self, cut: &Arc<Cut>) {
        if cut.id.load(Ordering::Acquire) != 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.severing {
            drop(inner);
            cut.trip();
            return;
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner.open.insert(id, Arc::clone(cut));
        cut.id.store(id, Ordering::Release);
    }

    fn discharge(&self, cut: &Cut) {
        let id = cut.id.load(Ordering::Acquire);
        if id != 0 {
            self.inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .open
                .remove(&id);
        }
    }
}

/// One connection's kill switch. Once tripped, its reads and writes fail and
/// whoever waits on them is woken: hyper's connection task through `task`,
/// an upgraded WebSocket's reader and writer through their wakers.
#[derive(Debug, Default)]
struct Cut {
    /// Its key in [`Transports`] once enlisted; 0 before.
    id: AtomicU64,
    tripped: AtomicBool,
    read: AtomicWaker,
    write: AtomicWaker,
    task: Notify,
}

impl Cut {
    fn trip(&self) {
        self.tripped.store(true, Ordering::Release);
        self.read.wake();
        self.write.wake();
        self.task.notify_one();
    }

    fn enlisted(&self) -> bool {
        self.id.load(Ordering::Relaxed) != 0
    }

    /// `Some(error)` once tripped; otherwise registers `waker` for an
    /// enlisted connection (a connection severed as it enlists is tripped
    /// without being enlisted; the others are never tripped).
    fn check(&self, waker: &AtomicWaker, cx: &Context<'_>) -> Option<io::Error> {
        let severed = || {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "transport severed by a recovery action",
            )
        };
        if self.tripped.load(Ordering::Acquire) {
            return Some(severed());
        }
        if !self.enlisted() {
            return None;
        }
        waker.register(cx.waker());
        self.tripped.load(Ordering::Acquire).then(severed)
    }
}

/// A connection's I/O with its [`PeerSlot`] and its [`Cut`]: both live as
/// long as the socket, including after a WebSocket upgrade hands the socket
/// to Engine.IO.
struct Counted<I> {
    io: I,
    cut: Arc<Cut>,
    transports: Arc<Transports>,
    _slot: PeerSlot,
}

impl<I> Drop for Counted<I> {
    fn drop(&mut self) {
        self.transports.discharge(&self.cut);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(severed) = self.cut.check(&self.cut.read, cx) {
            return Poll::Ready(Err(severed));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(severed) = self.cut.check(&self.cut.write, cx) {
            return Poll::Ready(Err(severed));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(severed) = self.cut.check(&self.cut.write, cx) {
            return Poll::Ready(Err(severed));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(severed) = self.cut.check(&self.cut.write, cx) {
            return Poll::Ready(Err(severed));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// True for a request Engine.IO serves (its connection is then enlisted).
fn carries_socketio(uri: &hyper::Uri) -> bool {
    let path = uri.path();
    path == "/socket.io" || path.starts_with("/socket.io/")
}

/// What a connection over `max_connections` reads before it is closed.
const REFUSED_FULL: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
Content-Type: application/json\r\n\
Connection: close\r\n\
Content-Length: 72\r\n\
\r\n\
{\"error\":\"too many connections to this server (server.max_connections)\"}";

/// What a connection over `max_connections_per_ip` reads before it is
/// closed.
const REFUSED_RESPONSE: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
Content-Type: application/json\r\n\
Connection: close\r\n\
Content-Length: 90\r\n\
\r\n\
{\"error\":\"too many connections from this address (server.max_connections_per_ip reached)\"}";

/// How long a refused connection is given to take its 429 and close.
const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes read and discarded from a refused connection before it is closed.
const REFUSE_DRAIN_BYTES: usize = 64 * 1024;

/// Accepts on `listener` and serves every connection with the door's
/// bounds until `shutdown` resolves; then stops accepting, asks every
/// connection to finish (graceful HTTP/1 shutdown) and returns once all
/// have closed. The shape of `axum::serve(..).with_graceful_shutdown(..)`,
/// plus the timeouts axum does not offer.
pub(crate) async fn serve_connections<L, F>(
    mut listener: L,
    router: Router,
    door: Arc<Door>,
    shutdown: F,
) where
    L: Listener<Addr = SocketAddr>,
    F: Future<Output = ()> + Send + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(());
    let (open_tx, open_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let slot = match door.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(answer) => {
                door.note_refused(peer.ip());
                tokio::spawn(refuse(io, answer));
                continue;
            }
        };
        let io = Counted {
            io,
            cut: Arc::new(Cut::default()),
            transports: Arc::clone(&door.transports),
            _slot: slot,
        };
        tokio::spawn(serve_connection(
            io,
            router.clone(),
            Arc::clone(&door),
            stop_rx.clone(),
            open_rx.clone(),
        ));
    }
    drop(listener);
    drop(open_rx);
    // Connections still open hear this and finish their current request.
    drop(stop_rx);
    let _ = stop_tx.send(());
    // Every connection task holds a receiver: closed means all are gone.
    open_tx.closed().await;
}

async fn refuse<I: AsyncRead + AsyncWrite + Unpin>(mut io: I, answer: &'static [u8]) {
    let _ = tokio::time::timeout(REFUSE_WRITE_TIMEOUT, async {
        io.write_all(answer).await?;
        io.shutdown().await?;
        // A lingering close: closing with the request still unread would
        // send a reset, which can destroy the 429 before the client reads
        // it. Read (and discard) a bounded amount until the client closes.
        let mut sink = [0u8; 4096];
        let mut left = REFUSE_DRAIN_BYTES;
        while left > 0 {
            let n = io.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<(), io::Error>(())
    })
    .await;
}

/// Serves one connection: HTTP/1.1 with upgrades (WebSocket), hyper's
/// header-read timer set to the idle timeout, and the first request head
/// due within the header-read timeout.
async fn serve_connection<I>(
    io: Counted<I>,
    router: Router,
    door: Arc<Door>,
    mut stop: watch::Receiver<()>,
    open: watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = door.settings();
    let requested = Arc::new(AtomicBool::new(false));
    let cut = Arc::clone(&io.cut);
    let service = {
        let requested = Arc::clone(&requested);
        let cut = Arc::clone(&cut);
        let transports = Arc::clone(&door.transports);
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            requested.store(true, Ordering::Relaxed);
            if carries_socketio(request.uri()) {
                transports.enlist(&cut);
            }
            router.clone().oneshot(request.map(axum::body::Body::new))
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(settings.idle_timeout);
    let connection = builder
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let first_head = tokio::time::sleep(settings.header_read_timeout);
    let mut first_head = std::pin::pin!(first_head);
    let mut awaiting_first_head = true;
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::trace!(%error, "connection ended with an error");
                }
                break;
            }
            () = &mut first_head, if awaiting_first_head => {
                if !requested.load(Ordering::Relaxed) {
                    tracing::trace!("closed a connection that sent no request in time");
                    break;
                }
                awaiting_first_head = false;
            }
            () = cut.task.notified() => {
                // Severed: drop the connection (a pending long-poll with it).
                tracing::trace!("severed a Socket.IO connection");
                break;
            }
            changed = stop.changed(), if !stopping => {
                // Sent or dropped: either way the generation is ending.
                let _ = changed;
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
    drop(open);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tripped(cut: &Cut) -> bool {
        cut.tripped.load(Ordering::Acquire)
    }

    #[test]
    fn sever_trips_enlisted_connections_only_and_the_next_ones_live() {
        let transports = Transports::default();
        let (socketio, other) = (Arc::new(Cut::default()), Arc::new(Cut::default()));
        transports.enlist(&socketio);
        transports.enlist(&socketio);
        assert_eq!(transports.open(), 1, "enlisted once");
        assert_eq!(transports.sever(), 1);
        assert!(tripped(&socketio));
        assert!(!tripped(&other), "never enlisted, never severed");
        let later = Arc::new(Cut::default());
        transports.enlist(&later);
        assert!(!tripped(&later), "clear_connections keeps serving");
        transports.discharge(&later);
        assert_eq!(transports.open(), 0, "a dropped connection is forgotten");
    }

    #[test]
    fn a_severed_generation_severs_late_comers_until_the_next_one() {
        let transports = Transports::default();
        assert_eq!(transports.sever_generation(), 0);
        let late = Arc::new(Cut::default());
        transports.enlist(&late);
        assert!(tripped(&late), "it could read the drain's Engine.IO CLOSE");
        assert_eq!(transports.open(), 0);
        transports.resume();
        let next = Arc::new(Cut::default());
        transports.enlist(&next);
        assert!(!tripped(&next));
        assert_eq!(transports.open(), 1);
    }
}
