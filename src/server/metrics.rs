//! Prometheus metrics at `GET /metrics`, in OpenMetrics or the classic text
//! format as the scraper asks ([`exposition`]); docs/metrics.md lists them.
//!
//! Every metric handle is created once at start and shared; the per-message
//! paths only touch atomics. Labelled families are resolved up front into
//! arrays indexed by request type, error code, disconnect reason, and HTTP
//! route and status class ([`traffic`]), so no map (and no lock) is consulted
//! per message. The histograms are our own lock-free [`AtomicHistogram`]
//! because the client library's takes a lock on every observation.
//!
//! What is cheaper to read than to track (the process's figures, the
//! library, the sessions, each station's listeners, the backend's link) is
//! read when scraped: the caller hands [`Metrics::page`] a way to make a
//! [`Scrape`], which it calls at most once per [`SCRAPE_MAX_AGE`] (reading
//! every station's listeners walks them all); counters and histograms are
//! always current.

pub(crate) mod exposition;
mod histogram;
pub(crate) mod limits;
mod link;
mod process;
pub(crate) mod stream;
pub(crate) mod traffic;

use std::sync::Mutex;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::protocol::{ErrorCode, RequestType};
use crate::server::response::{Body, text};
use crate::version;
use exposition::Format;
pub(crate) use histogram::AtomicHistogram;
pub(crate) use link::Link;
pub(crate) use traffic::{Route, Traffic};

type Labels = Vec<(&'static str, &'static str)>;

/// Stations given a `radio_station_listeners` series, the most listened
/// first; the rest are in `radio_listeners` only.
pub(crate) const STATION_SERIES: usize = 20;

/// Tracks given a `radio_track_unplayable_reports` series, the most
/// reported first; every report is in `radio_cannot_play` too.
pub(crate) const TRACK_SERIES: usize = 20;

/// How long the figures of one [`Scrape`] answer every `/metrics` request:
/// a scraper (or a flood of requests) walks the stations once a second at
/// most.
pub(crate) const SCRAPE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a WebSocket connection ended (`radio_disconnects_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disconnect {
    /// The client closed, or the socket failed.
    Closed,
    /// The server shut down.
    Shutdown,
    /// The client accepted no bytes for the write timeout.
    SlowClient,
    /// The client answered no ping for the keepalive timeout.
    KeepaliveTimeout,
    /// The client kept flooding past the rate limit.
    RateLimit,
    /// A message over `--max-message-bytes`.
    TooBig,
    /// More than 5 wrong broadcast keys in a minute.
    KeyLockout,
}

impl Disconnect {
    const ALL: [Disconnect; 7] = [
        Disconnect::Closed,
        Disconnect::Shutdown,
        Disconnect::SlowClient,
        Disconnect::KeepaliveTimeout,
        Disconnect::RateLimit,
        Disconnect::TooBig,
        Disconnect::KeyLockout,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Disconnect::Closed => "closed",
            Disconnect::Shutdown => "shutdown",
            Disconnect::SlowClient => "slow_client",
            Disconnect::KeepaliveTimeout => "keepalive_timeout",
            Disconnect::RateLimit => "rate_limit",
            Disconnect::TooBig => "message_too_big",
            Disconnect::KeyLockout => "key_lockout",
        }
    }
}

/// Figures read when `/metrics` is scraped.
#[derive(Debug, Default)]
pub(crate) struct Scrape {
    /// This node's stations with listeners, and how many.
    pub stations: Vec<(String, u64)>,
    /// Private player sessions kept.
    pub sessions: usize,
    /// Tracks in the media library, and their bytes.
    pub library_tracks: usize,
    pub library_bytes: u64,
    /// Files the last scan left out of the library (they do not play).
    pub library_unplayable: usize,
    /// Files decoded for their loudness since start, and tracks waiting.
    pub loudness_measured: u64,
    pub loudness_pending: usize,
    /// The most reported unplayable tracks, and their reports.
    pub unplayable_tracks: Vec<(String, u64)>,
    /// The backend's link to the service it stands on, if it has one.
    pub link: Option<Link>,
}

/// All of the server's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    /// Open WebSocket connections (moved by the connection guard).
    pub connections: Gauge,
    /// WebSocket connections accepted since start.
    pub connections_total: Counter,
    /// Connections refused because `--max-connections` was reached.
    pub connections_refused: Counter,
    /// Connections refused because `--max-connections-per-ip` was reached.
    pub connections_refused_per_ip: Counter,
    /// Requests refused for a page of another origin (`--allowed-origins`).
    pub origin_refused: Counter,
    /// Requests refused with 421 for a host name not served (`--allowed-hosts`).
    pub host_refused: Counter,
    /// Stations with a broadcaster (including those in their grace period).
    pub stations: Gauge,
    /// Connections tuned to a station.
    pub listeners: Gauge,
    inbound: [Counter; RequestType::ALL.len()],
    /// Inbound frames that were not a valid request.
    pub inbound_invalid: Counter,
    /// `sync` frames written to listeners.
    pub syncs_sent: Counter,
    /// Deliveries the fan-out left to the listener's own task (its socket
    /// would block, a write was cut short, or it was writing itself).
    pub fanout_skipped: Counter,
    /// `cannot_play` reports accepted from listeners.
    pub cannot_play: Counter,
    /// `track_failed` frames sent to broadcasters.
    pub tracks_failed: Counter,
    errors: [Counter; ErrorCode::ALL.len()],
    disconnects: [Counter; Disconnect::ALL.len()],
    /// Time to handle one inbound request.
    pub handling_seconds: AtomicHistogram,
    /// Time from a state's publication on this node until a fan-out shard
    /// has written it to all of its listeners (one observation per shard).
    pub fanout_seconds: AtomicHistogram,
    /// HTTP requests and bytes by route and status class.
    pub http: Traffic,
    /// Times the process was out of file descriptors: `[0]` at accept
    /// (the connection waits in the listen queue), `[1]` opening a media
    /// file (the request is answered 503).
    pub out_of_files: [Counter; 2],
    /// The backend's link, as the latest scrape found it.
    link: link::LinkSeries,
    /// Refusals of the per-client limits on stations; listing refreshes.
    pub limits: limits::Limits,
    /// The stations' MP3 streams.
    pub stream: std::sync::Arc<stream::StreamSeries>,
    sessions: Gauge,
    library_tracks: Gauge,
    library_bytes: Gauge,
    library_unplayable: Gauge,
    loudness_measured: Counter,
    loudness_pending: Gauge,
    track_reports: Family<Vec<(&'static str, String)>, Gauge>,
    station_listeners: Family<Vec<(&'static str, String)>, Gauge>,
    /// One scrape at a time sets the scraped figures and encodes them;
    /// when the figures were last read.
    scraping: Mutex<Option<std::time::Instant>>,
}

impl Metrics {
    /// The server's metrics, registered once.
    pub(crate) fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::Process::new()));
        let r = root.sub_registry_with_prefix("radio");
        r.register(
            "build",
            "The version and commit of this server",
            Info::new(vec![
                ("version", version::VERSION),
                ("commit", version::COMMIT),
            ]),
        );
        // Registered in the order /metrics lists them.
        let connections = metric(r, "connections", "Open WebSocket connections");
        let connections_total = metric(
            r,
            "connections_accepted",
            "WebSocket connections accepted since start",
        );
        let connections_refused = metric(
            r,
            "connections_refused",
            "Connections refused with 503 at --max-connections",
        );
        let connections_refused_per_ip = metric(
            r,
            "connections_refused_per_ip",
            "Connections refused with 429 at --max-connections-per-ip",
        );
        let origin_refused = metric(
            r,
            "origin_refused",
            "Requests refused with 403 for a page of another origin",
        );
        let host_refused = metric(
            r,
            "host_refused",
            "Requests refused with 421 for a host name the server does not answer to",
        );
        let disconnects = counters(
            r,
            "disconnects",
            "WebSocket connections ended, by reason",
            "reason",
            |i| Disconnect::ALL[i].as_str(),
        );
        let stations = metric(
            r,
            "stations",
            "Stations with a broadcaster, including those in their grace period",
        );
        let listeners = metric(r, "listeners", "Connections tuned to a station");
        let station_listeners = Family::default();
        r.register(
            "station_listeners",
            format!(
                "Connections of this node tuned to a station, for the {STATION_SERIES} \
                 most listened stations"
            ),
            station_listeners.clone(),
        );
        let inbound = counters(
            r,
            "inbound_messages",
            "Inbound requests by type",
            "type",
            |i| RequestType::ALL[i].as_str(),
        );
        let inbound_invalid = metric(
            r,
            "inbound_invalid",
            "Inbound frames that were not a valid request",
        );
        let syncs_sent = metric(r, "syncs_sent", "sync frames written to listeners");
        let fanout_skipped = metric(
            r,
            "fanout_skipped",
            "Deliveries the fan-out left to the listener's own task (socket full or busy)",
        );
        let cannot_play = metric(
            r,
            "cannot_play",
            "cannot_play reports accepted from listeners whose player cannot play a track",
        );
        let tracks_failed = metric(
            r,
            "tracks_failed",
            "track_failed frames sent: every listener of a station could not play its track",
        );
        let track_reports = Family::default();
        r.register(
            "track_unplayable_reports",
            format!(
                "Listeners that reported they cannot play a track, since start, for the \
                 {TRACK_SERIES} most reported tracks"
            ),
            track_reports.clone(),
        );
        let errors = counters(r, "errors", "error frames sent, by code", "code", |i| {
            ErrorCode::ALL[i].as_str()
        });
        let handling_seconds = histogram(
            r,
            "message_handling_seconds",
            "Time to handle one inbound request",
        );
        let fanout_seconds = histogram(
            r,
            "fanout_seconds",
            "Time from a state's publication on this node until a fan-out shard \
             has written it to its listeners, one observation per shard",
        );
        let http = Traffic::new(r);
        let out_of_files = counters(
            r,
            "out_of_files",
            "Times the process was out of file descriptors: at accept (the connection \
             waits in the listen queue) or opening a media file (answered 503)",
            "at",
            |i| ["accept", "media"][i],
        );
        let limits = limits::Limits::new(r);
        let stream = std::sync::Arc::new(stream::StreamSeries::new(r));
        let sessions = metric(r, "sessions", "Private player sessions kept");
        let library_tracks = metric(r, "library_tracks", "Tracks in the media library");
        let library_bytes = metric(r, "library_bytes", "Bytes of the media library's tracks");
        let library_unplayable = metric(
            r,
            "library_unplayable",
            "Files the last scan left out of the library: they do not decode or have no duration",
        );
        let loudness_measured = metric(
            r,
            "library_loudness_measured",
            "Files decoded to measure their loudness since start (unchanged files are not \
             decoded again)",
        );
        let loudness_pending = metric(
            r,
            "library_loudness_pending",
            "Tracks waiting for their loudness to be measured (they play without gain)",
        );
        // Last: a backend's link series, when it has a link, follow the rest.
        let link = link::LinkSeries::default();
        r.register_collector(Box::new(link.clone()));
        Self {
            registry: root,
            connections,
            connections_total,
            connections_refused,
            connections_refused_per_ip,
            origin_refused,
            host_refused,
            stations,
            listeners,
            inbound,
            inbound_invalid,
            syncs_sent,
            fanout_skipped,
            cannot_play,
            tracks_failed,
            errors,
            disconnects,
            handling_seconds,
            fanout_seconds,
            http,
            out_of_files,
            link,
            limits,
            stream,
            sessions,
            library_tracks,
            library_bytes,
            library_unplayable,
            loudness_measured,
            loudness_pending,
            track_reports,
            station_listeners,
            scraping: Mutex::new(None),
        }
    }

    /// Counts one inbound request.
    pub(crate) fn inbound(&self, ty: RequestType) {
        // `ALL` lists the variants in declaration order.
        self.inbound[ty as usize].inc();
    }

    /// Counts one `error` frame sent.
    pub(crate) fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].inc();
        }
    }

    /// Counts one WebSocket connection ended.
    pub(crate) fn disconnect(&self, why: Disconnect) {
        self.disconnects[why as usize].inc();
    }

    /// `GET /metrics`: every metric, in the format `headers` accept, with
    /// the figures of `scrape` if the last were read [`SCRAPE_MAX_AGE`] ago
    /// or more (else those, as they were).
    pub(crate) fn page(
        &self,
        headers: &HeaderMap,
        scrape: impl FnOnce() -> Scrape,
    ) -> Response<Body> {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let format = Format::negotiate(accept);
        let mut res = text(
            StatusCode::OK,
            self.render_with(format, scrape, SCRAPE_MAX_AGE),
        );
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        res
    }

    /// Every metric in `format`, with `scrape`'s figures.
    #[cfg(test)]
    pub(crate) fn render(&self, format: Format, scrape: Scrape) -> String {
        self.render_with(format, || scrape, std::time::Duration::ZERO)
    }

    /// Every metric in `format`, with the figures of `scrape` unless the
    /// last were read less than `max_age` ago.
    fn render_with(
        &self,
        format: Format,
        scrape: impl FnOnce() -> Scrape,
        max_age: std::time::Duration,
    ) -> String {
        let mut scraped = self.scraping.lock().unwrap_or_else(|p| p.into_inner());
        if scraped.is_none_or(|at| at.elapsed() >= max_age) {
            self.set_scraped(scrape());
            *scraped = Some(std::time::Instant::now());
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        drop(scraped);
        match format {
            Format::OpenMetrics => out,
            Format::Classic => exposition::to_classic(&out),
        }
    }

    fn set_scraped(&self, mut scrape: Scrape) {
        let gauge = |g: &Gauge, n: u64| g.set(i64::try_from(n).unwrap_or(i64::MAX));
        gauge(&self.sessions, scrape.sessions as u64);
        gauge(&self.library_tracks, scrape.library_tracks as u64);
        gauge(&self.library_bytes, scrape.library_bytes);
        gauge(&self.library_unplayable, scrape.library_unplayable as u64);
        gauge(&self.loudness_pending, scrape.loudness_pending as u64);
        // Counted by the library; scrapes are one at a time.
        let counted = self.loudness_measured.get();
        self.loudness_measured
            .inc_by(scrape.loudness_measured.saturating_sub(counted));
        // Already the most reported, at most TRACK_SERIES of them.
        self.track_reports.clear();
        for (track, n) in scrape.unplayable_tracks.into_iter().take(TRACK_SERIES) {
            gauge(
                &self.track_reports.get_or_create(&vec![("track", track)]),
                n,
            );
        }
        self.link.set(scrape.link);
        // The most listened first; ties by name, so the same ones stay.
        scrape
            .stations
            .sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        scrape.stations.truncate(STATION_SERIES);
        self.station_listeners.clear();
        for (name, n) in scrape.stations {
            gauge(
                &self
                    .station_listeners
                    .get_or_create(&vec![("station", name)]),
                n,
            );
        }
    }
}

/// A new counter or gauge, registered as `radio_{name}`.
fn metric<M: Default + Clone + prometheus_client::registry::Metric>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> M {
    let m = M::default();
    registry.register(name, help, m.clone());
    m
}

/// A family of `N` counters labelled `label`, resolved up front: counter
/// `i` has the label value `value(i)`.
fn counters<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    value: impl Fn(usize) -> &'static str,
) -> [Counter; N] {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    std::array::from_fn(|i| family.get_or_create(&vec![(label, value(i))]).clone())
}

/// A latency histogram from 10 µs to 1 s, in steps of 1, 2.5 and 5 (so a
/// quantile interpolated within a bucket is off by at most 2.5 times).
fn histogram(registry: &mut Registry, name: &str, help: &str) -> AtomicHistogram {
    let h = AtomicHistogram::new(&[
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
        0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    ]);
    registry.register(name, help, h.clone());
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.inbound(RequestType::Ping);
        m.error(ErrorCode::NotOwner);
        m.disconnect(Disconnect::RateLimit);
        m.handling_seconds.observe(Duration::from_micros(30));
        m.handling_seconds.observe(Duration::from_secs(3));
        let text = m.render(Format::OpenMetrics, Scrape::default());
        for line in [
            "radio_inbound_messages_total{type=\"ping\"} 1",
            "radio_errors_total{code=\"not_owner\"} 1",
            "radio_disconnects_total{reason=\"rate_limit\"} 1",
            "radio_disconnects_total{reason=\"slow_client\"} 0",
            "radio_message_handling_seconds_count 2",
            "radio_message_handling_seconds_bucket{le=\"0.00001\"} 0",
            "radio_message_handling_seconds_bucket{le=\"0.00005\"} 1",
            // Cumulative: the 30 µs observation is in every later bucket once.
            "radio_message_handling_seconds_bucket{le=\"1.0\"} 1",
            "radio_message_handling_seconds_bucket{le=\"+Inf\"} 2",
            "radio_connections 0",
            "radio_http_requests_total{route=\"media\",status=\"2xx\"} 0",
            "# TYPE radio_build info",
            "# TYPE process_cpu_seconds counter",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "{line} not in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
        // No link, no link series.
        assert!(!text.contains("_up"), "{text}");
        assert!(!text.contains("reconnects"), "{text}");
    }

    #[test]
    fn keeps_the_most_listened_stations() {
        let m = Metrics::new();
        let stations = (0..30).map(|i| (format!("s{i:02}"), i)).collect();
        let text = m.render(
            Format::Classic,
            Scrape {
                stations,
                ..Scrape::default()
            },
        );
        assert!(text.contains("radio_station_listeners{station=\"s29\"} 29\n"));
        assert!(text.contains("radio_station_listeners{station=\"s10\"} 10\n"));
        assert!(!text.contains("station=\"s09\""), "{text}");
    }

    /// A backend's link is two series named by the backend, last before
    /// the end, with the values of the scrape.
    #[test]
    fn shows_the_link_the_backend_reports() {
        let m = Metrics::new();
        let link = |up| Link {
            name: "store",
            service: "the store",
            up,
            reconnects: 3,
        };
        let scrape = |up| Scrape {
            link: Some(link(up)),
            ..Scrape::default()
        };
        let text = m.render(Format::OpenMetrics, scrape(true));
        assert!(
            text.ends_with(
                "# HELP radio_store_up 1 while the link to the store is up, else 0.\n\
                 # TYPE radio_store_up gauge\n\
                 radio_store_up 1\n\
                 # HELP radio_store_reconnects Times the link to the store came back after being lost.\n\
                 # TYPE radio_store_reconnects counter\n\
                 radio_store_reconnects_total 3\n\
                 # EOF\n"
            ),
            "{text}"
        );
        let text = m.render(Format::Classic, scrape(false));
        assert!(text.contains("radio_store_up 0\n"), "{text}");
        assert!(text.contains("# TYPE radio_store_reconnects_total counter\n"));
        // A scrape without a link shows none.
        let text = m.render(Format::Classic, Scrape::default());
        assert!(!text.contains("radio_store"), "{text}");
    }

    /// Reading the figures walks every station: a second `/metrics` within
    /// [`SCRAPE_MAX_AGE`] shows the figures the first read, and does not
    /// read them again; counters are current in both.
    #[test]
    fn the_figures_are_read_once_a_second_at_most() {
        let m = Metrics::new();
        let reads = std::cell::Cell::new(0);
        let scrape = |listeners: u64| {
            reads.set(reads.get() + 1);
            Scrape {
                stations: vec![("jazz".to_owned(), listeners)],
                ..Scrape::default()
            }
        };
        let headers = HeaderMap::new();
        let body = |res: Response<Body>| {
            let bytes = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
                res.into_body(),
            ))
            .expect("a whole body")
            .expect("no error")
            .to_bytes();
            String::from_utf8(bytes.to_vec()).expect("UTF-8")
        };
        let first = body(m.page(&headers, || scrape(3)));
        assert!(first.contains("radio_station_listeners{station=\"jazz\"} 3\n"));
        m.inbound(RequestType::Ping);
        let second = body(m.page(&headers, || scrape(4)));
        assert_eq!(reads.get(), 1, "read again within a second");
        assert!(second.contains("radio_station_listeners{station=\"jazz\"} 3\n"));
        assert!(second.contains("radio_inbound_messages_total{type=\"ping\"} 1\n"));
    }
}
