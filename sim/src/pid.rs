//! One simulated machine for the PID lifecycle: a process table (a
//! [`FakeProbe`]), one PID file and its exclusive non-blocking lock, and the
//! start procedure of `warden::daemon::pidfile::claim` replayed step by step
//! over them with simulated I/O latency, so that many starters can race and a
//! crash can leave a file behind.
//!
//! The lock behaves like `flock`: held by one guard at a time, released when
//! the guard is dropped, which is what happens to a process's descriptors
//! when it exits or when turmoil crashes its host (the host's tasks, and the
//! guards they own, are dropped). The file outlives processes and crashes.
//! Not here: the real filesystem (never touched by the simulation) and any
//! decision: every decision is the pure [`Lifecycle`]'s.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use warden::daemon::pidfile::{BUSY_SETTLE_INTERVAL, BUSY_SETTLE_POLLS};
use warden::pidfile::{
    ClaimDecision, ClaimFacts, Claimant, Lifecycle, LockObservation, PidFileContent, PidRecord,
    ProcessInfo, names_live_holder, parse_pid_file,
};
use warden::probe::{FakeProbe, ProbeOutcome, ProcessProbe, ProcessSnapshot, ProcessStatus};
use warden::time::{Clock, WallTime};

use crate::clock::SimClock;

/// The simulated machine; clones share it.
#[derive(Clone, Debug, Default)]
pub struct SimMachine {
    store: Arc<Mutex<Store>>,
    probe: FakeProbe,
}

#[derive(Debug, Default)]
struct Store {
    /// The token of the guard holding the lock.
    lock_holder: Option<u64>,
    next_token: u64,
    file: Option<FileState>,
    /// Every successful write, as (writer pid, lock token): for invariants.
    writes: Vec<(u32, u64)>,
}

#[derive(Clone, Debug)]
struct FileState {
    bytes: Vec<u8>,
    modified: WallTime,
}

/// The held lock. Dropping it releases the lock, as closing a descriptor does.
#[derive(Debug)]
pub struct SimLockGuard {
    store: Arc<Mutex<Store>>,
    token: u64,
}

impl Drop for SimLockGuard {
    fn drop(&mut self) {
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        if store.lock_holder == Some(self.token) {
            store.lock_holder = None;
        }
    }
}

/// How a process leaves the process table.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Reaped: the pid answers "no such process".
    Gone,
    /// Exited, not reaped: the pid is a zombie.
    Zombie,
}

impl SimMachine {
    pub fn new() -> Self {
        Self::default()
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panicking host leaves the plain data consistent.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The machine's process table, as the lifecycle's probe sees it.
    pub fn probe(&self) -> &FakeProbe {
        &self.probe
    }

    /// Puts `snapshot` in the process table (a process started, or a pid
    /// reused by another program).
    pub fn run_process(&self, snapshot: ProcessSnapshot) {
        self.probe.set(snapshot);
    }

    /// Takes `pid` out of the table, or turns it into a zombie.
    pub fn exit_process(&self, pid: u32, exit: Exit) {
        match (exit, self.probe.probe(pid)) {
            (Exit::Zombie, ProbeOutcome::Found(snapshot)) => {
                self.probe.set(snapshot.with_status(ProcessStatus::Zombie));
            }
            _ => self.probe.remove(pid),
        }
    }

    /// `flock(LOCK_EX | LOCK_NB)`: the guard if the lock was free.
    pub fn try_lock(&self) -> Option<SimLockGuard> {
        let mut store = self.store();
        if store.lock_holder.is_some() {
            return None;
        }
        store.next_token += 1;
        let token = store.next_token;
        store.lock_holder = Some(token);
        Some(SimLockGuard {
            store: Arc::clone(&self.store),
            token,
        })
    }

    /// True while some guard holds the lock.
    pub fn is_locked(&self) -> bool {
        self.store().lock_holder.is_some()
    }

    /// Opens the file, creating it empty if absent; true if this call created it.
    pub fn open_or_create(&self, now: WallTime) -> bool {
        let mut store = self.store();
        if store.file.is_some() {
            return false;
        }
        store.file = Some(FileState {
            bytes: Vec::new(),
            modified: now,
        });
        true
    }

    /// The file's bytes and modification time, `None` if there is no file.
    pub fn read(&self) -> Option<(Vec<u8>, WallTime)> {
        self.store()
            .file
            .as_ref()
            .map(|f| (f.bytes.clone(), f.modified))
    }

    /// The file parsed as the lifecycle parses it.
    pub fn content(&self) -> PidFileContent {
        match self.read() {
            Some((bytes, _)) => parse_pid_file(&bytes),
            None => PidFileContent::Absent,
        }
    }

    /// Replaces the file's content. Only the lock holder may write: a write
    /// without the lock is the bug the lifecycle exists to prevent, so it is
    /// refused and reported.
    pub fn write(
        &self,
        guard: &SimLockGuard,
        writer_pid: u32,
        bytes: Vec<u8>,
        now: WallTime,
    ) -> Result<(), String> {
        let mut store = self.store();
        if store.lock_holder != Some(guard.token) {
            return Err(format!(
                "pid {writer_pid} wrote the PID file without holding its lock"
            ));
        }
        store.file = Some(FileState {
            bytes,
            modified: now,
        });
        store.writes.push((writer_pid, guard.token));
        Ok(())
    }

    /// Removes the file (a clean exit), only for the lock holder.
    pub fn remove(&self, guard: &SimLockGuard) -> Result<(), String> {
        let mut store = self.store();
        if store.lock_holder != Some(guard.token) {
            return Err("the PID file was removed without holding its lock".to_string());
        }
        store.file = None;
        Ok(())
    }

    /// The pids that wrote the file, in order.
    pub fn writers(&self) -> Vec<u32> {
        self.store().writes.iter().map(|(pid, _)| *pid).collect()
    }
}

/// Simulated I/O latency of one start's steps.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StartLatency {
    pub before_open: Duration,
    pub open_to_lock: Duration,
    pub lock_to_read: Duration,
    pub decide_to_write: Duration,
}

/// How one start ended.
#[derive(Debug)]
pub enum StartOutcome {
    /// The file is ours.
    Claimed(Box<Claimed>),
    /// Another instance owns it; the file was not touched.
    Refused { decision: ClaimDecision },
}

/// A won claim.
#[derive(Debug)]
pub struct Claimed {
    /// Holds the lock for the process's life.
    pub guard: SimLockGuard,
    pub decision: ClaimDecision,
    pub record: PidRecord,
    /// In the `Held` phase.
    pub lifecycle: Lifecycle,
}

/// The record a simulated daemon writes.
pub fn record_for(me: &ProcessSnapshot, port: u16, now: WallTime) -> PidRecord {
    PidRecord {
        pid: me.pid,
        server_id: PidRecord::server_id_for_port(port),
        port,
        host: "localhost".to_string(),
        start_time: now,
        process_start_time: Some(me.start_time),
        version: "0.0.0-sim".to_string(),
        process_info: ProcessInfo::from_snapshot(me),
        lock_acquired: true,
        created_by: "warden-sim".to_string(),
        cmdline: me.cmdline.clone(),
        invocation: None,
    }
}

/// The daemon adapter's claim (`daemon::pidfile::claim`) over the simulated
/// machine: open, lock, read and probe, settle a busy lock (bounded polls),
/// let the lifecycle decide, write on a win. Time passes between the steps.
pub async fn start_daemon(
    machine: &SimMachine,
    me: &ProcessSnapshot,
    port: u16,
    clock: &SimClock,
    latency: StartLatency,
) -> Result<StartOutcome, String> {
    tokio::time::sleep(latency.before_open).await;
    let created = machine.open_or_create(clock.wall());
    tokio::time::sleep(latency.open_to_lock).await;
    let mut guard = machine.try_lock();
    tokio::time::sleep(latency.lock_to_read).await;
    let mut facts = observe(machine, me, created, guard.is_some(), clock);
    if guard.is_none() {
        for _ in 0..BUSY_SETTLE_POLLS {
            // The adapter's own rule (`pidfile::names_live_holder`): a leftover
            // record whose pid now belongs to another program must not end the
            // settle. This scenario found that bug in the adapter (seed 15).
            if guard.is_some() || names_live_holder(&facts) {
                break;
            }
            tokio::time::sleep(BUSY_SETTLE_INTERVAL).await;
            guard = machine.try_lock();
            facts = observe(machine, me, false, guard.is_some(), clock);
        }
    }
    let mut lifecycle = Lifecycle::new();
    let decision = lifecycle.claim(facts);
    match (decision.wins(), guard) {
        (true, Some(guard)) => {
            tokio::time::sleep(latency.decide_to_write).await;
            let record = record_for(me, port, clock.wall());
            machine.write(
                &guard,
                me.pid,
                record.to_json_pretty().into_bytes(),
                clock.wall(),
            )?;
            Ok(StartOutcome::Claimed(Box::new(Claimed {
                guard,
                decision,
                record,
                lifecycle,
            })))
        }
        (true, None) => Err(format!(
            "pid {}: the lifecycle granted {decision:?} without the lock",
            me.pid
        )),
        (false, _) => Ok(StartOutcome::Refused { decision }),
    }
}

fn observe(
    machine: &SimMachine,
    me: &ProcessSnapshot,
    created: bool,
    locked: bool,
    clock: &SimClock,
) -> ClaimFacts {
    let (bytes, modified) = match machine.read() {
        Some((bytes, modified)) => (Some(bytes), Some(modified)),
        None => (None, None),
    };
    let content = match &bytes {
        None => PidFileContent::Absent,
        Some(bytes) if created && bytes.is_empty() => PidFileContent::Absent,
        Some(bytes) => parse_pid_file(bytes),
    };
    let recorded_process = content
        .pid()
        .filter(|pid| *pid != me.pid)
        .map(|pid| machine.probe().probe(pid));
    ClaimFacts {
        lock: if locked {
            LockObservation::Acquired
        } else {
            LockObservation::Busy
        },
        content,
        recorded_process,
        file_modified: modified,
        recorded_listening: None,
        me: Claimant {
            pid: me.pid,
            process_start_time: Some(me.start_time),
        },
        now: clock.wall(),
    }
}
