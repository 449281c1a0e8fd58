//! A user coming from the original (the seed document) gets a working
//! daemon: its configuration layout and its environment presets are read by
//! the real binary.

mod daemon_common;

use daemon_common::{Env, text};
use serde_json::Value;

/// The seed's "Configuration Migration" example (`new_config`), as JSON.
const SEED_MIGRATED: &str = r#"{
    "host": "127.0.0.1",
    "port": 8799,
    "cors_allowed_origins": ["http://localhost:3000"],
    "health_monitoring": {"enabled": true, "check_interval": 30},
    "recovery": {"enabled": true, "strategy": "graded"},
    "pid_validation": {"enhanced": true}
}"#;

fn shown(env: &Env, args: &[&str]) -> Value {
    let out = env.run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("config show prints JSON")
}

#[test]
fn the_seeds_flat_layout_is_accepted_and_lands_under_server() {
    let env = Env::new();
    let file = env.state_dir().join("seed.json");
    std::fs::write(&file, SEED_MIGRATED).unwrap();
    let path = file.to_str().unwrap();

    let check = env.run(&["config", "check", path]);
    assert!(
        check.status.success(),
        "the seed's layout was refused: {}",
        text(&check.stderr)
    );
    assert!(text(&check.stdout).contains("port 8799, host 127.0.0.1"));

    let cfg = shown(&env, &["config", "show", "--config", path]);
    assert_eq!(cfg["server"]["host"], "127.0.0.1");
    assert_eq!(cfg["server"]["port"], 8799);
    assert_eq!(
        cfg["server"]["cors_allowed_origins"],
        serde_json::json!(["http://localhost:3000"])
    );
    // Written back in warden's own layout only.
    assert!(cfg.get("host").is_none() && cfg.get("port").is_none());
}

#[test]
fn the_seeds_layout_contradicting_the_server_section_is_refused() {
    let env = Env::new();
    let file = env.state_dir().join("both.json");
    std::fs::write(&file, r#"{"port": 8799, "server": {"port": 8800}}"#).unwrap();
    let out = env.run(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(daemon_common::EXIT_CONFIG));
    let err = text(&out.stderr);
    assert!(err.contains("`port`") && err.contains("keep one"), "{err}");
}

#[test]
fn the_high_traffic_profile_has_the_seeds_values() {
    let env = Env::new();
    let cfg = shown(&env, &["config", "show", "--profile", "high-traffic"]);
    let hm = &cfg["health_monitoring"];
    assert_eq!(hm["check_interval_seconds"], 60.0);
    assert_eq!(hm["thresholds"]["cpu_percent"], 90.0);
    assert_eq!(hm["thresholds"]["memory_mb"], 1000);
    assert_eq!(cfg["recovery"]["circuit_breaker"]["failure_threshold"], 10);
    assert_eq!(cfg["profile"], "high-traffic");
}

/// The seed's unit-less time keys are read under a profile and shown with
/// their unit (`check_interval` -> `check_interval_seconds`); `use_psutil`
/// is accepted and shown only when it is `false`.
#[test]
fn the_seeds_time_keys_are_shown_with_their_unit() {
    let env = Env::new();
    let file = env.state_dir().join("seed-times.json");
    std::fs::write(
        &file,
        r#"{
        "profile": "production",
        "health_monitoring": {"check_interval": 45, "network_timeout": 3},
        "recovery": {"strategy": "graded", "min_recovery_interval": 90, "recovery_timeout": 20},
        "pid_validation": {"enhanced": true, "use_psutil": true, "lock_timeout": 5.5}
    }"#,
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let cfg = shown(&env, &["config", "show", "--config", path]);
    let hm = &cfg["health_monitoring"];
    assert_eq!(hm["check_interval_seconds"], 45);
    assert_eq!(hm["network_timeout_seconds"], 3);
    assert_eq!(hm["aggregation_window_seconds"], 600, "from the profile");
    assert_eq!(cfg["recovery"]["min_recovery_interval_seconds"], 90);
    assert_eq!(cfg["recovery"]["recovery_timeout_seconds"], 20);
    assert_eq!(cfg["pid_validation"]["lock_timeout_seconds"], 5.5);
    let printed = cfg.to_string();
    for old in [
        "\"check_interval\"",
        "\"min_recovery_interval\"",
        "\"lock_timeout\"",
        "use_psutil",
    ] {
        assert!(!printed.contains(old), "{old} in {printed}");
    }

    std::fs::write(
        &file,
        r#"{"pid_validation": {"use_psutil": false, "lock_timeout_seconds": 1}}"#,
    )
    .unwrap();
    let cfg = shown(&env, &["config", "show", "--config", path]);
    assert_eq!(cfg["pid_validation"]["use_psutil"], false);
    assert_eq!(cfg["pid_validation"]["lock_timeout_seconds"], 1);
}
