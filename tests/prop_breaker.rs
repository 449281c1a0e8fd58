//! Property tests for the circuit breaker over random event sequences.
//! 512 cases per property, sequences of up to 120 events.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use warden::breaker::{
    BreakerSettings, CircuitBreaker, CircuitState, Permit, PermitKind, Rejected, Report,
    TransitionCause,
};
use warden::time::Moment;

#[derive(Clone, Debug)]
enum Op {
    Acquire,
    Succeed(usize),
    Fail(usize),
    Tick,
    /// A pure query at the current time plus an offset (it must change nothing).
    Query(u64),
    Disable,
    ForceOpen,
    Reset,
}

fn op() -> impl Strategy<Value = (Op, u64)> {
    let op = prop_oneof![
        6 => Just(Op::Acquire),
        5 => any::<usize>().prop_map(Op::Succeed),
        6 => any::<usize>().prop_map(Op::Fail),
        2 => Just(Op::Tick),
        3 => (0u64..60_000).prop_map(Op::Query),
        1 => Just(Op::Disable),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Reset),
    ];
    // Time advance in ms before the op: often none, sometimes up to 30 s.
    let dt = prop_oneof![3 => Just(0u64), 4 => 0u64..5_000, 2 => 0u64..30_000];
    (op, dt)
}

fn settings() -> impl Strategy<Value = BreakerSettings> {
    (
        1u32..6,
        1u64..20,
        1u32..4,
        1u32..4,
        1u64..10,
        1.0f64..3.0,
        1u64..5,
    )
        .prop_map(
            |(fail, open_s, succ, trials, lease_s, mult, cap_factor)| BreakerSettings {
                failure_threshold: fail,
                open_timeout: Duration::from_secs(open_s),
                success_threshold: succ,
                half_open_max_trials: trials,
                trial_lease: Duration::from_secs(lease_s),
                backoff_multiplier: mult,
                max_open_timeout: Duration::from_secs(open_s * cap_factor),
            },
        )
}

/// What one non-query op produced: enough to compare two runs.
#[derive(Debug, PartialEq)]
enum Trace {
    Granted(u64, PermitKind),
    Refused(Rejected),
    Reported(Report),
    Nothing,
}

/// Runs the ops, asserting the step invariants on the way; returns the trace
/// of every non-query op with the state after it.
fn run(s: &BreakerSettings, ops: &[(Op, u64)], with_queries: bool) -> Vec<(Trace, CircuitState)> {
    let mut b = CircuitBreaker::new(s.clone()).expect("valid");
    let mut now = Moment::ZERO;
    let mut held: Vec<Permit> = Vec::new();
    // Model: failures counted in a row since the breaker last entered closed.
    let mut consecutive = 0u32;
    let mut out = Vec::new();
    for (op, dt) in ops {
        now = now + Duration::from_millis(*dt);
        let before = b.state();
        let reopens_at = b.status(now).reopens_at;
        let trace = match op {
            Op::Query(ahead) => {
                if with_queries {
                    let q = now + Duration::from_millis(*ahead);
                    let st = b.status(q);
                    assert!(st.trials_in_flight <= s.half_open_max_trials);
                    assert_eq!(st.state, b.state());
                    let _ = b.transitions().count();
                }
                continue;
            }
            Op::Acquire => match b.try_acquire(now) {
                Ok(p) => {
                    let t = Trace::Granted(p.id(), p.kind());
                    held.push(p);
                    t
                }
                Err(r) => Trace::Refused(r),
            },
            Op::Succeed(i) | Op::Fail(i) if !held.is_empty() => {
                let p = held.swap_remove(i % held.len());
                let kind = p.kind();
                let success = matches!(op, Op::Succeed(_));
                let r = if success {
                    b.on_success(p, now)
                } else {
                    b.on_failure(p, now)
                };
                if before == CircuitState::Closed
                    && kind == PermitKind::Normal
                    && r == Report::Counted
                {
                    consecutive = if success { 0 } else { consecutive + 1 };
                }
                Trace::Reported(r)
            }
            Op::Succeed(_) | Op::Fail(_) => Trace::Nothing,
            Op::Tick => {
                b.tick(now);
                Trace::Nothing
            }
            Op::Disable => {
                b.disable(now);
                Trace::Nothing
            }
            Op::ForceOpen => {
                b.force_open(now);
                Trace::Nothing
            }
            Op::Reset => {
                b.reset(now);
                Trace::Nothing
            }
        };
        let after = b.state();

        // Half-open never has more trials out than allowed.
        assert!(b.status(now).trials_in_flight <= s.half_open_max_trials);
        // Closed opens only on the failure_threshold-th consecutive failure.
        if before == CircuitState::Closed && after == CircuitState::Open {
            assert_eq!(consecutive, s.failure_threshold, "opened early or late");
            let last = b.transitions().last().expect("logged");
            assert_eq!(
                last.cause,
                TransitionCause::FailureThreshold {
                    consecutive_failures: s.failure_threshold
                }
            );
        }
        // Open moves to half-open only on an event at or after reopens_at.
        if before == CircuitState::Open && after == CircuitState::HalfOpen {
            assert!(now >= reopens_at.expect("open has reopens_at"));
        }
        // Manual states are left only by an operator command.
        if matches!(before, CircuitState::Disabled | CircuitState::ForcedOpen)
            && !matches!(op, Op::Reset | Op::Disable | Op::ForceOpen)
        {
            assert_eq!(after, before);
        }
        if before != CircuitState::Closed
            || after != CircuitState::Closed
            || matches!(op, Op::Reset)
        {
            consecutive = 0;
        }
        out.push((trace, after));
    }
    out
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/prop_breaker.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Trials bounded, opens only at the threshold, open → half-open only when due,
    /// manual states sticky (asserted inside `run`, along with the machine's own
    /// debug assertions).
    #[test]
    fn step_invariants_hold(s in settings(), ops in prop::collection::vec(op(), 1..120)) {
        run(&s, &ops, true);
    }

    /// Querying status between events changes no later decision, and replaying
    /// the same events gives the same decisions.
    #[test]
    fn queries_are_pure_and_replay_is_deterministic(
        s in settings(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let with = run(&s, &ops, true);
        let without = run(&s, &ops, false);
        prop_assert_eq!(&with, &without);
        prop_assert_eq!(with, run(&s, &ops, true));
    }
}
