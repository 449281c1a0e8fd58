//! The self-healing stack in-process, on real sockets with real Socket.IO
//! clients: the critical ladder clear → restart → emergency with the real
//! actions (clients disconnected, the same address rebound and served, a stop
//! requested), a restart whose rebind fails is a failure the breaker counts
//! and is retried until the port is free again, a warning-only hub is logged
//! and then cleared, and an idle hub stays healthy with /health, /readyz and
//! /metrics answering.

mod hub_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hub_common::{DEADLINE, TestClient, settings};
use serde_json::Value;
use warden::config::WardenConfig;
use warden::daemon::clock::SystemClock;
use warden::daemon::healing::Healing;
use warden::daemon::hub::Hub;
use warden::daemon::recovery::{ServiceSettings, StopReason};
use warden::daemon::server;

fn fast_config() -> WardenConfig {
    let mut cfg = WardenConfig::default();
    cfg.server.host = "127.0.0.1".into();
    cfg.health_monitoring.check_interval = Duration::from_secs(1);
    cfg.health_monitoring.aggregation_window = Duration::from_secs(60);
    cfg.recovery.strategy.min_recovery_interval = Some(Duration::ZERO);
    cfg
}

async fn start(cfg: &WardenConfig, service: ServiceSettings) -> (Healing, SocketAddr) {
    let hub = Hub::new(settings(), Arc::new(SystemClock::new()));
    let listener = server::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let healing = Healing::start(cfg, hub, listener, service)
        .await
        .expect("healing starts");
    (healing, addr)
}

fn service(h: &Healing) -> &warden::daemon::recovery::HubService {
    h.service.as_deref().expect("Healing::start serves the hub")
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
    let mut cfg = fast_config();
    cfg.health_monitoring.thresholds.memory_mb = 1;
    // Slow the ladder so that each rung can be observed from outside.
    cfg.recovery.strategy.critical_threshold = 2;
    let (healing, addr) = start(&cfg, ServiceSettings::default()).await;
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
        (service(&healing).hub().stats().clients_connected() == 0).then_some(())
    })
    .await;
    drop(client);

    // restart_service rebinds the same address: a new client connects.
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
    assert_eq!(service(&healing).restarts(), 1);

    let reason = tokio::time::timeout(DEADLINE, healing.stop_requested())
        .await
        .expect("emergency stop requested");
    assert_eq!(reason, StopReason::Emergency);
    // The stop is requested inside the action; the manager records the
    // event when the action returns, a moment later.
    poll("the emergency stop recorded", async || {
        healing
            .recovery
            .history(10)
            .last()
            .filter(|e| e.action.as_str() == "emergency_stop")
            .map(|_| ())
    })
    .await;
    healing.shutdown().await;
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "drained: nothing listens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_rebind_is_counted_by_the_breaker_and_retried_until_the_port_is_free() {
    let mut cfg = fast_config();
    cfg.health_monitoring.thresholds.memory_mb = 1;
    cfg.recovery.circuit_breaker.failure_threshold = 1;
    let service = ServiceSettings {
        rebind_pause: Duration::from_millis(1500),
        rebind_retry_interval: Duration::from_millis(200),
        ..ServiceSettings::default()
    };
    let (healing, addr) = start(&cfg, service).await;

    // Take the port in the restart window.
    let squatter = poll("the restart window", async || {
        std::net::TcpListener::bind(addr).ok()
    })
    .await;
    poll("the failed restart", async || {
        let h = healing.recovery.history(10);
        h.iter()
            .find(|e| e.action.as_str() == "restart_service")
            .cloned()
    })
    .await;
    let status = healing.recovery.status(10);
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

    // The breaker blocks the emergency stop that the ladder decides next.
    poll("a blocked action", async || {
        (healing.recovery.status(10).rejected_by_breaker > 0).then_some(())
    })
    .await;
    assert!(
        healing
            .recovery
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
    healing.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warning_only_hub_is_logged_then_cleared() {
    let mut cfg = fast_config();
    cfg.health_monitoring.thresholds.max_clients = 2;
    let (healing, addr) = start(&cfg, ServiceSettings::default()).await;
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
    assert_eq!(service(&healing).hub().stats().clients_connected(), 0);
    healing.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_hub_stays_healthy_and_ready() {
    let (healing, addr) = start(&fast_config(), ServiceSettings::default()).await;
    poll("three checks", async || {
        (healing.monitor.status().checks_performed >= 3).then_some(())
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
    healing.shutdown().await;
}
