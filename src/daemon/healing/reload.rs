//! `SIGHUP` (and `warden reload`, which sends it): re-read the configuration
//! the way `start` read it, and apply what can change while running.
//!
//! [`Reloader::reload`] loads the file again through `settings::load` with
//! the original invocation's request (its `--config`, `--state-dir`,
//! `--profile`, `--host`, `--port` stay on top of the file). A file that does
//! not load or validate is refused and the running configuration kept. A
//! good one is compared key by key with the running one ([`changed_keys`]):
//! the keys [`is_live`] accepts are applied at once through [`LiveSettings`]
//! (the checkers' thresholds, the monitor's interval and window) and the
//! logging [`LevelControl`]; every other changed key is named in the log as
//! needing a restart, and keeps its running value until then.
//!
//! Not here: catching the signal (`run`), the checks themselves (`checkers`,
//! `monitor`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde_json::{Value, json};

use crate::config::WardenConfig;
use crate::daemon::healing::checkers::{ResourceThresholds, ServiceThresholds};
use crate::daemon::healing::monitor::HealthMonitor;
use crate::daemon::os::logging::{LevelChange, LevelControl};
use crate::daemon::os::settings::{self, ConfigRequest};

/// The keys a reload applies while running (a trailing `.` is a prefix).
pub const LIVE_KEYS: [&str; 4] = [
    "health_monitoring.thresholds.",
    "health_monitoring.check_interval_seconds",
    "health_monitoring.aggregation_window_seconds",
    "logging.level",
];

/// Whether a changed `key` takes effect without a restart.
pub fn is_live(key: &str) -> bool {
    LIVE_KEYS.iter().any(|live| match live.strip_suffix('.') {
        Some(prefix) => key.starts_with(live) || key == prefix,
        None => key == *live,
    })
}

/// The dotted keys whose values differ between `old` and `new`, in the
/// configuration's order.
pub fn changed_keys(old: &WardenConfig, new: &WardenConfig) -> Vec<String> {
    let old = serde_json::to_value(old).unwrap_or(Value::Null);
    let new = serde_json::to_value(new).unwrap_or(Value::Null);
    let mut out = Vec::new();
    diff("", &old, &new, &mut out);
    out
}

fn diff(prefix: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in b {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                diff(&path, a.get(key).unwrap_or(&Value::Null), value, out);
            }
            for key in a.keys().filter(|k| !b.contains_key(*k)) {
                out.push(format!("{prefix}.{key}"));
            }
        }
        (a, b) if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// The values the running checkers and monitor read at each cycle; a
/// reload writes them. Cheap to clone.
#[derive(Clone)]
pub struct LiveSettings {
    pub resource: Arc<RwLock<ResourceThresholds>>,
    pub service: Arc<RwLock<ServiceThresholds>>,
    pub monitor: HealthMonitor,
    /// The configuration in force (what `/diagnostics` shows).
    current: Arc<RwLock<Arc<WardenConfig>>>,
    reloads: Arc<AtomicU64>,
}

impl LiveSettings {
    pub fn new(
        cfg: &WardenConfig,
        resource: Arc<RwLock<ResourceThresholds>>,
        service: Arc<RwLock<ServiceThresholds>>,
        monitor: HealthMonitor,
    ) -> LiveSettings {
        LiveSettings {
            resource,
            service,
            monitor,
            current: Arc::new(RwLock::new(Arc::new(cfg.clone()))),
            reloads: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The configuration in force: the one started with, with the live keys
    /// of every applied reload.
    pub fn current(&self) -> Arc<WardenConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reloads applied so far.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Applies the live keys of `new` (thresholds, interval, window) and
    /// records the configuration in force: `new`'s live keys on the running
    /// one's other keys.
    pub fn apply(&self, new: &WardenConfig) {
        let hm = &new.health_monitoring;
        let t = &hm.thresholds;
        *self
            .resource
            .write()
            .unwrap_or_else(PoisonError::into_inner) = ResourceThresholds {
            cpu_percent: t.cpu_percent,
            memory_mb: t.memory_mb as f64,
            file_descriptors: t.file_descriptors as f64,
        };
        *self.service.write().unwrap_or_else(PoisonError::into_inner) = ServiceThresholds {
            max_clients: f64::from(t.max_clients),
            max_error_rate: t.error_rate,
        };
        self.monitor
            .set_timing(hm.check_interval, hm.aggregation_window);
        let mut in_force = (*self.current()).clone();
        in_force.health_monitoring.thresholds = t.clone();
        in_force.health_monitoring.check_interval = hm.check_interval;
        in_force.health_monitoring.aggregation_window = hm.aggregation_window;
        in_force.logging.level = new.logging.level;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(in_force);
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// `/diagnostics`' `config` section: what the running checks use.
    pub fn to_json(&self) -> Value {
        let cfg = self.current();
        let hm = &cfg.health_monitoring;
        json!({
            "reloads": self.reloads(),
            "thresholds": hm.thresholds,
            "check_interval_seconds": hm.check_interval.as_secs_f64(),
            "aggregation_window_seconds": hm.aggregation_window.as_secs_f64(),
            "log_level": cfg.logging.level,
            "log_file": cfg.logging.file,
        })
    }
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file did not load; nothing changed.
    Refused { error: String },
    /// `applied` took effect; `need_restart` changed in the file but keep
    /// their running values until a restart.
    Reloaded {
        file: Option<PathBuf>,
        applied: Vec<String>,
        need_restart: Vec<String>,
        /// Set when `logging.level` changed but the environment's filter rules.
        level_note: Option<String>,
    },
}

impl ReloadOutcome {
    /// The one log line that says what happened.
    pub fn describe(&self) -> String {
        match self {
            ReloadOutcome::Refused { error } => {
                format!("config reload refused, the running configuration is kept: {error}")
            }
            ReloadOutcome::Reloaded {
                file,
                applied,
                need_restart,
                level_note,
            } => {
                let from = file.as_ref().map_or_else(
                    || "defaults (no config file)".to_string(),
                    |f| f.display().to_string(),
                );
                if applied.is_empty() && need_restart.is_empty() {
                    return format!("config reloaded from {from}: nothing changed");
                }
                let list = |keys: &[String]| {
                    if keys.is_empty() {
                        "none".to_string()
                    } else {
                        keys.join(", ")
                    }
                };
                let mut line = format!(
                    "config reloaded from {from}: applied {}; needs a restart to take effect: {}",
                    list(applied),
                    list(need_restart)
                );
                if let Some(note) = level_note {
                    line.push_str(&format!(" ({note})"));
                }
                line
            }
        }
    }
}

/// Re-reads the configuration on request and applies it.
pub struct Reloader {
    request: ConfigRequest,
    /// What the file said at start or at the last good reload (the baseline
    /// the next reload is compared with).
    last_loaded: WardenConfig,
    live: LiveSettings,
    level: LevelControl,
    env_debug: bool,
}

impl Reloader {
    /// `started_with` is the configuration the daemon started with.
    pub fn new(
        request: ConfigRequest,
        started_with: &WardenConfig,
        live: LiveSettings,
        level: LevelControl,
        env_debug: bool,
    ) -> Reloader {
        Reloader {
            request,
            last_loaded: started_with.clone(),
            live,
            level,
            env_debug,
        }
    }

    /// Loads the file again and applies what can change live.
    pub fn reload(&mut self) -> ReloadOutcome {
        let effective = match settings::load(&self.request) {
            Ok(e) => e,
            Err(e) => {
                return ReloadOutcome::Refused {
                    error: e.to_string(),
                };
            }
        };
        let new = effective.config;
        let changed = changed_keys(&self.last_loaded, &new);
        let (applied, need_restart): (Vec<String>, Vec<String>) =
            changed.into_iter().partition(|k| is_live(k));
        let mut level_note = None;
        if applied.iter().any(|k| k == "logging.level") {
            match self.level.set(new.logging.level, self.env_debug) {
                LevelChange::Applied | LevelChange::NotInstalled => {}
                LevelChange::OverriddenBy(var) => {
                    level_note = Some(format!("{var} is set and keeps the log filter"));
                }
            }
        }
        if !applied.is_empty() {
            self.live.apply(&new);
        }
        self.last_loaded = new;
        ReloadOutcome::Reloaded {
            file: effective.config_file,
            applied,
            need_restart,
            level_note,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn live_keys_are_thresholds_timing_and_level() {
        assert!(is_live("health_monitoring.thresholds.cpu_percent"));
        assert!(is_live("health_monitoring.check_interval_seconds"));
        assert!(is_live("logging.level"));
        assert!(!is_live("server.port"));
        assert!(!is_live("health_monitoring.history_size"));
        assert!(!is_live("logging.format"));
    }

    #[test]
    fn changed_keys_are_dotted_leaves() {
        let old = WardenConfig::default();
        let mut new = old.clone();
        new.health_monitoring.thresholds.memory_mb += 1;
        new.server.max_payload_bytes += 1;
        new.health_monitoring.check_interval = Duration::from_secs(7);
        assert_eq!(
            changed_keys(&old, &new),
            [
                "server.max_payload_bytes",
                "health_monitoring.check_interval_seconds",
                "health_monitoring.thresholds.memory_mb"
            ]
        );
        assert!(changed_keys(&old, &old).is_empty());
    }
}
