//! The determinism check: a scenario run twice with the same seed records
//! byte-identical traces. If this fails, something in the simulation reads
//! the wall clock, the OS RNG, a `HashMap`'s iteration order, an unbiased
//! `select!` or a blocking thread's timing in a way that changes what
//! happens; replaying a seed would then not reproduce a failure.
//!
//! Checked on the partition scenario (network, heartbeats, reconnects) and
//! the degraded scenario (the health monitor runs its checkers on tokio's
//! blocking pool, and the recovery manager's timeouts), and the hostile
//! scenario (many hosts, spawned tasks, timeouts at the door).

use std::time::Duration;

use warden_sim::scenarios::{degraded, hostile, partition};
use warden_sim::seeds::run_seeds;
use warden_sim::trace::Trace;

fn twice(
    seed: u64,
    trace: &Trace,
    scenario: fn(u64, &Trace) -> Result<Duration, String>,
) -> Result<Duration, String> {
    let first = Trace::new();
    let covered = scenario(seed, &first)?;
    let second = Trace::new();
    scenario(seed, &second)?;
    let (a, b) = (first.to_text(), second.to_text());
    trace.record("check", format!("{} trace lines", a.lines().count()));
    if a != b {
        let diverged = a
            .lines()
            .zip(b.lines())
            .position(|(x, y)| x != y)
            .unwrap_or(a.lines().count().min(b.lines().count()));
        return Err(format!(
            "two runs of seed {seed} diverged at trace line {diverged}:\n  first:  {}\n  second: {}",
            a.lines().nth(diverged).unwrap_or("<end>"),
            b.lines().nth(diverged).unwrap_or("<end>")
        ));
    }
    if a.lines().count() < 10 {
        return Err(format!("the trace is too short to show anything:\n{a}"));
    }
    Ok(covered * 2)
}

#[test]
fn partition_same_seed_same_trace() {
    run_seeds(
        "determinism",
        "partition_same_seed_same_trace",
        3,
        |seed, trace| twice(seed, trace, partition::run),
    );
}

#[test]
fn degraded_same_seed_same_trace() {
    run_seeds(
        "determinism",
        "degraded_same_seed_same_trace",
        3,
        |seed, trace| twice(seed, trace, degraded::run),
    );
}

#[test]
fn hostile_same_seed_same_trace() {
    run_seeds(
        "determinism",
        "hostile_same_seed_same_trace",
        2,
        |seed, trace| twice(seed, trace, hostile::run),
    );
}
