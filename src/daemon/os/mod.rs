//! The operating system, as the rest of the daemon needs it: clocks, the
//! process's own facts, the port's owner, the PID file, systemd, logging, the
//! settings read once from the environment, and the network interfaces.
//! Nothing here knows the hub.

pub mod clock;
pub mod logging;
pub mod netif;
pub mod pidfile;
pub mod port;
pub mod settings;
pub mod sysprobe;
pub mod systemd;
