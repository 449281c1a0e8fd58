//! The hub's HTTP surface on axum: `GET /status`, `GET /stats` and
//! `POST /api/events`, plus the assembly of the full application (Socket.IO
//! layer, extra routes, CORS).
//!
//! The router is built from parts so that the self-healing work can merge
//! `/health`, `/diagnostics`, `/metrics`, `/livez` and `/readyz` without
//! touching this file: [`hub_routes`] returns a stateless `Router` to merge
//! with others, and [`app`] puts the Socket.IO layer and CORS around the
//! merged whole.
//!
//! Not here: health decisions (`/status` asks a [`HealthProvider`] the daemon
//! supplies), serving and shutdown (see `server`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::daemon::hub::{Hub, HubAdapter};
use crate::health::HealthStatus;

/// Where `/status` gets its `health` field. The daemon plugs in the health
/// monitor; a closure `|| HealthStatus::Healthy` also works.
pub trait HealthProvider: Send + Sync + 'static {
    fn current_status(&self) -> HealthStatus;
}

impl<F> HealthProvider for F
where
    F: Fn() -> HealthStatus + Send + Sync + 'static,
{
    fn current_status(&self) -> HealthStatus {
        self()
    }
}

/// A CORS origin that is not a valid header value.
#[derive(Debug, thiserror::Error)]
#[error("invalid CORS origin {origin:?} in cors_allowed_origins: not a valid HTTP header value")]
pub struct CorsError {
    pub origin: String,
}

struct HttpState<A: Adapter> {
    hub: Hub<A>,
    health: Arc<dyn HealthProvider>,
}

impl<A: Adapter> Clone for HttpState<A> {
    fn clone(&self) -> Self {
        HttpState {
            hub: self.hub.clone(),
            health: Arc::clone(&self.health),
        }
    }
}

/// `GET /status`, `GET /stats` and `POST /api/events` over `hub`. The
/// event body limit is the hub's `max_payload_bytes`.
pub fn hub_routes<A: Adapter>(hub: Hub<A>, health: Arc<dyn HealthProvider>) -> Router {
    let body_limit = usize::try_from(hub.settings().max_payload_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/status", get(status::<A>))
        .route("/stats", get(stats::<A>))
        .route(
            "/api/events",
            post(post_event::<A>).layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(HttpState { hub, health })
}

/// The CORS layer for `origins` (`"*"` anywhere in the list allows any origin).
pub fn cors_layer(origins: &[String]) -> Result<CorsLayer, CorsError> {
    let allow = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|origin| {
                HeaderValue::from_str(origin).map_err(|_| CorsError {
                    origin: origin.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any))
}

/// The whole application for one serving generation of a hub (any adapter):
/// a fresh Socket.IO layer (see [`Hub::socketio_layer`]) around
/// [`hub_routes`] merged with `extra` (the daemon's `/health`, `/metrics`,
/// ...; `Router::new()` for none), with CORS when the hub's settings ask for
/// it. Call again for each generation after a restart.
pub fn app<A: HubAdapter>(
    hub: &Hub<A>,
    health: Arc<dyn HealthProvider>,
    extra: Router,
) -> Result<Router, CorsError> {
    let cors = hub
        .settings()
        .cors_allowed_origins
        .as_deref()
        .map(cors_layer)
        .transpose()?;
    let router = hub_routes(hub.clone(), health)
        .merge(extra)
        .layer(hub.socketio_layer());
    Ok(match cors {
        Some(cors) => router.layer(cors),
        None => router,
    })
}

async fn status<A: Adapter>(State(state): State<HttpState<A>>) -> Json<Value> {
    let hub = &state.hub;
    Json(json!({
        "status": "running",
        "version": hub.settings().version,
        "uptime": hub.uptime().as_secs(),
        "clients": hub.stats().clients_connected(),
        "health": state.health.current_status(),
    }))
}

async fn stats<A: Adapter>(State(state): State<HttpState<A>>) -> Json<Value> {
    let hub = &state.hub;
    let mut body = serde_json::Map::new();
    body.insert("server_id".into(), json!(hub.settings().server_id));
    body.insert("version".into(), json!(hub.settings().version));
    body.insert("uptime_seconds".into(), json!(hub.uptime().as_secs()));
    if let Value::Object(counters) = json!(hub.stats().snapshot()) {
        body.extend(counters);
    }
    body.insert("history_size".into(), json!(hub.history_len()));
    body.insert("history_bytes".into(), json!(hub.history_bytes()));
    Json(Value::Object(body))
}

/// 204 once the event is stamped, recorded and relayed; 400 with a JSON
/// message for a body that is not JSON; 413 for a body over the limit. The
/// content type is not checked: hooks post with whatever their tool sends.
async fn post_event<A: Adapter>(
    State(state): State<HttpState<A>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let message = rejection.body_text();
            return (status, Json(json!({ "error": message }))).into_response();
        }
    };
    match serde_json::from_slice::<Value>(&body) {
        Ok(payload) => {
            state.hub.publish(payload).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": "request body is not valid JSON",
                "detail": error.to_string(),
            })),
        )
            .into_response(),
    }
}
