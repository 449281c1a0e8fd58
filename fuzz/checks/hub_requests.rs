//! Fuzz target: the real hub router (axum + the socketioxide layer, as the
//! daemon serves it) fed arbitrary HTTP requests: `POST /api/events` bodies,
//! Engine.IO v4 polling sessions carrying arbitrary Engine.IO / Socket.IO
//! packets, and `GET /status` / `/stats`. Requests go through
//! `tower::ServiceExt::oneshot` on a current-thread runtime: no sockets.
//!
//! Asserted: nothing panics (libFuzzer aborts on a panic in any task);
//! `POST /api/events` answers 204 exactly for a JSON body within the payload
//! limit, 413 above it and 400 otherwise; the event history never exceeds
//! its bound and never holds more events than were accepted; the counters
//! stay consistent (`/stats` agrees with the hub).
//!
//! Needs the daemon: build with `--features hub` (see fuzz/run).

use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;
use warden::daemon::hub::http::{HealthProvider, app};
use warden::daemon::hub::{Hub, HubSettings};
use warden::health::HealthStatus;
use warden::time::{Clock, ManualClock, WallTime};

const MAX_PAYLOAD_BYTES: u64 = 2048;
const HISTORY: usize = 8;
const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// A small JSON value, so that structured inputs get past the parsers.
#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(Key, Json)>),
}

#[derive(Arbitrary, Debug)]
enum Key {
    Type,
    Data,
    ServerId,
    ReceivedAt,
    Limit,
    Other(String),
}

impl Json {
    fn to_value(&self, depth: usize) -> Value {
        if depth > 8 {
            return Value::Null;
        }
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => Value::from(*i),
            Json::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::Str(s) => Value::String(s.clone()),
            Json::Array(items) => {
                Value::Array(items.iter().map(|j| j.to_value(depth + 1)).collect())
            }
            Json::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Key::Type => "type".to_owned(),
                            Key::Data => "data".to_owned(),
                            Key::ServerId => "server_id".to_owned(),
                            Key::ReceivedAt => "received_at".to_owned(),
                            Key::Limit => "limit".to_owned(),
                            Key::Other(s) => s.clone(),
                        };
                        (key, v.to_value(depth + 1))
                    })
                    .collect(),
            ),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum EventName {
    ClaudeEvent,
    GetHistory,
    Ping,
    GetVersion,
    Other(String),
}

/// One Engine.IO packet of a polling POST body.
#[derive(Arbitrary, Debug)]
enum Packet {
    /// Socket.IO CONNECT to `/` (`40`), optionally with auth data.
    Connect(Option<Json>),
    /// Socket.IO EVENT (`42[name, args...]`), optionally with an ack id.
    Event {
        name: EventName,
        args: Vec<Json>,
        ack: Option<u16>,
    },
    /// Socket.IO DISCONNECT (`41`).
    Disconnect,
    /// Engine.IO PING / PONG (`2` / `3`) with an optional probe payload.
    Ping(Option<String>),
    Pong,
    /// Engine.IO MESSAGE with arbitrary Socket.IO text (`4...`).
    RawMessage(String),
    /// Anything at all.
    Raw(String),
}

impl Packet {
    fn encode(&self) -> String {
        match self {
            Packet::Connect(None) => "40".to_owned(),
            Packet::Connect(Some(auth)) => format!("40{}", auth.to_value(0)),
            Packet::Event { name, args, ack } => {
                let name = match name {
                    EventName::ClaudeEvent => "claude_event".to_owned(),
                    EventName::GetHistory => "get_history".to_owned(),
                    EventName::Ping => "ping".to_owned(),
                    EventName::GetVersion => "get_version".to_owned(),
                    EventName::Other(s) => s.clone(),
                };
                let mut items = vec![Value::String(name)];
                items.extend(args.iter().map(|a| a.to_value(0)));
                let ack = ack.map(|a| a.to_string()).unwrap_or_default();
                format!("42{ack}{}", Value::Array(items))
            }
            Packet::Disconnect => "41".to_owned(),
            Packet::Ping(probe) => format!("2{}", probe.as_deref().unwrap_or("")),
            Packet::Pong => "3".to_owned(),
            Packet::RawMessage(text) => format!("4{text}"),
            Packet::Raw(text) => text.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// `POST /api/events` with any bytes.
    PostEventBytes(Vec<u8>),
    /// `POST /api/events` with a JSON value (usually accepted).
    PostEventJson(Json),
    /// `POST /api/events` just over the payload limit.
    PostEventTooLarge,
    /// Open an Engine.IO polling session.
    Open,
    /// POST packets to session `session` (modulo the sessions opened).
    Send {
        session: u8,
        packets: Vec<Packet>,
    },
    /// POST arbitrary bytes to a session.
    SendBytes {
        session: u8,
        body: Vec<u8>,
    },
    /// A polling request with a made-up or malformed query.
    OddQuery {
        method_post: bool,
        query: String,
        body: Vec<u8>,
    },
    Status,
    Stats,
    /// Let the hub's tasks run (relays, replies).
    Yield,
}

#[derive(Arbitrary, Debug)]
pub struct Input {
    steps: Vec<Step>,
}

async fn call(router: &Router, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let mut builder = Request::builder().method(method).uri(uri);
    if uri == "/api/events" {
        // What a hook sends; without it the hub answers 415.
        builder = builder.header("content-type", "application/json");
    }
    let request = match builder.body(Body::from(body)) {
        Ok(r) => r,
        // A made-up query that is not a valid URI: nothing to send.
        Err(_) => return (StatusCode::BAD_REQUEST, Vec::new()),
    };
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("the router's error type is Infallible");
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    (status, bytes)
}

/// The sid of an Engine.IO v4 open packet: `0{"sid":"...",...}`.
fn sid_of(open: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(open).ok()?;
    let json: Value = serde_json::from_str(text.strip_prefix('0')?).ok()?;
    Some(json.get("sid")?.as_str()?.to_owned())
}

fn health() -> Arc<dyn HealthProvider> {
    Arc::new(|| HealthStatus::Healthy)
}

async fn run(input: Input) {
    let mut settings = HubSettings::new("socketio-server-fuzz", "0.0.0-fuzz");
    settings.max_payload_bytes = MAX_PAYLOAD_BYTES;
    settings.event_history_size = HISTORY;
    settings.socket_buffer_packets = 16;
    settings.inbound_queue_events = 4;
    settings.ping_interval = PING_INTERVAL;
    settings.ping_timeout = PING_TIMEOUT;
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(WallTime::from_secs(1_754_490_600)));
    let hub: Hub = Hub::new(settings, clock);
    let router = app(&hub, health(), Router::new()).expect("no CORS configured");
    let mut sessions: Vec<String> = Vec::new();
    let mut accepted_posts = 0u64;

    for step in input.steps.iter().take(64) {
        match step {
            Step::PostEventBytes(body) => {
                let valid = serde_json::from_slice::<Value>(body).is_ok();
                let (status, _) = call(&router, Method::POST, "/api/events", body.clone()).await;
                let expected = if body.len() as u64 > MAX_PAYLOAD_BYTES {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else if valid {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::BAD_REQUEST
                };
                assert_eq!(
                    status,
                    expected,
                    "POST /api/events with {} bytes",
                    body.len()
                );
                accepted_posts += u64::from(status == StatusCode::NO_CONTENT);
            }
            Step::PostEventJson(json) => {
                let body = json.to_value(0).to_string().into_bytes();
                let fits = body.len() as u64 <= MAX_PAYLOAD_BYTES;
                let (status, _) = call(&router, Method::POST, "/api/events", body).await;
                let expected = if fits {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::PAYLOAD_TOO_LARGE
                };
                assert_eq!(status, expected);
                accepted_posts += u64::from(status == StatusCode::NO_CONTENT);
            }
            Step::PostEventTooLarge => {
                let body = vec![b' '; MAX_PAYLOAD_BYTES as usize + 1];
                let (status, _) = call(&router, Method::POST, "/api/events", body).await;
                assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
            }
            Step::Open => {
                let (status, body) = call(
                    &router,
                    Method::GET,
                    "/socket.io/?EIO=4&transport=polling",
                    Vec::new(),
                )
                .await;
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "the Engine.IO handshake must succeed"
                );
                let sid = sid_of(&body).expect("an Engine.IO v4 open packet");
                if sessions.len() < 4 {
                    sessions.push(sid);
                }
            }
            Step::Send { session, packets } => {
                if sessions.is_empty() {
                    continue;
                }
                let sid = &sessions[usize::from(*session) % sessions.len()];
                let body: Vec<String> = packets.iter().take(16).map(Packet::encode).collect();
                let uri = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
                call(&router, Method::POST, &uri, body.join("\x1e").into_bytes()).await;
            }
            Step::SendBytes { session, body } => {
                if sessions.is_empty() {
                    continue;
                }
                let sid = &sessions[usize::from(*session) % sessions.len()];
                let uri = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
                call(&router, Method::POST, &uri, body.clone()).await;
            }
            Step::OddQuery {
                method_post,
                query,
                body,
            } => {
                // Never a GET on a live session: a poll with nothing to send waits.
                if !method_post && query.contains("sid") {
                    continue;
                }
                let method = if *method_post {
                    Method::POST
                } else {
                    Method::GET
                };
                call(
                    &router,
                    method,
                    &format!("/socket.io/?{query}"),
                    body.clone(),
                )
                .await;
            }
            Step::Status => {
                let (status, body) = call(&router, Method::GET, "/status", Vec::new()).await;
                assert_eq!(status, StatusCode::OK);
                let json: Value = serde_json::from_slice(&body).expect("/status is JSON");
                assert_eq!(json["clients"], hub.stats().clients_connected());
            }
            Step::Stats => {
                let (status, body) = call(&router, Method::GET, "/stats", Vec::new()).await;
                assert_eq!(status, StatusCode::OK);
                let json: Value = serde_json::from_slice(&body).expect("/stats is JSON");
                let history = json["history_size"].as_u64().expect("history_size");
                assert!(history as usize <= HISTORY);
            }
            Step::Yield => {
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
            }
        }
        // Let the tasks the request spawned run (namespace connect, relays,
        // replies), as a real server would between two requests.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let stats = hub.stats().snapshot();
        assert!(hub.history_len() <= HISTORY, "history exceeded its bound");
        assert!(
            hub.history_len() as u64 <= stats.events_processed,
            "history holds events that were never accepted"
        );
        assert!(stats.events_processed >= accepted_posts);
        assert!(stats.clients_connected <= sessions.len() as u64);
        assert!(hub.history(None).len() == hub.history_len());
    }
    // Let the (paused, virtual) clock run past the Engine.IO heartbeat, so
    // that sessions that never joined a namespace time out, then close the
    // hub as the daemon does on shutdown. The engine's sessions, the hub and
    // its SocketIo refer to each other: without both steps every input would
    // leak them with its runtime's file descriptors.
    if std::env::var_os("WARDEN_FUZZ_HUB_STATS").is_some() {
        // For checking what the corpus reaches: `WARDEN_FUZZ_HUB_STATS=1 .../hub_requests -runs=0 corpus/hub_requests`.
        eprintln!(
            "hub_requests: sessions={} accepted_posts={accepted_posts} {:?}",
            sessions.len(),
            hub.stats().snapshot()
        );
    }
    tokio::time::sleep(PING_INTERVAL * 4 + PING_TIMEOUT * 4).await;
    hub.close().await;
    assert_eq!(hub.stats().clients_connected(), 0);
}

/// One fuzz input, checked: the body of the fuzz target, shared with
/// `tests/fuzz_regressions.rs`, which replays the saved inputs on stable.
pub fn check(input: Input) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(run(input));
}
