//! The PID file on disk: opening, locking, reading, writing and removing
//! `socketio-server-<port>.pid`, around the pure lifecycle of
//! [`crate::pidfile`].
//!
//! The order of operations is the point of this module:
//! 1. open with `O_NOFOLLOW` (a symlink is refused) and without truncating,
//!    creating it mode 0600 if absent;
//! 2. `try_lock` (flock, exclusive, non-blocking) before anything is written;
//! 3. check that the path still names the inode we locked (an exiting
//!    instance may have unlinked it between our open and our lock), else
//!    retry a bounded number of times;
//! 4. read the old content, probe the pid it names, let the lifecycle decide;
//! 5. on a win, truncate and write our record in place, fsync (or hand the
//!    fsync back as a [`PendingSync`], see [`PidFile::claim_sync_later`]); on a
//!    conflict, touch nothing (a failed start never modifies another
//!    instance's file).
//!
//! The [`PidGuard`] keeps the locked descriptor for the daemon's lifetime.
//! Dropping it without [`PidGuard::release`] keeps the file (as a crash
//! would); the next start classifies it stale. This module does not decide
//! anything itself and does not log: callers log the returned stale reason.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::daemon::settings::check_state_dir;
use crate::pidfile::{
    ClaimDecision, ClaimFacts, Claimant, Invocation, Lifecycle, LockObservation,
    MAX_PID_FILE_BYTES, PidFileContent, PidRecord, PortListening, ProcessInfo, RecheckOutcome,
    ReleaseAction, StaleReason, identity_unrecorded, names_live_holder, parse_pid_file,
};
use crate::probe::{ProbeOutcome, ProcessProbe, ProcessSnapshot, ProcessStatus};
use crate::time::WallTime;

/// Opens retried when the path is unlinked or replaced between open and lock.
pub const OPEN_ATTEMPTS: usize = 8;
/// When the lock is busy but the file does not (yet) name a live holder (the
/// winner has locked but not written, or a `status` peek holds the lock for a
/// moment), re-read and re-try this many times before reporting the conflict
/// ([`claim`]'s wait; the daemon waits `pid_validation.lock_timeout`).
pub const BUSY_SETTLE_POLLS: usize = 100;
pub const BUSY_SETTLE_INTERVAL: Duration = Duration::from_millis(10);

/// The PID file of `port` in `state_dir`.
pub fn pid_file_path(state_dir: &Path, port: u16) -> PathBuf {
    state_dir.join(format!("socketio-server-{port}.pid"))
}

/// Errors of the PID file adapter. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error(
        "refusing to use the PID file {path}: it is a symbolic link, and warden never follows links there. \
         Remove the link (`rm {path}`) or choose another --state-dir."
    )]
    Symlink { path: PathBuf },
    #[error(transparent)]
    StateDir(#[from] crate::daemon::settings::StateDirError),
    #[error(
        "the PID file path {path} is not a regular file. Move it away or choose another --state-dir."
    )]
    NotRegularFile { path: PathBuf },
    #[error(
        "another warden instance ({}) holds the PID file {path} for port {port}. \
         Check it with `warden status --port {port}`, stop it with `warden stop --port {port}`, \
         or start on another port with --port.",
        pid.map(|p| format!("pid {p}")).unwrap_or_else(|| "pid unknown".to_string())
    )]
    Conflict {
        path: PathBuf,
        port: u16,
        pid: Option<u32>,
        record: Option<Box<PidRecord>>,
        process: Option<Box<ProcessSnapshot>>,
        /// The lock was free and the recorded process listens on `port`
        /// (what decided a bare-pid file: that program holds the port).
        serves_port: bool,
    },
    #[error(
        "cannot {op} {path}: {source}. Check that the state directory exists and is writable by this user."
    )]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "the PID file {path} was replaced {attempts} times while warden tried to lock it; \
         another program keeps recreating it. Find it with `lsof {path}` and retry."
    )]
    Unstable { path: PathBuf, attempts: usize },
    #[error(
        "the PID file {path} was removed or replaced by another program while this daemon held it; \
         a second instance may start on this port. Stop the other instance or restart this one."
    )]
    Lost { path: PathBuf },
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> PidFileError + 'a {
    move |source| PidFileError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// What the caller knows about the daemon; the adapter adds the process facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidRecordDraft {
    pub server_id: String,
    pub host: String,
    pub version: String,
    pub created_by: String,
    /// How the daemon was started (for `warden restart`).
    pub invocation: Option<Invocation>,
}

impl PidRecordDraft {
    /// The seed's defaults: server id `socketio-server-<port>`, this crate's
    /// version, created by `warden`.
    pub fn new(host: &str, port: u16) -> Self {
        PidRecordDraft {
            server_id: PidRecord::server_id_for_port(port),
            host: host.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            created_by: "warden".to_string(),
            invocation: None,
        }
    }
}

/// The claimed, locked PID file. Keep it alive as long as the daemon runs.
#[derive(Debug)]
pub struct PidGuard {
    file: File,
    path: PathBuf,
    dev: u64,
    ino: u64,
    record: PidRecord,
    lifecycle: Mutex<Lifecycle>,
}

/// Namespace for the adapter's entry points: [`PidFile::claim`] and
/// [`PidFile::read`].
#[derive(Debug)]
pub struct PidFile;

impl PidFile {
    /// See [`claim`].
    pub fn claim(
        state_dir: &Path,
        port: u16,
        draft: PidRecordDraft,
        probe: &dyn ProcessProbe,
    ) -> Result<(PidGuard, Option<StaleReason>), PidFileError> {
        claim(state_dir, port, draft, probe)
    }

    /// [`claim`] without the fsyncs: the record is written (every other
    /// process reads it at once) and the returned [`PendingSync`] makes it
    /// durable when run. The daemon starts serving first and syncs right
    /// after, which takes the disk's flush (7–20 ms on a busy machine) off
    /// the start. Until it runs, a power loss can leave an empty or partial
    /// file, which the next start classifies as stale (corrupt).
    /// `lock_timeout` (`pid_validation.lock_timeout`) bounds the wait on a
    /// busy lock whose file does not yet name a live holder.
    pub fn claim_sync_later(
        state_dir: &Path,
        port: u16,
        draft: PidRecordDraft,
        probe: &dyn ProcessProbe,
        lock_timeout: Duration,
    ) -> Result<(PidGuard, Option<StaleReason>, PendingSync), PidFileError> {
        claim_inner(
            state_dir,
            port,
            draft,
            probe,
            Durability::Later,
            lock_timeout,
        )
    }

    /// See [`read_pid_file_view`].
    pub fn view(state_dir: &Path, port: u16) -> Result<Option<PidFileView>, PidFileError> {
        read_pid_file_view(state_dir, port)
    }

    /// See [`read_pid_file`].
    pub fn read(
        state_dir: &Path,
        port: u16,
    ) -> Result<Option<(PidFileContent, bool)>, PidFileError> {
        read_pid_file(state_dir, port)
    }

    /// See [`pid_file_path`].
    pub fn path(state_dir: &Path, port: u16) -> PathBuf {
        pid_file_path(state_dir, port)
    }
}

/// Claims the PID file of `port` for the current process.
///
/// Returns the guard and, when an earlier instance's file was taken over, why
/// it was stale (the caller logs it). Fails with [`PidFileError::Conflict`]
/// when a live instance owns the file, leaving it byte-for-byte intact.
pub fn claim(
    state_dir: &Path,
    port: u16,
    draft: PidRecordDraft,
    probe: &dyn ProcessProbe,
) -> Result<(PidGuard, Option<StaleReason>), PidFileError> {
    let (guard, stale, pending) = claim_inner(
        state_dir,
        port,
        draft,
        probe,
        Durability::Now,
        BUSY_SETTLE_INTERVAL * BUSY_SETTLE_POLLS as u32,
    )?;
    pending.run()?;
    Ok((guard, stale))
}

/// When a claim makes its record durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    Now,
    Later,
}

/// The fsyncs a [`PidFile::claim_sync_later`] left to do: the file (a second
/// descriptor of the locked one) and, when the file was created, its
/// directory. Empty after a claim that synced already.
#[derive(Debug)]
pub struct PendingSync {
    file: Option<(File, PathBuf)>,
    dir: Option<PathBuf>,
}

impl PendingSync {
    /// Flushes the record to disk. Blocks on the disk: run it on a blocking
    /// thread from async code.
    pub fn run(self) -> Result<(), PidFileError> {
        if let Some((file, path)) = self.file {
            file.sync_all().map_err(io_err(&path, "sync"))?;
        }
        if let Some(dir) = self.dir {
            sync_dir(&dir);
        }
        Ok(())
    }
}

fn claim_inner(
    state_dir: &Path,
    port: u16,
    draft: PidRecordDraft,
    probe: &dyn ProcessProbe,
    durability: Durability,
    lock_timeout: Duration,
) -> Result<(PidGuard, Option<StaleReason>, PendingSync), PidFileError> {
    ensure_state_dir(state_dir)?;
    let path = pid_file_path(state_dir, port);
    let me = std::process::id();
    let own = match probe.probe(me) {
        ProbeOutcome::Found(s) => Some(s),
        _ => None,
    };
    for _ in 0..OPEN_ATTEMPTS {
        let Some((file, created)) = open_pid_file(&path)? else {
            continue;
        };
        let lock = match file.try_lock() {
            Ok(()) => LockObservation::Acquired,
            Err(TryLockError::WouldBlock) => LockObservation::Busy,
            Err(TryLockError::Error(e)) => return Err(io_err(&path, "lock")(e)),
        };
        let Some((dev, ino)) = locked_inode_still_at_path(&file, &path)? else {
            continue; // unlinked or replaced between open and lock: open again
        };
        let mut lifecycle = Lifecycle::new();
        let mut facts = match lock {
            LockObservation::Acquired => {
                observe(&file, &path, created, lock, me, own.as_ref(), probe)?
            }
            LockObservation::Busy => {
                let waiting = (me, own.as_ref(), lock_timeout);
                match settle_busy(&file, &path, waiting, probe)? {
                    Some(facts) => facts,
                    None => continue, // the file was replaced while we waited
                }
            }
        };
        if facts.lock == LockObservation::Acquired {
            facts.recorded_listening = recorded_listening(&facts, port);
        }
        let lock = facts.lock;
        let serves_port = lock == LockObservation::Acquired
            && facts.recorded_listening.is_some_and(|l| l.listening);
        let decision = lifecycle.claim(facts);
        match decision {
            ClaimDecision::Conflict {
                pid,
                holder,
                process,
            } => {
                return Err(PidFileError::Conflict {
                    path,
                    port,
                    pid,
                    record: holder,
                    process,
                    serves_port,
                });
            }
            ClaimDecision::Free | ClaimDecision::Ours | ClaimDecision::Stale(_) => {
                // Invariant of the lifecycle: only the lock holder wins.
                debug_assert_eq!(lock, LockObservation::Acquired);
                let record = build_record(&draft, port, me, own.as_ref());
                write_record(&file, &path, &record)?;
                let dir = created.then(|| state_dir.to_path_buf());
                let pending = match durability {
                    Durability::Now => {
                        file.sync_all().map_err(io_err(&path, "sync"))?;
                        PendingSync { file: None, dir }
                    }
                    Durability::Later => PendingSync {
                        file: Some((
                            file.try_clone().map_err(io_err(&path, "duplicate"))?,
                            path.clone(),
                        )),
                        dir,
                    },
                };
                let stale = decision.stale_reason().cloned();
                return Ok((
                    PidGuard {
                        file,
                        path,
                        dev,
                        ino,
                        record,
                        lifecycle: Mutex::new(lifecycle),
                    },
                    stale,
                    pending,
                ));
            }
        }
    }
    Err(PidFileError::Unstable {
        path,
        attempts: OPEN_ATTEMPTS,
    })
}

/// Reads the PID file of `port` without claiming it, for `warden status` and
/// `warden stop`: its content and whether a live process holds its lock.
/// `Ok(None)` when there is no file.
pub fn read_pid_file(
    state_dir: &Path,
    port: u16,
) -> Result<Option<(PidFileContent, bool)>, PidFileError> {
    Ok(read_pid_file_view(state_dir, port)?.map(|v| (v.content, v.held)))
}

/// Which processes hold a PID file's lock, as the kernel says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockHolders {
    /// The pids `/proc/locks` lists for the file's exclusive flock: the
    /// process that took the lock (its pid at `flock` time). Empty when it
    /// lists none (the lock may still be held: see [`PidFileView::held`]).
    Known(Vec<u32>),
    /// No `/proc/locks` (not Linux, or /proc not mounted).
    Unknown,
}

/// A PID file as [`read_pid_file_view`] found it, without claiming it.
#[derive(Clone, Debug, PartialEq)]
pub struct PidFileView {
    pub content: PidFileContent,
    /// Whether some process holds the lock.
    pub held: bool,
    /// Who holds it, where the kernel tells.
    pub holders: LockHolders,
}

/// [`read_pid_file`], with the lock holders' pids: `warden stop` signals a
/// recorded pid only when the kernel names it as the holder.
pub fn read_pid_file_view(
    state_dir: &Path,
    port: u16,
) -> Result<Option<PidFileView>, PidFileError> {
    let path = pid_file_path(state_dir, port);
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(map_open_error(&path, e)),
    };
    let meta = file.metadata().map_err(io_err(&path, "stat"))?;
    if !meta.is_file() {
        return Err(PidFileError::NotRegularFile { path });
    }
    let content = parse_pid_file(&read_content(&file, &path)?);
    let holders = match flock_holders_from_proc_locks(meta.dev(), meta.ino()) {
        Some(pids) => LockHolders::Known(pids),
        None => LockHolders::Unknown,
    };
    let held = match &holders {
        LockHolders::Known(pids) if !pids.is_empty() => true,
        // Not listed (or no /proc/locks; some file systems report another
        // device there): test the lock by taking it for an instant.
        _ => match file.try_lock() {
            Ok(()) => {
                file.unlock().map_err(io_err(&path, "unlock"))?;
                false
            }
            Err(TryLockError::WouldBlock) => true,
            Err(TryLockError::Error(e)) => return Err(io_err(&path, "test the lock of")(e)),
        },
    };
    Ok(Some(PidFileView {
        content,
        held,
        holders,
    }))
}

impl PidGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record this daemon wrote.
    pub fn record(&self) -> &PidRecord {
        &self.record
    }

    /// The Postgres recheck, for the health loop: the path must still name
    /// the inode we locked. Once lost, always lost.
    pub fn verify(&self) -> Result<(), PidFileError> {
        let still = locked_inode_still_at_path(&self.file, &self.path)?.is_some();
        match self.lifecycle().recheck(still) {
            RecheckOutcome::StillHeld => Ok(()),
            RecheckOutcome::Lost | RecheckOutcome::NotHeld => Err(PidFileError::Lost {
                path: self.path.clone(),
            }),
        }
    }

    /// Clean exit: removes the file if it is still ours (same inode, our pid),
    /// then lets the lock go. Idempotent. Returns whether the file was removed.
    pub fn release(&self) -> Result<bool, PidFileError> {
        let mut lifecycle = self.lifecycle();
        let still_ours = locked_inode_still_at_path(&self.file, &self.path)?.is_some()
            && parse_pid_file(&read_content(&self.file, &self.path)?).pid()
                == Some(self.record.pid);
        let removed = match lifecycle.release(still_ours) {
            ReleaseAction::RemoveFile => match std::fs::remove_file(&self.path) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(io_err(&self.path, "remove")(e)),
            },
            ReleaseAction::LeaveFileUntouched => false,
        };
        // The lock goes with the descriptor anyway; unlocking now lets the
        // next instance start before this process has fully exited.
        let _ = self.file.unlock();
        Ok(removed)
    }

    fn lifecycle(&self) -> std::sync::MutexGuard<'_, Lifecycle> {
        // The lifecycle is a small state value; a panic while it was locked
        // cannot leave it half-updated (statig transitions are not unwound).
        self.lifecycle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (device, inode) of the locked file.
    pub fn locked_inode(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// Creates the state directory (0700, as are the parents it creates) and
/// checks that it can be trusted ([`check_state_dir`]): also when it existed,
/// or was created by someone else since the configuration was loaded.
fn ensure_state_dir(dir: &Path) -> Result<(), PidFileError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir, "create the state directory"))?;
    check_state_dir(dir)?;
    Ok(())
}

fn map_open_error(path: &Path, e: io::Error) -> PidFileError {
    match e.raw_os_error() {
        Some(libc::ELOOP) => PidFileError::Symlink {
            path: path.to_path_buf(),
        },
        Some(libc::EISDIR) => PidFileError::NotRegularFile {
            path: path.to_path_buf(),
        },
        _ => io_err(path, "open")(e),
    }
}

/// Opens (creating if absent, mode 0600) without following links or
/// truncating. `Ok(None)` when the file vanished between two attempts.
fn open_pid_file(path: &Path) -> Result<Option<(File, bool)>, PidFileError> {
    let flags = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(flags)
        .open(path);
    let (file, created) = match created {
        Ok(f) => (f, true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            match OpenOptions::new()
                .read(true)
                .write(true)
                .truncate(false)
                .custom_flags(flags)
                .open(path)
            {
                Ok(f) => (f, false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(map_open_error(path, e)),
            }
        }
        Err(e) => return Err(map_open_error(path, e)),
    };
    let meta = file.metadata().map_err(io_err(path, "stat"))?;
    if !meta.is_file() {
        return Err(PidFileError::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    Ok(Some((file, created)))
}

/// `Some((dev, ino))` when `path` (not followed) names the inode open as `file`.
fn locked_inode_still_at_path(
    file: &File,
    path: &Path,
) -> Result<Option<(u64, u64)>, PidFileError> {
    let ours = file.metadata().map_err(io_err(path, "stat"))?;
    match std::fs::symlink_metadata(path) {
        Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {
            Ok(Some((ours.dev(), ours.ino())))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, "stat")(e)),
    }
}

/// Up to `MAX_PID_FILE_BYTES + 1` bytes from the start of the file (one more
/// than allowed, so that an oversized file parses as corrupt).
fn read_content(file: &File, path: &Path) -> Result<Vec<u8>, PidFileError> {
    let mut buf = vec![0u8; MAX_PID_FILE_BYTES + 1];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(path, "read")(e)),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Whether the live process a file names listens on `port`: looked up (a
/// scan of /proc) only for a file that records no identity and names a live
/// process, the one case where the lifecycle uses it.
pub fn recorded_listening(facts: &ClaimFacts, port: u16) -> Option<PortListening> {
    let Some(ProbeOutcome::Found(process)) = &facts.recorded_process else {
        return None;
    };
    if process.status.has_exited() || !identity_unrecorded(&facts.content) {
        return None;
    }
    crate::daemon::port::listens_on(process.pid, port)
        .map(|listening| PortListening { port, listening })
}

/// The probe `start` claims with when `pid_validation.enhanced` or
/// `pid_validation.use_psutil` is false: lock-only validation. Only this
/// process is inspected (for its own record); any other pid is not, so the
/// lock alone decides: a busy lock is a conflict, a free one a stale file.
/// `stop` and `status` always inspect (a pid is only ever signalled once
/// verified).
pub struct LockOnly<'a>(pub &'a dyn ProcessProbe);

/// Why [`LockOnly`] did not inspect a process (shown in the stale reason).
pub const LOCK_ONLY_REASON: &str =
    "lock-only validation: pid_validation.enhanced or pid_validation.use_psutil is false";

impl ProcessProbe for LockOnly<'_> {
    fn probe(&self, pid: u32) -> ProbeOutcome {
        if pid == std::process::id() {
            self.0.probe(pid)
        } else {
            ProbeOutcome::Unavailable {
                reason: LOCK_ONLY_REASON.to_string(),
            }
        }
    }
}

fn wall_of(t: SystemTime) -> WallTime {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    WallTime::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

fn observe(
    file: &File,
    path: &Path,
    created: bool,
    lock: LockObservation,
    me: u32,
    own: Option<&ProcessSnapshot>,
    probe: &dyn ProcessProbe,
) -> Result<ClaimFacts, PidFileError> {
    let bytes = read_content(file, path)?;
    let content = if created && bytes.is_empty() {
        PidFileContent::Absent
    } else {
        parse_pid_file(&bytes)
    };
    let recorded_process = content
        .pid()
        .filter(|pid| *pid != me)
        .map(|pid| probe.probe(pid));
    let file_modified = file.metadata().and_then(|m| m.modified()).ok().map(wall_of);
    Ok(ClaimFacts {
        lock,
        content,
        recorded_process,
        file_modified,
        // Looked up by the caller, only where it can decide (see below).
        recorded_listening: None,
        me: Claimant {
            pid: me,
            process_start_time: own.map(|s| s.start_time),
        },
        now: wall_of(SystemTime::now()),
    })
}

/// The lock is busy. If the file names a live process, that is the holder.
/// Otherwise the holder is a winner that has not written yet, someone
/// peeking at the lock, or an instance on its way out: wait up to
/// `lock_timeout` (polling every [`BUSY_SETTLE_INTERVAL`]) for the lock to
/// free or the file to name its holder. `None` when the path stopped naming
/// this inode.
fn settle_busy(
    file: &File,
    path: &Path,
    (me, own, lock_timeout): (u32, Option<&ProcessSnapshot>, Duration),
    probe: &dyn ProcessProbe,
) -> Result<Option<ClaimFacts>, PidFileError> {
    let mut lock = LockObservation::Busy;
    let mut facts = observe(file, path, false, lock, me, own, probe)?;
    let deadline = std::time::Instant::now() + lock_timeout;
    loop {
        if lock == LockObservation::Acquired
            || names_live_holder(&facts)
            || std::time::Instant::now() >= deadline
        {
            break;
        }
        std::thread::sleep(BUSY_SETTLE_INTERVAL);
        lock = match file.try_lock() {
            Ok(()) => LockObservation::Acquired,
            Err(TryLockError::WouldBlock) => LockObservation::Busy,
            Err(TryLockError::Error(e)) => return Err(io_err(path, "lock")(e)),
        };
        if locked_inode_still_at_path(file, path)?.is_none() {
            return Ok(None);
        }
        facts = observe(file, path, false, lock, me, own, probe)?;
    }
    Ok(Some(facts))
}

fn build_record(
    draft: &PidRecordDraft,
    port: u16,
    me: u32,
    own: Option<&ProcessSnapshot>,
) -> PidRecord {
    let process_info = match own {
        Some(s) => ProcessInfo::from_snapshot(s),
        None => ProcessInfo {
            name: std::env::current_exe()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "warden".to_string()),
            status: ProcessStatus::Running,
            cpu_percent: 0.0,
            memory_mb: 0.0,
        },
    };
    PidRecord {
        pid: me,
        server_id: draft.server_id.clone(),
        port,
        host: draft.host.clone(),
        start_time: wall_of(SystemTime::now()),
        process_start_time: own.map(|s| s.start_time),
        version: draft.version.clone(),
        process_info,
        lock_acquired: true,
        created_by: draft.created_by.clone(),
        cmdline: match own {
            Some(s) if !s.cmdline.is_empty() => s.cmdline.clone(),
            _ => std::env::args().collect(),
        },
        invocation: draft.invocation.clone().map(Box::new),
    }
}

/// Truncate and write in place, under the lock (the caller fsyncs).
fn write_record(file: &File, path: &Path, record: &PidRecord) -> Result<(), PidFileError> {
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(path, "set permissions of"))?;
    file.set_len(0).map_err(io_err(path, "truncate"))?;
    file.write_all_at(record.to_json_pretty().as_bytes(), 0)
        .map_err(io_err(path, "write"))
}

/// Best effort: make the new directory entry durable.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Linux: the pids `/proc/locks` lists as holding an exclusive flock on
/// (dev, ino). This answers without taking the lock, so `warden status` never
/// makes a concurrent start see a busy lock. `None` when /proc/locks is
/// unreadable.
fn flock_holders_from_proc_locks(dev: u64, ino: u64) -> Option<Vec<u32>> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    Some(flock_holders(&text, dev, ino))
}

/// The holders of an exclusive flock on (dev, ino) in `/proc/locks` text.
fn flock_holders(proc_locks: &str, dev: u64, ino: u64) -> Vec<u32> {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let wanted = format!("{major:02x}:{minor:02x}:{ino}");
    proc_locks
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; blocked
            // waiters have "->" in the second column and hold nothing.
            (cols.get(1) == Some(&"FLOCK")
                && cols.get(3) == Some(&"WRITE")
                && cols.get(5) == Some(&wanted.as_str()))
            .then(|| cols.get(4)?.parse().ok())
            .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_names_the_flock_holder() {
        let text = "1: FLOCK  ADVISORY  WRITE 16509 fe:00:10010704 0 EOF\n\
                    2: FLOCK  ADVISORY  READ 16141 fe:00:10010704 0 EOF\n\
                    3: -> FLOCK  ADVISORY  WRITE 777 fe:00:10010704 0 EOF\n\
                    4: POSIX  ADVISORY  WRITE 999 fe:00:10010704 0 EOF\n\
                    5: FLOCK  ADVISORY  WRITE 42 fe:00:10010705 0 EOF\n";
        let dev = 0xfe << 8; // major fe, minor 00
        assert_eq!(flock_holders(text, dev, 10_010_704), vec![16509]);
        assert_eq!(flock_holders(text, dev, 1), Vec::<u32>::new());
    }
}
