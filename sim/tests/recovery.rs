//! Dashboards with connection state recovery cut off and reconnecting while
//! a hook sends: every reconnect recovers, and every dashboard ends with
//! every event once, in order (see `warden_sim::scenarios::recovery`).

use warden_sim::scenarios::recovery;
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
