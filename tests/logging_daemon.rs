//! Logs operators can use, through the real binary: `logging.format: json`
//! writes one JSON object a line with stable field names; `WARDEN_LOG`
//! (EnvFilter syntax) sets the level over the config; under systemd
//! (`JOURNAL_STREAM` set) stderr lines carry no timestamp of their own;
//! `warden status` names the log file and `warden logs -n N` prints its last
//! N lines.

mod daemon_common;

use daemon_common::*;
use serde_json::{Value, json};

fn write_config(env: &Env, body: Value) {
    let path = env.state_dir().join("socketio-config.json");
    std::fs::write(&path, body.to_string()).unwrap();
}

#[test]
fn json_format_writes_json_lines_with_stable_fields() {
    let env = Env::new();
    write_config(&env, json!({ "logging": { "format": "json" } }));
    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);
    let log = env.wait_log(&["serving Socket.IO and HTTP"]);
    let mut lines = 0;
    for line in log.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{log}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v[key].is_string(), "{key} in {line}");
        }
        assert!(v["fields"].is_object(), "fields in {line}");
        lines += 1;
    }
    assert!(lines >= 2, "{log}");
    // stderr is JSON too.
    let stderr = daemon.stderr();
    let first = stderr.lines().next().unwrap_or_default();
    let v: Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(v["level"], "INFO", "{stderr}");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn warden_log_sets_the_level_over_the_config() {
    let env = Env::new();
    write_config(&env, json!({ "logging": { "level": "WARNING" } }));
    let mut daemon = env.spawn_env(&[], &[("WARDEN_LOG", "debug")]);
    env.wait_ready(&mut daemon);
    let log = env.wait_log(&["DEBUG", "logging initialised"]);
    assert!(log.contains("from=\"WARDEN_LOG\""), "{log}");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));

    // A bad filter is a configuration error: nothing starts.
    let mut bad = env.spawn_env(&[], &[("WARDEN_LOG", "warden=notalevel")]);
    assert_eq!(
        bad.wait_exit().code(),
        Some(EXIT_CONFIG),
        "{}",
        bad.stderr()
    );
    assert!(bad.stderr().contains("WARDEN_LOG"), "{}", bad.stderr());
}

#[test]
fn under_systemd_stderr_lines_have_no_timestamp() {
    let env = Env::new();
    let mut daemon = env.spawn_env(&[], &[("JOURNAL_STREAM", "8:12345")]);
    env.wait_ready(&mut daemon);
    wait_until("a serving line on stderr", || {
        daemon.stderr().contains("serving Socket.IO")
    });
    let stderr = daemon.stderr();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.trim_start().starts_with(['I', 'W', 'E', 'D', 'T']),
            "a level first, no timestamp: {line}"
        );
    }
    // The file keeps its timestamps.
    let log = env.wait_log(&["serving Socket.IO"]);
    assert!(
        log.lines()
            .next()
            .unwrap()
            .starts_with(|c: char| c.is_ascii_digit()),
        "{log}"
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn status_names_the_log_file_and_logs_prints_its_tail() {
    let env = Env::new();
    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);
    let out = env.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let log_path = env.log_file().display().to_string();
    assert!(
        text(&out.stdout).contains(&format!("log file: {log_path}")),
        "{}",
        text(&out.stdout)
    );
    let out = env.run(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["log_file"], log_path.as_str());

    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let log = std::fs::read_to_string(env.log_file()).unwrap();
    let all: Vec<&str> = log.lines().collect();
    assert!(all.len() > 5, "{log}");

    let out = env.run(&["logs", "-n", "5"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert_eq!(printed.lines().collect::<Vec<_>>(), all[all.len() - 5..]);
}
