//! Scenario: a degraded process, watched by the real `HealthMonitor` and
//! healed by the real `RecoveryManager` (strategy + breaker), in simulated
//! time.
//!
//! The hub's process is a [`FakeProbe`] entry whose readings a task moves as
//! simulated time passes; the monitor runs the real
//! `ProcessResourceChecker` and `ServiceHealthChecker` every
//! `check_interval`; the manager's actions run on the simulated hub through
//! [`SimActions`] (the daemon's `HubActions` restart through the runner's
//! `serving::Serving`, which binds OS sockets; these do the same on the
//! simulated listener). Two seeded
//! profiles:
//!
//! - **leak**: memory and fds rise without end (an in-process restart does
//!   not free a leak). The executed actions climb the ladder in order (never
//!   skipping a rung upward), `emergency_stop` runs once, and nothing runs
//!   after it (the latch holds while the readings stay critical).
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

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use warden::breaker::{BreakerSettings, CircuitState};
use warden::daemon::healing::checkers::{
    Checker, ProcessResourceChecker, ResourceThresholds, ServiceHealthChecker, ServiceThresholds,
};
use warden::daemon::healing::executor::{
    ActionDone, ActionError, ActionRun, RecoveryActions, RecoveryManager, RecoverySettings,
};
use warden::daemon::hub::Hub;
use warden::daemon::serve::server::{ServingHandle, ShutdownReport};
use warden::escalation::{RecoveryAction, StrategySettings};
use warden::health::HealthReport;
use warden::probe::{FakeProbe, ProcessSnapshot};
use warden::recovery::LoopSettings;
use warden::time::WallTime;

use crate::actors::{Dashboard, Pace, StopFlag};
use crate::clock::{SIM_EPOCH_MS, SimClock, sim_ms};
use crate::ensure;
use crate::hub::{HUB_HOST, HUB_PORT, serve_on, sim_hub, sim_settings};
use crate::seeds::{harness_rng, sim_builder_with_tick};
use crate::trace::Trace;

const HUB_PID: u32 = 4242;
const MB: u64 = 1024 * 1024;
const MEMORY_THRESHOLD_MB: u64 = 500;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data; a panicking host leaves it consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The hub's serving generation on the simulated listener, restartable the
/// way `serving::Serving` restarts the real one (drain, bind the same port
/// again).
pub struct SimService {
    hub: Hub,
    serving: tokio::sync::Mutex<Option<ServingHandle>>,
    drain_timeout: Duration,
}

impl SimService {
    pub fn new(hub: Hub) -> Arc<Self> {
        Arc::new(SimService {
            hub,
            serving: tokio::sync::Mutex::new(None),
            drain_timeout: Duration::from_secs(5),
        })
    }

    pub async fn start(&self) -> io::Result<()> {
        let handle = serve_on(&self.hub, HUB_PORT).await?;
        *self.serving.lock().await = Some(handle);
        Ok(())
    }

    pub async fn restart(&self) -> Result<ShutdownReport, String> {
        let mut serving = self.serving.lock().await;
        let report = match serving.take() {
            Some(handle) => handle
                .shutdown(self.drain_timeout)
                .await
                .map_err(|e| e.to_string())?,
            None => return Err("the service is stopped".to_string()),
        };
        *serving = Some(
            serve_on(&self.hub, HUB_PORT)
                .await
                .map_err(|e| format!("could not bind again: {e}"))?,
        );
        Ok(report)
    }

    pub async fn shutdown(&self) -> Option<ShutdownReport> {
        let handle = self.serving.lock().await.take()?;
        handle.shutdown(self.drain_timeout).await.ok()
    }
}

/// One action as executed: when it started and ended (simulated ms), and the
/// breaker's state when it started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executed {
    pub action: RecoveryAction,
    pub start_ms: u64,
    /// When the action finished or was abandoned (the manager's timeout drops it).
    pub end_ms: Option<u64>,
    pub breaker_at_start: CircuitState,
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

/// The recovery actions on the simulated hub, with a seeded wedge: each
/// `clear_connections` hangs (past any `recovery_timeout`) with probability
/// `hang_probability`.
pub struct SimActions {
    service: Arc<SimService>,
    hang_probability: f64,
    rng: Mutex<ChaCha8Rng>,
    manager: OnceLock<Weak<RecoveryManager>>,
    log: Arc<Mutex<Vec<Executed>>>,
    stopped: StopFlag,
    trace: Trace,
}

impl RecoveryActions for SimActions {
    fn execute<'a>(&'a self, action: RecoveryAction, _report: &'a HealthReport) -> ActionRun<'a> {
        let breaker_at_start = self
            .manager
            .get()
            .and_then(Weak::upgrade)
            .map_or(CircuitState::Closed, |m| m.breaker_state());
        let index = {
            let mut log = lock(&self.log);
            log.push(Executed {
                action,
                start_ms: sim_ms(),
                end_ms: None,
                breaker_at_start,
            });
            log.len() - 1
        };
        self.trace.record(
            "recovery",
            format!("{action} starts (breaker {breaker_at_start})"),
        );
        let hang = action == RecoveryAction::ClearConnections
            && lock(&self.rng).random_bool(self.hang_probability);
        let guard = EndGuard {
            log: Arc::clone(&self.log),
            index,
        };
        Box::pin(async move {
            let _guard = guard;
            match action {
                RecoveryAction::None => Ok(ActionDone::NothingToDo),
                RecoveryAction::LogWarning => Ok(ActionDone::WarningLogged { failing_metrics: 0 }),
                RecoveryAction::ClearConnections if hang => {
                    // A wedged hub: the manager's recovery_timeout ends this.
                    std::future::pending::<()>().await;
                    Err(ActionError::Service {
                        reason: "unreachable: a pending future never completes".to_string(),
                    })
                }
                RecoveryAction::ClearConnections => Ok(ActionDone::ConnectionsCleared {
                    clients: self.service.hub.disconnect_all().await,
                }),
                RecoveryAction::RestartService => self
                    .service
                    .restart()
                    .await
                    .map(|r| ActionDone::Restarted {
                        clients_closed: r.clients_closed,
                        forced: r.forced,
                    })
                    .map_err(|e| ActionError::Service {
                        reason: e.to_string(),
                    }),
                RecoveryAction::EmergencyStop => {
                    // The runner's part (drain, then exit) is this scenario's.
                    let _report = self.service.shutdown().await;
                    self.stopped.stop();
                    Ok(ActionDone::StopRequested)
                }
            }
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

/// One run of the scenario for `seed`; returns the simulated time covered.
pub fn run(seed: u64, trace: &Trace) -> Result<Duration, String> {
    let mut rng = harness_rng(seed);
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
    let max_recovery_attempts: u32 = 200;
    // Long enough for a leak to reach critical (1.5 x the memory threshold)
    // and then climb three critical rungs, each needing `critical_threshold`
    // checks and the rate limit (seed 2134 once ended the run one rung short).
    let run_for = match profile {
        Profile::Leak { mb_per_s, .. } => {
            let to_critical =
                Duration::from_secs((MEMORY_THRESHOLD_MB * 3 / 2 - 100) / mb_per_s + 1);
            let per_rung =
                check_interval * strategy.critical_threshold + strategy.min_recovery_interval;
            (to_critical + per_rung * 3 + Duration::from_secs(30)).max(Duration::from_secs(150))
        }
        Profile::Wedged { .. } => Duration::from_secs(150),
    };
    trace.record(
        "setup",
        format!(
            "profile={profile:?} check_interval={check_interval:?} strategy={strategy:?} \
             breaker={breaker:?} recovery_timeout={recovery_timeout:?}"
        ),
    );

    // 25 ms steps: checks run every 0.5 s or more, and the run is long.
    let mut sim = sim_builder_with_tick(
        seed,
        run_for + Duration::from_secs(120),
        Duration::from_millis(25),
    )
    .build();
    let clock = SimClock::new();
    let hub = sim_hub(sim_settings(), &clock);
    let service = SimService::new(hub.clone());
    let probe = FakeProbe::new();
    probe.set(snapshot_at(profile, 0));
    let log: Arc<Mutex<Vec<Executed>>> = Arc::default();
    let emergency = StopFlag::new();
    let actions = Arc::new(SimActions {
        service: Arc::clone(&service),
        hang_probability: match profile {
            Profile::Wedged {
                hang_probability, ..
            } => hang_probability,
            Profile::Leak { .. } => 0.0,
        },
        rng: Mutex::new(harness_rng(seed.wrapping_add(7))),
        manager: OnceLock::new(),
        log: Arc::clone(&log),
        stopped: emergency.clone(),
        trace: trace.clone(),
    });
    let manager = RecoveryManager::new(
        RecoverySettings {
            core: LoopSettings {
                enabled: true,
                max_recovery_attempts,
                recovery_timeout,
                check_interval: None,
                history_size: 1_000,
                breaker: breaker.clone(),
                strategy: strategy.clone(),
            },
            host: "localhost".to_string(),
            port: HUB_PORT,
        },
        clock.shared(),
        Arc::clone(&actions) as Arc<dyn RecoveryActions>,
    )
    .map_err(|e| e.to_string())?;
    let _ = actions.manager.set(Arc::downgrade(&manager));
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
    let monitor = super::sim_monitor(check_interval, &clock, checkers);
    monitor.add_callback(manager.callback());
    {
        let trace = trace.clone();
        monitor.add_callback(Arc::new(move |report: &HealthReport| {
            trace.record("monitor", format!("{}", report.overall_status));
        }));
    }

    {
        let (service, manager, monitor, probe) = (
            Arc::clone(&service),
            Arc::clone(&manager),
            monitor.clone(),
            probe.clone(),
        );
        sim.host(HUB_HOST, move || {
            let (service, manager, monitor, probe) = (
                Arc::clone(&service),
                Arc::clone(&manager),
                monitor.clone(),
                probe.clone(),
            );
            async move {
                service.start().await?;
                tokio::spawn(manager.run());
                let stop = tokio_util::sync::CancellationToken::new();
                tokio::spawn(monitor.run(stop.clone(), None));
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
        });
    }

    let stop = StopFlag::new();
    let dashboards: Vec<Dashboard> = (0..1).map(|_| Dashboard::new()).collect();
    super::spawn_dashboards(&mut sim, seed, &dashboards, &[Pace::FAST], &stop, trace);
    for i in 0..dashboards.len() {
        sim.set_link_latency(
            HUB_HOST,
            format!("dash-{i}"),
            Duration::from_millis(rng.random_range(1..=20)),
        );
    }
    {
        let stop = stop.clone();
        sim.client("driver", async move {
            tokio::time::sleep(run_for).await;
            stop.stop();
            Ok(())
        });
    }
    sim.run().map_err(|e| e.to_string())?;

    // Every recorded recovery was executed, in order.
    let executed = lock(&log).clone();
    let history = manager.history(10_000);
    let status = manager.status(0);
    trace.record(
        "result",
        format!(
            "executed={:?} rejected_by_breaker={} trips={} rung={} latched={}",
            executed.iter().map(|e| e.action).collect::<Vec<_>>(),
            status.rejected_by_breaker,
            status.circuit_breaker.trip_count,
            status.strategy.rung,
            status.strategy.latched
        ),
    );
    // The run may end while one action is still in flight (not yet recorded).
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
    let executed: Vec<Executed> = executed.into_iter().take(history.len()).collect();
    ensure!(
        executed.len() <= max_recovery_attempts as usize,
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
    let outcomes: Vec<bool> = history.iter().map(|h| h.success).collect();

    match profile {
        Profile::Leak { .. } => {
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
                emergency.is_stopped(),
                "emergency_stop did not stop the service"
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
        }
        Profile::Wedged { .. } => {
            for e in &executed {
                ensure!(
                    rung(e.action) <= rung(RecoveryAction::ClearConnections),
                    "warnings alone ran {}",
                    e.action
                );
            }
            // After failure_threshold consecutive failures in closed, the next
            // action is a half-open trial no sooner than open_timeout later.
            let open_ms = u64::try_from(breaker.open_timeout.as_millis()).unwrap_or(u64::MAX);
            let mut consecutive = 0u32;
            for (i, (e, ok)) in executed.iter().zip(&outcomes).enumerate() {
                if e.breaker_at_start != CircuitState::Closed {
                    consecutive = 0;
                    continue;
                }
                consecutive = if *ok { 0 } else { consecutive + 1 };
                if consecutive == breaker.failure_threshold {
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
            }
        }
    }
    Ok(sim.elapsed())
}
