//! Snapshot tests for every rendered error message and troubleshooting guide.
//!
//! Pids, paths and times are injected as fixed values, so the renderings are
//! stable. The snapshots live in the top-level `snapshots/` directory and are
//! reviewed like code: a changed message fails CI until the new snapshot is
//! accepted and committed.

use std::path::PathBuf;

use warden::errors::{
    Actionable, ConflictingProcess, DaemonConflictError, ExceededThreshold, HealthCheckError,
    Platform, PortConflictError, PortHolder, RecoveryFailedError, StaleProcessError, WardenError,
    format_troubleshooting_guide,
};
use warden::escalation::RecoveryAction;
use warden::health::HealthStatus;
use warden::pidfile::{ReuseEvidence, StaleReason};
use warden::time::WallTime;

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::with_settings!({
            snapshot_path => "../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("errors__{}", $name), $value);
        })
    };
}

/// 2025-08-06T14:40:15Z, fifteen minutes after the conflicting process started.
const OBSERVED: WallTime = WallTime::from_secs(1_754_491_215);
const STARTED: WallTime = WallTime::from_secs(1_754_490_315);

fn pid_file() -> PathBuf {
    PathBuf::from("/home/user/.claude-mpm/socketio-server-8765.pid")
}

fn daemon_conflict_with_process() -> DaemonConflictError {
    DaemonConflictError {
        port: 8765,
        existing_pid: Some(12345),
        server_id: Some("socketio-server-8765".into()),
        pid_file: pid_file(),
        process: Some(ConflictingProcess {
            name: "warden".into(),
            status: "running".into(),
            started: Some(STARTED),
            memory_mb: Some(45.2),
            cmdline: Some("/usr/local/bin/warden start --port 8765".into()),
        }),
        observed_at: OBSERVED,
    }
}

fn daemon_conflict_without_process() -> DaemonConflictError {
    DaemonConflictError {
        port: 8765,
        existing_pid: None,
        server_id: None,
        pid_file: pid_file(),
        process: None,
        observed_at: OBSERVED,
    }
}

fn port_conflict_with_process() -> PortConflictError {
    PortConflictError {
        host: "localhost".into(),
        port: 8765,
        conflicting_process: Some(PortHolder {
            pid: 4321,
            name: "python3".into(),
            cmdline: Some("python3 -m http.server 8765".into()),
        }),
    }
}

fn port_conflict_without_process() -> PortConflictError {
    PortConflictError {
        host: "127.0.0.1".into(),
        port: 9000,
        conflicting_process: None,
    }
}

fn stale(reason: StaleReason, pid: Option<u32>, status: &str) -> StaleProcessError {
    StaleProcessError {
        pid,
        pid_file: pid_file(),
        reason,
        process_status: status.into(),
        cleanup_error: Some("Permission denied (os error 13)".into()),
    }
}

fn stale_reused() -> StaleProcessError {
    stale(
        StaleReason::PidReused {
            pid: 12345,
            evidence: ReuseEvidence::StartTimeDiffers {
                recorded: STARTED,
                actual: OBSERVED,
            },
        },
        Some(12345),
        "running",
    )
}

fn recovery_failed() -> RecoveryFailedError {
    RecoveryFailedError {
        action: RecoveryAction::RestartService,
        reason: "rebinding 127.0.0.1:8765 timed out after 30s".into(),
        attempt: 5,
        max_attempts: 5,
        health_status: HealthStatus::Critical,
        host: "localhost".into(),
        port: 8765,
        pid: Some(12345),
        observed_at: OBSERVED,
    }
}

fn health_check() -> HealthCheckError {
    HealthCheckError {
        check_name: "process_resources".into(),
        status: HealthStatus::Critical,
        exceeded: vec![
            ExceededThreshold {
                metric: "cpu_percent".into(),
                value: 97.5,
                threshold: 80.0,
                unit: "%".into(),
            },
            ExceededThreshold {
                metric: "memory_mb".into(),
                value: 812.4,
                threshold: 500.0,
                unit: "MB".into(),
            },
            ExceededThreshold {
                metric: "file_descriptors".into(),
                value: 1024.0,
                threshold: 1000.0,
                unit: String::new(),
            },
        ],
        details: vec![],
        host: "localhost".into(),
        port: 8765,
        pid: Some(12345),
        observed_at: OBSERVED,
    }
}

#[test]
fn daemon_conflict_with_process_info() {
    snap!(
        "daemon_conflict_with_process",
        daemon_conflict_with_process().render(Platform::Linux)
    );
}

#[test]
fn daemon_conflict_without_process_info_tells_how_to_find_the_pid() {
    let text = daemon_conflict_without_process().render(Platform::Linux);
    assert!(!text.contains("kill"), "no signal without a known pid");
    snap!("daemon_conflict_without_process", text);
}

#[test]
fn daemon_conflict_on_every_platform() {
    let e = daemon_conflict_with_process();
    snap!("daemon_conflict_platform_linux", e.render(Platform::Linux));
    snap!("daemon_conflict_platform_macos", e.render(Platform::MacOs));
    snap!(
        "daemon_conflict_platform_windows",
        e.render(Platform::Windows)
    );
}

#[test]
fn port_conflict_with_and_without_process_info() {
    snap!(
        "port_conflict_with_process",
        port_conflict_with_process().render(Platform::Linux)
    );
    snap!(
        "port_conflict_without_process",
        port_conflict_without_process().render(Platform::MacOs)
    );
}

#[test]
fn stale_process_for_every_reason() {
    snap!(
        "stale_process_pid_reused",
        stale_reused().render(Platform::Linux)
    );
    snap!(
        "stale_process_not_listening",
        stale(
            StaleReason::PidReused {
                pid: 12345,
                evidence: ReuseEvidence::NotListening {
                    port: 8765,
                    command: "sleep 600".into()
                },
            },
            Some(12345),
            "sleeping"
        )
        .render(Platform::Linux)
    );
    snap!(
        "stale_process_gone",
        stale(
            StaleReason::ProcessGone { pid: 12345 },
            Some(12345),
            "not found"
        )
        .render(Platform::Linux)
    );
    snap!(
        "stale_process_zombie",
        stale(StaleReason::Zombie { pid: 12345 }, Some(12345), "zombie").render(Platform::Linux)
    );
    snap!(
        "stale_process_corrupt",
        stale(
            StaleReason::Corrupt {
                detail: "expected value at line 1 column 1".into()
            },
            None,
            "unknown"
        )
        .render(Platform::Windows)
    );
}

#[test]
fn recovery_failed_rendering() {
    snap!("recovery_failed", recovery_failed().render(Platform::Linux));
}

#[test]
fn health_check_rendering() {
    snap!("health_check", health_check().render(Platform::Linux));
}

/// From a checker's result as the monitor reports it: metrics over their
/// thresholds are named with value and threshold, others by their message;
/// healthy and unknown results are no error.
#[test]
fn health_check_from_a_result() {
    use warden::health::{HealthCheckResult, HealthMetric};
    use warden::time::Moment;
    let mut port = HealthMetric::new("port_accessible", false, HealthStatus::Critical);
    port.message = Some("127.0.0.1:8765 did not accept: connection refused".into());
    let mut fds = HealthMetric::new("file_descriptors", 1600.0, HealthStatus::Critical);
    fds.threshold = Some(1000.0);
    fds.unit = Some(String::new());
    let fine = HealthMetric::new("connect_ms", 0.2, HealthStatus::Healthy);
    let result = HealthCheckResult::from_metrics(
        "network_connectivity",
        vec![port, fds, fine],
        Moment::from_secs(1),
        OBSERVED,
        std::time::Duration::ZERO,
    );
    let err = HealthCheckError::from_result(&result, "127.0.0.1", 8765, Some(4242), OBSERVED)
        .expect("critical is an error");
    snap!("health_check_from_result", err.render(Platform::Linux));
    let healthy = HealthCheckResult::from_metrics(
        "service_health",
        vec![HealthMetric::new(
            "clients_connected",
            1.0,
            HealthStatus::Healthy,
        )],
        Moment::from_secs(1),
        OBSERVED,
        std::time::Duration::ZERO,
    );
    assert!(HealthCheckError::from_result(&healthy, "h", 1, None, OBSERVED).is_none());
}

#[test]
fn troubleshooting_guide_per_error_type() {
    let cases: Vec<(&str, WardenError, Platform)> = vec![
        (
            "guide_daemon_conflict",
            daemon_conflict_with_process().into(),
            Platform::Linux,
        ),
        (
            "guide_port_conflict",
            port_conflict_with_process().into(),
            Platform::Windows,
        ),
        (
            "guide_stale_process",
            stale_reused().into(),
            Platform::MacOs,
        ),
        (
            "guide_recovery_failed",
            recovery_failed().into(),
            Platform::Linux,
        ),
        ("guide_health_check", health_check().into(), Platform::Linux),
    ];
    for (name, err, platform) in cases {
        snap!(name, format_troubleshooting_guide(&err, platform));
    }
}

#[test]
fn display_is_the_current_platform_rendering() {
    let e = daemon_conflict_with_process();
    assert_eq!(
        e.to_string(),
        e.render(Platform::current()).trim_end(),
        "Display renders for the platform the binary runs on"
    );
    let w: WardenError = e.clone().into();
    assert_eq!(w.to_string(), e.to_string());
}

#[test]
fn no_rendering_ever_suggests_a_dangerous_kill() {
    let errors: Vec<WardenError> = vec![
        daemon_conflict_with_process().into(),
        daemon_conflict_without_process().into(),
        DaemonConflictError {
            existing_pid: Some(0),
            ..daemon_conflict_with_process()
        }
        .into(),
        DaemonConflictError {
            existing_pid: Some(1),
            ..daemon_conflict_with_process()
        }
        .into(),
        port_conflict_with_process().into(),
        port_conflict_without_process().into(),
        stale_reused().into(),
        recovery_failed().into(),
        RecoveryFailedError {
            action: RecoveryAction::EmergencyStop,
            pid: None,
            ..recovery_failed()
        }
        .into(),
        health_check().into(),
    ];
    for err in &errors {
        for platform in Platform::ALL {
            let text = format_troubleshooting_guide(err, platform);
            for line in text.lines() {
                let l = line.trim();
                for bad in [
                    "kill 0",
                    "kill -9 -1",
                    "kill -1",
                    "kill -TERM 0",
                    "kill -KILL 0",
                ] {
                    assert!(!l.contains(bad), "{bad} in: {l}");
                }
                assert!(
                    !l.contains("kill -TERM 1 ") && !l.ends_with("kill -TERM 1"),
                    "{l}"
                );
                assert!(
                    !l.contains("kill -KILL 1 ") && !l.ends_with("kill -KILL 1"),
                    "{l}"
                );
                assert!(!l.contains("pkill") && !l.contains("killall"), "{l}");
                assert!(!l.contains("/IM "), "taskkill by image name: {l}");
                // Every signal names an exact pid that the error carries.
                for word in [
                    "kill -TERM ",
                    "kill -KILL ",
                    "taskkill /PID ",
                    "taskkill /F /PID ",
                ] {
                    if let Some(rest) = l.split(word).nth(1) {
                        let pid: u32 = rest
                            .split(|c: char| !c.is_ascii_digit())
                            .next()
                            .and_then(|d| d.parse().ok())
                            .unwrap_or_else(|| panic!("signal without a pid: {l}"));
                        assert!(pid > 1, "{l}");
                    }
                }
            }
        }
    }
}
