//! Graded recovery escalation: from a stream of health statuses (each with its
//! time) decide which [`RecoveryAction`] the recovery manager should take.
//!
//! This is a pure statig state machine. It decides; it does not act, does not
//! time out actions and does not guard against recovery loops (that is the
//! [`crate::breaker`]'s job). It never reads a clock and never invents
//! criticality: only a `critical` status from a checker can move it up the
//! critical ladder, and idle time is not a status.
//!
//! ```text
//!   steady ──▶ warned ──▶ cleared ──▶ restarted ──▶ stopped (latched until reset())
//!  (none)  (log_warning) (clear_connections) (restart_service) (emergency_stop)
//! ```
//! The state is the *rung*: the most drastic action taken since the ladder was
//! last at the bottom.
//!
//! Rules (each parameter of [`StrategySettings`] has a test that fails without it):
//! - **Window.** Non-healthy observations are remembered for `failure_window`;
//!   older ones are forgotten. Counting is over the window only.
//! - **Warning trigger.** `warning`, `unknown` and `critical` observations all count
//!   as *degraded*. When a degraded observation brings the degraded count to
//!   `warning_threshold`, the warning ladder fires: bottom → `log_warning`,
//!   `log_warning` → `clear_connections`; from `clear_connections` or higher it
//!   repeats `clear_connections` (warnings never restart or stop anything). So a
//!   WARNING-only process is recovered (the original never did).
//! - **Critical trigger.** When a `critical` observation brings the critical count
//!   to `critical_threshold`, the critical ladder fires: one rung up from the
//!   current rung, and at least `clear_connections` (bottom or `log_warning` →
//!   `clear_connections` → `restart_service` → `emergency_stop`). It never skips
//!   a rung upward.
//! - **Unknown** counts toward the warning trigger only: a checker that cannot
//!   see is a reason to look (log, then clear), never alone a reason to restart
//!   or stop.
//! - **Consumption.** When an action is taken, the remembered observations are
//!   cleared: the next rung needs a fresh `warning_threshold` / `critical_threshold`
//!   observations. That is what gives `critical_threshold` an effect on every rung.
//!   A warning action keeps the criticals in the window, so that criticals still
//!   add up to the critical ladder when `warning_threshold` is the lower one.
//! - **Rate limit.** No action other than `none` within `min_recovery_interval`
//!   after the previous action, `log_warning` included (it starts the ladder, and
//!   counting it means log → clear can never happen back to back). A trigger that
//!   is rate-limited is not consumed: the next qualifying observation after the
//!   interval acts.
//! - **Cooldown.** Each full `cooldown` of uninterrupted healthy observations
//!   steps the ladder down **one** rung (not to the bottom: a process that
//!   needed a restart recently gets less benefit of the doubt than a fresh one).
//!   Any non-healthy observation restarts the cooldown. Cooldown never leaves
//!   `stopped`.
//! - **Latch.** `emergency_stop` is absorbing: every later observation decides
//!   `none` until [`GradedRecoveryStrategy::reset`], which returns to a fresh
//!   bottom (window, rate limit and cooldown forgotten).
//! - Observations whose time goes backwards are treated as happening at the
//!   latest time seen, so a decision never depends on clock skew.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use statig::prelude::*;

use crate::health::HealthStatus;
use crate::time::Moment;

/// Bound on remembered non-healthy observations. Thresholds above it could
/// never be met, so [`StrategySettings::validate`] refuses them.
pub const MAX_REMEMBERED_SIGNALS: usize = 1024;

/// What the recovery manager should do, from least to most drastic.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryAction {
    None,
    LogWarning,
    ClearConnections,
    RestartService,
    EmergencyStop,
}

impl RecoveryAction {
    /// The snake_case name used in JSON, logs and recovery events.
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryAction::None => "none",
            RecoveryAction::LogWarning => "log_warning",
            RecoveryAction::ClearConnections => "clear_connections",
            RecoveryAction::RestartService => "restart_service",
            RecoveryAction::EmergencyStop => "emergency_stop",
        }
    }

    /// The next rung up (saturating at `emergency_stop`).
    pub fn next_rung(self) -> RecoveryAction {
        match self {
            RecoveryAction::None => RecoveryAction::LogWarning,
            RecoveryAction::LogWarning => RecoveryAction::ClearConnections,
            RecoveryAction::ClearConnections => RecoveryAction::RestartService,
            RecoveryAction::RestartService | RecoveryAction::EmergencyStop => {
                RecoveryAction::EmergencyStop
            }
        }
    }

    /// The next rung down (saturating at `none`).
    pub fn previous_rung(self) -> RecoveryAction {
        match self {
            RecoveryAction::None | RecoveryAction::LogWarning => RecoveryAction::None,
            RecoveryAction::ClearConnections => RecoveryAction::LogWarning,
            RecoveryAction::RestartService => RecoveryAction::ClearConnections,
            RecoveryAction::EmergencyStop => RecoveryAction::RestartService,
        }
    }
}

impl fmt::Display for RecoveryAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The strategy's parameters; plain fields for the configuration layer.
#[derive(Clone, Debug, PartialEq)]
pub struct StrategySettings {
    /// Degraded observations within the window that fire the warning ladder (seed: 2).
    pub warning_threshold: u32,
    /// Critical observations within the window that fire the critical ladder (seed: 1).
    pub critical_threshold: u32,
    /// How long an observation counts (seed `failure_window_seconds`: 300 s).
    pub failure_window: Duration,
    /// Minimum time between two actions (seed: 60 s).
    pub min_recovery_interval: Duration,
    /// Uninterrupted healthy time that steps the ladder down one rung (default: the window).
    pub cooldown: Duration,
}

impl Default for StrategySettings {
    fn default() -> Self {
        StrategySettings {
            warning_threshold: 2,
            critical_threshold: 1,
            failure_window: Duration::from_secs(300),
            min_recovery_interval: Duration::from_secs(60),
            cooldown: Duration::from_secs(300),
        }
    }
}

/// Why a [`StrategySettings`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StrategySettingsError {
    #[error("recovery strategy: {field} must be between 1 and {max}, got {value}")]
    ThresholdOutOfRange {
        field: &'static str,
        value: u32,
        max: usize,
    },
    #[error("recovery strategy: {field} must be longer than zero")]
    ZeroDuration { field: &'static str },
}

impl StrategySettings {
    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), StrategySettingsError> {
        for (field, value) in [
            ("warning_threshold", self.warning_threshold),
            ("critical_threshold", self.critical_threshold),
        ] {
            if value == 0 || value as usize > MAX_REMEMBERED_SIGNALS {
                return Err(StrategySettingsError::ThresholdOutOfRange {
                    field,
                    value,
                    max: MAX_REMEMBERED_SIGNALS,
                });
            }
        }
        for (field, value) in [
            ("failure_window", self.failure_window),
            ("cooldown", self.cooldown),
        ] {
            if value.is_zero() {
                return Err(StrategySettingsError::ZeroDuration { field });
            }
        }
        Ok(())
    }
}

/// Why the strategy decided what it decided (for logs and recovery events).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecisionCause {
    /// A healthy observation.
    Healthy,
    /// A healthy observation completed a cooldown: the ladder stepped down to `to`.
    CooledDown { to: RecoveryAction },
    /// Degraded, but no threshold reached within the window.
    BelowThreshold,
    /// `count` degraded observations within the window reached `warning_threshold`.
    WarningThreshold { count: u32 },
    /// `count` critical observations within the window reached `critical_threshold`.
    CriticalThreshold { count: u32 },
    /// A threshold was reached but the previous action was too recent.
    RateLimited { allowed_at: Moment },
    /// `emergency_stop` was decided earlier; only `reset` leaves it.
    Latched,
}

/// One decision: the action and why.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub action: RecoveryAction,
    pub cause: DecisionCause,
}

/// A read-only snapshot for `/diagnostics`. Counts are as of the latest observation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StrategyStatus {
    /// The most drastic action since the ladder was last at the bottom.
    pub rung: RecoveryAction,
    /// True after `emergency_stop`, until `reset`.
    pub latched: bool,
    pub warnings_in_window: u32,
    pub unknowns_in_window: u32,
    pub criticals_in_window: u32,
    pub last_action: Option<RecoveryAction>,
    pub last_action_at: Option<Moment>,
    /// When an action may next be taken (the rate limit), if one was taken.
    pub next_action_allowed_at: Option<Moment>,
    /// Start of the current uninterrupted healthy run, if any.
    pub healthy_since: Option<Moment>,
    pub last_observed_at: Option<Moment>,
}

/// Inputs of the machine.
#[derive(Copy, Clone, Debug)]
pub(crate) enum Event {
    Observe { status: HealthStatus, at: Moment },
    Reset,
}

/// Shared storage: settings and the memory that outlives a rung.
#[derive(Clone, Debug)]
pub(crate) struct StrategyCore {
    settings: StrategySettings,
    /// Non-healthy observations within the window, oldest first.
    signals: VecDeque<(HealthStatus, Moment)>,
    last_action: Option<(RecoveryAction, Moment)>,
    healthy_since: Option<Moment>,
    /// Rungs already stepped down during the current healthy run.
    cooled_steps: u64,
    last_seen: Option<Moment>,
}

#[state_machine(
    initial = "RungState::steady()",
    state(name = "RungState", derive(Debug, Clone, PartialEq, Eq)),
    superstate(name = "RungSuperstate", derive(Debug)),
    visibility = "pub(crate)"
)]
impl StrategyCore {
    /// Bottom of the ladder.
    #[state(superstate = "resettable")]
    fn steady(&mut self, event: &Event, context: &mut Decision) -> Outcome<RungState> {
        self.climb(RecoveryAction::None, event, context)
    }

    /// `log_warning` was the most drastic recent action.
    #[state(superstate = "resettable")]
    fn warned(&mut self, event: &Event, context: &mut Decision) -> Outcome<RungState> {
        self.climb(RecoveryAction::LogWarning, event, context)
    }

    /// `clear_connections` was the most drastic recent action.
    #[state(superstate = "resettable")]
    fn cleared(&mut self, event: &Event, context: &mut Decision) -> Outcome<RungState> {
        self.climb(RecoveryAction::ClearConnections, event, context)
    }

    /// `restart_service` was the most drastic recent action.
    #[state(superstate = "resettable")]
    fn restarted(&mut self, event: &Event, context: &mut Decision) -> Outcome<RungState> {
        self.climb(RecoveryAction::RestartService, event, context)
    }

    /// `emergency_stop` was decided: latched, every observation decides `none`.
    #[state(superstate = "resettable")]
    fn stopped(&mut self, event: &Event, context: &mut Decision) -> Outcome<RungState> {
        match event {
            Event::Observe { at, .. } => {
                self.last_seen = Some(self.last_seen.map_or(*at, |seen| seen.max(*at)));
                *context = Decision {
                    action: RecoveryAction::None,
                    cause: DecisionCause::Latched,
                };
                Handled
            }
            Event::Reset => Super,
        }
    }

    /// `reset` leaves any rung for a fresh bottom.
    #[superstate]
    fn resettable(&mut self, event: &Event) -> Outcome<RungState> {
        match event {
            Event::Reset => {
                self.signals.clear();
                self.last_action = None;
                self.healthy_since = None;
                self.cooled_steps = 0;
                Transition(RungState::steady())
            }
            Event::Observe { .. } => Handled,
        }
    }
}

impl RungState {
    fn rung(&self) -> RecoveryAction {
        match self {
            RungState::Steady { .. } => RecoveryAction::None,
            RungState::Warned { .. } => RecoveryAction::LogWarning,
            RungState::Cleared { .. } => RecoveryAction::ClearConnections,
            RungState::Restarted { .. } => RecoveryAction::RestartService,
            RungState::Stopped { .. } => RecoveryAction::EmergencyStop,
        }
    }

    fn for_rung(rung: RecoveryAction) -> RungState {
        match rung {
            RecoveryAction::None => RungState::steady(),
            RecoveryAction::LogWarning => RungState::warned(),
            RecoveryAction::ClearConnections => RungState::cleared(),
            RecoveryAction::RestartService => RungState::restarted(),
            RecoveryAction::EmergencyStop => RungState::stopped(),
        }
    }
}

impl StrategyCore {
    /// The shared handler of every non-latched rung.
    fn climb(
        &mut self,
        rung: RecoveryAction,
        event: &Event,
        out: &mut Decision,
    ) -> Outcome<RungState> {
        let Event::Observe { status, at } = *event else {
            return Super;
        };
        let at = self.advance_to(at);
        if status == HealthStatus::Healthy {
            return self.cool_down(rung, at, out);
        }
        self.remember(status, at);
        let Some((action, cause)) = self.threshold_crossed(rung, status) else {
            *out = Decision {
                action: RecoveryAction::None,
                cause: DecisionCause::BelowThreshold,
            };
            return Handled;
        };
        debug_assert!(
            action > RecoveryAction::None
                && action <= rung.next_rung().max(RecoveryAction::ClearConnections)
        );
        if let Some(allowed_at) = self.rate_limited_until(at) {
            *out = Decision {
                action: RecoveryAction::None,
                cause: DecisionCause::RateLimited { allowed_at },
            };
            return Handled;
        }
        self.act(action, &cause, at);
        *out = Decision { action, cause };
        let new_rung = rung.max(action);
        if new_rung == rung {
            Handled
        } else {
            Transition(RungState::for_rung(new_rung))
        }
    }

    /// Time as seen by the strategy (it never goes back), with the signals
    /// older than the failure window forgotten.
    fn advance_to(&mut self, at: Moment) -> Moment {
        let at = self.last_seen.map_or(at, |seen| seen.max(at));
        self.last_seen = Some(at);
        let window = self.settings.failure_window;
        while let Some(&(_, t)) = self.signals.front() {
            if at.saturating_since(t) >= window {
                self.signals.pop_front();
            } else {
                break;
            }
        }
        at
    }

    /// Records a degraded observation (the oldest goes when the memory is
    /// full); ends any healthy streak.
    fn remember(&mut self, status: HealthStatus, at: Moment) {
        self.healthy_since = None;
        self.cooled_steps = 0;
        if self.signals.len() == MAX_REMEMBERED_SIGNALS {
            self.signals.pop_front();
        }
        self.signals.push_back((status, at));
    }

    /// The action the remembered signals call for from `rung`, and why:
    /// criticals climb past clear_connections, warnings up to it; `None`
    /// below both thresholds.
    fn threshold_crossed(
        &self,
        rung: RecoveryAction,
        status: HealthStatus,
    ) -> Option<(RecoveryAction, DecisionCause)> {
        let degraded = self.signals.len() as u32;
        let criticals = self.count(HealthStatus::Critical);
        if status == HealthStatus::Critical && criticals >= self.settings.critical_threshold {
            let next = rung.next_rung().max(RecoveryAction::ClearConnections);
            Some((next, DecisionCause::CriticalThreshold { count: criticals }))
        } else if degraded >= self.settings.warning_threshold {
            let next = rung.next_rung().min(RecoveryAction::ClearConnections);
            Some((next, DecisionCause::WarningThreshold { count: degraded }))
        } else {
            None
        }
    }

    /// When the last action was too recent to act at `at`: the instant
    /// acting is allowed again.
    fn rate_limited_until(&self, at: Moment) -> Option<Moment> {
        let (_, last_at) = self.last_action?;
        let allowed_at = last_at + self.settings.min_recovery_interval;
        (at < allowed_at).then_some(allowed_at)
    }

    /// Records `action` as taken at `at` and consumes the signals it acted on.
    fn act(&mut self, action: RecoveryAction, cause: &DecisionCause, at: Moment) {
        self.last_action = Some((action, at));
        if matches!(cause, DecisionCause::CriticalThreshold { .. }) {
            self.signals.clear();
        } else {
            // A warning action consumes what it acted on but keeps the
            // criticals: they must still add up to `critical_threshold`, or a
            // process that stays critical with warning_threshold below
            // critical_threshold would be cleared forever and never restarted
            // (found by the simulation's degraded scenario, seed 10).
            self.signals.retain(|(s, _)| *s == HealthStatus::Critical);
        }
    }

    fn cool_down(
        &mut self,
        rung: RecoveryAction,
        at: Moment,
        out: &mut Decision,
    ) -> Outcome<RungState> {
        let since = *self.healthy_since.get_or_insert(at);
        let cooldown_ms = u64::try_from(self.settings.cooldown.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let due_steps = at.saturating_since(since).as_millis() as u64 / cooldown_ms;
        let mut new_rung = rung;
        while self.cooled_steps < due_steps && new_rung > RecoveryAction::None {
            new_rung = new_rung.previous_rung();
            self.cooled_steps += 1;
        }
        // Once at the bottom, further healthy time has nothing left to undo.
        self.cooled_steps = self.cooled_steps.max(due_steps);
        if new_rung == rung {
            *out = Decision {
                action: RecoveryAction::None,
                cause: DecisionCause::Healthy,
            };
            Handled
        } else {
            *out = Decision {
                action: RecoveryAction::None,
                cause: DecisionCause::CooledDown { to: new_rung },
            };
            Transition(RungState::for_rung(new_rung))
        }
    }

    fn count(&self, status: HealthStatus) -> u32 {
        self.signals.iter().filter(|(s, _)| *s == status).count() as u32
    }
}

/// The graded recovery strategy of the seed, made explicit.
#[derive(Debug)]
pub struct GradedRecoveryStrategy {
    machine: statig::blocking::InitializedStateMachine<StrategyCore>,
}

impl Default for GradedRecoveryStrategy {
    fn default() -> Self {
        Self::build(StrategySettings::default())
    }
}

impl GradedRecoveryStrategy {
    pub fn new(settings: StrategySettings) -> Result<Self, StrategySettingsError> {
        settings.validate()?;
        Ok(Self::build(settings))
    }

    fn build(settings: StrategySettings) -> Self {
        let core = StrategyCore {
            settings,
            signals: VecDeque::new(),
            last_action: None,
            healthy_since: None,
            cooled_steps: 0,
            last_seen: None,
        };
        let machine = core
            .uninitialized_state_machine()
            .init_with_context(&mut Decision::none());
        GradedRecoveryStrategy { machine }
    }

    /// Feeds one health observation and returns what to do about it.
    pub fn observe(&mut self, status: HealthStatus, at: Moment) -> Decision {
        let mut decision = Decision::none();
        self.machine
            .handle_with_context(&Event::Observe { status, at }, &mut decision);
        decision
    }

    /// Operator: leave any rung (including the `emergency_stop` latch) for a fresh bottom.
    pub fn reset(&mut self) {
        self.machine
            .handle_with_context(&Event::Reset, &mut Decision::none());
    }

    pub fn settings(&self) -> &StrategySettings {
        &self.machine.inner().settings
    }

    /// The current rung (see the module doc).
    pub fn rung(&self) -> RecoveryAction {
        self.machine.state().rung()
    }

    /// A snapshot; never changes the strategy.
    pub fn status(&self) -> StrategyStatus {
        let core = self.machine.inner();
        let rung = self.rung();
        StrategyStatus {
            rung,
            latched: rung == RecoveryAction::EmergencyStop,
            warnings_in_window: core.count(HealthStatus::Warning),
            unknowns_in_window: core.count(HealthStatus::Unknown),
            criticals_in_window: core.count(HealthStatus::Critical),
            last_action: core.last_action.map(|(a, _)| a),
            last_action_at: core.last_action.map(|(_, t)| t),
            next_action_allowed_at: core
                .last_action
                .map(|(_, t)| t + core.settings.min_recovery_interval),
            healthy_since: core.healthy_since,
            last_observed_at: core.last_seen,
        }
    }
}

impl Decision {
    fn none() -> Decision {
        Decision {
            action: RecoveryAction::None,
            cause: DecisionCause::BelowThreshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::{Critical, Healthy, Unknown, Warning};
    use RecoveryAction as A;

    fn secs(s: u64) -> Moment {
        Moment::from_secs(s)
    }

    fn strategy(f: impl FnOnce(&mut StrategySettings)) -> GradedRecoveryStrategy {
        let mut s = StrategySettings::default();
        f(&mut s);
        GradedRecoveryStrategy::new(s).expect("valid settings")
    }

    /// Feeds `(status, second)` pairs and returns the actions decided.
    fn run(g: &mut GradedRecoveryStrategy, events: &[(HealthStatus, u64)]) -> Vec<RecoveryAction> {
        events
            .iter()
            .map(|&(st, t)| g.observe(st, secs(t)).action)
            .collect()
    }

    #[test]
    fn criticals_still_climb_when_the_warning_threshold_is_lower() {
        // Every critical also counts toward the warning trigger, which fires
        // first; the criticals it leaves in the window must still reach
        // critical_threshold, or the ladder would stop at clear_connections.
        let mut g = strategy(|s| {
            s.warning_threshold = 1;
            s.critical_threshold = 3;
            s.min_recovery_interval = Duration::ZERO;
        });
        let events: Vec<(HealthStatus, u64)> = (0..9).map(|t| (Critical, t)).collect();
        let actions = run(&mut g, &events);
        assert_eq!(
            actions,
            [
                A::LogWarning,
                A::ClearConnections,
                A::RestartService,
                A::ClearConnections,
                A::ClearConnections,
                A::EmergencyStop,
                A::None,
                A::None,
                A::None
            ]
        );
    }

    #[test]
    fn defaults_are_the_seeds() {
        let s = StrategySettings::default();
        assert_eq!((s.warning_threshold, s.critical_threshold), (2, 1));
        assert_eq!(
            (
                s.failure_window.as_secs(),
                s.min_recovery_interval.as_secs(),
                s.cooldown.as_secs()
            ),
            (300, 60, 300)
        );
    }

    #[test]
    fn a_healthy_process_gets_no_action() {
        let mut g = strategy(|_| {});
        let d = g.observe(Healthy, secs(0));
        assert_eq!(
            d,
            Decision {
                action: A::None,
                cause: DecisionCause::Healthy
            }
        );
        assert_eq!(
            run(&mut g, &[(Healthy, 30), (Healthy, 60)]),
            vec![A::None, A::None]
        );
    }

    #[test]
    fn three_criticals_in_a_window_escalate_clear_restart_emergency_stop() {
        let mut g = strategy(|_| {});
        let actions = run(&mut g, &[(Critical, 0), (Critical, 60), (Critical, 120)]);
        assert_eq!(
            actions,
            vec![A::ClearConnections, A::RestartService, A::EmergencyStop]
        );
        assert!(g.status().latched);
    }

    #[test]
    fn a_warning_only_process_is_logged_then_cleared_and_never_restarted() {
        let mut g = strategy(|_| {});
        let mut actions = Vec::new();
        for t in (0..3600).step_by(30) {
            actions.push(g.observe(Warning, secs(t)).action);
        }
        let taken: Vec<_> = actions.into_iter().filter(|a| *a != A::None).collect();
        assert_eq!(taken[..2], [A::LogWarning, A::ClearConnections]);
        assert!(
            taken[2..].iter().all(|a| *a == A::ClearConnections),
            "{taken:?}"
        );
        assert_eq!(g.rung(), A::ClearConnections);
    }

    #[test]
    fn warning_threshold_sets_how_many_warnings_fire_the_ladder() {
        let events = [(Warning, 0), (Warning, 10), (Warning, 20)];
        assert_eq!(
            run(&mut strategy(|s| s.warning_threshold = 2), &events),
            vec![A::None, A::LogWarning, A::None]
        );
        assert_eq!(
            run(&mut strategy(|s| s.warning_threshold = 3), &events),
            vec![A::None, A::None, A::LogWarning]
        );
    }

    #[test]
    fn critical_threshold_sets_how_many_criticals_fire_the_ladder() {
        let events = [(Critical, 0), (Critical, 10), (Critical, 20)];
        let with = |n| {
            run(
                &mut strategy(|s| {
                    s.critical_threshold = n;
                    s.warning_threshold = 100;
                }),
                &events,
            )
        };
        assert_eq!(with(1), vec![A::ClearConnections, A::None, A::None]);
        assert_eq!(with(3), vec![A::None, A::None, A::ClearConnections]);
    }

    #[test]
    fn each_rung_needs_fresh_signals_after_an_action() {
        // critical_threshold 2: two criticals per rung, not two in total.
        let mut g = strategy(|s| {
            s.critical_threshold = 2;
            s.warning_threshold = 100;
            s.min_recovery_interval = Duration::ZERO;
        });
        let actions = run(
            &mut g,
            &[(Critical, 0), (Critical, 1), (Critical, 2), (Critical, 3)],
        );
        assert_eq!(
            actions,
            vec![A::None, A::ClearConnections, A::None, A::RestartService]
        );
    }

    #[test]
    fn failure_window_forgets_older_signals() {
        let events = [(Warning, 0), (Warning, 301)];
        assert_eq!(
            run(
                &mut strategy(|s| s.failure_window = Duration::from_secs(300)),
                &events
            ),
            vec![A::None, A::None]
        );
        assert_eq!(
            run(
                &mut strategy(|s| s.failure_window = Duration::from_secs(400)),
                &events
            ),
            vec![A::None, A::LogWarning]
        );
    }

    #[test]
    fn min_recovery_interval_holds_back_the_next_action_without_losing_the_trigger() {
        let events = [(Critical, 0), (Critical, 30), (Critical, 61)];
        let mut g = strategy(|s| s.min_recovery_interval = Duration::from_secs(60));
        let first = g.observe(Critical, secs(0)).action;
        let held = g.observe(Critical, secs(30));
        assert_eq!(first, A::ClearConnections);
        assert_eq!(
            held,
            Decision {
                action: A::None,
                cause: DecisionCause::RateLimited {
                    allowed_at: secs(60)
                }
            }
        );
        assert_eq!(g.observe(Critical, secs(61)).action, A::RestartService);
        assert_eq!(
            run(
                &mut strategy(|s| s.min_recovery_interval = Duration::from_secs(10)),
                &events
            ),
            vec![A::ClearConnections, A::RestartService, A::EmergencyStop]
        );
    }

    #[test]
    fn log_warning_counts_for_the_rate_limit() {
        let mut g = strategy(|_| {});
        let actions = run(
            &mut g,
            &[(Warning, 0), (Warning, 1), (Warning, 2), (Warning, 3)],
        );
        assert_eq!(actions, vec![A::None, A::LogWarning, A::None, A::None]);
        assert_eq!(g.observe(Warning, secs(61)).action, A::ClearConnections);
    }

    #[test]
    fn each_cooldown_of_sustained_health_steps_the_ladder_down_one_rung() {
        for cooldown_s in [100u64, 1000] {
            let mut g = strategy(|s| s.cooldown = Duration::from_secs(cooldown_s));
            run(&mut g, &[(Critical, 0), (Critical, 60)]);
            assert_eq!(g.rung(), A::RestartService);
            g.observe(Healthy, secs(70));
            let d = g.observe(Healthy, secs(70 + cooldown_s));
            assert_eq!(
                d.cause,
                DecisionCause::CooledDown {
                    to: A::ClearConnections
                }
            );
            // A non-healthy observation restarts the cooldown.
            g.observe(Warning, secs(71 + cooldown_s));
            g.observe(Healthy, secs(72 + cooldown_s));
            g.observe(Healthy, secs(71 + 2 * cooldown_s));
            assert_eq!(g.rung(), A::ClearConnections, "cooldown {cooldown_s}");
            g.observe(Healthy, secs(72 + 3 * cooldown_s));
            assert_eq!(g.rung(), A::None, "two full cooldowns step down two rungs");
            // Back at the bottom, a critical starts again at clear_connections.
            assert_eq!(
                g.observe(Critical, secs(10_000)).action,
                A::ClearConnections
            );
        }
    }

    #[test]
    fn emergency_stop_is_latched_until_reset() {
        let mut g = strategy(|s| s.min_recovery_interval = Duration::ZERO);
        run(&mut g, &[(Critical, 0), (Critical, 1), (Critical, 2)]);
        assert_eq!(g.rung(), A::EmergencyStop);
        for t in [3, 100, 1_000_000] {
            for st in [Critical, Healthy, Warning, Unknown] {
                let d = g.observe(st, secs(t));
                assert_eq!(
                    d,
                    Decision {
                        action: A::None,
                        cause: DecisionCause::Latched
                    }
                );
            }
        }
        assert_eq!(g.rung(), A::EmergencyStop);
        g.reset();
        assert_eq!(g.status().rung, A::None);
        assert_eq!(
            g.observe(Critical, secs(1_000_001)).action,
            A::ClearConnections
        );
    }

    #[test]
    fn unknown_counts_as_a_warning_and_never_alone_restarts_or_stops() {
        let mut g = strategy(|s| s.min_recovery_interval = Duration::ZERO);
        let actions: Vec<_> = (0..1000)
            .map(|t| g.observe(Unknown, secs(t)).action)
            .collect();
        assert_eq!(actions[1], A::LogWarning);
        assert_eq!(actions[3], A::ClearConnections);
        assert!(actions.iter().all(|a| *a <= A::ClearConnections));
    }

    #[test]
    fn idle_time_between_observations_never_escalates() {
        let mut g = strategy(|_| {});
        let actions = run(
            &mut g,
            &[
                (Warning, 0),
                (Healthy, 1),
                (Healthy, 36_000),
                (Warning, 72_000),
            ],
        );
        assert_eq!(actions, vec![A::None; 4]);
    }

    #[test]
    fn observations_from_the_past_count_as_now() {
        let mut g = strategy(|_| {});
        g.observe(Critical, secs(100));
        // A skewed earlier time cannot dodge the rate limit.
        let d = g.observe(Critical, secs(50));
        assert_eq!(
            d.cause,
            DecisionCause::RateLimited {
                allowed_at: secs(160)
            }
        );
    }

    #[test]
    fn status_reports_the_window_and_never_changes_decisions() {
        let mut g = strategy(|s| s.warning_threshold = 5);
        run(&mut g, &[(Warning, 0), (Unknown, 1), (Critical, 2)]);
        let st = g.status();
        assert_eq!(
            (
                st.warnings_in_window,
                st.unknowns_in_window,
                st.criticals_in_window
            ),
            (0, 0, 0),
            "the critical acted and consumed the window"
        );
        assert_eq!(
            (st.last_action, st.last_action_at),
            (Some(A::ClearConnections), Some(secs(2)))
        );
        assert_eq!(st.next_action_allowed_at, Some(secs(62)));
        g.observe(Warning, secs(3));
        assert_eq!(g.status().warnings_in_window, 1);
        assert_eq!(g.status(), g.status());
        let v = serde_json::to_value(g.status()).expect("serializes");
        assert_eq!(v["rung"], "clear_connections");
    }

    #[test]
    fn invalid_settings_are_refused() {
        let bad = |f: fn(&mut StrategySettings)| {
            let mut s = StrategySettings::default();
            f(&mut s);
            GradedRecoveryStrategy::new(s)
                .map(|_| ())
                .expect_err("invalid")
        };
        assert!(matches!(
            bad(|s| s.warning_threshold = 0),
            StrategySettingsError::ThresholdOutOfRange {
                field: "warning_threshold",
                ..
            }
        ));
        assert!(matches!(
            bad(|s| s.critical_threshold = 5000),
            StrategySettingsError::ThresholdOutOfRange {
                field: "critical_threshold",
                ..
            }
        ));
        assert_eq!(
            bad(|s| s.cooldown = Duration::ZERO),
            StrategySettingsError::ZeroDuration { field: "cooldown" }
        );
    }

    #[test]
    fn actions_print_in_snake_case() {
        assert_eq!(A::ClearConnections.to_string(), "clear_connections");
        assert_eq!(A::EmergencyStop.as_str(), "emergency_stop");
        assert_eq!(
            serde_json::to_string(&A::LogWarning).expect("json"),
            "\"log_warning\""
        );
    }
}
