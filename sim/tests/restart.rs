//! restart_service under load: clients reconnect, the listener serves again,
//! the PID record never changes (see `warden_sim::scenarios::restart`).

use warden_sim::scenarios::restart;
use warden_sim::seeds::run_seeds;

#[test]
fn restart_under_load() {
    run_seeds("restart", "restart_under_load", 20, restart::run);
}
