//! One simulated machine for the PID lifecycle: a process table (a
//! [`FakeProbe`]) and an in-memory file system with inode numbers and
//! `flock`-like locks, on which simulated processes ([`SimProcess`]) run the
//! daemon's own claim (`warden::daemon::os::pidfile::claim_with`) and its
//! [`PidGuard`]'s release, through the adapter's [`PidHost`] seam. Each
//! process takes seeded simulated time over the claim's steps, so that many
//! starters can race, an exiting instance can unlink the file between a
//! starter's open and its lock, and a crash can leave a file behind.
//!
//! The model keeps what the claim relies on: a path names an inode; opening
//! gives a descriptor; a lock belongs to one open file (shared by its
//! duplicates) and goes when its last descriptor is dropped, which is what
//! happens to a process's descriptors when it exits or when turmoil crashes
//! its host (the host's tasks, and the descriptors they own, are dropped);
//! unlinking a path leaves the inode to whoever has it open. Files outlive
//! processes and crashes. Not here: the real filesystem (never touched by the
//! simulation), links, permissions, and any decision: the claim is the
//! daemon's, every decision in it the pure [`warden::pidfile::Lifecycle`]'s.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use warden::config::PidValidationConfig;
use warden::daemon::os::pidfile::{
    FileFacts, PidFileError, PidGuard, PidHost, PidRecordDraft, claim_with, pid_file_path,
};
use warden::pidfile::{PidFileContent, PidRecord, ProcessInfo, StaleReason, parse_pid_file};
use warden::probe::{FakeProbe, ProbeOutcome, ProcessProbe, ProcessSnapshot, ProcessStatus};
use warden::time::{Clock, Moment, WallTime};

use crate::clock::SimClock;

/// The state directory of every simulated daemon.
pub const STATE_DIR: &str = "/var/lib/warden";

/// The simulated file system's one device number.
const DEV: u64 = 0x0801;

/// The simulated machine; clones share it.
#[derive(Clone, Debug, Default)]
pub struct SimMachine {
    store: Arc<Mutex<Store>>,
    probe: FakeProbe,
}

#[derive(Debug, Default)]
struct Store {
    next_ino: u64,
    next_descriptor: u64,
    /// What each path names.
    paths: BTreeMap<PathBuf, u64>,
    inodes: BTreeMap<u64, Inode>,
    /// Every successful write, as (writer pid, inode): for invariants.
    writes: Vec<(u32, u64)>,
}

#[derive(Clone, Debug)]
struct Inode {
    bytes: Vec<u8>,
    modified: WallTime,
    /// The open file (descriptor id) holding the lock.
    locked_by: Option<u64>,
}

impl Store {
    fn inode(&mut self, ino: u64) -> io::Result<&mut Inode> {
        // An open descriptor keeps its inode: inodes are never freed.
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| io::Error::other(format!("inode {ino} vanished")))
    }

    fn create(&mut self, bytes: Vec<u8>, modified: WallTime) -> u64 {
        self.next_ino += 1;
        let ino = self.next_ino;
        self.inodes.insert(
            ino,
            Inode {
                bytes,
                modified,
                locked_by: None,
            },
        );
        ino
    }
}

/// An open descriptor of a simulated file. Clones are duplicates: they
/// share the open file and its lock, which goes when the last one is dropped.
#[derive(Clone, Debug)]
pub struct SimFile(Arc<OpenFile>);

#[derive(Debug)]
struct OpenFile {
    id: u64,
    ino: u64,
    store: Arc<Mutex<Store>>,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(inode) = store.inodes.get_mut(&self.ino)
            && inode.locked_by == Some(self.id)
        {
            inode.locked_by = None;
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

    /// The PID file of `port` in [`STATE_DIR`].
    pub fn pid_path(port: u16) -> PathBuf {
        pid_file_path(Path::new(STATE_DIR), port)
    }

    /// Leaves a file at the PID file path of `port`, as an earlier instance
    /// (`writer_pid`) would have, unlocked.
    pub fn leave_file(&self, port: u16, bytes: Vec<u8>, modified: WallTime, writer_pid: u32) {
        let mut store = self.store();
        let ino = store.create(bytes, modified);
        store.paths.insert(Self::pid_path(port), ino);
        store.writes.push((writer_pid, ino));
    }

    /// True while any open file holds a lock on any inode.
    pub fn is_locked(&self) -> bool {
        self.store().inodes.values().any(|i| i.locked_by.is_some())
    }

    /// The file at the PID file path of `port`, parsed as the lifecycle
    /// parses it.
    pub fn content(&self, port: u16) -> PidFileContent {
        let store = self.store();
        match store
            .paths
            .get(&Self::pid_path(port))
            .and_then(|ino| store.inodes.get(ino))
        {
            Some(inode) => parse_pid_file(&inode.bytes),
            None => PidFileContent::Absent,
        }
    }

    /// The pids that wrote a file, in order, whichever inode they wrote.
    pub fn writers(&self) -> Vec<u32> {
        self.store().writes.iter().map(|(pid, _)| *pid).collect()
    }
}

/// Simulated time one process's claim spends in its steps.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct StartLatency {
    /// Before the file is opened (or created).
    pub before_open: Duration,
    /// Between the open and the lock.
    pub open_to_lock: Duration,
    /// Between the lock and reading the file (and probing its pid).
    pub lock_to_read: Duration,
    /// Between the decision and the write.
    pub decide_to_write: Duration,
}

/// One simulated process, as the daemon's PID adapter sees its machine.
#[derive(Clone, Debug)]
pub struct SimProcess {
    machine: SimMachine,
    pid: u32,
    clock: SimClock,
    latency: StartLatency,
}

impl SimProcess {
    pub fn new(machine: &SimMachine, pid: u32, clock: &SimClock, latency: StartLatency) -> Self {
        SimProcess {
            machine: machine.clone(),
            pid,
            clock: clock.clone(),
            latency,
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.machine.store()
    }

    fn open(&self, ino: u64) -> SimFile {
        let mut store = self.store();
        store.next_descriptor += 1;
        SimFile(Arc::new(OpenFile {
            id: store.next_descriptor,
            ino,
            store: Arc::clone(&self.machine.store),
        }))
    }
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

impl PidHost for SimProcess {
    type File = SimFile;

    fn pid(&self) -> u32 {
        self.pid
    }

    fn wall_now(&self) -> WallTime {
        self.clock.wall()
    }

    fn monotonic(&self) -> Duration {
        self.clock.now().saturating_since(Moment::ZERO)
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        tokio::time::sleep(duration)
    }

    fn ensure_dir(&self, _dir: &Path) -> Result<(), PidFileError> {
        Ok(())
    }

    async fn create_new(&self, path: &Path) -> io::Result<SimFile> {
        tokio::time::sleep(self.latency.before_open).await;
        let ino = {
            let mut store = self.store();
            if store.paths.contains_key(path) {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            let ino = store.create(Vec::new(), self.clock.wall());
            store.paths.insert(path.to_path_buf(), ino);
            ino
        };
        Ok(self.open(ino))
    }

    fn open_existing(&self, path: &Path) -> io::Result<SimFile> {
        let ino = self
            .store()
            .paths
            .get(path)
            .copied()
            .ok_or_else(not_found)?;
        Ok(self.open(ino))
    }

    async fn try_lock(&self, file: &SimFile) -> io::Result<bool> {
        tokio::time::sleep(self.latency.open_to_lock).await;
        let acquired = {
            let mut store = self.store();
            let inode = store.inode(file.0.ino)?;
            match inode.locked_by {
                None => {
                    inode.locked_by = Some(file.0.id);
                    true
                }
                Some(holder) => holder == file.0.id,
            }
        };
        tokio::time::sleep(self.latency.lock_to_read).await;
        Ok(acquired)
    }

    fn unlock(&self, file: &SimFile) -> io::Result<()> {
        let mut store = self.store();
        let inode = store.inode(file.0.ino)?;
        if inode.locked_by == Some(file.0.id) {
            inode.locked_by = None;
        }
        Ok(())
    }

    fn stat(&self, file: &SimFile) -> io::Result<FileFacts> {
        let modified = self.store().inode(file.0.ino)?.modified;
        Ok(FileFacts {
            dev: DEV,
            ino: file.0.ino,
            is_file: true,
            modified: Some(modified),
        })
    }

    fn stat_path(&self, path: &Path) -> io::Result<Option<(u64, u64)>> {
        Ok(self.store().paths.get(path).map(|ino| (DEV, *ino)))
    }

    fn read_at(&self, file: &SimFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut store = self.store();
        let bytes = &store.inode(file.0.ino)?.bytes;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let n = buf.len().min(bytes.len() - start);
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        Ok(n)
    }

    /// Only the lock holder may write: a write without the lock is the bug
    /// the lifecycle exists to prevent, so it fails the claim.
    async fn write_all(&self, file: &SimFile, bytes: &[u8]) -> io::Result<()> {
        tokio::time::sleep(self.latency.decide_to_write).await;
        let now = self.clock.wall();
        let mut store = self.store();
        let inode = store.inode(file.0.ino)?;
        if inode.locked_by != Some(file.0.id) {
            return Err(io::Error::other(format!(
                "pid {} wrote the PID file without holding its lock",
                self.pid
            )));
        }
        inode.bytes = bytes.to_vec();
        inode.modified = now;
        store.writes.push((self.pid, file.0.ino));
        Ok(())
    }

    fn sync(&self, _file: &SimFile) -> io::Result<()> {
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) {}

    fn duplicate(&self, file: &SimFile) -> io::Result<SimFile> {
        Ok(file.clone())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.store()
            .paths
            .remove(path)
            .map(|_| ())
            .ok_or_else(not_found)
    }

    fn listens_on(&self, _pid: u32, _port: u16) -> Option<bool> {
        None
    }

    fn program(&self) -> (String, Vec<String>) {
        ("warden".to_string(), vec!["warden".into(), "start".into()])
    }
}

/// How one start ended.
#[derive(Debug)]
pub enum StartOutcome {
    /// The file is ours.
    Claimed(Box<Claimed>),
    /// Another instance owns it (the conflict names its pid, if known); the
    /// file was not touched.
    Refused { holder: Option<u32> },
}

/// A won claim.
#[derive(Debug)]
pub struct Claimed {
    /// Holds the lock for the process's life; its release removes the file.
    pub guard: PidGuard<SimProcess>,
    /// Why the file found was stale (`None`: no file, or it named us).
    pub stale: Option<StaleReason>,
}

/// The record a simulated daemon of an earlier boot left (for leftovers).
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

/// `warden start`'s PID claim on the simulated machine: the daemon's own
/// [`claim_with`], as process `me`, its steps taking `latency`, waiting on a
/// busy lock as long as the daemon's default `pid_validation.lock_timeout`.
pub async fn start_daemon(
    machine: &SimMachine,
    me: &ProcessSnapshot,
    port: u16,
    clock: &SimClock,
    latency: StartLatency,
) -> Result<StartOutcome, String> {
    let host = SimProcess::new(machine, me.pid, clock, latency);
    let draft = PidRecordDraft {
        version: "0.0.0-sim".to_string(),
        created_by: "warden-sim".to_string(),
        ..PidRecordDraft::new("localhost", port)
    };
    let lock_timeout = PidValidationConfig::default().lock_timeout;
    let claimed = claim_with(
        &host,
        Path::new(STATE_DIR),
        port,
        draft,
        machine.probe(),
        lock_timeout,
    )
    .await;
    match claimed {
        Ok((guard, stale, pending)) => {
            pending.run().map_err(|e| e.to_string())?;
            Ok(StartOutcome::Claimed(Box::new(Claimed { guard, stale })))
        }
        Err(PidFileError::Conflict { pid, .. }) => Ok(StartOutcome::Refused { holder: pid }),
        Err(error) => Err(format!("pid {}: {error}", me.pid)),
    }
}
