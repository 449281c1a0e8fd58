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
    std::fs::write(
        &config,
        r#"{"health_monitoring": {"check_interval": 1, "thresholds": {"memory_mb": 1}},
            "recovery": {"enabled": false}}"#,
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
