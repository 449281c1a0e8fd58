//! Looking at, and stopping, the warden recorded for a port: what `warden
//! status`, `stop`, `restart` and `doctor` know about an instance.
//!
//! [`inspect`] reads the PID file without claiming it and classifies the
//! instance. A pid is only ever signalled when the file's lock is held *and*
//! the live process's identity (OS start time, command line) matches the
//! record, judged by the core's own lifecycle rules ([`crate::pidfile::decide`]),
//! *and* the kernel names the recorded pid as the lock's holder
//! (`/proc/locks`; [`holder_mismatch`]): the record is written by whoever can
//! write the file, so a forged one naming a victim, with the lock held by
//! another process, is never signalled.
//! A legacy or corrupt file, or a record whose pid now names another
//! program, is never signalled.
//!
//! Not here: the daemon's side of a shutdown (see `run`), the CLI's wording.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::daemon::os::clock::wall_now;
use crate::daemon::os::pidfile::{LockHolders, PidFile, PidFileError};
use crate::daemon::os::port::PortOwner;
use crate::pidfile::{
    ClaimDecision, ClaimFacts, Claimant, LockObservation, PidFileContent, PidRecord, StaleReason,
    decide,
};
use crate::probe::{ProbeOutcome, ProcessProbe, ProcessSnapshot};

/// How often `stop` looks whether the process has exited.
pub const STOP_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long `stop` waits after SIGKILL for the process to go.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// What the PID file of a port says about its instance.
#[derive(Clone, Debug, PartialEq)]
pub enum Instance {
    /// No PID file.
    NotRunning { pid_file: PathBuf },
    /// A PID file nobody holds: left by an instance that did not exit
    /// cleanly. The next start removes it.
    Stale {
        pid_file: PathBuf,
        content: PidFileContent,
        reason: StaleReason,
    },
    /// A live warden holds the file and its identity matches the record.
    Running {
        pid_file: PathBuf,
        record: Box<PidRecord>,
        process: Box<ProcessSnapshot>,
    },
    /// warden cannot tell which process to talk to safely: the file is
    /// locked but its content cannot be verified (legacy or corrupt content,
    /// a reused pid, a process it cannot see), or it is not locked and its
    /// bare pid names a program serving the port. Never signalled.
    Unverifiable {
        pid_file: PathBuf,
        content: PidFileContent,
        /// What follows "the PID file <path> " in a message
        /// ("is locked, but ...", "is not locked, and ...").
        why: String,
    },
}

impl Instance {
    pub fn pid_file(&self) -> &Path {
        match self {
            Instance::NotRunning { pid_file }
            | Instance::Stale { pid_file, .. }
            | Instance::Running { pid_file, .. }
            | Instance::Unverifiable { pid_file, .. } => pid_file,
        }
    }

    /// The state word used by `status --json`.
    pub fn state(&self) -> &'static str {
        match self {
            Instance::NotRunning { .. } => "not_running",
            Instance::Stale { .. } => "stale",
            Instance::Running { .. } => "running",
            Instance::Unverifiable { .. } => "unverifiable",
        }
    }
}

/// Reads and classifies the PID file of `port` in `state_dir`.
pub fn inspect(
    state_dir: &Path,
    port: u16,
    probe: &dyn ProcessProbe,
) -> Result<Instance, PidFileError> {
    let pid_file = PidFile::path(state_dir, port);
    let Some(view) = PidFile::view(state_dir, port)? else {
        return Ok(Instance::NotRunning { pid_file });
    };
    let content = view.content.clone();
    let facts = claim_facts(&pid_file, &content, port, probe);
    let serving_port = facts.recorded_listening.is_some_and(|l| l.listening);
    let decision = decide(&facts);
    if !view.held {
        return Ok(unlocked(pid_file, content, decision, port, serving_port));
    }
    Ok(locked(
        pid_file,
        content,
        decision,
        facts.recorded_process,
        &view.holders,
    ))
}

/// What the lifecycle would decide if this process took the free lock:
/// Conflict means the recorded process is a live owner whose identity
/// matches the record; Stale says why it is not. The same facts as `start`
/// gathers, so both reach the same verdict.
fn claim_facts(
    pid_file: &Path,
    content: &PidFileContent,
    port: u16,
    probe: &dyn ProcessProbe,
) -> ClaimFacts {
    let me = std::process::id();
    let recorded_process = content.pid().filter(|p| *p != me).map(|p| probe.probe(p));
    let file_modified = std::fs::symlink_metadata(pid_file)
        .and_then(|m| m.modified())
        .ok()
        .map(|t| {
            let ms = t
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            crate::time::WallTime::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
        });
    let mut facts = ClaimFacts {
        lock: LockObservation::Acquired,
        content: content.clone(),
        recorded_process,
        file_modified,
        recorded_listening: None,
        me: Claimant {
            pid: me,
            process_start_time: None,
        },
        now: wall_now(),
    };
    facts.recorded_listening = crate::daemon::os::pidfile::recorded_listening(&facts, port);
    facts
}

/// The verdict on a PID file nobody holds the lock of.
fn unlocked(
    pid_file: PathBuf,
    content: PidFileContent,
    decision: ClaimDecision,
    port: u16,
    serving_port: bool,
) -> Instance {
    let reason = match decision {
        ClaimDecision::Stale(reason) => reason,
        // A bare pid (the original format) naming a live program that
        // serves the port, with nobody holding the lock: not a warden
        // (a warden always holds its lock), and not stale either (start
        // refuses it: the port is taken). Say what it is.
        ClaimDecision::Conflict {
            pid: Some(pid),
            process: Some(process),
            ..
        } if matches!(content, PidFileContent::Legacy(_)) && serving_port => {
            return Instance::Unverifiable {
                why: foreign_server(pid, &process, port),
                pid_file,
                content,
            };
        }
        // Not locked, yet the recorded process looks alive and like the
        // writer: an owner that does not hold its lock. Call it stale
        // with the lock as the reason; start will refuse it anyway.
        _ => StaleReason::LockNotHeld {
            pid: content.pid().unwrap_or(0),
            probe_error: "the PID file is not locked by any process".to_string(),
        },
    };
    Instance::Stale {
        pid_file,
        content,
        reason,
    }
}

/// The verdict on a PID file whose lock is held: running only if the record
/// can be verified, names the lock's holder and matches a live process.
fn locked(
    pid_file: PathBuf,
    content: PidFileContent,
    decision: ClaimDecision,
    recorded_process: Option<ProbeOutcome>,
    holders: &LockHolders,
) -> Instance {
    let unverifiable = |why: String| Instance::Unverifiable {
        pid_file: pid_file.clone(),
        content: content.clone(),
        why: format!("is locked, but {why}"),
    };
    let record = match &content {
        PidFileContent::Record(r) => r.clone(),
        PidFileContent::Legacy(pid) => {
            return unverifiable(format!(
                "it holds only a bare pid ({pid}), so the process cannot be verified"
            ));
        }
        PidFileContent::Absent | PidFileContent::Empty => {
            return unverifiable("it is empty (an instance may be starting right now)".to_string());
        }
        PidFileContent::Corrupt { detail } => {
            return unverifiable(format!("it is corrupt: {detail}"));
        }
    };
    if record.process_start_time.is_none() && record.cmdline.is_empty() {
        return unverifiable(format!(
            "its record for pid {} has neither a start time nor a command line to verify",
            record.pid
        ));
    }
    // Whoever can write the file writes the record: the pid to signal must
    // also be the one the kernel names as the lock's holder.
    if let Some(mismatch) = holder_mismatch(record.pid, holders) {
        return unverifiable(mismatch.to_string());
    }
    match (decision, recorded_process) {
        (ClaimDecision::Conflict { .. }, Some(ProbeOutcome::Found(process))) => Instance::Running {
            pid_file,
            record: Box::new(record),
            process: Box::new(process),
        },
        (ClaimDecision::Stale(reason), _) => unverifiable(format!(
            "it is locked, but its record does not match pid {}: {reason}",
            record.pid
        )),
        (_, Some(ProbeOutcome::Unavailable { reason })) => unverifiable(format!(
            "process {} cannot be inspected: {reason}",
            record.pid
        )),
        (_, None) => unverifiable("it names this very process".to_string()),
        (_, Some(other)) => unverifiable(format!(
            "process {} could not be verified ({other:?})",
            record.pid
        )),
    }
}

/// Who serves a port, as seen from a state directory whose PID file shows
/// no running warden there: `status`, `stop`, `health`, `reload` and
/// `restart` find a warden started with another state directory this way.
#[derive(Clone, Debug, PartialEq)]
pub enum PortServer {
    /// A warden, verified as [`inspect`] verifies one (its PID file's lock
    /// held by the recorded pid, its identity matching the record), whose
    /// pid is also the port's owner. `instance` is `Running`.
    Warden {
        state_dir: PathBuf,
        instance: Box<Instance>,
    },
    /// Another program, or a warden this user cannot verify (another user's
    /// process hides its descriptors).
    Other(PortOwner),
}

/// The program serving `port`, when the OS tells (Linux: /proc), and
/// whether it is a warden: its open descriptors name a PID file of `port`
/// whose directory [`inspect`]s as `Running` with the same pid. The state
/// directory comes from the file the process holds open (and locked), not
/// from its command line or environment, which may not say (a config
/// file's `server.state_dir`, a relative path).
pub fn port_server(port: u16, probe: &dyn ProcessProbe) -> Option<PortServer> {
    let owner = crate::daemon::os::port::port_owner(port)?;
    for state_dir in open_pid_file_dirs(owner.pid, port) {
        if let Ok(instance @ Instance::Running { .. }) = inspect(&state_dir, port, probe)
            && matches!(&instance, Instance::Running { record, .. } if record.pid == owner.pid)
        {
            return Some(PortServer::Warden {
                state_dir,
                instance: Box::new(instance),
            });
        }
    }
    Some(PortServer::Other(owner))
}

/// The directories of the PID files of `port` that `pid` holds open
/// (Linux: its `/proc/<pid>/fd` links; a removed file is not listed). At
/// most [`crate::daemon::os::port::MAX_FDS_PER_PROCESS`] descriptors are read.
fn open_pid_file_dirs(pid: u32, port: u16) -> Vec<PathBuf> {
    if !cfg!(target_os = "linux") {
        return Vec::new();
    }
    let wanted = PidFile::path(Path::new(""), port);
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = fds
        .filter_map(|e| e.ok())
        .take(crate::daemon::os::port::MAX_FDS_PER_PROCESS)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|link| link.is_absolute() && link.file_name() == wanted.file_name())
        .filter_map(|link| link.parent().map(Path::to_path_buf))
        .collect();
    dirs.dedup();
    dirs
}

/// The PID file is not locked and its bare pid names `process`, which
/// serves `port` (what `status`, `stop` and `doctor` say after "the PID file
/// <path> ").
pub fn foreign_server(pid: u32, process: &ProcessSnapshot, port: u16) -> String {
    let command = if process.cmdline.is_empty() {
        process.name.clone()
    } else {
        process.command_line()
    };
    format!(
        "is not locked, and the bare pid it holds ({pid}) names `{command}`, which serves port \
         {port}: not a warden (a warden holds its PID file's lock), perhaps the original \
         claude-mpm server; stop that program, or run warden with another --port"
    )
}

/// Why the PID file's record is not trusted although its lock is held: the
/// kernel does not name the recorded pid as the lock's holder.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockHolderMismatch {
    #[error(
        "its lock is held by {}, not by the recorded pid {recorded}, so the record may be forged \
         and names a process that is not warden",
        pids_text(.holders)
    )]
    OtherHolder { recorded: u32, holders: Vec<u32> },
    #[error(
        "the kernel does not say which process holds its lock (/proc/locks does not list it), \
         so the recorded pid {recorded} cannot be verified as the holder"
    )]
    HolderUnknown { recorded: u32 },
}

fn pids_text(pids: &[u32]) -> String {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    match list.len() {
        1 => format!("pid {}", list[0]),
        _ => format!("pids {}", list.join(", ")),
    }
}

/// `None` when the kernel names `recorded` as a holder of the lock. Only
/// Linux's `/proc/locks` names flock holders; elsewhere (no /proc/locks)
/// the record's identity check stands alone.
pub fn holder_mismatch(recorded: u32, holders: &LockHolders) -> Option<LockHolderMismatch> {
    match holders {
        LockHolders::Known(pids) if pids.contains(&recorded) => None,
        LockHolders::Known(pids) if pids.is_empty() => {
            Some(LockHolderMismatch::HolderUnknown { recorded })
        }
        LockHolders::Known(pids) => Some(LockHolderMismatch::OtherHolder {
            recorded,
            holders: pids.clone(),
        }),
        LockHolders::Unknown if cfg!(target_os = "linux") => {
            Some(LockHolderMismatch::HolderUnknown { recorded })
        }
        LockHolders::Unknown => None,
    }
}

/// How a stop ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Exited after SIGTERM.
    Terminated { pid: u32 },
    /// Did not exit within the timeout; SIGKILL was sent and it exited.
    Killed { pid: u32 },
}

/// Why a stop failed.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("cannot signal pid {pid}: {source}")]
    Signal { pid: u32, source: std::io::Error },
    #[error("pid {pid} did not exit even after SIGKILL ({}s)", KILL_WAIT.as_secs())]
    Survived { pid: u32 },
    #[error(
        "pid {pid} changed identity while warden waited for it to stop; not signalling it again"
    )]
    IdentityChanged { pid: u32 },
    #[error("refusing to signal pid {pid}: 0 and 1 are never signalled")]
    Unsafe { pid: u32 },
}

/// Sends SIGTERM to the verified instance `process`, waits up to `timeout`
/// for it to exit, then (after re-checking its identity) SIGKILL.
pub fn stop(
    process: &ProcessSnapshot,
    timeout: Duration,
    probe: &dyn ProcessProbe,
) -> Result<StopOutcome, StopError> {
    let pid = process.pid;
    signal(pid, libc::SIGTERM)?;
    if wait_gone(process, timeout, probe) {
        return Ok(StopOutcome::Terminated { pid });
    }
    match probe.probe(pid) {
        ProbeOutcome::Found(now) if !now.status.has_exited() => {
            if now.start_time != process.start_time {
                return Err(StopError::IdentityChanged { pid });
            }
        }
        _ => return Ok(StopOutcome::Terminated { pid }),
    }
    tracing::warn!("pid {pid} did not stop within {timeout:?}: sending SIGKILL");
    signal(pid, libc::SIGKILL)?;
    if wait_gone(process, KILL_WAIT, probe) {
        Ok(StopOutcome::Killed { pid })
    } else {
        Err(StopError::Survived { pid })
    }
}

/// Sends SIGHUP (reload the configuration) to the verified instance
/// `process` (from [`inspect`]'s `Running`, as for [`stop`]).
pub fn reload(process: &ProcessSnapshot) -> Result<(), StopError> {
    signal(process.pid, libc::SIGHUP)
}

/// True once `process` has exited (gone, zombie, or its pid reused).
fn wait_gone(process: &ProcessSnapshot, timeout: Duration, probe: &dyn ProcessProbe) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let gone = match probe.probe(process.pid) {
            ProbeOutcome::Found(now) => {
                now.status.has_exited() || now.start_time != process.start_time
            }
            ProbeOutcome::NotFound => true,
            // Cannot see it: fall back on kill(pid, 0).
            ProbeOutcome::Unavailable { .. } => !pid_exists(process.pid),
        };
        if gone {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(STOP_POLL_INTERVAL);
    }
}

fn signal(pid: u32, sig: libc::c_int) -> Result<(), StopError> {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return Err(StopError::Unsafe { pid });
    };
    if raw <= 1 {
        return Err(StopError::Unsafe { pid });
    }
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is a single
    // positive pid verified above (never 0, -1 or a process group).
    let rc = unsafe { libc::kill(raw, sig) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        return Ok(()); // already gone
    }
    Err(StopError::Signal { pid, source: err })
}

fn pid_exists(pid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(raw, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
