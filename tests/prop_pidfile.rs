//! Property tests of the pure PID lifecycle and parser.
//!
//! - the parser never panics on arbitrary bytes, and every record it writes
//!   parses back to itself;
//! - a claimant whose lock is busy never wins, whatever the file and the probe;
//! - decisions are a function of the facts (replaying gives the same answer);
//! - claimants, crashes and releases interleaved at random over a model of the
//!   OS lock, the file (JSON records, as the daemon writes them) and the
//!   process table (where a dead pid is reused by a new warden or by an
//!   unrelated program) never leave two claimants holding the file, and
//!   neither a crashed holder nor a reuse of its pid blocks the next start.

use proptest::prelude::*;

use warden::pidfile::{
    ClaimDecision, ClaimFacts, Claimant, Lifecycle, LockObservation, Phase, PidFileContent,
    PidRecord, ProcessInfo, ReleaseAction, decide, parse_pid_file,
};
use warden::probe::{ProbeOutcome, ProcessSnapshot, ProcessStatus};
use warden::time::WallTime;

fn status() -> impl Strategy<Value = ProcessStatus> {
    prop_oneof![
        Just(ProcessStatus::Running),
        Just(ProcessStatus::Sleeping),
        Just(ProcessStatus::Idle),
        Just(ProcessStatus::Stopped),
        Just(ProcessStatus::Zombie),
        Just(ProcessStatus::Dead),
        Just(ProcessStatus::Other),
    ]
}

fn cmdline() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop_oneof![
            Just("warden".to_string()),
            Just("start".to_string()),
            "[a-z]{1,6}"
        ],
        0..3,
    )
}

fn record(pid: impl Strategy<Value = u32>) -> impl Strategy<Value = PidRecord> {
    (
        pid,
        any::<u16>(),
        "[a-z.]{0,12}",
        0u64..4_000_000_000_000,
        prop::option::of(0u64..4_000_000_000),
        status(),
        -1.0f32..500.0,
        0.0f64..10_000.0,
        any::<bool>(),
        cmdline(),
    )
        .prop_map(
            |(pid, port, host, start_ms, pst, status, cpu, mem, lock, cmdline)| PidRecord {
                pid,
                server_id: PidRecord::server_id_for_port(port),
                port,
                host,
                start_time: WallTime::from_millis(start_ms),
                process_start_time: pst.map(WallTime::from_secs),
                version: "0.1.0".into(),
                process_info: ProcessInfo {
                    name: "warden".into(),
                    status,
                    cpu_percent: cpu,
                    memory_mb: mem,
                },
                lock_acquired: lock,
                created_by: "warden".into(),
                cmdline,
                invocation: None,
            },
        )
}

const PIDS: [u32; 4] = [100, 200, 300, 400];

fn content() -> impl Strategy<Value = PidFileContent> {
    prop_oneof![
        Just(PidFileContent::Absent),
        Just(PidFileContent::Empty),
        "[a-z]{0,8}".prop_map(|detail| PidFileContent::Corrupt { detail }),
        prop::sample::select(&PIDS[..]).prop_map(PidFileContent::Legacy),
        record(prop::sample::select(&PIDS[..])).prop_map(PidFileContent::Record),
    ]
}

fn probe_outcome() -> impl Strategy<Value = Option<ProbeOutcome>> {
    prop_oneof![
        Just(None),
        Just(Some(ProbeOutcome::NotFound)),
        Just(Some(ProbeOutcome::Unavailable {
            reason: "no /proc".into()
        })),
        (
            prop::sample::select(&PIDS[..]),
            status(),
            0u64..4_000_000_000,
            cmdline()
        )
            .prop_map(|(pid, status, start, cmdline)| {
                let mut s = ProcessSnapshot::new(pid, "warden", &[], WallTime::from_secs(start))
                    .with_status(status);
                s.cmdline = cmdline;
                Some(ProbeOutcome::Found(s))
            }),
    ]
}

fn facts() -> impl Strategy<Value = ClaimFacts> {
    (
        prop_oneof![Just(LockObservation::Acquired), Just(LockObservation::Busy)],
        content(),
        probe_outcome(),
        prop::option::of(0u64..4_000_000_000),
        prop::sample::select(&PIDS[..]),
        prop::option::of(0u64..4_000_000_000),
    )
        .prop_map(
            |(lock, content, probe, modified, me, my_start)| ClaimFacts {
                lock,
                content,
                recorded_process: probe,
                file_modified: modified.map(WallTime::from_secs),
                recorded_listening: None,
                me: Claimant {
                    pid: me,
                    process_start_time: my_start.map(WallTime::from_secs),
                },
                now: WallTime::from_secs(4_000_000_000),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let parsed = parse_pid_file(&bytes);
        if let Some(pid) = parsed.pid() {
            prop_assert!((1..=warden::pidfile::MAX_PLAUSIBLE_PID).contains(&pid));
        }
    }

    #[test]
    fn parser_never_panics_on_json_like_text(text in r#"[{}\[\]":, 0-9a-z_\-.+eE\n]{0,200}"#) {
        let _ = parse_pid_file(text.as_bytes());
        let wrapped = format!(r#"{{"pid": 5, "start_time": "2025-01-01T00:00:00Z", "process_info": {{}}, "x": {text}}}"#);
        let _ = parse_pid_file(wrapped.as_bytes());
    }

    #[test]
    fn written_records_parse_back_to_themselves(r in record(1u32..=warden::pidfile::MAX_PLAUSIBLE_PID)) {
        let parsed = parse_pid_file(r.to_json_pretty().as_bytes());
        let PidFileContent::Record(back) = parsed else {
            return Err(TestCaseError::fail(format!("not a record: {parsed:?}")));
        };
        prop_assert_eq!(back.pid, r.pid);
        prop_assert_eq!(back.start_time, r.start_time);
        prop_assert_eq!(back.process_start_time, r.process_start_time);
        prop_assert_eq!(&back.cmdline, &r.cmdline);
        prop_assert_eq!(back.process_info.status, r.process_info.status);
    }

    #[test]
    fn a_busy_lock_never_wins(mut f in facts()) {
        f.lock = LockObservation::Busy;
        prop_assert!(!decide(&f).wins());
        let mut lc = Lifecycle::new();
        prop_assert!(!lc.claim(f).wins());
        prop_assert_eq!(lc.phase(), Phase::Refused);
    }

    #[test]
    fn two_claimants_with_the_same_facts_never_both_win(f in facts()) {
        // The same observations, one with the lock and one without (the OS
        // grants it to one open file description only).
        let mut a = f.clone();
        a.lock = LockObservation::Acquired;
        let mut b = f;
        b.lock = LockObservation::Busy;
        let (mut la, mut lb) = (Lifecycle::new(), Lifecycle::new());
        let wins = [la.claim(a).wins(), lb.claim(b).wins()];
        prop_assert!(!(wins[0] && wins[1]));
        prop_assert!(!wins[1]);
    }

    #[test]
    fn decisions_are_a_function_of_the_facts(f in facts()) {
        prop_assert_eq!(decide(&f), decide(&f.clone()));
        let mut lc = Lifecycle::new();
        prop_assert_eq!(lc.claim(f.clone()), decide(&f));
        prop_assert_eq!(lc.phase() == Phase::Held, decide(&f).wins());
    }

    #[test]
    fn stale_and_free_only_with_the_lock(f in facts()) {
        match decide(&f) {
            ClaimDecision::Conflict { .. } => {}
            _ => prop_assert_eq!(f.lock, LockObservation::Acquired),
        }
    }

    #[test]
    fn interleaved_claims_crashes_and_releases_never_give_two_holders(
        ops in prop::collection::vec((0usize..3, 0u8..6), 1..60)
    ) {
        let mut world = World::new(3);
        for (who, op) in ops {
            match op {
                0 | 1 => world.claim(who),
                2 => world.release(who),
                3 => world.crash(who, false),
                4 => world.crash(who, true),
                _ => world.stranger_takes_a_dead_pid(),
            }
            let held: Vec<usize> = (0..3).filter(|i| world.claimants[*i].lifecycle.phase() == Phase::Held).collect();
            prop_assert!(held.len() <= 1, "two holders: {:?}", held);
            if let [h] = held[..] {
                prop_assert_eq!(world.lock_holder, Some(h));
                prop_assert_eq!(world.file.pid(), Some(world.claimants[h].pid));
            }
        }
    }
}

/// A model of one PID file, its OS lock and the process table.
struct World {
    lock_holder: Option<usize>,
    file: PidFileContent,
    claimants: Vec<Model>,
    /// Live processes that are not warden: (pid, start time).
    strangers: Vec<(u32, WallTime)>,
    next_pid: u32,
    /// Processes started so far: start times are 10 s apart (more than
    /// `START_TIME_TOLERANCE`), so a reused pid has another start time.
    started: u64,
    dead: Vec<u32>,
}

struct Model {
    pid: u32,
    start: WallTime,
    lifecycle: Lifecycle,
}

impl World {
    fn new(n: usize) -> Self {
        let mut world = World {
            lock_holder: None,
            file: PidFileContent::Absent,
            claimants: Vec::new(),
            strangers: Vec::new(),
            next_pid: 1000,
            started: 0,
            dead: Vec::new(),
        };
        for _ in 0..n {
            let pid = world.fresh_pid();
            let model = world.process(pid);
            world.claimants.push(model);
        }
        world
    }

    fn fresh_pid(&mut self) -> u32 {
        self.next_pid += 1;
        self.next_pid
    }

    fn start_time(&mut self) -> WallTime {
        self.started += 1;
        WallTime::from_secs(1_000 + 10 * self.started)
    }

    /// A new warden process with `pid`.
    fn process(&mut self, pid: u32) -> Model {
        Model {
            pid,
            start: self.start_time(),
            lifecycle: Lifecycle::new(),
        }
    }

    fn probe(&self, pid: u32) -> ProbeOutcome {
        if let Some(c) = self.claimants.iter().find(|c| c.pid == pid) {
            return ProbeOutcome::Found(ProcessSnapshot::new(
                pid,
                "warden",
                &["warden", "start"],
                c.start,
            ));
        }
        match self.strangers.iter().find(|(p, _)| *p == pid) {
            Some((_, start)) => {
                ProbeOutcome::Found(ProcessSnapshot::new(pid, "bash", &["bash"], *start))
            }
            None => ProbeOutcome::NotFound,
        }
    }

    /// The record the daemon writes for claimant `who`.
    fn record(&self, who: usize) -> PidRecord {
        let c = &self.claimants[who];
        PidRecord {
            pid: c.pid,
            server_id: PidRecord::server_id_for_port(8000),
            port: 8000,
            host: "127.0.0.1".into(),
            start_time: WallTime::from_secs(10_000),
            process_start_time: Some(c.start),
            version: "0.1.0".into(),
            process_info: ProcessInfo {
                name: "warden".into(),
                status: ProcessStatus::Running,
                cpu_percent: 0.0,
                memory_mb: 10.0,
            },
            lock_acquired: true,
            created_by: "warden".into(),
            cmdline: vec!["warden".into(), "start".into()],
            invocation: None,
        }
    }

    /// The file does not name a live writer: nothing lives at its pid, or
    /// what lives there is not the process that wrote it (another start
    /// time: the pid was reused), or it names the claimant itself.
    fn leftover(&self, me: u32) -> bool {
        let Some(pid) = self.file.pid() else {
            return true;
        };
        let recorded_start = self.file.record().and_then(|r| r.process_start_time);
        pid == me
            || match self.probe(pid) {
                ProbeOutcome::Found(s) => recorded_start.is_some_and(|t| t != s.start_time),
                _ => true,
            }
    }

    fn claim(&mut self, who: usize) {
        if self.claimants[who].lifecycle.phase() == Phase::Held {
            return;
        }
        let lock = match self.lock_holder {
            None => {
                self.lock_holder = Some(who);
                LockObservation::Acquired
            }
            Some(_) => LockObservation::Busy,
        };
        let (me, my_start) = (self.claimants[who].pid, self.claimants[who].start);
        let facts = ClaimFacts {
            lock,
            content: self.file.clone(),
            recorded_process: self.file.pid().filter(|p| *p != me).map(|p| self.probe(p)),
            file_modified: None,
            recorded_listening: None,
            me: Claimant {
                pid: me,
                process_start_time: Some(my_start),
            },
            now: WallTime::from_secs(10_000),
        };
        let leftover = self.leftover(me);
        let mut lc = std::mem::take(&mut self.claimants[who].lifecycle);
        let decision = lc.claim(facts);
        // Liveness: a free lock over a leftover file (crash, release, a
        // reused pid) never blocks a start.
        assert!(
            lock == LockObservation::Busy || !leftover || decision.wins(),
            "a leftover file blocked the next start: {decision:?}\nfile: {:?}",
            self.file
        );
        self.claimants[who].lifecycle = lc;
        if decision.wins() {
            self.file = PidFileContent::Record(self.record(who));
        } else if lock == LockObservation::Acquired {
            self.lock_holder = None; // the adapter drops the descriptor
        }
    }

    fn release(&mut self, who: usize) {
        let me = self.claimants[who].pid;
        let still_ours = self.lock_holder == Some(who) && self.file.pid() == Some(me);
        if self.claimants[who].lifecycle.release(still_ours) == ReleaseAction::RemoveFile {
            self.file = PidFileContent::Absent;
        }
        if self.lock_holder == Some(who) {
            self.lock_holder = None;
        }
    }

    /// kill -9: the lock goes with the process, the file stays; the slot is
    /// restarted as a new process, with a new pid or (`reuse`) a dead one.
    fn crash(&mut self, who: usize, reuse: bool) {
        if self.lock_holder == Some(who) {
            self.lock_holder = None;
        }
        self.dead.push(self.claimants[who].pid);
        let pid = match (reuse, self.dead.first().copied()) {
            (true, Some(pid)) => {
                self.dead.retain(|p| *p != pid);
                pid
            }
            _ => self.fresh_pid(),
        };
        self.claimants[who] = self.process(pid);
    }

    /// An unrelated program starts and gets the oldest dead pid.
    fn stranger_takes_a_dead_pid(&mut self) {
        if self.dead.is_empty() {
            return;
        }
        let pid = self.dead.remove(0);
        let start = self.start_time();
        self.strangers.push((pid, start));
    }
}
