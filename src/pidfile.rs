//! PID file record and lifecycle decisions (being written: see issue 2).

use serde::{Deserialize, Serialize};

use crate::time::WallTime;

/// Why a PID file left behind by an earlier instance may be taken over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StaleReason {
    /// No process has the recorded pid.
    ProcessGone { pid: u32 },
    /// The recorded pid is a zombie: it has exited and waits to be reaped.
    Zombie { pid: u32 },
    /// The pid now belongs to another process than the one that wrote the file.
    PidReused { pid: u32, evidence: ReuseEvidence },
    /// The file could not be parsed.
    Corrupt { detail: String },
    /// The file exists but is empty.
    Empty,
}

/// What shows that a pid was reused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReuseEvidence {
    StartTimeDiffers { recorded: WallTime, actual: WallTime },
    CommandDiffers { recorded: String, actual: String },
}
