//! The recorded event trace of one simulation run: one line per thing that
//! happened, stamped with simulated milliseconds. Two runs of one seed must
//! produce the same bytes (the determinism check compares them), so a line
//! never holds a socket id (socketioxide draws them from the OS RNG), a
//! wall-clock reading or a `HashMap` iteration order.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::clock::sim_ms;

/// At most this many lines are kept; later lines are counted, not stored.
pub const MAX_TRACE_LINES: usize = 200_000;

/// Shared by every host of one run (clones append to the same trace).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    inner: Arc<Mutex<Lines>>,
}

#[derive(Debug, Default)]
struct Lines {
    lines: Vec<String>,
    overflow: u64,
}

impl Trace {
    pub fn new() -> Self {
        Self::default()
    }

    fn lines(&self) -> MutexGuard<'_, Lines> {
        // A panicking host leaves a consistent Vec behind.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `[time_ms] who: what` at the current simulated time.
    pub fn record(&self, who: &str, what: impl AsRef<str>) {
        let line = format!("[{:>8}] {who}: {}", sim_ms(), what.as_ref());
        let mut lines = self.lines();
        if lines.lines.len() < MAX_TRACE_LINES {
            lines.lines.push(line);
        } else {
            lines.overflow += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.lines().lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole trace as text, one line each, with the overflow count last.
    pub fn to_text(&self) -> String {
        let lines = self.lines();
        let mut text = String::new();
        for line in &lines.lines {
            text.push_str(line);
            text.push('\n');
        }
        if lines.overflow > 0 {
            let _ = writeln!(text, "... {} more lines not kept", lines.overflow);
        }
        text
    }

    /// The last `n` lines, for failure reports.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines();
        let start = lines.lines.len().saturating_sub(n);
        lines.lines[start..].join("\n")
    }
}
