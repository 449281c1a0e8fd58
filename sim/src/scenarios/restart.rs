//! Scenario: `restart_service` under load, through the daemon's own serving
//! generation.
//!
//! The hub host claims the PID file (the daemon's claim on the simulated
//! machine) and serves the hub with the daemon's `serving::Serving` over
//! turmoil's listener (`net::SimListen`), handing it every request and due
//! retry as the runner does. The driver restarts it through its
//! `ServingControl`, as the recovery actions do, while a hook sends events
//! and dashboards read them. Sometimes a squatter on the hub host takes the
//! port in the window between the stop and the rebind: for less than the
//! rebind schedule (the restart succeeds), or for longer (the restart fails
//! and a rebind retry serves again). Invariants, over every seed:
//! - a restart succeeds unless the port stayed taken past the rebind
//!   schedule; then it fails with a rebind error and a retry serves again
//!   (the restart count grows by one per restart, nothing stays drained, the
//!   daemon is never emergency-stopped);
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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use warden::daemon::hub::{Hub, HubSettings};
use warden::daemon::os::pidfile::PidGuard;
use warden::daemon::serve::serving::{
    self, RestartError, RetrySchedule, ServingControl, ServingRequests, ServingSettings,
};
use warden::pidfile::PidFileContent;
use warden::probe::ProcessSnapshot;
use warden::time::WallTime;

use crate::actors::{Actor, Dashboard, Hook, Pace, StopFlag, poll_stable, poll_until, run_hook};
use crate::clock::{SIM_EPOCH_MS, SimClock};
use crate::hub::{
    HUB_HOST, HUB_PORT, serve_until_emergency_stop, sim_hub, sim_settings, start_serving,
};
use crate::net::SimListener;
use crate::pid::{SimMachine, SimProcess, StartLatency, StartOutcome, start_daemon};
use crate::seeds::{harness_rng, sim_builder};
use crate::trace::Trace;
use crate::{ensure, lock};

const POLL: Duration = Duration::from_millis(50);
const HUB_PID: u32 = 4242;

/// What the driver and the hub host share.
#[derive(Debug, Default)]
struct Shared {
    /// How long the squatter holds the port in the next restart's window.
    squat: Option<Duration>,
    /// Set by the hub host when something it must guarantee did not hold.
    violation: Option<String>,
}

/// Who takes the port while a restart has released it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Squat {
    /// Nobody: the first bind succeeds.
    None,
    /// For less than the rebind schedule's window: the restart succeeds.
    Short(Duration),
    /// For longer: the restart fails, a rebind retry serves again.
    Long(Duration),
}

impl Squat {
    fn draw(rng: &mut impl Rng) -> Squat {
        match rng.random_range(0..3) {
            0 => Squat::None,
            1 => Squat::Short(Duration::from_millis(rng.random_range(100..=1_500))),
            _ => Squat::Long(Duration::from_millis(rng.random_range(2_500..=5_000))),
        }
    }

    fn duration(self) -> Option<Duration> {
        match self {
            Squat::None => None,
            Squat::Short(d) | Squat::Long(d) => Some(d),
        }
    }
}

/// The serving settings of the simulated daemon: the binary's, with a
/// window between releasing the socket and binding again (the test hook
/// `WARDEN_TEST_REBIND_PAUSE_MS`) for the squatter, and ten retries a
/// second apart. The rebind schedule's 40 binds 50 ms apart (about 2 s) stay
/// the binary's: a short squat ends within it, a long one after it.
fn serving_settings() -> ServingSettings {
    ServingSettings {
        rebind_pause: Duration::from_millis(100),
        retries: RetrySchedule::new(10, Duration::from_secs(1)),
        ..ServingSettings::default()
    }
}

/// On the hub host: while a squat is pending and serving is drained, binds
/// the port as soon as the old generation let it go and holds it.
async fn squatter(control: ServingControl, shared: Arc<Mutex<Shared>>, trace: Trace) {
    loop {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if !control.is_draining() {
            continue;
        }
        let Some(hold) = lock(&shared).squat else {
            continue;
        };
        if let Ok(listener) = SimListener::bind(HUB_PORT).await {
            lock(&shared).squat = None;
            trace.record("squatter", format!("took the port for {hold:?}"));
            tokio::time::sleep(hold).await;
            drop(listener);
            trace.record("squatter", "let the port go");
        }
    }
}

/// One run of the scenario for `seed`; returns the simulated time covered.
pub fn run(seed: u64, trace: &Trace) -> Result<Duration, String> {
    run_with(seed, trace, false)
}

/// The scenario with connection state recovery (see the module doc).
pub fn run_recovering(seed: u64, trace: &Trace) -> Result<Duration, String> {
    run_with(seed, trace, true)
}

/// The seeded shape of one run: who is connected, and how each restart
/// goes (the pause before it, who takes the port in its window).
#[derive(Clone, Debug)]
struct Plan {
    dashboards: usize,
    hook_gap: Duration,
    pauses_ms: Vec<u64>,
    squats: Vec<Squat>,
}

impl Plan {
    fn draw(rng: &mut impl Rng, trace: &Trace) -> Plan {
        let dashboards: usize = rng.random_range(2..=5);
        let restarts: u32 = rng.random_range(1..=3);
        let hook_gap = Duration::from_millis(rng.random_range(5..=200));
        let pauses_ms: Vec<u64> = (0..restarts)
            .map(|_| rng.random_range(100..=3_000))
            .collect();
        let squats: Vec<Squat> = (0..restarts).map(|_| Squat::draw(rng)).collect();
        trace.record(
            "setup",
            format!("dashboards={dashboards} restarts={restarts} pauses_ms={pauses_ms:?} squats={squats:?} hook_gap={hook_gap:?}"),
        );
        Plan {
            dashboards,
            hook_gap,
            pauses_ms,
            squats,
        }
    }
}

fn run_with(seed: u64, trace: &Trace, recovery: bool) -> Result<Duration, String> {
    let mut rng = harness_rng(seed);
    let plan = Plan::draw(&mut rng, trace);
    let mut sim = sim_builder(seed, Duration::from_secs(600)).build();
    let clock = SimClock::new();
    let hub = sim_hub(hub_settings(recovery), &clock);
    let machine = SimMachine::new();
    machine.run_process(hub_process());
    let shared = Arc::new(Mutex::new(Shared::default()));
    let (control, requests) = serving::channel();
    add_hub_host(
        &mut sim,
        HubHost {
            hub: hub.clone(),
            machine: machine.clone(),
            clock,
            shared: Arc::clone(&shared),
            control: control.clone(),
            requests: Arc::new(Mutex::new(Some(requests))),
            trace: trace.clone(),
        },
    );

    let stop = StopFlag::new();
    let views: Vec<Dashboard> = (0..plan.dashboards)
        .map(|_| match recovery {
            true => Dashboard::recovering(),
            false => Dashboard::new(),
        })
        .collect();
    let paces = vec![Pace::FAST; plan.dashboards];
    super::spawn_dashboards(&mut sim, seed, &views, &paces, &stop, trace);
    let hook = Hook::new();
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
        plan.hook_gap,
    );
    sim.client("hook", async move { actor.await.map_err(Into::into) });

    let driver = Driver {
        hub: hub.clone(),
        views: views.clone(),
        hook,
        stop,
        trace: trace.clone(),
        shared,
        machine,
        control,
    };
    let (pauses_ms, squats) = (plan.pauses_ms, plan.squats);
    sim.client("driver", async move {
        driver.run(&pauses_ms, &squats).await.map_err(Into::into)
    });

    super::fix_link_latencies(&mut sim, &mut rng, plan.dashboards, "hook");
    let elapsed = super::run_checking(&mut sim, &views)?;
    if recovery {
        every_dashboard_recovered_everything(&hub, &views, trace)?;
    }
    Ok(elapsed)
}

/// The simulated daemon's hub settings: short heartbeats; with `recovery`,
/// connection state recovery on and every accepted event kept in the log,
/// to check against.
fn hub_settings(recovery: bool) -> HubSettings {
    let mut settings = sim_settings();
    settings.ping_interval = Duration::from_secs(2);
    settings.ping_timeout = Duration::from_secs(2);
    if recovery {
        settings.event_history_size = 100_000;
        settings.history_answer_max_bytes = usize::MAX;
        settings.recovery = Some(warden::sessions::SessionLimits {
            max_disconnection: Duration::from_secs(120),
            max_sessions: 100,
            max_replay_events: 4_096,
        });
    }
    settings
}

/// What the hub host runs with.
struct HubHost {
    hub: Hub,
    machine: SimMachine,
    clock: SimClock,
    shared: Arc<Mutex<Shared>>,
    control: ServingControl,
    /// Taken by the host's first boot (it never crashes here).
    requests: Arc<Mutex<Option<ServingRequests>>>,
    trace: Trace,
}

/// The daemon on the hub host: claims the PID file, serves the hub through
/// its serving generation (with the squatter beside it) and runs the
/// runner's loop; an emergency stop is a violation.
fn add_hub_host(sim: &mut turmoil::Sim<'_>, host: HubHost) {
    sim.host(HUB_HOST, move || {
        let hub = host.hub.clone();
        let (machine, clock) = (host.machine.clone(), host.clock.clone());
        let (shared, control) = (Arc::clone(&host.shared), host.control.clone());
        let trace = host.trace.clone();
        let requests = lock(&host.requests).take();
        async move {
            let requests = requests.ok_or("the hub host booted twice")?;
            let guard = claim_pid_file(&machine, &clock).await?;
            trace.record("hub", "claimed the PID file");
            let mut serving = start_serving(hub, serving_settings(), requests).await?;
            tokio::spawn(squatter(control, Arc::clone(&shared), trace.clone()));
            let reason = serve_until_emergency_stop(&mut serving).await;
            trace.record("hub", format!("emergency stop: {reason}"));
            lock(&shared).violation = Some(format!(
                "the serving generation stopped the daemon: {reason}"
            ));
            serving.shutdown().await;
            // The daemon would exit; it holds its claim until then.
            std::future::pending::<()>().await;
            drop(guard);
            Ok(())
        }
    });
}

/// The hub's process on `machine`, as `warden start` would be.
fn hub_process() -> ProcessSnapshot {
    ProcessSnapshot::new(
        HUB_PID,
        "warden",
        &["warden", "start"],
        WallTime::from_millis(SIM_EPOCH_MS),
    )
}

/// `warden start`'s PID claim, as the hub's process (running on
/// `machine`); the guard holds the lock for the daemon's life.
async fn claim_pid_file(
    machine: &SimMachine,
    clock: &SimClock,
) -> Result<PidGuard<SimProcess>, String> {
    let me = hub_process();
    let latency = StartLatency {
        before_open: Duration::ZERO,
        open_to_lock: Duration::from_millis(1),
        lock_to_read: Duration::from_millis(1),
        decide_to_write: Duration::from_millis(1),
    };
    match start_daemon(machine, &me, HUB_PORT, clock, latency).await? {
        StartOutcome::Claimed(claimed) => Ok(claimed.guard),
        StartOutcome::Refused { holder } => Err(format!(
            "the hub could not claim its PID file: held by {holder:?}"
        )),
    }
}

/// The driver: restarts the daemon's serving through its control while the
/// clients run, and checks the invariants of the module doc.
struct Driver {
    hub: Hub,
    views: Vec<Dashboard>,
    hook: Hook,
    stop: StopFlag,
    trace: Trace,
    shared: Arc<Mutex<Shared>>,
    machine: SimMachine,
    control: ServingControl,
}

impl Driver {
    async fn run(self, pauses_ms: &[u64], squats: &[Squat]) -> Result<(), String> {
        let ok = poll_until(POLL, Duration::from_secs(30), || self.everyone_connected()).await;
        ensure!(ok, "not every client connected at start");
        let record = self.machine.content(HUB_PORT);
        ensure!(
            matches!(&record, PidFileContent::Record(r) if r.pid == HUB_PID),
            "the hub's PID record is missing: {record:?}"
        );
        for (n, (pause_ms, squat)) in pauses_ms.iter().zip(squats).enumerate() {
            tokio::time::sleep(Duration::from_millis(*pause_ms)).await;
            self.restart(n + 1, *squat, &record).await?;
        }
        self.later_events_reach_everyone().await?;
        self.stop.stop();
        self.ends_clean(&record).await
    }

    /// Every client is connected, as the hub and each client see it.
    fn everyone_connected(&self) -> bool {
        let total = self.views.len() as u64 + 1;
        self.hub.stats().clients_connected() == total
            && self.hook.view().connected
            && self.views.iter().all(|v| v.view().connected)
    }

    /// The disruption: restart `n` with `squat` in its window ends as the
    /// squat says, serving resumes, the PID record and its lock stay, and
    /// every client comes back for good.
    async fn restart(&self, n: usize, squat: Squat, record: &PidFileContent) -> Result<(), String> {
        let control = &self.control;
        lock(&self.shared).squat = squat.duration();
        self.trace.record("driver", format!("restart_service #{n}"));
        let result = control.restart_service().await;
        self.trace
            .record("driver", format!("restart #{n}: {result:?}"));
        match (squat, &result) {
            (Squat::None | Squat::Short(_), Ok(_)) => {}
            (Squat::Long(_), Err(RestartError::Rebind { .. })) => {}
            _ => {
                return Err(format!(
                    "restart #{n} with squat {squat:?} ended {result:?}"
                ));
            }
        }
        // A failed restart serves again on a rebind retry.
        let ok = poll_until(POLL, Duration::from_secs(30), || {
            control.restarts() == n as u64 && !control.is_draining()
        })
        .await;
        ensure!(
            ok,
            "restart #{n} never served again (restarts={}, draining={})",
            control.restarts(),
            control.is_draining()
        );
        ensure!(
            self.machine.content(HUB_PORT) == *record && self.machine.is_locked(),
            "restart #{n} changed the PID record or released its lock"
        );
        let ok = poll_stable(
            POLL,
            Duration::from_secs(3),
            Duration::from_secs(60),
            || self.everyone_connected(),
        )
        .await;
        ensure!(
            ok,
            "after restart #{n} the clients never settled: clients_connected={}",
            self.hub.stats().clients_connected()
        );
        self.trace
            .record("driver", format!("everyone back after restart #{n}"));
        Ok(())
    }

    /// Events sent from now on reach every dashboard.
    async fn later_events_reach_everyone(&self) -> Result<(), String> {
        let from = self.hook.view().sent.last().map_or(0, |s| s + 1);
        let ok = poll_until(POLL, Duration::from_secs(30), || {
            let sent: Vec<u64> = self
                .hook
                .view()
                .sent
                .iter()
                .copied()
                .filter(|s| *s >= from)
                .take(5)
                .collect();
            sent.len() == 5
                && self.views.iter().all(|v| {
                    let view = v.view();
                    sent.iter().all(|s| view.received_in(*s..*s + 1) == 1)
                })
        })
        .await;
        ensure!(
            ok,
            "events sent after the last restart did not reach every dashboard"
        );
        Ok(())
    }

    /// The verdict once the clients were told to stop: nobody left
    /// connected, every accepted event relayed, no error, the PID record
    /// unchanged and written by the hub alone, no violation on the host.
    async fn ends_clean(&self, record: &PidFileContent) -> Result<(), String> {
        let stats = self.hub.stats();
        let ok = poll_until(POLL, Duration::from_secs(30), || {
            stats.clients_connected() == 0
        })
        .await;
        let end = stats.snapshot();
        self.trace.record(
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
        let sent = self.hook.view().sent.len() as u64;
        ensure!(
            end.events_processed <= sent,
            "processed {} but the hook sent {sent}",
            end.events_processed
        );
        ensure!(end.errors == 0, "the hub counted {} errors", end.errors);
        ensure!(
            self.machine.content(HUB_PORT) == *record,
            "the PID record changed"
        );
        ensure!(
            self.machine.writers() == vec![HUB_PID],
            "PID file writers: {:?}",
            self.machine.writers()
        );
        match lock(&self.shared).violation.clone() {
            Some(violation) => Err(violation),
            None => Ok(()),
        }
    }
}

/// With connection state recovery: every reconnect recovered its session,
/// and every dashboard got every event the hub accepted between its first
/// and its last, once, in order.
fn every_dashboard_recovered_everything(
    hub: &Hub,
    views: &[Dashboard],
    trace: &Trace,
) -> Result<(), String> {
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
    Ok(())
}
