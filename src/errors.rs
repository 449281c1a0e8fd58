//! Errors people can act on.
//!
//! The five error types of the seed (`DaemonConflictError`,
//! `PortConflictError`, `StaleProcessError`, `RecoveryFailedError`,
//! `HealthCheckError`) carry structured fields and render a message with a
//! header, a DETAILS block, numbered RESOLUTION STEPS and DIAGNOSTIC COMMANDS
//! for Linux, macOS or Windows. [`format_troubleshooting_guide`] renders a
//! longer guide (symptom, diagnosis, solutions, log analysis, debug mode).
//!
//! This module is pure: it reads no clock, no pid and no file. Every fact
//! (pids, start times, the moment the conflict was observed) arrives in the
//! error's fields, so a rendering is a function of its input and every
//! rendering is an insta snapshot under `snapshots/`.
//!
//! Safety rule for every suggested command: a signal always names one exact
//! pid greater than 1. When the pid is unknown the step says how to find it;
//! no step ever suggests `kill 0`, `kill -1`, a negative pid or killing by
//! name or pattern. A pid that was reused by another program is never
//! suggested as a target.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::escalation::RecoveryAction;
use crate::health::{HealthCheckResult, HealthStatus, MetricValue};
use crate::pidfile::{ReuseEvidence, StaleReason};
use crate::time::WallTime;

/// The log lines the daemon writes and the troubleshooting guide greps for.
/// One vocabulary: the daemon logs with these exact prefixes.
pub mod log_markers {
    /// Logged when a health check result is warning, critical or unknown.
    pub const HEALTH_CHECK_FAILED: &str = "Health check failed";
    /// Logged when the recovery manager executes an action.
    pub const RECOVERY_ACTION: &str = "Recovery action";
    /// Logged on every circuit breaker transition.
    pub const CIRCUIT_BREAKER: &str = "Circuit breaker";
    /// Logged when the PID file lifecycle decides (stale, conflict, claimed).
    pub const PID_VALIDATION: &str = "PID validation";
    /// All of them, in the order the guide lists them.
    pub const ALL: [(&str, &str); 4] = [
        ("Health check failures", HEALTH_CHECK_FAILED),
        ("Recovery events", RECOVERY_ACTION),
        ("Circuit breaker events", CIRCUIT_BREAKER),
        ("Process validation issues", PID_VALIDATION),
    ];
}

/// The default log file, as written in documentation and guides (the shell
/// expands `~`).
pub const DEFAULT_LOG_FILE_DISPLAY: &str = "~/.claude-mpm/socketio-server.log";

/// The operating system a message's commands are written for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Platform {
    Linux,
    MacOs,
    Windows,
}

impl Platform {
    /// Every platform, for renderings that show them all.
    pub const ALL: [Platform; 3] = [Platform::Linux, Platform::MacOs, Platform::Windows];

    /// The platform this binary was built for. Other Unixes get the Linux
    /// commands, which are the closest.
    pub const fn current() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::MacOs
        } else if cfg!(windows) {
            Platform::Windows
        } else {
            Platform::Linux
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Platform::Linux => "Linux",
            Platform::MacOs => "macOS",
            Platform::Windows => "Windows",
        }
    }

    fn is_unix(self) -> bool {
        !matches!(self, Platform::Windows)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One command to run while diagnosing, with what it shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagnosticCommand {
    pub purpose: String,
    pub command: String,
}

impl DiagnosticCommand {
    fn new(purpose: impl Into<String>, command: impl Into<String>) -> Self {
        DiagnosticCommand {
            purpose: purpose.into(),
            command: command.into(),
        }
    }
}

/// What every warden error can say about itself. The rendering and the guide
/// are built from these parts.
pub trait Actionable {
    /// The seed's class name (`DaemonConflictError`, ...).
    fn kind(&self) -> &'static str;
    /// The first line of the message, with its emoji.
    fn headline(&self) -> String;
    /// The title of the details block (`CONFLICT DETAILS`, ...).
    fn details_title(&self) -> &'static str;
    /// `(label, value)` rows of the details block.
    fn details(&self) -> Vec<(String, String)>;
    /// Numbered steps an operator can follow, in order.
    fn resolution_steps_for(&self, platform: Platform) -> Vec<String>;
    /// Commands that show the facts behind the error on `platform`.
    fn diagnostic_commands(&self, platform: Platform) -> Vec<DiagnosticCommand>;
    /// One sentence describing what the operator sees, for the guide.
    fn symptom(&self) -> String;

    /// Resolution steps for the platform this binary runs on.
    fn resolution_steps(&self) -> Vec<String> {
        self.resolution_steps_for(Platform::current())
    }

    /// The full message: header, details, resolution steps, diagnostic commands.
    fn render(&self, platform: Platform) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.headline());
        let _ = writeln!(out);
        let _ = writeln!(out, "{}:", self.details_title());
        for (label, value) in self.details() {
            let _ = writeln!(out, "  • {label}: {value}");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "RESOLUTION STEPS:");
        for (i, step) in self.resolution_steps_for(platform).iter().enumerate() {
            let _ = writeln!(out, "  {}. {step}", i + 1);
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "DIAGNOSTIC COMMANDS ({}):", platform.label());
        for cmd in self.diagnostic_commands(platform) {
            let _ = writeln!(out, "  # {}", cmd.purpose);
            let _ = writeln!(out, "  {}", cmd.command);
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Helpers shared by the renderings.

/// A pid that may be signalled: known, and neither 0 (the caller's process
/// group) nor 1 (init).
fn signalable(pid: Option<u32>) -> Option<u32> {
    pid.filter(|&p| p > 1)
}

/// Quotes a path for the platform's shell when it needs quoting.
fn quote_path(path: &Path, platform: Platform) -> String {
    let text = path.display().to_string();
    if platform.is_unix() {
        let safe = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-+:@,%=~".contains(c));
        if safe {
            text
        } else {
            format!("'{}'", text.replace('\'', r"'\''"))
        }
    } else if text.contains([' ', '&', '(', ')', '^', '%']) {
        format!("\"{text}\"")
    } else {
        text
    }
}

/// `http://host:port` for a daemon bound to `host`; wildcard binds are
/// reached through loopback and IPv6 literals get brackets.
fn base_url(host: &str, port: u16) -> String {
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" | "[::]" => "[::1]",
        h if h.contains(':') && !h.starts_with('[') => return format!("http://[{h}]:{port}"),
        h => h,
    };
    format!("http://{host}:{port}")
}

fn curl(platform: Platform) -> &'static str {
    // In Windows PowerShell `curl` is an alias of Invoke-WebRequest; curl.exe
    // ships with Windows 10 and later.
    if platform.is_unix() {
        "curl"
    } else {
        "curl.exe"
    }
}

fn port_listeners(port: u16, platform: Platform) -> Vec<DiagnosticCommand> {
    match platform {
        Platform::Linux => vec![
            DiagnosticCommand::new(
                format!("Which process listens on port {port}"),
                format!("ss -ltnp 'sport = :{port}'"),
            ),
            DiagnosticCommand::new("The same with lsof", format!("lsof -nP -iTCP:{port}")),
        ],
        Platform::MacOs => vec![DiagnosticCommand::new(
            format!("Which process listens on port {port}"),
            format!("lsof -nP -iTCP:{port} -sTCP:LISTEN"),
        )],
        Platform::Windows => vec![DiagnosticCommand::new(
            format!("Which process listens on port {port} (last column is the PID)"),
            format!("netstat -ano | findstr :{port}"),
        )],
    }
}

fn process_details(pid: u32, platform: Platform) -> DiagnosticCommand {
    match platform {
        Platform::Linux => DiagnosticCommand::new(
            format!("Details of process {pid}"),
            format!("ps -p {pid} -o pid,ppid,stat,lstart,rss,cmd"),
        ),
        Platform::MacOs => DiagnosticCommand::new(
            format!("Details of process {pid}"),
            format!("ps -p {pid} -o pid,ppid,stat,lstart,rss,command"),
        ),
        Platform::Windows => DiagnosticCommand::new(
            format!("Details of process {pid}"),
            format!("tasklist /v /fi \"PID eq {pid}\""),
        ),
    }
}

fn show_file(path: &Path, platform: Platform) -> DiagnosticCommand {
    let p = quote_path(path, platform);
    let cmd = if platform.is_unix() {
        format!("cat {p}")
    } else {
        format!("type {p}")
    };
    DiagnosticCommand::new("Contents of the PID file", cmd)
}

fn remove_file_cmd(path: &Path, platform: Platform) -> String {
    let p = quote_path(path, platform);
    if platform.is_unix() {
        format!("rm {p}")
    } else {
        format!("del {p}")
    }
}

fn check_pid_cmd(pid: u32, platform: Platform) -> String {
    if platform.is_unix() {
        format!("ps -p {pid}")
    } else {
        format!("tasklist /fi \"PID eq {pid}\"")
    }
}

fn term_cmd(pid: u32, platform: Platform) -> String {
    if platform.is_unix() {
        format!("kill -TERM {pid}")
    } else {
        format!("taskkill /PID {pid}")
    }
}

fn kill_cmd(pid: u32, platform: Platform) -> String {
    if platform.is_unix() {
        format!("kill -KILL {pid}")
    } else {
        format!("taskkill /F /PID {pid}")
    }
}

fn find_pid_hint(port: u16, pid_file: Option<&Path>, platform: Platform) -> String {
    let listener = match platform {
        Platform::Linux => format!("ss -ltnp 'sport = :{port}'"),
        Platform::MacOs => format!("lsof -nP -iTCP:{port} -sTCP:LISTEN"),
        Platform::Windows => format!("netstat -ano | findstr :{port}"),
    };
    match pid_file {
        Some(path) => format!(
            "Find the pid first: {} (field \"pid\") or {listener}; never signal a pid you have not identified",
            show_file(path, platform).command
        ),
        None => {
            format!("Find the pid first: {listener}; never signal a pid you have not identified")
        }
    }
}

fn format_uptime(started: WallTime, observed_at: WallTime) -> String {
    if started > observed_at {
        return "unknown: start time is after the observation".to_string();
    }
    let secs = (observed_at.as_millis() - started.as_millis()) / 1000;
    let (d, h, m, s) = (
        secs / 86_400,
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
    );
    if d > 0 {
        format!("{secs}s = {d}d {h}h {m}m")
    } else if h > 0 {
        format!("{secs}s = {h}h {m}m {s}s")
    } else if m > 0 {
        format!("{secs}s = {m}m {s}s")
    } else {
        format!("{secs}s")
    }
}

fn pid_text(pid: Option<u32>) -> String {
    match pid {
        Some(p) if p > 0 => p.to_string(),
        _ => "unknown".to_string(),
    }
}

// ---------------------------------------------------------------------------
// DaemonConflictError

/// What the probe saw of the process that holds the PID file.
#[derive(Clone, Debug, PartialEq)]
pub struct ConflictingProcess {
    pub name: String,
    /// The probe's status word (`running`, `sleeping`, ...).
    pub status: String,
    pub started: Option<WallTime>,
    pub memory_mb: Option<f64>,
    pub cmdline: Option<String>,
}

/// Another warden already runs on this port: its PID file is locked.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonConflictError {
    pub port: u16,
    /// The winner's pid as recorded in its PID file; `None` when the file is
    /// locked but not yet readable (the winner is still writing it).
    pub existing_pid: Option<u32>,
    pub server_id: Option<String>,
    pub pid_file: PathBuf,
    pub process: Option<ConflictingProcess>,
    /// When the conflict was observed; uptime is computed against it.
    pub observed_at: WallTime,
}

impl DaemonConflictError {
    /// What a failed start prints: what happened, who holds what, the
    /// commands to run next. `target` repeats the invocation's
    /// `--port`/`--state-dir`/`--config` so the commands paste as they are.
    pub fn short(&self, target: &str) -> String {
        let holder = match (self.existing_pid, &self.process) {
            (Some(pid), Some(p)) => match p.started {
                Some(started) => format!("warden pid {pid} (started {})", started.to_human()),
                None => format!("warden pid {pid}"),
            },
            (Some(pid), None) => format!("pid {pid}"),
            (None, _) => "a warden that is still writing its record".to_string(),
        };
        format!(
            "warden: not started: port {port} already has a warden: {holder} holds its PID file \
             {file}.\n  \
             see it:   warden status {target}\n  \
             stop it:  warden stop {target}\n  \
             or start this one with another --port; the full guide: warden doctor {target}",
            port = self.port,
            file = self.pid_file.display(),
        )
    }
}

impl Actionable for DaemonConflictError {
    fn kind(&self) -> &'static str {
        "DaemonConflictError"
    }

    fn headline(&self) -> String {
        format!(
            "🚫 Socket.IO server conflict detected on port {}",
            self.port
        )
    }

    fn details_title(&self) -> &'static str {
        "CONFLICT DETAILS"
    }

    fn details(&self) -> Vec<(String, String)> {
        let mut rows = vec![("Existing PID".to_string(), pid_text(self.existing_pid))];
        if let Some(id) = &self.server_id {
            rows.push(("Server ID".into(), id.clone()));
        }
        match &self.process {
            Some(p) => {
                rows.push(("Process Status".into(), p.status.clone()));
                rows.push(("Process Name".into(), p.name.clone()));
                if let Some(cmd) = &p.cmdline {
                    rows.push(("Command Line".into(), cmd.clone()));
                }
                if let Some(started) = p.started {
                    rows.push((
                        "Started".into(),
                        format!(
                            "{} (uptime: {})",
                            started.to_human(),
                            format_uptime(started, self.observed_at)
                        ),
                    ));
                }
                if let Some(mb) = p.memory_mb {
                    rows.push(("Memory Usage".into(), format!("{mb:.1} MB")));
                }
            }
            None => rows.push((
                "Process Info".into(),
                "not available (the process could not be inspected)".into(),
            )),
        }
        rows.push(("PID File".into(), self.pid_file.display().to_string()));
        rows.push(("Observed At".into(), self.observed_at.to_human()));
        rows
    }

    fn resolution_steps_for(&self, platform: Platform) -> Vec<String> {
        let port = self.port;
        let mut steps = Vec::new();
        match signalable(self.existing_pid) {
            Some(pid) => {
                steps.push(format!(
                    "Check if the existing server is still needed: {}",
                    check_pid_cmd(pid, platform)
                ));
                steps.push(format!(
                    "Stop it gracefully (checks that pid {pid} is the warden of port {port}): warden stop --port {port}"
                ));
                steps.push(format!(
                    "If it does not stop, signal that exact pid: {}",
                    term_cmd(pid, platform)
                ));
                steps.push(format!(
                    "If graceful shutdown fails: {}",
                    kill_cmd(pid, platform)
                ));
            }
            None if self.existing_pid == Some(1) => {
                steps.push(
                    "The holder is pid 1 (an init process, e.g. a container's): stop the service or container that runs it; do not signal pid 1"
                        .to_string(),
                );
            }
            None => {
                steps.push(find_pid_hint(port, Some(&self.pid_file), platform));
                steps.push(format!("Stop it gracefully: warden stop --port {port}"));
            }
        }
        steps.push(format!(
            "Only if the process is gone, remove the PID file (warden also clears stale files by itself): {}",
            remove_file_cmd(&self.pid_file, platform)
        ));
        steps.push("Wait a few seconds for port cleanup".to_string());
        steps.push(format!("Try starting the server again on port {port}"));
        steps.push("Alternative: Use a different port with --port <new_port>".to_string());
        steps
    }

    fn diagnostic_commands(&self, platform: Platform) -> Vec<DiagnosticCommand> {
        let mut cmds = port_listeners(self.port, platform);
        if let Some(pid) = self.existing_pid.filter(|&p| p > 0) {
            cmds.push(process_details(pid, platform));
        }
        cmds.push(show_file(&self.pid_file, platform));
        cmds.push(DiagnosticCommand::new(
            "Ask the running warden",
            format!("warden status --port {}", self.port),
        ));
        cmds
    }

    fn symptom(&self) -> String {
        format!(
            "`warden start` on port {} fails with DaemonConflictError: another instance holds the PID file lock.",
            self.port
        )
    }
}

// ---------------------------------------------------------------------------
// PortConflictError

/// The process that owns a port, where the OS tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortHolder {
    pub pid: u32,
    pub name: String,
    pub cmdline: Option<String>,
}

/// The port is taken by something that is not a warden on this state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConflictError {
    pub host: String,
    pub port: u16,
    pub conflicting_process: Option<PortHolder>,
}

impl PortConflictError {
    /// What a failed start prints (see [`DaemonConflictError::short`]).
    pub fn short(&self, target: &str) -> String {
        let holder = match &self.conflicting_process {
            Some(h) => format!(
                "pid {} (`{}`)",
                h.pid,
                h.cmdline.as_deref().unwrap_or(&h.name)
            ),
            None => "a program this user cannot see (another user's?)".to_string(),
        };
        format!(
            "warden: not started: {host}:{port} is in use by {holder}, which is not a warden \
             of this state directory.\n  \
             see it:   ss -ltnp 'sport = :{port}'\n  \
             then stop that program, or start warden with another --port; the full guide: \
             warden doctor {target}",
            host = self.host,
            port = self.port,
        )
    }
}

impl Actionable for PortConflictError {
    fn kind(&self) -> &'static str {
        "PortConflictError"
    }

    fn headline(&self) -> String {
        format!(
            "🔌 Port {} on {} is already in use by another program",
            self.port, self.host
        )
    }

    fn details_title(&self) -> &'static str {
        "PORT DETAILS"
    }

    fn details(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            ("Host".to_string(), self.host.clone()),
            ("Port".to_string(), self.port.to_string()),
        ];
        match &self.conflicting_process {
            Some(p) => {
                rows.push(("Conflicting PID".into(), p.pid.to_string()));
                rows.push(("Process Name".into(), p.name.clone()));
                if let Some(cmd) = &p.cmdline {
                    rows.push(("Command Line".into(), cmd.clone()));
                }
            }
            None => rows.push((
                "Conflicting Process".into(),
                "unknown (the OS did not tell which process owns the port)".into(),
            )),
        }
        rows
    }

    fn resolution_steps_for(&self, platform: Platform) -> Vec<String> {
        let port = self.port;
        let mut steps = Vec::new();
        match self.conflicting_process.as_ref().map(|p| (p.pid, &p.name)) {
            Some((pid, name)) if pid > 1 => {
                steps.push(format!(
                    "Check what process {pid} ({name}) is and whether it is still needed: {}",
                    check_pid_cmd(pid, platform)
                ));
                steps.push(format!(
                    "Stop that program through its own service manager, or signal that exact pid: {}",
                    term_cmd(pid, platform)
                ));
            }
            _ => {
                steps.push(find_pid_hint(port, None, platform));
                steps.push(
                    "Stop that program through its own service manager once identified".to_string(),
                );
            }
        }
        steps.push(
            "If the port was just released, wait for port cleanup (30-60 seconds)".to_string(),
        );
        steps.push(format!("Try starting the server again on port {port}"));
        steps.push("Alternative: Use a different port with --port <new_port>".to_string());
        steps
    }

    fn diagnostic_commands(&self, platform: Platform) -> Vec<DiagnosticCommand> {
        let mut cmds = port_listeners(self.port, platform);
        if let Some(p) = self.conflicting_process.as_ref().filter(|p| p.pid > 0) {
            cmds.push(process_details(p.pid, platform));
        }
        cmds
    }

    fn symptom(&self) -> String {
        format!(
            "`warden start` fails with PortConflictError: {}:{} is bound by another program.",
            self.host, self.port
        )
    }
}

// ---------------------------------------------------------------------------
// StaleProcessError

/// A PID file names a process that no longer owns it, and warden could not
/// clear it by itself (the reason says why the file is stale).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleProcessError {
    /// The pid recorded in the file; `None` when the file is empty or corrupt.
    pub pid: Option<u32>,
    pub pid_file: PathBuf,
    pub reason: StaleReason,
    /// The probe's status word for the recorded pid (`zombie`, `not found`, ...).
    pub process_status: String,
    /// Why the automatic cleanup failed, when it did (e.g. permission denied).
    pub cleanup_error: Option<String>,
}

impl StaleProcessError {
    fn reason_text(&self) -> String {
        match &self.reason {
            StaleReason::ProcessGone { pid } => format!("process {pid} no longer exists"),
            StaleReason::Zombie { pid } => {
                format!("process {pid} is a zombie (exited, waiting for its parent to reap it)")
            }
            StaleReason::PidReused { pid, evidence } => match evidence {
                ReuseEvidence::StartTimeDiffers { recorded, actual } => format!(
                    "pid {pid} was reused by another program (recorded start {}, actual start {})",
                    recorded.to_iso8601(),
                    actual.to_iso8601()
                ),
                ReuseEvidence::CommandDiffers { recorded, actual } => format!(
                    "pid {pid} was reused by another program (recorded command `{recorded}`, actual `{actual}`)"
                ),
                ReuseEvidence::StartedAfterFileWritten {
                    file_modified,
                    process_started,
                } => format!(
                    "pid {pid} was reused by another program (it started at {}, after the file was written at {})",
                    process_started.to_iso8601(),
                    file_modified.to_iso8601()
                ),
                ReuseEvidence::NameDiffers { recorded, actual } => format!(
                    "pid {pid} was reused by another program (recorded name `{recorded}`, actual `{actual}`)"
                ),
                ReuseEvidence::NotListening { port, command } => format!(
                    "pid {pid} is not the server that wrote this file (it is `{command}`, which does \
                     not listen on port {port}, and nobody holds the lock)"
                ),
            },
            StaleReason::LockNotHeld { pid, probe_error } => format!(
                "nobody holds the lock of the PID file and process {pid} cannot be inspected ({probe_error})"
            ),
            StaleReason::Corrupt { detail } => format!("the PID file is corrupt: {detail}"),
            StaleReason::Empty => "the PID file is empty".to_string(),
        }
    }
}

impl Actionable for StaleProcessError {
    fn kind(&self) -> &'static str {
        "StaleProcessError"
    }

    fn headline(&self) -> String {
        format!("🧹 Stale PID file detected: {}", self.pid_file.display())
    }

    fn details_title(&self) -> &'static str {
        "STALE PROCESS DETAILS"
    }

    fn details(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            ("Recorded PID".to_string(), pid_text(self.pid)),
            ("Process Status".to_string(), self.process_status.clone()),
            ("Reason".to_string(), self.reason_text()),
            ("PID File".to_string(), self.pid_file.display().to_string()),
        ];
        if let Some(e) = &self.cleanup_error {
            rows.push(("Automatic Cleanup".into(), format!("failed: {e}")));
        }
        rows
    }

    fn resolution_steps_for(&self, platform: Platform) -> Vec<String> {
        let rm = remove_file_cmd(&self.pid_file, platform);
        let mut steps = Vec::new();
        match &self.reason {
            StaleReason::ProcessGone { pid } => {
                steps.push(format!(
                    "Confirm that process {pid} is gone: {}",
                    check_pid_cmd(*pid, platform)
                ));
                steps.push(format!("Remove the stale PID file: {rm}"));
            }
            StaleReason::Zombie { pid } => {
                steps.push(format!(
                    "A zombie cannot be killed; find its parent: {}",
                    if platform.is_unix() {
                        format!("ps -o ppid= -p {pid}")
                    } else {
                        format!("wmic process where ProcessId={pid} get ParentProcessId")
                    }
                ));
                steps.push(
                    "The zombie disappears when that parent reaps it or exits; inspect the parent before stopping it"
                        .to_string(),
                );
                steps.push(format!("Remove the stale PID file: {rm}"));
            }
            StaleReason::PidReused { pid, .. } => {
                steps.push(format!(
                    "Do NOT signal pid {pid}: it now belongs to another program"
                ));
                steps.push(format!("Remove the stale PID file: {rm}"));
            }
            StaleReason::LockNotHeld { pid, .. } => {
                steps.push(format!(
                    "Check what pid {pid} is before acting on it: {}",
                    check_pid_cmd(*pid, platform)
                ));
                steps.push(format!("Remove the stale PID file: {rm}"));
            }
            StaleReason::Corrupt { .. } | StaleReason::Empty => {
                steps.push(format!(
                    "Inspect the file: {}",
                    show_file(&self.pid_file, platform).command
                ));
                steps.push(format!("Remove the unusable PID file: {rm}"));
            }
        }
        if self.cleanup_error.is_some() {
            steps.push(
                "Check the permissions of the state directory: warden must be able to remove files in it"
                    .to_string(),
            );
        }
        steps.push("Start the server again: warden start".to_string());
        steps
    }

    fn diagnostic_commands(&self, platform: Platform) -> Vec<DiagnosticCommand> {
        let mut cmds = vec![show_file(&self.pid_file, platform)];
        if let Some(pid) = self.pid.filter(|&p| p > 0) {
            cmds.push(process_details(pid, platform));
        }
        let dir = self.pid_file.parent().unwrap_or(Path::new("."));
        cmds.push(DiagnosticCommand::new(
            "Permissions of the state directory",
            if platform.is_unix() {
                format!("ls -la {}", quote_path(dir, platform))
            } else {
                format!("icacls {}", quote_path(dir, platform))
            },
        ));
        cmds
    }

    fn symptom(&self) -> String {
        "A PID file names a process that no longer owns it and warden could not clear it."
            .to_string()
    }
}

// ---------------------------------------------------------------------------
// RecoveryFailedError

/// An automatic recovery action failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryFailedError {
    pub action: RecoveryAction,
    pub reason: String,
    /// 1-based attempt number within the recovery manager's budget.
    pub attempt: u32,
    pub max_attempts: u32,
    pub health_status: HealthStatus,
    pub host: String,
    pub port: u16,
    /// The daemon's own pid (passed in by the caller).
    pub pid: Option<u32>,
    pub observed_at: WallTime,
}

fn log_grep(pattern: &str, log_file: &str, platform: Platform) -> String {
    if platform.is_unix() {
        format!("grep \"{pattern}\" {log_file}")
    } else {
        format!("findstr /C:\"{pattern}\" {log_file}")
    }
}

fn log_file_for(platform: Platform, log_file: Option<&Path>) -> String {
    match log_file {
        Some(p) => quote_path(p, platform),
        None if platform.is_unix() => DEFAULT_LOG_FILE_DISPLAY.to_string(),
        None => r"%USERPROFILE%\.claude-mpm\socketio-server.log".to_string(),
    }
}

impl Actionable for RecoveryFailedError {
    fn kind(&self) -> &'static str {
        "RecoveryFailedError"
    }

    fn headline(&self) -> String {
        format!(
            "🚨 Automatic recovery failed: {} (attempt {}/{}) on port {}",
            self.action.as_str(),
            self.attempt,
            self.max_attempts,
            self.port
        )
    }

    fn details_title(&self) -> &'static str {
        "RECOVERY DETAILS"
    }

    fn details(&self) -> Vec<(String, String)> {
        vec![
            ("Action".into(), self.action.as_str().into()),
            ("Failure Reason".into(), self.reason.clone()),
            (
                "Attempt".into(),
                format!("{} of {}", self.attempt, self.max_attempts),
            ),
            ("Health Status".into(), self.health_status.as_str().into()),
            ("Server PID".into(), pid_text(self.pid)),
            ("Endpoint".into(), base_url(&self.host, self.port)),
            ("Observed At".into(), self.observed_at.to_human()),
        ]
    }

    fn resolution_steps_for(&self, platform: Platform) -> Vec<String> {
        let port = self.port;
        let url = base_url(&self.host, port);
        let mut steps = vec![format!(
            "Read the recovery history: {} -s {url}/diagnostics",
            curl(platform)
        )];
        steps.push(format!(
            "Identify the root cause in the log: {}",
            log_grep(
                log_markers::RECOVERY_ACTION,
                &log_file_for(platform, None),
                platform
            )
        ));
        match self.action {
            RecoveryAction::None | RecoveryAction::LogWarning => {}
            RecoveryAction::ClearConnections => steps.push(format!(
                "Restart the server by hand: warden restart --port {port}"
            )),
            RecoveryAction::RestartService => steps.push(format!(
                "Stop and start it by hand: warden stop --port {port} && warden start --port {port}"
            )),
            RecoveryAction::EmergencyStop => match signalable(self.pid) {
                Some(pid) => steps.push(format!(
                    "The server may still be running: warden stop --port {port}; if it stays up, signal that exact pid: {}",
                    term_cmd(pid, platform)
                )),
                None => steps.push(format!(
                    "The server may still be running: warden stop --port {port}"
                )),
            },
        }
        if self.attempt >= self.max_attempts {
            steps.push(format!(
                "Automatic recovery is exhausted ({} attempts): fix the cause, then restart; raise recovery.max_recovery_attempts only if the failures were transient",
                self.max_attempts
            ));
        }
        steps.push(
            "Adjust recovery thresholds (recovery.strategy, recovery.circuit_breaker) if recovery triggers too eagerly"
                .to_string(),
        );
        steps.push(
            "Disable recovery temporarily with \"recovery\": {\"enabled\": false} while you investigate"
                .to_string(),
        );
        steps
    }

    fn diagnostic_commands(&self, platform: Platform) -> Vec<DiagnosticCommand> {
        let url = base_url(&self.host, self.port);
        let c = curl(platform);
        let mut cmds = vec![
            DiagnosticCommand::new("Current health", format!("{c} -s {url}/health")),
            DiagnosticCommand::new(
                "Recovery manager and circuit breaker state",
                format!("{c} -s {url}/diagnostics"),
            ),
        ];
        if let Some(pid) = self.pid.filter(|&p| p > 0) {
            cmds.push(process_details(pid, platform));
        }
        cmds
    }

    fn symptom(&self) -> String {
        "The server keeps failing health checks and automatic recovery did not fix it (recovery loop, circuit breaker opens).".to_string()
    }
}

// ---------------------------------------------------------------------------
// HealthCheckError

/// One metric over its threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct ExceededThreshold {
    /// The metric's name as the checker reports it (`cpu_percent`, `memory_mb`, ...).
    pub metric: String,
    pub value: f64,
    pub threshold: f64,
    pub unit: String,
}

/// Health monitoring found the server warning or critical.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheckError {
    pub check_name: String,
    pub status: HealthStatus,
    pub exceeded: Vec<ExceededThreshold>,
    /// What the failing metrics without a threshold say (a zombie process,
    /// a port that does not accept, an interface that is down).
    pub details: Vec<String>,
    pub host: String,
    pub port: u16,
    /// The daemon's own pid (passed in by the caller).
    pub pid: Option<u32>,
    pub observed_at: WallTime,
}

impl HealthCheckError {
    /// The error for one checker's result, if it is warning or critical
    /// (`None` for healthy and unknown: unknown is not evidence of illness).
    /// Every metric that is not healthy is named: with its value and
    /// threshold when it has one, by its message otherwise.
    pub fn from_result(
        result: &HealthCheckResult,
        host: &str,
        port: u16,
        pid: Option<u32>,
        observed_at: WallTime,
    ) -> Option<HealthCheckError> {
        if !matches!(
            result.status,
            HealthStatus::Warning | HealthStatus::Critical
        ) {
            return None;
        }
        let mut exceeded = Vec::new();
        let mut details = Vec::new();
        for m in result
            .metrics
            .iter()
            .filter(|m| matches!(m.status, HealthStatus::Warning | HealthStatus::Critical))
        {
            match (&m.value, m.threshold) {
                (MetricValue::Number(value), Some(threshold)) => exceeded.push(ExceededThreshold {
                    metric: m.name.clone(),
                    value: (value * 10.0).round() / 10.0,
                    threshold,
                    unit: m.unit.clone().unwrap_or_default(),
                }),
                _ => details.push(
                    m.message
                        .clone()
                        .unwrap_or_else(|| format!("{} is {}", m.name, m.status.as_str())),
                ),
            }
        }
        if let Some(error) = &result.error {
            details.push(error.clone());
        }
        Some(HealthCheckError {
            check_name: result.checker.clone(),
            status: result.status,
            exceeded,
            details,
            host: host.to_string(),
            port,
            pid,
            observed_at,
        })
    }
    /// The seed's "recommended actions": the resolution steps for this platform.
    pub fn recommended_actions(&self) -> Vec<String> {
        self.resolution_steps()
    }
}

/// The config key that sets a metric's threshold, where there is one.
fn threshold_key(metric: &str) -> Option<&'static str> {
    Some(match metric {
        "cpu_percent" => "health_monitoring.thresholds.cpu_percent",
        "memory_mb" | "rss_mb" => "health_monitoring.thresholds.memory_mb",
        "file_descriptors" | "open_fds" => "health_monitoring.thresholds.file_descriptors",
        "error_rate" => "health_monitoring.thresholds.error_rate",
        "clients_connected" | "max_clients" => "health_monitoring.thresholds.max_clients",
        _ => return None,
    })
}

impl Actionable for HealthCheckError {
    fn kind(&self) -> &'static str {
        "HealthCheckError"
    }

    fn headline(&self) -> String {
        format!(
            "🩺 Health check '{}' reports {} on port {}",
            self.check_name,
            self.status.as_str(),
            self.port
        )
    }

    fn details_title(&self) -> &'static str {
        "HEALTH DETAILS"
    }

    fn details(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            ("Check".to_string(), self.check_name.clone()),
            ("Status".to_string(), self.status.as_str().to_string()),
            ("Server PID".to_string(), pid_text(self.pid)),
            ("Observed At".to_string(), self.observed_at.to_human()),
        ];
        if self.exceeded.is_empty() && self.details.is_empty() {
            rows.push(("Exceeded Thresholds".into(), "none reported".into()));
        }
        for detail in &self.details {
            rows.push(("Problem".to_string(), detail.clone()));
        }
        for t in &self.exceeded {
            let unit = if t.unit.is_empty() || t.unit == "%" {
                t.unit.clone()
            } else {
                format!(" {}", t.unit)
            };
            rows.push((
                format!("Exceeded {}", t.metric),
                format!("{}{unit} (threshold {}{unit})", t.value, t.threshold),
            ));
        }
        rows
    }

    fn resolution_steps_for(&self, platform: Platform) -> Vec<String> {
        let url = base_url(&self.host, self.port);
        let mut steps = vec![format!(
            "Read the full health report: {} -s {url}/health",
            curl(platform)
        )];
        let pid = self.pid.filter(|&p| p > 0);
        for t in &self.exceeded {
            let step = match (t.metric.as_str(), pid) {
                ("cpu_percent", Some(pid)) => format!(
                    "CPU is high: watch the process with {}",
                    if platform.is_unix() {
                        format!("top -p {pid}")
                    } else {
                        format!("tasklist /v /fi \"PID eq {pid}\"")
                    }
                ),
                ("memory_mb" | "rss_mb", _) => format!(
                    "Memory is high: check for leaks; a restart releases memory: warden restart --port {}",
                    self.port
                ),
                ("file_descriptors" | "open_fds", Some(pid)) => format!(
                    "Too many open files: count them with {}",
                    match platform {
                        Platform::Linux => format!("ls /proc/{pid}/fd | wc -l"),
                        Platform::MacOs => format!("lsof -p {pid} | wc -l"),
                        Platform::Windows => format!("handle.exe -p {pid} (Sysinternals)"),
                    }
                ),
                ("error_rate", _) => format!(
                    "Errors are frequent: {}",
                    log_grep("ERROR", &log_file_for(platform, None), platform)
                ),
                ("clients_connected" | "max_clients", _) => {
                    "Too many clients: look for dashboards that reconnect in a loop".to_string()
                }
                _ => format!("Review the load behind {}", t.metric),
            };
            steps.push(step);
        }
        let keys: Vec<&str> = self
            .exceeded
            .iter()
            .filter_map(|t| threshold_key(&t.metric))
            .collect();
        if keys.is_empty() {
            steps.push("Adjust health check thresholds if this load is expected".to_string());
        } else {
            steps.push(format!(
                "If this load is expected, raise {} in the config file",
                keys.join(", ")
            ));
        }
        steps.push("Increase system resources or review application load patterns".to_string());
        steps
    }

    fn diagnostic_commands(&self, platform: Platform) -> Vec<DiagnosticCommand> {
        let url = base_url(&self.host, self.port);
        let c = curl(platform);
        let mut cmds = vec![
            DiagnosticCommand::new(
                "Per-checker health and metrics",
                format!("{c} -s {url}/health"),
            ),
            DiagnosticCommand::new("Server diagnostics", format!("{c} -s {url}/diagnostics")),
        ];
        if let Some(pid) = self.pid.filter(|&p| p > 0) {
            cmds.push(process_details(pid, platform));
        }
        cmds.push(match platform {
            Platform::Linux | Platform::MacOs => DiagnosticCommand::new("Free disk space", "df -h"),
            Platform::Windows => DiagnosticCommand::new(
                "Free disk space",
                "wmic logicaldisk get caption,freespace,size",
            ),
        });
        cmds
    }

    fn symptom(&self) -> String {
        "Continuous health check warnings or critical status.".to_string()
    }
}

// ---------------------------------------------------------------------------
// Display and Error impls: the rendering for the current platform.

macro_rules! display_and_error {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.render(Platform::current()).trim_end())
            }
        }
        impl std::error::Error for $ty {}
    )*};
}

display_and_error!(
    DaemonConflictError,
    PortConflictError,
    StaleProcessError,
    RecoveryFailedError,
    HealthCheckError
);

/// Any of the five, for code that handles them together (the CLI, the guide).
#[derive(Debug, Error)]
pub enum WardenError {
    #[error(transparent)]
    DaemonConflict(#[from] DaemonConflictError),
    #[error(transparent)]
    PortConflict(#[from] PortConflictError),
    #[error(transparent)]
    StaleProcess(#[from] StaleProcessError),
    #[error(transparent)]
    RecoveryFailed(#[from] RecoveryFailedError),
    #[error(transparent)]
    HealthCheck(#[from] HealthCheckError),
}

impl WardenError {
    /// The inner error as its trait object.
    pub fn as_actionable(&self) -> &dyn Actionable {
        match self {
            WardenError::DaemonConflict(e) => e,
            WardenError::PortConflict(e) => e,
            WardenError::StaleProcess(e) => e,
            WardenError::RecoveryFailed(e) => e,
            WardenError::HealthCheck(e) => e,
        }
    }

    /// The rendered message for `platform`.
    pub fn render(&self, platform: Platform) -> String {
        self.as_actionable().render(platform)
    }
}

// ---------------------------------------------------------------------------
// The troubleshooting guide.

/// A full troubleshooting guide for `err` on `platform`, with the default log
/// file location.
pub fn format_troubleshooting_guide(err: &WardenError, platform: Platform) -> String {
    format_troubleshooting_guide_with_log(err, platform, None)
}

/// As [`format_troubleshooting_guide`], grepping `log_file` (the configured
/// one, already expanded) instead of the default location.
pub fn format_troubleshooting_guide_with_log(
    err: &WardenError,
    platform: Platform,
    log_file: Option<&Path>,
) -> String {
    let e = err.as_actionable();
    let log = log_file_for(platform, log_file);
    let rule = "=".repeat(72);
    let mut out = String::new();
    let _ = writeln!(out, "WARDEN TROUBLESHOOTING GUIDE: {}", e.kind());
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(out, "Platform: {}", platform.label());
    let _ = writeln!(out);
    let _ = writeln!(out, "SYMPTOM");
    let _ = writeln!(out, "  {}", e.symptom());
    let _ = writeln!(out);
    let _ = writeln!(out, "ERROR");
    let _ = writeln!(out, "  {}", e.headline());
    for (label, value) in e.details() {
        let _ = writeln!(out, "    • {label}: {value}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "DIAGNOSIS");
    for cmd in e.diagnostic_commands(platform) {
        let _ = writeln!(out, "  # {}", cmd.purpose);
        let _ = writeln!(out, "  {}", cmd.command);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "SOLUTIONS");
    for (i, step) in e.resolution_steps_for(platform).iter().enumerate() {
        let _ = writeln!(out, "  {}. {step}", i + 1);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "LOG ANALYSIS");
    for (purpose, pattern) in log_markers::ALL {
        let _ = writeln!(out, "  # {purpose}");
        let _ = writeln!(out, "  {}", log_grep(pattern, &log, platform));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "DEBUG MODE");
    if platform.is_unix() {
        let _ = writeln!(out, "  # Restart in the foreground with debug logging");
        let _ = writeln!(out, "  WARDEN_DEBUG=1 warden start");
        let _ = writeln!(out, "  # The seed's variable works too");
        let _ = writeln!(out, "  CLAUDE_MPM_DEBUG=1 warden start");
    } else {
        let _ = writeln!(
            out,
            "  # Restart in the foreground with debug logging (cmd.exe)"
        );
        let _ = writeln!(out, "  set WARDEN_DEBUG=1 && warden start");
        let _ = writeln!(out, "  # The seed's variable works too");
        let _ = writeln!(out, "  set CLAUDE_MPM_DEBUG=1 && warden start");
    }
    let _ = writeln!(
        out,
        "  # Or set \"logging\": {{\"level\": \"DEBUG\"}} in the config file"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(pid: Option<u32>) -> DaemonConflictError {
        DaemonConflictError {
            port: 8765,
            existing_pid: pid,
            server_id: None,
            pid_file: PathBuf::from("/tmp/x.pid"),
            process: None,
            observed_at: WallTime::from_secs(1000),
        }
    }

    fn all_commands(e: &dyn Actionable) -> String {
        let mut s = String::new();
        for p in Platform::ALL {
            s += &e.render(p);
        }
        s
    }

    #[test]
    fn unknown_or_special_pids_are_never_signalled() {
        for pid in [None, Some(0), Some(1)] {
            let text = all_commands(&conflict(pid));
            assert!(!text.contains("kill -"), "{pid:?}: {text}");
            assert!(!text.contains("taskkill"), "{pid:?}: {text}");
        }
        let text = all_commands(&conflict(Some(4242)));
        assert!(text.contains("kill -TERM 4242"));
        assert!(text.contains("taskkill /PID 4242"));
    }

    #[test]
    fn a_reused_pid_is_never_a_target() {
        let e = StaleProcessError {
            pid: Some(777),
            pid_file: PathBuf::from("/tmp/x.pid"),
            reason: StaleReason::PidReused {
                pid: 777,
                evidence: ReuseEvidence::CommandDiffers {
                    recorded: "warden".into(),
                    actual: "postgres".into(),
                },
            },
            process_status: "running".into(),
            cleanup_error: None,
        };
        let text = all_commands(&e);
        assert!(!text.contains("kill"), "{text}");
        assert!(text.contains("Do NOT signal pid 777"));
    }

    #[test]
    fn paths_with_spaces_are_quoted() {
        assert_eq!(
            quote_path(Path::new("/a b/it's.pid"), Platform::Linux),
            r"'/a b/it'\''s.pid'"
        );
        assert_eq!(
            quote_path(Path::new(r"C:\a b\x.pid"), Platform::Windows),
            r#""C:\a b\x.pid""#
        );
        assert_eq!(
            quote_path(Path::new("/tmp/x.pid"), Platform::MacOs),
            "/tmp/x.pid"
        );
    }

    #[test]
    fn urls_reach_wildcard_and_ipv6_binds() {
        assert_eq!(base_url("0.0.0.0", 1), "http://127.0.0.1:1");
        assert_eq!(base_url("::", 1), "http://[::1]:1");
        assert_eq!(base_url("::1", 1), "http://[::1]:1");
        assert_eq!(base_url("localhost", 8765), "http://localhost:8765");
    }

    #[test]
    fn uptime_is_observed_minus_started() {
        assert_eq!(
            format_uptime(WallTime::from_secs(100), WallTime::from_secs(1000)),
            "900s = 15m 0s"
        );
        assert!(
            format_uptime(WallTime::from_secs(10), WallTime::from_secs(5)).starts_with("unknown")
        );
    }
}
