//! The simulated people around the hub: dashboards that stay connected
//! (reconnecting with seeded backoff) and record what they receive, and the
//! helpers a hook or driver uses to wait without letting its own heartbeat
//! lapse. Scenarios put these on turmoil hosts and assert over their views.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use warden::daemon::hub::CLAUDE_EVENT;

use crate::client::{ClientError, SioClient};
use crate::trace::Trace;

/// Every wait of a simulated client on one protocol step is bounded by this.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(3);

/// What one dashboard has seen, shared with the scenario's assertions.
#[derive(Debug, Default)]
pub struct DashboardView {
    /// Connected to the namespace right now (as far as the client knows).
    pub connected: bool,
    /// Namespace connections made so far.
    pub connections: u32,
    /// `seq` of every `claude_event` received, in arrival order.
    pub received: Vec<u64>,
    /// Set when the dashboard saw something that must never happen (a
    /// duplicate, an out-of-order event); the scenario fails with it.
    pub violation: Option<String>,
    /// Connection state recovery, for a dashboard made with
    /// [`Dashboard::recovering`]: its session and last offset, sent back on
    /// every reconnect as socket.io-client does.
    pub recovery: Option<RecoveryState>,
    seen: BTreeSet<u64>,
}

/// What a recovering dashboard keeps across connections.
#[derive(Debug, Default, Clone)]
pub struct RecoveryState {
    pub pid: Option<String>,
    pub offset: Option<String>,
    /// Connects whose CONNECT carried the pid it asked for.
    pub recovered: u32,
}

impl DashboardView {
    /// How many distinct events with `seq` in `range` were received.
    pub fn received_in(&self, range: std::ops::Range<u64>) -> usize {
        self.seen.range(range).count()
    }
}

/// A dashboard's shared view.
#[derive(Clone, Debug, Default)]
pub struct Dashboard {
    view: Arc<Mutex<DashboardView>>,
}

impl Dashboard {
    pub fn new() -> Self {
        Self::default()
    }

    /// A dashboard that asks to recover its session on every reconnect.
    pub fn recovering() -> Self {
        let dashboard = Self::default();
        dashboard.view().recovery = Some(RecoveryState::default());
        dashboard
    }

    pub fn view(&self) -> MutexGuard<'_, DashboardView> {
        // Plain data; a panicking host leaves it consistent.
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How fast a dashboard reads: after every `every`-th event it stops
/// reading for `stall` (its TCP window and the hub's per-client buffer fill
/// meanwhile). `every == 0` reads without pause.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Pace {
    pub every: u64,
    pub stall: Duration,
}

impl Pace {
    pub const FAST: Pace = Pace {
        every: 0,
        stall: Duration::ZERO,
    };
}

/// A shared "stop now" flag for long-running actors.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<Mutex<bool>>);

impl StopFlag {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn stop(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
    }
    pub fn is_stopped(&self) -> bool {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Who an actor is and what it shares with its scenario.
#[derive(Clone, Debug)]
pub struct Actor {
    /// Its name in traces (also its turmoil host name, by convention).
    pub name: String,
    /// The hub's simulated host and port.
    pub host: &'static str,
    pub port: u16,
    /// Set by the scenario when the actor should leave.
    pub stop: StopFlag,
    /// The actor's own seeded choices (backoffs).
    pub rng: ChaCha8Rng,
    pub trace: Trace,
}

/// Runs a dashboard until `actor.stop`: connect,
/// record every `claude_event`'s `seq` (failing on a duplicate or an
/// out-of-order event), pausing as `pace` says, and on any loss of the connection reconnect after a
/// backoff drawn from its rng. Closes politely when stopped.
pub async fn run_dashboard(actor: Actor, dashboard: Dashboard, pace: Pace) -> Result<(), String> {
    let Actor {
        name,
        host,
        port,
        stop,
        mut rng,
        trace,
    } = actor;
    while !stop.is_stopped() {
        let auth = recovery_auth(&dashboard);
        let connected = SioClient::connect_with_auth(host, port, STEP_TIMEOUT, auth.as_ref()).await;
        let mut client = match connected {
            Ok(client) => client,
            Err(error) => {
                trace.record(&name, format!("connect failed: {}", kind(&error)));
                let backoff = Duration::from_millis(rng.random_range(100..=1_000));
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        note_connected(&dashboard, &client, &name, &trace);
        let ended = read_events(&mut client, &dashboard, &name, &stop, pace, &trace).await?;
        dashboard.view().connected = false;
        match ended {
            None => {
                client.close(STEP_TIMEOUT).await;
                trace.record(&name, "closed");
            }
            Some(error) => {
                trace.record(&name, format!("lost: {}", kind(&error)));
                drop(client);
                let backoff = Duration::from_millis(rng.random_range(100..=1_000));
                tokio::time::sleep(backoff).await;
            }
        }
    }
    Ok(())
}

/// The CONNECT auth of a recovering dashboard that has a session: its pid
/// and last offset, as socket.io-client sends them.
fn recovery_auth(dashboard: &Dashboard) -> Option<Value> {
    dashboard.view().recovery.as_ref().and_then(|r| {
        let pid = r.pid.as_ref()?;
        Some(serde_json::json!({"pid": pid, "offset": r.offset}))
    })
}

/// Counts a new connection (and, when recovering, whether it got its
/// session back) in the view and the trace.
fn note_connected(dashboard: &Dashboard, client: &SioClient, name: &str, trace: &Trace) {
    let (connections, recovered) = {
        let mut view = dashboard.view();
        view.connected = true;
        view.connections += 1;
        let mut recovered = false;
        if let Some(state) = view.recovery.as_mut() {
            recovered = state.pid.is_some() && state.pid.as_deref() == client.pid();
            state.recovered += u32::from(recovered);
            state.pid = client.pid().map(str::to_owned);
        }
        (view.connections, recovered)
    };
    if dashboard.view().recovery.is_some() {
        trace.record(
            name,
            format!("connected #{connections} recovered={recovered}"),
        );
    } else {
        trace.record(name, format!("connected #{connections}"));
    }
}

/// Records every `claude_event` on `client` (pausing as `pace` says) until
/// `stop` (`None`) or the connection is lost (its error); fails on an event
/// without `seq`, a duplicate or an out-of-order event.
async fn read_events(
    client: &mut SioClient,
    dashboard: &Dashboard,
    name: &str,
    stop: &StopFlag,
    pace: Pace,
    trace: &Trace,
) -> Result<Option<ClientError>, String> {
    loop {
        if stop.is_stopped() {
            return Ok(None);
        }
        match client.next_event(Duration::from_millis(100)).await {
            Ok(None) => {}
            Ok(Some(event)) if event.name == CLAUDE_EVENT => {
                let Some(seq) = event.data.get("seq").and_then(Value::as_u64) else {
                    return Err(format!("{name}: claude_event without seq: {}", event.data));
                };
                trace.record(name, format!("recv seq={seq}"));
                if let Some(state) = dashboard.view().recovery.as_mut()
                    && event.offset.is_some()
                {
                    state.offset = event.offset.clone();
                }
                let count = record_seq(dashboard, name, seq)?;
                if pace.every > 0 && count.is_multiple_of(pace.every) {
                    tokio::time::sleep(pace.stall).await;
                }
            }
            Ok(Some(event)) => trace.record(name, format!("event {}", event.name)),
            Err(error) => return Ok(Some(error)),
        }
    }
}

/// Records `seq` as received; fails on a duplicate or an out-of-order event.
/// Returns how many events the dashboard has received.
fn record_seq(dashboard: &Dashboard, name: &str, seq: u64) -> Result<u64, String> {
    let mut view = dashboard.view();
    if !view.seen.insert(seq) {
        let violation = format!("{name} received seq {seq} twice");
        view.violation = Some(violation.clone());
        return Err(violation);
    }
    if let Some(&last) = view.received.last()
        && seq < last
    {
        let violation = format!("{name} received seq {seq} after {last}");
        view.violation = Some(violation.clone());
        return Err(violation);
    }
    view.received.push(seq);
    Ok(view.received.len() as u64)
}

/// A short, stable name for an error in traces (no ids, no addresses).
pub fn kind(error: &ClientError) -> &'static str {
    match error {
        ClientError::Connect(_) => "connect error",
        ClientError::Timeout(phase) => phase,
        ClientError::HeartbeatLost => "heartbeat lost",
        ClientError::Closed(_) => "closed",
        ClientError::ServerDisconnect => "server disconnect",
        ClientError::Protocol(_) => "protocol error",
    }
}

/// Keeps `client` answering pings for `duration` (events are discarded).
pub async fn idle(client: &mut SioClient, duration: Duration) -> Result<(), ClientError> {
    let until = tokio::time::Instant::now() + duration;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        client.next_event(left).await?;
    }
}

/// Polls `condition` every `every` (keeping `client`'s heartbeat answered)
/// until it holds or `within` passes. Returns whether it held.
pub async fn wait_until(
    client: &mut SioClient,
    every: Duration,
    within: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<bool, ClientError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition() {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        idle(client, every).await?;
    }
}

/// Like [`wait_until`], but the condition must hold at every poll for
/// `stable_for` in a row.
pub async fn wait_stable(
    client: &mut SioClient,
    every: Duration,
    stable_for: Duration,
    within: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<bool, ClientError> {
    let deadline = tokio::time::Instant::now() + within;
    let mut held_since: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        if condition() {
            let since = *held_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= stable_for {
                return Ok(true);
            }
        } else {
            held_since = None;
        }
        if now >= deadline {
            return Ok(false);
        }
        idle(client, every).await?;
    }
}

/// Polls `condition` every `every` until it holds or `within` passes, for
/// actors without a connection of their own. Returns whether it held.
pub async fn poll_until(
    every: Duration,
    within: Duration,
    mut condition: impl FnMut() -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// Like [`poll_until`], but the condition must hold at every poll for
/// `stable_for` in a row.
pub async fn poll_stable(
    every: Duration,
    stable_for: Duration,
    within: Duration,
    mut condition: impl FnMut() -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut held_since: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        if condition() {
            let since = *held_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= stable_for {
                return true;
            }
        } else {
            held_since = None;
        }
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// What a hook has done, shared with the scenario's assertions.
#[derive(Debug, Default)]
pub struct HookView {
    pub connected: bool,
    pub connections: u32,
    /// Every `seq` whose emit the websocket accepted, in order. An accepted
    /// emit can still be lost if the connection dies before the hub reads it.
    pub sent: Vec<u64>,
}

/// A hook's shared view.
#[derive(Clone, Debug, Default)]
pub struct Hook {
    view: Arc<Mutex<HookView>>,
}

impl Hook {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn view(&self) -> MutexGuard<'_, HookView> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs a hook until `actor.stop`: connects, sends `claude_event {"seq": n}` with
/// `n` increasing by one per attempt, waiting `gap` between events (answering
/// pings meanwhile), and reconnects with a seeded backoff when the
/// connection is lost.
pub async fn run_hook(actor: Actor, hook: Hook, gap: Duration) -> Result<(), String> {
    let Actor {
        name,
        host,
        port,
        stop,
        mut rng,
        trace,
    } = actor;
    let mut seq = 0u64;
    while !stop.is_stopped() {
        let mut client = match SioClient::connect(host, port, STEP_TIMEOUT).await {
            Ok(client) => client,
            Err(error) => {
                trace.record(&name, format!("connect failed: {}", kind(&error)));
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..=1_000))).await;
                continue;
            }
        };
        let connections = {
            let mut view = hook.view();
            view.connected = true;
            view.connections += 1;
            view.connections
        };
        trace.record(&name, format!("connected #{connections}"));
        let ended = loop {
            if stop.is_stopped() {
                break None;
            }
            let payload = serde_json::json!({"seq": seq, "type": "hook"});
            let sent = client.emit(CLAUDE_EVENT, &payload, STEP_TIMEOUT).await;
            seq += 1;
            if let Err(error) = sent {
                break Some(error);
            }
            hook.view().sent.push(seq - 1);
            if let Err(error) = idle(&mut client, gap).await {
                break Some(error);
            }
        };
        hook.view().connected = false;
        match ended {
            None => {
                client.close(STEP_TIMEOUT).await;
                trace.record(&name, format!("closed after seq {seq}"));
            }
            Some(error) => {
                trace.record(&name, format!("lost: {}", kind(&error)));
                drop(client);
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..=1_000))).await;
            }
        }
    }
    Ok(())
}
