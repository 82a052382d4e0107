//! HTTP traffic: requests and response body bytes by route and status
//! class. Every (route, class) pair's counters are created up front, so
//! counting a request is an array index and an atomic add.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt as _;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::server::response::Body;

/// What a request asked for, as its metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// The WebSocket upgrade (`/ws`).
    Ws,
    /// `/healthz` and `/readyz`.
    Health,
    /// `/metrics`.
    Metrics,
    /// `/api/stations`.
    Stations,
    /// `/api/library`.
    Library,
    /// `/media/{id}`.
    Media,
    /// `/api/session`.
    Session,
    /// The web player's page and files.
    Player,
    /// A station's MP3 stream (`/stations/{name}/stream`).
    Stream,
    /// Anything else (404).
    Other,
}

impl Route {
    const ALL: [Route; 10] = [
        Route::Ws,
        Route::Health,
        Route::Metrics,
        Route::Stations,
        Route::Library,
        Route::Media,
        Route::Session,
        Route::Player,
        Route::Stream,
        Route::Other,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Route::Ws => "ws",
            Route::Health => "health",
            Route::Metrics => "metrics",
            Route::Stations => "stations",
            Route::Library => "library",
            Route::Media => "media",
            Route::Session => "session",
            Route::Player => "player",
            Route::Stream => "stream",
            Route::Other => "other",
        }
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

type Grid = [[Counter; CLASSES.len()]; Route::ALL.len()];

/// `radio_http_requests_total` and `radio_http_response_bytes_total`.
pub(crate) struct Traffic {
    requests: Grid,
    bytes: Grid,
}

impl Traffic {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        Self {
            requests: grid(
                registry,
                "http_requests",
                "HTTP requests answered, by route and status class",
            ),
            bytes: grid(
                registry,
                "http_response_bytes",
                "HTTP response body bytes sent, by route and status class \
                 (route media: the media library's downloads)",
            ),
        }
    }

    /// Counts `res` as an answer on `route`, and its body's bytes as they
    /// are sent (a download cut short counts what went out; the answer to a
    /// `HEAD` request has no body).
    pub(crate) fn count(&self, route: Route, head: bool, res: Response<Body>) -> Response<Body> {
        let r = route as usize;
        let class = usize::from(res.status().as_u16() / 100).clamp(1, CLASSES.len()) - 1;
        self.requests[r][class].inc();
        let bytes = self.bytes[r][class].clone();
        match res.body().size_hint().exact() {
            _ if head => res,
            Some(n) => {
                bytes.inc_by(n);
                res
            }
            None => res.map(|inner| Counted { inner, bytes }.boxed_unsync()),
        }
    }
}

fn grid(registry: &mut Registry, name: &str, help: &str) -> Grid {
    let family = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
    registry.register(name, help, family.clone());
    std::array::from_fn(|r| {
        std::array::from_fn(|c| {
            family
                .get_or_create(&vec![
                    ("route", Route::ALL[r].as_str()),
                    ("status", CLASSES[c]),
                ])
                .clone()
        })
    })
}

/// A streamed body that counts its bytes as they are polled out.
struct Counted {
    inner: Body,
    bytes: Counter,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
