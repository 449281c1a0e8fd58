//! What the load tool reads about processes and the machine from Linux:
//! a process's CPU time (every thread, from its CPU-time clock, or utime +
//! stime from `/proc/<pid>/stat`), its resident memory now and at peak (`VmRSS`,
//! `VmHWM` from `/proc/<pid>/status`), the load average and a machine
//! description; and raising the open-files limit for 1,000 clients.
//!
//! Not here: portability (the load tool runs on Linux only) or sampling over
//! time (the caller reads before and after).

use std::io;

use serde::Serialize;

/// Clock ticks per second for `/proc/<pid>/stat` times.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// utime + stime in clock ticks, from the text of `/proc/<pid>/stat`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: split
    // after its last ')'. Then field 3 (state) is index 0, utime (14) is
    // index 11 and stime (15) is index 12.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time used so far by `pid` (all its threads, live and exited), in
/// microseconds: from the process's CPU-time clock (`clock_getcpuclockid`,
/// nanosecond resolution, the scheduler's own sum), or where that is refused,
/// utime + stime from `/proc/<pid>/stat` (resolution one clock tick, 10 ms at
/// 100 Hz, too coarse for a short run).
pub fn cpu_time_us(pid: u32) -> io::Result<u64> {
    cpu_clock_us(pid).or_else(|_| stat_cpu_time_us(pid))
}

/// utime + stime of `pid` from `/proc/<pid>/stat`, in microseconds.
pub fn stat_cpu_time_us(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc stat"))?;
    Ok(ticks * 1_000_000 / ticks_per_second())
}

/// The CPU-time clock of process `pid`, in microseconds.
pub fn cpu_clock_us(pid: u32) -> io::Result<u64> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: writes one clockid_t into `clock`, which we own.
    let error = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
    if error != 0 {
        return Err(io::Error::from_raw_os_error(error));
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec into `now`, which we own.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let secs = u64::try_from(now.tv_sec).map_err(io::Error::other)?;
    let nanos = u64::try_from(now.tv_nsec).map_err(io::Error::other)?;
    Ok(secs * 1_000_000 + nanos / 1_000)
}

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the highest resident size since the process started.
    pub peak_kib: u64,
    /// `RssAnon`: the anonymous part of `VmRSS` (heap, stacks, buffers);
    /// the rest is mostly the binary's and libraries' pages.
    pub anon_kib: u64,
}

/// `VmRSS`, `VmHWM` and `RssAnon` from the text of `/proc/<pid>/status`.
pub fn parse_status_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
        anon_kib: field("RssAnon:")?,
    })
}

pub fn memory(pid: u32) -> io::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_memory(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS/VmHWM in /proc status"))
}

/// Raises the soft open-files limit to the hard limit; children (the server
/// under test) inherit it. Returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we pass; raising the soft limit
        // up to the hard limit needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// The 1-minute load average, if readable.
pub fn load_average_1m() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The machine the numbers were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub memory_total_mib: u64,
    pub kernel: String,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let logical_cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let memory_total_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text
                .lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .to_owned();
            line["MemTotal:".len()..]
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    Machine {
        cpu_model,
        logical_cpus,
        memory_total_mib,
        kernel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_ticks_survive_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (we ird) (name) S 1 4242 4242 0 -1 4194560 1270 0 0 0 \
                    37 12 0 0 20 0 3 0 123456 10000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(49));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn status_memory_reads_rss_and_high_water_mark() {
        let status = "Name:\twarden\nVmPeak:\t  20000 kB\nVmHWM:\t    7340 kB\n\
                      VmRSS:\t    6120 kB\nRssAnon:\t    2000 kB\nRssFile:\t    4120 kB\n";
        assert_eq!(
            parse_status_memory(status),
            Some(Memory {
                rss_kib: 6120,
                peak_kib: 7340,
                anon_kib: 2000,
            })
        );
        assert_eq!(parse_status_memory("Name:\tzombie\n"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let pid = std::process::id();
        // Burn CPU until at least one tick is accounted (generous deadline:
        // the machine may be busy).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        while stat_cpu_time_us(pid).unwrap() == 0 && std::time::Instant::now() < deadline {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        assert!(stat_cpu_time_us(pid).unwrap() > 0);
        let first = cpu_clock_us(pid).unwrap();
        assert!(first > 0);
        assert!(cpu_clock_us(pid).unwrap() >= first);
        let memory = memory(pid).unwrap();
        assert!(memory.rss_kib > 0 && memory.peak_kib >= memory.rss_kib);
        assert!(memory.anon_kib > 0 && memory.anon_kib <= memory.rss_kib);
    }
}
