//! Regression tests for what the fuzz targets (`fuzz/`) found.
//!
//! Every input under `fuzz/regressions/<target>/` once failed a target's
//! assertions. The fuzz targets need the nightly toolchain; these tests run
//! the same checks on those inputs with the stable `cargo test`, plus one
//! named test per bug that states it in words.

use std::path::PathBuf;

use warden::pidfile::{PidFileContent, PidRecord, parse_pid_file};
use warden::time::WallTime;

fn regression_inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut inputs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let bytes = std::fs::read(&path).expect("readable regression input");
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "no regression inputs in {}",
        dir.display()
    );
    inputs
}

/// The record as `to_json_pretty` writes it, read back.
fn reread(record: &PidRecord) -> PidRecord {
    let text = record.to_json_pretty();
    match parse_pid_file(text.as_bytes()) {
        PidFileContent::Record(r) => r,
        other => panic!("the rendered record does not parse back: {other:?}\n{text}"),
    }
}

fn close_f64(a: f64, b: f64) -> bool {
    a == b || a.to_bits().abs_diff(b.to_bits()) <= 2
}

#[test]
fn every_pidfile_regression_input_parses_without_panic_and_round_trips() {
    for (path, bytes) in regression_inputs("pidfile_parse") {
        let record = match parse_pid_file(&bytes) {
            PidFileContent::Record(record) => record,
            PidFileContent::Corrupt { detail } => {
                assert!(!detail.trim().is_empty(), "{}", path.display());
                continue;
            }
            other => panic!("{}: unexpected {other:?}", path.display()),
        };
        let again = reread(&record);
        let mut written = record.clone();
        if !written.process_info.cpu_percent.is_finite() {
            written.process_info.cpu_percent = 0.0;
        }
        if !written.process_info.memory_mb.is_finite() {
            written.process_info.memory_mb = 0.0;
        }
        assert!(
            close_f64(again.process_info.memory_mb, written.process_info.memory_mb),
            "{}",
            path.display()
        );
        let mut exact = again.clone();
        exact.process_info.memory_mb = written.process_info.memory_mb;
        assert_eq!(exact, written, "{}", path.display());
    }
}

/// Found by `pidfile_parse`: a fractional `process_start_time` (Python's
/// psutil writes one) lost its milliseconds when the record was written
/// again, and a time like `.123` was truncated to `.122` when read.
#[test]
fn a_fractional_process_start_time_keeps_its_milliseconds() {
    let text = r#"{"pid": 77, "start_time": "2025-08-06T14:30:00Z",
        "process_start_time": 1754490600.123, "process_info": {"name": "python"}}"#;
    let record = parse_pid_file(text.as_bytes())
        .record()
        .cloned()
        .expect("a record");
    assert_eq!(
        record.process_start_time,
        Some(WallTime::from_millis(1_754_490_600_123))
    );
    assert_eq!(reread(&record), record);
    // Whole seconds are still written as an integer, as sysinfo reports them.
    let mut whole = record.clone();
    whole.process_start_time = Some(WallTime::from_secs(1_754_490_600));
    assert!(
        whole
            .to_json_pretty()
            .contains("\"process_start_time\": 1754490600,")
    );
}

/// Found by `pidfile_parse`: a huge `cpu_percent` reads as an infinite f32;
/// it is written as 0 so the file always parses back.
#[test]
fn an_infinite_cpu_percent_is_written_as_zero() {
    let text = r#"{"pid": 5, "start_time": "2025-08-06T14:30:00Z",
        "process_info": {"cpu_percent": 1e60}}"#;
    let record = parse_pid_file(text.as_bytes())
        .record()
        .cloned()
        .expect("a record");
    assert!(record.process_info.cpu_percent.is_infinite());
    assert_eq!(reread(&record).process_info.cpu_percent, 0.0);
}

/// Found by `pidfile_parse`: a `start_time` with a huge year overflowed the
/// day arithmetic of `WallTime::parse_iso8601` (a panic in debug builds, a
/// wrapped, wrong time in release). Years are four digits now.
#[test]
fn a_huge_year_is_not_a_time_and_the_file_is_corrupt() {
    for text in [
        "922337203685477580-03-01T00:00:00Z",
        "92233720368547758-01-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
    ] {
        assert_eq!(WallTime::parse_iso8601(text), None, "{text}");
    }
    assert_eq!(
        WallTime::parse_iso8601("9999-12-31T23:59:59.999Z").map(WallTime::to_iso8601),
        Some("9999-12-31T23:59:59.999Z".to_string())
    );
    let file =
        br#"{"pid": 5, "start_time": "922337203685477580-03-01T00:00:00Z", "process_info": {}}"#;
    assert!(matches!(
        parse_pid_file(file),
        PidFileContent::Corrupt { .. }
    ));
}
