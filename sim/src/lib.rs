//! Deterministic simulation harness for warden (see ARCHITECTURE.md, "The
//! simulation").
//!
//! The real hub (the daemon's router, Socket.IO layer and handlers) is served
//! over turmoil's simulated TCP ([`net::SimListener`]); simulated dashboards
//! and hooks speak Engine.IO v4 / Socket.IO v5 over a websocket on a simulated
//! stream ([`client::SioClient`]); the hub's clock follows simulated time
//! ([`clock::SimClock`]); the daemon's own PID claim runs on a simulated
//! machine's files, locks and processes ([`pid::SimMachine`]). Every run is a function of one seed
//! ([`seeds`]), and records a [`trace::Trace`] that two runs of the same seed
//! reproduce byte for byte.
//!
//! Not here: the scenarios themselves (`sim/tests/*.rs`), and anything that
//! reads the wall clock, the OS RNG or the real filesystem while a
//! simulation runs.

pub mod actors;
pub mod client;
pub mod clock;
pub mod hub;
pub mod net;
pub mod pid;
pub mod scenarios;
pub mod seeds;
pub mod trace;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, poisoned or not: the harness's shared state is plain data
/// that a panicking host leaves consistent.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
