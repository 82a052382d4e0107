//! Raw HTTP/1.1 over a fresh socket: the request goes out exactly as
//! written (no path normalization or encoding, so traversal attempts reach
//! the server as they are), and the whole response is read back.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The upgrade request of a WebSocket client, as raw headers.
pub(crate) const UPGRADE: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
];

/// A whole HTTP response read off a raw socket.
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// Splits a raw HTTP/1.1 response into status, headers and body.
    pub(crate) fn parse(buf: &[u8]) -> Resp {
        let split = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "no end of headers in {:?}",
                    String::from_utf8_lossy(&buf[..buf.len().min(500)])
                )
            });
        let head = String::from_utf8_lossy(&buf[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {head:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Resp {
            status,
            headers,
            body: buf[split + 4..].to_vec(),
        }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One request over a fresh socket with `Connection: close`: `method` and
/// `path` as given, then `headers`, then `body` with its `Content-Length`;
/// the whole response read back.
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    let headers = [&[("Connection", "close")], headers].concat();
    let mut s = send(addr, method, path, &headers, body).await;
    Resp::parse(&read_until_closed(&mut s, "the response").await)
}

/// Connects and sends one request (`Host: localhost`, then `headers`, then `body`
/// with its `Content-Length`); the response is the caller's to read.
pub(crate) async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> TcpStream {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the server");
    s.write_all(&bytes).await.expect("send the request");
    s
}

/// Reads until the peer closes the connection (or resets it), for at most
/// 20 s; returns everything read. Fails the test, naming `what`, if the
/// connection stays open.
pub(crate) async fn read_until_closed(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "{what}: the connection was not closed within 20 s ({} bytes read)",
        out.len()
    );
    out
}
