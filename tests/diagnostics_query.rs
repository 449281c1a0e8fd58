//! `/diagnostics` takes the seed's query knobs, through the real binary:
//! `window_seconds` (the window the health history is aggregated over) and
//! `limit` (recent recovery events listed), both bounded, and a bad value is
//! a 400 with a message, never a silently ignored knob.

mod daemon_common;

use daemon_common::{Env, wait_until};
use serde_json::Value;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn window_seconds_and_limit_shape_the_answer_and_bad_values_are_refused() {
    let env = Env::new();
    let config = env.state_dir().join("fast.json");
    std::fs::write(
        &config,
        r#"{"health_monitoring": {"check_interval": 1, "aggregation_window": 300}}"#,
    )
    .unwrap();
    let mut daemon = env.spawn(&["--config", config.to_str().unwrap()]);
    env.wait_ready(&mut daemon);
    wait_until("two completed checks", || {
        let (_, body) = env.http_get("/diagnostics");
        json(&body)["health_monitor"]["checks_performed"]
            .as_u64()
            .is_some_and(|n| n >= 2)
    });

    // The configured window by default.
    let (code, body) = env.http_get("/diagnostics");
    assert_eq!(code, 200);
    assert_eq!(
        json(&body)["health_monitor"]["aggregated"]["window_ms"],
        300_000
    );

    // The caller's window when asked.
    let (code, body) = env.http_get("/diagnostics?window_seconds=0.5");
    assert_eq!(code, 200, "{body}");
    let answer = json(&body);
    assert_eq!(answer["health_monitor"]["aggregated"]["window_ms"], 500);

    // limit=0 lists no recovery event; the rest of the answer is unchanged.
    let (code, body) = env.http_get("/diagnostics?limit=0&window_seconds=60");
    assert_eq!(code, 200, "{body}");
    let answer = json(&body);
    assert_eq!(
        answer["recovery_manager"]["recent_events"],
        Value::Array(vec![])
    );
    assert_eq!(answer["health_monitor"]["aggregated"]["window_ms"], 60_000);

    for bad in [
        "window_seconds=0",
        "window_seconds=-3",
        "window_seconds=86401",
        "window_seconds=soon",
        "limit=-1",
        "limit=many",
    ] {
        let (code, body) = env.http_get(&format!("/diagnostics?{bad}"));
        assert_eq!(code, 400, "{bad}: {body}");
        let answer = json(&body);
        assert_eq!(answer["error"], "bad_query", "{bad}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{bad}: {body}"
        );
    }
    // The daemon is unharmed by them.
    assert_eq!(env.http_get("/livez").0, 200);
}

/// The seed's "network interface status": the network check names the
/// interface that carries the hub's address and says it is up.
#[test]
fn the_network_check_reports_the_interface_the_hub_listens_on() {
    let env = Env::new();
    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);
    let mut network = Value::Null;
    wait_until("a network check", || {
        let (_, body) = env.http_get("/diagnostics");
        let answer = json(&body);
        let found = answer["latest_report"]["results"]
            .as_array()
            .and_then(|results| {
                results
                    .iter()
                    .find(|r| r["checker"] == "network_connectivity")
                    .cloned()
            });
        match found {
            Some(r) => {
                network = r;
                true
            }
            None => false,
        }
    });
    let metric = |name: &str| {
        network["metrics"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no {name} metric in {network}"))
    };
    assert_eq!(metric("interface_status")["value"], "up", "{network}");
    assert_eq!(metric("interface_status")["status"], "healthy");
    // 127.0.0.1 is loopback's; its name is the kernel's (lo on Linux).
    assert!(
        metric("interface")["value"]
            .as_str()
            .is_some_and(|name| !name.is_empty() && name != "none"),
        "{network}"
    );
}
