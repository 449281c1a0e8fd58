//! The circuit breaker that guards recovery actions, as a pure statig state machine.
//!
//! It answers one question for the recovery manager: "may I attempt a recovery
//! now?" ([`CircuitBreaker::try_acquire`]), and learns from the answer the
//! manager reports back ([`CircuitBreaker::on_success`] /
//! [`CircuitBreaker::on_failure`]). It is not the thing that performs recoveries,
//! and it never reads a clock: every call that can move time forward takes
//! `now: Moment`. Queries ([`CircuitBreaker::state`], [`CircuitBreaker::status`],
//! [`CircuitBreaker::transitions`]) take `&self` and never change anything (the
//! original Python breaker moved open → half-open when its status was read).
//!
//! ```text
//!            failure_threshold consecutive failures
//!   closed ─────────────────────────────────────────▶ open
//!     ▲                                                │ an event carrying a time
//!     │ success_threshold trial successes              │ ≥ reopens_at
//!     │                                                ▼
//!     └──────────────────────────────────────────── half_open ──▶ open (a trial failed;
//!                                                                  open time × backoff_multiplier,
//!                                                                  capped at max_open_timeout)
//!   any state ── disable() ──▶ disabled      (every attempt allowed, nothing counted)
//!   any state ── force_open() ──▶ forced_open (every attempt rejected)
//!   any state ── reset() ──▶ closed           (counters and open time back to their base)
//! ```
//!
//! Rules worth knowing:
//! - In `closed`, failures count **consecutively**: a success resets the count
//!   to zero, so the circuit opens only after `failure_threshold` failures in a
//!   row. Closed grants every attempt.
//! - In `half_open`, at most `half_open_max_trials` trial permits are out at
//!   once. A trial not reported within `trial_lease` is released (its slot frees,
//!   it counts neither as success nor failure) on the next call that carries a time.
//! - A [`Permit`] belongs to the state that issued it. Reporting a permit issued
//!   before a later transition (or whose lease expired) is answered
//!   [`Report::Stale`] and changes nothing. `Permit` is neither `Copy` nor
//!   `Clone`, so one permit is reported at most once.
//! - Every transition is recorded with its cause and time in a log bounded by
//!   [`TRANSITION_LOG_CAPACITY`].

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use statig::prelude::*;

use crate::time::Moment;

/// How many transitions [`CircuitBreaker::transitions`] remembers.
pub const TRANSITION_LOG_CAPACITY: usize = 64;

/// Upper bound on [`BreakerSettings::half_open_max_trials`]: trials are tracked
/// individually, so their number is bounded.
pub const MAX_HALF_OPEN_TRIALS: u32 = 1024;

/// The breaker's parameters. Plain fields so the configuration layer can build
/// it; call [`BreakerSettings::validate`] (or [`CircuitBreaker::new`], which does).
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerSettings {
    /// Consecutive failures in `closed` that open the circuit (seed: 5).
    pub failure_threshold: u32,
    /// How long the circuit stays open after a trip from `closed` (seed `timeout_seconds`: 300 s).
    pub open_timeout: Duration,
    /// Trial successes in `half_open` that close the circuit (seed: 3).
    pub success_threshold: u32,
    /// Trial permits allowed out at once in `half_open` (default 1).
    pub half_open_max_trials: u32,
    /// A trial not reported within this time is released (default 60 s).
    pub trial_lease: Duration,
    /// Growth of the open time on each re-trip from `half_open`; 1.0 = no growth (default).
    pub backoff_multiplier: f64,
    /// Cap on the grown open time (default 3600 s).
    pub max_open_timeout: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: 5,
            open_timeout: Duration::from_secs(300),
            success_threshold: 3,
            half_open_max_trials: 1,
            trial_lease: Duration::from_secs(60),
            backoff_multiplier: 1.0,
            max_open_timeout: Duration::from_secs(3600),
        }
    }
}

/// Why a [`BreakerSettings`] was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BreakerSettingsError {
    #[error("circuit breaker: {field} must be at least 1, got 0")]
    ZeroCount { field: &'static str },
    #[error("circuit breaker: {field} must be longer than zero")]
    ZeroDuration { field: &'static str },
    #[error("circuit breaker: {field} must be at most {max}, got {value}")]
    TooLarge {
        field: &'static str,
        max: u32,
        value: u32,
    },
    #[error("circuit breaker: backoff_multiplier must be a finite number >= 1.0, got {value}")]
    BadMultiplier { value: f64 },
    #[error(
        "circuit breaker: max_open_timeout ({max_ms} ms) must be at least open_timeout ({open_ms} ms)"
    )]
    CapBelowTimeout { open_ms: u128, max_ms: u128 },
}

impl BreakerSettings {
    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), BreakerSettingsError> {
        use BreakerSettingsError as E;
        for (field, value) in [
            ("failure_threshold", self.failure_threshold),
            ("success_threshold", self.success_threshold),
            ("half_open_max_trials", self.half_open_max_trials),
        ] {
            if value == 0 {
                return Err(E::ZeroCount { field });
            }
        }
        if self.half_open_max_trials > MAX_HALF_OPEN_TRIALS {
            return Err(E::TooLarge {
                field: "half_open_max_trials",
                max: MAX_HALF_OPEN_TRIALS,
                value: self.half_open_max_trials,
            });
        }
        for (field, value) in [
            ("open_timeout", self.open_timeout),
            ("trial_lease", self.trial_lease),
        ] {
            if value.is_zero() {
                return Err(E::ZeroDuration { field });
            }
        }
        if !self.backoff_multiplier.is_finite() || self.backoff_multiplier < 1.0 {
            return Err(E::BadMultiplier {
                value: self.backoff_multiplier,
            });
        }
        if self.max_open_timeout < self.open_timeout {
            return Err(E::CapBelowTimeout {
                open_ms: self.open_timeout.as_millis(),
                max_ms: self.max_open_timeout.as_millis(),
            });
        }
        Ok(())
    }
}

/// The breaker's state as the outside world sees it (`/diagnostics` prints it).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
    Disabled,
    ForcedOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
            CircuitState::Disabled => "disabled",
            CircuitState::ForcedOpen => "forced_open",
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of attempt a [`Permit`] allows.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PermitKind {
    /// Granted in `closed`.
    Normal,
    /// One of the bounded trials of `half_open`.
    Trial,
    /// Granted while the breaker is `disabled`; its outcome is not counted.
    Bypass,
}

/// Permission for one recovery attempt. Report it back exactly once with
/// [`CircuitBreaker::on_success`] or [`CircuitBreaker::on_failure`]. Not `Clone`:
/// a permit cannot be reported twice.
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    id: u64,
    generation: u64,
    kind: PermitKind,
    issued_at: Moment,
}

impl Permit {
    /// Unique per breaker, increasing.
    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn kind(&self) -> PermitKind {
        self.kind
    }
    pub fn issued_at(&self) -> Moment {
        self.issued_at
    }
}

/// Why [`CircuitBreaker::try_acquire`] said no.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejected {
    #[error("circuit breaker open: recovery blocked for another {remaining_ms} ms")]
    Open {
        reopens_at: Moment,
        remaining_ms: u64,
    },
    #[error("circuit breaker half-open: all {max_trials} trial slots are in use")]
    TrialsBusy { max_trials: u32 },
    #[error("circuit breaker forced open by an operator: recovery blocked until reset")]
    ForcedOpen,
}

/// What the breaker did with a reported outcome.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// The outcome was counted.
    Counted,
    /// The permit was issued before a later transition, or its lease expired.
    Stale,
    /// The breaker is disabled: outcomes are not counted.
    Ignored,
}

/// Why a transition happened.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransitionCause {
    FailureThreshold { consecutive_failures: u32 },
    OpenTimeoutElapsed,
    TrialsSucceeded { successes: u32 },
    TrialFailed,
    Disabled,
    ForcedOpen,
    Reset,
}

/// One entry of the transition log.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub from: CircuitState,
    pub to: CircuitState,
    pub cause: TransitionCause,
    pub at: Moment,
}

/// A read-only snapshot for `/diagnostics` and the recovery manager.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BreakerStatus {
    pub state: CircuitState,
    /// Consecutive failures counted in `closed` (0 elsewhere).
    pub consecutive_failures: u32,
    /// Trial successes counted in the current `half_open` period (0 elsewhere).
    pub half_open_successes: u32,
    /// Trials out in `half_open` whose lease has not expired at `now`.
    pub trials_in_flight: u32,
    /// Times the circuit opened (from closed or half-open; forced opens excluded).
    pub trip_count: u64,
    /// Trials released because they were not reported within the lease.
    pub expired_trials: u64,
    pub opened_at: Option<Moment>,
    pub reopens_at: Option<Moment>,
    /// Time left before an attempt may be tried in half-open (0 once due).
    pub remaining_open_ms: Option<u64>,
    /// The open time the next trip will use.
    pub current_open_timeout_ms: u64,
}

/// One outstanding half-open trial.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Trial {
    permit_id: u64,
    lease_expires_at: Moment,
}

/// Inputs of the machine. Every one carries its time.
#[derive(Debug)]
pub(crate) enum Event {
    Acquire { at: Moment },
    Success { permit: Permit, at: Moment },
    Failure { permit: Permit, at: Moment },
    Tick { at: Moment },
    Disable { at: Moment },
    ForceOpen { at: Moment },
    Reset { at: Moment },
}

impl Event {
    fn at(&self) -> Moment {
        match self {
            Event::Acquire { at }
            | Event::Success { at, .. }
            | Event::Failure { at, .. }
            | Event::Tick { at }
            | Event::Disable { at }
            | Event::ForceOpen { at }
            | Event::Reset { at } => *at,
        }
    }
}

/// Outputs of one event, collected by the handlers.
#[derive(Debug, Default)]
pub(crate) struct Output {
    acquired: Option<Result<Permit, Rejected>>,
    report: Option<Report>,
}

/// Shared storage of the machine: settings, counters that outlive a state, the log.
#[derive(Debug, Clone)]
pub(crate) struct BreakerCore {
    settings: BreakerSettings,
    next_permit_id: u64,
    /// Bumped on every transition; a permit of an older generation is stale.
    generation: u64,
    trip_count: u64,
    expired_trials: u64,
    current_open_timeout: Duration,
    pending: Option<(TransitionCause, Moment)>,
    transitions: VecDeque<Transition>,
}

#[state_machine(
    initial = "BreakerState::closed(0)",
    state(name = "BreakerState", derive(Debug, Clone, PartialEq, Eq)),
    superstate(name = "BreakerSuperstate", derive(Debug)),
    visibility = "pub(crate)",
    after_transition = "Self::record_transition"
)]
impl BreakerCore {
    /// Normal operation: every attempt allowed, consecutive failures counted.
    #[state(superstate = "operator")]
    fn closed(
        &mut self,
        consecutive_failures: &mut u32,
        event: &Event,
        context: &mut Output,
    ) -> Outcome<BreakerState> {
        debug_assert!(*consecutive_failures < self.settings.failure_threshold);
        match event {
            Event::Acquire { at } => {
                context.acquired = Some(Ok(self.issue(PermitKind::Normal, *at)));
                Handled
            }
            Event::Success { permit, .. } if self.is_current(permit) => {
                *consecutive_failures = 0;
                context.report = Some(Report::Counted);
                Handled
            }
            Event::Failure { permit, at } if self.is_current(permit) => {
                context.report = Some(Report::Counted);
                *consecutive_failures += 1;
                if *consecutive_failures >= self.settings.failure_threshold {
                    let cause = TransitionCause::FailureThreshold {
                        consecutive_failures: *consecutive_failures,
                    };
                    self.trip(cause, *at, self.settings.open_timeout)
                } else {
                    Handled
                }
            }
            Event::Success { .. } | Event::Failure { .. } => {
                context.report = Some(Report::Stale);
                Handled
            }
            _ => Super,
        }
    }

    /// Recovery blocked until `reopens_at`; the first event at or after it moves to half-open.
    #[state(superstate = "operator")]
    fn open(
        &mut self,
        opened_at: &mut Moment,
        reopens_at: &mut Moment,
        event: &Event,
        context: &mut Output,
    ) -> Outcome<BreakerState> {
        debug_assert!(*reopens_at >= *opened_at);
        let at = event.at();
        if matches!(
            event,
            Event::Disable { .. } | Event::ForceOpen { .. } | Event::Reset { .. }
        ) {
            return Super;
        }
        if let Event::Success { .. } | Event::Failure { .. } = event {
            context.report = Some(Report::Stale);
        }
        if at < *reopens_at {
            if let Event::Acquire { .. } = event {
                context.acquired = Some(Err(Rejected::Open {
                    reopens_at: *reopens_at,
                    remaining_ms: reopens_at.as_millis().saturating_sub(at.as_millis()),
                }));
            }
            return Handled;
        }
        self.begin_transition(TransitionCause::OpenTimeoutElapsed, at);
        let mut trials = Vec::new();
        if let Event::Acquire { .. } = event {
            let permit = self.issue(PermitKind::Trial, at);
            trials.push(self.trial_for(&permit, at));
            context.acquired = Some(Ok(permit));
        }
        Transition(BreakerState::half_open(trials, 0))
    }

    /// Testing recovery: at most `half_open_max_trials` trials out at once.
    #[state(superstate = "operator")]
    fn half_open(
        &mut self,
        trials: &mut Vec<Trial>,
        successes: &mut u32,
        event: &Event,
        context: &mut Output,
    ) -> Outcome<BreakerState> {
        self.expire_trials(trials, event.at());
        debug_assert!(trials.len() <= self.settings.half_open_max_trials as usize);
        debug_assert!(*successes < self.settings.success_threshold);
        match event {
            Event::Acquire { at } => {
                self.acquire_trial(trials, *at, context);
                Handled
            }
            Event::Success { permit, at } => match self.trial_position(trials, permit) {
                Some(i) => {
                    trials.swap_remove(i);
                    context.report = Some(Report::Counted);
                    *successes += 1;
                    self.trial_succeeded(*successes, *at)
                }
                None => {
                    context.report = Some(Report::Stale);
                    Handled
                }
            },
            Event::Failure { permit, at } => match self.trial_position(trials, permit) {
                Some(_) => {
                    context.report = Some(Report::Counted);
                    let grown = grow(
                        self.current_open_timeout,
                        self.settings.backoff_multiplier,
                        self.settings.max_open_timeout,
                    );
                    self.trip(TransitionCause::TrialFailed, *at, grown)
                }
                None => {
                    context.report = Some(Report::Stale);
                    Handled
                }
            },
            _ => Super,
        }
    }

    /// Manual: every attempt allowed, no outcome counted, no automatic transition.
    #[state(superstate = "operator")]
    fn disabled(&mut self, event: &Event, context: &mut Output) -> Outcome<BreakerState> {
        match event {
            Event::Acquire { at } => {
                context.acquired = Some(Ok(self.issue(PermitKind::Bypass, *at)));
                Handled
            }
            Event::Success { .. } | Event::Failure { .. } => {
                context.report = Some(Report::Ignored);
                Handled
            }
            Event::Disable { .. } | Event::Tick { .. } => Handled,
            _ => Super,
        }
    }

    /// Manual: every attempt rejected until `reset`.
    #[state(superstate = "operator")]
    fn forced_open(
        &mut self,
        since: &mut Moment,
        event: &Event,
        context: &mut Output,
    ) -> Outcome<BreakerState> {
        let _ = since; // read by `status`
        match event {
            Event::Acquire { .. } => {
                context.acquired = Some(Err(Rejected::ForcedOpen));
                Handled
            }
            Event::Success { .. } | Event::Failure { .. } => {
                context.report = Some(Report::Stale);
                Handled
            }
            Event::ForceOpen { .. } | Event::Tick { .. } => Handled,
            _ => Super,
        }
    }

    /// Operator commands, valid in every state.
    #[superstate]
    fn operator(&mut self, event: &Event) -> Outcome<BreakerState> {
        match event {
            Event::Disable { at } => {
                self.begin_transition(TransitionCause::Disabled, *at);
                Transition(BreakerState::disabled())
            }
            Event::ForceOpen { at } => {
                self.begin_transition(TransitionCause::ForcedOpen, *at);
                Transition(BreakerState::forced_open(*at))
            }
            Event::Reset { at } => {
                self.begin_transition(TransitionCause::Reset, *at);
                self.current_open_timeout = self.settings.open_timeout;
                Transition(BreakerState::closed(0))
            }
            _ => Handled,
        }
    }
}

/// `current × multiplier`, capped; never panics.
fn grow(current: Duration, multiplier: f64, cap: Duration) -> Duration {
    Duration::try_from_secs_f64(current.as_secs_f64() * multiplier)
        .unwrap_or(cap)
        .min(cap)
}

impl BreakerCore {
    /// Forgets (and counts) the trials whose lease ran out by `at`.
    fn expire_trials(&mut self, trials: &mut Vec<Trial>, at: Moment) {
        let before = trials.len();
        trials.retain(|t| t.lease_expires_at > at);
        self.expired_trials += (before - trials.len()) as u64;
    }

    /// Where `permit`'s trial is in `trials`; `None` for a permit of another
    /// generation, not a trial, or whose trial expired.
    fn trial_position(&self, trials: &[Trial], permit: &Permit) -> Option<usize> {
        if permit.generation != self.generation || permit.kind != PermitKind::Trial {
            return None;
        }
        trials.iter().position(|t| t.permit_id == permit.id)
    }

    /// A trial permit if fewer than `half_open_max_trials` are out.
    fn acquire_trial(&mut self, trials: &mut Vec<Trial>, at: Moment, context: &mut Output) {
        if trials.len() < self.settings.half_open_max_trials as usize {
            let permit = self.issue(PermitKind::Trial, at);
            trials.push(self.trial_for(&permit, at));
            context.acquired = Some(Ok(permit));
        } else {
            context.acquired = Some(Err(Rejected::TrialsBusy {
                max_trials: self.settings.half_open_max_trials,
            }));
        }
    }

    /// Closes once `successes` trials succeeded (the open timeout back to
    /// its setting).
    fn trial_succeeded(&mut self, successes: u32, at: Moment) -> Outcome<BreakerState> {
        if successes < self.settings.success_threshold {
            return Handled;
        }
        self.begin_transition(TransitionCause::TrialsSucceeded { successes }, at);
        self.current_open_timeout = self.settings.open_timeout;
        Transition(BreakerState::closed(0))
    }

    fn issue(&mut self, kind: PermitKind, at: Moment) -> Permit {
        let id = self.next_permit_id;
        self.next_permit_id += 1;
        Permit {
            id,
            generation: self.generation,
            kind,
            issued_at: at,
        }
    }

    fn trial_for(&self, permit: &Permit, at: Moment) -> Trial {
        Trial {
            permit_id: permit.id,
            lease_expires_at: at + self.settings.trial_lease,
        }
    }

    fn is_current(&self, permit: &Permit) -> bool {
        permit.generation == self.generation && permit.kind == PermitKind::Normal
    }

    /// Called by a handler just before it returns `Transition`: permits issued
    /// after this call belong to the new state.
    fn begin_transition(&mut self, cause: TransitionCause, at: Moment) {
        debug_assert!(self.pending.is_none());
        self.generation += 1;
        self.pending = Some((cause, at));
    }

    fn trip(
        &mut self,
        cause: TransitionCause,
        at: Moment,
        open_for: Duration,
    ) -> Outcome<BreakerState> {
        debug_assert!(
            open_for >= self.settings.open_timeout && open_for <= self.settings.max_open_timeout
        );
        self.begin_transition(cause, at);
        self.trip_count += 1;
        self.current_open_timeout = open_for;
        Transition(BreakerState::open(at, at + open_for))
    }

    fn record_transition(
        &mut self,
        source: &BreakerState,
        target: &BreakerState,
        _context: &mut Output,
    ) {
        // Every handler that returns `Transition` calls `begin_transition` first.
        debug_assert!(self.pending.is_some(), "transition without a cause");
        let Some((cause, at)) = self.pending.take() else {
            return;
        };
        if self.transitions.len() == TRANSITION_LOG_CAPACITY {
            self.transitions.pop_front();
        }
        self.transitions.push_back(Transition {
            from: source.circuit_state(),
            to: target.circuit_state(),
            cause,
            at,
        });
    }
}

impl BreakerState {
    fn circuit_state(&self) -> CircuitState {
        match self {
            BreakerState::Closed { .. } => CircuitState::Closed,
            BreakerState::Open { .. } => CircuitState::Open,
            BreakerState::HalfOpen { .. } => CircuitState::HalfOpen,
            BreakerState::Disabled { .. } => CircuitState::Disabled,
            BreakerState::ForcedOpen { .. } => CircuitState::ForcedOpen,
        }
    }
}

/// The circuit breaker. Drive it with the current [`Moment`] on every call.
#[derive(Debug)]
pub struct CircuitBreaker {
    machine: statig::blocking::InitializedStateMachine<BreakerCore>,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::build(BreakerSettings::default())
    }
}

impl CircuitBreaker {
    /// A closed breaker with validated settings.
    pub fn new(settings: BreakerSettings) -> Result<Self, BreakerSettingsError> {
        settings.validate()?;
        Ok(Self::build(settings))
    }

    fn build(settings: BreakerSettings) -> Self {
        let core = BreakerCore {
            current_open_timeout: settings.open_timeout,
            settings,
            next_permit_id: 1,
            generation: 0,
            trip_count: 0,
            expired_trials: 0,
            pending: None,
            transitions: VecDeque::with_capacity(TRANSITION_LOG_CAPACITY),
        };
        let machine = core
            .uninitialized_state_machine()
            .init_with_context(&mut Output::default());
        CircuitBreaker { machine }
    }

    fn handle(&mut self, event: Event) -> Output {
        let mut out = Output::default();
        self.machine.handle_with_context(&event, &mut out);
        out
    }

    /// Asks for one recovery attempt. Closed always grants; open rejects until
    /// its time is up and then (on this call) moves to half-open and grants a
    /// trial; half-open grants while trial slots are free.
    pub fn try_acquire(&mut self, now: Moment) -> Result<Permit, Rejected> {
        match self.handle(Event::Acquire { at: now }).acquired {
            Some(result) => result,
            // Every state writes `acquired` for an Acquire event; this arm is
            // unreachable and answers conservatively.
            None => Err(Rejected::ForcedOpen),
        }
    }

    /// Reports that the attempt allowed by `permit` succeeded.
    pub fn on_success(&mut self, permit: Permit, now: Moment) -> Report {
        let out = self.handle(Event::Success { permit, at: now });
        out.report.unwrap_or(Report::Stale)
    }

    /// Reports that the attempt allowed by `permit` failed.
    pub fn on_failure(&mut self, permit: Permit, now: Moment) -> Report {
        let out = self.handle(Event::Failure { permit, at: now });
        out.report.unwrap_or(Report::Stale)
    }

    /// Lets time pass: open → half-open when due, expired trial leases released.
    pub fn tick(&mut self, now: Moment) {
        self.handle(Event::Tick { at: now });
    }

    /// Operator: stop guarding (every attempt allowed, nothing counted) until `reset`.
    pub fn disable(&mut self, now: Moment) {
        self.handle(Event::Disable { at: now });
    }

    /// Operator: reject every attempt until `reset`.
    pub fn force_open(&mut self, now: Moment) {
        self.handle(Event::ForceOpen { at: now });
    }

    /// Operator: back to closed with every counter and the open time at their base.
    pub fn reset(&mut self, now: Moment) {
        self.handle(Event::Reset { at: now });
    }

    pub fn state(&self) -> CircuitState {
        self.machine.state().circuit_state()
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.machine.inner().settings
    }

    /// Oldest first, at most [`TRANSITION_LOG_CAPACITY`].
    pub fn transitions(&self) -> impl ExactSizeIterator<Item = &Transition> {
        self.machine.inner().transitions.iter()
    }

    /// A snapshot as of `now`. Never changes the breaker: an open circuit whose
    /// time is up still reads `open` (with `remaining_open_ms: 0`) until an
    /// event moves it.
    pub fn status(&self, now: Moment) -> BreakerStatus {
        let core = self.machine.inner();
        let mut status = BreakerStatus {
            state: self.state(),
            consecutive_failures: 0,
            half_open_successes: 0,
            trials_in_flight: 0,
            trip_count: core.trip_count,
            expired_trials: core.expired_trials,
            opened_at: None,
            reopens_at: None,
            remaining_open_ms: None,
            current_open_timeout_ms: u64::try_from(core.current_open_timeout.as_millis())
                .unwrap_or(u64::MAX),
        };
        match self.machine.state() {
            BreakerState::Closed {
                consecutive_failures,
            } => status.consecutive_failures = *consecutive_failures,
            BreakerState::Open {
                opened_at,
                reopens_at,
            } => {
                status.opened_at = Some(*opened_at);
                status.reopens_at = Some(*reopens_at);
                status.remaining_open_ms =
                    Some(reopens_at.as_millis().saturating_sub(now.as_millis()));
            }
            BreakerState::HalfOpen { trials, successes } => {
                status.half_open_successes = *successes;
                status.trials_in_flight =
                    trials.iter().filter(|t| t.lease_expires_at > now).count() as u32;
            }
            BreakerState::ForcedOpen { since } => status.opened_at = Some(*since),
            BreakerState::Disabled { .. } => {}
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Moment {
        Moment::from_secs(s)
    }

    fn breaker(f: impl FnOnce(&mut BreakerSettings)) -> CircuitBreaker {
        let mut s = BreakerSettings {
            failure_threshold: 2,
            open_timeout: Duration::from_secs(10),
            success_threshold: 1,
            half_open_max_trials: 1,
            trial_lease: Duration::from_secs(5),
            backoff_multiplier: 1.0,
            max_open_timeout: Duration::from_secs(100),
        };
        f(&mut s);
        CircuitBreaker::new(s).expect("valid settings")
    }

    fn fail_once(b: &mut CircuitBreaker, at: Moment) -> Report {
        let p = b.try_acquire(at).expect("closed grants");
        b.on_failure(p, at)
    }

    /// Opens a closed breaker at `at` by reporting `failure_threshold` failures.
    fn trip(b: &mut CircuitBreaker, at: Moment) {
        for _ in 0..b.settings().failure_threshold {
            fail_once(b, at);
        }
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn defaults_are_the_seeds() {
        let s = BreakerSettings::default();
        assert_eq!(
            (
                s.failure_threshold,
                s.open_timeout.as_secs(),
                s.success_threshold
            ),
            (5, 300, 3)
        );
        assert_eq!((s.half_open_max_trials, s.trial_lease.as_secs()), (1, 60));
        assert_eq!(
            (s.backoff_multiplier, s.max_open_timeout.as_secs()),
            (1.0, 3600)
        );
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn failure_threshold_consecutive_failures_open_the_circuit() {
        for threshold in [1, 3, 5] {
            let mut b = breaker(|s| s.failure_threshold = threshold);
            for i in 1..threshold {
                assert_eq!(fail_once(&mut b, secs(u64::from(i))), Report::Counted);
                assert_eq!(b.state(), CircuitState::Closed, "after {i} of {threshold}");
            }
            fail_once(&mut b, secs(100));
            assert_eq!(b.state(), CircuitState::Open, "threshold {threshold}");
            let t = b.transitions().last().copied().expect("logged");
            assert_eq!(
                t.cause,
                TransitionCause::FailureThreshold {
                    consecutive_failures: threshold
                }
            );
            assert_eq!(
                (t.from, t.to, t.at),
                (CircuitState::Closed, CircuitState::Open, secs(100))
            );
        }
    }

    #[test]
    fn a_success_in_closed_resets_the_consecutive_count() {
        let mut b = breaker(|s| s.failure_threshold = 3);
        fail_once(&mut b, secs(1));
        fail_once(&mut b, secs(2));
        let p = b.try_acquire(secs(3)).expect("closed");
        assert_eq!(b.on_success(p, secs(3)), Report::Counted);
        assert_eq!(b.status(secs(3)).consecutive_failures, 0);
        fail_once(&mut b, secs(4));
        fail_once(&mut b, secs(5));
        assert_eq!(b.state(), CircuitState::Closed);
        fail_once(&mut b, secs(6));
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn open_rejects_until_open_timeout_then_this_attempt_becomes_a_trial() {
        for timeout_s in [10, 30] {
            let mut b = breaker(|s| s.open_timeout = Duration::from_secs(timeout_s));
            trip(&mut b, secs(100));
            let just_before = secs(100 + timeout_s) - Duration::from_millis(1);
            assert_eq!(
                b.try_acquire(just_before),
                Err(Rejected::Open {
                    reopens_at: secs(100 + timeout_s),
                    remaining_ms: 1
                })
            );
            let p = b.try_acquire(secs(100 + timeout_s)).expect("due");
            assert_eq!(p.kind(), PermitKind::Trial);
            assert_eq!(b.state(), CircuitState::HalfOpen);
        }
    }

    #[test]
    fn reading_status_never_moves_open_to_half_open() {
        let mut b = breaker(|_| {});
        trip(&mut b, secs(0));
        for _ in 0..3 {
            let st = b.status(secs(1000));
            assert_eq!(st.state, CircuitState::Open);
            assert_eq!(st.remaining_open_ms, Some(0));
            assert_eq!(st.reopens_at, Some(secs(10)));
        }
        assert_eq!(b.state(), CircuitState::Open);
        b.tick(secs(1000));
        assert_eq!(b.state(), CircuitState::HalfOpen);
    }

    #[test]
    fn success_threshold_trial_successes_close_the_circuit() {
        for needed in [1u32, 3] {
            let mut b = breaker(|s| s.success_threshold = needed);
            trip(&mut b, secs(0));
            for i in 0..needed {
                let expected = if i == 0 {
                    CircuitState::Open
                } else {
                    CircuitState::HalfOpen
                };
                assert_eq!(b.state(), expected);
                let p = b.try_acquire(secs(20 + u64::from(i))).expect("trial");
                assert_eq!(b.on_success(p, secs(20 + u64::from(i))), Report::Counted);
            }
            assert_eq!(b.state(), CircuitState::Closed, "needed {needed}");
            let last = b.transitions().last().copied().expect("logged");
            assert_eq!(
                last.cause,
                TransitionCause::TrialsSucceeded { successes: needed }
            );
        }
    }

    #[test]
    fn half_open_admits_at_most_half_open_max_trials_at_once() {
        for max in [1u32, 3] {
            let mut b = breaker(|s| {
                s.half_open_max_trials = max;
                s.success_threshold = 10;
            });
            trip(&mut b, secs(0));
            let permits: Vec<Permit> = (0..max)
                .map(|_| b.try_acquire(secs(10)).expect("free slot"))
                .collect();
            assert_eq!(
                b.try_acquire(secs(10)),
                Err(Rejected::TrialsBusy { max_trials: max })
            );
            assert_eq!(b.status(secs(10)).trials_in_flight, max);
            // Reporting one frees one slot.
            let first = permits.into_iter().next().expect("at least one");
            assert_eq!(b.on_success(first, secs(11)), Report::Counted);
            assert!(b.try_acquire(secs(11)).is_ok());
        }
    }

    #[test]
    fn a_trial_never_reported_is_released_after_trial_lease() {
        for lease_s in [5u64, 20] {
            let mut b = breaker(|s| s.trial_lease = Duration::from_secs(lease_s));
            trip(&mut b, secs(0));
            let forgotten = b.try_acquire(secs(10)).expect("trial");
            let before = secs(10 + lease_s) - Duration::from_millis(1);
            assert!(matches!(
                b.try_acquire(before),
                Err(Rejected::TrialsBusy { .. })
            ));
            assert_eq!(b.status(before).trials_in_flight, 1);
            assert_eq!(b.status(secs(10 + lease_s)).trials_in_flight, 0);
            let fresh = b.try_acquire(secs(10 + lease_s)).expect("slot released");
            assert_eq!(b.status(secs(10 + lease_s)).expired_trials, 1);
            // The late report of the released trial changes nothing.
            assert_eq!(b.on_failure(forgotten, secs(10 + lease_s)), Report::Stale);
            assert_eq!(b.state(), CircuitState::HalfOpen);
            assert_eq!(b.on_success(fresh, secs(10 + lease_s)), Report::Counted);
            assert_eq!(b.state(), CircuitState::Closed);
        }
    }

    #[test]
    fn each_retrip_from_half_open_multiplies_the_open_time_up_to_the_cap() {
        let mut b = breaker(|s| {
            s.backoff_multiplier = 2.0;
            s.max_open_timeout = Duration::from_secs(25);
        });
        trip(&mut b, secs(0));
        let mut now = secs(0);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let reopens_at = b.status(now).reopens_at.expect("open");
            seen.push(reopens_at.as_millis() - now.as_millis());
            now = reopens_at;
            let p = b.try_acquire(now).expect("trial");
            b.on_failure(p, now);
            assert_eq!(b.state(), CircuitState::Open);
        }
        assert_eq!(seen, vec![10_000, 20_000, 25_000]);
        assert_eq!(b.status(now).trip_count, 4);
        // Closing again restores the base open time.
        let p = b.try_acquire(now + Duration::from_secs(25)).expect("trial");
        b.on_success(p, now + Duration::from_secs(25));
        assert_eq!(b.status(now).current_open_timeout_ms, 10_000);
    }

    #[test]
    fn without_a_multiplier_the_open_time_never_grows() {
        let mut b = breaker(|_| {});
        trip(&mut b, secs(0));
        let p = b.try_acquire(secs(10)).expect("trial");
        b.on_failure(p, secs(10));
        assert_eq!(b.status(secs(10)).reopens_at, Some(secs(20)));
    }

    #[test]
    fn a_permit_from_before_a_transition_is_stale() {
        let mut b = breaker(|s| s.failure_threshold = 1);
        let old = b.try_acquire(secs(0)).expect("closed");
        fail_once(&mut b, secs(0));
        assert_eq!(b.on_failure(old, secs(1)), Report::Stale);
        assert_eq!(b.status(secs(1)).trip_count, 1);
    }

    #[test]
    fn disabled_allows_everything_and_counts_nothing_until_reset() {
        let mut b = breaker(|s| s.failure_threshold = 1);
        b.disable(secs(0));
        for i in 0..10 {
            let p = b.try_acquire(secs(i)).expect("disabled grants");
            assert_eq!(p.kind(), PermitKind::Bypass);
            assert_eq!(b.on_failure(p, secs(i)), Report::Ignored);
        }
        assert_eq!(b.state(), CircuitState::Disabled);
        b.reset(secs(20));
        assert_eq!(b.state(), CircuitState::Closed);
        fail_once(&mut b, secs(21));
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn forced_open_rejects_everything_whatever_the_time_until_reset() {
        let mut b = breaker(|_| {});
        b.force_open(secs(0));
        b.tick(secs(1_000_000));
        assert_eq!(b.try_acquire(secs(1_000_000)), Err(Rejected::ForcedOpen));
        assert_eq!(b.state(), CircuitState::ForcedOpen);
        b.reset(secs(1_000_001));
        assert!(b.try_acquire(secs(1_000_001)).is_ok());
        let causes: Vec<_> = b.transitions().map(|t| t.cause).collect();
        assert_eq!(
            causes,
            vec![TransitionCause::ForcedOpen, TransitionCause::Reset]
        );
    }

    #[test]
    fn the_transition_log_is_bounded() {
        let mut b = breaker(|_| {});
        for i in 0..(TRANSITION_LOG_CAPACITY as u64 * 2) {
            b.force_open(secs(2 * i));
            b.reset(secs(2 * i + 1));
        }
        assert_eq!(b.transitions().len(), TRANSITION_LOG_CAPACITY);
        let last = b.transitions().last().copied().expect("non-empty");
        assert_eq!(last.at, secs(TRANSITION_LOG_CAPACITY as u64 * 4 - 1));
    }

    #[test]
    fn invalid_settings_are_refused_with_the_field_named() {
        let bad = |f: fn(&mut BreakerSettings)| {
            let mut s = BreakerSettings::default();
            f(&mut s);
            CircuitBreaker::new(s).map(|_| ()).expect_err("invalid")
        };
        assert_eq!(
            bad(|s| s.failure_threshold = 0),
            BreakerSettingsError::ZeroCount {
                field: "failure_threshold"
            }
        );
        assert_eq!(
            bad(|s| s.half_open_max_trials = 0),
            BreakerSettingsError::ZeroCount {
                field: "half_open_max_trials"
            }
        );
        assert!(matches!(
            bad(|s| s.half_open_max_trials = 5000),
            BreakerSettingsError::TooLarge { .. }
        ));
        assert_eq!(
            bad(|s| s.trial_lease = Duration::ZERO),
            BreakerSettingsError::ZeroDuration {
                field: "trial_lease"
            }
        );
        assert!(matches!(
            bad(|s| s.backoff_multiplier = 0.5),
            BreakerSettingsError::BadMultiplier { .. }
        ));
        assert!(matches!(
            bad(|s| s.backoff_multiplier = f64::NAN),
            BreakerSettingsError::BadMultiplier { .. }
        ));
        assert!(matches!(
            bad(|s| s.max_open_timeout = Duration::from_secs(1)),
            BreakerSettingsError::CapBelowTimeout { .. }
        ));
    }

    #[test]
    fn states_and_status_serialize_in_snake_case() {
        let json = serde_json::to_string(&CircuitState::HalfOpen).expect("serializes");
        assert_eq!(json, "\"half_open\"");
        assert_eq!(CircuitState::ForcedOpen.to_string(), "forced_open");
        let mut b = breaker(|_| {});
        trip(&mut b, secs(0));
        let v = serde_json::to_value(b.status(secs(4))).expect("serializes");
        assert_eq!(v["state"], "open");
        assert_eq!(v["remaining_open_ms"], 6000);
        let t = serde_json::to_value(b.transitions().last()).expect("serializes");
        assert_eq!(t["cause"]["kind"], "failure_threshold");
    }
}
