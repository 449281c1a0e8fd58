//! The real binary's lifecycle: start / status / stop, restart, --detach,
//! SIGTERM with a connected Socket.IO client, and events relayed end to end
//! (a real rust_socketio client emits, another receives; POST /api/events
//! reaches a client).

mod daemon_common;
mod hub_common;

use daemon_common::*;
use hub_common::TestClient;
use rust_socketio::TransportType;
use serde_json::{Value, json};

#[test]
fn start_status_stop_round_trip() {
    let env = Env::new();
    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);

    let record = env.pid_record().unwrap();
    assert_eq!(record["port"], env.port);
    assert_eq!(record["lock_acquired"], true);
    assert_eq!(record["created_by"], "warden");
    assert!(record["process_start_time"].as_u64().is_some(), "{record}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(env.pid_file()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let out = env.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("is running") && stdout.contains(&daemon.pid().to_string()),
        "{stdout}"
    );

    let out = env.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "running");
    assert_eq!(status["pid"], daemon.pid());
    // `/health`'s field names, flat (the old output nested
    // `"status": {"status": ..., "uptime": ...}`).
    assert!(status.get("status").is_none(), "{status}");
    assert!(status["uptime_seconds"].is_u64(), "{status}");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["clients_connected"], 0);
    assert!(status["health"].is_string(), "{status}");

    let out = env.run(&["health", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let health: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(health.get("status").is_some(), "{health}");
    // Without --json: a summary people read, one line per checker.
    let out = env.run(&["health"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(
        summary.starts_with(&format!("warden on 127.0.0.1:{}: ", env.port)),
        "{summary}"
    );
    for checker in [
        "process_resources",
        "network_connectivity",
        "service_health",
    ] {
        assert!(summary.contains(checker), "{summary}");
    }

    // A healthy running daemon is a fact for doctor, not a problem.
    let out = env.run(&["doctor"]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains(&format!("warden pid {} runs and answers", daemon.pid())),
        "{report}"
    );
    assert!(report.contains("No problems found"), "{report}");

    let out = env.run(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("pid {}", daemon.pid())));
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.stderr());
    assert!(!env.pid_file().exists());

    // Now nothing runs: status says so with the not-running code; stop of a
    // stopped service succeeds (systemctl and LSB semantics) and says so.
    let out = env.run(&["status"]);
    assert_eq!(out.status.code(), Some(EXIT_NOT_RUNNING));
    assert!(text(&out.stdout).contains("not running"));
    let out = env.run(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing to stop"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "not_running");
}

#[test]
fn sigterm_with_connected_clients_exits_zero_and_removes_the_pid_file() {
    let env = Env::new();
    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (ws, polling) = runtime.block_on(async {
        let ws = TestClient::connect(&env.url()).await;
        let polling = TestClient::connect_with(&env.url(), TransportType::Polling, false).await;
        (ws, polling)
    });
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
    assert!(!env.pid_file().exists());
    // Both transports were closed by the server (rust_socketio itself only
    // notices on its heartbeat schedule, so the daemon's count is the witness).
    let log = std::fs::read_to_string(env.log_file()).unwrap();
    assert!(log.contains("stopped: 2 clients closed"), "{log}");
    drop((ws, polling, runtime));
    assert!(log.contains("received Terminate"), "{log}");
}

#[test]
fn sigint_also_stops_cleanly() {
    let env = Env::new();
    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);
    daemon.signal(libc::SIGINT);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    assert!(!env.pid_file().exists());
}

#[test]
fn events_are_relayed_end_to_end_through_the_binary() {
    let env = Env::new();
    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let hook = TestClient::connect(&env.url()).await;
        let dashboard = TestClient::connect(&env.url()).await;
        hook.emit("claude_event", json!({"type": "pre_tool", "n": 1}))
            .await;
        let got = dashboard.recorder.wait_for("claude_event", 1).await;
        assert_eq!(got[0]["type"], "pre_tool");
        assert_eq!(got[0]["n"], 1);
        assert_eq!(got[0]["server_id"], format!("socketio-server-{}", env.port));
        assert!(got[0]["received_at"].is_string());

        // POST /api/events reaches every client, the hook included.
        let client = reqwest::Client::new();
        let resp = client
            .post(format!("http://127.0.0.1:{}/api/events", env.port))
            .header("content-type", "application/json")
            .body(r#"{"type": "from_http"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204);
        let got = dashboard.recorder.wait_for("claude_event", 2).await;
        assert_eq!(got[1]["type"], "from_http");
        let got = hook.recorder.wait_for("claude_event", 1).await;
        assert_eq!(got[0]["type"], "from_http");
        // The sender never got its own socket event back.
        assert!(
            hook.recorder
                .named("claude_event")
                .iter()
                .all(|e| e["type"] != "pre_tool")
        );
    });
    let (code, body) = env.http_get("/stats");
    assert_eq!(code, 200);
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["events_processed"], 2, "{stats}");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn restart_replaces_the_running_daemon() {
    let env = Env::new();
    let out = env.run(&["start", "--host", "127.0.0.1", "--detach"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let first: u32 = text(&out.stdout).trim().parse().expect("pid on stdout");
    assert_eq!(env.pid_record().unwrap()["pid"], first);

    let out = env.run(&["restart", "--host", "127.0.0.1", "--detach"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let second: u32 = text(&out.stdout).trim().parse().expect("pid on stdout");
    assert_ne!(first, second);
    assert!(text(&out.stderr).contains(&format!("stopped warden (pid {first})")));
    assert_eq!(env.pid_record().unwrap()["pid"], second);
    let (code, _) = env.http_get("/status");
    assert_eq!(code, 200);

    let out = env.run(&["stop", "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!env.pid_file().exists());
    wait_until("the detached daemon's port to close", || {
        std::net::TcpStream::connect(("127.0.0.1", env.port)).is_err()
    });
}

#[test]
fn a_detached_start_that_fails_reports_the_childs_error_and_code() {
    let env = Env::new();
    let _holder = std::net::TcpListener::bind(("127.0.0.1", env.port)).unwrap();
    let out = env.run(&["start", "--host", "127.0.0.1", "--detach"]);
    assert_eq!(out.status.code(), Some(EXIT_PORT_CONFLICT));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("already in use"), "{stderr}");
    assert!(stderr.contains(&std::process::id().to_string()), "{stderr}");
    assert!(!env.pid_file().exists());
}

/// The issue's measurement, through the real binary with its default
/// configuration: one hook bursts 5,000 events to three dashboards; every
/// dashboard receives all of them in order and nothing is counted dropped.
#[test]
fn a_burst_of_5000_events_to_three_dashboards_loses_nothing_through_the_binary() {
    const EVENTS: u64 = 5_000;
    let env = Env::new();
    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut dashboards = Vec::new();
        for _ in 0..3 {
            dashboards.push(TestClient::connect(&env.url()).await);
        }
        let hook = TestClient::connect(&env.url()).await;
        let started = std::time::Instant::now();
        for seq in 0..EVENTS {
            hook.emit("claude_event", json!({"seq": seq})).await;
        }
        for d in &dashboards {
            let got = d.recorder.wait_for("claude_event", EVENTS as usize).await;
            let seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
            assert_eq!(seqs, (0..EVENTS).collect::<Vec<_>>());
        }
        eprintln!(
            "burst: {EVENTS} events x 3 dashboards delivered in {:?}",
            started.elapsed()
        );
    });
    let (_, body) = env.http_get("/stats");
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["events_processed"], EVENTS, "{stats}");
    assert_eq!(stats["events_dropped"], 0, "{stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

/// Issue 17 item 2: `status`, `health`, `reload` and `stop` pointed at
/// another state directory find the warden serving the port (through the
/// port's owner, verified as a warden holding its PID file's lock) and name
/// its state directory. On the old code `status` and `health` said "not
/// running" (exit 3) and `stop` said "nothing to stop" while it served.
#[test]
fn a_warden_of_another_state_dir_is_found_through_its_port() {
    let env = Env::new();
    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);
    let other = tempfile::tempdir().unwrap();
    let elsewhere = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend(["--state-dir", other.path().to_str().unwrap()]);
        env.run(&full)
    };
    let state = env.state_dir().display().to_string();

    let out = elsewhere(&["status"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("pid {}", daemon.pid())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "state directory {state}, found through the port's owner"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&other.path().display().to_string()),
        "{stdout}"
    );

    let out = elsewhere(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "running");
    assert_eq!(status["pid"], daemon.pid());
    assert_eq!(status["state_dir"], state.as_str());
    assert_eq!(status["looked_in"], other.path().display().to_string());
    assert_eq!(status["log_file"], env.log_file().display().to_string());

    let out = elsewhere(&["health", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&state), "{}", text(&out.stderr));

    let out = elsewhere(&["stop"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "stopped warden (pid {}) on port {}, state directory {state}",
            daemon.pid(),
            env.port
        )),
        "{stderr}"
    );
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.stderr());
    assert!(!env.pid_file().exists());
    assert_eq!(
        std::fs::read_dir(other.path()).unwrap().count(),
        0,
        "nothing was written in the directory the commands were pointed at"
    );
}

/// A program that is not a warden serving the port is named by `status`
/// and never signalled by `stop`.
#[test]
fn a_program_on_the_port_is_named_and_left_alone() {
    let env = Env::new();
    let holder = std::net::TcpListener::bind(("127.0.0.1", env.port)).unwrap();
    let out = env.run(&["status"]);
    assert_eq!(out.status.code(), Some(EXIT_NOT_RUNNING));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "port {} is served by pid {}",
            env.port,
            std::process::id()
        )) && stdout.contains("not a warden"),
        "{stdout}"
    );
    let out = env.run(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("nothing to stop"));
    drop(holder);
}

/// Runs `warden <args>` to completion within the deadline; a command that
/// does not return (a restart that took over the terminal) fails the test.
fn run_bounded(env: &Env, args: &[&str]) -> std::process::Output {
    use std::process::Stdio;
    let mut child = env
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "`warden {}` did not return (it took over the terminal?); stderr:\n{}",
                args.join(" "),
                text(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Issue 17 item 2: a plain `restart` starts the instance again as it was
/// started (host, config file, profile, in the background), from the
/// invocation its PID file records; a flag given to `restart` overrides
/// the recorded one. On the old code the plain restart ran in the
/// foreground (the command never returned) and came back on the config's
/// host (`localhost`) without the config file or profile.
#[test]
fn restart_reuses_the_recorded_invocation() {
    let env = Env::new();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("warden.json");
    std::fs::write(&config, "{}").unwrap();
    let config_arg = config.display().to_string();
    let out = run_bounded(
        &env,
        &[
            "start",
            "--host",
            "127.0.0.1",
            "--config",
            &config_arg,
            "--profile",
            "development",
            "--detach",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let first: u32 = text(&out.stdout).trim().parse().expect("pid on stdout");
    let record = env.pid_record().unwrap();
    assert_eq!(record["invocation"]["detach"], true, "{record}");
    assert_eq!(record["invocation"]["host"], "127.0.0.1", "{record}");

    let out = run_bounded(&env, &["restart", "--timeout", "30"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let second: u32 = text(&out.stdout).trim().parse().expect("pid on stdout");
    assert_ne!(first, second);
    assert!(
        stderr.contains(&format!(
            "restarting as recorded: warden start --host 127.0.0.1 --port {} --config {config_arg}",
            env.port
        )) && stderr.contains("--profile development --detach"),
        "{stderr}"
    );
    let record = env.pid_record().unwrap();
    assert_eq!(record["pid"], second);
    assert_eq!(record["host"], "127.0.0.1", "{record}");
    let invocation = &record["invocation"];
    assert_eq!(invocation["config"], config_arg.as_str(), "{record}");
    assert_eq!(invocation["profile"], "development", "{record}");
    assert_eq!(invocation["detach"], true, "{record}");

    // A recorded config file that no longer parses: the restart is refused
    // before anything is stopped.
    std::fs::write(&config, r#"{"server": {"prot": 1}}"#).unwrap();
    let out = run_bounded(&env, &["restart", "--timeout", "30"]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_CONFIG),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(env.pid_record().unwrap()["pid"], second);
    assert_eq!(env.http_get("/status").0, 200, "still serving");
    std::fs::write(&config, "{}").unwrap();

    // A flag given to restart wins over the recorded one.
    let out = run_bounded(&env, &["restart", "--host", "localhost", "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let record = env.pid_record().unwrap();
    assert_eq!(record["host"], "localhost", "{record}");
    assert_eq!(record["invocation"]["detach"], true, "{record}");

    let out = env.run(&["stop", "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    wait_until("the detached daemon's port to close", || {
        std::net::TcpStream::connect(("127.0.0.1", env.port)).is_err()
    });
}
