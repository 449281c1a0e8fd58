//! Property tests for connection state recovery's core (`warden::sessions`):
//! after any interleaving of events, connects, disconnects, reconnects (with
//! the client's own last offset, none if it received nothing, or a forged
//! one), clock advances and lost streams (a new epoch), every reconnect is
//! either a resume whose replay makes the client's sequence exactly every
//! event since its session began, once, in order, or a clean refusal for a
//! stated reason that really holds; and a reconnect that should resume does.
//! 512 cases, up to 150 operations each.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use warden::sessions::{Epoch, EventLog, Gap, Offset, Refusal, SessionLimits, SessionTable};
use warden::time::Moment;

const CLIENTS: usize = 4;
const MAX_DISCONNECTION_MS: u64 = 10_000;

#[derive(Clone, Debug)]
enum Op {
    Push,
    Disconnect(usize),
    Reconnect(usize),
    ForgedReconnect(usize),
    Advance(u64),
    /// The stream is lost (a process with in-memory history restarted):
    /// a new log with a new epoch, the sessions kept.
    LoseStream,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => Just(Op::Push),
        3 => (0..CLIENTS).prop_map(Op::Disconnect),
        4 => (0..CLIENTS).prop_map(Op::Reconnect),
        1 => (0..CLIENTS).prop_map(Op::ForgedReconnect),
        3 => prop_oneof![0u64..2_000, 0u64..15_000].prop_map(Op::Advance),
        1 => Just(Op::LoseStream),
    ]
}

/// One client as the protocol sees it.
#[derive(Debug)]
struct Client {
    pid: String,
    conn: u64,
    connected: bool,
    disconnected_at: Moment,
    /// Seqs received in the current session.
    received: Vec<u64>,
    /// Its last offset (socket.io-client's `_lastOffset`).
    last: Option<Offset>,
    /// The log's head when its session began.
    began: Offset,
}

struct World {
    now: Moment,
    log: EventLog<u64>,
    table: SessionTable<u64>,
    clients: Vec<Client>,
    next_conn: u64,
    next_pid: u64,
    max_replay: usize,
}

impl World {
    fn new(max_events: usize, max_replay: usize) -> World {
        let log = EventLog::new(Epoch(1), max_events, usize::MAX);
        let table = SessionTable::new(SessionLimits {
            max_disconnection: Duration::from_millis(MAX_DISCONNECTION_MS),
            max_sessions: 1_000,
            max_replay_events: max_replay,
        });
        let mut world = World {
            now: Moment::ZERO,
            log,
            table,
            clients: Vec::new(),
            next_conn: 0,
            next_pid: 0,
            max_replay,
        };
        for _ in 0..CLIENTS {
            let client = world.new_session();
            world.clients.push(client);
        }
        world
    }

    fn new_session(&mut self) -> Client {
        self.next_pid += 1;
        self.next_conn += 1;
        let pid = format!("pid-{}", self.next_pid);
        let began = self.log.head();
        self.table
            .open(pid.clone(), self.next_conn, began, self.now);
        Client {
            pid,
            conn: self.next_conn,
            connected: true,
            disconnected_at: self.now,
            received: Vec::new(),
            last: None,
            began,
        }
    }

    /// Every event since `client`'s session began, if the log can say.
    fn expected(&self, client: &Client) -> Vec<u64> {
        (client.began.seq + 1..=self.log.head().seq).collect()
    }

    fn push(&mut self) {
        let seq = self.log.next_offset().seq;
        let offset = self.log.push(seq, 1);
        for client in self.clients.iter_mut().filter(|c| c.connected) {
            client.received.push(offset.seq);
            client.last = Some(offset);
        }
    }

    fn reconnect(
        &mut self,
        i: usize,
        offset: Option<Offset>,
        forged: bool,
    ) -> Result<(), TestCaseError> {
        self.next_conn += 1;
        let conn = self.next_conn;
        let pid = self.clients[i].pid.clone();
        let from_client = offset.unwrap_or(self.clients[i].began);
        let kept = self.table.contains(&pid);
        let within = self.clients[i].connected
            || self.now.saturating_since(self.clients[i].disconnected_at)
                < Duration::from_millis(MAX_DISCONNECTION_MS);
        let result = self.table.resume(&pid, offset, conn, self.now, &self.log);
        match result {
            Ok(from) => {
                prop_assert!(!forged, "a forged offset resumed");
                prop_assert_eq!(from, from_client);
                let page = self.log.after(from, usize::MAX, usize::MAX);
                let page = page
                    .map_err(|gap| TestCaseError::fail(format!("resumed into a gap: {gap:?}")))?;
                prop_assert!(!page.more);
                prop_assert!(page.events.len() <= self.max_replay);
                self.table.count_replayed(page.events.len());
                let client = &mut self.clients[i];
                client.received.extend(page.events.iter().copied());
                if let Some(&seq) = client.received.last() {
                    client.last = Some(Offset {
                        epoch: self.log.epoch(),
                        seq,
                    });
                }
                client.conn = conn;
                client.connected = true;
                let expected = self.expected(&self.clients[i]);
                prop_assert_eq!(
                    &self.clients[i].received,
                    &expected,
                    "not exactly the missed suffix"
                );
            }
            Err(why) => {
                match why {
                    Refusal::UnknownSession => {
                        prop_assert!(!kept || !within, "a kept, live session refused")
                    }
                    Refusal::Gap(Gap::OtherEpoch) => {
                        prop_assert_ne!(from_client.epoch, self.log.epoch())
                    }
                    Refusal::Gap(Gap::Ahead) => prop_assert!(from_client.seq > self.log.head().seq),
                    Refusal::Gap(Gap::Forgotten) => {
                        prop_assert!(from_client.seq < self.log.oldest_resumable().seq)
                    }
                    Refusal::TooMany => {
                        prop_assert!(self.log.count_after(from_client).unwrap() > self.max_replay)
                    }
                    Refusal::BadOffset => prop_assert!(false, "the table never parses"),
                }
                // A refused client gets a new session (as the hub does);
                // its old connection is gone.
                let old = self.clients[i].conn;
                self.table.release(old, self.now);
                let fresh = self.new_session();
                self.clients[i] = fresh;
            }
        }
        // A resume that should have happened did.
        if !forged && kept && within {
            let resumable = self
                .log
                .count_after(from_client)
                .is_ok_and(|n| n <= self.max_replay);
            prop_assert_eq!(
                result.is_ok(),
                resumable,
                "refused {:?} though resumable",
                result
            );
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Push => self.push(),
            Op::Disconnect(i) => {
                if self.clients[i].connected {
                    let conn = self.clients[i].conn;
                    self.table.release(conn, self.now);
                    self.clients[i].connected = false;
                    self.clients[i].disconnected_at = self.now;
                }
            }
            Op::Reconnect(i) => {
                let offset = self.clients[i].last;
                self.reconnect(i, offset, false)?;
            }
            Op::ForgedReconnect(i) => {
                let forged = Offset {
                    epoch: Epoch(self.log.epoch().0 ^ 0xdead),
                    seq: self.log.head().seq,
                };
                let before = self.table.counters().recovered;
                let pid = self.clients[i].pid.clone();
                let result = self
                    .table
                    .resume(&pid, Some(forged), u64::MAX, self.now, &self.log);
                prop_assert!(result.is_err(), "a forged offset resumed");
                prop_assert_eq!(self.table.counters().recovered, before);
            }
            Op::Advance(ms) => {
                self.now = self.now + Duration::from_millis(ms);
            }
            Op::LoseStream => {
                let epoch = Epoch(self.log.epoch().0 + 1);
                self.log = EventLog::new(epoch, 16, usize::MAX);
                // Connected clients are cut off by the lost process.
                for i in 0..CLIENTS {
                    self.apply(&Op::Disconnect(i))?;
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/prop_sessions.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_reconnect_replays_exactly_the_missed_suffix_or_is_refused_for_a_true_reason(
        max_events in 1usize..24,
        max_replay in 1usize..30,
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        let mut world = World::new(max_events, max_replay);
        for op in &ops {
            world.apply(op)?;
        }
        // A connected client's session is never forgotten.
        for client in world.clients.iter().filter(|c| c.connected) {
            prop_assert!(world.table.contains(&client.pid), "{} forgotten", client.pid);
        }
    }
}

/// Cluster mode (ordered): one shared stream numbers every event; each
/// node's log follows it with [`EventLog::push_at`] at its own pace, and may
/// miss a stretch (it was away longer than the stream keeps events). A
/// client is on one node and sees what that node delivered; it resumes on
/// any node, which adopts the session from the cluster (pid → where it
/// began) when it does not know it.
mod cluster {
    use super::*;
    use warden::sessions::Numbered;

    const NODES: usize = 2;

    #[derive(Clone, Debug)]
    pub enum Op {
        /// An event appended to the shared stream.
        Append,
        /// Node n reads up to `k` more entries of the stream.
        Read(usize, usize),
        /// Node n misses everything appended so far that it has not read.
        Skip(usize),
        Disconnect(usize),
        /// Client c reconnects to node n.
        Reconnect(usize, usize),
        Advance(u64),
    }

    pub fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            10 => Just(Op::Append),
            8 => (0..NODES, 1usize..6).prop_map(|(n, k)| Op::Read(n, k)),
            1 => (0..NODES).prop_map(Op::Skip),
            3 => (0..CLIENTS).prop_map(Op::Disconnect),
            4 => (0..CLIENTS, 0..NODES).prop_map(|(c, n)| Op::Reconnect(c, n)),
            2 => (0u64..15_000).prop_map(Op::Advance),
        ]
    }

    const E: Epoch = Epoch(7);

    struct Node {
        log: EventLog<u64>,
        table: SessionTable<u64>,
        /// Stream entries delivered, in order.
        delivered: Vec<u64>,
    }

    struct Client {
        pid: String,
        conn: u64,
        node: usize,
        connected: bool,
        disconnected_at: Moment,
        received: Vec<u64>,
        last: Option<Offset>,
        began: Offset,
    }

    pub struct World {
        now: Moment,
        /// The stream's last number.
        stream: u64,
        nodes: Vec<Node>,
        /// The cluster's session keys: pid → where it began.
        keys: std::collections::HashMap<String, Offset>,
        clients: Vec<Client>,
        next: u64,
    }

    impl World {
        pub fn new(max_events: usize) -> World {
            let nodes = (0..NODES)
                .map(|_| {
                    let mut log = EventLog::new(Epoch(99), max_events, usize::MAX);
                    log.restart_at(E, 0);
                    Node {
                        log,
                        table: SessionTable::new(SessionLimits {
                            max_disconnection: Duration::from_millis(MAX_DISCONNECTION_MS),
                            max_sessions: 1_000,
                            max_replay_events: usize::MAX,
                        }),
                        delivered: Vec::new(),
                    }
                })
                .collect();
            let mut world = World {
                now: Moment::ZERO,
                stream: 0,
                nodes,
                keys: Default::default(),
                clients: Vec::new(),
                next: 0,
            };
            for c in 0..CLIENTS {
                let client = world.new_session(c % NODES);
                world.clients.push(client);
            }
            world
        }

        fn new_session(&mut self, node: usize) -> Client {
            self.next += 1;
            let pid = format!("pid-{}", self.next);
            let began = self.nodes[node].log.head();
            self.nodes[node]
                .table
                .open(pid.clone(), self.next, began, self.now);
            self.keys.insert(pid.clone(), began);
            Client {
                pid,
                conn: self.next,
                node,
                connected: true,
                disconnected_at: self.now,
                received: Vec::new(),
                last: None,
                began,
            }
        }

        fn read(&mut self, n: usize, k: usize) -> Result<(), TestCaseError> {
            for _ in 0..k {
                let next = self.nodes[n].log.head().seq + 1;
                if next > self.stream {
                    break;
                }
                let numbered = self.nodes[n].log.push_at(next, next, 1);
                prop_assert_eq!(numbered, Numbered::Next);
                self.deliver(n, next);
            }
            Ok(())
        }

        fn deliver(&mut self, n: usize, seq: u64) {
            self.nodes[n].delivered.push(seq);
            for client in self
                .clients
                .iter_mut()
                .filter(|c| c.connected && c.node == n)
            {
                client.received.push(seq);
                client.last = Some(Offset { epoch: E, seq });
            }
        }

        /// Node n misses the unread stretch and reads the newest entry:
        /// its clients are cut off (as the hub severs them), never left
        /// with a silent gap.
        fn skip(&mut self, n: usize) -> Result<(), TestCaseError> {
            if self.stream <= self.nodes[n].log.head().seq + 1 {
                return Ok(());
            }
            let seq = self.stream;
            let numbered = self.nodes[n].log.push_at(seq, seq, 1);
            prop_assert_eq!(numbered, Numbered::AfterGap);
            for i in 0..CLIENTS {
                if self.clients[i].node == n {
                    self.disconnect(i);
                }
            }
            self.nodes[n].delivered.push(seq);
            Ok(())
        }

        fn disconnect(&mut self, i: usize) {
            let client = &mut self.clients[i];
            if client.connected {
                self.nodes[client.node].table.release(client.conn, self.now);
                client.connected = false;
                client.disconnected_at = self.now;
            }
        }

        fn reconnect(&mut self, i: usize, n: usize) -> Result<(), TestCaseError> {
            self.next += 1;
            let conn = self.next;
            let pid = self.clients[i].pid.clone();
            let offset = self.clients[i].last;
            let within = self.clients[i].connected
                || self.now.saturating_since(self.clients[i].disconnected_at)
                    < Duration::from_millis(MAX_DISCONNECTION_MS);
            let old = (self.clients[i].node, self.clients[i].conn);
            let node = &mut self.nodes[n];
            // As the hub does: a session this node does not keep (any more)
            // is looked up in the cluster.
            node.table.expire(self.now);
            if !node.table.contains(&pid)
                && within
                && let Some(began) = self.keys.get(&pid)
            {
                node.table.adopt(pid.clone(), *began, self.now);
            }
            match node.table.resume(&pid, offset, conn, self.now, &node.log) {
                Ok(from) => {
                    let page = node
                        .log
                        .after(from, usize::MAX, usize::MAX)
                        .map_err(|gap| TestCaseError::fail(format!("resumed into {gap:?}")))?;
                    let client = &mut self.clients[i];
                    client.received.extend(page.events.iter().copied());
                    if let Some(&seq) = client.received.last() {
                        client.last = Some(Offset { epoch: E, seq });
                    }
                    // Everything since its session began, once, in order.
                    let expected: Vec<u64> = (client.began.seq + 1..=node.log.head().seq).collect();
                    prop_assert_eq!(&client.received, &expected, "not the missed suffix");
                    if old.0 != n {
                        self.nodes[old.0].table.release(old.1, self.now);
                    }
                    let client = &mut self.clients[i];
                    client.conn = conn;
                    client.node = n;
                    client.connected = true;
                }
                Err(why) => {
                    let from = offset.unwrap_or(self.clients[i].began);
                    match why {
                        Refusal::UnknownSession => prop_assert!(!within, "a live session refused"),
                        Refusal::Gap(Gap::Forgotten) => {
                            prop_assert!(from.seq < node.log.oldest_resumable().seq)
                        }
                        // The client saw further than this node has read.
                        Refusal::Gap(Gap::Ahead) => prop_assert!(from.seq > node.log.head().seq),
                        other => prop_assert!(false, "refused for {:?}", other),
                    }
                    self.nodes[old.0].table.release(old.1, self.now);
                    let fresh = self.new_session(n);
                    self.clients[i] = fresh;
                }
            }
            Ok(())
        }

        pub fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
            match *op {
                Op::Append => self.stream += 1,
                Op::Read(n, k) => self.read(n, k)?,
                Op::Skip(n) => self.skip(n)?,
                Op::Disconnect(i) => self.disconnect(i),
                Op::Reconnect(i, n) => self.reconnect(i, n)?,
                Op::Advance(ms) => self.now = self.now + Duration::from_millis(ms),
            }
            Ok(())
        }

        /// Every node delivered stream entries in the stream's order, each once.
        pub fn check_nodes(&self) -> Result<(), TestCaseError> {
            for node in &self.nodes {
                prop_assert!(node.delivered.windows(2).all(|w| w[0] < w[1]));
            }
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/prop_sessions.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_session_resumes_on_any_node_following_the_shared_stream_exactly_or_is_refused(
        max_events in 1usize..24,
        ops in proptest::collection::vec(cluster::op(), 1..150),
    ) {
        let mut world = cluster::World::new(max_events);
        for op in &ops {
            world.apply(op)?;
        }
        world.check_nodes()?;
    }
}
