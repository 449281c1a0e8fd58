//! The daemon: adapters from the pure core to the real OS, the Socket.IO hub,
//! the HTTP surface and the command line. Everything here may do I/O; nothing
//! here makes a reliability decision that the core could make instead.

pub mod alerts;
pub mod checkers;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod control;
pub mod doctor;
pub mod healing;
pub mod health_http;
pub mod http;
pub mod hub;
pub mod lane;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod monitor;
pub mod netif;
pub mod page;
pub mod pidfile;
pub mod port;
pub mod recovery;
pub mod reload;
pub mod run;
pub mod server;
pub mod serving;
pub mod settings;
pub mod sysprobe;
pub mod systemd;
