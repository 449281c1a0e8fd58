//! Shared support for the hub integration tests: a hub served in-process on a
//! real loopback socket, and real Socket.IO clients (rust_socketio, websocket
//! or polling transport) that record everything they receive.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::Value;
use warden::daemon::hub::http;
use warden::daemon::hub::{Hub, HubSettings};
use warden::daemon::os::clock::SystemClock;
use warden::daemon::serve::server::{self, ServingHandle};
use warden::health::HealthStatus;

/// Generous: conditions are polled, never timed.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn settings() -> HubSettings {
    HubSettings::new("socketio-server-test", "9.9.9-test")
}

pub struct TestHub {
    pub hub: Hub,
    pub addr: SocketAddr,
    pub handle: Option<ServingHandle>,
}

impl TestHub {
    pub async fn start(settings: HubSettings) -> TestHub {
        let hub = Hub::new(settings, Arc::new(SystemClock::new()));
        let listener = server::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let handle = serve_generation(&hub, listener);
        TestHub {
            hub,
            addr,
            handle: Some(handle),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn shutdown(&mut self) -> server::ShutdownReport {
        self.handle
            .take()
            .expect("serving")
            .shutdown(DEADLINE)
            .await
            .expect("clean shutdown")
    }
}

/// One serving generation of `hub` on `listener` (what restart_service does).
pub fn serve_generation(hub: &Hub, listener: tokio::net::TcpListener) -> ServingHandle {
    let app = http::app(hub, Arc::new(|| HealthStatus::Healthy), axum::Router::new())
        .expect("valid CORS settings");
    server::serve_tcp(listener, app, hub)
}

/// Everything a client received, in order: (event name, first argument).
#[derive(Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Recorder {
    pub fn named(&self, name: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn count(&self, name: &str) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .count()
    }

    /// Polls until at least `n` `name` events arrived; panics after [`DEADLINE`].
    pub async fn wait_for(&self, name: &str, n: usize) -> Vec<Value> {
        wait_until(&format!("{n} {name} events"), || self.count(name) >= n).await;
        self.named(name)
    }
}

pub struct TestClient {
    pub client: Client,
    pub recorder: Recorder,
}

impl TestClient {
    /// Connects over websocket, without automatic reconnection, and waits
    /// for `connection_ack`.
    pub async fn connect(url: &str) -> TestClient {
        Self::connect_with(url, TransportType::Websocket, false).await
    }

    pub async fn connect_with(url: &str, transport: TransportType, reconnect: bool) -> TestClient {
        let recorder = Recorder::default();
        let sink = recorder.clone();
        let client = ClientBuilder::new(url)
            .transport_type(transport)
            .reconnect(reconnect)
            .reconnect_delay(50, 200)
            .on_any(move |event: Event, payload: Payload, _client: Client| {
                let sink = sink.clone();
                async move {
                    let name = match event {
                        Event::Custom(name) => name,
                        other => other.as_str().to_owned(),
                    };
                    let value = match payload {
                        Payload::Text(mut values) if !values.is_empty() => values.remove(0),
                        _ => Value::Null,
                    };
                    sink.events.lock().unwrap().push((name, value));
                }
                .boxed()
            })
            .connect()
            .await
            .expect("socket.io connect");
        recorder.wait_for("connection_ack", 1).await;
        TestClient { client, recorder }
    }

    pub async fn emit(&self, event: &str, data: Value) {
        self.client.emit(event, data).await.expect("emit");
    }
}

pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A reader that never reads: an Engine.IO polling handshake and a namespace
/// connect on the hub at `origin` (`http://host:port`), then never another
/// poll. Returns its polling URL (for a reader that reads late).
pub async fn stalled_reader(origin: &str) -> String {
    let base = format!("{origin}/socket.io/?EIO=4&transport=polling");
    let http = reqwest::Client::new();
    let open = http
        .get(&base)
        .send()
        .await
        .expect("handshake")
        .text()
        .await
        .expect("handshake body");
    let sid =
        serde_json::from_str::<Value>(open.trim_start_matches('0')).expect("open packet")["sid"]
            .as_str()
            .expect("sid")
            .to_owned();
    let poll_url = format!("{base}&sid={sid}");
    http.post(&poll_url)
        .body("40")
        .send()
        .await
        .expect("namespace connect");
    poll_url
}

/// Polls `poll_url` (answering pings) until `n` `claude_event`s arrived;
/// the number under `field` of each, in the order they came.
pub async fn read_late(poll_url: &str, n: usize, field: &str) -> Vec<u64> {
    let http = reqwest::Client::new();
    let mut received = Vec::new();
    let start = Instant::now();
    while received.len() < n {
        assert!(
            start.elapsed() < DEADLINE,
            "the late reader got {} of {n}",
            received.len()
        );
        let body = http
            .get(poll_url)
            .send()
            .await
            .expect("poll")
            .text()
            .await
            .expect("poll body");
        for packet in body.split('\u{1e}') {
            if packet == "2" {
                http.post(poll_url).body("3").send().await.expect("pong");
            } else if let Some(event) = packet.strip_prefix("42[\"claude_event\",") {
                let event: Value = serde_json::from_str(event.trim_end_matches(']'))
                    .expect("a claude_event's payload");
                received.push(event[field].as_u64().expect("the event's number"));
            }
        }
    }
    received
}
