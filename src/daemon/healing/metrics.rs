//! `GET /metrics`: the Prometheus/OpenMetrics text exposition, built with
//! prometheus-client on an explicit [`Registry`] made fresh for each scrape
//! (no globals, no state to keep in sync: every value is read from its
//! source when scraped).
//!
//! Names: the seed's `socketio_uptime_seconds` (a gauge, so the name stays
//! as the seed wrote it: OpenMetrics counters must end in `_total`),
//! `socketio_clients_connected`, `socketio_events_processed_total`,
//! `socketio_health_status` (0 unknown, 1 healthy, 2 warning, 3 critical);
//! the standard `process_*` family, filled from the same sysinfo sample the
//! process checker judged (CPU seconds and the fd limit come from
//! `getrusage` / `getrlimit`, which sysinfo does not give); everything
//! else is `warden_*` (README, "Metric names"): the hub's counters, the
//! recovery counters `warden_recoveries_total{action,outcome}`,
//! `warden_recoveries_rejected_total`, `warden_circuit_breaker_trips_total`,
//! `warden_circuit_breaker_open`, `warden_service_restarts_total` and
//! `warden_build_info`; series renamed from a promised `socketio_*` name are
//! also served under it for one release ([`register_own_with_alias`]).
//! In cluster mode also `warden_cluster_redis_up`, `warden_cluster_peers`,
//! `warden_cluster_redis_rtt_seconds`, and the counters
//! `warden_cluster_messages_published_total`,
//! `warden_cluster_messages_received_total`,
//! `warden_cluster_local_fallbacks_total` and
//! `warden_cluster_redis_reconnects_total`.
//!
//! Not here: routing (see `health_http`), measuring (see `checkers`).

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::breaker::CircuitState;
use crate::daemon::cluster::{ClusterSnapshot, RedisState};
use crate::daemon::healing::alerts::AlertsStatus;
use crate::daemon::healing::checkers::ProcessSample;
use crate::daemon::healing::executor::RecoveryCounts;
use crate::daemon::hub::ServiceStatsSnapshot;
use crate::health::HealthStatus;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything one scrape prints.
#[derive(Clone, Debug)]
pub struct MetricsInputs {
    pub uptime: Duration,
    pub stats: ServiceStatsSnapshot,
    pub health: HealthStatus,
    pub sample: Option<ProcessSample>,
    pub recovery: Option<RecoveryCounts>,
    pub service_restarts: u64,
    /// From [`self_cpu_seconds`].
    pub cpu_seconds: Option<f64>,
    /// From [`max_fds`].
    pub max_fds: Option<u64>,
    /// In cluster mode.
    pub cluster: Option<ClusterSnapshot>,
    /// When alerts are configured.
    pub alerts: Option<AlertsStatus>,
}

type Labels = Vec<(String, String)>;

/// Renders the exposition (ends with `# EOF`).
pub fn render(inputs: &MetricsInputs) -> Result<String, std::fmt::Error> {
    let mut r = Registry::default();
    r.register(
        "socketio_uptime_seconds",
        "Server uptime in seconds",
        ConstGauge::new(inputs.uptime.as_secs_f64()),
    );
    r.register(
        "socketio_clients_connected",
        "Number of connected clients",
        ConstGauge::new(inputs.stats.clients_connected as i64),
    );
    r.register(
        "socketio_events_processed",
        "Total number of events processed",
        ConstCounter::new(inputs.stats.events_processed),
    );
    register_hub(&mut r, &inputs.stats);
    r.register(
        "socketio_health_status",
        "Current health status (0=unknown, 1=healthy, 2=warning, 3=critical)",
        ConstGauge::new(i64::from(inputs.health.prometheus_code())),
    );
    register_process(&mut r, inputs);
    if let Some(rec) = &inputs.recovery {
        register_recovery(&mut r, rec);
    }
    if let Some(c) = &inputs.cluster {
        register_cluster(&mut r, c);
    }
    if let Some(a) = &inputs.alerts {
        register_alerts(&mut r, a);
    }
    register_own(
        &mut r,
        "service_restarts",
        "Successful in-process restarts of the hub listener",
        || ConstCounter::new(inputs.service_restarts),
    );
    let build = Family::<Labels, prometheus_client::metrics::gauge::Gauge>::default();
    build.get_or_create(&build_info_labels()).set(1);
    r.register(
        "warden_build_info",
        "1, labelled with the version and the platform of this build",
        build,
    );
    let mut out = String::new();
    encode(&mut out, &r)?;
    Ok(out)
}

/// The hub's own counters (`warden_*`, with the aliases README promised).
fn register_hub(r: &mut Registry, stats: &ServiceStatsSnapshot) {
    register_own(
        r,
        "events_relayed",
        "Events handed to the adapter for relay",
        || ConstCounter::new(stats.events_relayed),
    );
    register_own(
        r,
        "events_dropped",
        "Deliveries that did not happen (full buffers, closing sockets)",
        || ConstCounter::new(stats.events_dropped),
    );
    register_own(r, "errors", "Failures of the hub itself", || {
        ConstCounter::new(stats.errors)
    });
    register_own_with_alias(
        r,
        "client_errors",
        "Bad packets sent by clients (their errors, not the hub's)",
        || ConstCounter::new(stats.client_errors),
    );
    register_own_with_alias(
        r,
        "clients_disconnected_for_abuse",
        "Clients disconnected for spending their error budget",
        || ConstCounter::new(stats.clients_disconnected_for_abuse),
    );
    register_own_with_alias(
        r,
        "events_refused",
        "Events refused to a sender whose relay queue was full (told to it)",
        || ConstCounter::new(stats.events_refused),
    );
    register_own_with_alias(
        r,
        "clients_refused_max_clients",
        "Connections refused because server.max_clients were connected",
        || ConstCounter::new(stats.clients_refused_max_clients),
    );
    register_own_with_alias(
        r,
        "events_dropped_recipient_full",
        "Deliveries dropped because the recipient's buffer was full (a slow reader)",
        || ConstCounter::new(stats.events_dropped_recipient_full),
    );
    register_sessions(r, stats);
}

/// The hub's connection state recovery counters (`warden_*` and aliases).
fn register_sessions(r: &mut Registry, stats: &ServiceStatsSnapshot) {
    register_own_with_alias(
        r,
        "sessions_kept",
        "Connection state recovery sessions kept (connected or awaiting their client)",
        || ConstGauge::new(stats.sessions_kept as i64),
    );
    register_own_with_alias(
        r,
        "sessions_recovered",
        "Reconnects that recovered their session (socket.recovered true)",
        || ConstCounter::new(stats.sessions_recovered),
    );
    register_own_with_alias(
        r,
        "sessions_expired",
        "Sessions forgotten past max_disconnection_duration_seconds or max_sessions",
        || ConstCounter::new(stats.sessions_expired),
    );
    register_own_with_alias(
        r,
        "sessions_refused",
        "Reconnects that named a session that could not be recovered (a new one instead)",
        || ConstCounter::new(stats.sessions_refused),
    );
    register_own_with_alias(
        r,
        "events_replayed",
        "Events replayed to recovered sessions",
        || ConstCounter::new(stats.events_replayed),
    );
}

/// The standard `process_*` family: CPU seconds and the descriptor limit
/// from the kernel, the rest from the sample the process checker judged.
fn register_process(r: &mut Registry, inputs: &MetricsInputs) {
    if let Some(cpu) = inputs.cpu_seconds {
        r.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            ConstCounter::new(cpu),
        );
    }
    if let Some(sample) = &inputs.sample {
        let s = &sample.snapshot;
        r.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            ConstGauge::new(s.memory_rss_bytes as i64),
        );
        r.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            ConstGauge::new(s.memory_virtual_bytes as i64),
        );
        if let Some(fds) = s.open_fds {
            r.register(
                "process_open_fds",
                "Number of open file descriptors",
                ConstGauge::new(fds as i64),
            );
        }
        r.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            ConstGauge::new(s.start_time.as_secs_f64()),
        );
        if let Some(threads) = s.threads {
            r.register(
                "process_threads",
                "Number of OS threads in the process",
                ConstGauge::new(threads as i64),
            );
        }
        r.register(
            "process_cpu_percent",
            "CPU use of the process between the last two samples, in percent of one core (100 = one core busy; can exceed 100 on several cores)",
            ConstGauge::new(sample.cpu_percent),
        );
    }
    if let Some(max) = inputs.max_fds {
        r.register(
            "process_max_fds",
            "Maximum number of open file descriptors",
            ConstGauge::new(max as i64),
        );
    }
}

/// The recovery counters and the breaker's state.
fn register_recovery(r: &mut Registry, rec: &RecoveryCounts) {
    let family = Family::<Labels, Counter>::default();
    for (action, success, n) in &rec.by_action {
        let labels = vec![
            ("action".to_string(), action.as_str().to_string()),
            (
                "outcome".to_string(),
                if *success { "success" } else { "failure" }.to_string(),
            ),
        ];
        family.get_or_create(&labels).inc_by(*n);
    }
    register_own_with_alias(
        r,
        "recoveries",
        "Recovery actions executed, by action and outcome",
        || family.clone(),
    );
    register_own_with_alias(
        r,
        "recoveries_rejected",
        "Recovery actions blocked by the circuit breaker",
        || ConstCounter::new(rec.rejected_by_breaker),
    );
    register_own_with_alias(
        r,
        "circuit_breaker_trips",
        "Times the circuit breaker opened",
        || ConstCounter::new(rec.breaker_trips),
    );
    let open = matches!(
        rec.breaker_state,
        Some(CircuitState::Open | CircuitState::ForcedOpen)
    );
    register_own(
        r,
        "circuit_breaker_open",
        "1 while the circuit breaker blocks recovery",
        || ConstGauge::new(i64::from(open)),
    );
}

/// A cluster node's link to Redis and its cross-node traffic.
fn register_cluster(r: &mut Registry, c: &ClusterSnapshot) {
    r.register(
        "warden_cluster_redis_up",
        "1 while this node is connected to Redis (cross-node relay works)",
        ConstGauge::new(i64::from(c.redis_state == RedisState::Connected)),
    );
    r.register(
        "warden_cluster_peers",
        "Other nodes seen in the last three heartbeats",
        ConstGauge::new(c.peers_seen.len() as i64),
    );
    if let Some(rtt) = c.redis_rtt_ms {
        r.register(
            "warden_cluster_redis_rtt_seconds",
            "Round trip of the last Redis heartbeat",
            ConstGauge::new(rtt / 1000.0),
        );
    }
    r.register(
        "warden_cluster_messages_published",
        "Messages published to the other nodes",
        ConstCounter::new(c.cross_node_published),
    );
    r.register(
        "warden_cluster_messages_received",
        "Messages received from the other nodes",
        ConstCounter::new(c.cross_node_received),
    );
    r.register(
        "warden_cluster_local_fallbacks",
        "Relays delivered to this node's clients only while Redis was unreachable",
        ConstCounter::new(c.local_fallbacks),
    );
    r.register(
        "warden_cluster_redis_reconnects",
        "Connections to Redis made after the first",
        ConstCounter::new(c.connects.saturating_sub(1)),
    );
}

/// `warden_build_info`'s labels.
fn build_info_labels() -> Labels {
    vec![
        ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("os".to_string(), std::env::consts::OS.to_string()),
        ("arch".to_string(), std::env::consts::ARCH.to_string()),
    ]
}

/// Registers one of warden's own series as `warden_<name>` (README,
/// "Metric names": the seed's `socketio_*` series keep their names,
/// everything else is `warden_*`).
fn register_own<M: prometheus_client::registry::Metric>(
    r: &mut Registry,
    name: &str,
    help: &str,
    make: impl Fn() -> M,
) {
    r.register(format!("warden_{name}"), help, make());
}

/// [`register_own`], and for one release also under the `socketio_<name>`
/// that README or a test promised before the rename (marked deprecated in
/// its help text).
fn register_own_with_alias<M: prometheus_client::registry::Metric>(
    r: &mut Registry,
    name: &str,
    help: &str,
    make: impl Fn() -> M,
) {
    register_own(r, name, help, &make);
    r.register(
        format!("socketio_{name}"),
        format!("Deprecated alias of warden_{name}, removed in the next release: {help}"),
        make(),
    );
}

/// `warden_alerts_*`: per destination (label `destination`), alerts
/// delivered, failed every attempt and skipped by the destination's breaker;
/// alerts dropped by the full queue and suppressed by the rate limit.
fn register_alerts(r: &mut Registry, a: &AlertsStatus) {
    let per_destination = |pick: fn(&crate::daemon::healing::alerts::DestinationStatus) -> u64| {
        let family = Family::<Labels, Counter>::default();
        for d in &a.destinations {
            family
                .get_or_create(&vec![("destination".to_string(), d.destination.clone())])
                .inc_by(pick(d));
        }
        family
    };
    r.register(
        "warden_alerts_sent",
        "Alerts delivered, by destination",
        per_destination(|d| d.sent),
    );
    r.register(
        "warden_alerts_failed",
        "Alerts that failed every attempt, by destination",
        per_destination(|d| d.failed),
    );
    r.register(
        "warden_alerts_skipped",
        "Alerts not tried while the destination's circuit breaker was open",
        per_destination(|d| d.skipped),
    );
    r.register(
        "warden_alerts_dropped",
        "Alerts dropped because the queue was full",
        ConstCounter::new(a.dropped_queue_full),
    );
    r.register(
        "warden_alerts_suppressed",
        "Alerts not queued by the per-minute rate limit",
        ConstCounter::new(a.suppressed),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::os::sysprobe::{max_fds, self_cpu_seconds};
    use crate::escalation::RecoveryAction;
    use crate::probe::ProcessSnapshot;
    use crate::time::WallTime;

    fn inputs() -> MetricsInputs {
        let mut snap =
            ProcessSnapshot::new(7, "warden", &["warden"], WallTime::from_secs(1_700_000_000));
        snap.memory_rss_bytes = 10 << 20;
        snap.memory_virtual_bytes = 40 << 20;
        snap.open_fds = Some(12);
        snap.threads = Some(5);
        MetricsInputs {
            uptime: Duration::from_secs(3600),
            stats: ServiceStatsSnapshot {
                clients_connected: 3,
                events_processed: 1250,
                events_relayed: 1250,
                events_dropped: 0,
                errors: 2,
                client_errors: 5,
                clients_disconnected_for_abuse: 1,
                ..ServiceStatsSnapshot::default()
            },
            health: HealthStatus::Healthy,
            sample: Some(ProcessSample {
                snapshot: snap,
                cpu_percent: 1.5,
                cores: 2,
                wall: WallTime::from_secs(1_700_000_100),
            }),
            recovery: Some(RecoveryCounts {
                by_action: vec![(RecoveryAction::ClearConnections, true, 2)],
                rejected_by_breaker: 1,
                breaker_trips: 1,
                breaker_state: Some(CircuitState::Open),
            }),
            service_restarts: 1,
            cpu_seconds: self_cpu_seconds(),
            max_fds: max_fds(),
            cluster: None,
            alerts: None,
        }
    }

    #[test]
    fn cluster_series_appear_in_cluster_mode_only() {
        let text = render(&inputs()).expect("encodes");
        assert_eq!(value(&text, "warden_cluster_redis_up"), None);
        let mut with = inputs();
        with.cluster = Some(ClusterSnapshot {
            node_id: "a".into(),
            prefix: "warden".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_state: RedisState::Connected,
            redis_state_since: None,
            redis_rtt_ms: Some(2.0),
            heartbeat_age_ms: Some(10),
            heartbeat_interval_ms: 1000,
            peers_seen: vec!["b".into(), "c".into()],
            reconnect_breaker: CircuitState::Closed,
            connects: 3,
            disconnects: 2,
            connect_failures: 7,
            cross_node_published: 40,
            events_published: 30,
            events_outbox: 0,
            publish_failures: 1,
            cross_node_received: 50,
            incoming_dropped: 0,
            local_fallbacks: 4,
            history_stream: "warden:history".into(),
            history_max_len: 1000,
            history_pending: 0,
            history_written: 40,
            history_overflowed: 0,
            history_read_failures: 0,
            foreign_ignored: 0,
            last_error: None,
        });
        let text = render(&with).expect("encodes");
        assert_eq!(value(&text, "warden_cluster_redis_up"), Some(1.0));
        assert_eq!(value(&text, "warden_cluster_peers"), Some(2.0));
        assert_eq!(
            value(&text, "warden_cluster_redis_rtt_seconds"),
            Some(0.002)
        );
        assert_eq!(
            value(&text, "warden_cluster_messages_published_total"),
            Some(40.0)
        );
        assert_eq!(
            value(&text, "warden_cluster_messages_received_total"),
            Some(50.0)
        );
        assert_eq!(
            value(&text, "warden_cluster_local_fallbacks_total"),
            Some(4.0)
        );
        assert_eq!(
            value(&text, "warden_cluster_redis_reconnects_total"),
            Some(2.0)
        );
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn the_seed_series_and_process_family_are_exposed() {
        let text = render(&inputs()).expect("encodes");
        assert_eq!(value(&text, "socketio_uptime_seconds"), Some(3600.0));
        assert_eq!(value(&text, "socketio_clients_connected"), Some(3.0));
        assert_eq!(
            value(&text, "socketio_events_processed_total"),
            Some(1250.0)
        );
        assert_eq!(value(&text, "socketio_health_status"), Some(1.0));
        assert_eq!(
            value(&text, "process_resident_memory_bytes"),
            Some((10 << 20) as f64)
        );
        assert_eq!(value(&text, "process_open_fds"), Some(12.0));
        assert_eq!(value(&text, "process_threads"), Some(5.0));
        assert_eq!(
            value(&text, "process_start_time_seconds"),
            Some(1_700_000_000.0)
        );
        assert!(
            value(&text, "process_cpu_seconds_total").is_some(),
            "{text}"
        );
        assert!(value(&text, "process_max_fds").is_some_and(|v| v > 0.0));
        assert_eq!(
            value(
                &text,
                "socketio_recoveries_total{action=\"clear_connections\",outcome=\"success\"}"
            ),
            Some(2.0)
        );
        assert_eq!(value(&text, "warden_circuit_breaker_open"), Some(1.0));
        assert_eq!(value(&text, "socketio_circuit_breaker_open"), None);
        // Renamed with a promise: both names for one release.
        assert_eq!(
            value(&text, "warden_recoveries_rejected_total"),
            value(&text, "socketio_recoveries_rejected_total")
        );
        let build = text
            .lines()
            .find(|l| l.starts_with("warden_build_info{"))
            .expect("warden_build_info");
        assert!(
            build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
                && build.ends_with(" 1"),
            "{build}"
        );
        assert!(text.contains("# TYPE socketio_events_processed counter"));
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn cpu_seconds_grow_with_work() {
        let before = self_cpu_seconds().expect("getrusage");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while self_cpu_seconds().expect("getrusage") <= before {
            x = x.wrapping_mul(31).wrapping_add(7);
            assert!(start.elapsed() < Duration::from_secs(60), "{x}");
        }
    }
}
