//! Fuzz target: the circuit breaker fed arbitrary event sequences.
//!
//! The input is a settings block and a list of operations (acquire, report a
//! held permit as success or failure, tick, disable, force open, reset), each
//! carrying a non-negative time step, so time never goes backwards. A
//! reference model written from the documented rules of `warden::breaker`
//! runs beside the breaker and every answer is checked against it:
//! - trials in flight never exceed `half_open_max_trials`;
//! - `status()` is pure (same answer twice, state unchanged, even when asked
//!   about a far later time);
//! - closed → open only on the `failure_threshold`-th consecutive counted failure;
//! - half-open → closed only on the `success_threshold`-th counted trial success;
//! - open rejects until `reopens_at`, whose distance from `opened_at` lies
//!   between `open_timeout` and `max_open_timeout`;
//! - a permit is counted only in the state (and lease) that issued it.
//!
//! Not covered here: the breaker's serialized forms (unit tests snapshot them).

use std::time::Duration;

use arbitrary::Arbitrary;
use warden::breaker::{
    BreakerSettings, BreakerStatus, CircuitBreaker, CircuitState, Permit, PermitKind, Rejected,
    Report, TRANSITION_LOG_CAPACITY,
};
use warden::time::Moment;

/// Settings in small ranges, so that thresholds and timeouts are actually reached.
#[derive(Arbitrary, Debug)]
struct SmallSettings {
    failure_threshold: u8,
    open_timeout_ms: u16,
    success_threshold: u8,
    half_open_max_trials: u8,
    trial_lease_ms: u16,
    backoff_tenths: u8,
    max_open_extra_ms: u16,
}

impl SmallSettings {
    fn build(&self) -> BreakerSettings {
        let open_timeout = Duration::from_millis(u64::from(self.open_timeout_ms) + 1);
        BreakerSettings {
            failure_threshold: u32::from(self.failure_threshold % 8) + 1,
            open_timeout,
            success_threshold: u32::from(self.success_threshold % 6) + 1,
            half_open_max_trials: u32::from(self.half_open_max_trials % 5) + 1,
            trial_lease: Duration::from_millis(u64::from(self.trial_lease_ms) + 1),
            backoff_multiplier: 1.0 + f64::from(self.backoff_tenths % 40) / 10.0,
            max_open_timeout: open_timeout
                + Duration::from_millis(u64::from(self.max_open_extra_ms) * 4),
        }
    }
}

/// Any settings at all, including invalid ones and extreme durations.
#[derive(Arbitrary, Debug)]
struct RawSettings {
    failure_threshold: u32,
    open_timeout: (u64, u32),
    success_threshold: u32,
    half_open_max_trials: u32,
    trial_lease: (u64, u32),
    backoff_multiplier: f64,
    max_open_timeout: (u64, u32),
}

fn duration((secs, nanos): (u64, u32)) -> Duration {
    Duration::new(secs, nanos % 1_000_000_000)
}

impl RawSettings {
    fn build(&self) -> BreakerSettings {
        BreakerSettings {
            failure_threshold: self.failure_threshold,
            open_timeout: duration(self.open_timeout),
            success_threshold: self.success_threshold,
            half_open_max_trials: self.half_open_max_trials,
            trial_lease: duration(self.trial_lease),
            backoff_multiplier: self.backoff_multiplier,
            max_open_timeout: duration(self.max_open_timeout),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Settings {
    Small(SmallSettings),
    Raw(RawSettings),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Acquire {
        dt_ms: u16,
    },
    Success {
        which: u8,
        dt_ms: u16,
    },
    Failure {
        which: u8,
        dt_ms: u16,
    },
    Tick {
        dt_ms: u16,
    },
    Disable {
        dt_ms: u16,
    },
    ForceOpen {
        dt_ms: u16,
    },
    Reset {
        dt_ms: u16,
    },
    /// A long quiet period.
    Leap {
        dt_ms: u32,
    },
}

impl Op {
    fn dt_ms(&self) -> u64 {
        match *self {
            Op::Acquire { dt_ms }
            | Op::Success { dt_ms, .. }
            | Op::Failure { dt_ms, .. }
            | Op::Tick { dt_ms }
            | Op::Disable { dt_ms }
            | Op::ForceOpen { dt_ms }
            | Op::Reset { dt_ms } => u64::from(dt_ms),
            Op::Leap { dt_ms } => u64::from(dt_ms),
        }
    }
}

#[derive(Arbitrary, Debug)]
pub struct Input {
    settings: Settings,
    ops: Vec<Op>,
}

/// A permit the harness holds, with the model's epoch (number of transitions
/// before it was issued).
struct Held {
    permit: Permit,
    epoch: u64,
}

/// The reference model: what the documented rules say the breaker must hold.
struct Model {
    settings: BreakerSettings,
    /// Bumped on every transition, like the breaker's permit generation.
    epoch: u64,
    consecutive_failures: u32,
    half_open_successes: u32,
    trip_count: u64,
    last_permit_id: Option<u64>,
}

impl Model {
    fn lease_expired(&self, held: &Held, now: Moment) -> bool {
        held.permit.issued_at() + self.settings.trial_lease <= now
    }

    fn trials_in_flight(&self, held: &[Held], now: Moment) -> u32 {
        held.iter()
            .filter(|h| {
                h.epoch == self.epoch
                    && h.permit.kind() == PermitKind::Trial
                    && !self.lease_expired(h, now)
            })
            .count() as u32
    }
}

fn check_status(b: &CircuitBreaker, model: &Model, held: &[Held], now: Moment) -> BreakerStatus {
    let s = &model.settings;
    let state = b.state();
    let st = b.status(now);
    // status() is pure: asking again, or about a far later time, changes nothing.
    let _ = b.status(now + Duration::from_secs(1_000_000));
    assert_eq!(b.state(), state, "status() changed the state");
    assert_eq!(b.status(now), st, "status() is not repeatable");
    assert_eq!(st.state, state);

    assert!(b.transitions().len() <= TRANSITION_LOG_CAPACITY);
    if let Some(last) = b.transitions().last() {
        assert_eq!(
            last.to, state,
            "the log's last transition ends in the current state"
        );
        assert!(last.at <= now);
    }
    assert!(st.trials_in_flight <= s.half_open_max_trials);
    assert_eq!(st.trip_count, model.trip_count);
    let open_ms = Moment::ZERO + s.open_timeout;
    let max_ms = Moment::ZERO + s.max_open_timeout;
    assert!(
        st.current_open_timeout_ms >= open_ms.as_millis()
            && st.current_open_timeout_ms <= max_ms.as_millis(),
        "current open time {} ms outside [{}, {}]",
        st.current_open_timeout_ms,
        open_ms.as_millis(),
        max_ms.as_millis()
    );

    match state {
        CircuitState::Closed => {
            assert!(st.consecutive_failures < s.failure_threshold);
            assert_eq!(st.consecutive_failures, model.consecutive_failures);
        }
        CircuitState::HalfOpen => {
            assert!(st.half_open_successes < s.success_threshold);
            assert_eq!(st.half_open_successes, model.half_open_successes);
            assert_eq!(st.trials_in_flight, model.trials_in_flight(held, now));
        }
        CircuitState::Open => {
            let (opened_at, reopens_at) = (
                st.opened_at.expect("open has opened_at"),
                st.reopens_at.expect("open has reopens_at"),
            );
            assert!(opened_at <= now);
            assert!(
                reopens_at >= opened_at + s.open_timeout,
                "reopens before open_timeout: opened {opened_at:?}, reopens {reopens_at:?}"
            );
            assert!(reopens_at <= opened_at + s.max_open_timeout);
            assert_eq!(
                st.remaining_open_ms,
                Some(reopens_at.as_millis().saturating_sub(now.as_millis()))
            );
        }
        CircuitState::Disabled | CircuitState::ForcedOpen => {
            assert_eq!(st.trials_in_flight, 0);
        }
    }
    st
}

/// One fuzz input, checked: the body of the fuzz target, shared with
/// `tests/fuzz_regressions.rs`, which replays the saved inputs on stable.
pub fn check(input: Input) {
    let settings = match &input.settings {
        Settings::Small(s) => s.build(),
        Settings::Raw(r) => r.build(),
    };
    let mut b = match CircuitBreaker::new(settings.clone()) {
        Ok(b) => b,
        Err(e) => {
            // Compared as text: the error may carry a NaN multiplier.
            let validated = settings.validate().map_err(|v| format!("{v:?}"));
            assert_eq!(validated, Err(format!("{e:?}")));
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let mut model = Model {
        settings,
        epoch: 0,
        consecutive_failures: 0,
        half_open_successes: 0,
        trip_count: 0,
        last_permit_id: None,
    };
    let mut held: Vec<Held> = Vec::new();
    let mut now = Moment::ZERO;

    for op in &input.ops {
        now = now + Duration::from_millis(op.dt_ms());
        let before = check_status(&b, &model, &held, now);
        let s = model.settings.clone();
        let mut report = None;

        match op {
            Op::Acquire { .. } => {
                let in_flight = model.trials_in_flight(&held, now);
                let result = b.try_acquire(now);
                match (&before.state, &result) {
                    (CircuitState::Closed, Ok(p)) => assert_eq!(p.kind(), PermitKind::Normal),
                    (CircuitState::Disabled, Ok(p)) => assert_eq!(p.kind(), PermitKind::Bypass),
                    (CircuitState::ForcedOpen, Err(Rejected::ForcedOpen)) => {}
                    (
                        CircuitState::Open,
                        Err(Rejected::Open {
                            reopens_at,
                            remaining_ms,
                        }),
                    ) => {
                        assert!(now < *reopens_at, "rejected at or after reopens_at");
                        assert_eq!(Some(*reopens_at), before.reopens_at);
                        assert_eq!(*remaining_ms, reopens_at.as_millis() - now.as_millis());
                    }
                    (CircuitState::Open, Ok(p)) => {
                        assert!(Some(now) >= before.reopens_at, "granted while still open");
                        assert_eq!(p.kind(), PermitKind::Trial);
                    }
                    (CircuitState::HalfOpen, Ok(p)) => {
                        assert!(
                            in_flight < s.half_open_max_trials,
                            "granted a trial beyond max"
                        );
                        assert_eq!(p.kind(), PermitKind::Trial);
                    }
                    (CircuitState::HalfOpen, Err(Rejected::TrialsBusy { max_trials })) => {
                        assert_eq!(
                            in_flight, s.half_open_max_trials,
                            "refused a free trial slot"
                        );
                        assert_eq!(*max_trials, s.half_open_max_trials);
                    }
                    (state, result) => panic!("acquire in {state:?} answered {result:?}"),
                }
                if let Err(e) = &result {
                    assert!(!e.to_string().is_empty());
                }
                if let Ok(permit) = result {
                    assert_eq!(permit.issued_at(), now);
                    if let Some(last) = model.last_permit_id {
                        assert!(permit.id() > last, "permit ids must increase");
                    }
                    model.last_permit_id = Some(permit.id());
                    if before.state == CircuitState::Open {
                        // This acquire moved open → half-open; the permit belongs to the new state.
                        model.epoch += 1;
                        model.half_open_successes = 0;
                    }
                    held.push(Held {
                        permit,
                        epoch: model.epoch,
                    });
                }
            }
            Op::Success { which, .. } | Op::Failure { which, .. } => {
                if held.is_empty() {
                    b.tick(now);
                } else {
                    let h = held.swap_remove(usize::from(*which) % held.len());
                    let current = h.epoch == model.epoch;
                    let countable = match before.state {
                        CircuitState::Closed => current && h.permit.kind() == PermitKind::Normal,
                        CircuitState::HalfOpen => {
                            current
                                && h.permit.kind() == PermitKind::Trial
                                && !model.lease_expired(&h, now)
                        }
                        _ => false,
                    };
                    let success = matches!(op, Op::Success { .. });
                    let r = if success {
                        b.on_success(h.permit, now)
                    } else {
                        b.on_failure(h.permit, now)
                    };
                    let expected = match before.state {
                        CircuitState::Disabled => Report::Ignored,
                        _ if countable => Report::Counted,
                        _ => Report::Stale,
                    };
                    assert_eq!(r, expected, "report in {:?}", before.state);
                    report = Some((success, r));
                }
            }
            Op::Tick { .. } | Op::Leap { .. } => b.tick(now),
            Op::Disable { .. } => b.disable(now),
            Op::ForceOpen { .. } => b.force_open(now),
            Op::Reset { .. } => b.reset(now),
        }

        let after_state = b.state();
        let from = before.state;
        let counted = |want_success: bool| report == Some((want_success, Report::Counted));

        // Where each transition may come from, and what the model learns.
        match op {
            Op::Disable { .. } => assert_eq!(after_state, CircuitState::Disabled),
            Op::ForceOpen { .. } => assert_eq!(after_state, CircuitState::ForcedOpen),
            Op::Reset { .. } => assert_eq!(after_state, CircuitState::Closed),
            _ => {}
        }
        if (matches!(op, Op::Reset { .. }) || after_state != from)
            && (!matches!(op, Op::Acquire { .. }) || from != CircuitState::Open)
        {
            model.epoch += 1;
        }
        match (from, after_state) {
            (CircuitState::Closed, CircuitState::Closed) => {
                if matches!(op, Op::Reset { .. }) || counted(true) {
                    model.consecutive_failures = 0;
                } else if counted(false) {
                    model.consecutive_failures += 1;
                    assert!(model.consecutive_failures < s.failure_threshold);
                }
            }
            (CircuitState::Closed, CircuitState::Open) => {
                assert!(counted(false), "closed → open without a counted failure");
                assert_eq!(
                    model.consecutive_failures + 1,
                    s.failure_threshold,
                    "closed → open before failure_threshold consecutive failures"
                );
                model.trip_count += 1;
                let st = b.status(now);
                assert_eq!(st.opened_at, Some(now));
                assert_eq!(st.reopens_at, Some(now + s.open_timeout));
            }
            (CircuitState::HalfOpen, CircuitState::Open) => {
                assert!(
                    counted(false),
                    "half-open → open without a counted trial failure"
                );
                model.trip_count += 1;
                assert_eq!(b.status(now).opened_at, Some(now));
            }
            (CircuitState::HalfOpen, CircuitState::HalfOpen) => {
                if counted(true) {
                    model.half_open_successes += 1;
                }
                assert!(!counted(false), "a counted trial failure must reopen");
            }
            (CircuitState::HalfOpen, CircuitState::Closed) => {
                if !matches!(op, Op::Reset { .. }) {
                    assert!(
                        counted(true),
                        "half-open → closed without a counted success"
                    );
                    assert_eq!(
                        model.half_open_successes + 1,
                        s.success_threshold,
                        "half-open → closed before success_threshold successes"
                    );
                }
                model.consecutive_failures = 0;
                let st = b.status(now);
                assert_eq!(
                    st.current_open_timeout_ms,
                    (Moment::ZERO + s.open_timeout).as_millis(),
                    "closing restores the base open time"
                );
            }
            (CircuitState::Open, CircuitState::HalfOpen) => {
                assert!(Some(now) >= before.reopens_at, "left open early");
                model.half_open_successes = 0;
            }
            (CircuitState::Open, CircuitState::Open) => {
                assert!(
                    Some(now) < before.reopens_at,
                    "stayed open after reopens_at"
                );
                assert_eq!(b.status(now).reopens_at, before.reopens_at);
            }
            (_, CircuitState::Closed) => {
                assert!(
                    matches!(op, Op::Reset { .. }),
                    "{from:?} → closed by {op:?}"
                );
                model.consecutive_failures = 0;
            }
            (_, CircuitState::Open | CircuitState::HalfOpen) => {
                panic!("{from:?} → {after_state:?} by {op:?}")
            }
            (_, CircuitState::Disabled | CircuitState::ForcedOpen) => {
                if after_state != from {
                    assert!(
                        matches!(op, Op::Disable { .. } | Op::ForceOpen { .. }),
                        "{from:?} → {after_state:?} by {op:?}"
                    );
                }
            }
        }
        if matches!(op, Op::Reset { .. }) {
            let st = b.status(now);
            assert_eq!(st.consecutive_failures, 0);
            assert_eq!(
                st.current_open_timeout_ms,
                (Moment::ZERO + s.open_timeout).as_millis()
            );
        }
        check_status(&b, &model, &held, now);
    }
}
