//! warden: a self-healing Socket.IO event hub daemon.
//!
//! The crate has two layers. The **pure core** (always built) makes every
//! reliability decision from events that carry their own time and process
//! facts: [`breaker`], [`escalation`], [`recovery`] (the recovery loop),
//! [`pidfile`], [`health`], [`errors`], [`config`], [`probe`], [`retry`]
//! (when to try again), [`sessions`]
//! (connection state recovery), [`stamp`]
//! (stamping events without parsing them) and [`time`]. It never reads a clock, sleeps, or
//! touches a file or socket. The **daemon** (feature `daemon`, on by default)
//! connects the core to the real OS and network. See ARCHITECTURE.md.

// The one rule, enforced: clippy.toml's clocks, environment, files, sockets
// and processes are denied in every core module.
#[deny(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod breaker;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod config;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod config_reference;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod errors;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod escalation;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod health;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod pidfile;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod probe;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod recovery;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod retry;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod sessions;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod stamp;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod time;

#[cfg(feature = "daemon")]
pub mod daemon;
