//! The hub's door: the bounds every connection is held to
//! ([`DoorSettings`]) and the registry of the hub's Socket.IO transports
//! ([`Transports`]), which a recovery action severs so that stock clients
//! reconnect on their own. The serving code (`serve::server`) enforces the
//! bounds and enlists the connections; the hub owns both, across serving
//! generations; and who may come in at all: the shared token
//! ([`AuthToken`]) and the Socket.IO connect middleware that asks for it
//! ([`socket_auth`]).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Context;
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use serde_json::Value;
use socketioxide::extract::TryData;

/// The bounds the door puts on every connection (`server.*` in the config;
/// README lists them with their defaults). Clients that hold connections
/// open cost the daemon descriptors and memory: these bounds shed them at
/// the door, so that no client-made pressure ever needs a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoorSettings {
    /// A new connection must send its first complete request head within
    /// this time, or it is closed.
    pub header_read_timeout: Duration,
    /// A request's body must arrive whole within this time of its head, or
    /// the request fails (its connection is then closed).
    pub body_read_timeout: Duration,
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
    /// [`crate::daemon::hub::http::HostNames`]): `server.host` and
    /// `server.allowed_hosts`.
    pub host_names: Vec<String>,
}

impl DoorSettings {
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for DoorSettings {
    fn default() -> Self {
        DoorSettings {
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: Self::DEFAULT_BODY_READ_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections_per_ip: None,
            max_connections: None,
            auth_token: None,
            host_names: Vec::new(),
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
    pub(crate) fn enlist(&self, cut: &Arc<Cut>) {
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

    pub(crate) fn discharge(&self, cut: &Cut) {
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
pub(crate) struct Cut {
    /// Its key in [`Transports`] once enlisted; 0 before.
    pub(crate) id: AtomicU64,
    pub(crate) tripped: AtomicBool,
    pub(crate) read: AtomicWaker,
    pub(crate) write: AtomicWaker,
    pub(crate) task: Notify,
}

impl Cut {
    pub(crate) fn trip(&self) {
        self.tripped.store(true, Ordering::Release);
        self.read.wake();
        self.write.wake();
        self.task.notify_one();
    }

    pub(crate) fn enlisted(&self) -> bool {
        self.id.load(Ordering::Relaxed) != 0
    }

    /// `Some(error)` once tripped; otherwise registers `waker` for an
    /// enlisted connection (a connection severed as it enlists is tripped
    /// without being enlisted; the others are never tripped).
    pub(crate) fn check(&self, waker: &AtomicWaker, cx: &Context<'_>) -> Option<io::Error> {
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

/// The shared secret of `server.auth_token`. Compared in constant time; its
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(String);

impl AuthToken {
    pub fn new(token: impl Into<String>) -> Self {
        AuthToken(token.into())
    }

    /// True if `offered` is the token. The time taken depends on the
    /// lengths only, never on where the first difference is.
    pub fn matches(&self, offered: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        let mut difference = expected.len() ^ offered.len();
        for (i, byte) in expected.iter().enumerate() {
            let other = offered.get(i).copied().unwrap_or(0);
            difference |= usize::from(byte ^ other);
        }
        std::hint::black_box(difference) == 0
    }
}

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// Why a Socket.IO connect was refused (sent as the connect error's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocketAuthError {
    #[error(
        "this server requires a token: connect with the auth payload {{\"token\": \"<server.auth_token>\"}}"
    )]
    MissingToken,
    #[error("the token in the auth payload is not the server's token")]
    WrongToken,
}

/// The Socket.IO connect middleware for `token`: the connect's auth payload
/// must be `{"token": <token>}`.
pub fn socket_auth(
    token: AuthToken,
) -> impl FnOnce(TryData<Value>) -> std::future::Ready<Result<(), SocketAuthError>>
+ Clone
+ Send
+ Sync
+ 'static {
    move |TryData(auth): TryData<Value>| {
        let auth = auth.ok();
        let offered = auth
            .as_ref()
            .and_then(|auth| auth.get("token"))
            .and_then(Value::as_str);
        std::future::ready(match offered {
            None => Err(SocketAuthError::MissingToken),
            Some(offered) if token.matches(offered.as_bytes()) => Ok(()),
            Some(_) => Err(SocketAuthError::WrongToken),
        })
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
