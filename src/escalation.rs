//! Graded recovery escalation (being written: see issue 2).

use serde::{Deserialize, Serialize};

/// What the recovery manager should do, from least to most drastic.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryAction {
    None,
    LogWarning,
    ClearConnections,
    RestartService,
    EmergencyStop,
}
