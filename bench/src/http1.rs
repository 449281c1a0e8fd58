//! A minimal HTTP/1.1 client over one keep-alive TCP connection: enough to
//! time `GET /health` under load and to speak Engine.IO long-polling,
//! without the weight of a full client (the load tool opens hundreds of
//! connections and must not be the bottleneck).
//!
//! It understands `Content-Length` and `chunked` bodies, and bodies ended by
//! the server closing the connection. Not here: TLS, redirects, proxies,
//! pipelining, HTTP/2.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest body accepted (a bound on what one response may allocate).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Largest status line or header line accepted.
const MAX_LINE_BYTES: usize = 16 * 1024;
/// Most header lines accepted in one response.
const MAX_HEADERS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("connection closed before a complete response")]
    Closed,
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("response body over {MAX_BODY_BYTES} bytes")]
    TooLarge,
}

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (lossy: Engine.IO polling bodies are UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive connection. After an error the connection is unusable:
/// open a new one.
#[derive(Debug)]
pub struct HttpConn {
    stream: BufReader<TcpStream>,
    host: String,
    /// The server said `Connection: close` (or ended the body by closing).
    closed: bool,
}

impl HttpConn {
    pub async fn connect(addr: SocketAddr) -> Result<HttpConn, HttpError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream: BufReader::new(stream),
            host: addr.to_string(),
            closed: false,
        })
    }

    /// True once the server closed (or announced closing) the connection.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub async fn get(&mut self, path: &str) -> Result<Response, HttpError> {
        self.request("GET", path, None).await
    }

    pub async fn post(&mut self, path: &str, body: &[u8]) -> Result<Response, HttpError> {
        self.request("POST", path, Some(body)).await
    }

    /// Sends one request and reads the whole response.
    /// `POST` with `Content-Type: application/json` (warden's `/api/events`
    /// refuses anything else).
    pub async fn post_json(&mut self, path: &str, body: &[u8]) -> Result<Response, HttpError> {
        self.request_typed("POST", path, Some(body), "application/json")
            .await
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, HttpError> {
        self.request_typed(method, path, body, "text/plain;charset=UTF-8")
            .await
    }

    async fn request_typed(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: &str,
    ) -> Result<Response, HttpError> {
        if self.closed {
            return Err(HttpError::Closed);
        }
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive\r\n",
            self.host
        );
        if let Some(body) = body {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        if let Some(body) = body {
            request.extend_from_slice(body);
        }
        self.stream.get_mut().write_all(&request).await?;
        self.read_response().await
    }

    async fn read_line(&mut self) -> Result<String, HttpError> {
        let mut line = Vec::new();
        let n = (&mut self.stream)
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            self.closed = true;
            return Err(HttpError::Closed);
        }
        if !line.ends_with(b"\n") {
            return Err(HttpError::Malformed("line too long or cut".into()));
        }
        let text = String::from_utf8(line)
            .map_err(|_| HttpError::Malformed("header is not UTF-8".into()))?;
        Ok(text.trim_end_matches(['\r', '\n']).to_owned())
    }

    async fn read_response(&mut self) -> Result<Response, HttpError> {
        let status_line = self.read_line().await?;
        let status = parse_status_line(&status_line)?;
        let mut content_length = None;
        let mut chunked = false;
        for count in 0.. {
            if count > MAX_HEADERS {
                return Err(HttpError::Malformed("too many headers".into()));
            }
            let line = self.read_line().await?;
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(HttpError::Malformed(format!("header line {line:?}")));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let length: usize = value
                    .parse()
                    .map_err(|_| HttpError::Malformed(format!("content-length {value:?}")))?;
                content_length = Some(length);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                self.closed = true;
            }
        }
        let body = if chunked {
            self.read_chunked().await?
        } else if let Some(length) = content_length {
            if length > MAX_BODY_BYTES {
                return Err(HttpError::TooLarge);
            }
            let mut body = vec![0; length];
            self.stream.read_exact(&mut body).await?;
            body
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else {
            let mut body = Vec::new();
            (&mut self.stream)
                .take(MAX_BODY_BYTES as u64 + 1)
                .read_to_end(&mut body)
                .await?;
            if body.len() > MAX_BODY_BYTES {
                return Err(HttpError::TooLarge);
            }
            self.closed = true;
            body
        };
        Ok(Response { status, body })
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| HttpError::Malformed(format!("chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY_BYTES {
                return Err(HttpError::TooLarge);
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.stream.read_exact(&mut body[start..]).await?;
            let end = self.read_line().await?;
            if !end.is_empty() {
                return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
            }
        }
    }
}

fn parse_status_line(line: &str) -> Result<u16, HttpError> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!("status line {line:?}")));
    }
    parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| HttpError::Malformed(format!("status line {line:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves `responses` (raw bytes) one per request on one connection.
    async fn serve_raw(responses: Vec<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            for response in responses {
                // Read one request head (no bodies in these tests).
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap() == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                stream.get_mut().write_all(response).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_content_length_chunked_and_close_delimited_bodies_on_one_connection() {
        let addr = serve_raw(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nrest of it",
        ])
        .await;
        let mut conn = HttpConn::connect(addr).await.unwrap();
        let first = conn.get("/a").await.unwrap();
        assert_eq!((first.status, first.text().as_str()), (200, "hello"));
        let second = conn.get("/b").await.unwrap();
        assert_eq!((second.status, second.text().as_str()), (503, "abcde"));
        let third = conn.get("/c").await.unwrap();
        assert_eq!((third.status, third.text().as_str()), (200, "rest of it"));
        assert!(conn.is_closed());
        assert!(matches!(conn.get("/d").await, Err(HttpError::Closed)));
    }

    #[tokio::test]
    async fn a_garbage_status_line_is_malformed() {
        let addr = serve_raw(vec![b"SPDY/9 200 OK\r\n\r\n"]).await;
        let mut conn = HttpConn::connect(addr).await.unwrap();
        assert!(matches!(conn.get("/").await, Err(HttpError::Malformed(_))));
    }
}
