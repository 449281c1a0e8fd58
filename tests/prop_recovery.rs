//! Property tests for the recovery loop (`warden::recovery::RecoveryLoop`),
//! the machine the daemon's `RecoveryManager` executes: random health
//! reports (the process's own signals, the clients', the host's and a
//! dependency's, in every status, and checkers that fail) and outcomes
//! (success, failure, timeout, stale) at random millisecond instants.
//!
//! Rules stated here:
//! - never two actions at once: no command while one is outstanding;
//! - the per-episode budget: at most `max_recovery_attempts` commands from
//!   one evaluated report whose actionable status is healthy to the next;
//! - no command while the breaker is open (before its reopen time);
//! - emergency stop is absorbing: no command after it;
//! - a dependency (Redis) never triggers an action: removing its results
//!   from every report changes no output;
//! - a client-attributed signal never triggers a restart or an emergency
//!   stop: with the process's own signals healthy, the worst command is
//!   clear_connections;
//! - a command answers only a report the check-interval gate lets through;
//! - reading the status changes nothing.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use warden::breaker::{BreakerSettings, CircuitState};
use warden::escalation::{RecoveryAction, StrategySettings};
use warden::health::{CheckerId, HealthCheckResult, HealthMetric, HealthReport, HealthStatus};
use warden::recovery::attribution::actionable_status;
use warden::recovery::{
    ActionDone, ActionError, ActionId, ActionOutcome, Command, Input, LoopSettings, Output,
    RecoveryLoop,
};
use warden::time::{Moment, WallTime};

const EPOCH_S: u64 = 1_700_000_000;

/// Who a generated signal belongs to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Owner {
    Process,
    Clients,
    Host,
    Dependency,
}

/// (checker, metric, owner): the signals a report may carry.
const SIGNALS: [(CheckerId, &str, Owner); 12] = [
    (CheckerId::ProcessResources, "memory_mb", Owner::Process),
    (CheckerId::ProcessResources, "cpu_percent", Owner::Process),
    (
        CheckerId::ProcessResources,
        "file_descriptors",
        Owner::Process,
    ),
    (CheckerId::ServiceHealth, "error_rate", Owner::Process),
    (
        CheckerId::NetworkConnectivity,
        "port_accessible",
        Owner::Process,
    ),
    (
        CheckerId::ServiceHealth,
        "clients_connected",
        Owner::Clients,
    ),
    (
        CheckerId::ServiceHealth,
        "client_errors_in_window",
        Owner::Clients,
    ),
    (
        CheckerId::ProcessResources,
        "client_connections",
        Owner::Clients,
    ),
    (
        CheckerId::ProcessResources,
        "open_fds_total",
        Owner::Clients,
    ),
    (
        CheckerId::NetworkConnectivity,
        "interface_status",
        Owner::Host,
    ),
    (
        CheckerId::RedisDependency,
        "redis_reachable",
        Owner::Dependency,
    ),
    (
        CheckerId::RedisDependency,
        "redis_rtt_ms",
        Owner::Dependency,
    ),
];

/// One generated signal: an index into [`SIGNALS`] and its status, or a
/// checker that failed (no metrics, unknown).
#[derive(Clone, Debug)]
enum Signal {
    Metric(usize, HealthStatus),
    Failed(CheckerId),
}

#[derive(Clone, Debug)]
enum Op {
    Report(Vec<Signal>),
    /// Feed back the outstanding command's outcome (nothing if none).
    Outcome(Fate),
    /// Feed back an outcome for the previous command again (stale).
    Stale,
    /// Read the status (must change nothing).
    Query,
}

#[derive(Copy, Clone, Debug)]
enum Fate {
    Success,
    Failure,
    TimedOut,
}

fn status() -> impl Strategy<Value = HealthStatus> {
    prop_oneof![
        4 => Just(HealthStatus::Healthy),
        3 => Just(HealthStatus::Warning),
        3 => Just(HealthStatus::Critical),
        1 => Just(HealthStatus::Unknown),
    ]
}

fn signal() -> impl Strategy<Value = Signal> {
    prop_oneof![
        12 => (0..SIGNALS.len(), status()).prop_map(|(i, s)| Signal::Metric(i, s)),
        1 => prop::sample::select(CheckerId::ALL.to_vec()).prop_map(Signal::Failed),
    ]
}

fn op() -> impl Strategy<Value = (Op, u64)> {
    let op = prop_oneof![
        12 => prop::collection::vec(signal(), 0..6).prop_map(Op::Report),
        6 => prop_oneof![
            3 => Just(Fate::Success),
            2 => Just(Fate::Failure),
            1 => Just(Fate::TimedOut),
        ]
        .prop_map(Op::Outcome),
        1 => Just(Op::Stale),
        2 => Just(Op::Query),
    ];
    // Milliseconds before the op: bursts, check intervals and long gaps.
    let dt = prop_oneof![2 => Just(0u64), 6 => 0u64..5_000, 1 => 0u64..400_000];
    (op, dt)
}

fn settings() -> impl Strategy<Value = LoopSettings> {
    (
        (
            prop::bool::weighted(0.9),
            1u32..6,
            1u64..5_000,
            prop::option::of(0u64..20_000),
        ),
        (1u32..4, 1u32..4, 1u64..300_000, 0u64..120_000),
        (1u32..4, 1u32..3, 1u64..120_000, 1u64..600_000),
    )
        .prop_map(
            |(
                (enabled, max_attempts, timeout_ms, interval_ms),
                (warn, crit, window_ms, min_interval_ms),
                (failures, successes, open_ms, cooldown_ms),
            )| LoopSettings {
                enabled,
                max_recovery_attempts: max_attempts,
                recovery_timeout: Duration::from_millis(timeout_ms),
                check_interval: interval_ms.map(Duration::from_millis),
                history_size: 8,
                breaker: BreakerSettings {
                    failure_threshold: failures,
                    success_threshold: successes,
                    open_timeout: Duration::from_millis(open_ms),
                    max_open_timeout: Duration::from_millis(open_ms * 4),
                    backoff_multiplier: 2.0,
                    ..BreakerSettings::default()
                },
                strategy: StrategySettings {
                    warning_threshold: warn,
                    critical_threshold: crit,
                    failure_window: Duration::from_millis(window_ms),
                    min_recovery_interval: Duration::from_millis(min_interval_ms),
                    cooldown: Duration::from_millis(cooldown_ms),
                },
            },
        )
}

fn report(signals: &[Signal], at: Moment, keep: impl Fn(Owner) -> bool) -> HealthReport {
    let wall = WallTime::from_millis(EPOCH_S * 1000 + at.as_millis());
    let mut results: Vec<HealthCheckResult> = Vec::new();
    for checker in CheckerId::ALL {
        let metrics: Vec<HealthMetric> = signals
            .iter()
            .filter_map(|s| match s {
                Signal::Metric(i, status) => {
                    let (c, name, owner) = SIGNALS[*i];
                    (c == checker && keep(owner)).then(|| HealthMetric::new(name, 1.0, *status))
                }
                Signal::Failed(_) => None,
            })
            .collect();
        let failed = signals
            .iter()
            .any(|s| matches!(s, Signal::Failed(c) if *c == checker));
        let owner = if checker == CheckerId::RedisDependency {
            Owner::Dependency
        } else {
            Owner::Process
        };
        if failed && keep(owner) {
            results.push(HealthCheckResult::failed(
                checker.as_str(),
                "cannot see",
                at,
                wall,
                Duration::ZERO,
            ));
        } else if !metrics.is_empty() {
            results.push(HealthCheckResult::from_metrics(
                checker.as_str(),
                metrics,
                at,
                wall,
                Duration::ZERO,
            ));
        }
    }
    // A process checker always reports something: an empty report would be
    // `unknown` (absence of evidence), which is not what is being varied.
    if !results
        .iter()
        .any(|r| r.checker != CheckerId::RedisDependency.as_str())
    {
        results.push(HealthCheckResult::from_metrics(
            CheckerId::ProcessResources.as_str(),
            vec![HealthMetric::new("memory_mb", 1.0, HealthStatus::Healthy)],
            at,
            wall,
            Duration::ZERO,
        ));
    }
    HealthReport::from_results(results, at, wall)
}

fn outcome(fate: Fate, timeout: Duration) -> ActionOutcome {
    let result = match fate {
        Fate::Success => Ok(ActionDone::NothingToDo),
        Fate::Failure => Err(ActionError::Service {
            reason: "scripted".into(),
        }),
        Fate::TimedOut => Err(ActionError::TimedOut { timeout }),
    };
    ActionOutcome {
        result,
        elapsed: Duration::from_millis(3),
    }
}

/// What a run emitted, for comparing runs.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Command(RecoveryAction, u32),
    Finished(RecoveryAction, bool),
}

/// Runs the ops against one loop, asserting the step properties; returns
/// the commands and records it emitted.
fn run(
    s: &LoopSettings,
    ops: &[(Op, u64)],
    keep: impl Fn(Owner) -> bool + Copy,
) -> Result<Vec<Seen>, TestCaseError> {
    let mut machine = RecoveryLoop::new(s.clone()).expect("valid settings");
    let mut now = Moment::ZERO;
    let mut outstanding: Option<Command> = None;
    let mut previous: Option<ActionId> = None;
    let mut stopped = false;
    let mut last_evaluated: Option<Moment> = None;
    let mut in_episode = 0u32;
    let mut seen = Vec::new();
    for (op, dt) in ops {
        now = now + Duration::from_millis(*dt);
        let status_before = machine.status(100, now);
        let breaker_closed_for_now = matches!(
            status_before.circuit_breaker_state,
            CircuitState::Open | CircuitState::ForcedOpen
        ) && status_before
            .circuit_breaker
            .reopens_at
            .is_none_or(|at| at > now);
        let mut evaluated = false;
        let mut evaluated_healthy = false;
        match op {
            Op::Report(signals) => {
                let r = report(signals, now, keep);
                let gate_open = match (s.check_interval, last_evaluated) {
                    (Some(interval), Some(last)) => now >= last + interval,
                    _ => true,
                };
                if outstanding.is_none() && gate_open {
                    evaluated = true;
                    last_evaluated = Some(now);
                    evaluated_healthy = actionable_status(&r) == HealthStatus::Healthy;
                }
                machine.handle_input(Input::Report {
                    report: &r,
                    now,
                    wall: WallTime::from_millis(EPOCH_S * 1000 + now.as_millis()),
                });
            }
            Op::Outcome(fate) => {
                if let Some(command) = &outstanding {
                    machine.handle_input(Input::Outcome {
                        id: command.id,
                        outcome: outcome(*fate, command.timeout),
                        now,
                    });
                }
            }
            Op::Stale => {
                if let Some(id) = previous {
                    machine.handle_input(Input::Outcome {
                        id,
                        outcome: outcome(Fate::Success, s.recovery_timeout),
                        now,
                    });
                }
            }
            Op::Query => {
                let again = machine.status(100, now);
                prop_assert_eq!(&again, &status_before, "reading the status changed it");
            }
        }
        if evaluated_healthy {
            in_episode = 0;
        }
        while let Some(output) = machine.poll_output() {
            match output {
                Output::Command(command) => {
                    prop_assert!(outstanding.is_none(), "two actions at once: {command:?}");
                    prop_assert!(
                        evaluated,
                        "a command from a report the check interval skips"
                    );
                    prop_assert!(!stopped, "a command after emergency_stop: {command:?}");
                    prop_assert!(s.enabled, "a command with recovery disabled");
                    prop_assert!(
                        !breaker_closed_for_now,
                        "a command while the breaker is open: {command:?}"
                    );
                    prop_assert_ne!(command.action, RecoveryAction::None);
                    in_episode += 1;
                    prop_assert!(
                        in_episode <= s.max_recovery_attempts,
                        "{in_episode} commands in one episode, budget {}",
                        s.max_recovery_attempts
                    );
                    prop_assert_eq!(command.attempt, in_episode);
                    prop_assert_eq!(command.timeout, s.recovery_timeout);
                    prop_assert_eq!(command.deadline, now + s.recovery_timeout);
                    stopped |= command.action == RecoveryAction::EmergencyStop;
                    seen.push(Seen::Command(command.action, command.attempt));
                    outstanding = Some(command);
                }
                Output::Finished { event, .. } => {
                    let command = outstanding.take();
                    prop_assert!(command.is_some(), "a record without a command");
                    let command = command.expect("checked");
                    prop_assert_eq!(event.action, command.action);
                    previous = Some(command.id);
                    seen.push(Seen::Finished(event.action, event.success));
                }
                Output::Note(_) => {}
            }
        }
        let in_progress = machine.in_progress().map(|c| c.id);
        prop_assert_eq!(in_progress, outstanding.as_ref().map(|c| c.id));
        prop_assert!(machine.history(usize::MAX).len() <= s.history_size);
    }
    Ok(seen)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/prop_recovery.txt",
        ))),
        ..ProptestConfig::default()
    }
}

fn everyone(_: Owner) -> bool {
    true
}

proptest! {
    #![proptest_config(config())]

    /// One action at a time, the budget, the breaker, the latch, a status
    /// read that changes nothing: over every kind of signal.
    #[test]
    fn the_loop_keeps_its_rules(
        s in settings(),
        ops in prop::collection::vec(op(), 1..160),
    ) {
        run(&s, &ops, everyone)?;
    }

    /// A dependency never triggers an action: the same run without any of
    /// its results emits exactly the same commands and records.
    #[test]
    fn a_dependency_never_triggers_an_action(
        s in settings(),
        ops in prop::collection::vec(op(), 1..160),
    ) {
        let with = run(&s, &ops, everyone)?;
        let without = run(&s, &ops, |owner| owner != Owner::Dependency)?;
        prop_assert_eq!(with, without);
        let dependency_only = run(&s, &ops, |owner| owner == Owner::Dependency)?;
        prop_assert!(dependency_only.is_empty(), "{dependency_only:?}");
    }

    /// Client-caused signals (and the host's) reach the warning ladder at
    /// most: with the process's own signals left out, no restart and no
    /// emergency stop is ever commanded.
    #[test]
    fn clients_never_restart_or_stop_the_process(
        s in settings(),
        ops in prop::collection::vec(op(), 1..160),
    ) {
        let seen = run(&s, &ops, |owner| owner != Owner::Process)?;
        for step in &seen {
            if let Seen::Command(action, _) = step {
                prop_assert!(
                    *action <= RecoveryAction::ClearConnections,
                    "client signals commanded {action}: {seen:?}"
                );
            }
        }
    }
}

/// The properties above are not vacuous: the process's own critical
/// signals do climb to an emergency stop, and the same criticals from the
/// clients do not.
#[test]
fn own_criticals_climb_to_a_stop_where_client_criticals_only_clear() {
    let s = LoopSettings {
        enabled: true,
        max_recovery_attempts: 10,
        recovery_timeout: Duration::from_secs(1),
        check_interval: None,
        history_size: 10,
        breaker: BreakerSettings::default(),
        strategy: StrategySettings {
            min_recovery_interval: Duration::ZERO,
            ..StrategySettings::default()
        },
    };
    let climb = |signal: usize| {
        let mut ops = Vec::new();
        for _ in 0..8 {
            ops.push((
                Op::Report(vec![Signal::Metric(signal, HealthStatus::Critical)]),
                1_000,
            ));
            ops.push((Op::Outcome(Fate::Success), 10));
        }
        let seen = run(&s, &ops, everyone).expect("rules hold");
        seen.iter()
            .filter_map(|step| match step {
                Seen::Command(action, _) => Some(*action),
                Seen::Finished(..) => None,
            })
            .collect::<Vec<_>>()
    };
    use RecoveryAction::{ClearConnections, EmergencyStop, LogWarning, RestartService};
    assert_eq!(
        climb(0),
        vec![ClearConnections, RestartService, EmergencyStop]
    );
    // clients_connected, critical each time: warnings for the ladder.
    let clients = climb(5);
    assert!(!clients.is_empty());
    assert!(
        clients.iter().all(|a| *a <= ClearConnections),
        "{clients:?}"
    );
    assert_eq!(clients[..2], [LogWarning, ClearConnections]);
    // redis_reachable, critical each time: nothing at all.
    assert!(climb(10).is_empty());
}
