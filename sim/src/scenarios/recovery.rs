//! Scenario: dashboards with connection state recovery cut off from the hub
//! while a hook keeps sending (the partition scenario, recovery on).
//!
//! A seeded subset of recovering dashboards (each sends back its session id
//! and last offset on every reconnect, as socket.io-client does) is cut off
//! for a seeded time; events are sent before, during and after. Invariants,
//! over every seed:
//! - every reconnect recovers its session (the CONNECT carries the same pid);
//! - every dashboard ends with every event, exactly once, in order: zero
//!   missing events for every recovered session;
//! - when everyone leaves, `clients_connected` is exactly 0 and the hub
//!   counted no error.
//!
//! The run is the partition scenario's ([`super::partition::run_cut`]);
//! this module checks what the recovering dashboards ended with.

use std::time::Duration;

use super::partition::{Dashboards, run_cut};
use crate::trace::Trace;

/// One run of the scenario for `seed`; returns the simulated time covered.
pub fn run(seed: u64, trace: &Trace) -> Result<Duration, String> {
    let (covered, views) = run_cut(seed, trace, Dashboards::Recovering)?;
    for (i, view) in views.iter().enumerate() {
        let view = view.view();
        let recovered = view.recovery.as_ref().map_or(0, |r| r.recovered);
        trace.record(
            "result",
            format!(
                "dash-{i}: connections={} recovered={recovered} received={}",
                view.connections,
                view.received.len()
            ),
        );
        if recovered + 1 != view.connections {
            return Err(format!(
                "dash-{i}: {} reconnects, {recovered} recovered",
                view.connections - 1
            ));
        }
        let expected: Vec<u64> = (0..view.received.len() as u64).collect();
        if view.received != expected {
            return Err(format!(
                "dash-{i}: not every event once in order: {:?}",
                view.received
            ));
        }
    }
    Ok(covered)
}
