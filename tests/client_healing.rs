//! Stock clients heal with the server: after `clear_connections` and after
//! `restart_service`, an unmodified socket.io-client (Node) and an unmodified
//! python-socketio client, both with their default reconnection settings,
//! are connected again and receive events posted afterwards (after a clear,
//! also a socket.io-client that stays on long-polling).
//!
//! The real binary with a config that forces the action (a `max_clients`
//! threshold of 1 makes two clients a warning: log_warning, then
//! clear_connections; `memory_mb` 1 makes every check critical:
//! clear_connections, then restart_service). The clients are the scripts
//! `tests/clients/heal_node.js` and `tests/clients/heal_python.py`, which
//! print one JSON line per connect, disconnect and claude_event.
//!
//! Needs `tests/clients/node_modules` and `tests/clients/.venv` (scripts/test
//! installs both); without them the tests fail and say so, unless
//! `WARDEN_SKIP_CLIENT_TESTS=1` skips them knowingly.
//!
//! No timing assertions: every wait polls with a generous deadline.

mod daemon_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemon_common::{Daemon, Env};
use serde_json::{Value, json};

/// Reconnection backoffs are seconds; the whole heal gets this long.
const DEADLINE: Duration = Duration::from_secs(60);

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// False (and a note on stderr) when the run knowingly skips these tests.
fn clients_present() -> bool {
    let dir = clients_dir();
    let node = dir.join("node_modules/socket.io-client/package.json");
    let python = dir.join(".venv/bin/python");
    if node.exists() && python.exists() {
        return true;
    }
    if std::env::var("WARDEN_SKIP_CLIENT_TESTS").as_deref() == Ok("1") {
        eprintln!("WARDEN_SKIP_CLIENT_TESTS=1: client healing test SKIPPED");
        return false;
    }
    panic!(
        "the stock clients are missing ({} / {}): run scripts/test once, or set \
         WARDEN_SKIP_CLIENT_TESTS=1 to skip these tests knowingly",
        node.display(),
        python.display()
    );
}

/// One stock client process and the JSON lines it printed so far.
struct Client {
    name: &'static str,
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Client {
    fn node(url: &str) -> Client {
        let mut command = Command::new("node");
        command.arg(clients_dir().join("heal_node.js")).arg(url);
        Client::spawn("socket.io-client", command)
    }

    /// socket.io-client that stays on HTTP long-polling.
    fn node_polling(url: &str) -> Client {
        let mut command = Command::new("node");
        command
            .arg(clients_dir().join("heal_node.js"))
            .arg(url)
            .arg("polling");
        Client::spawn("socket.io-client (polling)", command)
    }

    fn python(url: &str) -> Client {
        let mut command = Command::new(clients_dir().join(".venv/bin/python"));
        command.arg(clients_dir().join("heal_python.py")).arg(url);
        Client::spawn("python-socketio", command)
    }

    fn spawn(name: &'static str, mut command: Command) -> Client {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(value);
                }
            }
        });
        Client { name, child, lines }
    }

    fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    fn connects(&self) -> usize {
        self.lines().iter().filter(|l| l["ev"] == "connect").count()
    }

    /// True once the client was disconnected, connected again, and then
    /// received an event: it healed on its own.
    fn healed(&self) -> bool {
        let lines = self.lines();
        let Some(cut) = lines.iter().position(|l| l["ev"] == "disconnect") else {
            return false;
        };
        let Some(back) = lines[cut..].iter().position(|l| l["ev"] == "connect") else {
            return false;
        };
        lines[cut + back..].iter().any(|l| l["ev"] == "event")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Closing stdin ends the script; kill in case it hangs.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_daemon(env: &Env, config: &Value) -> Daemon {
    let path = env.state_dir().join("config.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    let path = path.to_str().expect("utf-8 path").to_owned();
    let mut daemon = env.spawn(&["--config", &path]);
    env.wait_ready(&mut daemon);
    daemon
}

/// The recovery actions taken so far; none while the daemon cannot be asked
/// (mid-restart its listener is closed for a moment: asked again, it answers).
fn actions(env: &Env) -> Vec<String> {
    let Some((_, body)) = daemon_common::try_http_get(env.port, "/diagnostics") else {
        return Vec::new();
    };
    let diag: Value = serde_json::from_str(&body).unwrap_or_default();
    diag["recovery_manager"]["recent_events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["action"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn post_event(port: u16, event: &Value) {
    let body = event.to_string();
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        // Mid-restart: the next one goes through.
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Posts an event every 100 ms until every client healed.
fn wait_healed(env: &Env, daemon: &Daemon, clients: &[&Client], after: &str) {
    let start = Instant::now();
    let mut seq = 0u64;
    while !clients.iter().all(|c| c.healed()) {
        if start.elapsed() > DEADLINE {
            let report: Vec<String> = clients
                .iter()
                .map(|c| format!("{}: {:?}", c.name, c.lines()))
                .collect();
            panic!(
                "not every client reconnected and received an event after {after}:\n{}\n\
                 daemon stderr:\n{}",
                report.join("\n"),
                daemon.stderr()
            );
        }
        seq += 1;
        post_event(env.port, &json!({"type": "heal", "seq": seq}));
        std::thread::sleep(Duration::from_millis(100));
    }
    for client in clients {
        let reasons: Vec<Value> = client
            .lines()
            .into_iter()
            .filter(|l| l["ev"] == "disconnect")
            .map(|l| l["reason"].clone())
            .collect();
        eprintln!(
            "{} after {after}: disconnect reasons {reasons:?}",
            client.name
        );
    }
}

/// Fails on the old code: `clear_connections` sent a Socket.IO DISCONNECT,
/// which both stock clients treat as final ("io server disconnect").
#[test]
fn stock_clients_reconnect_after_clear_connections() {
    if !clients_present() {
        return;
    }
    let env = Env::new();
    let daemon = spawn_daemon(
        &env,
        &json!({
            "health_monitoring": {
                "check_interval": 1,
                "aggregation_window": 60,
                "thresholds": {"max_clients": 1}
            },
            "recovery": {
                "min_recovery_interval": 0,
                "strategy": {"warning_threshold": 2, "critical_threshold": 1}
            }
        }),
    );
    let url = env.url();
    let node = Client::node(&url);
    let polling = Client::node_polling(&url);
    let python = Client::python(&url);

    poll("clear_connections", || {
        actions(&env)
            .contains(&"clear_connections".to_string())
            .then_some(())
    });
    wait_healed(
        &env,
        &daemon,
        &[&node, &polling, &python],
        "clear_connections",
    );
    let log = daemon.stderr();
    assert!(
        log.contains("transports closed; they reconnect"),
        "the action says what it did:\n{log}"
    );
}

/// Fails on the old code: `restart_service` sent an Engine.IO CLOSE, which
/// python-socketio treats as a deliberate disconnect and does not reconnect.
#[test]
fn stock_clients_reconnect_after_restart_service() {
    if !clients_present() {
        return;
    }
    let env = Env::new();
    // Critical at once: clear_connections, then restart_service 12 s later
    // (the clients connect in between), then nothing (two attempts at most).
    let daemon = spawn_daemon(
        &env,
        &json!({
            "health_monitoring": {
                "check_interval": 1,
                "aggregation_window": 60,
                "thresholds": {"memory_mb": 1}
            },
            "recovery": {
                "min_recovery_interval": 12,
                "max_recovery_attempts": 2,
                "strategy": {"warning_threshold": 2, "critical_threshold": 1}
            }
        }),
    );
    poll("clear_connections", || {
        actions(&env)
            .contains(&"clear_connections".to_string())
            .then_some(())
    });
    let url = env.url();
    let node = Client::node(&url);
    let python = Client::python(&url);
    poll("both clients connected", || {
        (node.connects() > 0 && python.connects() > 0).then_some(())
    });
    assert!(
        !actions(&env).contains(&"restart_service".to_string()),
        "the clients must be connected before the restart (raise min_recovery_interval)"
    );

    poll("restart_service", || {
        actions(&env)
            .contains(&"restart_service".to_string())
            .then_some(())
    });
    wait_healed(&env, &daemon, &[&node, &python], "restart_service");
    assert_eq!(actions(&env), ["clear_connections", "restart_service"]);
}

/// Fails on the old code: the emergency stop's drain sent an Engine.IO CLOSE,
/// so python-socketio gave up and never came back when warden was started
/// again (as a supervisor does after an emergency stop).
#[test]
fn stock_clients_reconnect_to_warden_started_again_after_emergency_stop() {
    if !clients_present() {
        return;
    }
    let env = Env::new();
    // Critical at once: clear_connections, restart_service, emergency_stop,
    // 8 s apart.
    let critical = json!({
        "health_monitoring": {
            "check_interval": 1,
            "aggregation_window": 60,
            "thresholds": {"memory_mb": 1}
        },
        "recovery": {
            "min_recovery_interval": 8,
            "strategy": {"warning_threshold": 2, "critical_threshold": 1}
        }
    });
    let mut daemon = spawn_daemon(&env, &critical);
    // The clients start at once: the ladder cuts them (clear, restart) and
    // they come back each time; the emergency stop comes 16 s after the
    // clear, far more than a client needs to connect on a loaded machine
    // (with 8 s between a restart and the stop, a slow Python start could
    // miss the window).
    let url = env.url();
    let node = Client::node(&url);
    let python = Client::python(&url);
    poll("both clients connected", || {
        (node.connects() > 0 && python.connects() > 0).then_some(())
    });
    let status = daemon.wait_exit();
    assert_eq!(
        status.code(),
        Some(warden::daemon::cli::ExitCode::EmergencyStop.code()),
        "{}",
        daemon.stderr()
    );

    // Started again, healthy: both clients come back on their own.
    let daemon = spawn_daemon(&env, &json!({}));
    wait_healed(&env, &daemon, &[&node, &python], "an emergency stop");
}

/// Fails on the old code: a stop (SIGTERM, as `warden stop`, `warden restart`
/// and systemd send it) drained with an Engine.IO CLOSE, which python-socketio
/// treats as a deliberate disconnect: it never came back to the warden
/// started again.
#[test]
fn stock_clients_reconnect_to_warden_started_again_after_a_stop() {
    if !clients_present() {
        return;
    }
    let env = Env::new();
    let mut daemon = spawn_daemon(&env, &json!({}));
    let url = env.url();
    let node = Client::node(&url);
    let python = Client::python(&url);
    poll("both clients connected", || {
        (node.connects() > 0 && python.connects() > 0).then_some(())
    });
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());

    let daemon = spawn_daemon(&env, &json!({}));
    wait_healed(&env, &daemon, &[&node, &python], "a stop and a start");
}
