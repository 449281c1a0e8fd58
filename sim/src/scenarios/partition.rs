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
use warden::daemon::hub::CLAUDE_EVENT;
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
    let mut settings = sim_settings();
    settings.ping_interval = Duration::from_secs(1);
    settings.ping_timeout = Duration::from_secs(1);
    let paces: Vec<Pace> = match kind {
        Dashboards::Plain => {
            trace.record(
                "setup",
                format!("dashboards={dashboards} cut={cut:?} partition_ms={partition_ms} events={before}/{during}/{after}"),
            );
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
            trace.record(
                "setup",
                format!("dashboards={dashboards} cut={cut:?} partition_ms={partition_ms} events={before}/{during}/{after} paces={paces:?}"),
            );
            settings.socket_buffer_packets = 4;
            settings.recovery = Some(SessionLimits {
                max_disconnection: Duration::from_secs(120),
                max_sessions: 100,
                max_replay_events: 4_096,
            });
            paces
        }
    };

    let mut sim = sim_builder(seed, Duration::from_secs(300)).build();
    let clock = SimClock::new();
    let hub = sim_hub(settings, &clock);

    add_hub_host(&mut sim, &hub);

    let stop = StopFlag::new();
    let views: Vec<Dashboard> = (0..dashboards)
        .map(|_| match kind {
            Dashboards::Plain => Dashboard::new(),
            Dashboards::Recovering => Dashboard::recovering(),
        })
        .collect();
    super::spawn_dashboards(&mut sim, seed, &views, &paces, &stop, trace);

    let cut_names: Vec<String> = cut.iter().map(|i| format!("dash-{i}")).collect();
    let driver = {
        let hub = hub.clone();
        let views = views.clone();
        let stop = stop.clone();
        let trace = trace.clone();
        let total_clients = dashboards as u64 + 1;
        async move {
            let mut hook = SioClient::connect(HUB_HOST, HUB_PORT, STEP_TIMEOUT).await?;
            let stats = hub.stats().clone();
            let all_connected = || {
                stats.clients_connected() == total_clients
                    && views.iter().all(|v| v.view().connected)
            };
            let ok = wait_until(&mut hook, POLL, Duration::from_secs(30), all_connected).await?;
            ensure!(ok, "not every client connected at start");
            trace.record("driver", "all connected");

            let mut seq = 0u64;
            let mut send = async |hook: &mut SioClient, n: u64, gap_ms: u64| {
                for _ in 0..n {
                    hook.emit(
                        CLAUDE_EVENT,
                        &json!({"seq": seq, "type": "hook"}),
                        STEP_TIMEOUT,
                    )
                    .await?;
                    seq += 1;
                    idle(hook, Duration::from_millis(gap_ms)).await?;
                }
                Ok::<u64, crate::client::ClientError>(seq)
            };

            let sent = send(&mut hook, before, 10).await?;
            let ok = wait_until(&mut hook, POLL, Duration::from_secs(30), || {
                views
                    .iter()
                    .all(|v| v.view().received_in(0..sent) == sent as usize)
            })
            .await?;
            ensure!(
                ok,
                "events sent before the partition did not reach every dashboard"
            );

            for name in &cut_names {
                turmoil::partition(HUB_HOST, name.as_str());
            }
            trace.record("driver", format!("partition {cut_names:?}"));
            let mut lowest = stats.clients_connected();
            let partition_end = tokio::time::Instant::now() + Duration::from_millis(partition_ms);
            let gap_ms = (partition_ms / (during + 1)).max(1);
            let mut sent = sent;
            for _ in 0..during {
                sent = send(&mut hook, 1, gap_ms).await?;
                lowest = lowest.min(stats.clients_connected());
            }
            while tokio::time::Instant::now() < partition_end {
                idle(&mut hook, POLL).await?;
                lowest = lowest.min(stats.clients_connected());
            }
            for name in &cut_names {
                turmoil::repair(HUB_HOST, name.as_str());
            }
            trace.record(
                "driver",
                format!("repair; lowest clients_connected={lowest}"),
            );
            // Server detection takes at most pingInterval + pingTimeout (2 s)
            // after the first lost ping; a partition of 3.5 s always covers it.
            if partition_ms >= 3_500 {
                ensure!(
                    lowest <= total_clients - cut_names.len() as u64,
                    "a {partition_ms} ms partition of {cut_names:?} never dropped them \
                     (lowest clients_connected {lowest})"
                );
            }

            let ok = wait_stable(
                &mut hook,
                POLL,
                Duration::from_secs(5),
                Duration::from_secs(90),
                all_connected,
            )
            .await?;
            ensure!(
                ok,
                "after the repair the clients never settled: clients_connected={} views connected={:?}",
                stats.clients_connected(),
                views.iter().map(|v| v.view().connected).collect::<Vec<_>>()
            );
            trace.record("driver", "all reconnected and stable");

            let from = match kind {
                Dashboards::Plain => sent,
                Dashboards::Recovering => 0,
            };
            let sent = send(&mut hook, after, 10).await?;
            let ok = wait_until(&mut hook, POLL, Duration::from_secs(30), || {
                views
                    .iter()
                    .all(|v| v.view().received_in(from..sent) == (sent - from) as usize)
            })
            .await?;
            ensure!(
                ok,
                "events {from}..{sent} did not reach every dashboard: {:?}",
                views
                    .iter()
                    .map(|v| v.view().received_in(from..sent))
                    .collect::<Vec<_>>()
            );

            stop.stop();
            hook.close(STEP_TIMEOUT).await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while stats.clients_connected() != 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
            let end = stats.snapshot();
            trace.record(
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
    };
    sim.client("driver", driver);

    super::fix_link_latencies(&mut sim, &mut rng, dashboards, "driver");
    let covered = super::run_checking(&mut sim, &views)?;
    Ok((covered, views))
}
