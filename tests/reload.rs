//! SIGHUP reloads the configuration through the real binary: the daemon
//! survives it (it used to die without a log line), applies a changed
//! threshold (visible in `/diagnostics`' `config` section), names the keys
//! that need a restart, and refuses a bad file while serving on with the old
//! configuration. `warden reload` sends the signal to the verified pid.

mod daemon_common;

use daemon_common::*;
use serde_json::{Value, json};

fn write_config(env: &Env, memory_mb: u64, max_payload_bytes: u64) -> std::path::PathBuf {
    write_config_with(env, memory_mb, max_payload_bytes, 1)
}

fn write_config_with(
    env: &Env,
    memory_mb: u64,
    max_payload_bytes: u64,
    check_interval: u64,
) -> std::path::PathBuf {
    let path = env.state_dir().join("socketio-config.json");
    let body = json!({
        "server": { "max_payload_bytes": max_payload_bytes },
        "health_monitoring": {
            "check_interval_seconds": check_interval,
            "thresholds": { "memory_mb": memory_mb },
        },
    });
    std::fs::write(&path, body.to_string()).unwrap();
    path
}

fn config_section(env: &Env) -> Value {
    let (code, body) = env.http_get("/diagnostics");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["config"].clone()
}

#[test]
fn sighup_does_not_kill_and_a_changed_threshold_is_applied() {
    let env = Env::new();
    write_config(&env, 500, 1_000_000);
    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);
    assert_eq!(config_section(&env)["thresholds"]["memory_mb"], 500);

    // A plain kill -HUP with the file unchanged: survived, logged.
    daemon.signal(libc::SIGHUP);
    env.wait_log(&["received SIGHUP: config reloaded from", "nothing changed"]);
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "SIGHUP killed it"
    );
    assert_eq!(env.http_get("/status").0, 200);

    // A threshold and the interval (live) and a server limit (needs a
    // restart) change.
    write_config_with(&env, 600, 2_000_000, 2);
    let out = env.run(&["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("sent SIGHUP"),
        "{}",
        text(&out.stderr)
    );
    wait_until("the new threshold in /diagnostics", || {
        config_section(&env)["thresholds"]["memory_mb"] == 600
    });
    env.wait_log(&[
        "applied health_monitoring.check_interval_seconds, health_monitoring.thresholds.memory_mb; \
         needs a restart to take effect: server.max_payload_bytes",
    ]);
    assert_eq!(config_section(&env)["reloads"], 1);
    assert_eq!(config_section(&env)["check_interval_seconds"], 2.0);
    let (_, body) = env.http_get("/diagnostics");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["health_monitor"]["check_interval_seconds"], 2.0,
        "the monitor's own"
    );

    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.stderr());
}

#[test]
fn a_bad_file_is_refused_and_the_old_config_keeps_serving() {
    let env = Env::new();
    let path = write_config(&env, 500, 1_000_000);
    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);

    std::fs::write(
        &path,
        r#"{"health_monitoring": {"thresholds": {"memory_mb": -1}}}"#,
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    let log = env.wait_log(&["config reload refused, the running configuration is kept"]);
    assert!(
        log.contains("health_monitoring.thresholds.memory_mb"),
        "the refusal names the key:\n{log}"
    );
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "SIGHUP killed it"
    );
    assert_eq!(config_section(&env)["thresholds"]["memory_mb"], 500);
    assert_eq!(config_section(&env)["reloads"], 0);

    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.stderr());
}

#[test]
fn reload_when_nothing_runs_says_so() {
    let env = Env::new();
    let out = env.run(&["reload"]);
    assert_eq!(out.status.code(), Some(EXIT_NOT_RUNNING));
    assert!(text(&out.stderr).contains("nothing to reload"));
}
