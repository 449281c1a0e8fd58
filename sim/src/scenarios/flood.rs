//! Scenario: a flood from one hook to many dashboards, some of which read
//! slowly.
//!
//! The hub's per-client outgoing buffer is small (seeded, 8 to 64 packets),
//! the hook sends seeded bursts, each event with an ack, and slow dashboards
//! stop reading at times (each pause shorter than half the hub's
//! `slow_reader_timeout`: they keep reading), so buffers fill and the relay
//! must wait for them. Invariants, over every seed:
//! - every event is answered: accepted, or refused to the hook (an ack
//!   error); the hook keeps no more unanswered than half its own buffer at
//!   the hub holds, as a client that waits for its acks;
//! - every accepted event reaches every dashboard, exactly once and in the
//!   order it was sent: the relay slows the sender, it never drops a
//!   delivery (`events_dropped` is 0);
//! - every accepted event is counted once (`events_processed` and
//!   `events_relayed`), every refused one in `events_refused`, and the hub
//!   counts no error; no dashboard is disconnected (the heartbeat is the
//!   daemon's 25 s / 20 s).

use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use warden::daemon::hub::{CLAUDE_EVENT, Hub};

use crate::actors::{Dashboard, Pace, STEP_TIMEOUT, StopFlag, idle, wait_stable, wait_until};
use crate::client::SioClient;
use crate::clock::SimClock;
use crate::ensure;
use crate::hub::{HUB_HOST, HUB_PORT, add_hub_host, sim_hub, sim_settings};
use crate::seeds::{harness_rng, sim_builder};
use crate::trace::Trace;

const POLL: Duration = Duration::from_millis(50);

/// The longest pause of a slow reader: under half the hub's default
/// `slow_reader_timeout` (2 s).
const MOST_STALL_MS: u64 = 900;

/// `WARDEN_SIM_FLOOD_RELAY_QUEUE=2` shrinks each sender's relay queue
/// (`inbound_queue_events`, never filled here by default) so that the hub
/// refuses events at the queue (and lifts the hook's error budget, which
/// refusals spend): the refused ones are told to the hook, every accepted
/// one must still reach every dashboard.
fn relay_queue_override() -> Option<usize> {
    std::env::var("WARDEN_SIM_FLOOD_RELAY_QUEUE")
        .ok()?
        .trim()
        .parse()
        .ok()
}

type HostResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The seeded shape of one flood.
#[derive(Clone, Debug)]
struct Flood {
    dashboards: usize,
    events: u64,
    paces: Vec<Pace>,
    /// The hub's per-client outgoing buffer, in packets.
    buffer: usize,
    burst: u64,
    gap_ms: u64,
}

impl Flood {
    fn draw(rng: &mut impl Rng, trace: &Trace) -> Flood {
        let dashboards: usize = rng.random_range(2..=6);
        let events: u64 = rng.random_range(100..=1_500);
        let paces: Vec<Pace> = (0..dashboards)
            .map(|i| {
                // At least one slow reader; the others are slow half the time.
                // A reader's stalls add up to at most 10 s, well inside the 25 s
                // heartbeat interval, and each is shorter than half the hub's
                // patience with a full buffer (`slow_reader_timeout`), so every
                // reader keeps reading.
                if i == 0 || rng.random_bool(0.5) {
                    let every = rng.random_range(10..=200);
                    let most_ms = (10_000 * every / events).min(MOST_STALL_MS);
                    Pace {
                        every,
                        stall: Duration::from_millis(rng.random_range(50..=most_ms.max(50))),
                    }
                } else {
                    Pace::FAST
                }
            })
            .collect();
        let buffer: usize = rng.random_range(8..=64);
        let burst: u64 = rng.random_range(1..=200);
        let gap_ms: u64 = rng.random_range(0..=50);
        trace.record(
            "setup",
            format!("dashboards={dashboards} paces={paces:?} buffer={buffer} events={events} burst={burst} gap_ms={gap_ms}"),
        );
        Flood {
            dashboards,
            events,
            paces,
            buffer,
            burst,
            gap_ms,
        }
    }

    /// At most this many events unanswered: half the hook's own buffer at
    /// the hub, as a client that waits for its acks. Its answers (acks,
    /// refusals) then always find room; a sender that outruns its own
    /// buffer loses its acks (counted in `events_dropped`) and can no
    /// longer be told of a refusal.
    fn window(&self) -> u64 {
        self.burst.min(self.buffer as u64 / 2).max(1)
    }
}

/// One run of the scenario for `seed`; returns the simulated time covered.
pub fn run(seed: u64, trace: &Trace) -> Result<Duration, String> {
    let mut rng = harness_rng(seed);
    let flood = Flood::draw(&mut rng, trace);
    let mut sim = sim_builder(seed, Duration::from_secs(600)).build();
    let clock = SimClock::new();
    let mut settings = sim_settings();
    settings.socket_buffer_packets = flood.buffer;
    if let Some(events) = relay_queue_override() {
        settings.inbound_queue_events = events;
        settings.client_error_budget = u32::MAX;
    }
    let hub = sim_hub(settings, &clock);
    add_hub_host(&mut sim, &hub);

    let stop = StopFlag::new();
    let views: Vec<Dashboard> = (0..flood.dashboards).map(|_| Dashboard::new()).collect();
    super::spawn_dashboards(&mut sim, seed, &views, &flood.paces, &stop, trace);
    let dashboards = flood.dashboards;
    let driver = FloodHook {
        hub,
        views: views.clone(),
        stop,
        trace: trace.clone(),
        flood,
    };
    sim.client("hook", driver.run());
    super::fix_link_latencies(&mut sim, &mut rng, dashboards, "hook");
    super::run_checking(&mut sim, &views)
}

/// The hook that floods the hub, and the judge of what arrived.
struct FloodHook {
    hub: Hub,
    views: Vec<Dashboard>,
    stop: StopFlag,
    trace: Trace,
    flood: Flood,
}

impl FloodHook {
    async fn run(self) -> HostResult<()> {
        let mut hook = SioClient::connect(HUB_HOST, HUB_PORT, STEP_TIMEOUT).await?;
        let stats = self.hub.stats().clone();
        let receivers = self.views.len() as u64;
        let ok = wait_until(&mut hook, POLL, Duration::from_secs(30), || {
            stats.clients_connected() == receivers + 1
                && self.views.iter().all(|v| v.view().connected)
        })
        .await?;
        ensure!(ok, "not every client connected at start");
        self.trace.record("hook", "flood starts");
        let answers = self.send_all(&mut hook).await?;
        let events = self.flood.events;
        self.trace.record("hook", format!("sent {events}"));
        let accepted: Vec<u64> = answers
            .iter()
            .filter(|(_, answer)| answer.get("accepted") == Some(&Value::Bool(true)))
            .map(|(id, _)| *id)
            .collect();
        let all = accepted.len();
        let ok = wait_stable(
            &mut hook,
            POLL,
            Duration::from_secs(2),
            Duration::from_secs(120),
            || self.views.iter().all(|v| v.view().received.len() >= all),
        )
        .await?;
        self.judge(ok, &accepted, events - all as u64)?;
        self.stop.stop();
        hook.close(STEP_TIMEOUT).await;
        Ok(())
    }

    /// Sends every event with an ack, in bursts, waiting for the answers
    /// each [`Flood::window`]; returns them all (the ack id is the `seq`).
    async fn send_all(&self, hook: &mut SioClient) -> HostResult<Vec<(u64, Value)>> {
        let Flood {
            events,
            burst,
            gap_ms,
            ..
        } = self.flood;
        let window = self.flood.window();
        let mut answers: Vec<(u64, Value)> = Vec::new();
        for seq in 0..events {
            let payload = json!({"seq": seq, "type": "hook"});
            hook.emit_with_ack(CLAUDE_EVENT, &payload, seq, STEP_TIMEOUT)
                .await?;
            if (seq + 1) % window == 0 || seq + 1 == events {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while (answers.len() as u64) <= seq && tokio::time::Instant::now() < deadline {
                    idle(hook, Duration::from_millis(5)).await?;
                    answers.extend(hook.take_acks());
                }
                ensure!(
                    answers.len() as u64 == seq + 1,
                    "{} of {} events answered (the hub: {:?})",
                    answers.len(),
                    seq + 1,
                    self.hub.stats().snapshot()
                );
            }
            if (seq + 1) % burst == 0 {
                idle(hook, Duration::from_millis(gap_ms)).await?;
            }
        }
        Ok(answers)
    }

    /// The verdict (see the module doc): `delivered` says whether every
    /// dashboard got as many events as were `accepted`.
    fn judge(&self, delivered: bool, accepted: &[u64], refused: u64) -> HostResult<()> {
        let all = accepted.len();
        let end = self.hub.stats().snapshot();
        let counts: Vec<usize> = self.views.iter().map(|v| v.view().received.len()).collect();
        self.trace.record(
            "hook",
            format!(
                "accepted={all} delivered={counts:?} dropped={} processed={} relayed={} \
                 refused={} errors={}",
                end.events_dropped,
                end.events_processed,
                end.events_relayed,
                end.events_refused,
                end.errors
            ),
        );
        ensure!(
            delivered,
            "lost: the dashboards received {counts:?} of the {all} accepted events \
             ({} dropped)",
            end.events_dropped
        );
        for (i, view) in self.views.iter().enumerate() {
            let view = view.view();
            ensure!(
                view.received == accepted,
                "dash-{i} did not receive the {all} accepted events once each in order \
                 (first difference at {:?})",
                view.received
                    .iter()
                    .zip(accepted)
                    .position(|(got, want)| got != want)
            );
        }
        ensure!(
            end.events_dropped == 0,
            "{} deliveries dropped ({} to full and {} to closing recipients)",
            end.events_dropped,
            end.events_dropped_recipient_full,
            end.events_dropped_recipient_closed
        );
        ensure!(
            end.events_processed == all as u64 && end.events_relayed == all as u64,
            "processed {} and relayed {} of {all} accepted events",
            end.events_processed,
            end.events_relayed
        );
        ensure!(
            end.events_refused == refused,
            "the hook was told of {refused} refusals, the hub counted {}",
            end.events_refused
        );
        ensure!(
            relay_queue_override().is_some() || refused == 0,
            "{refused} events refused with the default relay queue"
        );
        ensure!(end.errors == 0, "the hub counted {} errors", end.errors);
        for (i, view) in self.views.iter().enumerate() {
            let connections = view.view().connections;
            ensure!(
                connections == 1,
                "dash-{i} was disconnected during the flood ({connections} connections)"
            );
        }
        Ok(())
    }
}
