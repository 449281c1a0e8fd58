//! Ordered mode: cluster mode with connection state recovery on.
//!
//! Recovery needs an offset that means the same on every node, so a client
//! can resume on any of them. Pub/sub gives no such thing: with senders on
//! two nodes, each node's clients may see the events in a different order,
//! and "everything after my last event" has no single answer. So in ordered
//! mode the events cross the cluster through one Redis stream, and every
//! node, the accepting one too, delivers them from it, in its order:
//!
//! - **Appending.** The publisher task appends each accepted event with
//!   [`APPEND`], a script that numbers it: `<prefix>:log-meta` holds the
//!   stream's `epoch` and its last `seq`; the event becomes entry `<seq>-0`
//!   of `<prefix>:log` (capped at `history_len`, at least
//!   [`MIN_STREAM_LEN`]), with the epoch beside it. Numbers are consecutive,
//!   so a hole is seen, never silent. When the meta hash is missing (a new
//!   Redis, or its data lost) the script takes the candidate epoch the call
//!   brought (drawn at random for each call, never reused: a process that
//!   proposed the lost stream's epoch must not propose it again) and drops
//!   whatever stream was there: an offset from a lost stream names another
//!   epoch and is refused, never answered with a gap (Centrifugo's epoch
//!   rule).
//! - **Reading.** [`read_stream`] follows the stream on its own connection
//!   (`XREAD BLOCK`), hands each entry to [`Hub::deliver_ordered`] with the
//!   offset `<epoch>-<seq>`, and on a new epoch starts the node's log over
//!   ([`Hub::follow_stream`]). A node that joins starts at the stream's head.
//! - **Sessions.** A session is kept on every node through the key
//!   `<prefix>:session:<pid>` (its value: the offset it began at): written
//!   at every heartbeat while a connection holds it (to expire two
//!   heartbeats after `max_disconnection_duration`, so it never lapses while
//!   held), and once more when the connection is lost, to expire
//!   `max_disconnection_duration` after that. A client that reconnects to another node names its pid;
//!   that node finds the key ([`Hub`]'s `adopt_from_cluster`) and resumes it
//!   from its own log, which holds the same stream. A node that dies stops
//!   writing its sessions' keys: they expire at most
//!   `max_disconnection_duration` and two heartbeats after it did.
//! - **Without Redis** local relay goes on: an event accepted while there is
//!   no link, or whose append failed, is delivered to this node's clients at
//!   once, without an offset (outside the stream, so no client's offset
//!   moves and no replay repeats it); other nodes never get it. An append
//!   that timed out may still have been written: then this node's clients
//!   get that event twice (once now, once from the stream).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value as RedisValue};
use tokio::sync::mpsc;

use super::{ClusterAdapter, ClusterError, Link, RedisState, SessionBounds, lock, sleep_or_stop};
use socketioxide::socket::Sid;

use crate::daemon::hub::{StampedEvent, WeakHub};
use crate::sessions::{Epoch, Offset};

/// The stream holds at least this many events, whatever `history_len` is:
/// it is how events cross nodes, and a reader a little behind must find them.
pub(super) const MIN_STREAM_LEN: usize = 1_024;
/// Entries read per `XREAD`.
const READ_BATCH: usize = 256;
/// How long one `XREAD` waits for an entry before asking again.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Events whose append failed, waiting for their local delivery.
pub(super) const FALLBACK_QUEUE: usize = 4_096;

/// The start of both scripts: the stream's epoch in `epoch`; when the meta
/// hash `KEYS[1]` is missing, the candidate `ARGV[1]` becomes the epoch of a
/// new stream, and whatever stream `KEYS[2]` held is dropped.
macro_rules! with_epoch {
    ($rest:literal) => {
        concat!(
            "
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
",
            $rest
        )
    };
}

/// Appends one event: `KEYS[1]` the meta hash, `KEYS[2]` the stream;
/// `ARGV[1]` the candidate epoch, `ARGV[2]` the stream's cap, `ARGV[3]`
/// the event's JSON, `ARGV[4]` its sender (`<origin> <sid>`, or empty).
/// Returns its number.
pub(super) const APPEND: &str = with_epoch!(
    "local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '=', ARGV[2], seq .. '-0', 'event', ARGV[3], 'epoch', epoch, 'from', ARGV[4])
return seq
"
);

/// Makes sure the stream has an epoch (as [`APPEND`] does) and returns it
/// with the stream's last number: `KEYS` and `ARGV[1]` as for [`APPEND`].
pub(super) const ENSURE: &str =
    with_epoch!("return {epoch, tonumber(redis.call('HGET', KEYS[1], 'seq'))}\n");

/// What ordered mode adds to the link.
pub(super) struct Ordered {
    /// How long a lost session stays resumable.
    pub(super) max_disconnection: Duration,
    /// Sessions whose keys the heartbeat writes.
    pub(super) sessions: std::sync::Mutex<SessionKeys>,
    /// Events whose append failed, for their local delivery.
    pub(super) fallback: mpsc::Sender<StampedEvent>,
}

/// The sessions this node tells the cluster about.
pub(super) struct SessionKeys {
    /// Held by a connection here: pid → the offset it began at.
    held: HashMap<String, String>,
    /// Lost here since the last write, oldest first: written once more,
    /// then forgotten. At most `max_lost` (while Redis is away, a client
    /// that keeps reconnecting must not grow it without end): past it the
    /// oldest is forgotten, and that session resumes on this node only.
    lost: VecDeque<(String, String)>,
    max_lost: usize,
}

impl SessionKeys {
    fn new(max_lost: usize) -> SessionKeys {
        SessionKeys {
            held: HashMap::new(),
            lost: VecDeque::new(),
            max_lost,
        }
    }

    fn held(&mut self, pid: &str, began: Offset) {
        self.lost.retain(|(lost, _)| lost != pid);
        self.held.insert(pid.to_owned(), began.to_string());
    }

    fn lost(&mut self, pid: &str, began: Offset) {
        self.held.remove(pid);
        self.lost.retain(|(lost, _)| lost != pid);
        self.lost.push_back((pid.to_owned(), began.to_string()));
        self.trim();
    }

    /// Puts back `unwritten` (older than anything lost since), within the bound.
    fn unwritten(&mut self, unwritten: VecDeque<(String, String)>) {
        let newer = std::mem::replace(&mut self.lost, unwritten);
        self.lost.retain(|(pid, _)| {
            !newer.iter().any(|(n, _)| n == pid) && !self.held.contains_key(pid)
        });
        self.lost.extend(newer);
        self.trim();
    }

    fn trim(&mut self) {
        while self.lost.len() > self.max_lost {
            self.lost.pop_front();
        }
    }
}

impl Ordered {
    pub(super) fn new(bounds: SessionBounds) -> (Ordered, mpsc::Receiver<StampedEvent>) {
        let (fallback, queue) = mpsc::channel(FALLBACK_QUEUE);
        let ordered = Ordered {
            max_disconnection: bounds.max_disconnection,
            sessions: std::sync::Mutex::new(SessionKeys::new(bounds.max_sessions)),
            fallback,
        };
        (ordered, queue)
    }

    pub(super) fn held(&self, pid: &str, began: Offset) {
        lock(&self.sessions).held(pid, began);
    }

    pub(super) fn lost(&self, pid: &str, began: Offset) {
        lock(&self.sessions).lost(pid, began);
    }
}

impl Link {
    /// The key of session `pid`.
    fn session_key(&self, pid: &str) -> String {
        format!("{}:session:{pid}", self.settings.prefix)
    }

    fn meta_key(&self) -> String {
        format!("{}:log-meta", self.settings.prefix)
    }

    /// The stream's cap.
    pub(super) fn stream_len(&self) -> usize {
        self.settings.history_len.max(MIN_STREAM_LEN)
    }

    /// Appends `batch` to the stream in one pipeline, in order.
    pub(super) async fn append_ordered(
        &self,
        conn: &mut MultiplexedConnection,
        batch: &[StampedEvent],
    ) -> Result<(), ClusterError> {
        let meta = self.meta_key();
        let stream = self.settings.history_key();
        let candidate = candidate();
        let cap = self.stream_len();
        let mut pipe = redis::pipe();
        for event in batch {
            let from = event
                .sender()
                .map(|sid| format!("{} {sid}", self.origin))
                .unwrap_or_default();
            pipe.cmd("EVAL")
                .arg(APPEND)
                .arg(2)
                .arg(&meta)
                .arg(&stream)
                .arg(&candidate)
                .arg(cap)
                .arg(event.as_str())
                .arg(from)
                .ignore();
        }
        self.timed(pipe.query_async::<()>(conn)).await
    }

    /// Hands events whose append failed to this node's clients (counted as
    /// local fallbacks), in order. Waits while the queue is full: the
    /// publisher then stops taking from the outbox, and the senders are held
    /// back as by a slow reader; none is dropped.
    pub(super) async fn deliver_here(&self, ordered: &Ordered, batch: Vec<StampedEvent>) {
        let n = batch.len() as u64;
        self.counters
            .local_fallbacks
            .fetch_add(n, Ordering::Relaxed);
        for event in batch {
            if ordered.fallback.send(event).await.is_err() {
                // The delivery task stopped: the node is shutting down.
                return;
            }
        }
    }

    /// Writes the sessions' keys: every held one (its expiry pushed back),
    /// and once each lost one (its expiry counted from now).
    pub(super) async fn write_sessions(
        &self,
        ordered: &Ordered,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), ClusterError> {
        let (held, lost) = {
            let mut keys = lock(&ordered.sessions);
            let held: Vec<(String, String)> = keys
                .held
                .iter()
                .map(|(pid, began)| (pid.clone(), began.clone()))
                .collect();
            (held, std::mem::take(&mut keys.lost))
        };
        if held.is_empty() && lost.is_empty() {
            return Ok(());
        }
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        // A held session's key outlives the next two heartbeats, so it never
        // lapses while held; a lost one's expires exactly on time.
        let held_ttl = millis(ordered.max_disconnection + 2 * self.settings.heartbeat_interval);
        let lost_ttl = millis(ordered.max_disconnection);
        let mut pipe = redis::pipe();
        let keys = held
            .iter()
            .map(|key| (key, held_ttl))
            .chain(lost.iter().map(|key| (key, lost_ttl)));
        for ((pid, began), ttl) in keys {
            pipe.cmd("SET")
                .arg(self.session_key(pid))
                .arg(began)
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
        let written = self.timed(pipe.query_async::<()>(conn)).await;
        if written.is_err() {
            // Try the lost ones again at the next heartbeat.
            lock(&ordered.sessions).unwritten(lost);
        }
        written
    }

    /// Where session `pid` began, if the cluster still keeps it.
    pub(super) async fn session_began(&self, pid: &str) -> Option<Offset> {
        let (_, mut conn) = self.data_connection().ok()?;
        let began: Option<String> = self
            .timed(
                redis::cmd("GET")
                    .arg(self.session_key(pid))
                    .query_async(&mut conn),
            )
            .await
            .ok()?;
        began?.parse().ok()
    }
}

/// Delivers, in order, the events whose append failed, to this node's
/// clients only (without an offset: they are not in the stream).
pub(super) async fn deliver_fallbacks(
    link: Arc<Link>,
    hub: WeakHub<ClusterAdapter>,
    mut queue: mpsc::Receiver<StampedEvent>,
) {
    loop {
        let event = tokio::select! {
            () = link.stop.cancelled() => return,
            event = queue.recv() => event,
        };
        let Some(event) = event else { return };
        let Some(hub) = hub.upgrade() else { return };
        hub.deliver_remote(&event).await;
    }
}

/// Follows the stream whenever Redis is reachable, on a connection of its
/// own (a blocking read would hold up every command queued behind it).
pub(super) async fn read_stream(link: Arc<Link>, hub: WeakHub<ClusterAdapter>) {
    let mut state = link.state.subscribe();
    while !link.stop.is_cancelled() {
        if *state.borrow_and_update() != RedisState::Connected {
            tokio::select! {
                () = link.stop.cancelled() => return,
                _ = state.changed() => continue,
            }
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(link.settings.command_timeout))
            .set_response_timeout(Some(link.settings.command_timeout + READ_BLOCK));
        let connected = link
            .timed(
                link.client
                    .get_multiplexed_async_connection_with_config(&config),
            )
            .await;
        let result = match connected {
            Ok(conn) => follow(&link, &hub, conn).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => return,
            Err(error) => {
                tracing::debug!(%error, "Cluster: the stream reader lost Redis; it reads on once the link is back");
                sleep_or_stop(&link, link.settings.heartbeat_interval).await;
            }
        }
    }
}

/// One entry of the stream, as read.
struct Entry {
    seq: u64,
    epoch: Option<Epoch>,
    event: Option<String>,
    /// Who sent it: `<origin> <sid>`, or empty.
    from: Option<String>,
}

/// Reads the stream from where this node's log stands (or from the
/// stream's head, when the log follows another stream or none yet: the
/// stream is given an epoch first if it has none) and delivers every
/// entry in order.
/// Returns `Ok` only when the hub or the link is gone.
async fn follow(
    link: &Link,
    hub: &WeakHub<ClusterAdapter>,
    mut conn: MultiplexedConnection,
) -> Result<(), ClusterError> {
    let Some(mut last) = start_at(link, hub, &mut conn).await? else {
        return Ok(());
    };
    loop {
        if link.stop.is_cancelled() {
            return Ok(());
        }
        let entries = read_after(link, &mut conn, last).await?;
        if deliver(link, hub, entries, &mut last).await.is_none() {
            return Ok(());
        }
    }
}

/// Where to read from: the last entry this node's log holds if it follows
/// the stream's epoch, else the stream's head (the log starts over there).
/// `None` when the hub is gone.
async fn start_at(
    link: &Link,
    hub: &WeakHub<ClusterAdapter>,
    conn: &mut MultiplexedConnection,
) -> Result<Option<u64>, ClusterError> {
    let (epoch, head): (String, u64) = link
        .timed(
            redis::cmd("EVAL")
                .arg(ENSURE)
                .arg(2)
                .arg(link.meta_key())
                .arg(link.settings.history_key())
                .arg(candidate())
                .query_async(conn),
        )
        .await?;
    let Some(node) = hub.upgrade() else {
        return Ok(None);
    };
    let here = node.stream_head();
    Ok(Some(match parse_epoch(&epoch) {
        Some(epoch) if epoch == here.epoch => here.seq,
        Some(epoch) => {
            node.follow_stream(epoch, head);
            head
        }
        // Not warden's: the first entry's epoch decides.
        None => 0,
    }))
}

/// The entries after `last` (waiting up to [`READ_BLOCK`] for one).
async fn read_after(
    link: &Link,
    conn: &mut MultiplexedConnection,
    last: u64,
) -> Result<Vec<Entry>, ClusterError> {
    let patience = link.settings.command_timeout + READ_BLOCK;
    let block = u64::try_from(READ_BLOCK.as_millis()).unwrap_or(1_000);
    let reply: RedisValue = tokio::time::timeout(
        patience,
        redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_BATCH)
            .arg("BLOCK")
            .arg(block)
            .arg("STREAMS")
            .arg(link.settings.history_key())
            .arg(format!("{last}-0"))
            .query_async(conn),
    )
    .await
    .map_err(|_| ClusterError::Timeout {
        timeout_ms: u64::try_from(patience.as_millis()).unwrap_or(u64::MAX),
    })??;
    Ok(entries(reply))
}

/// Delivers `entries` in order, moving `last` on; a new epoch starts the
/// log over and `last` at 0 (the rest is read again). `None` when the hub
/// is gone.
async fn deliver(
    link: &Link,
    hub: &WeakHub<ClusterAdapter>,
    entries: Vec<Entry>,
    last: &mut u64,
) -> Option<()> {
    let mut foreign = 0u64;
    for entry in entries {
        let (Some(epoch), Some(event)) = (entry.epoch, entry.event) else {
            foreign += 1;
            *last = (*last).max(entry.seq);
            continue;
        };
        let node = hub.upgrade()?;
        if epoch != node.stream_head().epoch {
            // A new stream: read it from its first entry.
            node.follow_stream(epoch, 0);
            *last = 0;
            break;
        }
        // A socket of this process sent it: never back to it.
        let sender = entry
            .from
            .as_deref()
            .and_then(|from| from.strip_prefix(link.origin.as_str()))
            .and_then(|sid| sid.strip_prefix(' '))
            .and_then(|sid| sid.parse::<Sid>().ok());
        let offset = Offset {
            epoch,
            seq: entry.seq,
        };
        node.deliver_ordered(event, offset, sender).await;
        *last = entry.seq;
        link.counters.received.fetch_add(1, Ordering::Relaxed);
    }
    link.foreign(foreign, &link.settings.history_key(), "warden events");
    Some(())
}

/// A fresh epoch to propose, should the stream have none: drawn at random
/// for every call, so that a stream lost and begun again (Redis restarted
/// without its data) never gets the epoch of the lost one back.
fn candidate() -> String {
    format!("{:016x}", crate::daemon::hub::new_epoch().0)
}

fn parse_epoch(text: &str) -> Option<Epoch> {
    (text.len() == 16)
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
        .map(Epoch)
}

/// The entries of an `XREAD` reply (RESP2 arrays or a RESP3 map), in order.
/// An entry whose id is not `<seq>-0` is skipped; one without an `event` or
/// an `epoch` comes back with them `None` (foreign).
fn entries(reply: RedisValue) -> Vec<Entry> {
    let streams = match reply {
        RedisValue::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        RedisValue::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                RedisValue::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for stream in streams {
        let RedisValue::Array(items) = stream else {
            continue;
        };
        for item in items {
            let RedisValue::Array(mut parts) = item else {
                continue;
            };
            if parts.len() != 2 {
                continue;
            }
            let fields = parts.pop();
            let id = parts.pop();
            let Some(seq) = text(id).and_then(|id| {
                let (seq, sub) = id.split_once('-')?;
                (sub == "0").then(|| seq.parse::<u64>().ok()).flatten()
            }) else {
                continue;
            };
            let mut entry = Entry {
                seq,
                epoch: None,
                event: None,
                from: None,
            };
            let pairs: Vec<RedisValue> = match fields {
                Some(RedisValue::Array(values)) => values,
                Some(RedisValue::Map(pairs)) => {
                    pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()
                }
                _ => Vec::new(),
            };
            let mut pairs = pairs.into_iter();
            while let (Some(name), Some(value)) = (pairs.next(), pairs.next()) {
                match text(Some(name)).as_deref() {
                    Some("event") => entry.event = text(Some(value)),
                    Some("from") => entry.from = text(Some(value)),
                    Some("epoch") => {
                        entry.epoch = text(Some(value)).as_deref().and_then(parse_epoch)
                    }
                    _ => {}
                }
            }
            out.push(entry);
        }
    }
    out
}

fn text(value: Option<RedisValue>) -> Option<String> {
    match value? {
        RedisValue::BulkString(bytes) => String::from_utf8(bytes).ok(),
        RedisValue::SimpleString(text) => Some(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> RedisValue {
        RedisValue::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn lost_sessions_waiting_for_redis_are_bounded_newest_kept_each_once() {
        let began = Offset {
            epoch: Epoch(1),
            seq: 0,
        };
        let mut keys = SessionKeys::new(3);
        for pid in ["a", "b", "c", "b", "d", "e"] {
            keys.lost(pid, began);
        }
        let pids =
            |keys: &SessionKeys| keys.lost.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
        assert_eq!(pids(&keys), ["b", "d", "e"]);
        // A failed write puts them back behind what was lost since, within
        // the bound; a session held again is no longer lost.
        let unwritten = std::mem::take(&mut keys.lost);
        keys.lost("f", began);
        keys.held("d", began);
        keys.unwritten(unwritten);
        assert_eq!(pids(&keys), ["b", "e", "f"]);
        assert!(keys.held.contains_key("d"));
    }

    #[test]
    fn an_xread_reply_gives_its_entries_in_order_and_marks_foreign_ones() {
        let entry = |id: &str, fields: Vec<RedisValue>| {
            RedisValue::Array(vec![bulk(id), RedisValue::Array(fields)])
        };
        let reply = RedisValue::Map(vec![(
            bulk("w:log"),
            RedisValue::Array(vec![
                entry(
                    "7-0",
                    vec![
                        bulk("event"),
                        bulk("{}"),
                        bulk("epoch"),
                        bulk("00000000000000ab"),
                    ],
                ),
                entry("8-0", vec![bulk("other"), bulk("x")]),
                entry("1700000000000-3", vec![bulk("event"), bulk("{}")]),
            ]),
        )]);
        let got = entries(reply);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].seq, got[0].epoch), (7, Some(Epoch(0xab))));
        assert_eq!(got[0].event.as_deref(), Some("{}"));
        assert_eq!(
            (got[1].seq, got[1].epoch, got[1].event.is_none()),
            (8, None, true)
        );
        assert!(entries(RedisValue::Nil).is_empty());
    }
}
