//! The PID file: its record, its parser, and the lifecycle that decides who
//! may own it.
//!
//! One daemon runs per port. The adapter (`daemon::pidfile`) opens the file,
//! tries the OS lock, reads the old content and probes the recorded pid; this
//! module turns those observed facts into a decision ([`decide`], wrapped in
//! the statig machine [`Lifecycle`]):
//!
//! | lock     | file content                     | recorded process                          | decision |
//! |----------|----------------------------------|-------------------------------------------|----------|
//! | busy     | anything                         | anything                                  | `Conflict` (a live process holds the lock) |
//! | acquired | absent                           | -                                         | `Free` |
//! | acquired | empty / corrupt                  | -                                         | `Stale(Empty / Corrupt)` |
//! | acquired | record or legacy naming our pid  | -                                         | `Ours` (or `PidReused` if the record's start time is not ours) |
//! | acquired | record or legacy                 | not found                                 | `Stale(ProcessGone)` |
//! | acquired | record or legacy                 | zombie or dead                            | `Stale(Zombie)` |
//! | acquired | record or legacy                 | alive, identity differs                   | `Stale(PidReused)` |
//! | acquired | legacy (or record without identity) | alive, not listening on the file's port | `Stale(PidReused)` |
//! | acquired | record or legacy                 | alive, identity matches or unknown        | `Conflict` (conservative, see below) |
//! | acquired | record or legacy                 | probe unavailable                         | `Stale(LockNotHeld)` (the lock decides) |
//!
//! Identity differs when the OS start time differs from `process_start_time`
//! by more than [`START_TIME_TOLERANCE`], when both command lines are known and
//! differ, when the process started after the file was last written, or (for
//! records that carry neither start time nor command line, as older writers
//! produced) when the process name differs. A file that records no identity
//! (a bare pid, or a record without start time and command line) also
//! differs when the OS says its process does not listen on the file's port:
//! nobody holds the lock, so it is not a warden, and not listening, it is not
//! the seed's server either (a `sleep` that inherited the pid, say).
//!
//! **A live process whose identity matches the record but that does not hold
//! the lock** is treated as the owner: we refuse to start (`Conflict`) rather
//! than risk two daemons on one port. That happens only with an owner that
//! lost or never took the lock (an older build, a lock on a network file
//! system); the operator resolves it with the steps of the conflict error.
//!
//! Only a claimant that *acquired* the lock can win, and the OS grants the
//! lock to one open file description at a time: two claimants never both win.
//!
//! This module is pure: no file, no clock, no process table. It is not the
//! place that writes, locks or removes the file.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use statig::prelude::*;

use crate::probe::{ProbeOutcome, ProcessSnapshot, ProcessStatus};
use crate::time::WallTime;

/// Largest pid any supported OS hands out (Linux `PID_MAX_LIMIT`, 2^22).
/// A file naming a larger pid is corrupt, not a process to probe.
pub const MAX_PLAUSIBLE_PID: u32 = 1 << 22;

/// A PID file larger than this is corrupt; the adapter reads no more.
pub const MAX_PID_FILE_BYTES: usize = 64 * 1024;

/// Two start times closer than this are the same process start. Linux
/// reports start times in whole seconds from a boot time that moves when the
/// wall clock is stepped, so exact equality would call a live owner "reused".
pub const START_TIME_TOLERANCE: Duration = Duration::from_secs(2);

/// Why a PID file left behind by an earlier instance may be taken over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StaleReason {
    /// No process has the recorded pid.
    ProcessGone { pid: u32 },
    /// The recorded pid is a zombie (or dead): it has exited and waits to be reaped.
    Zombie { pid: u32 },
    /// The pid now belongs to another process than the one that wrote the file.
    PidReused { pid: u32, evidence: ReuseEvidence },
    /// The file could not be parsed.
    Corrupt { detail: String },
    /// The file exists but is empty.
    Empty,
    /// The lock was free and the recorded process could not be inspected
    /// (the probe was unavailable): the lock decides, and nobody holds it.
    LockNotHeld { pid: u32, probe_error: String },
}

impl StaleReason {
    /// The pid the stale file named, when it named one.
    pub fn pid(&self) -> Option<u32> {
        match self {
            StaleReason::ProcessGone { pid }
            | StaleReason::Zombie { pid }
            | StaleReason::PidReused { pid, .. }
            | StaleReason::LockNotHeld { pid, .. } => Some(*pid),
            StaleReason::Corrupt { .. } | StaleReason::Empty => None,
        }
    }
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StaleReason::ProcessGone { pid } => write!(f, "process {pid} no longer exists"),
            StaleReason::Zombie { pid } => {
                write!(
                    f,
                    "process {pid} has exited (zombie) and waits to be reaped"
                )
            }
            StaleReason::PidReused { pid, evidence } => {
                write!(f, "pid {pid} now belongs to another program: {evidence}")
            }
            StaleReason::Corrupt { detail } => write!(f, "the file is corrupt: {detail}"),
            StaleReason::Empty => f.write_str("the file is empty"),
            StaleReason::LockNotHeld { pid, probe_error } => write!(
                f,
                "nobody holds the lock and process {pid} cannot be inspected ({probe_error})"
            ),
        }
    }
}

/// What shows that a pid was reused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReuseEvidence {
    StartTimeDiffers {
        recorded: WallTime,
        actual: WallTime,
    },
    CommandDiffers {
        recorded: String,
        actual: String,
    },
    /// The process started after the file was last written, so it cannot
    /// have written it.
    StartedAfterFileWritten {
        file_modified: WallTime,
        process_started: WallTime,
    },
    /// Only for records without start time or command line (older writers).
    NameDiffers {
        recorded: String,
        actual: String,
    },
    /// Only for a file that records no identity: the process does not listen
    /// on the file's port, so it is not the server that wrote the file.
    NotListening {
        port: u16,
        command: String,
    },
}

impl fmt::Display for ReuseEvidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReuseEvidence::StartTimeDiffers { recorded, actual } => write!(
                f,
                "it started at {} but the file records {}",
                actual.to_iso8601(),
                recorded.to_iso8601()
            ),
            ReuseEvidence::CommandDiffers { recorded, actual } => {
                write!(
                    f,
                    "its command is `{actual}` but the file records `{recorded}`"
                )
            }
            ReuseEvidence::StartedAfterFileWritten {
                file_modified,
                process_started,
            } => write!(
                f,
                "it started at {} after the file was written at {}",
                process_started.to_iso8601(),
                file_modified.to_iso8601()
            ),
            ReuseEvidence::NameDiffers { recorded, actual } => {
                write!(
                    f,
                    "it is named `{actual}` but the file records `{recorded}`"
                )
            }
            ReuseEvidence::NotListening { port, command } => write!(
                f,
                "it is `{command}`, which does not listen on port {port}, and nobody holds \
                 the lock: it is not the server that wrote this file"
            ),
        }
    }
}

/// The seed's `process_info` block: the writer's own process at write time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    #[serde(default)]
    pub name: String,
    #[serde(default = "status_other")]
    pub status: ProcessStatus,
    #[serde(default)]
    pub cpu_percent: f32,
    #[serde(default)]
    pub memory_mb: f64,
}

fn status_other() -> ProcessStatus {
    ProcessStatus::Other
}

impl ProcessInfo {
    /// From a probe of the writer itself. Non-finite measurements become 0 so
    /// the JSON always parses back.
    pub fn from_snapshot(s: &ProcessSnapshot) -> Self {
        ProcessInfo {
            name: s.name.clone(),
            status: s.status,
            cpu_percent: finite_f32(s.cpu_percent),
            memory_mb: finite_f64(s.memory_mb()),
        }
    }
}

fn finite_f32(v: f32) -> f32 {
    if v.is_finite() { v } else { 0.0 }
}

fn finite_f64(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

/// The JSON PID file: every field of the seed's format plus
/// `process_start_time` (epoch seconds of the OS start of `pid`) and
/// `cmdline`, which let a later start detect a reused pid.
///
/// Parsing tolerates unknown extra fields and missing optional ones, so files
/// written by older versions and by the original Python server are read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PidRecord {
    pub pid: u32,
    #[serde(default)]
    pub server_id: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub host: String,
    /// When the daemon claimed the file; ISO-8601 UTC in JSON.
    #[serde(with = "iso_time")]
    pub start_time: WallTime,
    #[serde(default, with = "epoch_secs", skip_serializing_if = "Option::is_none")]
    pub process_start_time: Option<WallTime>,
    #[serde(default)]
    pub version: String,
    pub process_info: ProcessInfo,
    #[serde(default)]
    pub lock_acquired: bool,
    #[serde(default)]
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmdline: Vec<String>,
    /// How the daemon was started, for `warden restart` (absent in records
    /// of older versions and of the original server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<Box<Invocation>>,
}

/// The flags a daemon was started with, as `warden restart` needs them to
/// start it again the same way: the flags as given (a key the flags left to
/// the config file stays the file's, so an edited file applies), with the
/// paths absolute. Every field is optional when read, so records of other
/// versions stay readable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    /// `--host`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `--config`, when given (an auto-loaded `<state dir>/socketio-config.json`
    /// is found again through `state_dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<std::path::PathBuf>,
    /// `--profile`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The state directory the PID file is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<std::path::PathBuf>,
    /// Started with `--detach` (in the background).
    #[serde(default)]
    pub detach: bool,
}

impl PidRecord {
    /// Pretty JSON with a trailing newline, as written to disk.
    pub fn to_json_pretty(&self) -> String {
        let mut clean = self.clone();
        clean.process_info.cpu_percent = finite_f32(clean.process_info.cpu_percent);
        clean.process_info.memory_mb = finite_f64(clean.process_info.memory_mb);
        // Serializing a struct of strings, integers, finite floats and bools
        // into a String cannot fail (no maps with non-string keys, no I/O).
        let mut text =
            serde_json::to_string_pretty(&clean).expect("a PidRecord always serializes to JSON");
        text.push('\n');
        text
    }

    /// The seed's server id for a port: `socketio-server-<port>`.
    pub fn server_id_for_port(port: u16) -> String {
        format!("socketio-server-{port}")
    }
}

/// ISO-8601 in JSON. Reading also accepts a timestamp without zone (taken as
/// UTC, as Python's `isoformat()` writes it) and epoch seconds as a number.
mod iso_time {
    use super::*;

    pub fn serialize<S: Serializer>(t: &WallTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_iso8601())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<WallTime, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        parse_lenient(&value).ok_or_else(|| {
            serde::de::Error::custom(format!("start_time is not an ISO-8601 UTC time: {value}"))
        })
    }

    fn parse_lenient(value: &serde_json::Value) -> Option<WallTime> {
        match value {
            serde_json::Value::String(text) => WallTime::parse_iso8601(text)
                .or_else(|| WallTime::parse_iso8601(&format!("{}Z", text.trim()))),
            serde_json::Value::Number(n) => epoch_secs::from_f64(n.as_f64()?),
            _ => None,
        }
    }
}

/// Epoch seconds (integer or float) in JSON; `null` or absent is `None`.
mod epoch_secs {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<WallTime>, s: S) -> Result<S::Ok, S::Error> {
        // Whole seconds as an integer (what sysinfo gives); a fractional time
        // (Python's psutil writes one) keeps its milliseconds, so that a
        // record read and written again is the same record.
        match t {
            Some(t) if t.as_millis() % 1000 == 0 => s.serialize_u64(t.as_millis() / 1000),
            Some(t) => s.serialize_f64(t.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<WallTime>, D::Error> {
        let value = Option::<f64>::deserialize(d)?;
        match value {
            None => Ok(None),
            Some(secs) => from_f64(secs).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!("process_start_time {secs} is not a time"))
            }),
        }
    }

    /// Seconds since the epoch, finite, not negative, before year 10000.
    pub fn from_f64(secs: f64) -> Option<WallTime> {
        const YEAR_10000_SECS: f64 = 253_402_300_800.0;
        if secs.is_finite() && (0.0..YEAR_10000_SECS).contains(&secs) {
            // Rounded, not truncated: 1754490600.123 is 1754490600122.99998 ms in f64.
            Some(WallTime::from_millis((secs * 1000.0).round() as u64))
        } else {
            None
        }
    }
}

/// What a PID file holds.
#[derive(Clone, Debug, PartialEq)]
pub enum PidFileContent {
    /// There was no file (the adapter created it).
    Absent,
    /// Zero bytes or only whitespace.
    Empty,
    Record(PidRecord),
    /// A bare integer, as older writers produced.
    Legacy(u32),
    Corrupt {
        detail: String,
    },
}

impl PidFileContent {
    /// The pid the file names, if any.
    pub fn pid(&self) -> Option<u32> {
        match self {
            PidFileContent::Record(r) => Some(r.pid),
            PidFileContent::Legacy(pid) => Some(*pid),
            _ => None,
        }
    }

    pub fn record(&self) -> Option<&PidRecord> {
        match self {
            PidFileContent::Record(r) => Some(r),
            _ => None,
        }
    }
}

/// Reads PID file bytes. Never panics, whatever the input.
pub fn parse_pid_file(bytes: &[u8]) -> PidFileContent {
    if bytes.len() > MAX_PID_FILE_BYTES {
        return PidFileContent::Corrupt {
            detail: format!(
                "{} bytes, more than the {MAX_PID_FILE_BYTES} a PID file may hold",
                bytes.len()
            ),
        };
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text.trim(),
        Err(e) => {
            return PidFileContent::Corrupt {
                detail: format!("not UTF-8 text ({e})"),
            };
        }
    };
    if text.is_empty() {
        return PidFileContent::Empty;
    }
    if text
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'-' || b == b'+')
    {
        return match text.parse::<i64>() {
            Ok(n) => match plausible_pid(n) {
                Ok(pid) => PidFileContent::Legacy(pid),
                Err(detail) => PidFileContent::Corrupt { detail },
            },
            Err(e) => PidFileContent::Corrupt {
                detail: format!("`{}` is not a pid ({e})", preview(text)),
            },
        };
    }
    match serde_json::from_str::<PidRecord>(text) {
        Ok(record) => match plausible_pid(i64::from(record.pid)) {
            Ok(_) => PidFileContent::Record(record),
            Err(detail) => PidFileContent::Corrupt { detail },
        },
        Err(e) => PidFileContent::Corrupt {
            detail: format!("invalid PID record JSON: {e}"),
        },
    }
}

fn plausible_pid(n: i64) -> Result<u32, String> {
    match u32::try_from(n) {
        Ok(pid) if (1..=MAX_PLAUSIBLE_PID).contains(&pid) => Ok(pid),
        _ => Err(format!(
            "pid {n} is not a process id (expected 1..={MAX_PLAUSIBLE_PID})"
        )),
    }
}

fn preview(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Whether the non-blocking lock attempt on the PID file succeeded.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockObservation {
    Acquired,
    /// Another open file description holds it: a live process owns the file.
    Busy,
}

/// Who is claiming: the current process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claimant {
    pub pid: u32,
    pub process_start_time: Option<WallTime>,
}

/// Everything the adapter observed before deciding.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimFacts {
    pub lock: LockObservation,
    pub content: PidFileContent,
    /// The probe of the pid the file names (`None` when it names none or names us).
    pub recorded_process: Option<ProbeOutcome>,
    /// Last modification of the file, when the file system tells.
    pub file_modified: Option<WallTime>,
    /// Whether the recorded process listens on the file's port, when the OS
    /// tells; adapters look it up only where [`identity_unrecorded`] holds.
    pub recorded_listening: Option<PortListening>,
    pub me: Claimant,
    pub now: WallTime,
}

/// Whether a process listens on a port (a fact the OS tells).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortListening {
    pub port: u16,
    pub listening: bool,
}

/// True when the file records no identity to check a live process against:
/// a bare pid, or a record without start time and command line. Only then
/// does [`decide`] use [`ClaimFacts::recorded_listening`].
pub fn identity_unrecorded(content: &PidFileContent) -> bool {
    match content {
        PidFileContent::Legacy(_) => true,
        PidFileContent::Record(r) => r.process_start_time.is_none() && r.cmdline.is_empty(),
        _ => false,
    }
}

/// What to do with the PID file.
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimDecision {
    /// No previous file: claim it.
    Free,
    /// The file already names this process: rewrite it.
    Ours,
    /// Another live instance owns it: refuse to start, touch nothing.
    Conflict {
        pid: Option<u32>,
        holder: Option<Box<PidRecord>>,
        /// The holder as the probe sees it now, when it could.
        process: Option<Box<ProcessSnapshot>>,
    },
    /// A leftover: claim it and log the reason.
    Stale(StaleReason),
}

impl ClaimDecision {
    /// True when the claimant takes the file.
    pub fn wins(&self) -> bool {
        !matches!(self, ClaimDecision::Conflict { .. })
    }

    pub fn stale_reason(&self) -> Option<&StaleReason> {
        match self {
            ClaimDecision::Stale(reason) => Some(reason),
            _ => None,
        }
    }
}

/// The decision table of the module docs, as a pure function.
pub fn decide(facts: &ClaimFacts) -> ClaimDecision {
    let found = match &facts.recorded_process {
        Some(ProbeOutcome::Found(s)) => Some(s),
        _ => None,
    };
    if facts.lock == LockObservation::Busy {
        return ClaimDecision::Conflict {
            pid: facts.content.pid(),
            holder: facts.content.record().cloned().map(Box::new),
            process: found
                .filter(|s| !s.status.has_exited())
                .cloned()
                .map(Box::new),
        };
    }
    let (pid, record) = match &facts.content {
        PidFileContent::Absent => return ClaimDecision::Free,
        PidFileContent::Empty => return ClaimDecision::Stale(StaleReason::Empty),
        PidFileContent::Corrupt { detail } => {
            return ClaimDecision::Stale(StaleReason::Corrupt {
                detail: detail.clone(),
            });
        }
        PidFileContent::Legacy(pid) => (*pid, None),
        PidFileContent::Record(r) => (r.pid, Some(r)),
    };
    if pid == facts.me.pid {
        let recorded = record.and_then(|r| r.process_start_time);
        if let (Some(recorded), Some(actual)) = (recorded, facts.me.process_start_time)
            && !same_start(recorded, actual)
        {
            return ClaimDecision::Stale(StaleReason::PidReused {
                pid,
                evidence: ReuseEvidence::StartTimeDiffers { recorded, actual },
            });
        }
        return ClaimDecision::Ours;
    }
    match &facts.recorded_process {
        None | Some(ProbeOutcome::Unavailable { .. }) => {
            let probe_error = match &facts.recorded_process {
                Some(ProbeOutcome::Unavailable { reason }) => reason.clone(),
                _ => "no probe result".to_string(),
            };
            ClaimDecision::Stale(StaleReason::LockNotHeld { pid, probe_error })
        }
        Some(ProbeOutcome::NotFound) => ClaimDecision::Stale(StaleReason::ProcessGone { pid }),
        Some(ProbeOutcome::Found(s)) if s.status.has_exited() => {
            ClaimDecision::Stale(StaleReason::Zombie { pid })
        }
        Some(ProbeOutcome::Found(s)) => match reuse_evidence(record, s, facts.file_modified)
            .or_else(|| not_listening(facts, s))
        {
            Some(evidence) => ClaimDecision::Stale(StaleReason::PidReused { pid, evidence }),
            None => ClaimDecision::Conflict {
                pid: Some(pid),
                holder: record.cloned().map(Box::new),
                process: Some(Box::new(s.clone())),
            },
        },
    }
}

/// While the lock is busy: does the file already name the live process that
/// holds it? The adapter polls a busy lock until this is true (or the lock
/// frees) so that a refused start can name the winner. A leftover record whose
/// pid now belongs to an unrelated program does **not** name the holder: the
/// winner has not written its record yet, and naming the unrelated program
/// would send an operator to kill the wrong process.
pub fn names_live_holder(facts: &ClaimFacts) -> bool {
    match &facts.recorded_process {
        // The file names us: another descriptor of this process holds it.
        None => facts.content.pid() == Some(facts.me.pid),
        // A live process is the holder only if it is the one that wrote the
        // record, which is exactly when a free lock would be a conflict.
        Some(ProbeOutcome::Found(_)) => matches!(
            decide(&ClaimFacts {
                lock: LockObservation::Acquired,
                ..facts.clone()
            }),
            ClaimDecision::Conflict { .. }
        ),
        // Cannot look: the busy lock is the evidence.
        Some(ProbeOutcome::Unavailable { .. }) => true,
        Some(ProbeOutcome::NotFound) => false,
    }
}

fn same_start(a: WallTime, b: WallTime) -> bool {
    a.as_millis().abs_diff(b.as_millis()) <= START_TIME_TOLERANCE.as_millis() as u64
}

/// Evidence that the live process `actual` is not the writer of the file.
fn reuse_evidence(
    record: Option<&PidRecord>,
    actual: &ProcessSnapshot,
    file_modified: Option<WallTime>,
) -> Option<ReuseEvidence> {
    if let Some(recorded) = record.and_then(|r| r.process_start_time)
        && !same_start(recorded, actual.start_time)
    {
        return Some(ReuseEvidence::StartTimeDiffers {
            recorded,
            actual: actual.start_time,
        });
    }
    if let Some(r) = record
        && !r.cmdline.is_empty()
        && !actual.cmdline.is_empty()
        && r.cmdline != actual.cmdline
    {
        return Some(ReuseEvidence::CommandDiffers {
            recorded: r.cmdline.join(" "),
            actual: actual.command_line(),
        });
    }
    if let Some(file_modified) = file_modified
        && actual.start_time > file_modified
        && !same_start(actual.start_time, file_modified)
    {
        return Some(ReuseEvidence::StartedAfterFileWritten {
            file_modified,
            process_started: actual.start_time,
        });
    }
    if let Some(r) = record
        && r.process_start_time.is_none()
        && r.cmdline.is_empty()
        && !r.process_info.name.is_empty()
        && !actual.name.is_empty()
        && !names_match(&r.process_info.name, &actual.name)
    {
        return Some(ReuseEvidence::NameDiffers {
            recorded: r.process_info.name.clone(),
            actual: actual.name.clone(),
        });
    }
    None
}

/// For a file that records no identity: the OS says its live process does
/// not listen on the file's port.
fn not_listening(facts: &ClaimFacts, actual: &ProcessSnapshot) -> Option<ReuseEvidence> {
    let port = facts.recorded_listening?;
    (identity_unrecorded(&facts.content) && !port.listening).then(|| ReuseEvidence::NotListening {
        port: port.port,
        command: if actual.cmdline.is_empty() {
            actual.name.clone()
        } else {
            actual.command_line()
        },
    })
}

/// Linux truncates process names to 15 bytes; a truncated name matches its
/// full form.
fn names_match(a: &str, b: &str) -> bool {
    const COMM_LEN: usize = 15;
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short == long || (short.len() >= COMM_LEN && long.starts_with(short))
}

/// Events of the lifecycle machine.
#[derive(Clone, Debug, PartialEq)]
pub enum LifecycleEvent {
    /// The adapter locked (or failed to lock) and read the file.
    Claim(Box<ClaimFacts>),
    /// The Postgres recheck: does the path still name the inode we locked?
    Recheck { path_names_locked_inode: bool },
    /// Clean exit. `path_still_ours`: same inode and the content names our pid.
    Release { path_still_ours: bool },
}

/// What the machine tells the adapter to do.
#[derive(Clone, Debug, PartialEq)]
pub enum LifecycleOutput {
    Decided(ClaimDecision),
    /// Truncate the locked file and write our record.
    WriteRecord,
    /// Change nothing on disk.
    LeaveFileUntouched,
    /// Remove the file (then let the lock go).
    RemoveFile,
    /// The file was removed or replaced under us: we no longer own the path.
    Lost,
}

/// The statig machine. It keeps no shared storage: the outputs of each event
/// go to the context vector passed with it.
#[derive(Debug, Default)]
pub struct LifecycleMachine;

/// The PID file lifecycle. All of its states:
///
/// ```text
///  not_held ─┬─ unclaimed ──Claim(win)──▶ held ──Release──▶ released
///            ├─ refused  ◀─Claim(lose)─┘   │
///            ├─ lost     ◀──Recheck(no)────┘
///            └─ released
/// ```
#[state_machine(
    initial = "State::unclaimed()",
    state(derive(Debug, Clone, PartialEq, Eq))
)]
impl LifecycleMachine {
    /// Nothing claimed yet.
    #[state(superstate = "not_held")]
    fn unclaimed(event: &LifecycleEvent) -> Outcome<State> {
        let _ = event;
        Super
    }

    /// The last claim lost to another instance.
    #[state(superstate = "not_held")]
    fn refused(event: &LifecycleEvent) -> Outcome<State> {
        let _ = event;
        Super
    }

    /// The path was removed or replaced while we held the lock.
    #[state(superstate = "not_held")]
    fn lost(context: &mut Vec<LifecycleOutput>, event: &LifecycleEvent) -> Outcome<State> {
        match event {
            LifecycleEvent::Release { .. } => {
                context.push(LifecycleOutput::LeaveFileUntouched);
                Transition(State::released())
            }
            _ => Super,
        }
    }

    /// Released on clean exit; releasing again does nothing.
    #[state(superstate = "not_held")]
    fn released(event: &LifecycleEvent) -> Outcome<State> {
        let _ = event;
        Super
    }

    /// We hold the lock and our record is in the file.
    #[state]
    fn held(
        pid: &mut u32,
        since: &mut WallTime,
        context: &mut Vec<LifecycleOutput>,
        event: &LifecycleEvent,
    ) -> Outcome<State> {
        let _ = (pid, since);
        match event {
            LifecycleEvent::Claim(_) => {
                context.push(LifecycleOutput::Decided(ClaimDecision::Ours));
                Handled
            }
            LifecycleEvent::Recheck {
                path_names_locked_inode: true,
            } => Handled,
            LifecycleEvent::Recheck {
                path_names_locked_inode: false,
            } => {
                context.push(LifecycleOutput::Lost);
                Transition(State::lost())
            }
            LifecycleEvent::Release { path_still_ours } => {
                context.push(if *path_still_ours {
                    LifecycleOutput::RemoveFile
                } else {
                    LifecycleOutput::LeaveFileUntouched
                });
                Transition(State::released())
            }
        }
    }

    /// Not holding the file: a claim decides; rechecks and releases have
    /// nothing to act on.
    #[superstate]
    fn not_held(context: &mut Vec<LifecycleOutput>, event: &LifecycleEvent) -> Outcome<State> {
        match event {
            LifecycleEvent::Claim(facts) => {
                let decision = decide(facts);
                let wins = decision.wins();
                // Invariant: only the holder of the OS lock can win.
                debug_assert!(!wins || facts.lock == LockObservation::Acquired);
                context.push(LifecycleOutput::Decided(decision));
                if wins && facts.lock == LockObservation::Acquired {
                    context.push(LifecycleOutput::WriteRecord);
                    Transition(State::held(facts.me.pid, facts.now))
                } else {
                    context.push(LifecycleOutput::LeaveFileUntouched);
                    Transition(State::refused())
                }
            }
            LifecycleEvent::Recheck { .. } | LifecycleEvent::Release { .. } => Handled,
        }
    }
}

/// Where the lifecycle stands, for callers that do not want statig's types.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Unclaimed,
    Held,
    Refused,
    Lost,
    Released,
}

/// Result of a recheck.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RecheckOutcome {
    StillHeld,
    /// Just lost, or lost earlier.
    Lost,
    /// Nothing was held (unclaimed, refused, released).
    NotHeld,
}

/// What to do on release.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReleaseAction {
    RemoveFile,
    LeaveFileUntouched,
}

/// The lifecycle machine behind a plain API.
pub struct Lifecycle {
    machine: StateMachine<LifecycleMachine>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("phase", &self.phase())
            .finish()
    }
}

impl Lifecycle {
    pub fn new() -> Self {
        Lifecycle {
            machine: LifecycleMachine.state_machine(),
        }
    }

    fn run(&mut self, event: LifecycleEvent) -> Vec<LifecycleOutput> {
        let mut outputs = Vec::new();
        self.machine.handle_with_context(&event, &mut outputs);
        outputs
    }

    /// Decides a claim. When it wins, the lifecycle is `Held` and the adapter
    /// must write the record; otherwise it must leave the file untouched.
    pub fn claim(&mut self, facts: ClaimFacts) -> ClaimDecision {
        let outputs = self.run(LifecycleEvent::Claim(Box::new(facts)));
        outputs
            .into_iter()
            .find_map(|o| match o {
                LifecycleOutput::Decided(d) => Some(d),
                _ => None,
            })
            .unwrap_or(ClaimDecision::Ours)
    }

    pub fn recheck(&mut self, path_names_locked_inode: bool) -> RecheckOutcome {
        let was_lost = self.phase() == Phase::Lost;
        self.run(LifecycleEvent::Recheck {
            path_names_locked_inode,
        });
        match self.phase() {
            Phase::Held => RecheckOutcome::StillHeld,
            Phase::Lost => RecheckOutcome::Lost,
            _ if was_lost => RecheckOutcome::Lost,
            _ => RecheckOutcome::NotHeld,
        }
    }

    /// Clean exit. Removes the file only if we hold it and it is still ours;
    /// idempotent.
    pub fn release(&mut self, path_still_ours: bool) -> ReleaseAction {
        let outputs = self.run(LifecycleEvent::Release { path_still_ours });
        if outputs.contains(&LifecycleOutput::RemoveFile) {
            ReleaseAction::RemoveFile
        } else {
            ReleaseAction::LeaveFileUntouched
        }
    }

    pub fn phase(&self) -> Phase {
        match self.machine.state() {
            State::Unclaimed {} => Phase::Unclaimed,
            State::Held { .. } => Phase::Held,
            State::Refused {} => Phase::Refused,
            State::Lost {} => Phase::Lost,
            State::Released {} => Phase::Released,
        }
    }
}

#[cfg(test)]
mod tests;
