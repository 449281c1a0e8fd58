//! The command line: `warden start | stop | restart | status | health |
//! doctor | config check | config show`, and the exit codes every command
//! returns (documented in README.md).
//!
//! Each command loads the effective configuration (see `settings`), does its
//! one job through `run` (the daemon), `control` (inspect and stop an
//! instance) or `client` (ask a running daemon over HTTP), prints for humans
//! on stdout and errors on stderr, and returns an exit code. Nothing here
//! decides about PID files or health; it reports what those modules decide.

pub mod client;
pub mod control;
pub mod doctor;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::config::{Profile, parse_config_with_profile, render_json};
use crate::daemon::cli::client::{ClientError, HttpResponse};
use crate::daemon::cli::control::{Instance, PortServer, StopOutcome};
use crate::daemon::os::logging;
use crate::daemon::os::pidfile::PidFileError;
use crate::daemon::os::port::PortOwner;
use crate::daemon::os::settings::{self, ConfigRequest, Effective, LoadError};
use crate::daemon::os::sysprobe::SysinfoProbe;
use crate::daemon::runner::run::{self, DaemonExit, DetachOutcome, StartError};
use crate::errors::Platform;
use crate::pidfile::Invocation;
use crate::probe::ProcessProbe;

/// The exit code of every command: README's table ("Exit codes"), one
/// variant a row.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// Success.
    Ok,
    /// Any failure without a more specific code.
    Failure,
    /// Bad command-line usage (clap's own code).
    Usage,
    /// `status`, `health`: no warden runs on that port (no PID file, or a
    /// stale one). `stop` then succeeds (0), like `systemctl stop`.
    NotRunning,
    /// `status`, `health`: the warden runs (its PID file is locked) but does
    /// not answer over HTTP.
    NotAnswering,
    /// `health`: the daemon answered that it is critical (HTTP 503).
    Unhealthy,
    /// `start`: another warden already runs on that port (DaemonConflictError).
    DaemonConflict,
    /// `start`: the port is held by another program (PortConflictError).
    PortConflict,
    /// The daemon stopped itself because recovery failed (emergency stop). A
    /// supervisor must not restart it blindly: systemd
    /// `RestartPreventExitStatus=69 78`. (sysexits' EX_UNAVAILABLE.)
    EmergencyStop,
    /// The PID file or state directory cannot be used (a symlink at the PID
    /// path, permissions, not a regular file). (sysexits' EX_CANTCREAT.)
    PidFile,
    /// Invalid configuration: bad file, unknown key, out-of-range value,
    /// missing `--config` file, bad flag value. Nothing was started.
    /// (sysexits' EX_CONFIG.)
    Config,
    /// `start --detach`: the background daemon's own code, passed on as is.
    Child(i32),
}

impl ExitCode {
    /// The number the process exits with.
    pub const fn code(self) -> i32 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::Failure => 1,
            ExitCode::Usage => 2,
            ExitCode::NotRunning => 3,
            ExitCode::NotAnswering => 4,
            ExitCode::Unhealthy => 5,
            ExitCode::DaemonConflict => 10,
            ExitCode::PortConflict => 11,
            ExitCode::EmergencyStop => 69,
            ExitCode::PidFile => 73,
            ExitCode::Config => 78,
            ExitCode::Child(code) => code,
        }
    }
}

/// Default seconds `stop` waits after SIGTERM before SIGKILL.
pub const DEFAULT_STOP_TIMEOUT_SECS: f64 = 10.0;
/// Lines `logs` prints by default.
pub const DEFAULT_LOG_LINES: usize = 10;
/// How often `logs -f` looks for new lines.
pub const LOG_FOLLOW_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version,
    about = "A self-healing Socket.IO event hub daemon",
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage, 3 not running, 4 not answering, \
                  5 unhealthy, 10 daemon conflict, 11 port conflict, 69 emergency stop, \
                  73 PID file unusable, 78 config error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (in the foreground unless --detach).
    Start(StartArgs),
    /// Stop the daemon of a port: SIGTERM, wait, then SIGKILL.
    Stop(StopArgs),
    /// Stop the daemon if it runs, then start it with the given flags.
    Restart(RestartArgs),
    /// Make the running daemon re-read its configuration (SIGHUP).
    Reload(TargetArgs),
    /// Whether a daemon runs on the port, and what it says about itself.
    Status(StatusArgs),
    /// The running daemon's health: a summary per checker (`--json`: /health as is).
    Health(StatusArgs),
    /// Print the end of the log file (like tail).
    Logs(LogsArgs),
    /// Diagnose the port: PID file, port owner, config; print a troubleshooting guide.
    Doctor(DoctorArgs),
    /// Validate or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script (e.g. `warden completions bash > /etc/bash_completion.d/warden`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; `warden man | man -l -`).
    Man,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    Development,
    Production,
    HighTraffic,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Profile {
        match p {
            ProfileArg::Development => Profile::Development,
            ProfileArg::Production => Profile::Production,
            ProfileArg::HighTraffic => Profile::HighTraffic,
        }
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// Config file (default: <state dir>/socketio-config.json when present).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State directory for the PID file and default log (default ~/.claude-mpm).
    #[arg(long, value_name = "DIR", env = "WARDEN_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Preset values under the file's own.
    #[arg(long, value_enum)]
    pub profile: Option<ProfileArg>,
}

/// Which daemon a command talks to.
#[derive(Debug, Clone, Default, Args)]
pub struct TargetArgs {
    /// Host to contact (default: the host in the PID file, else the config's).
    #[arg(long)]
    pub host: Option<String>,
    /// Port of the daemon (default: the config's, 8765).
    #[arg(long)]
    pub port: Option<u16>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Clone, Default, Args)]
pub struct StartArgs {
    /// Address to bind (default localhost).
    #[arg(long)]
    pub host: Option<String>,
    /// Port to bind (default 8765).
    #[arg(long)]
    pub port: Option<u16>,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Run in the background: print the pid once it serves, then exit.
    #[arg(long)]
    pub detach: bool,
    /// Internal: this process is the child of `--detach`.
    #[arg(long, hide = true)]
    pub detached_child: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_STOP_TIMEOUT_SECS)]
    pub timeout: f64,
}

#[derive(Debug, Clone, Args)]
pub struct RestartArgs {
    /// Flags given here override the running instance's recorded ones.
    #[command(flatten)]
    pub start: StartArgs,
    /// Run in the foreground even if the instance was started with --detach.
    #[arg(long, conflicts_with = "detach")]
    pub foreground: bool,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_STOP_TIMEOUT_SECS)]
    pub timeout: f64,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Port of the daemon (its config names the log file).
    #[arg(long)]
    pub port: Option<u16>,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// How many lines from the end.
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = DEFAULT_LOG_LINES)]
    pub lines: usize,
    /// Keep printing lines as they are written (until interrupted).
    #[arg(short = 'f', long)]
    pub follow: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Write the report to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file without starting anything.
    Check {
        file: PathBuf,
        #[arg(long, value_enum)]
        profile: Option<ProfileArg>,
    },
    /// Print the reference of every key: default, accepted values, effect (Markdown).
    Reference,
    /// Print the effective configuration (defaults < profile < file < flags) as JSON.
    Show {
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        port: Option<u16>,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Parses `std::env::args_os()` and runs the command; returns the exit code.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// As [`main`], with explicit arguments (the first is the program name).
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version print to stdout and succeed.
            return if e.use_stderr() {
                ExitCode::Usage
            } else {
                ExitCode::Ok
            };
        }
    };
    match cli.command {
        Command::Start(args) => cmd_start(&args),
        Command::Stop(args) => cmd_stop(&args),
        Command::Restart(args) => cmd_restart(&args),
        Command::Reload(args) => cmd_reload(&args),
        Command::Status(args) => cmd_status(&args),
        Command::Health(args) => cmd_health(&args),
        Command::Logs(args) => cmd_logs(&args),
        Command::Doctor(args) => cmd_doctor(&args),
        Command::Config(ConfigCommand::Check { file, profile }) => {
            cmd_config_check(&file, profile.map(Profile::from))
        }
        Command::Config(ConfigCommand::Show { host, port, config }) => {
            cmd_config_show(&request(host, port, &config))
        }
        Command::Config(ConfigCommand::Reference) => {
            print!(
                "{}",
                crate::config_reference::render(&crate::config::WardenConfig::default())
            );
            ExitCode::Ok
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "warden", &mut std::io::stdout());
            ExitCode::Ok
        }
        Command::Man => cmd_man(),
    }
}

/// `warden man`: the manual page, from the CLI's own definition.
fn cmd_man() -> ExitCode {
    let command = <Cli as clap::CommandFactory>::command();
    let mut page = Vec::new();
    if let Err(e) = clap_mangen::Man::new(command).render(&mut page) {
        eprintln!("warden: cannot render the manual page: {e}");
        return ExitCode::Failure;
    }
    match std::io::Write::write_all(&mut std::io::stdout(), &page) {
        Ok(()) => ExitCode::Ok,
        Err(_) => ExitCode::Failure,
    }
}

fn request(host: Option<String>, port: Option<u16>, c: &ConfigArgs) -> ConfigRequest {
    ConfigRequest {
        config_file: c.config.clone(),
        state_dir: c.state_dir.clone(),
        profile: c.profile.map(Profile::from),
        host,
        port,
    }
}

fn load_or_report(req: &ConfigRequest) -> Result<Effective, ExitCode> {
    settings::load(req).map_err(|e| {
        eprintln!("warden: configuration error: {e}");
        match e {
            LoadError::StateDir(_) => ExitCode::PidFile,
            _ => ExitCode::Config,
        }
    })
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("warden: cannot start the async runtime: {e}");
            ExitCode::Failure
        })
}

// ---------------------------------------------------------------------------
// start

fn cmd_start(args: &StartArgs) -> ExitCode {
    let effective = match settings::load(&request(args.host.clone(), args.port, &args.config)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{}", start_load_failure(&e, args));
            return match e {
                LoadError::StateDir(_) => ExitCode::PidFile,
                _ => ExitCode::Config,
            };
        }
    };
    if args.detach && !args.detached_child {
        return start_detached(args, &effective);
    }
    run_foreground(
        &effective,
        request(args.host.clone(), args.port, &args.config),
        args.detached_child,
    )
}

/// The arguments the detached child runs with: the same flags, plus the
/// internal marker.
fn child_args(args: &StartArgs) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec!["start".into()];
    if let Some(host) = &args.host {
        out.extend(["--host".into(), host.into()]);
    }
    if let Some(port) = args.port {
        out.extend(["--port".into(), port.to_string().into()]);
    }
    if let Some(config) = &args.config.config {
        out.extend(["--config".into(), config.into()]);
    }
    if let Some(dir) = &args.config.state_dir {
        out.extend(["--state-dir".into(), dir.into()]);
    }
    if let Some(profile) = args.config.profile {
        out.extend(["--profile".into(), Profile::from(profile).as_str().into()]);
    }
    out.push("--detached-child".into());
    out
}

fn start_detached(args: &StartArgs, effective: &Effective) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("warden: cannot find my own executable to detach: {e}");
            return ExitCode::Failure;
        }
    };
    match run::spawn_detached(exe, child_args(args), effective) {
        Ok(DetachOutcome::Ready { pid, output }) => {
            eprint!("{output}");
            eprintln!(
                "warden started in the background: pid {pid}, http://{}:{}",
                effective.host(),
                effective.port()
            );
            println!("{pid}");
            ExitCode::Ok
        }
        Ok(DetachOutcome::Failed { code, output }) => {
            eprint!("{output}");
            eprintln!("warden: the background daemon failed to start (exit code {code})");
            ExitCode::Child(code)
        }
        Ok(DetachOutcome::NotReady { pid, output }) => {
            eprint!("{output}");
            eprintln!(
                "warden: the background daemon (pid {pid}) did not become ready within {}s; \
                 it was left running. Check its log ({}) and `warden status --port {}`.",
                run::DETACH_READY_TIMEOUT.as_secs(),
                effective
                    .config
                    .logging
                    .file
                    .as_deref()
                    .map_or_else(|| "stderr".to_string(), |p| p.display().to_string()),
                effective.port()
            );
            ExitCode::Failure
        }
        Err(e) => {
            eprintln!("warden: cannot start the background daemon: {e}");
            ExitCode::Failure
        }
    }
}

/// Runs the daemon here; `request` is what a SIGHUP reload loads again.
fn run_foreground(effective: &Effective, request: ConfigRequest, detached_child: bool) -> ExitCode {
    let mut effective = effective.clone();
    // Recorded in the PID file, so that `restart` starts it in the background again.
    effective.invocation.detach = detached_child;
    let effective = &effective;
    let env_debug = logging::env_debug_requested();
    let guard = match logging::init(&effective.config.logging, env_debug) {
        Ok(guard) => guard,
        Err(e @ logging::LoggingError::BadFilter { .. }) => {
            eprintln!("warden: not started: configuration error: {e}");
            return ExitCode::Config;
        }
        Err(e) => {
            eprintln!(
                "warden: not started: cannot set up logging: {e}\n  the full guide: warden doctor {}",
                target_flags(effective)
            );
            return match e {
                logging::LoggingError::Symlink(_) | logging::LoggingError::NotRegular(_) => {
                    ExitCode::PidFile
                }
                _ => ExitCode::Failure,
            };
        }
    };
    let reload = run::ReloadSource {
        request,
        level: Some(guard.level_control()),
        env_debug,
    };
    if let Some(file) = &effective.config_file {
        tracing::info!("configuration read from {}", file.display());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warden: cannot start the async runtime: {e}");
            drop(guard);
            return ExitCode::Failure;
        }
    };
    let result = runtime.block_on(run::run(effective, reload, |_daemon| {
        if detached_child && let Err(e) = run::detach_stdio() {
            tracing::warn!("could not detach stdio: {e}");
        }
    }));
    runtime.shutdown_timeout(Duration::from_millis(200));
    let code = match result {
        Ok(DaemonExit::Signal(_)) => ExitCode::Ok,
        Ok(DaemonExit::EmergencyStop { .. }) => ExitCode::EmergencyStop,
        Err(e) => {
            eprintln!("{}", start_failure_message(&e, effective));
            start_error_code(&e)
        }
    };
    // Flushes the log file; must happen before process::exit.
    drop(guard);
    code
}

/// What a start whose configuration does not load prints: what is wrong
/// (the error names the key or the path and the fix) and, when a file is
/// at fault, the command that checks it again.
pub fn start_load_failure(e: &LoadError, args: &StartArgs) -> String {
    let mut text = match e {
        LoadError::StateDir(_) => format!("warden: not started: {e}"),
        _ => format!("warden: not started: configuration error: {e}"),
    };
    let file = args.config.config.clone().or_else(|| {
        let dir = args.config.state_dir.as_deref()?;
        Some(dir.join(settings::CONFIG_FILE_NAME)).filter(|f| f.is_file())
    });
    if let (LoadError::Invalid(_), Some(file)) = (e, file) {
        let profile = args.config.profile.map_or_else(String::new, |p| {
            format!(" --profile {}", Profile::from(p).as_str())
        });
        text.push_str(&format!(
            "\n  after fixing it, check it: warden config check {}{profile}",
            shell_word(&file.display().to_string())
        ));
    }
    text
}

/// What a failed start prints: a few lines (what happened, who holds what,
/// the next commands with this invocation's target, copy-paste-correct;
/// `warden doctor` has the full guide).
pub fn start_failure_message(e: &StartError, effective: &Effective) -> String {
    use crate::daemon::serve::server::BindError;
    let target = target_flags(effective);
    let guide = format!("the full guide: warden doctor {target}");
    match e {
        StartError::DaemonConflict(conflict) => conflict.short(&target),
        StartError::PortConflict(conflict) => conflict.short(&target),
        StartError::PidFile(PidFileError::Conflict { .. }) => {
            format!("warden: not started: {e}\n  see it:   warden status {target}\n  {guide}")
        }
        StartError::PidFile(_) => format!("warden: not started: {e}\n  {guide}"),
        StartError::Bind(BindError::PermissionDenied { addr, .. }) => format!(
            "warden: not started: permission denied binding {addr}: ports below 1024 need \
             privileges (CAP_NET_BIND_SERVICE, e.g. systemd's AmbientCapabilities=).\n  \
             or start on a port above 1023: {}",
            start_again(effective, effective.host(), 8765)
        ),
        StartError::Bind(
            BindError::AddrNotAvailable { .. }
            | BindError::Resolve { .. }
            | BindError::NoAddress { .. },
        ) => format!(
            "warden: not started: {e}.\n  \
             this machine's addresses: ip -brief address\n  \
             start on one of them (127.0.0.1: this machine only): {}",
            start_again(effective, "127.0.0.1", effective.port())
        ),
        StartError::Cors(_) => format!(
            "warden: not started: configuration error: {e}\n  \
             fix server.cors_allowed_origins, then check: warden config show {target}"
        ),
        StartError::Bind(_) | StartError::Internal(_) => {
            format!("warden: not started: {e}\n  {guide}")
        }
    }
}

/// `--port P --state-dir D [--config F]` of this invocation, so that a
/// suggested command reaches the same instance when pasted (an auto-loaded
/// `<state dir>/socketio-config.json` needs no `--config`).
pub fn target_flags(effective: &Effective) -> String {
    let mut flags = format!(
        "--port {} --state-dir {}",
        effective.port(),
        shell_word(&effective.state_dir.display().to_string())
    );
    if let Some(file) = &effective.config_file
        && file.parent() != Some(effective.state_dir.as_path())
    {
        flags.push_str(&format!(
            " --config {}",
            shell_word(&file.display().to_string())
        ));
    }
    flags
}

/// `warden start --host H --port P ...` with the rest of this invocation's
/// target (state directory, config file).
fn start_again(effective: &Effective, host: &str, port: u16) -> String {
    let target = target_flags(effective);
    // `target_flags` begins with this invocation's `--port P`.
    let rest = target
        .strip_prefix(&format!("--port {} ", effective.port()))
        .unwrap_or(&target);
    format!(
        "warden start --host {} --port {port} {rest}",
        shell_word(host)
    )
}

/// `word` quoted for a POSIX shell when it needs it.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The exit code for a failed start.
pub fn start_error_code(e: &StartError) -> ExitCode {
    match e {
        StartError::DaemonConflict(_) => ExitCode::DaemonConflict,
        StartError::PortConflict(_) => ExitCode::PortConflict,
        StartError::PidFile(PidFileError::Conflict { .. }) => ExitCode::DaemonConflict,
        StartError::PidFile(_) => ExitCode::PidFile,
        StartError::Cors(_) => ExitCode::Config,
        StartError::Bind(_) | StartError::Internal(_) => ExitCode::Failure,
    }
}

// ---------------------------------------------------------------------------
// stop / restart

fn stop_timeout(secs: f64) -> Result<Duration, ExitCode> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        eprintln!("warden: --timeout must be a non-negative number of seconds, not {secs}");
        ExitCode::Usage
    })
}

/// What a command found on its port.
struct Located {
    /// The settings of the instance found: this invocation's, or, for a
    /// warden serving the port from another state directory, that
    /// warden's (its recorded invocation with the state directory it holds).
    effective: Effective,
    instance: Instance,
    /// The state directory this command was pointed at, when the warden was
    /// found in another one through the port's owner.
    looked_in: Option<PathBuf>,
    /// The program serving the port while no warden runs here, when it is
    /// not a warden this user can verify.
    other_owner: Option<PortOwner>,
}

impl Located {
    /// "warden is not running on port P ..." with, when a program that is not
    /// a verifiable warden serves the port, who it is.
    fn not_running(&self) -> String {
        let port = self.effective.port();
        let mut text = describe_not_running(&self.instance, port);
        if let Some(owner) = &self.other_owner {
            text.push_str(&format!(
                "; port {port} is served by pid {} (`{}`), which is not a warden of any state \
                 directory this user can read",
                owner.pid,
                owner.command()
            ));
        }
        text
    }

    /// "state directory D" and, when found elsewhere, how to reach it directly.
    fn state_dir_note(&self) -> String {
        let dir = self.effective.state_dir.display();
        match &self.looked_in {
            Some(asked) => format!(
                "state directory {dir}, found through the port's owner (this command looked in \
                 {}); to reach it directly: --port {} --state-dir {}",
                asked.display(),
                self.effective.port(),
                shell_word(&dir.to_string())
            ),
            None => format!("state directory {dir}"),
        }
    }
}

/// The settings of `target` and what runs on its port, or the exit code of
/// the error already reported (what `reload`, `status` and `health` start with).
fn load_and_locate(target: &TargetArgs) -> Result<Located, ExitCode> {
    let effective = load_or_report(&request(None, target.port, &target.config))?;
    locate(effective, &SysinfoProbe::new())
}

/// Inspects `effective`'s PID file; when it shows no running warden, asks
/// the port's owner whether it is a warden of another state directory
/// (`control::port_server`), as systemctl finds a unit whatever the
/// directory it was started from.
/// `stop`'s and `restart`'s first steps: the settings, the `--timeout`,
/// and the instance they would stop.
fn locate_for_stop(
    request: &ConfigRequest,
    timeout_secs: f64,
    probe: &dyn ProcessProbe,
) -> Result<(Located, Duration), ExitCode> {
    let effective = load_or_report(request)?;
    let timeout = stop_timeout(timeout_secs)?;
    Ok((locate(effective, probe)?, timeout))
}

fn locate(effective: Effective, probe: &dyn ProcessProbe) -> Result<Located, ExitCode> {
    let instance = inspect_or_report(&effective, probe)?;
    let mut located = Located {
        effective,
        instance,
        looked_in: None,
        other_owner: None,
    };
    if !matches!(
        located.instance,
        Instance::NotRunning { .. } | Instance::Stale { .. }
    ) {
        return Ok(located);
    }
    match control::port_server(located.effective.port(), probe) {
        Some(PortServer::Warden {
            state_dir,
            instance,
        }) if !same_dir(&state_dir, &located.effective.state_dir) => {
            let found = effective_of(&instance, &state_dir, &located.effective);
            located.looked_in = Some(std::mem::replace(&mut located.effective, found).state_dir);
            located.instance = *instance;
        }
        Some(PortServer::Other(owner)) => located.other_owner = Some(owner),
        _ => {}
    }
    Ok(located)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(a), Ok(b)) if a == b
        )
}

/// The settings of the warden `instance` whose PID file is in `state_dir`:
/// its recorded invocation (flags, config file, profile) with that state
/// directory; `fallback` with the state directory replaced when the record
/// has none or it no longer loads.
fn effective_of(instance: &Instance, state_dir: &Path, fallback: &Effective) -> Effective {
    let invocation = match instance {
        Instance::Running { record, .. } => {
            record.invocation.as_deref().cloned().unwrap_or_default()
        }
        _ => Invocation::default(),
    };
    let req = ConfigRequest {
        config_file: invocation.config,
        state_dir: Some(state_dir.to_path_buf()),
        profile: invocation
            .profile
            .as_deref()
            .and_then(profile_named)
            .map(Profile::from),
        host: invocation.host,
        port: Some(fallback.port()),
    };
    settings::load(&req).unwrap_or_else(|_| {
        let mut e = fallback.clone();
        e.state_dir = state_dir.to_path_buf();
        e.config.server.state_dir = Some(state_dir.to_path_buf());
        e
    })
}

/// The profile called `name` (as `Profile::as_str` writes it).
fn profile_named(name: &str) -> Option<ProfileArg> {
    ProfileArg::value_variants()
        .iter()
        .copied()
        .find(|p| Profile::from(*p).as_str() == name)
}

fn inspect_or_report(
    effective: &Effective,
    probe: &dyn ProcessProbe,
) -> Result<Instance, ExitCode> {
    control::inspect(&effective.state_dir, effective.port(), probe).map_err(|e| {
        eprintln!("warden: {e}");
        match e {
            PidFileError::Symlink { .. }
            | PidFileError::NotRegularFile { .. }
            | PidFileError::StateDir(_) => ExitCode::PidFile,
            _ => ExitCode::Failure,
        }
    })
}

fn describe_not_running(instance: &Instance, port: u16) -> String {
    match instance {
        Instance::NotRunning { pid_file } => format!(
            "warden is not running on port {port} (no PID file at {})",
            pid_file.display()
        ),
        Instance::Stale {
            pid_file, reason, ..
        } => format!(
            "warden is not running on port {port}: the PID file {} is stale ({reason}); \
             the next start removes it",
            pid_file.display()
        ),
        _ => String::new(),
    }
}

/// Stops the instance `located` found. `Ok(true)` when one was stopped,
/// `Ok(false)` when none ran (said on stderr: nothing to stop).
fn stop_located(
    located: &Located,
    timeout: Duration,
    probe: &dyn ProcessProbe,
) -> Result<bool, ExitCode> {
    let port = located.effective.port();
    match &located.instance {
        Instance::NotRunning { .. } | Instance::Stale { .. } => {
            eprintln!("{}; nothing to stop", located.not_running());
            Ok(false)
        }
        Instance::Unverifiable { pid_file, why, .. } => {
            eprintln!(
                "warden: refusing to stop anything: the PID file {} {why}. \
                 Run `warden doctor {}` for the steps to resolve it.",
                pid_file.display(),
                target_flags(&located.effective)
            );
            Err(ExitCode::Failure)
        }
        Instance::Running { process, .. } => match control::stop(process, timeout, probe) {
            Ok(StopOutcome::Terminated { pid }) => {
                eprintln!(
                    "stopped warden (pid {pid}) on port {port}, {}",
                    located.state_dir_note()
                );
                Ok(true)
            }
            Ok(StopOutcome::Killed { pid }) => {
                eprintln!(
                    "warden (pid {pid}) on port {port}, {}, did not stop within {timeout:?} and \
                     was killed (SIGKILL); its PID file is left and the next start clears it",
                    located.state_dir_note()
                );
                Ok(true)
            }
            Err(e) => {
                eprintln!("warden: {e}");
                Err(ExitCode::Failure)
            }
        },
    }
}

fn cmd_stop(args: &StopArgs) -> ExitCode {
    let t = &args.target;
    let probe = SysinfoProbe::new();
    let asked = request(t.host.clone(), t.port, &t.config);
    let (located, timeout) = match locate_for_stop(&asked, args.timeout, &probe) {
        Ok(found) => found,
        Err(code) => return code,
    };
    // Stopping a stopped service succeeds, as `systemctl stop` and LSB init
    // scripts do: the wanted state (not running) holds.
    match stop_located(&located, timeout, &probe) {
        Ok(_) => ExitCode::Ok,
        Err(code) => code,
    }
}

/// `restart`'s start flags: the running instance's recorded invocation,
/// each flag given to `restart` overriding its recorded value (`--foreground`
/// undoes a recorded `--detach`).
fn restart_flags(args: &RestartArgs, recorded: Option<&Invocation>) -> StartArgs {
    let given = &args.start;
    let Some(recorded) = recorded else {
        return given.clone();
    };
    StartArgs {
        host: given.host.clone().or_else(|| recorded.host.clone()),
        port: given.port,
        config: ConfigArgs {
            config: given
                .config
                .config
                .clone()
                .or_else(|| recorded.config.clone()),
            state_dir: given
                .config
                .state_dir
                .clone()
                .or_else(|| recorded.state_dir.clone()),
            profile: given
                .config
                .profile
                .or_else(|| recorded.profile.as_deref().and_then(profile_named)),
        },
        detach: given.detach || (recorded.detach && !args.foreground),
        detached_child: false,
    }
}

/// `warden start ...` with `flags`, as the operator would type it.
fn start_command_line(flags: &StartArgs, port: u16) -> String {
    let mut words = vec!["warden".to_string(), "start".to_string()];
    if let Some(host) = &flags.host {
        words.extend(["--host".into(), shell_word(host)]);
    }
    words.extend(["--port".into(), flags.port.unwrap_or(port).to_string()]);
    for (flag, path) in [
        ("--config", &flags.config.config),
        ("--state-dir", &flags.config.state_dir),
    ] {
        if let Some(path) = path {
            words.extend([flag.into(), shell_word(&path.display().to_string())]);
        }
    }
    if let Some(profile) = flags.config.profile {
        words.extend(["--profile".into(), Profile::from(profile).as_str().into()]);
    }
    if flags.detach {
        words.push("--detach".into());
    }
    words.join(" ")
}

fn cmd_restart(args: &RestartArgs) -> ExitCode {
    let s = &args.start;
    let probe = SysinfoProbe::new();
    let asked = request(s.host.clone(), s.port, &s.config);
    let (located, timeout) = match locate_for_stop(&asked, args.timeout, &probe) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let recorded = match &located.instance {
        Instance::Running { record, .. } => record.invocation.as_deref(),
        _ => None,
    };
    let mut flags = restart_flags(args, recorded);
    if recorded.is_some() {
        // The port the instance was found on, whatever its config says now.
        flags.port = Some(located.effective.port());
        // Said first, so that an error about a recorded flag (a config file
        // since removed) is understood.
        eprintln!(
            "restarting as recorded: {}",
            start_command_line(&flags, located.effective.port())
        );
    }
    // The new settings load before anything is stopped: a broken config file
    // leaves the running instance alone.
    let effective = match load_or_report(&request(flags.host.clone(), flags.port, &flags.config)) {
        Ok(e) => e,
        Err(code) => return code,
    };
    if let Err(code) = stop_located(&located, timeout, &probe) {
        return code;
    }
    if flags.detach {
        start_detached(&flags, &effective)
    } else {
        run_foreground(
            &effective,
            request(flags.host.clone(), flags.port, &flags.config),
            false,
        )
    }
}

/// `warden reload`: SIGHUP to the verified instance of the port.
fn cmd_reload(args: &TargetArgs) -> ExitCode {
    let located = match load_and_locate(args) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let (effective, instance) = (&located.effective, &located.instance);
    let port = effective.port();
    match instance {
        Instance::NotRunning { .. } | Instance::Stale { .. } => {
            eprintln!("{}; nothing to reload", located.not_running());
            ExitCode::NotRunning
        }
        Instance::Unverifiable { pid_file, why, .. } => {
            eprintln!(
                "warden: refusing to signal anything: the PID file {} {why}.",
                pid_file.display()
            );
            ExitCode::Failure
        }
        Instance::Running { process, .. } => match control::reload(process) {
            Ok(()) => {
                let found = match &located.looked_in {
                    Some(_) => format!(" ({})", located.state_dir_note()),
                    None => String::new(),
                };
                eprintln!(
                    "sent SIGHUP to warden (pid {}) on port {port}{found}: it re-reads {} and logs \
                     what it applied and what needs a restart",
                    process.pid,
                    effective.config_file.as_deref().map_or_else(
                        || "its configuration".to_string(),
                        |p| p.display().to_string()
                    )
                );
                ExitCode::Ok
            }
            Err(e) => {
                eprintln!("warden: {e}");
                ExitCode::Failure
            }
        },
    }
}

// ---------------------------------------------------------------------------
// status / health

/// The host to contact: the flag, else the PID file's, else the config's.
fn contact_host(flag: Option<&str>, instance: &Instance, effective: &Effective) -> String {
    if let Some(h) = flag {
        return h.to_string();
    }
    match instance {
        Instance::Running { record, .. } if !record.host.is_empty() => record.host.clone(),
        _ => effective.host().to_string(),
    }
}

fn cmd_status(args: &StatusArgs) -> ExitCode {
    let t = &args.target;
    let located = match load_and_locate(t) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let (effective, instance) = (&located.effective, &located.instance);
    let port = effective.port();
    let log_file = log_file_of(effective).ok();
    let mut report = json!({
        "state": instance.state(),
        "port": port,
        "state_dir": effective.state_dir.display().to_string(),
        "pid_file": instance.pid_file().display().to_string(),
        "log_file": log_file.as_ref().map(|p| p.display().to_string()),
    });
    if let Some(asked) = &located.looked_in {
        report["looked_in"] = json!(asked.display().to_string());
    }
    if let Some(owner) = &located.other_owner {
        report["port_owner"] = json!({"pid": owner.pid, "command": owner.command()});
    }
    let code = match instance {
        Instance::NotRunning { .. } | Instance::Stale { .. } => {
            if let Instance::Stale { reason, .. } = instance {
                report["stale_reason"] = json!(reason.to_string());
            }
            if !args.json {
                println!("{}", located.not_running());
            }
            ExitCode::NotRunning
        }
        Instance::Unverifiable { why, .. } => {
            report["detail"] = json!(why);
            if !args.json {
                println!(
                    "warden on port {port}: the PID file {} {why}",
                    instance.pid_file().display()
                );
            }
            ExitCode::Failure
        }
        Instance::Running { record, .. } => status_running(args, &located, record, &mut report),
    };
    if args.json {
        println!("{report}");
    } else {
        match &log_file {
            Some(path) => println!("log file: {}", path.display()),
            None => println!("log file: none (logging.file is null: stderr only)"),
        }
    }
    code
}

/// `status` of a running warden: what its `/status` (and, in cluster mode,
/// `/diagnostics`) answers, or that it does not answer.
fn status_running(
    args: &StatusArgs,
    located: &Located,
    record: &crate::pidfile::PidRecord,
    report: &mut Value,
) -> ExitCode {
    let (effective, instance) = (&located.effective, &located.instance);
    let port = effective.port();
    let host = contact_host(args.target.host.as_deref(), instance, effective);
    report["pid"] = json!(record.pid);
    report["host"] = json!(host);
    report["server_id"] = json!(record.server_id);
    report["started"] = json!(record.start_time.to_iso8601());
    match http_get(&host, port, "/status") {
        Ok(resp) if resp.status == 200 => {
            let body = resp.json().unwrap_or(Value::Null);
            if !args.json {
                println!(
                    "warden is running on {host}:{port}: pid {}, version {}, uptime {}s, \
                     {} clients, health {}",
                    record.pid,
                    body["version"].as_str().unwrap_or("?"),
                    body["uptime"],
                    body["clients"],
                    body["health"].as_str().unwrap_or("?"),
                );
                println!("{}", located.state_dir_note());
            }
            // `/health`'s names, flat (no `"status": {"status": ...}`).
            report["version"] = body["version"].clone();
            report["uptime_seconds"] = body["uptime"].clone();
            report["clients_connected"] = body["clients"].clone();
            report["health"] = body["health"].clone();
            let token = effective.config.server.auth_token.as_deref();
            if let Some(cluster) = cluster_section(token, &host, port) {
                if !args.json {
                    println!("{}", cluster_status_line(&cluster, port));
                }
                report["cluster"] = cluster;
            }
            ExitCode::Ok
        }
        Ok(resp) => {
            let detail = format!("GET /status answered HTTP {}", resp.status);
            not_answering(report, args.json, record.pid, &host, port, &detail)
        }
        Err(e) => not_answering(report, args.json, record.pid, &host, port, &e.to_string()),
    }
}

/// `/diagnostics`' cluster section of a node in cluster mode; `None` in
/// single-node mode or when it cannot be read (`status` says what it can).
fn cluster_section(token: Option<&str>, host: &str, port: u16) -> Option<Value> {
    let resp = http_get_as(token, host, port, "/diagnostics").ok()?;
    if resp.status != 200 {
        return None;
    }
    let cluster = resp.json().ok()?["cluster"].take();
    (cluster["enabled"] == Value::Bool(true)).then_some(cluster)
}

/// `warden status`'s cluster line: doctor's summary, and while Redis is not
/// connected, since when, the last error and where the steps are.
pub fn cluster_status_line(cluster: &Value, port: u16) -> String {
    let Some(facts) = crate::daemon::cli::doctor::ClusterFacts::from_diagnostics(cluster) else {
        return String::new();
    };
    if facts.redis_state == "connected" {
        return facts.summary();
    }
    let since = facts
        .redis_state_since
        .as_deref()
        .map_or_else(String::new, |t| format!(" since {t}"));
    let error = facts
        .last_error
        .as_deref()
        .map_or_else(String::new, |e| format!(" (last error: {e})"));
    format!(
        "cluster: node {}, Redis {} {}{since}{error}: events reach this node's clients only \
         until Redis is back; `warden doctor --port {port}` says what to check",
        facts.node_id, facts.redis_url, facts.redis_state
    )
}

fn not_answering(
    report: &mut Value,
    as_json: bool,
    pid: u32,
    host: &str,
    port: u16,
    detail: &str,
) -> ExitCode {
    report["state"] = json!("not_answering");
    report["detail"] = json!(detail);
    if !as_json {
        println!(
            "warden (pid {pid}) holds the PID file of port {port} but does not answer on \
             {host}:{port}: {detail}"
        );
    }
    ExitCode::NotAnswering
}

fn http_get(host: &str, port: u16, path: &str) -> Result<HttpResponse, ClientError> {
    http_get_as(None, host, port, path)
}

/// [`http_get`] with the daemon's `server.auth_token`, for the endpoints
/// that need it (`/diagnostics`).
fn http_get_as(
    token: Option<&str>,
    host: &str,
    port: u16,
    path: &str,
) -> Result<HttpResponse, ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Io {
            host: host.to_string(),
            port,
            source: e,
        })?;
    runtime.block_on(client::get_with_token(host, port, path, token))
}

fn cmd_health(args: &StatusArgs) -> ExitCode {
    let t = &args.target;
    if let Err(code) = current_thread_runtime() {
        return code;
    }
    let located = match load_and_locate(t) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let (effective, instance) = (&located.effective, &located.instance);
    let port = effective.port();
    if matches!(
        instance,
        Instance::NotRunning { .. } | Instance::Stale { .. }
    ) {
        eprintln!("{}", located.not_running());
        return ExitCode::NotRunning;
    }
    if located.looked_in.is_some() {
        eprintln!("warden on port {port}: {}", located.state_dir_note());
    }
    let host = contact_host(t.host.as_deref(), instance, effective);
    let mut response = http_get(&host, port, "/health");
    if matches!(&response, Ok(r) if r.status == 404) {
        // A daemon without the health monitor: /status carries its health.
        response = http_get(&host, port, "/status");
    }
    let resp = match response {
        Ok(resp) => resp,
        Err(e) => {
            eprintln!("warden on port {port} does not answer: {e}");
            return ExitCode::NotAnswering;
        }
    };
    match resp.json() {
        Ok(body) if !args.json && body.get("checks").is_some() => {
            let token = effective.config.server.auth_token.as_deref();
            let report = http_get_as(token, &host, port, "/diagnostics")
                .ok()
                .and_then(|d| d.json().ok())
                .and_then(|d| serde_json::from_value(d["latest_report"].clone()).ok());
            print!(
                "{}",
                doctor::health_summary(&host, port, &body, report.as_ref())
            );
        }
        Ok(body) => println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_else(|_| resp.text())
        ),
        Err(_) => println!("{}", resp.text()),
    }
    match resp.status {
        200..=299 => ExitCode::Ok,
        503 => ExitCode::Unhealthy,
        _ => ExitCode::Failure,
    }
}

// ---------------------------------------------------------------------------
// logs

/// The log file of `effective`, or the message saying why there is none.
fn log_file_of(effective: &Effective) -> Result<PathBuf, String> {
    match logging::resolve_log_file(&effective.config.logging) {
        Ok(Some(path)) => Ok(path),
        Ok(None) => Err(
            "logging.file is null: warden logs to stderr only (under systemd: \
                         `journalctl -u warden`)"
                .to_string(),
        ),
        Err(e) => Err(e.to_string()),
    }
}

fn cmd_logs(args: &LogsArgs) -> ExitCode {
    use std::io::Write;
    let effective = match load_or_report(&request(None, args.port, &args.config)) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let path = match log_file_of(&effective) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("warden: {why}");
            return ExitCode::Failure;
        }
    };
    let (lines, mut offset) = match logging::tail_lines(&path, args.lines) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("warden: cannot read the log file {}: {e}", path.display());
            return ExitCode::Failure;
        }
    };
    let mut out = std::io::stdout().lock();
    if out.write_all(&lines).and_then(|()| out.flush()).is_err() {
        return ExitCode::Ok; // stdout closed (a pipe to head): nothing more to say
    }
    if !args.follow {
        return ExitCode::Ok;
    }
    loop {
        std::thread::sleep(LOG_FOLLOW_POLL);
        match logging::read_from(&path, offset) {
            Ok((bytes, next)) => {
                offset = next;
                if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                    return ExitCode::Ok;
                }
            }
            // Rotated away for a moment: try again at the next poll.
            Err(_) => offset = 0,
        }
    }
}

// ---------------------------------------------------------------------------
// doctor

fn cmd_doctor(args: &DoctorArgs) -> ExitCode {
    let t = &args.target;
    let req = request(None, t.port, &t.config);
    let (effective, config_error) = match settings::load(&req) {
        Ok(e) => (e, None),
        Err(e) => {
            // Diagnose the rest with the defaults and the flags.
            let fallback = ConfigRequest {
                config_file: None,
                ..req.clone()
            };
            match settings::load_with_home(&fallback, settings::home_dir().as_deref()) {
                Ok(fallback) => (fallback, Some(e.to_string())),
                Err(e2) => {
                    eprintln!("warden: cannot diagnose without a state directory: {e2}");
                    return ExitCode::Config;
                }
            }
        }
    };
    let facts = doctor::gather(
        &effective,
        config_error,
        t.host.as_deref(),
        &SysinfoProbe::new(),
        &|host: &str, port: u16, path: &str| {
            http_get_as(
                effective.config.server.auth_token.as_deref(),
                host,
                port,
                path,
            )
        },
        crate::daemon::os::clock::wall_now(),
    );
    let diagnosis = doctor::diagnose(&facts);
    let out = doctor::render(&diagnosis, Platform::current(), facts.log_file.as_deref());
    let findings = diagnosis.findings.len();
    match &args.output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &out) {
                eprintln!("warden: cannot write {}: {e}", path.display());
                return ExitCode::Failure;
            }
            println!(
                "{findings} finding(s); troubleshooting report written to {}",
                path.display()
            );
        }
        None => print!("{out}"),
    }
    if findings == 0 {
        ExitCode::Ok
    } else {
        ExitCode::Failure
    }
}

// ---------------------------------------------------------------------------
// config

fn cmd_config_check(file: &Path, profile: Option<Profile>) -> ExitCode {
    let text = match settings::read_config(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("warden: configuration error: {e}");
            return ExitCode::Config;
        }
    };
    match parse_config_with_profile(&text, file, profile) {
        Ok(cfg) => {
            let cluster = match &cfg.cluster.redis_url {
                Some(url) => format!(
                    ", cluster over {} with prefix {}",
                    crate::daemon::cluster::redact_url(url),
                    cfg.cluster.prefix
                ),
                None => String::new(),
            };
            println!(
                "{}: valid (port {}, host {}, profile {}{cluster})",
                file.display(),
                cfg.server.port,
                cfg.server.host,
                cfg.profile.map_or("none", Profile::as_str)
            );
            ExitCode::Ok
        }
        Err(e) => {
            eprintln!("warden: configuration error: {e}");
            ExitCode::Config
        }
    }
}

fn cmd_config_show(req: &ConfigRequest) -> ExitCode {
    match load_or_report(req) {
        Ok(effective) => {
            println!("{}", render_json(&effective.config));
            ExitCode::Ok
        }
        Err(code) => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn detached_child_gets_the_same_flags() {
        let cli = Cli::try_parse_from([
            "warden",
            "start",
            "--port",
            "9001",
            "--state-dir",
            "/tmp/x",
            "--profile",
            "production",
            "--detach",
        ])
        .unwrap();
        let Command::Start(args) = cli.command else {
            panic!("not start")
        };
        let child: Vec<String> = child_args(&args)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            child,
            [
                "start",
                "--port",
                "9001",
                "--state-dir",
                "/tmp/x",
                "--profile",
                "production",
                "--detached-child"
            ]
        );
    }

    #[test]
    fn exit_codes_are_distinct() {
        let codes = [
            ExitCode::Ok,
            ExitCode::Failure,
            ExitCode::Usage,
            ExitCode::NotRunning,
            ExitCode::NotAnswering,
            ExitCode::Unhealthy,
            ExitCode::DaemonConflict,
            ExitCode::PortConflict,
            ExitCode::EmergencyStop,
            ExitCode::PidFile,
            ExitCode::Config,
        ];
        let unique: std::collections::BTreeSet<i32> = codes.iter().map(|c| c.code()).collect();
        assert_eq!(unique.len(), codes.len());
        assert!(unique.iter().all(|c| (0..=125).contains(c)));
        // README's "Exit codes" table lists exactly these, one row each.
        let readme = include_str!("../../../README.md");
        let table = readme
            .split("### Exit codes")
            .nth(1)
            .expect("README has an exit-code table");
        let documented: std::collections::BTreeSet<i32> = table
            .lines()
            .skip_while(|l| !l.starts_with("| code"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| {
                l.trim_start_matches('|')
                    .split('|')
                    .next()?
                    .trim()
                    .parse()
                    .ok()
            })
            .collect();
        assert_eq!(documented, unique);
    }

    #[test]
    fn usage_errors_exit_with_the_usage_code() {
        assert_eq!(
            main_from(["warden", "start", "--port", "notaport"]),
            ExitCode::Usage
        );
        assert_eq!(main_from(["warden", "frobnicate"]), ExitCode::Usage);
    }
}
