//! Assembly of the self-healing stack for the runner: from the configuration,
//! the hub and the serving generation's [`ServingControl`], build the three
//! checkers, the [`HealthMonitor`], the [`RecoveryManager`] with the real
//! [`HubActions`] and the health routes; spawn the monitor and manager tasks,
//! and tell systemd we are ready.
//!
//! The runner builds a [`Prepared`] before it binds (its [`Prepared::services`]
//! go into the router), then [`Prepared::activate`]s it with the bound
//! address, and calls [`Healing::shutdown`] before it drains and removes the
//! PID file. Restarts and emergency stops go to the runner's one serving
//! generation (`serving`) through the [`ServingControl`]; nothing here
//! serves, binds or touches the PID file.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::WardenConfig;
use crate::daemon::cluster::Cluster;
use crate::daemon::healing::alerts::{AlertSource, Alerter};
use crate::daemon::healing::checkers::{
    Checker, DependencyChecker, NetworkConnectivityChecker, ProcessResourceChecker,
    ResourceThresholds, SampleHandle, ServiceHealthChecker, ServiceThresholds, StatsSource,
    TargetSetter, available_cores,
};
use crate::daemon::healing::endpoints::{self, HealthEndpoints, ServerInfo};
use crate::daemon::healing::executor::{
    self, ActionFuture, HubActions, RecoveryManager, RecoverySetupError, ServiceControl,
};
use crate::daemon::healing::monitor::{HealthMonitor, MonitorSettings};
use crate::daemon::healing::page::{self, PageState};
use crate::daemon::healing::reload::LiveSettings;
use crate::daemon::hub::Hub;
use crate::daemon::hub::http::{CorsError, HealthProvider};
use crate::daemon::os::systemd::{self, Watchdog};
use crate::daemon::serve::server::ShutdownReport;
use crate::daemon::serve::serving::{Services, ServingControl};
use crate::probe::ProcessProbe;
use crate::time::{Clock, WallTime};
use socketioxide::adapter::Adapter;

/// Why the stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum HealingError {
    #[error(transparent)]
    Cors(#[from] CorsError),
    #[error(transparent)]
    Recovery(#[from] RecoverySetupError),
    #[error("cannot read the listener's address: {0}")]
    Addr(#[from] std::io::Error),
}

/// The running stack.
pub struct Healing {
    pub monitor: HealthMonitor,
    pub recovery: Arc<RecoveryManager>,
    /// The operators' alerts, when configured (`alerts`).
    pub alerts: Option<Arc<Alerter>>,
    /// What a config reload changes in the running checks.
    pub live: LiveSettings,
    stop_monitor: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// The stack built before the port is bound: its routes and `/status`
/// provider can be handed to whoever serves the hub. Checks and recovery
/// start with [`Prepared::activate`].
pub struct Prepared {
    pub monitor: HealthMonitor,
    pub recovery: Arc<RecoveryManager>,
    pub endpoints: Arc<HealthEndpoints>,
    pub alerts: Option<Arc<Alerter>>,
    /// What a config reload changes in the running checks.
    pub live: LiveSettings,
    page: Arc<PageState>,
    target: TargetSetter,
    monitoring_enabled: bool,
    recovery_enabled: bool,
}

/// The monitor's settings from the configuration.
pub fn monitor_settings(cfg: &WardenConfig) -> MonitorSettings {
    let hm = &cfg.health_monitoring;
    MonitorSettings {
        check_interval: hm.check_interval,
        history_size: usize::try_from(hm.history_size).unwrap_or(usize::MAX),
        aggregation_window: hm.aggregation_window,
        check_timeout: MonitorSettings::check_timeout_for(hm.network_timeout),
    }
}

/// The three checkers of the seed for the process `pid`; the network
/// checker's address is set through the returned [`TargetSetter`]; the
/// thresholds' handles let a config reload change them.
pub fn checkers<A: Adapter>(
    cfg: &WardenConfig,
    hub: &Hub<A>,
    pid: u32,
    probe: Arc<dyn ProcessProbe>,
) -> (
    Vec<Arc<dyn Checker>>,
    SampleHandle,
    TargetSetter,
    ThresholdHandles,
) {
    let t = &cfg.health_monitoring.thresholds;
    let process = ProcessResourceChecker::new(
        pid,
        probe,
        ResourceThresholds {
            cpu_percent: t.cpu_percent,
            memory_mb: t.memory_mb as f64,
            file_descriptors: t.file_descriptors as f64,
        },
        available_cores(),
    )
    .with_client_connections({
        let stats = Arc::clone(hub.stats());
        Arc::new(move || {
            stats.connections_open() + crate::daemon::serve::lane::connections_in_flight()
        })
    });
    let samples = process.sample_handle();
    let (network, target) =
        NetworkConnectivityChecker::deferred(cfg.health_monitoring.network_timeout);
    let stats: Arc<dyn StatsSource> = Arc::clone(hub.stats()) as Arc<dyn StatsSource>;
    let service = ServiceHealthChecker::new(
        stats,
        ServiceThresholds {
            max_clients: f64::from(t.max_clients),
            max_error_rate: t.error_rate,
        },
    );
    let handles = ThresholdHandles {
        resource: process.thresholds_handle(),
        service: service.thresholds_handle(),
    };
    (
        vec![Arc::new(process), Arc::new(network), Arc::new(service)],
        samples,
        target,
        handles,
    )
}

/// Where the running checkers read their thresholds.
pub struct ThresholdHandles {
    pub resource: Arc<std::sync::RwLock<ResourceThresholds>>,
    pub service: Arc<std::sync::RwLock<ServiceThresholds>>,
}

impl Prepared {
    /// Builds the monitor, the manager and the endpoints for `hub`, served
    /// by the generation `control` reaches.
    pub fn new<A: Adapter>(
        cfg: &WardenConfig,
        hub: &Hub<A>,
        probe: Arc<dyn ProcessProbe>,
        control: ServingControl,
    ) -> Result<Prepared, HealingError> {
        Prepared::build(cfg, hub, probe, None, control)
    }

    /// [`Prepared::new`] for a cluster node: adds the Redis
    /// [`DependencyChecker`] (reported, never fed to the recovery ladder)
    /// and the cluster's state to `/diagnostics`, `/metrics` and `/readyz`.
    pub fn clustered<A: Adapter>(
        cfg: &WardenConfig,
        hub: &Hub<A>,
        probe: Arc<dyn ProcessProbe>,
        cluster: Cluster,
        control: ServingControl,
    ) -> Result<Prepared, HealingError> {
        Prepared::build(cfg, hub, probe, Some(cluster), control)
    }

    fn build<A: Adapter>(
        cfg: &WardenConfig,
        hub: &Hub<A>,
        probe: Arc<dyn ProcessProbe>,
        cluster: Option<Cluster>,
        control: ServingControl,
    ) -> Result<Prepared, HealingError> {
        let pid = std::process::id();
        let clock = Arc::clone(hub.clock());
        let (mut checkers, samples, target, thresholds) = checkers(cfg, hub, pid, probe);
        if let Some(cluster) = &cluster {
            checkers.push(Arc::new(DependencyChecker::new(Arc::new(cluster.clone()))));
        }
        let monitor = HealthMonitor::new(
            monitor_settings(cfg),
            cfg.health_monitoring.enabled,
            Arc::clone(&clock),
            checkers,
        );
        let live = LiveSettings::new(
            cfg,
            thresholds.resource,
            thresholds.service,
            monitor.clone(),
        );
        let control: Arc<dyn ServiceControl> = Arc::new(control);
        let recovery = RecoveryManager::new(
            executor::settings_from_config(cfg),
            Arc::clone(&clock),
            Arc::new(HubActions::new(hub.clone(), Arc::clone(&control))),
        )?;
        // Redis being away is reported (warning, not ready) but never clears,
        // restarts or stops the node: the core's attribution rule
        // (`recovery::attribution`) gives a dependency no remedy.
        monitor.add_callback(recovery.callback());
        let alerts = alerter(cfg, hub, pid, &clock);
        if let Some(alerts) = &alerts {
            monitor.add_callback(alerts.report_callback());
            recovery.add_listener(alerts.recovery_listener());
        }
        let endpoints = Arc::new(HealthEndpoints {
            alerts: alerts.clone(),
            hub: Arc::new(hub.clone()),
            cluster,
            monitor: monitor.clone(),
            recovery: Arc::clone(&recovery),
            service: control,
            process: samples,
            live: Some(live.clone()),
            info: server_info(cfg, hub, pid, clock.wall()),
        });
        let tap_hub = hub.clone();
        let page = Arc::new(PageState {
            endpoints: Arc::clone(&endpoints),
            events: Arc::new(move || tap_hub.subscribe_events()),
        });
        Ok(Prepared {
            monitor,
            recovery,
            endpoints,
            page,
            alerts,
            live,
            target,
            monitoring_enabled: cfg.health_monitoring.enabled,
            recovery_enabled: cfg.recovery.enabled,
        })
    }

    /// What the runner merges into its application: `/status`'s health
    /// provider and the [`Prepared::routes`].
    pub fn services(&self) -> Services {
        Services {
            health: self.health_provider(),
            extra_routes: self.routes(),
        }
    }

    /// `/status`'s health: the monitor's latest status.
    pub fn health_provider(&self) -> Arc<dyn HealthProvider> {
        Arc::new(self.monitor.clone())
    }

    /// `/health`, `/diagnostics`, `/metrics`, `/livez`, `/readyz`, and the
    /// status page (`/`, `/status-page/...`).
    pub fn routes(&self) -> Router {
        endpoints::routes(Arc::clone(&self.endpoints)).merge(page::routes(Arc::clone(&self.page)))
    }

    /// Starts checking and recovering once the hub serves on `addr`; sends
    /// `READY=1` to systemd.
    pub fn activate(self, addr: SocketAddr) -> Healing {
        self.target.set(addr);
        if let Some(alerts) = &self.alerts {
            alerts.start();
        }
        let stop_monitor = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(Arc::clone(&self.recovery).run()),
            tokio::spawn(
                self.monitor
                    .clone()
                    .run(stop_monitor.clone(), Watchdog::from_env()),
            ),
        ];
        systemd::notify_ready();
        tracing::info!(
            %addr,
            "health monitoring {}, recovery {}",
            if self.monitoring_enabled { "on" } else { "off" },
            if self.recovery_enabled { "on" } else { "off" }
        );
        Healing {
            monitor: self.monitor,
            recovery: self.recovery,
            alerts: self.alerts,
            live: self.live,
            stop_monitor,
            tasks,
        }
    }
}

impl Healing {
    /// `STOPPING=1`, stops the monitor and the manager (the runner then
    /// drains the hub).
    pub async fn shutdown(self) {
        systemd::notify_stopping();
        self.stop_monitor.cancel();
        // The action that asked for this stop (an emergency stop) is
        // recorded and told to the alerts before the manager goes.
        self.recovery.settle(Duration::from_secs(1)).await;
        for task in &self.tasks {
            task.abort();
        }
        // After the recovery task: its last event (an emergency stop) is queued.
        if let Some(alerts) = &self.alerts {
            alerts.shutdown().await;
        }
    }
}

/// The alerts of `cfg.alerts`, if any destination is configured.
fn alerter<A: Adapter>(
    cfg: &WardenConfig,
    hub: &Hub<A>,
    pid: u32,
    clock: &Arc<dyn Clock>,
) -> Option<Arc<Alerter>> {
    Alerter::new(
        &cfg.alerts,
        AlertSource {
            server_id: hub.settings().server_id.clone(),
            host: cfg.server.host.clone(),
            port: cfg.server.port,
            pid,
            version: hub.settings().version.clone(),
        },
        Arc::clone(clock),
    )
}

/// Who this daemon is, as `/health` and `/diagnostics` say it.
fn server_info<A: Adapter>(
    cfg: &WardenConfig,
    hub: &Hub<A>,
    pid: u32,
    start_time: WallTime,
) -> ServerInfo {
    ServerInfo {
        version: hub.settings().version.clone(),
        pid,
        host: cfg.server.host.clone(),
        port: cfg.server.port,
        start_time,
    }
}

// ---------------------------------------------------------------------------
// The runner's serving, as a ServiceControl.

/// The recovery actions' view of the runner's serving generation. The
/// retries after a failed restart, the draining flag and the restart count
/// are the generation's own (see `serving`).
impl ServiceControl for ServingControl {
    fn restart(&self) -> ActionFuture<'_, ShutdownReport> {
        Box::pin(self.restart_service())
    }

    fn emergency_stop(&self, reason: String) -> ActionFuture<'_, ()> {
        Box::pin(ServingControl::emergency_stop(self, reason))
    }

    fn is_draining(&self) -> bool {
        ServingControl::is_draining(self)
    }

    fn restarts(&self) -> u64 {
        ServingControl::restarts(self)
    }
}
