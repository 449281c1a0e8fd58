//! Scenario: a network partition between the hub and some dashboards.
//!
//! The hub pings every second and waits a second for the answer. A seeded
//! subset of dashboards is cut off from the hub for a seeded time while the
//! hook keeps sending. Invariants, over every seed:
//! - during a long partition the hub's heartbeat drops the cut-off clients
//!   (`clients_connected` falls by at least their number);
//! - after the repair every dashboard reconnects and `clients_connected`
//!   returns to exactly the number of clients, and stays there;
//! - no dashboard ever receives an event twice or out of order;
//! - events sent once everyone is back reach every dashboard;
//! - when everyone leaves, `clients_connected` is exactly 0, every accepted
//!   event was relayed once, and the hub counted no error.
//!
//! [`run_cut`] is the run itself, shared with the recovery scenario
//! (`scenarios::recovery`), which runs it with recovering dashboards and
//! checks what they ended with.

use std::time::Duration;

use crate::actors::{Dashboard, Pace, STEP_TIMEOUT, StopFlag, idle, wait_stable, wait_until};
use crate::client::SioClient;
use crate::clock::SimClock;
use crate::ensure;
use crate::hub::{HUB_HOST, HUB_PORT, add_hub_host, sim_hub, sim_settings};
use crate::seeds::{harness_rng, sim_builder};
use crate::trace::Trace;
use rand::Rng;
use serde_json::json;
use warden::daemon::hub::{CLAUDE_EVENT, Hub, HubSettings};
use warden::sessions::SessionLimits;

const POLL: Duration = Duration::from_millis(50);

/// One run of the scenario for `seed`; returns the simulated time covered.
pub fn run(seed: u64, trace: &Trace) -> Result<Duration, String> {
    let (covered, views) = run_cut(seed, trace, Dashboards::Plain)?;
    for (i, view) in views.iter().enumerate() {
        let view = view.view();
        trace.record(
            "result",
            format!(
                "dash-{i}: connections={} received={}",
                view.connections,
                view.received.len()
            ),
        );
    }
    Ok(covered)
}

/// The dashboards a run cuts off.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Dashboards {
    /// Plain ones that read at once; only the events sent once everyone is
    /// back must reach every one.
    Plain,
    /// Ones that recover their session on every reconnect (the hub keeps
    /// sessions, its buffer is 4 packets) and half of which read in fits:
    /// every event must reach every one.
    Recovering,
}

/// The seeded shape of one partition.
#[derive(Clone, Debug)]
struct Cut {
    dashboards: usize,
    /// The dashboards cut off.
    cut: Vec<usize>,
    partition_ms: u64,
    /// Events sent before, during and after the partition.
    before: u64,
    during: u64,
    after: u64,
    paces: Vec<Pace>,
}

impl Cut {
    fn draw(rng: &mut impl Rng, kind: Dashboards, trace: &Trace) -> Cut {
        let dashboards: usize = rng.random_range(2..=4);
        let cut: Vec<usize> = {
            let mut cut: Vec<usize> = (0..dashboards).filter(|_| rng.random_bool(0.5)).collect();
            if cut.is_empty() {
                cut.push(rng.random_range(0..dashboards));
            }
            cut
        };
        let partition_ms: u64 = rng.random_range(200..=8_000);
        let before: u64 = rng.random_range(3..=12);
        let during: u64 = rng.random_range(0..=20);
        let after: u64 = rng.random_range(3..=12);
        let shape = format!(
            "dashboards={dashboards} cut={cut:?} partition_ms={partition_ms} events={before}/{during}/{after}"
        );
        let paces: Vec<Pace> = match kind {
            Dashboards::Plain => {
                trace.record("setup", shape);
                vec![Pace::FAST; dashboards]
            }
            Dashboards::Recovering => {
                // Some dashboards read in fits (a pause shorter than
                // slow_reader_timeout): with a small buffer the relay waits for
                // them, so events accepted before a reconnect may be relayed
                // after its replay.
                let paces: Vec<Pace> = (0..dashboards)
                    .map(|_| match rng.random_bool(0.5) {
                        true => Pace {
                            every: rng.random_range(2..=5),
                            stall: Duration::from_millis(rng.random_range(100..=1_500)),
                        },
                        false => Pace::FAST,
                    })
                    .collect();
                trace.record("setup", format!("{shape} paces={paces:?}"));
                paces
            }
        };
        Cut {
            dashboards,
            cut,
            partition_ms,
            before,
            during,
            after,
            paces,
        }
    }
}

/// The hub's settings: a ping every second, answered within a second; for
/// recovering dashboards, sessions kept and a buffer of 4 packets.
fn hub_settings(kind: Dashboards) -> HubSettings {
    let mut settings = sim_settings();
    settings.ping_interval = Duration::from_secs(1);
    settings.ping_timeout = Duration::from_secs(1);
    if kind == Dashboards::Recovering {
        settings.socket_buffer_packets = 4;
        settings.recovery = Some(SessionLimits {
            max_disconnection: Duration::from_secs(120),
            max_sessions: 100,
            max_replay_events: 4_096,
        });
    }
    settings
}

/// Cuts a seeded subset of dashboards off the hub for a seeded time while a
/// hook sends before, during and after; checks the invariants of the
/// module doc (for [`Dashboards::Recovering`], that every event reached
/// every dashboard) and returns the simulated time covered and the
/// dashboards' views, for the caller's own checks.
pub(crate) fn run_cut(
    seed: u64,
    trace: &Trace,
    kind: Dashboards,
) -> Result<(Duration, Vec<Dashboard>), String> {
    let mut rng = harness_rng(seed);
    let cut = Cut::draw(&mut rng, kind, trace);
    let mut sim = sim_builder(seed, Duration::from_secs(300)).build();
    let clock = SimClock::new();
    let hub = sim_hub(hub_settings(kind), &clock);
    add_hub_host(&mut sim, &hub);

    let stop = StopFlag::new();
    let views: Vec<Dashboard> = (0..cut.dashboards)
        .map(|_| match kind {
            Dashboards::Plain => Dashboard::new(),
            Dashboards::Recovering => Dashboard::recovering(),
        })
        .collect();
    super::spawn_dashboards(&mut sim, seed, &views, &cut.paces, &stop, trace);
    let dashboards = cut.dashboards;
    let driver = Driver {
        hub,
        views: views.clone(),
        stop,
        trace: trace.clone(),
        cut,
        kind,
        seq: 0,
    };
    sim.client("driver", driver.run());

    super::fix_link_latencies(&mut sim, &mut rng, dashboards, "driver");
    let covered = super::run_checking(&mut sim, &views)?;
    Ok((covered, views))
}

type HostResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The hook that sends, and the driver that cuts and repairs the links.
struct Driver {
    hub: Hub,
    views: Vec<Dashboard>,
    stop: StopFlag,
    trace: Trace,
    cut: Cut,
    kind: Dashboards,
    /// The next event's `seq`: the number sent so far.
    seq: u64,
}

impl Driver {
    async fn run(mut self) -> HostResult<()> {
        let mut hook = SioClient::connect(HUB_HOST, HUB_PORT, STEP_TIMEOUT).await?;
        let ok = wait_until(&mut hook, POLL, Duration::from_secs(30), || {
            self.all_connected()
        })
        .await?;
        ensure!(ok, "not every client connected at start");
        self.trace.record("driver", "all connected");

        let sent = self.send(&mut hook, self.cut.before, 10).await?;
        let ok = wait_until(&mut hook, POLL, Duration::from_secs(30), || {
            self.views
                .iter()
                .all(|v| v.view().received_in(0..sent) == sent as usize)
        })
        .await?;
        ensure!(
            ok,
            "events sent before the partition did not reach every dashboard"
        );
        self.partition(&mut hook).await?;
        self.everyone_back(&mut hook).await?;
        self.later_events_arrive(&mut hook).await?;
        self.stop.stop();
        hook.close(STEP_TIMEOUT).await;
        self.ends_clean().await
    }

    /// Every client is connected, as the hub and each dashboard see it.
    fn all_connected(&self) -> bool {
        self.hub.stats().clients_connected() == self.cut.dashboards as u64 + 1
            && self.views.iter().all(|v| v.view().connected)
    }

    /// Sends `n` events, `gap_ms` apart; returns how many were sent so far.
    async fn send(&mut self, hook: &mut SioClient, n: u64, gap_ms: u64) -> HostResult<u64> {
        for _ in 0..n {
            hook.emit(
                CLAUDE_EVENT,
                &json!({"seq": self.seq, "type": "hook"}),
                STEP_TIMEOUT,
            )
            .await?;
            self.seq += 1;
            idle(hook, Duration::from_millis(gap_ms)).await?;
        }
        Ok(self.seq)
    }

    /// The disruption: cuts the links, sends `during` events meanwhile and
    /// repairs them; a long enough partition must drop the cut-off clients.
    async fn partition(&mut self, hook: &mut SioClient) -> HostResult<()> {
        let cut_names: Vec<String> = self.cut.cut.iter().map(|i| format!("dash-{i}")).collect();
        let stats = self.hub.stats().clone();
        let (partition_ms, during) = (self.cut.partition_ms, self.cut.during);
        for name in &cut_names {
            turmoil::partition(HUB_HOST, name.as_str());
        }
        self.trace
            .record("driver", format!("partition {cut_names:?}"));
        let mut lowest = stats.clients_connected();
        let partition_end = tokio::time::Instant::now() + Duration::from_millis(partition_ms);
        let gap_ms = (partition_ms / (during + 1)).max(1);
        for _ in 0..during {
            self.send(hook, 1, gap_ms).await?;
            lowest = lowest.min(stats.clients_connected());
        }
        while tokio::time::Instant::now() < partition_end {
            idle(hook, POLL).await?;
            lowest = lowest.min(stats.clients_connected());
        }
        for name in &cut_names {
            turmoil::repair(HUB_HOST, name.as_str());
        }
        self.trace.record(
            "driver",
            format!("repair; lowest clients_connected={lowest}"),
        );
        // Server detection takes at most pingInterval + pingTimeout (2 s)
        // after the first lost ping; a partition of 3.5 s always covers it.
        if partition_ms >= 3_500 {
            let total_clients = self.cut.dashboards as u64 + 1;
            ensure!(
                lowest <= total_clients - cut_names.len() as u64,
                "a {partition_ms} ms partition of {cut_names:?} never dropped them \
                 (lowest clients_connected {lowest})"
            );
        }
        Ok(())
    }

    /// After the repair every client reconnects, and stays.
    async fn everyone_back(&self, hook: &mut SioClient) -> HostResult<()> {
        let ok = wait_stable(
            hook,
            POLL,
            Duration::from_secs(5),
            Duration::from_secs(90),
            || self.all_connected(),
        )
        .await?;
        ensure!(
            ok,
            "after the repair the clients never settled: clients_connected={} views connected={:?}",
            self.hub.stats().clients_connected(),
            self.views
                .iter()
                .map(|v| v.view().connected)
                .collect::<Vec<_>>()
        );
        self.trace.record("driver", "all reconnected and stable");
        Ok(())
    }

    /// Events sent once everyone is back reach every dashboard (recovering
    /// ones: every event since the first).
    async fn later_events_arrive(&mut self, hook: &mut SioClient) -> HostResult<()> {
        let from = match self.kind {
            Dashboards::Plain => self.seq,
            Dashboards::Recovering => 0,
        };
        let sent = self.send(hook, self.cut.after, 10).await?;
        let ok = wait_until(hook, POLL, Duration::from_secs(30), || {
            self.views
                .iter()
                .all(|v| v.view().received_in(from..sent) == (sent - from) as usize)
        })
        .await?;
        ensure!(
            ok,
            "events {from}..{sent} did not reach every dashboard: {:?}",
            self.views
                .iter()
                .map(|v| v.view().received_in(from..sent))
                .collect::<Vec<_>>()
        );
        Ok(())
    }

    /// Once everyone left: nobody counted as connected, every event
    /// processed and relayed once, no error.
    async fn ends_clean(&self) -> HostResult<()> {
        let stats = self.hub.stats();
        let sent = self.seq;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while stats.clients_connected() != 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        let end = stats.snapshot();
        self.trace.record(
            "driver",
            format!(
                "end: connected={} processed={} relayed={} dropped={} errors={}",
                end.clients_connected,
                end.events_processed,
                end.events_relayed,
                end.events_dropped,
                end.errors
            ),
        );
        ensure!(
            end.clients_connected == 0,
            "clients_connected ended at {}",
            end.clients_connected
        );
        ensure!(
            end.events_processed == sent,
            "processed {} of {sent} events",
            end.events_processed
        );
        ensure!(
            end.events_relayed == sent,
            "relayed {} of {sent} events",
            end.events_relayed
        );
        ensure!(end.errors == 0, "the hub counted {} errors", end.errors);
        Ok(())
    }
}
