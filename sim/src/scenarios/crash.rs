//! Scenario: the daemon's host crashes (`kill -9`, power loss) and comes back.
//!
//! The machine host boots a daemon: it claims the PID file (the daemon's own
//! claim on the simulated machine, `crate::pid`), then serves a fresh hub, with a dashboard
//! connected. The harness crashes the host at a seeded moment, sometimes in
//! the middle of the claim, decides what became of the dead pid (reaped,
//! zombie, reused by another program, reused by the next daemon, or the
//! probe cannot see processes), then bounces the host. One to three cycles.
//! Invariants, over every seed:
//! - the crash released the lock (the OS releases a dead process's locks)
//!   but left the file;
//! - every boot claims the file, and its decision is the one the leftover
//!   warrants: free without a file, stale(empty) for a file the crash left
//!   empty, stale(process gone / zombie / pid reused / lock not held) for a
//!   record, with the dead pid;
//! - after the last boot the file holds that boot's record and the dashboard
//!   is connected to the new hub (`clients_connected` exactly 1).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use warden::daemon::hub::{Hub, HubSettings};
use warden::pidfile::{PidFileContent, START_TIME_TOLERANCE, StaleReason};
use warden::probe::ProcessSnapshot;
use warden::time::{Clock, WallTime};

use crate::actors::{Actor, Dashboard, Pace, StopFlag, run_dashboard};
use crate::clock::{SIM_EPOCH_MS, SimClock};
use crate::hub::{HUB_PORT, serve_on, sim_hub, sim_settings};
use crate::pid::{Exit, SimMachine, StartLatency, StartOutcome, start_daemon};
use crate::seeds::{harness_rng, sim_builder};
use crate::trace::Trace;
use crate::{ensure, lock};

const MACHINE: &str = "machine";

/// What becomes of the crashed daemon's pid.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    Reaped,
    Zombie,
    ReusedByOther,
    /// The next boot's daemon gets the same pid.
    ReusedByNextDaemon,
    /// The next boot's probe cannot see processes.
    ProbeUnavailable,
}

#[derive(Default)]
struct Boot {
    started: Option<WallTime>,
    /// Why the boot's claim found the file stale (`Some(None)`: it was not).
    decision: Option<Option<StaleReason>>,
    hub: Option<Hub>,
    refused: Option<String>,
}

#[derive(Debug)]
struct Cycle {
    crash_after_ms: u64,
    down_ms: u64,
    fate: Fate,
}

/// The seeded shape of one run: the crash cycles, each boot's pid, the
/// claim's latency.
#[derive(Debug)]
struct Plan {
    cycles: Vec<Cycle>,
    /// Boot `i`'s daemon pid (one more boot than cycles).
    pids: Vec<u32>,
    latency: StartLatency,
}

impl Plan {
    fn draw(rng: &mut impl Rng, trace: &Trace) -> Plan {
        let cycles: Vec<Cycle> = (0..rng.random_range(1..=3))
            .map(|_| Cycle {
                // A third of the crashes hit the claim itself (its steps take
                // up to ~40 ms); the rest a serving daemon.
                crash_after_ms: if rng.random_bool(0.33) {
                    rng.random_range(0..=40)
                } else {
                    rng.random_range(500..=5_000)
                },
                down_ms: rng.random_range(100..=3_000),
                fate: [
                    Fate::Reaped,
                    Fate::Zombie,
                    Fate::ReusedByOther,
                    Fate::ReusedByNextDaemon,
                    Fate::ProbeUnavailable,
                ][rng.random_range(0..5)],
            })
            .collect();
        let mut pids = vec![rng.random_range(1_000..=40_000u32)];
        for cycle in &cycles {
            let last = *pids.last().unwrap_or(&1_000);
            pids.push(match cycle.fate {
                Fate::ReusedByNextDaemon => last,
                _ => last + rng.random_range(1..=500),
            });
        }
        let latency = StartLatency {
            before_open: Duration::from_millis(rng.random_range(0..=10)),
            open_to_lock: Duration::from_millis(rng.random_range(0..=10)),
            lock_to_read: Duration::from_millis(rng.random_range(0..=10)),
            decide_to_write: Duration::from_millis(rng.random_range(0..=10)),
        };
        trace.record(
            "setup",
            format!("cycles={cycles:?} pids={pids:?} latency={latency:?}"),
        );
        Plan {
            cycles,
            pids,
            latency,
        }
    }
}

/// One run of the scenario for `seed`; returns the simulated time covered.
pub fn run(seed: u64, trace: &Trace) -> Result<Duration, String> {
    let mut rng = harness_rng(seed);
    let plan = Plan::draw(&mut rng, trace);
    let mut sim = sim_builder(seed, Duration::from_secs(600)).build();
    let clock = SimClock::new();
    let machine = SimMachine::new();
    let boots: Arc<Mutex<Vec<Boot>>> = Arc::default();
    let mut settings = sim_settings();
    settings.ping_interval = Duration::from_secs(1);
    settings.ping_timeout = Duration::from_secs(1);
    MachineHost {
        machine: machine.clone(),
        clock,
        boots: Arc::clone(&boots),
        trace: trace.clone(),
        pids: plan.pids.clone(),
        settings,
        latency: plan.latency,
    }
    .add_to(&mut sim);

    let stop = StopFlag::new();
    let dashboard = Dashboard::new();
    let actor = run_dashboard(
        Actor {
            name: "dash".to_string(),
            host: MACHINE,
            port: HUB_PORT,
            stop: stop.clone(),
            rng: harness_rng(seed.wrapping_add(1)),
            trace: trace.clone(),
        },
        dashboard.clone(),
        Pace::FAST,
    );
    sim.client("dash", async move { actor.await.map_err(Into::into) });
    sim.set_link_latency(
        MACHINE,
        "dash",
        Duration::from_millis(rng.random_range(1..=20)),
    );

    crash_and_bounce(&mut sim, &machine, &boots, &plan, trace)?;
    let last = plan.cycles.len();
    last_boot_serves(&mut sim, &boots, &dashboard, last)?;
    let content = machine.content(HUB_PORT);
    ensure!(
        matches!(&content, PidFileContent::Record(r) if r.pid == plan.pids[last]),
        "the file does not hold the last boot's record: {}",
        describe(&content)
    );
    trace.record(
        "harness",
        format!(
            "dashboard back; {} connections",
            dashboard.view().connections
        ),
    );
    stop.stop();
    while !sim.step().map_err(|e| e.to_string())? {}
    if let Some(violation) = &dashboard.view().violation {
        return Err(violation.clone());
    }
    Ok(sim.elapsed())
}

/// The machine host and what each of its boots shares with the harness.
struct MachineHost {
    machine: SimMachine,
    clock: SimClock,
    boots: Arc<Mutex<Vec<Boot>>>,
    trace: Trace,
    pids: Vec<u32>,
    settings: HubSettings,
    latency: StartLatency,
}

impl MachineHost {
    /// Every boot of the host: a daemon with the next pid claims the PID
    /// file, then serves a fresh hub, holding its lock until the host
    /// crashes; the boot's facts go to `boots`.
    fn add_to(self, sim: &mut turmoil::Sim<'_>) {
        sim.host(MACHINE, move || {
            let (machine, clock, boots, trace, settings) = (
                self.machine.clone(),
                self.clock.clone(),
                Arc::clone(&self.boots),
                self.trace.clone(),
                self.settings.clone(),
            );
            let latency = self.latency;
            let index = lock(&boots).len();
            let pid = self.pids.get(index).copied().unwrap_or(1);
            lock(&boots).push(Boot::default());
            async move {
                let me = ProcessSnapshot::new(pid, "warden", &["warden", "start"], clock.wall());
                machine.run_process(me.clone());
                lock(&boots)[index].started = Some(me.start_time);
                let outcome = start_daemon(&machine, &me, HUB_PORT, &clock, latency).await?;
                let guard = match outcome {
                    StartOutcome::Claimed(claimed) => {
                        let (guard, decision) = (claimed.guard, claimed.stale);
                        trace.record(
                            MACHINE,
                            format!("boot {index} pid {pid}: claimed, {decision:?}"),
                        );
                        lock(&boots)[index].decision = Some(decision);
                        guard
                    }
                    StartOutcome::Refused { holder } => {
                        trace.record(
                            MACHINE,
                            format!("boot {index} pid {pid}: refused, holder {holder:?}"),
                        );
                        lock(&boots)[index].refused =
                            Some(format!("a conflict with pid {holder:?}"));
                        return Ok(());
                    }
                };
                let hub = sim_hub(settings, &clock);
                let _serving = serve_on(&hub, HUB_PORT).await?;
                lock(&boots)[index].hub = Some(hub);
                // The daemon runs, holding its lock, until the host crashes.
                std::future::pending::<()>().await;
                drop(guard);
                Ok(())
            }
        });
    }
}

/// Every cycle: crash the host at its moment, let the dead pid meet its
/// fate, bounce the host after its downtime and check the new boot's claim.
fn crash_and_bounce(
    sim: &mut turmoil::Sim<'_>,
    machine: &SimMachine,
    boots: &Mutex<Vec<Boot>>,
    plan: &Plan,
    trace: &Trace,
) -> Result<(), String> {
    for (n, cycle) in plan.cycles.iter().enumerate() {
        let dead_pid = plan.pids[n];
        wait(sim, Duration::from_millis(cycle.crash_after_ms))?;
        let leftover = crash(sim, machine, n, cycle.fate, dead_pid, trace)?;
        wait(sim, Duration::from_millis(cycle.down_ms))?;
        sim.bounce(MACHINE);
        // Let the new boot claim (its steps take at most ~40 ms).
        wait(sim, Duration::from_millis(200))?;
        machine.probe().set_available();
        boot_decided_rightly(&lock(boots), n, cycle.fate, dead_pid, &leftover)?;
    }
    Ok(())
}

/// Runs `sim` for `duration` more.
fn wait(sim: &mut turmoil::Sim<'_>, duration: Duration) -> Result<(), String> {
    let until = sim.elapsed() + duration;
    while sim.elapsed() < until {
        sim.step().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Crash `n`: the host dies, its lock must go and its file stay; the dead
/// pid meets its `fate`. Returns what the crash left in the file.
fn crash(
    sim: &mut turmoil::Sim<'_>,
    machine: &SimMachine,
    n: usize,
    fate: Fate,
    dead_pid: u32,
    trace: &Trace,
) -> Result<PidFileContent, String> {
    sim.crash(MACHINE);
    let leftover = machine.content(HUB_PORT);
    trace.record(
        "harness",
        format!("crash {n}: leftover {}", describe(&leftover)),
    );
    ensure!(
        !machine.is_locked(),
        "crash {n}: the dead daemon's lock is still held"
    );
    match fate {
        Fate::Reaped | Fate::ReusedByNextDaemon | Fate::ProbeUnavailable => {
            machine.exit_process(dead_pid, Exit::Gone);
        }
        Fate::Zombie => machine.exit_process(dead_pid, Exit::Zombie),
        Fate::ReusedByOther => machine.run_process(ProcessSnapshot::new(
            dead_pid,
            "sshd",
            &["/usr/sbin/sshd", "-D"],
            WallTime::from_millis(SIM_EPOCH_MS - 7_200_000),
        )),
    }
    if fate == Fate::ProbeUnavailable {
        machine
            .probe()
            .set_unavailable("the process table is not visible here");
    }
    Ok(leftover)
}

/// The boot after crash `n` claimed the file, with the decision the
/// `leftover` and the dead pid's `fate` warrant.
fn boot_decided_rightly(
    boots: &[Boot],
    n: usize,
    fate: Fate,
    dead_pid: u32,
    leftover: &PidFileContent,
) -> Result<(), String> {
    let boot = boots.get(n + 1).ok_or("the host did not boot again")?;
    if let Some(refused) = &boot.refused {
        return Err(format!(
            "boot {} after crash {n} was refused: {refused}",
            n + 1
        ));
    }
    let decision = boot
        .decision
        .as_ref()
        .ok_or(format!("boot {} did not decide", n + 1))?;
    let old_start = match leftover {
        PidFileContent::Record(r) => r.process_start_time,
        _ => None,
    };
    // A record without a start time (the dead daemon's probe could not
    // see itself) names this pid with no identity: indistinguishable
    // from this daemon, and ours, as one started within the tolerance.
    let same_start_window = match (old_start, boot.started) {
        (Some(old), Some(new)) => {
            new.as_millis().abs_diff(old.as_millis()) <= START_TIME_TOLERANCE.as_millis() as u64
        }
        (None, _) => true,
        _ => false,
    };
    let warranted = match (leftover, decision) {
        (PidFileContent::Absent, None) => true,
        (PidFileContent::Empty, Some(StaleReason::Empty)) => true,
        (PidFileContent::Record(_), d) => record_warrants(fate, d, dead_pid, same_start_window),
        _ => false,
    };
    ensure!(
        warranted,
        "boot {} decided {decision:?} for leftover {} with fate {fate:?}",
        n + 1,
        describe(leftover)
    );
    Ok(())
}

/// Whether a dead daemon's record, its pid meeting `fate`, warrants
/// `decision`.
fn record_warrants(
    fate: Fate,
    decision: &Option<StaleReason>,
    dead_pid: u32,
    same_start_window: bool,
) -> bool {
    match (fate, decision) {
        (Fate::Reaped, Some(StaleReason::ProcessGone { pid })) => *pid == dead_pid,
        (Fate::Zombie, Some(StaleReason::Zombie { pid })) => *pid == dead_pid,
        (Fate::ReusedByOther, Some(StaleReason::PidReused { pid, .. })) => *pid == dead_pid,
        (Fate::ReusedByNextDaemon, Some(StaleReason::PidReused { pid, .. })) => {
            *pid == dead_pid && !same_start_window
        }
        // Started within the start-time tolerance of the dead one:
        // indistinguishable, and ours either way (the file names us).
        (Fate::ReusedByNextDaemon, None) => same_start_window,
        (Fate::ProbeUnavailable, Some(StaleReason::LockNotHeld { pid, .. })) => *pid == dead_pid,
        _ => false,
    }
}

/// The last boot serves and the dashboard finds it: its hub counts exactly
/// one client, within a minute.
fn last_boot_serves(
    sim: &mut turmoil::Sim<'_>,
    boots: &Mutex<Vec<Boot>>,
    dashboard: &Dashboard,
    last: usize,
) -> Result<(), String> {
    let deadline = sim.elapsed() + Duration::from_secs(60);
    loop {
        let connected = lock(boots)
            .get(last)
            .and_then(|b| b.hub.as_ref())
            .map(|hub| hub.stats().clients_connected());
        if connected == Some(1) && dashboard.view().connected {
            return Ok(());
        }
        ensure!(
            sim.elapsed() < deadline,
            "the dashboard never reconnected to boot {last} (its hub counts {connected:?})"
        );
        sim.step().map_err(|e| e.to_string())?;
    }
}

fn describe(content: &PidFileContent) -> String {
    match content {
        PidFileContent::Absent => "no file".to_string(),
        PidFileContent::Empty => "empty file".to_string(),
        PidFileContent::Record(r) => format!("record of pid {}", r.pid),
        PidFileContent::Legacy(pid) => format!("legacy pid {pid}"),
        PidFileContent::Corrupt { detail } => format!("corrupt ({detail})"),
    }
}
