//! Folding runs into what people read: the median of each metric per
//! scenario and server, the ratio warden / bare, a Markdown table per
//! scenario (pasted as is into BENCHMARKS.md) and the whole as JSON (every
//! run kept, for anyone who doubts a median).
//!
//! Not here: judging against the targets (BENCHMARKS.md does that in
//! prose, next to the numbers).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::procfs::Machine;
use crate::scenario::{RunMetrics, Scenario};
use crate::server::ServerKind;
use crate::stats::{median, percentile};

/// A run that failed before it could be measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunFailure {
    pub server: String,
    pub run: usize,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: Scenario,
    pub runs: Vec<RunMetrics>,
    pub failures: Vec<RunFailure>,
    /// server → metric → median over the runs that measured it.
    pub medians: BTreeMap<String, BTreeMap<String, f64>>,
    /// metric → median(warden) / median(bare), where both exist and bare ≠ 0.
    pub ratios_warden_over_bare: BTreeMap<String, f64>,
    /// server → HTTP probe latency over the samples of all its runs.
    pub pooled_health: BTreeMap<String, PooledHealth>,
}

/// Reads one figure of a [`PooledHealth`].
type PooledRead = fn(&PooledHealth) -> Option<f64>;

/// The HTTP probe's latency over every sample of every run of one server.
#[derive(Debug, Clone, Serialize)]
pub struct PooledHealth {
    pub samples: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl PooledHealth {
    fn of(runs: &[&RunMetrics]) -> Option<PooledHealth> {
        let mut all: Vec<u32> = runs
            .iter()
            .filter_map(|r| r.health.as_ref())
            .flat_map(|h| h.latencies_us.iter().copied())
            .collect();
        if all.is_empty() {
            return None;
        }
        all.sort_unstable();
        let to_ms = |us: u32| f64::from(us) / 1_000.0;
        Some(PooledHealth {
            samples: all.len(),
            p50_ms: percentile(&all, 50.0).map(to_ms),
            p99_ms: percentile(&all, 99.0).map(to_ms),
            max_ms: all.last().copied().map(to_ms),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub command: String,
    pub runs_per_server: usize,
    pub open_files_limit: Option<u64>,
    pub scenarios: Vec<ScenarioReport>,
}

/// A metric as shown: its key (in JSON), its label (in the table), and how
/// to read it from a run.
struct MetricDef {
    key: &'static str,
    label: &'static str,
    read: fn(&RunMetrics) -> Option<f64>,
}

fn kib_to_mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

fn count(value: Option<impl Into<u64>>) -> Option<f64> {
    value.map(|v| v.into() as f64)
}

const METRICS: &[MetricDef] = &[
    MetricDef {
        key: "deliveries_per_s",
        label: "deliveries/s",
        read: |m| m.deliveries_per_s,
    },
    MetricDef {
        key: "latency_p50_ms",
        label: "emit→receive p50 (ms)",
        read: |m| m.latency_p50_ms,
    },
    MetricDef {
        key: "latency_p99_ms",
        label: "emit→receive p99 (ms)",
        read: |m| m.latency_p99_ms,
    },
    MetricDef {
        key: "expected_deliveries",
        label: "expected deliveries",
        read: |m| count(m.expected_deliveries),
    },
    MetricDef {
        key: "lost",
        label: "lost deliveries",
        read: |m| count(m.lost),
    },
    MetricDef {
        key: "reordered",
        label: "reordered deliveries",
        read: |m| count(m.reordered),
    },
    MetricDef {
        key: "cpu_us_per_delivery",
        label: "server CPU µs/delivery",
        read: |m| m.cpu_us_per_delivery,
    },
    MetricDef {
        key: "connect_p50_ms",
        label: "connect→ack p50 (ms)",
        read: |m| m.connect_p50_ms,
    },
    MetricDef {
        key: "connect_p99_ms",
        label: "connect→ack p99 (ms)",
        read: |m| m.connect_p99_ms,
    },
    MetricDef {
        key: "connect_all_ms",
        label: "all connected (ms)",
        read: |m| m.connect_all_ms,
    },
    MetricDef {
        key: "cpu_us_per_connection",
        label: "server CPU µs/connection",
        read: |m| m.cpu_us_per_connection,
    },
    MetricDef {
        key: "connect_failures",
        label: "connect failures",
        read: |m| m.connect_failures.map(|n| n as f64),
    },
    MetricDef {
        key: "health_p50_ms",
        label: "health p50 under load (ms)",
        read: |m| m.health.as_ref().and_then(|h| h.p50_ms),
    },
    MetricDef {
        key: "health_p99_ms",
        label: "health p99 under load (ms)",
        read: |m| m.health.as_ref().and_then(|h| h.p99_ms),
    },
    MetricDef {
        key: "rss_start_mib",
        label: "RSS at start (MiB)",
        read: |m| kib_to_mib(m.rss_start_kib),
    },
    MetricDef {
        key: "rss_start_anon_mib",
        label: "… of which anonymous (MiB)",
        read: |m| kib_to_mib(m.rss_start_anon_kib),
    },
    MetricDef {
        key: "rss_idle_mib",
        label: "RSS idle with clients (MiB)",
        read: |m| kib_to_mib(m.rss_idle_kib),
    },
    MetricDef {
        key: "rss_idle_anon_mib",
        label: "… of which anonymous (MiB)",
        read: |m| kib_to_mib(m.rss_idle_anon_kib),
    },
    MetricDef {
        key: "rss_peak_mib",
        label: "RSS peak (MiB)",
        read: |m| kib_to_mib(m.rss_peak_kib),
    },
    MetricDef {
        key: "rss_soon_after_mib",
        label: "RSS 0.5 s after the clients left (MiB)",
        read: |m| kib_to_mib(m.rss_soon_after_kib),
    },
    MetricDef {
        key: "rss_after_mib",
        label: "RSS 5 s after the clients left (MiB)",
        read: |m| kib_to_mib(m.rss_after_kib),
    },
    MetricDef {
        key: "rss_after_anon_mib",
        label: "… of which anonymous (MiB)",
        read: |m| kib_to_mib(m.rss_after_anon_kib),
    },
    MetricDef {
        key: "start_to_serving_ms",
        label: "start→serving (ms)",
        read: |m| m.start_to_serving_ms,
    },
    MetricDef {
        key: "stop_to_exit_ms",
        label: "stop→exit (ms)",
        read: |m| m.stop_to_exit_ms,
    },
    MetricDef {
        key: "load_average_1m",
        label: "machine load (1 min)",
        read: |m| m.load_average_1m,
    },
];

/// Metrics shown for every scenario only where they matter.
fn shown(scenario: &Scenario, key: &str) -> bool {
    use crate::scenario::ScenarioKind;
    match scenario.kind {
        ScenarioKind::Lifecycle { .. } => matches!(
            key,
            "start_to_serving_ms"
                | "stop_to_exit_ms"
                | "connect_failures"
                | "rss_start_mib"
                | "rss_start_anon_mib"
                | "rss_idle_mib"
                | "rss_idle_anon_mib"
                | "load_average_1m"
        ),
        // The stop of a broadcast run has no clients left: not the target's
        // measurement, kept in JSON only.
        _ => key != "stop_to_exit_ms",
    }
}

impl ScenarioReport {
    pub fn new(scenario: Scenario, runs: Vec<RunMetrics>, failures: Vec<RunFailure>) -> Self {
        let mut medians: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        let mut pooled_health = BTreeMap::new();
        for server in &scenario.servers {
            let of_server: Vec<&RunMetrics> =
                runs.iter().filter(|r| r.server == server.name()).collect();
            if let Some(pooled) = PooledHealth::of(&of_server) {
                pooled_health.insert(server.name().to_owned(), pooled);
            }
            let mut per_metric = BTreeMap::new();
            for def in METRICS {
                let values: Vec<f64> = of_server.iter().filter_map(|r| (def.read)(r)).collect();
                if let Some(m) = median(&values) {
                    per_metric.insert(def.key.to_owned(), m);
                }
            }
            medians.insert(server.name().to_owned(), per_metric);
        }
        let mut ratios = BTreeMap::new();
        if let (Some(warden), Some(bare)) = (
            medians.get(ServerKind::Warden.name()),
            medians.get(ServerKind::Bare.name()),
        ) {
            for (key, w) in warden {
                if let Some(b) = bare.get(key)
                    && *b != 0.0
                    && key != "load_average_1m"
                {
                    ratios.insert(key.clone(), w / b);
                }
            }
        }
        ScenarioReport {
            scenario,
            runs,
            failures,
            medians,
            ratios_warden_over_bare: ratios,
            pooled_health,
        }
    }

    /// The scenario as a Markdown section: medians per server and the ratio.
    pub fn markdown(&self) -> String {
        let servers: Vec<&str> = self.scenario.servers.iter().map(|s| s.name()).collect();
        let mut out = String::new();
        let counts: Vec<String> = servers
            .iter()
            .map(|s| {
                let n = self.runs.iter().filter(|r| r.server == *s).count();
                format!("{s} {n}")
            })
            .collect();
        let _ = writeln!(
            out,
            "#### {}: {} (runs: {})\n",
            self.scenario.name,
            self.scenario.description,
            counts.join(", ")
        );
        let paths: Vec<String> = servers
            .iter()
            .filter_map(|s| {
                let path = self
                    .runs
                    .iter()
                    .filter(|r| r.server == *s)
                    .find_map(|r| r.health.as_ref().map(|h| h.path.clone()))?;
                Some(format!("{s} `{path}`"))
            })
            .collect();
        if !paths.is_empty() {
            let _ = writeln!(out, "HTTP probe under load: {}\n", paths.join(", "));
        }
        let _ = write!(out, "| metric (median) |");
        for s in &servers {
            let _ = write!(out, " {s} |");
        }
        let has_ratio = servers.contains(&"warden") && servers.contains(&"bare");
        if has_ratio {
            let _ = write!(out, " warden / bare |");
        }
        let _ = writeln!(out);
        let _ = write!(out, "|---|");
        for _ in &servers {
            let _ = write!(out, "---:|");
        }
        if has_ratio {
            let _ = write!(out, "---:|");
        }
        let _ = writeln!(out);
        for def in METRICS {
            if !shown(&self.scenario, def.key) {
                continue;
            }
            let values: Vec<Option<f64>> = servers
                .iter()
                .map(|s| self.medians.get(*s).and_then(|m| m.get(def.key)).copied())
                .collect();
            if values.iter().all(Option::is_none) {
                continue;
            }
            let _ = write!(out, "| {} |", def.label);
            for value in &values {
                let _ = write!(out, " {} |", value.map_or("–".to_owned(), format_value));
            }
            if has_ratio {
                let ratio = self.ratios_warden_over_bare.get(def.key);
                let _ = write!(
                    out,
                    " {} |",
                    ratio.map_or("–".to_owned(), |r| format!("{r:.2}"))
                );
            }
            let _ = writeln!(out);
        }
        if !self.pooled_health.is_empty() {
            let pooled: Vec<Option<&PooledHealth>> =
                servers.iter().map(|s| self.pooled_health.get(*s)).collect();
            let rows: [(&str, PooledRead); 2] = [
                ("health p50, all runs pooled (ms)", |p| p.p50_ms),
                ("health p99, all runs pooled (ms)", |p| p.p99_ms),
            ];
            for (label, read) in rows {
                let _ = write!(out, "| {label} |");
                let values: Vec<Option<f64>> = pooled.iter().map(|p| p.and_then(read)).collect();
                for value in &values {
                    let _ = write!(out, " {} |", value.map_or("–".to_owned(), format_value));
                }
                if has_ratio {
                    let ratio = match (values.first(), values.get(1)) {
                        (Some(Some(w)), Some(Some(b))) if *b != 0.0 => format!("{:.2}", w / b),
                        _ => "–".to_owned(),
                    };
                    let _ = write!(out, " {ratio} |");
                }
                let _ = writeln!(out);
            }
            let samples: Vec<String> = servers
                .iter()
                .filter_map(|s| Some(format!("{s} {}", self.pooled_health.get(*s)?.samples)))
                .collect();
            let _ = writeln!(out, "\nHTTP probe samples pooled: {}", samples.join(", "));
        }
        for failure in &self.failures {
            let first_line = failure.error.lines().next().unwrap_or("");
            let _ = writeln!(
                out,
                "\nrun {} of {} failed: {first_line}",
                failure.run, failure.server
            );
        }
        let errors: Vec<String> = self
            .runs
            .iter()
            .flat_map(|r| {
                r.client_errors
                    .iter()
                    .map(move |e| format!("{} run {}: {e}", r.server, r.run))
            })
            .take(5)
            .collect();
        for error in errors {
            let _ = writeln!(out, "\nclient error: {error}");
        }
        out
    }
}

/// Three significant digits, no exponent.
fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "Machine: {} ({} logical CPUs, {} MiB), Linux {}; {} run(s) per server, servers alternating.\n",
            m.cpu_model, m.logical_cpus, m.memory_total_mib, m.kernel, self.runs_per_server
        );
        for scenario in &self.scenarios {
            out.push_str(&scenario.markdown());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::standard_scenarios;

    fn run(server: &str, run: usize, cpu: f64, lost: u64) -> RunMetrics {
        RunMetrics {
            scenario: "burst-100".into(),
            server: server.into(),
            run,
            cpu_us_per_delivery: Some(cpu),
            lost: Some(lost),
            rss_idle_kib: Some(4096),
            ..RunMetrics::default()
        }
    }

    #[test]
    fn medians_per_server_and_ratio_warden_over_bare() {
        // As warden-load does for `--servers warden,bare`.
        let mut scenario = standard_scenarios().remove(0);
        scenario
            .servers
            .retain(|s| matches!(s, ServerKind::Warden | ServerKind::Bare));
        let runs = vec![
            run("warden", 0, 5.0, 0),
            run("bare", 0, 4.0, 0),
            run("warden", 1, 7.0, 0),
            run("bare", 1, 5.0, 2),
            run("warden", 2, 6.0, 0),
            run("bare", 2, 9.0, 2),
        ];
        let report = ScenarioReport::new(scenario, runs, Vec::new());
        assert_eq!(report.medians["warden"]["cpu_us_per_delivery"], 6.0);
        assert_eq!(report.medians["bare"]["cpu_us_per_delivery"], 5.0);
        assert_eq!(report.medians["bare"]["lost"], 2.0);
        assert_eq!(report.ratios_warden_over_bare["cpu_us_per_delivery"], 1.2);
        // Bare lost 2, warden 0: the ratio is 0; a zero denominator has none.
        assert_eq!(report.ratios_warden_over_bare["lost"], 0.0);
        assert_eq!(report.medians["warden"]["rss_idle_mib"], 4.0);
        let table = report.markdown();
        assert!(
            table.contains("| server CPU µs/delivery | 6 | 5 | 1.20 |"),
            "{table}"
        );
        assert!(table.contains("runs: warden 3, bare 3"), "{table}");
        assert!(!table.contains("stop→exit"), "{table}");
    }

    #[test]
    fn probe_latencies_are_pooled_over_runs() {
        use crate::scenario::HealthProbe;
        let scenario = standard_scenarios().remove(0);
        let with_probe = |run_index: usize, latencies_us: Vec<u32>| RunMetrics {
            health: Some(HealthProbe {
                path: "/health".into(),
                latencies_us,
                ..HealthProbe::default()
            }),
            ..run("warden", run_index, 1.0, 0)
        };
        // 100 samples over two runs: 1..=99 ms and one of 500 ms.
        let first: Vec<u32> = (1..=50).map(|ms| ms * 1_000).collect();
        let mut second: Vec<u32> = (51..=99).map(|ms| ms * 1_000).collect();
        second.push(500_000);
        let runs = vec![with_probe(0, first), with_probe(1, second)];
        let report = ScenarioReport::new(scenario, runs, Vec::new());
        let pooled = &report.pooled_health["warden"];
        assert_eq!(pooled.samples, 100);
        assert_eq!(pooled.p50_ms, Some(50.0));
        assert_eq!(pooled.p99_ms, Some(99.0));
        assert_eq!(pooled.max_ms, Some(500.0));
        assert!(!report.pooled_health.contains_key("bare"));
        let table = report.markdown();
        assert!(
            table.contains("| health p99, all runs pooled (ms) | 99 | – | – |"),
            "{table}"
        );
    }

    #[test]
    fn values_keep_three_significant_digits() {
        assert_eq!(format_value(123_456.7), "123457");
        assert_eq!(format_value(12.345), "12.3");
        assert_eq!(format_value(1.2345), "1.23");
        assert_eq!(format_value(0.01234), "0.012");
        assert_eq!(format_value(0.0), "0");
    }
}
