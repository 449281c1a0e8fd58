//! One scenario against one server: start it, connect the clients, drive the
//! load, measure, stop it. Every phase has a bound, so a broken server makes
//! a run fail or report losses, never hang.
//!
//! Broadcast scenarios: N websocket clients join; M of them (the hooks) each
//! emit K `claude_event`s of about 600 bytes, as a burst (back to back) or
//! paced; every event must reach every other client. Each payload carries its
//! sender, sequence number and send time (µs since the tool's origin), so the
//! receivers count unique deliveries, duplicates, reorderings and latency
//! without a clock shared with the server. Server CPU is read from `/proc`
//! just before the first emit and after the last delivery (or the quiet
//! timeout); `/health` (or `/status` where there is no `/health`) is polled
//! on one keep-alive connection while the load runs.
//!
//! Connect storm: N websocket clients connect at once; per-client time to
//! `connection_ack`, failures, server CPU per connection.
//!
//! Lifecycle: start, P long-polling and W websocket clients, then stop
//! (`warden stop` for warden, SIGTERM for the bare hub); start-to-serving
//! and stop-to-exit.
//!
//! Not here: deciding whether a number is good (see `report` and
//! BENCHMARKS.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::eio::{ClientError, Packet, PollingClient, WsClient, classify, event_packet};
use crate::http1::HttpConn;
use crate::procfs;
use crate::server::{RunningServer, ServerError, ServerKind, ServerPaths, StopOutcome};
use crate::stats::percentile;

/// The event the hooks emit.
const CLAUDE_EVENT: &str = "claude_event";
/// Approximate size of one event's JSON payload, as the issue asks.
pub const PAYLOAD_BYTES: usize = 600;
/// Bound on one client's connect + `connection_ack`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Clients connecting at the same time outside the connect-storm scenario.
const CONNECT_CONCURRENCY: usize = 64;
/// Pause after connecting, before "idle with N clients" memory is read.
const SETTLE: Duration = Duration::from_millis(500);
/// Pauses after every client of a broadcast closed, before "after the
/// clients left" memory is read: soon (the server has seen every close; warden
/// has not yet had the quiet second after which it trims malloc's free
/// memory) and later (it has).
const SOON_AFTER_CLIENTS_LEFT: Duration = Duration::from_millis(500);
const AFTER_CLIENTS_LEFT: Duration = Duration::from_secs(5);
/// A broadcast ends when no delivery arrived for this long after the last emit.
const QUIET_TIMEOUT: Duration = Duration::from_secs(2);
/// Hard bound on one broadcast phase.
const BROADCAST_LIMIT: Duration = Duration::from_secs(120);
/// Time between two `/health` requests while the load runs.
const HEALTH_INTERVAL: Duration = Duration::from_millis(10);
/// Bound on the stop of a server.
const STOP_BOUND: Duration = Duration::from_secs(10);

/// How the hooks emit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Each sender emits its events back to back.
    Burst,
    /// All senders together emit `events_per_second`, evenly spread.
    Paced { events_per_second: f64 },
}

/// M of N clients emit K events each.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Broadcast {
    pub clients: usize,
    pub senders: usize,
    pub events_per_sender: usize,
    pub shape: Shape,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ScenarioKind {
    Broadcast(Broadcast),
    ConnectStorm {
        clients: usize,
    },
    Lifecycle {
        polling_clients: usize,
        websocket_clients: usize,
    },
}

/// A named scenario and the servers it runs against.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub kind: ScenarioKind,
    pub servers: Vec<ServerKind>,
}

/// The scenarios of issue 6.
pub fn standard_scenarios() -> Vec<Scenario> {
    // Python and Node run only when `--servers` names them (see BENCHMARKS.md).
    let pair = vec![
        ServerKind::Warden,
        ServerKind::WardenRecovery,
        ServerKind::Bare,
        ServerKind::Python,
        ServerKind::Node,
    ];
    let burst = |clients, senders, events| {
        ScenarioKind::Broadcast(Broadcast {
            clients,
            senders,
            events_per_sender: events,
            shape: Shape::Burst,
        })
    };
    vec![
        Scenario {
            name: "burst-100".into(),
            description: "100 clients, 10 senders x 100 events, burst".into(),
            kind: burst(100, 10, 100),
            servers: pair.clone(),
        },
        Scenario {
            name: "burst-1000".into(),
            description: "1,000 clients, 10 senders x 20 events, burst".into(),
            kind: burst(1000, 10, 20),
            servers: pair.clone(),
        },
        Scenario {
            name: "paced-100".into(),
            description: "100 clients, 10 senders x 25 events, 50 events/s in total".into(),
            kind: ScenarioKind::Broadcast(Broadcast {
                clients: 100,
                senders: 10,
                events_per_sender: 25,
                shape: Shape::Paced {
                    events_per_second: 50.0,
                },
            }),
            servers: pair.clone(),
        },
        Scenario {
            name: "flood-4".into(),
            description: "4 clients, one hook floods 5,000 events to the other 3".into(),
            kind: burst(4, 1, 5000),
            servers: vec![
                ServerKind::Warden,
                ServerKind::WardenRecovery,
                ServerKind::Bare,
                ServerKind::Bare128,
                ServerKind::Python,
                ServerKind::Node,
            ],
        },
        Scenario {
            name: "connect-1000".into(),
            description: "1,000 websocket clients connect at once".into(),
            kind: ScenarioKind::ConnectStorm { clients: 1000 },
            servers: pair.clone(),
        },
        Scenario {
            name: "lifecycle".into(),
            description:
                "start to serving; stop to exit with 20 polling + 20 websocket clients connected"
                    .into(),
            kind: ScenarioKind::Lifecycle {
                polling_clients: 20,
                websocket_clients: 20,
            },
            servers: pair,
        },
    ]
}

/// `GET /health` latency while the load ran.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HealthProbe {
    /// The path polled: `/health`, or `/status` when the server has no `/health`.
    pub path: String,
    pub samples: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Responses by status code (a 503 is a critical health status, still timed).
    pub status_codes: BTreeMap<u16, usize>,
    pub errors: usize,
    /// Every sample, in µs, in the order taken (at most
    /// [`MAX_HEALTH_SAMPLES`]): a saturated server answers few requests per
    /// run, so the report pools them over runs for a meaningful p99.
    pub latencies_us: Vec<u32>,
}

/// Bound on the samples one probe keeps.
pub const MAX_HEALTH_SAMPLES: usize = 100_000;

/// Everything measured in one run. Absent values were not measured in this
/// scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunMetrics {
    pub scenario: String,
    pub server: String,
    pub run: usize,
    /// 1-minute load average of the machine when the run began.
    pub load_average_1m: Option<f64>,
    pub start_to_serving_ms: Option<f64>,
    pub rss_start_kib: Option<u64>,
    /// The anonymous part of `rss_start_kib` (see `procfs::Memory`).
    pub rss_start_anon_kib: Option<u64>,
    pub rss_idle_kib: Option<u64>,
    pub rss_idle_anon_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    /// After a broadcast, once every client closed and
    /// `SOON_AFTER_CLIENTS_LEFT`, then `AFTER_CLIENTS_LEFT` passed: what the
    /// server gives back after load.
    pub rss_soon_after_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub rss_after_anon_kib: Option<u64>,
    pub clients_connected: Option<usize>,
    pub connect_failures: Option<usize>,
    pub connect_p50_ms: Option<f64>,
    pub connect_p99_ms: Option<f64>,
    pub connect_all_ms: Option<f64>,
    pub cpu_us_per_connection: Option<f64>,
    pub expected_deliveries: Option<u64>,
    pub deliveries: Option<u64>,
    pub lost: Option<u64>,
    pub duplicates: Option<u64>,
    /// Deliveries that arrived before an earlier event of the same sender.
    pub reordered: Option<u64>,
    /// Deliveries without the server's `received_at` stamp.
    pub unstamped: Option<u64>,
    pub broadcast_ms: Option<f64>,
    pub deliveries_per_s: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub cpu_us: Option<u64>,
    pub cpu_us_per_delivery: Option<f64>,
    pub health: Option<HealthProbe>,
    pub stop: Option<StopOutcome>,
    pub stop_to_exit_ms: Option<f64>,
    /// Client errors met during the run (first few, for diagnosis).
    pub client_errors: Vec<String>,
}

/// A run that could not be measured at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("could not read the server's /proc entries: {0}")]
    Proc(#[from] std::io::Error),
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// Runs `scenario` once against `kind`.
pub async fn run(
    scenario: &Scenario,
    kind: ServerKind,
    paths: &ServerPaths,
    run_index: usize,
) -> Result<RunMetrics, RunError> {
    let mut metrics = RunMetrics {
        scenario: scenario.name.clone(),
        server: kind.name().to_owned(),
        run: run_index,
        load_average_1m: procfs::load_average_1m(),
        ..RunMetrics::default()
    };
    let server = RunningServer::start(kind, paths).await?;
    metrics.start_to_serving_ms = Some(ms(server.start_to_serving));
    let memory = procfs::memory(server.pid)?;
    metrics.rss_start_kib = Some(memory.rss_kib);
    metrics.rss_start_anon_kib = Some(memory.anon_kib);
    let outcome = match scenario.kind {
        ScenarioKind::Broadcast(spec) => broadcast(&server, spec, &mut metrics).await,
        ScenarioKind::ConnectStorm { clients } => {
            connect_storm(&server, clients, &mut metrics).await
        }
        ScenarioKind::Lifecycle {
            polling_clients,
            websocket_clients,
        } => {
            return lifecycle(server, paths, polling_clients, websocket_clients, metrics).await;
        }
    };
    if let Err(error) = outcome {
        metrics.client_errors.push(format!("run aborted: {error}"));
    }
    let stop = server.stop_with_signal(STOP_BOUND).await;
    metrics.stop_to_exit_ms = Some(ms(stop.stop_to_exit));
    metrics.stop = Some(stop);
    Ok(metrics)
}

/// Connects `count` websocket clients, at most `concurrency` at a time.
/// Returns the clients, their connect times, and the errors.
async fn connect_clients(
    addr: SocketAddr,
    count: usize,
    concurrency: usize,
) -> (Vec<WsClient>, Vec<Duration>, Vec<ClientError>) {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let gate = Arc::clone(&gate);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let started = Instant::now();
            let client = WsClient::connect(addr, CONNECT_TIMEOUT).await;
            (client, started.elapsed())
        }));
    }
    let mut clients = Vec::with_capacity(count);
    let mut times = Vec::with_capacity(count);
    let mut errors = Vec::new();
    for task in tasks {
        match task.await {
            Ok((Ok(client), took)) => {
                clients.push(client);
                times.push(took);
            }
            Ok((Err(error), _)) => errors.push(error),
            Err(join) => errors.push(ClientError::Protocol(format!("connect task: {join}"))),
        }
    }
    (clients, times, errors)
}

/// Reads and records "idle with N clients" memory.
fn record_idle_memory(pid: u32, metrics: &mut RunMetrics) -> Result<procfs::Memory, RunError> {
    let memory = procfs::memory(pid)?;
    metrics.rss_idle_kib = Some(memory.rss_kib);
    metrics.rss_idle_anon_kib = Some(memory.anon_kib);
    Ok(memory)
}

fn keep_first_errors(metrics: &mut RunMetrics, errors: impl IntoIterator<Item = String>) {
    for error in errors {
        if metrics.client_errors.len() < 5 {
            metrics.client_errors.push(error);
        }
    }
}

/// Runs [`probe_health`] on a thread of its own with a current-thread
/// runtime. On the tool's shared runtime, the probe's task would wait behind
/// the 1,000 clients' receive tasks, and the probe would measure the load
/// generator's queue rather than the server's answer.
fn spawn_probe(addr: SocketAddr, stop: watch::Receiver<bool>) -> oneshot::Receiver<HealthProbe> {
    let (done_tx, done_rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("http-probe".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                let _ = done_tx.send(runtime.block_on(probe_health(addr, stop)));
            }
        });
    if let Err(error) = spawned {
        eprintln!("warden-load: cannot start the HTTP probe's thread: {error}");
    }
    done_rx
}

/// Polls `/health` (or `/status`) until `stop` turns true.
async fn probe_health(addr: SocketAddr, mut stop: watch::Receiver<bool>) -> HealthProbe {
    let mut probe = HealthProbe::default();
    let mut conn = HttpConn::connect(addr).await.ok();
    probe.path = "/health".to_owned();
    if let Some(c) = conn.as_mut()
        && let Ok(response) = c.get("/health").await
        && response.status == 404
    {
        probe.path = "/status".to_owned();
    }
    let mut latencies = Vec::new();
    while !*stop.borrow() {
        if conn.as_ref().is_none_or(HttpConn::is_closed) {
            conn = HttpConn::connect(addr).await.ok();
        }
        if let Some(c) = conn.as_mut() {
            let started = Instant::now();
            match c.get(&probe.path).await {
                Ok(response) => {
                    let took = started.elapsed();
                    if latencies.len() < MAX_HEALTH_SAMPLES {
                        latencies.push(took);
                        probe
                            .latencies_us
                            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                    }
                    *probe.status_codes.entry(response.status).or_default() += 1;
                }
                Err(_) => {
                    probe.errors += 1;
                    conn = None;
                }
            }
        } else {
            probe.errors += 1;
        }
        tokio::select! {
            _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
            _ = stop.changed() => {}
        }
    }
    latencies.sort();
    probe.samples = latencies.len();
    probe.p50_ms = percentile(&latencies, 50.0).map(ms);
    probe.p99_ms = percentile(&latencies, 99.0).map(ms);
    probe.max_ms = latencies.last().copied().map(ms);
    probe
}

/// Shared by the clients of one broadcast.
struct Shared {
    origin: Instant,
    senders: usize,
    events_per_sender: usize,
    padding: String,
    /// Unique deliveries so far.
    delivered: AtomicU64,
    /// Senders that have emitted all their events.
    senders_done: AtomicUsize,
    /// µs since `origin` of the latest delivery.
    last_delivery_us: AtomicU64,
}

impl Shared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The payload of event `seq` of `sender`, sent at `sent_us`.
    fn payload(&self, sender: usize, seq: usize, sent_us: u64) -> String {
        format!(
            "{{\"type\":\"bench\",\"subtype\":\"load\",\"sender\":{sender},\"seq\":{seq},\"sent_us\":{sent_us},\"pad\":\"{}\"}}",
            self.padding
        )
    }
}

/// A sender's schedule: first emit at `offset` after the start, then one
/// every `interval` (zero for a burst).
#[derive(Debug, Clone, Copy)]
struct SenderPlan {
    index: usize,
    offset: Duration,
    interval: Duration,
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientOutcome {
    unique: u64,
    duplicates: u64,
    reordered: u64,
    unstamped: u64,
    latencies_us: Vec<u32>,
    error: Option<String>,
}

/// The numeric value after `"key":` in `text`.
fn field_u64(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    text[start..start + digits].parse().ok()
}

/// Sender, sequence number and send time of a relayed bench event.
fn bench_fields(text: &str) -> Option<(usize, usize, u64)> {
    let sender = usize::try_from(field_u64(text, "\"sender\":")?).ok()?;
    let seq = usize::try_from(field_u64(text, "\"seq\":")?).ok()?;
    let sent_us = field_u64(text, "\"sent_us\":")?;
    Some((sender, seq, sent_us))
}

struct Receiver {
    /// Seen flags, `senders * events_per_sender`.
    seen: Vec<bool>,
    /// Highest sequence number seen per sender.
    highest: Vec<Option<usize>>,
    outcome: ClientOutcome,
}

impl Receiver {
    fn new(shared: &Shared) -> Receiver {
        Receiver {
            seen: vec![false; shared.senders * shared.events_per_sender],
            highest: vec![None; shared.senders],
            outcome: ClientOutcome::default(),
        }
    }

    /// Handles one frame; `Err` ends the client.
    fn frame(&mut self, shared: &Shared, message: Message) -> Result<Option<Reply>, ClientError> {
        let text = match &message {
            Message::Text(text) => text.as_str(),
            Message::Close(_) => return Err(ClientError::Closed),
            _ => return Ok(None),
        };
        match classify(text) {
            Packet::Ping => Ok(Some(Reply::Pong)),
            Packet::Disconnect => Err(ClientError::Closed),
            Packet::Event { name, text } if name == CLAUDE_EVENT => {
                let now_us = shared.now_us();
                let Some((sender, seq, sent_us)) = bench_fields(text) else {
                    return Ok(None);
                };
                if sender >= shared.senders || seq >= shared.events_per_sender {
                    return Ok(None);
                }
                let slot = &mut self.seen[sender * shared.events_per_sender + seq];
                if *slot {
                    self.outcome.duplicates += 1;
                    return Ok(None);
                }
                *slot = true;
                self.outcome.unique += 1;
                if !text.contains("\"received_at\":") {
                    self.outcome.unstamped += 1;
                }
                let highest = &mut self.highest[sender];
                match *highest {
                    Some(h) if seq < h => self.outcome.reordered += 1,
                    _ => *highest = Some(seq),
                }
                let latency = now_us.saturating_sub(sent_us);
                self.outcome
                    .latencies_us
                    .push(u32::try_from(latency).unwrap_or(u32::MAX));
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                shared.last_delivery_us.fetch_max(now_us, Ordering::Relaxed);
                Ok(None)
            }
            Packet::Event { .. } | Packet::Other => Ok(None),
        }
    }
}

/// Resolves once the flag is true (at once if it already is, or if its
/// sender is gone). Cancel-safe.
async fn became_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|value| *value).await;
}

enum Reply {
    Pong,
}

async fn reply(client: &mut WsClient, reply: Option<Reply>) -> Result<(), ClientError> {
    match reply {
        Some(Reply::Pong) => client.pong().await,
        None => Ok(()),
    }
}

/// One client of a broadcast: receives until `stop`; if it is a sender,
/// emits its events on its schedule once `go` turns true.
async fn broadcast_client(
    mut client: WsClient,
    plan: Option<SenderPlan>,
    shared: Arc<Shared>,
    mut go: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> ClientOutcome {
    let mut receiver = Receiver::new(&shared);
    let mut next_seq = 0;
    let result: Result<(), ClientError> = async {
        // Until the start: answer pings, collect nothing.
        loop {
            tokio::select! {
                biased;
                _ = became_true(&mut go) => break,
                frame = client.recv() => {
                    let answer = receiver.frame(&shared, frame?)?;
                    reply(&mut client, answer).await?;
                }
            }
        }
        let started = tokio::time::Instant::now();
        let mut sending = plan.is_some();
        loop {
            if let Some(plan) = plan
                && sending
            {
                let due = started + plan.offset + plan.interval * next_seq as u32;
                if tokio::time::Instant::now() >= due {
                    let sent_us = shared.now_us();
                    let payload = shared.payload(plan.index, next_seq, sent_us);
                    client
                        .send_text(event_packet(CLAUDE_EVENT, &payload))
                        .await?;
                    next_seq += 1;
                    if next_seq == shared.events_per_sender {
                        sending = false;
                        shared.senders_done.fetch_add(1, Ordering::Relaxed);
                    }
                    // Read what is already there without waiting, so a
                    // sender keeps draining its socket while it bursts.
                    while let Some(frame) = client.try_recv() {
                        let answer = receiver.frame(&shared, frame?)?;
                        reply(&mut client, answer).await?;
                    }
                    continue;
                }
            }
            let due = plan
                .filter(|_| sending)
                .map(|plan| started + plan.offset + plan.interval * next_seq as u32);
            tokio::select! {
                biased;
                _ = became_true(&mut stop) => break,
                frame = client.recv() => {
                    let answer = receiver.frame(&shared, frame?)?;
                    reply(&mut client, answer).await?;
                }
                _ = async {
                    match due {
                        Some(due) => tokio::time::sleep_until(due).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
        Ok(())
    }
    .await;
    if let Err(error) = result {
        receiver.outcome.error = Some(error.to_string());
    }
    // A sender that failed before its last event will never finish: count it
    // done so that the broadcast does not wait for it.
    if plan.is_some() && next_seq < shared.events_per_sender {
        shared.senders_done.fetch_add(1, Ordering::Relaxed);
    }
    client.close(Duration::from_millis(200)).await;
    receiver.outcome
}

async fn broadcast(
    server: &RunningServer,
    spec: Broadcast,
    metrics: &mut RunMetrics,
) -> Result<(), RunError> {
    let (clients, _times, errors) =
        connect_clients(server.addr, spec.clients, CONNECT_CONCURRENCY).await;
    metrics.clients_connected = Some(clients.len());
    metrics.connect_failures = Some(errors.len());
    keep_first_errors(metrics, errors.iter().map(|e| format!("connect: {e}")));
    tokio::time::sleep(SETTLE).await;
    record_idle_memory(server.pid, metrics)?;

    let senders = spec.senders.min(clients.len());
    let fixed = Shared {
        origin: Instant::now(),
        senders,
        events_per_sender: spec.events_per_sender,
        padding: String::new(),
        delivered: AtomicU64::new(0),
        senders_done: AtomicUsize::new(0),
        last_delivery_us: AtomicU64::new(0),
    };
    let bare_len = fixed
        .payload(senders, spec.events_per_sender, u64::MAX)
        .len();
    let shared = Arc::new(Shared {
        padding: "x".repeat(PAYLOAD_BYTES.saturating_sub(bare_len)),
        ..fixed
    });
    let interval = match spec.shape {
        Shape::Burst => Duration::ZERO,
        Shape::Paced { events_per_second } => {
            Duration::from_secs_f64(senders as f64 / events_per_second.max(0.001))
        }
    };
    let (go_tx, go_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(clients.len());
    for (index, client) in clients.into_iter().enumerate() {
        let plan = (index < senders).then(|| SenderPlan {
            index,
            offset: interval.mul_f64(index as f64 / senders.max(1) as f64),
            interval,
        });
        tasks.push(tokio::spawn(broadcast_client(
            client,
            plan,
            Arc::clone(&shared),
            go_rx.clone(),
            stop_rx.clone(),
        )));
    }
    let connected = tasks.len() as u64;
    let expected = senders as u64 * spec.events_per_sender as u64 * connected.saturating_sub(1);
    metrics.expected_deliveries = Some(expected);

    let (probe_stop_tx, probe_stop_rx) = watch::channel(false);
    let probe = spawn_probe(server.addr, probe_stop_rx);
    // Let the probe learn its path before the load starts.
    tokio::time::sleep(Duration::from_millis(20)).await;

    let cpu_before = procfs::cpu_time_us(server.pid)?;
    let start_us = shared.now_us();
    let _ = go_tx.send(true);
    let limit = Instant::now() + BROADCAST_LIMIT;
    let mut last_seen = 0;
    let mut last_progress = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if delivered >= expected || Instant::now() > limit {
            break;
        }
        if delivered != last_seen {
            last_seen = delivered;
            last_progress = Instant::now();
        }
        let all_sent = shared.senders_done.load(Ordering::Relaxed) >= senders;
        if all_sent && last_progress.elapsed() > QUIET_TIMEOUT {
            break;
        }
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
    }
    let cpu_after = procfs::cpu_time_us(server.pid)?;
    metrics.rss_peak_kib = Some(procfs::memory(server.pid)?.peak_kib);
    let _ = probe_stop_tx.send(true);
    let _ = stop_tx.send(true);

    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(outcome) => outcomes.push(outcome),
            Err(join) => keep_first_errors(metrics, [format!("client task: {join}")]),
        }
    }
    metrics.health = probe.await.ok();
    tokio::time::sleep(SOON_AFTER_CLIENTS_LEFT).await;
    metrics.rss_soon_after_kib = Some(procfs::memory(server.pid)?.rss_kib);
    tokio::time::sleep(AFTER_CLIENTS_LEFT - SOON_AFTER_CLIENTS_LEFT).await;
    let memory = procfs::memory(server.pid)?;
    metrics.rss_after_kib = Some(memory.rss_kib);
    metrics.rss_after_anon_kib = Some(memory.anon_kib);

    let unique: u64 = outcomes.iter().map(|o| o.unique).sum();
    let mut latencies: Vec<u32> = Vec::with_capacity(usize::try_from(unique).unwrap_or(0));
    for outcome in &outcomes {
        latencies.extend_from_slice(&outcome.latencies_us);
    }
    latencies.sort_unstable();
    keep_first_errors(
        metrics,
        outcomes
            .iter()
            .filter_map(|o| o.error.clone())
            .filter(|e| !e.contains("closed the connection")),
    );
    let end_us = shared
        .last_delivery_us
        .load(Ordering::Relaxed)
        .max(start_us);
    let elapsed = Duration::from_micros(end_us - start_us);
    let cpu_us = cpu_after.saturating_sub(cpu_before);
    let to_ms = |us: u32| f64::from(us) / 1_000.0;
    metrics.deliveries = Some(unique);
    metrics.lost = Some(expected.saturating_sub(unique));
    metrics.duplicates = Some(outcomes.iter().map(|o| o.duplicates).sum());
    metrics.reordered = Some(outcomes.iter().map(|o| o.reordered).sum());
    metrics.unstamped = Some(outcomes.iter().map(|o| o.unstamped).sum());
    metrics.broadcast_ms = Some(ms(elapsed));
    metrics.deliveries_per_s =
        (elapsed > Duration::ZERO).then(|| unique as f64 / elapsed.as_secs_f64());
    metrics.latency_p50_ms = percentile(&latencies, 50.0).map(to_ms);
    metrics.latency_p99_ms = percentile(&latencies, 99.0).map(to_ms);
    metrics.latency_max_ms = latencies.last().copied().map(to_ms);
    metrics.cpu_us = Some(cpu_us);
    metrics.cpu_us_per_delivery = (unique > 0).then(|| cpu_us as f64 / unique as f64);
    Ok(())
}

async fn connect_storm(
    server: &RunningServer,
    count: usize,
    metrics: &mut RunMetrics,
) -> Result<(), RunError> {
    let (probe_stop_tx, probe_stop_rx) = watch::channel(false);
    let probe = spawn_probe(server.addr, probe_stop_rx);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cpu_before = procfs::cpu_time_us(server.pid)?;
    let started = Instant::now();
    let (clients, mut times, errors) = connect_clients(server.addr, count, count).await;
    let all = started.elapsed();
    let cpu_after = procfs::cpu_time_us(server.pid)?;
    let _ = probe_stop_tx.send(true);
    metrics.health = probe.await.ok();
    times.sort();
    metrics.clients_connected = Some(clients.len());
    metrics.connect_failures = Some(errors.len());
    keep_first_errors(metrics, errors.iter().map(|e| format!("connect: {e}")));
    metrics.connect_p50_ms = percentile(&times, 50.0).map(ms);
    metrics.connect_p99_ms = percentile(&times, 99.0).map(ms);
    metrics.connect_all_ms = Some(ms(all));
    let cpu_us = cpu_after.saturating_sub(cpu_before);
    metrics.cpu_us = Some(cpu_us);
    metrics.cpu_us_per_connection =
        (!clients.is_empty()).then(|| cpu_us as f64 / clients.len() as f64);
    tokio::time::sleep(SETTLE).await;
    let memory = record_idle_memory(server.pid, metrics)?;
    metrics.rss_peak_kib = Some(memory.peak_kib);
    let closing: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(c.close(Duration::from_millis(500))))
        .collect();
    for task in closing {
        let _ = task.await;
    }
    Ok(())
}

async fn lifecycle(
    server: RunningServer,
    paths: &ServerPaths,
    polling: usize,
    websocket: usize,
    mut metrics: RunMetrics,
) -> Result<RunMetrics, RunError> {
    let mut pollers = Vec::with_capacity(polling);
    let mut errors = Vec::new();
    for _ in 0..polling {
        match PollingClient::connect(server.addr, CONNECT_TIMEOUT).await {
            Ok(client) => pollers.push(client),
            Err(error) => errors.push(format!("polling connect: {error}")),
        }
    }
    let (sockets, _times, ws_errors) =
        connect_clients(server.addr, websocket, CONNECT_CONCURRENCY).await;
    errors.extend(ws_errors.iter().map(|e| format!("connect: {e}")));
    metrics.clients_connected = Some(pollers.len() + sockets.len());
    metrics.connect_failures = Some(errors.len());
    keep_first_errors(&mut metrics, errors);
    // Let every poller have its GET outstanding.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let memory = record_idle_memory(server.pid, &mut metrics)?;
    metrics.rss_peak_kib = Some(memory.peak_kib);
    let stop = match server.kind {
        ServerKind::Warden | ServerKind::WardenRecovery => {
            server.stop_with_cli(&paths.warden, STOP_BOUND).await
        }
        ServerKind::Bare | ServerKind::Bare128 | ServerKind::Python | ServerKind::Node => {
            server.stop_with_signal(STOP_BOUND).await
        }
    };
    metrics.stop_to_exit_ms = Some(ms(stop.stop_to_exit));
    metrics.stop = Some(stop);
    for poller in &pollers {
        poller.abort();
    }
    drop(sockets);
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(senders: usize, events: usize) -> Shared {
        Shared {
            origin: Instant::now(),
            senders,
            events_per_sender: events,
            padding: "x".repeat(10),
            delivered: AtomicU64::new(0),
            senders_done: AtomicUsize::new(0),
            last_delivery_us: AtomicU64::new(0),
        }
    }

    fn relayed(shared: &Shared, sender: usize, seq: usize) -> Message {
        let mut payload = shared.payload(sender, seq, 0);
        payload.pop();
        payload.push_str(",\"server_id\":\"s\",\"received_at\":\"2026-01-01T00:00:00.000Z\"}");
        Message::text(event_packet(CLAUDE_EVENT, &payload))
    }

    #[test]
    fn the_payload_carries_sender_sequence_and_send_time() {
        let shared = shared(3, 5);
        let payload = shared.payload(2, 4, 123_456);
        assert_eq!(bench_fields(&payload), Some((2, 4, 123_456)));
        let value: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(value["pad"], "xxxxxxxxxx");
    }

    #[test]
    fn a_receiver_counts_unique_duplicate_reordered_and_unstamped_deliveries() {
        let shared = shared(2, 3);
        let mut receiver = Receiver::new(&shared);
        for (sender, seq) in [(0, 0), (0, 2), (0, 1), (1, 0), (0, 2)] {
            receiver
                .frame(&shared, relayed(&shared, sender, seq))
                .unwrap();
        }
        let unstamped = event_packet(CLAUDE_EVENT, &shared.payload(1, 1, 0));
        receiver.frame(&shared, Message::text(unstamped)).unwrap();
        let o = &receiver.outcome;
        assert_eq!(
            (o.unique, o.duplicates, o.reordered, o.unstamped),
            (5, 1, 1, 1)
        );
        assert_eq!(shared.delivered.load(Ordering::Relaxed), 5);
        assert_eq!(o.latencies_us.len(), 5);
        // Out-of-range senders and other events are ignored; a ping asks for a pong.
        let stray = event_packet(CLAUDE_EVENT, &shared.payload(7, 0, 0));
        receiver.frame(&shared, Message::text(stray)).unwrap();
        assert_eq!(receiver.outcome.unique, 5);
        assert!(matches!(
            receiver.frame(&shared, Message::text("2")),
            Ok(Some(Reply::Pong))
        ));
        assert!(receiver.frame(&shared, Message::text("41")).is_err());
    }

    #[test]
    fn payloads_are_about_the_size_the_issue_asks_for() {
        let scenarios = standard_scenarios();
        assert_eq!(scenarios.len(), 6);
        let base = Shared {
            padding: String::new(),
            ..shared(10, 100)
        };
        let bare_len = base.payload(10, 100, u64::MAX).len();
        let padded = Shared {
            padding: "x".repeat(PAYLOAD_BYTES - bare_len),
            ..base
        };
        assert_eq!(padded.payload(10, 100, u64::MAX).len(), PAYLOAD_BYTES);
    }
}
