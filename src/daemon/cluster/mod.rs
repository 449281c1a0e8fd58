//! Cluster mode: several warden nodes serving one hub through Redis.
//!
//! The Socket.IO side is `socketioxide-redis`'s adapter
//! ([`ClusterAdapter`]): a broadcast on one node is published on a Redis
//! channel and delivered by every node to its own clients, so an event from a
//! client on any node reaches every other client on every node exactly once.
//! This module gives that adapter its [`ClusterDriver`], which owns the Redis
//! connection and keeps it alive on its own:
//!
//! - One multiplexed RESP3 connection carries publishes, subscriptions and
//!   the heartbeat; a second one (never subscribed) carries the history, so
//!   a large history answer never counts against Redis's pub/sub
//!   output-buffer limit, which would close the subscriber. A supervisor
//!   task connects both, subscribes every channel the adapter asked for, and
//!   on any loss (a disconnection push, a failed or timed-out command) drops
//!   them and connects again. Every reconnect is paced: an attempt is a
//!   connect plus a first heartbeat, and goes through a [`CircuitBreaker`]
//!   (the pure core's); it counts as a success only once Redis answers a
//!   later heartbeat on the live link, so a link lost at once is a failure.
//!   After [`RECONNECT_FAILURE_THRESHOLD`] failed attempts the breaker opens
//!   and waits, doubling the wait up to [`RECONNECT_MAX_OPEN`]; between
//!   attempts the supervisor waits a delay that doubles up to the heartbeat
//!   interval (reset by a healthy link). No path reconnects at once.
//!   Subscriptions are remembered by the driver, so they survive a Redis
//!   restart without the adapter knowing.
//! - Foreign data is ignored and counted (`foreign_ignored`), never a
//!   failure of the link: a field of `<prefix>:nodes` that is not
//!   `<node id>: <epoch ms>`, a history entry that is not an event. The
//!   first is logged once. `last_error` clears at the next good heartbeat.
//! - Subscribing never waits for Redis: the channel is registered at once and
//!   subscribed on the live connection (now, or when one exists). That is why
//!   a node starts, and its namespace registers, while Redis is down.
//! - Accepted events do not cross through the adapter but on warden's own
//!   channel `<prefix>:events`, as their stamped JSON (tagged with this
//!   process's origin). The hub delivers each event to this node's clients
//!   itself, once, and hands it to the publisher task ([`SharedHub::publish`]
//!   waits only while the bounded outbox is full); the publisher sends what
//!   has queued as one pipeline per round trip, in order, so a sender never
//!   waits for Redis per event and its order holds. A batch that cannot be
//!   published (no connection, an error, the command timeout) is never
//!   retried: it was delivered here and counts as local fallbacks. Each
//!   node delivers the events it receives to its own clients one at a time,
//!   by the local relay's rule (a full recipient is waited for up to
//!   `slow_reader_timeout`; see `Hub::deliver_remote`), the packet encoded
//!   once per node. Redis down never stops local relay.
//! - The adapter's own requests (rooms, remote disconnects) publish through
//!   [`ClusterDriver::publish`], which fails fast
//!   ([`ClusterError::NotConnected`]) while there is no connection and is
//!   bounded by [`ClusterSettings::command_timeout`] otherwise.
//! - Every [`ClusterSettings::heartbeat_interval`] the supervisor sends
//!   `PING`, writes this node's last-seen time into the hash
//!   `<prefix>:nodes` and reads the others': the round trip and the peers seen
//!   are facts for the `DependencyChecker` (`checkers.rs`), which judges
//!   them; nothing here decides health.
//! - History: every accepted event is appended (by one writer task, in
//!   arrival order) to the capped stream `<prefix>:history`
//!   (`XADD MAXLEN = history_len`), and `get_history` on any node reads the
//!   same stream. Events accepted while Redis is away wait in a queue of at
//!   most `history_len` (the oldest is dropped first, as the stream would
//!   have trimmed it) and are written when Redis returns.
//!
//! Not here: the hub's handlers (`hub.rs`, generic over the adapter), the
//! health judgement (`checkers.rs`), configuration parsing (`config.rs`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind};
use serde::Serialize;
use serde_json::Value;
use socketioxide::adapter::Emitter;
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};
use thiserror::Error;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::breaker::{BreakerSettings, CircuitBreaker, CircuitState, Permit, Rejected};
pub use crate::config::redact_url;
use crate::config::{WardenConfig, is_valid_node_name};
use crate::daemon::hub::{
    Handoff, Hub, HubAdapter, SharedHub, SharedPage, StampedEvent, Throttled, WeakHub,
};
use crate::health::{DependencyFacts, DependencySource};
use crate::retry::RetrySchedule;
use crate::sessions::Offset;
use crate::time::{Clock, Moment, WallTime};

mod ordered;
use ordered::Ordered;

/// The socketioxide adapter of a cluster node.
pub type ClusterAdapter = CustomRedisAdapter<Emitter, ClusterDriver>;

/// Failed reconnect attempts in a row that open the reconnect breaker.
pub const RECONNECT_FAILURE_THRESHOLD: u32 = 5;
/// How long the reconnect breaker first stays open.
pub const RECONNECT_OPEN: Duration = Duration::from_secs(2);
/// The longest the reconnect breaker stays open (it doubles up to this).
pub const RECONNECT_MAX_OPEN: Duration = Duration::from_secs(30);
/// Wait between two attempts while the breaker is closed (doubles per failure).
const RETRY_DELAY: Duration = Duration::from_millis(100);
/// Events written to the history stream in one pipeline.
const HISTORY_BATCH: usize = 256;
/// Accepted events waiting for their publish, at most: past it a sender's
/// relay waits (its own queue then fills and it is told, as for a slow
/// reader), so memory stays bounded when Redis is slow.
const EVENT_OUTBOX: usize = 4_096;
/// Events published in one pipeline (one round trip), at most.
const PUBLISH_BATCH: usize = 256;
/// A node not seen for this long is dropped from `<prefix>:nodes`.
const NODE_FORGET_AFTER: Duration = Duration::from_secs(600);
/// Messages from Redis queued per channel before the adapter reads them;
/// more are dropped and counted (`incoming_dropped`).
const STREAM_BUFFER: usize = 8_192;

/// What a cluster node needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterSettings {
    /// The Redis URL, RESP3 asked for (`protocol=resp3` added when absent).
    pub redis_url: String,
    pub node_id: String,
    /// Prefix of the adapter's channels and of warden's keys.
    pub prefix: String,
    /// Events kept in the shared history stream (`server.event_history_size`).
    pub history_len: usize,
    /// Bound on every Redis command (publish, heartbeat, history).
    pub command_timeout: Duration,
    /// How often the supervisor pings Redis and refreshes the peers.
    pub heartbeat_interval: Duration,
    /// The reconnect breaker.
    pub reconnect: BreakerSettings,
    /// Connection state recovery's bounds, when it is on: the cluster then
    /// runs in ordered mode (see `ordered.rs`).
    pub sessions: Option<SessionBounds>,
}

impl ClusterSettings {
    /// A command unanswered this long means the link is lost. No relay
    /// waits for it (publishes are pipelined from an outbox), so it only has
    /// to tell a hung Redis from a node whose own runtime is busy: at 500 ms,
    /// a 1,000-client burst on a loaded 2-core machine delayed a heartbeat's
    /// answer past it about once in 20 runs, and the dropped link cost that
    /// run's cross-node deliveries (counted as local fallbacks).
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
    pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

    /// The cluster settings of `cfg`, or `None` when cluster mode is off.
    /// `hostname` names the node when `cluster.node_id` is not set.
    pub fn from_config(cfg: &WardenConfig, hostname: &str) -> Option<ClusterSettings> {
        let c = &cfg.cluster;
        let url = c.redis_url.as_deref()?;
        let node_id = c
            .node_id
            .clone()
            .unwrap_or_else(|| default_node_id(hostname, cfg.server.port));
        Some(ClusterSettings {
            redis_url: with_resp3(url),
            node_id,
            prefix: c.prefix.clone(),
            history_len: usize::try_from(cfg.server.event_history_size).unwrap_or(usize::MAX),
            command_timeout: Self::DEFAULT_COMMAND_TIMEOUT,
            heartbeat_interval: Self::DEFAULT_HEARTBEAT_INTERVAL,
            reconnect: BreakerSettings {
                failure_threshold: RECONNECT_FAILURE_THRESHOLD,
                open_timeout: RECONNECT_OPEN,
                success_threshold: 1,
                half_open_max_trials: 1,
                trial_lease: Duration::from_secs(60),
                backoff_multiplier: 2.0,
                max_open_timeout: RECONNECT_MAX_OPEN,
            },
            sessions: cfg
                .connection_state_recovery
                .enabled
                .then(|| SessionBounds {
                    max_disconnection: cfg.connection_state_recovery.max_disconnection_duration,
                    max_sessions: usize::try_from(cfg.connection_state_recovery.max_sessions)
                        .unwrap_or(usize::MAX),
                }),
        })
    }

    /// The shared history: in ordered mode the stream events cross by
    /// (`<prefix>:log`, numbered by warden), else `<prefix>:history`.
    fn history_key(&self) -> String {
        if self.sessions.is_some() {
            format!("{}:log", self.prefix)
        } else {
            format!("{}:history", self.prefix)
        }
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// The channel accepted events cross on (not the adapter's).
    fn events_channel(&self) -> String {
        format!("{}:events", self.prefix)
    }
}

/// What ordered mode keeps of connection state recovery's settings.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SessionBounds {
    /// How long a lost session stays resumable.
    pub max_disconnection: Duration,
    /// Lost sessions waiting for their key to be written, at most.
    pub max_sessions: usize,
}

/// `<hostname>-<port>`, with characters a node id cannot hold replaced by `-`.
pub fn default_node_id(hostname: &str, port: u16) -> String {
    let host: String = hostname
        .chars()
        .take(48)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let id = format!("{host}-{port}");
    if is_valid_node_name(&id) {
        id
    } else {
        format!("node-{port}")
    }
}

/// Adds `protocol=resp3` to a Redis URL that does not name a protocol.
pub fn with_resp3(url: &str) -> String {
    if url.to_ascii_lowercase().contains("protocol=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

/// Why a Redis operation of the cluster failed.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("not connected to Redis")]
    NotConnected,
    #[error("Redis did not answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("invalid Redis URL: {0}")]
    Url(redis::RedisError),
}

impl ClusterError {
    /// Whether the error means the connection is gone or unusable (then it
    /// is dropped and made again), rather than Redis refusing one command
    /// (a wrong type under one of warden's keys, say), which is logged and
    /// counted but does not cost the connection: reconnecting would not help
    /// and would only churn.
    pub fn is_connection_error(&self) -> bool {
        match self {
            ClusterError::NotConnected | ClusterError::Timeout { .. } => true,
            ClusterError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
            }
            ClusterError::Url(_) => false,
        }
    }
}

/// The Redis connection as the node sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisState {
    /// No connection has been made yet.
    Connecting,
    Connected,
    /// A connection was lost or an attempt failed; the supervisor retries.
    Disconnected,
}

impl RedisState {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisState::Connecting => "connecting",
            RedisState::Connected => "connected",
            RedisState::Disconnected => "disconnected",
        }
    }
}

/// Counters of the cluster link; each update is one relaxed atomic add.
#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    disconnects: AtomicU64,
    connect_failures: AtomicU64,
    published: AtomicU64,
    events_published: AtomicU64,
    publish_failures: AtomicU64,
    received: AtomicU64,
    incoming_dropped: AtomicU64,
    local_fallbacks: AtomicU64,
    history_written: AtomicU64,
    history_overflowed: AtomicU64,
    history_read_failures: AtomicU64,
    foreign_ignored: AtomicU64,
}

/// The latest facts of the heartbeat and the connection.
#[derive(Clone, Debug, Default)]
struct Facts {
    since: Option<WallTime>,
    last_rtt: Option<Duration>,
    last_heartbeat: Option<Moment>,
    peers: Vec<String>,
    last_error: Option<String>,
    breaker: Option<CircuitState>,
}

/// What `/diagnostics`, `/metrics` and the dependency checker read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterSnapshot {
    pub node_id: String,
    pub prefix: String,
    pub redis_url: String,
    pub redis_state: RedisState,
    /// Since when the state holds (ISO-8601), once it changed at least once.
    pub redis_state_since: Option<String>,
    /// Round trip of the last heartbeat (`PING` + peers), in milliseconds.
    pub redis_rtt_ms: Option<f64>,
    /// Age of the last successful heartbeat, in milliseconds.
    pub heartbeat_age_ms: Option<u64>,
    pub heartbeat_interval_ms: u64,
    /// Other nodes seen in the last three heartbeat intervals.
    pub peers_seen: Vec<String>,
    pub reconnect_breaker: CircuitState,
    pub connects: u64,
    pub disconnects: u64,
    pub connect_failures: u64,
    /// Messages published to the other nodes (events and adapter requests).
    pub cross_node_published: u64,
    /// Of those, accepted events (`<prefix>:events`).
    pub events_published: u64,
    /// Events waiting in the outbox for their publish.
    pub events_outbox: usize,
    pub publish_failures: u64,
    /// Messages received from the other nodes.
    pub cross_node_received: u64,
    /// Messages from Redis dropped because the adapter's queue was full.
    pub incoming_dropped: u64,
    /// Relays delivered to this node's clients only, Redis being unreachable.
    pub local_fallbacks: u64,
    pub history_stream: String,
    pub history_max_len: usize,
    /// Events accepted but not yet written to the stream.
    pub history_pending: usize,
    pub history_written: u64,
    /// Pending events dropped: the oldest while Redis was away, or a batch
    /// Redis refused.
    pub history_overflowed: u64,
    pub history_read_failures: u64,
    /// Entries in warden's keys that are not warden's (a malformed field of
    /// `<prefix>:nodes`, a history entry that is not an event): ignored.
    pub foreign_ignored: u64,
    /// The last failure, cleared by the next successful heartbeat.
    pub last_error: Option<String>,
}

struct Link {
    settings: ClusterSettings,
    client: redis::Client,
    clock: Arc<dyn Clock>,
    /// Channels the adapter subscribed, and where their messages go.
    handlers: RwLock<HashMap<String, mpsc::Sender<ChanItem>>>,
    /// The live (subscriber) connection and its generation, if any.
    conn: RwLock<Option<(u64, MultiplexedConnection)>>,
    /// The history connection of the same generation: never subscribed.
    data: RwLock<Option<(u64, MultiplexedConnection)>>,
    /// Whether foreign data was logged (it is logged once, counted always).
    foreign_logged: std::sync::atomic::AtomicBool,
    /// Messages dropped because the incoming queue was full: logged once
    /// per interval with a count, never once each.
    incoming_full: Throttled,
    generation: AtomicU64,
    state: watch::Sender<RedisState>,
    subs_changed: Notify,
    lost: Notify,
    facts: Mutex<Facts>,
    counters: Counters,
    /// Events not yet in the stream: (sequence, event), oldest first. The
    /// event's bytes are shared with the hub's own history, not copied.
    pending: Mutex<VecDeque<(u64, StampedEvent)>>,
    next_seq: AtomicU64,
    history_ready: Notify,
    /// This process's tag on the events it publishes (`<json>\n<origin>`):
    /// Redis hands a node its own publishes back, and they are skipped.
    origin: String,
    /// Ordered mode's state, when on.
    ordered: Option<Ordered>,
    stop: CancellationToken,
}

/// Locks a mutex even if a holder panicked: the data (facts, a queue) stays valid.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running cluster link: the driver's shared state and its two tasks.
/// Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    link: Arc<Link>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Accepted events for the publisher task, in the relays' order.
    outbox: mpsc::Sender<StampedEvent>,
    /// Events from the other nodes, until [`Cluster::hub`] starts their
    /// delivery task.
    inbox: Arc<Mutex<Option<mpsc::Receiver<ChanItem>>>>,
    /// Ordered mode: events whose append failed, until [`Cluster::hub`]
    /// starts their local delivery.
    fallbacks: Arc<Mutex<Option<mpsc::Receiver<StampedEvent>>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.link.settings.node_id)
            .field("state", &*self.link.state.borrow())
            .finish()
    }
}

impl Cluster {
    /// Starts the supervisor (which connects, in the background) and the
    /// history writer. Fails only on a URL the redis client cannot parse;
    /// an unreachable Redis is retried, never fatal.
    pub fn start(
        settings: ClusterSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Cluster, ClusterError> {
        let client = redis::Client::open(settings.redis_url.as_str()).map_err(ClusterError::Url)?;
        let (state, _) = watch::channel(RedisState::Connecting);
        let (ordered, fallbacks) = match settings.sessions {
            Some(bounds) => {
                let (ordered, queue) = Ordered::new(bounds);
                (Some(ordered), Some(queue))
            }
            None => (None, None),
        };
        let link = Arc::new(Link {
            settings,
            client,
            clock,
            handlers: RwLock::new(HashMap::new()),
            conn: RwLock::new(None),
            data: RwLock::new(None),
            foreign_logged: std::sync::atomic::AtomicBool::new(false),
            incoming_full: Throttled::default(),
            generation: AtomicU64::new(0),
            state,
            subs_changed: Notify::new(),
            lost: Notify::new(),
            facts: Mutex::new(Facts::default()),
            counters: Counters::default(),
            pending: Mutex::new(VecDeque::new()),
            next_seq: AtomicU64::new(1),
            history_ready: Notify::new(),
            origin: socketioxide::socket::Sid::new().to_string(),
            ordered,
            stop: CancellationToken::new(),
        });
        // The events channel is subscribed as the adapter's are (and so
        // again after every reconnect); its messages wait in `inbox`. In
        // ordered mode events cross by the stream instead.
        let (inbox_tx, inbox) = mpsc::channel(STREAM_BUFFER);
        if link.ordered.is_none() {
            link.handlers
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(link.settings.events_channel(), inbox_tx);
        }
        let (outbox, outgoing) = mpsc::channel(EVENT_OUTBOX);
        tracing::info!(
            "Cluster: node {} joins the hub over Redis {}",
            link.settings.node_id,
            redact_url(&link.settings.redis_url)
        );
        let tasks = vec![
            tokio::spawn(supervise(Arc::clone(&link))),
            tokio::spawn(write_history(Arc::clone(&link))),
            tokio::spawn(publish_events(Arc::clone(&link), outgoing)),
        ];
        Ok(Cluster {
            link,
            tasks: Arc::new(Mutex::new(tasks)),
            outbox,
            inbox: Arc::new(Mutex::new(Some(inbox))),
            fallbacks: Arc::new(Mutex::new(fallbacks)),
        })
    }

    /// A hub whose serving generations use the Redis adapter over this link.
    pub fn hub(
        &self,
        settings: crate::daemon::hub::HubSettings,
        clock: Arc<dyn Clock>,
    ) -> Hub<ClusterAdapter> {
        let driver = ClusterDriver {
            link: Arc::clone(&self.link),
        };
        let prefix = self.link.settings.prefix.clone();
        let timeout = self.link.settings.command_timeout;
        let hub = Hub::with_adapter_state(
            settings,
            clock,
            Arc::new(move || {
                RedisAdapterCtr::new_with_driver(
                    driver.clone(),
                    RedisAdapterConfig::new()
                        .with_prefix(prefix.clone())
                        .with_request_timeout(timeout)
                        .with_stream_buffer(STREAM_BUFFER),
                )
            }),
        );
        hub.share_with(Arc::new(self.clone()));
        let mut tasks = lock(&self.tasks);
        if let Some(queue) = lock(&self.fallbacks).take() {
            let link = Arc::clone(&self.link);
            tasks.push(tokio::spawn(ordered::read_stream(
                Arc::clone(&link),
                hub.downgrade(),
            )));
            tasks.push(tokio::spawn(ordered::deliver_fallbacks(
                link,
                hub.downgrade(),
                queue,
            )));
        } else if let Some(inbox) = lock(&self.inbox).take() {
            tasks.push(tokio::spawn(deliver_events(
                Arc::clone(&self.link),
                hub.downgrade(),
                inbox,
            )));
        }
        drop(tasks);
        hub
    }

    pub fn node_id(&self) -> &str {
        &self.link.settings.node_id
    }

    pub fn redis_state(&self) -> RedisState {
        *self.link.state.borrow()
    }

    pub fn is_connected(&self) -> bool {
        self.redis_state() == RedisState::Connected
    }

    pub fn snapshot(&self) -> ClusterSnapshot {
        let link = &self.link;
        let s = &link.settings;
        let c = &link.counters;
        let facts = lock(&link.facts).clone();
        let now = link.clock.now();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClusterSnapshot {
            node_id: s.node_id.clone(),
            prefix: s.prefix.clone(),
            redis_url: redact_url(&s.redis_url),
            redis_state: *link.state.borrow(),
            redis_state_since: facts.since.map(|w| w.to_iso8601()),
            redis_rtt_ms: facts.last_rtt.map(|d| d.as_secs_f64() * 1000.0),
            heartbeat_age_ms: facts
                .last_heartbeat
                .map(|at| u64::try_from(now.saturating_since(at).as_millis()).unwrap_or(u64::MAX)),
            heartbeat_interval_ms: u64::try_from(s.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX),
            peers_seen: facts.peers,
            reconnect_breaker: facts.breaker.unwrap_or(CircuitState::Closed),
            connects: load(&c.connects),
            disconnects: load(&c.disconnects),
            connect_failures: load(&c.connect_failures),
            cross_node_published: load(&c.published),
            events_published: load(&c.events_published),
            events_outbox: EVENT_OUTBOX.saturating_sub(self.outbox.capacity()),
            publish_failures: load(&c.publish_failures),
            cross_node_received: load(&c.received),
            incoming_dropped: load(&c.incoming_dropped),
            local_fallbacks: load(&c.local_fallbacks),
            history_stream: s.history_key(),
            history_max_len: s.history_len,
            history_pending: lock(&link.pending).len(),
            history_written: load(&c.history_written),
            history_overflowed: load(&c.history_overflowed),
            history_read_failures: load(&c.history_read_failures),
            foreign_ignored: load(&c.foreign_ignored),
            last_error: facts.last_error,
        }
    }

    /// Stops both tasks and drops the connection (the adapter has already
    /// unsubscribed when the hub closed). Pending history is written first,
    /// bounded by the command timeout.
    pub async fn shutdown(&self) {
        let conn = self.link.data_connection().ok();
        if let Some((_, mut conn)) = conn {
            let batch = self.link.pending_batch(usize::MAX);
            if !batch.is_empty() {
                let _ = self.link.append(&mut conn, &batch).await;
            }
        }
        self.link.stop.cancel();
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            task.abort();
        }
        *self
            .link
            .conn
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
        *self
            .link
            .data
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl DependencySource for Cluster {
    fn facts(&self) -> DependencyFacts {
        let s = self.snapshot();
        DependencyFacts {
            connected: s.redis_state == RedisState::Connected,
            state: s.redis_state.as_str().to_string(),
            rtt_ms: s.redis_rtt_ms,
            heartbeat_age_ms: s.heartbeat_age_ms,
            heartbeat_interval_ms: s.heartbeat_interval_ms,
            peers_seen: s.peers_seen.len(),
            last_error: s.last_error,
        }
    }
}

impl SharedHub for Cluster {
    fn publish(&self, event: &StampedEvent) -> Pin<Box<dyn Future<Output = Handoff> + Send + '_>> {
        let event = event.clone();
        Box::pin(async move {
            if self.link.ordered.is_some() && !self.is_connected() {
                // No stream to append to: this node's clients get it now.
                self.link
                    .counters
                    .local_fallbacks
                    .fetch_add(1, Ordering::Relaxed);
                return Handoff::DeliverHere;
            }
            if self.outbox.send(event).await.is_err() {
                // The publisher stopped (shutdown): this node's clients only.
                self.link
                    .counters
                    .local_fallbacks
                    .fetch_add(1, Ordering::Relaxed);
                return Handoff::DeliverHere;
            }
            if self.link.ordered.is_some() {
                Handoff::FromStream
            } else {
                Handoff::DeliverHere
            }
        })
    }

    fn ordered(&self) -> bool {
        self.link.ordered.is_some()
    }

    fn session_began<'a>(
        &'a self,
        pid: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<Offset>> + Send + 'a>> {
        Box::pin(self.link.session_began(pid))
    }

    fn session_held(&self, pid: &str, began: Offset) {
        if let Some(ordered) = &self.link.ordered {
            ordered.held(pid, began);
        }
    }

    fn session_lost(&self, pid: &str, began: Offset) {
        if let Some(ordered) = &self.link.ordered {
            ordered.lost(pid, began);
        }
    }

    fn record(&self, event: &StampedEvent) {
        let link = &self.link;
        if link.ordered.is_some() {
            // Appended by the publisher: the stream is the history.
            return;
        }
        let seq = link.next_seq.fetch_add(1, Ordering::Relaxed);
        {
            let mut pending = lock(&link.pending);
            while !pending.is_empty() && pending.len() >= link.settings.history_len {
                pending.pop_front();
                link.counters
                    .history_overflowed
                    .fetch_add(1, Ordering::Relaxed);
            }
            if link.settings.history_len > 0 {
                pending.push_back((seq, event.clone()));
            }
        }
        link.history_ready.notify_one();
    }

    fn history(
        &self,
        limit: Option<usize>,
    ) -> Pin<Box<dyn Future<Output = Option<Vec<Value>>> + Send + '_>> {
        Box::pin(async move {
            match self.link.read_history(limit).await {
                Ok(events) => Some(events),
                Err(error) => {
                    self.link
                        .counters
                        .history_read_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, "shared history unavailable; answering from this node's");
                    None
                }
            }
        })
    }

    fn history_since<'a>(
        &'a self,
        since: &'a str,
        limit: usize,
        max_bytes: usize,
    ) -> Pin<Box<dyn Future<Output = Option<SharedPage>> + Send + 'a>> {
        Box::pin(self.read_since(since, limit, max_bytes))
    }
}

impl Cluster {
    /// [`SharedHub::history_since`], counted like the other history reads.
    async fn read_since(&self, since: &str, limit: usize, max_bytes: usize) -> Option<SharedPage> {
        match self.link.read_history_since(since, limit, max_bytes).await {
            Ok(page) => Some(page),
            Err(error) => {
                self.link
                    .counters
                    .history_read_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, "shared history unavailable; answering from this node's");
                None
            }
        }
    }
}

impl HubAdapter for ClusterAdapter {
    fn finish_init(init: Self::InitRes) {
        // The driver's `subscribe` only registers the channel (the supervisor
        // subscribes it on Redis), so the adapter's init has nothing to wait
        // for and completes on its first poll; the namespace is then
        // registered before the first client can connect. Should a later
        // version of the adapter wait after all, it runs in the background.
        let mut init = init;
        match (&mut init).now_or_never() {
            Some(Ok(())) => {}
            Some(Err(error)) => {
                tracing::error!(%error, "Cluster: the Redis adapter could not start");
            }
            None => {
                tracing::debug!("Cluster: adapter init continues in the background");
                tokio::spawn(async move {
                    if let Err(error) = init.await {
                        tracing::error!(%error, "Cluster: the Redis adapter could not start");
                    }
                });
            }
        }
    }
}

impl Link {
    /// The live connection, or `NotConnected`.
    fn connection(&self) -> Result<(u64, MultiplexedConnection), ClusterError> {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(ClusterError::NotConnected)
    }

    /// The live history connection (never subscribed), or `NotConnected`.
    fn data_connection(&self) -> Result<(u64, MultiplexedConnection), ClusterError> {
        self.data
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(ClusterError::NotConnected)
    }

    /// Counts `n` ignored foreign entries under `key`; logs the first time.
    fn foreign(&self, n: u64, key: &str, what: &str) {
        if n == 0 {
            return;
        }
        self.counters
            .foreign_ignored
            .fetch_add(n, Ordering::Relaxed);
        if !self.foreign_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "Cluster: ignoring {n} entries of {key} that are not {what} (written by \
                 something else); they are counted in foreign_ignored and not logged again"
            );
        }
    }

    fn set_state(&self, state: RedisState) {
        let changed = self.state.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        });
        if changed {
            lock(&self.facts).since = Some(self.clock.wall());
        }
    }

    /// Drops connection `generation` if it is still the live one.
    fn connection_lost(&self, generation: u64, why: &str) {
        let dropped = {
            let mut conn = self.conn.write().unwrap_or_else(PoisonError::into_inner);
            match &*conn {
                Some((g, _)) if *g == generation => {
                    *conn = None;
                    true
                }
                _ => false,
            }
        };
        {
            let mut data = self.data.write().unwrap_or_else(PoisonError::into_inner);
            if matches!(&*data, Some((g, _)) if *g == generation) {
                *data = None;
            }
        }
        if dropped {
            self.counters.disconnects.fetch_add(1, Ordering::Relaxed);
            lock(&self.facts).last_error = Some(why.to_string());
            self.set_state(RedisState::Disconnected);
            tracing::warn!(
                "Cluster: lost the connection to Redis ({why}); serving this node's clients only until it returns"
            );
            self.lost.notify_one();
        }
    }

    fn on_push(&self, generation: u64, msg: PushInfo) {
        match msg.kind {
            PushKind::Disconnection => self.connection_lost(generation, "connection closed"),
            PushKind::Message | PushKind::SMessage => {
                let mut data = msg.data.into_iter();
                let (Some(chan), Some(payload)) = (data.next(), data.next()) else {
                    return;
                };
                let (Ok(chan), Ok(payload)) = (
                    redis::from_redis_value::<String>(chan),
                    redis::from_redis_value::<Vec<u8>>(payload),
                ) else {
                    return;
                };
                let handlers = self.handlers.read().unwrap_or_else(PoisonError::into_inner);
                if let Some(tx) = handlers.get(&chan) {
                    if tx.try_send((chan, payload)).is_ok() {
                        self.counters.received.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.counters
                            .incoming_dropped
                            .fetch_add(1, Ordering::Relaxed);
                        if let Some(n) = self.incoming_full.hit(self.clock.now()) {
                            tracing::warn!(
                                "Cluster: {n} message(s) from Redis dropped (incoming queue full)"
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }

    async fn timed<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ClusterError> {
        let timeout = self.settings.command_timeout;
        match tokio::time::timeout(timeout, fut).await {
            Ok(result) => result.map_err(ClusterError::from),
            Err(_) => Err(ClusterError::Timeout {
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// One reconnect attempt: a connect and a first heartbeat. A link that
    /// connects but cannot beat is a failed attempt, paced as any other; a
    /// heartbeat Redis refuses (a wrong type under one of warden's keys)
    /// leaves a working link.
    async fn attempt(self: &Arc<Self>) -> Result<(u64, HashSet<String>), ClusterError> {
        match self.connect().await {
            Ok((generation, subscribed)) => match self.heartbeat().await {
                Err(error) if error.is_connection_error() => {
                    self.connection_lost(generation, &error.to_string());
                    Err(error)
                }
                Err(error) => {
                    // Redis refused a command (a wrong type under one of
                    // warden's keys): the link works, keep it.
                    lock(&self.facts).last_error = Some(error.to_string());
                    tracing::warn!("Cluster: Redis refused the heartbeat: {error}");
                    Ok((generation, subscribed))
                }
                Ok(()) => Ok((generation, subscribed)),
            },
            Err(error) => Err(error),
        }
    }

    /// Counts and reports a failed reconnect attempt: the last error, the
    /// breaker's state, and a warning for the first failure and every tenth
    /// (a long outage must not flood the log).
    fn connect_failed(&self, error: &ClusterError, breaker: &CircuitBreaker, failures_logged: u32) {
        self.counters
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
        lock(&self.facts).last_error = Some(error.to_string());
        lock(&self.facts).breaker = Some(breaker.state());
        self.set_state(RedisState::Disconnected);
        // Log the first failure and then every tenth: a long outage
        // must not flood the log.
        if failures_logged.is_multiple_of(10) {
            let url = redact_url(&self.settings.redis_url);
            tracing::warn!(
                "Cluster: cannot reach Redis {url} ({error}); this node serves its own \
                 clients only and retries (reconnect breaker {}). Check that Redis runs \
                 there: redis-cli -u '{url}' ping",
                breaker.state()
            );
        }
    }

    /// One connection attempt: connect, subscribe every registered channel.
    async fn connect(self: &Arc<Self>) -> Result<(u64, HashSet<String>), ClusterError> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let weak: Weak<Link> = Arc::downgrade(self);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.command_timeout))
            .set_response_timeout(Some(self.settings.command_timeout))
            .set_push_sender(move |msg: PushInfo| {
                if let Some(link) = weak.upgrade() {
                    link.on_push(generation, msg);
                }
                Ok::<(), Infallible>(())
            });
        let mut conn = self
            .timed(
                self.client
                    .get_multiplexed_async_connection_with_config(&config),
            )
            .await?;
        let channels = self.channels();
        if !channels.is_empty() {
            let list: Vec<&String> = channels.iter().collect();
            self.timed(conn.subscribe(list)).await?;
        }
        let data_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.command_timeout))
            .set_response_timeout(Some(self.settings.command_timeout));
        let data = self
            .timed(
                self.client
                    .get_multiplexed_async_connection_with_config(&data_config),
            )
            .await?;
        *self.data.write().unwrap_or_else(PoisonError::into_inner) = Some((generation, data));
        *self.conn.write().unwrap_or_else(PoisonError::into_inner) = Some((generation, conn));
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        self.set_state(RedisState::Connected);
        Ok((generation, channels))
    }

    /// The channels the adapter has registered.
    fn channels(&self) -> HashSet<String> {
        self.handlers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Subscribes channels registered since, unsubscribes those dropped.
    async fn sync_subscriptions(
        &self,
        subscribed: &mut HashSet<String>,
    ) -> Result<(), ClusterError> {
        let (_, mut conn) = self.connection()?;
        let wanted = self.channels();
        let add: Vec<&String> = wanted.difference(subscribed).collect();
        if !add.is_empty() {
            self.timed(conn.subscribe(add)).await?;
        }
        let remove: Vec<&String> = subscribed.difference(&wanted).collect();
        if !remove.is_empty() {
            self.timed(conn.unsubscribe(remove)).await?;
        }
        *subscribed = wanted;
        Ok(())
    }

    /// `PING`, this node's last-seen time, and the others'.
    async fn heartbeat(&self) -> Result<(), ClusterError> {
        let (_, mut conn) = self.connection()?;
        let s = &self.settings;
        let key = s.nodes_key();
        let now_ms = self.clock.wall().as_millis();
        let started = tokio::time::Instant::now();
        let (_pong, _added, raw): (String, i64, HashMap<Vec<u8>, Vec<u8>>) = self
            .timed(
                redis::pipe()
                    .cmd("PING")
                    .cmd("HSET")
                    .arg(&key)
                    .arg(&s.node_id)
                    .arg(now_ms)
                    .cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut conn),
            )
            .await?;
        let rtt = started.elapsed();
        let nodes = self.nodes_seen(raw);
        let fresh = u64::try_from(s.heartbeat_interval.as_millis() * 3).unwrap_or(u64::MAX);
        let forget = u64::try_from(NODE_FORGET_AFTER.as_millis()).unwrap_or(u64::MAX);
        let mut peers: Vec<String> = nodes
            .iter()
            .filter(|(id, seen)| **id != s.node_id && now_ms.saturating_sub(**seen) <= fresh)
            .map(|(id, _)| id.clone())
            .collect();
        peers.sort();
        let gone: Vec<&String> = nodes
            .iter()
            .filter(|(_, seen)| now_ms.saturating_sub(**seen) > forget)
            .map(|(id, _)| id)
            .collect();
        if !gone.is_empty() {
            let _: Result<i64, _> = self
                .timed(
                    redis::cmd("HDEL")
                        .arg(&key)
                        .arg(gone)
                        .query_async(&mut conn),
                )
                .await;
        }
        {
            let mut facts = lock(&self.facts);
            facts.last_rtt = Some(rtt);
            facts.last_heartbeat = Some(self.clock.now());
            facts.peers = peers;
            facts.last_error = None;
        }
        if let Some(ordered) = &self.ordered
            && let Ok((_, mut data)) = self.data_connection()
        {
            self.write_sessions(ordered, &mut data).await?;
        }
        Ok(())
    }

    /// The nodes of `<prefix>:nodes` and when each was last seen (epoch
    /// ms). Anyone with access to Redis can write this hash: a field that is
    /// not `<node id>: <epoch ms>` is ignored (and counted), never a failure
    /// of the heartbeat.
    fn nodes_seen(&self, raw: HashMap<Vec<u8>, Vec<u8>>) -> HashMap<String, u64> {
        let mut nodes: HashMap<String, u64> = HashMap::with_capacity(raw.len());
        let mut foreign = 0u64;
        for (field, value) in raw {
            let seen = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            match (String::from_utf8(field), seen) {
                (Ok(id), Some(seen)) if is_valid_node_name(&id) => {
                    nodes.insert(id, seen);
                }
                _ => foreign += 1,
            }
        }
        self.foreign(
            foreign,
            &self.settings.nodes_key(),
            "`<node id>: <epoch ms>`",
        );
        nodes
    }

    /// Up to `max` pending events, oldest first.
    fn pending_batch(&self, max: usize) -> Vec<(u64, StampedEvent)> {
        lock(&self.pending).iter().take(max).cloned().collect()
    }

    /// Forgets every pending event up to the last of `batch`.
    fn forget_pending(&self, batch: &[(u64, StampedEvent)]) {
        let Some((last, _)) = batch.last() else {
            return;
        };
        let mut pending = lock(&self.pending);
        while pending.front().is_some_and(|(seq, _)| seq <= last) {
            pending.pop_front();
        }
    }

    /// Appends `batch` to the stream in one pipeline; on success forgets
    /// every pending event up to the batch's last sequence number.
    async fn append(
        &self,
        conn: &mut MultiplexedConnection,
        batch: &[(u64, StampedEvent)],
    ) -> Result<(), ClusterError> {
        if batch.is_empty() {
            return Ok(());
        }
        let key = self.settings.history_key();
        let mut pipe = redis::pipe();
        for (_, json) in batch {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("=")
                .arg(self.settings.history_len)
                .arg("*")
                .arg("event")
                .arg(json.as_str())
                .ignore();
        }
        self.timed(pipe.query_async::<()>(conn)).await?;
        self.forget_pending(batch);
        self.counters
            .history_written
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The stream's `limit` most recent events (all it keeps if `None`), oldest first.
    async fn read_history(&self, limit: Option<usize>) -> Result<Vec<Value>, ClusterError> {
        // Never the subscriber: Redis closes a subscribed connection whose
        // pending output passes the pub/sub buffer limit (32 MB by default).
        let (_, mut conn) = self.data_connection()?;
        let count = limit
            .unwrap_or(self.settings.history_len)
            .min(self.settings.history_len);
        if count == 0 {
            return Ok(Vec::new());
        }
        let reply: redis::streams::StreamRangeReply = self
            .timed(
                redis::cmd("XREVRANGE")
                    .arg(self.settings.history_key())
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut conn),
            )
            .await?;
        let entries = reply.ids.len();
        let mut events: Vec<Value> = reply
            .ids
            .into_iter()
            .filter_map(|entry| {
                let raw: String = entry.get("event")?;
                serde_json::from_str(&raw).ok()
            })
            .collect();
        self.foreign(
            (entries - events.len()) as u64,
            &self.settings.history_key(),
            "warden events",
        );
        events.reverse();
        Ok(events)
    }
}

/// Entries read per `XREVRANGE` while looking for an event in the stream.
const SINCE_PAGE: usize = 100;

impl Link {
    /// The stream's events after the one whose `event_id` is `since`, in
    /// the stream's order: read from the newest back (pages of
    /// [`SINCE_PAGE`], at most `history_len` entries in all, on the history
    /// connection) until it is found. Not found: the oldest kept instead.
    async fn read_history_since(
        &self,
        since: &str,
        limit: usize,
        max_bytes: usize,
    ) -> Result<SharedPage, ClusterError> {
        #[derive(serde::Deserialize)]
        struct Id<'a> {
            #[serde(borrow)]
            event_id: Option<&'a str>,
        }
        let (_, mut conn) = self.data_connection()?;
        let key = self.settings.history_key();
        // Newest first; the event asked for ends the search.
        let mut newest_first: Vec<String> = Vec::new();
        let mut found = false;
        let mut end = "+".to_owned();
        let mut foreign = 0u64;
        'pages: while newest_first.len() < self.settings.history_len {
            let reply: redis::streams::StreamRangeReply = self
                .timed(
                    redis::cmd("XREVRANGE")
                        .arg(&key)
                        .arg(&end)
                        .arg("-")
                        .arg("COUNT")
                        .arg(SINCE_PAGE)
                        .query_async(&mut conn),
                )
                .await?;
            let Some(last) = reply.ids.last() else { break };
            end = format!("({}", last.id);
            let count = reply.ids.len();
            for entry in reply.ids {
                let Some(raw) = entry.get::<String>("event") else {
                    foreign += 1;
                    continue;
                };
                match serde_json::from_str::<Id<'_>>(&raw) {
                    Ok(Id { event_id }) if event_id == Some(since) => {
                        found = true;
                        break 'pages;
                    }
                    Ok(_) => newest_first.push(raw),
                    Err(_) => foreign += 1,
                }
            }
            if count < SINCE_PAGE {
                break;
            }
        }
        self.foreign(foreign, &key, "warden events");
        let mut bytes = 0usize;
        let mut events = Vec::new();
        let mut more = false;
        for raw in newest_first.into_iter().rev() {
            bytes = bytes.saturating_add(raw.len());
            if events.len() >= limit || (bytes > max_bytes && !events.is_empty()) {
                more = true;
                break;
            }
            events.push(raw);
        }
        Ok(SharedPage {
            events,
            more,
            found,
        })
    }
}

/// Connects, keeps the connection, reconnects through the breaker.
async fn supervise(link: Arc<Link>) {
    let Some(mut breaker) = reconnect_breaker(&link) else {
        return;
    };
    // Between attempts: a pause that doubles up to the heartbeat interval,
    // back to the first once a link lasted (the breaker paces the rest).
    let schedule = RetrySchedule::doubling(RETRY_DELAY, link.settings.heartbeat_interval);
    let mut tries = 1u32;
    let mut failures_logged = 0u32;
    while !link.stop.is_cancelled() {
        let now = link.clock.now();
        let permit = match breaker.try_acquire(now) {
            Ok(permit) => permit,
            Err(Rejected::Open { remaining_ms, .. }) => {
                lock(&link.facts).breaker = Some(breaker.state());
                sleep_or_stop(&link, Duration::from_millis(remaining_ms.max(1))).await;
                continue;
            }
            Err(_) => {
                sleep_or_stop(&link, link.settings.heartbeat_interval).await;
                continue;
            }
        };
        match link.attempt().await {
            Ok((generation, mut subscribed)) => {
                failures_logged = 0;
                tracing::info!(
                    "Cluster: connected to Redis {} as node {}; relaying across nodes",
                    redact_url(&link.settings.redis_url),
                    link.settings.node_id
                );
                // The attempt succeeds for the breaker only once Redis has
                // answered a heartbeat on the live link (see serve_connection).
                let mut attempt = Some(permit);
                let lasted = serve_connection(
                    &link,
                    generation,
                    &mut subscribed,
                    &mut breaker,
                    &mut attempt,
                )
                .await;
                if link.stop.is_cancelled() {
                    return;
                }
                if let Some(permit) = attempt.take() {
                    // Lost before it answered a heartbeat (Redis closing it at
                    // once, say): a failed attempt, so the breaker opens after
                    // a few and no loop is ever hot.
                    breaker.on_failure(permit, link.clock.now());
                    lock(&link.facts).breaker = Some(breaker.state());
                }
                if lasted {
                    tries = 1;
                }
                tries = tries.saturating_add(1);
                sleep_or_stop(&link, schedule.pause_before(tries).unwrap_or(RETRY_DELAY)).await;
            }
            Err(error) => {
                breaker.on_failure(permit, link.clock.now());
                link.connect_failed(&error, &breaker, failures_logged);
                failures_logged = failures_logged.wrapping_add(1);
                tries = tries.saturating_add(1);
                sleep_or_stop(&link, schedule.pause_before(tries).unwrap_or(RETRY_DELAY)).await;
            }
        }
    }
}

/// The breaker that paces reconnects: the link's settings, or the
/// defaults if those are invalid (logged).
fn reconnect_breaker(link: &Link) -> Option<CircuitBreaker> {
    match CircuitBreaker::new(link.settings.reconnect.clone()) {
        Ok(b) => Some(b),
        Err(error) => {
            tracing::error!(%error, "Cluster: invalid reconnect settings; using the defaults");
            // The defaults are valid (tested in breaker.rs); nothing to
            // supervise with otherwise.
            CircuitBreaker::new(BreakerSettings::default()).ok()
        }
    }
}

/// Until the connection is lost or the link stops: keeps the subscriptions
/// in step with the adapter and beats the heart. At the first heartbeat that
/// Redis answers (even with a refusal), the connect's `attempt` is reported
/// to `breaker` as a success. Returns whether that happened (the connection
/// was healthy for an interval at least).
async fn serve_connection(
    link: &Arc<Link>,
    generation: u64,
    subscribed: &mut HashSet<String>,
    breaker: &mut CircuitBreaker,
    attempt: &mut Option<Permit>,
) -> bool {
    let mut beat = tokio::time::interval(link.settings.heartbeat_interval);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    beat.tick().await;
    let mut healthy = false;
    loop {
        let current = matches!(
            &*link.conn.read().unwrap_or_else(PoisonError::into_inner),
            Some((g, _)) if *g == generation
        );
        if !current {
            return healthy;
        }
        let (result, was_beat) = tokio::select! {
            () = link.stop.cancelled() => return healthy,
            () = link.lost.notified() => (Ok(()), false),
            () = link.subs_changed.notified() => (link.sync_subscriptions(subscribed).await, false),
            _ = beat.tick() => (link.heartbeat().await, true),
        };
        let answered = match &result {
            Ok(()) => true,
            Err(error) => !error.is_connection_error(),
        };
        if was_beat
            && answered
            && let Some(permit) = attempt.take()
        {
            healthy = true;
            breaker.on_success(permit, link.clock.now());
            lock(&link.facts).breaker = Some(breaker.state());
        }
        match result {
            Ok(()) => {}
            Err(error) if error.is_connection_error() => {
                link.connection_lost(generation, &error.to_string());
                return healthy;
            }
            Err(error) => {
                // Logged when it starts (or changes), not at every heartbeat.
                let text = error.to_string();
                let repeated =
                    lock(&link.facts).last_error.replace(text) == Some(error.to_string());
                if !repeated {
                    tracing::warn!("Cluster: Redis refused a command: {error}");
                }
            }
        }
    }
}

async fn sleep_or_stop(link: &Link, duration: Duration) {
    tokio::select! {
        () = link.stop.cancelled() => {}
        () = tokio::time::sleep(duration) => {}
    }
}

/// Writes pending events to the stream, in order, whenever connected.
async fn write_history(link: Arc<Link>) {
    let mut state = link.state.subscribe();
    loop {
        let batch = link.pending_batch(HISTORY_BATCH);
        if batch.is_empty() {
            tokio::select! {
                () = link.stop.cancelled() => return,
                () = link.history_ready.notified() => continue,
            }
        }
        let Ok((generation, mut conn)) = link.data_connection() else {
            tokio::select! {
                () = link.stop.cancelled() => return,
                _ = state.wait_for(|s| *s == RedisState::Connected) => continue,
            }
        };
        match link.append(&mut conn, &batch).await {
            Ok(()) => {}
            Err(error) if error.is_connection_error() => {
                link.connection_lost(generation, &error.to_string());
            }
            Err(error) => {
                // Retrying the same batch would fail the same way: drop it
                // from the shared history (each node still has it in its own).
                link.forget_pending(&batch);
                link.counters
                    .history_overflowed
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                lock(&link.facts).last_error = Some(error.to_string());
                tracing::warn!(
                    "Cluster: Redis refused {} history events ({error}); they stay in this node's own history",
                    batch.len()
                );
            }
        }
    }
}

/// Publishes accepted events on `<prefix>:events`, in the order they were
/// handed over, without waiting for each: what arrived while a round trip
/// was out goes in the next pipeline (at most [`PUBLISH_BATCH`]), one round
/// trip per batch. A batch that cannot be published (no connection, an
/// error, the command timeout) is never retried: its events were delivered
/// to this node's clients by the hub already and are counted as local
/// fallbacks. So the other nodes see each sender's events once, in order,
/// with a gap where Redis was away.
async fn publish_events(link: Arc<Link>, mut outbox: mpsc::Receiver<StampedEvent>) {
    let chan = link.settings.events_channel();
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        batch.clear();
        tokio::select! {
            () = link.stop.cancelled() => return,
            n = outbox.recv_many(&mut batch, PUBLISH_BATCH) => if n == 0 {
                return;
            },
        }
        let n = batch.len() as u64;
        if let Some(ordered) = &link.ordered {
            append_or_deliver_here(&link, ordered, &mut batch).await;
            continue;
        }
        let Ok((generation, mut conn)) = link.connection() else {
            link.counters
                .local_fallbacks
                .fetch_add(n, Ordering::Relaxed);
            continue;
        };
        let mut pipe = redis::pipe();
        for event in &batch {
            pipe.cmd("PUBLISH")
                .arg(&chan)
                .arg(Tagged(event, &link.origin))
                .ignore();
        }
        match link.timed(pipe.query_async::<()>(&mut conn)).await {
            Ok(()) => {
                link.counters.published.fetch_add(n, Ordering::Relaxed);
                link.counters
                    .events_published
                    .fetch_add(n, Ordering::Relaxed);
            }
            Err(error) => {
                link.counters
                    .publish_failures
                    .fetch_add(n, Ordering::Relaxed);
                link.counters
                    .local_fallbacks
                    .fetch_add(n, Ordering::Relaxed);
                tracing::debug!(%error, events = n, "cross-node publish failed; delivered on this node only");
                if error.is_connection_error() {
                    link.connection_lost(generation, &error.to_string());
                }
            }
        }
    }
}

/// Ordered mode's publish: appends `batch` to the stream (every node, this
/// one too, delivers it from there); what cannot be appended is delivered
/// to this node's clients instead.
async fn append_or_deliver_here(link: &Link, ordered: &Ordered, batch: &mut Vec<StampedEvent>) {
    let n = batch.len() as u64;
    let Ok((generation, mut conn)) = link.data_connection() else {
        link.deliver_here(ordered, std::mem::take(batch)).await;
        return;
    };
    match link.append_ordered(&mut conn, batch).await {
        Ok(()) => {
            link.counters
                .events_published
                .fetch_add(n, Ordering::Relaxed);
            link.counters
                .history_written
                .fetch_add(n, Ordering::Relaxed);
        }
        Err(error) => {
            link.counters
                .publish_failures
                .fetch_add(n, Ordering::Relaxed);
            tracing::debug!(%error, events = n, "append to the shared stream failed; delivered on this node only");
            link.deliver_here(ordered, std::mem::take(batch)).await;
            if error.is_connection_error() {
                link.connection_lost(generation, &error.to_string());
            }
        }
    }
}

/// An event as published: its JSON, a newline, the publishing process's
/// origin tag; written straight into the command (no intermediate buffer).
struct Tagged<'a>(&'a StampedEvent, &'a str);

impl redis::ToRedisArgs for Tagged<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        use std::io::Write;
        let mut arg = out.writer_for_next_arg();
        // Writing to the command's own Vec cannot fail.
        let _ = arg.write_all(self.0.as_str().as_bytes());
        let _ = arg.write_all(b"\n");
        let _ = arg.write_all(self.1.as_bytes());
    }
}

/// What a message on `<prefix>:events` is.
enum Incoming {
    /// This process's own publish, handed back by Redis.
    Own,
    /// Not `<json>\n<origin>`: written by something else.
    Foreign,
    Event(StampedEvent),
}

impl Link {
    /// Reads one message of `<prefix>:events`; the JSON keeps the
    /// message's allocation.
    fn incoming(&self, mut payload: Vec<u8>) -> Incoming {
        let Some(at) = payload.iter().rposition(|b| *b == b'\n') else {
            return Incoming::Foreign;
        };
        if payload[at + 1..] == *self.origin.as_bytes() {
            return Incoming::Own;
        }
        payload.truncate(at);
        match String::from_utf8(payload).map(StampedEvent::from_remote) {
            Ok(Ok(event)) => Incoming::Event(event),
            _ => Incoming::Foreign,
        }
    }
}

/// Delivers the other nodes' events to this node's clients, one at a time
/// in the order Redis handed them over (so each sender's order holds), each
/// by the local relay's rule ([`Hub::deliver_remote`]).
async fn deliver_events(
    link: Arc<Link>,
    hub: WeakHub<ClusterAdapter>,
    mut inbox: mpsc::Receiver<ChanItem>,
) {
    loop {
        let item = tokio::select! {
            () = link.stop.cancelled() => return,
            item = inbox.recv() => item,
        };
        let Some((chan, payload)) = item else { return };
        let event = match link.incoming(payload) {
            Incoming::Own => continue,
            Incoming::Foreign => {
                link.foreign(1, &chan, "warden events");
                continue;
            }
            Incoming::Event(event) => event,
        };
        let Some(hub) = hub.upgrade() else { return };
        hub.deliver_remote(&event).await;
    }
}

/// The adapter's driver: the shared link. Cheap to clone.
#[derive(Clone)]
pub struct ClusterDriver {
    link: Arc<Link>,
}

impl Driver for ClusterDriver {
    type Error = ClusterError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), ClusterError> {
        let link = &self.link;
        let (generation, mut conn) = link.connection()?;
        let result = link
            .timed(redis::AsyncCommands::publish::<_, _, redis::Value>(
                &mut conn, chan, val,
            ))
            .await;
        match result {
            Ok(_) => {
                link.counters.published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                link.counters
                    .publish_failures
                    .fetch_add(1, Ordering::Relaxed);
                if error.is_connection_error() {
                    link.connection_lost(generation, &error.to_string());
                }
                Err(error)
            }
        }
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, ClusterError> {
        let (tx, rx) = mpsc::channel(size.max(1));
        self.link
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(chan, tx);
        self.link.subs_changed.notify_one();
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), ClusterError> {
        self.link
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&chan);
        self.link.subs_changed.notify_one();
        Ok(())
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, ClusterError> {
        let link = &self.link;
        let (_, mut conn) = link.connection()?;
        let (_, count): (String, u16) = link
            .timed(
                redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(chan)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(count)
    }
}

/// This machine's host name, for the default node id (`warden` when the
/// kernel does not say).
pub fn hostname() -> String {
    machine_hostname().unwrap_or_else(|| "warden".to_string())
}

/// The kernel's host name, if it has one: the default node id, and a name
/// the HTTP door answers to (`run::hub_settings`).
pub fn machine_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp3_is_asked_for_unless_a_protocol_is_named() {
        assert_eq!(with_resp3("redis://h:1"), "redis://h:1?protocol=resp3");
        assert_eq!(
            with_resp3("redis://h:1/2?x=1"),
            "redis://h:1/2?x=1&protocol=resp3"
        );
        assert_eq!(
            with_resp3("redis://h?protocol=resp3"),
            "redis://h?protocol=resp3"
        );
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact_url("redis://user:s3cret@h:6379/0?protocol=resp3"),
            "redis://user:***@h:6379/0?protocol=resp3"
        );
        assert_eq!(redact_url("redis://s3cret@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn the_default_node_id_is_host_and_port() {
        assert_eq!(default_node_id("laptop", 8765), "laptop-8765");
        assert_eq!(default_node_id("a b/c", 1), "a-b-c-1");
        assert_eq!(default_node_id("", 9), "-9");
    }

    #[test]
    fn settings_come_from_the_cluster_section() {
        let mut cfg = WardenConfig::default();
        assert_eq!(ClusterSettings::from_config(&cfg, "h"), None);
        cfg.cluster.redis_url = Some("redis://127.0.0.1:6390".into());
        let s = ClusterSettings::from_config(&cfg, "h").unwrap();
        assert_eq!(s.redis_url, "redis://127.0.0.1:6390?protocol=resp3");
        assert_eq!(s.node_id, "h-8765");
        assert_eq!(s.prefix, "warden");
        assert_eq!(s.history_len, 1000);
        assert!(s.reconnect.validate().is_ok());
        cfg.cluster.node_id = Some("east-1".into());
        assert_eq!(
            ClusterSettings::from_config(&cfg, "h").unwrap().node_id,
            "east-1"
        );
    }
}
