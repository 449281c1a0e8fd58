//! Socket.IO connection state recovery through the real binary with the
//! real client: an unmodified socket.io-client 4.8.1 under Node
//! (`tests/clients/csr_client.js`) records the `seq` of every event it gets
//! and `socket.recovered` at every connect, while the test posts numbered
//! events at a steady rate over HTTP and disrupts the connection in the
//! middle. Every case checks the client's sequence: none missing, none
//! duplicated, in order, and `recovered === true` after each disruption.
//!
//! - a network blip (a TCP proxy in the test cuts the connection and refuses
//!   new ones for 2 s), three times in a row on one session;
//! - a client that had received nothing before it was cut off (socket.io's
//!   own server does not recover it: socket.io#5538);
//! - clear_connections then restart_service, run by the daemon's own ladder
//!   (memory_mb 1 makes every check critical; two actions at most);
//! - an expired session: `recovered === false`, and `get_history {since}`
//!   from the last event id catches up exactly;
//! - a python-socketio 5.18 client (no recovery in that client, and the
//!   feature off) catches up with `get_history {since}` after it was away;
//! - the replay gate: a dashboard resumed while a reader that reads nothing
//!   holds the relay back, so the events of its replay are delivered live
//!   after it too; it gets each once, in order.
//!
//! No timed assertions: the pauses only pace the scenario; every wait polls
//! with a generous deadline. Skipped (with a note) when `node` or
//! tests/clients/node_modules is missing (`npm ci --prefix tests/clients`).

mod daemon_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use daemon_common::redis::Redis;
use daemon_common::{DEADLINE, Daemon, Env, http_get, try_http_get, wait_until};
use serde_json::{Value, json};

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn node_available() -> bool {
    let modules = clients_dir().join("node_modules/socket.io-client");
    let node = Command::new("node").arg("--version").output();
    clients_present(
        modules.exists() && node.is_ok(),
        "node or tests/clients/node_modules (npm ci --prefix tests/clients)",
    )
}

/// Whether the stock clients these tests drive are here. Missing clients
/// fail the test (a skipped test must not pass silently) unless the run
/// skips them knowingly with `WARDEN_SKIP_CLIENT_TESTS=1`, as
/// tests/client_healing.rs does.
fn clients_present(present: bool, what: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var("WARDEN_SKIP_CLIENT_TESTS").as_deref() == Ok("1") {
        eprintln!("WARDEN_SKIP_CLIENT_TESTS=1: {what} missing, test SKIPPED");
        return false;
    }
    panic!(
        "{what} is missing: run scripts/test once, or set WARDEN_SKIP_CLIENT_TESTS=1 to skip \
         these tests knowingly"
    );
}

/// Starts warden with `config` (a JSON config file) and waits until it serves.
fn start(env: &Env, config: Value) -> Daemon {
    let path = env.state_dir().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let port = env.port.to_string();
    let config_path = path.to_str().unwrap().to_owned();
    let mut daemon = env.spawn(&["--port", &port, "--config", &config_path]);
    env.wait_ready(&mut daemon);
    daemon
}

fn recovery_on(extra: Value) -> Value {
    let mut section = json!({"enabled": true});
    if let (Some(base), Some(extra)) = (section.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    json!({ "connection_state_recovery": section })
}

/// POSTs one numbered event; false if the daemon did not take it (it may
/// be between two serving generations).
fn try_post(port: u16, seq: u64, last: bool) -> bool {
    let body = json!({"type": "csr_test", "seq": seq, "last": last}).to_string();
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 2")
}

/// POSTs one numbered event, retrying until the daemon takes it.
fn post(port: u16, seq: u64, last: bool) {
    let start = Instant::now();
    while !try_post(port, seq, last) {
        assert!(start.elapsed() < DEADLINE, "event {seq} never accepted");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Posts events 1, 2, 3... every 20 ms, each retried until taken, until stopped.
struct Poster {
    stop: Arc<AtomicBool>,
    posted: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Poster {
    fn start(port: u16) -> Poster {
        Poster::every(port, Duration::from_millis(20))
    }

    /// Posts with `pause` between events (none: as fast as HTTP allows).
    fn every(port: u16, pause: Duration) -> Poster {
        Poster::across(vec![port], pause)
    }

    /// Posts event n to `ports[n % ports.len()]` (senders on several nodes).
    fn across(ports: Vec<u16>, pause: Duration) -> Poster {
        Poster::numbered(ports, 0, pause)
    }

    /// [`Poster::across`], numbering its events from `base + 1`.
    fn numbered(ports: Vec<u16>, base: u64, pause: Duration) -> Poster {
        let stop = Arc::new(AtomicBool::new(false));
        let posted = Arc::new(AtomicU64::new(0));
        let thread = thread::spawn({
            let (stop, posted) = (Arc::clone(&stop), Arc::clone(&posted));
            move || {
                while !stop.load(Ordering::SeqCst) {
                    let seq = posted.load(Ordering::SeqCst) + 1;
                    post(ports[seq as usize % ports.len()], base + seq, false);
                    posted.store(seq, Ordering::SeqCst);
                    thread::sleep(pause);
                }
            }
        });
        Poster {
            stop,
            posted,
            thread: Some(thread),
        }
    }

    /// Stops posting; the number of events posted.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.posted.load(Ordering::SeqCst)
    }
}

/// A TCP proxy in front of the daemon that can cut every connection and
/// refuse new ones (a network blip).
struct Proxy {
    port: u16,
    upstream: Arc<AtomicU16>,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = Arc::new(AtomicU16::new(upstream));
        let down = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        thread::spawn({
            let (down, open, stop) = (Arc::clone(&down), Arc::clone(&open), Arc::clone(&stop));
            let upstream = Arc::clone(&upstream);
            move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((client, _)) = listener.accept() else {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    if down.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let _ = client.set_nonblocking(false);
                    let to = upstream.load(Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                        continue;
                    };
                    let mut guard = open.lock().unwrap();
                    guard.push(client.try_clone().unwrap());
                    guard.push(server.try_clone().unwrap());
                    drop(guard);
                    for (mut from, mut to) in [
                        (client.try_clone().unwrap(), server.try_clone().unwrap()),
                        (server, client),
                    ] {
                        thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(Shutdown::Both);
                            let _ = from.shutdown(Shutdown::Both);
                        });
                    }
                }
            }
        });
        Proxy {
            port,
            upstream,
            down,
            open,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Closes every proxied connection and refuses new ones until `restore`.
    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// Cuts every connection and sends the next ones to `upstream` (a load
    /// balancer moving a client to another node).
    fn switch(&self, upstream: u16) {
        self.cut();
        self.upstream.store(upstream, Ordering::SeqCst);
        self.restore();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

/// The Node client and the JSON lines it prints.
struct Client {
    child: Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Client {
    fn start(url: &str, options: Value) -> Client {
        let mut command = Command::new("node");
        command
            .arg(clients_dir().join("csr_client.js"))
            .arg(url)
            .arg(options.to_string());
        Client::spawn(command)
    }

    fn spawn(mut command: Command) -> Client {
        let mut child = command
            .current_dir(clients_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the client");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line)
                    && tx.send(value).is_err()
                {
                    break;
                }
            }
        });
        Client {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line that `matches`; returns it.
    fn wait_for(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(found) = self.seen.iter().find(|line| matches(line)) {
            return found.clone();
        }
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("the client never printed {what}; saw {:?}", self.seen));
            self.seen.push(line.clone());
            assert_ne!(line["type"], "timeout", "the client timed out: {line}");
            if matches(&line) {
                return line;
            }
        }
    }

    fn wait_connects(&mut self, count: u64) {
        self.wait_for(&format!("connect #{count}"), |l| {
            l["type"] == "connect" && l["count"].as_u64() >= Some(count)
        });
    }

    fn done(&mut self) -> Value {
        self.wait_for("done", |l| l["type"] == "done")
    }

    /// Writes one command line to the client's stdin.
    fn tell(&mut self, command: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin piped");
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client got exactly events 1..=last, in order, each once.
fn assert_exactly_in_order(done: &Value, last: u64) {
    let seqs: Vec<u64> = done["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=last).collect();
    if seqs != expected {
        let missing: Vec<u64> = expected
            .iter()
            .filter(|s| !seqs.contains(s))
            .copied()
            .collect();
        let (count, missing) = (missing.len(), &missing[..missing.len().min(20)]);
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        panic!(
            "events not exactly 1..={last} in order: {} received, {count} missing (first: {missing:?}), duplicates {}, in order {}; connects {}",
            seqs.len(),
            seqs.len() - sorted.len(),
            seqs.windows(2).all(|w| w[0] < w[1]),
            done["connects"]
        );
    }
    assert_eq!(
        done["badOffsets"], 0,
        "every offset argument equals the event's id"
    );
}

fn recovered_flags(done: &Value) -> Vec<bool> {
    done["connects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["recovered"].as_bool().unwrap_or(false))
        .collect()
}

fn service_stats(port: u16) -> Value {
    let (code, body) = http_get(port, "/diagnostics");
    assert_eq!(code, 200, "{body}");
    let diag: Value = serde_json::from_str(&body).unwrap();
    diag["service_stats"].clone()
}

#[test]
fn three_network_blips_in_a_row_lose_nothing_and_recover_each_time() {
    if !node_available() {
        return;
    }
    let env = Env::new();
    let _daemon = start(&env, recovery_on(json!({})));
    let proxy = Proxy::start(env.port);
    let mut client = Client::start(&proxy.url(), json!({}));
    client.wait_connects(1);
    let poster = Poster::start(env.port);
    for round in 0..3u64 {
        thread::sleep(Duration::from_millis(600));
        proxy.cut();
        thread::sleep(Duration::from_secs(2));
        proxy.restore();
        client.wait_connects(round + 2);
    }
    thread::sleep(Duration::from_millis(300));
    let last = poster.stop() + 1;
    post(env.port, last, true);
    let done = client.done();
    assert_exactly_in_order(&done, last);
    assert_eq!(recovered_flags(&done), [false, true, true, true]);
    let stats = service_stats(env.port);
    assert_eq!(stats["sessions_recovered"], 3);
    assert!(stats["events_replayed"].as_u64().unwrap() > 0, "{stats}");
    let (_, metrics) = http_get(env.port, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "socketio_sessions_recovered_total 3"),
        "{metrics}"
    );
}

#[test]
fn blips_under_a_stream_as_fast_as_http_allows_lose_nothing() {
    if !node_available() {
        return;
    }
    let env = Env::new();
    // Room for what a blip misses at this rate (thousands of events a second).
    let mut config = recovery_on(json!({}));
    config["server"] = json!({"event_history_size": 50_000, "socket_buffer_packets": 65_536});
    let _daemon = start(&env, config);
    let proxy = Proxy::start(env.port);
    let mut client = Client::start(&proxy.url(), json!({}));
    client.wait_connects(1);
    // Events keep arriving while each replay is being sent.
    let poster = Poster::every(env.port, Duration::ZERO);
    for round in 0..2u64 {
        thread::sleep(Duration::from_millis(400));
        proxy.cut();
        thread::sleep(Duration::from_millis(500));
        proxy.restore();
        client.wait_connects(round + 2);
    }
    thread::sleep(Duration::from_millis(300));
    let last = poster.stop() + 1;
    post(env.port, last, true);
    let done = client.done();
    assert_exactly_in_order(&done, last);
    assert_eq!(recovered_flags(&done), [false, true, true]);
}

#[test]
fn a_client_that_received_nothing_before_the_blip_still_recovers() {
    if !node_available() {
        return;
    }
    let env = Env::new();
    let _daemon = start(&env, recovery_on(json!({})));
    let proxy = Proxy::start(env.port);
    let mut client = Client::start(&proxy.url(), json!({}));
    client.wait_connects(1);
    proxy.cut();
    for seq in 1..=20 {
        post(env.port, seq, false);
    }
    proxy.restore();
    client.wait_connects(2);
    post(env.port, 21, true);
    let done = client.done();
    assert_exactly_in_order(&done, 21);
    assert_eq!(recovered_flags(&done), [false, true]);
}

#[test]
fn clear_connections_then_restart_service_lose_nothing() {
    if !node_available() {
        return;
    }
    let env = Env::new();
    let mut config = recovery_on(json!({}));
    config["health_monitoring"] = json!({
        "check_interval": 1,
        "aggregation_window": 60,
        "thresholds": {"memory_mb": 1}
    });
    // Three criticals per rung: the client is connected before the first
    // action; two actions at most: clear, restart, then none.
    config["recovery"] = json!({
        "min_recovery_interval": 0,
        "max_recovery_attempts": 2,
        "strategy": {"warning_threshold": 3, "critical_threshold": 3}
    });
    let _daemon = start(&env, config);
    // clear_connections sends a Socket.IO disconnect today, after which
    // socket.io-client waits for the application: this one reconnects by
    // hand, keeping its pid and offset.
    let mut client = Client::start(
        &format!("http://127.0.0.1:{}", env.port),
        json!({"resumeAfterServerDisconnect": true}),
    );
    client.wait_connects(1);
    let poster = Poster::start(env.port);
    let actions = |port: u16| -> Vec<String> {
        let Some((_, body)) = try_http_get(port, "/diagnostics") else {
            return Vec::new();
        };
        let diag: Value = serde_json::from_str(&body).unwrap_or_default();
        diag["recovery_manager"]["recent_events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e["success"] == true)
                    .filter_map(|e| e["action"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_until("clear_connections then restart_service", || {
        actions(env.port).contains(&"restart_service".to_owned())
    });
    assert_eq!(
        actions(env.port)[..2],
        ["clear_connections", "restart_service"]
    );
    client.wait_connects(3);
    thread::sleep(Duration::from_millis(500));
    let last = poster.stop() + 1;
    post(env.port, last, true);
    let done = client.done();
    assert_exactly_in_order(&done, last);
    assert_eq!(recovered_flags(&done), [false, true, true]);
}

#[test]
fn an_expired_session_is_a_new_one_and_get_history_since_catches_up() {
    if !node_available() {
        return;
    }
    let env = Env::new();
    let _daemon = start(&env, recovery_on(json!({"max_disconnection_duration": 1})));
    let proxy = Proxy::start(env.port);
    let mut client = Client::start(&proxy.url(), json!({"catchUp": true}));
    client.wait_connects(1);
    for seq in 1..=10 {
        post(env.port, seq, false);
    }
    // Events 1..=10 reached the client before the cut.
    wait_until("the client got the first events", || {
        service_stats(env.port)["events_relayed"].as_u64() >= Some(10)
    });
    thread::sleep(Duration::from_millis(300));
    proxy.cut();
    for seq in 11..=20 {
        post(env.port, seq, false);
    }
    thread::sleep(Duration::from_millis(2500));
    proxy.restore();
    client.wait_connects(2);
    let history = client.wait_for("the get_history answer", |l| l["type"] == "history");
    assert_eq!(history["count"], 10, "{history}");
    assert_eq!(history["more"], false);
    assert_eq!(history["gap"], Value::Null);
    post(env.port, 21, true);
    let done = client.done();
    assert_exactly_in_order(&done, 21);
    assert_eq!(recovered_flags(&done), [false, false]);
    let stats = service_stats(env.port);
    assert_eq!(stats["sessions_expired"], 1, "{stats}");
    assert_eq!(stats["sessions_recovered"], 0, "{stats}");
}

#[test]
fn a_python_socketio_client_catches_up_with_get_history_since() {
    let python = clients_dir().join(".venv/bin/python");
    if !clients_present(
        python.exists(),
        "tests/clients/.venv (scripts/test makes it)",
    ) {
        return;
    }
    let env = Env::new();
    // Recovery off (the default): python-socketio would choke on the offset.
    let _daemon = start(&env, json!({}));
    let mut command = Command::new(python);
    command
        .arg(clients_dir().join("since_client.py"))
        .arg(format!("http://127.0.0.1:{}", env.port));
    let mut client = Client::spawn(command);
    client.wait_for("connect", |l| l["type"] == "connect");
    for seq in 1..=10 {
        post(env.port, seq, false);
    }
    wait_until("the first events relayed", || {
        service_stats(env.port)["events_relayed"].as_u64() >= Some(10)
    });
    thread::sleep(Duration::from_millis(300));
    client.tell("leave");
    client.wait_for("left", |l| l["type"] == "left");
    for seq in 11..=25 {
        post(env.port, seq, false);
    }
    client.tell("back");
    let history = client.wait_for("the get_history answer", |l| l["type"] == "history");
    assert_eq!(history["count"], 15, "{history}");
    assert_eq!(history["gap"], Value::Null);
    post(env.port, 26, true);
    let done = client.done();
    assert_exactly_in_order(&done, 26);
}

/// One HTTP/1.1 request to the daemon (`Connection: close`): status and body.
fn http_request(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let code = response
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// A Socket.IO client over Engine.IO long-polling that never polls: it
/// connects to the default namespace and then only POSTs (a sender) or
/// nothing at all (a reader whose buffer fills: it reads nothing).
struct Poller {
    port: u16,
    path: String,
}

impl Poller {
    fn connect(port: u16) -> Poller {
        let (code, open) = http_request(port, "GET", "/socket.io/?EIO=4&transport=polling", "");
        assert_eq!(code, 200, "handshake: {open}");
        let open: Value =
            serde_json::from_str(open.trim_start_matches('0')).expect("an Engine.IO OPEN packet");
        let sid = open["sid"].as_str().expect("sid");
        let poller = Poller {
            port,
            path: format!("/socket.io/?EIO=4&transport=polling&sid={sid}"),
        };
        poller.post(&["40".to_owned()]);
        poller
    }

    /// POSTs `packets` as one Engine.IO payload (they arrive in order).
    fn post(&self, packets: &[String]) {
        let (code, body) = http_request(self.port, "POST", &self.path, &packets.join("\u{1e}"));
        assert_eq!(code, 200, "polling POST: {body}");
    }

    /// Sends `claude_event`s numbered `seqs` (the last one `last`).
    fn send_events(&self, seqs: std::ops::RangeInclusive<u64>, last: bool) {
        let end = *seqs.end();
        let packets: Vec<String> = seqs
            .map(|seq| {
                let event = json!({"type": "csr_test", "seq": seq, "last": last && seq == end});
                format!("42{}", json!(["claude_event", event]))
            })
            .collect();
        for chunk in packets.chunks(100) {
            self.post(chunk);
        }
    }
}

/// The replay gate, proven. A reader that reads nothing holds the relay back
/// (`slow_reader_timeout`, 10 s here), so a fast sender's events are
/// accepted and logged but not yet delivered live; a dashboard cut off and
/// resumed during that hold is replayed those events from the log. When the
/// hold ends the relay delivers the same events live: the gate must keep
/// them from the resumed socket (they were in its replay), then let the
/// later ones through. Without it, the dashboard gets the held events twice
/// (replay, then live); had the live ones gone first, out of order.
#[test]
fn a_replay_during_a_held_back_relay_is_neither_overtaken_nor_repeated() {
    if !node_available() {
        return;
    }
    let env = Env::new();
    let mut config = recovery_on(json!({}));
    config["server"] = json!({"socket_buffer_packets": 512, "slow_reader_timeout": 10});
    let _daemon = start(&env, config);
    let proxy = Proxy::start(env.port);
    let mut client = Client::start(&proxy.url(), json!({"progress": true}));
    client.wait_connects(1);
    let _reads_nothing = Poller::connect(env.port);
    let sender = Poller::connect(env.port);
    wait_until("three clients", || {
        service_stats(env.port)["clients_connected"].as_u64() == Some(3)
    });

    // The reader's buffer (512 packets) fills about event 510; the relay
    // then waits for it while the sender's next events are accepted.
    sender.send_events(1..=700, false);
    let mut held_at = 0;
    wait_until("the relay held back with events accepted", || {
        let stats = service_stats(env.port);
        held_at = stats["events_relayed"].as_u64().unwrap_or(0);
        stats["events_processed"].as_u64() >= Some(700) && held_at < 700
    });
    // The dashboard has what was relayed before the hold (a client cut off
    // before it read them would miss more than one replay gives).
    client.wait_for(&format!("event {held_at}"), |l| {
        l["type"] == "seq" && l["seq"].as_u64() >= Some(held_at)
    });
    proxy.cut();
    proxy.restore();
    client.wait_connects(2);
    // The replay is counted once sent (the client may see CONNECT first).
    wait_until("the replay sent", || {
        service_stats(env.port)["events_replayed"].as_u64() > Some(0)
    });
    let stats = service_stats(env.port);
    assert!(
        stats["events_relayed"].as_u64() < Some(700),
        "the scenario needs the resume inside the hold (lengthen slow_reader_timeout): {stats}"
    );

    // Live events after the hold: relayed behind the held ones, in order.
    sender.send_events(701..=800, true);
    let done = client.done();
    assert_exactly_in_order(&done, 800);
    assert_eq!(recovered_flags(&done), [false, true]);
}

/// A cluster node with recovery on (ordered mode) against `redis`.
fn start_node(env: &Env, redis: &Redis, prefix: &str, id: &str) -> Daemon {
    let mut config = recovery_on(json!({}));
    config["cluster"] = json!({"redis_url": redis.url(), "node_id": id, "prefix": prefix});
    start(env, config)
}

/// A `redis-server` and two recovering cluster nodes on `prefix`, `a` and
/// `b` (`a` reaching Redis at `a_redis`, by default Redis itself).
struct Pair {
    redis: Redis,
    env_a: Env,
    env_b: Env,
    a: Daemon,
    _b: Daemon,
}

impl Pair {
    fn start(prefix: &str) -> Pair {
        let redis = Redis::start();
        let a_redis = redis.port;
        Pair::start_with(redis, prefix, a_redis)
    }

    fn start_with(redis: Redis, prefix: &str, a_redis: u16) -> Pair {
        let (env_a, env_b) = (Env::new(), Env::new());
        let mut config = recovery_on(json!({}));
        config["cluster"] = json!({
            "redis_url": format!("redis://127.0.0.1:{a_redis}"),
            "node_id": "a",
            "prefix": prefix,
        });
        let a = start(&env_a, config);
        let _b = start_node(&env_b, &redis, prefix, "b");
        Pair {
            redis,
            env_a,
            env_b,
            a,
            _b,
        }
    }

    /// A client of node a that prints every event it gets, once it has
    /// events 1..=5 (posted on node b).
    fn client_with_five_events(&self) -> Client {
        let mut client = Client::start(&self.env_a.url(), json!({"progress": true}));
        client.wait_connects(1);
        for seq in 1..=5 {
            post(self.env_b.port, seq, false);
        }
        client.wait_for("event 5", |l| l["type"] == "seq" && l["seq"] == 5);
        client
    }
}

/// Waits until the shared stream holds `count` events: each accepted event
/// is appended after its POST is answered, so a "last" event posted before
/// that could overtake the ones still on their way.
fn wait_streamed(redis: &Redis, prefix: &str, count: u64) {
    let key = format!("{prefix}:log");
    wait_until(&format!("{count} events in {key}"), || {
        redis.cli(&["XLEN", &key]).trim().parse::<u64>().ok() >= Some(count)
    });
}

/// The client got each of events 1..=last exactly once (in whichever
/// order the cluster's stream gave them).
fn assert_each_once(done: &Value, last: u64) -> Vec<u64> {
    let seqs: Vec<u64> = done["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(
        sorted,
        expected,
        "each event exactly once ({} received); connects {}",
        seqs.len(),
        done["connects"]
    );
    seqs
}

#[test]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
fn a_session_moves_between_cluster_nodes_and_misses_nothing() {
    if !node_available() {
        return;
    }
    let Pair {
        redis,
        env_a,
        env_b,
        a: _a,
        _b,
    } = Pair::start("csr");
    // The mover reaches the cluster through a load balancer that moves it
    // from a to b and back; the witness stays on b all along.
    let proxy = Proxy::start(env_a.port);
    let mut mover = Client::start(&proxy.url(), json!({}));
    let mut witness = Client::start(&format!("http://127.0.0.1:{}", env_b.port), json!({}));
    mover.wait_connects(1);
    witness.wait_connects(1);
    // Senders on both nodes at once.
    let poster = Poster::across(vec![env_a.port, env_b.port], Duration::from_millis(10));
    for (round, to) in [env_b.port, env_a.port].into_iter().enumerate() {
        thread::sleep(Duration::from_millis(800));
        proxy.cut();
        thread::sleep(Duration::from_millis(700));
        proxy.switch(to);
        mover.wait_connects(round as u64 + 2);
    }
    thread::sleep(Duration::from_millis(500));
    let last = poster.stop() + 1;
    wait_streamed(&redis, "csr", last - 1);
    post(env_a.port, last, true);
    let (moved, stayed) = (mover.done(), witness.done());
    let moved_order = assert_each_once(&moved, last);
    let stayed_order = assert_each_once(&stayed, last);
    assert_eq!(
        moved_order, stayed_order,
        "the client that moved between nodes saw the cluster's one order"
    );
    assert_eq!(recovered_flags(&moved), [false, true, true]);
    assert_eq!(recovered_flags(&stayed), [false]);
}

#[test]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
fn a_killed_nodes_client_that_had_received_nothing_resumes_on_another_node() {
    if !node_available() {
        return;
    }
    let Pair {
        redis,
        env_a,
        env_b,
        mut a,
        _b,
    } = Pair::start("csrkill");
    let proxy = Proxy::start(env_a.port);
    // It receives nothing before its node dies (socket.io#5538: it sends no
    // offset, and resumes from where its session began).
    let mut quiet = Client::start(&proxy.url(), json!({}));
    quiet.wait_connects(1);
    wait_until("node a wrote the session's key", || {
        !redis
            .cli(&["--scan", "--pattern", "csrkill:session:*"])
            .trim()
            .is_empty()
    });
    a.signal(libc::SIGKILL);
    a.wait_exit();
    proxy.cut();
    // Events while it is away, all on the surviving node.
    let poster = Poster::across(vec![env_b.port], Duration::from_millis(10));
    thread::sleep(Duration::from_millis(1_500));
    proxy.switch(env_b.port);
    quiet.wait_connects(2);
    thread::sleep(Duration::from_millis(500));
    let last = poster.stop() + 1;
    wait_streamed(&redis, "csrkill", last - 1);
    post(env_b.port, last, true);
    let done = quiet.done();
    assert_exactly_in_order_ignoring_ids(&done, last);
    assert_eq!(recovered_flags(&done), [false, true]);
    let stats = service_stats(env_b.port);
    assert_eq!(stats["sessions_recovered"], 1, "{stats}");
    assert!(stats["events_replayed"].as_u64().unwrap() > 0, "{stats}");
}

/// [`assert_exactly_in_order`] for cluster mode, where an event's id is its
/// accepting node's own and its offset the stream's: the sequence alone.
fn assert_exactly_in_order_ignoring_ids(done: &Value, last: u64) {
    let seqs = assert_each_once(done, last);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order (one sender): {seqs:?}"
    );
}

/// Waits until `port`'s cluster link is in `state`.
fn wait_redis_state(port: u16, state: &str) {
    wait_until(&format!("node on {port}: Redis {state}"), || {
        try_http_get(port, "/diagnostics")
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .is_some_and(|d| d["cluster"]["state"]["redis_state"] == state)
    });
}

#[test]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
fn a_node_that_missed_part_of_the_stream_sends_its_clients_to_new_sessions() {
    if !node_available() {
        return;
    }
    let redis = Redis::start();
    // Node a reaches Redis through a proxy that can cut it off alone.
    let link = Proxy::start(redis.port);
    let pair = Pair::start_with(redis, "hole", link.port);
    let (env_a, env_b) = (&pair.env_a, &pair.env_b);
    let mut client = pair.client_with_five_events();
    link.cut();
    wait_redis_state(env_a.port, "disconnected");
    // More than the stream keeps (1,024 at least) while node a is away.
    for seq in 6..=1_105 {
        post(env_b.port, seq, false);
    }
    link.restore();
    // Node a finds the hole: its client is sent to a new session, told.
    client.wait_connects(2);
    wait_redis_state(env_a.port, "connected");
    post(env_b.port, 1_106, true);
    let done = client.done();
    assert_eq!(recovered_flags(&done), [false, false]);
    let seqs: Vec<u64> = done["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert_eq!(seqs[..5], [1, 2, 3, 4, 5]);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, none twice");
}

#[test]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
fn a_stream_lost_with_redis_gives_every_client_a_new_session_never_a_gap() {
    if !node_available() {
        return;
    }
    let mut pair = Pair::start("lost");
    let mut client = pair.client_with_five_events();
    let env_b_port = pair.env_b.port;
    let redis = &mut pair.redis;
    // Redis comes back empty (no persistence): the stream, its epoch and
    // the session keys are gone.
    redis.kill();
    redis.restart();
    client.wait_connects(2);
    wait_redis_state(env_b_port, "connected");
    post(env_b_port, 6, true);
    let done = client.done();
    assert_eq!(recovered_flags(&done), [false, false]);
    assert_exactly_in_order_ignoring_ids(&done, 6);
}

#[test]
fn three_senders_at_once_reach_a_recovering_client_in_offset_order() {
    if !node_available() {
        return;
    }
    let env = Env::new();
    let _daemon = start(&env, recovery_on(json!({})));
    let proxy = Proxy::start(env.port);
    let mut client = Client::start(&proxy.url(), json!({}));
    client.wait_connects(1);
    // Three senders at once, each its own numbers: their relays race.
    let posters: Vec<Poster> = (1..=3u64)
        .map(|k| Poster::numbered(vec![env.port], k * 100_000, Duration::ZERO))
        .collect();
    for round in 0..3u64 {
        thread::sleep(Duration::from_millis(500));
        proxy.cut();
        thread::sleep(Duration::from_millis(300));
        proxy.restore();
        client.wait_connects(round + 2);
    }
    thread::sleep(Duration::from_millis(300));
    let mut expected: Vec<u64> = Vec::new();
    for (k, poster) in (1..=3u64).zip(posters) {
        expected.extend((1..=poster.stop()).map(|n| k * 100_000 + n));
    }
    post(env.port, 999_999, true);
    expected.push(999_999);
    let done = client.done();
    let mut got: Vec<u64> = done["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert_eq!(done["offsetsOutOfOrder"], 0, "delivered in offset order");
    assert_eq!(done["badOffsets"], 0);
    assert_eq!(recovered_flags(&done), [false, true, true, true]);
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got.len(), expected.len(), "each event once, none missing");
    assert_eq!(got, expected);
}

#[test]
#[cfg_attr(
    skip_redis_tests,
    ignore = "WARDEN_SKIP_REDIS_TESTS=1 at build time: needs redis-server"
)]
fn a_made_up_session_id_gets_a_new_session_and_costs_redis_nothing() {
    if !node_available() {
        return;
    }
    let pair = Pair::start("madeup");
    // A 100 kB pid, and one of the right length but not of the issued shape.
    for pid in ["p".repeat(100_000), "/".repeat(32)] {
        let mut client = Client::start(&pair.env_a.url(), json!({"authPid": pid}));
        client.wait_connects(1);
        post(pair.env_a.port, 1, true);
        let done = client.done();
        assert_eq!(recovered_flags(&done), [false]);
    }
    let stats = service_stats(pair.env_a.port);
    assert_eq!(stats["sessions_refused"], 2, "{stats}");
    // No session was looked up in Redis for either.
    let commands = pair.redis.cli(&["INFO", "commandstats"]);
    assert!(!commands.contains("cmdstat_get:"), "{commands}");
}
