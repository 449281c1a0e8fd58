//! `warden doctor` and `warden health` about a daemon that reports itself
//! critical, through the real binary: doctor names the failing check with
//! the seed's HealthCheckError (details and resolution steps), and `health`
//! prints a readable summary that says what failed; exit codes unchanged.

mod daemon_common;

use daemon_common::{Env, text, wait_until};

#[test]
fn a_critical_daemon_is_a_finding_with_the_health_check_guide() {
    let env = Env::new();
    let config = env.state_dir().join("critical.json");
    // memory_mb 1: every check is critical; recovery off, so it stays up.
    // With a token: the details come from /diagnostics, which needs it, and
    // the CLI sends the one of the config it reads.
    std::fs::write(
        &config,
        r#"{"health_monitoring": {"check_interval": 1, "thresholds": {"memory_mb": 1}},
            "recovery": {"enabled": false},
            "server": {"auth_token": "doctor-test-token-0123456789"}}"#,
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let mut daemon = env.spawn(&["--config", config]);
    env.wait_ready(&mut daemon);
    wait_until("a critical report", || {
        env.http_get("/health").1.contains("\"critical\"")
    });

    let out = env.run(&["doctor", "--config", config]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(!report.contains("No problems found"), "{report}");
    assert!(
        report.contains("reports critical health: process_resources"),
        "{report}"
    );
    assert!(report.contains("HealthCheckError"), "{report}");
    assert!(report.contains("Exceeded memory_mb"), "{report}");
    assert!(
        report.contains("health_monitoring.thresholds.memory_mb"),
        "{report}"
    );

    let out = env.run(&["health", "--config", config]);
    let summary = text(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{summary}");
    assert!(summary.contains(": critical ("), "{summary}");
    assert!(summary.contains("memory_mb"), "{summary}");
}

/// A cluster node whose Redis is away: doctor shows the node's link and
/// explains the outage with the steps to check it (no Redis is needed: the
/// URL points at a port where nothing listens, and a node starts anyway).
#[test]
fn doctor_explains_a_cluster_nodes_redis_outage() {
    let env = Env::new();
    let dead_redis = daemon_common::free_port();
    let config = env.state_dir().join("cluster.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"cluster": {{"redis_url": "redis://127.0.0.1:{dead_redis}", "node_id": "node-a"}}}}"#
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let mut daemon = env.spawn(&["--config", config]);
    env.wait_ready(&mut daemon);

    let out = env.run(&["doctor", "--config", config]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("cluster: node node-a"), "{report}");
    assert!(
        report.contains(&format!("Redis at redis://127.0.0.1:{dead_redis}")),
        "{report}"
    );
    assert!(report.contains("redis-cli -u"), "{report}");
}
