//! warden distrusts the file system as sshd does, through the real binary:
//! a state directory another user can write (or owns) is refused, the
//! auto-loaded config is read only from a trusted directory, config files are
//! regular files read with a size cap (a FIFO or `/dev/zero` never blocks or
//! eats memory), and the log file is never opened through a link.

mod daemon_common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use daemon_common::{DEADLINE, EXIT_CONFIG, EXIT_NOT_RUNNING, EXIT_PID_FILE, Env, text};

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn euid() -> u32 {
    unsafe { libc::geteuid() }
}

/// Runs `cmd` to completion, killing it (and failing) if it is still running
/// after the deadline: the attacks here made warden block forever.
fn run_bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warden");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "warden {:?} still ran after {DEADLINE:?}; stderr:\n{}",
                cmd.get_args().collect::<Vec<_>>(),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_refused(out: &Output, code: i32, needles: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr:\n{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
}

#[test]
fn a_state_dir_others_can_write_is_refused_by_every_command() {
    let env = Env::new();
    let dir = env.state_dir().to_path_buf();
    let fix = format!("chmod 700 {}", dir.display());
    for mode in [0o777, 0o770, 0o1777] {
        chmod(&dir, mode);
        for args in [&["start"][..], &["status"], &["stop"], &["config", "show"]] {
            let mut cmd = env.command(args);
            if args[0] == "config" {
                cmd.arg("--state-dir").arg(&dir);
            }
            let out = run_bounded(cmd);
            assert_refused(
                &out,
                EXIT_PID_FILE,
                &["refusing to use the state directory", "writable by", &fix],
            );
        }
        assert!(!env.pid_file().exists(), "nothing is written there");
        assert!(!env.log_file().exists(), "nothing is written there");
    }
    chmod(&dir, 0o700);
    let out = env.run(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_NOT_RUNNING),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_state_dir_owned_by_another_user_is_refused() {
    let env = Env::new();
    let dir = if euid() == 0 {
        let dir = env.state_dir().to_path_buf();
        std::os::unix::fs::chown(&dir, Some(4242), None).unwrap();
        dir
    } else {
        // Not root: any root-owned directory is someone else's.
        Path::new("/usr").to_path_buf()
    };
    let out = run_bounded(env.command(&["status", "--state-dir", dir.to_str().unwrap()]));
    let owner = if euid() == 0 { 4242 } else { 0 };
    assert_refused(
        &out,
        EXIT_PID_FILE,
        &[
            &format!("owned by uid {owner}, not by uid {}", euid()),
            &format!("chown {} {}", euid(), dir.display()),
        ],
    );
}

#[test]
fn a_parent_others_can_write_is_refused_unless_sticky() {
    let env = Env::new();
    let shared = env.state_dir().join("shared");
    let dir = shared.join("state");
    std::fs::create_dir_all(&dir).unwrap();
    chmod(&dir, 0o700);
    chmod(&shared, 0o777);
    let status =
        |dir: &Path| run_bounded(env.command(&["status", "--state-dir", dir.to_str().unwrap()]));
    assert_refused(
        &status(&dir),
        EXIT_PID_FILE,
        &[
            &format!("the directory above it, {}", shared.display()),
            &format!("chmod go-w {}", shared.display()),
        ],
    );
    // Sticky, as /tmp is: nobody else can rename or remove the state dir.
    chmod(&shared, 0o1777);
    let out = status(&dir);
    assert_eq!(
        out.status.code(),
        Some(EXIT_NOT_RUNNING),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn warden_creates_its_state_dir_private() {
    let env = Env::new();
    let dir = env.state_dir().join("new").join("state");
    let mut daemon = {
        let d = dir.to_str().unwrap();
        let mut cmd = env.command(&["start", "--host", "127.0.0.1", "--state-dir", d]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        daemon_common::Daemon {
            child: cmd.spawn().unwrap(),
            stderr_path: env.state_dir().join("none"),
        }
    };
    let pid_file = dir.join(format!("socketio-server-{}.pid", env.port));
    daemon_common::wait_until("the PID file", || pid_file.exists());
    for d in [&dir, dir.parent().unwrap()] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

#[test]
fn the_auto_loaded_config_must_be_the_users_and_private() {
    let env = Env::new();
    let file = env.state_dir().join("socketio-config.json");
    std::fs::write(&file, r#"{"server": {"port": 1}}"#).unwrap();
    chmod(&file, 0o666);
    let out = run_bounded(env.command(&["status"]));
    assert_refused(
        &out,
        EXIT_CONFIG,
        &[
            "refusing to load",
            &format!("chmod go-w {}", file.display()),
        ],
    );
    if euid() == 0 {
        chmod(&file, 0o600);
        std::os::unix::fs::chown(&file, Some(4242), None).unwrap();
        let out = run_bounded(env.command(&["status"]));
        assert_refused(&out, EXIT_CONFIG, &["owned by uid 4242", "chown 0"]);
    }
}

/// Every command that reads a config, with `--config <file>`.
fn every_reader(env: &Env, file: &Path) -> Vec<Command> {
    let f = file.to_str().unwrap();
    let mut out = Vec::new();
    for args in [
        &["start", "--config", f][..],
        &["status", "--config", f],
        &["stop", "--config", f],
        &["config", "show", "--config", f],
        &["config", "check", f],
    ] {
        out.push(env.command(args));
    }
    out
}

#[test]
fn a_fifo_config_is_refused_at_once() {
    let env = Env::new();
    let fifo = env.state_dir().join("config.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for cmd in every_reader(&env, &fifo) {
        let out = run_bounded(cmd);
        assert_refused(
            &out,
            EXIT_CONFIG,
            &[&format!(
                "{} is not a regular file (it is a FIFO)",
                fifo.display()
            )],
        );
    }
}

#[test]
fn dev_zero_as_config_is_refused_without_reading_it() {
    let env = Env::new();
    for cmd in every_reader(&env, Path::new("/dev/zero")) {
        let out = run_bounded(cmd);
        assert_refused(
            &out,
            EXIT_CONFIG,
            &["/dev/zero is not a regular file (it is a character device)"],
        );
    }
}

#[test]
fn an_oversized_config_is_refused() {
    let env = Env::new();
    let big = env.state_dir().join("big.json");
    std::fs::write(&big, vec![b' '; 1024 * 1024 + 1]).unwrap();
    let out = run_bounded(env.command(&["config", "check", big.to_str().unwrap()]));
    assert_refused(&out, EXIT_CONFIG, &["is larger than 1048576 bytes"]);
}

#[test]
fn a_symlinked_log_file_is_refused_and_its_target_untouched() {
    let env = Env::new();
    let target = env.home.path().join("victim.txt");
    std::fs::write(&target, "precious\n").unwrap();
    std::os::unix::fs::symlink(&target, env.log_file()).unwrap();
    let out = run_bounded(env.command(&["start", "--host", "127.0.0.1"]));
    assert_refused(
        &out,
        EXIT_PID_FILE,
        &[
            "it is a symbolic link",
            &format!("rm {}", env.log_file().display()),
        ],
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    assert!(!env.pid_file().exists(), "nothing started");
}

/// Kills and reaps a helper process when the test ends, passed or not.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stop_cannot_be_aimed_at_a_victim_by_a_forged_record() {
    use warden::daemon::os::sysprobe::SysinfoProbe;
    use warden::probe::ProcessProbe;

    let env = Env::new();
    let mut victim = Reap(
        Command::new("sleep")
            .arg("600")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = victim.0.id();
    let probe = SysinfoProbe::new();
    daemon_common::wait_until("sleep to exec", || {
        probe
            .probe(pid)
            .snapshot()
            .is_some_and(|s| s.cmdline.first().is_some_and(|a| a.ends_with("sleep")))
    });
    let snapshot = probe.probe(pid).snapshot().unwrap().clone();
    // The record names the victim exactly as the kernel sees it.
    let record = serde_json::json!({
        "pid": pid,
        "server_id": format!("socketio-server-{}", env.port),
        "port": env.port,
        "host": "127.0.0.1",
        "start_time": "2025-01-01T00:00:00Z",
        "process_start_time": snapshot.start_time.as_millis() / 1000,
        "version": "0.1.0",
        "process_info": {"name": "warden", "status": "running", "cpu_percent": 0.0, "memory_mb": 1.0},
        "lock_acquired": true,
        "created_by": "warden",
        "cmdline": snapshot.cmdline,
    });
    std::fs::write(env.pid_file(), record.to_string()).unwrap();
    // Another process holds the lock (flock --no-fork: the holder is the
    // process that runs, a second `sleep`).
    let holder = Reap(
        Command::new("flock")
            .args(["--no-fork", "--nonblock"])
            .arg(env.pid_file())
            .args(["sleep", "600"])
            .spawn()
            .expect("flock (util-linux)"),
    );
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(env.pid_file()).unwrap());
    daemon_common::wait_until("the helper to hold the lock", || {
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .any(|l| l.contains(&format!(":{ino} ")) && l.contains(&holder.0.id().to_string()))
    });

    let out = env.run(&["stop", "--timeout", "1"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "its lock is held by pid {}, not by the recorded pid {pid}",
            holder.0.id()
        )),
        "{err}"
    );
    assert!(
        victim.0.try_wait().unwrap().is_none(),
        "stop signalled the victim"
    );

    let out = env.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        status["state"],
        "unverifiable",
        "status must not call it a warden: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(victim.0.try_wait().unwrap().is_none());
}
