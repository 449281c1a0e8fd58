//! The hub's HTTP surface over a real socket: /status, /stats, POST
//! /api/events (reaching Socket.IO clients; bad JSON → 400; oversized → 413)
//! and CORS.

mod hub_common;

use hub_common::{TestClient, TestHub, settings};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_posted_event_reaches_every_client_without_a_json_content_type() {
    let hub = TestHub::start(settings()).await;
    let a = TestClient::connect(&hub.url()).await;
    let b = TestClient::connect(&hub.url()).await;

    let response = reqwest::Client::new()
        .post(hub.http("/api/events"))
        .header("content-type", "application/json")
        .header("content-type", "text/plain")
        .body(r#"{"type":"hook","subtype":"post_tool","z":1,"a":2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    for client in [&a, &b] {
        let event = &client.recorder.wait_for("claude_event", 1).await[0];
        let keys: Vec<&str> = event
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "type",
                "subtype",
                "z",
                "a",
                "server_id",
                "received_at",
                "event_id"
            ]
        );
    }
    // Same path as a socket event: counted and in the history.
    let stats = hub.hub.stats().snapshot();
    assert_eq!(stats.events_processed, 1);
    assert_eq!(stats.events_relayed, 1);
    assert_eq!(hub.hub.history(None).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_json_is_a_400_with_a_json_message_and_nothing_is_relayed() {
    let hub = TestHub::start(settings()).await;
    let response = reqwest::Client::new()
        .post(hub.http("/api/events"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "request body is not valid JSON");
    assert!(body["detail"].as_str().unwrap().contains("line 1"));
    assert_eq!(hub.hub.stats().snapshot().events_processed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_over_max_payload_is_refused() {
    let mut s = settings();
    s.max_payload_bytes = 1_000;
    let hub = TestHub::start(s).await;
    let big = json!({ "blob": "x".repeat(2_000) }).to_string();
    let response = reqwest::Client::new()
        .post(hub.http("/api/events"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().is_some());
    assert_eq!(hub.hub.stats().snapshot().events_processed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_and_stats_report_the_real_counters() {
    let hub = TestHub::start(settings()).await;
    let _a = TestClient::connect(&hub.url()).await;
    let _b = TestClient::connect(&hub.url()).await;
    reqwest::Client::new()
        .post(hub.http("/api/events"))
        .header("content-type", "application/json")
        .body("[1,2,3]")
        .send()
        .await
        .unwrap();

    let status: Value = reqwest::get(hub.http("/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys: Vec<&str> = status
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["status", "version", "uptime", "clients", "health"]);
    assert_eq!(status["status"], "running");
    assert_eq!(status["version"], "9.9.9-test");
    assert_eq!(status["clients"], 2);
    assert_eq!(
        status["health"], "healthy",
        "from the provider the daemon passes"
    );
    assert!(status["uptime"].is_u64());

    let stats: Value = reqwest::get(hub.http("/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["clients_connected"], 2);
    assert_eq!(stats["events_processed"], 1);
    assert_eq!(stats["events_relayed"], 1);
    assert_eq!(stats["events_dropped"], 0);
    assert_eq!(stats["errors"], 0);
    assert_eq!(stats["history_size"], 1);
    assert!(stats["uptime_seconds"].is_u64());
    let last = stats["last_activity"].as_str().unwrap();
    assert!(warden::time::WallTime::parse_iso8601(last).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cors_headers_are_sent_only_when_configured() {
    let plain = TestHub::start(settings()).await;
    let response = reqwest::Client::new()
        .get(plain.http("/status"))
        .header("origin", "http://dashboard.example")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let mut s = settings();
    s.cors_allowed_origins = Some(vec!["http://dashboard.example".into()]);
    let cors = TestHub::start(s).await;
    let client = reqwest::Client::new();
    let allowed = client
        .get(cors.http("/status"))
        .header("origin", "http://dashboard.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://dashboard.example"
    );
    // The Socket.IO polling endpoint is covered too.
    let polling = client
        .get(cors.http("/socket.io/?EIO=4&transport=polling"))
        .header("origin", "http://dashboard.example")
        .send()
        .await
        .unwrap();
    assert_eq!(polling.status(), 200);
    assert_eq!(
        polling.headers()["access-control-allow-origin"],
        "http://dashboard.example"
    );
    let other = client
        .get(cors.http("/status"))
        .header("origin", "http://elsewhere.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[test]
fn an_invalid_cors_origin_is_named() {
    let error = warden::daemon::hub::http::cors_layer(&["bad\norigin".to_owned()]).unwrap_err();
    assert!(error.to_string().contains("bad\\norigin"));
}
