//! Connection state recovery, decided: event offsets, the log they index,
//! and the table of recoverable sessions.
//!
//! Every accepted event gets an [`Offset`]: an incrementing sequence number
//! within a stream named by an [`Epoch`] (Centrifugo's model). The epoch is
//! chosen when the stream is created (by the daemon, at random, once per
//! process: the log lives in memory), so an offset from a lost stream (a
//! previous process) can never be mistaken for a valid one: it is refused,
//! never answered with a silent gap. The offset's text (`<epoch>-<seq>`) is
//! both the event's `id` (inside its payload) and the Socket.IO connection
//! state recovery offset (the event's last argument).
//!
//! [`EventLog`] keeps the newest events, bounded in count and bytes, and
//! answers "everything after this offset" ([`EventLog::after`]) exactly or
//! with a [`Gap`]. [`SessionTable`] keeps the recoverable sessions (Socket.IO's
//! private session id, `pid`): open while a connection holds them, kept for
//! `max_disconnection` after it is lost, and resumed by a reconnect that names
//! the pid ([`SessionTable::resume`]). A client that received no event before
//! it was cut off (no offset: socket.io#5538) resumes from the offset its
//! session began at. A session may be resumed any number of times, also while
//! the server still counts its old connection (a late ping timeout: #4880).
//!
//! Not here: random pids and epochs, the clock, the sockets: the daemon's
//! hub (`daemon::hub`) makes them and passes them in. Time is data
//! ([`Moment`]).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::str::FromStr;
use std::time::Duration;

use crate::time::Moment;

/// Names one stream of offsets. A new epoch means the events of the old one
/// may be lost: its offsets never resume.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Epoch(pub u64);

/// An event's place in its stream: `<epoch as 16 hex digits>-<seq>`.
/// `seq` 0 is "before the first event"; the first event is 1.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Offset {
    pub epoch: Epoch,
    pub seq: u64,
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.epoch.0, self.seq)
    }
}

/// An offset that is not `<16 hex digits>-<decimal>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an event offset (expected <16 hex digits>-<sequence number>)")]
pub struct BadOffset;

impl FromStr for Offset {
    type Err = BadOffset;
    fn from_str(text: &str) -> Result<Self, BadOffset> {
        let (epoch, seq) = text.split_once('-').ok_or(BadOffset)?;
        let hex = |c: char| c.is_ascii_hexdigit();
        if epoch.len() != 16 || !epoch.chars().all(hex) {
            return Err(BadOffset);
        }
        if seq.is_empty() || !seq.chars().all(|c| c.is_ascii_digit()) {
            return Err(BadOffset);
        }
        Ok(Offset {
            epoch: Epoch(u64::from_str_radix(epoch, 16).map_err(|_| BadOffset)?),
            seq: seq.parse().map_err(|_| BadOffset)?,
        })
    }
}

/// Why the events after an offset cannot be given exactly.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Gap {
    /// The offset belongs to another stream (a previous process).
    OtherEpoch,
    /// No event with that offset was ever issued.
    Ahead,
    /// Some events after it are no longer kept (the log's bounds).
    Forgotten,
}

/// How an event numbered elsewhere fits the log ([`EventLog::push_at`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Numbered {
    /// The next one: kept.
    Next,
    /// Kept, after events this log never had.
    AfterGap,
    /// Already here: ignored.
    Known,
}

/// One page of [`EventLog::after`]: the events after an offset, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub events: Vec<T>,
    /// More events follow the last one given (the page's bounds).
    pub more: bool,
}

/// The newest events with their offsets, bounded in count and bytes; the
/// oldest is forgotten first.
#[derive(Clone, Debug)]
pub struct EventLog<T> {
    epoch: Epoch,
    /// `(seq, event, bytes)`, seq increasing.
    entries: VecDeque<(u64, T, usize)>,
    bytes: usize,
    next_seq: u64,
    /// The smallest offset seq whose successors are all kept: offsets from
    /// here to the newest resume exactly.
    resumable_from: u64,
    max_events: usize,
    max_bytes: usize,
}

impl<T: Clone> EventLog<T> {
    pub fn new(epoch: Epoch, max_events: usize, max_bytes: usize) -> Self {
        EventLog {
            epoch,
            entries: VecDeque::new(),
            bytes: 0,
            next_seq: 1,
            resumable_from: 0,
            max_events,
            max_bytes,
        }
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The offset of the newest event issued (seq 0 before the first).
    pub fn head(&self) -> Offset {
        self.offset(self.next_seq - 1)
    }

    /// The offset the next [`EventLog::push`] will issue.
    pub fn next_offset(&self) -> Offset {
        self.offset(self.next_seq)
    }

    fn offset(&self, seq: u64) -> Offset {
        Offset {
            epoch: self.epoch,
            seq,
        }
    }

    /// Issues the next offset to `event` (of `bytes` bytes) and keeps it,
    /// forgetting the oldest events to stay within the bounds. An event
    /// larger than the whole log is issued its offset but not kept: no
    /// offset before it resumes any more.
    pub fn push(&mut self, event: T, bytes: usize) -> Offset {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.max_events == 0 || bytes > self.max_bytes {
            self.entries.clear();
            self.bytes = 0;
            self.resumable_from = seq;
            return self.offset(seq);
        }
        while self.entries.len() >= self.max_events || self.bytes + bytes > self.max_bytes {
            match self.entries.pop_front() {
                Some((old_seq, _, old_bytes)) => {
                    self.bytes -= old_bytes;
                    self.resumable_from = self.resumable_from.max(old_seq);
                }
                None => break,
            }
        }
        self.bytes += bytes;
        self.entries.push_back((seq, event, bytes));
        self.offset(seq)
    }

    /// Starts over on another stream, `epoch`, whose events up to `head`
    /// are not here (a cluster node joining the shared stream, or the
    /// stream replaced): no offset of the old stream resumes any more, nor
    /// one of the new stream before `head`.
    pub fn restart_at(&mut self, epoch: Epoch, head: u64) {
        self.epoch = epoch;
        self.entries.clear();
        self.bytes = 0;
        self.next_seq = head.saturating_add(1);
        self.resumable_from = head;
    }

    /// Keeps an event numbered elsewhere (the cluster's shared stream), in
    /// its stream's order. `seq` already here (read twice) is ignored:
    /// [`Numbered::Known`]. A `seq` past the next one means the events in
    /// between never reached this log: they are a gap for every older
    /// offset ([`Numbered::AfterGap`]), and the event is kept.
    pub fn push_at(&mut self, seq: u64, event: T, bytes: usize) -> Numbered {
        if seq < self.next_seq {
            return Numbered::Known;
        }
        let numbered = if seq == self.next_seq {
            Numbered::Next
        } else {
            self.entries.clear();
            self.bytes = 0;
            self.resumable_from = seq - 1;
            self.next_seq = seq;
            Numbered::AfterGap
        };
        self.push(event, bytes);
        numbered
    }

    /// Whether the events after `offset` are all kept.
    pub fn check(&self, offset: Offset) -> Result<(), Gap> {
        if offset.epoch != self.epoch {
            return Err(Gap::OtherEpoch);
        }
        if offset.seq >= self.next_seq {
            return Err(Gap::Ahead);
        }
        if offset.seq < self.resumable_from {
            return Err(Gap::Forgotten);
        }
        Ok(())
    }

    /// How many events follow `offset`, if all are kept.
    pub fn count_after(&self, offset: Offset) -> Result<usize, Gap> {
        self.check(offset)?;
        let start = self
            .entries
            .partition_point(|(seq, _, _)| *seq <= offset.seq);
        Ok(self.entries.len() - start)
    }

    /// The oldest offset that still resumes: every kept event follows it.
    pub fn oldest_resumable(&self) -> Offset {
        self.offset(self.resumable_from)
    }

    /// The events after `offset`, oldest first: at most `limit` and
    /// `max_bytes` in all (at least one if any follows and `limit > 0`),
    /// `more` when some were left for a next page. A gap is an error, never
    /// a silently shorter answer.
    pub fn after(&self, offset: Offset, limit: usize, max_bytes: usize) -> Result<Page<T>, Gap> {
        self.check(offset)?;
        let start = self
            .entries
            .partition_point(|(seq, _, _)| *seq <= offset.seq);
        let mut bytes = 0usize;
        let mut events = Vec::new();
        for (_, event, size) in self.entries.iter().skip(start) {
            bytes = bytes.saturating_add(*size);
            if events.len() >= limit || (bytes > max_bytes && !events.is_empty()) {
                return Ok(Page { events, more: true });
            }
            events.push(event.clone());
        }
        Ok(Page {
            events,
            more: false,
        })
    }

    /// The newest events, at most `limit` and `max_bytes` in all, oldest first.
    pub fn newest(&self, limit: usize, max_bytes: usize) -> Vec<T> {
        let mut bytes = 0usize;
        let mut picked: Vec<T> = self
            .entries
            .iter()
            .rev()
            .take(limit)
            .take_while(|(_, _, size)| {
                bytes = bytes.saturating_add(*size);
                bytes <= max_bytes
            })
            .map(|(_, event, _)| event.clone())
            .collect();
        picked.reverse();
        picked
    }

    /// Kept events and their total bytes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Why a reconnect does not resume its session (it gets a new one).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such session: never issued, expired, or evicted.
    UnknownSession,
    /// The events after the client's offset cannot all be given.
    Gap(Gap),
    /// The client missed more events than one replay gives.
    TooMany,
    /// The client's offset is not an offset at all.
    BadOffset,
}

/// Bounds of a [`SessionTable`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// How long a session outlives its connection.
    pub max_disconnection: Duration,
    /// Sessions kept at most; past it the one disconnected longest ago is
    /// forgotten (counted as expired). Connected sessions are never
    /// forgotten for this bound.
    pub max_sessions: usize,
    /// Events one resume replays at most; a client that missed more gets a
    /// new session (and can page through `get_history` instead).
    pub max_replay_events: usize,
}

/// What the table has done so far.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionCounters {
    pub opened: u64,
    pub recovered: u64,
    pub expired: u64,
    pub refused: u64,
    pub replayed_events: u64,
}

#[derive(Clone, Debug)]
struct Session<C> {
    /// The connection holding it, if any.
    conn: Option<C>,
    /// When its connection was lost (while `conn` is `None`).
    disconnected_at: Option<Moment>,
    /// The stream's head when the session began: a client with no offset
    /// (it received nothing) resumes from here.
    began: Offset,
}

/// The recoverable sessions, by pid, and the connection holding each.
#[derive(Clone, Debug)]
pub struct SessionTable<C> {
    limits: SessionLimits,
    sessions: HashMap<String, Session<C>>,
    by_conn: HashMap<C, String>,
    counters: SessionCounters,
}

impl<C: Copy + Eq + Hash> SessionTable<C> {
    pub fn new(limits: SessionLimits) -> Self {
        SessionTable {
            limits,
            sessions: HashMap::new(),
            by_conn: HashMap::new(),
            counters: SessionCounters::default(),
        }
    }

    /// Sessions kept now (connected or awaiting their client).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn counters(&self) -> SessionCounters {
        self.counters
    }

    /// Counts a reconnect refused before the table was asked (its offset
    /// did not parse).
    pub fn count_refused(&mut self) {
        self.counters.refused += 1;
    }

    /// Counts events replayed to a resumed session.
    pub fn count_replayed(&mut self, events: usize) {
        self.counters.replayed_events += events as u64;
    }

    /// Opens a new session `pid` held by `conn`, beginning at `began` (the
    /// stream's head now). A pid already in use is replaced.
    pub fn open(&mut self, pid: String, conn: C, began: Offset, now: Moment) {
        self.expire(now);
        self.release(conn, now);
        if let Some(old) = self.sessions.remove(&pid)
            && let Some(old_conn) = old.conn
        {
            self.by_conn.remove(&old_conn);
        }
        self.by_conn.insert(conn, pid.clone());
        self.sessions.insert(
            pid,
            Session {
                conn: Some(conn),
                disconnected_at: None,
                began,
            },
        );
        self.counters.opened += 1;
        self.evict_over_limit();
    }

    /// Keeps session `pid`, opened elsewhere (another cluster node) at
    /// `began` and lost there, as one awaiting its client since `now`, so
    /// that [`SessionTable::resume`] can resume it here. A pid already kept
    /// is left as it is.
    pub fn adopt(&mut self, pid: String, began: Offset, now: Moment) {
        self.expire(now);
        if self.sessions.contains_key(&pid) {
            return;
        }
        self.sessions.insert(
            pid,
            Session {
                conn: None,
                disconnected_at: Some(now),
                began,
            },
        );
        self.evict_over_limit();
    }

    /// The session `conn` holds, and where it began.
    pub fn held_by(&self, conn: C) -> Option<(&str, Offset)> {
        let pid = self.by_conn.get(&conn)?;
        let session = self.sessions.get(pid)?;
        Some((pid.as_str(), session.began))
    }

    /// Every session a connection holds now, and where each began.
    pub fn connected(&self) -> Vec<(String, Offset)> {
        self.by_conn
            .values()
            .filter_map(|pid| Some((pid.clone(), self.sessions.get(pid)?.began)))
            .collect()
    }

    /// Sessions that began at `from` begin at `to` instead: the stream they
    /// began in was replaced before it had any event (a cluster node that
    /// joins the shared stream after its first clients connected), so they
    /// missed nothing of the new one from `to` on.
    pub fn rebase(&mut self, from: Offset, to: Offset) {
        for session in self.sessions.values_mut() {
            if session.began == from {
                session.began = to;
            }
        }
    }

    /// Where session `pid` began, if it is kept.
    pub fn began(&self, pid: &str) -> Option<Offset> {
        self.sessions.get(pid).map(|session| session.began)
    }

    /// Resumes session `pid` on `conn`: the offset to replay from (the
    /// client's, or the session's beginning if it sent none), checked against
    /// `log`. A refused reconnect changes nothing (the caller opens a new
    /// session). The session's old connection, if the server still counts
    /// one, no longer holds it.
    pub fn resume<T: Clone>(
        &mut self,
        pid: &str,
        offset: Option<Offset>,
        conn: C,
        now: Moment,
        log: &EventLog<T>,
    ) -> Result<Offset, Refusal> {
        self.expire(now);
        let Some(session) = self.sessions.get(pid) else {
            self.counters.refused += 1;
            return Err(Refusal::UnknownSession);
        };
        let from = offset.unwrap_or(session.began);
        match log.count_after(from) {
            Err(gap) => {
                self.counters.refused += 1;
                return Err(Refusal::Gap(gap));
            }
            Ok(missed) if missed > self.limits.max_replay_events => {
                self.counters.refused += 1;
                return Err(Refusal::TooMany);
            }
            Ok(_) => {}
        }
        let old_conn = session.conn;
        if let Some(old) = old_conn {
            self.by_conn.remove(&old);
        }
        self.release(conn, now);
        if let Some(session) = self.sessions.get_mut(pid) {
            session.conn = Some(conn);
            session.disconnected_at = None;
        }
        self.by_conn.insert(conn, pid.to_owned());
        self.counters.recovered += 1;
        Ok(from)
    }

    /// The session `conn` held, if any, is now awaiting its client.
    pub fn release(&mut self, conn: C, now: Moment) {
        if let Some(pid) = self.by_conn.remove(&conn)
            && let Some(session) = self.sessions.get_mut(&pid)
        {
            session.conn = None;
            session.disconnected_at = Some(now);
        }
    }

    /// Every session's connection is lost at `now` (the server closed them all).
    pub fn release_all(&mut self, now: Moment) {
        let conns: Vec<C> = self.by_conn.keys().copied().collect();
        for conn in conns {
            self.release(conn, now);
        }
    }

    /// Forgets the sessions disconnected for `max_disconnection` or longer.
    pub fn expire(&mut self, now: Moment) {
        let max = self.limits.max_disconnection;
        let before = self.sessions.len();
        self.sessions.retain(|_, session| {
            session
                .disconnected_at
                .is_none_or(|at| now.saturating_since(at) < max)
        });
        self.counters.expired += (before - self.sessions.len()) as u64;
    }

    /// Whether `pid` is kept now.
    pub fn contains(&self, pid: &str) -> bool {
        self.sessions.contains_key(pid)
    }

    fn evict_over_limit(&mut self) {
        while self.sessions.len() > self.limits.max_sessions {
            let oldest = self
                .sessions
                .iter()
                .filter_map(|(pid, s)| s.disconnected_at.map(|at| (at, pid)))
                .min()
                .map(|(_, pid)| pid.clone());
            // Every session is connected: the bound is at least the clients
            // the hub admits, so keep them all rather than cut one off.
            let Some(pid) = oldest else { break };
            self.sessions.remove(&pid);
            self.counters.expired += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Epoch = Epoch(0xabc);

    fn limits() -> SessionLimits {
        SessionLimits {
            max_disconnection: Duration::from_secs(120),
            max_sessions: 10,
            max_replay_events: 100,
        }
    }

    #[test]
    fn an_offset_reads_back_from_its_text() {
        let offset = Offset { epoch: E, seq: 42 };
        assert_eq!(offset.to_string(), "0000000000000abc-42");
        assert_eq!("0000000000000abc-42".parse(), Ok(offset));
        for bad in [
            "",
            "abc-1",
            "0000000000000abc-",
            "0000000000000abc-x",
            "zz00000000000abc-1",
            "0000000000000abc-+1",
        ] {
            assert_eq!(bad.parse::<Offset>(), Err(BadOffset), "{bad}");
        }
    }

    #[test]
    fn the_events_after_an_offset_are_exact_or_a_gap() {
        let mut log = EventLog::new(E, 3, 1_000);
        let first = log.head();
        for n in 1..=5u64 {
            assert_eq!(log.push(n, 10).seq, n);
        }
        // 3, 4, 5 kept: offsets 2..=5 resume.
        assert_eq!(log.after(first, 10, 1_000), Err(Gap::Forgotten));
        assert_eq!(
            log.after(Offset { epoch: E, seq: 1 }, 10, 1_000),
            Err(Gap::Forgotten)
        );
        let page = log.after(Offset { epoch: E, seq: 2 }, 10, 1_000).unwrap();
        assert_eq!(
            page,
            Page {
                events: vec![3, 4, 5],
                more: false
            }
        );
        let page = log.after(Offset { epoch: E, seq: 3 }, 1, 1_000).unwrap();
        assert_eq!(
            page,
            Page {
                events: vec![4],
                more: true
            }
        );
        assert_eq!(
            log.after(log.head(), 10, 1_000).unwrap().events,
            Vec::<u64>::new()
        );
        assert_eq!(
            log.after(Offset { epoch: E, seq: 6 }, 10, 1_000),
            Err(Gap::Ahead)
        );
        assert_eq!(
            log.after(
                Offset {
                    epoch: Epoch(1),
                    seq: 4
                },
                10,
                1_000
            ),
            Err(Gap::OtherEpoch)
        );
    }

    #[test]
    fn an_event_too_large_to_keep_breaks_every_older_offset() {
        let mut log = EventLog::new(E, 10, 100);
        log.push(1, 10);
        let big = log.push(2, 1_000);
        assert_eq!(log.check(Offset { epoch: E, seq: 1 }), Err(Gap::Forgotten));
        assert_eq!(log.after(big, 10, 100).unwrap().events, Vec::<u64>::new());
    }

    #[test]
    fn a_session_resumes_again_and_again_then_expires() {
        let mut log = EventLog::new(E, 100, 10_000);
        let mut table = SessionTable::new(limits());
        table.open("p".into(), 1u32, log.head(), Moment::ZERO);
        log.push("a", 1);
        table.release(1, Moment::from_secs(1));
        // No offset (it received nothing): from the session's beginning.
        let from = table
            .resume("p", None, 2, Moment::from_secs(2), &log)
            .unwrap();
        assert_eq!(log.after(from, 10, 100).unwrap().events, vec!["a"]);
        // Still counted as connected (a late ping timeout): resumes anyway.
        let from = table
            .resume("p", Some(log.head()), 3, Moment::from_secs(3), &log)
            .unwrap();
        assert_eq!(from, log.head());
        // The old connection's late disconnect does not release it.
        table.release(2, Moment::from_secs(4));
        table.release(3, Moment::from_secs(5));
        assert!(
            table
                .resume("p", Some(log.head()), 4, Moment::from_secs(124), &log)
                .is_ok()
        );
        table.release(4, Moment::from_secs(130));
        assert_eq!(
            table.resume("p", Some(log.head()), 5, Moment::from_secs(250), &log),
            Err(Refusal::UnknownSession)
        );
        let counters = table.counters();
        assert_eq!(
            (counters.recovered, counters.expired, counters.refused),
            (3, 1, 1)
        );
    }

    #[test]
    fn events_numbered_elsewhere_keep_their_numbers_and_a_hole_is_a_gap() {
        let mut log = EventLog::new(E, 10, 1_000);
        log.restart_at(E, 7);
        assert_eq!(log.head(), Offset { epoch: E, seq: 7 });
        assert_eq!(log.check(Offset { epoch: E, seq: 6 }), Err(Gap::Forgotten));
        assert_eq!(log.push_at(8, 8, 1), Numbered::Next);
        assert_eq!(log.push_at(8, 8, 1), Numbered::Known);
        assert_eq!(log.push_at(9, 9, 1), Numbered::Next);
        let seven = Offset { epoch: E, seq: 7 };
        assert_eq!(log.after(seven, 10, 100).unwrap().events, vec![8, 9]);
        // 10 and 11 never arrived: nothing before 11 resumes.
        assert_eq!(log.push_at(12, 12, 1), Numbered::AfterGap);
        assert_eq!(log.check(seven), Err(Gap::Forgotten));
        let eleven = Offset { epoch: E, seq: 11 };
        assert_eq!(log.after(eleven, 10, 100).unwrap().events, vec![12]);
        // Another stream: the old one's offsets are refused.
        log.restart_at(Epoch(9), 0);
        assert_eq!(log.check(eleven), Err(Gap::OtherEpoch));
    }

    #[test]
    fn a_session_opened_elsewhere_is_adopted_then_resumes_from_its_beginning() {
        let mut log = EventLog::new(E, 10, 1_000);
        log.restart_at(E, 3);
        let began = log.head();
        log.push_at(4, "d", 1);
        let mut table = SessionTable::new(limits());
        table.adopt("p".into(), began, Moment::ZERO);
        assert_eq!(table.began("p"), Some(began));
        let from = table.resume("p", None, 1u32, Moment::ZERO, &log).unwrap();
        assert_eq!(log.after(from, 10, 100).unwrap().events, vec!["d"]);
        // Adopted sessions expire like any other.
        table.release(1, Moment::from_secs(1));
        table.adopt("q".into(), began, Moment::from_secs(1));
        assert_eq!(
            table.resume("q", None, 2, Moment::from_secs(200), &log),
            Err(Refusal::UnknownSession)
        );
    }

    #[test]
    fn past_the_bound_the_longest_disconnected_session_goes_first() {
        let log: EventLog<u8> = EventLog::new(E, 1, 1);
        let mut table = SessionTable::new(SessionLimits {
            max_sessions: 2,
            ..limits()
        });
        table.open("a".into(), 1u32, log.head(), Moment::ZERO);
        table.open("b".into(), 2, log.head(), Moment::ZERO);
        table.release(2, Moment::from_secs(1));
        table.release(1, Moment::from_secs(2));
        table.open("c".into(), 3, log.head(), Moment::from_secs(3));
        assert!(table.contains("a") && table.contains("c") && !table.contains("b"));
    }
}
