//! The real [`ProcessProbe`]: sysinfo for one pid at a time, plus /proc on
//! Linux for what sysinfo does not give cheaply (thread count).
//!
//! Cost: one probe refreshes a single pid (`ProcessesToUpdate::Some`), which
//! on Linux reads `/proc/<pid>/stat`, `statm`, `cmdline`, the `exe` link, lists
//! `/proc/<pid>/fd` and reads `/proc/<pid>/status`: tens of microseconds, no
//! scan of the process table. The `System` is kept between calls behind a
//! mutex so that `cpu_percent` is measured between two samples of the same
//! pid (the first sample of a pid reads 0). The call blocks on file reads:
//! from async code run it on a blocking thread.
//!
//! This module does not decide anything about the processes it sees.

use std::sync::Mutex;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

use crate::probe::{ProbeOutcome, ProcessProbe, ProcessSnapshot, ProcessStatus};
use crate::time::WallTime;

/// A [`ProcessProbe`] backed by sysinfo.
pub struct SysinfoProbe {
    system: Mutex<Option<System>>,
    unavailable: Option<String>,
}

impl std::fmt::Debug for SysinfoProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SysinfoProbe")
            .field("unavailable", &self.unavailable)
            .finish()
    }
}

impl Default for SysinfoProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl SysinfoProbe {
    /// Never fails: when sysinfo cannot run on this system every probe
    /// answers `Unavailable` with the reason.
    pub fn new() -> Self {
        match System::new() {
            Ok(system) => SysinfoProbe {
                system: Mutex::new(Some(system)),
                unavailable: None,
            },
            Err(e) => SysinfoProbe {
                system: Mutex::new(None),
                unavailable: Some(format!("sysinfo cannot inspect processes here: {e}")),
            },
        }
    }

    /// The snapshot of the current process (for the PID record), if visible.
    pub fn probe_self(&self) -> Option<ProcessSnapshot> {
        self.probe(std::process::id()).snapshot().cloned()
    }
}

impl ProcessProbe for SysinfoProbe {
    fn probe(&self, pid: u32) -> ProbeOutcome {
        if let Some(reason) = &self.unavailable {
            return ProbeOutcome::Unavailable {
                reason: reason.clone(),
            };
        }
        if pid == 0 {
            return ProbeOutcome::NotFound;
        }
        // The System is only a cache of samples; a panic elsewhere while it
        // was locked leaves nothing that a refresh does not rewrite.
        let mut guard = self.system.lock().unwrap_or_else(|p| p.into_inner());
        let Some(system) = guard.as_mut() else {
            return ProbeOutcome::Unavailable {
                reason: "sysinfo is not initialised".to_string(),
            };
        };
        let spid = Pid::from_u32(pid);
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[spid]),
            true,
            ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory()
                .with_cmd(UpdateKind::Always)
                .with_exe(UpdateKind::OnlyIfNotSet)
                .without_tasks(),
        );
        let Some(process) = system.process(spid) else {
            return ProbeOutcome::NotFound;
        };
        let status = map_status(process.status());
        ProbeOutcome::Found(ProcessSnapshot {
            pid,
            name: process.name().to_string_lossy().into_owned(),
            cmdline: process
                .cmd()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            exe: process.exe().map(|p| p.display().to_string()),
            status,
            start_time: WallTime::from_secs(process.start_time()),
            cpu_percent: process.cpu_usage(),
            memory_rss_bytes: process.memory(),
            memory_virtual_bytes: process.virtual_memory(),
            open_fds: if status.has_exited() {
                None
            } else {
                process.open_files().map(|n| n as u64)
            },
            threads: proc_threads(pid),
        })
    }
}

fn map_status(status: sysinfo::ProcessStatus) -> ProcessStatus {
    use sysinfo::ProcessStatus as S;
    match status {
        S::Run => ProcessStatus::Running,
        S::Sleep | S::UninterruptibleDiskSleep | S::LockBlocked | S::Waking => {
            ProcessStatus::Sleeping
        }
        S::Idle | S::Parked => ProcessStatus::Idle,
        S::Stop | S::Tracing | S::Suspended => ProcessStatus::Stopped,
        S::Zombie => ProcessStatus::Zombie,
        S::Dead => ProcessStatus::Dead,
        _ => ProcessStatus::Other,
    }
}

/// The `Threads:` line of `/proc/<pid>/status` (Linux only).
fn proc_threads(pid: u32) -> Option<u64> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_the_current_process() {
        let probe = SysinfoProbe::new();
        let me = probe.probe_self().expect("the current process is visible");
        assert_eq!(me.pid, std::process::id());
        assert!(!me.name.is_empty());
        assert!(!me.cmdline.is_empty());
        assert!(!me.status.has_exited());
        assert!(me.memory_rss_bytes > 0);
        assert!(me.memory_virtual_bytes >= me.memory_rss_bytes);
        assert!(me.start_time > WallTime::from_secs(1_600_000_000));
        if cfg!(target_os = "linux") {
            assert!(me.open_fds.unwrap_or(0) >= 3, "{:?}", me.open_fds);
            assert!(me.threads.unwrap_or(0) >= 1, "{:?}", me.threads);
        }
        let again = probe.probe_self().expect("still visible");
        assert_eq!(
            again.start_time, me.start_time,
            "start time is stable between samples"
        );
    }

    #[test]
    fn an_exited_and_reaped_child_is_not_found() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("reap");
        assert_eq!(SysinfoProbe::new().probe(pid), ProbeOutcome::NotFound);
        assert_eq!(SysinfoProbe::new().probe(0), ProbeOutcome::NotFound);
    }
}
