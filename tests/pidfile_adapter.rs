//! The PID file adapter against the real file system, real locks and real
//! processes: what `warden start` relies on to run once per port.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use warden::daemon::os::pidfile::{
    PidFile, PidFileError, PidGuard, PidRecordDraft, claim, pid_file_path, read_pid_file,
};
use warden::daemon::os::sysprobe::SysinfoProbe;
use warden::pidfile::{PidFileContent, ReuseEvidence, StaleReason, parse_pid_file};
use warden::probe::{FakeProbe, ProbeOutcome, ProcessProbe, ProcessStatus};

const PORT: u16 = 8765;

fn draft() -> PidRecordDraft {
    PidRecordDraft::new("localhost", PORT)
}

fn claim_here(dir: &Path) -> Result<(PidGuard, Option<StaleReason>), PidFileError> {
    claim(dir, PORT, draft(), &SysinfoProbe::new())
}

/// A child that has exited and been reaped: its pid names no process.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("reap");
    pid
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn poll_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn claim_creates_the_state_dir_and_writes_a_private_valid_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let (guard, stale) = claim_here(&dir).expect("claim");
    assert_eq!(stale, None);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let path = pid_file_path(&dir, PORT);
    assert_eq!(guard.path(), path);
    assert!(path.ends_with("socketio-server-8765.pid"));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let PidFileContent::Record(r) = parse_pid_file(&std::fs::read(&path).unwrap()) else {
        panic!("not a record");
    };
    assert_eq!(r.pid, std::process::id());
    assert_eq!(
        (r.port, r.host.as_str(), r.server_id.as_str()),
        (PORT, "localhost", "socketio-server-8765")
    );
    assert!(r.lock_acquired);
    assert!(
        r.process_start_time.is_some(),
        "the OS start time is recorded"
    );
    assert!(!r.cmdline.is_empty());
    assert_eq!(&r, guard.record());
    guard.verify().expect("still ours");
}

#[test]
fn a_second_claim_conflicts_and_leaves_the_file_byte_for_byte_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let (guard, _) = claim_here(tmp.path()).expect("first claim");
    let path = guard.path().to_path_buf();
    let before = (
        std::fs::read(&path).unwrap(),
        std::fs::metadata(&path).unwrap(),
    );
    let err = claim_here(tmp.path()).expect_err("second claim must fail");
    let PidFileError::Conflict {
        pid, record, port, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!((*pid, *port), (Some(std::process::id()), PORT));
    assert_eq!(record.as_ref().map(|r| r.pid), Some(std::process::id()));
    assert!(err.to_string().contains("warden stop --port 8765"), "{err}");
    let after = (
        std::fs::read(&path).unwrap(),
        std::fs::metadata(&path).unwrap(),
    );
    assert_eq!(before.0, after.0);
    assert_eq!(
        (before.1.ino(), before.1.mtime_nsec(), before.1.mtime()),
        (after.1.ino(), after.1.mtime_nsec(), after.1.mtime())
    );
    guard.verify().expect("the winner is unaffected");
}

#[test]
fn a_symlink_at_the_path_is_refused_and_its_target_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("precious.txt");
    std::fs::write(&target, b"do not truncate me").unwrap();
    std::os::unix::fs::symlink(&target, pid_file_path(tmp.path(), PORT)).unwrap();
    let err = claim_here(tmp.path()).expect_err("symlink must be refused");
    assert!(matches!(err, PidFileError::Symlink { .. }), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"do not truncate me");
    assert!(matches!(
        read_pid_file(tmp.path(), PORT),
        Err(PidFileError::Symlink { .. })
    ));
    // A dangling link is refused too, and nothing is created behind it.
    let tmp2 = tempfile::tempdir().unwrap();
    let missing = tmp2.path().join("missing");
    std::os::unix::fs::symlink(&missing, pid_file_path(tmp2.path(), PORT)).unwrap();
    assert!(matches!(
        claim_here(tmp2.path()),
        Err(PidFileError::Symlink { .. })
    ));
    assert!(!missing.exists());
}

#[test]
fn corrupt_empty_and_legacy_files_of_dead_processes_are_stale_and_claimed() {
    let dead = dead_pid();
    let cases: Vec<(Vec<u8>, StaleReason)> = vec![
        (b"{not json".to_vec(), StaleReason::Corrupt { detail: String::new() }),
        (Vec::new(), StaleReason::Empty),
        (format!("{dead}\n").into_bytes(), StaleReason::ProcessGone { pid: dead }),
        (
            format!(r#"{{"pid": {dead}, "start_time": "2025-08-06T14:30:00.000Z", "process_info": {{"name": "python"}}}}"#).into_bytes(),
            StaleReason::ProcessGone { pid: dead },
        ),
    ];
    for (bytes, expected) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let path = pid_file_path(tmp.path(), PORT);
        std::fs::write(&path, &bytes).unwrap();
        let (guard, stale) = claim_here(tmp.path()).expect("stale file is taken over");
        let stale = stale.expect("a reason is reported");
        match (&stale, &expected) {
            (StaleReason::Corrupt { .. }, StaleReason::Corrupt { .. }) => {}
            _ => assert_eq!(stale, expected),
        }
        let now = parse_pid_file(&std::fs::read(&path).unwrap());
        assert_eq!(
            now.pid(),
            Some(std::process::id()),
            "our record replaced the stale one"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        drop(guard);
    }
}

#[test]
fn a_file_naming_a_live_unrelated_process_is_a_reused_pid() {
    let sleeper = KillOnDrop(
        Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep"),
    );
    let pid = sleeper.0.id();
    let probe = SysinfoProbe::new();
    poll_until("sleep to exec", || {
        probe
            .probe(pid)
            .snapshot()
            .is_some_and(|s| s.cmdline.first().is_some_and(|a| a.ends_with("sleep")))
    });
    let actual_start = probe.probe(pid).snapshot().unwrap().start_time;

    // By start time: the record says the process started in 2001.
    let tmp = tempfile::tempdir().unwrap();
    let record = format!(
        r#"{{"pid": {pid}, "start_time": "2025-08-06T14:30:00Z", "process_start_time": 1000000000,
            "process_info": {{"name": "warden"}}, "cmdline": ["warden", "start"]}}"#
    );
    std::fs::write(pid_file_path(tmp.path(), PORT), &record).unwrap();
    let (_guard, stale) = claim(tmp.path(), PORT, draft(), &probe).expect("reused pid is stale");
    assert!(
        matches!(stale, Some(StaleReason::PidReused { pid: p, evidence: ReuseEvidence::StartTimeDiffers { .. } }) if p == pid),
        "{stale:?}"
    );

    // By command line: same start time, another program.
    let tmp = tempfile::tempdir().unwrap();
    let record = format!(
        r#"{{"pid": {pid}, "start_time": "2025-08-06T14:30:00Z", "process_start_time": {},
            "process_info": {{"name": "warden"}}, "cmdline": ["warden", "start"]}}"#,
        actual_start.as_millis() / 1000
    );
    std::fs::write(pid_file_path(tmp.path(), PORT), &record).unwrap();
    let (_guard, stale) = claim(tmp.path(), PORT, draft(), &probe).expect("reused pid is stale");
    assert!(
        matches!(&stale, Some(StaleReason::PidReused { evidence: ReuseEvidence::CommandDiffers { actual, .. }, .. }) if actual.contains("sleep 30")),
        "{stale:?}"
    );
    assert!(
        probe.probe(pid).snapshot().is_some(),
        "the unrelated process was left alone"
    );
}

#[test]
fn a_zombie_is_stale_as_a_zombie() {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    let probe = SysinfoProbe::new();
    poll_until(
        "the child to become a zombie",
        || matches!(probe.probe(pid), ProbeOutcome::Found(s) if s.status == ProcessStatus::Zombie),
    );
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(pid_file_path(tmp.path(), PORT), format!("{pid}\n")).unwrap();
    let (_guard, stale) = claim(tmp.path(), PORT, draft(), &probe).expect("zombie file is stale");
    assert_eq!(stale, Some(StaleReason::Zombie { pid }));
    child.wait().expect("reap");
}

#[test]
fn sixteen_racing_claims_on_one_port_make_exactly_one_winner() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Arc::new(tmp.path().to_path_buf());
    let barrier = Arc::new(Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (dir, barrier) = (dir.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                claim(&dir, PORT, draft(), &FakeProbe::new())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<&PidGuard> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|(g, _)| g))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one winner");
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, PidFileError::Conflict { pid: Some(p), .. } if *p == std::process::id()),
                "losers name the winner: {e}"
            );
        }
    }
    winners[0].verify().expect("winner holds the file");
}

#[test]
fn release_removes_the_file_only_while_it_is_ours_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let (guard, _) = claim_here(tmp.path()).unwrap();
    let path = guard.path().to_path_buf();
    assert!(guard.release().unwrap(), "removed on clean exit");
    assert!(!path.exists());
    assert!(!guard.release().unwrap(), "second release does nothing");

    // Replaced by another inode: left alone.
    let (guard, _) = claim_here(tmp.path()).unwrap();
    let other = tmp.path().join("other.pid");
    std::fs::write(&other, b"4242\n").unwrap();
    std::fs::rename(&other, &path).unwrap();
    assert!(matches!(guard.verify(), Err(PidFileError::Lost { .. })));
    assert!(!guard.release().unwrap());
    assert_eq!(std::fs::read(&path).unwrap(), b"4242\n");
    std::fs::remove_file(&path).unwrap();

    // Same inode but rewritten by someone else: left alone.
    let (guard, _) = claim_here(tmp.path()).unwrap();
    std::fs::write(&path, b"4242\n").unwrap();
    assert!(!guard.release().unwrap());
    assert_eq!(std::fs::read(&path).unwrap(), b"4242\n");
}

#[test]
fn dropping_the_guard_keeps_the_file_and_the_next_claim_takes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (guard, _) = claim_here(tmp.path()).unwrap();
    let path = guard.path().to_path_buf();
    drop(guard); // as a crash would: lock gone, file kept
    assert!(path.exists());
    let (content, held) = read_pid_file(tmp.path(), PORT).unwrap().expect("file kept");
    assert_eq!(content.pid(), Some(std::process::id()));
    assert!(!held);
    let (guard, stale) =
        PidFile::claim(tmp.path(), PORT, draft(), &SysinfoProbe::new()).expect("reclaimed");
    assert_eq!(stale, None, "a file naming this very process is ours");
    guard.verify().unwrap();
}

#[test]
fn read_pid_file_reports_content_and_lock_without_taking_it() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(read_pid_file(tmp.path(), PORT).unwrap().is_none());
    let (guard, _) = claim_here(tmp.path()).unwrap();
    let (content, held) = PidFile::read(tmp.path(), PORT).unwrap().expect("present");
    assert!(held);
    assert_eq!(content.record().map(|r| r.pid), Some(std::process::id()));
    guard.verify().expect("reading did not disturb the holder");
    guard.release().unwrap();
    assert!(read_pid_file(tmp.path(), PORT).unwrap().is_none());
}

#[test]
fn a_removed_file_is_detected_and_a_new_claim_gets_a_new_inode() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, _) = claim_here(tmp.path()).unwrap();
    std::fs::remove_file(old.path()).unwrap();
    assert!(matches!(old.verify(), Err(PidFileError::Lost { .. })));
    let (new, stale) = claim_here(tmp.path()).expect("the path is free again");
    assert_eq!(stale, None);
    assert_ne!(new.locked_inode(), old.locked_inode());
    assert!(
        !old.release().unwrap(),
        "the old guard never removes the new file"
    );
    new.verify().unwrap();
}

/// Claimants race instances that remove their file on exit. Without the
/// inode recheck a claimant could lock the unlinked inode while another holds
/// the new file: two holders at once.
#[test]
fn removal_races_never_give_two_holders() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Arc::new(tmp.path().to_path_buf());
    let holders = Arc::new(AtomicUsize::new(0));
    let wins = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (dir, holders, wins) = (dir.clone(), holders.clone(), wins.clone());
            std::thread::spawn(move || {
                for _ in 0..100 {
                    match claim(&dir, PORT, draft(), &FakeProbe::new()) {
                        Ok((guard, _)) => {
                            assert_eq!(
                                holders.fetch_add(1, Ordering::SeqCst),
                                0,
                                "two holders at once"
                            );
                            guard.verify().expect("holder owns the path");
                            wins.fetch_add(1, Ordering::SeqCst);
                            holders.fetch_sub(1, Ordering::SeqCst);
                            guard.release().expect("release");
                        }
                        Err(PidFileError::Conflict { .. } | PidFileError::Unstable { .. }) => {}
                        Err(e) => panic!("unexpected: {e}"),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(wins.load(Ordering::SeqCst) > 0);
}

#[test]
fn a_claim_that_syncs_later_is_readable_and_locked_before_its_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let (guard, stale, pending) = PidFile::claim_sync_later(
        &dir,
        PORT,
        draft(),
        &SysinfoProbe::new(),
        std::time::Duration::from_secs(1),
    )
    .expect("claim");
    assert_eq!(stale, None);
    // Before the fsync, other processes already read the record and see the
    // lock held: the single-instance decision does not wait for the disk.
    let (content, held) = read_pid_file(&dir, PORT).unwrap().expect("written");
    assert!(held);
    assert_eq!(content.pid(), Some(std::process::id()));
    pending
        .run()
        .expect("fsync of the file and the new directory");
    guard.verify().expect("still ours after the sync");
    guard.release().unwrap();
    assert!(read_pid_file(&dir, PORT).unwrap().is_none());
}
