//! Serving the real hub inside a simulated host: the daemon's own router
//! (`http::app`) and serving code (`server::serve`) on a [`SimListener`].

use std::io;
use std::sync::Arc;

use warden::daemon::hub::http;
use warden::daemon::hub::{Hub, HubSettings};
use warden::daemon::serve::server::{self, ServingHandle};
use warden::health::HealthStatus;

use crate::clock::SimClock;
use crate::net::SimListener;

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
