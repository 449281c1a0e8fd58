//! Fuzz target: the graded recovery strategy fed arbitrary health observations.
//!
//! The input is a settings block and a list of observations (a status and a
//! time step that may also go backwards, which the strategy must treat as "at
//! the latest time seen") with occasional operator resets. A reference model
//! written from the rules in `warden::escalation`'s module doc predicts every
//! decision, and these invariants are asserted on their own as well:
//! - never two actions within `min_recovery_interval` (measured on the
//!   strategy's own time line, the latest time seen);
//! - never a skipped rung: `restart_service` only from `clear_connections` or
//!   above, `emergency_stop` only from `restart_service`;
//! - only a critical observation restarts or stops anything;
//! - `emergency_stop` is absorbing: every later observation decides `none`
//!   (cause `latched`) until `reset`;
//! - cooldown steps down at most one rung per full `cooldown` of healthy time;
//! - `status()` is pure and the remembered window stays bounded.

use std::collections::VecDeque;
use std::time::Duration;

use arbitrary::Arbitrary;
use warden::escalation::{
    DecisionCause, GradedRecoveryStrategy, MAX_REMEMBERED_SIGNALS, RecoveryAction, StrategySettings,
};
use warden::health::HealthStatus;
use warden::time::Moment;

#[derive(Arbitrary, Debug)]
struct SmallSettings {
    warning_threshold: u8,
    critical_threshold: u8,
    failure_window_ms: u16,
    min_recovery_interval_ms: u16,
    cooldown_ms: u16,
}

impl SmallSettings {
    fn build(&self) -> StrategySettings {
        StrategySettings {
            warning_threshold: u32::from(self.warning_threshold % 6) + 1,
            critical_threshold: u32::from(self.critical_threshold % 4) + 1,
            failure_window: Duration::from_millis(u64::from(self.failure_window_ms) + 1),
            min_recovery_interval: Duration::from_millis(u64::from(self.min_recovery_interval_ms)),
            cooldown: Duration::from_millis(u64::from(self.cooldown_ms) + 1),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct RawSettings {
    warning_threshold: u32,
    critical_threshold: u32,
    failure_window: (u64, u32),
    min_recovery_interval: (u64, u32),
    cooldown: (u64, u32),
}

fn duration((secs, nanos): (u64, u32)) -> Duration {
    Duration::new(secs, nanos % 1_000_000_000)
}

#[derive(Arbitrary, Debug)]
enum Settings {
    Small(SmallSettings),
    Raw(RawSettings),
}

impl Settings {
    fn build(&self) -> StrategySettings {
        match self {
            Settings::Small(s) => s.build(),
            Settings::Raw(r) => StrategySettings {
                warning_threshold: r.warning_threshold,
                critical_threshold: r.critical_threshold,
                failure_window: duration(r.failure_window),
                min_recovery_interval: duration(r.min_recovery_interval),
                cooldown: duration(r.cooldown),
            },
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Status {
    Healthy,
    Warning,
    Critical,
    Unknown,
}

impl From<Status> for HealthStatus {
    fn from(s: Status) -> HealthStatus {
        match s {
            Status::Healthy => HealthStatus::Healthy,
            Status::Warning => HealthStatus::Warning,
            Status::Critical => HealthStatus::Critical,
            Status::Unknown => HealthStatus::Unknown,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Observe {
        status: Status,
        dt_ms: u16,
    },
    /// An observation stamped earlier than the previous one (clock skew).
    ObserveBackwards {
        status: Status,
        back_ms: u16,
    },
    /// A long gap, then an observation.
    ObserveAfterLeap {
        status: Status,
        dt_ms: u32,
    },
    Reset,
}

#[derive(Arbitrary, Debug)]
pub struct Input {
    settings: Settings,
    ops: Vec<Op>,
}

/// The documented rules, restated independently of the state machine.
struct Model {
    settings: StrategySettings,
    rung: RecoveryAction,
    signals: VecDeque<(HealthStatus, Moment)>,
    last_action: Option<(RecoveryAction, Moment)>,
    healthy_since: Option<Moment>,
    cooled_steps: u64,
    last_seen: Option<Moment>,
}

impl Model {
    fn reset(&mut self) {
        self.rung = RecoveryAction::None;
        self.signals.clear();
        self.last_action = None;
        self.healthy_since = None;
        self.cooled_steps = 0;
    }

    /// What the rules say one observation decides: (action, cause, rung after).
    fn observe(&mut self, status: HealthStatus, at: Moment) -> (RecoveryAction, DecisionCause) {
        let at = self.last_seen.map_or(at, |seen| seen.max(at));
        self.last_seen = Some(at);
        if self.rung == RecoveryAction::EmergencyStop {
            return (RecoveryAction::None, DecisionCause::Latched);
        }
        let window = self.settings.failure_window;
        self.signals.retain(|&(_, t)| at - t < window);
        if status == HealthStatus::Healthy {
            let since = *self.healthy_since.get_or_insert(at);
            let cooldown_ms = (Moment::ZERO + self.settings.cooldown).as_millis().max(1);
            let due = (at.as_millis() - since.as_millis()) / cooldown_ms;
            let before = self.rung;
            while self.cooled_steps < due && self.rung > RecoveryAction::None {
                self.rung = self.rung.previous_rung();
                self.cooled_steps += 1;
            }
            self.cooled_steps = self.cooled_steps.max(due);
            return if self.rung == before {
                (RecoveryAction::None, DecisionCause::Healthy)
            } else {
                (
                    RecoveryAction::None,
                    DecisionCause::CooledDown { to: self.rung },
                )
            };
        }
        self.healthy_since = None;
        self.cooled_steps = 0;
        if self.signals.len() == MAX_REMEMBERED_SIGNALS {
            self.signals.pop_front();
        }
        self.signals.push_back((status, at));
        let degraded = self.signals.len() as u32;
        let criticals = self
            .signals
            .iter()
            .filter(|(s, _)| *s == HealthStatus::Critical)
            .count() as u32;
        let (action, cause) =
            if status == HealthStatus::Critical && criticals >= self.settings.critical_threshold {
                (
                    self.rung.next_rung().max(RecoveryAction::ClearConnections),
                    DecisionCause::CriticalThreshold { count: criticals },
                )
            } else if degraded >= self.settings.warning_threshold {
                (
                    self.rung.next_rung().min(RecoveryAction::ClearConnections),
                    DecisionCause::WarningThreshold { count: degraded },
                )
            } else {
                return (RecoveryAction::None, DecisionCause::BelowThreshold);
            };
        if let Some((_, last_at)) = self.last_action {
            let allowed_at = last_at + self.settings.min_recovery_interval;
            if at < allowed_at {
                return (
                    RecoveryAction::None,
                    DecisionCause::RateLimited { allowed_at },
                );
            }
        }
        self.last_action = Some((action, at));
        if matches!(cause, DecisionCause::CriticalThreshold { .. }) {
            self.signals.clear();
        } else {
            // A warning action keeps the criticals (they must still add up).
            self.signals.retain(|(s, _)| *s == HealthStatus::Critical);
        }
        self.rung = self.rung.max(action);
        (action, cause)
    }
}

/// One fuzz input, checked: the body of the fuzz target, shared with
/// `tests/fuzz_regressions.rs`, which replays the saved inputs on stable.
pub fn check(input: Input) {
    let settings = input.settings.build();
    let mut strategy = match GradedRecoveryStrategy::new(settings.clone()) {
        Ok(s) => s,
        Err(e) => {
            assert_eq!(settings.validate(), Err(e.clone()));
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let mut model = Model {
        settings: settings.clone(),
        rung: RecoveryAction::None,
        signals: VecDeque::new(),
        last_action: None,
        healthy_since: None,
        cooled_steps: 0,
        last_seen: None,
    };
    let mut now = Moment::ZERO;
    // Invariant bookkeeping kept apart from the model.
    let mut latest_seen = Moment::ZERO;
    let mut last_action_at: Option<Moment> = None;
    let mut healthy_run: Option<(Moment, RecoveryAction)> = None;

    for op in &input.ops {
        let (status, at) = match *op {
            Op::Reset => {
                strategy.reset();
                model.reset();
                last_action_at = None;
                healthy_run = None;
                assert_eq!(strategy.rung(), RecoveryAction::None);
                let st = strategy.status();
                assert!(!st.latched && st.last_action.is_none() && st.healthy_since.is_none());
                continue;
            }
            Op::Observe { status, dt_ms } => {
                now = now + Duration::from_millis(u64::from(dt_ms));
                (status, now)
            }
            Op::ObserveAfterLeap { status, dt_ms } => {
                now = now + Duration::from_millis(u64::from(dt_ms));
                (status, now)
            }
            Op::ObserveBackwards { status, back_ms } => {
                (status, now - Duration::from_millis(u64::from(back_ms)))
            }
        };
        let status = HealthStatus::from(status);
        let rung_before = strategy.rung();
        let status_before = strategy.status();
        assert_eq!(
            strategy.status(),
            status_before,
            "status() is not repeatable"
        );
        assert_eq!(status_before.rung, rung_before);

        let decision = strategy.observe(status, at);
        let expected = model.observe(status, at);
        assert_eq!(
            (decision.action, decision.cause),
            expected,
            "{status:?} at {at:?} on rung {rung_before:?}"
        );
        let rung_after = strategy.rung();
        assert_eq!(rung_after, model.rung, "rung after {status:?} at {at:?}");

        // The invariants, stated on their own.
        latest_seen = latest_seen.max(at);
        if rung_before == RecoveryAction::EmergencyStop {
            assert_eq!(
                decision.action,
                RecoveryAction::None,
                "emergency_stop is absorbing"
            );
            assert_eq!(decision.cause, DecisionCause::Latched);
            assert_eq!(rung_after, RecoveryAction::EmergencyStop);
        }
        if decision.action != RecoveryAction::None {
            if let Some(last) = last_action_at {
                // Time is whole milliseconds (a sub-millisecond interval floors).
                assert!(
                    latest_seen >= last + settings.min_recovery_interval,
                    "two actions within min_recovery_interval: {last:?} then {latest_seen:?}"
                );
            }
            last_action_at = Some(latest_seen);
            assert!(
                decision.action
                    <= rung_before
                        .next_rung()
                        .max(RecoveryAction::ClearConnections),
                "skipped a rung: {rung_before:?} → {:?}",
                decision.action
            );
            if decision.action >= RecoveryAction::RestartService {
                assert_eq!(
                    status,
                    HealthStatus::Critical,
                    "only critical restarts or stops"
                );
            }
            assert_eq!(rung_after, rung_before.max(decision.action));
            let st = strategy.status();
            assert_eq!(
                st.warnings_in_window + st.unknowns_in_window,
                0,
                "an action consumes the window"
            );
            if matches!(decision.cause, DecisionCause::CriticalThreshold { .. }) {
                assert_eq!(
                    st.criticals_in_window, 0,
                    "a critical action consumes the criticals"
                );
            }
        }
        if status == HealthStatus::Healthy {
            assert_eq!(decision.action, RecoveryAction::None);
            assert!(rung_after <= rung_before);
            if rung_before != RecoveryAction::EmergencyStop {
                let (since, start_rung) = *healthy_run.get_or_insert((latest_seen, rung_before));
                let cooldown_ms = (Moment::ZERO + settings.cooldown).as_millis().max(1);
                let allowed = (latest_seen.as_millis() - since.as_millis()) / cooldown_ms;
                let mut floor = start_rung;
                for _ in 0..allowed.min(4) {
                    floor = floor.previous_rung();
                }
                assert!(
                    rung_after >= floor,
                    "cooled down faster than one rung per cooldown"
                );
            }
        } else {
            healthy_run = None;
            assert!(
                rung_after >= rung_before,
                "a non-healthy observation lowered the rung"
            );
        }

        let st = strategy.status();
        assert_eq!(strategy.status(), st, "status() is not repeatable");
        assert_eq!(st.rung, rung_after);
        assert_eq!(st.latched, rung_after == RecoveryAction::EmergencyStop);
        assert_eq!(st.last_observed_at, Some(latest_seen));
        let remembered = st.warnings_in_window + st.unknowns_in_window + st.criticals_in_window;
        assert!(remembered as usize <= MAX_REMEMBERED_SIGNALS);
        if rung_after != RecoveryAction::EmergencyStop {
            assert_eq!(remembered as usize, model.signals.len());
        }
    }
}
