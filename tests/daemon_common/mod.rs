//! Shared support for the tests that run the real `warden` binary: a private
//! HOME and state directory per test, a free port, spawning the daemon with
//! its stderr captured in a file, and polling helpers (no timing assertions:
//! every wait polls with a generous deadline).

#![allow(dead_code)]

use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod redis;

pub const DEADLINE: Duration = Duration::from_secs(60);

pub const EXIT_NOT_RUNNING: i32 = 3;
pub const EXIT_DAEMON_CONFLICT: i32 = 10;
pub const EXIT_PORT_CONFLICT: i32 = 11;
pub const EXIT_PID_FILE: i32 = 73;
pub const EXIT_CONFIG: i32 = 78;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_warden")
}

/// A port that was free a moment ago (the OS hands out ephemeral ports in
/// sequence, so two tests rarely collide; each test binds its own).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().unwrap().port()
}

/// One test's world: its HOME, its state directory, its port.
pub struct Env {
    pub home: tempfile::TempDir,
    pub state: tempfile::TempDir,
    pub port: u16,
}

impl Env {
    pub fn new() -> Env {
        Env {
            home: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
            port: free_port(),
        }
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    pub fn pid_file(&self) -> PathBuf {
        self.state
            .path()
            .join(format!("socketio-server-{}.pid", self.port))
    }

    pub fn log_file(&self) -> PathBuf {
        self.state.path().join("socketio-server.log")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// `warden <args>` with this test's HOME, state directory and port.
    /// `--port`/`--state-dir` are appended unless `args` already hold them.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args);
        let sub = args.first().copied().unwrap_or_default();
        let takes_target = matches!(
            sub,
            "start" | "stop" | "restart" | "status" | "health" | "doctor" | "reload" | "logs"
        );
        if takes_target && !args.contains(&"--port") {
            c.args(["--port", &self.port.to_string()]);
        }
        if takes_target && !args.contains(&"--state-dir") {
            c.arg("--state-dir").arg(self.state.path());
        }
        c.env("HOME", self.home.path())
            .env_remove("WARDEN_STATE_DIR")
            .env_remove("WARDEN_DEBUG")
            .env_remove("CLAUDE_MPM_DEBUG")
            .env_remove("WARDEN_LOG")
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null());
        c
    }

    /// Runs a command to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run warden")
    }

    /// Starts `warden start <extra>` in the foreground, stderr into a file.
    pub fn spawn(&self, extra: &[&str]) -> Daemon {
        self.spawn_env(extra, &[])
    }

    /// [`Env::spawn`] with extra environment variables.
    pub fn spawn_env(&self, extra: &[&str], vars: &[(&str, &str)]) -> Daemon {
        let stderr_path = self
            .state
            .path()
            .join(format!("stderr-{}.txt", unique_suffix()));
        let stderr = File::create(&stderr_path).unwrap();
        let mut args = vec!["start", "--host", "127.0.0.1"];
        args.extend_from_slice(extra);
        let child = self
            .command(&args)
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn warden start");
        Daemon { child, stderr_path }
    }

    /// The PID file parsed as JSON, if it exists and parses.
    pub fn pid_record(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.pid_file()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Polls until the PID file names `pid` and the port accepts.
    pub fn wait_ready(&self, daemon: &mut Daemon) {
        let pid = daemon.child.id();
        wait_until(&format!("warden pid {pid} ready on {}", self.port), || {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!(
                    "warden exited during startup with {status}; stderr:\n{}",
                    daemon.stderr()
                );
            }
            self.pid_record()
                .is_some_and(|r| r["pid"].as_u64() == Some(u64::from(pid)))
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    /// Polls until the log file contains every one of `needles` (the file
    /// is written by a background thread, a moment after the event); returns
    /// the log.
    pub fn wait_log(&self, needles: &[&str]) -> String {
        let mut log = String::new();
        let start = Instant::now();
        loop {
            log = std::fs::read_to_string(self.log_file()).unwrap_or(log);
            if needles.iter().all(|n| log.contains(n)) {
                return log;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the log never contained {needles:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path)
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A spawned daemon. Dropping it kills it (a failed test leaves nothing).
pub struct Daemon {
    pub child: Child,
    pub stderr_path: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: libc::c_int) {
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.child.id());
    }

    /// Polls until the process exits; panics after the deadline.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "warden pid {} did not exit; stderr:\n{}",
                self.child.id(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`http_get`], or `None` while the daemon cannot be asked (in the middle
/// of a restart it closes its listener for a moment: poll again).
#[allow(dead_code)]
pub fn try_http_get(port: u16, path: &str) -> Option<(u16, String)> {
    get(port, path).ok()
}

/// A minimal blocking HTTP GET against 127.0.0.1 (status, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    get(port, path).expect("an HTTP answer")
}

fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(DEADLINE))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {raw:?}")))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
