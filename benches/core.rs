//! Microbenchmarks of the pure reliability core: what one event costs the
//! breaker and the strategy, what a window aggregation over a full health
//! history costs, and what reading and writing a PID record costs.
//!
//! Run with `cargo bench --bench core` (release profile). These report; no
//! test asserts a timing. Results and the machine they ran on are in
//! BENCHMARKS.md. Not here: the daemon's check cycle or the hub (they need
//! the OS and sockets).

use std::time::Duration;

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use warden::breaker::{BreakerSettings, CircuitBreaker};
use warden::escalation::{GradedRecoveryStrategy, StrategySettings};
use warden::health::{HealthCheckResult, HealthHistory, HealthMetric, HealthReport, HealthStatus};
use warden::pidfile::{PidRecord, ProcessInfo, parse_pid_file};
use warden::probe::ProcessStatus;
use warden::time::{Moment, WallTime};

fn main() {
    divan::main();
}

mod breaker {
    use super::*;

    /// One closed-state cycle: `try_acquire` then `on_success` (2 events).
    #[divan::bench]
    fn acquire_success(bencher: Bencher) {
        let mut b = CircuitBreaker::default();
        let mut now_ms = 0u64;
        bencher.counter(ItemsCount::new(2usize)).bench_local(|| {
            now_ms += 1;
            let now = Moment::from_millis(now_ms);
            let permit = b.try_acquire(black_box(now)).expect("closed grants");
            black_box(b.on_success(permit, now))
        });
    }

    /// One closed-state cycle ending in a failure that does not trip (2 events).
    #[divan::bench]
    fn acquire_failure(bencher: Bencher) {
        let settings = BreakerSettings {
            failure_threshold: u32::MAX,
            ..BreakerSettings::default()
        };
        let mut b = CircuitBreaker::new(settings).expect("valid settings");
        let mut now_ms = 0u64;
        bencher.counter(ItemsCount::new(2usize)).bench_local(|| {
            now_ms += 1;
            let now = Moment::from_millis(now_ms);
            let permit = b.try_acquire(black_box(now)).expect("closed grants");
            black_box(b.on_failure(permit, now))
        });
    }

    /// A whole trip and recovery with the seed's settings: 5 failures open the
    /// circuit, the open time passes, 3 trial successes close it
    /// (8 acquire/report pairs = 16 events, 3 transitions).
    #[divan::bench]
    fn trip_and_recover(bencher: Bencher) {
        let s = BreakerSettings::default();
        let mut b = CircuitBreaker::new(s.clone()).expect("valid settings");
        let mut now = Moment::ZERO;
        bencher.counter(ItemsCount::new(16usize)).bench_local(|| {
            for _ in 0..s.failure_threshold {
                let p = b.try_acquire(now).expect("closed grants");
                b.on_failure(p, now);
            }
            now = now + s.open_timeout;
            for _ in 0..s.success_threshold {
                let p = b.try_acquire(now).expect("half-open grants a trial");
                b.on_success(p, now);
            }
            black_box(b.state())
        });
    }

    /// Reading the status (never changes the breaker).
    #[divan::bench]
    fn status(bencher: Bencher) {
        let b = CircuitBreaker::default();
        bencher.bench_local(|| black_box(b.status(black_box(Moment::from_secs(1)))));
    }
}

mod strategy {
    use super::*;
    use HealthStatus::{Critical, Healthy, Unknown, Warning};

    /// A repeating day in the life: healthy stretches, warnings, an unknown,
    /// critical bursts, so that every rule (window, thresholds, rate limit,
    /// cooldown) runs. Reset when latched, so the ladder keeps moving.
    const PATTERN: [HealthStatus; 16] = [
        Healthy, Healthy, Warning, Warning, Healthy, Unknown, Warning, Critical, Critical, Healthy,
        Healthy, Critical, Warning, Healthy, Healthy, Healthy,
    ];

    /// One `observe` per iteration (1 event).
    #[divan::bench]
    fn observe(bencher: Bencher) {
        let mut s = GradedRecoveryStrategy::new(StrategySettings::default()).expect("valid");
        let mut i = 0usize;
        let mut now = Moment::ZERO;
        bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
            i += 1;
            now = now + Duration::from_secs(20);
            let d = s.observe(PATTERN[i % PATTERN.len()], black_box(now));
            if s.status().latched {
                s.reset();
            }
            black_box(d)
        });
    }

    /// `observe` of a healthy process (the common case): 1 event.
    #[divan::bench]
    fn observe_healthy(bencher: Bencher) {
        let mut s = GradedRecoveryStrategy::default();
        let mut now = Moment::ZERO;
        bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
            now = now + Duration::from_secs(30);
            black_box(s.observe(Healthy, black_box(now)))
        });
    }
}

mod health {
    use super::*;

    /// A report like the daemon's: three checkers, a handful of metrics each.
    fn report(i: u64) -> HealthReport {
        let at = Moment::from_secs(30 * i);
        let wall = WallTime::from_secs(1_754_490_600 + 30 * i);
        let status = match i % 7 {
            0 => HealthStatus::Warning,
            3 => HealthStatus::Critical,
            _ => HealthStatus::Healthy,
        };
        let metrics = |names: &[&str]| {
            names
                .iter()
                .map(|n| HealthMetric::new(*n, 1.0, status))
                .collect::<Vec<_>>()
        };
        let results = vec![
            HealthCheckResult::from_metrics(
                "process_resources",
                metrics(&["cpu_percent", "memory_mb", "file_descriptors", "threads"]),
                at,
                wall,
                Duration::from_micros(20),
            ),
            HealthCheckResult::from_metrics(
                "network_connectivity",
                metrics(&["port_accessible", "socket_creation"]),
                at,
                wall,
                Duration::from_micros(50),
            ),
            HealthCheckResult::from_metrics(
                "service_health",
                metrics(&[
                    "clients_connected",
                    "event_rate",
                    "error_rate",
                    "last_activity",
                ]),
                at,
                wall,
                Duration::from_micros(5),
            ),
        ];
        HealthReport::from_results(results, at, wall)
    }

    /// `aggregate` over a full history of `n` reports, with a window covering all of them.
    #[divan::bench(args = [100, 1000])]
    fn aggregate_full_history(bencher: Bencher, n: u64) {
        let mut history = HealthHistory::new(n as usize);
        for i in 0..n {
            history.push(report(i));
        }
        let now = Moment::from_secs(30 * n);
        let window = Duration::from_secs(30 * (n + 1));
        bencher
            .counter(ItemsCount::new(n as usize))
            .bench_local(|| black_box(history.aggregate(black_box(window), now)));
    }

    /// Pushing one report into a full history (the oldest is dropped).
    #[divan::bench]
    fn push_into_full_history(bencher: Bencher) {
        let mut history = HealthHistory::new(100);
        for i in 0..100 {
            history.push(report(i));
        }
        let next = report(100);
        bencher
            .with_inputs(|| next.clone())
            .bench_local_values(|r| history.push(r));
    }
}

mod pid_record {
    use super::*;

    fn record() -> PidRecord {
        PidRecord {
            pid: 4242,
            server_id: PidRecord::server_id_for_port(8765),
            port: 8765,
            host: "localhost".into(),
            start_time: WallTime::from_millis(1_754_490_600_123),
            process_start_time: Some(WallTime::from_secs(1_754_490_600)),
            version: "0.1.0".into(),
            process_info: ProcessInfo {
                name: "warden".into(),
                status: ProcessStatus::Running,
                cpu_percent: 1.5,
                memory_mb: 12.25,
            },
            lock_acquired: true,
            created_by: "warden".into(),
            cmdline: vec!["warden".into(), "start".into()],
            invocation: None,
        }
    }

    /// `PidRecord::to_json_pretty`: the text written to the PID file.
    #[divan::bench]
    fn render(bencher: Bencher) {
        let r = record();
        bencher.bench_local(|| black_box(black_box(&r).to_json_pretty()));
    }

    /// `parse_pid_file` on that text.
    #[divan::bench]
    fn parse(bencher: Bencher) {
        let text = record().to_json_pretty();
        bencher.bench_local(|| black_box(parse_pid_file(black_box(text.as_bytes()))));
    }

    /// `parse_pid_file` on a legacy file (a bare pid).
    #[divan::bench]
    fn parse_legacy(bencher: Bencher) {
        bencher.bench_local(|| black_box(parse_pid_file(black_box(b"4242\n"))));
    }
}
