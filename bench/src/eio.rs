//! A lean Engine.IO v4 / Socket.IO v5 client for the default namespace, over
//! websocket ([`WsClient`]) or long-polling ([`PollingClient`]).
//!
//! Websocket: connect to `/socket.io/?EIO=4&transport=websocket`, read the
//! open packet `0{"sid",..}`, send `40`, read `40{"sid"}`; from then on the
//! server's ping `2` is answered with `3` by the caller (see [`Packet`]), and
//! events are `42["name",payload]`. One text frame is one packet.
//!
//! Long-polling: `GET` returns the open packet, `POST 40` joins the
//! namespace, and a background task keeps one `GET` outstanding (answering
//! pings with `POST 3`) until the server closes the session.
//!
//! Not here: acks, binary attachments, namespaces other than `/`,
//! reconnection, transport upgrade. The load tool needs none of them, and each
//! would cost CPU on the client side of the measurement.
//!
//! Why not `warden_sim::client::SioClient`: it runs on turmoil's simulated
//! streams and parses every event into a `serde_json::Value`; the load tool
//! needs real TCP, 1,000 clients whose receive path only scans a few fields
//! (see `scenario`), and the long-polling transport.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::http1::{HttpConn, HttpError};

/// The event every warden client receives once it has joined.
pub const CONNECTION_ACK: &str = "connection_ack";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("http: {0}")]
    Http(#[from] HttpError),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("the server closed the connection")]
    Closed,
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

/// What one incoming text frame means to the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Engine.IO ping: answer with [`WsClient::pong`].
    Ping,
    /// A Socket.IO event in `/`: its name and the raw packet text.
    Event { name: &'a str, text: &'a str },
    /// The server disconnected the socket (`41`) or closed the session (`1`).
    Disconnect,
    /// Anything else (noop, ack, connect): ignored.
    Other,
}

/// Classifies one Engine.IO packet's text.
pub fn classify(text: &str) -> Packet<'_> {
    match text.as_bytes() {
        [b'2', ..] if text.len() == 1 => Packet::Ping,
        [b'1', ..] | [b'4', b'1', ..] => Packet::Disconnect,
        [b'4', b'2', ..] => match event_name(text) {
            Some(name) => Packet::Event { name, text },
            None => Packet::Other,
        },
        _ => Packet::Other,
    }
}

/// The event name of a `42["name",...]` packet in `/` without an ack id.
pub fn event_name(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("42[\"")?;
    let end = rest.find('"')?;
    Some(&rest[..end])
}

/// The text of an event packet carrying one JSON argument.
pub fn event_packet(name: &str, payload_json: &str) -> String {
    let mut packet = String::with_capacity(name.len() + payload_json.len() + 8);
    packet.push_str("42[\"");
    packet.push_str(name);
    packet.push_str("\",");
    packet.push_str(payload_json);
    packet.push(']');
    packet
}

/// Extracts the `sid` string of an open (`0{..}`) or connect (`40{..}`) body.
fn sid_of(json_text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json_text).ok()?;
    value.get("sid")?.as_str().map(str::to_owned)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One Socket.IO client over a websocket, joined to `/`.
#[derive(Debug)]
pub struct WsClient {
    ws: Ws,
    /// The Socket.IO id the server gave (from `40{"sid"}`).
    pub sid: String,
}

impl WsClient {
    /// Opens the websocket, joins `/` and waits for `connection_ack`, all
    /// within `timeout`.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<WsClient, ClientError> {
        tokio::time::timeout(timeout, Self::connect_unbounded(addr))
            .await
            .map_err(|_| ClientError::Timeout("connect and connection_ack"))?
    }

    async fn connect_unbounded(addr: SocketAddr) -> Result<WsClient, ClientError> {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _response) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
        let mut client = WsClient {
            ws,
            sid: String::new(),
        };
        let open = client.recv_text().await?;
        if !open.starts_with('0') {
            return Err(ClientError::Protocol(format!(
                "expected open packet, got {open:?}"
            )));
        }
        client.send_text("40".to_owned()).await?;
        loop {
            let text = client.recv_text().await?;
            if let Some(body) = text.strip_prefix("40") {
                client.sid = sid_of(body).unwrap_or_default();
            } else if text.starts_with("44") {
                return Err(ClientError::Protocol(format!("connect refused: {text}")));
            }
            match classify(&text) {
                Packet::Ping => client.pong().await?,
                Packet::Event { name, .. } if name == CONNECTION_ACK => break,
                Packet::Disconnect => return Err(ClientError::Closed),
                Packet::Event { .. } | Packet::Other => {}
            }
        }
        Ok(client)
    }

    async fn recv_text(&mut self) -> Result<String, ClientError> {
        loop {
            match self.recv().await? {
                Message::Text(text) => return Ok(text.as_str().to_owned()),
                Message::Close(_) => return Err(ClientError::Closed),
                _ => {}
            }
        }
    }

    /// The next frame. Cancel-safe: use it in `select!`.
    pub async fn recv(&mut self) -> Result<Message, ClientError> {
        match self.ws.next().await {
            Some(Ok(message)) => Ok(message),
            Some(Err(error)) => Err(error.into()),
            None => Err(ClientError::Closed),
        }
    }

    /// The next frame if one is ready now, without waiting.
    pub fn try_recv(&mut self) -> Option<Result<Message, ClientError>> {
        match self.ws.next().now_or_never()? {
            Some(Ok(message)) => Some(Ok(message)),
            Some(Err(error)) => Some(Err(error.into())),
            None => Some(Err(ClientError::Closed)),
        }
    }

    pub async fn send_text(&mut self, text: String) -> Result<(), ClientError> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Answers an Engine.IO ping.
    pub async fn pong(&mut self) -> Result<(), ClientError> {
        self.send_text("3".to_owned()).await
    }

    /// Leaves politely (`41`, then a websocket close), bounded by `timeout`.
    pub async fn close(mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, async {
            let _ = self.send_text("41".to_owned()).await;
            let _ = self.ws.close(None).await;
        })
        .await;
    }
}

/// One Socket.IO client over Engine.IO long-polling, joined to `/`, with a
/// `GET` kept outstanding by a background task until the session ends.
#[derive(Debug)]
pub struct PollingClient {
    pub sid: String,
    task: JoinHandle<()>,
}

impl PollingClient {
    /// Opens a session, joins `/` and starts polling, within `timeout`.
    pub async fn connect(
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<PollingClient, ClientError> {
        tokio::time::timeout(timeout, Self::connect_unbounded(addr))
            .await
            .map_err(|_| ClientError::Timeout("polling handshake"))?
    }

    async fn connect_unbounded(addr: SocketAddr) -> Result<PollingClient, ClientError> {
        let mut get = HttpConn::connect(addr).await?;
        let open = get.get("/socket.io/?EIO=4&transport=polling").await?;
        let open_text = open.text();
        let sid = open_text
            .strip_prefix('0')
            .and_then(sid_of)
            .ok_or_else(|| {
                ClientError::Protocol(format!("expected open packet, got {open_text:?}"))
            })?;
        let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
        let mut post = HttpConn::connect(addr).await?;
        let joined = post.post(&path, b"40").await?;
        if joined.status != 200 {
            return Err(ClientError::Protocol(format!(
                "POST 40 answered {}",
                joined.status
            )));
        }
        // Read until the namespace connect packet has arrived.
        loop {
            let polled = get.get(&path).await?;
            if polled.status != 200 {
                return Err(ClientError::Protocol(format!(
                    "GET answered {}",
                    polled.status
                )));
            }
            let body = polled.text();
            let packets: Vec<&str> = body.split('\u{1e}').collect();
            if packets.contains(&"2") {
                post.post(&path, b"3").await?;
            }
            if packets.iter().any(|p| p.starts_with("40")) {
                break;
            }
            if packets.iter().any(|p| classify(p) == Packet::Disconnect) {
                return Err(ClientError::Closed);
            }
        }
        let task = tokio::spawn(poll_until_closed(get, post, path));
        Ok(PollingClient { sid, task })
    }

    /// True once the server ended the session (or the connection broke).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops polling (the server sees the session time out or close).
    pub fn abort(&self) {
        self.task.abort();
    }
}

async fn poll_until_closed(mut get: HttpConn, mut post: HttpConn, path: String) {
    loop {
        let Ok(polled) = get.get(&path).await else {
            return;
        };
        if polled.status != 200 {
            return;
        }
        let body = polled.text();
        for packet in body.split('\u{1e}') {
            match classify(packet) {
                Packet::Ping => {
                    if post.post(&path, b"3").await.is_err() {
                        return;
                    }
                }
                Packet::Disconnect => return,
                Packet::Event { .. } | Packet::Other => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_packets_the_load_tool_meets() {
        assert_eq!(classify("2"), Packet::Ping);
        assert_eq!(classify("2probe"), Packet::Other);
        assert_eq!(classify("41"), Packet::Disconnect);
        assert_eq!(classify("1"), Packet::Disconnect);
        assert_eq!(classify("40{\"sid\":\"x\"}"), Packet::Other);
        assert_eq!(classify("6"), Packet::Other);
        let text = "42[\"claude_event\",{\"a\":1}]";
        assert_eq!(
            classify(text),
            Packet::Event {
                name: "claude_event",
                text
            }
        );
    }

    #[test]
    fn event_packets_round_trip_their_name() {
        let packet = event_packet("claude_event", "{\"x\":[1,2]}");
        assert_eq!(packet, "42[\"claude_event\",{\"x\":[1,2]}]");
        assert_eq!(event_name(&packet), Some("claude_event"));
        assert_eq!(event_name("42/admin,[\"x\"]"), None);
    }

    #[test]
    fn reads_the_sid_of_open_and_connect_bodies() {
        assert_eq!(
            sid_of("{\"sid\":\"abc\",\"pingInterval\":25000}").as_deref(),
            Some("abc")
        );
        assert_eq!(sid_of("{}"), None);
        assert_eq!(sid_of("not json"), None);
    }
}
