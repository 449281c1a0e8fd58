//! Self-healing in the real `warden` binary: a config file forces the
//! condition (memory_mb 1 makes every check critical; max_clients 2 with
//! three clients makes it warn), checks run every second, and the tests
//! watch /health, /diagnostics, /metrics, the log (stderr) and the process.
//!
//! - the critical ladder runs clear → restart → emergency in order, /health is
//!   503, the restart keeps the PID file byte-identical and the port served,
//!   and the process exits with the emergency code leaving no PID file;
//! - a restart whose rebind fails (the test takes the port in the restart
//!   window, opened by `WARDEN_TEST_REBIND_PAUSE_MS`) is a failure the breaker
//!   counts: it opens and blocks the emergency stop; the daemon rebinds once
//!   the port is free, is live but not ready; when the port stays taken, the
//!   bounded rebind retries run out and the daemon exits with the emergency
//!   code;
//! - a warning-only daemon gets log_warning then clear_connections;
//! - clients that keep coming back past the threshold are cleared, never
//!   answered with a restart or an emergency stop;
//! - an idle daemon stays healthy and /metrics parses as OpenMetrics text;
//! - under systemd (`NOTIFY_SOCKET`, `WATCHDOG_USEC`) it sends READY, WATCHDOG
//!   and STOPPING.
//!
//! No timing assertions: every wait polls with a generous deadline.

use std::fs::File;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(90);
/// `warden::daemon::cli::ExitCode::EmergencyStop`.
const EXIT_EMERGENCY_STOP: i32 = warden::daemon::cli::ExitCode::EmergencyStop.code();

struct Env {
    home: tempfile::TempDir,
    state: tempfile::TempDir,
    port: u16,
}

struct Daemon {
    child: Child,
    stderr: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "warden did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Env {
    fn new() -> Env {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Env {
            home: tempfile::tempdir().expect("tempdir"),
            state: tempfile::tempdir().expect("tempdir"),
            port,
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.state
            .path()
            .join(format!("socketio-server-{}.pid", self.port))
    }

    fn spawn(&self, config: Value, env: &[(&str, &str)]) -> Daemon {
        let config_path = self.state.path().join("config.json");
        std::fs::write(&config_path, config.to_string()).expect("write config");
        let stderr = self.state.path().join("stderr.txt");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
        cmd.args([
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            &self.port.to_string(),
        ])
        .arg("--state-dir")
        .arg(self.state.path())
        .arg("--config")
        .arg(&config_path)
        .env("HOME", self.home.path())
        .env_remove("WARDEN_STATE_DIR")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr).expect("stderr file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut daemon = Daemon {
            child: cmd.spawn().expect("spawn warden"),
            stderr,
        };
        let pid = u64::from(daemon.child.id());
        poll("warden ready", || {
            assert!(
                daemon.alive(),
                "warden exited at startup:\n{}",
                daemon.log()
            );
            let record: Option<Value> = std::fs::read_to_string(self.pid_file())
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            (record.is_some_and(|r| r["pid"].as_u64() == Some(pid))
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok())
            .then_some(())
        });
        daemon
    }

    /// A plain HTTP/1.0 GET (no client library): status and body.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let code = head.split(' ').nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    }

    fn json(&self, path: &str) -> Option<(u16, Value)> {
        let (code, body) = self.get(path)?;
        Some((code, serde_json::from_str(&body).ok()?))
    }
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks every second; recovery may act on every check.
fn config(thresholds: Value, recovery: Value) -> Value {
    let mut recovery_section = json!({
        "min_recovery_interval_seconds": 0,
        "strategy": {"warning_threshold": 2, "critical_threshold": 1}
    });
    if let (Some(base), Some(extra)) = (recovery_section.as_object_mut(), recovery.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    json!({
        "health_monitoring": {
            "check_interval_seconds": 1,
            "aggregation_window_seconds": 60,
            "thresholds": thresholds
        },
        "recovery": recovery_section
    })
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

/// Index of the first line containing every needle, after line `from`.
fn line_with(log: &str, from: usize, needles: &[&str]) -> Option<usize> {
    log.lines()
        .enumerate()
        .skip(from)
        .find(|(_, l)| needles.iter().all(|n| l.contains(n)))
        .map(|(i, _)| i)
}

#[test]
fn the_critical_ladder_clears_restarts_then_stops_with_the_emergency_code() {
    let env = Env::new();
    // critical_threshold 2: two criticals per rung, so each rung can be seen.
    let cfg = config(
        json!({"memory_mb": 1}),
        json!({"strategy": {"warning_threshold": 2, "critical_threshold": 2}}),
    );
    let mut daemon = env.spawn(cfg, &[]);
    let pid_bytes = std::fs::read(env.pid_file()).expect("pid file");

    let (code, health) = poll("critical /health", || {
        env.json("/health")
            .filter(|(_, h)| h["status"] == "critical")
    });
    assert_eq!(code, 503);
    assert_eq!(health["checks"]["process_resources"], "critical");

    let diag = poll("restart_service in /diagnostics", || {
        env.json("/diagnostics")
            .map(|(_, d)| d)
            .filter(|d| actions(d).contains(&"restart_service".to_string()))
    });
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
    // That answer came through the rebound port; the PID file is byte for byte the same.
    assert_eq!(std::fs::read(env.pid_file()).expect("pid file"), pid_bytes);

    let status = daemon.wait_exit();
    assert_eq!(
        status.code(),
        Some(EXIT_EMERGENCY_STOP),
        "log:\n{}",
        daemon.log()
    );
    assert!(!env.pid_file().exists(), "the PID file is removed");
    let log = daemon.log();
    let clear = line_with(
        &log,
        0,
        &["Recovery action", "clear_connections", "succeeded"],
    )
    .expect("clear_connections logged");
    let restart = line_with(
        &log,
        clear,
        &["Recovery action", "restart_service", "succeeded"],
    )
    .expect("restart_service logged after clear");
    line_with(&log, restart, &["Recovery action", "emergency_stop"])
        .expect("emergency_stop logged after restart");
    assert!(log.contains("Health check failed"), "{log}");
}

#[test]
fn the_breaker_opens_on_a_failed_rebind_and_blocks_further_attempts() {
    let env = Env::new();
    let cfg = config(
        json!({"memory_mb": 1}),
        json!({"circuit_breaker": {"failure_threshold": 1, "timeout_seconds": 3600}}),
    );
    let mut daemon = env.spawn(cfg, &[("WARDEN_TEST_REBIND_PAUSE_MS", "2000")]);

    // clear_connections, then restart_service: take the port in its window.
    let squatter = poll("the restart window", || {
        std::net::TcpListener::bind(("127.0.0.1", env.port)).ok()
    });
    poll("the breaker opening", || {
        line_with(&daemon.log(), 0, &["Circuit breaker", "open"])
    });
    poll("an action blocked by the open breaker", || {
        line_with(&daemon.log(), 0, &["Circuit breaker", "blocked"])
    });
    let log = daemon.log();
    line_with(&log, 0, &["Recovery action", "restart_service", "failed"])
        .expect("the failed restart is logged");
    assert!(
        log.contains("Automatic recovery failed"),
        "RecoveryFailedError rendered:\n{log}"
    );
    assert!(daemon.alive(), "the emergency stop was blocked:\n{log}");

    // Free the port: the bounded retries serve again.
    drop(squatter);
    let (code, ready) = poll("served again", || env.json("/readyz"));
    assert_eq!(code, 503, "an open breaker is not ready");
    assert_eq!(ready["circuit_breaker_state"], "open");
    assert_eq!(
        env.get("/livez").map(|(c, _)| c),
        Some(200),
        "but still live"
    );
    let (_, diag) = env.json("/diagnostics").expect("diagnostics");
    let rm = &diag["recovery_manager"];
    assert_eq!(rm["circuit_breaker"]["state"], "open");
    assert!(rm["failed_recoveries"].as_u64() >= Some(1));
    assert!(rm["rejected_by_breaker"].as_u64() >= Some(1));
    assert!(!actions(&diag).contains(&"emergency_stop".to_string()));

    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    assert!(!env.pid_file().exists());
}

#[test]
fn rebind_retries_that_run_out_stop_the_daemon_with_the_emergency_code() {
    let env = Env::new();
    // The breaker opens on the failed restart and blocks the ladder's own
    // emergency stop: only the exhausted retries can end this daemon.
    let cfg = config(
        json!({"memory_mb": 1}),
        json!({"circuit_breaker": {"failure_threshold": 1, "timeout_seconds": 3600}}),
    );
    let mut daemon = env.spawn(
        cfg,
        &[
            ("WARDEN_TEST_REBIND_PAUSE_MS", "2000"),
            ("WARDEN_TEST_REBIND_RETRIES", "3"),
            ("WARDEN_TEST_REBIND_RETRY_MS", "200"),
        ],
    );
    let squatter = poll("the restart window", || {
        std::net::TcpListener::bind(("127.0.0.1", env.port)).ok()
    });
    let status = daemon.wait_exit();
    let log = daemon.log();
    assert_eq!(status.code(), Some(EXIT_EMERGENCY_STOP), "log:\n{log}");
    assert!(!env.pid_file().exists(), "the PID file is removed");
    let failed = line_with(&log, 0, &["Recovery action", "restart_service", "failed"])
        .expect("the failed restart is logged");
    let last_retry =
        line_with(&log, failed, &["rebind retry 3/3 failed"]).expect("every retry is logged");
    line_with(
        &log,
        last_retry,
        &["emergency_stop", "could not be bound again after 3 retries"],
    )
    .expect("the exhausted retries stop the daemon");
    assert!(
        line_with(&log, 0, &["Recovery action", "emergency_stop", "succeeded"]).is_none(),
        "the stop came from the retries, not the ladder:\n{log}"
    );
    drop(squatter);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_only_daemon_is_logged_then_cleared() {
    let env = Env::new();
    let cfg = config(json!({"max_clients": 2}), json!({}));
    let daemon = tokio::task::block_in_place(|| env.spawn(cfg, &[]));
    let url = format!("http://127.0.0.1:{}/", env.port);
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            rust_socketio::asynchronous::ClientBuilder::new(url.clone())
                .transport_type(rust_socketio::TransportType::Websocket)
                .reconnect(false)
                .connect()
                .await
                .expect("connect"),
        );
    }
    let diag = tokio::task::block_in_place(|| {
        poll("clear_connections", || {
            env.json("/diagnostics")
                .map(|(_, d)| d)
                .filter(|d| actions(d).contains(&"clear_connections".to_string()))
        })
    });
    assert_eq!(
        actions(&diag)[..2],
        ["log_warning".to_string(), "clear_connections".to_string()]
    );
    let log = daemon.log();
    let warned = line_with(
        &log,
        0,
        &["Recovery action", "log_warning", "clients_connected"],
    )
    .expect("the warning names the failing metric");
    line_with(
        &log,
        warned,
        &[
            "Recovery action",
            "clear_connections",
            "3 clients' transports closed",
        ],
    )
    .expect("all three clients cleared");
    drop(daemon);
}

/// Clients past the health threshold are the clients' doing: the ladder may
/// warn and clear them, never restart or stop the daemon for them (the
/// attribution rule, `warden::recovery::attribution`). A crowd that comes
/// back after every clear climbed clear → restart → emergency stop (exit 69)
/// before the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_keep_coming_back_never_restart_or_stop_the_daemon() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let env = Env::new();
    // max_clients 1: two clients are above 1.5 × 1, critical.
    let cfg = config(json!({"max_clients": 1}), json!({}));
    let mut daemon = tokio::task::block_in_place(|| env.spawn(cfg, &[]));
    let url = format!("http://127.0.0.1:{}/", env.port);
    let done = Arc::new(AtomicBool::new(false));
    let crowd = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            // A new client every 200 ms, each kept: bounded by the test's deadline.
            let mut clients = Vec::new();
            let started = Instant::now();
            while !done.load(Ordering::Acquire) && started.elapsed() < DEADLINE {
                if let Ok(client) = rust_socketio::asynchronous::ClientBuilder::new(url.clone())
                    .transport_type(rust_socketio::TransportType::Websocket)
                    .reconnect(false)
                    .connect()
                    .await
                {
                    clients.push(client);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            clients.len()
        })
    };
    let mut saw_critical = false;
    let diag = tokio::task::block_in_place(|| {
        poll("15 checks with the crowd, a clear among them", || {
            assert!(
                daemon.alive(),
                "the daemon stopped for its clients:\n{}",
                daemon.log()
            );
            if let Some((_, health)) = env.json("/health") {
                saw_critical |= health["checks"]["service_health"] == "critical";
            }
            let (_, diag) = env.json("/diagnostics")?;
            let checks = diag["health_monitor"]["checks_performed"].as_u64()?;
            (checks >= 15 && actions(&diag).contains(&"clear_connections".to_string()))
                .then_some(diag)
        })
    });
    done.store(true, Ordering::Release);
    let connected = crowd.await.expect("crowd task");
    assert!(connected >= 2, "the crowd connected {connected} clients");
    assert!(saw_critical, "the clients made service_health critical");
    let taken = actions(&diag);
    assert!(
        !taken
            .iter()
            .any(|a| a == "restart_service" || a == "emergency_stop"),
        "{taken:?}"
    );
    assert!(daemon.alive(), "{}", daemon.log());
    assert_eq!(diag["server_info"]["restarts"], 0);
}

/// A small OpenMetrics text check: every sample line is `name[{labels}] value`
/// with a declared family, and the text ends with `# EOF`.
fn parse_openmetrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut families = std::collections::BTreeSet::new();
    let mut samples = std::collections::BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().expect("family name");
            let kind = parts.next().expect("family type");
            assert!(
                ["counter", "gauge", "info", "histogram", "unknown"].contains(&kind),
                "{line}"
            );
            families.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("number in {line}"));
        let name = series.split('{').next().expect("name");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(families.contains(family), "{name} has a # TYPE");
        samples.insert(series.to_string(), value);
    }
    samples
}

#[test]
fn an_idle_daemon_stays_healthy_and_serves_metrics() {
    let env = Env::new();
    let daemon = env.spawn(config(json!({}), json!({})), &[]);
    poll("three checks", || {
        env.json("/diagnostics")
            .filter(|(_, d)| d["health_monitor"]["checks_performed"].as_u64() >= Some(3))
    });
    let (code, health) = env.json("/health").expect("/health");
    assert_eq!(
        (code, health["status"].as_str()),
        (200, Some("healthy")),
        "{health}"
    );
    assert_eq!(health["pid"].as_u64(), Some(u64::from(daemon.child.id())));
    let (_, status) = env.json("/status").expect("/status");
    assert_eq!(status["health"], "healthy");
    assert_eq!(env.get("/readyz").map(|(c, _)| c), Some(200));
    let (_, diag) = env.json("/diagnostics").expect("/diagnostics");
    assert_eq!(diag["recovery_manager"]["total_recoveries"], 0);
    assert_eq!(diag["health_monitor"]["checks_failed"], 0);

    let (code, text) = env.get("/metrics").expect("/metrics");
    assert_eq!(code, 200);
    let samples = parse_openmetrics(&text);
    for name in [
        "socketio_uptime_seconds",
        "socketio_clients_connected",
        "socketio_events_processed_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_threads",
        "socketio_recoveries_rejected_total",
        "socketio_circuit_breaker_trips_total",
    ] {
        assert!(samples.contains_key(name), "{name} in\n{text}");
    }
    assert_eq!(samples.get("socketio_health_status"), Some(&1.0));
    assert!(!daemon.log().contains("Recovery action"));
}

#[test]
fn under_systemd_it_notifies_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let env = Env::new();
    let socket_path = env.state.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut daemon = env.spawn(
        config(json!({}), json!({})),
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8 path")),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    let mut seen = String::new();
    let read = |seen: &mut String| {
        let mut buf = [0u8; 1024];
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    poll("READY=1 and WATCHDOG=1", || {
        read(&mut seen);
        (seen.contains("READY=1") && seen.contains("WATCHDOG=1")).then_some(())
    });
    daemon.signal(libc::SIGTERM);
    poll("STOPPING=1", || {
        read(&mut seen);
        seen.contains("STOPPING=1").then_some(())
    });
    assert_eq!(daemon.wait_exit().code(), Some(0));
}
