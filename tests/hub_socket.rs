//! The Socket.IO surface of the hub, seen by real clients over real sockets:
//! connection_ack, relay to others only, history, ping/pong, version, and
//! per-sender order under a burst.

mod hub_common;

use std::time::Instant;

use hub_common::{TestClient, TestHub, settings, wait_until};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_gets_a_connection_ack_naming_the_server() {
    let hub = TestHub::start(settings()).await;
    let client = TestClient::connect(&hub.url()).await;

    let ack = &client.recorder.named("connection_ack")[0];
    assert_eq!(ack["server_id"], "socketio-server-test");
    assert_eq!(ack["version"], "9.9.9-test");
    assert!(ack["sid"].as_str().is_some_and(|sid| !sid.is_empty()));
    let timestamp = ack["timestamp"].as_str().unwrap();
    assert!(warden::time::WallTime::parse_iso8601(timestamp).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_reaches_every_other_client_stamped_but_never_its_sender() {
    let hub = TestHub::start(settings()).await;
    let sender = TestClient::connect(&hub.url()).await;
    let b = TestClient::connect(&hub.url()).await;
    let c = TestClient::connect(&hub.url()).await;

    sender
        .emit(
            "claude_event",
            json!({"type": "hook", "subtype": "pre_tool", "n": 1}),
        )
        .await;

    for receiver in [&b, &c] {
        let events = receiver.recorder.wait_for("claude_event", 1).await;
        let event = events[0].as_object().unwrap();
        let keys: Vec<&str> = event.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "type",
                "subtype",
                "n",
                "server_id",
                "received_at",
                "event_id"
            ]
        );
        assert_eq!(event["server_id"], "socketio-server-test");
    }
    // Had the sender been a recipient, the relay would sit in its buffer
    // before this pong.
    sender.emit("ping", json!({})).await;
    sender.recorder.wait_for("pong", 1).await;
    assert_eq!(sender.recorder.count("claude_event"), 0);

    let stats = hub.hub.stats().snapshot();
    assert_eq!(stats.events_processed, 1);
    assert_eq!(stats.events_relayed, 1);
    assert_eq!(stats.events_dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_object_payload_is_wrapped() {
    let hub = TestHub::start(settings()).await;
    let sender = TestClient::connect(&hub.url()).await;
    let receiver = TestClient::connect(&hub.url()).await;

    sender.emit("claude_event", json!("just text")).await;

    let event = &receiver.recorder.wait_for("claude_event", 1).await[0];
    assert_eq!(event["data"], "just text");
    assert_eq!(event["server_id"], "socketio-server-test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_is_bounded_and_answers_the_most_recent_events_oldest_first() {
    let mut s = settings();
    s.event_history_size = 5;
    let hub = TestHub::start(s).await;
    let sender = TestClient::connect(&hub.url()).await;
    let asker = TestClient::connect(&hub.url()).await;

    for n in 0..8 {
        sender.emit("claude_event", json!({"n": n})).await;
    }
    asker.recorder.wait_for("claude_event", 8).await;

    asker.emit("get_history", json!({"limit": 100})).await;
    let answer = &asker.recorder.wait_for("event_history", 1).await[0];
    assert_eq!(answer["count"], 5);
    let ns: Vec<&Value> = answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["n"])
        .collect();
    assert_eq!(ns, [&json!(3), &json!(4), &json!(5), &json!(6), &json!(7)]);

    asker.emit("get_history", json!({"limit": 2})).await;
    let answer = &asker.recorder.wait_for("event_history", 2).await[1];
    assert_eq!(answer["count"], 2);
    assert_eq!(answer["events"][0]["n"], 6);
    assert_eq!(answer["events"][1]["n"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ping_gets_pong_and_get_version_gets_version_info() {
    let hub = TestHub::start(settings()).await;
    let client = TestClient::connect(&hub.url()).await;

    client.emit("ping", json!({})).await;
    let pong = &client.recorder.wait_for("pong", 1).await[0];
    assert!(warden::time::WallTime::parse_iso8601(pong["timestamp"].as_str().unwrap()).is_some());

    client.emit("get_version", json!({})).await;
    let info = &client.recorder.wait_for("version_info", 1).await[0];
    assert_eq!(info["version"], "9.9.9-test");
    assert_eq!(info["server_id"], "socketio-server-test");

    let last = hub.hub.stats().snapshot().last_activity;
    assert!(last.is_some(), "client traffic is recorded as activity");
}

/// Two hooks send concurrently; a dashboard must see each hook's events in
/// the order that hook sent them (socketioxide runs ordinary handlers as
/// independent tasks, which can reorder them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_senders_order_is_kept_when_senders_interleave() {
    let hub = TestHub::start(settings()).await;
    let a = TestClient::connect(&hub.url()).await;
    let b = TestClient::connect(&hub.url()).await;
    let dashboard = TestClient::connect(&hub.url()).await;
    const PER_SENDER: u64 = 1_000;

    let send = |client: TestClient, name: &'static str| async move {
        for seq in 0..PER_SENDER {
            client
                .emit("claude_event", json!({"from": name, "seq": seq}))
                .await;
        }
        client
    };
    let (ta, tb) = tokio::join!(tokio::spawn(send(a, "a")), tokio::spawn(send(b, "b")));
    let (_a, _b) = (ta.unwrap(), tb.unwrap());

    let events = dashboard
        .recorder
        .wait_for("claude_event", 2 * PER_SENDER as usize)
        .await;
    for name in ["a", "b"] {
        let seqs: Vec<u64> = events
            .iter()
            .filter(|e| e["from"] == name)
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (0..PER_SENDER).collect();
        assert_eq!(seqs, expected, "order of sender {name}");
    }
}

/// A hook bursts 5,000 events to three dashboards: nothing is lost, nothing
/// reordered, nothing counted as dropped. Prints what it measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_5000_events_to_three_dashboards_loses_nothing() {
    let hub = TestHub::start(settings()).await;
    burst(&hub, 5_000, 3).await;
    let stats = hub.hub.stats().snapshot();
    assert_eq!(stats.events_processed, 5_000);
    assert_eq!(stats.events_relayed, 5_000);
    assert_eq!(stats.events_dropped, 0);
    assert_eq!(stats.errors, 0);
}

/// Measurement, not a check: the same burst with socketioxide's default
/// buffer of 128 packets. Run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measurement: shows the loss with socketioxide's default buffer"]
async fn measure_the_burst_with_the_default_buffer_of_128() {
    let mut s = settings();
    s.socket_buffer_packets = 128;
    let hub = TestHub::start(s).await;
    let dashboards = connect_dashboards(&hub, 3).await;
    let sender = TestClient::connect(&hub.url()).await;
    for seq in 0..5_000u64 {
        sender.emit("claude_event", json!({"seq": seq})).await;
    }
    wait_until("all events relayed", || {
        hub.hub.stats().snapshot().events_relayed == 5_000
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let received: Vec<usize> = dashboards
        .iter()
        .map(|d| d.recorder.count("claude_event"))
        .collect();
    eprintln!(
        "default buffer 128: received {received:?} of 5000 each; events_dropped = {}",
        hub.hub.stats().snapshot().events_dropped
    );
}

async fn connect_dashboards(hub: &TestHub, n: usize) -> Vec<TestClient> {
    let mut dashboards = Vec::new();
    for _ in 0..n {
        dashboards.push(TestClient::connect(&hub.url()).await);
    }
    dashboards
}

async fn burst(hub: &TestHub, events: u64, readers: usize) {
    let dashboards = connect_dashboards(hub, readers).await;
    let sender = TestClient::connect(&hub.url()).await;

    let start = Instant::now();
    for seq in 0..events {
        sender
            .emit("claude_event", json!({"type": "hook", "seq": seq}))
            .await;
    }
    let sent = start.elapsed();
    let expected: Vec<u64> = (0..events).collect();
    for dashboard in &dashboards {
        let got = dashboard
            .recorder
            .wait_for("claude_event", events as usize)
            .await;
        let seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, expected, "every event, in order, exactly once");
    }
    let all = start.elapsed();
    eprintln!(
        "burst: {events} events x {readers} dashboards: received {} of {}; sent in {sent:?}, all delivered in {all:?}",
        dashboards
            .iter()
            .map(|d| d.recorder.count("claude_event"))
            .sum::<usize>(),
        events as usize * readers,
    );
}
