//! Keeps the load tool from rotting: the real `warden-load` binary drives the
//! real `bare-hub` binary with a handful of clients, and its JSON must show
//! every delivery made and stamped. Counts only; no timing is asserted.

use std::process::Command;

use serde_json::Value;

fn warden_load(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_warden-load"))
        .args(["--bare-hub", env!("CARGO_BIN_EXE_bare-hub"), "--runs", "1"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "warden-load failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("| metric (median) |"), "{stdout}");
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

#[test]
fn a_small_burst_through_the_bare_hub_is_delivered_to_every_other_client_stamped() {
    let report = warden_load(&[
        "--servers",
        "bare",
        "--scenario",
        "custom",
        "--clients",
        "3",
        "--senders",
        "2",
        "--events",
        "10",
    ]);
    let run = &report["scenarios"][0]["runs"][0];
    assert_eq!(run["server"], "bare");
    assert_eq!(run["clients_connected"], 3);
    // Two senders x 10 events, each to the two other clients.
    assert_eq!(run["expected_deliveries"], 40);
    assert_eq!(run["deliveries"], 40);
    assert_eq!(run["lost"], 0);
    assert_eq!(run["duplicates"], 0);
    assert_eq!(run["unstamped"], 0);
    assert_eq!(run["health"]["path"], "/status");
    assert!(run["health"]["samples"].as_u64().unwrap() >= 1);
    assert!(run["cpu_us"].is_u64());
    assert!(run["rss_peak_kib"].as_u64().unwrap() >= run["rss_start_kib"].as_u64().unwrap());
    let medians = &report["scenarios"][0]["medians"]["bare"];
    assert_eq!(medians["lost"], 0.0);
}

#[test]
fn the_lifecycle_scenario_connects_polling_and_websocket_clients_then_stops_the_server() {
    let report = warden_load(&["--servers", "bare", "--scenario", "lifecycle"]);
    let run = &report["scenarios"][0]["runs"][0];
    assert_eq!(run["clients_connected"], 40, "{run}");
    assert_eq!(run["connect_failures"], 0);
    assert_eq!(run["stop"]["method"], "SIGTERM");
    assert_eq!(run["stop"]["killed"], false);
}
