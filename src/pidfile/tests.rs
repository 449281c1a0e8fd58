//! Unit tests of the PID record, the parser and the lifecycle decisions.

use super::*;
use crate::probe::ProcessSnapshot;

const ME: u32 = 4242;
const OTHER: u32 = 777;

fn t(secs: u64) -> WallTime {
    WallTime::from_secs(secs)
}

fn record(pid: u32) -> PidRecord {
    PidRecord {
        pid,
        server_id: PidRecord::server_id_for_port(8765),
        port: 8765,
        host: "localhost".to_string(),
        start_time: WallTime::from_millis(1_754_490_600_000),
        process_start_time: Some(t(1_754_490_590)),
        version: "0.1.0".to_string(),
        process_info: ProcessInfo {
            name: "warden".to_string(),
            status: ProcessStatus::Running,
            cpu_percent: 2.5,
            memory_mb: 45.2,
        },
        lock_acquired: true,
        created_by: "warden".to_string(),
        cmdline: vec!["warden".to_string(), "start".to_string()],
        invocation: None,
    }
}

fn writer_snapshot(pid: u32) -> ProcessSnapshot {
    ProcessSnapshot::new(pid, "warden", &["warden", "start"], t(1_754_490_590))
}

fn facts(
    lock: LockObservation,
    content: PidFileContent,
    probe: Option<ProbeOutcome>,
) -> ClaimFacts {
    ClaimFacts {
        lock,
        content,
        recorded_process: probe,
        file_modified: Some(t(1_754_490_600)),
        recorded_listening: None,
        me: Claimant {
            pid: ME,
            process_start_time: Some(t(1_754_499_000)),
        },
        now: t(1_754_499_001),
    }
}

fn acquired(content: PidFileContent, probe: Option<ProbeOutcome>) -> ClaimDecision {
    decide(&facts(LockObservation::Acquired, content, probe))
}

#[test]
fn record_renders_the_seed_fields_and_parses_back() {
    let r = record(OTHER);
    let json = r.to_json_pretty();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in [
        "pid",
        "server_id",
        "port",
        "host",
        "start_time",
        "process_start_time",
        "version",
        "process_info",
        "lock_acquired",
        "created_by",
        "cmdline",
    ] {
        assert!(value.get(key).is_some(), "missing {key} in {json}");
    }
    assert_eq!(value["start_time"], "2025-08-06T14:30:00.000Z");
    assert_eq!(value["process_info"]["status"], "running");
    assert_eq!(value["process_start_time"], 1_754_490_590u64);
    assert_eq!(parse_pid_file(json.as_bytes()), PidFileContent::Record(r));
}

#[test]
fn parses_the_seed_example_with_unknown_extra_fields() {
    let seed = br#"{
        "pid": 12345, "server_id": "socketio-server-8765", "port": 8765,
        "host": "localhost", "start_time": "2025-08-06T14:30:00.000Z",
        "version": "1.2.0",
        "process_info": {"name": "python", "status": "running", "cpu_percent": 2.5, "memory_mb": 45.2},
        "lock_acquired": true, "created_by": "claude-mpm", "written_by_future_version": [1, 2]
    }"#;
    let PidFileContent::Record(r) = parse_pid_file(seed) else {
        panic!("seed file not read as a record");
    };
    assert_eq!(r.pid, 12345);
    assert_eq!(r.process_start_time, None);
    assert!(r.cmdline.is_empty());
    assert_eq!(r.process_info.name, "python");
    assert_eq!(
        r.invocation, None,
        "a record without an invocation is still read"
    );
}

#[test]
fn the_recorded_invocation_parses_back_and_tolerates_missing_fields() {
    let mut r = record(OTHER);
    r.invocation = Some(Box::new(Invocation {
        host: Some("0.0.0.0".into()),
        config: Some("/etc/warden/config.json".into()),
        profile: Some("production".into()),
        state_dir: Some("/var/lib/warden".into()),
        detach: true,
    }));
    let json = r.to_json_pretty();
    assert_eq!(parse_pid_file(json.as_bytes()), PidFileContent::Record(r));
    // Another version's invocation with fewer (or unknown) fields.
    let text = br#"{"pid": 9, "start_time": "2025-08-06T14:30:00Z", "process_info": {},
        "invocation": {"detach": true, "from_the_future": 1}}"#;
    let PidFileContent::Record(r) = parse_pid_file(text) else {
        panic!("not a record");
    };
    assert_eq!(
        r.invocation,
        Some(Box::new(Invocation {
            detach: true,
            ..Invocation::default()
        }))
    );
}

#[test]
fn python_isoformat_without_zone_is_read_as_utc() {
    let text = br#"{"pid": 9, "start_time": "2025-08-06T14:30:00.123456", "process_info": {}}"#;
    let PidFileContent::Record(r) = parse_pid_file(text) else {
        panic!("not a record");
    };
    assert_eq!(r.start_time, WallTime::from_millis(1_754_490_600_123));
}

#[test]
fn legacy_integer_files_with_whitespace() {
    assert_eq!(parse_pid_file(b"12345"), PidFileContent::Legacy(12345));
    assert_eq!(parse_pid_file(b"  12345\n"), PidFileContent::Legacy(12345));
    assert_eq!(parse_pid_file(b"\t+7\r\n"), PidFileContent::Legacy(7));
}

#[test]
fn implausible_pids_are_corrupt() {
    for bad in [
        &b"0"[..],
        b"-5",
        b"4194305",
        b"99999999999999999999",
        b"1-2",
        br#"{"pid":0,"start_time":"2025-08-06T14:30:00Z","process_info":{}}"#,
    ] {
        assert!(
            matches!(parse_pid_file(bad), PidFileContent::Corrupt { .. }),
            "{:?} accepted",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        parse_pid_file(b"4194304"),
        PidFileContent::Legacy(MAX_PLAUSIBLE_PID)
    );
}

#[test]
fn empty_whitespace_binary_and_oversized_files() {
    assert_eq!(parse_pid_file(b""), PidFileContent::Empty);
    assert_eq!(parse_pid_file(b" \n\t"), PidFileContent::Empty);
    assert!(matches!(
        parse_pid_file(&[0xff, 0xfe, 0x00]),
        PidFileContent::Corrupt { .. }
    ));
    assert!(matches!(
        parse_pid_file(b"{\"pid\": 12"),
        PidFileContent::Corrupt { .. }
    ));
    let huge = vec![b' '; MAX_PID_FILE_BYTES + 1];
    assert!(matches!(
        parse_pid_file(&huge),
        PidFileContent::Corrupt { .. }
    ));
}

#[test]
fn busy_lock_is_a_conflict_whatever_the_content() {
    let live = Some(ProbeOutcome::Found(writer_snapshot(OTHER)));
    for content in [
        PidFileContent::Absent,
        PidFileContent::Empty,
        PidFileContent::Corrupt { detail: "x".into() },
        PidFileContent::Legacy(OTHER),
        PidFileContent::Record(record(OTHER)),
    ] {
        for probe in [None, Some(ProbeOutcome::NotFound), live.clone()] {
            let d = decide(&facts(LockObservation::Busy, content.clone(), probe));
            assert!(
                matches!(d, ClaimDecision::Conflict { .. }),
                "{content:?} -> {d:?}"
            );
            assert!(!d.wins());
        }
    }
    let d = decide(&facts(
        LockObservation::Busy,
        PidFileContent::Record(record(OTHER)),
        live,
    ));
    let ClaimDecision::Conflict {
        pid,
        holder,
        process,
    } = d
    else {
        unreachable!()
    };
    assert_eq!(pid, Some(OTHER));
    assert_eq!(
        holder.map(|h| h.server_id),
        Some("socketio-server-8765".to_string())
    );
    assert_eq!(process.map(|p| p.pid), Some(OTHER));
}

#[test]
fn absent_is_free_empty_and_corrupt_are_stale() {
    assert_eq!(acquired(PidFileContent::Absent, None), ClaimDecision::Free);
    assert_eq!(
        acquired(PidFileContent::Empty, None),
        ClaimDecision::Stale(StaleReason::Empty)
    );
    assert_eq!(
        acquired(
            PidFileContent::Corrupt {
                detail: "bad".into()
            },
            None
        ),
        ClaimDecision::Stale(StaleReason::Corrupt {
            detail: "bad".into()
        })
    );
}

#[test]
fn gone_process_is_stale_for_records_and_legacy_files() {
    for content in [
        PidFileContent::Legacy(OTHER),
        PidFileContent::Record(record(OTHER)),
    ] {
        assert_eq!(
            acquired(content, Some(ProbeOutcome::NotFound)),
            ClaimDecision::Stale(StaleReason::ProcessGone { pid: OTHER })
        );
    }
}

#[test]
fn a_zombie_is_stale_as_a_zombie_never_as_not_found() {
    for status in [ProcessStatus::Zombie, ProcessStatus::Dead] {
        let zombie = writer_snapshot(OTHER).with_status(status);
        assert_eq!(
            acquired(
                PidFileContent::Record(record(OTHER)),
                Some(ProbeOutcome::Found(zombie))
            ),
            ClaimDecision::Stale(StaleReason::Zombie { pid: OTHER })
        );
    }
}

#[test]
fn reused_pid_detected_by_start_time() {
    let mut other_program = writer_snapshot(OTHER);
    other_program.start_time = t(1_754_495_000);
    let d = acquired(
        PidFileContent::Record(record(OTHER)),
        Some(ProbeOutcome::Found(other_program)),
    );
    assert_eq!(
        d,
        ClaimDecision::Stale(StaleReason::PidReused {
            pid: OTHER,
            evidence: ReuseEvidence::StartTimeDiffers {
                recorded: t(1_754_490_590),
                actual: t(1_754_495_000)
            }
        })
    );
}

#[test]
fn start_times_within_the_tolerance_are_the_same_process() {
    let mut owner = writer_snapshot(OTHER);
    owner.start_time = t(1_754_490_591);
    let d = acquired(
        PidFileContent::Record(record(OTHER)),
        Some(ProbeOutcome::Found(owner)),
    );
    assert!(
        matches!(
            d,
            ClaimDecision::Conflict {
                pid: Some(OTHER),
                ..
            }
        ),
        "{d:?}"
    );
}

#[test]
fn reused_pid_detected_by_command_line() {
    let sleeper = ProcessSnapshot::new(OTHER, "sleep", &["sleep", "30"], t(1_754_490_590));
    let d = acquired(
        PidFileContent::Record(record(OTHER)),
        Some(ProbeOutcome::Found(sleeper)),
    );
    assert_eq!(
        d,
        ClaimDecision::Stale(StaleReason::PidReused {
            pid: OTHER,
            evidence: ReuseEvidence::CommandDiffers {
                recorded: "warden start".into(),
                actual: "sleep 30".into()
            }
        })
    );
}

#[test]
fn hidden_command_line_is_no_evidence() {
    let hidden = ProcessSnapshot::new(OTHER, "warden", &[], t(1_754_490_590));
    let d = acquired(
        PidFileContent::Record(record(OTHER)),
        Some(ProbeOutcome::Found(hidden)),
    );
    assert!(matches!(d, ClaimDecision::Conflict { .. }), "{d:?}");
}

#[test]
fn legacy_pid_of_a_process_started_after_the_file_was_written_is_reused() {
    let later = ProcessSnapshot::new(OTHER, "bash", &["bash"], t(1_754_490_700));
    let d = acquired(
        PidFileContent::Legacy(OTHER),
        Some(ProbeOutcome::Found(later)),
    );
    assert!(
        matches!(
            d,
            ClaimDecision::Stale(StaleReason::PidReused {
                evidence: ReuseEvidence::StartedAfterFileWritten { .. },
                ..
            })
        ),
        "{d:?}"
    );
}

#[test]
fn legacy_pid_of_an_older_live_process_is_a_conservative_conflict() {
    let older = ProcessSnapshot::new(OTHER, "python", &["python", "server.py"], t(1_754_400_000));
    let d = acquired(
        PidFileContent::Legacy(OTHER),
        Some(ProbeOutcome::Found(older)),
    );
    assert!(
        matches!(
            d,
            ClaimDecision::Conflict {
                pid: Some(OTHER),
                holder: None,
                ..
            }
        ),
        "{d:?}"
    );
}

#[test]
fn legacy_pid_of_an_older_live_process_not_on_the_port_is_reused() {
    let older = ProcessSnapshot::new(OTHER, "sleep", &["sleep", "600"], t(1_754_400_000));
    let judged = |listening: Option<PortListening>, content: PidFileContent| {
        let mut f = facts(
            LockObservation::Acquired,
            content,
            Some(ProbeOutcome::Found(older.clone())),
        );
        f.recorded_listening = listening;
        decide(&f)
    };
    let not_on_port = Some(PortListening {
        port: 8765,
        listening: false,
    });
    assert_eq!(
        judged(not_on_port, PidFileContent::Legacy(OTHER)),
        ClaimDecision::Stale(StaleReason::PidReused {
            pid: OTHER,
            evidence: ReuseEvidence::NotListening {
                port: 8765,
                command: "sleep 600".into(),
            },
        })
    );
    // Listening there, or nobody can tell: the conservative conflict stands.
    for listening in [
        Some(PortListening {
            port: 8765,
            listening: true,
        }),
        None,
    ] {
        assert!(
            matches!(
                judged(listening, PidFileContent::Legacy(OTHER)),
                ClaimDecision::Conflict { .. }
            ),
            "{listening:?}"
        );
    }
    // A record with an identity is judged by that identity alone.
    let mut r = record(OTHER);
    r.cmdline = vec!["sleep".into(), "600".into()];
    r.process_start_time = Some(t(1_754_400_000));
    assert!(matches!(
        judged(not_on_port, PidFileContent::Record(r)),
        ClaimDecision::Conflict { .. }
    ));
}

#[test]
fn old_python_record_with_another_process_name_is_reused() {
    let mut r = record(OTHER);
    r.process_start_time = None;
    r.cmdline.clear();
    r.process_info.name = "python".into();
    let nginx = ProcessSnapshot::new(OTHER, "nginx", &["nginx"], t(1_754_400_000));
    let d = acquired(
        PidFileContent::Record(r.clone()),
        Some(ProbeOutcome::Found(nginx)),
    );
    assert!(
        matches!(
            d,
            ClaimDecision::Stale(StaleReason::PidReused {
                evidence: ReuseEvidence::NameDiffers { .. },
                ..
            })
        ),
        "{d:?}"
    );
    let python = ProcessSnapshot::new(OTHER, "python", &["python"], t(1_754_400_000));
    let d = acquired(PidFileContent::Record(r), Some(ProbeOutcome::Found(python)));
    assert!(matches!(d, ClaimDecision::Conflict { .. }), "{d:?}");
}

#[test]
fn truncated_linux_names_match_their_full_form() {
    assert!(names_match("socketio-server", "socketio-server-daemon"));
    assert!(!names_match("python", "python3"));
    assert!(names_match("warden", "warden"));
}

#[test]
fn a_live_matching_owner_without_the_lock_is_a_conflict() {
    let d = acquired(
        PidFileContent::Record(record(OTHER)),
        Some(ProbeOutcome::Found(writer_snapshot(OTHER))),
    );
    let ClaimDecision::Conflict {
        pid,
        holder,
        process,
    } = d
    else {
        panic!("{d:?}");
    };
    assert_eq!(
        (pid, holder.map(|h| h.pid), process.map(|p| p.pid)),
        (Some(OTHER), Some(OTHER), Some(OTHER))
    );
}

#[test]
fn unavailable_probe_lets_the_free_lock_decide() {
    let d = acquired(
        PidFileContent::Record(record(OTHER)),
        Some(ProbeOutcome::Unavailable {
            reason: "no /proc".into(),
        }),
    );
    assert_eq!(
        d,
        ClaimDecision::Stale(StaleReason::LockNotHeld {
            pid: OTHER,
            probe_error: "no /proc".into()
        })
    );
}

#[test]
fn a_file_naming_us_is_ours_unless_our_pid_was_reused() {
    let mut mine = record(ME);
    mine.process_start_time = Some(t(1_754_499_000));
    assert_eq!(
        acquired(PidFileContent::Record(mine), None),
        ClaimDecision::Ours
    );
    assert_eq!(
        acquired(PidFileContent::Legacy(ME), None),
        ClaimDecision::Ours
    );
    let previous_holder_of_our_pid = record(ME);
    assert!(matches!(
        acquired(PidFileContent::Record(previous_holder_of_our_pid), None),
        ClaimDecision::Stale(StaleReason::PidReused { pid: ME, .. })
    ));
}

#[test]
fn lifecycle_claim_hold_recheck_release() {
    let mut lc = Lifecycle::new();
    assert_eq!(lc.phase(), Phase::Unclaimed);
    assert_eq!(
        lc.release(true),
        ReleaseAction::LeaveFileUntouched,
        "nothing held yet"
    );
    let d = lc.claim(facts(
        LockObservation::Acquired,
        PidFileContent::Absent,
        None,
    ));
    assert_eq!(d, ClaimDecision::Free);
    assert_eq!(lc.phase(), Phase::Held);
    assert_eq!(lc.recheck(true), RecheckOutcome::StillHeld);
    assert_eq!(lc.release(true), ReleaseAction::RemoveFile);
    assert_eq!(lc.phase(), Phase::Released);
    assert_eq!(
        lc.release(true),
        ReleaseAction::LeaveFileUntouched,
        "release is idempotent"
    );
}

#[test]
fn lifecycle_release_leaves_a_file_that_is_no_longer_ours() {
    let mut lc = Lifecycle::new();
    lc.claim(facts(
        LockObservation::Acquired,
        PidFileContent::Empty,
        None,
    ));
    assert_eq!(lc.release(false), ReleaseAction::LeaveFileUntouched);
    assert_eq!(lc.phase(), Phase::Released);
}

#[test]
fn lifecycle_lost_when_the_path_names_another_inode() {
    let mut lc = Lifecycle::new();
    lc.claim(facts(
        LockObservation::Acquired,
        PidFileContent::Absent,
        None,
    ));
    assert_eq!(lc.recheck(false), RecheckOutcome::Lost);
    assert_eq!(lc.phase(), Phase::Lost);
    assert_eq!(lc.recheck(true), RecheckOutcome::Lost);
    assert_eq!(
        lc.release(true),
        ReleaseAction::LeaveFileUntouched,
        "a lost file is not ours to remove"
    );
    assert_eq!(lc.phase(), Phase::Released);
}

#[test]
fn lifecycle_refused_on_conflict_and_touches_nothing() {
    let mut lc = Lifecycle::new();
    let d = lc.claim(facts(
        LockObservation::Busy,
        PidFileContent::Record(record(OTHER)),
        None,
    ));
    assert!(!d.wins());
    assert_eq!(lc.phase(), Phase::Refused);
    assert_eq!(lc.recheck(false), RecheckOutcome::NotHeld);
    assert_eq!(lc.release(true), ReleaseAction::LeaveFileUntouched);
}

#[test]
fn stale_reasons_read_well_in_logs() {
    let r = StaleReason::PidReused {
        pid: 7,
        evidence: ReuseEvidence::CommandDiffers {
            recorded: "warden start".into(),
            actual: "sleep 30".into(),
        },
    };
    assert_eq!(
        r.to_string(),
        "pid 7 now belongs to another program: its command is `sleep 30` but the file records `warden start`"
    );
    assert_eq!(r.pid(), Some(7));
    assert_eq!(StaleReason::Empty.pid(), None);
}

#[test]
fn a_busy_lock_is_named_only_by_the_process_that_wrote_the_record() {
    let busy = |probe| {
        facts(
            LockObservation::Busy,
            PidFileContent::Record(record(OTHER)),
            probe,
        )
    };
    // The writer itself is alive: it holds the lock, and the file names it.
    assert!(names_live_holder(&busy(Some(ProbeOutcome::Found(
        writer_snapshot(OTHER)
    )))));
    // A leftover record whose pid now belongs to another program: the real
    // holder has not written yet, so the unrelated program must not be named
    // (found by the simulation's PID race, seed 15).
    let mut other_program = writer_snapshot(OTHER);
    other_program.start_time = t(1_754_495_000);
    assert!(!names_live_holder(&busy(Some(ProbeOutcome::Found(
        other_program
    )))));
    let mut zombie = writer_snapshot(OTHER);
    zombie.status = ProcessStatus::Zombie;
    assert!(!names_live_holder(&busy(Some(ProbeOutcome::Found(zombie)))));
    assert!(!names_live_holder(&busy(Some(ProbeOutcome::NotFound))));
    assert!(names_live_holder(&busy(Some(ProbeOutcome::Unavailable {
        reason: "no /proc".to_string()
    }))));
    // The file names this very process (another descriptor holds the lock).
    let ours = facts(LockObservation::Busy, PidFileContent::Legacy(ME), None);
    assert!(names_live_holder(&ours));
}
