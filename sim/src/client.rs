//! A small Socket.IO v5 client over Engine.IO v4 websocket, on a simulated
//! TCP stream: what a dashboard or a hook does, enough to drive the hub.
//!
//! No real client library runs on turmoil streams, so this speaks the wire
//! protocol itself: the server opens with `0{"sid",..,"pingInterval",..}`,
//! the client joins the default namespace with `40` and waits for
//! `40{"sid"..}`, answers every ping `2` with a pong `3`, sends events as
//! `42["name",payload]` and reads the server's `42[...]` events.
//!
//! Every wait is bounded by a caller-given timeout, and the client declares
//! the connection dead when the server has been silent for longer than
//! `pingInterval + pingTimeout` (as socket.io-client does): a partitioned
//! simulated stream hangs rather than erroring. Not here: reconnection
//! policy (the scenarios decide), polling transport, binary packets, acks.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use turmoil::net::TcpStream;

/// Why the client stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("timed out during {0}")]
    Timeout(&'static str),
    #[error("the server was silent longer than pingInterval + pingTimeout")]
    HeartbeatLost,
    #[error("the connection closed: {0}")]
    Closed(String),
    #[error("the server disconnected this client from the namespace")]
    ServerDisconnect,
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// One Socket.IO event received: its name and first argument (`null` if
/// none), and its last argument when that is a string after the first
/// (connection state recovery's offset).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub name: String,
    pub data: Value,
    pub offset: Option<String>,
}

/// A connected client of the default namespace.
#[derive(Debug)]
pub struct SioClient {
    ws: WebSocketStream<TcpStream>,
    ping_interval: Duration,
    ping_timeout: Duration,
    last_heard: Instant,
    pings_answered: u64,
    /// The connection state recovery session id the server's CONNECT gave.
    pid: Option<String>,
    /// Acks received (`43<id>[answer]`) and not yet taken, in arrival order.
    acks: Vec<(u64, Value)>,
}

impl SioClient {
    /// Connects to `host:port`, completes the Engine.IO and Socket.IO
    /// handshakes, and returns once the namespace connect is acknowledged.
    /// Each step is bounded by `step_timeout`.
    pub async fn connect(
        host: &str,
        port: u16,
        step_timeout: Duration,
    ) -> Result<SioClient, ClientError> {
        SioClient::connect_with_auth(host, port, step_timeout, None).await
    }

    /// [`SioClient::connect`] sending `auth` in the namespace connect
    /// (`40{auth}`), as socket.io-client sends `{pid, offset}` to recover.
    pub async fn connect_with_auth(
        host: &str,
        port: u16,
        step_timeout: Duration,
        auth: Option<&Value>,
    ) -> Result<SioClient, ClientError> {
        let mut client = SioClient::open(host, port, step_timeout).await?;
        client.join(auth, step_timeout).await?;
        Ok(client)
    }

    /// Opens an Engine.IO session over a websocket and reads its open packet,
    /// without joining the namespace (a client that stops here is one the
    /// server's handshake timeout must close).
    pub async fn open(
        host: &str,
        port: u16,
        step_timeout: Duration,
    ) -> Result<SioClient, ClientError> {
        let stream = timeout(step_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| ClientError::Timeout("tcp connect"))?
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let url = format!("ws://{host}:{port}/socket.io/?EIO=4&transport=websocket");
        let (ws, _response) = timeout(step_timeout, tokio_tungstenite::client_async(url, stream))
            .await
            .map_err(|_| ClientError::Timeout("websocket handshake"))?
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let mut client = SioClient {
            ws,
            // Until the open packet says otherwise.
            ping_interval: step_timeout,
            ping_timeout: step_timeout,
            last_heard: Instant::now(),
            pings_answered: 0,
            pid: None,
            acks: Vec::new(),
        };

        let open = client.read_text(step_timeout, "engine.io open").await?;
        let body = open.strip_prefix('0').ok_or_else(|| {
            ClientError::Protocol(format!("expected an open packet, got {open:?}"))
        })?;
        let open: Value = serde_json::from_str(body)
            .map_err(|e| ClientError::Protocol(format!("open packet is not JSON: {e}")))?;
        let millis = |key: &str| {
            open.get(key)
                .and_then(Value::as_u64)
                .map(Duration::from_millis)
                .ok_or_else(|| ClientError::Protocol(format!("open packet lacks {key}")))
        };
        client.ping_interval = millis("pingInterval")?;
        client.ping_timeout = millis("pingTimeout")?;
        Ok(client)
    }

    /// Joins the default namespace (`40`, or `40{auth}`) and waits for the
    /// server's CONNECT.
    pub async fn join(
        &mut self,
        auth: Option<&Value>,
        step_timeout: Duration,
    ) -> Result<(), ClientError> {
        let join = match auth {
            Some(auth) => format!("40{auth}"),
            None => "40".to_string(),
        };
        self.send_text(join, step_timeout).await?;
        loop {
            let text = self.read_text(step_timeout, "socket.io connect").await?;
            if let Some(body) = text.strip_prefix("40") {
                let ack: Value = serde_json::from_str(body).map_err(|e| {
                    ClientError::Protocol(format!("connect packet is not JSON: {e}"))
                })?;
                if ack.get("sid").and_then(Value::as_str).is_none() {
                    return Err(ClientError::Protocol("connect packet lacks sid".into()));
                }
                self.pid = ack.get("pid").and_then(Value::as_str).map(str::to_owned);
                return Ok(());
            }
            if text.starts_with("44") {
                return Err(ClientError::Protocol(format!("connect refused: {text}")));
            }
            // A ping before the connect ack was answered by read_text.
        }
    }

    /// The server's Engine.IO heartbeat, from its open packet.
    pub fn heartbeat(&self) -> (Duration, Duration) {
        (self.ping_interval, self.ping_timeout)
    }

    /// The session id the server gave in CONNECT (connection state
    /// recovery on), if any.
    pub fn pid(&self) -> Option<&str> {
        self.pid.as_deref()
    }

    /// How many server pings this client answered.
    pub fn pings_answered(&self) -> u64 {
        self.pings_answered
    }

    /// Sends `42["event", data]`.
    pub async fn emit(
        &mut self,
        event: &str,
        data: &Value,
        send_timeout: Duration,
    ) -> Result<(), ClientError> {
        let packet = serde_json::json!([event, data]);
        self.send_text(format!("42{packet}"), send_timeout).await
    }

    /// Sends `42<id>["event", data]`, asking for an ack; the server's answer
    /// comes back through [`SioClient::take_acks`].
    pub async fn emit_with_ack(
        &mut self,
        event: &str,
        data: &Value,
        id: u64,
        send_timeout: Duration,
    ) -> Result<(), ClientError> {
        let packet = serde_json::json!([event, data]);
        self.send_text(format!("42{id}{packet}"), send_timeout)
            .await
    }

    /// The acks received since the last call: `(id, first argument)`.
    pub fn take_acks(&mut self) -> Vec<(u64, Value)> {
        std::mem::take(&mut self.acks)
    }

    /// Sends one text frame as it is: a malformed packet, for a hostile peer.
    pub async fn send_raw(
        &mut self,
        text: impl Into<String>,
        send_timeout: Duration,
    ) -> Result<(), ClientError> {
        self.send_text(text.into(), send_timeout).await
    }

    /// Sends one binary frame as it is (Engine.IO v4 over a websocket
    /// expects a binary attachment only after a packet that announces it).
    pub async fn send_raw_binary(
        &mut self,
        bytes: Vec<u8>,
        send_timeout: Duration,
    ) -> Result<(), ClientError> {
        timeout(send_timeout, self.ws.send(Message::binary(bytes)))
            .await
            .map_err(|_| ClientError::Timeout("send"))?
            .map_err(|e| ClientError::Closed(e.to_string()))
    }

    /// The next Socket.IO event, answering pings on the way. `Ok(None)` when
    /// `wait` passes without one; `Err(HeartbeatLost)` when the server has
    /// been silent too long; other errors when the connection ended.
    pub async fn next_event(&mut self, wait: Duration) -> Result<Option<Event>, ClientError> {
        let until = Instant::now() + wait;
        loop {
            let text = match self.read_until(until).await? {
                Some(text) => text,
                None => return Ok(None),
            };
            if let Some(body) = text.strip_prefix("42") {
                return parse_event(body).map(Some);
            }
            if let Some(body) = text.strip_prefix("43") {
                self.acks.push(parse_ack(body)?);
                continue;
            }
            if text.starts_with("41") {
                return Err(ClientError::ServerDisconnect);
            }
            if text.starts_with('1') {
                return Err(ClientError::Closed("engine.io close packet".into()));
            }
            // Anything else (a noop `6`, an answered ping) carries no event.
        }
    }

    /// Closes the websocket politely, bounded by `close_timeout`; errors are
    /// ignored (the peer may already be gone).
    pub async fn close(mut self, close_timeout: Duration) {
        let _ = timeout(close_timeout, self.ws.close(None)).await;
    }

    async fn send_text(&mut self, text: String, send_timeout: Duration) -> Result<(), ClientError> {
        timeout(send_timeout, self.ws.send(Message::text(text)))
            .await
            .map_err(|_| ClientError::Timeout("send"))?
            .map_err(|e| ClientError::Closed(e.to_string()))
    }

    /// One text packet within `wait`, or a timeout naming `phase`.
    async fn read_text(
        &mut self,
        wait: Duration,
        phase: &'static str,
    ) -> Result<String, ClientError> {
        let until = Instant::now() + wait;
        match self.read_until(until).await? {
            Some(text) => Ok(text),
            None => Err(ClientError::Timeout(phase)),
        }
    }

    /// The next text packet before `until` (pings are answered and still
    /// returned), `None` at `until`, `HeartbeatLost` when the server has been
    /// silent past the Engine.IO deadline.
    async fn read_until(&mut self, until: Instant) -> Result<Option<String>, ClientError> {
        loop {
            let alive_until = self.last_heard + self.ping_interval + self.ping_timeout;
            let deadline = until.min(alive_until);
            let message = match timeout_at(deadline, self.ws.next()).await {
                Err(_elapsed) if deadline == alive_until => return Err(ClientError::HeartbeatLost),
                Err(_elapsed) => return Ok(None),
                Ok(None) => return Err(ClientError::Closed("stream ended".into())),
                Ok(Some(Err(e))) => return Err(ClientError::Closed(e.to_string())),
                Ok(Some(Ok(message))) => message,
            };
            self.last_heard = Instant::now();
            match message {
                Message::Text(text) => {
                    let text = text.as_str().to_string();
                    if text == "2" {
                        self.pings_answered += 1;
                        let answer_timeout = self.ping_timeout;
                        self.send_text("3".to_string(), answer_timeout).await?;
                    }
                    return Ok(Some(text));
                }
                Message::Close(frame) => {
                    let why = frame.map(|f| f.to_string()).unwrap_or_default();
                    return Err(ClientError::Closed(format!("close frame {why}")));
                }
                // Websocket-level pings are answered by tungstenite itself;
                // binary packets are not used by the hub.
                Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }
}

fn parse_ack(body: &str) -> Result<(u64, Value), ClientError> {
    let digits = body.len() - body.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (id, args) = body.split_at(digits);
    let id = id
        .parse()
        .map_err(|_| ClientError::Protocol(format!("ack without an id: {body:?}")))?;
    let args: Value = serde_json::from_str(args)
        .map_err(|e| ClientError::Protocol(format!("ack is not JSON: {e}")))?;
    let first = match args {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        _ => Value::Null,
    };
    Ok((id, first))
}

fn parse_event(body: &str) -> Result<Event, ClientError> {
    let value: Value = serde_json::from_str(body)
        .map_err(|e| ClientError::Protocol(format!("event packet is not JSON: {e}")))?;
    let mut items = match value {
        Value::Array(items) => items.into_iter(),
        other => {
            return Err(ClientError::Protocol(format!(
                "event packet is not an array: {other}"
            )));
        }
    };
    let name = match items.next() {
        Some(Value::String(name)) => name,
        other => {
            return Err(ClientError::Protocol(format!(
                "event packet has no name: {other:?}"
            )));
        }
    };
    let data = items.next().unwrap_or(Value::Null);
    let offset = match items.next_back() {
        Some(Value::String(offset)) => Some(offset),
        _ => None,
    };
    Ok(Event { name, data, offset })
}
