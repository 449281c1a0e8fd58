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
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::daemon::hub::door::AuthToken;
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

/// The origins a browser page may use the hub from: the local ones
/// (`http(s)://localhost`, `127.0.0.1` or `[::1]`, any port) always, the
/// configured list besides, or any when the list holds `"*"`.
#[derive(Clone, Debug)]
pub struct Origins {
    any: bool,
    listed: Vec<HeaderValue>,
}

impl Origins {
    pub fn new(configured: &[String]) -> Result<Self, CorsError> {
        let any = configured.iter().any(|origin| origin == "*");
        let listed = configured
            .iter()
            .filter(|origin| *origin != "*")
            .map(|origin| {
                HeaderValue::from_str(origin).map_err(|_| CorsError {
                    origin: origin.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Origins { any, listed })
    }

    pub fn allows(&self, origin: &HeaderValue) -> bool {
        self.any || is_local_origin(origin.as_bytes()) || self.listed.contains(origin)
    }
}

/// `http(s)://localhost`, `127.0.0.1` or `[::1]`, with or without a port:
/// pages served from this machine.
pub fn is_local_origin(origin: &[u8]) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let port = ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .find_map(|host| authority.strip_prefix(host));
    match port {
        Some("") => true,
        Some(port) => port.strip_prefix(':').is_some_and(|digits| {
            (1..=5).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
        }),
        None => false,
    }
}

/// The CORS layer for `origins` (see [`Origins`]): allowed origins get the
/// allow headers, any other gets none.
pub fn cors_layer(origins: &[String]) -> Result<CorsLayer, CorsError> {
    let origins = Origins::new(origins)?;
    let allow = if origins.any {
        AllowOrigin::any()
    } else {
        AllowOrigin::predicate(move |origin, _parts| origins.allows(origin))
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any))
}

/// Why the door refused a request. The body is `{"error": <message>}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "requests from origin {origin:?} are not allowed; to allow a dashboard served there, \
         add it to server.cors_allowed_origins"
    )]
    ForeignOrigin { origin: String },
    #[error(
        "requests for host {host:?} are not answered here (a page of another name pointed at \
         this address could read the hub); if you reach warden by this name, add it to \
         server.allowed_hosts"
    )]
    ForeignHost { host: String },
    #[error(
        "this endpoint requires the server's token: send `Authorization: Bearer <server.auth_token>`"
    )]
    MissingToken,
    #[error("the token sent in `Authorization: Bearer` is not the server's token")]
    WrongToken,
    #[error(
        "POST /api/events takes a JSON body sent as `Content-Type: application/json` (got {got})"
    )]
    NotJson { got: String },
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::ForeignOrigin { .. } | Refusal::ForeignHost { .. } => StatusCode::FORBIDDEN,
            Refusal::MissingToken | Refusal::WrongToken => StatusCode::UNAUTHORIZED,
            Refusal::NotJson { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// The JSON body sent with [`Refusal::status`].
    pub fn body(&self) -> Value {
        json!({ "error": self.to_string() })
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if self.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"warden\""),
            );
        }
        response
    }
}

/// Paths that require the token when `server.auth_token` is set. The probes
/// (`/health`, `/livez`, `/readyz`), `/status` and `/stats` stay open; the
/// Socket.IO connect is checked by [`socket_auth`].
pub const TOKEN_PATHS: [&str; 4] = [
    "/api/events",
    "/diagnostics",
    "/metrics",
    STATUS_PAGE_STREAM,
];

/// The status page's stream: it carries what `/diagnostics` does, so it
/// needs the token too. A browser's `EventSource` cannot send a header, so
/// this path (only this one) also takes the token as `?token=`.
pub const STATUS_PAGE_STREAM: &str = "/status-page/events";

/// The door's check on every HTTP request: a browser origin that is not
/// allowed is refused (Socket.IO included: CORS does not cover WebSocket),
/// and the token-protected paths require the token.
#[derive(Clone, Debug)]
struct Gate {
    origins: Origins,
    hosts: HostNames,
    token: Option<AuthToken>,
}

/// The names the door answers to (DNS rebinding protection): a request
/// whose `Host` is an IP address, `localhost` or a `*.localhost` name, or
/// one of the configured names (`server.host`, `server.allowed_hosts`;
/// `"*"` for any). A request without `Host` (not a browser) passes.
#[derive(Clone, Debug, Default)]
pub struct HostNames {
    any: bool,
    names: Vec<String>,
}

impl HostNames {
    pub fn new(configured: &[String]) -> Self {
        HostNames {
            any: configured.iter().any(|name| name == "*"),
            names: configured
                .iter()
                .map(|name| name.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a request with this `Host` header value is answered.
    pub fn allows(&self, host: &[u8]) -> bool {
        if self.any {
            return true;
        }
        let Ok(host) = std::str::from_utf8(host) else {
            return false;
        };
        let host = host.trim();
        // `[v6]:port` or `[v6]`: an address.
        if let Some(rest) = host.strip_prefix('[') {
            return rest
                .split_once(']')
                .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
        }
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.names.contains(&name)
    }
}

impl Gate {
    fn check(&self, request: &Request) -> Result<(), Refusal> {
        if let Some(host) = request.headers().get(header::HOST)
            && !self.hosts.allows(host.as_bytes())
        {
            return Err(Refusal::ForeignHost {
                host: String::from_utf8_lossy(host.as_bytes()).into_owned(),
            });
        }
        if let Some(origin) = request.headers().get(header::ORIGIN)
            && !self.origins.allows(origin)
            && !is_same_origin(origin, request.headers().get(header::HOST))
        {
            return Err(Refusal::ForeignOrigin {
                origin: String::from_utf8_lossy(origin.as_bytes()).into_owned(),
            });
        }
        if let Some(token) = &self.token
            && TOKEN_PATHS.contains(&request.uri().path())
        {
            // The page sends `encodeURIComponent(token)`: a token may hold
            // `&`, `%`, `+` or `=` (any visible ASCII), so it is decoded.
            let from_query = (request.uri().path() == STATUS_PAGE_STREAM)
                .then(|| request.uri().query())
                .flatten()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
                .map(percent_decode);
            let offered = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|value| bearer(value.as_bytes()))
                .or(from_query.as_deref());
            match offered {
                None => return Err(Refusal::MissingToken),
                Some(offered) if !token.matches(offered) => return Err(Refusal::WrongToken),
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// The origin names the host the request was sent to (`Host`), and that
/// host is an IP address: a client that sets `Origin` to its target, as
/// Python's websocket-client does. A host *name* is not enough: a page of
/// a name the attacker points at this address (DNS rebinding) would pass.
fn is_same_origin(origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
    let Some(host) = host else {
        return false;
    };
    let Ok(host_text) = host.to_str() else {
        return false;
    };
    let is_ip = host_text.parse::<std::net::SocketAddr>().is_ok()
        || host_text.parse::<std::net::IpAddr>().is_ok();
    if !is_ip {
        return false;
    }
    let origin = origin.as_bytes();
    [&b"http://"[..], &b"https://"[..]]
        .iter()
        .any(|scheme| origin.strip_prefix(*scheme) == Some(host.as_bytes()))
}

/// A query value with its `%XX` escapes decoded (a malformed escape is kept
/// as it is, so it can only fail to match).
fn percent_decode(value: &str) -> Vec<u8> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                // Two hex digits make a byte: hi, lo < 16.
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The credentials of `Bearer <credentials>` (scheme case-insensitive).
fn bearer(authorization: &[u8]) -> Option<&[u8]> {
    let (scheme, credentials) = authorization.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| credentials.trim_ascii())
}

async fn gate(gate: Arc<Gate>, request: Request, next: Next) -> Response {
    match gate.check(&request) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// The whole application for one serving generation of a hub (any adapter):
/// a fresh Socket.IO layer (see [`Hub::socketio_layer`]) around
/// [`hub_routes`] merged with `extra` (the daemon's `/health`, `/metrics`,
/// ...; `Router::new()` for none), behind the door's [`Gate`] (origins,
/// token), with CORS when the hub's settings ask for it. Call again for
/// each generation after a restart.
pub fn app<A: HubAdapter>(
    hub: &Hub<A>,
    health: Arc<dyn HealthProvider>,
    extra: Router,
) -> Result<Router, CorsError> {
    let configured = hub.settings().cors_allowed_origins.as_deref();
    let cors = configured.map(cors_layer).transpose()?;
    let gate_state = Arc::new(Gate {
        origins: Origins::new(configured.unwrap_or_default())?,
        hosts: HostNames::new(&hub.settings().door.host_names),
        token: hub.settings().door.auth_token.clone(),
    });
    let router = hub_routes(hub.clone(), health)
        .merge(extra)
        .layer(hub.socketio_layer())
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            gate(Arc::clone(&gate_state), request, next)
        }));
    Ok(match cors {
        Some(cors) => router.layer(cors),
        None => router,
    })
}

/// `Content-Type: application/json`, parameters (`; charset=utf-8`) allowed.
fn require_json(headers: &HeaderMap) -> Result<(), Refusal> {
    let content_type = headers.get(header::CONTENT_TYPE);
    let media_type = content_type
        .and_then(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or_default().trim());
    match media_type {
        Some(media_type) if media_type.eq_ignore_ascii_case("application/json") => Ok(()),
        _ => Err(Refusal::NotJson {
            got: content_type.map_or_else(
                || "no Content-Type".to_string(),
                |value| format!("{:?}", String::from_utf8_lossy(value.as_bytes())),
            ),
        }),
    }
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

/// 204 once the event is stamped, recorded and relayed; 415 unless the
/// content type is `application/json` (a browser sends a cross-origin
/// `text/plain` POST without asking first; `application/json` needs a
/// preflight that CORS answers); 400 with a JSON message for a body that is
/// not JSON; 413 for a body over the limit.
async fn post_event<A: Adapter>(
    State(state): State<HttpState<A>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(refusal) = require_json(&headers) {
        return refusal.into_response();
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let message = rejection.body_text();
            return (status, Json(json!({ "error": message }))).into_response();
        }
    };
    match crate::stamp::Payload::check_bytes(&body) {
        Ok(payload) => {
            state.hub.publish(&payload).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_origins_are_this_machine_on_any_port() {
        for origin in [
            "http://localhost",
            "http://localhost:3000",
            "https://127.0.0.1:8765",
            "http://[::1]:80",
        ] {
            assert!(is_local_origin(origin.as_bytes()), "{origin}");
        }
        for origin in [
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example:80",
            "http://localhost:80@evil.example",
            "http://localhost:",
            "http://localhost:123456",
            "ftp://localhost",
            "null",
            "https://evil.example",
        ] {
            assert!(!is_local_origin(origin.as_bytes()), "{origin}");
        }
    }

    #[test]
    fn a_star_allows_any_origin_and_a_list_adds_to_the_local_ones() {
        let origin = |s: &'static str| HeaderValue::from_static(s);
        let listed = Origins::new(&["https://dash.example".into()]).unwrap();
        assert!(listed.allows(&origin("https://dash.example")));
        assert!(listed.allows(&origin("http://localhost:5173")));
        assert!(!listed.allows(&origin("https://other.example")));
        let any = Origins::new(&["*".into()]).unwrap();
        assert!(any.allows(&origin("https://other.example")));
    }

    #[test]
    fn an_origin_naming_the_requested_host_is_the_same_origin() {
        let value = |s: &'static str| HeaderValue::from_static(s);
        let host = value("10.0.0.5:8765");
        assert!(is_same_origin(&value("http://10.0.0.5:8765"), Some(&host)));
        assert!(is_same_origin(&value("https://10.0.0.5:8765"), Some(&host)));
        assert!(!is_same_origin(&value("http://10.0.0.5:8766"), Some(&host)));
        assert!(!is_same_origin(&value("http://evil.example"), Some(&host)));
        assert!(!is_same_origin(&value("http://10.0.0.5:8765"), None));
        // A name could be rebound to this address by a foreign page.
        let named = value("rebound.example:8765");
        assert!(!is_same_origin(
            &value("http://rebound.example:8765"),
            Some(&named)
        ));
    }

    #[test]
    fn the_token_matches_only_itself() {
        let token = AuthToken::new("0123456789abcdef");
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b"0123456789abcde"));
        assert!(!token.matches(b"0123456789abcdef0"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "AuthToken(<redacted>)");
    }

    #[test]
    fn bearer_credentials_are_read_case_insensitively() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
