//! HTTP: each TCP connection served by hyper's HTTP/1 connection, and the
//! routing table: the WebSocket upgrade at `/ws` ([`upgrade`]), health,
//! stations and metrics here, and the paths of the media library, the
//! sessions and the web player handed to their own modules.
//!
//! Every connection has a header read timeout (the handshake timeout) and a
//! write timeout ([`TimedStream`]), so a stalled client holds nothing for
//! long.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::protocol::StationSummary;
use crate::server::backend::Backend as _;
use crate::server::metrics::Route;
use crate::server::response::{Body, json, method_not_allowed, text};
use crate::server::shared::Shared;
use crate::server::timed_io::TimedStream;
use crate::server::{media, player, sessions, upgrade};

/// Serves one TCP connection's HTTP requests (and hands off an upgrade).
pub async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let io = TokioIo::new(TimedStream::new(stream, shared.conn.write_timeout));
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| {
        let shared = svc_shared.clone();
        async move {
            let (kind, head) = (route_of(req.uri().path()), req.method() == Method::HEAD);
            let res = route(req, peer, shared.clone()).await;
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

async fn route(req: Request<Incoming>, peer: SocketAddr, shared: Arc<Shared>) -> Response<Body> {
    let path = req.uri().path();
    let method = req.method();
    match (method, path) {
        (&Method::GET, "/ws") => upgrade::upgrade(req, peer, shared),
        (_, "/ws") => method_not_allowed("GET"),
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET | &Method::HEAD, "/readyz") => match shared.backend.readiness() {
            Ok(()) => text(StatusCode::OK, "ready"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
        },
        (&Method::GET, "/api/stations") => {
            #[derive(serde::Serialize)]
            struct Stations {
                stations: Vec<StationSummary>,
            }
            match shared.backend.list().await {
                Ok(stations) => json(StatusCode::OK, &Stations { stations }),
                Err(refusal) => text(StatusCode::SERVICE_UNAVAILABLE, refusal.to_string()),
            }
        }
        (&Method::GET, "/metrics") => shared.metrics.page(req.headers(), shared.scrape()),
        (_, "/healthz" | "/readyz" | "/api/stations" | "/metrics") => method_not_allowed("GET"),
        // The media library, sessions and the web player (docs/player.md).
        (_, p) if media::Library::serves(p) => shared.media.route(&req).await,
        (_, sessions::PATH) => shared.sessions.route(req).await,
        (_, p) if player::serves(p) => player::route(method, p),
        _ => text(StatusCode::NOT_FOUND, format!("no such page: {path}")),
    }
}

/// A path's `radio_http_requests_total` route.
fn route_of(path: &str) -> Route {
    match path {
        "/ws" => Route::Ws,
        "/healthz" | "/readyz" => Route::Health,
        "/metrics" => Route::Metrics,
        "/api/stations" => Route::Stations,
        "/api/library" => Route::Library,
        sessions::PATH => Route::Session,
        p if media::Library::serves(p) => Route::Media,
        p if player::serves(p) => Route::Player,
        _ => Route::Other,
    }
}
