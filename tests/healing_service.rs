//! The self-healing stack in-process, exactly as `warden start` assembles
//! it (`run::start_healing`: the runner's [`Daemon`], its one serving
//! generation and the recovery stack around its `ServingControl`), on real
//! sockets with real Socket.IO clients: the critical ladder clear → restart →
//! emergency with the real actions (clients disconnected, the same address
//! rebound and served, the run loop ending with an emergency stop), a restart
//! whose rebind fails is a failure the breaker counts and is retried until
//! the port is free again, retries that run out stop the daemon, a
//! warning-only hub is logged and then cleared, and an idle hub stays
//! healthy with /health, /readyz and /metrics answering.

mod hub_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hub_common::{DEADLINE, TestClient};
use serde_json::Value;
use warden::config::WardenConfig;
use warden::daemon::healing::assemble::{Healing, Prepared};
use warden::daemon::hub::Hub;
use warden::daemon::os::clock::SystemClock;
use warden::daemon::os::settings::{self, ConfigRequest};
use warden::daemon::os::sysprobe::SysinfoProbe;
use warden::daemon::runner::run::{self, Daemon, DaemonExit};
use warden::daemon::serve::server::ShutdownSignals;
use warden::daemon::serve::serving::{RetrySchedule, ServingControl, ServingSettings};

fn fast_config(cfg: &mut WardenConfig) {
    cfg.health_monitoring.check_interval = Duration::from_secs(1);
    cfg.health_monitoring.aggregation_window = Duration::from_secs(60);
    cfg.recovery.strategy.min_recovery_interval = Some(Duration::ZERO);
}

/// The daemon with its stack, its run loop on a task.
struct Running {
    addr: SocketAddr,
    hub: Hub,
    control: ServingControl,
    healing: Healing,
    run: tokio::task::JoinHandle<(DaemonExit, Daemon)>,
    pid_file: std::path::PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn start(tune: impl FnOnce(&mut WardenConfig), serving: ServingSettings) -> Running {
    let (state, home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let request = ConfigRequest {
        state_dir: Some(state.path().to_path_buf()),
        host: Some("127.0.0.1".to_string()),
        port: Some(port),
        ..ConfigRequest::default()
    };
    let mut effective = settings::load_with_home(&request, Some(home.path())).expect("defaults");
    fast_config(&mut effective.config);
    tune(&mut effective.config);
    let config = effective.config.clone();
    let hub = Hub::new(run::hub_settings(&config), Arc::new(SystemClock::new()));
    let (mut daemon, healing) = run::start_healing(&effective, hub, serving, |hub, control| {
        Prepared::new(&config, hub, Arc::new(SysinfoProbe::new()), control)
    })
    .await
    .expect("the daemon starts");
    let mut signals = ShutdownSignals::install().expect("signal handlers");
    Running {
        addr: daemon.local_addr(),
        hub: daemon.hub().clone(),
        control: daemon.control(),
        healing,
        pid_file: daemon.pid_guard().path().to_path_buf(),
        run: tokio::spawn(async move {
            let exit = daemon.run_until_stopped(&mut signals).await;
            (exit, daemon)
        }),
        _dirs: (state, home),
    }
}

impl Running {
    /// Waits for the run loop to end by itself; shuts everything down as
    /// `warden start` does.
    async fn exit(self) -> DaemonExit {
        let (exit, daemon) = tokio::time::timeout(DEADLINE, self.run)
            .await
            .expect("the run loop ends")
            .expect("the run loop did not panic");
        self.healing.shutdown().await;
        daemon.shutdown().await;
        assert!(!self.pid_file.exists(), "the PID file is removed");
        exit
    }

    /// Stops a daemon that is still running.
    async fn stop(self) {
        assert!(!self.run.is_finished(), "the daemon still runs");
        self.run.abort();
        let _ = self.run.await;
        self.healing.shutdown().await;
    }
}

async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("http://{addr}{path}")).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

async fn json(addr: SocketAddr, path: &str) -> Option<(u16, Value)> {
    let (status, body) = get(addr, path).await?;
    Some((status, serde_json::from_str(&body).ok()?))
}

fn actions(diag: &Value) -> Vec<String> {
    diag["recovery_manager"]["recent_events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| e["action"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn poll<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn critical_runs_clear_restart_emergency_with_real_actions() {
    let running = start(
        |cfg| {
            cfg.health_monitoring.thresholds.memory_mb = 1;
            // Slow the ladder so that each rung can be observed from outside.
            cfg.recovery.strategy.critical_threshold = 2;
        },
        ServingSettings::default(),
    )
    .await;
    let addr = running.addr;
    let client = TestClient::connect(&format!("http://{addr}/")).await;

    // /health is 503 once the first check has judged the memory critical.
    let (status, health) = poll("critical /health", async || {
        json(addr, "/health")
            .await
            .filter(|(_, v)| v["status"] == "critical")
    })
    .await;
    assert_eq!(status, 503);
    assert_eq!(health["checks"]["process_resources"], "critical");
    assert!(health["metrics"]["memory_mb"].as_f64().unwrap_or(0.0) > 1.5);

    // clear_connections disconnected the client, counted exactly.
    poll("clear_connections", async || {
        json(addr, "/diagnostics")
            .await
            .filter(|(_, d)| actions(d).contains(&"clear_connections".to_string()))
    })
    .await;
    poll("client cleared", async || {
        (running.hub.stats().clients_connected() == 0).then_some(())
    })
    .await;
    drop(client);

    // restart_service rebinds the same address: the next action is recorded
    // through it.
    let diag = poll("restart_service", async || {
        json(addr, "/diagnostics")
            .await
            .filter(|(_, d)| actions(d).contains(&"restart_service".to_string()))
    })
    .await
    .1;
    assert_eq!(
        actions(&diag)[..2],
        [
            "clear_connections".to_string(),
            "restart_service".to_string()
        ]
    );
    assert_eq!(
        diag["recovery_manager"]["recent_events"][1]["success"],
        true
    );
    assert_eq!(running.control.restarts(), 1);

    // emergency_stop ends the runner's loop with the emergency exit.
    let recovery = Arc::clone(&running.healing.recovery);
    let exit = running.exit().await;
    assert!(
        matches!(&exit, DaemonExit::EmergencyStop { reason } if reason.contains("emergency_stop")),
        "{exit:?}"
    );
    assert!(
        recovery
            .history(10)
            .iter()
            .any(|e| e.action.as_str() == "emergency_stop"),
        "the emergency stop is recorded"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "drained: nothing listens"
    );
}

/// A restart window long enough to take the port in it; retries 200 ms apart.
fn squattable(retries: u32) -> ServingSettings {
    ServingSettings {
        rebind_pause: Duration::from_millis(1500),
        retries: RetrySchedule::new(retries, Duration::from_millis(200)),
        ..ServingSettings::default()
    }
}

/// Critical from the first check; one failure opens the breaker for an hour,
/// so the ladder's own emergency stop is blocked after a failed restart.
fn critical_with_a_touchy_breaker(cfg: &mut WardenConfig) {
    cfg.health_monitoring.thresholds.memory_mb = 1;
    cfg.recovery.circuit_breaker.failure_threshold = 1;
    cfg.recovery.circuit_breaker.timeout_seconds = Duration::from_secs(3600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_rebind_is_counted_by_the_breaker_and_retried_until_the_port_is_free() {
    let running = start(critical_with_a_touchy_breaker, squattable(120)).await;
    let addr = running.addr;
    let recovery = Arc::clone(&running.healing.recovery);

    // Take the port in the restart window.
    let squatter = poll("the restart window", async || {
        std::net::TcpListener::bind(addr).ok()
    })
    .await;
    poll("the failed restart", async || {
        let h = recovery.history(10);
        h.iter()
            .find(|e| e.action.as_str() == "restart_service")
            .cloned()
    })
    .await;
    let status = recovery.status(10);
    let restart = status
        .recent_events
        .iter()
        .find(|e| e.action.as_str() == "restart_service")
        .expect("restart recorded");
    assert!(!restart.success);
    assert!(
        restart
            .error_message
            .as_deref()
            .unwrap_or("")
            .contains("already in use"),
        "{restart:?}"
    );
    assert_eq!(status.circuit_breaker_state.as_str(), "open");
    assert!(running.control.is_draining(), "no socket: draining");

    // The breaker blocks the emergency stop that the ladder decides next.
    poll("a blocked action", async || {
        (recovery.status(10).rejected_by_breaker > 0).then_some(())
    })
    .await;
    assert!(
        recovery
            .history(10)
            .iter()
            .all(|e| e.action.as_str() != "emergency_stop")
    );

    // Free the port: the bounded retries serve again; /readyz says the breaker blocks.
    drop(squatter);
    let (code, ready) = poll("served again", async || json(addr, "/readyz").await).await;
    assert_eq!(code, 503);
    assert_eq!(ready["circuit_breaker_state"], "open");
    assert_eq!(get(addr, "/livez").await.map(|(c, _)| c), Some(200));
    assert_eq!(running.control.restarts(), 1, "the retry's rebind");
    assert!(!running.control.is_draining());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebind_retries_that_run_out_stop_the_daemon() {
    let running = start(critical_with_a_touchy_breaker, squattable(3)).await;
    let addr = running.addr;
    let recovery = Arc::clone(&running.healing.recovery);
    let squatter = poll("the restart window", async || {
        std::net::TcpListener::bind(addr).ok()
    })
    .await;
    let exit = running.exit().await;
    assert_eq!(
        exit,
        DaemonExit::EmergencyStop {
            reason: "the listening address could not be bound again after 3 retries".to_string()
        }
    );
    // The stop came from the retries, not from the ladder (the breaker
    // blocked that one).
    assert!(
        recovery
            .history(10)
            .iter()
            .all(|e| e.action.as_str() != "emergency_stop")
    );
    drop(squatter);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warning_only_hub_is_logged_then_cleared() {
    let running = start(
        |cfg| cfg.health_monitoring.thresholds.max_clients = 2,
        ServingSettings::default(),
    )
    .await;
    let addr = running.addr;
    let url = format!("http://{addr}/");
    let _clients = [
        TestClient::connect(&url).await,
        TestClient::connect(&url).await,
        TestClient::connect(&url).await,
    ];
    let diag = poll("clear_connections", async || {
        json(addr, "/diagnostics")
            .await
            .filter(|(_, d)| actions(d).contains(&"clear_connections".to_string()))
    })
    .await
    .1;
    assert_eq!(
        actions(&diag)[..2],
        ["log_warning".to_string(), "clear_connections".to_string()]
    );
    assert_eq!(running.hub.stats().clients_connected(), 0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_hub_stays_healthy_and_ready() {
    let running = start(|_| {}, ServingSettings::default()).await;
    let addr = running.addr;
    poll("three checks", async || {
        (running.healing.monitor.status().checks_performed >= 3).then_some(())
    })
    .await;
    let (code, health) = json(addr, "/health").await.expect("/health");
    assert_eq!((code, health["status"].as_str()), (200, Some("healthy")));
    for checker in [
        "process_resources",
        "network_connectivity",
        "service_health",
    ] {
        assert_eq!(health["checks"][checker], "healthy", "{health}");
    }
    assert_eq!(json(addr, "/readyz").await.map(|(c, _)| c), Some(200));
    let (_, status) = json(addr, "/status").await.expect("/status");
    assert_eq!(status["health"], "healthy");
    let (_, diag) = json(addr, "/diagnostics").await.expect("/diagnostics");
    assert_eq!(diag["recovery_manager"]["total_recoveries"], 0);
    assert_eq!(diag["health_monitor"]["checks_failed"], 0);
    assert_eq!(
        diag["recovery_manager"]["circuit_breaker"]["state"],
        "closed"
    );
    running.stop().await;
}
