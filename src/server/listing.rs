//! The `stations` answer (`list_stations` and `GET /api/stations`), bounded
//! and cached.
//!
//! - **Bounded.** At most `--max-list` stations (default 200) and at most
//!   [`MAX_LIST_BYTES`] of entries, so the frame always fits the 64 KiB a
//!   connection may have waiting to be written: the answer never fails the
//!   connection that asked, however many stations are live or however long
//!   their track names. When stations are left out, those with the most
//!   listeners are kept (ties by name), the answer still lists them by
//!   name, and says `truncated: true` with the `total`.
//! - **Cached for up to [`MAX_AGE`].** Every listing walks every station
//!   (and in cluster mode reads them from Redis in bounded batches), so one
//!   walk serves every request of the same second, from any connection.
//! - **Made once at a time.** When the cached page is stale, one request
//!   makes the next while every other is answered the page in hand, a
//!   little stale; only before the first page do they wait for it (and a
//!   listing that just failed answers its refusal to those that waited,
//!   rather than each trying again in turn). So a flood of requests costs
//!   the backend one listing a second, however many connections ask.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::protocol::{self, ServerMessage, StationSummary};
use crate::server::backend::Backend as _;
use crate::server::backend::any::AnyBackend;
use crate::server::metrics::Metrics;
use crate::server::refusal::Refusal;

/// How long one listing answers every request.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(1);

/// Most bytes of entries in one answer: with the frame's own fields, well
/// under the 64 KiB a connection may have waiting to be written.
pub(crate) const MAX_LIST_BYTES: usize = 48 * 1024;

/// One listing, ready to send.
#[derive(Debug)]
pub(crate) struct Page {
    /// The entries, for what is made of them (Icecast's status page).
    pub stations: Vec<StationSummary>,
    /// `GET /api/stations`'s body.
    pub json: Bytes,
    /// The `stations` frame (`list_stations`'s answer), encoded once for
    /// every connection that asks while the page is cached.
    pub frame: Utf8Bytes,
}

impl Page {
    /// `list_stations`'s answer: the frame made with the page, shared.
    pub(crate) fn answer(&self) -> Message {
        Message::Text(self.frame.clone())
    }
}

/// The cached listing.
pub(crate) struct Listing {
    max: usize,
    metrics: Arc<Metrics>,
    cached: Mutex<Cached>,
    /// Held by the one request making a listing.
    making: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cached {
    page: Option<(Instant, Arc<Page>)>,
    /// The last listing's refusal, while it is recent.
    failed: Option<(Instant, Refusal)>,
}

impl Listing {
    pub(crate) fn new(max: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            max,
            metrics,
            cached: Mutex::new(Cached::default()),
            making: tokio::sync::Mutex::new(()),
        }
    }

    /// The newest listing: the cached one while it is younger than
    /// [`MAX_AGE`]; else made afresh by this request, or, when another is
    /// making it, the page in hand.
    pub(crate) async fn get(&self, backend: &AnyBackend) -> Result<Arc<Page>, Refusal> {
        if let Some(fresh) = self.fresh() {
            return fresh;
        }
        let _making = match self.making.try_lock() {
            Ok(making) => making,
            Err(_) => {
                if let Some((_, page)) = &self.lock().page {
                    return Ok(page.clone());
                }
                if backend.answers_at_once() {
                    // In memory nothing is to be spared by waiting (and a
                    // single node's request may not wait).
                    return Ok(self.make(backend.list().await?));
                }
                let making = self.making.lock().await;
                if let Some(fresh) = self.fresh() {
                    return fresh;
                }
                making
            }
        };
        // Made by another request since this one looked.
        if let Some(fresh) = self.fresh() {
            return fresh;
        }
        match backend.list().await {
            Ok(all) => Ok(self.make(all)),
            Err(refusal) => {
                self.lock().failed = Some((Instant::now(), refusal.clone()));
                Err(refusal)
            }
        }
    }

    /// The cached page or refusal while younger than [`MAX_AGE`].
    fn fresh(&self) -> Option<Result<Arc<Page>, Refusal>> {
        let cached = self.lock();
        if let Some((at, page)) = &cached.page {
            if at.elapsed() < MAX_AGE {
                return Some(Ok(page.clone()));
            }
        }
        match &cached.failed {
            Some((at, refusal)) if at.elapsed() < MAX_AGE => Some(Err(refusal.clone())),
            _ => None,
        }
    }

    /// Bounds a listing and caches it.
    fn make(&self, all: Vec<StationSummary>) -> Arc<Page> {
        self.metrics.limits.list_refreshes.inc();
        let page = Arc::new(bound(all, self.max));
        let mut cached = self.lock();
        cached.page = Some((Instant::now(), page.clone()));
        cached.failed = None;
        page
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Keeps at most `max` stations and [`MAX_LIST_BYTES`], the most listened
/// first, listed by name.
pub(crate) fn bound(mut all: Vec<StationSummary>, max: usize) -> Page {
    let total = all.len();
    all.sort_by(|a, b| {
        b.listeners
            .cmp(&a.listeners)
            .then_with(|| a.station.cmp(&b.station))
    });
    let mut bytes = 0;
    let mut kept = 0;
    for s in all.iter().take(max) {
        // The entry's size as encoded (once a second at most: cached).
        let size = serde_json::to_vec(s).map_or(usize::MAX / 2, |v| v.len() + 1);
        if bytes + size > MAX_LIST_BYTES {
            break;
        }
        bytes += size;
        kept += 1;
    }
    all.truncate(kept);
    all.sort_by(|a, b| a.station.cmp(&b.station));
    let truncated = kept < total;
    #[derive(serde::Serialize)]
    struct Body<'a> {
        stations: &'a [StationSummary],
        total: usize,
        truncated: bool,
    }
    let json = serde_json::to_vec(&Body {
        stations: &all,
        total,
        truncated,
    })
    .map(Bytes::from)
    .unwrap_or_else(|_| Bytes::from_static(b"{\"stations\":[]}"));
    // A copy of the entries once a second at most (the page is cached).
    let frame = protocol::encode(&ServerMessage::Stations {
        stations: all.clone(),
        total,
        truncated,
    });
    Page {
        stations: all,
        json,
        frame,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::StationName;

    /// The size of `page`'s frame.
    fn encoded_len(page: &Page) -> usize {
        page.frame.len()
    }

    /// `page`'s frame as a client reads it: (stations, total, truncated).
    fn decoded(page: &Page) -> (Vec<StationSummary>, usize, bool) {
        match serde_json::from_str(page.frame.as_str()).expect("json") {
            ServerMessage::Stations {
                stations,
                total,
                truncated,
            } => (stations, total, truncated),
            other => panic!("not a stations frame: {other:?}"),
        }
    }

    fn station(i: usize, listeners: u64, track: &str) -> StationSummary {
        StationSummary {
            station: StationName::new(&format!("s{i:05}")).expect("a name"),
            listeners,
            live: true,
            // Quotes and controls escape to twice their length or more.
            track: Some(track.to_owned()),
            title: Some(track.to_owned()),
            artist: Some(track.to_owned()),
            duration_ms: Some(u64::MAX),
            playing: true,
            position_ms: u64::MAX,
            server_time_ms: i64::MIN,
        }
    }

    #[test]
    fn the_most_listened_are_kept_and_the_frame_fits() {
        let long = "\"".repeat(256);
        let all: Vec<_> = (0..1000).map(|i| station(i, i as u64 % 7, &long)).collect();
        let page = bound(all, 200);
        let (stations, total, truncated) = decoded(&page);
        assert!(truncated);
        assert_eq!(total, 1000);
        assert!(encoded_len(&page) < 60 * 1024, "{}", encoded_len(&page));
        assert!(stations.iter().all(|s| s.listeners == 6));
        assert!(stations.windows(2).all(|w| w[0].station < w[1].station));
        let few = bound((0..3).map(|i| station(i, 0, "t")).collect(), 200);
        let (stations, total, truncated) = decoded(&few);
        assert!(!truncated);
        assert_eq!((total, stations.len()), (3, 3));
    }

    /// A cached page answers `list_stations` with the frame made with it:
    /// a request copies nothing and encodes nothing, however long the
    /// page.
    #[tokio::test]
    async fn a_cached_page_answers_without_encoding() {
        let metrics = Arc::new(Metrics::default());
        let backend = AnyBackend::start(
            crate::server::backend::any::BackendConfig::Local {
                grace: Duration::from_secs(1),
            },
            10,
            metrics.clone(),
            tokio_util::task::TaskTracker::new(),
            tokio_util::sync::CancellationToken::new(),
        )
        .expect("the in-memory backend");
        let listing = Listing::new(200, metrics);
        let page = listing.get(&backend).await.expect("a page");
        assert_eq!(decoded(&page).1, 0);
        let before = crate::allocations::allocations();
        let again = listing.get(&backend).await.expect("the cached page");
        let answer = again.answer();
        assert_eq!(crate::allocations::allocations(), before, "encoded again");
        assert_eq!(answer, Message::Text(page.frame.clone()));
    }
}
