//! The scenarios, one module each. Each exposes `run(seed, &Trace) ->
//! Result<Duration, String>`: one simulated run for one seed, returning the
//! simulated time it covered or the invariant it found violated. The test
//! files under `sim/tests/` run them over many seeds; the determinism check
//! runs one twice and compares the traces.

pub mod crash;
pub mod degraded;
pub mod flood;
pub mod hostile;
pub mod partition;
pub mod pid_race;
pub mod recovery;
pub mod restart;

use std::time::Duration;

use rand::Rng;

use std::sync::Arc;

use warden::daemon::healing::checkers::Checker;
use warden::daemon::healing::monitor::{HealthMonitor, MonitorSettings};

use crate::actors::{Actor, Dashboard, Pace, StopFlag, run_dashboard};
use crate::clock::SimClock;
use crate::hub::{HUB_HOST, HUB_PORT};
use crate::seeds::harness_rng;
use crate::trace::Trace;

/// The real health monitor on the simulation's clock, checking every
/// `check_interval` with `checkers` (recovery enabled).
pub(crate) fn sim_monitor(
    check_interval: Duration,
    clock: &SimClock,
    checkers: Vec<Arc<dyn Checker>>,
) -> HealthMonitor {
    HealthMonitor::new(
        MonitorSettings {
            check_interval,
            history_size: 100,
            aggregation_window: Duration::from_secs(60),
            check_timeout: Duration::from_secs(2),
        },
        true,
        clock.shared(),
        checkers,
    )
}

/// Puts one dashboard per view on hosts `dash-0..` (each with its own rng,
/// drawn from `seed + 1 + i`), reading at `paces[i]`, until `stop`.
pub(crate) fn spawn_dashboards(
    sim: &mut turmoil::Sim<'_>,
    seed: u64,
    views: &[Dashboard],
    paces: &[Pace],
    stop: &StopFlag,
    trace: &Trace,
) {
    for (i, (view, pace)) in views.iter().zip(paces).enumerate() {
        let name = format!("dash-{i}");
        let actor = run_dashboard(
            Actor {
                name: name.clone(),
                host: HUB_HOST,
                port: HUB_PORT,
                stop: stop.clone(),
                rng: harness_rng(seed.wrapping_add(1 + i as u64)),
                trace: trace.clone(),
            },
            view.clone(),
            *pace,
        );
        sim.client(name, async move { actor.await.map_err(Into::into) });
    }
}

/// Gives each client's link to the hub its own fixed latency of 1 to 20 ms,
/// drawn from the harness RNG: dashboards `dash-0..dashboards` first, then
/// `last` (fixed per link: see ARCHITECTURE.md, "Fixed per-link latency").
pub(crate) fn fix_link_latencies(
    sim: &mut turmoil::Sim<'_>,
    rng: &mut impl Rng,
    dashboards: usize,
    last: &str,
) {
    let names: Vec<String> = (0..dashboards).map(|i| format!("dash-{i}")).collect();
    for name in names.iter().map(String::as_str).chain([last]) {
        sim.set_link_latency(
            HUB_HOST,
            name,
            Duration::from_millis(rng.random_range(1..=20)),
        );
    }
}

/// Runs `sim` to its end; a violation any dashboard saw fails the run.
/// Returns the simulated time covered.
pub(crate) fn run_checking(
    sim: &mut turmoil::Sim<'_>,
    views: &[Dashboard],
) -> Result<Duration, String> {
    sim.run().map_err(|e| e.to_string())?;
    for view in views {
        if let Some(violation) = &view.view().violation {
            return Err(violation.clone());
        }
    }
    Ok(sim.elapsed())
}
