//! The PID lifecycle under races and crashes: many starters on one port,
//! exactly one claims; a crashed host's leftover file is classified stale
//! and claimed by the next start (see `warden_sim::scenarios::pid_race` and
//! `warden_sim::scenarios::crash`).

use warden_sim::scenarios::pid_race;
use warden_sim::seeds::run_seeds;

#[test]
fn starters_race_exactly_one_claims() {
    run_seeds("pid", "starters_race_exactly_one_claims", 50, pid_race::run);
}

#[test]
fn crash_and_bounce_reclaims_stale_file() {
    run_seeds(
        "pid",
        "crash_and_bounce_reclaims_stale_file",
        30,
        warden_sim::scenarios::crash::run,
    );
}
