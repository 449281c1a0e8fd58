//! The daemon's logging: the log file rotates by size through the real
//! non-blocking writer, keeps exactly `backup_count` backups, loses no line
//! that rotation keeps, and `init` routes tracing events into the file with
//! the debug switch honoured.
#![cfg(feature = "daemon")]

use std::io::Write;
use std::path::{Path, PathBuf};

use warden::config::{LogLevel, LoggingConfig};
use warden::daemon::os::logging::{LoggingError, init, rotating_writer};

fn backups(path: &Path) -> Vec<PathBuf> {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let mut found: Vec<PathBuf> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&format!("{name}.")) && n[name.len() + 1..].parse::<u32>().is_ok()
        })
        .collect();
    found.sort();
    found
}

#[test]
fn writing_past_the_size_limit_rotates_and_keeps_backup_count_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs").join("socketio-server.log");
    let max_bytes = 1024;
    let backup_count = 3;
    let (mut writer, guard) = rotating_writer(&path, max_bytes, backup_count).unwrap();

    // 200 lines of 100 bytes: 20 KB, twenty times the limit.
    for i in 0..200 {
        let line = format!("{i:05} {}\n", "x".repeat(93));
        assert_eq!(line.len(), 100);
        writer.write_all(line.as_bytes()).unwrap();
    }
    drop(writer);
    drop(guard); // flushes the background writer

    let rotated = backups(&path);
    let names: Vec<String> = rotated
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        names,
        vec![
            "socketio-server.log.1",
            "socketio-server.log.2",
            "socketio-server.log.3"
        ],
        "exactly backup_count backups"
    );

    // Each file passed the limit by at most one write before rotating.
    for p in rotated.iter().chain([&path]) {
        let len = std::fs::metadata(p).unwrap().len();
        assert!(len <= max_bytes + 100, "{} has {len} bytes", p.display());
    }

    // The retained files hold a contiguous run of lines ending with the last
    // one: nothing inside the retention was dropped.
    let mut text = String::new();
    for p in rotated.iter().rev().chain([&path]) {
        text.push_str(&std::fs::read_to_string(p).unwrap());
    }
    let numbers: Vec<u32> = text.lines().map(|l| l[..5].parse().unwrap()).collect();
    assert_eq!(*numbers.last().unwrap(), 199);
    for pair in numbers.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a line went missing");
    }

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the log file is private");
    }
}

#[test]
fn an_unwritable_log_path_is_an_error_not_silence() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let err = rotating_writer(&blocker.join("x.log"), 1024, 2).unwrap_err();
    assert!(matches!(err, LoggingError::CreateDir { .. }), "{err:?}");
}

#[test]
fn init_writes_tracing_events_to_the_file_with_debug_forced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.log");
    let cfg = LoggingConfig {
        level: LogLevel::Info,
        file: Some(path.clone()),
        max_size_mb: 1,
        backup_count: 2,
        ..LoggingConfig::default()
    };
    let guard = init(&cfg, true).unwrap();
    assert_eq!(guard.file(), Some(path.as_path()));

    tracing::info!(target: "warden::test", "Recovery action clear_connections");
    tracing::debug!(target: "warden::test", "debug line visible because of the switch");
    tracing::trace!(target: "warden::test", "trace line stays hidden");
    // Another crate's debug output is capped at INFO.
    tracing::debug!(target: "hyper::proto", "dependency chatter");
    tracing::info!(target: "hyper::proto", "dependency info is kept");

    // Only one global subscriber per process.
    assert!(matches!(
        init(&cfg, false),
        Err(LoggingError::AlreadyInitialised(_))
    ));

    drop(guard);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("Recovery action clear_connections"), "{text}");
    assert!(text.contains("debug line visible"), "{text}");
    assert!(!text.contains("trace line stays hidden"), "{text}");
    assert!(!text.contains("dependency chatter"), "{text}");
    assert!(text.contains("dependency info is kept"), "{text}");
    assert!(!text.contains('\u{1b}'), "no ANSI colours in the file");
}
