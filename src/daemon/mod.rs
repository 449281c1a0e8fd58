//! The daemon: adapters from the pure core to the real OS, the Socket.IO hub,
//! the HTTP surface and the command line. Everything here may do I/O; nothing
//! here makes a reliability decision that the core could make instead.

pub mod cli;
pub mod http;
pub mod hub;
pub mod logging;
pub mod pidfile;
pub mod port;
pub mod server;
pub mod sysprobe;
