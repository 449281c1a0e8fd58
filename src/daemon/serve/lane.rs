//! The health lane: a dedicated OS thread that owns the daemon's listening
//! socket, answers the probe endpoints (`/health`, `/livez`, `/readyz`) itself
//! and hands every other connection to the main runtime.
//!
//! Why a thread: tokio has no task priorities. While the hub relays a burst to
//! a thousand clients, a `/health` request queued on the same runtime workers
//! waits behind every relay task (177 ms at p99 in `burst-1000`, see
//! BENCHMARKS.md). A thread of its own is something the OS scheduler does
//! respect: it sleeps in `epoll_wait` and runs as soon as a probe arrives.
//!
//! How: the lane runs a current-thread runtime. It accepts, then peeks (never
//! reads) the first bytes of each new connection. A request line for one of
//! [`LANE_PATHS`] keeps the whole connection on the lane, served by the same
//! application router, so the answer is byte for byte the one the main
//! runtime would give; any later request on that connection for another path
//! is forwarded to the main runtime and awaited there. Every other connection
//! (Socket.IO, `/status`, `/api/events`, a client silent for
//! [`PEEK_WINDOW`]) is converted to a std socket (`into_std`) and sent over a
//! bounded queue to the main runtime, which serves it as before (`from_std`).
//! The handlers the lane runs read cached state only (the monitor's latest
//! completed report, the breaker's status): no check runs in a request.
//!
//! Not here: the endpoints themselves (`health_http`), the listener's
//! creation and the serving generation's lifecycle (`server`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tower::ServiceExt;

use crate::daemon::serve::conn::{self, Door};

/// Paths the lane answers itself (GET or HEAD, any query string).
pub const LANE_PATHS: [&str; 3] = ["/health", "/livez", "/readyz"];

/// How long the lane waits for a new connection's request line to say where
/// it belongs before handing it to the main runtime undecided (where
/// `server.header_read_timeout` then bounds it). Real clients send the
/// request line in the connection's first packet; 100 ms covers one split
/// across a slow link, and keeps a flood of silent or half-sent connections
/// from holding the lane's slots ([`MAX_PEEKING`]) for long.
pub const PEEK_WINDOW: Duration = Duration::from_millis(100);

/// Accepted connections not yet served by the lane or queued for the main
/// runtime; while this many are pending, the lane stops accepting.
pub const MAX_PEEKING: usize = 4096;

/// Connections accepted by the lane and not yet taken by the main runtime.
pub const HANDOFF_QUEUE: usize = 1024;

/// Probe connections waiting for the lane's server to take them.
const LANE_QUEUE: usize = 64;

/// How long the lane lets its own connections finish after a stop.
const LANE_DRAIN: Duration = Duration::from_secs(1);

/// The lane's stack: it runs one small runtime and the probe handlers.
const LANE_STACK_BYTES: usize = 256 * 1024;

/// Bytes peeked: enough for `HEAD /readyz?` and more.
const PEEK_BYTES: usize = 16;

/// What the first bytes of a connection say about where it belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A probe request: the lane serves the connection.
    Lane,
    /// Anything else: the main runtime serves it.
    Main,
    /// The bytes so far are a prefix of a probe request line: peek again.
    Undecided,
    /// The peer closed without sending anything: the connection is dropped.
    Closed,
}

/// Classifies the first bytes of a connection (see [`Route`]).
pub fn classify(head: &[u8]) -> Route {
    let mut undecided = false;
    for method in ["GET ", "HEAD "] {
        for path in LANE_PATHS {
            let mut wanted = Vec::with_capacity(method.len() + path.len() + 1);
            wanted.extend_from_slice(method.as_bytes());
            wanted.extend_from_slice(path.as_bytes());
            let n = head.len().min(wanted.len());
            if head[..n] != wanted[..n] {
                continue;
            }
            if head.len() <= wanted.len() {
                undecided = true;
                continue;
            }
            if matches!(head[wanted.len()], b' ' | b'?') {
                return Route::Lane;
            }
        }
    }
    if undecided {
        Route::Undecided
    } else {
        Route::Main
    }
}

fn is_lane_path(path: &str) -> bool {
    LANE_PATHS.contains(&path)
}

/// The main runtime's side: connections the lane handed over. Its `accept`
/// never returns once the lane has stopped.
pub struct Handoff {
    incoming: mpsc::Receiver<std::net::TcpStream>,
    local_addr: SocketAddr,
}

impl Listener for Handoff {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some(std_stream) = self.incoming.recv().await else {
                // The lane stopped: nothing will ever arrive again.
                std::future::pending::<()>().await;
                continue;
            };
            let peer = std_stream.peer_addr();
            match (TcpStream::from_std(std_stream), peer) {
                (Ok(stream), Ok(peer)) => return (stream, peer),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::debug!(%error, "dropped a handed-over connection");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// The lane's side: connections it serves itself.
struct LaneConnections {
    incoming: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local_addr: SocketAddr,
}

impl Listener for LaneConnections {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// A running lane, held by the serving generation.
#[derive(Debug)]
pub struct Lane {
    stop: oneshot::Sender<()>,
    released: oneshot::Receiver<()>,
}

impl Lane {
    /// Stops accepting and resolves once the listening socket is closed (so
    /// the address can be bound again). The lane's own probe connections are
    /// given [`LANE_DRAIN`] to finish, in the background.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        // An error means the lane thread already ended, listener included.
        let _ = self.released.await;
    }
}

/// Starts the lane on `listener` (bound on the current runtime, which becomes
/// "the main runtime"). Returns the listener to serve `router` on in the main
/// runtime and the lane's handle, or the listener back, untouched, if the
/// lane cannot start (the caller then serves it directly).
pub fn start(
    listener: TcpListener,
    router: Router,
    door: Arc<Door>,
) -> Result<(Handoff, Lane), TcpListener> {
    let Ok(local_addr) = listener.local_addr() else {
        return Err(listener);
    };
    // A second descriptor for the same socket: the original stays valid (and
    // is returned) until the thread is known to run.
    let lane_listener = match listener.as_fd().try_clone_to_owned() {
        Ok(fd) => std::net::TcpListener::from(fd),
        Err(error) => {
            tracing::warn!(%error, "health lane: cannot share the listener; serving without it");
            return Err(listener);
        }
    };
    let main = Handle::current();
    let (handoff_tx, handoff_rx) = mpsc::channel(HANDOFF_QUEUE);
    let (stop_tx, stop_rx) = oneshot::channel();
    let (released_tx, released_rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("warden-health".into())
        .stack_size(LANE_STACK_BYTES)
        .spawn(move || {
            run_lane(
                lane_listener,
                local_addr,
                App { router, door },
                main,
                handoff_tx,
                stop_rx,
                released_tx,
            );
        });
    match spawned {
        Ok(_detached) => {
            // Deregisters from the main runtime and closes this descriptor;
            // the socket lives on in the lane's.
            drop(listener);
            Ok((
                Handoff {
                    incoming: handoff_rx,
                    local_addr,
                },
                Lane {
                    stop: stop_tx,
                    released: released_rx,
                },
            ))
        }
        Err(error) => {
            tracing::warn!(%error, "health lane: cannot start its thread; serving without it");
            Err(listener)
        }
    }
}

/// What the lane serves its probe connections with.
struct App {
    router: Router,
    door: Arc<Door>,
}

fn run_lane(
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    App { router, door }: App,
    main: Handle,
    handoff: mpsc::Sender<std::net::TcpStream>,
    stop: oneshot::Receiver<()>,
    released: oneshot::Sender<()>,
) {
    // Kept so that a lane that cannot run still leaves the socket served:
    // the main runtime then accepts and takes every connection itself.
    let spare = listener.try_clone();
    let prepared = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|runtime| {
            let registered = {
                let _entered = runtime.enter();
                TcpListener::from_std(listener)
            };
            registered.map(|listener| (runtime, listener))
        });
    let (runtime, listener) = match prepared {
        Ok(ready) => ready,
        Err(error) => {
            tracing::warn!(%error, "health lane: cannot run; the main runtime accepts instead");
            match spare {
                Ok(spare) => {
                    main.spawn(accept_on_main(spare, handoff, stop, released));
                }
                Err(error) => {
                    tracing::error!(%error, "health lane: the listening socket is lost");
                }
            }
            return;
        }
    };
    drop(spare);
    runtime.block_on(async move {
        let (lane_tx, lane_rx) = mpsc::channel(LANE_QUEUE);
        let (lane_stop_tx, lane_stop_rx) = oneshot::channel::<()>();
        let lane_app = lane_router(router, main);
        let lane_serve = tokio::spawn(async move {
            let listener = LaneConnections {
                incoming: lane_rx,
                local_addr,
            };
            // The same door as the main runtime's: a probe connection kept
            // open and silent is closed like any other.
            conn::serve_connections(listener, lane_app, door, async move {
                let _ = lane_stop_rx.await;
            })
            .await;
        });
        accept_loop(&listener, &handoff, &lane_tx, stop).await;
        drop(listener);
        let _ = released.send(());
        let _ = lane_stop_tx.send(());
        let _ = tokio::time::timeout(LANE_DRAIN, lane_serve).await;
    });
}

/// Fallback of a lane without a runtime: accept on the main runtime and hand
/// every connection over unpeeked.
async fn accept_on_main(
    listener: std::net::TcpListener,
    handoff: mpsc::Sender<std::net::TcpStream>,
    mut stop: oneshot::Receiver<()>,
    released: oneshot::Sender<()>,
) {
    if let Ok(listener) = TcpListener::from_std(listener) {
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        if let Ok(std_stream) = stream.into_std()
                            && handoff.send(std_stream).await.is_err()
                        {
                            break;
                        }
                    }
                    Err(error) => accept_error_pause(&error).await,
                },
            }
        }
    }
    let _ = released.send(());
}

/// Connections accepted by the lane and not yet handed to their owner (in
/// the process: descriptors are the process's). The process checker counts
/// them among the clients' descriptors, with the door's open connections.
static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);

/// How many accepted connections the lane is still routing (at most
/// [`MAX_PEEKING`] per lane, each for at most [`PEEK_WINDOW`]).
pub fn connections_in_flight() -> u64 {
    IN_FLIGHT.load(Ordering::Relaxed)
}

/// One connection counted in [`IN_FLIGHT`] until dropped (also when its
/// task is cancelled at shutdown).
struct InFlight;

impl InFlight {
    fn count() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(
    listener: &TcpListener,
    handoff: &mpsc::Sender<std::net::TcpStream>,
    lane: &mpsc::Sender<(TcpStream, SocketAddr)>,
    mut stop: oneshot::Receiver<()>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_PEEKING));
    loop {
        // At most MAX_PEEKING connections between accept and their owner;
        // beyond that the kernel's backlog holds them.
        let permit = tokio::select! {
            biased;
            _ = &mut stop => return,
            permit = Arc::clone(&in_flight).acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_closed) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    accept_error_pause(&error).await;
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let handoff = handoff.clone();
        let lane = lane.clone();
        let counted = InFlight::count();
        tokio::spawn(async move {
            let route = peek_route(&stream).await;
            dispatch(stream, peer, route, &handoff, &lane).await;
            drop(counted);
            drop(permit);
        });
    }
}

async fn dispatch(
    stream: TcpStream,
    peer: SocketAddr,
    route: Route,
    handoff: &mpsc::Sender<std::net::TcpStream>,
    lane: &mpsc::Sender<(TcpStream, SocketAddr)>,
) {
    match route {
        Route::Lane => {
            // The lane's server is gone only while stopping: the connection
            // is dropped, as the main runtime's would be.
            let _ = lane.send((stream, peer)).await;
        }
        Route::Closed => drop(stream),
        Route::Main | Route::Undecided => match stream.into_std() {
            Ok(std_stream) => {
                let _ = handoff.send(std_stream).await;
            }
            Err(error) => tracing::debug!(%error, "could not hand over a connection"),
        },
    }
}

/// Peeks until the first bytes decide the route or [`PEEK_WINDOW`] passes.
/// Never polls: between two peeks the task sleeps until the socket reports
/// new bytes (edge-triggered readiness), so a connection that sent half a
/// request line and stopped costs one wake-up per packet, not one per
/// millisecond.
async fn peek_route(stream: &TcpStream) -> Route {
    let deadline = tokio::time::Instant::now() + PEEK_WINDOW;
    let mut head = [0u8; PEEK_BYTES];
    let mut seen = 0;
    loop {
        match tokio::time::timeout_at(deadline, stream.readable()).await {
            // Silent or still partial: the main runtime takes it, where the
            // header-read timeout bounds it.
            Err(_elapsed) => return Route::Main,
            Ok(Err(_)) => return Route::Closed,
            Ok(Ok(())) => {}
        }
        // Bytes already peeked are still readable; reporting them as
        // `WouldBlock` clears the readiness, so the next `readable` waits
        // for the next packet instead of returning at once.
        let peeked = stream.try_io(Interest::READABLE, || match peek_now(stream, &mut head) {
            Ok(n) if n > 0 && n == seen => Err(io::ErrorKind::WouldBlock.into()),
            other => other,
        });
        match peeked {
            // Closed before a byte (the connectivity check): nothing to serve.
            Ok(0) => return Route::Closed,
            Ok(n) => {
                seen = n;
                match classify(&head[..n]) {
                    Route::Undecided => continue,
                    decided => return decided,
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_reset) => return Route::Closed,
        }
    }
}

/// One non-blocking `recv(MSG_PEEK)`: the bytes waiting, left in the socket.
fn peek_now(stream: &TcpStream, head: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `head` is a valid, writable buffer of `head.len()` bytes for
    // the duration of the call, and the descriptor is the open socket that
    // `stream` owns; MSG_DONTWAIT keeps the call from blocking.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            head.as_mut_ptr().cast(),
            head.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    // Negative means an error, which errno holds.
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

async fn accept_error_pause(error: &io::Error) {
    // As axum does: out of descriptors is worth a pause, the rest (a peer
    // that reset before accept) is not.
    let resource = matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
    let pause = if resource {
        Duration::from_millis(100)
    } else {
        Duration::ZERO
    };
    tracing::debug!(%error, "accept failed");
    tokio::time::sleep(pause).await;
}

/// The router the lane serves its connections with: the probe paths through
/// the application router on the lane's thread, everything else forwarded to
/// the main runtime.
fn lane_router(router: Router, main: Handle) -> Router {
    Router::new().fallback(move |request: Request| {
        let router = router.clone();
        let main = main.clone();
        async move { answer(router, main, request).await }
    })
}

async fn answer(router: Router, main: Handle, request: Request) -> Response {
    if is_lane_path(request.uri().path()) {
        return match router.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    }
    match main.spawn(router.oneshot(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        // The main runtime is shutting down or the handler panicked.
        Err(_join_error) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_request_lines_stay_on_the_lane() {
        for line in [
            "GET /health HTTP/1.1\r\n",
            "GET /health?verbose=1 HTTP/1.1\r\n",
            "HEAD /livez HTTP/1.1\r\n",
            "GET /readyz HTTP/1.0\r\n",
        ] {
            assert_eq!(classify(line.as_bytes()), Route::Lane, "{line}");
        }
    }

    #[test]
    fn everything_else_goes_to_the_main_runtime() {
        for line in [
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n",
            "GET /status HTTP/1.1\r\n",
            "GET /healthz HTTP/1.1\r\n",
            "GET /health/x HTTP/1.1\r\n",
            "POST /health HTTP/1.1\r\n",
            "POST /api/events HTTP/1.1\r\n",
            "\x16\x03\x01",
        ] {
            assert_eq!(classify(line.as_bytes()), Route::Main, "{line:?}");
        }
    }

    #[test]
    fn a_prefix_of_a_probe_waits_for_more() {
        for head in ["G", "GET /", "GET /hea", "GET /health", "HEAD /re"] {
            assert_eq!(classify(head.as_bytes()), Route::Undecided, "{head}");
        }
    }
}
