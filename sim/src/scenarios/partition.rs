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

use std::time::Duration;

use crate::actors::{
    Actor, Dashboard, Pace, STEP_TIMEOUT, StopFlag, idle, run_dashboard, wait_stable, wait_until,
};
use crate::client::SioClient;
use crate::clock::SimClock;
use crate::ensure;
use crate::hub::{HUB_PORT, add_hub_host, sim_hub, sim_settings};
use crate::seeds::{harness_rng, sim_builder};
use crate::trace::Trace;
use rand::Rng;
use serde_json::json;
use warden::daemon::hub::CLAUDE_EVENT;

const POLL: Duration = Duration::from_millis(50);

/// One run of the scenario for `seed`; returns the simulated time covered.
pub fn run(seed: u64, trace: &Trace) -> Result<Duration, String> {
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
    trace.record(
        "setup",
        format!("dashboards={dashboards} cut={cut:?} partition_ms={partition_ms} events={before}/{during}/{after}"),
    );

    let mut sim = sim_builder(seed, Duration::from_secs(300)).build();
    let clock = SimClock::new();
    let mut settings = sim_settings();
    settings.ping_interval = Duration::from_secs(1);
    settings.ping_timeout = Duration::from_secs(1);
    let hub = sim_hub(settings, &clock);

    add_hub_host(&mut sim, &hub);

    let stop = StopFlag::new();
    let views: Vec<Dashboard> = (0..dashboards).map(|_| Dashboard::new()).collect();
    for (i, view) in views.iter().enumerate() {
        let name = format!("dash-{i}");
        let actor = run_dashboard(
            Actor {
                name: name.clone(),
                host: "hub",
                port: HUB_PORT,
                stop: stop.clone(),
                rng: harness_rng(seed.wrapping_add(1 + i as u64)),
                trace: trace.clone(),
            },
            view.clone(),
            Pace::FAST,
        );
        sim.client(name, async move { actor.await.map_err(Into::into) });
    }

    let cut_names: Vec<String> = cut.iter().map(|i| format!("dash-{i}")).collect();
    let driver = {
        let hub = hub.clone();
        let views = views.clone();
        let stop = stop.clone();
        let trace = trace.clone();
        let total_clients = dashboards as u64 + 1;
        async move {
            let mut hook = SioClient::connect("hub", HUB_PORT, STEP_TIMEOUT).await?;
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
                turmoil::partition("hub", name.as_str());
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
                turmoil::repair("hub", name.as_str());
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

            let from = sent;
            let sent = send(&mut hook, after, 10).await?;
            let ok = wait_until(&mut hook, POLL, Duration::from_secs(30), || {
                views
                    .iter()
                    .all(|v| v.view().received_in(from..sent) == (sent - from) as usize)
            })
            .await?;
            ensure!(
                ok,
                "events sent after the repair did not reach every dashboard"
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
    sim.run().map_err(|e| e.to_string())?;
    for (i, view) in views.iter().enumerate() {
        let view = view.view();
        if let Some(violation) = &view.violation {
            return Err(violation.clone());
        }
        trace.record(
            "result",
            format!(
                "dash-{i}: connections={} received={}",
                view.connections,
                view.received.len()
            ),
        );
    }
    Ok(sim.elapsed())
}
