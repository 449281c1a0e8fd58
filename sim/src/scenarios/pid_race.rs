//! Scenario: many starters racing for one port on one machine.
//!
//! Between 2 and 12 daemon processes start at once on the simulated machine,
//! each running the daemon's own PID claim (`daemon::pidfile::claim_with`
//! over [`crate::pid::SimProcess`]) with seeded I/O latency between its
//! steps (open, lock, read + probe, decide, write). Sometimes an earlier
//! instance left a file behind (gone, zombie, pid reused, empty, corrupt,
//! legacy), or is still running and exits cleanly during the race (its
//! guard's release unlinks the file, then lets the lock go: a starter that
//! opened the old file and locks it afterwards holds a lock on a file no
//! path names, which the claim's inode recheck must notice).
//! Invariants, over every seed:
//! - at most one starter claims the file, and it alone binds the port;
//!   exactly one unless an earlier instance held it for the whole race;
//! - every other starter is refused with a conflict naming the winner's pid
//!   (the busy-lock settle waits for the winner's record) or, while it ran,
//!   the exiting instance's; none that started after that one had gone;
//! - only the winner ever wrote a file (besides the earlier instance), and
//!   the file at the path is its record;
//! - the winner's decision is the one the leftover warrants (free or empty
//!   for no file or a cleanly removed one, stale with the matching reason
//!   otherwise).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use warden::pidfile::{PidFileContent, StaleReason};
use warden::probe::{ProcessSnapshot, ProcessStatus};
use warden::time::{Clock, WallTime};

use crate::clock::{SIM_EPOCH_MS, SimClock};
use crate::hub::HUB_PORT;
use crate::net::SimListener;
use crate::pid::{Exit, SimMachine, StartLatency, StartOutcome, record_for, start_daemon};
use crate::seeds::{harness_rng, sim_builder};
use crate::trace::Trace;
use crate::{ensure, lock};

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
    /// A running instance, which exits cleanly during the race.
    Exiting,
}

impl Leftover {
    pub fn draw(rng: &mut ChaCha8Rng) -> Leftover {
        const ALL: [Leftover; 8] = [
            Leftover::NoFile,
            Leftover::Gone,
            Leftover::Zombie,
            Leftover::PidReused,
            Leftover::Empty,
            Leftover::Corrupt,
            Leftover::Legacy,
            Leftover::Exiting,
        ];
        ALL[rng.random_range(0..ALL.len())]
    }

    /// Whether `stale` (why the winner found the file stale, `None` for no
    /// file) is what a start must conclude from this leftover (left by
    /// `old_pid`). With no file, the first locker may still find the empty
    /// file another starter just created: no reason or `Empty`.
    pub fn warrants(self, stale: Option<&StaleReason>, old_pid: u32) -> bool {
        match (self, stale) {
            (Leftover::NoFile | Leftover::Exiting, None) => true,
            (Leftover::NoFile | Leftover::Exiting | Leftover::Empty, Some(StaleReason::Empty)) => {
                true
            }
            (Leftover::Gone | Leftover::Legacy, Some(StaleReason::ProcessGone { pid })) => {
                *pid == old_pid
            }
            (Leftover::Zombie, Some(StaleReason::Zombie { pid })) => *pid == old_pid,
            (Leftover::PidReused, Some(StaleReason::PidReused { pid, .. })) => *pid == old_pid,
            (Leftover::Corrupt, Some(StaleReason::Corrupt { .. })) => true,
            _ => false,
        }
    }
}

/// Leaves `leftover` on `machine` as an instance with `old_pid` would have.
pub fn leave_behind(machine: &SimMachine, leftover: Leftover, old_pid: u32) {
    let old = ProcessSnapshot::new(
        old_pid,
        "warden",
        &["warden", "start"],
        WallTime::from_millis(SIM_EPOCH_MS - 86_400_000),
    );
    let bytes: Vec<u8> = match leftover {
        // The exiting instance claims for itself (see `run`).
        Leftover::NoFile | Leftover::Exiting => return,
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
    machine.leave_file(
        HUB_PORT,
        bytes,
        WallTime::from_millis(SIM_EPOCH_MS - 86_400_000),
        old_pid,
    );
}

#[derive(Debug)]
enum Result_ {
    Won {
        pid: u32,
        stale: Option<StaleReason>,
        bound: bool,
    },
    Lost {
        pid: u32,
        holder: Option<u32>,
        /// The starter began after the exiting instance had gone.
        after_exit: bool,
    },
}

/// When the exiting instance (if any) has released the file and gone.
#[derive(Clone, Debug, Default)]
struct ExitMark(Arc<Mutex<Option<Duration>>>);

impl ExitMark {
    fn set(&self) {
        *lock(&self.0) = turmoil::sim_elapsed();
    }

    /// True once the instance had gone before `at`.
    fn before(&self, at: Option<Duration>) -> bool {
        match (*lock(&self.0), at) {
            (Some(gone), Some(at)) => gone <= at,
            _ => false,
        }
    }
}

/// Runs the earlier instance of [`Leftover::Exiting`]: it claims the file,
/// serves for `lifetime`, then releases it (the daemon's own release: unlink,
/// unlock) and exits.
async fn exiting_instance(
    machine: SimMachine,
    clock: SimClock,
    old_pid: u32,
    lifetime: Duration,
    exit: ExitMark,
    trace: Trace,
) -> Result<tokio::task::JoinHandle<Result<(), String>>, String> {
    let me = ProcessSnapshot::new(old_pid, "warden", &["warden", "start"], clock.wall());
    machine.run_process(me.clone());
    let outcome = start_daemon(&machine, &me, HUB_PORT, &clock, StartLatency::default()).await?;
    let StartOutcome::Claimed(claimed) = outcome else {
        return Err(format!(
            "the earlier instance {old_pid} was refused: {outcome:?}"
        ));
    };
    Ok(tokio::task::spawn_local(async move {
        tokio::time::sleep(lifetime).await;
        let removed = claimed.guard.release().map_err(|e| e.to_string())?;
        machine.exit_process(old_pid, Exit::Gone);
        exit.set();
        trace.record(
            &format!("pid {old_pid}"),
            format!("released (removed={removed}) and exited"),
        );
        Ok::<(), String>(())
    }))
}

/// One start of the race: claims, and on a win binds the port and holds both
/// until every starter is done.
async fn starter(
    machine: SimMachine,
    clock: SimClock,
    pid: u32,
    latency: StartLatency,
    exit: ExitMark,
    trace: Trace,
) -> Result<Result_, String> {
    let began = turmoil::sim_elapsed();
    let me = ProcessSnapshot::new(pid, "warden", &["warden", "start"], clock.wall());
    machine.run_process(me.clone());
    let outcome = start_daemon(&machine, &me, HUB_PORT, &clock, latency).await?;
    Ok(match outcome {
        StartOutcome::Claimed(claimed) => {
            let listener = SimListener::bind(HUB_PORT).await;
            trace.record(
                &format!("pid {pid}"),
                format!(
                    "claimed ({:?}), bind ok={}",
                    claimed.stale,
                    listener.is_ok()
                ),
            );
            let bound = listener.is_ok();
            // Hold the lock and the port until every starter is done.
            tokio::time::sleep(Duration::from_secs(10)).await;
            let stale = claimed.stale.clone();
            drop((claimed, listener));
            Result_::Won { pid, stale, bound }
        }
        StartOutcome::Refused { holder } => {
            trace.record(
                &format!("pid {pid}"),
                format!("refused (holder {holder:?})"),
            );
            machine.exit_process(pid, Exit::Gone);
            Result_::Lost {
                pid,
                holder,
                after_exit: exit.before(began),
            }
        }
    })
}

/// The seeded shape of one race.
#[derive(Clone, Debug)]
struct Race {
    /// The starters' pids, all different.
    pids: Vec<u32>,
    latencies: Vec<StartLatency>,
    leftover: Leftover,
    old_pid: u32,
    /// How long an exiting earlier instance still runs.
    lifetime: Duration,
}

impl Race {
    fn draw(rng: &mut ChaCha8Rng, trace: &Trace) -> Race {
        let starters: usize = rng.random_range(2..=12);
        let leftover = Leftover::draw(rng);
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
        let lifetime = Duration::from_millis(rng.random_range(0..=30));
        trace.record(
            "setup",
            format!(
                "starters={pids:?} leftover={leftover:?} old_pid={old_pid} lifetime={lifetime:?}"
            ),
        );
        Race {
            pids,
            latencies,
            leftover,
            old_pid,
            lifetime,
        }
    }
}

/// One run of the scenario for `seed`; returns the simulated time covered.
pub fn run(seed: u64, trace: &Trace) -> Result<Duration, String> {
    let mut rng = harness_rng(seed);
    let race = Race::draw(&mut rng, trace);
    let (starters, leftover, old_pid) = (race.pids.len(), race.leftover, race.old_pid);
    let mut sim = sim_builder(seed, Duration::from_secs(60)).build();
    let clock = SimClock::new();
    let machine = SimMachine::new();
    leave_behind(&machine, leftover, old_pid);
    let results: Arc<Mutex<Vec<Result_>>> = Arc::default();
    {
        let (machine, results, trace) = (machine.clone(), Arc::clone(&results), trace.clone());
        sim.client("machine", async move {
            let outcomes = run_race(race, machine, clock, trace).await?;
            lock(&results).extend(outcomes);
            Ok(())
        });
    }
    sim.run().map_err(|e| e.to_string())?;
    let results = lock(&results);
    check(&results, starters, leftover, old_pid, &machine)?;
    Ok(sim.elapsed())
}

/// On the machine: the exiting earlier instance (if any), then every
/// starter at once; returns their outcomes in starting order once the
/// earlier instance has exited too.
async fn run_race(
    race: Race,
    machine: SimMachine,
    clock: SimClock,
    trace: Trace,
) -> Result<Vec<Result_>, String> {
    let exit = ExitMark::default();
    let mut exiting = None;
    if race.leftover == Leftover::Exiting {
        let old = (machine.clone(), clock.clone(), exit.clone(), trace.clone());
        exiting =
            Some(exiting_instance(old.0, old.1, race.old_pid, race.lifetime, old.2, old.3).await?);
    }
    let tasks: Vec<_> = race
        .pids
        .iter()
        .zip(race.latencies)
        .map(|(pid, latency)| {
            let run = starter(
                machine.clone(),
                clock.clone(),
                *pid,
                latency,
                exit.clone(),
                trace.clone(),
            );
            tokio::task::spawn_local(run)
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.map_err(|e| e.to_string())??);
    }
    // The earlier instance has exited by the end of the run.
    if let Some(exiting) = exiting {
        exiting.await.map_err(|e| e.to_string())??;
    }
    Ok(results)
}

/// The scenario's invariants (see the module doc).
fn check(
    results: &[Result_],
    starters: usize,
    leftover: Leftover,
    old_pid: u32,
    machine: &SimMachine,
) -> Result<(), String> {
    ensure!(
        results.len() == starters,
        "{} of {starters} starters finished",
        results.len()
    );
    let winner = one_winner(results, leftover, old_pid)?;
    losers_named_the_winner(results, winner, leftover, old_pid)?;
    let mut expected_writers: Vec<u32> = match leftover {
        Leftover::NoFile => vec![],
        _ => vec![old_pid],
    };
    expected_writers.extend(winner);
    let writers = machine.writers();
    ensure!(
        writers == expected_writers,
        "PID file writers {writers:?}, expected {expected_writers:?}"
    );
    let content = machine.content(HUB_PORT);
    ensure!(
        match winner {
            Some(winner) => matches!(&content, PidFileContent::Record(r) if r.pid == winner),
            None => content == PidFileContent::Absent,
        },
        "the file does not hold the winner's ({winner:?}) record: {content:?}"
    );
    Ok(())
}

/// Exactly one starter claimed the file, bound the port and judged the
/// leftover rightly (none only when every starter met the exiting earlier
/// instance while it ran); returns its pid.
fn one_winner(
    results: &[Result_],
    leftover: Leftover,
    old_pid: u32,
) -> Result<Option<u32>, String> {
    let winners: Vec<(u32, Option<&StaleReason>, bool)> = results
        .iter()
        .filter_map(|r| match r {
            Result_::Won { pid, stale, bound } => Some((*pid, stale.as_ref(), *bound)),
            Result_::Lost { .. } => None,
        })
        .collect();
    let late_starter = results.iter().any(|r| {
        matches!(
            r,
            Result_::Lost {
                after_exit: true,
                ..
            }
        )
    });
    let all_met_the_old = leftover == Leftover::Exiting
        && results
            .iter()
            .all(|r| matches!(r, Result_::Lost { holder: Some(h), .. } if *h == old_pid));
    ensure!(
        winners.len() == 1 || (winners.is_empty() && all_met_the_old && !late_starter),
        "{} starters claimed the file: {winners:?}",
        winners.len()
    );
    if let Some((winner, stale, bound)) = winners.first() {
        ensure!(*bound, "the winner {winner} could not bind the port");
        ensure!(
            leftover.warrants(*stale, old_pid),
            "the winner decided {stale:?} for leftover {leftover:?} of pid {old_pid}"
        );
    }
    Ok(winners.first().map(|w| w.0))
}

/// Every refused starter named the winner (or the exiting earlier instance,
/// if it was refused before that one exited).
fn losers_named_the_winner(
    results: &[Result_],
    winner: Option<u32>,
    leftover: Leftover,
    old_pid: u32,
) -> Result<(), String> {
    for result in results {
        if let Result_::Lost {
            pid,
            holder,
            after_exit,
        } = result
        {
            let named_old = leftover == Leftover::Exiting && *holder == Some(old_pid);
            ensure!(
                (*holder == winner && winner.is_some()) || (named_old && !after_exit),
                "starter {pid} was refused naming {holder:?}, not the winner {winner:?}"
            );
        }
    }
    Ok(())
}
