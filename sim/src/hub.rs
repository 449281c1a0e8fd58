//! Serving the real hub inside a simulated host: the daemon's own router
//! (`http::app`) and serving code (`server::serve`) on a [`SimListener`],
//! and the daemon's own serving generation (`serving::Serving`) on
//! [`SimListen`], run the way the runner runs it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use warden::daemon::hub::http;
use warden::daemon::hub::{Hub, HubAdapter, HubSettings};
use warden::daemon::serve::server::{self, ServingHandle};
use warden::daemon::serve::serving::{Listen, Services, Serving, ServingRequests, ServingSettings};
use warden::health::HealthStatus;

use crate::clock::SimClock;
use crate::net::{SimListen, SimListener};

/// The port the simulated hub listens on (the daemon's default).
pub const HUB_PORT: u16 = 8765;

/// Settings for a simulated hub: the daemon's defaults with a test identity,
/// answering the simulated network's host names (`hub`, ...) as an operator
/// lists the names a daemon is reached by in `server.allowed_hosts`.
pub fn sim_settings() -> HubSettings {
    let mut settings = HubSettings::new("socketio-server-8765", "0.0.0-sim");
    settings.door.host_names = vec!["*".to_string()];
    settings
}

/// A hub whose clock is the simulation's.
pub fn sim_hub(settings: HubSettings, clock: &SimClock) -> Hub {
    Hub::new(settings, clock.shared())
}

/// Binds `port` on the current simulated host and serves one generation of
/// `hub` there, as the daemon does (a fresh Socket.IO layer per generation).
pub async fn serve_on(hub: &Hub, port: u16) -> io::Result<ServingHandle> {
    let listener = SimListener::bind(port).await?;
    let app = http::app(hub, Arc::new(|| HealthStatus::Healthy), axum::Router::new())
        .map_err(io::Error::other)?;
    Ok(server::serve(listener, app, hub))
}

/// The simulated host name the hub runs on.
pub const HUB_HOST: &str = "hub";

/// Adds host [`HUB_HOST`] serving `hub` on [`HUB_PORT`] for the whole run
/// (the daemon's steady state, no restarts).
pub fn add_hub_host(sim: &mut turmoil::Sim<'_>, hub: &Hub) {
    let hub = hub.clone();
    sim.host(HUB_HOST, move || {
        let hub = hub.clone();
        async move {
            let _serving = serve_on(&hub, HUB_PORT).await?;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
}

/// The daemon's serving generation for `hub` on [`HUB_PORT`] of the current
/// simulated host, started as the runner starts it (bind, then serve), with
/// `requests` coming from the recovery side's `ServingControl`.
pub async fn start_serving<A: HubAdapter>(
    hub: Hub<A>,
    settings: ServingSettings,
    requests: ServingRequests,
) -> Result<Serving<A, SimListen>, Box<dyn std::error::Error>> {
    let addr = SocketAddr::from(([0, 0, 0, 0], HUB_PORT));
    let listener = SimListen.bind(addr).await?;
    let serving = Serving::start_on(
        SimListen,
        hub,
        listener,
        addr,
        Services::basic(),
        settings,
        requests,
    )?;
    Ok(serving)
}

/// The runner's loop: hands every request and due rebind retry to
/// `serving` until it asks for an emergency stop (asked for by the recovery
/// side, or the retries ran out); returns the reason. The caller stops
/// serving for good, as the daemon does before it exits.
pub async fn serve_until_emergency_stop<A: HubAdapter, L: Listen>(
    serving: &mut Serving<A, L>,
) -> String {
    loop {
        let event = serving.next_event().await;
        if let Some(reason) = serving.handle(event).await {
            return reason;
        }
    }
}
