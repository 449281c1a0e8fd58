//! Snapshots of the command line's own messages, produced by the real
//! binary. Ports, pids, paths and times vary per run and are replaced by
//! placeholders (`[PORT]`, `[PID]`, `[STATE]`, ...) before comparing.

mod daemon_common;

use daemon_common::*;

/// Replaces this test's variable parts with placeholders.
fn stable(env: &Env, text: &str) -> String {
    text.replace(&env.state_dir().display().to_string(), "[STATE]")
        .replace(&env.home.path().display().to_string(), "[HOME]")
        .replace(&format!("port {}", env.port), "port [PORT]")
        .replace(&format!("-{}.pid", env.port), "-[PORT].pid")
}

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::with_settings!({
            snapshot_path => "../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
            filters => vec![
                (r"pid \d+", "pid [PID]"),
                (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]"),
            ],
        }, {
            insta::assert_snapshot!(format!("cli__{}", $name), $value);
        })
    };
}

#[test]
fn stop_when_nothing_runs() {
    let env = Env::new();
    let out = env.run(&["stop"]);
    assert_eq!(out.status.code(), Some(0));
    snap!("stop_not_running", stable(&env, &text(&out.stderr)));
}

#[test]
fn reload_when_nothing_runs() {
    let env = Env::new();
    let out = env.run(&["reload"]);
    assert_eq!(out.status.code(), Some(EXIT_NOT_RUNNING));
    snap!("reload_not_running", stable(&env, &text(&out.stderr)));
}

#[test]
fn reload_log_lines() {
    use std::path::PathBuf;
    use warden::daemon::healing::reload::ReloadOutcome;
    let lines = [
        ReloadOutcome::Refused {
            error: "/etc/warden/config.json:3:20: health_monitoring.thresholds.memory_mb: \
                    invalid value: integer `-1`, expected u64"
                .into(),
        },
        ReloadOutcome::Reloaded {
            file: Some(PathBuf::from("/etc/warden/config.json")),
            applied: vec![],
            need_restart: vec![],
            level_note: None,
        },
        ReloadOutcome::Reloaded {
            file: Some(PathBuf::from("/etc/warden/config.json")),
            applied: vec![
                "health_monitoring.thresholds.memory_mb".into(),
                "logging.level".into(),
            ],
            need_restart: vec!["server.max_payload_bytes".into()],
            level_note: Some("WARDEN_LOG is set and keeps the log filter".into()),
        },
        ReloadOutcome::Reloaded {
            file: None,
            applied: vec![],
            need_restart: vec!["server.port".into()],
            level_note: None,
        },
    ]
    .iter()
    .map(ReloadOutcome::describe)
    .collect::<Vec<_>>()
    .join("\n");
    snap!("reload_log_lines", lines);
}

#[test]
fn status_when_nothing_runs_names_the_log_file() {
    let env = Env::new();
    let out = env.run(&["status"]);
    assert_eq!(out.status.code(), Some(EXIT_NOT_RUNNING));
    snap!("status_not_running", stable(&env, &text(&out.stdout)));
}

#[test]
fn logs_without_a_log_file() {
    let env = Env::new();
    let config = env.state_dir().join("socketio-config.json");
    std::fs::write(&config, r#"{"logging": {"file": null}}"#).unwrap();
    let out = env.run(&["logs"]);
    assert_eq!(out.status.code(), Some(1));
    snap!("logs_no_file", stable(&env, &text(&out.stderr)));
}

#[test]
fn a_bad_warden_log_filter() {
    let env = Env::new();
    let out = env
        .command(&["start", "--host", "127.0.0.1"])
        .env("WARDEN_LOG", "warden=notalevel")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    snap!("bad_warden_log", stable(&env, &text(&out.stderr)));
}

#[test]
fn reload_of_a_running_daemon() {
    let env = Env::new();
    std::fs::write(env.state_dir().join("socketio-config.json"), "{}").unwrap();
    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);
    let out = env.run(&["reload"]);
    assert_eq!(out.status.code(), Some(0));
    snap!("reload_sent", stable(&env, &text(&out.stderr)));
    env.wait_log(&["received SIGHUP"]);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

/// Issue 15 item 2. A legacy PID file (a bare pid, the seed's format) naming
/// a live unrelated process that does not listen on the port, with nobody
/// holding the lock: `status`, `stop` and `start` reach one verdict (stale,
/// and why), and `start` takes the file over without touching the process.
/// On the old code `start` refused it as "another warden holds the PID file"
/// (exit 10, naming `sleep` as the conflicting server) while `stop` called
/// it stale.
#[test]
fn a_legacy_pid_file_naming_an_unrelated_process_is_stale_for_every_command() {
    use std::process::{Command, Stdio};
    let env = Env::new();
    let mut sleeper = Command::new("sleep")
        .arg("600")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = sleeper.id();
    std::fs::write(env.pid_file(), format!("{pid}\n")).unwrap();
    let stable = |text: &str| stable(&env, text).replace(&pid.to_string(), "[SLEEP]");

    let status = env.run(&["status"]);
    assert_eq!(status.status.code(), Some(EXIT_NOT_RUNNING));
    snap!("status_legacy_unrelated", stable(&text(&status.stdout)));
    let stop = env.run(&["stop"]);
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop.stderr));

    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);
    let log = env.wait_log(&["removed a stale PID file"]);
    let line = log
        .lines()
        .find(|l| l.contains("removed a stale PID file"))
        .expect("the takeover is logged");
    let message = line.split_once("PID validation: ").map_or(line, |(_, m)| m);
    snap!("start_legacy_unrelated", stable(message));
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "nothing signalled the unrelated process"
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

/// A legacy PID file (a bare pid, nobody holding its lock) naming a program
/// that serves the file's port: every command says what it is (not a warden,
/// perhaps the original server). Fails on the old code, where `start` said
/// "port P already has a warden ... holds its PID file" (exit 10) and
/// `status` called the file stale because a process "cannot be inspected
/// (the PID file is not locked by any process)".
#[test]
fn a_legacy_pid_file_naming_the_program_on_the_port_is_said_to_be_that_program() {
    use std::process::{Command, Stdio};
    let env = Env::new();
    // A program serving the port: a script in the state directory, so its
    // command line is the same in every run but for paths and the port.
    let script = env.state_dir().join("holder.py");
    std::fs::write(
        &script,
        "import socket, sys, time\n\
         s = socket.socket()\n\
         s.bind(('127.0.0.1', int(sys.argv[1])))\n\
         s.listen()\n\
         print('listening', flush=True)\n\
         time.sleep(600)\n",
    )
    .unwrap();
    let mut server = Command::new("python3")
        .arg(&script)
        .arg(env.port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "listening");
    let pid = server.id();
    std::fs::write(env.pid_file(), format!("{pid}\n")).unwrap();
    let stable = |text: &str| {
        let text = stable(&env, text)
            .replace(&pid.to_string(), "[PID]")
            .replace(&env.port.to_string(), "[PORT]");
        // The interpreter's path differs between machines.
        let start = text.find('`').map_or(0, |i| i + 1);
        match text[start..].find(" [STATE]/holder.py") {
            Some(end) => format!("{}[PYTHON]{}", &text[..start], &text[start + end..]),
            None => text,
        }
    };

    let status = env.run(&["status"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status.stderr));
    snap!("status_legacy_port_holder", stable(&text(&status.stdout)));
    let stop = env.run(&["stop"]);
    assert_eq!(stop.status.code(), Some(1));
    snap!("stop_legacy_port_holder", stable(&text(&stop.stderr)));
    let start = env.run(&["start"]);
    assert_eq!(
        start.status.code(),
        Some(11),
        "a port conflict naming the program"
    );
    snap!(
        "start_legacy_port_holder",
        stable(&short_failure(&text(&start.stderr)))
    );
    assert_eq!(
        std::fs::read_to_string(env.pid_file()).unwrap(),
        format!("{pid}\n"),
        "the file is left as it is"
    );
    assert!(
        server.try_wait().unwrap().is_none(),
        "nothing signalled the program"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

/// What `start` logs when it takes a file over under lock-only validation
/// (`pid_validation.enhanced` or `use_psutil` false; the binary test is
/// tests/daemon_pidfile.rs `lock_only_validation_lets_the_free_lock_decide`).
#[test]
fn lock_only_takeover_reason() {
    let reason = warden::pidfile::StaleReason::LockNotHeld {
        pid: 12345,
        probe_error: warden::daemon::os::pidfile::LOCK_ONLY_REASON.to_string(),
    };
    snap!(
        "start_lock_only_takeover",
        format!(
            "removed a stale PID file [STATE]/socketio-server-[PORT].pid and took it over: {reason}"
        )
    );
}

/// The short part of a failed start's stderr: from "warden: not started".
fn short_failure(stderr: &str) -> String {
    let start = stderr
        .find("warden: not started")
        .unwrap_or_else(|| panic!("no short message in:\n{stderr}"));
    stderr[start..].to_string()
}

/// Issue 17 item 1: a start on a port that a warden already serves prints a
/// few lines (who holds the PID file, the commands to see or stop it, the
/// full guide's command), each repeating this invocation's target. The old
/// code printed the 30-line guide, with `kill -KILL` and `rm` steps for a
/// healthy daemon and commands without `--state-dir`.
#[test]
fn a_start_on_a_served_port_says_it_in_a_few_lines() {
    let env = Env::new();
    let mut first = env.spawn(&[]);
    env.wait_ready(&mut first);
    let out = env.run(&["start", "--host", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(EXIT_DAEMON_CONFLICT));
    let text = short_failure(&stable(&env, &text(&out.stderr)));
    assert!(text.lines().count() <= 5, "{text}");
    let started = text
        .split_once("(started ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(t, _)| t.to_string())
        .expect("the holder's start time");
    snap!(
        "start_daemon_conflict_short",
        text.replace(&started, "[TIME]")
    );
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit().code(), Some(0));
}

/// Issue 17 item 1: a start on a port another program listens on prints a
/// few lines naming it (the old code: 27 lines, with "wait for port
/// cleanup" while a program was plainly listening).
#[test]
fn a_start_on_a_port_another_program_holds_says_it_in_a_few_lines() {
    let env = Env::new();
    let holder = std::net::TcpListener::bind(("127.0.0.1", env.port)).unwrap();
    let out = env.run(&["start", "--host", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(EXIT_PORT_CONFLICT));
    let text = short_failure(&stable(&env, &text(&out.stderr)));
    assert!(text.lines().count() <= 5, "{text}");
    let command = text
        .split_once("(`")
        .and_then(|(_, rest)| rest.split_once("`)"))
        .map(|(c, _)| c.to_string())
        .expect("the holder's command");
    let text = text
        .replace(&command, "[TEST COMMAND]")
        .replace(&env.port.to_string(), "[PORT]");
    snap!("start_port_conflict_short", text);
    drop(holder);
}

/// Issue 17 item 2: what `status`, `stop` and `restart` say about a warden
/// found through the port's owner in another state directory.
#[test]
fn a_warden_of_another_state_dir_is_named_with_its_directory() {
    let env = Env::new();
    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);
    let other = tempfile::tempdir().unwrap();
    let other_dir = other.path().display().to_string();
    let stable = |text: &str| stable(&env, text).replace(&other_dir, "[OTHER]");
    let status = env.run(&["status", "--state-dir", &other_dir]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    let stdout = text(&status.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("state directory"))
        .unwrap_or_else(|| panic!("no state directory line in:\n{stdout}"));
    snap!("status_other_state_dir", stable(line));
    let stop = env.run(&["stop", "--state-dir", &other_dir]);
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop.stderr));
    snap!("stop_other_state_dir", stable(&text(&stop.stderr)));
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

/// `status` and `stop` name a program that is not a warden serving the port.
#[test]
fn a_program_on_the_port_is_named_by_status() {
    let env = Env::new();
    let holder = std::net::TcpListener::bind(("127.0.0.1", env.port)).unwrap();
    let me = std::process::id().to_string();
    let stable = |text: &str| {
        let text = stable(&env, text).replace(&format!("pid {me} "), "pid [TEST] ");
        // The test binary's command line differs between runs.
        match (text.find("(`"), text.find("`),")) {
            (Some(a), Some(b)) => format!("{}(`[TEST COMMAND]{}", &text[..a], &text[b..]),
            _ => text,
        }
    };
    let status = env.run(&["status"]);
    assert_eq!(status.status.code(), Some(EXIT_NOT_RUNNING));
    snap!("status_port_other_program", stable(&text(&status.stdout)));
    let stop = env.run(&["stop"]);
    assert_eq!(stop.status.code(), Some(0));
    snap!("stop_port_other_program", stable(&text(&stop.stderr)));
    drop(holder);
}

/// Issue 17 item 2: the line a `restart` prints before it starts the
/// instance again from its recorded invocation.
#[test]
fn restart_says_how_it_starts_again() {
    let env = Env::new();
    let out = env.run(&["start", "--host", "127.0.0.1", "--detach"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = env.run(&["restart", "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("restarting as recorded"))
        .unwrap_or_else(|| panic!("no restart line in:\n{stderr}"));
    snap!(
        "restart_as_recorded",
        stable(&env, line).replace(&format!("--port {}", env.port), "--port [PORT]")
    );
    let out = env.run(&["stop", "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// Issue 17 item 1: every failed start says what happened and the next
/// command, repeating this invocation's target (`--port`, `--state-dir`,
/// `--config`). The old code printed the bare error (or nothing to run).
#[test]
fn failed_starts_say_what_to_run_next() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let stable = |text: &str| {
        let text = stable(&env, text).replace(&env.port.to_string(), "[PORT]");
        // Only warden's own message, not the log lines before it.
        let start = text
            .find("warden: not started")
            .unwrap_or_else(|| panic!("no short message in:\n{text}"));
        text[start..].to_string()
    };
    let config = env.state_dir().join("elsewhere.json");
    std::fs::write(&config, r#"{"server": {"prot": 1}}"#).unwrap();
    let config_arg = config.display().to_string();
    let out = env.run(&["start", "--config", &config_arg]);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    snap!("start_bad_config", stable(&text(&out.stderr)));

    let open = env.state_dir().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.run(&["start", "--state-dir", open.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(EXIT_PID_FILE));
    snap!("start_state_dir_refused", stable(&text(&out.stderr)));

    std::os::unix::fs::symlink("/dev/null", env.pid_file()).unwrap();
    let out = env.run(&["start", "--host", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(EXIT_PID_FILE));
    snap!("start_pid_file_symlink", stable(&text(&out.stderr)));
    std::fs::remove_file(env.pid_file()).unwrap();

    // TEST-NET-1 (RFC 5737): never an address of this machine.
    let out = env.run(&["start", "--host", "192.0.2.1"]);
    assert_eq!(out.status.code(), Some(1));
    snap!("start_address_not_available", stable(&text(&out.stderr)));
    assert!(!env.pid_file().exists());
}
