//! The CLI's failure paths and its non-daemon commands through the real
//! binary: a port held by a plain TCP listener, bad configuration (nothing
//! started, nothing written), `config check` / `config show`, `doctor`.

mod daemon_common;

use daemon_common::*;
use serde_json::Value;

#[test]
fn a_port_held_by_another_program_is_a_port_conflict_naming_it() {
    let env = Env::new();
    let holder = std::net::TcpListener::bind(("127.0.0.1", env.port)).unwrap();
    let mut daemon = env.spawn(&[]);
    let status = daemon.wait_exit();
    let stderr = daemon.stderr();
    assert_eq!(status.code(), Some(EXIT_PORT_CONFLICT), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
    assert!(
        stderr.contains(&format!("in use by pid {} (", std::process::id())),
        "{stderr}"
    );
    assert!(!env.pid_file().exists(), "the PID file must be released");

    // doctor finds the same holder.
    let report = env.state_dir().join("report.txt");
    let out = env.run(&["doctor", "--output", report.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = std::fs::read_to_string(report).unwrap();
    assert!(
        report.contains("WARDEN TROUBLESHOOTING GUIDE: PortConflictError"),
        "{report}"
    );
    assert!(
        report.contains(&format!("held by pid {}", std::process::id())),
        "{report}"
    );
    drop(holder);
}

fn write_config(env: &Env, text: &str) -> std::path::PathBuf {
    let path = env.state_dir().join("socketio-config.json");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_config_names_the_key_and_starts_nothing() {
    for (body, key) in [
        ("{\n  \"server\": {\"prot\": 9000}\n}\n", "server.prot"),
        (
            "{\n  \"health_monitoring\": {\n    \"thresholds\": {\"cpu_percent\": -5}\n  }\n}\n",
            "health_monitoring.thresholds.cpu_percent",
        ),
    ] {
        let env = Env::new();
        let path = write_config(&env, body);
        let mut daemon = env.spawn(&[]);
        let status = daemon.wait_exit();
        let stderr = daemon.stderr();
        assert_eq!(status.code(), Some(EXIT_CONFIG), "{stderr}");
        assert!(stderr.contains(key), "{stderr}");
        assert!(stderr.contains(&format!("{}:", path.display())), "{stderr}");
        assert!(!env.pid_file().exists());
        assert!(
            !env.log_file().exists(),
            "nothing started, not even logging"
        );
        assert!(std::net::TcpStream::connect(("127.0.0.1", env.port)).is_err());

        let out = env.run(&["config", "check", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(EXIT_CONFIG));
        assert!(text(&out.stderr).contains(key));
    }
}

#[test]
fn an_explicit_config_that_does_not_exist_is_a_config_error() {
    let env = Env::new();
    let missing = env.state_dir().join("nope.json");
    let out = env.run(&["start", "--config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    assert!(text(&out.stderr).contains("does not exist"));
    assert!(!env.pid_file().exists());
}

#[test]
fn config_check_and_show_follow_the_precedence() {
    let env = Env::new();
    let path = write_config(
        &env,
        r#"{"server": {"port": 9123}, "health_monitoring": {"check_interval": 15}}"#,
    );
    let out = env.run(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("valid"));
    assert!(!text(&out.stdout).contains("cluster"));

    let clustered = env.state_dir().join("cluster.json");
    std::fs::write(
        &clustered,
        r#"{"cluster": {"redis_url": "redis://ops:s3cret@10.0.0.5:6379", "prefix": "hub1"}}"#,
    )
    .unwrap();
    let out = env.run(&["config", "check", clustered.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("cluster over redis://ops:***@10.0.0.5:6379 with prefix hub1"),
        "{said}"
    );
    assert!(!said.contains("s3cret"), "a password is never printed");

    let state = env.state_dir().to_str().unwrap().to_string();
    // file over profile, flag over file.
    let out = env.run(&[
        "config",
        "show",
        "--state-dir",
        &state,
        "--profile",
        "production",
        "--port",
        "9124",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["server"]["port"], 9124);
    // The file's seed name (`check_interval`) is shown under the new one.
    assert_eq!(shown["health_monitoring"]["check_interval_seconds"], 15.0);
    assert!(shown["health_monitoring"].get("check_interval").is_none());
    assert_eq!(
        shown["recovery"]["circuit_breaker"]["failure_threshold"],
        10
    );
    assert_eq!(shown["profile"], "production");
    assert_eq!(
        shown["logging"]["file"],
        env.state_dir()
            .join("socketio-server.log")
            .to_str()
            .unwrap()
    );
}

#[test]
fn doctor_explains_a_stale_file() {
    let env = Env::new();
    std::fs::write(env.pid_file(), "4194303\n").unwrap();
    let out = env.run(&["doctor"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("WARDEN TROUBLESHOOTING GUIDE: StaleProcessError"),
        "{stdout}"
    );
    assert!(
        stdout.contains("process 4194303 no longer exists"),
        "{stdout}"
    );

    let clean = Env::new();
    let out = clean.run(&["doctor"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("No problems found"));
}

#[test]
fn usage_errors_exit_two() {
    let env = Env::new();
    let out = env.run(&["start", "--port", "seventy"]);
    assert_eq!(out.status.code(), Some(2));
    let out = env.run(&["start", "--profile", "staging"]);
    assert_eq!(out.status.code(), Some(2));
}
