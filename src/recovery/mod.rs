//! The recovery loop as a sans-I/O state machine (str0m style): health
//! reports and action outcomes go in with their instants, commands and notes
//! come out. The daemon (`daemon::recovery::RecoveryManager`) only executes
//! the commands and feeds the outcomes back; the simulation and the property
//! tests (`tests/prop_recovery.rs`) drive the same machine.
//!
//! ```text
//!   Input::Report { report, now, wall } ──▶ ┌──────────────┐ ──▶ Output::Command { action, timeout, .. }
//!   Input::Outcome { id, outcome, now } ──▶ │ RecoveryLoop │ ──▶ Output::Finished { event, .. }
//!                                           └──────────────┘ ──▶ Output::Note(..)   (for the log)
//! ```
//!
//! # How a report becomes a command
//! 1. While a command is outstanding (emitted, its outcome not yet fed
//!    back), reports are not evaluated: **one action at a time**, and the
//!    strategy never decides on the transient state an action causes.
//! 2. The check-interval gate: a report less than `check_interval` after the
//!    last evaluated one is not evaluated.
//! 3. The breaker is ticked to `now`; the report is folded into its
//!    **actionable status** ([`attribution::actionable_status`]: only the
//!    process's own ill health may restart or stop it) and fed to the
//!    [`GradedRecoveryStrategy`], which decides an action or none. A healthy
//!    actionable status ends the episode.
//! 4. With recovery disabled the decision is noted, never commanded.
//! 5. An **episode** runs from the first action after a healthy report to
//!    the next healthy report; at most `max_recovery_attempts` commands are
//!    emitted per episode; past that, one [`Note::BudgetSpent`] per episode.
//! 6. The breaker must grant a permit; an open breaker blocks the action
//!    ([`Note::Blocked`], counted in `rejected_by_breaker`).
//! 7. A [`Command`] goes out with the action, its attempt number and its
//!    timeout (`recovery_timeout`, as a duration and as a deadline). The
//!    executor must feed back an [`ActionOutcome`] (a timeout is a failure,
//!    [`ActionError::TimedOut`]); the breaker hears it, the counters and the
//!    bounded event history record it, and [`Output::Finished`] carries the
//!    [`RecoveryEvent`] out.
//!
//! Emergency stop is absorbing: the strategy latches, so no command follows
//! it. Reading the status never changes the machine.
//!
//! Not here: running actions, timers, logging (the daemon), the ladder's
//! rules (`crate::escalation`) and the breaker's (`crate::breaker`).

pub mod attribution;
pub mod judge;
pub mod readiness;

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::breaker::{
    BreakerSettings, BreakerSettingsError, BreakerStatus, CircuitBreaker, CircuitState, Permit,
    Rejected, Report,
};
use crate::escalation::{
    DecisionCause, GradedRecoveryStrategy, RecoveryAction, StrategySettings, StrategySettingsError,
    StrategyStatus,
};
use crate::health::{HealthReport, HealthStatus};
use crate::time::{Moment, WallTime};

/// Recovery events kept for `/diagnostics` by default.
pub const DEFAULT_RECOVERY_HISTORY: usize = 100;
/// The most events the history keeps, whatever the settings say.
pub const MAX_RECOVERY_HISTORY: usize = 10_000;
/// Outputs waiting to be polled. One input produces at most three; a caller
/// that polls after each input never comes near this. Past it the oldest is
/// dropped (a dropped command leaves the loop waiting for an outcome that
/// never comes: it then acts no more, the safe side).
pub const MAX_PENDING_OUTPUTS: usize = 64;

/// The loop's parameters (config `recovery`).
#[derive(Clone, Debug, PartialEq)]
pub struct LoopSettings {
    pub enabled: bool,
    pub max_recovery_attempts: u32,
    /// How long an action may run; past it the executor reports a failure.
    pub recovery_timeout: Duration,
    /// The least time between two evaluated reports; `None` evaluates all.
    pub check_interval: Option<Duration>,
    /// Recovery events kept (at least 1, at most [`MAX_RECOVERY_HISTORY`]).
    pub history_size: usize,
    pub breaker: BreakerSettings,
    pub strategy: StrategySettings,
}

/// Why a [`RecoveryLoop`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RecoverySetupError {
    #[error(transparent)]
    Breaker(#[from] BreakerSettingsError),
    #[error(transparent)]
    Strategy(#[from] StrategySettingsError),
}

/// Names one command, so that its outcome finds it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActionId(u64);

/// Run this action, within `timeout`, and feed back its outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    pub id: ActionId,
    /// Never [`RecoveryAction::None`].
    pub action: RecoveryAction,
    pub cause: DecisionCause,
    /// The actionable status that called for it.
    pub health_status: HealthStatus,
    /// 1-based within the episode.
    pub attempt: u32,
    pub max_attempts: u32,
    /// `recovery_timeout`: past it, the outcome is [`ActionError::TimedOut`].
    pub timeout: Duration,
    /// When it started plus `timeout`.
    pub deadline: Moment,
}

/// What an action did, when it succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionDone {
    NothingToDo,
    /// log_warning: the warning named this many failing metrics.
    WarningLogged {
        failing_metrics: usize,
    },
    /// clear_connections: this many clients' transports were closed (they
    /// reconnect on their own).
    ConnectionsCleared {
        clients: usize,
    },
    /// restart_service: serving again on the same address.
    Restarted {
        /// Socket.IO clients whose transport was closed (they reconnect).
        clients_closed: usize,
        /// True if the drain timed out and open connections were aborted.
        forced: bool,
    },
    /// emergency_stop: the stop is handed to the runner, which exits with
    /// the emergency code once serving is drained.
    StopRequested,
}

impl fmt::Display for ActionDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionDone::NothingToDo => f.write_str("nothing to do"),
            ActionDone::WarningLogged { failing_metrics } => {
                write!(f, "{failing_metrics} failing metrics logged")
            }
            ActionDone::ConnectionsCleared { clients } => {
                write!(f, "{clients} clients' transports closed; they reconnect")
            }
            ActionDone::Restarted {
                clients_closed,
                forced,
            } => write!(
                f,
                "serving again on the same address ({clients_closed} clients closed, forced: {forced})"
            ),
            ActionDone::StopRequested => f.write_str("stop requested from the runner"),
        }
    }
}

/// Why an action failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("timed out after {} ms (recovery_timeout)", .timeout.as_millis())]
    TimedOut { timeout: Duration },
    /// restart_service / emergency_stop failed, as the serving side says.
    #[error("{reason}")]
    Service { reason: String },
}

/// The outcome of one command, as the executor saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionOutcome {
    pub result: Result<ActionDone, ActionError>,
    /// How long the action ran (the executor measures it finer than a
    /// [`Moment`]; it is only reported, never decided on).
    pub elapsed: Duration,
}

/// What triggered a recovery event (the seed's `trigger` field).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    HealthCheck,
}

/// One executed recovery, with the seed's fields.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecoveryEvent {
    /// Epoch seconds.
    pub timestamp: f64,
    pub timestamp_iso: String,
    pub action: RecoveryAction,
    pub trigger: Trigger,
    pub health_status: HealthStatus,
    pub success: bool,
    pub duration_ms: f64,
    pub error_message: Option<String>,
}

/// Inputs of the loop; each carries its time.
#[derive(Debug)]
pub enum Input<'a> {
    /// A health report from the monitor; `now` is the loop's monotonic time
    /// (the breaker's), `wall` stamps the event of an action it starts.
    Report {
        report: &'a HealthReport,
        now: Moment,
        wall: WallTime,
    },
    /// The outcome of the command `id`, fed back when it finished.
    Outcome {
        id: ActionId,
        outcome: ActionOutcome,
        now: Moment,
    },
}

/// Something the daemon should know, for its log.
#[derive(Clone, Debug, PartialEq)]
pub enum Note {
    BreakerChanged {
        from: CircuitState,
        to: CircuitState,
    },
    /// A threshold was reached but the previous action was too recent.
    RateLimited { allowed_at: Moment },
    /// Recovery is disabled: `action` was decided, not commanded.
    Disabled { action: RecoveryAction },
    /// The episode's budget is spent (noted once per episode).
    BudgetSpent {
        action: RecoveryAction,
        attempts: u32,
        max_attempts: u32,
        health_status: HealthStatus,
    },
    /// The breaker refused a permit.
    Blocked {
        action: RecoveryAction,
        state: CircuitState,
        rejected: Rejected,
    },
    /// An outcome for no outstanding command (or the breaker's permit was
    /// stale when reported); nothing else changed.
    StaleOutcome,
}

/// What comes out of the loop.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Run it and feed back the outcome.
    Command(Command),
    /// A command's outcome was recorded.
    Finished {
        event: RecoveryEvent,
        attempt: u32,
        max_attempts: u32,
        result: Result<ActionDone, ActionError>,
    },
    Note(Note),
}

/// `/diagnostics`' `recovery_manager` object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecoveryStatus {
    pub enabled: bool,
    pub circuit_breaker_state: CircuitState,
    pub circuit_breaker: BreakerStatus,
    pub strategy: StrategyStatus,
    pub total_recoveries: u64,
    pub successful_recoveries: u64,
    pub failed_recoveries: u64,
    pub rejected_by_breaker: u64,
    pub skipped_attempts_exhausted: u64,
    pub episode_attempts: u32,
    pub max_recovery_attempts: u32,
    pub recovery_in_progress: bool,
    pub recent_events: Vec<RecoveryEvent>,
}

/// Counters for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecoveryCounts {
    /// (action, success) → count.
    pub by_action: Vec<(RecoveryAction, bool, u64)>,
    pub rejected_by_breaker: u64,
    pub breaker_trips: u64,
    pub breaker_state: Option<CircuitState>,
}

const ACTIONS: [RecoveryAction; 5] = [
    RecoveryAction::None,
    RecoveryAction::LogWarning,
    RecoveryAction::ClearConnections,
    RecoveryAction::RestartService,
    RecoveryAction::EmergencyStop,
];

fn action_index(action: RecoveryAction) -> usize {
    match action {
        RecoveryAction::None => 0,
        RecoveryAction::LogWarning => 1,
        RecoveryAction::ClearConnections => 2,
        RecoveryAction::RestartService => 3,
        RecoveryAction::EmergencyStop => 4,
    }
}

/// The command in flight.
#[derive(Debug)]
struct Outstanding {
    command: Command,
    permit: Permit,
    wall: WallTime,
}

#[derive(Clone, Debug, Default)]
struct Counters {
    total: u64,
    successful: u64,
    failed: u64,
    rejected: u64,
    exhausted_skips: u64,
    /// [action][success as usize]
    by_action: [[u64; 2]; 5],
}

/// The recovery loop (see the module doc).
#[derive(Debug)]
pub struct RecoveryLoop {
    settings: LoopSettings,
    strategy: GradedRecoveryStrategy,
    breaker: CircuitBreaker,
    history: VecDeque<RecoveryEvent>,
    counters: Counters,
    episode_attempts: u32,
    budget_noted: bool,
    last_evaluated: Option<Moment>,
    outstanding: Option<Outstanding>,
    next_id: u64,
    outputs: VecDeque<Output>,
}

impl RecoveryLoop {
    pub fn new(settings: LoopSettings) -> Result<Self, RecoverySetupError> {
        let strategy = GradedRecoveryStrategy::new(settings.strategy.clone())?;
        let breaker = CircuitBreaker::new(settings.breaker.clone())?;
        Ok(RecoveryLoop {
            history: VecDeque::with_capacity(settings.history_size.clamp(1, 1024)),
            settings,
            strategy,
            breaker,
            counters: Counters::default(),
            episode_attempts: 0,
            budget_noted: false,
            last_evaluated: None,
            outstanding: None,
            next_id: 0,
            outputs: VecDeque::new(),
        })
    }

    pub fn settings(&self) -> &LoopSettings {
        &self.settings
    }

    /// Feeds one input; then drain [`RecoveryLoop::poll_output`].
    pub fn handle_input(&mut self, input: Input<'_>) {
        match input {
            Input::Report { report, now, wall } => self.on_report(report, now, wall),
            Input::Outcome { id, outcome, now } => self.on_outcome(id, outcome, now),
        }
    }

    /// The next output, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The command in flight, if any.
    pub fn in_progress(&self) -> Option<&Command> {
        self.outstanding.as_ref().map(|o| &o.command)
    }

    fn emit(&mut self, output: Output) {
        if self.outputs.len() >= MAX_PENDING_OUTPUTS {
            self.outputs.pop_front();
        }
        self.outputs.push_back(output);
    }

    fn note(&mut self, note: Note) {
        self.emit(Output::Note(note));
    }

    fn tick_breaker(&mut self, now: Moment) {
        let before = self.breaker.state();
        self.breaker.tick(now);
        self.note_breaker_change(before);
    }

    fn note_breaker_change(&mut self, from: CircuitState) {
        let to = self.breaker.state();
        if from != to {
            self.note(Note::BreakerChanged { from, to });
        }
    }

    fn on_report(&mut self, report: &HealthReport, now: Moment, wall: WallTime) {
        if !self.due_for_evaluation(report) {
            return;
        }
        self.last_evaluated = Some(report.at);
        self.tick_breaker(now);
        let status = attribution::actionable_status(report);
        let decision = self.strategy.observe(status, report.at);
        if status == HealthStatus::Healthy {
            self.episode_attempts = 0;
            self.budget_noted = false;
        }
        let action = decision.action;
        if action == RecoveryAction::None {
            if let DecisionCause::RateLimited { allowed_at } = decision.cause {
                self.note(Note::RateLimited { allowed_at });
            }
            return;
        }
        if !self.settings.enabled {
            self.note(Note::Disabled { action });
            return;
        }
        if self.budget_spent(action, status) {
            return;
        }
        let Some(permit) = self.permit(action, now) else {
            return;
        };
        self.issue(action, decision.cause, status, permit, now, wall);
    }

    /// No action is outstanding and the check-interval gate lets `report`
    /// through.
    fn due_for_evaluation(&self, report: &HealthReport) -> bool {
        if self.outstanding.is_some() {
            return false;
        }
        match (self.settings.check_interval, self.last_evaluated) {
            (Some(interval), Some(last)) => report.at >= last + interval,
            _ => true,
        }
    }

    /// True (counted, and noted once per episode) when this episode already
    /// ran `max_recovery_attempts` actions.
    fn budget_spent(&mut self, action: RecoveryAction, status: HealthStatus) -> bool {
        let max_attempts = self.settings.max_recovery_attempts;
        if self.episode_attempts < max_attempts {
            return false;
        }
        self.counters.exhausted_skips += 1;
        if !self.budget_noted {
            self.budget_noted = true;
            self.note(Note::BudgetSpent {
                action,
                attempts: self.episode_attempts,
                max_attempts,
                health_status: status,
            });
        }
        true
    }

    /// The breaker's permit for `action`, or `None` (counted and noted)
    /// when it refuses.
    fn permit(&mut self, action: RecoveryAction, now: Moment) -> Option<Permit> {
        match self.breaker.try_acquire(now) {
            Ok(permit) => Some(permit),
            Err(rejected) => {
                self.counters.rejected += 1;
                let state = self.breaker.state();
                self.note(Note::Blocked {
                    action,
                    state,
                    rejected,
                });
                None
            }
        }
    }

    /// Emits the command for `action` under `permit`; it is outstanding
    /// until its outcome comes back.
    fn issue(
        &mut self,
        action: RecoveryAction,
        cause: DecisionCause,
        status: HealthStatus,
        permit: Permit,
        now: Moment,
        wall: WallTime,
    ) {
        self.episode_attempts += 1;
        self.next_id += 1;
        let command = Command {
            id: ActionId(self.next_id),
            action,
            cause,
            health_status: status,
            attempt: self.episode_attempts,
            max_attempts: self.settings.max_recovery_attempts,
            timeout: self.settings.recovery_timeout,
            deadline: now + self.settings.recovery_timeout,
        };
        debug_assert!(command.action != RecoveryAction::None);
        debug_assert!(command.attempt <= command.max_attempts);
        self.outstanding = Some(Outstanding {
            command: command.clone(),
            permit,
            wall,
        });
        self.emit(Output::Command(command));
    }

    fn on_outcome(&mut self, id: ActionId, outcome: ActionOutcome, now: Moment) {
        let Some(outstanding) = self.outstanding.take_if(|o| o.command.id == id) else {
            self.note(Note::StaleOutcome);
            return;
        };
        let Outstanding {
            command,
            permit,
            wall,
        } = outstanding;
        let success = outcome.result.is_ok();
        let event = RecoveryEvent {
            timestamp: wall.as_secs_f64(),
            timestamp_iso: wall.to_iso8601(),
            action: command.action,
            trigger: Trigger::HealthCheck,
            health_status: command.health_status,
            success,
            duration_ms: outcome.elapsed.as_secs_f64() * 1000.0,
            error_message: outcome.result.as_ref().err().map(ToString::to_string),
        };
        let before = self.breaker.state();
        let counted = if success {
            self.breaker.on_success(permit, now)
        } else {
            self.breaker.on_failure(permit, now)
        };
        if counted == Report::Stale {
            self.note(Note::StaleOutcome);
        }
        self.note_breaker_change(before);
        let c = &mut self.counters;
        c.total += 1;
        c.by_action[action_index(command.action)][usize::from(success)] += 1;
        if success {
            c.successful += 1;
        } else {
            c.failed += 1;
        }
        let cap = self.settings.history_size.clamp(1, MAX_RECOVERY_HISTORY);
        while self.history.len() >= cap {
            self.history.pop_front();
        }
        self.history.push_back(event.clone());
        self.emit(Output::Finished {
            event,
            attempt: command.attempt,
            max_attempts: command.max_attempts,
            result: outcome.result,
        });
    }

    /// Up to `limit` most recent events, oldest first.
    pub fn history(&self, limit: usize) -> Vec<RecoveryEvent> {
        let skip = self.history.len().saturating_sub(limit);
        self.history.iter().skip(skip).cloned().collect()
    }

    pub fn breaker_state(&self) -> CircuitState {
        self.breaker.state()
    }

    pub fn strategy_status(&self) -> StrategyStatus {
        self.strategy.status()
    }

    /// A snapshot for `/diagnostics` at `now`; never changes the loop.
    pub fn status(&self, recent: usize, now: Moment) -> RecoveryStatus {
        let c = &self.counters;
        RecoveryStatus {
            enabled: self.settings.enabled,
            circuit_breaker_state: self.breaker.state(),
            circuit_breaker: self.breaker.status(now),
            strategy: self.strategy.status(),
            total_recoveries: c.total,
            successful_recoveries: c.successful,
            failed_recoveries: c.failed,
            rejected_by_breaker: c.rejected,
            skipped_attempts_exhausted: c.exhausted_skips,
            episode_attempts: self.episode_attempts,
            max_recovery_attempts: self.settings.max_recovery_attempts,
            recovery_in_progress: self.outstanding.is_some(),
            recent_events: self.history(recent),
        }
    }

    /// Counters for `/metrics` at `now`; never changes the loop.
    pub fn counts(&self, now: Moment) -> RecoveryCounts {
        let mut by_action = Vec::new();
        for action in ACTIONS.iter().skip(1) {
            for success in [true, false] {
                by_action.push((
                    *action,
                    success,
                    self.counters.by_action[action_index(*action)][usize::from(success)],
                ));
            }
        }
        RecoveryCounts {
            by_action,
            rejected_by_breaker: self.counters.rejected,
            breaker_trips: self.breaker.status(now).trip_count,
            breaker_state: Some(self.breaker.state()),
        }
    }
}
