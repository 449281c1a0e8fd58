//! The load tool behind `warden-load`: starts a server under test (the warden
//! daemon or the bare socketioxide hub) as a child process, drives it with
//! real Socket.IO clients over loopback, and measures what the issue asks for
//! (deliveries/s, latency, loss, server CPU per delivery, RSS, `/health`
//! latency under load, start and stop times).
//!
//! Layout: [`eio`] is a lean Engine.IO v4 / Socket.IO v5 client (websocket
//! and long-polling), [`http1`] a minimal HTTP/1.1 client, [`procfs`] reads
//! a child's CPU time and memory from `/proc`, [`server`] starts and stops
//! the servers, [`scenario`] runs one scenario against one server,
//! [`report`] folds runs into medians, ratios, a table and JSON.
//!
//! Not here: assertions on timings (benchmarks report, they do not judge),
//! the core microbenchmarks (`benches/` of the main crate).

pub mod eio;
pub mod http1;
pub mod procfs;
pub mod report;
pub mod scenario;
pub mod server;
pub mod stats;
