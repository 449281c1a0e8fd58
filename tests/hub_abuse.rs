//! Hostile clients against the real `warden` binary, checks every second and
//! a recovery ladder that acts on the first critical report: what one client
//! does costs that client alone and never drives recovery.
//!
//! - malformed `claude_event`s (`42["claude_event"]`, no data), hundreds of
//!   them from clients that reconnect after each cut-off: every abuser is
//!   disconnected once it spends its budget, the daemon takes no recovery
//!   action, and an honest dashboard stays connected and keeps receiving.
//!   (Before attribution these packets were the hub's `errors`: the error
//!   rate went critical, clear_connections cut the dashboard and the ladder
//!   ended in an emergency stop.)
//!
//! No timing assertions: every wait polls with a generous deadline.

mod daemon_common;
mod hub_common;

use std::time::{Duration, Instant};

use daemon_common::{Daemon, Env};
use hub_common::TestClient;
use rust_socketio::Payload;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(90);

/// Checks every second; one critical report is enough for clear_connections.
/// Process thresholds are out of reach so that only the service checker can act.
fn healing_config(server: Value) -> Value {
    json!({
        "server": server,
        "health_monitoring": {
            "check_interval": 1,
            "aggregation_window": 60,
            "thresholds": {"cpu_percent": 10000, "memory_mb": 100000, "file_descriptors": 1000000}
        },
        "recovery": {
            "min_recovery_interval": 0,
            "strategy": {"warning_threshold": 2, "critical_threshold": 1}
        }
    })
}

fn spawn_with(env: &Env, config: Value) -> Daemon {
    let path = env.state_dir().join("config.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    let path = path.to_str().expect("utf-8 path").to_owned();
    let mut daemon = env.spawn(&["--config", &path]);
    env.wait_ready(&mut daemon);
    daemon
}

fn diagnostics(env: &Env) -> Value {
    let (code, body) = env.http_get("/diagnostics");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("diagnostics JSON")
}

fn actions(diag: &Value) -> Vec<String> {
    diag["recovery_manager"]["recent_events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| e["action"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn checks_performed(diag: &Value) -> u64 {
    diag["health_monitor"]["checks_performed"]
        .as_u64()
        .expect("checks_performed")
}

async fn poll_diag(env: &Env, what: &str, mut ok: impl FnMut(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let diag = tokio::task::block_in_place(|| diagnostics(env));
        if ok(&diag) {
            return diag;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "gave up waiting for {what}: {diag:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_cost_their_sender_not_the_daemon_nor_the_honest_clients() {
    let env = Env::new();
    let budget = 20;
    let mut daemon = tokio::task::block_in_place(|| {
        spawn_with(&env, healing_config(json!({"client_error_budget": budget})))
    });
    let dashboard = TestClient::connect(&env.url()).await;
    let hook = TestClient::connect(&env.url()).await;

    // Five abusers in a row, each sending 100 empty claude_events (hundreds
    // in all) over several check intervals.
    let abusers = 5;
    for round in 0..abusers {
        let abuser = TestClient::connect(&env.url()).await;
        for _ in 0..100 {
            // Fails once the hub has cut it off; it keeps trying regardless.
            let _ = abuser
                .client
                .emit("claude_event", Payload::Text(vec![]))
                .await;
        }
        hook.emit("claude_event", json!({"round": round})).await;
        dashboard.recorder.wait_for("claude_event", round + 1).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let _ = abuser.client.disconnect().await;
    }

    let attacked = poll_diag(&env, "every abuser cut off", |d| {
        d["service_stats"]["clients_disconnected_for_abuse"].as_u64() == Some(abusers as u64)
    })
    .await;
    let stats = &attacked["service_stats"];
    assert!(
        stats["client_errors"].as_u64() >= Some(abusers as u64 * (budget + 1)),
        "{stats}"
    );
    assert_eq!(
        stats["errors"], 0,
        "a client's bad packets are not the hub's errors"
    );

    // Three more checks after the attack: still nothing to recover from.
    let seen = checks_performed(&attacked);
    let diag = poll_diag(&env, "three more checks", |d| {
        checks_performed(d) >= seen + 3
    })
    .await;
    assert_eq!(actions(&diag), Vec::<String>::new(), "{diag:#}");
    assert!(
        daemon.child.try_wait().expect("try_wait").is_none(),
        "the daemon is up"
    );

    // The honest pair never noticed.
    hook.emit("claude_event", json!({"after": true})).await;
    let events = dashboard
        .recorder
        .wait_for("claude_event", abusers + 1)
        .await;
    assert_eq!(events[abusers]["after"], true);
    assert_eq!(dashboard.recorder.count("connection_ack"), 1);
    let stats = &diagnostics(&env)["service_stats"];
    assert_eq!(stats["clients_connected"], 2, "{stats}");
    assert_eq!(stats["errors"], 0);

    let (_, metrics) = env.http_get("/metrics");
    assert!(
        metrics.contains(&format!(
            "socketio_clients_disconnected_for_abuse_total {abusers}"
        )),
        "{metrics}"
    );
    drop(daemon);
}
