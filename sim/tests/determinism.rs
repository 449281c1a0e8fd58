//! The determinism check: one scenario run twice with the same seed records
//! byte-identical traces. If this fails, something in the simulation reads
//! the wall clock, the OS RNG, a `HashMap`'s iteration order or an unbiased
//! `select!` in a way that changes what happens; replaying a seed would then
//! not reproduce a failure.

use warden_sim::scenarios::partition;
use warden_sim::seeds::run_seeds;
use warden_sim::trace::Trace;

#[test]
fn same_seed_same_trace() {
    run_seeds("determinism", "same_seed_same_trace", 3, |seed, trace| {
        let first = Trace::new();
        let covered = partition::run(seed, &first)?;
        let second = Trace::new();
        partition::run(seed, &second)?;
        let (a, b) = (first.to_text(), second.to_text());
        for line in a.lines() {
            trace.record("first", line);
        }
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
    });
}
