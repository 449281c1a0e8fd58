//! The daemon: adapters from the pure core to the real OS, the Socket.IO hub,
//! the HTTP surface and the command line. Everything here may do I/O; nothing
//! here makes a reliability decision that the core could make instead.
//!
//! Laid out by subsystem; each room's imports point one way (ARCHITECTURE.md
//! draws it, `scripts/check-layers` enforces it):
//!
//! ```text
//! cli → runner → healing → serve → hub → os
//!                   ↘ cluster ↗
//! ```

pub mod cli;
pub mod cluster;
pub mod healing;
pub mod hub;
pub mod os;
pub mod runner;
pub mod serve;
