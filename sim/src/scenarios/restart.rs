//! Scenario: `restart_service` under load.
//!
//! The hub host claims the PID file (simulated machine, pure lifecycle),
//! serves, and on the driver's request restarts the service the way the
//! recovery manager does: `ServingHandle::shutdown` (every transport closed,
//! counters corrected, listener released) then a new serving generation on
//! the same simulated address, all while a hook sends events and dashboards
//! read them. Invariants, over every seed:
//! - after each restart the listener serves again and every client
//!   reconnects: `clients_connected` returns to exactly the number of
//!   clients and stays there;
//! - no dashboard receives an event twice or out of order; events sent once
//!   everyone is back reach every dashboard;
//! - the PID record never changes and its lock stays held across restarts;
//!   only the hub's own pid ever wrote it;
//! - at the end `clients_connected` is exactly 0, every accepted event was
//!   relayed once, and the hub counted no error.
//!
//! [`run_recovering`] runs it with connection state recovery on and
//! recovering dashboards, and also requires that every reconnect recovered
//! its session and that every dashboard got every event the hub accepted
//! between its first and its last, once, in order: none lost across the
//! restarts.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;
use warden::pidfile::PidFileContent;
use warden::probe::ProcessSnapshot;
use warden::time::WallTime;

use crate::actors::{
    Actor, Dashboard, Hook, Pace, StopFlag, poll_stable, poll_until, run_dashboard, run_hook,
};
use crate::clock::{SIM_EPOCH_MS, SimClock};
use crate::ensure;
use crate::hub::{HUB_HOST, HUB_PORT, serve_on, serve_on_retrying, sim_hub, sim_settings};
use crate::pid::{SimMachine, StartLatency, StartOutcome, start_daemon};
use crate::seeds::{harness_rng, sim_builder};
use crate::trace::Trace;

const POLL: Duration = Duration::from_millis(50);
const HUB_PID: u32 = 4242;

/// Restart requests and completions, shared by the driver and the hub host.
#[derive(Debug, Default)]
struct Restarts {
    requested: u32,
    done: u32,
    /// Set by the hub host when something it must guarantee did not hold.
    violation: Option<String>,
}

/// One run of the scenario for `seed`; returns the simulated time covered.
pub fn run(seed: u64, trace: &Trace) -> Result<Duration, String> {
    run_with(seed, trace, false)
}

/// The scenario with connection state recovery (see the module doc).
pub fn run_recovering(seed: u64, trace: &Trace) -> Result<Duration, String> {
    run_with(seed, trace, true)
}

fn run_with(seed: u64, trace: &Trace, recovery: bool) -> Result<Duration, String> {
    let mut rng = harness_rng(seed);
    let dashboards: usize = rng.random_range(2..=5);
    let restarts: u32 = rng.random_range(1..=3);
    let hook_gap = Duration::from_millis(rng.random_range(5..=200));
    let pauses_ms: Vec<u64> = (0..restarts)
        .map(|_| rng.random_range(100..=3_000))
        .collect();
    trace.record(
        "setup",
        format!("dashboards={dashboards} restarts={restarts} pauses_ms={pauses_ms:?} hook_gap={hook_gap:?}"),
    );

    let mut sim = sim_builder(seed, Duration::from_secs(600)).build();
    let clock = SimClock::new();
    let mut settings = sim_settings();
    settings.ping_interval = Duration::from_secs(2);
    settings.ping_timeout = Duration::from_secs(2);
    if recovery {
        // Every accepted event stays in the log, to check against.
        settings.event_history_size = 100_000;
        settings.history_answer_max_bytes = usize::MAX;
        settings.recovery = Some(warden::sessions::SessionLimits {
            max_disconnection: Duration::from_secs(120),
            max_sessions: 100,
            max_replay_events: 4_096,
        });
    }
    let hub = sim_hub(settings, &clock);
    let machine = SimMachine::new();
    let me = ProcessSnapshot::new(
        HUB_PID,
        "warden",
        &["warden", "start"],
        WallTime::from_millis(SIM_EPOCH_MS),
    );
    machine.run_process(me.clone());
    let restarts_state = Arc::new(Mutex::new(Restarts::default()));

    {
        let hub = hub.clone();
        let machine = machine.clone();
        let clock = clock.clone();
        let state = Arc::clone(&restarts_state);
        let trace = trace.clone();
        sim.host(HUB_HOST, move || {
            let (hub, machine, clock, state, trace, me) = (
                hub.clone(),
                machine.clone(),
                clock.clone(),
                Arc::clone(&state),
                trace.clone(),
                me.clone(),
            );
            async move {
                let latency = StartLatency {
                    before_open: Duration::ZERO,
                    open_to_lock: Duration::from_millis(1),
                    lock_to_read: Duration::from_millis(1),
                    decide_to_write: Duration::from_millis(1),
                };
                let guard = match start_daemon(&machine, &me, HUB_PORT, &clock, latency).await? {
                    StartOutcome::Claimed(claimed) => claimed.guard,
                    StartOutcome::Refused { holder } => {
                        return Err(format!(
                            "the hub could not claim its PID file: held by {holder:?}"
                        )
                        .into());
                    }
                };
                let record = machine.content(HUB_PORT);
                trace.record("hub", "claimed the PID file");
                let mut serving = serve_on(&hub, HUB_PORT).await?;
                let mut done = 0;
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let requested = state
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .requested;
                    if requested == done {
                        continue;
                    }
                    let report = serving.shutdown(Duration::from_secs(5)).await?;
                    serving = serve_on_retrying(
                        &hub,
                        HUB_PORT,
                        Duration::from_millis(10),
                        Duration::from_secs(5),
                    )
                    .await?;
                    done += 1;
                    trace.record(
                        "hub",
                        format!(
                            "restart #{done}: clients_closed={} forced={}",
                            report.clients_closed, report.forced
                        ),
                    );
                    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                    if machine.content(HUB_PORT) != record {
                        state.violation = Some(format!("restart #{done} changed the PID record"));
                    }
                    if !machine.is_locked() {
                        state.violation = Some(format!("restart #{done} released the PID lock"));
                    }
                    state.done = done;
                    drop(state);
                    // The guard lives as long as the daemon.
                    let _ = &guard;
                }
            }
        });
    }

    let stop = StopFlag::new();
    let views: Vec<Dashboard> = (0..dashboards)
        .map(|_| match recovery {
            true => Dashboard::recovering(),
            false => Dashboard::new(),
        })
        .collect();
    for (i, view) in views.iter().enumerate() {
        let name = format!("dash-{i}");
        let actor = run_dashboard(
            Actor {
                name: name.clone(),
                host: HUB_HOST,
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
    let hook = Hook::new();
    {
        let actor = run_hook(
            Actor {
                name: "hook".to_string(),
                host: HUB_HOST,
                port: HUB_PORT,
                stop: stop.clone(),
                rng: harness_rng(seed.wrapping_add(1_000)),
                trace: trace.clone(),
            },
            hook.clone(),
            hook_gap,
        );
        sim.client("hook", async move { actor.await.map_err(Into::into) });
    }

    let driver = {
        let hub = hub.clone();
        let views = views.clone();
        let hook = hook.clone();
        let stop = stop.clone();
        let trace = trace.clone();
        let state = Arc::clone(&restarts_state);
        let machine = machine.clone();
        let total = dashboards as u64 + 1;
        async move {
            let stats = hub.stats().clone();
            let everyone = || {
                stats.clients_connected() == total
                    && hook.view().connected
                    && views.iter().all(|v| v.view().connected)
            };
            let ok = poll_until(POLL, Duration::from_secs(30), everyone).await;
            ensure!(ok, "not every client connected at start");
            let record = machine.content(HUB_PORT);
            ensure!(
                matches!(&record, PidFileContent::Record(r) if r.pid == HUB_PID),
                "the hub's PID record is missing: {record:?}"
            );

            for (n, pause_ms) in pauses_ms.iter().enumerate() {
                tokio::time::sleep(Duration::from_millis(*pause_ms)).await;
                state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .requested += 1;
                trace.record("driver", format!("restart_service #{}", n + 1));
                let ok = poll_until(POLL, Duration::from_secs(30), || {
                    state.lock().unwrap_or_else(PoisonError::into_inner).done as usize == n + 1
                })
                .await;
                ensure!(ok, "restart #{} did not complete", n + 1);
                let ok = poll_stable(
                    POLL,
                    Duration::from_secs(3),
                    Duration::from_secs(60),
                    everyone,
                )
                .await;
                ensure!(
                    ok,
                    "after restart #{} the clients never settled: clients_connected={}",
                    n + 1,
                    stats.clients_connected()
                );
                trace.record("driver", format!("everyone back after restart #{}", n + 1));
            }

            // Events sent from now on reach every dashboard.
            let from = hook.view().sent.last().map_or(0, |s| s + 1);
            let ok = poll_until(POLL, Duration::from_secs(30), || {
                let sent: Vec<u64> = hook
                    .view()
                    .sent
                    .iter()
                    .copied()
                    .filter(|s| *s >= from)
                    .take(5)
                    .collect();
                sent.len() == 5
                    && views.iter().all(|v| {
                        let view = v.view();
                        sent.iter().all(|s| view.received_in(*s..*s + 1) == 1)
                    })
            })
            .await;
            ensure!(
                ok,
                "events sent after the last restart did not reach every dashboard"
            );

            stop.stop();
            let ok = poll_until(POLL, Duration::from_secs(30), || {
                stats.clients_connected() == 0
            })
            .await;
            let end = stats.snapshot();
            trace.record(
                "driver",
                format!(
                    "end: connected={} processed={} relayed={} errors={}",
                    end.clients_connected, end.events_processed, end.events_relayed, end.errors
                ),
            );
            ensure!(ok, "clients_connected ended at {}", end.clients_connected);
            ensure!(
                end.events_relayed == end.events_processed,
                "relayed {} of {} processed events",
                end.events_relayed,
                end.events_processed
            );
            let sent = hook.view().sent.len() as u64;
            ensure!(
                end.events_processed <= sent,
                "processed {} but the hook sent {sent}",
                end.events_processed
            );
            ensure!(end.errors == 0, "the hub counted {} errors", end.errors);
            ensure!(
                machine.content(HUB_PORT) == record,
                "the PID record changed"
            );
            ensure!(
                machine.writers() == vec![HUB_PID],
                "PID file writers: {:?}",
                machine.writers()
            );
            let violation = state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .violation
                .clone();
            if let Some(violation) = violation {
                return Err(violation.into());
            }
            Ok(())
        }
    };
    sim.client("driver", driver);

    super::fix_link_latencies(&mut sim, &mut rng, dashboards, "hook");
    let elapsed = super::run_checking(&mut sim, &views)?;
    if recovery {
        let accepted: Vec<u64> = hub
            .history(None)
            .iter()
            .filter_map(|event| event.get("seq").and_then(serde_json::Value::as_u64))
            .collect();
        for (i, view) in views.iter().enumerate() {
            let view = view.view();
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
            // Events accepted once the dashboards were told to stop are not
            // theirs to get; the driver checked that the ones after the last
            // restart arrived.
            let first = view.received.first().copied().unwrap_or(0);
            let last = view.received.last().copied().unwrap_or(0);
            let expected: Vec<u64> = accepted
                .iter()
                .copied()
                .filter(|s| (first..=last).contains(s))
                .collect();
            if view.received != expected {
                let missing: Vec<u64> = expected
                    .iter()
                    .copied()
                    .filter(|s| !view.received.contains(s))
                    .take(10)
                    .collect();
                return Err(format!(
                    "dash-{i}: {} received, {} accepted since its first (the last {:?}), missing {missing:?}",
                    view.received.len(),
                    expected.len(),
                    expected.last()
                ));
            }
        }
    }
    Ok(elapsed)
}
