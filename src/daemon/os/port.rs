//! Who holds a TCP port, for `PortConflictError`.
//!
//! On Linux the answer comes from /proc: the LISTEN rows of `/proc/net/tcp`
//! and `/proc/net/tcp6` give the socket inodes bound to the port, and the
//! `socket:[inode]` links under `/proc/<pid>/fd/` give the process. The scan is
//! bounded ([`MAX_PROCESSES_SCANNED`], [`MAX_FDS_PER_PROCESS`]) and never
//! panics. Other users' processes hide their fds: then the owner is unknown
//! (`None`) even though the port is taken. On other systems the answer is
//! always `None`.
//!
//! This module does not bind or probe ports; the daemon does, and calls
//! [`is_addr_in_use`] on the bind error.

use std::path::Path;

/// At most this many processes are examined per lookup.
pub const MAX_PROCESSES_SCANNED: usize = 8192;
/// At most this many fds are examined per process.
pub const MAX_FDS_PER_PROCESS: usize = 16_384;
/// At most this many rows are read from each `/proc/net/tcp*` table.
pub const MAX_SOCKET_ROWS: usize = 65_536;

/// The process that listens on a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortOwner {
    pub pid: u32,
    pub name: String,
    /// argv; empty when hidden.
    pub cmdline: Vec<String>,
}

impl PortOwner {
    /// The command line joined by spaces, or the name when it is hidden.
    pub fn command(&self) -> String {
        if self.cmdline.is_empty() {
            self.name.clone()
        } else {
            self.cmdline.join(" ")
        }
    }
}

/// True when a bind failed because the address is taken.
pub fn is_addr_in_use(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::AddrInUse
        || (cfg!(unix) && err.raw_os_error() == Some(libc::EADDRINUSE))
}

/// The process listening on TCP `port` (any local address), when the OS tells.
pub fn port_owner(port: u16) -> Option<PortOwner> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    port_owner_in(Path::new("/proc"), port)
}

/// [`port_owner`] against another procfs root (for tests).
pub fn port_owner_in(proc_root: &Path, port: u16) -> Option<PortOwner> {
    let mut inodes = Vec::new();
    for table in ["net/tcp", "net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(proc_root.join(table)) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    // Our own process first: the common case "we already listen there" is cheap.
    let own = std::process::id();
    if let Some(owner) = owner_if_holds(proc_root, own, &targets) {
        return Some(owner);
    }
    let entries = std::fs::read_dir(proc_root).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| *pid != own)
        .take(MAX_PROCESSES_SCANNED)
        .find_map(|pid| owner_if_holds(proc_root, pid, &targets))
}

/// Whether `pid` listens on TCP `port`, when the OS tells: `Some(false)`
/// when nobody listens there or `pid`'s descriptors show no such socket,
/// `None` when they cannot be read (another user's process, not Linux).
pub fn listens_on(pid: u32, port: u16) -> Option<bool> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    listens_on_in(Path::new("/proc"), pid, port)
}

/// [`listens_on`] against another procfs root (for tests).
pub fn listens_on_in(proc_root: &Path, pid: u32, port: u16) -> Option<bool> {
    let mut inodes = Vec::new();
    for table in ["net/tcp", "net/tcp6"] {
        let text = std::fs::read_to_string(proc_root.join(table)).ok()?;
        inodes.extend(listening_inodes(&text, port));
    }
    if inodes.is_empty() {
        return Some(false);
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    // Unreadable descriptors: cannot tell.
    std::fs::read_dir(proc_root.join(pid.to_string()).join("fd")).ok()?;
    Some(owner_if_holds(proc_root, pid, &targets).is_some())
}

fn owner_if_holds(proc_root: &Path, pid: u32, targets: &[String]) -> Option<PortOwner> {
    let dir = proc_root.join(pid.to_string());
    let fds = std::fs::read_dir(dir.join("fd")).ok()?;
    let holds = fds
        .filter_map(|e| e.ok())
        .take(MAX_FDS_PER_PROCESS)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|link| {
            link.to_str()
                .is_some_and(|l| targets.iter().any(|t| t == l))
        });
    if !holds {
        return None;
    }
    let name = std::fs::read_to_string(dir.join("comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default();
    let cmdline = std::fs::read(dir.join("cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    Some(PortOwner { pid, name, cmdline })
}

/// Socket inodes of the LISTEN rows for `port` in a `/proc/net/tcp*` table.
/// Malformed rows are skipped.
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const TCP_LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .take(MAX_SOCKET_ROWS)
        .filter_map(|row| {
            let cols: Vec<&str> = row.split_whitespace().collect();
            let local = cols.get(1)?;
            let state = cols.get(3)?;
            let inode = cols.get(9)?.parse::<u64>().ok()?;
            let (_, port_hex) = local.rsplit_once(':')?;
            let row_port = u16::from_str_radix(port_hex, 16).ok()?;
            (row_port == port && *state == TCP_LISTEN && inode != 0).then_some(inode)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 654321 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0
   garbage row
";

    #[test]
    fn only_listen_rows_of_the_port_count() {
        assert_eq!(listening_inodes(TABLE, 8080), vec![123456]);
        assert_eq!(listening_inodes(TABLE, 22), vec![999]);
        assert!(listening_inodes(TABLE, 9).is_empty());
        assert!(listening_inodes("", 8080).is_empty());
    }

    #[test]
    fn addr_in_use_is_recognised() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = std::net::TcpListener::bind(addr).unwrap_err();
        assert!(is_addr_in_use(&err), "{err:?}");
        assert!(!is_addr_in_use(&std::io::Error::from(
            std::io::ErrorKind::NotFound
        )));
    }
}
