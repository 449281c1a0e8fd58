//! A tiny HTTP/1.1 GET client for the CLI (`warden status`, `health`,
//! `doctor`) to ask a running daemon on this machine.
//!
//! One request per connection (`Connection: close`), bounded connect and
//! read timeouts, a bounded response size, `Content-Length`, chunked and
//! read-to-close bodies. It exists so that the binary does not carry a full
//! HTTP client stack for three local GETs.
//!
//! Not here: TLS, redirects, keep-alive, proxies, anything but GET; talking to
//! hosts other than the daemon's own address.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long connecting to one resolved address may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the whole request/response exchange may take once connected.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response accepted (headers and body).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// A parsed response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("cannot connect to {host}:{port}: {detail}")]
    Connect {
        host: String,
        port: u16,
        detail: String,
    },
    #[error("no answer from {host}:{port} within {}s", RESPONSE_TIMEOUT.as_secs())]
    Timeout { host: String, port: u16 },
    #[error("I/O error talking to {host}:{port}: {source}")]
    Io {
        host: String,
        port: u16,
        source: io::Error,
    },
    #[error("the response from {host}:{port} is not valid HTTP: {detail}")]
    Malformed {
        host: String,
        port: u16,
        detail: String,
    },
    #[error("the response from {host}:{port} is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge { host: String, port: u16 },
}

/// `GET path` from `host:port`, with `Authorization: Bearer <token>` when a
/// token is given (the daemon's `server.auth_token`, for `/diagnostics` and
/// `/metrics`). Tries every address `host` resolves to until one accepts the
/// connection.
pub async fn get_with_token(
    host: &str,
    port: u16,
    path: &str,
    token: Option<&str>,
) -> Result<HttpResponse, ClientError> {
    let stream = connect(host, port).await?;
    let exchanged = exchange(stream, host, port, path, token);
    match tokio::time::timeout(RESPONSE_TIMEOUT, exchanged).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout {
            host: host.to_string(),
            port,
        }),
    }
}

async fn connect(host: &str, port: u16) -> Result<TcpStream, ClientError> {
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| ClientError::Resolve {
            host: host.to_string(),
            source,
        })?
        .collect();
    let mut last = String::from("the host resolves to no address");
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: no answer within {CONNECT_TIMEOUT:?}"),
        }
    }
    Err(ClientError::Connect {
        host: host.to_string(),
        port,
        detail: last,
    })
}

async fn exchange(
    mut stream: TcpStream,
    host: &str,
    port: u16,
    path: &str,
    token: Option<&str>,
) -> Result<HttpResponse, ClientError> {
    let io_err = |source| ClientError::Io {
        host: host.to_string(),
        port,
        source,
    };
    let authorization =
        token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: warden-cli\r\nAccept: */*\r\n{authorization}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(io_err)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await.map_err(io_err)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_RESPONSE_BYTES {
            return Err(ClientError::TooLarge {
                host: host.to_string(),
                port,
            });
        }
        // With a Content-Length we can stop as soon as the body is complete.
        if let Ok(Some(done)) = complete_length(&raw)
            && raw.len() >= done
        {
            break;
        }
    }
    parse_response(&raw).map_err(|detail| ClientError::Malformed {
        host: host.to_string(),
        port,
        detail,
    })
}

/// Total length (head + body) when the head is complete and has a
/// Content-Length; `Ok(None)` when not yet known.
fn complete_length(raw: &[u8]) -> Result<Option<usize>, String> {
    let Some(head_end) = find(raw, b"\r\n\r\n") else {
        return Ok(None);
    };
    let (_, headers) = parse_head(&raw[..head_end])?;
    Ok(headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .map(|len| head_end + 4 + len))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

type Head = (u16, Vec<(String, String)>);

fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(head).map_err(|_| "the head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("unexpected status line {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("unexpected status line {status_line:?}"))?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((n, v)) => Ok((n.trim().to_string(), v.trim().to_string())),
            None => Err(format!("malformed header line {l:?}")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((status, headers))
}

/// Parses a complete response (the connection has been read to its end).
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let head_end =
        find(raw, b"\r\n\r\n").ok_or_else(|| "the response has no header end".to_string())?;
    let (status, headers) = parse_head(&raw[..head_end])?;
    let rest = &raw[head_end + 4..];
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        decode_chunked(rest)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .trim()
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        if rest.len() < len {
            return Err(format!(
                "the body ended after {} of {len} bytes",
                rest.len()
            ));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn decode_chunked(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or_else(|| "a chunk size line is cut".to_string())?;
        let size_text = std::str::from_utf8(&data[..line_end])
            .map_err(|_| "a chunk size is not text".to_string())?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 {
            return Err("a chunk is cut".to_string());
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_body() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.json().unwrap()["a"], 1);
    }

    #[test]
    fn chunked_body() {
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.text(), "abcde");
    }

    #[test]
    fn read_to_close_body_and_errors() {
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "nope"));
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
        assert!(parse_response(b"HTTP/1.1 200 OK").is_err());
    }

    #[tokio::test]
    async fn get_from_a_real_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = vec![0u8; 1024];
            let n = s.read(&mut req).await.unwrap();
            let req = String::from_utf8_lossy(&req[..n]).into_owned();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            req
        });
        let r = get_with_token("127.0.0.1", port, "/status", None)
            .await
            .unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        assert!(
            server
                .await
                .unwrap()
                .starts_with("GET /status HTTP/1.1\r\n")
        );
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = get_with_token("127.0.0.1", port, "/status", None)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    }
}
