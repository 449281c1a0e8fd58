//! The Socket.IO hub: what connected clients see, and the counters that the
//! health checkers and HTTP endpoints read.
//!
//! Clients connect to the default namespace `/`. On connect the hub emits
//! `connection_ack`. A `claude_event` is stamped (see [`crate::stamp`]), kept in
//! a bounded history and relayed to every *other* client, in the order its
//! sender sent it. `get_history {limit}` answers `event_history`, `ping`
//! answers `pong`, `get_version` answers `version_info`. Events posted over
//! HTTP go through [`Hub::publish`], the same stamping/history/relay path,
//! delivered to every client.
//!
//! Per-sender order is kept on purpose: socketioxide 0.18.9 spawns one task per
//! incoming message for ordinary handlers, so two events of one sender can be
//! relayed out of order. The `claude_event` handler here implements
//! [`MessageHandler`] directly: its `call` runs synchronously in the socket's
//! receive path (in arrival order), stamps the event, appends it to the
//! history and pushes it onto a bounded per-socket queue drained by one task
//! per socket, which relays the events one after another. An event that
//! finds no place in that queue is refused to its sender (told), never
//! accepted half-way; what the hub accepts, it relays.
//!
//! Every accepted event gets an id, `event_id` in its payload: its offset in
//! the history (the core's `sessions::EventLog`); `get_history {since}` pages
//! from one. With connection state recovery on (`HubSettings::recovery`),
//! each CONNECT carries a session `pid`, each `claude_event` its offset as a
//! last argument, and a reconnect that names a kept session gets the events
//! it missed before any live one (see [`Gate`] and ARCHITECTURE.md).
//!
//! Attribution: what a client does wrong (bad packets, overflowing its own
//! queue, reading too slowly) is counted as that client's and charged to it
//! (a budget, a refusal, a disconnect); `ServiceStats.errors`, which the
//! service checker judges, counts only the hub's own failures.
//!
//! The handlers are generic over the socketioxide [`Adapter`] so that the
//! Redis adapter of cluster mode (`cluster.rs`) runs the same code:
//! [`Hub::socketio_layer`] builds each serving generation's `SocketIo` for
//! any [`HubAdapter`]. In cluster mode the hub is also given a [`SharedHub`]:
//! relays and HTTP events go to every node while Redis is reachable and to
//! this node's clients only while it is not (never lost locally, counted as
//! local fallbacks), and `get_history` answers from the shared history,
//! falling back to this node's own when Redis is away.
//!
//! Not here: serving (see `server`), HTTP routes (see `http`), health
//! decisions (the pure core), configuration parsing (the daemon fills
//! [`HubSettings`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::extract::{AckSender, Data, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts, MessageHandler};
use socketioxide::layer::SocketIoLayer;
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::{Sid, Socket};
use socketioxide::{
    BroadcastError, RecoveryPid, SendError, SocketError, SocketIo, SocketIoBuilder,
};
use tokio::sync::mpsc;

pub mod door;
pub mod http;

use crate::daemon::hub::door::{DoorSettings, Transports};
use crate::sessions::{
    Epoch, EventLog, Gap, Numbered, Offset, SessionCounters, SessionLimits, SessionTable,
};
use crate::stamp::{Payload, Stamp};
use crate::time::{Clock, Moment, WallTime};

/// The event a hook sends and dashboards receive.
pub const CLAUDE_EVENT: &str = "claude_event";
/// Emitted to a client once it has joined the default namespace.
pub const CONNECTION_ACK: &str = "connection_ack";
/// Request and answer for the recent events.
pub const GET_HISTORY: &str = "get_history";
pub const EVENT_HISTORY: &str = "event_history";
/// Application-level liveness check (distinct from Engine.IO's own pings).
pub const PING: &str = "ping";
pub const PONG: &str = "pong";
/// Told to a sender whose `claude_event` was refused (its relay queue is
/// full), when it did not ask for an ack: `{"error": "event_refused", "reason": ..}`.
pub const EVENT_REFUSED: &str = "event_refused";
/// The key of each relayed event's id (its offset in the hub's log; the
/// text `get_history {since}` takes).
pub const EVENT_ID: &str = "event_id";
/// Request and answer for the server's version.
pub const GET_VERSION: &str = "get_version";
pub const VERSION_INFO: &str = "version_info";

/// What the hub needs to know, filled by the daemon from its configuration.
///
/// [`HubSettings::new`] gives deliberate defaults; each field says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubSettings {
    /// Stamped on every event and sent in `connection_ack`, e.g. `socketio-server-8765`.
    pub server_id: String,
    /// Reported in `connection_ack`, `version_info` and `/status`.
    pub version: String,
    /// Largest accepted Socket.IO packet and HTTP event body. 1 MB, like
    /// python-socketio and socket.io (socketioxide's own default is 100 kB).
    pub max_payload_bytes: u64,
    /// Outgoing packets buffered per client before an emit fails with
    /// `InternalChannelFull` (counted in `events_dropped`). socketioxide's
    /// default of 128 loses events when a hook bursts; 8,192 absorbs a burst
    /// of 5,000 events to several dashboards (measured in `tests/hub_relay.rs`).
    pub socket_buffer_packets: usize,
    /// Incoming `claude_event`s queued per sender awaiting relay, bounded in
    /// count and in bytes (of the stamped events). An event that
    /// does not fit is refused: not kept, not relayed, and its sender is told
    /// ([`EVENT_REFUSED`], or an ack error); each refusal is a strike in the
    /// sender's `client_error_budget`. Every accepted event is relayed.
    pub inbound_queue_events: usize,
    pub inbound_queue_bytes: usize,
    /// How long the relay waits for a recipient whose buffer is full to make
    /// room before dropping its deliveries (see `Hub::deliver_patiently`).
    pub slow_reader_timeout: Duration,
    /// Events kept for `get_history`; the oldest is forgotten first.
    pub event_history_size: usize,
    /// Total bytes of the kept events (their stamped JSON); the oldest is
    /// forgotten first.
    pub event_history_max_bytes: usize,
    /// Bytes of events one `get_history` answer holds at most (the newest
    /// that fit); its `limit` is capped by the history itself.
    pub history_answer_max_bytes: usize,
    /// Connected clients at most: one more is refused with a Socket.IO
    /// connect error ([`ServerFull`]) and not counted.
    pub max_clients: usize,
    /// Bad packets (undecodable `claude_event`s) and refused events one
    /// client may cause within `client_error_window` before it is
    /// disconnected. They are that client's errors, never the hub's.
    pub client_error_budget: u32,
    pub client_error_window: Duration,
    /// Origins allowed by CORS (`["*"]` for any); `None` sends no CORS headers.
    pub cors_allowed_origins: Option<Vec<String>>,
    /// Engine.IO heartbeat: how often the server pings, and how long it waits
    /// for the answer before dropping the client. socket.io's 25 s / 20 s.
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Connection bounds and the optional token (see `server::DoorSettings`).
    pub door: DoorSettings,
    /// Socket.IO connection state recovery; `None` (the default) leaves it
    /// off: no `pid` in CONNECT, no offset argument on `claude_event`.
    pub recovery: Option<SessionLimits>,
}

impl HubSettings {
    pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 1_000_000;
    pub const DEFAULT_SOCKET_BUFFER_PACKETS: usize = 8_192;
    pub const DEFAULT_INBOUND_QUEUE_EVENTS: usize = 65_536;
    pub const DEFAULT_INBOUND_QUEUE_BYTES: usize = 16 << 20;
    pub const DEFAULT_SLOW_READER_TIMEOUT: Duration = Duration::from_secs(2);
    pub const DEFAULT_EVENT_HISTORY_SIZE: usize = 1_000;
    pub const DEFAULT_MAX_CLIENTS: usize = 1_000;
    pub const DEFAULT_EVENT_HISTORY_MAX_BYTES: usize = 16 << 20;
    pub const DEFAULT_HISTORY_ANSWER_MAX_BYTES: usize = 4 << 20;
    pub const DEFAULT_CLIENT_ERROR_BUDGET: u32 = 20;
    pub const DEFAULT_CLIENT_ERROR_WINDOW: Duration = Duration::from_secs(60);
    pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(25);
    pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(20);

    /// Settings with the defaults above and no CORS.
    pub fn new(server_id: impl Into<String>, version: impl Into<String>) -> Self {
        HubSettings {
            server_id: server_id.into(),
            version: version.into(),
            max_payload_bytes: Self::DEFAULT_MAX_PAYLOAD_BYTES,
            socket_buffer_packets: Self::DEFAULT_SOCKET_BUFFER_PACKETS,
            inbound_queue_events: Self::DEFAULT_INBOUND_QUEUE_EVENTS,
            inbound_queue_bytes: Self::DEFAULT_INBOUND_QUEUE_BYTES,
            slow_reader_timeout: Self::DEFAULT_SLOW_READER_TIMEOUT,
            event_history_size: Self::DEFAULT_EVENT_HISTORY_SIZE,
            max_clients: Self::DEFAULT_MAX_CLIENTS,
            event_history_max_bytes: Self::DEFAULT_EVENT_HISTORY_MAX_BYTES,
            history_answer_max_bytes: Self::DEFAULT_HISTORY_ANSWER_MAX_BYTES,
            client_error_budget: Self::DEFAULT_CLIENT_ERROR_BUDGET,
            client_error_window: Self::DEFAULT_CLIENT_ERROR_WINDOW,
            cors_allowed_origins: None,
            ping_interval: Self::DEFAULT_PING_INTERVAL,
            ping_timeout: Self::DEFAULT_PING_TIMEOUT,
            door: DoorSettings::default(),
            recovery: None,
        }
    }
}

/// Service counters, shared (`Arc`) between the hub, the HTTP endpoints and
/// the health checkers. Every update is one relaxed atomic operation.
///
/// Units: `events_processed` counts accepted `claude_event`s (socket or HTTP);
/// `events_relayed` counts events handed to the adapter for relay (once per
/// event, whatever the number of recipients); `events_dropped` counts
/// deliveries that did not happen: one per recipient whose buffer was full
/// (also in `events_dropped_recipient_full`: a reader too slow for the
/// relay, whose transport the next heartbeat closes) or whose socket was
/// closing (`events_dropped_recipient_closed`), one per intended recipient
/// (every other client connected at that moment) when the adapter failed
/// before any delivery, and one per failed reply (`connection_ack`, `pong`,
/// ...). `events_refused` counts `claude_event`s refused to their sender
/// because its relay queue was full: the sender's overload, told to it,
/// neither kept nor relayed, never a hub error. `errors` counts failures of the hub itself
/// (adapter or serialisation failures): it feeds the service checker's error
/// rate, so nothing a client controls is counted there. What a client does
/// wrong is that client's: `client_errors` counts its bad packets (an
/// undecodable `claude_event`), and `clients_disconnected_for_abuse` the
/// clients cut off for spending their budget (`client_error_budget`).
#[derive(Debug, Default)]
pub struct ServiceStats {
    clients_connected: AtomicU64,
    events_processed: AtomicU64,
    events_relayed: AtomicU64,
    events_dropped: AtomicU64,
    errors: AtomicU64,
    client_errors: AtomicU64,
    clients_disconnected_for_abuse: AtomicU64,
    events_refused: AtomicU64,
    clients_refused_max_clients: AtomicU64,
    events_dropped_recipient_full: AtomicU64,
    events_dropped_recipient_closed: AtomicU64,
    /// TCP connections open from clients now (HTTP, polling, WebSocket;
    /// counted at the door, on every serving generation).
    connections_open: AtomicU64,
    /// Connections refused at the door (`max_connections`,
    /// `max_connections_per_ip`).
    connections_refused: AtomicU64,
    /// Epoch milliseconds of the last client activity; 0 means none yet.
    last_activity_ms: AtomicU64,
}

/// A copy of [`ServiceStats`] at one moment.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceStatsSnapshot {
    pub clients_connected: u64,
    pub events_processed: u64,
    pub events_relayed: u64,
    pub events_dropped: u64,
    /// The hub's own failures (the only errors the service checker judges).
    pub errors: u64,
    /// Bad packets sent by clients (never in `errors`).
    pub client_errors: u64,
    pub clients_disconnected_for_abuse: u64,
    /// Events refused to a sender whose relay queue was full (told to it).
    pub events_refused: u64,
    /// Connections refused because `max_clients` were connected.
    pub clients_refused_max_clients: u64,
    /// Of `events_dropped`: recipients whose buffer was full / which were closing.
    pub events_dropped_recipient_full: u64,
    pub events_dropped_recipient_closed: u64,
    /// Client TCP connections open now, and refused at the door so far.
    pub connections_open: u64,
    pub connections_refused: u64,
    /// ISO-8601 in JSON, `null` before the first activity.
    #[serde(serialize_with = "serialize_wall_time")]
    pub last_activity: Option<WallTime>,
    /// Connection state recovery (zero while it is off): sessions kept now
    /// (connected or awaiting their client), reconnects that recovered their
    /// session, sessions forgotten (expired or evicted), reconnects refused
    /// (a new session instead) and events replayed to recovered sessions.
    pub sessions_kept: u64,
    pub sessions_recovered: u64,
    pub sessions_expired: u64,
    pub sessions_refused: u64,
    pub events_replayed: u64,
}

fn serialize_wall_time<S: serde::Serializer>(
    value: &Option<WallTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(at) => serializer.serialize_str(&at.to_iso8601()),
        None => serializer.serialize_none(),
    }
}

impl ServiceStats {
    pub fn snapshot(&self) -> ServiceStatsSnapshot {
        let last = self.last_activity_ms.load(Ordering::Relaxed);
        ServiceStatsSnapshot {
            clients_connected: self.clients_connected.load(Ordering::Relaxed),
            events_processed: self.events_processed.load(Ordering::Relaxed),
            events_relayed: self.events_relayed.load(Ordering::Relaxed),
            events_dropped: self.events_dropped.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            client_errors: self.client_errors.load(Ordering::Relaxed),
            clients_disconnected_for_abuse: self
                .clients_disconnected_for_abuse
                .load(Ordering::Relaxed),
            events_refused: self.events_refused.load(Ordering::Relaxed),
            clients_refused_max_clients: self.clients_refused_max_clients.load(Ordering::Relaxed),
            events_dropped_recipient_full: self
                .events_dropped_recipient_full
                .load(Ordering::Relaxed),
            events_dropped_recipient_closed: self
                .events_dropped_recipient_closed
                .load(Ordering::Relaxed),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            connections_refused: self.connections_refused.load(Ordering::Relaxed),
            last_activity: (last != 0).then_some(WallTime::from_millis(last)),
            ..ServiceStatsSnapshot::default()
        }
    }

    pub fn clients_connected(&self) -> u64 {
        self.clients_connected.load(Ordering::Relaxed)
    }

    /// Client TCP connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// Counts a client connection as open, unless `max` are open already:
    /// false then (refused, and counted as such).
    pub fn try_open_connection(&self, max: Option<u64>) -> bool {
        let admitted = self
            .connections_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| match max {
                Some(max) if open >= max => None,
                _ => Some(open + 1),
            })
            .is_ok();
        if !admitted {
            Self::add(&self.connections_refused, 1);
        }
        admitted
    }

    /// Uncounts a connection counted by [`ServiceStats::try_open_connection`].
    pub fn close_connection(&self) {
        let _ = self
            .connections_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                Some(open.saturating_sub(1))
            });
    }

    /// Counts a connection refused at the door for another reason
    /// (`max_connections_per_ip`).
    pub fn count_refused_connection(&self) {
        Self::add(&self.connections_refused, 1);
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn record_activity(&self, at: WallTime) {
        self.last_activity_ms
            .fetch_max(at.as_millis(), Ordering::Relaxed);
    }
}

/// What read-only observers (the health endpoints) need of a hub, whatever
/// its adapter.
pub trait HubStatus: Send + Sync {
    fn stats_snapshot(&self) -> ServiceStatsSnapshot;
    /// Time since the hub was created.
    fn hub_uptime(&self) -> Duration;
    /// The hub clock's wall time now.
    fn wall_now(&self) -> WallTime;
}

/// A stamped event as the bytes it is relayed and kept as: serialised once
/// when accepted, shared (not copied) by the history, the relay queue and
/// every `get_history` answer, and written verbatim into each packet. A
/// payload parsed into `serde_json::Value` costs many times its size (a
/// 1 MB `[0,0,...]` about 34 MB); these bytes cost their length.
///
/// An event accepted here carries its offset (also its `event_id`); one
/// read back from the cluster's shared history does not.
#[derive(Clone, Debug)]
pub struct StampedEvent(Arc<RawValue>, Option<Offset>, Option<Sid>);

impl StampedEvent {
    fn new(event: &Value) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(event).map(|raw| StampedEvent(Arc::from(raw), None, None))
    }

    /// Takes `json` (checked JSON text, e.g. a [`Payload`]'s stamp) as is.
    fn from_json(json: String, offset: Offset) -> Result<Self, serde_json::Error> {
        RawValue::from_string(json).map(|raw| StampedEvent(Arc::from(raw), Some(offset), None))
    }

    /// The event's JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Its offset in this hub's log (the text of its `event_id`).
    pub fn offset(&self) -> Option<Offset> {
        self.1
    }

    /// The socket of this node that sent it, if one did: it is relayed to
    /// every other client, never back to its sender.
    pub fn sender(&self) -> Option<Sid> {
        self.2
    }

    /// The same event, sent by `sender`.
    pub fn sent_by(mut self, sender: Option<Sid>) -> Self {
        self.2 = sender;
        self
    }

    /// Its size in bytes (what bounds in bytes count).
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An event received as JSON text (from another node): validated, not
    /// parsed into a `Value`; the text's allocation is kept. It has no
    /// offset in this hub's log.
    pub fn from_remote(json: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(json).map(|raw| StampedEvent(Arc::from(raw), None, None))
    }

    /// The event parsed (for callers that need to look inside).
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

impl Serialize for StampedEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A client's budget of strikes (bad packets, refused events): at most
/// `limit` in a fixed window of `window`, counted from its first strike.
/// Time is data here: [`ErrorBudget::charge`] is given the moment.
#[derive(Debug)]
struct ErrorBudget {
    limit: u32,
    window: Duration,
    window_start: Option<Moment>,
    strikes: u32,
}

impl ErrorBudget {
    fn new(limit: u32, window: Duration) -> Self {
        ErrorBudget {
            limit,
            window,
            window_start: None,
            strikes: 0,
        }
    }

    /// Counts one strike at `at`; true once the window holds more than `limit`.
    fn charge(&mut self, at: Moment) -> bool {
        match self.window_start {
            Some(start) if at.saturating_since(start) < self.window => {}
            _ => {
                self.window_start = Some(at);
                self.strikes = 0;
            }
        }
        self.strikes = self.strikes.saturating_add(1);
        self.strikes > self.limit
    }
}

/// How often the relay retries a recipient whose buffer is full.
const SLOW_READER_POLL: Duration = Duration::from_millis(1);

/// How often a warning that repeats (one per bad packet, per refused
/// event...) is logged: once per interval, with a count.
pub const REPEATED_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// A warning that may repeat: [`Throttled::hit`] says when to log it and how
/// many times it happened since the last line. Never one line per event.
#[derive(Debug, Default)]
pub struct Throttled {
    state: Mutex<(Option<Moment>, u64)>,
}

impl Throttled {
    /// Counts one occurrence at `at`; `Some(n)` when a line is due, `n`
    /// being the occurrences since the previous line (this one included).
    pub fn hit(&self, at: Moment) -> Option<u64> {
        let mut state = lock(&self.state);
        let (last, pending) = &mut *state;
        *pending += 1;
        let due = last.is_none_or(|last| at.saturating_since(last) >= REPEATED_WARNING_INTERVAL);
        if !due {
            return None;
        }
        *last = Some(at);
        Some(std::mem::take(pending))
    }
}

/// The repeated warnings of one hub.
#[derive(Debug, Default)]
struct Warnings {
    bad_packet: Throttled,
    abuse_disconnect: Throttled,
    refused: Throttled,
    relay_failed: Throttled,
}

/// What one connected client has cost: shared by its handlers.
#[derive(Debug)]
struct ClientLedger {
    budget: Mutex<ErrorBudget>,
    /// Set once the client spent its budget: its later packets are ignored.
    cut_off: std::sync::atomic::AtomicBool,
}

/// The connect error a client gets when `max_clients` are connected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "server full: {max_clients} clients are connected, the most this server accepts (server.max_clients); try again later"
)]
pub struct ServerFull {
    pub max_clients: usize,
}

/// The other nodes of a cluster, as the hub needs them (see `cluster.rs`).
pub trait SharedHub: Send + Sync {
    /// Hands an accepted event to the other nodes, in the order of the
    /// calls (one sender's relay calls it in its order). Waits only while
    /// the bounded outbox is full (backpressure on the sender), never for
    /// Redis to answer: the hub delivers to this node's own clients itself,
    /// once, whatever becomes of the publish (an event the other nodes
    /// cannot get is counted as a local fallback, never retried).
    ///
    /// In ordered mode ([`SharedHub::ordered`]) the event is appended to the
    /// shared stream instead, and every node (this one too) delivers it when
    /// the stream gives it back: [`Handoff::FromStream`]. When it cannot be
    /// appended now (no link), [`Handoff::DeliverHere`]: this node's clients
    /// get it at once, outside the stream's order.
    fn publish(&self, event: &StampedEvent) -> Pin<Box<dyn Future<Output = Handoff> + Send + '_>>;
    /// Whether events reach clients from the shared stream, in its one
    /// order (cluster mode with connection state recovery): offsets then
    /// mean the same on every node, and a session moves between nodes.
    fn ordered(&self) -> bool {
        false
    }
    /// Where the session `pid`, held or lost on another node, began, if it
    /// may still be resumed (ordered mode); `None` otherwise.
    fn session_began<'a>(
        &'a self,
        _pid: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<Offset>> + Send + 'a>> {
        Box::pin(async { None })
    }
    /// A connection here holds session `pid` (begun at `began`): it stays
    /// resumable on every node while held (ordered mode).
    fn session_held(&self, _pid: &str, _began: Offset) {}
    /// Session `pid`'s connection here is gone: resumable on any node for
    /// `max_disconnection_duration` from now (ordered mode).
    fn session_lost(&self, _pid: &str, _began: Offset) {}
    /// Records an accepted event in the shared history; never blocks.
    fn record(&self, event: &StampedEvent);
    /// The shared history's `limit` most recent events (all if `None`),
    /// oldest first; `None` when it cannot be read now.
    fn history(
        &self,
        limit: Option<usize>,
    ) -> Pin<Box<dyn Future<Output = Option<Vec<Value>>> + Send + '_>>;
    /// `get_history {since}` on the shared history (see [`SharedPage`]);
    /// `None` when it cannot be read now.
    fn history_since<'a>(
        &'a self,
        since: &'a str,
        limit: usize,
        max_bytes: usize,
    ) -> Pin<Box<dyn Future<Output = Option<SharedPage>> + Send + 'a>>;
}

/// Who delivers an event handed to [`SharedHub::publish`] to this node's clients.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Handoff {
    /// The relay, now.
    DeliverHere,
    /// The shared stream's reader, in the stream's order
    /// ([`Hub::deliver_ordered`]).
    FromStream,
}

/// A page of the shared history after one event, in the stream's order.
#[derive(Debug, Default)]
pub struct SharedPage {
    /// The events after the one asked for (or, when it was not found, the
    /// oldest kept), oldest first, as stamped JSON text: at most the page's
    /// `limit` and `max_bytes` (at least one if any).
    pub events: Vec<String>,
    /// More events follow the last one given.
    pub more: bool,
    /// Whether the event asked for is in the shared history. When not (too
    /// old and trimmed, not written yet, or never issued), `events` are the
    /// oldest kept and the answer says there may be a gap.
    pub found: bool,
}

/// An adapter the hub can serve with: how to finish registering `/`
/// (`io.ns(..)` returns the adapter's init result).
pub trait HubAdapter: Adapter + socketioxide_core::adapter::DefinedAdapter {
    fn finish_init(init: Self::InitRes);
}

impl HubAdapter for LocalAdapter {
    fn finish_init(_init: ()) {}
}

/// Builds an adapter's shared state for each serving generation.
pub type AdapterStateFactory<A> = Arc<
    dyn Fn()
            -> <A as socketioxide_core::adapter::CoreAdapter<socketioxide::adapter::Emitter>>::State
        + Send
        + Sync,
>;

/// The Socket.IO hub. Cheap to clone (one `Arc`); every clone is the same hub.
///
/// Counters and history live as long as the `Hub`, across any number of
/// serving generations: `restart_service` closes the current `SocketIo`
/// ([`Hub::close`]) and attaches a new one ([`Hub::socketio_layer`]).
pub struct Hub<A: Adapter = LocalAdapter> {
    inner: Arc<Inner<A>>,
}

impl<A: Adapter> Clone for Hub<A> {
    fn clone(&self) -> Self {
        Hub {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// A reference to a [`Hub`] that does not keep it alive: what the handlers
/// of its own `SocketIo` hold (the hub holds that `SocketIo`, so a strong
/// reference there would be a cycle, and a hub dropped without
/// [`Hub::close`] would never be freed).
pub struct WeakHub<A: Adapter = LocalAdapter> {
    inner: Weak<Inner<A>>,
}

impl<A: Adapter> Clone for WeakHub<A> {
    fn clone(&self) -> Self {
        WeakHub {
            inner: Weak::clone(&self.inner),
        }
    }
}

impl<A: Adapter> WeakHub<A> {
    /// The hub, if it is still alive.
    pub fn upgrade(&self) -> Option<Hub<A>> {
        self.inner.upgrade().map(|inner| Hub { inner })
    }
}

struct Inner<A: Adapter> {
    settings: HubSettings,
    clock: Arc<dyn Clock>,
    started: Moment,
    stats: Arc<ServiceStats>,
    /// Stamped events with their offsets, oldest first, bounded by
    /// `settings.event_history_size` and `event_history_max_bytes`.
    history: Mutex<EventLog<StampedEvent>>,
    /// Connection state recovery, when on.
    recovery: Option<Recovery>,
    /// With recovery on a single node: the one delivery order (offsets').
    sequencer: Option<Arc<Sequencer>>,
    /// The ids of events accepted here while the log follows the cluster's
    /// shared stream (ordered mode), where offsets are the stream's:
    /// `<this process's epoch>-<n>`, never an offset of the log.
    own_ids: (Epoch, AtomicU64),
    /// Sockets counted in `clients_connected`; the counter always equals its
    /// length, so a socket is uncounted exactly once whichever path (its own
    /// disconnect, `disconnect_all`, `close`) gets there first.
    clients: Mutex<HashSet<Sid>>,
    /// The `SocketIo` of the current serving generation, if any.
    io: RwLock<Option<SocketIo<A>>>,
    /// The adapter state of each new generation.
    adapter_state: AdapterStateFactory<A>,
    /// The other nodes, in cluster mode.
    shared: OnceLock<Arc<dyn SharedHub>>,
    /// Stamped events for live watchers (the status page); sent to only
    /// while someone subscribed, bounded (a lagging watcher loses events).
    tap: tokio::sync::broadcast::Sender<StampedEvent>,
    warnings: Warnings,
    /// Recipients that read nothing for `slow_reader_timeout`: not waited for.
    stalled: Mutex<HashSet<Sid>>,
    /// `stalled.len()`, read without the lock: a delivery takes the lock only
    /// while some recipient is stalled.
    stalled_count: AtomicUsize,
    /// Every Socket.IO connection of every generation, severable at once.
    transports: Arc<Transports>,
}

/// Events a live watcher may fall behind by before it is told it lagged.
pub const EVENT_TAP_CAPACITY: usize = 256;

/// The `gap` of a `get_history {since}` answer.
fn gap_reason(gap: Gap) -> &'static str {
    match gap {
        Gap::OtherEpoch => "other_epoch",
        Gap::Ahead => "never_issued",
        Gap::Forgotten => "forgotten",
    }
}

/// Locks a mutex even if a thread panicked while holding it: the data behind
/// every lock here (a history, a set of ids) stays valid after any panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Connection state recovery's state: the sessions, and the recovered
/// sockets whose live deliveries wait for (or skip what was in) their replay.
struct Recovery {
    sessions: Mutex<SessionTable<Sid>>,
    /// Lock order: `gates`, then `history`; never `history` then `gates`.
    gates: Mutex<HashMap<Sid, Gate>>,
}

/// A recovered socket's place between its replay and live deliveries.
#[derive(Copy, Clone, Debug)]
enum Gate {
    /// Resumed, replay not yet sent: live deliveries skip it (each event they
    /// carry is in the log already, so the replay will carry it).
    Replaying,
    /// Replayed through this seq: live deliveries of events up to it skip it.
    Through(u64),
}

/// Recovery on one node delivers events in their offsets' order, whoever
/// sent them: a client's last offset then says exactly what it has, and a
/// replay from it can never skip an event it did not get. Each sender's
/// relay runs on its own task, so two senders' relays could otherwise
/// deliver their events in either order. `ingest` queues every event here
/// as it issues its offset (under the log's lock); a relay takes the turn
/// and delivers the queue, in order, up to its own event
/// ([`Hub::deliver_in_turn`]): with one sender, its own event alone, on its
/// own task; with several, whoever holds the turn delivers the others'
/// too, and they find theirs delivered. Each relay returns once its event
/// is, so the backpressure on its sender holds. In cluster mode the shared
/// stream is the order instead.
#[derive(Default)]
struct Sequencer {
    queue: Mutex<VecDeque<StampedEvent>>,
    /// Held while delivering from the queue (tokio's mutex is fair).
    turn: tokio::sync::Mutex<()>,
    /// The newest seq delivered (or passed over: no client then).
    delivered: AtomicU64,
}

/// Put in a resumed socket's extensions by the connect middleware: replay
/// the events after this offset before anything else.
#[derive(Copy, Clone, Debug)]
struct ReplayFrom(Offset);

/// A fresh epoch for this process's event log (or the cluster stream it
/// proposes): its offsets can never be
/// mistaken for those of another process (whose log is gone). std's
/// `RandomState` is seeded from the OS's randomness.
pub fn new_epoch() -> Epoch {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(crate::daemon::os::clock::wall_now().as_millis());
    Epoch(hasher.finish())
}

/// A private session id: two random socket ids (about 190 bits).
fn new_pid() -> String {
    format!("{}{}", Sid::new(), Sid::new())
}

/// Whether `text` has the shape of a pid [`new_pid`] issues: two socket ids,
/// 32 url-safe base64 characters.
fn is_pid(text: &str) -> bool {
    text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The last argument of a `claude_event` for a client with connection state
/// recovery: the event, then its offset as a string (socket.io's protocol).
struct WithOffset<'a>(&'a StampedEvent, String);

impl Serialize for WithOffset<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(self.0)?;
        tuple.serialize_element(&self.1)?;
        tuple.end()
    }
}

/// What one `claude_event` packet carries: the event alone, or with its
/// offset when recovery is on (always the same for every recipient, so
/// it can be encoded once).
enum Outgoing<'a> {
    Plain(&'a StampedEvent),
    WithOffset(WithOffset<'a>),
}

impl Serialize for Outgoing<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Outgoing::Plain(event) => event.serialize(serializer),
            Outgoing::WithOffset(pair) => pair.serialize(serializer),
        }
    }
}

impl Hub<LocalAdapter> {
    /// A single-node hub with no `SocketIo` attached yet. `clock` stamps
    /// events and measures uptime (from now).
    pub fn new(settings: HubSettings, clock: Arc<dyn Clock>) -> Self {
        Hub::with_adapter_state(settings, clock, Arc::new(|| ()))
    }
}

impl<A: Adapter> Hub<A> {
    /// A hub whose serving generations use adapter `A`, each built with
    /// state from `adapter_state`.
    pub fn with_adapter_state(
        settings: HubSettings,
        clock: Arc<dyn Clock>,
        adapter_state: AdapterStateFactory<A>,
    ) -> Self {
        let started = clock.now();
        Hub {
            inner: Arc::new(Inner {
                clock,
                started,
                stats: Arc::new(ServiceStats::default()),
                history: Mutex::new(EventLog::new(
                    new_epoch(),
                    settings.event_history_size,
                    settings.event_history_max_bytes,
                )),
                own_ids: (new_epoch(), AtomicU64::new(1)),
                sequencer: settings.recovery.map(|_| Arc::new(Sequencer::default())),
                recovery: settings.recovery.map(|limits| Recovery {
                    sessions: Mutex::new(SessionTable::new(limits)),
                    gates: Mutex::new(HashMap::new()),
                }),
                clients: Mutex::new(HashSet::new()),
                io: RwLock::new(None),
                adapter_state,
                shared: OnceLock::new(),
                tap: tokio::sync::broadcast::Sender::new(EVENT_TAP_CAPACITY),
                warnings: Warnings::default(),
                stalled: Mutex::new(HashSet::new()),
                stalled_count: AtomicUsize::new(0),
                settings,
                transports: Arc::new(Transports::default()),
            }),
        }
    }

    /// A [`WeakHub`] of this hub.
    pub fn downgrade(&self) -> WeakHub<A> {
        WeakHub {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Sockets socketioxide still holds in the default namespace of the
    /// current generation. A disconnected socket leaves it only once its
    /// disconnect handler has run.
    pub fn sockets_open(&self) -> usize {
        self.current_io()
            .and_then(|io| io.of("/"))
            .map_or(0, |ns| ns.sockets().len())
    }

    /// Joins the hub to the other nodes of a cluster; once, before serving.
    /// Returns false (and changes nothing) if it was already joined.
    pub fn share_with(&self, shared: Arc<dyn SharedHub>) -> bool {
        self.inner.shared.set(shared).is_ok()
    }

    fn shared(&self) -> Option<&Arc<dyn SharedHub>> {
        self.inner.shared.get()
    }

    pub fn settings(&self) -> &HubSettings {
        &self.inner.settings
    }

    /// The hub's Socket.IO connections (the door enlists them).
    pub fn transports(&self) -> &Arc<Transports> {
        &self.inner.transports
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<ServiceStats> {
        &self.inner.stats
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Time since the hub was created (not since the last restart).
    pub fn uptime(&self) -> Duration {
        self.inner.clock.now() - self.inner.started
    }

    /// Applies [`HubSettings`] to a socketioxide builder (any adapter).
    pub fn configure<B: Adapter>(&self, builder: SocketIoBuilder<B>) -> SocketIoBuilder<B> {
        let s = &self.inner.settings;
        builder
            .max_payload(s.max_payload_bytes)
            .max_buffer_size(s.socket_buffer_packets)
            .ping_interval(s.ping_interval)
            .ping_timeout(s.ping_timeout)
            .connect_timeout(s.door.handshake_timeout)
    }

    /// Makes `io` the current serving generation. The caller registers the
    /// default namespace with [`Hub::on_connect`] before serving.
    pub fn attach(&self, io: SocketIo<A>) {
        *self
            .inner
            .io
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(io);
    }

    fn current_io(&self) -> Option<SocketIo<A>> {
        self.inner
            .io
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The connect handler of the default namespace: counts the client,
    /// registers the event handlers and sends `connection_ack`.
    pub fn on_connect(&self, socket: SocketRef<A>) {
        let now = self.inner.clock.wall();
        self.count_connected(socket.id);
        self.inner.stats.record_activity(now);

        let s = &self.inner.settings;
        socket.on(
            CLAUDE_EVENT,
            OrderedEventHandler {
                hub: self.clone(),
                queue: OnceLock::new(),
                client: ClientLedger {
                    budget: Mutex::new(ErrorBudget::new(
                        s.client_error_budget,
                        s.client_error_window,
                    )),
                    cut_off: false.into(),
                },
            },
        );

        let hub = self.clone();
        socket.on(
            GET_HISTORY,
            async move |socket: SocketRef<A>, Data::<Value>(request)| {
                let answer = hub.history_answer(&request).await;
                hub.reply(&socket, EVENT_HISTORY, &answer);
            },
        );

        let hub = self.clone();
        socket.on(PING, async move |socket: SocketRef<A>| {
            let now = hub.touch();
            let answer = serde_json::json!({
                "timestamp": now.to_iso8601(),
                "server_id": hub.inner.settings.server_id,
            });
            hub.reply(&socket, PONG, &answer);
        });

        let hub = self.clone();
        socket.on(GET_VERSION, async move |socket: SocketRef<A>| {
            hub.touch();
            let answer = serde_json::json!({
                "version": hub.inner.settings.version,
                "server_id": hub.inner.settings.server_id,
            });
            hub.reply(&socket, VERSION_INFO, &answer);
        });

        let hub = self.clone();
        socket.on_disconnect(async move |socket: SocketRef<A>| {
            hub.touch();
            hub.forget_client(socket.id);
        });

        if let Some(ReplayFrom(from)) = socket.extensions.get::<ReplayFrom>() {
            self.replay(&socket, from);
        }

        let ack = serde_json::json!({
            "server_id": self.inner.settings.server_id,
            "version": self.inner.settings.version,
            "sid": socket.id.to_string(),
            "timestamp": now.to_iso8601(),
        });
        self.reply(&socket, CONNECTION_ACK, &ack);
    }

    /// The answer to `get_history` (`limit`, `since`).
    async fn history_answer(&self, request: &Value) -> HistoryAnswer {
        self.touch();
        let limit = request
            .get("limit")
            .and_then(Value::as_u64)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        match request.get("since") {
            Some(since) => self.shared_history_since(since, limit).await,
            None => {
                let events = self.shared_history(limit).await;
                HistoryAnswer {
                    count: events.len(),
                    events,
                    more: None,
                    gap: None,
                }
            }
        }
    }

    /// Accepts an event from outside Socket.IO (`POST /api/events`): stamped,
    /// kept in the history and delivered to every client, like a socket's
    /// `claude_event`. Returns the stamped event.
    /// `None` if it could not be serialised (counted in `errors`).
    pub async fn publish(&self, payload: &Payload<'_>) -> Option<StampedEvent> {
        let event = self.ingest(payload, None)?;
        match self.current_io().and_then(|io| io.of("/")) {
            Some(ns) => {
                let result = self.relay(ns, &event).await;
                self.count_relay(result);
            }
            // Between two serving generations: no client here to deliver
            // to now, but the other nodes (and, in ordered mode, this
            // node's log, through the stream) still get it.
            None => {
                if let Some(shared) = self.shared() {
                    shared.publish(&event).await;
                }
                if let (Some(sequencer), Some(offset)) = (&self.inner.sequencer, event.offset()) {
                    // Out of the queue, in its turn (no client to go to now).
                    self.deliver_in_turn(sequencer, offset.seq).await;
                }
            }
        }
        Some(event)
    }

    /// Emits `event` to `to`'s recipients: this node's are served patiently
    /// ([`Hub::deliver_patiently`]); in cluster mode the event is first handed
    /// to the other nodes ([`SharedHub::publish`], which does not wait for
    /// Redis), and each of them delivers it to its own clients the same way
    /// ([`Hub::deliver_remote`]). This node's clients get it exactly once
    /// whatever becomes of the publish.
    async fn relay(
        &self,
        to: BroadcastOperators<A>,
        event: &StampedEvent,
    ) -> Result<(), BroadcastError> {
        if let Some(shared) = self.shared()
            && shared.publish(event).await == Handoff::FromStream
        {
            return Ok(());
        }
        if let (Some(sequencer), Some(offset)) = (&self.inner.sequencer, event.offset()) {
            // Queued by `ingest`: delivered in offset order.
            self.deliver_in_turn(sequencer, offset.seq).await;
            return Ok(());
        }
        let recipients = self.past_their_replay(to.local().sockets(), event);
        self.deliver_patiently(recipients, &self.outgoing(event))
            .await
    }

    /// Takes the [`Sequencer`]'s turn and delivers the queue, in offset
    /// order, until event `seq` is delivered (by this call or an earlier
    /// holder of the turn), each by the relay's rule
    /// ([`Hub::deliver_remote`]: never to its sender, past the replay gates,
    /// patiently).
    async fn deliver_in_turn(&self, sequencer: &Sequencer, seq: u64) {
        let _turn = sequencer.turn.lock().await;
        while sequencer.delivered.load(Ordering::Acquire) < seq {
            let next = lock(&sequencer.queue).pop_front();
            let Some(event) = next else { break };
            self.deliver_remote(&event).await;
            if let Some(offset) = event.offset() {
                sequencer.delivered.store(offset.seq, Ordering::Release);
            }
        }
    }

    /// Delivers an event another node accepted to this node's clients, by
    /// the same rule as a local relay ([`Hub::deliver_patiently`]: a full
    /// recipient is waited for, up to `slow_reader_timeout`). Drops are
    /// counted as the recipients' own, as for a local relay; the event
    /// itself was counted by the node that accepted it.
    pub async fn deliver_remote(&self, event: &StampedEvent) {
        let Some(ns) = self.current_io().and_then(|io| io.of("/")) else {
            return;
        };
        let mut recipients = ns.local().sockets();
        if let Some(sender) = event.sender() {
            recipients.retain(|socket| socket.id != sender);
        }
        let recipients = self.past_their_replay(recipients, event);
        if let Err(BroadcastError::Socket(failed)) = self
            .deliver_patiently(recipients, &self.outgoing(event))
            .await
        {
            self.count_dropped(&failed);
        }
    }

    /// Delivers the shared stream's event `json`, numbered `offset` there,
    /// to this node's clients (but its `sender`, if a socket here sent it) (ordered mode: every node delivers every event
    /// from the stream, in its order, so an offset means the same on every
    /// node). It is kept in the log first, so a replay or a resume on any
    /// node finds it. An event already here is skipped. One that follows a
    /// hole (events this node never read: it was away longer than the
    /// stream keeps them) is kept, but this node's clients missed the hole:
    /// their transports are closed, and since their offsets no longer
    /// resume, each reconnects to a new session (`recovered` false) and
    /// knows to catch up, never a silent gap.
    pub async fn deliver_ordered(&self, json: String, offset: Offset, sender: Option<Sid>) {
        let event = match StampedEvent::from_json(json, offset) {
            Ok(event) => event.sent_by(sender),
            Err(error) => {
                tracing::debug!(%error, "a stream entry that is not JSON: skipped");
                return;
            }
        };
        let numbered = lock(&self.inner.history).push_at(offset.seq, event.clone(), event.len());
        match numbered {
            Numbered::Next => self.deliver_remote(&event).await,
            Numbered::Known => {}
            Numbered::AfterGap => {
                let clients = self.sever_transports();
                tracing::warn!(
                    clients,
                    "this node missed events of the shared stream (it was away longer than the stream keeps them): its clients reconnect to new sessions and catch up with get_history"
                );
            }
        }
    }

    /// Where this node's log stands in the shared stream: its epoch and the
    /// last event kept (ordered mode).
    pub fn stream_head(&self) -> Offset {
        lock(&self.inner.history).head()
    }

    /// Follows the shared stream `epoch` from its event `head` on (the
    /// stream this node read before is gone, or it never read one): the
    /// log starts over, and no offset of the old stream resumes. If the old
    /// stream had given this node no event, its clients missed nothing:
    /// their sessions begin at `head` of the new one. Otherwise their
    /// offsets belong to a lost stream: they reconnect to new sessions.
    pub fn follow_stream(&self, epoch: Epoch, head: u64) {
        // Ordered mode runs only with recovery on.
        let Some(recovery) = &self.inner.recovery else {
            return;
        };
        let mut gates = lock(&recovery.gates);
        let mut log = lock(&self.inner.history);
        let old = log.head();
        log.restart_at(epoch, head);
        let new = log.head();
        drop(log);
        gates.clear();
        drop(gates);
        if old.seq == 0 {
            let mut sessions = lock(&recovery.sessions);
            sessions.rebase(old, new);
            let held = sessions.connected();
            drop(sessions);
            if let Some(shared) = self.shared() {
                for (pid, began) in held {
                    shared.session_held(&pid, began);
                }
            }
            return;
        }
        let clients = self.sever_transports();
        if clients > 0 {
            tracing::info!(
                clients,
                "following a new shared event stream: this node's clients reconnect to new sessions"
            );
        }
    }

    /// Emits `args` (the event's argument(s), e.g. the stamped event) as one
    /// `claude_event` to each recipient. The packet is encoded once and its
    /// bytes shared by every recipient, as an adapter broadcast does; unlike a
    /// broadcast, each recipient's own result is seen, so that a full one can
    /// be waited for.
    ///
    /// First every recipient with room gets the packet at once; then the
    /// recipients whose buffer was full are waited for (backpressure: the
    /// sender's queue then fills and its next events are refused to it, told),
    /// together, for at most `slow_reader_timeout`. A recipient still full
    /// then is stalled: its deliveries are dropped (counted as its own,
    /// `events_dropped_recipient_full`) without waiting, until its buffer has
    /// room again; its transport is closed by the next Engine.IO heartbeat
    /// (the ping cannot be queued). socketioxide 0.18.9 offers no public way
    /// to close one socket's transport while its buffer is full
    /// (`Socket::disconnect` must queue a packet first).
    async fn deliver_patiently<T: Serialize + ?Sized>(
        &self,
        recipients: Vec<SocketRef<A>>,
        args: &T,
    ) -> Result<(), BroadcastError> {
        let Some(first) = recipients.first() else {
            return Ok(());
        };
        let packet = match first.encode_event(CLAUDE_EVENT, args) {
            Ok(packet) => packet,
            Err(SendError::Serialize(error)) => return Err(BroadcastError::Serialize(error)),
            Err(SendError::Socket(error)) => return Err(BroadcastError::Socket(vec![error])),
        };
        let mut failed = Vec::new();
        let mut full = Vec::new();
        for socket in recipients {
            match socket.emit_encoded(&packet) {
                Ok(()) => self.unstall(socket.id),
                Err(SocketError::InternalChannelFull) if !self.is_stalled(socket.id) => {
                    full.push(socket);
                }
                Err(error) => failed.push(error),
            }
        }
        let mut waited = Duration::ZERO;
        while !full.is_empty() {
            if waited >= self.inner.settings.slow_reader_timeout {
                for socket in full.drain(..) {
                    let mut stalled = lock(&self.inner.stalled);
                    if stalled.insert(socket.id) {
                        self.inner
                            .stalled_count
                            .store(stalled.len(), Ordering::Relaxed);
                        drop(stalled);
                        tracing::warn!(sid = %socket.id, "a recipient read nothing for {:?}: its deliveries are dropped until it reads", self.inner.settings.slow_reader_timeout);
                    }
                    failed.push(SocketError::InternalChannelFull);
                }
                break;
            }
            tokio::time::sleep(SLOW_READER_POLL).await;
            waited += SLOW_READER_POLL;
            full.retain(|socket| match socket.emit_encoded(&packet) {
                Ok(()) => false,
                Err(SocketError::InternalChannelFull) => true,
                Err(error) => {
                    failed.push(error);
                    false
                }
            });
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(BroadcastError::Socket(failed))
        }
    }

    /// What a `claude_event` packet carries (see [`Outgoing`]).
    fn outgoing<'a>(&self, event: &'a StampedEvent) -> Outgoing<'a> {
        match (&self.inner.recovery, event.offset()) {
            (Some(_), Some(offset)) => Outgoing::WithOffset(WithOffset(event, offset.to_string())),
            _ => Outgoing::Plain(event),
        }
    }

    /// The recipients of a live delivery of `event`, less the recovered
    /// sockets whose replay carries it (or will: it is in the log already).
    fn past_their_replay(
        &self,
        mut recipients: Vec<SocketRef<A>>,
        event: &StampedEvent,
    ) -> Vec<SocketRef<A>> {
        let (Some(recovery), Some(offset)) = (&self.inner.recovery, event.offset()) else {
            return recipients;
        };
        let gates = lock(&recovery.gates);
        if !gates.is_empty() {
            recipients.retain(|socket| match gates.get(&socket.id) {
                None => true,
                Some(Gate::Replaying) => false,
                Some(Gate::Through(seq)) => offset.seq > *seq,
            });
        }
        recipients
    }

    /// The connect middleware of recovery (the last to run, so a refused
    /// connect never opens a session): a client that names a kept session
    /// (`pid`) and an offset whose successors are all kept resumes it (its
    /// replay is sent by [`Hub::on_connect`]); any other gets a new session.
    /// Either way the CONNECT packet carries the session's `pid`.
    async fn start_session(&self, socket: &Socket<A>, auth: Option<&Value>) {
        let Some(recovery) = &self.inner.recovery else {
            return;
        };
        let sid = socket.id;
        let asked = auth
            .and_then(|auth| auth.get("pid"))
            .and_then(Value::as_str);
        // Only a pid of the shape this hub issues is looked up anywhere (in
        // cluster mode: in Redis): a client's made-up pid costs nothing.
        let well_formed = asked.is_none_or(is_pid);
        let asked = asked.filter(|pid| is_pid(pid));
        if let Some(pid) = asked {
            self.adopt_from_cluster(recovery, pid).await;
        }
        let now = self.inner.clock.now();
        let offset = auth
            .and_then(|auth| auth.get("offset"))
            .and_then(Value::as_str)
            .map(str::parse::<Offset>);
        let resumed = {
            let log = lock(&self.inner.history);
            let mut sessions = lock(&recovery.sessions);
            match (asked, offset) {
                (None, _) if !well_formed => {
                    sessions.count_refused();
                    None
                }
                (None, _) => None,
                (Some(_), Some(Err(_))) => {
                    sessions.count_refused();
                    None
                }
                (Some(pid), offset) => {
                    let offset = offset.and_then(Result::ok);
                    match sessions.resume(pid, offset, sid, now, &log) {
                        Ok(from) => Some((pid.to_owned(), from)),
                        Err(why) => {
                            tracing::debug!(%sid, ?why, "session not recovered: a new one");
                            None
                        }
                    }
                }
            }
        };
        let (pid, began) = match resumed {
            Some((pid, from)) => {
                lock(&recovery.gates).insert(sid, Gate::Replaying);
                socket.extensions.insert(ReplayFrom(from));
                let began = lock(&recovery.sessions).began(&pid).unwrap_or(from);
                (pid, began)
            }
            None => {
                let pid = new_pid();
                let head = lock(&self.inner.history).head();
                lock(&recovery.sessions).open(pid.clone(), sid, head, now);
                (pid, head)
            }
        };
        if self.ordered()
            && let Some(shared) = self.shared()
        {
            shared.session_held(&pid, began);
        }
        socket.extensions.insert(RecoveryPid(pid));
    }

    /// In ordered mode, a session this node does not know may have been
    /// opened on another node (its client reconnected here): if the cluster
    /// still holds it, it is kept here too, as lost just now, so that the
    /// usual resume (offset checked against this node's log, which holds
    /// the same stream) can take it.
    async fn adopt_from_cluster(&self, recovery: &Recovery, pid: &str) {
        if !self.ordered() {
            return;
        }
        {
            // A copy kept here may have expired though the session lives on
            // elsewhere (its client moved away, then came back).
            let mut sessions = lock(&recovery.sessions);
            sessions.expire(self.inner.clock.now());
            if sessions.contains(pid) {
                return;
            }
        }
        let Some(shared) = self.shared() else { return };
        if let Some(began) = shared.session_began(pid).await {
            let now = self.inner.clock.now();
            lock(&recovery.sessions).adopt(pid.to_owned(), began, now);
        }
    }

    /// Sends a resumed socket the events it missed, in order, before any
    /// live delivery (which skips it until then: see [`Gate`]). Under the
    /// gates' lock, so that no live delivery passes between the log's
    /// snapshot and the gate's opening.
    fn replay(&self, socket: &SocketRef<A>, from: Offset) {
        let Some(recovery) = &self.inner.recovery else {
            return;
        };
        let mut gates = lock(&recovery.gates);
        let (page, head) = {
            let log = lock(&self.inner.history);
            (log.after(from, usize::MAX, usize::MAX), log.head())
        };
        let events = match page {
            Ok(page) => page.events,
            Err(gap) => {
                // Forgotten since the middleware checked (a burst in
                // between): cut it off rather than leave a silent gap.
                tracing::warn!(sid = %socket.id, ?gap, "replay no longer possible: disconnecting");
                gates.remove(&socket.id);
                drop(gates);
                let _ = socket.clone().disconnect();
                return;
            }
        };
        let mut sent = 0;
        for event in &events {
            if let Err(error) = socket.emit(CLAUDE_EVENT, &self.outgoing(event)) {
                // Its buffer is full (or it is closing). The gate stays shut,
                // so it gets nothing more on this connection, never a gap:
                // the disconnect (or, if that cannot be queued either, the
                // next heartbeat) ends it, and the client resumes from the
                // last event it got.
                ServiceStats::add(&self.inner.stats.events_dropped, 1);
                tracing::debug!(sid = %socket.id, %error, "replay interrupted: disconnecting");
                drop(gates);
                lock(&recovery.sessions).count_replayed(sent);
                tokio::spawn(disconnect_when_possible(
                    socket.clone(),
                    self.inner.settings.slow_reader_timeout,
                ));
                return;
            }
            sent += 1;
        }
        gates.insert(socket.id, Gate::Through(head.seq));
        drop(gates);
        lock(&recovery.sessions).count_replayed(sent);
        tracing::debug!(sid = %socket.id, replayed = sent, "session recovered");
    }

    /// Whether `sid` is stalled; the set is locked only while some recipient is.
    fn is_stalled(&self, sid: Sid) -> bool {
        self.inner.stalled_count.load(Ordering::Relaxed) > 0
            && lock(&self.inner.stalled).contains(&sid)
    }

    /// `sid` took a delivery: it is waited for again when full.
    fn unstall(&self, sid: Sid) {
        if self.inner.stalled_count.load(Ordering::Relaxed) > 0 {
            let mut stalled = lock(&self.inner.stalled);
            if stalled.remove(&sid) {
                self.inner
                    .stalled_count
                    .store(stalled.len(), Ordering::Relaxed);
            }
        }
    }

    /// `get_history`'s answer: the shared history in cluster mode (this
    /// node's own while it cannot be read), this node's otherwise.
    /// At most `limit` events (capped by `event_history_size`) and
    /// `history_answer_max_bytes` bytes.
    pub async fn shared_history(&self, limit: Option<usize>) -> Vec<StampedEvent> {
        let s = &self.inner.settings;
        let limit = limit.unwrap_or(usize::MAX).min(s.event_history_size);
        if let Some(shared) = self.shared()
            && let Some(events) = shared.history(Some(limit)).await
        {
            let mut bytes = 0;
            let mut answer: Vec<StampedEvent> = events
                .iter()
                .rev()
                .filter_map(|event| StampedEvent::new(event).ok())
                .take_while(|event| {
                    bytes += event.len();
                    bytes <= s.history_answer_max_bytes
                })
                .collect();
            answer.reverse();
            return answer;
        }
        self.history_events(Some(limit))
    }

    /// Up to `limit` most recent events (all kept events if `None`) within
    /// `history_answer_max_bytes`, oldest first, as kept.
    pub fn history_events(&self, limit: Option<usize>) -> Vec<StampedEvent> {
        lock(&self.inner.history).newest(
            limit.unwrap_or(usize::MAX),
            self.inner.settings.history_answer_max_bytes,
        )
    }

    /// `get_history {since}`: in cluster mode, the shared history's events
    /// after the one whose `event_id` is `since`, in the stream's order
    /// (gap `not_in_shared_history` with the oldest kept, when it is not
    /// there); this node's own ([`Hub::history_since`]) otherwise, or while
    /// the shared history cannot be read.
    async fn shared_history_since(&self, since: &Value, limit: Option<usize>) -> HistoryAnswer {
        let s = &self.inner.settings;
        let limit = limit.unwrap_or(usize::MAX).min(s.event_history_size);
        if let (Some(shared), Some(text)) = (self.shared(), since.as_str())
            && let Some(page) = shared
                .history_since(text, limit, s.history_answer_max_bytes)
                .await
        {
            let events: Vec<StampedEvent> = page
                .events
                .into_iter()
                .filter_map(|json| RawValue::from_string(json).ok())
                .map(|raw| StampedEvent(Arc::from(raw), None, None))
                .collect();
            return HistoryAnswer {
                count: events.len(),
                events,
                more: Some(page.more),
                gap: (!page.found).then_some("not_in_shared_history"),
            };
        }
        self.history_since(since, Some(limit))
    }

    /// `get_history {since}`: the events of this node's log after the one
    /// whose `event_id` is `since`, oldest first, at most `limit` (capped by
    /// `event_history_size`) and `history_answer_max_bytes`. If they cannot
    /// all be given (an id of another process, never issued, or older than
    /// the log), the kept events from the oldest, and `gap` says why.
    fn history_since(&self, since: &Value, limit: Option<usize>) -> HistoryAnswer {
        let s = &self.inner.settings;
        let limit = limit.unwrap_or(usize::MAX).min(s.event_history_size);
        let log = lock(&self.inner.history);
        let (page, gap) = match since.as_str().map(str::parse::<Offset>) {
            Some(Ok(offset)) => match log.after(offset, limit, s.history_answer_max_bytes) {
                Ok(page) => (Ok(page), None),
                Err(gap) => (Err(()), Some(gap_reason(gap))),
            },
            _ => (Err(()), Some("not_an_event_id")),
        };
        let page =
            page.or_else(|()| log.after(log.oldest_resumable(), limit, s.history_answer_max_bytes));
        let (events, more) = match page {
            Ok(page) => (page.events, page.more),
            Err(_) => (Vec::new(), false),
        };
        HistoryAnswer {
            count: events.len(),
            events,
            more: Some(more),
            gap,
        }
    }

    /// [`Hub::history_events`], parsed.
    pub fn history(&self, limit: Option<usize>) -> Vec<Value> {
        self.history_events(limit)
            .iter()
            .filter_map(|event| event.to_value().ok())
            .collect()
    }

    /// Total bytes of the kept events.
    pub fn history_bytes(&self) -> usize {
        lock(&self.inner.history).bytes()
    }

    /// How many events the history holds now.
    pub fn history_len(&self) -> usize {
        lock(&self.inner.history).len()
    }

    /// Connection state recovery's counters (`None` while it is off).
    pub fn session_counters(&self) -> Option<(usize, SessionCounters)> {
        let recovery = self.inner.recovery.as_ref()?;
        let sessions = lock(&recovery.sessions);
        Some((sessions.len(), sessions.counters()))
    }

    /// Closes every client's transport without a word (the recovery
    /// manager's clear_connections): each client sees its connection close
    /// and reconnects with its usual backoff (socket.io-client and
    /// python-socketio alike), where a Socket.IO DISCONNECT would be final.
    /// Returns how many clients were connected; each is uncounted when
    /// socketioxide notices its transport is gone (at once for a WebSocket,
    /// at the next heartbeat for a long-polling client between requests).
    pub fn sever_transports(&self) -> usize {
        let clients = lock(&self.inner.clients).len();
        let connections = self.inner.transports.sever();
        tracing::debug!(clients, connections, "severed the Socket.IO transports");
        clients
    }

    /// Disconnects every client of this node with a Socket.IO DISCONNECT. Returns how many were disconnected; the counters
    /// are exact when it returns. Clients see "io server disconnect", after
    /// which socket.io clients do not reconnect on their own.
    ///
    /// A client whose outgoing buffer is full cannot be sent the disconnect
    /// packet; socketioxide then leaves it connected, and it is not counted.
    pub async fn disconnect_all(&self) -> usize {
        let Some(ns) = self.current_io().and_then(|io| io.of("/")) else {
            return 0;
        };
        let mut disconnected = 0;
        for socket in ns.sockets() {
            let sid = socket.id;
            match socket.disconnect() {
                Ok(()) => {
                    // The socket's disconnect handler may run on another
                    // worker and forget it first: it was still disconnected
                    // here, so it counts either way (and is uncounted once).
                    self.forget_client(sid);
                    disconnected += 1;
                }
                Err(error) => {
                    // Its outgoing buffer is full: that client's doing, not
                    // the hub's (its transport closes at the next heartbeat).
                    tracing::warn!(%sid, %error, "could not disconnect client");
                }
            }
        }
        disconnected
    }

    /// Closes the current serving generation: every client's transport is
    /// closed (clients see "transport close" and reconnect), and the counters
    /// are corrected (socketioxide does not run disconnect handlers on this
    /// path). Call it inside the HTTP server's graceful-shutdown future.
    /// Returns how many clients were counted as connected before the close.
    pub async fn close(&self) -> usize {
        let io = self
            .inner
            .io
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(io) = io {
            io.close().await;
        }
        if let Some(recovery) = &self.inner.recovery {
            lock(&recovery.gates).clear();
            let mut sessions = lock(&recovery.sessions);
            let lost = sessions.connected();
            sessions.release_all(self.inner.clock.now());
            drop(sessions);
            if self.ordered()
                && let Some(shared) = self.shared()
            {
                for (pid, began) in lost {
                    shared.session_lost(&pid, began);
                }
            }
        }
        let mut clients = lock(&self.inner.clients);
        let closed = clients.len();
        clients.clear();
        self.inner
            .stats
            .clients_connected
            .store(0, Ordering::Relaxed);
        closed
    }

    /// Stamps (in the payload's text: no tree is built), counts and records
    /// an event; the caller relays it. `None` (counted in `errors`) if it
    /// cannot be kept.
    fn ingest(&self, payload: &Payload<'_>, sender: Option<Sid>) -> Option<StampedEvent> {
        let now = self.inner.clock.wall();
        self.inner.stats.record_activity(now);
        let received_at = now.to_iso8601();
        let stamped = if self.ordered() {
            // The stream numbers it; the id is this process's own.
            let (epoch, next) = &self.inner.own_ids;
            let id = Offset {
                epoch: *epoch,
                seq: next.fetch_add(1, Ordering::Relaxed),
            };
            let json = self.stamp(payload, &received_at, &id.to_string());
            StampedEvent::from_remote(json).map(|event| event.sent_by(sender))
        } else {
            // The id is issued under the log's lock, so the log's order is
            // the ids' order.
            let mut log = lock(&self.inner.history);
            let offset = log.next_offset();
            let json = self.stamp(payload, &received_at, &offset.to_string());
            let stamped = StampedEvent::from_json(json, offset).map(|e| e.sent_by(sender));
            if let Ok(stamped) = &stamped {
                let issued = log.push(stamped.clone(), stamped.len());
                debug_assert_eq!(issued, offset);
                if let Some(sequencer) = &self.inner.sequencer {
                    lock(&sequencer.queue).push_back(stamped.clone());
                }
            }
            stamped
        };
        let stamped = match stamped {
            Ok(stamped) => stamped,
            Err(error) => {
                ServiceStats::add(&self.inner.stats.errors, 1);
                tracing::warn!(%error, "event could not be serialised");
                return None;
            }
        };
        if let Some(shared) = self.shared() {
            shared.record(&stamped);
        }
        ServiceStats::add(&self.inner.stats.events_processed, 1);
        if self.inner.tap.receiver_count() > 0 {
            // Fails only if the last watcher left since the count: no one to tell.
            let _ = self.inner.tap.send(stamped.clone());
        }
        Some(stamped)
    }

    fn stamp(&self, payload: &Payload<'_>, received_at: &str, event_id: &str) -> String {
        payload.stamp(&Stamp {
            server_id: &self.inner.settings.server_id,
            received_at,
            event_id,
        })
    }

    /// Whether this node delivers events from the cluster's shared stream,
    /// in its one order ([`SharedHub::ordered`]), with recovery on.
    fn ordered(&self) -> bool {
        self.inner.recovery.is_some() && self.shared().is_some_and(|shared| shared.ordered())
    }

    /// Every event ingested from now on, stamped, for a live watcher.
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<StampedEvent> {
        self.inner.tap.subscribe()
    }

    fn touch(&self) -> WallTime {
        let now = self.inner.clock.wall();
        self.inner.stats.record_activity(now);
        now
    }

    /// Emits to one socket; a failure is counted, never silent.
    fn reply<T: Serialize + ?Sized>(&self, socket: &Socket<A>, event: &str, data: &T) {
        if let Err(error) = socket.emit(event, data) {
            ServiceStats::add(&self.inner.stats.events_dropped, 1);
            if matches!(error, SendError::Serialize(_)) {
                ServiceStats::add(&self.inner.stats.errors, 1);
            }
            tracing::debug!(sid = %socket.id, event, %error, "reply dropped");
        }
    }

    fn count_relay(&self, result: Result<(), BroadcastError>) {
        let stats = &self.inner.stats;
        ServiceStats::add(&stats.events_relayed, 1);
        match result {
            Ok(()) => {}
            Err(BroadcastError::Socket(failed)) => self.count_dropped(&failed),
            Err(error) => {
                ServiceStats::add(&stats.events_dropped, self.other_clients());
                ServiceStats::add(&stats.errors, 1);
                if let Some(count) = self.inner.warnings.relay_failed.hit(self.inner.clock.now()) {
                    tracing::warn!(%error, count, "relay failed (count since the last such line)");
                }
            }
        }
    }

    /// Counts deliveries dropped for their recipients: the recipients' doing
    /// (a full buffer: a reader too slow for the relay; or closing), counted
    /// per cause, never a hub error.
    fn count_dropped(&self, failed: &[SocketError]) {
        let stats = &self.inner.stats;
        ServiceStats::add(&stats.events_dropped, failed.len() as u64);
        for error in failed {
            match error {
                SocketError::InternalChannelFull => {
                    ServiceStats::add(&stats.events_dropped_recipient_full, 1);
                }
                SocketError::Closed => {
                    ServiceStats::add(&stats.events_dropped_recipient_closed, 1);
                }
            }
        }
        tracing::debug!(failed = failed.len(), "relay dropped for some clients");
    }

    /// The recipients a relay from one connected client is meant for: every
    /// other client, so that delivered + dropped adds up to sent × recipients.
    fn other_clients(&self) -> u64 {
        let connected = self.inner.stats.clients_connected.load(Ordering::Relaxed);
        connected.saturating_sub(1)
    }

    /// Admits a connecting client if fewer than `max_clients` are counted,
    /// counting it at once (so that a burst of connects cannot pass the
    /// limit); the connect handler's own count is then a no-op.
    fn admit(&self, sid: Sid) -> Result<(), ServerFull> {
        let max_clients = self.inner.settings.max_clients;
        let mut clients = lock(&self.inner.clients);
        if clients.len() >= max_clients && !clients.contains(&sid) {
            drop(clients);
            ServiceStats::add(&self.inner.stats.clients_refused_max_clients, 1);
            tracing::debug!(%sid, max_clients, "connection refused: server full");
            return Err(ServerFull { max_clients });
        }
        clients.insert(sid);
        self.inner
            .stats
            .clients_connected
            .store(clients.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn count_connected(&self, sid: Sid) {
        let mut clients = lock(&self.inner.clients);
        clients.insert(sid);
        self.inner
            .stats
            .clients_connected
            .store(clients.len() as u64, Ordering::Relaxed);
    }

    /// Uncounts a client; false if it was not counted (already forgotten).
    fn forget_client(&self, sid: Sid) -> bool {
        self.unstall(sid);
        if let Some(recovery) = &self.inner.recovery {
            lock(&recovery.gates).remove(&sid);
            let mut sessions = lock(&recovery.sessions);
            let lost = sessions
                .held_by(sid)
                .map(|(pid, began)| (pid.to_owned(), began));
            sessions.release(sid, self.inner.clock.now());
            drop(sessions);
            if let Some((pid, began)) = lost
                && self.ordered()
                && let Some(shared) = self.shared()
            {
                shared.session_lost(&pid, began);
            }
        }
        let mut clients = lock(&self.inner.clients);
        let removed = clients.remove(&sid);
        self.inner
            .stats
            .clients_connected
            .store(clients.len() as u64, Ordering::Relaxed);
        removed
    }
}

impl<A: HubAdapter> Hub<A> {
    /// Builds a fresh `SocketIo` with the hub's settings and adapter,
    /// registers the default namespace, makes it the current generation and
    /// returns the layer to put on the HTTP router. Call once per serving
    /// generation (after a [`Hub::close`], the old layer serves nothing).
    pub fn socketio_layer(&self) -> SocketIoLayer<A> {
        let builder = SocketIo::builder().with_adapter::<A>((self.inner.adapter_state)());
        let (layer, io) = self.configure(builder).build_layer();
        // Weak: the hub holds `io`, which holds these handlers.
        let hub = self.downgrade();
        let door = self.downgrade();
        let on_connect = async move |socket: SocketRef<A>| {
            if let Some(hub) = hub.upgrade() {
                hub.on_connect(socket);
            }
        };
        // Past `max_clients`, a connect gets a connect error (`admit`); with
        // `server.auth_token`, so does a connect without the token (checked
        // first, so a refused stranger never takes a client's place). A hub
        // that is gone admits no one.
        let admit = async move |socket: SocketRef<A>| match door.upgrade() {
            Some(door) => door.admit(socket.id),
            None => Err(ServerFull { max_clients: 0 }),
        };
        // Runs last: only an admitted client gets (or resumes) a session.
        let sessions = self.downgrade();
        let start_session = async move |socket: SocketRef<A>, TryData(auth): TryData<Value>| {
            if let Some(hub) = sessions.upgrade() {
                hub.start_session(&socket, auth.ok().as_ref()).await;
            }
            Ok::<(), std::convert::Infallible>(())
        };
        let on_connect = on_connect.with(start_session);
        A::finish_init(match self.inner.settings.door.auth_token.clone() {
            Some(token) => io.ns("/", on_connect.with(admit).with(door::socket_auth(token))),
            None => io.ns("/", on_connect.with(admit)),
        });
        self.attach(io);
        layer
    }
}

/// The `event_history` answer. With `since`, also `more` (later events
/// remain: ask again from the last one's `event_id`) and, when the events
/// after `since` cannot all be given, `gap` (why) with the kept events from
/// the oldest instead.
#[derive(Serialize)]
struct HistoryAnswer {
    events: Vec<StampedEvent>,
    count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    more: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gap: Option<&'static str>,
}

impl<A: Adapter> HubStatus for Hub<A> {
    fn stats_snapshot(&self) -> ServiceStatsSnapshot {
        let mut snapshot = self.inner.stats.snapshot();
        if let Some((kept, counters)) = self.session_counters() {
            snapshot.sessions_kept = kept as u64;
            snapshot.sessions_recovered = counters.recovered;
            snapshot.sessions_expired = counters.expired;
            snapshot.sessions_refused = counters.refused;
            snapshot.events_replayed = counters.replayed_events;
        }
        snapshot
    }
    fn hub_uptime(&self) -> Duration {
        self.uptime()
    }
    fn wall_now(&self) -> WallTime {
        self.inner.clock.wall()
    }
}

/// One message of a sender's queue: the socket to relay from, the stamped
/// event and the bytes it is charged in the queue.
type Queued<A> = (Arc<Socket<A>>, StampedEvent, usize);

/// A sender's relay queue: bounded in count by the channel, in bytes by
/// `bytes` (added when an event is queued, removed once it is relayed).
struct RelayQueue<A: Adapter> {
    tx: mpsc::Sender<Queued<A>>,
    bytes: Arc<AtomicUsize>,
}

/// Why an event was refused to its sender.
#[derive(Copy, Clone, Debug)]
enum Refusal {
    QueueFull,
    QueueBytes,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::QueueFull => "relay queue full (events): send slower",
            Refusal::QueueBytes => "relay queue full (bytes): send slower",
        }
    }
}

/// The `claude_event` handler. `call` runs synchronously, in arrival order, on
/// the socket's receive path; it must not block.
struct OrderedEventHandler<A: Adapter> {
    hub: Hub<A>,
    /// The sender's relay queue and task, created on its first event: most
    /// clients (dashboards) never send one, and a thousand idle queues and
    /// tasks would cost their memory for nothing.
    queue: OnceLock<RelayQueue<A>>,
    client: ClientLedger,
}

impl<A: Adapter> OrderedEventHandler<A> {
    fn queue(&self) -> &RelayQueue<A> {
        self.queue.get_or_init(|| {
            let capacity = self.hub.inner.settings.inbound_queue_events.max(1);
            let (tx, rx) = mpsc::channel(capacity);
            let bytes = Arc::new(AtomicUsize::new(0));
            tokio::spawn(relay_in_order(self.hub.clone(), rx, Arc::clone(&bytes)));
            RelayQueue { tx, bytes }
        })
    }

    /// Refuses an event to its sender: counted as its overload, told to it
    /// (an ack error if it asked for an ack, else [`EVENT_REFUSED`]), and a
    /// strike in its budget.
    fn refuse(
        &self,
        socket: &Arc<Socket<A>>,
        value: &mut socketioxide::handler::Value,
        ack: Option<i64>,
        why: Refusal,
    ) {
        let inner = &self.hub.inner;
        ServiceStats::add(&inner.stats.events_refused, 1);
        let answer = serde_json::json!({
            "error": EVENT_REFUSED,
            "event": CLAUDE_EVENT,
            "reason": why.reason(),
        });
        let told = match ack {
            Some(_) => ack_sender(socket, value, ack).send(&answer),
            None => socket.emit(EVENT_REFUSED, &answer),
        };
        let now = inner.clock.now();
        if let Some(count) = inner.warnings.refused.hit(now) {
            tracing::warn!(
                sid = %socket.id,
                reason = why.reason(),
                told = told.is_ok(),
                count,
                "claude_event refused to its sender (count since the last such line)"
            );
        }
        if told.is_ok() {
            self.strike(socket, now);
        } else {
            // It cannot even be told (its own buffer is full): cut it off.
            self.cut_off(socket, now);
        }
    }
}

impl<A: Adapter> OrderedEventHandler<A> {
    /// Charges one strike to this client; past its budget it is cut off:
    /// disconnected, its later packets ignored, and counted.
    /// A `claude_event` that is not an event: the client's error, counted,
    /// logged once per interval, and a strike against its budget.
    fn undecodable(&self, socket: &Arc<Socket<A>>, error: &serde_json::Error) {
        ServiceStats::add(&self.hub.inner.stats.client_errors, 1);
        let now = self.hub.inner.clock.now();
        if let Some(count) = self.hub.inner.warnings.bad_packet.hit(now) {
            tracing::warn!(sid = %socket.id, %error, count, "undecodable claude_event (client error; count since the last such line)");
        }
        self.strike(socket, now);
    }

    fn strike(&self, socket: &Arc<Socket<A>>, at: Moment) {
        if lock(&self.client.budget).charge(at) {
            self.cut_off(socket, at);
        }
    }

    /// Disconnects this client for good: its later packets are ignored.
    fn cut_off(&self, socket: &Arc<Socket<A>>, at: Moment) {
        if self.client.cut_off.swap(true, Ordering::Relaxed) {
            return;
        }
        let inner = &self.hub.inner;
        ServiceStats::add(&inner.stats.clients_disconnected_for_abuse, 1);
        let result = Arc::clone(socket).disconnect();
        if let Some(count) = inner.warnings.abuse_disconnect.hit(at) {
            tracing::warn!(
                sid = %socket.id,
                budget = inner.settings.client_error_budget,
                window_s = inner.settings.client_error_window.as_secs_f64(),
                disconnected = result.is_ok(),
                count,
                "client spent its error budget and was cut off (count since the last such line)"
            );
        }
    }
}

/// Marker type for the [`MessageHandler`] implementation below.
#[derive(Debug)]
struct InOrder;

impl<A: Adapter> MessageHandler<A, InOrder> for OrderedEventHandler<A> {
    fn call(
        &self,
        socket: Arc<Socket<A>>,
        mut value: socketioxide::handler::Value,
        ack: Option<i64>,
    ) {
        let stats = &self.hub.inner.stats;
        if self.client.cut_off.load(Ordering::Relaxed) {
            return;
        }
        let size = packet_size(&value);
        let with_binaries;
        let payload = match packet_text(&value) {
            Some(text) => event_payload(text),
            None => {
                // Binary attachments are decoded (into numbers) by the parser:
                // this rare packet alone still goes through a tree.
                match Data::<Value>::from_message_parts(&socket, &mut value, &ack) {
                    Ok(Data(tree)) => {
                        with_binaries = tree.to_string();
                        Payload::check(&with_binaries)
                    }
                    Err(error) => Err(serde::de::Error::custom(error)),
                }
            }
        };
        let payload = match payload {
            Ok(payload) => payload,
            Err(error) => return self.undecodable(&socket, &error),
        };
        // The event is accepted only once it has a place in the queue: what
        // the hub accepts, it relays.
        let queue = self.queue();
        let permit = match queue.tx.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(())) => {
                return self.refuse(&socket, &mut value, ack, Refusal::QueueFull);
            }
            Err(mpsc::error::TrySendError::Closed(())) => {
                tracing::debug!(sid = %socket.id, "relay queue closed");
                return;
            }
        };
        let queued = queue.bytes.load(Ordering::Relaxed);
        // An event larger than the whole bound still passes an empty queue
        // (`max_payload_bytes` bounds it).
        if queued > 0 && queued.saturating_add(size) > self.hub.inner.settings.inbound_queue_bytes {
            drop(permit);
            return self.refuse(&socket, &mut value, ack, Refusal::QueueBytes);
        }
        let Some(event) = self.hub.ingest(&payload, Some(socket.id)) else {
            return;
        };
        let size = event.len();
        queue.bytes.fetch_add(size, Ordering::Relaxed);
        if ack.is_some() {
            let accepted = serde_json::json!({ "accepted": true });
            if ack_sender(&socket, &mut value, ack)
                .send(&accepted)
                .is_err()
            {
                ServiceStats::add(&stats.events_dropped, 1);
            }
        }
        permit.send((socket, event, size));
    }
}

/// A packet's size in bytes, attachments included.
fn packet_size(value: &socketioxide::handler::Value) -> usize {
    match value {
        socketioxide::handler::Value::Str(text, binaries) => {
            text.len() + binaries.iter().flatten().map(|b| b.len()).sum::<usize>()
        }
        socketioxide::handler::Value::Bytes(bytes) => bytes.len(),
    }
}

/// The text of a packet with no binary attachment (read in place).
fn packet_text(value: &socketioxide::handler::Value) -> Option<&str> {
    match value {
        socketioxide::handler::Value::Str(text, binaries)
            if binaries.as_ref().is_none_or(|b| b.is_empty()) =>
        {
            Some(text.as_str())
        }
        _ => None,
    }
}

/// The first argument of an event packet's `["<event>", <payload>, ...]`,
/// checked as JSON but not parsed into a tree (as socketioxide's `Data`
/// extractor takes it: the first argument, later ones ignored).
fn event_payload(packet: &str) -> Result<Payload<'_>, serde_json::Error> {
    struct FirstArgument;
    impl<'de> serde::de::Visitor<'de> for FirstArgument {
        type Value = &'de RawValue;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an event name and its data")
        }
        fn visit_seq<S: serde::de::SeqAccess<'de>>(
            self,
            mut seq: S,
        ) -> Result<&'de RawValue, S::Error> {
            use serde::de::{Error, IgnoredAny};
            seq.next_element::<IgnoredAny>()?
                .ok_or_else(|| S::Error::custom("event name not found"))?;
            let data = seq
                .next_element::<&'de RawValue>()?
                .ok_or_else(|| S::Error::custom("first element not found"))?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(data)
        }
    }
    let mut reader = serde_json::Deserializer::from_str(packet);
    let data = serde::Deserializer::deserialize_seq(&mut reader, FirstArgument)?;
    Payload::check(data.get())
}

/// The ack of one incoming message (`None` ack id: sending does nothing).
fn ack_sender<A: Adapter>(
    socket: &Arc<Socket<A>>,
    value: &mut socketioxide::handler::Value,
    ack: Option<i64>,
) -> AckSender<A> {
    match AckSender::from_message_parts(socket, value, &ack) {
        Ok(sender) => sender,
        Err(never) => match never {},
    }
}

/// Disconnects `socket`, retrying while its buffer is full (the packet must
/// be queued) for at most `patience`; past it, a socket that still reads
/// nothing is closed by the next heartbeat.
async fn disconnect_when_possible<A: Adapter>(socket: SocketRef<A>, patience: Duration) {
    let mut waited = Duration::ZERO;
    while let Err(SocketError::InternalChannelFull) = socket.clone().disconnect() {
        if waited >= patience {
            return;
        }
        tokio::time::sleep(SLOW_READER_POLL).await;
        waited += SLOW_READER_POLL;
    }
}

/// Relays one sender's events in the order they arrived. Ends when the
/// socket (which owns the sending half, in its handler) is dropped.
async fn relay_in_order<A: Adapter>(
    hub: Hub<A>,
    mut queue: mpsc::Receiver<Queued<A>>,
    bytes: Arc<AtomicUsize>,
) {
    while let Some((socket, event, size)) = queue.recv().await {
        let result = hub.relay(socket.broadcast(), &event).await;
        hub.count_relay(result);
        bytes.fetch_sub(size, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_pid_of_the_issued_shape_is_looked_up() {
        for _ in 0..100 {
            assert!(is_pid(&new_pid()));
        }
        for bad in [
            "",
            "short",
            &"a".repeat(33),
            &"a".repeat(100_000),
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/+",
        ] {
            assert!(!is_pid(bad), "{bad:.40}");
        }
    }

    #[test]
    fn a_budget_allows_its_limit_per_window_then_is_spent() {
        let mut budget = ErrorBudget::new(3, Duration::from_secs(60));
        let at = Moment::from_secs(100);
        assert!(!budget.charge(at));
        assert!(!budget.charge(at));
        assert!(!budget.charge(at + Duration::from_secs(59)));
        assert!(budget.charge(at + Duration::from_secs(59)));
        // A new window starts afresh.
        let mut budget = ErrorBudget::new(3, Duration::from_secs(60));
        for n in 0..3 {
            assert!(!budget.charge(at + Duration::from_secs(60 * n)));
        }
        for _ in 0..3 {
            assert!(!budget.charge(at + Duration::from_secs(600)));
        }
    }

    #[test]
    fn the_history_is_bounded_in_count_and_bytes_and_answers_within_a_budget() {
        let event =
            |n: usize| StampedEvent::new(&json!({ "n": n, "pad": "x".repeat(90) })).unwrap();
        // Three-digit numbers: every event has the same size.
        let size = event(100).len();
        let mut history = EventLog::new(Epoch(1), 50, 10 * size);
        for n in 100..200 {
            let e = event(n);
            history.push(e.clone(), e.len());
            assert!(history.len() <= 50 && history.bytes() <= 10 * size);
        }
        assert_eq!(history.len(), 10, "the byte bound binds first");
        assert_eq!(history.bytes(), 10 * size);
        let newest = history.newest(usize::MAX, 3 * size);
        let ns: Vec<u64> = newest
            .iter()
            .map(|e| e.to_value().unwrap()["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, [197, 198, 199], "the newest that fit, oldest first");
        assert_eq!(history.newest(2, usize::MAX).len(), 2);
    }

    #[test]
    fn an_event_with_an_offset_goes_out_with_it_as_its_last_argument() {
        let event = StampedEvent(
            Arc::from(serde_json::value::to_raw_value(&json!({"a": 1})).unwrap()),
            Some(Offset {
                epoch: Epoch(0xff),
                seq: 7,
            }),
            None,
        );
        let pair = WithOffset(&event, event.offset().unwrap().to_string());
        assert!(socketioxide_core::parser::is_ser_tuple(
            &Outgoing::WithOffset(pair)
        ));
        assert!(!socketioxide_core::parser::is_ser_tuple(&Outgoing::Plain(
            &event
        )));
        let pair = WithOffset(&event, event.offset().unwrap().to_string());
        assert_eq!(
            serde_json::to_value(Outgoing::WithOffset(pair)).unwrap(),
            json!([{"a": 1}, "00000000000000ff-7"])
        );
    }

    #[test]
    fn a_repeated_warning_is_logged_once_per_interval_with_its_count() {
        let warning = Throttled::default();
        let at = Moment::from_secs(100);
        assert_eq!(warning.hit(at), Some(1));
        for _ in 0..999 {
            assert_eq!(warning.hit(at + Duration::from_secs(1)), None);
        }
        assert_eq!(
            warning.hit(at + REPEATED_WARNING_INTERVAL),
            Some(1_000),
            "every occurrence is counted in the next line"
        );
        assert_eq!(warning.hit(at + REPEATED_WARNING_INTERVAL), None);
    }

    #[test]
    fn snapshot_serialises_last_activity_as_iso_or_null() {
        let stats = ServiceStats::default();
        let json = serde_json::to_value(stats.snapshot()).unwrap();
        assert_eq!(json["last_activity"], Value::Null);
        stats.record_activity(WallTime::from_millis(1_754_490_600_000));
        let json = serde_json::to_value(stats.snapshot()).unwrap();
        assert_eq!(json["last_activity"], "2025-08-06T14:30:00.000Z");
    }
}
