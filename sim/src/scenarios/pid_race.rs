//! Scenario: many starters racing for one port on one machine.
//!
//! Between 2 and 12 daemon processes start at once on the simulated machine,
//! each with seeded I/O latency between the steps of the PID file claim
//! (open, lock, read + probe, decide, write). Sometimes an earlier instance
//! left a file behind (gone, zombie, pid reused, empty, corrupt, legacy).
//! Invariants, over every seed:
//! - exactly one starter claims the file, and it alone binds the port;
//! - every other starter is refused with a conflict naming the winner's pid
//!   (the busy-lock settle waits for the winner's record);
//! - only the winner ever wrote the file, and the file is its record;
//! - the winner's decision is the one the leftover warrants (free or empty
//!   for no file, stale with the matching reason otherwise).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use warden::pidfile::{ClaimDecision, PidFileContent, StaleReason};
use warden::probe::{ProcessSnapshot, ProcessStatus};
use warden::time::{Clock, WallTime};

use crate::clock::{SIM_EPOCH_MS, SimClock};
use crate::ensure;
use crate::hub::HUB_PORT;
use crate::net::SimListener;
use crate::pid::{Exit, SimMachine, StartLatency, StartOutcome, record_for, start_daemon};
use crate::seeds::{harness_rng, sim_builder};
use crate::trace::Trace;

/// What an earlier instance left behind, and what a new start must conclude.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Leftover {
    NoFile,
    /// A record whose process has been reaped.
    Gone,
    /// A record whose process is a zombie.
    Zombie,
    /// A record whose pid now belongs to another program.
    PidReused,
    Empty,
    Corrupt,
    /// A bare integer (older writers) whose process is gone.
    Legacy,
}

impl Leftover {
    pub fn draw(rng: &mut ChaCha8Rng) -> Leftover {
        const ALL: [Leftover; 7] = [
            Leftover::NoFile,
            Leftover::Gone,
            Leftover::Zombie,
            Leftover::PidReused,
            Leftover::Empty,
            Leftover::Corrupt,
            Leftover::Legacy,
        ];
        ALL[rng.random_range(0..ALL.len())]
    }

    /// Whether `decision` is what a start must conclude from this leftover
    /// (left by `old_pid`). With no file, the first locker may still find the
    /// empty file another starter just created: `Free` or `Stale(Empty)`.
    pub fn warrants(self, decision: &ClaimDecision, old_pid: u32) -> bool {
        match (self, decision) {
            (Leftover::NoFile, ClaimDecision::Free) => true,
            (Leftover::NoFile | Leftover::Empty, ClaimDecision::Stale(StaleReason::Empty)) => true,
            (
                Leftover::Gone | Leftover::Legacy,
                ClaimDecision::Stale(StaleReason::ProcessGone { pid }),
            ) => *pid == old_pid,
            (Leftover::Zombie, ClaimDecision::Stale(StaleReason::Zombie { pid })) => {
                *pid == old_pid
            }
            (Leftover::PidReused, ClaimDecision::Stale(StaleReason::PidReused { pid, .. })) => {
                *pid == old_pid
            }
            (Leftover::Corrupt, ClaimDecision::Stale(StaleReason::Corrupt { .. })) => true,
            _ => false,
        }
    }
}

/// Leaves `leftover` on `machine` as an instance with `old_pid` would have.
pub fn leave_behind(
    machine: &SimMachine,
    leftover: Leftover,
    old_pid: u32,
    clock: &SimClock,
) -> Result<(), String> {
    let old = ProcessSnapshot::new(
        old_pid,
        "warden",
        &["warden", "start"],
        WallTime::from_millis(SIM_EPOCH_MS - 86_400_000),
    );
    let bytes: Vec<u8> = match leftover {
        Leftover::NoFile => return Ok(()),
        Leftover::Empty => Vec::new(),
        Leftover::Corrupt => b"{\"pid\": 12, \"start_time\": ".to_vec(),
        Leftover::Legacy => format!("{old_pid}\n").into_bytes(),
        Leftover::Gone | Leftover::Zombie | Leftover::PidReused => {
            record_for(&old, HUB_PORT, old.start_time)
                .to_json_pretty()
                .into_bytes()
        }
    };
    match leftover {
        Leftover::Zombie => machine.run_process(old.with_status(ProcessStatus::Zombie)),
        Leftover::PidReused => machine.run_process(ProcessSnapshot::new(
            old_pid,
            "postgres",
            &["postgres", "-D", "/var/lib/postgres"],
            WallTime::from_millis(SIM_EPOCH_MS - 3_600_000),
        )),
        _ => machine.exit_process(old_pid, Exit::Gone),
    }
    machine.open_or_create(clock.wall());
    let guard = machine
        .try_lock()
        .ok_or("the machine's lock is held before the race")?;
    machine.write(
        &guard,
        old_pid,
        bytes,
        WallTime::from_millis(SIM_EPOCH_MS - 86_400_000),
    )
}

#[derive(Debug)]
enum Result_ {
    Won {
        pid: u32,
        decision: ClaimDecision,
        bound: bool,
    },
    Lost {
        pid: u32,
        decision: ClaimDecision,
    },
}

/// One run of the scenario for `seed`; returns the simulated time covered.
pub fn run(seed: u64, trace: &Trace) -> Result<Duration, String> {
    let mut rng = harness_rng(seed);
    let starters: usize = rng.random_range(2..=12);
    let leftover = Leftover::draw(&mut rng);
    let old_pid: u32 = rng.random_range(100..=999);
    let mut pids: Vec<u32> = Vec::new();
    while pids.len() < starters {
        let pid = rng.random_range(1_000..=40_000);
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    let mut latency = || StartLatency {
        before_open: Duration::from_millis(rng.random_range(0..=30)),
        open_to_lock: Duration::from_millis(rng.random_range(0..=10)),
        lock_to_read: Duration::from_millis(rng.random_range(0..=10)),
        decide_to_write: Duration::from_millis(rng.random_range(0..=50)),
    };
    let latencies: Vec<StartLatency> = (0..starters).map(|_| latency()).collect();
    trace.record(
        "setup",
        format!("starters={pids:?} leftover={leftover:?} old_pid={old_pid}"),
    );

    let mut sim = sim_builder(seed, Duration::from_secs(60)).build();
    let clock = SimClock::new();
    let machine = SimMachine::new();
    leave_behind(&machine, leftover, old_pid, &clock)?;
    let results: Arc<Mutex<Vec<Result_>>> = Arc::default();

    {
        let machine = machine.clone();
        let results = Arc::clone(&results);
        let trace = trace.clone();
        sim.client("machine", async move {
            let mut tasks = Vec::new();
            for (pid, latency) in pids.iter().copied().zip(latencies) {
                let machine = machine.clone();
                let clock = clock.clone();
                let results = Arc::clone(&results);
                let trace = trace.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    let me =
                        ProcessSnapshot::new(pid, "warden", &["warden", "start"], clock.wall());
                    machine.run_process(me.clone());
                    let outcome = start_daemon(&machine, &me, HUB_PORT, &clock, latency).await?;
                    let result = match outcome {
                        StartOutcome::Claimed(claimed) => {
                            let (guard, decision) = (claimed.guard, claimed.decision);
                            let listener = SimListener::bind(HUB_PORT).await;
                            trace.record(
                                &format!("pid {pid}"),
                                format!("claimed ({decision:?}), bind ok={}", listener.is_ok()),
                            );
                            let bound = listener.is_ok();
                            // Hold the lock and the port until every starter is done.
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            drop((guard, listener));
                            Result_::Won {
                                pid,
                                decision,
                                bound,
                            }
                        }
                        StartOutcome::Refused { decision } => {
                            trace.record(&format!("pid {pid}"), format!("refused ({decision:?})"));
                            machine.exit_process(pid, Exit::Gone);
                            Result_::Lost { pid, decision }
                        }
                    };
                    results
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(result);
                    Ok::<(), String>(())
                }));
            }
            for task in tasks {
                task.await.map_err(|e| e.to_string())??;
            }
            Ok(())
        });
    }
    sim.run().map_err(|e| e.to_string())?;

    let results = results.lock().unwrap_or_else(PoisonError::into_inner);
    ensure!(
        results.len() == starters,
        "{} of {starters} starters finished",
        results.len()
    );
    let winners: Vec<(u32, &ClaimDecision, bool)> = results
        .iter()
        .filter_map(|r| match r {
            Result_::Won {
                pid,
                decision,
                bound,
            } => Some((*pid, decision, *bound)),
            Result_::Lost { .. } => None,
        })
        .collect();
    ensure!(
        winners.len() == 1,
        "{} starters claimed the file: {winners:?}",
        winners.len()
    );
    let (winner, decision, bound) = winners[0];
    ensure!(bound, "the winner {winner} could not bind the port");
    ensure!(
        leftover.warrants(decision, old_pid),
        "the winner decided {decision:?} for leftover {leftover:?} of pid {old_pid}"
    );
    for result in results.iter() {
        if let Result_::Lost { pid, decision } = result {
            ensure!(
                matches!(decision, ClaimDecision::Conflict { pid: Some(p), .. } if *p == winner),
                "starter {pid} was refused with {decision:?}, not a conflict naming the winner {winner}"
            );
        }
    }
    let writers = machine.writers();
    let expected_writers: Vec<u32> = match leftover {
        Leftover::NoFile => vec![winner],
        _ => vec![old_pid, winner],
    };
    ensure!(
        writers == expected_writers,
        "PID file writers {writers:?}, expected {expected_writers:?}"
    );
    ensure!(
        matches!(machine.content(), PidFileContent::Record(r) if r.pid == winner),
        "the file does not hold the winner's record: {:?}",
        machine.content()
    );
    trace.record("result", format!("winner {winner}: {decision:?}"));
    Ok(sim.elapsed())
}
