//! restart_service under load: clients reconnect, the listener serves again,
//! the PID record never changes (see `warden_sim::scenarios::restart`).

use warden_sim::scenarios::restart;
use warden_sim::seeds::run_seeds;
use warden_sim::trace::Trace;

#[test]
fn restart_under_load() {
    run_seeds("restart", "restart_under_load", 20, restart::run);
}

/// The squatter and the serving generation's retries keep the run a
/// function of its seed.
#[test]
fn restart_same_seed_same_trace() {
    run_seeds(
        "restart",
        "restart_same_seed_same_trace",
        2,
        |seed, trace| {
            let (first, second) = (Trace::new(), Trace::new());
            let covered = restart::run(seed, &first)?;
            restart::run(seed, &second)?;
            let (a, b) = (first.to_text(), second.to_text());
            trace.record("check", format!("{} trace lines", a.lines().count()));
            match a.lines().zip(b.lines()).position(|(x, y)| x != y) {
                Some(line) => Err(format!(
                    "two runs of seed {seed} diverged at trace line {line}"
                )),
                None if a.lines().count() != b.lines().count() => {
                    Err(format!("two runs of seed {seed} differ in length"))
                }
                None => Ok(covered * 2),
            }
        },
    );
}
