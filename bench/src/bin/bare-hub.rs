//! The baseline for the load tool: a bare socketioxide hub on axum with
//! warden's relay behaviour and socketioxide settings, and nothing else.
//!
//! Same as warden: clients join `/`, receive `connection_ack`; a
//! `claude_event` is stamped (`server_id`, `received_at` appended, keys in
//! order) and relayed to every other client; `max_payload` is 1 MB, the
//! per-socket buffer 8,192 packets, TCP_NODELAY on every accepted socket,
//! socketioxide's ping interval and timeout (25 s / 20 s, warden's too).
//!
//! Not here, on purpose: the reliability layer (PID file, health monitor,
//! recovery, breaker), the bounded history, the counters, per-sender ordering
//! (socketioxide runs each incoming message's handler as its own task; the
//! load tool counts the reorderings this causes), graceful shutdown (SIGTERM
//! kills it). `GET /status` answers a small JSON so that the load tool can
//! time an HTTP request on the baseline too.
//!
//! `--default-buffer` keeps socketioxide's default buffer (128 packets), to
//! show the loss it causes under a flood.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt;
use clap::Parser;
use serde_json::{Map, Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{Data, SocketRef};
use warden::daemon::os::clock::SystemClock;
use warden::time::Clock;

#[derive(Debug, Parser)]
#[command(
    name = "bare-hub",
    about = "Bare socketioxide hub: the load tool's baseline"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to listen on (0 picks one; the address is printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Packets buffered per socket (warden's default).
    #[arg(long, default_value_t = 8_192)]
    buffer_packets: usize,
    /// Keep socketioxide's default buffer (128 packets) instead.
    #[arg(long, conflicts_with = "buffer_packets")]
    default_buffer: bool,
}

const SERVER_ID: &str = "bare-hub";
const MAX_PAYLOAD_BYTES: u64 = 1_000_000;

fn stamp(payload: Value, clock: &SystemClock) -> Value {
    let mut object = match payload {
        Value::Object(map) => map,
        other => {
            let mut map = Map::new();
            map.insert("data".to_owned(), other);
            map
        }
    };
    object.insert("server_id".to_owned(), Value::String(SERVER_ID.to_owned()));
    object.insert(
        "received_at".to_owned(),
        Value::String(clock.wall().to_iso8601()),
    );
    Value::Object(object)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let clock = Arc::new(SystemClock::new());
    let clients = Arc::new(AtomicU64::new(0));

    let mut builder = SocketIo::builder().max_payload(MAX_PAYLOAD_BYTES);
    if !args.default_buffer {
        builder = builder.max_buffer_size(args.buffer_packets);
    }
    let (layer, io) = builder.build_layer();

    let connected = Arc::clone(&clients);
    io.ns("/", async move |socket: SocketRef| {
        connected.fetch_add(1, Ordering::Relaxed);
        let clock = Arc::clone(&clock);
        socket.on(
            "claude_event",
            async move |socket: SocketRef, Data::<Value>(payload)| {
                let event = stamp(payload, &clock);
                // A bare hub ignores delivery failures (full buffers).
                let _ = socket.broadcast().emit("claude_event", &event).await;
            },
        );
        let disconnected = Arc::clone(&connected);
        socket.on_disconnect(async move || {
            disconnected.fetch_sub(1, Ordering::Relaxed);
        });
        let ack = json!({
            "server_id": SERVER_ID,
            "version": env!("CARGO_PKG_VERSION"),
            "sid": socket.id.to_string(),
        });
        let _ = socket.emit("connection_ack", &ack);
    });

    let status_clients = Arc::clone(&clients);
    let app = Router::new()
        .route(
            "/status",
            get(async move || {
                axum::Json(json!({
                    "status": "running",
                    "clients": status_clients.load(Ordering::Relaxed),
                }))
            }),
        )
        .layer(layer);

    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port)).await?;
    println!("listening on {}", listener.local_addr()?);
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
