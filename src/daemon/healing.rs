//! Assembly of the self-healing stack for the runner: from the configuration,
//! the hub and a bound listener, build the three checkers, the
//! [`HealthMonitor`], the [`RecoveryManager`] with the real [`HubActions`],
//! the restartable [`HubService`] serving `http::app` with the health routes
//! merged in, spawn the monitor and manager tasks, and tell systemd we are
//! ready.
//!
//! The runner then waits on signals *and* [`Healing::stop_requested`]
//! (emergency stop or a lost socket), and calls [`Healing::shutdown`] before
//! removing the PID file. The PID file is never touched here.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::WardenConfig;
use crate::daemon::checkers::{
    Checker, NetworkConnectivityChecker, ProcessResourceChecker, ResourceThresholds,
    ServiceHealthChecker, ServiceThresholds, StatsSource, available_cores,
};
use crate::daemon::health_http::{self, HealthEndpoints, ServerInfo};
use crate::daemon::http::{self, CorsError, HealthProvider};
use crate::daemon::hub::Hub;
use crate::daemon::monitor::{HealthMonitor, MonitorSettings};
use crate::daemon::recovery::{
    self, HubActions, HubService, RecoveryManager, RecoverySetupError, RouterFactory,
    ServiceSettings, StopReason,
};
use crate::daemon::server::ShutdownReport;
use crate::daemon::sysprobe::SysinfoProbe;
use crate::daemon::systemd::{self, Watchdog};
use crate::probe::ProcessProbe;

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
    pub service: Arc<HubService>,
    stop_monitor: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
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

/// The three checkers of the seed, for the process `pid` serving on `addr`.
pub fn checkers(
    cfg: &WardenConfig,
    hub: &Hub,
    addr: SocketAddr,
    pid: u32,
    probe: Arc<dyn ProcessProbe>,
) -> (Vec<Arc<dyn Checker>>, crate::daemon::checkers::SampleHandle) {
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
    );
    let samples = process.sample_handle();
    let network = NetworkConnectivityChecker::new(addr, cfg.health_monitoring.network_timeout);
    let stats: Arc<dyn StatsSource> = Arc::clone(hub.stats()) as Arc<dyn StatsSource>;
    let service = ServiceHealthChecker::new(
        stats,
        ServiceThresholds {
            max_clients: f64::from(t.max_clients),
            max_error_rate: t.error_rate,
        },
    );
    (
        vec![Arc::new(process), Arc::new(network), Arc::new(service)],
        samples,
    )
}

impl Healing {
    /// Builds and starts everything on `listener` (already bound to the
    /// configured address), then sends `READY=1` to systemd.
    pub async fn start(
        cfg: &WardenConfig,
        hub: Hub,
        listener: TcpListener,
        service_settings: ServiceSettings,
    ) -> Result<Healing, HealingError> {
        let addr = listener.local_addr()?;
        let pid = std::process::id();
        let clock = Arc::clone(hub.clock());
        let probe: Arc<dyn ProcessProbe> = Arc::new(SysinfoProbe::new());
        let (checkers, samples) = checkers(cfg, &hub, addr, pid, probe);
        let monitor = HealthMonitor::new(
            monitor_settings(cfg),
            cfg.health_monitoring.enabled,
            Arc::clone(&clock),
            checkers,
        );
        let service = HubService::new(hub.clone(), addr, service_settings);
        let mut settings = recovery::settings_from_config(cfg);
        settings.port = addr.port();
        let recovery = RecoveryManager::new(
            settings,
            Arc::clone(&clock),
            Arc::new(HubActions::new(&service)),
        )?;
        monitor.add_callback(recovery.callback());

        let endpoints = Arc::new(HealthEndpoints {
            hub: hub.clone(),
            monitor: monitor.clone(),
            recovery: Arc::clone(&recovery),
            service: Arc::downgrade(&service),
            process: samples,
            info: ServerInfo {
                version: hub.settings().version.clone(),
                pid,
                host: cfg.server.host.clone(),
                port: addr.port(),
                start_time: clock.wall(),
            },
        });
        let provider: Arc<dyn HealthProvider> = Arc::new(monitor.clone());
        let factory_hub = hub.clone();
        let make_router: RouterFactory = Arc::new(move || {
            http::app(
                &factory_hub,
                Arc::clone(&provider),
                health_http::routes(Arc::clone(&endpoints)),
            )
        });
        service.serve(listener, make_router).await?;

        let stop_monitor = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(Arc::clone(&recovery).run()),
            tokio::spawn(
                monitor
                    .clone()
                    .run(stop_monitor.clone(), Watchdog::from_env()),
            ),
        ];
        systemd::notify_ready();
        tracing::info!(%addr, "serving; health monitoring {}, recovery {}",
            if cfg.health_monitoring.enabled { "on" } else { "off" },
            if cfg.recovery.enabled { "on" } else { "off" });
        Ok(Healing {
            monitor,
            recovery,
            service,
            stop_monitor,
            tasks,
        })
    }

    /// Resolves when the daemon asked itself to stop (emergency stop, lost socket).
    pub async fn stop_requested(&self) -> StopReason {
        self.service.stop_requested().await
    }

    /// `STOPPING=1`, stops the monitor and the manager, drains the hub.
    pub async fn shutdown(self) -> Option<ShutdownReport> {
        systemd::notify_stopping();
        self.stop_monitor.cancel();
        let report = self.service.shutdown().await;
        for task in self.tasks {
            task.abort();
        }
        report
    }
}
