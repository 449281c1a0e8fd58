//! Memory is bounded in bytes, not only in count, in the real `warden`
//! binary (default config): sixty 1 MB bodies `[0,0,0,...]` posted to
//! `/api/events` keep the daemon's resident memory bounded (each event is
//! kept as the stamped bytes, the history is capped at
//! `event_history_max_bytes`), and one `get_history` asking for everything
//! answers within `history_answer_max_bytes`.
//! (Before: each such body cost ~34 MB once parsed and kept; sixty took the
//! daemon to 2 GB, and one get_history cloned the whole history.)
//!
//! Stamping builds no tree either: with a small history, twenty such bodies
//! over HTTP and twenty over Socket.IO raise the daemon's peak resident
//! memory (`VmHWM`) by 16 MB (history, buffers, allocator arenas), under a
//! 32 MB bound. (Before: each was parsed into a `serde_json::Value` for the
//! moment of stamping, ~34 MB at once; the peak grew by 54 MB.)

mod daemon_common;
mod hub_common;

use daemon_common::Env;
use hub_common::TestClient;
use serde_json::json;

const HISTORY_MAX_BYTES: usize = 16 << 20;
const ANSWER_MAX_BYTES: usize = 4 << 20;
const RSS_BOUND_KB: u64 = 200 << 10;

fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

/// A `/proc/<pid>/status` figure in kB (`VmRSS:`, `VmHWM:` the peak).
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect(field)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_one_megabyte_events_and_a_full_get_history_keep_memory_bounded() {
    let env = Env::new();
    let mut daemon = env.spawn(&[]);
    tokio::task::block_in_place(|| env.wait_ready(&mut daemon));
    let pid = daemon.pid();

    // [0,0,...,0]: just under the 1,000,000-byte payload limit.
    let zeros = 499_990;
    let mut body = String::with_capacity(2 * zeros + 2);
    body.push('[');
    for i in 0..zeros {
        body.push_str(if i == 0 { "0" } else { ",0" });
    }
    body.push(']');
    let http = reqwest::Client::new();
    let mut peak_kb = 0;
    for _ in 0..60 {
        let response = http
            .post(format!("http://127.0.0.1:{}/api/events", env.port))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("post");
        assert!(response.status().is_success(), "{}", response.status());
        peak_kb = peak_kb.max(rss_kb(pid));
    }
    let (_, stats) = env.http_get("/stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("stats");
    assert_eq!(stats["events_processed"], 60);
    let kept = stats["history_bytes"].as_u64().expect("history_bytes") as usize;
    assert!(kept <= HISTORY_MAX_BYTES, "{stats}");
    assert!(
        kept >= HISTORY_MAX_BYTES / 2,
        "the history still holds events: {stats}"
    );

    let asker = TestClient::connect(&env.url()).await;
    asker.emit("get_history", json!({"limit": 1_000_000})).await;
    let answer = asker.recorder.wait_for("event_history", 1).await.remove(0);
    let events = answer["events"].as_array().expect("events");
    assert!(!events.is_empty());
    assert_eq!(answer["count"], events.len());
    let answered: usize = events.iter().map(|e| e.to_string().len()).sum();
    assert!(answered <= ANSWER_MAX_BYTES, "{answered} bytes answered");
    assert_eq!(events[0]["data"].as_array().map(Vec::len), Some(zeros));

    peak_kb = peak_kb.max(rss_kb(pid));
    eprintln!("peak RSS {peak_kb} kB, history {kept} bytes, answer {answered} bytes");
    assert!(
        peak_kb < RSS_BOUND_KB,
        "RSS {peak_kb} kB exceeds {RSS_BOUND_KB} kB"
    );
}

/// `[0,0,...,0]` of just under `bytes` bytes.
fn zeros(bytes: usize) -> String {
    let count = bytes / 2 - 5;
    let mut body = String::with_capacity(2 * count + 2);
    body.push('[');
    for i in 0..count {
        body.push_str(if i == 0 { "0" } else { ",0" });
    }
    body.push(']');
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamping_a_large_payload_builds_no_tree() {
    const HISTORY_BYTES: u64 = 2 << 20;
    /// What the peak may grow by: the history, bodies and packets in
    /// flight, WebSocket buffers, the allocator's per-thread arenas (16 MB
    /// measured); the tree path grew it by 54 MB (a parsed 1 MB body alone
    /// is ~34 MB).
    const GROWTH_BOUND_KB: u64 = 32 << 10;
    let env = Env::new();
    let config = env.state_dir().join("config.json");
    let body = json!({"server": {"event_history_max_bytes": HISTORY_BYTES}});
    std::fs::write(&config, body.to_string()).expect("config");
    let mut daemon = env.spawn(&["--config", config.to_str().expect("utf-8 path")]);
    tokio::task::block_in_place(|| env.wait_ready(&mut daemon));
    let pid = daemon.pid();
    let sender = TestClient::connect(&env.url()).await;
    let watcher = TestClient::connect(&env.url()).await;
    // Warm up: one small event each way, then the baseline.
    let http = reqwest::Client::new();
    let post = async |body: String| {
        let response = http
            .post(format!("http://127.0.0.1:{}/api/events", env.port))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert!(response.status().is_success(), "{}", response.status());
    };
    post("{}".to_owned()).await;
    sender.emit("claude_event", json!({})).await;
    watcher.recorder.wait_for("claude_event", 2).await;
    let baseline_kb = status_kb(pid, "VmHWM:");

    let body = zeros(1_000_000 - 64);
    let payload: serde_json::Value = serde_json::from_str(&body).expect("zeros");
    for round in 0..20 {
        post(body.clone()).await;
        sender.emit("claude_event", payload.clone()).await;
        watcher
            .recorder
            .wait_for("claude_event", 4 + 2 * round)
            .await;
    }
    let (_, stats) = env.http_get("/stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("stats");
    assert_eq!(stats["events_processed"], 42, "{stats}");
    let peak_kb = status_kb(pid, "VmHWM:");
    eprintln!("peak RSS {baseline_kb} kB before, {peak_kb} kB after 40 events of 1 MB");
    assert!(
        peak_kb < baseline_kb + GROWTH_BOUND_KB,
        "the peak grew by {} kB (bound {GROWTH_BOUND_KB} kB)",
        peak_kb - baseline_kb
    );
}
