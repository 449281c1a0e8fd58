//! Scenario: dashboards with connection state recovery cut off from the hub
//! while a hook keeps sending (the partition scenario, recovery on).
//!
//! A seeded subset of recovering dashboards (each sends back its session id
//! and last offset on every reconnect, as socket.io-client does) is cut off
//! for a seeded time; events are sent before, during and after. Invariants,
//! over every seed:
//! - every reconnect recovers its session (the CONNECT carries the same pid);
//! - every dashboard ends with every event, exactly once, in order: zero
//!   missing events for every recovered session;
//! - when everyone leaves, `clients_connected` is exactly 0 and the hub
//!   counted no error.

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
use warden::sessions::SessionLimits;

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
    // Some dashboards read in fits (a pause shorter than slow_reader_timeout):
    // with a small buffer the relay waits for them, so events accepted before
    // a reconnect may be relayed after its replay.
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

    let mut sim = sim_builder(seed, Duration::from_secs(300)).build();
    let clock = SimClock::new();
    let mut settings = sim_settings();
    settings.ping_interval = Duration::from_secs(1);
    settings.ping_timeout = Duration::from_secs(1);
    settings.socket_buffer_packets = 4;
    settings.recovery = Some(SessionLimits {
        max_disconnection: Duration::from_secs(120),
        max_sessions: 100,
        max_replay_events: 4_096,
    });
    let hub = sim_hub(settings, &clock);

    add_hub_host(&mut sim, &hub);

    let stop = StopFlag::new();
    let views: Vec<Dashboard> = (0..dashboards).map(|_| Dashboard::recovering()).collect();
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
            paces[i],
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
            for _ in 0..during {
                send(&mut hook, 1, gap_ms).await?;
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

            let sent = send(&mut hook, after, 10).await?;
            let ok = wait_until(&mut hook, POLL, Duration::from_secs(30), || {
                views
                    .iter()
                    .all(|v| v.view().received_in(0..sent) == sent as usize)
            })
            .await?;
            ensure!(
                ok,
                "not every event reached every recovered dashboard: {:?} of {sent}",
                views
                    .iter()
                    .map(|v| v.view().received.len())
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
    sim.run().map_err(|e| e.to_string())?;
    for (i, view) in views.iter().enumerate() {
        let view = view.view();
        if let Some(violation) = &view.violation {
            return Err(violation.clone());
        }
        let recovered = view.recovery.as_ref().map_or(0, |r| r.recovered);
        trace.record(
            "result",
            format!(
                "dash-{i}: connections={} recovered={recovered} received={}",
                view.connections,
                view.received.len()
            ),
        );
        if recovered + 1 != view.connections {
            return Err(format!(
                "dash-{i}: {} reconnects, {recovered} recovered",
                view.connections - 1
            ));
        }
        let expected: Vec<u64> = (0..view.received.len() as u64).collect();
        if view.received != expected {
            return Err(format!(
                "dash-{i}: not every event once in order: {:?}",
                view.received
            ));
        }
    }
    Ok(sim.elapsed())
}
