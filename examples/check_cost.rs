//! Measures the CPU cost of one full health check cycle (process resources,
//! network connectivity, service health) in the real daemon setting: a hub
//! served on loopback, the real sysinfo probe, the monitor's blocking-pool
//! dispatch. CPU time is user + system from getrusage around N cycles.
//!
//! Run: `cargo run --release --example check_cost [cycles]`

use std::sync::Arc;
use std::time::Instant;

use warden::config::WardenConfig;
use warden::daemon::healing::assemble::{checkers, monitor_settings};
use warden::daemon::healing::monitor::HealthMonitor;
use warden::daemon::hub::http;
use warden::daemon::hub::{Hub, HubSettings};
use warden::daemon::os::clock::SystemClock;
use warden::daemon::os::sysprobe::SysinfoProbe;
use warden::daemon::os::sysprobe::self_cpu_seconds;
use warden::daemon::serve::server;
use warden::health::HealthStatus;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cycles: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let cfg = WardenConfig::default();
    let clock = Arc::new(SystemClock::new());
    let hub = Hub::new(HubSettings::new("cost", "0"), clock.clone());
    let listener = server::bind("127.0.0.1:0".parse()?).await?;
    let addr = listener.local_addr()?;
    let app = http::app(
        &hub,
        Arc::new(|| HealthStatus::Healthy),
        axum::Router::new(),
    )?;
    let handle = server::serve_tcp(listener, app, &hub);
    let (checkers, _, target, _) = checkers(
        &cfg,
        &hub,
        std::process::id(),
        Arc::new(SysinfoProbe::new()),
    );
    target.set(addr);
    let monitor = HealthMonitor::new(monitor_settings(&cfg), true, clock, checkers);
    // Warm up: the first sysinfo sample of a pid is the expensive one.
    for _ in 0..5 {
        monitor.run_cycle().await;
    }
    let cpu0 = self_cpu_seconds().ok_or("getrusage")?;
    let wall0 = Instant::now();
    for _ in 0..cycles {
        let report = monitor.run_cycle().await;
        assert_eq!(report.results.len(), 3);
    }
    let cpu = self_cpu_seconds().ok_or("getrusage")? - cpu0;
    let wall = wall0.elapsed();
    println!(
        "{cycles} cycles: {:.1} µs CPU per cycle (whole process: checkers, blocking pool, the accept side of the network check), {:.1} µs wall per cycle",
        cpu * 1e6 / f64::from(cycles),
        wall.as_secs_f64() * 1e6 / f64::from(cycles)
    );
    handle.shutdown(std::time::Duration::from_secs(5)).await?;
    Ok(())
}
