//! The WebSocket upgrade at `/ws`: checks the handshake, takes over the
//! connection's [`Admission`] *before* answering 101 (so a proxied client
//! over `--max-connections-per-ip` is answered 429, never with a socket the
//! server then drops), then hands the upgraded stream, without hyper's
//! buffers, to the connection's own task: the TCP stream itself, or the TLS
//! stream over it. The admission lives in the connection's guard and is
//! returned when it ends. (The origin was checked by the router.)

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::Instrument;

use crate::server::admission::{Admission, Full, Held};
use crate::server::connection;
use crate::server::metrics::Metrics;
use crate::server::outlet::{ConnIo, Outlet, OutletIo};
use crate::server::response::{Body, full, text};
use crate::server::shared::Shared;
use crate::server::timed_io::TimedStream;

/// Kernel send buffer of an upgraded WebSocket. Small, so a stalled client
/// parks little in the kernel and the write timeout notices it soon; a sync
/// frame is a few hundred bytes.
const WS_SEND_BUFFER: usize = 32 * 1024;

/// Caps the kernel send buffer of an upgraded WebSocket.
fn cap_send_buffer(stream: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(stream).set_send_buffer_size(WS_SEND_BUFFER) {
        tracing::debug!(error = %e, "cannot set SO_SNDBUF");
    }
}

/// Counts an open WebSocket connection for as long as it lives.
struct ConnGuard {
    metrics: Arc<Metrics>,
    _admission: Admission,
}

impl ConnGuard {
    fn new(metrics: Arc<Metrics>, admission: Admission) -> Self {
        metrics.connections.inc();
        metrics.connections_total.inc();
        Self {
            metrics,
            _admission: admission,
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.metrics.connections.dec();
    }
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// The WebSocket's task: finish the upgrade, then serve it. Kept apart from
/// the request handler so the task's future holds only what it needs.
async fn serve_websocket(
    on_upgrade: hyper::upgrade::OnUpgrade,
    config: WebSocketConfig,
    admission: Admission,
    shared: Arc<Shared>,
    id: u64,
    client: IpAddr,
) {
    let Some(ws) = finish_upgrade(on_upgrade, config, shared.handshake_timeout).await else {
        return;
    };
    let _guard = ConnGuard::new(shared.metrics.clone(), admission);
    connection::run(ws, shared, id, client).await;
}

/// Waits for hyper to hand over the upgraded socket and wraps it.
async fn finish_upgrade(
    on_upgrade: hyper::upgrade::OnUpgrade,
    config: WebSocketConfig,
    limit: std::time::Duration,
) -> Option<WebSocketStream<ConnIo>> {
    let upgraded = match tokio::time::timeout(limit, on_upgrade).await {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "upgrade failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("upgrade timed out");
            return None;
        }
    };
    // Take the stream back out of hyper: no boxed I/O, no hyper buffers.
    let (io, read_buf) = match upgraded.downcast::<TokioIo<TimedStream>>() {
        Ok(hyper::upgrade::Parts { io, read_buf, .. }) => {
            let (stream, unread) = io.into_inner().into_parts();
            let read_buf = joined(read_buf, unread);
            cap_send_buffer(&stream);
            // The socket is shared with the station fan-out (docs/architecture.md).
            (ConnIo::Plain(OutletIo::new(Outlet::new(stream))), read_buf)
        }
        Err(upgraded) => {
            type Tls = TimedStream<tokio_rustls::server::TlsStream<OutletIo>>;
            let Ok(hyper::upgrade::Parts { io, read_buf, .. }) =
                upgraded.downcast::<TokioIo<Tls>>()
            else {
                tracing::error!("upgraded connection is neither TCP nor TLS");
                return None;
            };
            let (tls, _) = io.into_inner().into_parts();
            cap_send_buffer(tls.get_ref().0.outlet().stream());
            (ConnIo::Tls(Box::new(tls)), read_buf)
        }
    };
    // `read_buf` may be a view into hyper's 8 KiB read buffer; keeping it
    // would keep that buffer alive for the connection's whole life.
    let ws = if read_buf.is_empty() {
        drop(read_buf);
        WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
    } else {
        let early = read_buf.to_vec();
        drop(read_buf);
        WebSocketStream::from_partially_read(io, early, Role::Server, Some(config)).await
    };
    Some(ws)
}

/// What hyper read past the request and what it left of the bytes read
/// before it took the connection (the plain-TCP media path's), in order.
fn joined(read_buf: bytes::Bytes, unread: bytes::Bytes) -> bytes::Bytes {
    if unread.is_empty() {
        return read_buf;
    }
    [read_buf, unread].concat().into()
}

/// Answers `GET /ws` from `client` (the peer, or whom a trusted proxy
/// forwards for) on a connection whose admission is `held`.
pub(crate) fn upgrade(
    mut req: Request<Incoming>,
    client: SocketAddr,
    held: &Held,
    shared: Arc<Shared>,
) -> Response<Body> {
    let accept = match accept_key(&req) {
        Ok(accept) => accept,
        Err(refused) => return *refused,
    };
    let taken = held.lock().unwrap_or_else(|p| p.into_inner()).take();
    let admitted = taken.ok_or(Full::Server).and_then(|mut a| {
        a.count_client(&shared.gate, client.ip())?;
        Ok(a)
    });
    let admission = match admitted {
        Ok(a) => a,
        Err(full) => return refused(&shared, client, full),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let config = ws_config(shared.conn.max_message_bytes);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("conn", id, peer = %client);
    shared.tasks.spawn(
        serve_websocket(
            on_upgrade,
            config,
            admission,
            shared.clone(),
            id,
            client.ip(),
        )
        .instrument(span),
    );
    let mut res = Response::new(full(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    res
}

/// 503 (`--max-connections`) or 429 (`--max-connections-per-ip`) before
/// any WebSocket exists.
fn refused(shared: &Shared, client: SocketAddr, full: Full) -> Response<Body> {
    full.count(&shared.metrics, &shared.warnings, client.ip());
    let mut res = text(full.status(), full.message());
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    // The connection's admission is gone with the refusal: it may not stay
    // open for more requests, uncounted.
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// Checks the handshake's headers; the `Sec-WebSocket-Accept` to answer
/// with, or the response that refuses the upgrade.
fn accept_key(req: &Request<Incoming>) -> Result<HeaderValue, Box<Response<Body>>> {
    if !header_has_token(req, header::UPGRADE, "websocket")
        || !header_has_token(req, header::CONNECTION, "upgrade")
    {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "this is the WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)",
        )));
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut res = text(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version; use 13",
        );
        res.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(Box::new(res));
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key",
        )));
    };
    HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|e| {
        Box::new(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot build the upgrade: {e}"),
        ))
    })
}

/// The server side's WebSocket limits, set explicitly (tungstenite's
/// defaults allocate a 128 KiB read buffer per connection).
fn ws_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        // Clients send small requests (tune_in, pings, updates of a few
        // hundred bytes); a larger frame still arrives whole, tungstenite
        // reserves its full length. 512 rather than 1024 bytes saves half a
        // KiB of every connection (4.30 -> 3.81 KiB RSS each at 10k).
        .read_buffer_size(512)
        .write_buffer_size(0)
        // Room for a burst of frames to one slow client; past it, writes
        // wait and the write timeout decides.
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}
