//! The live status page: one small HTML page (CSS and plain JavaScript,
//! embedded in the binary, nothing fetched from elsewhere) and the
//! Server-Sent Events stream it reads.
//!
//! - `GET /` and `GET /status-page`: the page. `/` because a person who types
//!   the daemon's address into a browser should see it; every API path keeps
//!   its own name, so `/` was free. `/status-page` is the stable name to link.
//! - `GET /status-page/page.css`, `GET /status-page/page.js`: its assets.
//! - `GET /status-page/events`: the stream. A `snapshot` event at once and
//!   then every `check_interval` (`/diagnostics`' object plus `history`, the
//!   kept health reports in a compact form, and `ready`), and a
//!   `claude_event` event for each event the hub ingests (from the hub's tap,
//!   which sends only while someone subscribed: nobody watching costs a
//!   counter read per event).
//!
//! Bounded: the tap holds at most [`EVENT_TAP_CAPACITY`] events per watcher;
//! one that reads so slowly that it falls behind by that much is dropped (its
//! stream ends; the page reconnects and says so). Snapshots are produced when
//! the stream is polled, never queued. A stream ends as soon as the serving
//! generation drains (restart or stop), so it never holds up a graceful
//! shutdown; the page's `EventSource` reconnects to the next generation.
//!
//! Access: as `/diagnostics` today (anyone who can reach the bound address).
//!
//! Not here: the data itself (`health_http`, `monitor`, `recovery`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Interval, MissedTickBehavior};

use crate::daemon::cluster::{Cluster, RedisState};
use crate::daemon::healing::endpoints::{self, HealthEndpoints, RECENT_EVENTS};
#[cfg(doc)]
use crate::daemon::hub::EVENT_TAP_CAPACITY;
use crate::daemon::hub::StampedEvent;
use crate::health::{HealthReport, MetricValue};
use crate::recovery::readiness::{NotReady, ReadinessFacts, not_ready};

const HTML: &str = include_str!("page/index.html");
const CSS: &str = include_str!("page/page.css");
const JS: &str = include_str!("page/page.js");

/// The shortest time between two snapshots on one stream, whatever
/// `check_interval` says.
const MIN_SNAPSHOT_INTERVAL: Duration = Duration::from_millis(500);
/// How often a stream looks whether its serving generation is draining.
const DRAIN_POLL: Duration = Duration::from_millis(200);

/// A new subscription to the hub's stamped events.
pub type EventTap = Arc<dyn Fn() -> broadcast::Receiver<StampedEvent> + Send + Sync>;

/// What the page's routes read.
pub struct PageState {
    pub endpoints: Arc<HealthEndpoints>,
    pub events: EventTap,
}

/// The page, its assets and its stream.
pub fn routes(state: Arc<PageState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/status-page", get(page))
        .route("/status-page/page.css", get(css))
        .route("/status-page/page.js", get(js))
        .route("/status-page/events", get(events))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", HTML)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

/// One snapshot: `/diagnostics`' object, the compact history and readiness.
pub fn snapshot(e: &HealthEndpoints) -> Value {
    let mut value = endpoints::diagnostics_value(e, None, RECENT_EVENTS);
    if let Value::Object(map) = &mut value {
        let history: Vec<Value> = e.monitor.history().iter().map(compact).collect();
        map.insert("history".to_owned(), Value::Array(history));
        map.insert("ready".to_owned(), readiness(e));
    }
    value
}

/// A report as the page charts it: time, overall status, each checker's
/// status and every numeric metric by name.
fn compact(report: &HealthReport) -> Value {
    let mut checks = Map::new();
    let mut metrics = Map::new();
    for result in &report.results {
        checks.insert(result.checker.clone(), json!(result.status));
        for metric in &result.metrics {
            if let MetricValue::Number(v) = metric.value {
                metrics.insert(metric.name.clone(), json!((v * 100.0).round() / 100.0));
            }
        }
    }
    json!({
        "t": report.timestamp.to_iso8601(),
        "s": report.overall_status,
        "c": checks,
        "m": metrics,
    })
}

/// Readiness by `/readyz`'s rule: the breaker does not block recovery, the
/// hub is not draining and (cluster mode) Redis is connected.
fn readiness(e: &HealthEndpoints) -> Value {
    let redis = e.cluster.as_ref().map(Cluster::redis_state);
    let facts = ReadinessFacts {
        breaker: e.recovery.breaker_state(),
        draining: e.service.is_draining(),
        dependency_connected: redis.map(|state| state == RedisState::Connected),
    };
    let reasons: Vec<String> = not_ready(facts)
        .into_iter()
        .map(|reason| match reason {
            NotReady::Breaker(state) => format!("circuit breaker {state}"),
            NotReady::Draining => "hub draining".to_owned(),
            NotReady::DependencyDown => {
                format!("Redis {}", redis.map_or("unknown", RedisState::as_str))
            }
        })
        .collect();
    json!({ "ready": reasons.is_empty(), "reasons": reasons })
}

/// One watcher's stream state.
struct Watch {
    state: Arc<PageState>,
    events: broadcast::Receiver<StampedEvent>,
    snapshots: Interval,
    drain: Interval,
    done: bool,
}

impl Watch {
    async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        loop {
            tokio::select! {
                biased;
                _ = self.drain.tick() => {
                    if self.state.endpoints.service.is_draining() {
                        return None;
                    }
                }
                _ = self.snapshots.tick() => {
                    let data = snapshot(&self.state.endpoints).to_string();
                    return Some(Event::default().event("snapshot").data(data));
                }
                received = self.events.recv() => match received {
                    Ok(event) => {
                        return Some(Event::default().event("claude_event").data(event.as_str()));
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "status page watcher fell behind; dropped");
                        self.done = true;
                        return Some(Event::default().event("lagged").data(missed.to_string()));
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }
}

async fn events(State(state): State<Arc<PageState>>) -> impl IntoResponse {
    let period = state
        .endpoints
        .monitor
        .settings()
        .check_interval
        .max(MIN_SNAPSHOT_INTERVAL);
    let mut snapshots = tokio::time::interval(period);
    snapshots.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut drain = tokio::time::interval(DRAIN_POLL);
    drain.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let watch = Watch {
        events: (state.events)(),
        state,
        snapshots,
        drain,
        done: false,
    };
    let stream = futures_util::stream::unfold(watch, |mut watch| async move {
        let event = watch.next().await?;
        Some((Ok::<Event, Infallible>(event), watch))
    });
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(stream);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{HealthCheckResult, HealthMetric, HealthStatus};
    use crate::time::{Moment, WallTime};

    #[test]
    fn a_compact_report_keeps_statuses_and_numeric_metrics_only() {
        let at = Moment::from_millis(5);
        let wall = WallTime::from_millis(1_796_074_563_169);
        let process = HealthCheckResult::from_metrics(
            "process_resources",
            vec![
                HealthMetric::new("memory_mb", 21.757_812_5, HealthStatus::Critical),
                HealthMetric::new(
                    "process_status",
                    "sleeping".to_string(),
                    HealthStatus::Healthy,
                ),
            ],
            at,
            wall,
            Duration::ZERO,
        );
        let network = HealthCheckResult::failed(
            "network_connectivity",
            "timed out",
            at,
            wall,
            Duration::ZERO,
        );
        let report = HealthReport::from_results(vec![process, network], at, wall);
        assert_eq!(
            compact(&report),
            json!({
                "t": "2026-11-30T21:36:03.169Z",
                "s": "critical",
                "c": {"process_resources": "critical", "network_connectivity": "unknown"},
                "m": {"memory_mb": 21.76},
            })
        );
    }
}
