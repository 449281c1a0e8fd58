//! The simulated listener: turmoil's TCP listener as an
//! [`axum::serve::Listener`], so `warden::daemon::serve::server::serve` serves the
//! real router and Socket.IO layer over simulated TCP, unchanged; and
//! [`SimListen`], the same listener behind the serving generation's seam.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use turmoil::net::{TcpListener, TcpStream};
use warden::daemon::hub::{Hub, HubAdapter};
use warden::daemon::serve::server::{self, BindError, ServingHandle};
use warden::daemon::serve::serving::Listen;

/// A bound simulated listener.
pub struct SimListener(TcpListener);

impl std::fmt::Debug for SimListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SimListener")
            .field(&self.0.local_addr().ok())
            .finish()
    }
}

impl SimListener {
    /// Binds `0.0.0.0:port` on the current simulated host. Fails with
    /// `AddrInUse` while another listener of this host holds the port.
    pub async fn bind(port: u16) -> io::Result<SimListener> {
        TcpListener::bind(("0.0.0.0", port)).await.map(SimListener)
    }
}

impl axum::serve::Listener for SimListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                // axum's contract: the listener retries on its own. A short
                // virtual pause keeps a persistent error from spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// The serving generation's listener seam over turmoil: the daemon's
/// `Serving` binds and serves simulated sockets through it, so a simulated
/// restart runs the daemon's own stop, rebind schedule and retries.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimListen;

impl Listen for SimListen {
    type Listener = SimListener;

    async fn bind(&self, addr: SocketAddr) -> Result<SimListener, BindError> {
        SimListener::bind(addr.port())
            .await
            .map_err(|source| match source.kind() {
                io::ErrorKind::AddrInUse => BindError::AddrInUse { addr, source },
                _ => BindError::Io { addr, source },
            })
    }

    fn serve<A: HubAdapter>(
        &self,
        listener: SimListener,
        app: Router,
        hub: &Hub<A>,
    ) -> ServingHandle {
        server::serve(listener, app, hub)
    }
}
