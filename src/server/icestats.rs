//! `GET /status-json.xsl`: the live stations in Icecast's status shape, so
//! tools made for Icecast (directories, exporters, now-playing widgets)
//! read this server as they read Icecast.
//!
//! Made from the station listing (`GET /api/stations`: cached for a
//! second, bounded by `--max-list`, and in cluster mode every node's
//! stations), so it costs what that costs and works on every node.
//!
//! `icestats.source` is as Icecast gives it: absent with no live station,
//! one object with one, an array with several. Tools written for Icecast
//! already handle all three, and the simplest of them read
//! `icestats.source.listenurl` of a one-station server.
//!
//! Icecast knows when each source connected and its peak of listeners;
//! the listing does not, so this node keeps both for the stations it has
//! listed here: `stream_start_iso8601` is when this node first saw the
//! station live in this answer, `listener_peak` the most listeners it saw
//! in it since. Both are forgotten with the station once it is no longer
//! listed, so what is kept is bounded by the listing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use http::{HeaderMap, Method, Response, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::protocol::{self, StationName, StationSummary};
use crate::server::backend::any::AnyBackend;
use crate::server::listing::Listing;
use crate::server::playlists;
use crate::server::response::{Body, json, method_not_allowed, text};

/// The path, as Icecast names it.
pub(crate) const PATH: &str = "/status-json.xsl";

/// The stream's format, as `server_type` says.
const SERVER_TYPE: &str = "audio/mpeg";

/// What this node has seen of each listed station: since when (unix ms),
/// and its most listeners.
#[derive(Default)]
pub(crate) struct Seen(Mutex<HashMap<StationName, (i64, u64)>>);

impl Seen {
    /// Notes `stations` (the listing now) and gives each one's start and
    /// peak; stations no longer listed are forgotten.
    fn note(&self, stations: &[StationSummary], now_ms: i64) -> Vec<(i64, u64)> {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::with_capacity(stations.len());
        let out = stations
            .iter()
            .map(|s| {
                let (start, peak) = seen.remove(&s.station).unwrap_or((now_ms, 0));
                let kept = (start, peak.max(s.listeners));
                next.insert(s.station.clone(), kept);
                kept
            })
            .collect();
        *seen = next;
        out
    }
}

/// One source, as Icecast's `status-json.xsl` names its fields.
#[derive(Serialize)]
struct Source {
    listenurl: String,
    listeners: u64,
    listener_peak: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    artist: Option<String>,
    server_name: String,
    server_description: String,
    server_type: &'static str,
    bitrate: u32,
    genre: &'static str,
    stream_start_iso8601: String,
}

#[derive(Serialize)]
struct IceStats {
    admin: &'static str,
    host: String,
    location: &'static str,
    server_id: String,
    server_start_iso8601: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<Value>,
}

#[derive(Serialize)]
struct Answer {
    icestats: IceStats,
}

/// Answers `GET /status-json.xsl`.
/// What the answer is made of, from the server.
pub(crate) struct Sources<'a> {
    pub listing: &'a Listing,
    pub backend: &'a AnyBackend,
    pub seen: &'a Seen,
    /// Whether the request came from a `--trusted-proxy`.
    pub trusted: bool,
    /// Whether the server speaks https (`--tls-cert`).
    pub tls: bool,
    /// When the server started.
    pub started: Instant,
    /// `--stream-bitrate`.
    pub stream_kbps: u32,
}

pub(crate) async fn route(
    method: &Method,
    headers: &HeaderMap,
    from: Sources<'_>,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let base = match playlists::base_url(headers, from.trusted, from.tls) {
        Ok(base) => base,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let page = match from.listing.get(from.backend).await {
        Ok(page) => page,
        Err(refusal) => return text(StatusCode::SERVICE_UNAVAILABLE, refusal.to_string()),
    };
    let stream_kbps = from.stream_kbps;
    let now_ms = protocol::now_ms();
    let seen = from.seen.note(&page.stations, now_ms);
    let sources: Vec<Source> = page
        .stations
        .iter()
        .zip(seen)
        .map(|(s, (start, peak))| source(&base, s, start, peak, stream_kbps))
        .collect();
    let source = match sources.len() {
        0 => None,
        1 => sources
            .into_iter()
            .next()
            .and_then(|s| serde_json::to_value(s).ok()),
        _ => serde_json::to_value(sources).ok(),
    };
    let started = SystemTime::now()
        .checked_sub(from.started.elapsed())
        .unwrap_or(UNIX_EPOCH);
    let host = base
        .split_once("://")
        .map_or(base.as_str(), |(_, h)| h)
        .to_owned();
    let mut res = json(
        StatusCode::OK,
        &Answer {
            icestats: IceStats {
                admin: "",
                host: strip_port(&host).to_owned(),
                location: "",
                server_id: format!("radio {}", crate::version::VERSION),
                server_start_iso8601: iso8601(started),
                source,
            },
        },
    );
    // Icecast answers its status to any page; widgets on other sites read it.
    res.headers_mut().insert(
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        http::HeaderValue::from_static("*"),
    );
    res
}

fn source(base: &str, s: &StationSummary, start_ms: i64, peak: u64, kbps: u32) -> Source {
    Source {
        listenurl: playlists::stream_url(base, &s.station),
        listeners: s.listeners,
        listener_peak: peak,
        // A track without a title tag is known by its file name.
        title: s.title.clone().or_else(|| s.track.clone()),
        artist: s.artist.clone(),
        server_name: s.station.to_string(),
        // As the stream's own icy-description and icy-genre say.
        server_description: format!("{}, a station of a synchronized radio", s.station),
        server_type: SERVER_TYPE,
        bitrate: kbps,
        genre: "Various",
        stream_start_iso8601: iso8601(
            UNIX_EPOCH + Duration::from_millis(u64::try_from(start_ms).unwrap_or(0)),
        ),
    }
}

/// `host` without its port (`[::1]:8080` is `[::1]`).
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

/// `2026-12-04T21:48:45Z`.
fn iso8601(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(name: &str, listeners: u64) -> StationSummary {
        StationSummary {
            station: StationName::new(name).unwrap(),
            listeners,
            live: true,
            track: Some("t.mp3".into()),
            title: None,
            artist: None,
            duration_ms: None,
            playing: true,
            position_ms: 0,
            server_time_ms: 0,
        }
    }

    #[test]
    fn peaks_and_starts_are_kept_while_listed() {
        let seen = Seen::default();
        assert_eq!(seen.note(&[summary("a", 3)], 1_000), vec![(1_000, 3)]);
        assert_eq!(
            seen.note(&[summary("a", 1), summary("b", 2)], 2_000),
            vec![(1_000, 3), (2_000, 2)]
        );
        // `a` left the listing: when it comes back it starts again.
        assert_eq!(seen.note(&[summary("b", 0)], 3_000), vec![(2_000, 2)]);
        assert_eq!(seen.note(&[summary("a", 1)], 4_000), vec![(4_000, 1)]);
    }

    #[test]
    fn hosts_lose_their_ports() {
        assert_eq!(strip_port("radio.example:8080"), "radio.example");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("h"), "h");
    }
}
