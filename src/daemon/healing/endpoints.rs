//! The self-healing HTTP endpoints, merged into the hub's router through
//! `http::app`'s `extra` argument:
//!
//! - `GET /health`: the monitor's latest report in the seed's shape (status,
//!   timestamp, uptime_seconds, version, pid, `checks` per checker, `metrics`).
//!   **HTTP 503 only for `critical`**; `healthy`, `warning` and `unknown` answer
//!   200. Unknown (no check yet, or a checker that cannot see) is not evidence
//!   of illness, and a load balancer that drops a daemon for it would turn a
//!   blind probe into an outage; readiness is `/readyz`'s job.
//! - `GET /diagnostics`: server_info, health_monitor (with the aggregated
//!   window), recovery_manager (breaker state and status, counts, recent
//!   events, strategy rung), process_info, latest_report, and `config`: the
//!   thresholds, interval, window and log level in force (changed by a
//!   SIGHUP reload, see `reload`).
//! - `GET /metrics`: OpenMetrics text (see `metrics`).
//! - `GET /livez`: 200 whenever the daemon can answer at all.
//! - `GET /readyz`: 503 while the circuit breaker blocks recovery (open or
//!   forced open), the hub is draining, or (cluster mode) Redis is not
//!   connected; 200 otherwise. Never affects `/livez`. `/diagnostics` has a
//!   `cluster` section and `/metrics` the `warden_cluster_*` series.
//!
//! Not here: the hub's own routes (`http`), measuring (`checkers`), deciding
//! (`recovery`).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::daemon::cluster::{Cluster, RedisState};
use crate::daemon::healing::alerts::Alerter;
use crate::daemon::healing::checkers::SampleHandle;
use crate::daemon::healing::executor::{RecoveryManager, ServiceControl};
use crate::daemon::healing::metrics::{self, MetricsInputs};
use crate::daemon::healing::monitor::HealthMonitor;
use crate::daemon::healing::reload::LiveSettings;
use crate::daemon::hub::HubStatus;
use crate::daemon::os::sysprobe;
use crate::health::HealthStatus;
use crate::recovery::readiness::{NotReady, ReadinessFacts, not_ready};
use crate::time::WallTime;

/// Recovery events `/diagnostics` lists unless `?limit=` says otherwise.
pub const RECENT_EVENTS: usize = 20;
/// The largest `?window_seconds=` `/diagnostics` accepts: one day. The
/// history holds `history_size` reports, so a longer window adds nothing.
pub const MAX_WINDOW_SECONDS: f64 = 86_400.0;

/// `/diagnostics`' query: the seed's knobs. `window_seconds` is the window
/// the health history is aggregated over (default: the configured
/// `aggregation_window`), `limit` the number of recent recovery events
/// listed (default 20; at most what the recovery history keeps).
#[derive(Debug, Default, serde::Deserialize)]
pub struct DiagnosticsQuery {
    pub window_seconds: Option<f64>,
    pub limit: Option<usize>,
}

impl DiagnosticsQuery {
    /// The window, checked: a positive number of seconds up to a day.
    fn window(&self) -> Result<Option<std::time::Duration>, String> {
        match self.window_seconds {
            None => Ok(None),
            Some(w) if w.is_finite() && w > 0.0 && w <= MAX_WINDOW_SECONDS => {
                Ok(Some(std::time::Duration::from_secs_f64(w)))
            }
            Some(w) => Err(format!(
                "window_seconds must be above 0 and at most {MAX_WINDOW_SECONDS} (got {w})"
            )),
        }
    }
}

/// Identity of the running server, for `/health` and `/diagnostics`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerInfo {
    pub version: String,
    pub pid: u32,
    pub host: String,
    pub port: u16,
    pub start_time: WallTime,
}

/// What the endpoints read.
pub struct HealthEndpoints {
    pub hub: Arc<dyn HubStatus>,
    /// The operators' alerts, when configured.
    pub alerts: Option<Arc<Alerter>>,
    /// The cluster link, in cluster mode.
    pub cluster: Option<Cluster>,
    pub monitor: HealthMonitor,
    pub recovery: Arc<RecoveryManager>,
    /// Serving state (draining, restarts), for `/readyz` and `/diagnostics`.
    pub service: Arc<dyn ServiceControl>,
    pub process: SampleHandle,
    /// The configuration in force, for `/diagnostics`' `config` section.
    pub live: Option<LiveSettings>,
    pub info: ServerInfo,
}

/// The five routes over `endpoints`.
pub fn routes(endpoints: Arc<HealthEndpoints>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/diagnostics", get(diagnostics))
        .route("/metrics", get(metrics_text))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(endpoints)
}

type S = State<Arc<HealthEndpoints>>;

/// The HTTP status of `/health` for a health status (see the module doc).
pub fn health_http_status(status: HealthStatus) -> StatusCode {
    match status {
        HealthStatus::Critical => StatusCode::SERVICE_UNAVAILABLE,
        HealthStatus::Healthy | HealthStatus::Warning | HealthStatus::Unknown => StatusCode::OK,
    }
}

async fn health(State(e): S) -> Response {
    let latest = e.monitor.latest();
    let status = latest
        .as_ref()
        .map_or(HealthStatus::Unknown, |r| r.overall_status);
    let mut checks = Map::new();
    if let Some(report) = &latest {
        for result in &report.results {
            checks.insert(result.checker.clone(), json!(result.status));
        }
    }
    let stats = e.hub.stats_snapshot();
    let sample = e.process.get();
    let body = json!({
        "status": status,
        "timestamp": e.hub.wall_now().to_iso8601(),
        "last_check": latest.as_ref().map(|r| r.timestamp.to_iso8601()),
        "uptime_seconds": e.hub.hub_uptime().as_secs(),
        "version": e.info.version,
        "pid": e.info.pid,
        "checks": checks,
        "metrics": {
            "cpu_percent": sample.as_ref().map(|s| round1(s.cpu_percent)),
            "memory_mb": sample.as_ref().map(|s| round1(s.snapshot.memory_mb())),
            "clients_connected": stats.clients_connected,
            "events_processed": stats.events_processed,
        },
    });
    (health_http_status(status), Json(body)).into_response()
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn bad_query(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": "bad_query", "message": message })),
    )
        .into_response()
}

async fn diagnostics(
    State(e): S,
    query: Result<Query<DiagnosticsQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(rejection) => return bad_query(rejection.body_text()),
    };
    let window = match query.window() {
        Ok(w) => w,
        Err(message) => return bad_query(message),
    };
    Json(diagnostics_value(
        &e,
        window,
        query.limit.unwrap_or(RECENT_EVENTS),
    ))
    .into_response()
}

/// `/diagnostics`' body: the health history aggregated over `window` (the
/// configured one if `None`) and the `limit` most recent recovery events.
/// The status page streams the same object.
pub fn diagnostics_value(
    e: &HealthEndpoints,
    window: Option<std::time::Duration>,
    limit: usize,
) -> Value {
    let health_monitor = match window {
        Some(w) => e.monitor.status_over(w),
        None => e.monitor.status(),
    };
    let sample = e.process.get();
    let process_info = match &sample {
        Some(s) => json!({
            "cpu_percent": round1(s.cpu_percent),
            "memory_mb": round1(s.snapshot.memory_mb()),
            "virtual_memory_mb": round1(s.snapshot.virtual_memory_mb()),
            "file_descriptors": s.snapshot.open_fds,
            "thread_count": s.snapshot.threads,
            "status": s.snapshot.status,
            "cores": s.cores,
            "sampled_at": s.wall.to_iso8601(),
        }),
        None => json!({ "pid": e.info.pid, "sampled_at": null }),
    };
    json!({
        "server_info": {
            "version": e.info.version,
            "pid": e.info.pid,
            "start_time": e.info.start_time.to_iso8601(),
            "uptime_seconds": e.hub.hub_uptime().as_secs(),
            "host": e.info.host,
            "port": e.info.port,
            "restarts": e.service.restarts(),
            "draining": e.service.is_draining(),
        },
        "health_monitor": health_monitor,
        "recovery_manager": e.recovery.status(limit),
        "process_info": process_info,
        "service_stats": e.hub.stats_snapshot(),
        "latest_report": e.monitor.latest(),
        "config": e.live.as_ref().map(LiveSettings::to_json),
        "cluster": match &e.cluster {
            Some(cluster) => json!({ "enabled": true, "state": cluster.snapshot() }),
            None => json!({ "enabled": false }),
        },
        "alerts": match &e.alerts {
            Some(alerts) => json!({ "enabled": true, "state": alerts.status() }),
            None => json!({ "enabled": false }),
        },
    })
}

async fn metrics_text(State(e): S) -> Response {
    let inputs = MetricsInputs {
        uptime: e.hub.hub_uptime(),
        stats: e.hub.stats_snapshot(),
        health: e.monitor.current_status(),
        sample: e.process.get(),
        recovery: Some(e.recovery.counts()),
        service_restarts: e.service.restarts(),
        cpu_seconds: sysprobe::self_cpu_seconds(),
        max_fds: sysprobe::max_fds(),
        cluster: e.cluster.as_ref().map(Cluster::snapshot),
        alerts: e.alerts.as_ref().map(|a| a.status()),
    };
    match metrics::render(&inputs) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response(),
    }
}

async fn livez() -> Json<Value> {
    Json(json!({ "status": "alive" }))
}

async fn readyz(State(e): S) -> Response {
    let breaker = e.recovery.breaker_state();
    let draining = e.service.is_draining();
    let redis = e.cluster.as_ref().map(Cluster::redis_state);
    let facts = ReadinessFacts {
        breaker,
        draining,
        dependency_connected: redis.map(|state| state == RedisState::Connected),
    };
    let reasons: Vec<String> = not_ready(facts)
        .into_iter()
        .map(|reason| match reason {
            NotReady::Breaker(state) => format!("circuit breaker {state}"),
            NotReady::Draining => "hub draining".to_string(),
            NotReady::DependencyDown => format!(
                "Redis {}: cross-node relay unavailable",
                redis.map_or("unknown", RedisState::as_str)
            ),
        })
        .collect();
    let ready = reasons.is_empty();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "circuit_breaker_state": breaker,
            "draining": draining,
            "redis_state": redis,
            "reasons": reasons,
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_critical_is_503() {
        assert_eq!(
            health_http_status(HealthStatus::Critical),
            StatusCode::SERVICE_UNAVAILABLE
        );
        for s in [
            HealthStatus::Healthy,
            HealthStatus::Warning,
            HealthStatus::Unknown,
        ] {
            assert_eq!(health_http_status(s), StatusCode::OK);
        }
    }
}
