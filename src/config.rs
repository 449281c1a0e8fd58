//! warden's configuration: one typed tree, defaults in one place.
//!
//! The JSON file (default `~/.claude-mpm/socketio-config.json`) has the seed's
//! sections: `server`, `health_monitoring` (with `thresholds`), `recovery`
//! (with `circuit_breaker` and `strategy`), `pid_validation` and `logging`,
//! plus warden's own `cluster` (off by default),
//! plus an optional top-level `"profile": "development" | "production"`.
//! Durations are seconds (a number, fractions allowed) in JSON, under keys
//! that say so (`_seconds`; the seed's unit-less names, [`RENAMED_KEYS`],
//! are accepted too), and [`Duration`] in Rust. Every section rejects unknown keys, and every number
//! is range-checked while it is parsed, so an error names the file, the line,
//! the column and the key path (`server.port`).
//!
//! Precedence, lowest first: defaults ([`Default`] impls below) < profile
//! ([`WardenConfig::for_profile`], or the file's `profile` key) < the file
//! < command-line flags ([`ConfigOverrides`]).
//!
//! This module is pure: it never reads a file, the environment or a clock.
//! The daemon reads the file and passes its text and path to
//! [`parse_config`], and expands `~` with [`expand_home`] given a home
//! directory it looked up itself. [`RecoveryConfig::breaker_settings`] and
//! [`RecoveryConfig::strategy_settings`] turn the JSON shape into the
//! settings the state machines are built from.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Unexpected};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::breaker::BreakerSettings;
use crate::escalation::StrategySettings;

// ---------------------------------------------------------------------------
// The tree.

/// The whole configuration. `Default` is every section's default and no profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WardenConfig {
    /// The profile the file asks for; its values sit under the file's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    pub server: ServerConfig,
    pub health_monitoring: HealthMonitoringConfig,
    pub recovery: RecoveryConfig,
    pub pid_validation: PidValidationConfig,
    pub logging: LoggingConfig,
    pub cluster: ClusterConfig,
    pub alerts: AlertsConfig,
    pub connection_state_recovery: ConnectionStateRecoveryConfig,
    /// The seed's flat layout: its migration guide writes `host`, `port` and
    /// `cors_allowed_origins` at the top level. Read, folded into `server`
    /// when the file is parsed ([`parse_config`]), never written.
    #[serde(rename = "host", skip_serializing, deserialize_with = "de_seed_host")]
    pub seed_host: Option<String>,
    #[serde(rename = "port", skip_serializing, deserialize_with = "de_seed_port")]
    pub seed_port: Option<u16>,
    #[serde(rename = "cors_allowed_origins", skip_serializing)]
    pub seed_cors_allowed_origins: Option<Vec<String>>,
}

/// Where and how the hub listens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    #[serde(deserialize_with = "de_host")]
    pub host: String,
    #[serde(deserialize_with = "de_u16_in::<_, 1, 65535>")]
    pub port: u16,
    pub enable_cors: bool,
    /// Origins allowed besides the local ones (`http(s)://localhost`,
    /// `127.0.0.1` and `[::1]`, any port, always allowed); `"*"` allows any.
    /// A request from any other origin gets no CORS headers, and one that
    /// carries it (a page's Socket.IO connection, a POST) is refused (403).
    pub cors_allowed_origins: Vec<String>,
    /// Host names the HTTP door answers to (the request's `Host`) besides
    /// IP addresses, `localhost`, `*.localhost` and `server.host`; `"*"`
    /// answers any. A web page whose name an attacker points at this
    /// address (DNS rebinding) is refused, so it cannot read the hub.
    #[serde(deserialize_with = "de_allowed_hosts")]
    pub allowed_hosts: Vec<String>,
    /// Hard limit on connected Socket.IO clients.
    #[serde(deserialize_with = "de_u32_in::<_, 1, 1_000_000>")]
    pub max_clients: u32,
    /// Largest accepted Socket.IO / Engine.IO payload (python-socketio and
    /// socket.io use 1 MB; socketioxide's own default is 100 kB).
    #[serde(deserialize_with = "de_u64_in::<_, 1024, 104_857_600>")]
    pub max_payload_bytes: u64,
    /// Packets buffered per socket before an emit fails (socketioxide's
    /// default of 128 drops events under bursts).
    #[serde(deserialize_with = "de_u64_in::<_, 16, 1_048_576>")]
    pub socket_buffer_packets: u64,
    /// A sender's relay queue, in events and in bytes: an event that does
    /// not fit is refused to its sender (told, never silently lost).
    #[serde(deserialize_with = "de_u64_in::<_, 16, 16_777_216>")]
    pub inbound_queue_events: u64,
    #[serde(deserialize_with = "de_u64_in::<_, 65_536, 4_294_967_296>")]
    pub inbound_queue_bytes: u64,
    /// How long the relay waits for a reader whose buffer is full before
    /// dropping its deliveries (it is closed at the next heartbeat).
    #[serde(
        rename = "slow_reader_timeout_seconds",
        alias = "slow_reader_timeout",
        deserialize_with = "de_secs_in::<_, 10, 60_000>",
        serialize_with = "ser_secs"
    )]
    pub slow_reader_timeout: Duration,
    /// Relayed events kept for `get_history`.
    #[serde(deserialize_with = "de_u64_in::<_, 1, 100_000>")]
    pub event_history_size: u64,
    /// The same history, in bytes of the stamped events.
    #[serde(deserialize_with = "de_u64_in::<_, 1_024, 4_294_967_296>")]
    pub event_history_max_bytes: u64,
    /// Bytes of events one `get_history` answer holds at most.
    #[serde(deserialize_with = "de_u64_in::<_, 1_024, 1_073_741_824>")]
    pub history_answer_max_bytes: u64,
    /// Bad packets one client may send within `client_error_window` before
    /// it is disconnected (its errors, never the hub's).
    #[serde(deserialize_with = "de_u32_in::<_, 1, 1_000_000>")]
    pub client_error_budget: u32,
    #[serde(
        rename = "client_error_window_seconds",
        alias = "client_error_window",
        deserialize_with = "de_secs_in::<_, 1_000, 86_400_000>",
        serialize_with = "ser_secs"
    )]
    pub client_error_window: Duration,
    /// Directory for the PID file and the default log; `None` means
    /// `~/.claude-mpm`. May start with `~`, expanded by the daemon.
    pub state_dir: Option<PathBuf>,
    /// A new connection must send a complete request head within this time.
    #[serde(
        rename = "header_read_timeout_seconds",
        alias = "header_read_timeout",
        deserialize_with = "de_secs_in::<_, 100, 3_600_000>",
        serialize_with = "ser_secs"
    )]
    pub header_read_timeout: Duration,
    /// A request's body must arrive whole within this time of its head, or
    /// the request fails and its connection is closed.
    #[serde(
        rename = "body_read_timeout_seconds",
        alias = "body_read_timeout",
        deserialize_with = "de_secs_in::<_, 100, 3_600_000>",
        serialize_with = "ser_secs"
    )]
    pub body_read_timeout: Duration,
    /// A kept-alive HTTP connection with no request in flight is closed after this.
    #[serde(
        rename = "idle_timeout_seconds",
        alias = "idle_timeout",
        deserialize_with = "de_secs_in::<_, 1_000, 86_400_000>",
        serialize_with = "ser_secs"
    )]
    pub idle_timeout: Duration,
    /// An Engine.IO session must join the Socket.IO namespace within this time.
    #[serde(
        rename = "handshake_timeout_seconds",
        alias = "handshake_timeout",
        deserialize_with = "de_secs_in::<_, 1_000, 3_600_000>",
        serialize_with = "ser_secs"
    )]
    pub handshake_timeout: Duration,
    /// Open connections allowed from one IP address; 0 means no cap.
    #[serde(deserialize_with = "de_u32_in::<_, 0, 1_000_000>")]
    pub max_connections_per_ip: u32,
    /// Open client connections allowed in all (the daemon lowers it to its
    /// descriptor limit less a reserve of its own); beyond it a connection is
    /// answered 429 and closed.
    #[serde(deserialize_with = "de_u32_in::<_, 1, 1_000_000>")]
    pub max_connections: u32,
    /// Shared secret required by `POST /api/events`, `/diagnostics`,
    /// `/metrics` (`Authorization: Bearer`) and Socket.IO connects (auth
    /// payload `{"token": ..}`) when set; `null` requires nothing.
    #[serde(deserialize_with = "de_auth_token")]
    pub auth_token: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "localhost".to_string(),
            port: 8765,
            enable_cors: true,
            cors_allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            max_clients: 1000,
            max_payload_bytes: 1_000_000,
            socket_buffer_packets: 4096,
            inbound_queue_events: 65_536,
            inbound_queue_bytes: 16 << 20,
            slow_reader_timeout: Duration::from_secs(2),
            event_history_size: 1000,
            event_history_max_bytes: 16 << 20,
            history_answer_max_bytes: 4 << 20,
            client_error_budget: 20,
            client_error_window: Duration::from_secs(60),
            state_dir: None,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            max_connections_per_ip: 0,
            max_connections: 4096,
            auth_token: None,
        }
    }
}

/// The health monitor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthMonitoringConfig {
    pub enabled: bool,
    /// Time between two rounds of checks.
    #[serde(
        rename = "check_interval_seconds",
        alias = "check_interval",
        deserialize_with = "de_secs_in::<_, 1_000, 3_600_000>",
        serialize_with = "ser_secs"
    )]
    pub check_interval: Duration,
    /// Check results kept in the history.
    #[serde(deserialize_with = "de_u64_in::<_, 1, 100_000>")]
    pub history_size: u64,
    /// Window over which `/health` and `/diagnostics` aggregate results.
    #[serde(
        rename = "aggregation_window_seconds",
        alias = "aggregation_window",
        deserialize_with = "de_secs_in::<_, 1_000, 86_400_000>",
        serialize_with = "ser_secs"
    )]
    pub aggregation_window: Duration,
    /// How long the network checker waits for its own port to accept.
    #[serde(
        rename = "network_timeout_seconds",
        alias = "network_timeout",
        deserialize_with = "de_secs_in::<_, 10, 60_000>",
        serialize_with = "ser_secs"
    )]
    pub network_timeout: Duration,
    pub thresholds: HealthThresholds,
}

impl Default for HealthMonitoringConfig {
    fn default() -> Self {
        HealthMonitoringConfig {
            enabled: true,
            check_interval: Duration::from_secs(30),
            history_size: 100,
            aggregation_window: Duration::from_secs(300),
            network_timeout: Duration::from_secs(2),
            thresholds: HealthThresholds::default(),
        }
    }
}

/// Thresholds above which a metric is not healthy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthThresholds {
    /// CPU usage of the daemon in percent of one core, as psutil's
    /// per-process `cpu_percent`: 100 is one core busy, more than 100 is
    /// possible on several cores. Warning above this value, critical above
    /// 1.5 times it.
    #[serde(deserialize_with = "de_cpu_percent")]
    pub cpu_percent: f64,
    /// Resident memory of the daemon.
    #[serde(deserialize_with = "de_u64_in::<_, 1, 1_048_576>")]
    pub memory_mb: u64,
    /// Open file descriptors of the daemon.
    #[serde(deserialize_with = "de_u64_in::<_, 1, 10_000_000>")]
    pub file_descriptors: u64,
    /// Errors per processed event (the seed's `max_error_rate`).
    #[serde(deserialize_with = "de_fraction")]
    pub error_rate: f64,
    /// Connected clients above which the service checker warns.
    #[serde(deserialize_with = "de_u32_in::<_, 1, 1_000_000>")]
    pub max_clients: u32,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds {
            cpu_percent: 80.0,
            memory_mb: 500,
            file_descriptors: 1000,
            error_rate: 0.1,
            max_clients: 1000,
        }
    }
}

/// The recovery manager, its circuit breaker and its escalation strategy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    pub enabled: bool,
    /// The seed's RecoveryManager `check_interval`: the least time between two
    /// health reports the recovery manager evaluates (reports arrive every
    /// `health_monitoring.check_interval`; those in between are monitored but
    /// not acted on). Unset: every report is evaluated.
    #[serde(
        rename = "check_interval_seconds",
        alias = "check_interval",
        deserialize_with = "de_opt_secs_in::<_, 1_000, 3_600_000>",
        serialize_with = "ser_opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub check_interval: Option<Duration>,
    /// Failed recoveries allowed before the manager gives up.
    #[serde(deserialize_with = "de_u32_in::<_, 1, 1000>")]
    pub max_recovery_attempts: u32,
    /// Longest a single recovery action may take; enforced.
    #[serde(
        rename = "recovery_timeout_seconds",
        alias = "recovery_timeout",
        deserialize_with = "de_secs_in::<_, 1_000, 3_600_000>",
        serialize_with = "ser_secs"
    )]
    pub recovery_timeout: Duration,
    /// Minimum time between two recoveries, as the seed's config file puts it
    /// (it may also sit in `strategy`; see [`RecoveryConfig::min_recovery_interval`]).
    #[serde(
        rename = "min_recovery_interval_seconds",
        alias = "min_recovery_interval",
        deserialize_with = "de_opt_secs_in::<_, 0, 86_400_000>",
        serialize_with = "ser_opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_recovery_interval_top: Option<Duration>,
    pub strategy: StrategyConfig,
    pub circuit_breaker: CircuitBreakerConfig,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            enabled: true,
            check_interval: None,
            max_recovery_attempts: 5,
            recovery_timeout: Duration::from_secs(30),
            min_recovery_interval_top: None,
            strategy: StrategyConfig::default(),
            circuit_breaker: CircuitBreakerConfig::default(),
        }
    }
}

/// The default of `min_recovery_interval` when neither place sets it.
pub const DEFAULT_MIN_RECOVERY_INTERVAL: Duration = Duration::from_secs(60);

impl RecoveryConfig {
    /// The effective minimum time between recoveries: `strategy.min_recovery_interval`,
    /// else `recovery.min_recovery_interval`, else 60 s. (Setting both to
    /// different values is rejected by [`parse_config`].)
    pub fn min_recovery_interval(&self) -> Duration {
        self.strategy
            .min_recovery_interval
            .or(self.min_recovery_interval_top)
            .unwrap_or(DEFAULT_MIN_RECOVERY_INTERVAL)
    }
}

impl RecoveryConfig {
    /// The settings [`crate::escalation::GradedRecoveryStrategy`] is built from.
    pub fn strategy_settings(&self) -> StrategySettings {
        StrategySettings {
            warning_threshold: self.strategy.warning_threshold,
            critical_threshold: self.strategy.critical_threshold,
            failure_window: self.strategy.failure_window_seconds,
            min_recovery_interval: self.min_recovery_interval(),
            cooldown: self.strategy.cooldown_seconds,
        }
    }

    /// The settings [`crate::breaker::CircuitBreaker`] is built from.
    pub fn breaker_settings(&self) -> BreakerSettings {
        let cb = &self.circuit_breaker;
        BreakerSettings {
            failure_threshold: cb.failure_threshold,
            open_timeout: cb.timeout_seconds,
            success_threshold: cb.success_threshold,
            half_open_max_trials: cb.half_open_max_trials,
            trial_lease: cb.trial_lease_seconds,
            backoff_multiplier: cb.timeout_multiplier,
            max_open_timeout: cb.max_timeout_seconds,
        }
    }
}

/// `GradedRecoveryStrategy` parameters. In JSON either the seed's string
/// `"graded"` (all defaults) or an object with these keys.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StrategyConfig {
    /// Warning results within the window before the strategy acts.
    pub warning_threshold: u32,
    /// Critical results within the window before the strategy acts.
    pub critical_threshold: u32,
    /// Window over which results are counted.
    #[serde(serialize_with = "ser_secs")]
    pub failure_window_seconds: Duration,
    /// Minimum time between two recoveries (see [`RecoveryConfig::min_recovery_interval`]).
    #[serde(
        rename = "min_recovery_interval_seconds",
        serialize_with = "ser_opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_recovery_interval: Option<Duration>,
    /// Sustained healthy time after which the escalation ladder steps one rung down.
    #[serde(serialize_with = "ser_secs")]
    pub cooldown_seconds: Duration,
}

impl Default for StrategyConfig {
    fn default() -> Self {
        StrategyConfig {
            warning_threshold: 2,
            critical_threshold: 1,
            failure_window_seconds: Duration::from_secs(300),
            min_recovery_interval: None,
            cooldown_seconds: Duration::from_secs(300),
        }
    }
}

/// The object form of `strategy`, parsed with the same rules as every section.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StrategyObject {
    #[serde(deserialize_with = "de_u32_in::<_, 1, 1000>")]
    warning_threshold: u32,
    #[serde(deserialize_with = "de_u32_in::<_, 1, 1000>")]
    critical_threshold: u32,
    #[serde(deserialize_with = "de_secs_in::<_, 1_000, 86_400_000>")]
    failure_window_seconds: Duration,
    #[serde(
        rename = "min_recovery_interval_seconds",
        alias = "min_recovery_interval",
        deserialize_with = "de_opt_secs_in::<_, 0, 86_400_000>"
    )]
    min_recovery_interval: Option<Duration>,
    #[serde(deserialize_with = "de_secs_in::<_, 1_000, 86_400_000>")]
    cooldown_seconds: Duration,
}

impl Default for StrategyObject {
    fn default() -> Self {
        let d = StrategyConfig::default();
        StrategyObject {
            warning_threshold: d.warning_threshold,
            critical_threshold: d.critical_threshold,
            failure_window_seconds: d.failure_window_seconds,
            min_recovery_interval: d.min_recovery_interval,
            cooldown_seconds: d.cooldown_seconds,
        }
    }
}

impl<'de> Deserialize<'de> for StrategyConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = StrategyConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the string \"graded\" or a strategy object")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<StrategyConfig, E> {
                if s == "graded" {
                    Ok(StrategyConfig::default())
                } else {
                    Err(E::invalid_value(
                        Unexpected::Str(s),
                        &"\"graded\" (the only strategy) or a strategy object",
                    ))
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<StrategyConfig, A::Error> {
                let o = StrategyObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(StrategyConfig {
                    warning_threshold: o.warning_threshold,
                    critical_threshold: o.critical_threshold,
                    failure_window_seconds: o.failure_window_seconds,
                    min_recovery_interval: o.min_recovery_interval,
                    cooldown_seconds: o.cooldown_seconds,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `CircuitBreaker` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Failed recoveries (while closed) that open the circuit.
    #[serde(deserialize_with = "de_u32_in::<_, 1, 1000>")]
    pub failure_threshold: u32,
    /// Time the circuit stays open before it admits a trial.
    #[serde(
        deserialize_with = "de_secs_in::<_, 1_000, 86_400_000>",
        serialize_with = "ser_secs"
    )]
    pub timeout_seconds: Duration,
    /// Successful trials (while half-open) that close the circuit.
    #[serde(deserialize_with = "de_u32_in::<_, 1, 1000>")]
    pub success_threshold: u32,
    /// Trials admitted at once while half-open.
    #[serde(deserialize_with = "de_u32_in::<_, 1, 100>")]
    pub half_open_max_trials: u32,
    /// A trial that never reports back is released after this time.
    #[serde(
        deserialize_with = "de_secs_in::<_, 1_000, 3_600_000>",
        serialize_with = "ser_secs"
    )]
    pub trial_lease_seconds: Duration,
    /// Growth of the open time on each consecutive trip (1.0 = none).
    #[serde(deserialize_with = "de_multiplier")]
    pub timeout_multiplier: f64,
    /// Cap on the grown open time.
    #[serde(
        deserialize_with = "de_secs_in::<_, 1_000, 604_800_000>",
        serialize_with = "ser_secs"
    )]
    pub max_timeout_seconds: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_threshold: 5,
            timeout_seconds: Duration::from_secs(300),
            success_threshold: 3,
            half_open_max_trials: 1,
            trial_lease_seconds: Duration::from_secs(60),
            timeout_multiplier: 1.0,
            max_timeout_seconds: Duration::from_secs(3600),
        }
    }
}

/// PID file validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PidValidationConfig {
    /// `start` inspects the process a PID file names (start time, command
    /// line, the port it listens on) when the lock is free; `false`: the
    /// lock alone decides (a free lock is a stale file). `stop` and `status`
    /// always inspect before signalling.
    pub enhanced: bool,
    /// The seed's name for "use the process probe" (sysinfo in warden);
    /// `false` is lock-only validation too, as `enhanced: false`. Accepted
    /// for the seed's files; written (`config show`) only when `false`, since
    /// psutil is a Python library warden does not use.
    #[serde(skip_serializing_if = "is_true")]
    pub use_psutil: bool,
    /// How long `start` waits on a busy PID file lock whose file does not
    /// name a live holder yet (a winner still writing, an instance exiting)
    /// before refusing; 0 refuses at once.
    #[serde(
        rename = "lock_timeout_seconds",
        alias = "lock_timeout",
        deserialize_with = "de_secs_in::<_, 0, 300_000>",
        serialize_with = "ser_secs"
    )]
    pub lock_timeout: Duration,
}

impl Default for PidValidationConfig {
    fn default() -> Self {
        PidValidationConfig {
            enhanced: true,
            use_psutil: true,
            lock_timeout: Duration::from_secs(5),
        }
    }
}

/// Log output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub level: LogLevel,
    /// Log file; `null` logs to stderr only. May start with `~`.
    pub file: Option<PathBuf>,
    /// Size in MiB after which the file is rotated.
    #[serde(deserialize_with = "de_u64_in::<_, 1, 10_240>")]
    pub max_size_mb: u64,
    /// Rotated files kept (`.1` newest ... `.N` oldest).
    #[serde(deserialize_with = "de_u32_in::<_, 1, 100>")]
    pub backup_count: u32,
    /// `text` (human lines) or `json` (one JSON object a line).
    pub format: LogFormat,
}

/// How log lines are written (`logging.format`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `<time> <LEVEL> <target>: <message> <fields>`.
    #[default]
    Text,
    /// `{"timestamp", "level", "target", "message", "fields"}` per line.
    Json,
}

/// Cluster mode: several warden nodes sharing one hub through Redis. Off
/// while `redis_url` is `null` (the default).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]`; `null` turns cluster mode off.
    /// RESP3 is required (Redis 7 or later) and asked for by the daemon.
    #[serde(deserialize_with = "de_redis_url")]
    pub redis_url: Option<String>,
    /// This node's name in `/diagnostics` and in its peers' lists; `null`
    /// means `<hostname>-<port>`. Letters, digits, `.`, `_` and `-`, at most 64.
    #[serde(deserialize_with = "de_node_id")]
    pub node_id: Option<String>,
    /// Prefix of every Redis channel and key this hub uses; nodes with the
    /// same prefix on the same Redis form one hub.
    #[serde(deserialize_with = "de_prefix")]
    pub prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: None,
            node_id: None,
            prefix: Self::DEFAULT_PREFIX.to_string(),
        }
    }
}

impl ClusterConfig {
    /// The default `prefix`.
    pub const DEFAULT_PREFIX: &str = "warden";

    pub fn enabled(&self) -> bool {
        self.redis_url.is_some()
    }
}

/// Socket.IO connection state recovery (socket.io v4.6+'s protocol): a
/// client that reconnects within `max_disconnection_duration` gets every
/// event it missed, in order, and `socket.recovered === true`. Off by
/// default: each `claude_event` then carries its offset as an extra last
/// argument, which a handler with a fixed number of parameters (a
/// python-socketio `def handler(data)`) refuses with a TypeError.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionStateRecoveryConfig {
    pub enabled: bool,
    /// How long a session outlives its connection.
    #[serde(
        rename = "max_disconnection_duration_seconds",
        alias = "max_disconnection_duration",
        deserialize_with = "de_secs_in::<_, 1_000, 86_400_000>",
        serialize_with = "ser_secs"
    )]
    pub max_disconnection_duration: Duration,
    /// Sessions kept at most (connected ones are never dropped for it);
    /// past it the one disconnected longest ago is forgotten.
    #[serde(deserialize_with = "de_u32_in::<_, 1, 1_000_000>")]
    pub max_sessions: u32,
}

impl Default for ConnectionStateRecoveryConfig {
    fn default() -> Self {
        ConnectionStateRecoveryConfig {
            enabled: false,
            max_disconnection_duration: Duration::from_secs(120),
            max_sessions: 10_000,
        }
    }
}

/// Alerts for operators (the seed's health callbacks, for daemon users): on
/// each change of the overall health status and on each recovery event, a
/// JSON document is POSTed to every `webhooks` URL and/or written to the
/// standard input of `command`. Off while both are empty (the default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// `http://host[:port][/path]` URLs, at most 8. TLS is not built in: for
    /// an `https://` endpoint, run curl from `command`.
    #[serde(deserialize_with = "de_webhooks")]
    pub webhooks: Vec<WebhookUrl>,
    /// A program and its arguments (no shell), given each alert as one JSON
    /// line on its standard input; empty for none.
    #[serde(deserialize_with = "de_command")]
    pub command: Vec<String>,
    /// How long one delivery may take (connect, send, answer; or the
    /// command's run) before it counts as failed and the command is killed.
    #[serde(
        deserialize_with = "de_secs_in::<_, 100, 60_000>",
        serialize_with = "ser_secs"
    )]
    pub timeout_seconds: Duration,
    /// Attempts per alert and destination, the first included.
    #[serde(deserialize_with = "de_u32_in::<_, 1, 10>")]
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled before each further one.
    #[serde(
        deserialize_with = "de_secs_in::<_, 0, 60_000>",
        serialize_with = "ser_secs"
    )]
    pub retry_backoff_seconds: Duration,
    /// Alerts waiting for delivery; one that finds the queue full is dropped
    /// and counted.
    #[serde(deserialize_with = "de_u64_in::<_, 1, 10_000>")]
    pub queue_size: u64,
    /// At most this many alerts are queued per minute; the rest are counted,
    /// and the next alert says how many were suppressed (a flapping status
    /// never floods anyone).
    #[serde(deserialize_with = "de_u32_in::<_, 1, 10_000>")]
    pub max_per_minute: u32,
    /// Consecutive failed alerts after which a destination is skipped for
    /// `breaker_timeout_seconds` (its own circuit breaker).
    #[serde(deserialize_with = "de_u32_in::<_, 1, 1_000>")]
    pub failure_threshold: u32,
    #[serde(
        deserialize_with = "de_secs_in::<_, 1_000, 86_400_000>",
        serialize_with = "ser_secs"
    )]
    pub breaker_timeout_seconds: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhooks: Vec::new(),
            command: Vec::new(),
            timeout_seconds: Duration::from_secs(5),
            max_attempts: 3,
            retry_backoff_seconds: Duration::from_secs(1),
            queue_size: 64,
            max_per_minute: 20,
            failure_threshold: 3,
            breaker_timeout_seconds: Duration::from_secs(60),
        }
    }
}

impl AlertsConfig {
    /// Whether any destination is configured.
    pub fn enabled(&self) -> bool {
        !self.webhooks.is_empty() || !self.command.is_empty()
    }

    /// The circuit breaker of one destination.
    pub fn breaker_settings(&self) -> BreakerSettings {
        BreakerSettings {
            failure_threshold: self.failure_threshold,
            open_timeout: self.breaker_timeout_seconds,
            success_threshold: 1,
            ..BreakerSettings::default()
        }
    }
}

/// A webhook's address, parsed: `http://host[:port][/path]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct WebhookUrl {
    url: String,
    #[serde(skip)]
    host: String,
    #[serde(skip)]
    port: u16,
    #[serde(skip)]
    path: String,
}

impl WebhookUrl {
    /// Parses `http://host[:port][/path[?query]]`; `None` for anything else
    /// (another scheme, user info, spaces, an empty host, a bad port).
    pub fn parse(url: &str) -> Option<WebhookUrl> {
        let rest = url.strip_prefix("http://")?;
        if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']')?;
                let port = match after {
                    "" => 80,
                    p => p.strip_prefix(':')?.parse().ok()?,
                };
                (host.to_string(), port)
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), port.parse().ok()?),
                None => (authority.to_string(), 80),
            },
        };
        if host.is_empty() || port == 0 {
            return None;
        }
        Some(WebhookUrl {
            url: url.to_string(),
            host,
            port,
            path,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }
    pub fn host(&self) -> &str {
        &self.host
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The path and query to request, starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrWith {
            check: WebhookUrl::parse,
            expected: "an http://host[:port][/path] URL (https is not built in: use alerts.command with curl)",
        })
    }
}

fn de_webhooks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<WebhookUrl>, D::Error> {
    let urls = Vec::<WebhookUrl>::deserialize(d)?;
    if urls.len() > 8 {
        return Err(de::Error::invalid_length(urls.len(), &"at most 8 webhooks"));
    }
    Ok(urls)
}

fn de_command<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let argv = Vec::<String>::deserialize(d)?;
    if argv.len() > 64 {
        return Err(de::Error::invalid_length(
            argv.len(),
            &"at most 64 arguments",
        ));
    }
    if argv
        .first()
        .is_some_and(|program| program.trim().is_empty())
    {
        return Err(de::Error::invalid_value(
            Unexpected::Str(""),
            &"a program to run as the first element",
        ));
    }
    Ok(argv)
}

/// Whether `id` is a valid node id or prefix: 1 to 64 of `[A-Za-z0-9._-]`.
pub fn is_valid_node_name(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `url` is a Redis URL warden can use: `redis://` with a host, no
/// spaces, and no `protocol=` other than RESP3. (TLS, `rediss://`, is not
/// built in.)
pub fn is_valid_redis_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("redis://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let resp2 = url.split(['?', '&']).skip(1).any(|kv| {
        kv.to_ascii_lowercase().starts_with("protocol=")
            && !kv.eq_ignore_ascii_case("protocol=resp3")
    });
    !host.is_empty() && !url.contains(char::is_whitespace) && !resp2
}

/// The URL with any password replaced by `***`, for logs, errors and `/diagnostics`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_string()
            };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// The default log file, before `~` expansion.
pub const DEFAULT_LOG_FILE: &str = "~/.claude-mpm/socketio-server.log";
/// The default config file, before `~` expansion.
pub const DEFAULT_CONFIG_FILE: &str = "~/.claude-mpm/socketio-config.json";
/// The default state directory, before `~` expansion.
pub const DEFAULT_STATE_DIR: &str = "~/.claude-mpm";

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: LogLevel::Info,
            file: Some(PathBuf::from(DEFAULT_LOG_FILE)),
            max_size_mb: 50,
            backup_count: 5,
            format: LogFormat::Text,
        }
    }
}

impl LoggingConfig {
    /// `max_size_mb` in bytes (MiB).
    pub fn max_size_bytes(&self) -> u64 {
        self.max_size_mb.saturating_mul(1024 * 1024)
    }
}

/// Log levels, with the seed's (Python's) names. `CRITICAL` logs as error.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl LogLevel {
    pub const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
            LogLevel::Critical => "CRITICAL",
        }
    }

    /// Case-insensitive; accepts `WARN` for `WARNING`.
    pub fn parse(text: &str) -> Option<LogLevel> {
        Some(match text.to_ascii_uppercase().as_str() {
            "TRACE" => LogLevel::Trace,
            "DEBUG" => LogLevel::Debug,
            "INFO" => LogLevel::Info,
            "WARNING" | "WARN" => LogLevel::Warning,
            "ERROR" => LogLevel::Error,
            "CRITICAL" => LogLevel::Critical,
            _ => return None,
        })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for LogLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrWith {
            check: LogLevel::parse,
            expected: "one of TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL",
        })
    }
}

/// Preset environments (the seed's "Environment-Specific Configuration").
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Frequent checks, short history, low thresholds, quick breaker.
    Development,
    /// Infrequent checks, long history and window, tolerant breaker.
    Production,
    /// The seed's "High-Traffic Environments" tuning: checks every 60 s,
    /// CPU threshold 90 %, memory 1000 MB, breaker opens after 10 failures.
    #[serde(rename = "high-traffic", alias = "high_traffic")]
    HighTraffic,
}

impl Profile {
    /// The name the file and `--profile` use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Profile::Development => "development",
            Profile::Production => "production",
            Profile::HighTraffic => "high-traffic",
        }
    }
}

impl WardenConfig {
    /// The defaults with a profile's values on top.
    pub fn for_profile(profile: Profile) -> WardenConfig {
        let mut c = WardenConfig {
            profile: Some(profile),
            ..WardenConfig::default()
        };
        match profile {
            Profile::Development => {
                c.health_monitoring.check_interval = Duration::from_secs(10);
                c.health_monitoring.history_size = 50;
                c.health_monitoring.thresholds.cpu_percent = 50.0;
                c.health_monitoring.thresholds.memory_mb = 200;
                c.recovery.circuit_breaker.failure_threshold = 3;
            }
            Profile::Production => {
                c.health_monitoring.check_interval = Duration::from_secs(60);
                c.health_monitoring.history_size = 200;
                c.health_monitoring.aggregation_window = Duration::from_secs(600);
                c.recovery.circuit_breaker.failure_threshold = 10;
                c.recovery.circuit_breaker.timeout_seconds = Duration::from_secs(600);
            }
            Profile::HighTraffic => {
                c.health_monitoring.check_interval = Duration::from_secs(60);
                c.health_monitoring.thresholds.cpu_percent = 90.0;
                c.health_monitoring.thresholds.memory_mb = 1000;
                c.recovery.circuit_breaker.failure_threshold = 10;
            }
        }
        c
    }

    /// Applies command-line flags, which beat the file. Re-validates.
    pub fn apply(&mut self, o: &ConfigOverrides) -> Result<(), ConfigError> {
        if let Some(host) = &o.host {
            if host.trim().is_empty() || host.contains(char::is_whitespace) {
                return Err(ConfigError::Override {
                    flag: "--host",
                    message: format!("invalid host {host:?}"),
                });
            }
            self.server.host = host.clone();
        }
        if let Some(port) = o.port {
            if port == 0 {
                return Err(ConfigError::Override {
                    flag: "--port",
                    message: "the port must be between 1 and 65535".to_string(),
                });
            }
            self.server.port = port;
        }
        if let Some(dir) = &o.state_dir {
            self.server.state_dir = Some(dir.clone());
        }
        if let Some(level) = o.log_level {
            self.logging.level = level;
        }
        Ok(())
    }

    /// Cross-field rules that a single key cannot check. Returns the key path
    /// that should change and why.
    pub fn check_consistency(&self) -> Result<(), (String, String)> {
        let hm = &self.health_monitoring;
        if hm.aggregation_window < hm.check_interval {
            return Err((
                "health_monitoring.aggregation_window_seconds".into(),
                format!(
                    "must be at least health_monitoring.check_interval_seconds ({}), or the window holds no results",
                    secs_text(hm.check_interval)
                ),
            ));
        }
        if hm.thresholds.max_clients > self.server.max_clients {
            return Err((
                "health_monitoring.thresholds.max_clients".into(),
                format!(
                    "{} is above server.max_clients ({}), so it could never be reached",
                    hm.thresholds.max_clients, self.server.max_clients
                ),
            ));
        }
        let r = &self.recovery;
        if let (Some(top), Some(inner)) = (
            r.min_recovery_interval_top,
            r.strategy.min_recovery_interval,
        ) && top != inner
        {
            return Err((
                "recovery.strategy.min_recovery_interval_seconds".into(),
                format!(
                    "{} differs from recovery.min_recovery_interval_seconds ({}); set it in one place",
                    secs_text(inner),
                    secs_text(top)
                ),
            ));
        }
        let cb = &r.circuit_breaker;
        if cb.max_timeout_seconds < cb.timeout_seconds {
            return Err((
                "recovery.circuit_breaker.max_timeout_seconds".into(),
                format!(
                    "must be at least recovery.circuit_breaker.timeout_seconds ({})",
                    secs_text(cb.timeout_seconds)
                ),
            ));
        }
        // The machines' own rules, so that a config that parses always builds them.
        r.breaker_settings()
            .validate()
            .map_err(|e| ("recovery.circuit_breaker".to_string(), e.to_string()))?;
        r.strategy_settings()
            .validate()
            .map_err(|e| ("recovery.strategy".to_string(), e.to_string()))?;
        Ok(())
    }
}

fn secs_text(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Command-line flags that override the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigOverrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub state_dir: Option<PathBuf>,
    pub log_level: Option<LogLevel>,
}

/// Replaces a leading `~` (alone or followed by a separator) with `home`.
/// Other paths are returned unchanged.
pub fn expand_home(path: &Path, home: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) if rest.as_os_str().is_empty() => home.to_path_buf(),
        Ok(rest) => home.join(rest),
        Err(_) => path.to_path_buf(),
    }
}

// ---------------------------------------------------------------------------
// Parsing.

/// Why a configuration was rejected. Every variant names the file.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The text is not JSON.
    #[error("{}:{line}:{column}: invalid JSON: {message}", .file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// An unknown key, a value of the wrong type or out of range.
    #[error("{}:{line}:{column}: `{key}`: {message}", .file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        column: usize,
        /// Dotted key path, e.g. `recovery.circuit_breaker.failure_threshold`.
        key: String,
        message: String,
    },
    /// Each key is valid alone but two of them contradict each other.
    #[error("{}: `{key}`: {message}", .file.display())]
    Inconsistent {
        file: PathBuf,
        key: String,
        message: String,
    },
    /// A command-line flag has an invalid value.
    #[error("{flag}: {message}")]
    Override { flag: &'static str, message: String },
}

/// Parses a configuration file's text. `path` is only used in messages.
/// Missing keys take their defaults (or the file's profile's values).
pub fn parse_config(text: &str, path: &Path) -> Result<WardenConfig, ConfigError> {
    parse_config_with_profile(text, path, None)
}

/// As [`parse_config`], with a profile chosen outside the file (e.g. a CLI
/// flag) that replaces the file's `profile` key. The file's values still win
/// over the profile's.
pub fn parse_config_with_profile(
    text: &str,
    path: &Path,
    profile: Option<Profile>,
) -> Result<WardenConfig, ConfigError> {
    // The seed's unit-less names, checked first so that a key given under
    // both names is refused with both named (serde would only say "duplicate").
    let file_value = canonical_names(text, path)?;

    // Pass 1: the file over the defaults, with positions and key paths.
    let from_file = deserialize_located(text, path)?;

    // Pass 2: the file over the profile. The file was validated in pass 1 and
    // the profile is ours, so this can only fail if the two disagree on
    // types, which the round-trip test rules out; it is still reported.
    let profile = profile.or(from_file.profile);
    let mut cfg = match profile {
        None => from_file,
        Some(p) => {
            let mut merged = serde_json::to_value(WardenConfig::for_profile(p)).map_err(|e| {
                ConfigError::Inconsistent {
                    file: path.to_path_buf(),
                    key: "profile".into(),
                    message: e.to_string(),
                }
            })?;
            merge(&mut merged, file_value);
            let mut c: WardenConfig =
                serde_json::from_value(merged).map_err(|e| ConfigError::Inconsistent {
                    file: path.to_path_buf(),
                    key: "profile".into(),
                    message: e.to_string(),
                })?;
            c.profile = Some(p);
            c
        }
    };
    if cfg.profile.is_none() {
        cfg.profile = profile;
    }
    fold_seed_layout(&mut cfg, text, path)?;
    cfg.check_consistency()
        .map_err(|(key, message)| ConfigError::Inconsistent {
            file: path.to_path_buf(),
            key,
            message,
        })?;
    Ok(cfg)
}

/// The duration keys renamed with their unit, `(section, the seed's name,
/// the name now)`. The old names stay accepted (serde aliases on the fields);
/// this table renames them in the file's JSON before it is merged over a
/// profile, whose serialized form has the new names only.
pub const RENAMED_KEYS: &[(&str, &str, &str)] = &[
    (
        "server",
        "slow_reader_timeout",
        "slow_reader_timeout_seconds",
    ),
    (
        "server",
        "client_error_window",
        "client_error_window_seconds",
    ),
    (
        "server",
        "header_read_timeout",
        "header_read_timeout_seconds",
    ),
    ("server", "body_read_timeout", "body_read_timeout_seconds"),
    ("server", "idle_timeout", "idle_timeout_seconds"),
    ("server", "handshake_timeout", "handshake_timeout_seconds"),
    (
        "health_monitoring",
        "check_interval",
        "check_interval_seconds",
    ),
    (
        "health_monitoring",
        "aggregation_window",
        "aggregation_window_seconds",
    ),
    (
        "health_monitoring",
        "network_timeout",
        "network_timeout_seconds",
    ),
    ("recovery", "check_interval", "check_interval_seconds"),
    ("recovery", "recovery_timeout", "recovery_timeout_seconds"),
    (
        "recovery",
        "min_recovery_interval",
        "min_recovery_interval_seconds",
    ),
    (
        "recovery.strategy",
        "min_recovery_interval",
        "min_recovery_interval_seconds",
    ),
    ("pid_validation", "lock_timeout", "lock_timeout_seconds"),
    (
        "connection_state_recovery",
        "max_disconnection_duration",
        "max_disconnection_duration_seconds",
    ),
];

/// The file's JSON with every [`RENAMED_KEYS`] old name replaced by its new
/// one. A section that gives both names of one key is refused, naming both.
fn canonical_names(text: &str, path: &Path) -> Result<Value, ConfigError> {
    let mut file: Value = serde_json::from_str(text).map_err(|e| syntax(&e, path))?;
    for (section, old, new) in RENAMED_KEYS {
        let object = section
            .split('.')
            .try_fold(&mut file, |v, part| v.get_mut(part))
            .and_then(Value::as_object_mut);
        let Some(object) = object else { continue };
        let Some(value) = object.remove(*old) else {
            continue;
        };
        if object.contains_key(*new) {
            return Err(ConfigError::Inconsistent {
                file: path.to_path_buf(),
                key: format!("{section}.{new}"),
                message: format!(
                    "given twice, as `{section}.{old}` (the seed's name) and as \
                     `{section}.{new}`; keep one of them"
                ),
            });
        }
        object.insert((*new).to_string(), value);
    }
    Ok(file)
}

/// The defaults as pretty JSON, for `warden config`; parses back to
/// `WardenConfig::default()`.
pub fn render_default_json() -> String {
    render_json(&WardenConfig::default())
}

/// Any configuration as pretty JSON, in the file's format.
pub fn render_json(cfg: &WardenConfig) -> String {
    // Serializing plain structs of strings, numbers and bools into a String
    // cannot fail; the fallback keeps this function total anyway.
    serde_json::to_string_pretty(cfg)
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}

/// Moves the seed's top-level `host`, `port` and `cors_allowed_origins` into
/// `server`. The same key under `server` with another value is refused: the
/// file would say two things.
fn fold_seed_layout(cfg: &mut WardenConfig, text: &str, path: &Path) -> Result<(), ConfigError> {
    if cfg.seed_host.is_none() && cfg.seed_port.is_none() && cfg.seed_cors_allowed_origins.is_none()
    {
        return Ok(());
    }
    // The text parsed in pass 1, so this only fails on input pass 1 refused.
    let file: Value = serde_json::from_str(text).map_err(|e| syntax(&e, path))?;
    let agree = |key: &str, top: Value| -> Result<(), ConfigError> {
        match file.get("server").and_then(|s| s.get(key)) {
            Some(inner) if *inner != top => Err(ConfigError::Inconsistent {
                file: path.to_path_buf(),
                key: key.to_string(),
                message: format!(
                    "the top-level `{key}` (the seed's layout) is {top} but `server.{key}` is \
                     {inner}; keep one of them"
                ),
            }),
            _ => Ok(()),
        }
    };
    if let Some(host) = cfg.seed_host.take() {
        agree("host", Value::from(host.clone()))?;
        cfg.server.host = host;
    }
    if let Some(port) = cfg.seed_port.take() {
        agree("port", Value::from(port))?;
        cfg.server.port = port;
    }
    if let Some(origins) = cfg.seed_cors_allowed_origins.take() {
        agree("cors_allowed_origins", Value::from(origins.clone()))?;
        cfg.server.cors_allowed_origins = origins;
    }
    Ok(())
}

fn deserialize_located(text: &str, path: &Path) -> Result<WardenConfig, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let cfg: WardenConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        located(&inner, key, path)
    })?;
    de.end().map_err(|e| syntax(&e, path))?;
    Ok(cfg)
}

fn bare_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_string()
}

fn syntax(e: &serde_json::Error, path: &Path) -> ConfigError {
    ConfigError::Syntax {
        file: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: bare_message(e),
    }
}

fn located(e: &serde_json::Error, key: String, path: &Path) -> ConfigError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => syntax(e, path),
        Category::Data => {
            let message = bare_message(e);
            // An unknown key is reported by serde at its parent; name the key itself.
            // serde_path_to_error's path already ends with an unknown key's name.
            let key = if key == "." {
                "(top level)".to_string()
            } else {
                key
            };
            ConfigError::Invalid {
                file: path.to_path_buf(),
                line: e.line(),
                column: e.column(),
                key,
                message,
            }
        }
    }
}

/// Deep merge: objects merge key by key, anything else in `top` replaces `base`.
fn merge(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, top) => *slot = top,
    }
}

// ---------------------------------------------------------------------------
// Range-checked field parsers. Each check runs inside a serde Visitor, so
// serde_json stamps the error with the line and column of the bad value
// itself (an error raised after the value was returned would be stamped at
// the end of the enclosing object instead).

/// Accepts a JSON number in `min..=max` (as f64), optionally integers only.
struct NumberIn<'a> {
    min: f64,
    max: f64,
    integer: bool,
    expected: &'a str,
}

impl<'de> de::Visitor<'de> for NumberIn<'_> {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expected)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        let x = v as f64;
        if x >= self.min && x <= self.max {
            Ok(x)
        } else {
            Err(E::invalid_value(Unexpected::Unsigned(v), &self))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        let x = v as f64;
        if x >= self.min && x <= self.max {
            Ok(x)
        } else {
            Err(E::invalid_value(Unexpected::Signed(v), &self))
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        if self.integer && v.fract() != 0.0 {
            Err(E::invalid_type(Unexpected::Float(v), &self))
        } else if v.is_finite() && v >= self.min && v <= self.max {
            Ok(v)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

fn int_in<'de, D: Deserializer<'de>>(d: D, min: u64, max: u64) -> Result<u64, D::Error> {
    let expected = format!("an integer between {min} and {max}");
    let v = d.deserialize_any(NumberIn {
        min: min as f64,
        max: max as f64,
        integer: true,
        expected: &expected,
    })?;
    // The visitor accepted only whole numbers within min..=max, all below
    // 2^53, so the float holds the integer exactly.
    Ok(v as u64)
}

fn de_u64_in<'de, D: Deserializer<'de>, const MIN: u64, const MAX: u64>(
    d: D,
) -> Result<u64, D::Error> {
    int_in(d, MIN, MAX)
}

fn de_u32_in<'de, D: Deserializer<'de>, const MIN: u32, const MAX: u32>(
    d: D,
) -> Result<u32, D::Error> {
    let v = int_in(d, u64::from(MIN), u64::from(MAX))?;
    // In range MIN..=MAX, which are u32.
    u32::try_from(v).map_err(|_| de::Error::custom("value out of range"))
}

fn de_u16_in<'de, D: Deserializer<'de>, const MIN: u16, const MAX: u16>(
    d: D,
) -> Result<u16, D::Error> {
    let v = int_in(d, u64::from(MIN), u64::from(MAX))?;
    // In range MIN..=MAX, which are u16.
    u16::try_from(v).map_err(|_| de::Error::custom("value out of range"))
}

fn float_in<'de, D: Deserializer<'de>>(
    d: D,
    min: f64,
    max: f64,
    expected: &str,
) -> Result<f64, D::Error> {
    d.deserialize_any(NumberIn {
        min,
        max,
        integer: false,
        expected,
    })
}

fn de_cpu_percent<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    // The smallest positive float as the minimum refuses 0 itself.
    let v = float_in(
        d,
        f64::MIN_POSITIVE,
        10_000.0,
        "a percentage above 0 and at most 10000 (100 per core)",
    )?;
    Ok(v)
}

fn de_fraction<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    float_in(d, 0.0, 1.0, "a fraction between 0 and 1")
}

fn de_multiplier<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    float_in(d, 1.0, 10.0, "a multiplier between 1 and 10")
}

fn de_secs_in<'de, D: Deserializer<'de>, const MIN_MS: u64, const MAX_MS: u64>(
    d: D,
) -> Result<Duration, D::Error> {
    let (min, max) = (MIN_MS as f64 / 1000.0, MAX_MS as f64 / 1000.0);
    let expected = format!("a number of seconds between {min} and {max}");
    let secs = float_in(d, min, max, &expected)?;
    Ok(Duration::from_secs_f64(secs))
}

fn de_opt_secs_in<'de, D: Deserializer<'de>, const MIN_MS: u64, const MAX_MS: u64>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    struct V<const A: u64, const B: u64>;
    impl<'de, const A: u64, const B: u64> de::Visitor<'de> for V<A, B> {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number of seconds or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            de_secs_in::<D2, A, B>(d).map(Some)
        }
    }
    d.deserialize_option(V::<MIN_MS, MAX_MS>)
}

/// Accepts a string that `check` maps to a value.
struct StrWith<'a, T> {
    check: fn(&str) -> Option<T>,
    expected: &'a str,
}

impl<'de, T> de::Visitor<'de> for StrWith<'_, T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expected)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.check)(v).ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
    }
}

fn de_host<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(StrWith {
        check: |h| {
            (!h.is_empty() && h.len() <= 253 && !h.contains(char::is_whitespace))
                .then(|| h.to_string())
        },
        expected: "a host name or IP address without spaces",
    })
}

/// `"*"` or host names (letters, digits, `-`, `.`; at most 253 characters).
fn de_allowed_hosts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let hosts = Vec::<String>::deserialize(d)?;
    for host in &hosts {
        let is_name = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if host != "*" && !is_name {
            return Err(de::Error::custom(format!(
                "invalid host {host:?} in allowed_hosts: expected \"*\" or a host name \
                 (letters, digits, '-' and '.', without a port)"
            )));
        }
    }
    Ok(hosts)
}

fn de_seed_host<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    de_host(d).map(Some)
}

fn de_seed_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    de_u16_in::<_, 1, 65535>(d).map(Some)
}

/// Shortest and longest `server.auth_token`.
pub const AUTH_TOKEN_CHARS: (usize, usize) = (16, 1024);

fn de_auth_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_option(AuthTokenVisitor)
}

/// `null` or a token; a rejected token is never echoed.
struct AuthTokenVisitor;

impl<'de> de::Visitor<'de> for AuthTokenVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (min, max) = AUTH_TOKEN_CHARS;
        write!(
            f,
            "null or a token of {min} to {max} visible ASCII characters (no spaces)"
        )
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if is_valid_auth_token(v) {
            Ok(Some(v.to_string()))
        } else {
            let shown = format!("a string of {} characters", v.chars().count());
            Err(E::invalid_value(Unexpected::Other(&shown), &self))
        }
    }
}

/// 16 to 1024 visible ASCII characters: what fits an `Authorization` header
/// unchanged and is long enough not to be guessed.
pub fn is_valid_auth_token(token: &str) -> bool {
    let (min, max) = AUTH_TOKEN_CHARS;
    (min..=max).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

fn de_redis_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_option(RedisUrl)
}

/// `null` or a Redis URL; a rejected URL is echoed with its password masked.
struct RedisUrl;

impl<'de> de::Visitor<'de> for RedisUrl {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a redis://[user:password@]host[:port][/db] URL (RESP3), or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
        d.deserialize_str(self)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if is_valid_redis_url(v) {
            Ok(Some(v.to_string()))
        } else {
            Err(E::invalid_value(Unexpected::Str(&redact_url(v)), &self))
        }
    }
}

fn de_node_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_option(OptStrWith(StrWith {
        check: |id| is_valid_node_name(id).then(|| id.to_string()),
        expected: "1 to 64 letters, digits, '.', '_' or '-', or null",
    }))
}

/// `null`, or a string that a [`StrWith`] accepts (errors point at the value).
struct OptStrWith<'a, T>(StrWith<'a, T>);

impl<'de, T> de::Visitor<'de> for OptStrWith<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.expected)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
        d.deserialize_str(self.0).map(Some)
    }
}

fn de_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(StrWith {
        check: |p| is_valid_node_name(p).then(|| p.to_string()),
        expected: "1 to 64 letters, digits, '.', '_' or '-'",
    })
}

fn is_true(b: &bool) -> bool {
    *b
}

fn ser_secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    if d.subsec_nanos() == 0 {
        s.serialize_u64(d.as_secs())
    } else {
        s.serialize_f64(d.as_secs_f64())
    }
}

fn ser_opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_secs(d, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/etc/warden.json")
    }

    #[test]
    fn empty_object_is_the_defaults() {
        assert_eq!(parse_config("{}", p()).unwrap(), WardenConfig::default());
    }

    #[test]
    fn home_expansion_touches_only_a_leading_tilde() {
        let home = Path::new("/home/u");
        assert_eq!(
            expand_home(Path::new("~/x.log"), home),
            PathBuf::from("/home/u/x.log")
        );
        assert_eq!(expand_home(Path::new("~"), home), PathBuf::from("/home/u"));
        assert_eq!(
            expand_home(Path::new("/a/~/b"), home),
            PathBuf::from("/a/~/b")
        );
        assert_eq!(
            expand_home(Path::new("~other/x"), home),
            PathBuf::from("~other/x")
        );
    }

    #[test]
    fn fractional_seconds_are_durations() {
        let c = parse_config(r#"{"pid_validation": {"lock_timeout": 2.5}}"#, p()).unwrap();
        assert_eq!(c.pid_validation.lock_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn trailing_garbage_is_a_syntax_error() {
        let e = parse_config("{} x", p()).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { line: 1, .. }), "{e}");
    }

    #[test]
    fn min_recovery_interval_in_either_place() {
        let top = parse_config(r#"{"recovery": {"min_recovery_interval": 90}}"#, p()).unwrap();
        assert_eq!(
            top.recovery.min_recovery_interval(),
            Duration::from_secs(90)
        );
        let inner = parse_config(
            r#"{"recovery": {"strategy": {"min_recovery_interval": 45}}}"#,
            p(),
        )
        .unwrap();
        assert_eq!(
            inner.recovery.min_recovery_interval(),
            Duration::from_secs(45)
        );
        assert_eq!(
            WardenConfig::default().recovery.min_recovery_interval(),
            DEFAULT_MIN_RECOVERY_INTERVAL
        );
    }

    #[test]
    fn whole_floats_are_integers_and_fractions_are_not() {
        let c = parse_config(
            r#"{"health_monitoring": {"thresholds": {"memory_mb": 500.0}}}"#,
            p(),
        )
        .unwrap();
        assert_eq!(c.health_monitoring.thresholds.memory_mb, 500);
        assert!(parse_config(r#"{"server": {"port": 80.5}}"#, p()).is_err());
        assert!(parse_config(r#"{"server": {"port": -1}}"#, p()).is_err());
        assert!(
            parse_config(
                r#"{"health_monitoring": {"thresholds": {"cpu_percent": 0}}}"#,
                p()
            )
            .is_err()
        );
    }

    #[test]
    fn defaults_agree_with_the_machines_own_defaults() {
        let r = WardenConfig::default().recovery;
        assert_eq!(r.breaker_settings(), BreakerSettings::default());
        assert_eq!(r.strategy_settings(), StrategySettings::default());
    }

    #[test]
    fn file_values_reach_the_machine_settings() {
        let c = parse_config(
            r#"{"profile": "production", "recovery": {"min_recovery_interval": 90,
                "strategy": {"warning_threshold": 4, "cooldown_seconds": 30},
                "circuit_breaker": {"half_open_max_trials": 2, "timeout_multiplier": 2.0}}}"#,
            p(),
        )
        .unwrap();
        let s = c.recovery.strategy_settings();
        assert_eq!(s.warning_threshold, 4);
        assert_eq!(s.min_recovery_interval, Duration::from_secs(90));
        assert_eq!(s.cooldown, Duration::from_secs(30));
        let b = c.recovery.breaker_settings();
        assert_eq!(b.failure_threshold, 10, "from the production profile");
        assert_eq!(b.open_timeout, Duration::from_secs(600));
        assert_eq!(b.half_open_max_trials, 2);
        assert_eq!(b.backoff_multiplier, 2.0);
        assert!(crate::breaker::CircuitBreaker::new(b).is_ok());
        assert!(crate::escalation::GradedRecoveryStrategy::new(s).is_ok());
    }

    #[test]
    fn each_seeds_name_is_its_new_name() {
        for (section, old, new) in RENAMED_KEYS {
            let file = |name: &str| {
                let mut doc = serde_json::json!({ name: 31 });
                for part in section.rsplit('.') {
                    doc = serde_json::json!({ part: doc });
                }
                doc.to_string()
            };
            let by_old = parse_config(&file(old), p()).unwrap();
            let by_new = parse_config(&file(new), p()).unwrap();
            assert_eq!(by_old, by_new, "{section}.{old}");
            assert_ne!(by_new, WardenConfig::default(), "{section}.{new} is read");
        }
    }

    #[test]
    fn old_names_over_a_profile_are_renamed_before_the_merge() {
        let c = parse_config(
            r#"{"profile": "production",
                "server": {"idle_timeout": 90, "handshake_timeout_seconds": 4},
                "health_monitoring": {"check_interval": 45},
                "recovery": {"strategy": {"min_recovery_interval": 20}},
                "pid_validation": {"lock_timeout_seconds": 7}}"#,
            p(),
        )
        .unwrap();
        assert_eq!(c.server.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.server.handshake_timeout, Duration::from_secs(4));
        assert_eq!(c.health_monitoring.check_interval, Duration::from_secs(45));
        assert_eq!(
            c.health_monitoring.aggregation_window,
            Duration::from_secs(600),
            "from the production profile"
        );
        assert_eq!(c.recovery.min_recovery_interval(), Duration::from_secs(20));
        assert_eq!(c.pid_validation.lock_timeout, Duration::from_secs(7));
    }

    #[test]
    fn a_key_under_both_names_is_refused_naming_both() {
        for text in [
            r#"{"server": {"idle_timeout": 90, "idle_timeout_seconds": 90}}"#,
            r#"{"profile": "development", "server": {"idle_timeout_seconds": 9, "idle_timeout": 90}}"#,
        ] {
            let e = parse_config(text, p()).unwrap_err().to_string();
            assert!(
                e.contains("`server.idle_timeout`") && e.contains("`server.idle_timeout_seconds`"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_rendered_file_has_the_new_names_and_no_psutil_unless_false() {
        let all_set = r#"{"recovery": {"check_interval": 60, "min_recovery_interval": 9,
            "strategy": {"min_recovery_interval": 9}}}"#;
        let shown = render_json(&parse_config(all_set, p()).unwrap());
        for (_, old, new) in RENAMED_KEYS {
            assert!(!shown.contains(&format!("\"{old}\"")), "{old} in {shown}");
            assert!(
                shown.contains(&format!("\"{new}\"")),
                "{new} not in {shown}"
            );
        }
        assert!(!render_default_json().contains("use_psutil"));
        let off = parse_config(r#"{"pid_validation": {"use_psutil": false}}"#, p()).unwrap();
        assert!(render_json(&off).contains("\"use_psutil\": false"));
        assert_eq!(parse_config(&render_json(&off), p()).unwrap(), off);
    }

    #[test]
    fn log_levels_are_case_insensitive() {
        let c = parse_config(r#"{"logging": {"level": "warn"}}"#, p()).unwrap();
        assert_eq!(c.logging.level, LogLevel::Warning);
        assert_eq!(LoggingConfig::default().max_size_bytes(), 50 * 1024 * 1024);
    }
}
