//! Seeds: which runs a scenario makes, how a failure is reported, and the
//! short/long modes.
//!
//! Every scenario is a function of one `u64` seed: it seeds turmoil
//! (`Builder::rng_seed`) and the harness's own choices ([`harness_rng`]) from
//! it. [`run_seeds`] runs a scenario over a list of seeds chosen by the
//! environment:
//!
//! - nothing set: the scenario's short-mode count (seeds `0..n`), what
//!   `cargo test` runs;
//! - `WARDEN_SIM_SEEDS=10000`: long mode, seeds `0..10000` (offset by
//!   `WARDEN_SIM_SEED_BASE` if set);
//! - `WARDEN_SIM_SEED=1234`: that one seed, to replay a failure.
//!
//! A failing seed stops the run with the seed, the one command that replays
//! it, and the tail of its trace. The runner reads the machine's clock once
//! before and once after all seeds to report wall time; nothing inside a
//! simulation does.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::clock::sim_epoch;
use crate::trace::Trace;

/// turmoil's step: every host runs this much simulated time per step and
/// the network delivers at step boundaries. Timers inside a host still fire
/// at their exact virtual instants. 5 ms keeps debug builds fast (each step
/// drives every host's runtime once) while staying far below the hub's
/// heartbeat and the clients' timeouts.
pub const SIM_TICK: Duration = Duration::from_millis(5);

/// The harness's RNG for one seed (a different stream from turmoil's, but a
/// function of the same seed).
pub fn harness_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0x7761_7264_656e_5f73)
}

/// A turmoil builder for one seed: seeded, with the fixed simulation epoch,
/// a [`SIM_TICK`] tick and the given simulated-time budget.
pub fn sim_builder(seed: u64, duration: Duration) -> turmoil::Builder {
    sim_builder_with_tick(seed, duration, SIM_TICK)
}

/// [`sim_builder`] with another step, for scenarios whose network timing
/// matters less than their length (health checks every second or more).
pub fn sim_builder_with_tick(seed: u64, duration: Duration, tick: Duration) -> turmoil::Builder {
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(seed)
        .epoch(sim_epoch())
        .tick_duration(tick)
        .simulation_duration(duration);
    builder
}

/// The seeds to run, from the environment (see the module doc).
pub fn seeds_from_env(short_mode_seeds: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("WARDEN_SIM_SEED") {
        return vec![seed];
    }
    let count = env_u64("WARDEN_SIM_SEEDS").unwrap_or(short_mode_seeds);
    let base = env_u64("WARDEN_SIM_SEED_BASE").unwrap_or(0);
    (0..count).map(|i| base.wrapping_add(i)).collect()
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse() {
        Ok(value) => Some(value),
        Err(_) => panic!("{name}={text:?} is not an unsigned integer"),
    }
}

/// The command that replays `seed` of test `test_fn` in `sim/tests/{test_file}.rs`.
pub fn replay_command(test_file: &str, test_fn: &str, seed: u64) -> String {
    format!("WARDEN_SIM_SEED={seed} cargo test -p warden-sim --test {test_file} -- {test_fn}")
}

/// What a run of many seeds covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coverage {
    pub seeds: u64,
    pub simulated: Duration,
    pub wall: Duration,
}

/// Runs `scenario` once per seed. The scenario returns the simulated time it
/// covered, or a description of the violated invariant; a panic counts as a
/// failure too. On the first failure, prints the seed, the replay command
/// and the trace's tail, then panics.
pub fn run_seeds<F>(test_file: &str, test_fn: &str, short_mode_seeds: u64, scenario: F) -> Coverage
where
    F: Fn(u64, &Trace) -> Result<Duration, String>,
{
    let seeds = seeds_from_env(short_mode_seeds);
    let started = Instant::now();
    let mut simulated = Duration::ZERO;
    let progress_every = 500;
    for (index, &seed) in seeds.iter().enumerate() {
        let trace = Trace::new();
        let outcome = catch_unwind(AssertUnwindSafe(|| scenario(seed, &trace)));
        let failure = match outcome {
            Ok(Ok(covered)) => {
                print_trace_if_asked(test_fn, seed, &trace);
                simulated += covered;
                None
            }
            Ok(Err(violation)) => Some(violation),
            Err(panic) => Some(panic_message(panic.as_ref())),
        };
        if let Some(failure) = failure {
            let replay = replay_command(test_file, test_fn, seed);
            print_trace_if_asked(test_fn, seed, &trace);
            eprintln!(
                "\n=== simulation {test_fn} failed with seed {seed}\n{failure}\n\
                 --- last trace lines:\n{}\n--- replay with:\n    {replay}\n",
                trace.tail(40)
            );
            panic!("{test_fn}: seed {seed} failed: {failure}\nreplay: {replay}");
        }
        if seeds.len() > progress_every && (index + 1) % progress_every == 0 {
            eprintln!(
                "{test_fn}: {} / {} seeds, {:?} wall",
                index + 1,
                seeds.len(),
                started.elapsed()
            );
        }
    }
    let coverage = Coverage {
        seeds: seeds.len() as u64,
        simulated,
        wall: started.elapsed(),
    };
    eprintln!(
        "{test_fn}: {} seeds passed, {:.1} s simulated, {:.1} s wall",
        coverage.seeds,
        coverage.simulated.as_secs_f64(),
        coverage.wall.as_secs_f64()
    );
    coverage
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Returns `Err(message)` from the enclosing function when `cond` is false:
/// scenarios report violated invariants as values so the runner can name
/// the seed.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

/// When `WARDEN_SIM_TRACE` is set, prints a run's whole trace (for reading
/// one replayed seed).
pub fn print_trace_if_asked(test_fn: &str, seed: u64, trace: &Trace) {
    if std::env::var_os("WARDEN_SIM_TRACE").is_some() {
        eprintln!("--- trace of {test_fn} seed {seed}:\n{}", trace.to_text());
    }
}
