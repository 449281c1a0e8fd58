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
//! The daemon's own pid takes a shorter path on Linux (the health checker
//! probes it every cycle): after one sysinfo sample has given the identity
//! (name, command line, executable, start time, none of which change), each
//! probe reads `/proc/self/stat` once (state, threads, VMS, RSS), lists
//! `/proc/self/fd` and asks `getrusage` for CPU time: about a third of the
//! sysinfo refresh, which also reads `statm`, `cmdline`, the `exe` link and
//! `status` (see BENCHMARKS.md, "check cycle"). Those reads are answered from
//! memory, so the probe says so ([`ProcessProbe::probes_in_memory`]) and the
//! health monitor calls it in place rather than on a blocking thread.
//!
//! This module does not decide anything about the processes it sees.

use std::sync::Mutex;
use std::time::Instant;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

use crate::probe::{ProbeOutcome, ProcessProbe, ProcessSnapshot, ProcessStatus};
use crate::time::WallTime;

/// A [`ProcessProbe`] backed by sysinfo.
pub struct SysinfoProbe {
    system: Mutex<Option<System>>,
    unavailable: Option<String>,
    /// The fast path's state for this process (see the module doc).
    own: Mutex<Option<OwnProcess>>,
}

/// What the fast path keeps between probes of the daemon's own pid.
struct OwnProcess {
    /// Identity fields from the first (sysinfo) sample; measurements in it
    /// are overwritten by every probe.
    snapshot: ProcessSnapshot,
    /// CPU seconds (user + system) and when they were read, for `cpu_percent`.
    cpu_seconds: f64,
    read_at: Instant,
    /// `/proc/self/stat`, kept open and read again from offset 0 each time
    /// (procfs regenerates it), which spares the path lookup.
    stat_file: Option<std::fs::File>,
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
                own: Mutex::new(None),
            },
            Err(e) => SysinfoProbe {
                system: Mutex::new(None),
                unavailable: Some(format!("sysinfo cannot inspect processes here: {e}")),
                own: Mutex::new(None),
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
        if cfg!(target_os = "linux") && pid == std::process::id() {
            return self.probe_own(pid);
        }
        self.probe_sysinfo(pid)
    }

    /// The own pid after its first sample: `/proc/self` and `getrusage`,
    /// which procfs answers from memory (see the module doc).
    fn probes_in_memory(&self, pid: u32) -> bool {
        cfg!(target_os = "linux")
            && pid == std::process::id()
            && self
                .own
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|own| own.stat_file.is_some())
    }
}

impl SysinfoProbe {
    /// The daemon's own pid: sysinfo once for the identity, then `/proc/self`.
    fn probe_own(&self, pid: u32) -> ProbeOutcome {
        // Only a cache of the previous sample: a panic while it was locked
        // leaves nothing the next probe does not rewrite.
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (Some(state), Some(cpu_seconds)) = (own.as_mut(), self_cpu_seconds()) else {
            let outcome = self.probe_sysinfo(pid);
            if let (ProbeOutcome::Found(snapshot), Some(cpu_seconds)) =
                (&outcome, self_cpu_seconds())
            {
                *own = Some(OwnProcess {
                    snapshot: snapshot.clone(),
                    cpu_seconds,
                    read_at: now,
                    stat_file: std::fs::File::open("/proc/self/stat").ok(),
                });
            }
            return outcome;
        };
        let Some(stat) = read_own_stat(&mut state.stat_file) else {
            // /proc/self unreadable (hidepid, no procfs): sysinfo decides.
            return self.probe_sysinfo(pid);
        };
        let elapsed = now.duration_since(state.read_at).as_secs_f64();
        let cpu_percent = if elapsed > 0.0 {
            ((cpu_seconds - state.cpu_seconds).max(0.0) / elapsed * 100.0) as f32
        } else {
            0.0
        };
        state.cpu_seconds = cpu_seconds;
        state.read_at = now;
        let snapshot = &mut state.snapshot;
        snapshot.status = stat.status;
        snapshot.cpu_percent = cpu_percent;
        snapshot.memory_rss_bytes = stat.rss_bytes;
        snapshot.memory_virtual_bytes = stat.virtual_bytes;
        snapshot.threads = Some(stat.threads);
        snapshot.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64);
        ProbeOutcome::Found(snapshot.clone())
    }

    fn probe_sysinfo(&self, pid: u32) -> ProbeOutcome {
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

/// What one read of `/proc/self/stat` gives.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OwnStat {
    status: ProcessStatus,
    threads: u64,
    virtual_bytes: u64,
    rss_bytes: u64,
}

fn read_own_stat(file: &mut Option<std::fs::File>) -> Option<OwnStat> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; STAT_BYTES];
    let read = file.as_ref().map(|f| f.read_at(&mut buf, 0));
    let text = match read {
        // A full buffer might be a cut line: fall back to a fresh read.
        Some(Ok(n)) if n > 0 && n < buf.len() => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => {
            *file = None;
            std::fs::read_to_string("/proc/self/stat").ok()?
        }
    };
    parse_stat(&text, page_size())
}

/// `/proc/self/stat` is one line of 52 numbers and a name of at most 64
/// bytes: well under this.
const STAT_BYTES: usize = 1024;

/// Parses `/proc/<pid>/stat` (see proc(5)): the fields after the command
/// name's closing parenthesis, which may itself contain spaces and ")".
fn parse_stat(text: &str, page_bytes: u64) -> Option<OwnStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_ascii_whitespace().collect();
    // fields[0] is field 3 of proc(5) (state); field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let status = match fields.first()?.as_bytes().first()? {
        b'R' => ProcessStatus::Running,
        b'S' | b'D' | b'W' => ProcessStatus::Sleeping,
        b'I' => ProcessStatus::Idle,
        b'T' | b't' => ProcessStatus::Stopped,
        b'Z' => ProcessStatus::Zombie,
        b'X' | b'x' => ProcessStatus::Dead,
        _ => ProcessStatus::Other,
    };
    Some(OwnStat {
        status,
        threads: field(20)?,
        virtual_bytes: field(23)?,
        rss_bytes: field(24)?.saturating_mul(page_bytes),
    })
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the running system; no pointers.
    let bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(bytes).ok().filter(|&b| b > 0).unwrap_or(4096)
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

/// User + system CPU time of this process, from `getrusage(RUSAGE_SELF)`.
pub fn self_cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete `rusage` into the pointer it is
    // given; the pointer is valid and properly aligned for the whole call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: rc == 0 means the kernel filled the struct (it was zeroed before anyway).
    let usage = unsafe { usage.assume_init() };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Some(secs(usage.ru_utime) + secs(usage.ru_stime))
}

/// The soft `RLIMIT_NOFILE` of this process.
pub fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into a valid, aligned pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
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
    fn the_own_pid_fast_path_agrees_with_sysinfo() {
        let probe = SysinfoProbe::new();
        let me = std::process::id();
        assert!(!probe.probes_in_memory(me), "the first sample is sysinfo's");
        let first = probe.probe_self().expect("first sample (sysinfo)");
        assert!(probe.probes_in_memory(me), "then /proc/self");
        assert!(!probe.probes_in_memory(1), "other pids stay on sysinfo");
        // Busy for a moment so that the second sample has CPU to report.
        let spin_until = Instant::now() + std::time::Duration::from_millis(30);
        let mut spins = 0u64;
        while Instant::now() < spin_until {
            spins = std::hint::black_box(spins + 1);
        }
        let fast = probe.probe_self().expect("second sample (/proc/self)");
        let slow = match SysinfoProbe::new().probe_sysinfo(std::process::id()) {
            ProbeOutcome::Found(s) => s,
            other => panic!("sysinfo: {other:?}"),
        };
        assert_eq!(fast.name, slow.name);
        assert_eq!(fast.cmdline, slow.cmdline);
        assert_eq!(fast.start_time, first.start_time);
        assert_eq!(fast.start_time, slow.start_time);
        assert!(!fast.status.has_exited());
        assert!(fast.cpu_percent > 0.0, "{}", fast.cpu_percent);
        assert!(fast.threads.unwrap_or(0) >= 1);
        assert!(fast.open_fds.unwrap_or(0) >= 3);
        // Same process a moment apart: sizes agree within a few MiB.
        let near = |a: u64, b: u64| a.abs_diff(b) < 16 << 20;
        assert!(near(fast.memory_rss_bytes, slow.memory_rss_bytes));
        assert!(near(fast.memory_virtual_bytes, slow.memory_virtual_bytes));
    }

    #[test]
    fn stat_parsing_survives_a_command_name_with_parentheses() {
        let line = "4242 (we) ird) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 7 0 \
                    12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        let stat = parse_stat(line, 4096).expect("parses");
        assert_eq!(
            stat,
            OwnStat {
                status: ProcessStatus::Sleeping,
                threads: 7,
                virtual_bytes: 104_857_600,
                rss_bytes: 2560 * 4096,
            }
        );
        assert_eq!(parse_stat("4242 (x) Z", 4096), None, "truncated");
        assert_eq!(parse_stat("no parenthesis", 4096), None);
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
