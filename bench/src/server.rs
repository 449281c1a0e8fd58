//! Starting and stopping a server under test as a child process, on a free
//! loopback port, with its own temporary state directory, and timing both.
//!
//! "Serving" means the port accepts a TCP connection and, for warden, the PID
//! file in the state directory names the child's pid: the target of the issue
//! is "`warden start` to serving (port accepting, PID file written)". The
//! child's stdout and stderr go to files in the state directory (shown when a
//! start fails), never to a pipe that could fill and stall it.
//!
//! Not here: what the clients do (see `scenario`).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// How often readiness and exit are polled while timing start and stop.
const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// A start that is not serving after this long has failed.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The servers the load tool compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerKind {
    /// `warden start` (release build) with health checks on.
    Warden,
    /// The same with connection state recovery on: a session pid per
    /// client, each event's offset as an extra argument, the replay gate.
    #[serde(rename = "warden-csr")]
    WardenRecovery,
    /// `bare-hub`: socketioxide with warden's settings, no reliability layer.
    Bare,
    /// `bare-hub --default-buffer`: socketioxide's default 128-packet buffer.
    #[serde(rename = "bare-128")]
    Bare128,
    /// `bench/hubs/python_hub.py`: python-socketio + aiohttp, the original stack.
    Python,
    /// `bench/hubs/node_hub.js`: a plain Node socket.io hub.
    Node,
}

impl ServerKind {
    pub const ALL: [ServerKind; 6] = [
        ServerKind::Warden,
        ServerKind::WardenRecovery,
        ServerKind::Bare,
        ServerKind::Bare128,
        ServerKind::Python,
        ServerKind::Node,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Warden => "warden",
            ServerKind::WardenRecovery => "warden-csr",
            ServerKind::Bare => "bare",
            ServerKind::Bare128 => "bare-128",
            ServerKind::Python => "python",
            ServerKind::Node => "node",
        }
    }

    pub fn parse(text: &str) -> Option<ServerKind> {
        ServerKind::ALL.into_iter().find(|kind| kind.name() == text)
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the server binaries are.
#[derive(Debug, Clone)]
pub struct ServerPaths {
    pub warden: PathBuf,
    pub bare_hub: PathBuf,
    /// Where `python_hub.py` and `node_hub.js` are (`bench/hubs`).
    pub hubs: PathBuf,
}

impl ServerPaths {
    /// `bench/hubs` in this checkout.
    pub fn default_hubs() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("hubs")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not prepare the run: {0}")]
    Io(#[from] std::io::Error),
    #[error("could not start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("{kind} exited during start ({status}); output:\n{output}")]
    ExitedEarly {
        kind: ServerKind,
        status: ExitStatus,
        output: String,
    },
    #[error("{kind} was not serving after {timeout:?}; output:\n{output}")]
    NotServing {
        kind: ServerKind,
        timeout: Duration,
        output: String,
    },
}

/// How a server was stopped and how long it took to exit.
#[derive(Debug, Clone, Serialize)]
pub struct StopOutcome {
    /// `"warden stop"`, `"SIGTERM"`, or `"SIGTERM after warden stop failed"`.
    pub method: String,
    /// From the stop request to the process's exit.
    pub stop_to_exit: Duration,
    /// The process did not exit within the bound and was killed.
    pub killed: bool,
    pub exit_status: Option<String>,
}

/// A server under test, killed on drop if still running.
#[derive(Debug)]
pub struct RunningServer {
    pub kind: ServerKind,
    pub addr: SocketAddr,
    pub pid: u32,
    /// From spawning the process to serving (see the module doc).
    pub start_to_serving: Duration,
    child: Child,
    dir: TempDir,
    config: Option<PathBuf>,
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// The configuration warden runs with: health checks on every second (so the
/// monitor works during every run), thresholds above what a benchmark load
/// reaches (so no recovery action disconnects the clients mid-run), the
/// relay settings of the bare hub (1 MB payload, 8,192-packet buffer), no
/// CORS (the bare hub has none), logging at the default level into the
/// state directory.
pub fn warden_config(port: u16, dir: &Path) -> serde_json::Value {
    serde_json::json!({
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "enable_cors": false,
            "max_clients": 100_000,
            "max_payload_bytes": 1_000_000,
            "socket_buffer_packets": 8_192,
        },
        "health_monitoring": {
            "enabled": true,
            "check_interval": 1,
            "aggregation_window": 60,
            "thresholds": {
                "cpu_percent": 10_000,
                "memory_mb": 4_096,
                "file_descriptors": 1_000_000,
                "max_clients": 100_000,
            },
        },
        "logging": {
            "level": "INFO",
            "file": dir.join("warden.log"),
        },
    })
}

impl RunningServer {
    /// Starts `kind` and waits until it serves (at most [`START_TIMEOUT`]).
    pub async fn start(
        kind: ServerKind,
        paths: &ServerPaths,
    ) -> Result<RunningServer, ServerError> {
        Self::start_with_config(kind, paths, warden_config).await
    }

    /// [`RunningServer::start`], with warden's configuration from `config`
    /// (given the port and the state directory) instead of [`warden_config`].
    pub async fn start_with_config(
        kind: ServerKind,
        paths: &ServerPaths,
        make_config: impl FnOnce(u16, &Path) -> serde_json::Value,
    ) -> Result<RunningServer, ServerError> {
        let dir = tempfile::Builder::new().prefix("warden-load-").tempdir()?;
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stdout = std::fs::File::create(dir.path().join("stdout.log"))?;
        let stderr = std::fs::File::create(dir.path().join("stderr.log"))?;
        let (binary, mut command, config) = match kind {
            ServerKind::Warden | ServerKind::WardenRecovery => {
                let config = dir.path().join("config.json");
                let mut settings = make_config(port, dir.path());
                if kind == ServerKind::WardenRecovery {
                    settings["connection_state_recovery"] = serde_json::json!({"enabled": true});
                }
                let text =
                    serde_json::to_string_pretty(&settings).map_err(std::io::Error::other)?;
                std::fs::write(&config, text)?;
                let mut command = Command::new(&paths.warden);
                command
                    .arg("start")
                    .arg("--port")
                    .arg(port.to_string())
                    .arg("--state-dir")
                    .arg(dir.path())
                    .arg("--config")
                    .arg(&config);
                (paths.warden.clone(), command, Some(config))
            }
            ServerKind::Bare | ServerKind::Bare128 => {
                let mut command = Command::new(&paths.bare_hub);
                command
                    .arg("--host")
                    .arg("127.0.0.1")
                    .arg("--port")
                    .arg(port.to_string());
                if kind == ServerKind::Bare128 {
                    command.arg("--default-buffer");
                }
                (paths.bare_hub.clone(), command, None)
            }
            ServerKind::Python | ServerKind::Node => {
                let (interpreter, script) = if kind == ServerKind::Python {
                    ("python3", paths.hubs.join("python_hub.py"))
                } else {
                    ("node", paths.hubs.join("node_hub.js"))
                };
                let mut command = Command::new(interpreter);
                command
                    .arg(&script)
                    .arg("--host")
                    .arg("127.0.0.1")
                    .arg("--port")
                    .arg(port.to_string());
                (script, command, None)
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = command.spawn().map_err(|source| ServerError::Spawn {
            binary: binary.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let pid_file = dir.path().join(format!("socketio-server-{port}.pid"));
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(ServerError::ExitedEarly {
                    kind,
                    status,
                    output: output_tail(dir.path()),
                });
            }
            let accepting = tokio::time::timeout(
                Duration::from_millis(100),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            .is_ok_and(|connected| connected.is_ok());
            let recorded = !matches!(kind, ServerKind::Warden | ServerKind::WardenRecovery)
                || pid_file_names(&pid_file, pid);
            if accepting && recorded {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(ServerError::NotServing {
                    kind,
                    timeout: START_TIMEOUT,
                    output: output_tail(dir.path()),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Ok(RunningServer {
            kind,
            addr,
            pid,
            start_to_serving: started.elapsed(),
            child,
            dir,
            config,
        })
    }

    /// The last lines of the server's stdout and stderr.
    pub fn output_tail(&self) -> String {
        output_tail(self.dir.path())
    }

    /// Sends SIGTERM and waits up to `bound` for the exit, then kills.
    pub async fn stop_with_signal(mut self, bound: Duration) -> StopOutcome {
        let started = Instant::now();
        self.signal(libc::SIGTERM);
        self.wait_exit(started, bound, "SIGTERM".to_owned()).await
    }

    /// Runs `warden stop` for this server and waits up to `bound` for the
    /// server to exit. If `warden stop` fails before the server exits, falls
    /// back to SIGTERM and says so.
    pub async fn stop_with_cli(mut self, warden: &Path, bound: Duration) -> StopOutcome {
        let started = Instant::now();
        let mut command = Command::new(warden);
        command
            .arg("stop")
            .arg("--port")
            .arg(self.addr.port().to_string())
            .arg("--state-dir")
            .arg(self.dir.path());
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut stop = match command.spawn() {
            Ok(stop) => stop,
            Err(_) => {
                self.signal(libc::SIGTERM);
                return self
                    .wait_exit(
                        started,
                        bound,
                        "SIGTERM (warden stop did not spawn)".to_owned(),
                    )
                    .await;
            }
        };
        let mut method = "warden stop".to_owned();
        while started.elapsed() < bound {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if let Ok(Some(status)) = stop.try_wait()
                && !status.success()
                && method == "warden stop"
            {
                method = format!("SIGTERM after warden stop failed ({status})");
                self.signal(libc::SIGTERM);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let outcome = self.wait_exit(started, bound, method).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), stop.wait()).await;
        outcome
    }

    fn signal(&self, signal: libc::c_int) {
        if let Ok(pid) = libc::pid_t::try_from(self.pid)
            && pid > 0
        {
            // SAFETY: kill has no memory preconditions; the pid is our own
            // child, not yet reaped (we hold its Child), so it cannot have
            // been reused by another process.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    async fn wait_exit(
        &mut self,
        started: Instant,
        bound: Duration,
        method: String,
    ) -> StopOutcome {
        let remaining = bound.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, self.child.wait()).await {
            Ok(status) => StopOutcome {
                method,
                stop_to_exit: started.elapsed(),
                killed: false,
                exit_status: status.ok().map(|s| s.to_string()),
            },
            Err(_) => {
                let _ = self.child.kill().await;
                StopOutcome {
                    method,
                    stop_to_exit: started.elapsed(),
                    killed: true,
                    exit_status: None,
                }
            }
        }
    }
}

/// True if the PID file at `path` is JSON whose `pid` is `pid`.
fn pid_file_names(path: &Path, pid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|value| value.get("pid")?.as_u64())
        == Some(u64::from(pid))
}

/// The last 20 lines of the child's stdout and stderr.
fn output_tail(dir: &Path) -> String {
    let mut tail = String::new();
    for name in ["stdout.log", "stderr.log"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(20);
        tail.push_str(&format!("--- {name}\n"));
        for line in &lines[start..] {
            tail.push_str(line);
            tail.push('\n');
        }
    }
    tail
}
