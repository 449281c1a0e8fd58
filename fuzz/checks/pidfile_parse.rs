//! Fuzz target: `parse_pid_file` on arbitrary bytes.
//!
//! Asserted: it never panics, whatever the bytes (not UTF-8, huge numbers,
//! deep JSON, odd times); it never answers `Absent` (only the adapter knows a
//! file is missing); a corrupt file always says why; an empty answer means
//! only whitespace; and a parsed record or legacy pid, rendered the way the
//! daemon writes it, parses back to the same thing (floats to within
//! serde_json's parsing precision; non-finite ones are written as 0), so the daemon can always read what it wrote.

use warden::pidfile::{MAX_PLAUSIBLE_PID, PidFileContent, parse_pid_file};

fn within_ulps_f64(a: f64, b: f64) -> bool {
    a == b || (a.is_finite() && b.is_finite() && a.to_bits().abs_diff(b.to_bits()) <= 2)
}

fn within_ulps_f32(a: f32, b: f32) -> bool {
    a == b || (a.is_finite() && b.is_finite() && a.to_bits().abs_diff(b.to_bits()) <= 2)
}

/// One fuzz input, checked: the body of the fuzz target, shared with
/// `tests/fuzz_regressions.rs`, which replays the saved inputs on stable.
pub fn check_bytes(data: &[u8]) {
    let parsed = parse_pid_file(data);
    match &parsed {
        PidFileContent::Absent => panic!("parse_pid_file answered Absent for {} bytes", data.len()),
        PidFileContent::Empty => {
            let text = std::str::from_utf8(data).expect("an empty file is text");
            assert!(text.trim().is_empty(), "Empty for non-blank text");
        }
        PidFileContent::Corrupt { detail } => {
            assert!(!detail.trim().is_empty(), "a corrupt file must say why");
        }
        PidFileContent::Legacy(pid) => {
            assert!((1..=MAX_PLAUSIBLE_PID).contains(pid));
            let again = parse_pid_file(pid.to_string().as_bytes());
            assert_eq!(again, PidFileContent::Legacy(*pid), "legacy pid round trip");
        }
        PidFileContent::Record(record) => {
            assert!((1..=MAX_PLAUSIBLE_PID).contains(&record.pid));
            let text = record.to_json_pretty();
            let again = parse_pid_file(text.as_bytes());
            let Some(reread) = again.record() else {
                panic!("the rendered record does not parse back: {again:?}\n{text}");
            };
            // What the daemon writes: a non-finite measurement (a huge number
            // read into an f32 is infinite) is written as 0.
            let mut written = record.clone();
            if !written.process_info.cpu_percent.is_finite() {
                written.process_info.cpu_percent = 0.0;
            }
            if !written.process_info.memory_mb.is_finite() {
                written.process_info.memory_mb = 0.0;
            }
            // serde_json parses floats to within an ulp or so unless its
            // `float_roundtrip` feature is on: the informational floats of
            // `process_info` are compared to that precision, everything else exactly.
            let mut exact = reread.clone();
            exact.process_info.cpu_percent = written.process_info.cpu_percent;
            exact.process_info.memory_mb = written.process_info.memory_mb;
            assert_eq!(exact, written, "record round trip through\n{text}");
            assert!(
                within_ulps_f32(
                    reread.process_info.cpu_percent,
                    written.process_info.cpu_percent
                ) && within_ulps_f64(
                    reread.process_info.memory_mb,
                    written.process_info.memory_mb
                ),
                "floats drifted through\n{text}"
            );
        }
    }
    assert_eq!(
        parsed.pid(),
        parsed.record().map(|r| r.pid).or(match parsed {
            PidFileContent::Legacy(pid) => Some(pid),
            _ => None,
        })
    );
}
