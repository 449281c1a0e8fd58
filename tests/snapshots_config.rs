//! Configuration: every rejection message is a reviewed snapshot naming the
//! file, line, column and key path; defaults round-trip; profiles and CLI
//! flags layer as documented (defaults < profile < file < flags).

use std::path::{Path, PathBuf};
use std::time::Duration;

use warden::config::{
    ConfigError, ConfigOverrides, LogLevel, Profile, WardenConfig, parse_config,
    parse_config_with_profile, render_default_json, render_json,
};

const FILE: &str = "/home/user/.claude-mpm/socketio-config.json";

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::with_settings!({
            snapshot_path => "../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("config__{}", $name), $value);
        })
    };
}

fn reject(text: &str) -> ConfigError {
    match parse_config(text, Path::new(FILE)) {
        Ok(cfg) => panic!("accepted: {cfg:?}"),
        Err(e) => e,
    }
}

fn key_and_line(e: &ConfigError) -> (String, usize) {
    match e {
        ConfigError::Invalid { key, line, .. } => (key.clone(), *line),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn unknown_top_level_key_names_line_column_and_key() {
    let e = reject("{\n  \"server\": {},\n  \"colour\": \"blue\"\n}\n");
    assert_eq!(key_and_line(&e), ("colour".to_string(), 3));
    snap!("unknown_top_level_key", e.to_string());
}

#[test]
fn unknown_nested_key_names_the_full_path() {
    let text = r#"{
    "recovery": {
        "circuit_breaker": {
            "failure_threshold": 5,
            "timeout": 300
        }
    }
}"#;
    let e = reject(text);
    assert_eq!(
        key_and_line(&e),
        ("recovery.circuit_breaker.timeout".to_string(), 5)
    );
    snap!("unknown_nested_key", e.to_string());
}

#[test]
fn wrong_type_is_rejected() {
    let e = reject("{\n  \"server\": {\n    \"port\": \"8765\"\n  }\n}");
    assert_eq!(key_and_line(&e), ("server.port".to_string(), 3));
    snap!("wrong_type", e.to_string());
}

#[test]
fn out_of_range_values_are_rejected_while_parsing() {
    let e = reject("{\n  \"server\": {\n    \"port\": 70000\n  }\n}");
    assert_eq!(key_and_line(&e), ("server.port".to_string(), 3));
    snap!("out_of_range_port", e.to_string());

    let e = reject("{\"health_monitoring\": {\"thresholds\": {\n  \"error_rate\": 1.5\n}}}");
    assert_eq!(
        key_and_line(&e),
        ("health_monitoring.thresholds.error_rate".to_string(), 2)
    );
    snap!("out_of_range_fraction", e.to_string());

    let e = reject("{\"health_monitoring\": {\"check_interval\": 0}}");
    assert_eq!(key_and_line(&e).0, "health_monitoring.check_interval");
    snap!("out_of_range_duration", e.to_string());

    let e = reject("{\"recovery\": {\"circuit_breaker\": {\"failure_threshold\": 0}}}");
    assert_eq!(
        key_and_line(&e).0,
        "recovery.circuit_breaker.failure_threshold"
    );

    let e = reject("{\"server\": {\"allowed_hosts\": [\"dash.example:8765\"]}}");
    assert_eq!(key_and_line(&e).0, "server.allowed_hosts");
    snap!("bad_allowed_host", e.to_string());

    let e = reject("{\"logging\": {\"level\": \"LOUD\"}}");
    assert_eq!(key_and_line(&e).0, "logging.level");
    snap!("bad_log_level", e.to_string());
}

#[test]
fn bad_json_syntax_names_line_and_column() {
    let e = reject("{\n  \"server\": {\n    \"port\": 8765,\n  }\n}");
    assert!(matches!(e, ConfigError::Syntax { line: 4, .. }), "{e:?}");
    snap!("bad_syntax", e.to_string());

    let e = reject("");
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
    snap!("empty_file", e.to_string());
}

#[test]
fn strategy_accepts_the_seed_string_and_an_object() {
    let graded = parse_config(r#"{"recovery": {"strategy": "graded"}}"#, Path::new(FILE)).unwrap();
    assert_eq!(graded, WardenConfig::default());

    let obj = parse_config(
        r#"{"recovery": {"strategy": {"warning_threshold": 4, "critical_threshold": 2, "failure_window_seconds": 120}}}"#,
        Path::new(FILE),
    )
    .unwrap();
    assert_eq!(obj.recovery.strategy.warning_threshold, 4);
    assert_eq!(obj.recovery.strategy.critical_threshold, 2);
    assert_eq!(
        obj.recovery.strategy.failure_window_seconds,
        Duration::from_secs(120)
    );

    let e = reject("{\"recovery\": {\n  \"strategy\": \"aggressive\"\n}}");
    assert_eq!(key_and_line(&e), ("recovery.strategy".to_string(), 2));
    snap!("strategy_unknown_string", e.to_string());

    let e = reject("{\"recovery\": {\"strategy\": {\n  \"warning_treshold\": 2\n}}}");
    assert_eq!(
        key_and_line(&e),
        ("recovery.strategy.warning_treshold".to_string(), 2)
    );
    snap!("strategy_unknown_key", e.to_string());

    let e = reject("{\"recovery\": {\"strategy\": {\"critical_threshold\": 0}}}");
    assert_eq!(key_and_line(&e).0, "recovery.strategy.critical_threshold");
    snap!("strategy_out_of_range", e.to_string());
}

#[test]
fn contradicting_keys_name_the_key_to_change() {
    let e = reject(r#"{"health_monitoring": {"check_interval": 120, "aggregation_window": 60}}"#);
    assert!(
        matches!(&e, ConfigError::Inconsistent { key, .. } if key == "health_monitoring.aggregation_window_seconds"),
        "{e:?}"
    );
    snap!("inconsistent_window", e.to_string());

    let e = reject(
        r#"{"recovery": {"min_recovery_interval": 60, "strategy": {"min_recovery_interval": 30}}}"#,
    );
    snap!("inconsistent_min_recovery_interval", e.to_string());
}

/// A duration key is named with its unit (`idle_timeout_seconds`); the seed's
/// name (`idle_timeout`) is read as the same key, so a file giving both says
/// two things and is refused, naming both, with or without a profile.
#[test]
fn a_key_under_its_old_and_new_name_is_refused() {
    let e = reject(r#"{"server": {"idle_timeout": 30, "idle_timeout_seconds": 30}}"#);
    assert!(
        matches!(&e, ConfigError::Inconsistent { key, .. } if key == "server.idle_timeout_seconds"),
        "{e:?}"
    );
    snap!("renamed_key_given_twice", e.to_string());
    let with_profile = parse_config(
        r#"{"profile": "production", "recovery": {"strategy": {"min_recovery_interval_seconds": 5, "min_recovery_interval": 5}}}"#,
        Path::new(FILE),
    )
    .unwrap_err()
    .to_string();
    assert!(
        with_profile.contains("`recovery.strategy.min_recovery_interval`")
            && with_profile.contains("`recovery.strategy.min_recovery_interval_seconds`"),
        "{with_profile}"
    );
}

#[test]
fn the_seed_config_file_example_parses() {
    let text = r#"{
    "server": {"host": "localhost", "port": 8765, "enable_cors": true},
    "health_monitoring": {
        "enabled": true,
        "check_interval": 30,
        "thresholds": {"cpu_percent": 80.0, "memory_mb": 500, "file_descriptors": 1000, "error_rate": 0.1}
    },
    "recovery": {
        "enabled": true,
        "strategy": "graded",
        "min_recovery_interval": 60,
        "circuit_breaker": {"failure_threshold": 5, "timeout_seconds": 300, "success_threshold": 3}
    },
    "pid_validation": {"enhanced": true, "use_psutil": true, "lock_timeout": 5.0},
    "logging": {"level": "INFO", "file": "~/.claude-mpm/socketio-server.log", "max_size_mb": 50, "backup_count": 5}
}"#;
    let cfg = parse_config(text, Path::new(FILE)).unwrap();
    assert_eq!(
        cfg.recovery.min_recovery_interval(),
        Duration::from_secs(60)
    );
    assert_eq!(
        cfg.logging.file,
        Some(PathBuf::from("~/.claude-mpm/socketio-server.log"))
    );
    let no_file = parse_config(r#"{"logging": {"file": null}}"#, Path::new(FILE)).unwrap();
    assert_eq!(no_file.logging.file, None);
}

#[test]
fn default_config_round_trips_and_is_reviewed() {
    let json = render_default_json();
    snap!("default_json", &json);
    assert_eq!(
        parse_config(&json, Path::new(FILE)).unwrap(),
        WardenConfig::default()
    );
    for profile in [
        Profile::Development,
        Profile::Production,
        Profile::HighTraffic,
    ] {
        let cfg = WardenConfig::for_profile(profile);
        assert_eq!(
            parse_config(&render_json(&cfg), Path::new(FILE)).unwrap(),
            cfg
        );
    }
}

#[test]
fn profiles_differ_as_the_seed_says() {
    let d = WardenConfig::default();
    let dev = WardenConfig::for_profile(Profile::Development);
    let prod = WardenConfig::for_profile(Profile::Production);

    assert_eq!(d.health_monitoring.check_interval, Duration::from_secs(30));
    assert_eq!(
        dev.health_monitoring.check_interval,
        Duration::from_secs(10)
    );
    assert_eq!(
        prod.health_monitoring.check_interval,
        Duration::from_secs(60)
    );

    assert_eq!(
        (
            d.health_monitoring.history_size,
            dev.health_monitoring.history_size,
            prod.health_monitoring.history_size
        ),
        (100, 50, 200)
    );
    assert_eq!(
        prod.health_monitoring.aggregation_window,
        Duration::from_secs(600)
    );
    assert_eq!(
        dev.health_monitoring.aggregation_window,
        Duration::from_secs(300)
    );

    assert_eq!(
        (
            d.recovery.circuit_breaker.failure_threshold,
            dev.recovery.circuit_breaker.failure_threshold,
            prod.recovery.circuit_breaker.failure_threshold
        ),
        (5, 3, 10)
    );
    assert_eq!(
        prod.recovery.circuit_breaker.timeout_seconds,
        Duration::from_secs(600)
    );
    assert_eq!(dev.health_monitoring.thresholds.cpu_percent, 50.0);
    assert_eq!(dev.health_monitoring.thresholds.memory_mb, 200);
    assert_eq!(
        prod.health_monitoring.thresholds,
        d.health_monitoring.thresholds
    );

    // The seed's "High-Traffic Environments" block, value for value.
    let high = WardenConfig::for_profile(Profile::HighTraffic);
    assert_eq!(
        high.health_monitoring.check_interval,
        Duration::from_secs(60)
    );
    assert_eq!(high.health_monitoring.thresholds.cpu_percent, 90.0);
    assert_eq!(high.health_monitoring.thresholds.memory_mb, 1000);
    assert_eq!(high.recovery.circuit_breaker.failure_threshold, 10);
    for name in ["high-traffic", "high_traffic"] {
        let from_file =
            parse_config(&format!(r#"{{"profile": "{name}"}}"#), Path::new(FILE)).unwrap();
        assert_eq!(from_file, high, "{name}");
    }
}

#[test]
fn the_file_beats_its_profile_and_the_profile_beats_defaults() {
    let cfg = parse_config(
        r#"{"profile": "production", "health_monitoring": {"check_interval": 45}}"#,
        Path::new(FILE),
    )
    .unwrap();
    // From the file.
    assert_eq!(
        cfg.health_monitoring.check_interval,
        Duration::from_secs(45)
    );
    // From the profile, not overridden by the file.
    assert_eq!(cfg.health_monitoring.history_size, 200);
    assert_eq!(cfg.recovery.circuit_breaker.failure_threshold, 10);
    // Defaults where neither says anything.
    assert_eq!(cfg.server.port, 8765);
    assert_eq!(cfg.profile, Some(Profile::Production));

    // A profile chosen outside the file replaces the file's profile key.
    let dev = parse_config_with_profile(
        r#"{"profile": "production"}"#,
        Path::new(FILE),
        Some(Profile::Development),
    )
    .unwrap();
    assert_eq!(dev, WardenConfig::for_profile(Profile::Development));

    let e = reject(r#"{"profile": "staging"}"#);
    assert_eq!(key_and_line(&e).0, "profile");
    snap!("unknown_profile", e.to_string());
}

#[test]
fn the_seeds_top_level_host_and_port_disagreeing_with_server_are_named() {
    let e = reject(r#"{"host": "0.0.0.0", "server": {"host": "localhost"}}"#);
    snap!("seed_layout_conflict", e.to_string());
    // Agreeing twice is fine.
    let cfg = parse_config(
        r#"{"port": 9000, "server": {"port": 9000}}"#,
        Path::new(FILE),
    )
    .unwrap();
    assert_eq!(cfg.server.port, 9000);
}

#[test]
fn alerts_take_plain_http_webhooks_and_a_program() {
    let cfg = parse_config(
        r#"{"alerts": {"webhooks": ["http://127.0.0.1:9093/api/hook?x=1", "http://[::1]/a"],
            "command": ["/usr/local/bin/notify", "--urgent"]}}"#,
        Path::new(FILE),
    )
    .unwrap();
    let hooks = &cfg.alerts.webhooks;
    assert_eq!(
        (hooks[0].host(), hooks[0].port(), hooks[0].path()),
        ("127.0.0.1", 9093, "/api/hook?x=1")
    );
    assert_eq!(
        (hooks[1].host(), hooks[1].port(), hooks[1].path()),
        ("::1", 80, "/a")
    );
    assert!(cfg.alerts.enabled());
    assert!(!WardenConfig::default().alerts.enabled());

    let e = reject(r#"{"alerts": {"webhooks": ["https://hooks.example.com/x"]}}"#);
    assert_eq!(key_and_line(&e).0, "alerts.webhooks[0]");
    snap!("alerts_https_webhook", e.to_string());
    for bad in [
        r#"{"alerts": {"webhooks": ["http://user:pw@host/x"]}}"#,
        r#"{"alerts": {"webhooks": ["http://host:0/x"]}}"#,
        r#"{"alerts": {"webhooks": ["http:///x"]}}"#,
        r#"{"alerts": {"command": [""]}}"#,
        r#"{"alerts": {"timeout_seconds": 0}}"#,
    ] {
        let e = reject(bad);
        assert!(key_and_line(&e).0.starts_with("alerts."), "{bad}: {e}");
    }
}

#[test]
fn cli_overrides_beat_the_file() {
    let mut cfg = parse_config(
        r#"{"server": {"host": "0.0.0.0", "port": 9000}, "logging": {"level": "ERROR"}}"#,
        Path::new(FILE),
    )
    .unwrap();
    cfg.apply(&ConfigOverrides {
        host: Some("127.0.0.1".into()),
        port: Some(9100),
        state_dir: Some(PathBuf::from("/var/lib/warden")),
        log_level: Some(LogLevel::Debug),
    })
    .unwrap();
    assert_eq!(cfg.server.host, "127.0.0.1");
    assert_eq!(cfg.server.port, 9100);
    assert_eq!(cfg.server.state_dir, Some(PathBuf::from("/var/lib/warden")));
    assert_eq!(cfg.logging.level, LogLevel::Debug);

    // No flags: the file's values stay.
    let mut untouched = parse_config(r#"{"server": {"port": 9000}}"#, Path::new(FILE)).unwrap();
    untouched.apply(&ConfigOverrides::default()).unwrap();
    assert_eq!(untouched.server.port, 9000);

    let e = untouched
        .apply(&ConfigOverrides {
            port: Some(0),
            ..ConfigOverrides::default()
        })
        .unwrap_err();
    snap!("override_port_zero", e.to_string());
}

#[test]
fn cluster_mode_is_off_by_default_and_its_keys_are_checked() {
    let cfg = parse_config("{}", Path::new(FILE)).unwrap();
    assert!(!cfg.cluster.enabled());
    assert_eq!(cfg.cluster.prefix, "warden");

    let cfg = parse_config(
        r#"{"cluster": {"redis_url": "redis://:pw@10.0.0.5:6379/2", "node_id": "east-1"}}"#,
        Path::new(FILE),
    )
    .unwrap();
    assert!(cfg.cluster.enabled());
    assert_eq!(cfg.cluster.node_id.as_deref(), Some("east-1"));

    let e = reject("{\n  \"cluster\": {\n    \"redis_url\": \"http://localhost:6379\"\n  }\n}");
    assert_eq!(key_and_line(&e), ("cluster.redis_url".to_string(), 3));
    snap!("cluster_bad_redis_url", e.to_string());

    for url in [
        "redis://h:6379/?protocol=resp2",
        "rediss://h:6379",
        "redis://",
        "redis://u:p@",
    ] {
        let e = reject(&format!(r#"{{"cluster": {{"redis_url": "{url}"}}}}"#));
        assert_eq!(key_and_line(&e).0, "cluster.redis_url", "{url}");
    }

    let e = reject(r#"{"cluster": {"redis_url": "rediss://admin:hunter2@cache:6380"}}"#);
    let said = e.to_string();
    assert!(!said.contains("hunter2"), "{said}");
    assert!(said.contains("rediss://admin:***@cache:6380"), "{said}");

    let e = reject("{\n  \"cluster\": {\n    \"node_id\": \"east 1\"\n  }\n}");
    assert_eq!(key_and_line(&e), ("cluster.node_id".to_string(), 3));
    snap!("cluster_bad_node_id", e.to_string());

    let e = reject(r#"{"cluster": {"redis": "redis://h"}}"#);
    assert_eq!(key_and_line(&e).0, "cluster.redis");
}
