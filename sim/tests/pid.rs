//! The PID lifecycle under races and crashes: many starters on one port,
//! exactly one claims; a crashed host's leftover file is classified stale
//! and claimed by the next start (see `warden_sim::scenarios::pid_race` and
//! `warden_sim::scenarios::crash`).

use warden_sim::scenarios::pid_race;
use warden_sim::seeds::run_seeds;
use warden_sim::trace::Trace;

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

/// The race is a function of its seed: the same seed, the same trace.
#[test]
fn starters_race_same_seed_same_trace() {
    run_seeds(
        "pid",
        "starters_race_same_seed_same_trace",
        8,
        |seed, trace| {
            let (first, second) = (Trace::new(), Trace::new());
            let covered = pid_race::run(seed, &first)?;
            pid_race::run(seed, &second)?;
            let (a, b) = (first.to_text(), second.to_text());
            trace.record("check", format!("{} trace lines", a.lines().count()));
            if a != b {
                return Err(format!("two runs of seed {seed} diverged:\n{a}\n---\n{b}"));
            }
            Ok(covered * 2)
        },
    );
}
