//! Scenario: a degraded process, watched by the real `HealthMonitor` and
//! healed by the real `RecoveryManager` (strategy + breaker) with the
//! daemon's own actions, in simulated time.
//!
//! The hub's process is a [`FakeProbe`] entry whose readings a task moves as
//! simulated time passes; the monitor runs the real
//! `ProcessResourceChecker` and `ServiceHealthChecker` every
//! `check_interval`; the manager's commands run through the daemon's
//! `HubActions`: `clear_connections` severs the simulated hub's transports,
//! and `restart_service` and `emergency_stop` go to the daemon's own serving
//! generation (`serving::Serving` on turmoil's listener, `net::SimListen`)
//! through its `ServingControl`, handled by the runner's loop on the hub
//! host, as in the binary. [`SimActions`] only records each execution and
//! injects the wedge. Two seeded profiles:
//!
//! - **leak**: memory and fds rise without end (an in-process restart does
//!   not free a leak). The executed actions climb the ladder in order (never
//!   skipping a rung upward), every `restart_service` succeeds with the
//!   generation serving again when it returns, `emergency_stop` runs once
//!   and stops serving, and nothing runs after it (the latch holds while the
//!   readings stay critical).
//! - **wedged**: memory sits in the warning band for good, so the warning
//!   ladder keeps asking for `clear_connections`, and the hub is wedged: a
//!   seeded share of clears hang past `recovery_timeout`. The breaker stops
//!   the loop: no action ever starts while it is open; after
//!   `failure_threshold` consecutive failures in `closed`, the next action is
//!   a half-open trial no sooner than `open_timeout` later; warnings never
//!   restart or stop anything.
//!
//! In both, every action the manager records was executed, in the same order,
//! and their number never exceeds `max_recovery_attempts`.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use warden::breaker::{BreakerSettings, CircuitState};
use warden::daemon::healing::checkers::{
    Checker, ProcessResourceChecker, ResourceThresholds, ServiceHealthChecker, ServiceThresholds,
};
use warden::daemon::healing::executor::{
    ActionRun, HubActions, RecoveryActions, RecoveryEvent, RecoveryManager, RecoverySettings,
    RecoveryStatus, ServiceControl,
};
use warden::daemon::healing::monitor::HealthMonitor;
use warden::daemon::hub::Hub;
use warden::daemon::serve::serving::{self, ServingControl, ServingRequests, ServingSettings};
use warden::escalation::{RecoveryAction, StrategySettings};
use warden::health::HealthReport;
use warden::probe::{FakeProbe, ProcessSnapshot};
use warden::recovery::LoopSettings;
use warden::time::WallTime;

use crate::actors::{Dashboard, Pace, StopFlag};
use crate::clock::{SIM_EPOCH_MS, SimClock, sim_ms};
use crate::hub::{
    HUB_HOST, HUB_PORT, serve_until_emergency_stop, sim_hub, sim_settings, start_serving,
};
use crate::seeds::{harness_rng, sim_builder_with_tick};
use crate::trace::Trace;
use crate::{ensure, lock};

const HUB_PID: u32 = 4242;
const MB: u64 = 1024 * 1024;
const MEMORY_THRESHOLD_MB: u64 = 500;
const MAX_RECOVERY_ATTEMPTS: u32 = 200;

/// One action as executed: when it started and ended (simulated ms), and the
/// breaker's state when it started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executed {
    pub action: RecoveryAction,
    pub start_ms: u64,
    /// When the action finished or was abandoned (the manager's timeout drops it).
    pub end_ms: Option<u64>,
    pub breaker_at_start: CircuitState,
    /// For a `restart_service` that returned: whether the serving generation
    /// was serving again (not draining) when it did.
    pub served_after: Option<bool>,
}

/// Records the end of an execution when dropped, however the action ended.
struct EndGuard {
    log: Arc<Mutex<Vec<Executed>>>,
    index: usize,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if let Some(entry) = lock(&self.log).get_mut(self.index) {
            entry.end_ms = Some(sim_ms());
        }
    }
}

/// The daemon's recovery actions ([`HubActions`] on the simulated hub and
/// its serving generation), recorded, with a seeded wedge: each
/// `clear_connections` hangs (past any `recovery_timeout`) with probability
/// `hang_probability` instead of running.
pub struct SimActions {
    daemon: HubActions,
    control: ServingControl,
    hang_probability: f64,
    rng: Mutex<ChaCha8Rng>,
    manager: OnceLock<Weak<RecoveryManager>>,
    log: Arc<Mutex<Vec<Executed>>>,
    trace: Trace,
}

impl SimActions {
    fn new(
        hub: &Hub,
        control: ServingControl,
        hang_probability: f64,
        seed: u64,
        trace: &Trace,
    ) -> Self {
        let service: Arc<dyn ServiceControl> = Arc::new(control.clone());
        SimActions {
            daemon: HubActions::new(hub.clone(), service),
            control,
            hang_probability,
            rng: Mutex::new(harness_rng(seed.wrapping_add(7))),
            manager: OnceLock::new(),
            log: Arc::default(),
            trace: trace.clone(),
        }
    }

    /// Logs the start of `action`; returns its index in the log.
    fn record_start(&self, action: RecoveryAction) -> usize {
        let breaker_at_start = self
            .manager
            .get()
            .and_then(Weak::upgrade)
            .map_or(CircuitState::Closed, |m| m.breaker_state());
        self.trace.record(
            "recovery",
            format!("{action} starts (breaker {breaker_at_start})"),
        );
        let mut log = lock(&self.log);
        log.push(Executed {
            action,
            start_ms: sim_ms(),
            end_ms: None,
            breaker_at_start,
            served_after: None,
        });
        log.len() - 1
    }
}

impl RecoveryActions for SimActions {
    fn execute<'a>(&'a self, action: RecoveryAction, report: &'a HealthReport) -> ActionRun<'a> {
        let index = self.record_start(action);
        let hang = action == RecoveryAction::ClearConnections
            && lock(&self.rng).random_bool(self.hang_probability);
        let guard = EndGuard {
            log: Arc::clone(&self.log),
            index,
        };
        Box::pin(async move {
            let _guard = guard;
            if hang {
                // A wedged hub: the manager's recovery_timeout ends this.
                return std::future::pending().await;
            }
            let outcome = self.daemon.execute(action, report).await;
            if action == RecoveryAction::RestartService {
                let served = !self.control.is_draining();
                if let Some(entry) = lock(&self.log).get_mut(index) {
                    entry.served_after = Some(served);
                }
            }
            outcome
        })
    }
}

/// How the process degrades.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Profile {
    /// Memory rises by `mb_per_s` from 100 MB, fds by `fds_per_s` from 50.
    Leak { mb_per_s: u64, fds_per_s: u64 },
    /// Memory sits at `memory_mb` (in the warning band) after `after_s`.
    Wedged {
        memory_mb: u64,
        after_s: u64,
        hang_probability: f64,
    },
}

fn snapshot_at(profile: Profile, elapsed_ms: u64) -> ProcessSnapshot {
    let mut s = ProcessSnapshot::new(
        HUB_PID,
        "warden",
        &["warden", "start"],
        WallTime::from_millis(SIM_EPOCH_MS),
    );
    let (memory_mb, fds) = match profile {
        Profile::Leak {
            mb_per_s,
            fds_per_s,
        } => (
            100 + mb_per_s * elapsed_ms / 1_000,
            50 + fds_per_s * elapsed_ms / 1_000,
        ),
        Profile::Wedged {
            memory_mb, after_s, ..
        } => {
            if elapsed_ms >= after_s * 1_000 {
                (memory_mb, 60)
            } else {
                (100, 60)
            }
        }
    };
    s.memory_rss_bytes = memory_mb * MB;
    s.memory_virtual_bytes = 2 * memory_mb * MB;
    s.open_fds = Some(fds);
    s.threads = Some(8);
    s
}

fn rung(action: RecoveryAction) -> u8 {
    match action {
        RecoveryAction::None => 0,
        RecoveryAction::LogWarning => 1,
        RecoveryAction::ClearConnections => 2,
        RecoveryAction::RestartService => 3,
        RecoveryAction::EmergencyStop => 4,
    }
}

/// The seeded parameters of one run.
#[derive(Clone, Debug)]
struct Setup {
    profile: Profile,
    check_interval: Duration,
    strategy: StrategySettings,
    breaker: BreakerSettings,
    recovery_timeout: Duration,
    /// How long the dashboards stay (the run lasts 120 s more).
    run_for: Duration,
}

impl Setup {
    fn draw(rng: &mut impl Rng) -> Setup {
        let profile = if rng.random_bool(0.5) {
            Profile::Leak {
                mb_per_s: rng.random_range(5..=20),
                fds_per_s: rng.random_range(1..=30),
            }
        } else {
            Profile::Wedged {
                memory_mb: rng.random_range(MEMORY_THRESHOLD_MB + 1..=MEMORY_THRESHOLD_MB * 3 / 2),
                after_s: rng.random_range(0..=20),
                hang_probability: [1.0, 0.9, 0.7, 0.5][rng.random_range(0..4)],
            }
        };
        let check_interval = Duration::from_millis(rng.random_range(500..=3_000));
        let warning_threshold = rng.random_range(1..=3);
        let critical_threshold = rng.random_range(1..=3);
        let strategy = StrategySettings {
            // Any order of the two thresholds: with warning_threshold the lower
            // one, criticals must still climb past clear_connections (seed 10
            // found that they did not).
            warning_threshold,
            critical_threshold,
            failure_window: Duration::from_secs(60),
            min_recovery_interval: Duration::from_secs(rng.random_range(1..=10)),
            cooldown: Duration::from_secs(60),
        };
        let breaker = BreakerSettings {
            failure_threshold: rng.random_range(1..=5),
            open_timeout: Duration::from_secs(rng.random_range(10..=40)),
            success_threshold: rng.random_range(1..=3),
            ..BreakerSettings::default()
        };
        let recovery_timeout = Duration::from_secs(rng.random_range(2..=6));
        let run_for = run_length(profile, check_interval, &strategy);
        Setup {
            profile,
            check_interval,
            strategy,
            breaker,
            recovery_timeout,
            run_for,
        }
    }

    fn hang_probability(&self) -> f64 {
        match self.profile {
            Profile::Wedged {
                hang_probability, ..
            } => hang_probability,
            Profile::Leak { .. } => 0.0,
        }
    }
}

/// Long enough for a leak to reach critical (1.5 x the memory threshold)
/// and then climb three critical rungs, each needing `critical_threshold`
/// checks and the rate limit (seed 2134 once ended the run one rung short).
fn run_length(profile: Profile, check_interval: Duration, strategy: &StrategySettings) -> Duration {
    match profile {
        Profile::Leak { mb_per_s, .. } => {
            let to_critical =
                Duration::from_secs((MEMORY_THRESHOLD_MB * 3 / 2 - 100) / mb_per_s + 1);
            let per_rung =
                check_interval * strategy.critical_threshold + strategy.min_recovery_interval;
            (to_critical + per_rung * 3 + Duration::from_secs(30)).max(Duration::from_secs(150))
        }
        Profile::Wedged { .. } => Duration::from_secs(150),
    }
}

/// The real manager over `actions`, with the run's ladder and breaker.
fn recovery_manager(
    setup: &Setup,
    clock: &SimClock,
    actions: &Arc<SimActions>,
) -> Result<Arc<RecoveryManager>, String> {
    let manager = RecoveryManager::new(
        RecoverySettings {
            core: LoopSettings {
                enabled: true,
                max_recovery_attempts: MAX_RECOVERY_ATTEMPTS,
                recovery_timeout: setup.recovery_timeout,
                check_interval: None,
                history_size: 1_000,
                breaker: setup.breaker.clone(),
                strategy: setup.strategy.clone(),
            },
            host: "localhost".to_string(),
            port: HUB_PORT,
        },
        clock.shared(),
        Arc::clone(actions) as Arc<dyn RecoveryActions>,
    )
    .map_err(|e| e.to_string())?;
    let _ = actions.manager.set(Arc::downgrade(&manager));
    Ok(manager)
}

/// The real monitor with the daemon's two checkers on `probe` and the hub's
/// stats, feeding `manager` and the trace.
fn health_monitor(
    setup: &Setup,
    clock: &SimClock,
    hub: &Hub,
    probe: &FakeProbe,
    manager: &Arc<RecoveryManager>,
    trace: &Trace,
) -> HealthMonitor {
    let checkers: Vec<Arc<dyn Checker>> = vec![
        Arc::new(ProcessResourceChecker::new(
            HUB_PID,
            Arc::new(probe.clone()),
            ResourceThresholds {
                cpu_percent: 80.0,
                memory_mb: MEMORY_THRESHOLD_MB as f64,
                file_descriptors: 1_000.0,
            },
            1,
        )),
        Arc::new(ServiceHealthChecker::new(
            Arc::clone(hub.stats()) as _,
            ServiceThresholds {
                max_clients: 1_000.0,
                max_error_rate: 0.1,
            },
        )),
    ];
    let monitor = super::sim_monitor(setup.check_interval, clock, checkers);
    monitor.add_callback(manager.callback());
    let trace = trace.clone();
    monitor.add_callback(Arc::new(move |report: &HealthReport| {
        trace.record("monitor", format!("{}", report.overall_status));
    }));
    monitor
}

/// What runs on the hub host: the daemon's pieces after startup.
struct HubHost {
    hub: Hub,
    /// Taken by the host's first boot (it never crashes here).
    requests: Arc<Mutex<Option<ServingRequests>>>,
    manager: Arc<RecoveryManager>,
    monitor: HealthMonitor,
    probe: FakeProbe,
    profile: Profile,
    /// Set once an emergency stop stopped serving.
    stopped: StopFlag,
    trace: Trace,
}

impl HubHost {
    /// The daemon on the hub host: its serving generation with the binary's
    /// settings, the manager and the monitor, the degrading process, and the
    /// runner's loop handing serving every request until an emergency stop.
    fn add_to(self, sim: &mut turmoil::Sim<'_>) {
        sim.host(HUB_HOST, move || {
            let hub = self.hub.clone();
            let requests = lock(&self.requests).take();
            let (manager, monitor) = (Arc::clone(&self.manager), self.monitor.clone());
            let (probe, profile) = (self.probe.clone(), self.profile);
            let (stopped, trace) = (self.stopped.clone(), self.trace.clone());
            async move {
                let requests = requests.ok_or("the hub host booted twice")?;
                let mut serving = start_serving(hub, ServingSettings::default(), requests).await?;
                tokio::spawn(manager.run());
                let stop = tokio_util::sync::CancellationToken::new();
                tokio::spawn(monitor.run(stop.clone(), None));
                tokio::spawn(degrade(probe, profile));
                let reason = serve_until_emergency_stop(&mut serving).await;
                trace.record("hub", format!("emergency stop: {reason}"));
                serving.shutdown().await;
                stopped.stop();
                // The daemon would exit here; the monitor and the manager
                // keep running, so that the latch is what keeps them quiet.
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }
}

/// Moves the process's readings as simulated time passes.
async fn degrade(probe: FakeProbe, profile: Profile) {
    let started = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let elapsed = started.elapsed();
        probe.set(snapshot_at(
            profile,
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        ));
    }
}

/// One run of the scenario for `seed`; returns the simulated time covered.
pub fn run(seed: u64, trace: &Trace) -> Result<Duration, String> {
    let mut rng = harness_rng(seed);
    let setup = Setup::draw(&mut rng);
    trace.record(
        "setup",
        format!(
            "profile={:?} check_interval={:?} strategy={:?} breaker={:?} recovery_timeout={:?}",
            setup.profile,
            setup.check_interval,
            setup.strategy,
            setup.breaker,
            setup.recovery_timeout
        ),
    );

    // 25 ms steps: checks run every 0.5 s or more, and the run is long.
    let mut sim = sim_builder_with_tick(
        seed,
        setup.run_for + Duration::from_secs(120),
        Duration::from_millis(25),
    )
    .build();
    let clock = SimClock::new();
    let hub = sim_hub(sim_settings(), &clock);
    let (control, requests) = serving::channel();
    let probe = FakeProbe::new();
    probe.set(snapshot_at(setup.profile, 0));
    let actions = Arc::new(SimActions::new(
        &hub,
        control.clone(),
        setup.hang_probability(),
        seed,
        trace,
    ));
    let manager = recovery_manager(&setup, &clock, &actions)?;
    let monitor = health_monitor(&setup, &clock, &hub, &probe, &manager, trace);
    let stopped = StopFlag::new();
    HubHost {
        hub: hub.clone(),
        requests: Arc::new(Mutex::new(Some(requests))),
        manager: Arc::clone(&manager),
        monitor,
        probe,
        profile: setup.profile,
        stopped: stopped.clone(),
        trace: trace.clone(),
    }
    .add_to(&mut sim);

    add_dashboard(&mut sim, &mut rng, seed, setup.run_for, trace);
    sim.run().map_err(|e| e.to_string())?;

    let executed = lock(&actions.log).clone();
    judge(&setup, executed, &manager, &control, &stopped, trace)?;
    Ok(sim.elapsed())
}

/// One dashboard, connected for `run_for` (its link's latency drawn from
/// `rng`): the clients the ladder's clear and restart act on.
fn add_dashboard(
    sim: &mut turmoil::Sim<'_>,
    rng: &mut impl Rng,
    seed: u64,
    run_for: Duration,
    trace: &Trace,
) {
    let stop = StopFlag::new();
    let dashboards: Vec<Dashboard> = (0..1).map(|_| Dashboard::new()).collect();
    super::spawn_dashboards(sim, seed, &dashboards, &[Pace::FAST], &stop, trace);
    for i in 0..dashboards.len() {
        sim.set_link_latency(
            HUB_HOST,
            format!("dash-{i}"),
            Duration::from_millis(rng.random_range(1..=20)),
        );
    }
    sim.client("driver", async move {
        tokio::time::sleep(run_for).await;
        stop.stop();
        Ok(())
    });
}

/// The verdict over what was executed and what the manager recorded.
fn judge(
    setup: &Setup,
    executed: Vec<Executed>,
    manager: &RecoveryManager,
    control: &ServingControl,
    stopped: &StopFlag,
    trace: &Trace,
) -> Result<(), String> {
    let history = manager.history(10_000);
    let status = manager.status(0);
    trace.record(
        "result",
        format!(
            "executed={:?} rejected_by_breaker={} trips={} rung={} latched={} restarts={}",
            executed.iter().map(|e| e.action).collect::<Vec<_>>(),
            status.rejected_by_breaker,
            status.circuit_breaker.trip_count,
            status.strategy.rung,
            status.strategy.latched,
            control.restarts()
        ),
    );
    let executed = recorded_as_executed(executed, &history)?;
    ensure!(
        executed.len() <= MAX_RECOVERY_ATTEMPTS as usize,
        "{} actions in one episode, more than max_recovery_attempts",
        executed.len()
    );
    for e in &executed {
        ensure!(
            e.breaker_at_start != CircuitState::Open,
            "{} started at {} ms while the breaker was open",
            e.action,
            e.start_ms
        );
    }
    match setup.profile {
        Profile::Leak { .. } => {
            leak_climbed_and_latched(&executed, &history, &status, stopped)?;
            restarts_served_again(&executed, &history, control)
        }
        Profile::Wedged { .. } => {
            let outcomes: Vec<bool> = history.iter().map(|h| h.success).collect();
            wedged_stopped_by_the_breaker(&executed, &outcomes, &setup.breaker)
        }
    }
}

/// Every action the manager recorded was executed, in the same order; the
/// executions it recorded (the run may end while one is still in flight).
fn recorded_as_executed(
    executed: Vec<Executed>,
    history: &[RecoveryEvent],
) -> Result<Vec<Executed>, String> {
    ensure!(
        (history.len() == executed.len() || history.len() + 1 == executed.len())
            && history
                .iter()
                .zip(&executed)
                .all(|(h, e)| h.action == e.action),
        "the manager recorded {:?} but executed {:?}",
        history.iter().map(|h| h.action).collect::<Vec<_>>(),
        executed.iter().map(|e| e.action).collect::<Vec<_>>()
    );
    Ok(executed.into_iter().take(history.len()).collect())
}

/// A leak climbs the ladder without skipping a rung upward and ends in
/// exactly one emergency stop, which stopped serving and latched.
fn leak_climbed_and_latched(
    executed: &[Executed],
    history: &[RecoveryEvent],
    status: &RecoveryStatus,
    stopped: &StopFlag,
) -> Result<(), String> {
    let mut highest = 0u8;
    for (i, e) in executed.iter().enumerate() {
        let r = rung(e.action);
        ensure!(
            r <= highest
                .saturating_add(1)
                .max(rung(RecoveryAction::ClearConnections)),
            "action {i} ({}) skipped a rung: the highest before was {highest}",
            e.action
        );
        highest = highest.max(r);
    }
    let stops: Vec<usize> = executed
        .iter()
        .enumerate()
        .filter(|(_, e)| e.action == RecoveryAction::EmergencyStop)
        .map(|(i, _)| i)
        .collect();
    ensure!(
        stops.len() == 1,
        "a leak that never ends must end in exactly one emergency_stop, got {stops:?} in {:?}",
        executed.iter().map(|e| e.action).collect::<Vec<_>>()
    );
    ensure!(
        stops[0] == executed.len() - 1,
        "actions ran after emergency_stop (the latch broke)"
    );
    ensure!(
        history.last().is_some_and(|h| h.success),
        "emergency_stop failed: {:?}",
        history.last()
    );
    ensure!(
        stopped.is_stopped(),
        "emergency_stop did not stop the serving generation"
    );
    ensure!(
        status.strategy.latched && status.strategy.rung == RecoveryAction::EmergencyStop,
        "the strategy is not latched at emergency_stop: {:?}",
        status.strategy
    );
    for action in [
        RecoveryAction::ClearConnections,
        RecoveryAction::RestartService,
    ] {
        ensure!(
            executed.iter().any(|e| e.action == action),
            "the ladder reached emergency_stop without {action}"
        );
    }
    Ok(())
}

/// Nobody holds the port: every `restart_service` succeeded, the daemon's
/// generation served again when it returned, and it counted each restart.
fn restarts_served_again(
    executed: &[Executed],
    history: &[RecoveryEvent],
    control: &ServingControl,
) -> Result<(), String> {
    let mut restarts = 0;
    for (i, (e, h)) in executed.iter().zip(history).enumerate() {
        if e.action != RecoveryAction::RestartService {
            continue;
        }
        restarts += 1;
        ensure!(
            h.success && e.served_after == Some(true),
            "restart_service (action {i}) ended with success={} and serving again={:?}: {:?}",
            h.success,
            e.served_after,
            h.error_message
        );
    }
    ensure!(
        control.restarts() == restarts,
        "the serving generation counted {} restarts for {restarts} restart_service",
        control.restarts()
    );
    Ok(())
}

/// Warnings never restart or stop anything; after `failure_threshold`
/// consecutive failures in closed, the next action is a half-open trial no
/// sooner than `open_timeout` later.
fn wedged_stopped_by_the_breaker(
    executed: &[Executed],
    outcomes: &[bool],
    breaker: &BreakerSettings,
) -> Result<(), String> {
    for e in executed {
        ensure!(
            rung(e.action) <= rung(RecoveryAction::ClearConnections),
            "warnings alone ran {}",
            e.action
        );
    }
    let open_ms = u64::try_from(breaker.open_timeout.as_millis()).unwrap_or(u64::MAX);
    let mut consecutive = 0u32;
    for (i, (e, ok)) in executed.iter().zip(outcomes).enumerate() {
        if e.breaker_at_start != CircuitState::Closed {
            consecutive = 0;
            continue;
        }
        consecutive = if *ok { 0 } else { consecutive + 1 };
        if consecutive != breaker.failure_threshold {
            continue;
        }
        consecutive = 0;
        let tripped_at = e.end_ms.unwrap_or(e.start_ms);
        if let Some(next) = executed.get(i + 1) {
            ensure!(
                next.breaker_at_start == CircuitState::HalfOpen
                    && next.start_ms + 5 >= tripped_at + open_ms,
                "after {} consecutive failures (tripped at {tripped_at} ms) the next action \
                 started at {} ms with the breaker {}",
                breaker.failure_threshold,
                next.start_ms,
                next.breaker_at_start
            );
        }
    }
    Ok(())
}
