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
//!
//! Everything the claim needs from the machine (files, inodes, locks, the
//! clocks, this process's pid, who listens on a port) goes through
//! [`PidHost`]: [`OsHost`] is the machine the binary runs on, and the
//! simulation (`sim/src/pid.rs`) drives the same [`claim_with`] over an
//! in-memory file system with simulated processes and simulated time. The
//! claim is `async` only so that a simulated host can let time pass between
//! its steps; [`OsHost`] never suspends and the synchronous entry points run
//! it to completion on the calling thread.

use std::fs::{File, OpenOptions, TryLockError};
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::daemon::os::settings::check_state_dir;
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
    StateDir(#[from] crate::daemon::os::settings::StateDirError),
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

/// What [`claim_with`] and the [`PidGuard`] need from the machine: the PID
/// file's inode and lock, the clocks and this process's identity. The
/// methods that return futures are the points where a simulated host lets
/// time pass (and other processes run); [`OsHost`]'s never suspend.
pub trait PidHost: Clone + std::fmt::Debug {
    /// An open descriptor of the PID file. Its lock (`flock`: one per open
    /// file, shared with its duplicates) goes when the last copy is dropped.
    type File: std::fmt::Debug;

    /// This process's pid.
    fn pid(&self) -> u32;
    /// The wall clock: the record's start time and the claim's `now`.
    fn wall_now(&self) -> WallTime;
    /// A monotonic reading (from any origin), for the busy-lock wait.
    fn monotonic(&self) -> Duration;
    /// Waits `duration` (between two looks at a busy lock).
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()>;
    /// Creates the state directory (0700) and checks it can be trusted.
    fn ensure_dir(&self, dir: &Path) -> Result<(), PidFileError>;
    /// Creates `path` (mode 0600), failing with `AlreadyExists` if it is
    /// there; never follows a link.
    fn create_new(&self, path: &Path) -> impl Future<Output = io::Result<Self::File>>;
    /// Opens the existing `path` read-write without truncating or
    /// following a link (`NotFound` when it vanished).
    fn open_existing(&self, path: &Path) -> io::Result<Self::File>;
    /// `flock(LOCK_EX | LOCK_NB)`: `Ok(true)` when this descriptor now holds
    /// the lock, `Ok(false)` when another does.
    fn try_lock(&self, file: &Self::File) -> impl Future<Output = io::Result<bool>>;
    /// Lets the lock go (it goes with the last descriptor anyway).
    fn unlock(&self, file: &Self::File) -> io::Result<()>;
    /// The open file's identity and kind.
    fn stat(&self, file: &Self::File) -> io::Result<FileFacts>;
    /// `(dev, ino)` of what `path` names now, without following a link;
    /// `None` when nothing is there.
    fn stat_path(&self, path: &Path) -> io::Result<Option<(u64, u64)>>;
    /// Reads from `offset` into `buf` (0 at the end of the file).
    fn read_at(&self, file: &Self::File, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Replaces the file's content with `bytes` in place (mode 0600,
    /// truncate, write), under the lock.
    fn write_all(&self, file: &Self::File, bytes: &[u8]) -> impl Future<Output = io::Result<()>>;
    /// Makes the file's content durable.
    fn sync(&self, file: &Self::File) -> io::Result<()>;
    /// Makes a new directory entry durable (best effort).
    fn sync_dir(&self, dir: &Path);
    /// A second descriptor of the same open file.
    fn duplicate(&self, file: &Self::File) -> io::Result<Self::File>;
    /// Unlinks `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Whether process `pid` listens on TCP `port`; `None` when unknown.
    fn listens_on(&self, pid: u32, port: u16) -> Option<bool>;
    /// This program's name and arguments, for a record when the probe
    /// could not see this process.
    fn program(&self) -> (String, Vec<String>);
}

/// What [`PidHost::stat`] tells of an open file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileFacts {
    pub dev: u64,
    pub ino: u64,
    pub is_file: bool,
    pub modified: Option<WallTime>,
}

/// The machine the daemon runs on: the file system, `flock`, the clocks,
/// `/proc`. What the binary claims with. Each step does its (blocking) work
/// when called and returns a resolved future, so a claim on it runs on the
/// calling thread, as it always did: call it from a blocking thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsHost;

/// A future that is already resolved: [`OsHost`]'s steps never wait on
/// anything but the calling thread.
fn done<T>(value: T) -> std::future::Ready<T> {
    std::future::ready(value)
}

impl PidHost for OsHost {
    type File = File;

    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn wall_now(&self) -> WallTime {
        wall_of(SystemTime::now())
    }

    fn monotonic(&self) -> Duration {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        std::thread::sleep(duration);
        done(())
    }

    fn ensure_dir(&self, dir: &Path) -> Result<(), PidFileError> {
        ensure_state_dir(dir)
    }

    fn create_new(&self, path: &Path) -> impl Future<Output = io::Result<File>> {
        done(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(OPEN_FLAGS)
                .open(path),
        )
    }

    fn open_existing(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .truncate(false)
            .custom_flags(OPEN_FLAGS)
            .open(path)
    }

    fn try_lock(&self, file: &File) -> impl Future<Output = io::Result<bool>> {
        done(match file.try_lock() {
            Ok(()) => Ok(true),
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(e)) => Err(e),
        })
    }

    fn unlock(&self, file: &File) -> io::Result<()> {
        file.unlock()
    }

    fn stat(&self, file: &File) -> io::Result<FileFacts> {
        let meta = file.metadata()?;
        Ok(FileFacts {
            dev: meta.dev(),
            ino: meta.ino(),
            is_file: meta.is_file(),
            modified: meta.modified().ok().map(wall_of),
        })
    }

    fn stat_path(&self, path: &Path) -> io::Result<Option<(u64, u64)>> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) => Ok(Some((meta.dev(), meta.ino()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        file.read_at(buf, offset)
    }

    fn write_all(&self, file: &File, bytes: &[u8]) -> impl Future<Output = io::Result<()>> {
        let write = || {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.set_len(0)?;
            file.write_all_at(bytes, 0)
        };
        done(write())
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }

    fn sync_dir(&self, dir: &Path) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }

    fn duplicate(&self, file: &File) -> io::Result<File> {
        file.try_clone()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn listens_on(&self, pid: u32, port: u16) -> Option<bool> {
        crate::daemon::os::port::listens_on(pid, port)
    }

    fn program(&self) -> (String, Vec<String>) {
        let name = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "warden".to_string());
        (name, std::env::args().collect())
    }
}

/// The flags of every open of the PID file: never through a link, never
/// inherited, never blocking on a FIFO planted there.
const OPEN_FLAGS: i32 = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;

/// Runs `future` to its end on this thread. [`OsHost`]'s claim never
/// suspends, so this polls once; it parks only for a future that does.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
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
pub struct PidGuard<H: PidHost = OsHost> {
    host: H,
    file: H::File,
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
        block_on(claim_with(
            &OsHost,
            state_dir,
            port,
            draft,
            probe,
            lock_timeout,
        ))
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
    let claiming = Claiming::new(&OsHost, state_dir, port, probe);
    let lock_timeout = BUSY_SETTLE_INTERVAL * BUSY_SETTLE_POLLS as u32;
    let (guard, stale, pending) =
        block_on(claiming.run(state_dir, draft, Durability::Now, lock_timeout))?;
    pending.run()?;
    Ok((guard, stale))
}

/// The claim of [`PidFile::claim_sync_later`] on any [`PidHost`]: what the
/// binary runs on [`OsHost`] and the simulation on its simulated machine.
pub async fn claim_with<H: PidHost>(
    host: &H,
    state_dir: &Path,
    port: u16,
    draft: PidRecordDraft,
    probe: &dyn ProcessProbe,
    lock_timeout: Duration,
) -> Result<(PidGuard<H>, Option<StaleReason>, PendingSync<H>), PidFileError> {
    Claiming::new(host, state_dir, port, probe)
        .run(state_dir, draft, Durability::Later, lock_timeout)
        .await
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
pub struct PendingSync<H: PidHost = OsHost> {
    host: H,
    file: Option<(H::File, PathBuf)>,
    dir: Option<PathBuf>,
}

impl<H: PidHost> PendingSync<H> {
    /// Flushes the record to disk. Blocks on the disk: run it on a blocking
    /// thread from async code.
    pub fn run(self) -> Result<(), PidFileError> {
        if let Some((file, path)) = &self.file {
            self.host.sync(file).map_err(io_err(path, "sync"))?;
        }
        if let Some(dir) = &self.dir {
            self.host.sync_dir(dir);
        }
        Ok(())
    }
}

/// One claim under way: the host, the path and who claims.
struct Claiming<'a, H: PidHost> {
    host: &'a H,
    probe: &'a dyn ProcessProbe,
    path: PathBuf,
    port: u16,
    me: u32,
    /// This process as the probe sees it (`None` when it cannot).
    own: Option<ProcessSnapshot>,
}

/// A PID file opened and locked (or found busy) at a path that still names it.
struct Opened<F> {
    file: F,
    created: bool,
    dev: u64,
    ino: u64,
}

impl<'a, H: PidHost> Claiming<'a, H> {
    fn new(host: &'a H, state_dir: &Path, port: u16, probe: &'a dyn ProcessProbe) -> Self {
        let me = host.pid();
        let own = match probe.probe(me) {
            ProbeOutcome::Found(s) => Some(s),
            _ => None,
        };
        Claiming {
            host,
            probe,
            path: pid_file_path(state_dir, port),
            port,
            me,
            own,
        }
    }

    async fn run(
        self,
        state_dir: &Path,
        draft: PidRecordDraft,
        durability: Durability,
        lock_timeout: Duration,
    ) -> Result<(PidGuard<H>, Option<StaleReason>, PendingSync<H>), PidFileError> {
        self.host.ensure_dir(state_dir)?;
        for _ in 0..OPEN_ATTEMPTS {
            let Some((opened, lock)) = self.open_and_lock().await? else {
                continue; // vanished, or replaced between open and lock
            };
            let mut facts = match lock {
                LockObservation::Acquired => self.observe(&opened.file, opened.created, lock)?,
                LockObservation::Busy => {
                    match self.settle_busy(&opened.file, lock_timeout).await? {
                        Some(facts) => facts,
                        None => continue, // the file was replaced while we waited
                    }
                }
            };
            if facts.lock == LockObservation::Acquired {
                facts.recorded_listening = recorded_listening_on(self.host, &facts, self.port);
            }
            let lock = facts.lock;
            let serves_port = lock == LockObservation::Acquired
                && facts.recorded_listening.is_some_and(|l| l.listening);
            let mut lifecycle = Lifecycle::new();
            let decision = lifecycle.claim(facts);
            return match decision {
                ClaimDecision::Conflict {
                    pid,
                    holder,
                    process,
                } => Err(PidFileError::Conflict {
                    path: self.path,
                    port: self.port,
                    pid,
                    record: holder,
                    process,
                    serves_port,
                }),
                ClaimDecision::Free | ClaimDecision::Ours | ClaimDecision::Stale(_) => {
                    // Invariant of the lifecycle: only the lock holder wins.
                    debug_assert_eq!(lock, LockObservation::Acquired);
                    let stale = decision.stale_reason().cloned();
                    let dir = opened.created.then(|| state_dir.to_path_buf());
                    let (guard, pending) =
                        self.win(opened, draft, lifecycle, durability, dir).await?;
                    Ok((guard, stale, pending))
                }
            };
        }
        Err(PidFileError::Unstable {
            path: self.path,
            attempts: OPEN_ATTEMPTS,
        })
    }

    /// Opens the file and tries its lock. `None` when the file vanished
    /// before it could be opened, or when the path stopped naming the inode
    /// between the open and the lock (an exiting instance unlinked it): the
    /// lock taken is then on a file nobody else will ever open.
    async fn open_and_lock(
        &self,
    ) -> Result<Option<(Opened<H::File>, LockObservation)>, PidFileError> {
        let Some((file, created)) = open_pid_file(self.host, &self.path).await? else {
            return Ok(None);
        };
        let lock = self.try_lock(&file).await?;
        let Some((dev, ino)) = locked_inode_still_at_path(self.host, &file, &self.path)? else {
            return Ok(None);
        };
        let opened = Opened {
            file,
            created,
            dev,
            ino,
        };
        Ok(Some((opened, lock)))
    }

    async fn try_lock(&self, file: &H::File) -> Result<LockObservation, PidFileError> {
        match self.host.try_lock(file).await {
            Ok(true) => Ok(LockObservation::Acquired),
            Ok(false) => Ok(LockObservation::Busy),
            Err(e) => Err(io_err(&self.path, "lock")(e)),
        }
    }

    /// Writes this process's record into the locked file it won.
    async fn win(
        self,
        opened: Opened<H::File>,
        draft: PidRecordDraft,
        lifecycle: Lifecycle,
        durability: Durability,
        dir: Option<PathBuf>,
    ) -> Result<(PidGuard<H>, PendingSync<H>), PidFileError> {
        let (host, path) = (self.host, self.path);
        let record = build_record(host, &draft, self.port, self.me, self.own.as_ref());
        host.write_all(&opened.file, record.to_json_pretty().as_bytes())
            .await
            .map_err(io_err(&path, "write"))?;
        let file = match durability {
            Durability::Now => {
                host.sync(&opened.file).map_err(io_err(&path, "sync"))?;
                None
            }
            Durability::Later => Some((
                host.duplicate(&opened.file)
                    .map_err(io_err(&path, "duplicate"))?,
                path.clone(),
            )),
        };
        let pending = PendingSync {
            host: host.clone(),
            file,
            dir,
        };
        let guard = PidGuard {
            host: host.clone(),
            file: opened.file,
            path,
            dev: opened.dev,
            ino: opened.ino,
            record,
            lifecycle: Mutex::new(lifecycle),
        };
        Ok((guard, pending))
    }

    fn observe(
        &self,
        file: &H::File,
        created: bool,
        lock: LockObservation,
    ) -> Result<ClaimFacts, PidFileError> {
        let bytes = read_content(self.host, file, &self.path)?;
        let content = if created && bytes.is_empty() {
            PidFileContent::Absent
        } else {
            parse_pid_file(&bytes)
        };
        let recorded_process = content
            .pid()
            .filter(|pid| *pid != self.me)
            .map(|pid| self.probe.probe(pid));
        let file_modified = self.host.stat(file).ok().and_then(|f| f.modified);
        Ok(ClaimFacts {
            lock,
            content,
            recorded_process,
            file_modified,
            // Looked up by the caller, only where it can decide (see below).
            recorded_listening: None,
            me: Claimant {
                pid: self.me,
                process_start_time: self.own.as_ref().map(|s| s.start_time),
            },
            now: self.host.wall_now(),
        })
    }

    /// The lock is busy. If the file names a live process, that is the
    /// holder. Otherwise the holder is a winner that has not written yet,
    /// someone peeking at the lock, or an instance on its way out: wait up
    /// to `lock_timeout` (polling every [`BUSY_SETTLE_INTERVAL`]) for the
    /// lock to free or the file to name its holder. `None` when the path
    /// stopped naming this inode.
    async fn settle_busy(
        &self,
        file: &H::File,
        lock_timeout: Duration,
    ) -> Result<Option<ClaimFacts>, PidFileError> {
        let mut lock = LockObservation::Busy;
        let mut facts = self.observe(file, false, lock)?;
        let deadline = self.host.monotonic() + lock_timeout;
        loop {
            if lock == LockObservation::Acquired
                || names_live_holder(&facts)
                || self.host.monotonic() >= deadline
            {
                break;
            }
            self.host.sleep(BUSY_SETTLE_INTERVAL).await;
            lock = self.try_lock(file).await?;
            if locked_inode_still_at_path(self.host, file, &self.path)?.is_none() {
                return Ok(None);
            }
            facts = self.observe(file, false, lock)?;
        }
        Ok(Some(facts))
    }
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
    let content = parse_pid_file(&read_content(&OsHost, &file, &path)?);
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

impl<H: PidHost> PidGuard<H> {
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
        let still = locked_inode_still_at_path(&self.host, &self.file, &self.path)?.is_some();
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
        let host = &self.host;
        let still_ours = locked_inode_still_at_path(host, &self.file, &self.path)?.is_some()
            && parse_pid_file(&read_content(host, &self.file, &self.path)?).pid()
                == Some(self.record.pid);
        let removed = match lifecycle.release(still_ours) {
            ReleaseAction::RemoveFile => match host.remove(&self.path) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(io_err(&self.path, "remove")(e)),
            },
            ReleaseAction::LeaveFileUntouched => false,
        };
        // The lock goes with the descriptor anyway; unlocking now lets the
        // next instance start before this process has fully exited.
        let _ = host.unlock(&self.file);
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
async fn open_pid_file<H: PidHost>(
    host: &H,
    path: &Path,
) -> Result<Option<(H::File, bool)>, PidFileError> {
    let (file, created) = match host.create_new(path).await {
        Ok(f) => (f, true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match host.open_existing(path) {
            Ok(f) => (f, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(map_open_error(path, e)),
        },
        Err(e) => return Err(map_open_error(path, e)),
    };
    if !host.stat(&file).map_err(io_err(path, "stat"))?.is_file {
        return Err(PidFileError::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    Ok(Some((file, created)))
}

/// `Some((dev, ino))` when `path` (not followed) names the inode open as `file`.
fn locked_inode_still_at_path<H: PidHost>(
    host: &H,
    file: &H::File,
    path: &Path,
) -> Result<Option<(u64, u64)>, PidFileError> {
    let ours = host.stat(file).map_err(io_err(path, "stat"))?;
    match host.stat_path(path).map_err(io_err(path, "stat"))? {
        Some(now) if now == (ours.dev, ours.ino) => Ok(Some(now)),
        _ => Ok(None),
    }
}

/// Up to `MAX_PID_FILE_BYTES + 1` bytes from the start of the file (one more
/// than allowed, so that an oversized file parses as corrupt).
fn read_content<H: PidHost>(
    host: &H,
    file: &H::File,
    path: &Path,
) -> Result<Vec<u8>, PidFileError> {
    let mut buf = vec![0u8; MAX_PID_FILE_BYTES + 1];
    let mut filled = 0;
    while filled < buf.len() {
        match host.read_at(file, &mut buf[filled..], filled as u64) {
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
    recorded_listening_on(&OsHost, facts, port)
}

fn recorded_listening_on<H: PidHost>(
    host: &H,
    facts: &ClaimFacts,
    port: u16,
) -> Option<PortListening> {
    let Some(ProbeOutcome::Found(process)) = &facts.recorded_process else {
        return None;
    };
    if process.status.has_exited() || !identity_unrecorded(&facts.content) {
        return None;
    }
    host.listens_on(process.pid, port)
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

fn build_record<H: PidHost>(
    host: &H,
    draft: &PidRecordDraft,
    port: u16,
    me: u32,
    own: Option<&ProcessSnapshot>,
) -> PidRecord {
    let (program, args) = match own {
        Some(s) if !s.cmdline.is_empty() => (None, s.cmdline.clone()),
        _ => {
            let (name, args) = host.program();
            (Some(name), args)
        }
    };
    let process_info = match own {
        Some(s) => ProcessInfo::from_snapshot(s),
        None => ProcessInfo {
            name: program.unwrap_or_else(|| "warden".to_string()),
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
        start_time: host.wall_now(),
        process_start_time: own.map(|s| s.start_time),
        version: draft.version.clone(),
        process_info,
        lock_acquired: true,
        created_by: draft.created_by.clone(),
        cmdline: args,
        invocation: draft.invocation.clone().map(Box::new),
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
