//! The health lane over a real socket: a probe (`/health`) is answered while
//! every worker of the hub's runtime is blocked, other paths on the same
//! connection are forwarded to the hub's runtime, other connections are
//! handed to it, and a shutdown releases the address for the next bind.

mod hub_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;

use axum::Router;
use axum::routing::get;
use hub_common::{DEADLINE, settings};
use warden::daemon::hub::Hub;
use warden::daemon::hub::http;
use warden::daemon::os::clock::SystemClock;
use warden::daemon::serve::server;
use warden::health::HealthStatus;

/// One HTTP/1.1 GET on `stream` (keep-alive); returns status and body.
fn get_on(stream: &mut TcpStream, path: &str) -> (u16, String) {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").expect("write request");
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("content-length");
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    // A read that waits this long means the request was never answered.
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    stream
}

/// Unblocks the runtime's worker even when an assertion fails first, so the
/// test fails instead of hanging in the runtime's drop.
struct Release(Option<mpsc::Sender<()>>);

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[test]
fn a_probe_is_answered_while_the_hub_runtime_is_blocked() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (hub, addr, handle) = runtime.block_on(async {
        let hub = Hub::new(settings(), Arc::new(SystemClock::new()));
        let listener = server::bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let probes = Router::new().route("/health", get(|| async { "probe answered" }));
        let app = http::app(&hub, Arc::new(|| HealthStatus::Healthy), probes).expect("app");
        let handle = server::serve_tcp(listener, app, &hub);
        (hub, addr, handle)
    });

    // The hub's only worker now waits on a channel: nothing spawned on that
    // runtime can run until it is released.
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (blocked_tx, blocked_rx) = mpsc::channel::<()>();
    let release = Release(Some(release_tx));
    runtime.spawn(async move {
        let _ = blocked_tx.send(());
        let _ = release_rx.recv();
    });
    blocked_rx.recv_timeout(DEADLINE).expect("worker blocked");

    let mut probe = connect(addr);
    assert_eq!(
        get_on(&mut probe, "/health"),
        (200, "probe answered".into())
    );
    assert_eq!(
        get_on(&mut probe, "/health"),
        (200, "probe answered".into())
    );

    // Another path on the probe's connection runs on the hub's runtime.
    drop(release);
    let (status, body) = get_on(&mut probe, "/status");
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"running\""), "{body}");

    // A connection that starts with another path is the hub runtime's.
    let mut other = connect(addr);
    let (status, body) = get_on(&mut other, "/stats");
    assert_eq!(status, 200, "{body}");
    drop((probe, other));

    runtime.block_on(async {
        handle.shutdown(DEADLINE).await.expect("clean shutdown");
        // The listening socket is closed when shutdown returns.
        let again = server::bind(addr).await.expect("rebind the same address");
        drop(again);
    });
    drop(hub);
}
