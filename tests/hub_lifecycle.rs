//! Connection counting and the serving lifecycle with real clients: counters
//! exact after client disconnects, after `disconnect_all` and after shutdown
//! (where socketioxide runs no disconnect handlers); graceful shutdown with
//! websocket and polling clients connected; and a restart inside the process
//! that rebinds the same address, keeps counters and history, and lets
//! clients reconnect; a hub dropped without `close()` is freed.

mod hub_common;

use std::time::Duration;

use hub_common::{DEADLINE, TestClient, TestHub, serve_generation, settings, wait_until};
use rust_socketio::TransportType;
use serde_json::json;
use warden::daemon::serve::server;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_connected_follows_connects_and_disconnects_exactly() {
    let hub = TestHub::start(settings()).await;
    let stats = hub.hub.stats().clone();
    assert_eq!(stats.clients_connected(), 0);

    let a = TestClient::connect(&hub.url()).await;
    let b = TestClient::connect(&hub.url()).await;
    let c = TestClient::connect(&hub.url()).await;
    assert_eq!(stats.clients_connected(), 3);

    b.client.disconnect().await.unwrap();
    wait_until("2 clients", || stats.clients_connected() == 2).await;
    drop((a, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disconnect_all_reports_how_many_and_leaves_the_counter_exact_at_once() {
    let hub = TestHub::start(settings()).await;
    let stats = hub.hub.stats().clone();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(TestClient::connect(&hub.url()).await);
    }
    assert_eq!(stats.clients_connected(), 4);

    let disconnected = hub.hub.disconnect_all().await;
    assert_eq!(disconnected, 4);
    assert_eq!(
        stats.clients_connected(),
        0,
        "exact when disconnect_all returns"
    );

    // The disconnect handlers that socketioxide runs afterwards must not
    // count the same clients twice; a new client is counted from zero.
    let late = TestClient::connect(&hub.url()).await;
    wait_until("1 client", || stats.clients_connected() == 1).await;
    // socketioxide removes a socket from its namespace only after its
    // disconnect handler ran: once only the late one is left, all four ran.
    wait_until("the four disconnect handlers ran", || {
        hub.hub.sockets_open() == 1
    })
    .await;
    assert_eq!(stats.clients_connected(), 1);
    assert_eq!(hub.hub.disconnect_all().await, 1);
    assert_eq!(stats.clients_connected(), 0);
    drop(late);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_with_websocket_and_polling_clients_completes_and_zeroes_the_count() {
    let mut hub = TestHub::start(settings()).await;
    let stats = hub.hub.stats().clone();
    let ws = TestClient::connect(&hub.url()).await;
    let polling = TestClient::connect_with(&hub.url(), TransportType::Polling, false).await;
    assert_eq!(stats.clients_connected(), 2);

    let report = hub.shutdown().await;
    assert_eq!(report.clients_closed, 2);
    assert!(!report.forced, "drained without aborting connections");
    assert_eq!(
        stats.clients_connected(),
        0,
        "corrected without disconnect handlers"
    );

    // The listening socket is released: the same address binds again.
    let again = server::bind(hub.addr).await.expect("address released");
    drop((again, ws, polling));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_rebinds_the_same_address_and_clients_come_back() {
    // rust_socketio 0.6 notices the server's close on its heartbeat schedule
    // (with the default 25 s + 20 s it reconnected after ~45 s; socket.io-client
    // reconnects at once on "transport close"); short heartbeats keep it quick.
    let mut s = settings();
    s.ping_interval = Duration::from_millis(300);
    s.ping_timeout = Duration::from_millis(300);
    let mut hub = TestHub::start(s).await;
    let stats = hub.hub.stats().clone();
    let dashboard = TestClient::connect_with(&hub.url(), TransportType::Websocket, true).await;
    let hook = TestClient::connect_with(&hub.url(), TransportType::Websocket, true).await;
    hook.emit("claude_event", json!({"before": true})).await;
    dashboard.recorder.wait_for("claude_event", 1).await;

    // restart_service: stop the generation, rebind the same address, serve a
    // new generation of the same hub.
    let report = hub.shutdown().await;
    assert_eq!(report.clients_closed, 2);
    assert_eq!(stats.clients_connected(), 0);
    let listener = server::bind(hub.addr)
        .await
        .expect("rebind the same address");
    hub.handle = Some(serve_generation(&hub.hub, listener));

    // Both clients saw a transport close and reconnect on their own.
    dashboard.recorder.wait_for("connection_ack", 2).await;
    hook.recorder.wait_for("connection_ack", 2).await;
    wait_until("2 clients again", || stats.clients_connected() == 2).await;

    hook.emit("claude_event", json!({"after": true})).await;
    let events = dashboard.recorder.wait_for("claude_event", 2).await;
    assert_eq!(events[1]["after"], true);
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.events_processed, 2, "counters survive the restart");
    assert_eq!(
        hub.hub.history(None).len(),
        2,
        "history survives the restart"
    );

    let report = tokio::time::timeout(DEADLINE, hub.shutdown())
        .await
        .unwrap();
    assert_eq!(report.clients_closed, 2);
    assert_eq!(stats.clients_connected(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binding_a_taken_address_is_reported_as_address_in_use() {
    let hub = TestHub::start(settings()).await;
    match server::bind(hub.addr).await {
        Err(server::BindError::AddrInUse { addr, .. }) => assert_eq!(addr, hub.addr),
        other => panic!("expected AddrInUse, got {other:?}"),
    }
    match server::bind_host("127.0.0.1", hub.addr.port()).await {
        Err(server::BindError::AddrInUse { .. }) => {}
        other => panic!("expected AddrInUse, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hub_dropped_without_close_is_freed() {
    let hub = warden::daemon::hub::Hub::new(
        settings(),
        std::sync::Arc::new(warden::daemon::os::clock::SystemClock::new()),
    );
    let weak = hub.downgrade();
    // Served by plain axum, so nothing calls `Hub::close`.
    let app = axum::Router::new().layer(hub.socketio_layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = TestClient::connect(&format!("http://{addr}/")).await;
    client.emit("claude_event", json!({"n": 1})).await;
    wait_until("the event", || hub.history(None).len() == 1).await;
    client.client.disconnect().await.unwrap();
    wait_until("the socket gone", || hub.sockets_open() == 0).await;
    server.abort();
    let _ = server.await;
    drop(hub);
    wait_until("the hub freed", || weak.upgrade().is_none()).await;
}
