//! Single instance through the real binary: 16 concurrent starts on one
//! port, recovery after `kill -9`, a PID file naming a live unrelated process
//! (a reused pid), corrupt and legacy files, a symlink at the PID path, and
//! the `pid_validation` keys (`lock_timeout`, lock-only validation).

mod daemon_common;

use std::process::{Command, Stdio};

use daemon_common::*;

#[test]
fn sixteen_concurrent_starts_one_runs_the_others_name_it() {
    let env = Env::new();
    let mut starts: Vec<Daemon> = (0..16).map(|_| env.spawn(&[])).collect();
    // Exactly one survives: the others exit with the conflict code.
    let mut losers = Vec::new();
    wait_until("15 starts to fail", || {
        losers = starts
            .iter_mut()
            .filter_map(|d| d.child.try_wait().unwrap().map(|s| (d.pid(), s)))
            .collect();
        losers.len() >= 15
    });
    assert_eq!(losers.len(), 15, "more than 15 exited: {losers:?}");
    let winner_index = starts
        .iter_mut()
        .position(|d| d.child.try_wait().unwrap().is_none())
        .unwrap();
    let mut winner = starts.swap_remove(winner_index);
    env.wait_ready(&mut winner);
    let winner_pid = winner.pid().to_string();
    for loser in &starts {
        let (_, status) = losers.iter().find(|(p, _)| *p == loser.pid()).unwrap();
        let stderr = loser.stderr();
        assert_eq!(status.code(), Some(EXIT_DAEMON_CONFLICT), "{stderr}");
        assert!(
            stderr.contains(&format!("already has a warden: warden pid {winner_pid} "))
                || stderr.contains(&format!("already has a warden: pid {winner_pid} holds")),
            "loser {} does not name the winner {winner_pid}:\n{stderr}",
            loser.pid()
        );
    }
    // The winner's file was never touched by the losers.
    assert_eq!(env.pid_record().unwrap()["pid"], winner.pid());
    winner.signal(libc::SIGTERM);
    assert_eq!(winner.wait_exit().code(), Some(0));
    assert!(!env.pid_file().exists());
}

#[test]
fn kill_9_then_start_recovers_by_itself() {
    let env = Env::new();
    let mut first = env.spawn(&[]);
    env.wait_ready(&mut first);
    first.signal(libc::SIGKILL);
    first.wait_exit();
    assert!(env.pid_file().exists(), "a crash leaves the file behind");

    let out = env.run(&["status"]);
    assert_eq!(out.status.code(), Some(EXIT_NOT_RUNNING));
    assert!(text(&out.stdout).contains("stale"), "{}", text(&out.stdout));

    let mut second = env.spawn(&[]);
    env.wait_ready(&mut second);
    env.wait_log(&[
        "PID validation: removed a stale PID file",
        &format!("process {} no longer exists", first.pid()),
    ]);
    second.signal(libc::SIGTERM);
    assert_eq!(second.wait_exit().code(), Some(0));
}

#[test]
fn a_pid_file_naming_a_live_unrelated_process_is_treated_as_reused() {
    let env = Env::new();
    let mut sleeper = Command::new("sleep")
        .arg("600")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = sleeper.id();
    let record = serde_json::json!({
        "pid": pid,
        "server_id": format!("socketio-server-{}", env.port),
        "port": env.port,
        "host": "127.0.0.1",
        "start_time": "2020-01-01T00:00:00Z",
        "process_start_time": 1_577_836_800u64,
        "version": "0.0.1",
        "process_info": {"name": "warden", "status": "running", "cpu_percent": 0.0, "memory_mb": 1.0},
        "lock_acquired": true,
        "created_by": "warden",
        "cmdline": ["/usr/bin/warden", "start"]
    });
    std::fs::write(env.pid_file(), record.to_string()).unwrap();

    // stop must never signal it: the file is stale, nothing to stop.
    let out = env.run(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "stop signalled an unrelated process"
    );

    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);
    env.wait_log(&[&format!("pid {pid} now belongs to another program")]);
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "start signalled an unrelated process"
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

#[test]
fn corrupt_and_legacy_files_are_taken_over() {
    for (content, reason) in [
        ("{not json", "corrupt"),
        ("", "empty"),
        // A legacy bare integer naming a pid that does not exist.
        ("4194303\n", "no longer exists"),
    ] {
        let env = Env::new();
        std::fs::write(env.pid_file(), content).unwrap();
        let mut daemon = env.spawn(&[]);
        env.wait_ready(&mut daemon);
        env.wait_log(&["removed a stale PID file", reason]);
        daemon.signal(libc::SIGTERM);
        assert_eq!(daemon.wait_exit().code(), Some(0));
        assert!(!env.pid_file().exists());
    }
}

#[test]
fn a_symlink_at_the_pid_path_is_refused_and_nothing_is_written_through_it() {
    let env = Env::new();
    let target = env.state_dir().join("victim.txt");
    std::fs::write(&target, "precious\n").unwrap();
    std::os::unix::fs::symlink(&target, env.pid_file()).unwrap();
    let mut daemon = env.spawn(&[]);
    let status = daemon.wait_exit();
    let stderr = daemon.stderr();
    assert_eq!(status.code(), Some(EXIT_PID_FILE), "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    assert!(
        std::fs::symlink_metadata(env.pid_file())
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // Nothing listens.
    assert!(std::net::TcpStream::connect(("127.0.0.1", env.port)).is_err());
}

#[test]
fn stop_refuses_a_locked_file_whose_pid_is_not_the_recorded_warden() {
    let env = Env::new();
    let mut daemon = env.spawn(&[]);
    env.wait_ready(&mut daemon);
    let mut sleeper = Command::new("sleep")
        .arg("600")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Rewrite the live daemon's (locked) file in place so that it names the
    // sleeper, keeping the daemon's start time and command line.
    let mut record = env.pid_record().unwrap();
    record["pid"] = sleeper.id().into();
    std::fs::write(env.pid_file(), record.to_string()).unwrap();

    let out = env.run(&["stop", "--timeout", "1"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to stop anything"), "{stderr}");
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "the sleeper was signalled"
    );
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon was signalled"
    );
    let out = env.run(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));

    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    // The daemon does not remove a file that no longer names it.
    assert!(env.pid_file().exists());
}

fn write_config(env: &Env, pid_validation: serde_json::Value) -> String {
    let path = env.state_dir().join("config.json");
    std::fs::write(
        &path,
        serde_json::json!({ "pid_validation": pid_validation }).to_string(),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// True once `pid` has `file` open (it is inside its claim).
fn has_open(pid: u32, file: &std::path::Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(Result::ok)
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == file))
        })
        .unwrap_or(false)
}

/// `pid_validation.lock_timeout` bounds how long `start` waits on a busy
/// lock whose file names no live holder: with 0 it refuses at once; with 30
/// it waits, and starts once the holder lets go. On the old code the wait
/// was a fixed second: the holder here lets go 1.5 s after the start began
/// claiming, so that start failed with a conflict (exit 10).
#[test]
fn lock_timeout_bounds_the_wait_for_a_busy_lock() {
    use std::os::fd::AsRawFd;
    let env = Env::new();
    let holder = std::fs::File::create(env.pid_file()).unwrap();
    // SAFETY: flock(2) on a descriptor we own.
    assert_eq!(
        unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );

    let config = write_config(&env, serde_json::json!({"lock_timeout": 0}));
    let out = env.run(&["start", "--host", "127.0.0.1", "--config", &config]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_DAEMON_CONFLICT),
        "{}",
        text(&out.stderr)
    );

    let config = write_config(&env, serde_json::json!({"lock_timeout": 30}));
    let mut daemon = env.spawn(&["--config", &config]);
    let pid_file = std::fs::canonicalize(env.pid_file()).unwrap();
    wait_until("the start claiming the busy PID file", || {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("start gave up: {status}; stderr:\n{}", daemon.stderr());
        }
        has_open(daemon.pid(), &pid_file)
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drop(holder);
    env.wait_ready(&mut daemon);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

/// `pid_validation.enhanced` or `use_psutil` false: lock-only validation.
/// A record naming a live process whose command line matches it, nobody
/// holding the lock: full inspection refuses (a conservative conflict, exit
/// 10); lock-only lets the free lock decide and takes the file over, saying
/// so. On the old code both keys were ignored (exit 10 for each).
#[test]
fn lock_only_validation_lets_the_free_lock_decide() {
    let mut sleeper = Command::new("sleep")
        .arg("600")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = sleeper.id();
    for validation in [
        serde_json::json!({"enhanced": false}),
        serde_json::json!({"use_psutil": false}),
        serde_json::json!({}),
    ] {
        let expect_start = validation != serde_json::json!({});
        let env = Env::new();
        let record = serde_json::json!({
            "pid": pid,
            "server_id": format!("socketio-server-{}", env.port),
            "port": env.port,
            "host": "127.0.0.1",
            "start_time": "2020-01-01T00:00:00Z",
            "version": "0.0.1",
            "process_info": {"name": "sleep", "status": "sleeping", "cpu_percent": 0.0, "memory_mb": 1.0},
            "lock_acquired": true,
            "created_by": "warden",
            "cmdline": ["sleep", "600"]
        });
        std::fs::write(env.pid_file(), record.to_string()).unwrap();
        let config = write_config(&env, validation);
        if !expect_start {
            // Full inspection (both keys true by default): refused.
            let out = env.run(&["start", "--host", "127.0.0.1", "--config", &config]);
            assert_eq!(
                out.status.code(),
                Some(EXIT_DAEMON_CONFLICT),
                "{}",
                text(&out.stderr)
            );
            continue;
        }
        let mut daemon = env.spawn(&["--config", &config]);
        env.wait_ready(&mut daemon);
        env.wait_log(&[
            "removed a stale PID file",
            warden::daemon::os::pidfile::LOCK_ONLY_REASON,
        ]);
        daemon.signal(libc::SIGTERM);
        assert_eq!(daemon.wait_exit().code(), Some(0));
    }
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "nothing signalled the process"
    );
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}
