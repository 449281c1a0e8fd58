//! Operators' alerts through the real binary (config `alerts`): a status
//! change and every recovery event reach a real local HTTP server and a real
//! script; the emergency stop's alert still goes out as the daemon stops
//! itself; a dead webhook never slows the health checks and is skipped by
//! its own circuit breaker.
//!
//! No timing assertions: every wait polls with a generous deadline.

mod daemon_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use daemon_common::{Env, wait_until};
use serde_json::{Value, json};

/// A tiny HTTP server on loopback that keeps every POSTed body and answers
/// 200 (or, when `silent`, accepts and never answers).
struct Hook {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Hook {
    fn start(silent: bool) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the hook");
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if silent {
                    held.push(stream); // never answered, never closed
                    continue;
                }
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok()
                    && let Ok(value) = serde_json::from_slice(&body)
                {
                    kept.lock().unwrap().push(value);
                }
                let _ = reader
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
        });
        Hook { port, bodies }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

fn write_config(env: &Env, value: Value) -> String {
    let path = env.state_dir().join("alerts.json");
    std::fs::write(&path, value.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

fn diagnostics(env: &Env) -> Value {
    let (_, body) = env.http_get("/diagnostics");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

#[test]
fn the_critical_ladder_is_told_to_a_webhook_and_a_script_down_to_the_emergency_stop() {
    let env = Env::new();
    let hook = Hook::start(false);
    let script_out = env.state_dir().join("alerts.jsonl");
    let config = write_config(
        &env,
        json!({
            "health_monitoring": {
                "check_interval": 1,
                "thresholds": {"memory_mb": 1}
            },
            "recovery": {
                "min_recovery_interval": 0,
                "strategy": {"warning_threshold": 2, "critical_threshold": 1}
            },
            "alerts": {
                "webhooks": [hook.url()],
                "command": ["/bin/sh", "-c", format!("cat >> '{}'", script_out.display())],
                "timeout_seconds": 5
            }
        }),
    );
    let mut daemon = env.spawn(&["--config", &config]);
    let status = daemon.wait_exit();
    assert_eq!(
        status.code(),
        Some(warden::daemon::cli::ExitCode::EmergencyStop.code()),
        "{}",
        daemon.stderr()
    );

    let bodies = hook.bodies();
    let first = bodies.first().expect("at least one alert");
    assert_eq!(first["kind"], "status_change");
    assert_eq!(first["status"], "critical");
    assert_eq!(first["previous_status"], "unknown");
    assert_eq!(first["checks"]["process_resources"], "critical");
    assert_eq!(first["source"]["port"], env.port);
    let actions: Vec<&str> = bodies
        .iter()
        .filter(|b| b["kind"] == "recovery")
        .filter_map(|b| b["recovery"]["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["clear_connections", "restart_service", "emergency_stop"],
        "{bodies:#?}"
    );

    // The script got the same alerts, one JSON line each.
    let lines = std::fs::read_to_string(&script_out).expect("the script ran");
    let from_script: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    assert_eq!(from_script, bodies);
}

#[test]
fn a_dead_webhook_never_slows_the_checks_and_opens_its_own_breaker() {
    let env = Env::new();
    let dead = Hook::start(true);
    let config = write_config(
        &env,
        json!({
            "health_monitoring": {"check_interval": 1},
            "alerts": {
                "webhooks": [dead.url()],
                "timeout_seconds": 0.3,
                "max_attempts": 1,
                "failure_threshold": 1,
                "breaker_timeout_seconds": 3600
            }
        }),
    );
    let mut daemon = env.spawn(&["--config", &config]);
    env.wait_ready(&mut daemon);

    // The first alert (unknown → healthy) times out and opens the breaker.
    wait_until("the dead webhook's breaker to open", || {
        diagnostics(&env)["alerts"]["state"]["destinations"][0]["breaker_state"] == "open"
    });
    let d = diagnostics(&env);
    let destination = &d["alerts"]["state"]["destinations"][0];
    assert_eq!(destination["failed"], 1, "{destination}");
    assert!(
        destination["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{destination}"
    );

    // The checks keep their schedule while the webhook stays dead.
    let checks_before = d["health_monitor"]["checks_performed"].as_u64().unwrap();
    wait_until("five more checks on schedule", || {
        diagnostics(&env)["health_monitor"]["checks_performed"]
            .as_u64()
            .is_some_and(|n| n >= checks_before + 5)
    });
    let d = diagnostics(&env);
    let destination = &d["alerts"]["state"]["destinations"][0];
    assert_eq!(destination["failed"], 1, "{destination}");
    let durations: Vec<f64> = d["latest_report"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["duration_ms"].as_f64())
        .collect();
    println!("check durations with a dead webhook (ms): {durations:?}");

    let (_, metrics) = env.http_get("/metrics");
    assert!(
        metrics.contains("warden_alerts_failed_total{destination=\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("warden_alerts_suppressed_total"),
        "{metrics}"
    );
}
