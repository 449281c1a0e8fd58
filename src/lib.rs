//! warden: a self-healing Socket.IO event hub daemon.
//!
//! The crate has two layers. The **pure core** (always built) makes every
//! reliability decision from events that carry their own time and process
//! facts: [`breaker`], [`escalation`], [`pidfile`], [`health`], [`errors`],
//! [`config`], [`probe`] and [`time`]. It never reads a clock, sleeps, or
//! touches a file or socket. The **daemon** (feature `daemon`, on by default)
//! connects the core to the real OS and network. See ARCHITECTURE.md.

pub mod breaker;
pub mod config;
pub mod errors;
pub mod escalation;
pub mod health;
pub mod pidfile;
pub mod probe;
pub mod time;

#[cfg(feature = "daemon")]
pub mod daemon;
