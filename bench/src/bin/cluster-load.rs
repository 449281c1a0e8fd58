//! `cluster-load`: warden in cluster mode (two nodes, one Redis) against
//! warden alone, with the same clients and the same events, alternating the
//! two setups run by run. Reports, per setup, the deliveries, losses and
//! duplicates, the emit → receive latency of clients on the sender's node
//! and on the other node, and the server CPU per delivery (the warden
//! processes together, and Redis apart). Needs `redis-server` on the PATH.
//! See BENCHMARKS.md for the commands and the numbers.
//!
//! Not here: any pass/fail judgement on timings.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use warden_bench::eio::{self, Packet, WsClient};
use warden_bench::procfs;
use warden_bench::server::warden_config;

#[derive(Debug, Parser)]
#[command(
    name = "cluster-load",
    about = "Load tool: two warden nodes over Redis vs one warden node"
)]
struct Args {
    /// Clients in all (the cluster splits them over its two nodes).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Senders among the clients (all on the first node).
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Events per sender.
    #[arg(long, default_value_t = 50)]
    events: usize,
    /// Total events per second across senders.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Runs per setup.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The warden binary (default: `warden` next to this program).
    #[arg(long)]
    warden: Option<PathBuf>,
    /// Turn connection state recovery on in both setups (the cluster then
    /// runs in ordered mode: every node delivers from one Redis stream).
    #[arg(long)]
    recovery: bool,
}

const START_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
const PAD: usize = 480;

/// A process of one run, killed on drop.
struct Proc {
    child: Child,
    pid: u32,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

async fn wait_accepting(port: u16, child: &mut Child, what: &str) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited early: {status}"));
        }
        if tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(format!("{what} did not serve on {port}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn start_redis(dir: &Path) -> Result<(Proc, u16), String> {
    let port = free_port();
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run redis-server: {e}"))?;
    wait_accepting(port, &mut child, "redis-server").await?;
    let pid = child.id().unwrap_or(0);
    Ok((Proc { child, pid }, port))
}

async fn start_warden(
    warden: &Path,
    dir: &Path,
    redis_port: Option<u16>,
    node: &str,
    recovery: bool,
) -> Result<(Proc, SocketAddr), String> {
    let port = free_port();
    let state = dir.join(node);
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
    let mut config = warden_config(port, &state);
    if recovery {
        config["connection_state_recovery"] = serde_json::json!({"enabled": true});
    }
    if let Some(redis) = redis_port {
        config["cluster"] = serde_json::json!({
            "redis_url": format!("redis://127.0.0.1:{redis}"),
            "node_id": node,
            "prefix": "bench",
        });
    }
    let path = state.join("config.json");
    std::fs::write(&path, config.to_string()).map_err(|e| e.to_string())?;
    let mut child = Command::new(warden)
        .arg("start")
        .args(["--port", &port.to_string()])
        .arg("--state-dir")
        .arg(&state)
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", warden.display()))?;
    wait_accepting(port, &mut child, "warden").await?;
    let pid = child.id().unwrap_or(0);
    Ok((
        Proc { child, pid },
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    ))
}

/// Waits until `addr`'s `/readyz` answers 200 (cluster nodes: Redis connected).
async fn wait_ready(addr: SocketAddr) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if let Ok(mut conn) = warden_bench::http1::HttpConn::connect(addr).await
            && let Ok(response) = conn.get("/readyz").await
            && response.status == 200
        {
            return Ok(());
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(format!("{addr} never became ready"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Debug, Default)]
struct Seen {
    latencies_us: Vec<u64>,
    keys: HashSet<(u64, u64)>,
    duplicates: u64,
    /// Events that arrived after a later one of the same sender.
    reordered: u64,
    /// Per sender, the highest `seq` seen so far.
    last_seq: HashMap<u64, u64>,
}

fn field(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Reads `client` until it has `expected` unique events or the deadline.
async fn receive(mut client: WsClient, origin: Instant, expected: usize) -> Seen {
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    while seen.keys.len() < expected {
        let message = match tokio::time::timeout_at(deadline, client.recv()).await {
            Ok(Ok(message)) => message,
            _ => break,
        };
        let Message::Text(text) = message else {
            continue;
        };
        match eio::classify(text.as_str()) {
            Packet::Ping => {
                let _ = client.pong().await;
            }
            Packet::Event {
                name: "claude_event",
                text,
            } => {
                let now = u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX);
                if let (Some(sender), Some(seq), Some(sent)) = (
                    field(text, "\"sender\":"),
                    field(text, "\"seq\":"),
                    field(text, "\"sent_us\":"),
                ) {
                    if seen.keys.insert((sender, seq)) {
                        seen.latencies_us.push(now.saturating_sub(sent));
                        let last = seen.last_seq.entry(sender).or_insert(seq);
                        if seq < *last {
                            seen.reordered += 1;
                        }
                        *last = (*last).max(seq);
                    } else {
                        seen.duplicates += 1;
                    }
                }
            }
            _ => {}
        }
    }
    client.close(Duration::from_secs(1)).await;
    seen
}

#[derive(Debug, Clone, Default)]
struct RunResult {
    expected: u64,
    delivered: u64,
    duplicates: u64,
    reordered: u64,
    same_node: Vec<u64>,
    other_node: Vec<u64>,
    warden_cpu_us: u64,
    redis_cpu_us: u64,
}

fn cpu(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| procfs::cpu_time_us(*pid).ok())
        .sum()
}

async fn one_run(args: &Args, warden: &Path, cluster: bool) -> Result<RunResult, String> {
    let dir = tempfile::Builder::new()
        .prefix("cluster-load-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mut procs = Vec::new();
    let mut redis_pid = None;
    let addrs: Vec<SocketAddr> = if cluster {
        let (redis, port) = start_redis(dir.path()).await?;
        redis_pid = Some(redis.pid);
        procs.push(redis);
        let mut addrs = Vec::new();
        for node in ["a", "b"] {
            let (proc_, addr) =
                start_warden(warden, dir.path(), Some(port), node, args.recovery).await?;
            procs.push(proc_);
            addrs.push(addr);
        }
        for addr in &addrs {
            wait_ready(*addr).await?;
        }
        addrs
    } else {
        let (proc_, addr) = start_warden(warden, dir.path(), None, "single", args.recovery).await?;
        procs.push(proc_);
        vec![addr]
    };
    let warden_pids: Vec<u32> = procs
        .iter()
        .filter(|p| Some(p.pid) != redis_pid)
        .map(|p| p.pid)
        .collect();

    // Senders on the first node; receivers alternate between nodes.
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for i in 0..args.clients {
        let addr = if i < args.senders {
            addrs[0]
        } else {
            addrs[i % addrs.len()]
        };
        let client = WsClient::connect(addr, CONNECT_TIMEOUT)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if i < args.senders {
            senders.push(client);
        } else {
            receivers.push((addr != addrs[0], client));
        }
    }
    let total_events = args.senders * args.events;
    let origin = Instant::now();
    let mut tasks = Vec::new();
    for (other_node, client) in receivers {
        tasks.push((
            other_node,
            tokio::spawn(receive(client, origin, total_events)),
        ));
    }
    let cpu_before = cpu(&warden_pids);
    let redis_before = redis_pid.map_or(0, |p| cpu(&[p]));
    let pad = "x".repeat(PAD);
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let mut next = tokio::time::Instant::now();
    let mut senders = senders;
    for seq in 0..args.events {
        for (sender, client) in senders.iter_mut().enumerate() {
            let sent = u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX);
            let payload = format!(
                "{{\"type\":\"bench\",\"sender\":{sender},\"seq\":{seq},\"sent_us\":{sent},\"pad\":\"{pad}\"}}"
            );
            client
                .send_text(eio::event_packet("claude_event", &payload))
                .await
                .map_err(|e| format!("emit: {e}"))?;
            next += interval;
            tokio::time::sleep_until(next).await;
        }
    }
    let mut result = RunResult {
        expected: (total_events * tasks.len()) as u64,
        ..RunResult::default()
    };
    for (other_node, task) in tasks {
        let seen = task.await.map_err(|e| e.to_string())?;
        result.delivered += seen.keys.len() as u64;
        result.duplicates += seen.duplicates;
        result.reordered += seen.reordered;
        if other_node {
            result.other_node.extend(seen.latencies_us);
        } else {
            result.same_node.extend(seen.latencies_us);
        }
    }
    result.warden_cpu_us = cpu(&warden_pids).saturating_sub(cpu_before);
    result.redis_cpu_us = redis_pid.map_or(0, |p| cpu(&[p]).saturating_sub(redis_before));
    if result.delivered < result.expected {
        // Say why on stderr: each node's cluster state and its log's last lines.
        for (addr, node) in addrs.iter().zip(["a", "b", "single"]) {
            if let Ok(mut conn) = warden_bench::http1::HttpConn::connect(*addr).await
                && let Ok(response) = conn.get("/diagnostics").await
            {
                let body: serde_json::Value =
                    serde_json::from_slice(&response.body).unwrap_or_default();
                eprintln!("node {node}: cluster {}", body["cluster"]);
            }
        }
        for node in ["a", "b", "single"] {
            let log = dir.path().join(node).join("socketio-server.log");
            if let Ok(text) = std::fs::read_to_string(&log) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(15)..];
                eprintln!("node {node} log:\n{}", tail.join("\n"));
            }
        }
    }
    for client in senders {
        client.close(Duration::from_secs(1)).await;
    }
    for mut p in procs {
        let _ = p.child.start_kill();
        let _ = p.child.wait().await;
    }
    Ok(result)
}

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    Some(sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.2}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let warden = args.warden.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("warden")))
            .unwrap_or_else(|| PathBuf::from("warden"))
    });
    if let Err(e) = procfs::raise_nofile_limit() {
        eprintln!("cannot raise the open-file limit: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args = Arc::new(args);
    let mut single = Vec::new();
    let mut cluster = Vec::new();
    for run in 0..args.runs {
        for is_cluster in [run % 2 == 1, run % 2 == 0] {
            match runtime.block_on(one_run(&args, &warden, is_cluster)) {
                Ok(r) => {
                    if is_cluster {
                        cluster.push(r);
                    } else {
                        single.push(r);
                    }
                }
                Err(e) => {
                    eprintln!(
                        "run {run} ({}) failed: {e}",
                        if is_cluster { "cluster" } else { "single" }
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    println!(
        "{} clients, {} senders x {} events at {} events/s, {} runs per setup; load average {:?}",
        args.clients,
        args.senders,
        args.events,
        args.rate,
        args.runs,
        procfs::load_average_1m()
    );
    println!();
    println!(
        "| setup | delivered / expected | duplicates | reordered | same-node p50 / p99 ms | other-node p50 / p99 ms | warden CPU µs / delivery | Redis CPU µs / delivery |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, runs) in [("one node", &single), ("two nodes + Redis", &cluster)] {
        let per =
            |f: &dyn Fn(&RunResult) -> Option<f64>| median(runs.iter().filter_map(f).collect());
        let sorted = |v: &Vec<u64>| {
            let mut v = v.clone();
            v.sort_unstable();
            v
        };
        let delivered: u64 = runs.iter().map(|r| r.delivered).sum();
        let expected: u64 = runs.iter().map(|r| r.expected).sum();
        let duplicates: u64 = runs.iter().map(|r| r.duplicates).sum();
        let reordered: u64 = runs.iter().map(|r| r.reordered).sum();
        println!(
            "| {name} | {delivered} / {expected} | {duplicates} | {reordered} | {} / {} | {} / {} | {} | {} |",
            fmt(per(&|r| percentile(&sorted(&r.same_node), 50.0))),
            fmt(per(&|r| percentile(&sorted(&r.same_node), 99.0))),
            fmt(per(&|r| percentile(&sorted(&r.other_node), 50.0))),
            fmt(per(&|r| percentile(&sorted(&r.other_node), 99.0))),
            fmt(per(&|r| Some(
                r.warden_cpu_us as f64 / r.delivered.max(1) as f64
            ))),
            fmt(per(&|r| (r.redis_cpu_us > 0)
                .then(|| r.redis_cpu_us as f64 / r.delivered.max(1) as f64))),
        );
    }
    println!();
    println!(
        "(medians over runs of each run's percentile; CPU from /proc/<pid>/stat over the sending and delivery phase)"
    );
    ExitCode::SUCCESS
}
