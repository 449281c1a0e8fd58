//! Property tests for the graded recovery strategy over random observation
//! sequences. 1000 cases per property, sequences of up to 200 observations.
//! Times are milliseconds, and some steps land exactly on, or a millisecond
//! either side of, the settings' own intervals, so the rounding at those
//! edges (which the fuzzer found once) is in reach.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use warden::escalation::{
    Decision, DecisionCause, GradedRecoveryStrategy, RecoveryAction, StrategySettings,
};
use warden::health::HealthStatus;
use warden::time::Moment;

#[derive(Clone, Debug)]
enum Op {
    Observe(HealthStatus),
    /// A pure status query (it must change nothing).
    Query,
    Reset,
}

fn status() -> impl Strategy<Value = HealthStatus> {
    prop_oneof![
        3 => Just(HealthStatus::Healthy),
        3 => Just(HealthStatus::Warning),
        3 => Just(HealthStatus::Critical),
        2 => Just(HealthStatus::Unknown),
    ]
}

/// An op and the milliseconds before it: bursts, long gaps, and steps on
/// the edges of `s`'s intervals.
fn op(s: &StrategySettings) -> impl Strategy<Value = (Op, u64)> + use<> {
    let op = prop_oneof![
        20 => status().prop_map(Op::Observe),
        4 => Just(Op::Query),
        1 => Just(Op::Reset),
    ];
    let mut edges = Vec::new();
    for d in [s.failure_window, s.min_recovery_interval, s.cooldown] {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        edges.extend([ms.saturating_sub(1), ms, ms.saturating_add(1)]);
    }
    let dt = prop_oneof![
        2 => Just(0u64),
        5 => 0u64..90_000,
        1 => 0u64..1_200_000,
        2 => prop::sample::select(edges),
    ];
    (op, dt)
}

fn settings() -> impl Strategy<Value = StrategySettings> {
    (
        1u32..5,
        1u32..4,
        30_000u64..600_000,
        0u64..180_000,
        30_000u64..900_000,
    )
        .prop_map(
            |(warn, crit, window_ms, interval_ms, cooldown_ms)| StrategySettings {
                warning_threshold: warn,
                critical_threshold: crit,
                failure_window: Duration::from_millis(window_ms),
                min_recovery_interval: Duration::from_millis(interval_ms),
                cooldown: Duration::from_millis(cooldown_ms),
            },
        )
}

/// Settings and up to 200 ops for them.
fn scenario() -> impl Strategy<Value = (StrategySettings, Vec<(Op, u64)>)> {
    settings().prop_flat_map(|s| {
        let ops = prop::collection::vec(op(&s), 1..200);
        (Just(s), ops)
    })
}

/// Runs the ops, asserting the step properties; returns every decision.
fn run(s: &StrategySettings, ops: &[(Op, u64)], with_queries: bool) -> Vec<Decision> {
    let mut g = GradedRecoveryStrategy::new(s.clone()).expect("valid");
    let mut now = Moment::ZERO;
    let mut last_action_at: Option<Moment> = None;
    let mut latched = false;
    let mut out = Vec::new();
    for (op, dt) in ops {
        now = now + Duration::from_millis(*dt);
        let observed = match op {
            Op::Query => {
                if with_queries {
                    let st = g.status();
                    assert_eq!(st.latched, st.rung == RecoveryAction::EmergencyStop);
                }
                continue;
            }
            Op::Reset => {
                g.reset();
                last_action_at = None;
                latched = false;
                assert_eq!(g.rung(), RecoveryAction::None);
                continue;
            }
            Op::Observe(st) => *st,
        };
        let rung_before = g.rung();
        let d = g.observe(observed, now);

        // emergency_stop is absorbing until reset.
        if latched {
            assert_eq!(d.action, RecoveryAction::None);
            assert_eq!(d.cause, DecisionCause::Latched);
            assert_eq!(g.rung(), RecoveryAction::EmergencyStop);
        }
        if d.action != RecoveryAction::None {
            // Never twice within min_recovery_interval.
            if let Some(t) = last_action_at {
                assert!(now.saturating_since(t) >= s.min_recovery_interval);
            }
            last_action_at = Some(now);
            // Never skips a rung upward: at most one above the current rung
            // (the critical ladder starts at clear_connections).
            let ceiling = rung_before
                .next_rung()
                .max(RecoveryAction::ClearConnections);
            assert!(d.action <= ceiling, "{rung_before:?} -> {:?}", d.action);
            // Never invents criticality: only a critical goes past clear_connections.
            if observed != HealthStatus::Critical {
                assert!(d.action <= RecoveryAction::ClearConnections);
            }
            // Healthy observations never act.
            assert_ne!(observed, HealthStatus::Healthy);
            match d.cause {
                DecisionCause::WarningThreshold { count } => {
                    assert!(count >= s.warning_threshold)
                }
                DecisionCause::CriticalThreshold { count } => {
                    assert!(count >= s.critical_threshold)
                }
                other => panic!("action with cause {other:?}"),
            }
        }
        if d.action == RecoveryAction::EmergencyStop {
            latched = true;
        }
        out.push(d);
    }
    out
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/prop_escalation.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Rate limit, no rung skipped, latch absorbing, no invented criticality
    /// (asserted inside `run`).
    #[test]
    fn step_properties_hold((s, ops) in scenario()) {
        run(&s, &ops, true);
    }

    /// Status queries change no decision; replay gives identical decisions.
    #[test]
    fn queries_are_pure_and_replay_is_deterministic((s, ops) in scenario()) {
        let with = run(&s, &ops, true);
        prop_assert_eq!(&with, &run(&s, &ops, false));
        prop_assert_eq!(with, run(&s, &ops, true));
    }

    /// Only warnings and unknowns (no criticals): the process is still recovered
    /// (log_warning, then clear_connections) and never restarted or stopped.
    #[test]
    fn warning_only_processes_are_recovered_but_never_restarted(
        s in settings(),
        degraded in prop::collection::vec(
            prop_oneof![Just(HealthStatus::Warning), Just(HealthStatus::Unknown)], 40..80),
    ) {
        let mut g = GradedRecoveryStrategy::new(s.clone()).expect("valid");
        // One observation per 10 s: enough within any window to pass the threshold.
        let step = 10u64;
        let actions: Vec<RecoveryAction> = degraded
            .iter()
            .enumerate()
            .map(|(i, st)| g.observe(*st, Moment::from_secs(i as u64 * step)).action)
            .filter(|a| *a != RecoveryAction::None)
            .collect();
        prop_assert!(actions.iter().all(|a| *a <= RecoveryAction::ClearConnections));
        // Within the window at least warning_threshold observations fit (window >= 30 s
        // holds >= 3; thresholds above that may need longer, so require it only then).
        let fits = (s.failure_window.as_secs() / step) as u32;
        if fits >= s.warning_threshold && degraded.len() as u64 * step > 2 * s.min_recovery_interval.as_secs() + 2 + 2 * step * u64::from(s.warning_threshold) {
            prop_assert_eq!(&actions[..2], &[RecoveryAction::LogWarning, RecoveryAction::ClearConnections]);
        }
    }
}
