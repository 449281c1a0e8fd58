//! The configuration reference: every key, its default, its range and its
//! effect, rendered as Markdown (`warden config reference`,
//! `docs/config-reference.md`).
//!
//! The defaults are not written here: they come from
//! [`WardenConfig::default`] when the reference is rendered. The keys and
//! ranges are written here and checked against the parser by
//! `tests/config_reference.rs`: every key of the default configuration has
//! an entry, every entry names a key the parser accepts, and each range's
//! ends are accepted while the values just beyond them are refused. So the
//! reference cannot drift from the code without a test going red.

use serde_json::Value;

use crate::config::{RENAMED_KEYS, WardenConfig};

/// The values a numeric key accepts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Range {
    /// Whole numbers from `.0` to `.1`, both included.
    Int(u64, u64),
    /// Seconds (fractions allowed) from `.0` to `.1`, both included.
    Secs(f64, f64),
    /// A number from `.0` to `.1`, both included.
    Float(f64, f64),
}

/// One key of the configuration file.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// Dotted path, e.g. `server.port`.
    pub key: &'static str,
    pub range: Option<Range>,
    /// For a key that is unset by default: a value it accepts (JSON), used
    /// by the tests to show the parser knows the key.
    pub example: Option<&'static str>,
    /// What it does.
    pub effect: &'static str,
    /// For a key the written configuration (`config show`) omits while it
    /// holds its default: that default (JSON). The tests check that setting
    /// it to this value changes nothing.
    pub unlisted_default: Option<&'static str>,
}

const fn key(key: &'static str, range: Option<Range>, effect: &'static str) -> Entry {
    Entry {
        key,
        range,
        example: None,
        effect,
        unlisted_default: None,
    }
}

const fn unset(
    key: &'static str,
    range: Option<Range>,
    example: &'static str,
    effect: &'static str,
) -> Entry {
    Entry {
        key,
        range,
        example: Some(example),
        effect,
        unlisted_default: None,
    }
}

const fn unlisted(key: &'static str, default: &'static str, effect: &'static str) -> Entry {
    Entry {
        key,
        range: None,
        example: None,
        effect,
        unlisted_default: Some(default),
    }
}

use Range::{Float, Int, Secs};

/// Every key, in the order of the file.
pub const ENTRIES: &[Entry] = &[
    unset(
        "profile",
        None,
        "\"production\"",
        "Preset values under the file's own: `development`, `production` or `high-traffic` (`--profile` replaces it).",
    ),
    key(
        "server.host",
        None,
        "Address to bind (a host name or IP address).",
    ),
    key(
        "server.port",
        Some(Int(1, 65_535)),
        "Port to bind; one daemon per port.",
    ),
    key(
        "server.enable_cors",
        None,
        "Send CORS headers to the allowed origins (`false`: none at all).",
    ),
    key(
        "server.cors_allowed_origins",
        None,
        "Browser origins allowed besides this machine's (`localhost`, `127.0.0.1`, `[::1]`, any port); `[\"*\"]` allows any. A request carrying another `Origin` gets 403.",
    ),
    key(
        "server.allowed_hosts",
        None,
        "Host names the HTTP door answers to besides IP addresses, `localhost`, `*.localhost`, `server.host` and the machine's name; `[\"*\"]` answers any (DNS rebinding protection).",
    ),
    key(
        "server.max_clients",
        Some(Int(1, 1_000_000)),
        "Connected Socket.IO clients at most; one more gets a connect error saying so.",
    ),
    key(
        "server.max_payload_bytes",
        Some(Int(1_024, 104_857_600)),
        "Largest accepted Socket.IO / Engine.IO payload and `POST /api/events` body (413 beyond).",
    ),
    key(
        "server.socket_buffer_packets",
        Some(Int(16, 1_048_576)),
        "Packets buffered per client before its deliveries wait (then stall).",
    ),
    key(
        "server.inbound_queue_events",
        Some(Int(16, 16_777_216)),
        "A sender's relay queue in events; an event that does not fit is refused to its sender, told.",
    ),
    key(
        "server.inbound_queue_bytes",
        Some(Int(65_536, 4_294_967_296)),
        "The same queue in bytes.",
    ),
    key(
        "server.slow_reader_timeout_seconds",
        Some(Secs(0.01, 60.0)),
        "How long the relay waits for a client whose buffer is full before its deliveries are dropped (counted as its own).",
    ),
    key(
        "server.event_history_size",
        Some(Int(1, 100_000)),
        "Relayed events kept for `get_history`.",
    ),
    key(
        "server.event_history_max_bytes",
        Some(Int(1_024, 4_294_967_296)),
        "The same history in bytes of the stamped events.",
    ),
    key(
        "server.history_answer_max_bytes",
        Some(Int(1_024, 1_073_741_824)),
        "Bytes of events one `get_history` answer holds at most.",
    ),
    key(
        "server.client_error_budget",
        Some(Int(1, 1_000_000)),
        "Bad packets one client may send within `client_error_window_seconds` before it is disconnected (its errors, never the hub's).",
    ),
    key(
        "server.client_error_window_seconds",
        Some(Secs(1.0, 86_400.0)),
        "The window of `client_error_budget`.",
    ),
    key(
        "server.state_dir",
        None,
        "Directory for the PID file and the default log (default `~/.claude-mpm`; `--state-dir`, `WARDEN_STATE_DIR`).",
    ),
    key(
        "server.header_read_timeout_seconds",
        Some(Secs(0.1, 3_600.0)),
        "A new connection must send a complete request head within this time, or it is closed.",
    ),
    key(
        "server.body_read_timeout_seconds",
        Some(Secs(0.1, 3_600.0)),
        "A request's body must arrive whole within this time of its head, or the request fails and its connection is closed.",
    ),
    key(
        "server.idle_timeout_seconds",
        Some(Secs(1.0, 86_400.0)),
        "A kept-alive HTTP connection with no request in flight is closed after this.",
    ),
    key(
        "server.handshake_timeout_seconds",
        Some(Secs(1.0, 3_600.0)),
        "An Engine.IO session must join the Socket.IO namespace within this time.",
    ),
    key(
        "server.max_connections_per_ip",
        Some(Int(0, 1_000_000)),
        "Open connections from one IP address (0: no cap); one more is answered 429.",
    ),
    key(
        "server.max_connections",
        Some(Int(1, 1_000_000)),
        "Open client connections in all (lowered to the descriptor limit less 128); one more is answered 429, never a probe.",
    ),
    key(
        "server.auth_token",
        None,
        "When set (16 to 1024 visible ASCII characters): required by `POST /api/events`, `/diagnostics`, `/metrics`, the status page's stream (`Authorization: Bearer`) and Socket.IO connects (auth `{\"token\"}`). `WARDEN_AUTH_TOKEN` in the environment sets it over the file's.",
    ),
    key("health_monitoring.enabled", None, "Run the health checks."),
    key(
        "health_monitoring.check_interval_seconds",
        Some(Secs(1.0, 3_600.0)),
        "Time between two rounds of checks.",
    ),
    key(
        "health_monitoring.history_size",
        Some(Int(1, 100_000)),
        "Check results kept.",
    ),
    key(
        "health_monitoring.aggregation_window_seconds",
        Some(Secs(1.0, 86_400.0)),
        "Window over which `/health` and `/diagnostics` aggregate results.",
    ),
    key(
        "health_monitoring.network_timeout_seconds",
        Some(Secs(0.01, 60.0)),
        "The network check's connect timeout.",
    ),
    key(
        "health_monitoring.thresholds.cpu_percent",
        Some(Float(f64::MIN_POSITIVE, 10_000.0)),
        "The process's CPU use (100 = one core busy) above which the process check warns; critical above 1.5 times it.",
    ),
    key(
        "health_monitoring.thresholds.memory_mb",
        Some(Int(1, 1_048_576)),
        "Resident memory in MB above which the process check warns; critical above 1.5 times it.",
    ),
    key(
        "health_monitoring.thresholds.file_descriptors",
        Some(Int(1, 10_000_000)),
        "The daemon's own descriptors (client connections excluded) above which the process check warns.",
    ),
    key(
        "health_monitoring.thresholds.error_rate",
        Some(Float(0.0, 1.0)),
        "The hub's own failures per relayed event above which the service check warns (clients' bad packets are theirs, never counted here).",
    ),
    key(
        "health_monitoring.thresholds.max_clients",
        Some(Int(1, 1_000_000)),
        "Connected clients above which the service check warns.",
    ),
    key(
        "recovery.enabled",
        None,
        "Act on health reports (the graded ladder behind the circuit breaker).",
    ),
    unset(
        "recovery.check_interval_seconds",
        Some(Secs(1.0, 3_600.0)),
        "60",
        "Least time between two health reports the recovery manager evaluates (unset: every report).",
    ),
    key(
        "recovery.max_recovery_attempts",
        Some(Int(1, 1_000)),
        "Failed recoveries in one episode before the manager gives up (emergency stop).",
    ),
    key(
        "recovery.recovery_timeout_seconds",
        Some(Secs(1.0, 3_600.0)),
        "Longest one recovery action may take; enforced.",
    ),
    unset(
        "recovery.min_recovery_interval_seconds",
        Some(Secs(0.0, 86_400.0)),
        "60",
        "Least time between two recoveries, as the seed's file puts it (also accepted in `recovery.strategy`).",
    ),
    key(
        "recovery.strategy.warning_threshold",
        None,
        "Warning results within the window before the ladder acts.",
    ),
    key(
        "recovery.strategy.critical_threshold",
        None,
        "Critical results within the window before the ladder acts.",
    ),
    key(
        "recovery.strategy.failure_window_seconds",
        None,
        "Window over which results are counted.",
    ),
    unset(
        "recovery.strategy.min_recovery_interval_seconds",
        None,
        "60",
        "Least time between two recoveries (see `recovery.min_recovery_interval_seconds`).",
    ),
    key(
        "recovery.strategy.cooldown_seconds",
        None,
        "Sustained healthy time after which the ladder steps one rung down.",
    ),
    key(
        "recovery.circuit_breaker.failure_threshold",
        Some(Int(1, 1_000)),
        "Failed recoveries that open the breaker (no action while open).",
    ),
    key(
        "recovery.circuit_breaker.timeout_seconds",
        Some(Secs(1.0, 86_400.0)),
        "How long the breaker stays open before a trial.",
    ),
    key(
        "recovery.circuit_breaker.success_threshold",
        Some(Int(1, 1_000)),
        "Successful trials that close it again.",
    ),
    key(
        "recovery.circuit_breaker.half_open_max_trials",
        Some(Int(1, 100)),
        "Trials allowed at once while half-open.",
    ),
    key(
        "recovery.circuit_breaker.trial_lease_seconds",
        Some(Secs(1.0, 3_600.0)),
        "A trial not reported within this time counts as failed.",
    ),
    key(
        "recovery.circuit_breaker.timeout_multiplier",
        Some(Float(1.0, 10.0)),
        "Each reopening multiplies the open time by this (1: constant).",
    ),
    key(
        "recovery.circuit_breaker.max_timeout_seconds",
        Some(Secs(1.0, 604_800.0)),
        "The open time never exceeds this.",
    ),
    key(
        "pid_validation.enhanced",
        None,
        "Check the recorded process's identity (start time, command line), not only its pid.",
    ),
    unlisted(
        "pid_validation.use_psutil",
        "true",
        "The seed's psutil switch, kept for its files: `false` judges by the lock alone (as `enhanced: false`). `config show` lists it only when `false`.",
    ),
    key(
        "pid_validation.lock_timeout_seconds",
        Some(Secs(0.0, 300.0)),
        "How long `start` waits for a busy PID-file lock.",
    ),
    key(
        "logging.level",
        None,
        "`TRACE`, `DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL` (`WARDEN_LOG`/`RUST_LOG` override).",
    ),
    key(
        "logging.file",
        None,
        "Log file (default `<state dir>/socketio-server.log`); rotated.",
    ),
    key(
        "logging.max_size_mb",
        Some(Int(1, 10_240)),
        "Size at which the log file rotates.",
    ),
    key(
        "logging.backup_count",
        Some(Int(1, 100)),
        "Rotated files kept.",
    ),
    key(
        "logging.format",
        None,
        "`text` or `json` (one JSON object per line).",
    ),
    key(
        "cluster.redis_url",
        None,
        "`redis://` URL: relay across nodes through Redis (unset: one node).",
    ),
    key(
        "cluster.node_id",
        None,
        "This node's name (default `<hostname>-<port>`); 1 to 64 letters, digits, `.`, `_`, `-`.",
    ),
    key(
        "cluster.prefix",
        None,
        "Prefix of every Redis key and channel; 1 to 64 letters, digits, `.`, `_`, `-`.",
    ),
    key(
        "connection_state_recovery.enabled",
        None,
        "Speak socket.io v4's connection state recovery: each session's `pid` in CONNECT, each event's offset as its last argument, missed events replayed on reconnect (off: a python-socketio handler with a fixed argument count fails on the extra argument). In cluster mode every node then delivers events from one shared Redis stream, so a session resumes on any node.",
    ),
    key(
        "connection_state_recovery.max_disconnection_duration_seconds",
        Some(Secs(1.0, 86_400.0)),
        "How long a session outlives its connection.",
    ),
    key(
        "connection_state_recovery.max_sessions",
        Some(Int(1, 1_000_000)),
        "Sessions kept at most; past it the one disconnected longest ago is forgotten (connected ones never are).",
    ),
    key(
        "alerts.webhooks",
        None,
        "`http://` URLs to POST each status change and recovery event to (JSON).",
    ),
    key(
        "alerts.command",
        None,
        "A command (program and arguments) run with each alert as JSON on stdin.",
    ),
    key(
        "alerts.timeout_seconds",
        Some(Secs(0.1, 60.0)),
        "Longest one delivery may take.",
    ),
    key(
        "alerts.max_attempts",
        Some(Int(1, 10)),
        "Tries per alert and destination.",
    ),
    key(
        "alerts.retry_backoff_seconds",
        Some(Secs(0.0, 60.0)),
        "Wait between two tries.",
    ),
    key(
        "alerts.queue_size",
        Some(Int(1, 10_000)),
        "Alerts waiting at most; beyond it the oldest is dropped, counted.",
    ),
    key(
        "alerts.max_per_minute",
        Some(Int(1, 10_000)),
        "Alerts sent per minute at most (a flapping status is summarised).",
    ),
    key(
        "alerts.failure_threshold",
        Some(Int(1, 1_000)),
        "Failed deliveries that open a destination's own circuit breaker.",
    ),
    key(
        "alerts.breaker_timeout_seconds",
        Some(Secs(1.0, 86_400.0)),
        "How long a destination's breaker stays open.",
    ),
];

/// The value at a dotted path of a JSON object.
pub fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, part| v.get(part))
}

fn number(n: f64) -> String {
    if n == f64::MIN_POSITIVE {
        "above 0".to_string()
    } else if n.fract() == 0.0 && n.abs() < 1e15 {
        let mut digits = format!("{}", n as i64);
        let mut i = digits.len();
        while i > 3 {
            i -= 3;
            digits.insert(i, ',');
        }
        digits
    } else {
        format!("{n}")
    }
}

fn range_text(range: Option<Range>) -> String {
    match range {
        None => String::new(),
        Some(Int(lo, hi)) => format!("{} to {}", number(lo as f64), number(hi as f64)),
        Some(Secs(lo, hi)) => format!("{} to {} s", number(lo), number(hi)),
        Some(Float(lo, hi)) if lo == f64::MIN_POSITIVE => {
            format!("above 0, at most {}", number(hi))
        }
        Some(Float(lo, hi)) => format!("{} to {}", number(lo), number(hi)),
    }
}

/// The reference as Markdown, with the defaults of `defaults` (the daemon
/// passes [`WardenConfig::default`] with no state directory resolved).
pub fn render(defaults: &WardenConfig) -> String {
    let json = serde_json::to_value(defaults).unwrap_or(Value::Null);
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated by `warden config reference` from the typed configuration \
         (`tests/config_reference.rs` checks it against the parser). Every key \
         is optional; durations are in seconds (fractions allowed), under names \
         ending in `_seconds` (the seed's names without the unit are accepted \
         too). An unknown key is refused with its path.\n",
    );
    let mut section = "";
    for entry in ENTRIES {
        let top = entry.key.split('.').next().unwrap_or(entry.key);
        if top != section {
            section = top;
            out.push_str(&format!(
                "\n## `{top}`\n\n| key | default | accepts | effect |\n|---|---|---|---|\n"
            ));
        }
        let default = match (lookup(&json, entry.key), entry.unlisted_default) {
            (None, Some(default)) => format!("`{default}`"),
            (Some(Value::Null) | None, _) => "unset".to_string(),
            (Some(v), _) => format!("`{v}`"),
        };
        let seed_name = RENAMED_KEYS
            .iter()
            .find(|(section, _, new)| entry.key == format!("{section}.{new}"))
            .map(|(_, old, _)| format!(" The seed's name `{old}` is accepted too."))
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{}` | {} | {} | {}{} |\n",
            entry.key,
            default,
            range_text(entry.range),
            entry.effect.replace('|', "\\|"),
            seed_name
        ));
    }
    out
}
