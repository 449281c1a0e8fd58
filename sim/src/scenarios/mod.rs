//! The scenarios, one module each. Each exposes `run(seed, &Trace) ->
//! Result<Duration, String>`: one simulated run for one seed, returning the
//! simulated time it covered or the invariant it found violated. The test
//! files under `sim/tests/` run them over many seeds; the determinism check
//! runs one twice and compares the traces.

pub mod crash;
pub mod degraded;
pub mod flood;
pub mod partition;
pub mod pid_race;
pub mod restart;
