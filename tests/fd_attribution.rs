//! Attribution before remedy, for descriptors (through the real binary):
//! connections that clients hold open are the clients' cost, shed at the
//! door (`server.max_connections`, the header-read timeout), never a reason
//! for the recovery ladder. The process checker judges `file_descriptors`
//! on the daemon's own descriptors, and reports the clients' beside them.
//!
//! Fails on the code before it: with `file_descriptors: 100`, 200 idle
//! connections made the process check critical and the ladder cleared,
//! restarted and stopped the daemon.

mod daemon_common;

use std::net::TcpStream;
use std::time::Duration;

use daemon_common::{Env, wait_until};
use serde_json::Value;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[test]
fn idle_connections_are_shed_at_the_door_and_never_drive_recovery() {
    let env = Env::new();
    let config = env.state_dir().join("fds.json");
    std::fs::write(
        &config,
        r#"{
            "server": {"max_connections": 200, "header_read_timeout": 120},
            "health_monitoring": {"check_interval": 1, "thresholds": {"file_descriptors": 100}},
            "recovery": {"min_recovery_interval": 0,
                         "strategy": {"warning_threshold": 1, "critical_threshold": 1}}
        }"#,
    )
    .unwrap();
    let mut daemon = env.spawn(&["--config", config.to_str().unwrap()]);
    env.wait_ready(&mut daemon);

    // 250 connections that never send a byte: 200 are held (the cap), the
    // rest are answered 429 and closed by the daemon.
    let mut held: Vec<TcpStream> = (0..250)
        .map(|_| TcpStream::connect(("127.0.0.1", env.port)).expect("connect"))
        .collect();
    for stream in &held {
        stream
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
    }

    // The probes are answered on the health lane, outside the cap. Several
    // checks pass with the connections held; the process check stays healthy
    // (its own descriptors are few) and the daemon stays up.
    let checks_at = |env: &Env| json(&env.http_get("/health").1)["last_check"].clone();
    let first = checks_at(&env);
    let mut seen = vec![first];
    wait_until("three more checks with the connections held", || {
        let now = checks_at(&env);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        seen.len() >= 4
    });
    let (code, body) = env.http_get("/health");
    let health = json(&body);
    assert_eq!(code, 200, "{body}");
    assert_eq!(health["checks"]["process_resources"], "healthy", "{body}");
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon stopped"
    );

    // Room again: /diagnostics (served behind the door) shows why.
    held.truncate(50);
    let mut diag = Value::Null;
    wait_until("/diagnostics once connections are released", || {
        let (code, body) = env.http_get("/diagnostics");
        diag = json(&body);
        code == 200
    });
    assert_eq!(
        diag["recovery_manager"]["recent_events"],
        Value::Array(vec![]),
        "no recovery action for clients' connections: {diag}"
    );
    let refused = diag["service_stats"]["connections_refused"]
        .as_u64()
        .unwrap_or(0);
    assert!(refused >= 50, "connections refused at the door: {refused}");
    let metrics = diag["latest_report"]["results"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["checker"] == "process_resources"))
        .and_then(|r| r["metrics"].as_array())
        .cloned()
        .unwrap_or_default();
    let metric = |name: &str| {
        metrics
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {metrics:?}"))
    };
    assert_eq!(metric("file_descriptors")["status"], "healthy");
    assert!(
        metric("client_connections")["value"]
            .as_f64()
            .unwrap_or(0.0)
            >= 50.0,
        "{metrics:?}"
    );
}
