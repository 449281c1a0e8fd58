//! Serving the hub on a listener: the door (`server`: bounds, transports,
//! graceful shutdown), the health lane that answers probes on its own thread
//! (`lane`), and the serving generation that binds, stops and rebinds with a
//! bounded schedule (`serving`).

pub mod conn;
pub mod lane;
pub mod server;
pub mod serving;
