//! The `/readyz` rule: whether this node should receive traffic now.
//!
//! A node is ready unless one of [`NotReady`] holds: the circuit breaker
//! blocks recovery (open or forced open: the node is unwell and may not heal
//! itself), the hub is draining or has no socket (a restart is under way),
//! or, in cluster mode, the dependency (Redis) is not connected (events
//! would not cross nodes). Readiness never drives a remedy; `/livez` is
//! always 200 and `/health` is 503 only for critical.

use crate::breaker::CircuitState;

/// What the rule reads; the daemon gathers it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ReadinessFacts {
    pub breaker: CircuitState,
    pub draining: bool,
    /// Cluster mode: whether the dependency is connected; `None` without one.
    pub dependency_connected: Option<bool>,
}

/// Why a node is not ready, in the order `/readyz` lists them.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// The breaker is open or forced open.
    Breaker(CircuitState),
    /// Serving is being drained or no socket is bound.
    Draining,
    /// The dependency (Redis) is not connected.
    DependencyDown,
}

/// Every reason the node is not ready; empty means ready.
pub fn not_ready(facts: ReadinessFacts) -> Vec<NotReady> {
    let mut reasons = Vec::new();
    if matches!(facts.breaker, CircuitState::Open | CircuitState::ForcedOpen) {
        reasons.push(NotReady::Breaker(facts.breaker));
    }
    if facts.draining {
        reasons.push(NotReady::Draining);
    }
    if facts.dependency_connected == Some(false) {
        reasons.push(NotReady::DependencyDown);
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(breaker: CircuitState, draining: bool, dep: Option<bool>) -> ReadinessFacts {
        ReadinessFacts {
            breaker,
            draining,
            dependency_connected: dep,
        }
    }

    #[test]
    fn ready_unless_the_breaker_blocks_the_hub_drains_or_the_dependency_is_down() {
        for state in [
            CircuitState::Closed,
            CircuitState::HalfOpen,
            CircuitState::Disabled,
        ] {
            assert!(not_ready(facts(state, false, None)).is_empty(), "{state}");
            assert!(not_ready(facts(state, false, Some(true))).is_empty());
        }
        assert_eq!(
            not_ready(facts(CircuitState::ForcedOpen, true, Some(false))),
            vec![
                NotReady::Breaker(CircuitState::ForcedOpen),
                NotReady::Draining,
                NotReady::DependencyDown
            ]
        );
        assert_eq!(
            not_ready(facts(CircuitState::Open, false, None)),
            vec![NotReady::Breaker(CircuitState::Open)]
        );
    }
}
