//! Connections, one at a time: the door that admits or refuses each one
//! ([`Door`]: the caps of `DoorSettings`, counted per address), the
//! connection's I/O counted and severable (`Counted`, enlisted in the hub's
//! `Transports` when it carries Socket.IO), and hyper serving it with the
//! door's timeouts. Both the main runtime (`server`) and the health lane
//! (`lane`) serve their connections through [`serve_connections`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::daemon::hub::ServiceStats;
pub use crate::daemon::hub::door::AuthToken;
use crate::daemon::hub::door::Cut;
pub use crate::daemon::hub::door::{DoorSettings, Transports};

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
            let body_read_timeout = settings.body_read_timeout;
            router.clone().oneshot(
                request
                    .map(|body| axum::body::Body::new(DeadlineBody::new(body, body_read_timeout))),
            )
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

/// A request body that must arrive whole by a deadline (`server.
/// body_read_timeout` after its head): past it, reading the body fails, the
/// handler answers an error and hyper closes the connection, so a client
/// that declares a body and never finishes it cannot hold a connection (and
/// its descriptor) forever. The timer is armed only if the body is not there
/// at once: most bodies never need it.
struct DeadlineBody<B> {
    inner: B,
    /// The deadline, from the request head.
    due: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The error of a body that did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within server.body_read_timeout_seconds")]
struct BodyTimedOut;

impl<B> DeadlineBody<B> {
    fn new(inner: B, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            due: tokio::time::Instant::now() + timeout,
            timer: None,
        }
    }
}

impl<B> hyper::body::Body for DeadlineBody<B>
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = hyper::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let due = this.due;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimedOut.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
