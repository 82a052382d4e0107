//! Plain-TCP media at sendfile's cost: a small HTTP/1.1 server for the one
//! request that moves the bytes, `GET`/`HEAD /media/{id}`, in front of
//! hyper on every plain connection.
//!
//! It reads each request head itself (`httparse`). A media request without
//! a body is answered here: the media library decides the answer
//! ([`Library::answer`]: the same conditionals, ranges, 304, 416 and
//! headers as hyper's path), this module writes the head, and a file's range
//! goes from the page cache to the socket by `sendfile(2)` ([`sendfile`]),
//! never through user space. Anything else (another path, a body, an
//! upgrade, a head `httparse` refuses or that outgrows [`HTTP_BUFFER`]) is
//! handed over, with the bytes read so far, to hyper, which then serves the
//! connection to its end; so every other route, and every error answer
//! hyper gives, is what it was. TLS connections never come here.
//!
//! What hyper did for media requests, this does the same way: the header
//! read timeout (the handshake timeout, from the moment a head is awaited,
//! idle keep-alive included), the write timeout (no progress for
//! `--write-timeout` closes the connection), keep-alive by HTTP version and
//! `Connection`, pipelined requests in order, `Date`, the metrics by route
//! and status (bytes as they are sent), and at shutdown an idle connection
//! closes at once while a response in progress gets the handshake timeout
//! to finish.

mod sendfile;

use std::sync::Arc;

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

use crate::server::media::{Answer, HTTP_BUFFER, MEDIA, Report};
use crate::server::metrics::Route;
use crate::server::shared::Shared;

/// Most header fields a request on this path may carry; one with more goes
/// to hyper (whose limit is higher).
const MAX_HEADERS: usize = 48;

/// A connection this path does not serve to its end: the stream, and the
/// bytes read from it that hyper must read first.
pub(crate) struct Handover {
    pub(crate) stream: TcpStream,
    pub(crate) read: Bytes,
}

/// A media request, parsed.
struct MediaRequest {
    head: bool,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    /// The connection stays open after the answer.
    keep_alive: bool,
    /// HTTP/1.0: keep-alive must be said in the answer.
    http10: bool,
}

/// What [`parse`] makes of `buf`, for the fuzz target: a media request
/// (its path, and the bytes of the head), or `None` (incomplete, or
/// hyper's to answer).
pub fn media_head(buf: &[u8]) -> Option<(String, usize)> {
    match parse(buf) {
        Parsed::Media(req, used) => Some((req.path, used)),
        Parsed::Partial | Parsed::Other => None,
    }
}

enum Parsed {
    Media(Box<MediaRequest>, usize),
    Partial,
    Other,
}

enum Next {
    Media(Box<MediaRequest>),
    Other,
    Closed,
}

/// Serves `stream`'s media requests until it closes, or hands it over at
/// its first other request.
pub(crate) async fn serve(mut stream: TcpStream, shared: &Arc<Shared>) -> Option<Handover> {
    let mut buf = BytesMut::new();
    loop {
        let req = match next_request(&mut stream, &mut buf, shared).await {
            Next::Media(req) => req,
            Next::Other => {
                return Some(Handover {
                    stream,
                    read: buf.freeze(),
                });
            }
            Next::Closed => return None,
        };
        let mut answer = std::pin::pin!(respond(&stream, &req, shared));
        let kept = tokio::select! {
            kept = answer.as_mut() => kept,
            _ = shared.shutdown.cancelled() => {
                // As hyper's graceful shutdown: the answer in progress may
                // finish within the handshake timeout, then the connection ends.
                let _ = tokio::time::timeout(shared.handshake_timeout, answer).await;
                false
            }
        };
        if !kept || shared.shutdown.is_cancelled() {
            return None;
        }
    }
}

/// Reads until `buf` holds a whole request head, within the handshake
/// timeout; an idle connection ends at shutdown.
async fn next_request(stream: &mut TcpStream, buf: &mut BytesMut, shared: &Shared) -> Next {
    let deadline = tokio::time::Instant::now() + shared.handshake_timeout;
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                // A host name the server does not answer to: hyper's path
                // refuses it (421), as it does every other request's.
                Parsed::Media(req, _) if shared.hosts.check(&req.headers).is_err() => {
                    return Next::Other;
                }
                Parsed::Media(req, used) => {
                    buf.advance(used);
                    return Next::Media(req);
                }
                Parsed::Partial if buf.len() < HTTP_BUFFER => {}
                Parsed::Partial | Parsed::Other => return Next::Other,
            }
        }
        buf.reserve(4096);
        let read = tokio::select! {
            _ = shared.shutdown.cancelled() => return Next::Closed,
            r = tokio::time::timeout_at(deadline, stream.read_buf(buf)) => r,
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            // Closed, failed, or the head took longer than the timeout.
            _ => return Next::Closed,
        }
    }
}

/// A media request this path answers, or `Other` for hyper.
fn parse(buf: &[u8]) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let head = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Parsed::Other,
    };
    let Some(target) = req.path.filter(|p| p.starts_with(MEDIA)) else {
        return Parsed::Other;
    };
    // The path as hyper's `Uri` gives it, and only a target it accepts.
    let Ok(pq) = http::uri::PathAndQuery::try_from(target) else {
        return Parsed::Other;
    };
    let http10 = req.version == Some(0);
    let (mut close, mut keep) = (false, false);
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for field in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(field.name.as_bytes()),
            HeaderValue::from_bytes(field.value),
        ) else {
            return Parsed::Other;
        };
        match name {
            // A body, or more than HTTP/1.1 answers: hyper's to handle.
            header::TRANSFER_ENCODING | header::UPGRADE | header::EXPECT => return Parsed::Other,
            header::CONTENT_LENGTH if value.as_bytes() != b"0" => return Parsed::Other,
            header::CONNECTION => {
                for token in value.to_str().unwrap_or_default().split(',') {
                    close |= token.trim().eq_ignore_ascii_case("close");
                    keep |= token.trim().eq_ignore_ascii_case("keep-alive");
                }
            }
            _ => {}
        }
        headers.append(name, value);
    }
    let keep_alive = !close && (!http10 || keep);
    let req = MediaRequest {
        head,
        path: pq.path().to_owned(),
        query: pq.query().map(str::to_owned),
        headers,
        keep_alive,
        http10,
    };
    Parsed::Media(Box::new(req), used)
}

/// Answers one media request; whether the connection stays open.
async fn respond(stream: &TcpStream, req: &MediaRequest, shared: &Shared) -> bool {
    let method = if req.head { Method::HEAD } else { Method::GET };
    let timeout = shared.conn.write_timeout;
    let query = req.query.as_deref();
    let report = Report {
        warnings: &shared.warnings,
        out_of_files: &shared.metrics.out_of_files[1],
    };
    let answer = (shared.media)
        .answer(&method, &req.path, query, &req.headers, &report)
        .await;
    let result = match answer {
        Answer::Complete(res) => {
            let res = shared.metrics.http.count(Route::Media, req.head, res);
            let (parts, body) = res.into_parts();
            let len = hyper::body::Body::size_hint(&body).exact();
            let body = if req.head {
                Bytes::new()
            } else {
                match body.collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => return false,
                }
            };
            let mut out = encode_head(parts.status, &parts.headers, len, req);
            out.extend_from_slice(&body);
            sendfile::write_all(stream, &out, false, timeout).await
        }
        Answer::File {
            head,
            file,
            start,
            len,
        } => {
            let sent = shared.metrics.http.count_sent(Route::Media, head.status());
            let out = encode_head(head.status(), head.headers(), None, req);
            match sendfile::write_all(stream, &out, true, timeout).await {
                Ok(()) => {
                    sendfile::send_file(stream, file, start, len, timeout, &sent, &shared.heads)
                        .await
                }
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => req.keep_alive,
        Err(e) => {
            tracing::debug!(error = %e, path = %req.path, "media download ended early");
            false
        }
    }
}

/// The status line and header fields of an answer, as hyper writes them:
/// `Date` added, `Content-Length` from the body when the route set none
/// (never on a 304), and `Connection` when keep-alive must be said either way.
fn encode_head(
    status: StatusCode,
    headers: &HeaderMap,
    body_len: Option<u64>,
    req: &MediaRequest,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut field = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    for (name, value) in headers {
        field(name.as_str().as_bytes(), value.as_bytes());
    }
    if !headers.contains_key(header::CONTENT_LENGTH) && status != StatusCode::NOT_MODIFIED {
        if let Some(n) = body_len {
            field(b"content-length", n.to_string().as_bytes());
        }
    }
    if !req.keep_alive {
        field(b"connection", b"close");
    } else if req.http10 {
        field(b"connection", b"keep-alive");
    }
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    field(b"date", date.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(bytes: &[u8]) -> MediaRequest {
        match parse(bytes) {
            Parsed::Media(req, used) => {
                assert_eq!(used, bytes.len());
                *req
            }
            Parsed::Partial => panic!("partial"),
            Parsed::Other => panic!("other"),
        }
    }

    #[test]
    fn media_requests_are_answered_here_and_the_rest_by_hyper() {
        let r = media(b"GET /media/a%20b.mp3?x=1 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n");
        assert_eq!(r.path, "/media/a%20b.mp3");
        assert_eq!(r.query.as_deref(), Some("x=1"));
        assert!(r.keep_alive && !r.head && !r.http10);
        assert_eq!(r.headers.get("range").unwrap(), "bytes=0-9");
        assert!(media(b"HEAD /media/a HTTP/1.1\r\n\r\n").head);
        assert!(!media(b"GET /media/a HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!media(b"GET /media/a HTTP/1.0\r\n\r\n").keep_alive);
        assert!(media(b"GET /media/a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(matches!(
            parse(b"GET /media/a HTTP/1.1\r\nHo"),
            Parsed::Partial
        ));
        for other in [
            &b"GET /ws HTTP/1.1\r\n\r\n"[..],
            b"POST /media/a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            b"GET /media/a HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            b"GET /media/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /media/a HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET http://x/media/a HTTP/1.1\r\n\r\n",
            b"GET /media/a HTTP/2.0\r\n\r\n",
            b"\x16\x03\x01",
        ] {
            assert!(matches!(parse(other), Parsed::Other), "{other:?}");
        }
    }
}
