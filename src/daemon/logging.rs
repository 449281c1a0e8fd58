//! Logging for the daemon: tracing to stderr always (systemd's journal reads
//! it) and, when `logging.file` is set, to a file rotated by size.
//!
//! The level comes from `logging.level`; `WARDEN_DEBUG=1` or the seed's
//! `CLAUDE_MPM_DEBUG=1` forces debug ([`env_debug_requested`]). The level
//! applies to warden's own targets; other crates (hyper, socketioxide, ...)
//! log at most at INFO unless the level is TRACE, so debug mode stays readable.
//!
//! The file is written by a background thread (`tracing_appender::non_blocking`
//! built with `lossy(false)`: when the channel is full the logging call waits,
//! a line is never dropped) into a `file_rotate::FileRotate`
//! (`ContentLimit::BytesSurpassed(max_size_mb MiB)`, `AppendCount(backup_count)`:
//! `socketio-server.log.1` is the newest backup). The [`LoggingGuard`]
//! returned by [`init`] flushes that thread when dropped: keep it alive for the
//! life of the process and drop it before `std::process::exit`.
//!
//! Not here: what to log. The messages the troubleshooting guide greps for are
//! in [`crate::errors::log_markers`].

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use thiserror::Error;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogLevel, LoggingConfig, expand_home};

/// Environment variables that force debug logging.
pub const DEBUG_ENV_VARS: [&str; 2] = ["WARDEN_DEBUG", "CLAUDE_MPM_DEBUG"];

/// Lines the non-blocking writer buffers before a logging call waits (the
/// writer is not lossy, so a full buffer slows the logger, never drops a
/// line). tracing-appender's default of 128,000 lines reserves about 4 MiB,
/// half of the daemon's idle memory budget; 8,192 lines still absorb any
/// burst the daemon logs.
const BUFFERED_LINES_LIMIT: usize = 8_192;

/// Keeps the log file writer alive. Dropping it flushes every buffered line
/// to the file and stops the writer thread; logging to the file after that is
/// lost, logging to stderr goes on.
#[must_use = "dropping the guard stops writing the log file"]
pub struct LoggingGuard {
    file_writer: Option<WorkerGuard>,
    file: Option<PathBuf>,
}

impl LoggingGuard {
    /// The log file being written (after `~` expansion), if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Whether a file writer is running.
    pub fn writes_file(&self) -> bool {
        self.file_writer.is_some()
    }
}

impl std::fmt::Debug for LoggingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggingGuard")
            .field("file", &self.file)
            .finish()
    }
}

#[derive(Debug, Error)]
pub enum LoggingError {
    #[error("cannot expand `~` in the log file path {}: HOME is not set", .0.display())]
    NoHome(PathBuf),
    #[error("the log file path {} does not name a file", .0.display())]
    NotAFile(PathBuf),
    #[error("cannot create the log directory {}: {source}", .path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot open the log file {}: {source}", .path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "refusing to write the log file {}: it is a symbolic link, and warden never follows \
         links there. Remove the link (`rm {}`) or set logging.file to a real file.",
        .0.display(), .0.display()
    )]
    Symlink(PathBuf),
    #[error(
        "refusing to write the log file {}: it is not a regular file. Move it away or set \
         logging.file to a regular file.",
        .0.display()
    )]
    NotRegular(PathBuf),
    #[error("the log file size limit {bytes} bytes does not fit in memory addressing")]
    SizeTooLarge { bytes: u64 },
    #[error("logging is already initialised in this process: {0}")]
    AlreadyInitialised(String),
}

/// Whether `WARDEN_DEBUG` or `CLAUDE_MPM_DEBUG` asks for debug logging
/// (any value but empty, `0`, `false`, `no`, `off`).
pub fn env_debug_requested() -> bool {
    DEBUG_ENV_VARS.iter().any(|name| {
        std::env::var(name).is_ok_and(|v| {
            let v = v.trim().to_ascii_lowercase();
            !matches!(v.as_str(), "" | "0" | "false" | "no" | "off")
        })
    })
}

/// The effective level: the configured one, at least DEBUG when `env_debug`.
pub fn effective_level(level: LogLevel, env_debug: bool) -> LevelFilter {
    let configured = match level {
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warning => LevelFilter::WARN,
        LogLevel::Error | LogLevel::Critical => LevelFilter::ERROR,
    };
    if env_debug {
        configured.max(LevelFilter::DEBUG)
    } else {
        configured
    }
}

/// The filter directives: warden at `level`, other crates at most INFO
/// unless `level` is TRACE.
fn filter_for(level: LevelFilter) -> EnvFilter {
    let deps = if level == LevelFilter::TRACE {
        LevelFilter::TRACE
    } else {
        level.min(LevelFilter::INFO)
    };
    EnvFilter::builder().parse_lossy(format!("{deps},warden={level}"))
}

/// Expands `~` in the configured log file with `$HOME`.
pub fn resolve_log_file(cfg: &LoggingConfig) -> Result<Option<PathBuf>, LoggingError> {
    let Some(file) = &cfg.file else {
        return Ok(None);
    };
    if file.starts_with("~") {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| LoggingError::NoHome(file.clone()))?;
        Ok(Some(expand_home(file, Path::new(&home))))
    } else {
        Ok(Some(file.clone()))
    }
}

/// A writer that appends to `path`, rotating it once it passes
/// `max_size_bytes` and keeping `backup_count` backups, behind a non-blocking
/// lossless channel. The directory is created (0700 on Unix) and the file
/// opened (0600) up front so that a bad path is an error here rather than
/// lines silently lost later.
pub fn rotating_writer(
    path: &Path,
    max_size_bytes: u64,
    backup_count: u32,
) -> Result<(NonBlocking, WorkerGuard), LoggingError> {
    if path.file_name().is_none() {
        return Err(LoggingError::NotAFile(path.to_path_buf()));
    }
    let limit = usize::try_from(max_size_bytes.max(1)).map_err(|_| LoggingError::SizeTooLarge {
        bytes: max_size_bytes,
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir)?;
    let options = open_options();
    // The first open is also the check: never through a link (O_NOFOLLOW),
    // never blocking on a FIFO (O_NONBLOCK), and only a regular file.
    let mut first = open_options();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        first.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
    }
    let file = first.open(path).map_err(|source| {
        #[cfg(unix)]
        if source.raw_os_error() == Some(libc::ELOOP) {
            return LoggingError::Symlink(path.to_path_buf());
        }
        LoggingError::Open {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let is_file = file
        .metadata()
        .map_err(|source| LoggingError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .is_file();
    if !is_file {
        return Err(LoggingError::NotRegular(path.to_path_buf()));
    }
    // file-rotate opens the file again with `options`, at start and after
    // each rotation (which renames, never follows, the old files):
    // O_NOFOLLOW is in them, so a link planted after a rotation is refused
    // too (its lines are lost, none reach the link's target).
    let rotate = FileRotate::new(
        path,
        AppendCount::new(backup_count as usize),
        ContentLimit::BytesSurpassed(limit),
        Compression::None,
        Some(options),
    );
    Ok(NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(BUFFERED_LINES_LIMIT)
        .thread_name("warden-log-writer")
        .finish(rotate))
}

fn open_options() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    // file-rotate requires read + create + append.
    o.read(true).create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    o
}

fn create_private_dir(dir: &Path) -> Result<(), LoggingError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|source| LoggingError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Installs the global tracing subscriber: stderr always, the rotated file
/// when `cfg.file` is set. `env_debug` is normally [`env_debug_requested`].
/// Can succeed once per process; a second call returns
/// [`LoggingError::AlreadyInitialised`].
pub fn init(cfg: &LoggingConfig, env_debug: bool) -> Result<LoggingGuard, LoggingError> {
    let level = effective_level(cfg.level, env_debug);
    let file = resolve_log_file(cfg)?;
    let (file_layer, file_writer) = match &file {
        Some(path) => {
            let (writer, guard) = rotating_writer(path, cfg.max_size_bytes(), cfg.backup_count)?;
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(writer);
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_ansi(io::stderr().is_terminal())
        .with_writer(io::stderr);
    tracing_subscriber::registry()
        .with(filter_for(level))
        .with(stderr_layer)
        .with(file_layer)
        .try_init()
        .map_err(|e| LoggingError::AlreadyInitialised(e.to_string()))?;
    tracing::debug!(%level, file = ?file, "logging initialised");
    Ok(LoggingGuard { file_writer, file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_switch_only_raises_the_level() {
        assert_eq!(effective_level(LogLevel::Info, false), LevelFilter::INFO);
        assert_eq!(effective_level(LogLevel::Info, true), LevelFilter::DEBUG);
        assert_eq!(effective_level(LogLevel::Error, true), LevelFilter::DEBUG);
        assert_eq!(effective_level(LogLevel::Trace, true), LevelFilter::TRACE);
        assert_eq!(
            effective_level(LogLevel::Critical, false),
            LevelFilter::ERROR
        );
        assert_eq!(effective_level(LogLevel::Warning, false), LevelFilter::WARN);
    }

    #[test]
    fn dependencies_are_capped_at_info_unless_tracing() {
        assert_eq!(
            filter_for(LevelFilter::DEBUG).to_string(),
            "warden=debug,info"
        );
        assert_eq!(
            filter_for(LevelFilter::WARN).to_string(),
            "warden=warn,warn"
        );
        assert_eq!(
            filter_for(LevelFilter::TRACE).to_string(),
            "warden=trace,trace"
        );
    }

    #[test]
    fn no_file_means_stderr_only() {
        let cfg = LoggingConfig {
            file: None,
            ..LoggingConfig::default()
        };
        assert_eq!(resolve_log_file(&cfg).unwrap(), None);
        let abs = LoggingConfig {
            file: Some(PathBuf::from("/var/log/warden.log")),
            ..LoggingConfig::default()
        };
        assert_eq!(
            resolve_log_file(&abs).unwrap(),
            Some(PathBuf::from("/var/log/warden.log"))
        );
    }
}
