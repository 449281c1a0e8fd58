//! Cluster mode end to end: a real `redis-server` (started here, on a free
//! loopback port, persistence off) and two or three real `warden` processes
//! against it, with real Socket.IO clients on each node.
//!
//! `redis-server` must be on the PATH (Debian package `redis-server`;
//! `scripts/test` installs it). Without it these tests fail and say how to
//! install it, unless `WARDEN_SKIP_REDIS_TESTS=1` was set when they were
//! built: `build.rs` then sets `cfg(skip_redis_tests)`, which compiles each
//! of them as `#[ignore]`d, so the harness reports them as ignored (and
//! counts them) instead of passing. `--include-ignored` still runs them.
//!
//! "Nothing more arrives later" is shown with a marker, never a pause: a
//! marker event sent after, through the same path (the Redis channel), is
//! delivered after everything sent before it, so once every client has it,
//! every duplicate there could be has arrived too.

mod daemon_common;
mod hub_common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use daemon_common::redis::Redis;
use daemon_common::{Daemon, Env, http_get};
use hub_common::{DEADLINE, TestClient, wait_until};
use serde_json::{Value, json};

/// One warden node: its world, its process.
struct Node {
    env: Env,
    daemon: Daemon,
    id: String,
}

impl Node {
    fn start(redis: &Redis, prefix: &str, id: &str) -> Node {
        Node::start_with(redis, prefix, id, json!({}))
    }

    /// [`Node::start`] with a `server` section.
    fn start_with(redis: &Redis, prefix: &str, id: &str, server: Value) -> Node {
        Node::start_config(redis, prefix, id, server, false)
    }

    /// [`Node::start_with`], with connection state recovery on or off
    /// (on: ordered mode, every node delivering from one stream).
    fn start_config(redis: &Redis, prefix: &str, id: &str, server: Value, recovery: bool) -> Node {
        let env = Env::new();
        let config = env.state_dir().join("cluster.json");
        let text = json!({
            "cluster": { "redis_url": redis.url(), "node_id": id, "prefix": prefix },
            "health_monitoring": { "check_interval": 1, "aggregation_window": 5 },
            "server": server,
            "connection_state_recovery": { "enabled": recovery },
        });
        std::fs::write(&config, text.to_string()).unwrap();
        let mut daemon = env.spawn(&["--config", config.to_str().unwrap()]);
        env.wait_ready(&mut daemon);
        Node {
            env,
            daemon,
            id: id.to_string(),
        }
    }

    fn url(&self) -> String {
        self.env.url()
    }

    fn json(&self, path: &str) -> (u16, Value) {
        let (code, body) = http_get(self.env.port, path);
        (code, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn cluster(&self) -> Value {
        self.json("/diagnostics").1["cluster"]["state"].clone()
    }

    fn ready(&self) -> bool {
        self.json("/readyz").0 == 200
    }

    fn post_event(&self, event: &Value) {
        use std::io::{Read, Write};
        let body = event.to_string();
        let mut s = TcpStream::connect(("127.0.0.1", self.env.port)).unwrap();
        write!(
            s,
            "POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 2"),
            "POST /api/events: {answer}"
        );
    }
}

/// Two nodes, `a` and `b` (`b` with `b_server` as its `server` section),
/// once each sees the other.
async fn pair(redis: &Redis, prefix: &str, b_server: Value) -> (Node, Node) {
    let a = Node::start(redis, prefix, "a");
    let b = Node::start_with(redis, prefix, "b", b_server);
    for node in [&a, &b] {
        wait_until("each node sees the other", || {
            node.cluster()["peers_seen"].as_array().map(Vec::len) == Some(1)
        })
        .await;
    }
    (a, b)
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().filter_map(|e| e["seq"].as_u64()).collect()
}

/// Asks `client` for the history and returns the events it answered.
async fn history(client: &TestClient, asked_before: usize) -> Vec<Value> {
    client.emit("get_history", json!({ "limit": 100 })).await;
    let answers = client
        .recorder
        .wait_for("event_history", asked_before + 1)
        .await;
    answers[asked_before]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Posts a marker event on `node` and waits until every one of `clients`
/// has it (see the module doc): what they received before it is complete.
async fn marker(node: &Node, seq: u64, clients: &[&TestClient]) {
    node.post_event(&json!({ "type": "marker", "seq": seq }));
    for client in clients {
        wait_until("the marker everywhere", || {
            seqs(&client.recorder.named("claude_event")).contains(&seq)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
async fn three_nodes_relay_every_event_exactly_once_and_share_the_history() {
    three_nodes_relay(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
async fn in_ordered_mode_three_nodes_relay_every_event_exactly_once_never_to_its_sender() {
    three_nodes_relay(true).await;
}

/// Every event once to every other client of three nodes, in its sender's
/// order, never to its sender, and one shared history; with `recovery`,
/// through ordered mode's stream.
async fn three_nodes_relay(recovery: bool) {
    let redis = Redis::start();
    let prefix = format!("t{}{}", std::process::id(), u8::from(recovery));
    let nodes: Vec<Node> = ["east", "west", "north"]
        .iter()
        .map(|id| Node::start_config(&redis, &prefix, id, json!({}), recovery))
        .collect();
    for node in &nodes {
        wait_until("every node sees its two peers", || {
            node.cluster()["peers_seen"].as_array().map(Vec::len) == Some(2)
        })
        .await;
    }

    let sender = TestClient::connect(&nodes[0].url()).await;
    let same_node = TestClient::connect(&nodes[0].url()).await;
    let west = TestClient::connect(&nodes[1].url()).await;
    let north = TestClient::connect(&nodes[2].url()).await;

    let sent: Vec<u64> = (1..=50).collect();
    for seq in &sent {
        sender
            .emit("claude_event", json!({ "type": "hook", "seq": seq }))
            .await;
    }
    for client in [&same_node, &west, &north] {
        let got = client.recorder.wait_for("claude_event", sent.len()).await;
        assert_eq!(seqs(&got), sent, "every event once, in the sender's order");
    }

    // An event posted over HTTP on one node reaches every client of every node.
    nodes[1].post_event(&json!({ "type": "http", "seq": 1000 }));
    for client in [&sender, &same_node, &west, &north] {
        wait_until("the posted event everywhere", || {
            seqs(&client.recorder.named("claude_event")).contains(&1000)
        })
        .await;
    }
    // A marker from east, then one from west, each through Redis to the
    // other nodes: every duplicate of the events above would be before them.
    let everyone = [&sender, &same_node, &west, &north];
    marker(&nodes[0], 2000, &everyone).await;
    marker(&nodes[1], 2001, &everyone).await;
    assert_eq!(
        seqs(&sender.recorder.named("claude_event")),
        [1000, 2000, 2001],
        "a sender never receives its own events"
    );
    for client in [&same_node, &west, &north] {
        assert_eq!(client.recorder.count("claude_event"), sent.len() + 3);
    }

    // Every node answers the same history: the shared stream.
    let mut expected = sent.clone();
    expected.extend([1000, 2000, 2001]);
    let mut answers = Vec::new();
    for client in [&same_node, &west, &north] {
        let start = Instant::now();
        let mut asked = 0;
        let events = loop {
            let events = history(client, asked).await;
            asked += 1;
            if events.len() == expected.len() {
                break events;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the shared history never held {} events: {:?}",
                expected.len(),
                seqs(&events)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        answers.push(events);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[1], answers[2]);
    assert_eq!(seqs(&answers[0]), expected);

    let state = nodes[2].cluster();
    assert_eq!(state["redis_state"], "connected");
    assert!(state["cross_node_received"].as_u64().unwrap() >= 51);
    let (_, metrics) = http_get(nodes[0].env.port, "/metrics");
    assert!(metrics.contains("warden_cluster_redis_up 1"), "{metrics}");
    assert!(metrics.contains("warden_cluster_peers 2"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
async fn a_redis_outage_keeps_local_relay_and_cross_node_relay_resumes() {
    let mut redis = Redis::start();
    let prefix = format!("o{}", std::process::id());
    let (a, b) = pair(&redis, &prefix, json!({})).await;
    let sender = TestClient::connect(&a.url()).await;
    let local = TestClient::connect(&a.url()).await;
    let remote = TestClient::connect(&b.url()).await;

    let mut seq = 0u64;
    let mut emit = async |n: usize| {
        for _ in 0..n {
            seq += 1;
            sender
                .emit("claude_event", json!({ "type": "hook", "seq": seq }))
                .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seq
    };

    let before = emit(20).await;
    remote.recorder.wait_for("claude_event", 20).await;

    // Redis dies mid-stream.
    redis.kill();
    emit(20).await;
    wait_until("node a notices the outage", || !a.ready()).await;
    let during = emit(20).await;
    local
        .recorder
        .wait_for("claude_event", during as usize)
        .await;
    assert_eq!(
        seqs(&local.recorder.named("claude_event")),
        (1..=during).collect::<Vec<_>>(),
        "local relay never stops, never loses, never duplicates"
    );
    let (code, readyz) = a.json("/readyz");
    assert_eq!(code, 503);
    assert!(readyz["reasons"].to_string().contains("Redis"), "{readyz}");
    wait_until("the dependency is reported as a warning", || {
        let (code, health) = a.json("/health");
        code == 200 && health["checks"]["redis_dependency"] == "warning"
    })
    .await;

    // Redis returns on the same port: cross-node relay resumes by itself.
    redis.restart();
    wait_until("both nodes reconnect", || a.ready() && b.ready()).await;
    let after_from = during + 1;
    let last = emit(20).await;
    wait_until("the events after the outage reach the other node", || {
        seqs(&remote.recorder.named("claude_event")).contains(&last)
    })
    .await;
    // One more from the sender is the marker: the same path (a, Redis, b),
    // so any duplicate of the events above arrives before it.
    let last = emit(1).await;
    for client in [&local, &remote] {
        wait_until("the marker", || {
            seqs(&client.recorder.named("claude_event")).contains(&last)
        })
        .await;
    }
    let got_remote = seqs(&remote.recorder.named("claude_event"));
    assert!(
        got_remote.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates: {got_remote:?}"
    );
    assert!(got_remote.starts_with(&(1..=before).collect::<Vec<_>>()));
    assert!(got_remote.ends_with(&(after_from..=last).collect::<Vec<_>>()));
    assert_eq!(
        seqs(&local.recorder.named("claude_event")),
        (1..=last).collect::<Vec<_>>()
    );

    // Never restarted, never stopped for it.
    let diagnostics = a.json("/diagnostics").1;
    assert_eq!(diagnostics["server_info"]["restarts"], 0);
    assert_eq!(diagnostics["server_info"]["pid"], a.daemon.pid());
    assert!(
        diagnostics["cluster"]["state"]["local_fallbacks"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        diagnostics["cluster"]["state"]["connects"]
            .as_u64()
            .unwrap()
            >= 2
    );
    let recoveries = &diagnostics["recovery_manager"];
    assert_eq!(recoveries["total_recoveries"], 0, "{recoveries}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
async fn a_node_starts_without_redis_and_a_killed_node_leaves_the_others_serving() {
    let mut redis = Redis::start();
    redis.kill();
    let prefix = format!("k{}", std::process::id());
    // Redis is down: the nodes start anyway, serve, and are not ready.
    let a = Node::start(&redis, &prefix, "a");
    let mut b = Node::start(&redis, &prefix, "b");
    let c = Node::start(&redis, &prefix, "c");
    assert!(!a.ready());
    // Reconnect attempts are bounded: after a few failures the reconnect
    // breaker opens and spaces them out.
    wait_until("the reconnect breaker opens", || {
        a.cluster()["reconnect_breaker"] == "open"
    })
    .await;
    assert!(a.cluster()["connect_failures"].as_u64().unwrap() >= 5);
    redis.restart();
    for node in [&a, &b, &c] {
        wait_until("ready once Redis is up", || node.ready()).await;
    }
    let sender = TestClient::connect(&a.url()).await;
    let on_c = TestClient::connect(&c.url()).await;
    let on_b = TestClient::connect(&b.url()).await;
    sender.emit("claude_event", json!({ "seq": 1 })).await;
    on_b.recorder.wait_for("claude_event", 1).await;
    on_c.recorder.wait_for("claude_event", 1).await;

    b.daemon.signal(libc::SIGKILL);
    b.daemon.wait_exit();
    sender.emit("claude_event", json!({ "seq": 2 })).await;
    let got = on_c.recorder.wait_for("claude_event", 2).await;
    assert_eq!(seqs(&got), [1, 2]);
    for node in [&a, &c] {
        assert!(node.ready());
        wait_until("the killed node drops out of the peers", || {
            node.cluster()["peers_seen"] == json!([if node.id == "a" { "c" } else { "a" }])
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
async fn foreign_values_and_garbage_in_redis_cost_neither_relay_nor_link() {
    let redis = Redis::start();
    let prefix = format!("f{}", std::process::id());
    // Someone else's string where warden keeps its history stream.
    let set = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "SET",
            &format!("{prefix}:history"),
            "x",
        ])
        .output()
        .expect("redis-cli (package redis-tools, installed with redis-server)");
    assert!(set.status.success(), "{set:?}");
    let a = Node::start(&redis, &prefix, "a");
    let b = Node::start(&redis, &prefix, "b");
    for node in [&a, &b] {
        wait_until("ready", || node.ready()).await;
    }
    let sender = TestClient::connect(&a.url()).await;
    let other = TestClient::connect(&b.url()).await;
    // Garbage on the adapter's request channel is refused by every node.
    let garbage = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "PUBLISH"])
        .arg(format!("{prefix}-request#/#"))
        .arg("\u{1}not msgpack at all")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&garbage.stdout).trim(),
        "2",
        "both nodes got it"
    );
    for seq in 1..=5 {
        sender.emit("claude_event", json!({ "seq": seq })).await;
    }
    let got = other.recorder.wait_for("claude_event", 5).await;
    assert_eq!(seqs(&got), [1, 2, 3, 4, 5], "relay is unaffected");
    wait_until("the refused history batch is counted", || {
        a.cluster()["history_overflowed"].as_u64() == Some(5)
    })
    .await;
    // The node answers from its own history and keeps its one connection.
    let events = history(&sender, 0).await;
    assert_eq!(seqs(&events), [1, 2, 3, 4, 5]);
    let state = a.cluster();
    assert_eq!(state["connects"], 1, "{state}");
    assert_eq!(state["redis_state"], "connected");
    assert!(state["history_read_failures"].as_u64().unwrap() >= 1);
    assert!(a.ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
async fn a_foreign_field_in_the_nodes_hash_costs_no_reconnect() {
    let redis = Redis::start();
    let prefix = format!("n{}", std::process::id());
    let nodes_key = format!("{prefix}:nodes");
    // Someone else's fields in the hash every node reads at each heartbeat.
    redis.cli(&["HSET", &nodes_key, "evil", "x"]);
    redis.cli(&["HSET", &nodes_key, "not a node id", "12"]);
    let a = Node::start(&redis, &prefix, "a");
    let b = Node::start(&redis, &prefix, "b");
    for node in [&a, &b] {
        wait_until("ready", || node.ready()).await;
    }
    wait_until("the peers are seen despite the garbage", || {
        a.cluster()["peers_seen"] == json!(["b"]) && b.cluster()["peers_seen"] == json!(["a"])
    })
    .await;
    // Several heartbeats have read the hash since (2 foreign fields each).
    wait_until("three heartbeats saw the foreign fields", || {
        a.cluster()["foreign_ignored"].as_u64() >= Some(6)
    })
    .await;
    for node in [&a, &b] {
        let state = node.cluster();
        assert_eq!(state["connects"], 1, "{state}");
        assert_eq!(state["disconnects"], 0, "{state}");
        assert_eq!(state["redis_state"], "connected", "{state}");
        assert_eq!(state["last_error"], Value::Null, "{state}");
        assert!(node.ready());
    }
    // Two nodes, two connections each, and this test's few redis-cli calls.
    let received = redis.connections_received();
    assert!(received <= 12, "{received} connections");
    let log = std::fs::read_to_string(a.env.log_file()).unwrap();
    assert_eq!(
        log.matches(&format!("ignoring 2 entries of {nodes_key}"))
            .count(),
        1,
        "logged once:\n{log}"
    );
    assert_eq!(
        redis.cli(&["HGET", &nodes_key, "evil"]).trim(),
        "x",
        "not ours to delete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
async fn last_error_clears_once_heartbeats_succeed_again() {
    let redis = Redis::start();
    let prefix = format!("e{}", std::process::id());
    let nodes_key = format!("{prefix}:nodes");
    let a = Node::start(&redis, &prefix, "a");
    wait_until("ready", || a.ready()).await;
    // A string where the hash should be: every heartbeat is refused.
    redis.cli(&["SET", &nodes_key, "x"]);
    wait_until("the refusal is reported", || {
        a.cluster()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("WRONGTYPE"))
    })
    .await;
    redis.cli(&["DEL", &nodes_key]);
    wait_until("last_error clears at the next good heartbeat", || {
        a.cluster()["last_error"].is_null()
    })
    .await;
    let state = a.cluster();
    assert_eq!(state["connects"], 1, "{state}");
    assert_eq!(state["redis_state"], "connected", "{state}");
    assert!(a.ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
async fn a_large_history_answer_never_costs_the_subscriber_connection() {
    // Redis closes a subscribed connection whose pending output passes the
    // pub/sub limit (32 MB by default; 64 KB here, so the test stays small).
    let redis = Redis::start_with(&["--client-output-buffer-limit", "pubsub 64kb 32kb 60"]);
    let prefix = format!("h{}", std::process::id());
    let a = Node::start(&redis, &prefix, "a");
    wait_until("ready", || a.ready()).await;
    // The stream is filled behind the node's back (no pub/sub traffic):
    // 100 events of 2 KB.
    let script = "for i = 1, 100 do redis.call('XADD', KEYS[1], '*', 'event', \
                  '{\"seq\":' .. i .. ',\"pad\":\"' .. string.rep('x', 2000) .. '\"}') end";
    redis.cli(&["EVAL", script, "1", &format!("{prefix}:history")]);
    let sender = TestClient::connect(&a.url()).await;
    // About 200 KB in one answer.
    let events = history(&sender, 0).await;
    assert_eq!(seqs(&events), (1..=100).collect::<Vec<u64>>());
    // A heartbeat after the answer proves the subscriber is still there.
    let beats = |s: &Value| s["heartbeat_age_ms"].as_u64();
    let before = beats(&a.cluster());
    wait_until("a heartbeat after the answer", || {
        beats(&a.cluster()) < before
    })
    .await;
    let state = a.cluster();
    assert_eq!(state["history_read_failures"], 0, "{state}");
    assert_eq!(state["disconnects"], 0, "{state}");
    assert_eq!(state["connects"], 1, "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
async fn a_link_redis_keeps_closing_at_once_opens_the_reconnect_breaker() {
    let redis = Redis::start();
    let prefix = format!("k{}", std::process::id());
    let a = Node::start(&redis, &prefix, "a");
    wait_until("ready", || a.ready()).await;
    // Something closes every subscribed connection as soon as it appears:
    // each reconnect "succeeds" and is lost before its next heartbeat.
    struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _stop_on_panic = StopOnDrop(std::sync::Arc::clone(&stop));
    let killer = {
        let stop = std::sync::Arc::clone(&stop);
        let port = redis.port.to_string();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new("redis-cli")
                    .args(["-p", &port, "CLIENT", "KILL", "TYPE", "pubsub"])
                    .stdout(Stdio::null())
                    .status();
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    wait_until("the reconnect breaker opens", || {
        a.cluster()["reconnect_breaker"] == "open"
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    killer.join().unwrap();
    let state = a.cluster();
    // Five failed attempts open it; a few more may have started meanwhile.
    let connects = state["connects"].as_u64().unwrap();
    assert!((2..=12).contains(&connects), "{state}");
    wait_until("the link comes back once Redis lets it", || a.ready()).await;
}

/// `warden status` shows the node's cluster line (node id, Redis state,
/// peers) from /diagnostics, and during a Redis outage says so and points to
/// doctor, whose findings give the steps (issue 15 item 10). On the old code
/// status printed no cluster line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
async fn status_and_doctor_show_the_cluster_and_a_redis_outage() {
    let mut redis = Redis::start();
    let prefix = format!("s{}", std::process::id());
    let a = Node::start(&redis, &prefix, "a");
    let b = Node::start(&redis, &prefix, "b");
    wait_until("a sees b", || a.cluster()["peers_seen"] == json!(["b"])).await;
    let status = |node: &Node| {
        let config = node.env.state_dir().join("cluster.json");
        let out = node
            .env
            .run(&["status", "--config", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = status(&a);
    assert!(
        text.contains(&format!("cluster: node a, Redis {}", redis.url()))
            && text.contains(" connected, round trip ")
            && text.contains("peers seen: b"),
        "{text}"
    );

    redis.kill();
    wait_until("a notices the outage", || {
        a.cluster()["redis_state"] != "connected"
    })
    .await;
    let text = status(&a);
    assert!(
        text.contains("cluster: node a") && text.contains("`warden doctor --port"),
        "{text}"
    );
    let config = a.env.state_dir().join("cluster.json");
    let doctor = a.env.run(&["doctor", "--config", config.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(
        report.contains(&format!("redis-cli -u {}", redis.url())) && report.contains(" ping`"),
        "{report}"
    );
    drop(b);
}

/// Asks `client` for `get_history {since, limit}`; returns the answer.
async fn history_since(client: &TestClient, asked_before: usize, since: &str, limit: u64) -> Value {
    client
        .emit("get_history", json!({ "since": since, "limit": limit }))
        .await;
    let answers = client
        .recorder
        .wait_for("event_history", asked_before + 1)
        .await;
    answers[asked_before].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
async fn get_history_since_reads_the_shared_history_on_any_node() {
    let redis = Redis::start();
    let prefix = format!("s{}", std::process::id());
    let (a, b) = pair(&redis, &prefix, json!({})).await;
    let on_a = TestClient::connect(&a.url()).await;
    let on_b = TestClient::connect(&b.url()).await;
    // 1..=10 accepted by a, then (once they are in the stream) 11..=20 by b:
    // ids of two epochs, one stream order.
    for seq in 1..=10 {
        a.post_event(&json!({ "type": "hook", "seq": seq }));
    }
    let mut asked = 0;
    let stream_holds = async |client: &TestClient, asked: &mut usize, n: usize| {
        let start = Instant::now();
        while history(client, *asked).await.len() < n {
            *asked += 1;
            assert!(start.elapsed() < DEADLINE, "the stream never held {n}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        *asked += 1;
    };
    stream_holds(&on_b, &mut asked, 10).await;
    for seq in 11..=20 {
        b.post_event(&json!({ "type": "hook", "seq": seq }));
    }
    stream_holds(&on_b, &mut asked, 20).await;
    let got = on_b.recorder.wait_for("claude_event", 20).await;
    assert_eq!(seqs(&got), (1..=20).collect::<Vec<u64>>());
    let id_of = |seq: u64| {
        got[seq as usize - 1]["event_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // On b, after an event a accepted: b's own events follow it.
    let answer = history_since(&on_b, asked, &id_of(5), 100).await;
    asked += 1;
    let events = answer["events"].as_array().unwrap().clone();
    assert_eq!(seqs(&events), (6..=20).collect::<Vec<u64>>(), "{answer}");
    assert_eq!(answer["gap"], Value::Null);
    assert_eq!(answer["more"], false);
    // Paged: five at a time, then on from the last one's id.
    let answer = history_since(&on_b, asked, &id_of(5), 5).await;
    asked += 1;
    assert_eq!(seqs(answer["events"].as_array().unwrap()), [6, 7, 8, 9, 10]);
    assert_eq!(answer["more"], true);
    let answer = history_since(&on_b, asked, &id_of(10), 5).await;
    asked += 1;
    assert_eq!(
        seqs(answer["events"].as_array().unwrap()),
        [11, 12, 13, 14, 15]
    );
    // On a, after an event b accepted: the same stream.
    let answer = history_since(&on_a, 0, &id_of(15), 100).await;
    assert_eq!(
        seqs(answer["events"].as_array().unwrap()),
        [16, 17, 18, 19, 20]
    );
    assert_eq!(answer["gap"], Value::Null);
    // An id the stream does not hold: the oldest kept, and a gap said.
    let answer = history_since(&on_b, asked, "00000000000000ff-3", 100).await;
    assert_eq!(answer["gap"], "not_in_shared_history", "{answer}");
    assert_eq!(
        seqs(answer["events"].as_array().unwrap()),
        (1..=20).collect::<Vec<u64>>()
    );
}

/// The highest `seq` among `client`'s `claude_event`s (0 if none).
fn max_seq(client: &TestClient) -> u64 {
    seqs(&client.recorder.named("claude_event"))
        .into_iter()
        .max()
        .unwrap_or(0)
}

/// Publishes are pipelined (the sender's relay never waits for Redis per
/// event), and Redis dies and returns in the middle of a stream: the other
/// node's dashboard still sees the sender's events once each, in order,
/// missing only some of those sent while Redis was away; the sender's own
/// node delivers every event once; and the sender's node accounts for every
/// event exactly once, as published or as delivered locally only (the
/// fallback rule: a publish that fails is never retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
async fn pipelined_publishes_keep_order_and_count_each_event_once_across_a_redis_restart() {
    let mut redis = Redis::start();
    let prefix = format!("p{}", std::process::id());
    let (a, b) = pair(&redis, &prefix, json!({})).await;
    let sender = TestClient::connect(&a.url()).await;
    let local = TestClient::connect(&a.url()).await;
    let remote = TestClient::connect(&b.url()).await;

    // One sender streams numbered events, a little paced (bursts of 20),
    // until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let last_sent = Arc::new(AtomicU64::new(0));
    let stream = {
        let (stop, last_sent) = (Arc::clone(&stop), Arc::clone(&last_sent));
        tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::SeqCst) {
                seq += 1;
                sender
                    .emit("claude_event", json!({ "type": "hook", "seq": seq }))
                    .await;
                last_sent.store(seq, Ordering::SeqCst);
                if seq.is_multiple_of(20) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            sender
        })
    };
    wait_until("the stream crosses nodes", || max_seq(&remote) >= 300).await;

    // Redis dies mid-stream: everything the other node had is complete.
    let before = max_seq(&remote);
    redis.kill();
    wait_until("node a notices the outage", || !a.ready()).await;
    let during = last_sent.load(Ordering::SeqCst);
    wait_until("the stream goes on locally", || {
        max_seq(&local) >= during + 200
    })
    .await;
    redis.restart();
    wait_until("both nodes reconnect", || a.ready() && b.ready()).await;
    let resumed = last_sent.load(Ordering::SeqCst);
    wait_until("the stream crosses nodes again", || {
        max_seq(&remote) >= resumed + 300
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let sender = stream.await.unwrap();
    // The marker: the same path (a, Redis, b) after every event above.
    let last = last_sent.load(Ordering::SeqCst) + 1;
    sender
        .emit("claude_event", json!({ "type": "marker", "seq": last }))
        .await;
    for client in [&local, &remote] {
        wait_until("the marker", || max_seq(client) == last).await;
    }
    assert_eq!(
        sender.recorder.count("event_refused"),
        0,
        "paced: none refused"
    );

    assert_eq!(
        seqs(&local.recorder.named("claude_event")),
        (1..=last).collect::<Vec<_>>(),
        "the sender's node delivers every event once, in order"
    );
    let got = seqs(&remote.recorder.named("claude_event"));
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "the other node: no duplicate, the sender's order"
    );
    let missing: Vec<u64> = (1..=last)
        .filter(|s| got.binary_search(s).is_err())
        .collect();
    assert!(
        missing.iter().all(|s| (before + 1..=resumed).contains(s)),
        "only events sent while Redis was away may be missing on the other node \
         (before {before}, resumed {resumed}): {missing:?}"
    );
    let state = a.cluster();
    let published = state["events_published"].as_u64().unwrap();
    let fallbacks = state["local_fallbacks"].as_u64().unwrap();
    assert!(fallbacks > 0, "{state}");
    assert_eq!(
        published + fallbacks,
        last,
        "each event published once or delivered locally only, once: {state}"
    );
    assert_eq!(state["events_outbox"], 0, "{state}");
}

/// A reader on the other node whose buffer fills while it does not read is
/// waited for there, as on the sender's node: once it reads it has every
/// event, in order (the adapter's broadcast dropped its deliveries past its
/// buffer at once: it lost about 200 of them). Garbage on the events channel
/// is ignored and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
async fn a_late_reader_on_the_other_node_is_waited_for_and_loses_nothing() {
    let redis = Redis::start();
    let prefix = format!("l{}", std::process::id());
    let (a, b) = pair(
        &redis,
        &prefix,
        json!({ "socket_buffer_packets": 256, "slow_reader_timeout": 60 }),
    )
    .await;
    redis.cli(&["PUBLISH", &format!("{prefix}:events"), "not an event"]);
    redis.cli(&["PUBLISH", &format!("{prefix}:events"), "{\"half\":\nx"]);
    let dashboard = TestClient::connect(&b.url()).await;
    let poll_url = hub_common::stalled_reader(&format!("http://127.0.0.1:{}", b.env.port)).await;
    let sender = TestClient::connect(&a.url()).await;
    let sent = 450u64;
    for seq in 1..=sent {
        sender
            .emit("claude_event", json!({ "type": "hook", "seq": seq }))
            .await;
    }
    wait_until("node a published every event", || {
        a.cluster()["events_published"].as_u64() == Some(sent)
    })
    .await;

    // Now the late reader reads, answering pings, until it has every event.
    let received = hub_common::read_late(&poll_url, sent as usize, "seq").await;
    assert_eq!(
        received,
        (1..=sent).collect::<Vec<_>>(),
        "every event, in order"
    );
    let got = dashboard
        .recorder
        .wait_for("claude_event", sent as usize)
        .await;
    assert_eq!(seqs(&got), (1..=sent).collect::<Vec<_>>());
    let (_, stats) = b.json("/stats");
    assert_eq!(stats["events_dropped"], 0, "{stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
    let state = b.cluster();
    assert_eq!(state["foreign_ignored"], 2, "{state}");
    assert_eq!(state["incoming_dropped"], 0, "{state}");
}

/// A reader on the other node that never reads costs the other dashboards
/// there nothing: the node waits for it once (`slow_reader_timeout`), then
/// drops only its deliveries; every event reaches the honest dashboard, in
/// order, and nothing is dropped from Redis meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
async fn a_stalled_reader_on_the_other_node_loses_only_its_own() {
    let redis = Redis::start();
    let prefix = format!("s{}", std::process::id());
    let (a, b) = pair(
        &redis,
        &prefix,
        json!({ "socket_buffer_packets": 256, "slow_reader_timeout": 1 }),
    )
    .await;
    let dashboard = TestClient::connect(&b.url()).await;
    let _never_polled =
        hub_common::stalled_reader(&format!("http://127.0.0.1:{}", b.env.port)).await;
    let sender = TestClient::connect(&a.url()).await;
    let sent = 1_000u64;
    for seq in 1..=sent {
        sender
            .emit("claude_event", json!({ "type": "hook", "seq": seq }))
            .await;
    }
    let got = dashboard
        .recorder
        .wait_for("claude_event", sent as usize)
        .await;
    assert_eq!(seqs(&got), (1..=sent).collect::<Vec<_>>());
    let (_, stats) = b.json("/stats");
    assert_eq!(stats["errors"], 0, "{stats}");
    assert_eq!(
        stats["events_dropped"], stats["events_dropped_recipient_full"],
        "every drop is the stalled reader's: {stats}"
    );
    assert!(stats["events_dropped"].as_u64().unwrap() <= sent, "{stats}");
    assert_eq!(b.cluster()["incoming_dropped"], 0);
}
