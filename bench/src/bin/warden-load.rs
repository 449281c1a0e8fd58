//! `warden-load`: runs the load scenarios against warden and the bare
//! socketioxide hub, alternating the servers run by run, and prints one
//! Markdown table per scenario (medians, ratio warden / bare); `--json`
//! writes every run. See BENCHMARKS.md for the commands and the numbers.
//!
//! Not here: any pass/fail judgement on timings.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use warden_bench::procfs;
use warden_bench::report::{Report, RunFailure, ScenarioReport};
use warden_bench::scenario::{self, Broadcast, Scenario, ScenarioKind, Shape};
use warden_bench::server::{ServerKind, ServerPaths};

#[derive(Debug, Parser)]
#[command(
    name = "warden-load",
    about = "Load tool: warden vs a bare socketioxide hub over loopback"
)]
struct Args {
    /// Scenarios to run (default: all): burst-100, burst-1000, paced-100,
    /// flood-4, connect-1000, lifecycle, or `custom` with the flags below.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Servers to compare, among warden, warden-csr (connection state
    /// recovery on), bare, bare-128, python, node (each
    /// scenario runs those of its own list that are also here). python needs
    /// `pip install -r bench/hubs/requirements.txt`; node needs `npm ci --prefix bench/hubs`.
    #[arg(long, value_delimiter = ',', default_value = "warden,bare,bare-128")]
    servers: Vec<String>,
    /// Runs per server and scenario.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The warden binary (default: `warden` next to this program).
    #[arg(long)]
    warden: Option<PathBuf>,
    /// The bare hub binary (default: `bare-hub` next to this program).
    #[arg(long)]
    bare_hub: Option<PathBuf>,
    /// Also write every run, the medians and the ratios as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// `custom` scenario: clients.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// `custom` scenario: senders among the clients.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// `custom` scenario: events per sender.
    #[arg(long, default_value_t = 10)]
    events: usize,
    /// `custom` scenario: total events per second (burst if absent).
    #[arg(long)]
    rate: Option<f64>,
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn select_scenarios(args: &Args, servers: &[ServerKind]) -> Result<Vec<Scenario>, String> {
    let standard = scenario::standard_scenarios();
    let mut chosen = Vec::new();
    if args.scenarios.is_empty() {
        chosen = standard;
    } else {
        for name in &args.scenarios {
            if name == "custom" {
                let shape = match args.rate {
                    Some(events_per_second) => Shape::Paced { events_per_second },
                    None => Shape::Burst,
                };
                chosen.push(Scenario {
                    name: "custom".into(),
                    description: format!(
                        "{} clients, {} senders x {} events, {}",
                        args.clients,
                        args.senders,
                        args.events,
                        args.rate
                            .map_or("burst".to_owned(), |r| format!("{r} events/s in total"))
                    ),
                    kind: ScenarioKind::Broadcast(Broadcast {
                        clients: args.clients,
                        senders: args.senders,
                        events_per_sender: args.events,
                        shape,
                    }),
                    servers: ServerKind::ALL.to_vec(),
                });
            } else {
                let found = standard
                    .iter()
                    .find(|s| &s.name == name)
                    .ok_or_else(|| format!("unknown scenario {name:?}"))?;
                chosen.push(found.clone());
            }
        }
    }
    for scenario in &mut chosen {
        scenario.servers.retain(|s| servers.contains(s));
    }
    chosen.retain(|s| !s.servers.is_empty());
    Ok(chosen)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut servers = Vec::new();
    for name in &args.servers {
        match ServerKind::parse(name) {
            Some(kind) => servers.push(kind),
            None => {
                eprintln!("unknown server {name:?} (warden, bare, bare-128)");
                return ExitCode::from(2);
            }
        }
    }
    let paths = ServerPaths {
        warden: args.warden.clone().unwrap_or_else(|| sibling("warden")),
        bare_hub: args.bare_hub.clone().unwrap_or_else(|| sibling("bare-hub")),
        hubs: ServerPaths::default_hubs(),
    };
    let is_warden = |s: &ServerKind| matches!(s, ServerKind::Warden | ServerKind::WardenRecovery);
    if servers.iter().any(is_warden) && !paths.warden.exists() {
        eprintln!(
            "warden binary {} not found: build it with `cargo build --release -p warden` (skipping warden)",
            paths.warden.display()
        );
        servers.retain(|s| !is_warden(s));
    }
    let scenarios = match select_scenarios(&args, &servers) {
        Ok(scenarios) => scenarios,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let open_files_limit = match procfs::raise_nofile_limit() {
        Ok(limit) => Some(limit),
        Err(error) => {
            eprintln!("could not raise the open-files limit: {error}");
            None
        }
    };

    let mut reports = Vec::new();
    for scenario in scenarios {
        let mut runs = Vec::new();
        let mut failures = Vec::new();
        for run in 0..args.runs {
            // Alternate the servers so that a noisy machine hurts both alike.
            for &server in &scenario.servers {
                match scenario::run(&scenario, server, &paths, run).await {
                    Ok(metrics) => {
                        eprintln!(
                            "{} {} run {}: {}",
                            scenario.name,
                            server,
                            run,
                            progress_line(&metrics)
                        );
                        runs.push(metrics);
                    }
                    Err(error) => {
                        eprintln!("{} {} run {run} failed: {error}", scenario.name, server);
                        failures.push(RunFailure {
                            server: server.name().to_owned(),
                            run,
                            error: error.to_string(),
                        });
                    }
                }
            }
        }
        reports.push(ScenarioReport::new(scenario, runs, failures));
    }
    let report = Report {
        machine: procfs::machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        runs_per_server: args.runs,
        open_files_limit,
        scenarios: reports,
    };
    println!("{}", report.markdown());
    if let Some(path) = &args.json {
        let written = serde_json::to_string_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|text| std::fs::write(path, text));
        if let Err(error) = written {
            eprintln!("could not write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let failed = report.scenarios.iter().any(|s| !s.failures.is_empty());
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn progress_line(m: &warden_bench::scenario::RunMetrics) -> String {
    let mut parts = Vec::new();
    let mut push = |label: &str, value: Option<f64>| {
        if let Some(v) = value {
            parts.push(format!("{label} {v:.2}"));
        }
    };
    push("deliveries/s", m.deliveries_per_s);
    push("lost", m.lost.map(|v| v as f64));
    push("p50 ms", m.latency_p50_ms);
    push("p99 ms", m.latency_p99_ms);
    push("cpu µs/del", m.cpu_us_per_delivery);
    push("connect p99 ms", m.connect_p99_ms);
    push("cpu µs/conn", m.cpu_us_per_connection);
    push("health p99 ms", m.health.as_ref().and_then(|h| h.p99_ms));
    push("rss idle MiB", m.rss_idle_kib.map(|k| k as f64 / 1024.0));
    push("start ms", m.start_to_serving_ms);
    push("stop ms", m.stop_to_exit_ms);
    push("load", m.load_average_1m);
    let mut line = parts.join(", ");
    if !m.client_errors.is_empty() {
        line.push_str(&format!(" [errors: {}]", m.client_errors.join("; ")));
    }
    line
}
