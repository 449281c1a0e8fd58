//! `warden doctor`'s diagnosis, snapshot-tested from facts written by hand
//! (no process, no port, no clock): what it says of a healthy daemon, a
//! critical one, a stale PID file, a port held by another program and a
//! port where nothing runs.

use std::path::PathBuf;

use warden::daemon::cli::doctor::{Answer, ClusterFacts, Facts, InstanceFacts, diagnose, render};
use warden::daemon::os::port::PortOwner;
use warden::errors::{ConflictingProcess, ExceededThreshold, HealthCheckError, Platform};
use warden::health::HealthStatus;
use warden::pidfile::StaleReason;
use warden::time::WallTime;

const OBSERVED: WallTime = WallTime::from_millis(1_754_491_215_000);

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::with_settings!({
            snapshot_path => "../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("doctor__{}", $name), $value);
        })
    };
}

fn pid_file() -> PathBuf {
    PathBuf::from("/home/user/.claude-mpm/socketio-server-8765.pid")
}

fn facts(instance: InstanceFacts, port_owner: Option<PortOwner>) -> Facts {
    Facts {
        state_dir: PathBuf::from("/home/user/.claude-mpm"),
        config_file: None,
        config_error: None,
        host: "localhost".into(),
        port: 8765,
        log_file: Some(PathBuf::from("/home/user/.claude-mpm/socketio-server.log")),
        observed_at: OBSERVED,
        instance,
        port_owner,
        port_accepts: false,
    }
}

fn running(answer: Answer) -> InstanceFacts {
    InstanceFacts::Running {
        pid_file: pid_file(),
        pid: 4242,
        server_id: "socketio-server-8765".into(),
        process: ConflictingProcess {
            name: "warden".into(),
            status: "sleeping".into(),
            started: Some(WallTime::from_secs(1_754_490_600)),
            memory_mb: Some(7.5),
            cmdline: Some("warden start".into()),
        },
        contact: "localhost".into(),
        answer: Box::new(answer),
    }
}

fn warden_owner() -> Option<PortOwner> {
    Some(PortOwner {
        pid: 4242,
        name: "warden".into(),
        cmdline: vec!["warden".into(), "start".into()],
    })
}

fn report(f: &Facts) -> (usize, String) {
    let d = diagnose(f);
    (
        d.findings.len(),
        render(&d, Platform::Linux, f.log_file.as_deref()),
    )
}

#[test]
fn a_healthy_daemon_is_no_problem() {
    let (findings, text) = report(&facts(
        running(Answer::Health {
            status: HealthStatus::Healthy,
            failing: vec![],
            cluster: None,
        }),
        warden_owner(),
    ));
    assert_eq!(findings, 0);
    assert!(text.contains("No problems found."));
    snap!("healthy", text);
}

#[test]
fn a_critical_daemon_gets_the_health_check_guide() {
    let failing = HealthCheckError {
        check_name: "process_resources".into(),
        status: HealthStatus::Critical,
        exceeded: vec![ExceededThreshold {
            metric: "memory_mb".into(),
            value: 812.4,
            threshold: 500.0,
            unit: "MB".into(),
        }],
        details: vec![],
        host: "localhost".into(),
        port: 8765,
        pid: Some(4242),
        observed_at: OBSERVED,
    };
    let (findings, text) = report(&facts(
        running(Answer::Health {
            status: HealthStatus::Critical,
            failing: vec![failing],
            cluster: None,
        }),
        warden_owner(),
    ));
    assert_eq!(findings, 1);
    assert!(text.contains("HealthCheckError") || text.contains("Health check 'process_resources'"));
    snap!("critical", text);
}

#[test]
fn a_cluster_node_shows_its_redis_link_and_explains_an_outage() {
    let link = |state: &str| ClusterFacts {
        node_id: "node-a".into(),
        redis_url: "redis://127.0.0.1:6379".into(),
        redis_state: state.into(),
        redis_state_since: Some("2025-08-06T14:39:02.000Z".into()),
        redis_rtt_ms: (state == "connected").then_some(0.4),
        peers_seen: if state == "connected" {
            vec!["node-b".into()]
        } else {
            vec![]
        },
        last_error: (state != "connected").then(|| "Connection refused (os error 111)".into()),
    };
    let node = |state: &str| {
        facts(
            running(Answer::Health {
                status: HealthStatus::Healthy,
                failing: vec![],
                cluster: Some(link(state)),
            }),
            warden_owner(),
        )
    };
    let (findings, text) = report(&node("connected"));
    assert_eq!(findings, 0);
    assert!(text.contains("cluster: node node-a"), "{text}");
    let (findings, text) = report(&node("disconnected"));
    assert_eq!(findings, 1);
    snap!("cluster_redis_down", text);
}

#[test]
fn a_stale_file_is_explained() {
    let (findings, text) = report(&facts(
        InstanceFacts::Stale {
            pid_file: pid_file(),
            pid: Some(4242),
            reason: StaleReason::ProcessGone { pid: 4242 },
            process_status: "not found".into(),
        },
        None,
    ));
    assert_eq!(findings, 1);
    snap!("stale", text);
}

#[test]
fn a_port_held_by_another_program_names_it() {
    let (findings, text) = report(&facts(
        InstanceFacts::NotRunning {
            pid_file: pid_file(),
        },
        Some(PortOwner {
            pid: 999,
            name: "python3".into(),
            cmdline: vec![
                "python3".into(),
                "-m".into(),
                "http.server".into(),
                "8765".into(),
            ],
        }),
    ));
    assert_eq!(findings, 1);
    snap!("port_conflict", text);
}

#[test]
fn nothing_running_is_no_problem() {
    let (findings, text) = report(&facts(
        InstanceFacts::NotRunning {
            pid_file: pid_file(),
        },
        None,
    ));
    assert_eq!(findings, 0);
    snap!("not_running", text);
}

/// `warden status`'s cluster line (issue 15 item 10), from `/diagnostics`'
/// cluster section: connected, and during a Redis outage (with the pointer to
/// doctor, whose steps `cluster_redis_down` shows).
#[test]
fn status_shows_the_cluster_line() {
    let section = |state: &str| {
        let down = state != "connected";
        serde_json::json!({
            "enabled": true,
            "state": {
                "node_id": "node-a",
                "redis_url": "redis://127.0.0.1:6379",
                "redis_state": state,
                "redis_state_since": "2025-08-06T14:39:02.000Z",
                "redis_rtt_ms": if down { serde_json::Value::Null } else { serde_json::json!(0.4) },
                "peers_seen": if down { serde_json::json!([]) } else { serde_json::json!(["node-b", "node-c"]) },
                "last_error": if down { serde_json::json!("Connection refused (os error 111)") } else { serde_json::Value::Null },
            }
        })
    };
    let lines = [
        warden::daemon::cli::cluster_status_line(&section("connected"), 8765),
        warden::daemon::cli::cluster_status_line(&section("disconnected"), 8765),
    ];
    snap!("status_cluster_line", lines.join("\n"));
}
