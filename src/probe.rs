//! The facts about one OS process that the core reasons with.
//!
//! A [`ProcessProbe`] answers "what is pid N right now?" with a
//! [`ProbeOutcome`]: a [`ProcessSnapshot`] (name, command line, status, start
//! time, CPU, memory, fds, threads), "no such process", or "I cannot see
//! processes here". The PID lifecycle ([`crate::pidfile`]) uses the snapshot to
//! tell a live owner from a stale file and a reused pid; the process resource
//! checker reads the same snapshot for CPU, RSS, VMS, fds and threads.
//!
//! This module is pure: it defines the vocabulary and an in-memory
//! [`FakeProbe`] for tests and simulations. The real probe (sysinfo and
//! /proc) lives in `daemon::sysprobe`; nothing here reads the OS.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::time::WallTime;

/// The scheduler state of a process, as the OS reports it.
///
/// Unknown strings from older PID files deserialize as [`ProcessStatus::Other`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessStatus {
    Running,
    Sleeping,
    Idle,
    Stopped,
    /// Exited, waiting for its parent to reap it. Never a live owner.
    Zombie,
    /// Exited and being torn down. Never a live owner.
    Dead,
    #[serde(other)]
    Other,
}

impl ProcessStatus {
    /// True when the process has exited (zombie or dead) and can own nothing.
    pub fn has_exited(self) -> bool {
        matches!(self, ProcessStatus::Zombie | ProcessStatus::Dead)
    }

    /// The lowercase name used in JSON and messages (`running`, `zombie`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessStatus::Running => "running",
            ProcessStatus::Sleeping => "sleeping",
            ProcessStatus::Idle => "idle",
            ProcessStatus::Stopped => "stopped",
            ProcessStatus::Zombie => "zombie",
            ProcessStatus::Dead => "dead",
            ProcessStatus::Other => "other",
        }
    }
}

impl std::fmt::Display for ProcessStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const BYTES_PER_MB: f64 = 1024.0 * 1024.0;

/// One observation of one process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessSnapshot {
    pub pid: u32,
    /// Short name (Linux: `comm`, at most 15 bytes).
    pub name: String,
    /// argv; empty when the OS hides it (kernel threads, zombies, other users).
    pub cmdline: Vec<String>,
    pub exe: Option<String>,
    pub status: ProcessStatus,
    /// When the OS started the process (second resolution on Linux).
    pub start_time: WallTime,
    /// CPU use since the previous sample of this pid; 0 on the first sample;
    /// may exceed 100 on several cores.
    pub cpu_percent: f32,
    pub memory_rss_bytes: u64,
    pub memory_virtual_bytes: u64,
    pub open_fds: Option<u64>,
    pub threads: Option<u64>,
}

impl ProcessSnapshot {
    /// A snapshot with the identity fields set and every measurement at zero:
    /// for tests, simulations and fakes.
    pub fn new(pid: u32, name: &str, cmdline: &[&str], start_time: WallTime) -> Self {
        ProcessSnapshot {
            pid,
            name: name.to_string(),
            cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
            exe: None,
            status: ProcessStatus::Running,
            start_time,
            cpu_percent: 0.0,
            memory_rss_bytes: 0,
            memory_virtual_bytes: 0,
            open_fds: None,
            threads: None,
        }
    }

    /// The same snapshot with another status.
    pub fn with_status(mut self, status: ProcessStatus) -> Self {
        self.status = status;
        self
    }

    /// Resident memory in MiB, as the seed's `memory_mb`.
    pub fn memory_mb(&self) -> f64 {
        self.memory_rss_bytes as f64 / BYTES_PER_MB
    }

    /// Virtual memory in MiB.
    pub fn virtual_memory_mb(&self) -> f64 {
        self.memory_virtual_bytes as f64 / BYTES_PER_MB
    }

    /// The command line joined by spaces, for messages (empty if hidden).
    pub fn command_line(&self) -> String {
        self.cmdline.join(" ")
    }
}

/// What a probe learned about one pid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProbeOutcome {
    Found(ProcessSnapshot),
    /// No process has this pid.
    NotFound,
    /// The probe cannot tell (unsupported platform, no /proc, permission).
    /// Callers degrade gracefully; they never read this as "not found".
    Unavailable {
        reason: String,
    },
}

impl ProbeOutcome {
    pub fn snapshot(&self) -> Option<&ProcessSnapshot> {
        match self {
            ProbeOutcome::Found(s) => Some(s),
            _ => None,
        }
    }
}

/// Answers "what is pid N right now?". Implementations must be cheap enough
/// to call from a health loop (one pid, no full process-table scan) and must
/// never panic.
pub trait ProcessProbe: Send + Sync {
    fn probe(&self, pid: u32) -> ProbeOutcome;

    /// True when the next `probe(pid)` only reads what the OS keeps in
    /// memory (no disk, no network, no lock held across I/O), so a caller on
    /// an async task may call it in place instead of on a blocking thread.
    /// False unless a probe knows better.
    fn probes_in_memory(&self, pid: u32) -> bool {
        let _ = pid;
        false
    }
}

impl<P: ProcessProbe + ?Sized> ProcessProbe for Arc<P> {
    fn probe(&self, pid: u32) -> ProbeOutcome {
        (**self).probe(pid)
    }

    fn probes_in_memory(&self, pid: u32) -> bool {
        (**self).probes_in_memory(pid)
    }
}

impl<P: ProcessProbe + ?Sized> ProcessProbe for &P {
    fn probes_in_memory(&self, pid: u32) -> bool {
        (**self).probes_in_memory(pid)
    }

    fn probe(&self, pid: u32) -> ProbeOutcome {
        (**self).probe(pid)
    }
}

/// An in-memory process table for tests and the simulation harness.
///
/// Clones share the same table, so a test can change what a component under
/// test will see. Pids never set answer [`ProbeOutcome::NotFound`]; after
/// [`FakeProbe::set_unavailable`] every pid answers `Unavailable`.
#[derive(Clone, Debug, Default)]
pub struct FakeProbe {
    inner: Arc<Mutex<FakeTable>>,
}

#[derive(Debug, Default)]
struct FakeTable {
    outcomes: BTreeMap<u32, ProbeOutcome>,
    unavailable: Option<String>,
}

impl FakeProbe {
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self) -> MutexGuard<'_, FakeTable> {
        // A panic in another test thread must not hide the table: the data is
        // a plain map that stays consistent whatever was interrupted.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The process `snapshot.pid` now exists as described.
    pub fn set(&self, snapshot: ProcessSnapshot) {
        self.table()
            .outcomes
            .insert(snapshot.pid, ProbeOutcome::Found(snapshot));
    }

    /// Pid `pid` answers exactly `outcome`.
    pub fn set_outcome(&self, pid: u32, outcome: ProbeOutcome) {
        self.table().outcomes.insert(pid, outcome);
    }

    /// Pid `pid` no longer exists.
    pub fn remove(&self, pid: u32) {
        self.table().outcomes.remove(&pid);
    }

    /// Every probe answers `Unavailable { reason }` until [`Self::set_available`].
    pub fn set_unavailable(&self, reason: &str) {
        self.table().unavailable = Some(reason.to_string());
    }

    pub fn set_available(&self) {
        self.table().unavailable = None;
    }
}

impl ProcessProbe for FakeProbe {
    fn probe(&self, pid: u32) -> ProbeOutcome {
        let table = self.table();
        if let Some(reason) = &table.unavailable {
            return ProbeOutcome::Unavailable {
                reason: reason.clone(),
            };
        }
        table
            .outcomes
            .get(&pid)
            .cloned()
            .unwrap_or(ProbeOutcome::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_probe_clones_share_one_table() {
        let probe = FakeProbe::new();
        let seen_by_component = probe.clone();
        assert_eq!(seen_by_component.probe(42), ProbeOutcome::NotFound);
        probe.set(ProcessSnapshot::new(
            42,
            "warden",
            &["warden", "start"],
            WallTime::from_secs(5),
        ));
        assert_eq!(
            seen_by_component
                .probe(42)
                .snapshot()
                .map(|s| s.name.clone()),
            Some("warden".to_string())
        );
        probe.set_unavailable("no /proc");
        assert!(matches!(
            seen_by_component.probe(42),
            ProbeOutcome::Unavailable { .. }
        ));
        probe.set_available();
        probe.remove(42);
        assert_eq!(seen_by_component.probe(42), ProbeOutcome::NotFound);
    }

    #[test]
    fn status_serializes_lowercase_and_tolerates_unknown_names() {
        assert_eq!(
            serde_json::to_string(&ProcessStatus::Zombie).unwrap(),
            "\"zombie\""
        );
        let old: ProcessStatus = serde_json::from_str("\"disk-sleep\"").unwrap();
        assert_eq!(old, ProcessStatus::Other);
        assert!(ProcessStatus::Zombie.has_exited());
        assert!(!ProcessStatus::Sleeping.has_exited());
    }

    #[test]
    fn memory_mb_converts_bytes_to_mebibytes() {
        let mut s = ProcessSnapshot::new(1, "x", &[], WallTime::from_secs(0));
        s.memory_rss_bytes = 45 * 1024 * 1024 + 512 * 1024;
        assert!((s.memory_mb() - 45.5).abs() < 1e-9);
    }
}
