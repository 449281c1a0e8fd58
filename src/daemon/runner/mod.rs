//! The daemon's run: claim the PID file, serve, heal, stop (`run`), and the
//! memory trim once load has passed (`memory`).

pub mod memory;
pub mod run;
