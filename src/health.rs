//! Health vocabulary shared by every layer (being written: see issue 2).

use serde::{Deserialize, Serialize};

/// How healthy something is. One vocabulary end to end: checkers produce it,
/// the monitor aggregates it, the strategy reads it, `/health` prints it and
/// `/metrics` encodes it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Warning,
    Critical,
    Unknown,
}
