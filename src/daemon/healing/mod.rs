//! Self-healing around the pure recovery loop: the checkers that gather
//! facts, the monitor that runs them, the executor that carries out the
//! loop's commands, alerts, the HTTP endpoints (`/health`, `/diagnostics`,
//! `/metrics`, the status page), live reload, and `assemble`, which wires
//! them to a serving generation.

pub mod alerts;
pub mod assemble;
pub mod checkers;
pub mod endpoints;
pub mod executor;
pub mod metrics;
pub mod monitor;
pub mod page;
pub mod reload;
