//! Dashboards with connection state recovery cut off (a partition) or
//! closed (restart_service) and reconnecting while a hook sends: every
//! reconnect recovers, and every dashboard ends with every event once, in
//! order (see `warden_sim::scenarios::recovery` and `restart::run_recovering`).

use warden_sim::scenarios::{recovery, restart};
use warden_sim::seeds::run_seeds;

#[test]
fn recovered_dashboards_miss_nothing() {
    run_seeds(
        "recovery",
        "recovered_dashboards_miss_nothing",
        20,
        recovery::run,
    );
}

#[test]
fn recovered_dashboards_miss_nothing_across_restarts() {
    run_seeds(
        "recovery",
        "recovered_dashboards_miss_nothing_across_restarts",
        20,
        restart::run_recovering,
    );
}
