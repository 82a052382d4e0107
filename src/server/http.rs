//! HTTP: each TCP connection served by hyper's HTTP/1 connection (a plain
//! one after [`zerocopy`] has served its media requests), and the
//! routing table: the WebSocket upgrade at `/ws` ([`upgrade`]), health,
//! stations and metrics here, and the paths of the media library, the
//! sessions and the web player handed to their own modules.
//!
//! Every connection has a header read timeout (the handshake timeout), a
//! body timeout (the same, on `PUT /api/session`) and a write timeout
//! ([`TimedStream`]), so a stalled client holds nothing for long. A
//! WebSocket upgrade and a session save from a browser page must come from
//! the server's own origin or one of `--allowed-origins` ([`crate::server::origin`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::server::admission::{Admission, Held, RequestSlot};
use crate::server::backend::Backend as _;
use crate::server::metrics::Route;
use crate::server::outlet::{Outlet, OutletIo};
use crate::server::response::{Body, json_bytes, method_not_allowed, text};
use crate::server::shared::Shared;
use crate::server::timed_io::TimedStream;
use crate::server::warnings::Reason;
#[cfg(target_os = "linux")]
use crate::server::zerocopy;
use crate::server::{history, icestats, media, player, playlists, sessions, stream, upgrade};

/// Serves one TCP connection's HTTP requests (and hands off an upgrade):
/// over TLS first when the server has a certificate. `admission` is the
/// connection's place under the connection limits; an upgrade takes it to
/// the WebSocket, otherwise it is given back when the connection ends.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    admission: Admission,
    shared: Arc<Shared>,
) {
    let held: Held = Arc::new(Mutex::new(Some(admission)));
    let Some(tls) = shared.tls.clone() else {
        // Media requests by sendfile, until another request hands the
        // connection to hyper with what was read of it. Not for a trusted
        // proxy's connection: its requests are each counted against the
        // client they are for, which hyper's path does.
        #[cfg(target_os = "linux")]
        let (stream, read) = if shared.proxies.trusts(peer.ip()) {
            (stream, bytes::Bytes::new())
        } else {
            let Some(zerocopy::Handover { stream, read }) = zerocopy::serve(stream, &shared).await
            else {
                return;
            };
            (stream, read)
        };
        #[cfg(not(target_os = "linux"))]
        let read = bytes::Bytes::new();
        let io = TimedStream::replaying(stream, shared.conn.write_timeout, read);
        return serve_http(io, peer, held, shared).await;
    };
    // Boxed: the TLS handshake's state does not size the plain path.
    let accept = Box::pin(
        tls.acceptor()
            .accept(OutletIo::new(Outlet::new_tls(stream))),
    );
    match tokio::time::timeout(shared.handshake_timeout, accept).await {
        Ok(Ok(tls_stream)) => {
            let io = TimedStream::new(tls_stream, shared.conn.write_timeout);
            Box::pin(serve_http(io, peer, held, shared)).await;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            shared
                .warnings
                .note_with(Reason::TlsHandshake, || peer.ip().to_string());
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            shared
                .warnings
                .note_with(Reason::TlsHandshake, || peer.ip().to_string());
        }
    }
}

/// hyper's HTTP/1 over `io` (plain TCP or TLS), with the handshake
/// timeout on headers, until the connection closes or is upgraded.
async fn serve_http<I>(io: TimedStream<I>, peer: SocketAddr, held: Held, shared: Arc<Shared>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| {
        let shared = svc_shared.clone();
        let held = held.clone();
        async move {
            let (kind, head) = (route_of(req.uri().path()), req.method() == Method::HEAD);
            let res = route(req, peer, held, shared.clone()).await;
            Ok::<_, Infallible>(shared.metrics.http.count(kind, head, res))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.handshake_timeout)
        // hyper's default (~400 KiB) is what each slow media download would
        // hold in its write buffer; this keeps one to about two body chunks.
        .max_buf_size(media::HTTP_BUFFER)
        .serve_connection(io, svc)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
                if tls_error(&e) {
                    shared.warnings.note_with(Reason::TlsRecord, || peer.ip().to_string());
                }
            }
        }
        _ = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            if let Ok(Err(e)) = tokio::time::timeout(shared.handshake_timeout, conn).await {
                tracing::debug!(%peer, error = %e, "http connection failed while draining");
            }
        }
    }
}

/// Whether a connection's error came from TLS (a bad record, a fatal
/// alert), anywhere in its chain of causes.
fn tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<tokio_rustls::rustls::Error>() {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if inner.is::<tokio_rustls::rustls::Error>() {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

async fn route(
    req: Request<Incoming>,
    peer: SocketAddr,
    held: Held,
    shared: Arc<Shared>,
) -> Response<Body> {
    // The client: the peer, or whom a trusted proxy forwards for.
    let client = SocketAddr::new(
        shared.proxies.client_ip(req.headers(), peer.ip()),
        peer.port(),
    );
    if let Err(why) = shared.hosts.check(req.headers()) {
        shared.metrics.host_refused.inc();
        shared
            .warnings
            .note_with(Reason::Origin, || client.ip().to_string());
        return text(StatusCode::MISDIRECTED_REQUEST, why);
    }
    // A trusted proxy's connection was not counted against anyone when it
    // was accepted: each of its requests is counted against the client it
    // is for, until its response is sent (a WebSocket upgrade is counted
    // by the upgrade, and a stream by its answer, for the socket's life).
    let path = req.uri().path();
    if path == "/ws" || stream::serves(path) || !shared.proxies.trusts(peer.ip()) {
        return answer(req, peer, client, held, shared).await;
    }
    match shared.gate.count_request(client.ip()) {
        Ok(slot) => answer(req, peer, client, held, shared)
            .await
            .map(|body| held_while_sent(body, slot)),
        Err(full) => {
            full.count(&shared.metrics, &shared.warnings, client.ip());
            let mut res = text(full.status(), full.message());
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            res
        }
    }
}

/// `body`, keeping `slot` until it is sent (or dropped unsent). Its length
/// stays known, so a response keeps its `Content-Length` (not chunked).
fn held_while_sent(body: Body, slot: RequestSlot) -> Body {
    SlotBody { body, _slot: slot }.boxed_unsync()
}

/// A body that holds a request's slot for as long as it lives.
struct SlotBody {
    body: Body,
    _slot: RequestSlot,
}

impl hyper::body::Body for SlotBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The answer to a request from `client` (through `peer`, which may be a
/// trusted proxy).
async fn answer(
    req: Request<Incoming>,
    peer: SocketAddr,
    client: SocketAddr,
    held: Held,
    shared: Arc<Shared>,
) -> Response<Body> {
    let path = req.uri().path();
    let method = req.method();
    match (method, path) {
        (&Method::GET, "/ws") => match shared.origins.check(req.headers()) {
            Ok(()) => upgrade::upgrade(req, client, &held, shared),
            Err(why) => forbidden(&shared, client, why),
        },
        (_, "/ws") => method_not_allowed("GET"),
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET | &Method::HEAD, "/readyz") => match shared.backend.readiness() {
            Ok(()) => text(StatusCode::OK, "ready"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
        },
        (&Method::GET, "/api/stations") => match shared.listing.get(&shared.backend).await {
            Ok(page) => json_bytes(StatusCode::OK, page.json.clone()),
            Err(refusal) => text(StatusCode::SERVICE_UNAVAILABLE, refusal.to_string()),
        },
        (_, p) if p.starts_with(history::PREFIX) => station_history(method, p, &shared).await,
        // What radio apps and Icecast tools read (the README's "Playlists and
        // status for radio apps").
        (_, p) if playlists::serves(p) => {
            let how = (shared.proxies.trusts(peer.ip()), shared.tls.is_some());
            playlists::route(method, p, req.headers(), how, &shared.backend).await
        }
        (_, icestats::PATH) => {
            let from = icestats::Sources {
                listing: &shared.listing,
                backend: &shared.backend,
                seen: &shared.icestats,
                trusted: shared.proxies.trusts(peer.ip()),
                tls: shared.tls.is_some(),
                started: shared.started,
                stream_kbps: shared.streams.bitrate_kbps(),
            };
            icestats::route(method, req.headers(), from).await
        }
        // A station as an MP3 stream, for radio apps (docs/stream.md).
        (_, p) if stream::serves(p) => match shared.origins.check(req.headers()) {
            Ok(()) => station_stream(&req, client, &held, &shared).await,
            Err(why) => forbidden(&shared, client, why),
        },
        (&Method::GET, "/metrics") if shared.metrics_apart => text(
            StatusCode::NOT_FOUND,
            "this server serves /metrics on its --metrics-listen address",
        ),
        (&Method::GET, "/metrics") => shared.metrics.page(req.headers(), || shared.scrape()),
        (_, "/healthz" | "/readyz" | "/api/stations" | "/metrics") => method_not_allowed("GET"),
        // The media library, sessions and the web player (docs/player.md).
        (_, p) if media::Library::serves(p) => {
            let report = media::Report {
                warnings: &shared.warnings,
                out_of_files: &shared.metrics.out_of_files[1],
            };
            shared.media.route(&req, &report).await
        }
        (&Method::PUT, sessions::PATH) => match shared.origins.check(req.headers()) {
            Ok(()) => {
                let limits = sessions::Limits {
                    client: client.ip(),
                    body_timeout: shared.handshake_timeout,
                };
                let res = shared.sessions.route(req, limits).await;
                note_refused(&shared, &res, client);
                res
            }
            Err(why) => forbidden(&shared, client, why),
        },
        (_, sessions::PATH) => {
            let limits = sessions::Limits {
                client: client.ip(),
                body_timeout: shared.handshake_timeout,
            };
            shared.sessions.route(req, limits).await
        }
        (_, p) if player::serves(p) => player::route(method, p, shared.media.base_url()),
        _ => text(StatusCode::NOT_FOUND, format!("no such page: {path}")),
    }
}

/// Serves `/metrics` alone on a connection to the `--metrics-listen`
/// address: plain HTTP, no other path, with the header read timeout and
/// the write timeout of every connection.
pub(crate) async fn serve_metrics(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let io = TokioIo::new(TimedStream::new(stream, shared.conn.write_timeout));
    let svc_shared = shared.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let shared = svc_shared.clone();
        async move {
            let res = match (req.method(), req.uri().path()) {
                (&Method::GET, "/metrics") => {
                    shared.metrics.page(req.headers(), || shared.scrape())
                }
                (_, "/metrics") => method_not_allowed("GET"),
                (_, path) => text(
                    StatusCode::NOT_FOUND,
                    format!("no such page: {path} (this address serves /metrics alone)"),
                ),
            };
            Ok::<_, Infallible>(res)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.handshake_timeout)
        .serve_connection(io, svc);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
            }
        }
        _ = shared.shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
    }
}

/// `GET /api/stations/{name}/history`: the station's last plays.
async fn station_history(method: &Method, path: &str, shared: &Shared) -> Response<Body> {
    let Some(name) = history::station_of(path) else {
        return text(StatusCode::NOT_FOUND, format!("no such page: {path}"));
    };
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    let name = match name {
        Ok(name) => name,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    match shared.backend.history(&name).await {
        Ok(plays) => history::answer(&name, plays),
        Err(refusal) => text(StatusCode::SERVICE_UNAVAILABLE, refusal.to_string()),
    }
}

/// `GET`/`HEAD /stations/{name}/stream`, from `client` on a connection
/// whose admission is `held`: a proxied client is counted against its own
/// address first (as a WebSocket upgrade is).
async fn station_stream(
    req: &Request<Incoming>,
    client: SocketAddr,
    held: &Held,
    shared: &Shared,
) -> Response<Body> {
    let counted = match held.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        Some(admission) => admission.count_client(&shared.gate, client.ip()),
        None => Ok(()),
    };
    if let Err(full) = counted {
        full.count(&shared.metrics, &shared.warnings, client.ip());
        let mut res = text(full.status(), full.message());
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return res;
    }
    let asked = stream::Asked {
        method: req.method(),
        path: req.uri().path(),
        headers: req.headers(),
        scheme: if shared.tls.is_some() {
            "https"
        } else {
            "http"
        },
    };
    shared.streams.answer(asked, &shared.backend).await
}

/// 403 for a page of another origin.
fn forbidden(shared: &Shared, client: SocketAddr, why: String) -> Response<Body> {
    shared.metrics.origin_refused.inc();
    shared
        .warnings
        .note_with(Reason::Origin, || client.ip().to_string());
    text(StatusCode::FORBIDDEN, why)
}

/// Counts a session request refused for its rate or its slow body.
fn note_refused(shared: &Shared, res: &Response<Body>, client: SocketAddr) {
    let reason = match res.status() {
        StatusCode::TOO_MANY_REQUESTS => Reason::SessionRate,
        StatusCode::REQUEST_TIMEOUT => Reason::BodyTimeout,
        _ => return,
    };
    shared
        .warnings
        .note_with(reason, || client.ip().to_string());
}

/// A path's `radio_http_requests_total` route.
fn route_of(path: &str) -> Route {
    match path {
        "/ws" => Route::Ws,
        "/healthz" | "/readyz" => Route::Health,
        "/metrics" => Route::Metrics,
        "/api/stations" => Route::Stations,
        p if p.starts_with(history::PREFIX) => Route::Stations,
        icestats::PATH => Route::Stations,
        p if playlists::serves(p) => Route::Stations,
        "/api/library" => Route::Library,
        sessions::PATH => Route::Session,
        p if media::Library::serves(p) => Route::Media,
        p if player::serves(p) => Route::Player,
        p if stream::serves(p) => Route::Stream,
        _ => Route::Other,
    }
}
