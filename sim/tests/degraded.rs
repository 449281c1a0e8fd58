//! A degraded process under the real HealthMonitor and RecoveryManager: the
//! ladder escalates in order, the breaker stops a recovery loop, emergency
//! stop is latched (see `warden_sim::scenarios::degraded`).

use warden_sim::scenarios::degraded;
use warden_sim::seeds::run_seeds;

#[test]
fn degraded_process_escalates_and_latches() {
    run_seeds(
        "degraded",
        "degraded_process_escalates_and_latches",
        20,
        degraded::run,
    );
}
