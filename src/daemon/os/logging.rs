//! Logging for the daemon: tracing to stderr always (systemd's journal reads
//! it) and, when `logging.file` is set, to a file rotated by size.
//!
//! The level comes from `logging.level`; `WARDEN_DEBUG=1` or the seed's
//! `CLAUDE_MPM_DEBUG=1` forces debug ([`env_debug_requested`]). The level
//! applies to warden's own targets; other crates (hyper, socketioxide, ...)
//! log at most at INFO unless the level is TRACE, so debug mode stays readable.
//! `WARDEN_LOG` (else `RUST_LOG`) replaces all of that with an `EnvFilter`
//! directive list (`debug`, `warden=debug,hyper=warn`, ...). The level can be
//! changed while running ([`LevelControl`], used by the SIGHUP reload).
//!
//! `logging.format` picks text lines or JSON lines ([`JsonLines`]: the fields
//! `timestamp`, `level`, `target`, `message`, `fields`). Under systemd
//! (`JOURNAL_STREAM` set) text lines on stderr carry no timestamp: the journal
//! stamps each line itself.
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
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{LogFormat, LogLevel, LoggingConfig, expand_home};

/// Environment variables that force debug logging.
pub const DEBUG_ENV_VARS: [&str; 2] = ["WARDEN_DEBUG", "CLAUDE_MPM_DEBUG"];

/// The filter variable; overrides `logging.level` and the debug switch.
pub const FILTER_ENV_VAR: &str = "WARDEN_LOG";
/// Read when [`FILTER_ENV_VAR`] is unset (the Rust ecosystem's convention).
pub const FALLBACK_FILTER_ENV_VAR: &str = "RUST_LOG";
/// Set by systemd when stderr goes to the journal.
pub const JOURNAL_ENV_VAR: &str = "JOURNAL_STREAM";

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
    level: LevelControl,
}

/// Changes the running log level (cheap to clone). When the level comes
/// from `WARDEN_LOG`/`RUST_LOG`, the environment keeps the last word.
#[derive(Clone)]
pub struct LevelControl {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    env_filter: Option<EnvFilterSource>,
}

impl std::fmt::Debug for LevelControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LevelControl")
            .field("env_filter", &self.env_filter)
            .finish()
    }
}

/// What became of a level change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LevelChange {
    Applied,
    /// `WARDEN_LOG` or `RUST_LOG` (named) sets the filter; the level was not changed.
    OverriddenBy(&'static str),
    /// Logging is not installed in this process (tests).
    NotInstalled,
}

impl LevelControl {
    /// A control that changes nothing (logging not installed).
    pub fn none() -> LevelControl {
        LevelControl {
            handle: None,
            env_filter: None,
        }
    }

    /// Sets warden's level to `level` (raised to debug by `env_debug`).
    pub fn set(&self, level: LogLevel, env_debug: bool) -> LevelChange {
        if let Some(source) = &self.env_filter {
            return LevelChange::OverriddenBy(source.var);
        }
        match &self.handle {
            Some(handle) => match handle.reload(filter_for(effective_level(level, env_debug))) {
                Ok(()) => LevelChange::Applied,
                Err(_) => LevelChange::NotInstalled,
            },
            None => LevelChange::NotInstalled,
        }
    }
}

/// A filter taken from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvFilterSource {
    /// `WARDEN_LOG` or `RUST_LOG`.
    pub var: &'static str,
    pub directives: String,
}

/// `WARDEN_LOG` when set and not empty, else `RUST_LOG`.
pub fn env_filter_source() -> Option<EnvFilterSource> {
    [FILTER_ENV_VAR, FALLBACK_FILTER_ENV_VAR]
        .into_iter()
        .find_map(|var| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|directives| EnvFilterSource { var, directives })
        })
}

/// Whether stderr goes to systemd's journal.
pub fn under_journald() -> bool {
    std::env::var_os(JOURNAL_ENV_VAR).is_some_and(|v| !v.is_empty())
}

impl LoggingGuard {
    /// Changes the level while running.
    pub fn level_control(&self) -> LevelControl {
        self.level.clone()
    }

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
    #[error("{var}={directives:?} is not a valid log filter: {reason}")]
    BadFilter {
        var: &'static str,
        directives: String,
        reason: String,
    },
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

/// The filter: the environment's ([`env_filter_source`]) when set, else
/// [`filter_for`] the effective level. A bad `WARDEN_LOG` is an error; a bad
/// `RUST_LOG` (often set for other programs) keeps what parses.
fn initial_filter(
    level: LevelFilter,
    env: Option<&EnvFilterSource>,
) -> Result<EnvFilter, LoggingError> {
    match env {
        None => Ok(filter_for(level)),
        Some(source) if source.var == FILTER_ENV_VAR => EnvFilter::builder()
            .parse(&source.directives)
            .map_err(|e| LoggingError::BadFilter {
                var: source.var,
                directives: source.directives.clone(),
                reason: e.to_string(),
            }),
        Some(source) => Ok(EnvFilter::builder().parse_lossy(&source.directives)),
    }
}

/// One layer writing `writer` in `format`; `timestamps: false` leaves the
/// time out of text lines.
fn output_layer<S, W>(
    format: LogFormat,
    writer: W,
    ansi: bool,
    timestamps: bool,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    match (format, timestamps) {
        (LogFormat::Json, _) => Box::new(layer.with_ansi(false).event_format(JsonLines)),
        (LogFormat::Text, true) => Box::new(layer),
        (LogFormat::Text, false) => Box::new(layer.without_time()),
    }
}

/// Installs the global tracing subscriber: stderr always, the rotated file
/// when `cfg.file` is set. `env_debug` is normally [`env_debug_requested`];
/// `WARDEN_LOG`/`RUST_LOG` override both it and `cfg.level`.
/// Can succeed once per process; a second call returns
/// [`LoggingError::AlreadyInitialised`].
pub fn init(cfg: &LoggingConfig, env_debug: bool) -> Result<LoggingGuard, LoggingError> {
    let level = effective_level(cfg.level, env_debug);
    let env = env_filter_source();
    let filter = initial_filter(level, env.as_ref())?;
    let file = resolve_log_file(cfg)?;
    let (file_layer, file_writer) = match &file {
        Some(path) => {
            let (writer, guard) = rotating_writer(path, cfg.max_size_bytes(), cfg.backup_count)?;
            (
                Some(output_layer(cfg.format, writer, false, true)),
                Some(guard),
            )
        }
        None => (None, None),
    };
    let stderr_layer = output_layer(
        cfg.format,
        io::stderr,
        io::stderr().is_terminal(),
        !under_journald(),
    );
    let (filter, handle) = reload::Layer::new(filter);
    let mut layers = vec![stderr_layer];
    layers.extend(file_layer);
    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init()
        .map_err(|e| LoggingError::AlreadyInitialised(e.to_string()))?;
    match &env {
        Some(source) => tracing::debug!(
            filter = %source.directives,
            from = source.var,
            file = ?file,
            "logging initialised"
        ),
        None => tracing::debug!(%level, file = ?file, "logging initialised"),
    }
    Ok(LoggingGuard {
        file_writer,
        file,
        level: LevelControl {
            handle: Some(handle),
            env_filter: env,
        },
    })
}

/// JSON lines with stable field names: `timestamp` (RFC 3339, UTC),
/// `level` (`TRACE` ... `ERROR`), `target` (the module), `message`, and
/// `fields` (the event's other fields, an object, empty when none).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        let meta = event.metadata();
        let line = serde_json::json!({
            "timestamp": timestamp,
            "level": meta.level().as_str(),
            "target": meta.target(),
            "message": visitor.message,
            "fields": serde_json::Value::Object(visitor.fields),
        });
        writeln!(writer, "{line}")
    }
}

/// Collects an event's message and fields as JSON values.
#[derive(Default)]
struct JsonVisitor {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl JsonVisitor {
    fn put(&mut self, field: &tracing::field::Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.message = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
}

impl tracing::field::Visit for JsonVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.put(field, serde_json::Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field, serde_json::Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.put(field, value.into());
    }
}

/// The most `tail_lines` reads from the end of a file, whatever `n` is.
pub const TAIL_READ_LIMIT: u64 = 8 * 1024 * 1024;
/// Block size of the backwards read.
const TAIL_BLOCK: u64 = 64 * 1024;

/// The last `n` lines of `path` (bytes, each ending with its newline when it
/// has one) and the file's length. Reads backwards from the end in blocks,
/// at most [`TAIL_READ_LIMIT`] bytes: never the whole of a large file.
pub fn tail_lines(path: &Path, n: usize) -> io::Result<(Vec<u8>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if n == 0 {
        return Ok((Vec::new(), len));
    }
    let floor = len.saturating_sub(TAIL_READ_LIMIT);
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Newlines in buf, not counting a final one that ends the last line.
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let newlines = body.iter().filter(|b| **b == b'\n').count();
        if newlines >= n || start == floor {
            let skip = if newlines >= n {
                let mut seen = 0;
                body.iter()
                    .rposition(|b| {
                        if *b == b'\n' {
                            seen += 1;
                        }
                        seen == n
                    })
                    .map_or(0, |i| i + 1)
            } else {
                0
            };
            return Ok((buf.split_off(skip), len));
        }
        let from = start.saturating_sub(TAIL_BLOCK).max(floor);
        let mut block = vec![0u8; usize::try_from(start - from).unwrap_or(0)];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
        start = from;
    }
}

/// What was appended to `path` since `offset`, and the new offset. A file
/// shorter than `offset` was rotated: it is read from its start.
pub fn read_from(path: &Path, offset: u64) -> io::Result<(Vec<u8>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let from = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.take(TAIL_READ_LIMIT).read_to_end(&mut bytes)?;
    let next = from + bytes.len() as u64;
    Ok((bytes, next))
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
    fn tail_reads_the_last_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let text: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let (tail, len) = tail_lines(&path, 3).unwrap();
        assert_eq!(
            String::from_utf8(tail).unwrap(),
            "line 99997\nline 99998\nline 99999\n"
        );
        assert_eq!(len, text.len() as u64);
        std::fs::write(&path, "a\nb").unwrap();
        assert_eq!(tail_lines(&path, 5).unwrap().0, b"a\nb");
        assert_eq!(tail_lines(&path, 1).unwrap().0, b"b");
        assert_eq!(tail_lines(&path, 0).unwrap().0, b"");
        let (more, next) = read_from(&path, 2).unwrap();
        assert_eq!((more.as_slice(), next), (&b"b"[..], 3));
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
