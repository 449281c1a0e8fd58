//! `warden-soak`: runs warden (its default configuration, checks every two
//! seconds) for a long time under client churn and a hostile mix, sampling
//! the process's resident memory, descriptors and threads, and prints a
//! Markdown table: each resource's plateau (the highest sample of the run's
//! second quarter) against its last sample, and what the clients saw.
//!
//! The load, all on loopback:
//! - one sender posting `claude_event`s at `--rate` per second;
//! - `--dashboards` honest dashboards, each reconnecting after 5 to 30 s
//!   (churn), answering pings and counting the events they receive;
//! - a malformer sending event packets without data and broken packets
//!   until warden disconnects it (its error budget), then again;
//! - `--idlers` TCP connections that never send a byte (reopened when
//!   warden closes them);
//! - `--never-readers` Socket.IO clients that never read (reopened every
//!   minute);
//! - an oversized `POST /api/events` (2 MB) every five seconds.
//!
//! What it shows (issue 12): with the default thresholds, no recovery action
//! fires, honest dashboards are never cut off, and the resources at the end
//! sit within a few percent of their plateau. See BENCHMARKS.md.
//!
//! Not here: any pass/fail judgement; the table is for people.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;
use warden_bench::eio::{self, Packet, WsClient};
use warden_bench::http1::HttpConn;
use warden_bench::procfs;
use warden_bench::server::{RunningServer, ServerKind, ServerPaths};

#[derive(Debug, Parser)]
#[command(
    name = "warden-soak",
    about = "Soak: warden under churn and a hostile mix, resources sampled"
)]
struct Args {
    /// How long to run.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    sample_seconds: u64,
    /// Events per second from the sender.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Honest dashboards (each reconnects after 5 to 30 s).
    #[arg(long, default_value_t = 20)]
    dashboards: usize,
    /// Connections that never send a byte.
    #[arg(long, default_value_t = 100)]
    idlers: usize,
    /// Socket.IO clients that never read.
    #[arg(long, default_value_t = 3)]
    never_readers: usize,
    /// The warden binary (default: `warden` next to this program).
    #[arg(long)]
    warden: Option<PathBuf>,
    /// Also write the samples and the counts as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// What the clients saw, counted as it happens.
#[derive(Debug, Default)]
struct Counts {
    posted: AtomicU64,
    post_refused: AtomicU64,
    post_failed: AtomicU64,
    oversized_refused: AtomicU64,
    dashboard_connects: AtomicU64,
    dashboard_cut_off: AtomicU64,
    dashboard_events: AtomicU64,
    malformer_disconnects: AtomicU64,
    idlers_closed: AtomicU64,
    never_reader_rounds: AtomicU64,
    connect_failures: AtomicU64,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Sample {
    at_seconds: u64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

fn sample(pid: u32, started: Instant) -> Option<Sample> {
    let memory = procfs::memory(pid).ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())?;
    Some(Sample {
        at_seconds: started.elapsed().as_secs(),
        rss_kib: memory.rss_kib,
        fds,
        threads,
    })
}

const CONNECT: Duration = Duration::from_secs(5);

async fn sender(addr: std::net::SocketAddr, rate: u32, stop: Arc<AtomicBool>, c: Arc<Counts>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let mut conn: Option<HttpConn> = None;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if conn.as_ref().is_none_or(HttpConn::is_closed) {
            conn = HttpConn::connect(addr).await.ok();
        }
        let Some(http) = conn.as_mut() else {
            c.post_failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        n += 1;
        let body = format!(r#"{{"type":"soak","n":{n}}}"#);
        match http.post_json("/api/events", body.as_bytes()).await {
            Ok(r) if r.status < 300 => c.posted.fetch_add(1, Ordering::Relaxed),
            Ok(_) => c.post_refused.fetch_add(1, Ordering::Relaxed),
            Err(_) => {
                conn = None;
                c.post_failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

async fn oversized(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, c: Arc<Counts>) {
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2_000_000));
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if let Ok(mut http) = HttpConn::connect(addr).await
            && let Ok(r) = http.post_json("/api/events", body.as_bytes()).await
            && r.status == 413
        {
            c.oversized_refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An honest dashboard: stays `lifetime`, answers pings, counts events, then
/// leaves politely and comes back. A close it did not ask for is counted.
async fn dashboard(
    addr: std::net::SocketAddr,
    index: usize,
    stop: Arc<AtomicBool>,
    c: Arc<Counts>,
) {
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let lifetime = Duration::from_secs(5 + ((index as u64 * 7 + round * 11) % 26));
        let Ok(mut ws) = WsClient::connect(addr, CONNECT).await else {
            c.connect_failures.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        c.dashboard_connects.fetch_add(1, Ordering::Relaxed);
        let until = tokio::time::Instant::now() + lifetime;
        let cut_off = loop {
            let frame = tokio::select! {
                frame = ws.recv() => frame,
                () = tokio::time::sleep_until(until) => break false,
            };
            let Ok(Message::Text(text)) = frame else {
                if matches!(frame, Ok(Message::Close(_)) | Err(_)) {
                    break true;
                }
                continue;
            };
            match eio::classify(text.as_str()) {
                Packet::Ping => {
                    if ws.pong().await.is_err() {
                        break true;
                    }
                }
                Packet::Event {
                    name: "claude_event",
                    ..
                } => {
                    c.dashboard_events.fetch_add(1, Ordering::Relaxed);
                }
                Packet::Disconnect => break true,
                Packet::Event { .. } | Packet::Other => {}
            }
        };
        if cut_off && !stop.load(Ordering::Relaxed) {
            c.dashboard_cut_off.fetch_add(1, Ordering::Relaxed);
        } else {
            ws.close(Duration::from_secs(1)).await;
        }
    }
}

/// Sends event packets without data and broken packets until warden cuts it
/// off (its per-client error budget), then comes back a second later.
async fn malformer(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, c: Arc<Counts>) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut ws) = WsClient::connect(addr, CONNECT).await {
            let mut i = 0u64;
            loop {
                i += 1;
                let junk = if i.is_multiple_of(2) {
                    r#"42["claude_event"]"#
                } else {
                    "42["
                };
                if ws.send_text(junk.to_owned()).await.is_err() {
                    break;
                }
                // Drain what the server says; a close ends the round.
                if let Some(Err(_) | Ok(Message::Close(_))) = ws.try_recv() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
            c.malformer_disconnects.fetch_add(1, Ordering::Relaxed);
        } else {
            c.connect_failures.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A connection that never sends a byte; reopened when warden closes it.
async fn idler(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, c: Arc<Counts>) {
    while !stop.load(Ordering::Relaxed) {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(mut stream) => {
                let mut buf = [0u8; 64];
                tokio::select! {
                    _ = stream.read(&mut buf) => {
                        c.idlers_closed.fetch_add(1, Ordering::Relaxed);
                    }
                    () = until_stopped(&stop) => return,
                }
            }
            Err(_) => {
                c.connect_failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// A Socket.IO client that never reads; dropped and reopened every minute.
async fn never_reader(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, c: Arc<Counts>) {
    while !stop.load(Ordering::Relaxed) {
        let client = WsClient::connect(addr, CONNECT).await;
        if client.is_err() {
            c.connect_failures.fetch_add(1, Ordering::Relaxed);
        }
        c.never_reader_rounds.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            () = until_stopped(&stop) => return,
        }
        drop(client);
    }
}

async fn until_stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sum of `socketio_recoveries_total` over actions and outcomes.
async fn recoveries(addr: std::net::SocketAddr) -> Option<u64> {
    let mut http = HttpConn::connect(addr).await.ok()?;
    let text = http.get("/metrics").await.ok()?.text();
    Some(
        text.lines()
            .filter(|l| l.starts_with("socketio_recoveries_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

fn pct(from: u64, to: u64) -> String {
    if from == 0 {
        return "n/a".into();
    }
    format!("{:+.1} %", (to as f64 - from as f64) * 100.0 / from as f64)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _ = procfs::raise_nofile_limit();
    let sibling = |name: &str| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
            .unwrap_or_else(|| PathBuf::from(name))
    };
    let paths = ServerPaths {
        warden: args.warden.clone().unwrap_or_else(|| sibling("warden")),
        bare_hub: sibling("bare-hub"),
        hubs: ServerPaths::default_hubs(),
    };
    let server = match RunningServer::start_with_config(ServerKind::Warden, &paths, |port, dir| {
        serde_json::json!({
            "server": { "host": "127.0.0.1", "port": port },
            "health_monitoring": { "check_interval": 2 },
            "logging": { "file": dir.join("warden.log") },
        })
    })
    .await
    {
        Ok(server) => server,
        Err(error) => {
            eprintln!("warden-soak: {error}");
            return ExitCode::FAILURE;
        }
    };
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(sender(addr, args.rate, stop.clone(), counts.clone()));
    tasks.spawn(oversized(addr, stop.clone(), counts.clone()));
    tasks.spawn(malformer(addr, stop.clone(), counts.clone()));
    for i in 0..args.dashboards {
        tasks.spawn(dashboard(addr, i, stop.clone(), counts.clone()));
    }
    for _ in 0..args.idlers {
        tasks.spawn(idler(addr, stop.clone(), counts.clone()));
    }
    for _ in 0..args.never_readers {
        tasks.spawn(never_reader(addr, stop.clone(), counts.clone()));
    }

    let started = Instant::now();
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let mut samples = Vec::new();
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_secs(args.sample_seconds)).await;
        match sample(server.pid, started) {
            Some(s) => {
                eprintln!(
                    "{:>5} s  rss {:>7} KiB  fds {:>5}  threads {:>3}",
                    s.at_seconds, s.rss_kib, s.fds, s.threads
                );
                samples.push(s);
            }
            None => {
                eprintln!("warden-soak: warden is gone:\n{}", server.output_tail());
                return ExitCode::FAILURE;
            }
        }
    }
    let recovered = recoveries(addr).await;
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let outcome = server.stop_with_signal(Duration::from_secs(10)).await;

    let quarter = samples.len() / 4;
    let plateau_window = &samples[quarter..(2 * quarter).max(quarter + 1).min(samples.len())];
    let peak = |f: fn(&Sample) -> u64| plateau_window.iter().map(f).max().unwrap_or(0);
    let last = samples.last().copied();
    println!(
        "## warden-soak: {:.0} min, load average {:?}\n",
        args.minutes,
        procfs::load_average_1m()
    );
    println!("| resource | plateau (max of 2nd quarter) | end | end vs plateau |");
    println!("|---|---|---|---|");
    if let Some(end) = last {
        for (name, f) in [
            ("RSS (KiB)", (|s: &Sample| s.rss_kib) as fn(&Sample) -> u64),
            ("descriptors", |s: &Sample| s.fds),
            ("threads", |s: &Sample| s.threads),
        ] {
            let (p, e) = (peak(f), f(&end));
            println!("| {name} | {p} | {e} | {} |", pct(p, e));
        }
    }
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let c = &counts;
    println!("\n| what | count |\n|---|---|");
    for (name, value) in [
        ("events posted (accepted)", load(&c.posted)),
        ("posts refused", load(&c.post_refused)),
        ("posts failed (connection)", load(&c.post_failed)),
        ("oversized posts refused (413)", load(&c.oversized_refused)),
        ("dashboard connects", load(&c.dashboard_connects)),
        (
            "dashboards cut off by the server",
            load(&c.dashboard_cut_off),
        ),
        ("events received by dashboards", load(&c.dashboard_events)),
        ("malformer disconnected", load(&c.malformer_disconnects)),
        ("idle connections closed", load(&c.idlers_closed)),
        ("never-reader rounds", load(&c.never_reader_rounds)),
        ("client connect failures", load(&c.connect_failures)),
        ("recovery actions (/metrics)", recovered.unwrap_or(u64::MAX)),
    ] {
        println!("| {name} | {value} |");
    }
    println!(
        "\nwarden stopped by {} in {:?}",
        outcome.method, outcome.stop_to_exit
    );
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "minutes": args.minutes,
            "samples": samples,
            "recovery_actions": recovered,
            "dashboards_cut_off": load(&c.dashboard_cut_off),
            "posted": load(&c.posted),
            "dashboard_events": load(&c.dashboard_events),
        });
        if let Err(error) = std::fs::write(path, doc.to_string()) {
            eprintln!("warden-soak: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
