//! The report's media side (`--fetch-media`): what a worker reports of its
//! listeners' fetches, and those merged (the fetching itself is the
//! workers', `worker/media.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::stats::{Hist, HistData, Percentiles};

/// Which media a listener fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FetchMedia {
    /// The current track at tune-in and each track change, and the
    /// announced next track ahead of time (as the web player does).
    Prefetch,
    /// Only the current track, at tune-in and at each track change.
    Current,
}

/// What one worker's listeners fetched.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct MediaReport {
    pub requests: u64,
    pub bytes: u64,
    /// Requests refused, by reason (`http_503`, `timeout`, ...).
    pub refused: BTreeMap<String, u64>,
    /// Track starts (one per listener per track it started), and of those,
    /// ms from the track's start to the listener holding its first 256 KiB.
    pub starts: u64,
    /// Of those, starts of a track fetched ahead (no request at the start).
    pub ahead_starts: u64,
    pub playable_ms: HistData,
    /// The same for each listener's first track, from its tune-in.
    pub tune_in_playable_ms: HistData,
    /// Syncs naming a track the library does not list (not fetched).
    pub unknown_tracks: u64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct MediaSummary {
    pub requests: u64,
    pub bytes: u64,
    /// Bytes received per connected listener.
    pub bytes_per_listener: Option<f64>,
    /// Requests refused or failed, by reason.
    pub refused: BTreeMap<String, u64>,
    pub refused_total: u64,
    /// Track starts over all listeners (a listener at each track it began).
    pub track_starts: u64,
    /// Of those, starts of a track fetched ahead (`next`).
    pub ahead_starts: u64,
    /// From a track's start (the station's timeline, server clock) until
    /// a listener holds its first 256 KiB, ms; 0 when fetched ahead.
    pub playable_ms: Percentiles,
    /// The same for each listener's first track, from its tune-in, ms.
    pub tune_in_playable_ms: Percentiles,
    /// Syncs naming a track the library does not list (not fetched).
    pub unknown_tracks: u64,
}

/// The workers' media reports merged; `None` without `--fetch-media`.
pub(crate) fn summarize<'a>(
    reports: impl Iterator<Item = &'a MediaReport>,
    connected: u64,
) -> Option<MediaSummary> {
    let mut any = false;
    let (mut requests, mut bytes, mut starts, mut ahead, mut unknown) = (0, 0, 0, 0, 0);
    let mut refused = BTreeMap::new();
    let mut playable = Hist::new();
    let mut tune_in = Hist::new();
    for m in reports {
        any = true;
        requests += m.requests;
        bytes += m.bytes;
        starts += m.starts;
        ahead += m.ahead_starts;
        unknown += m.unknown_tracks;
        for (k, v) in &m.refused {
            *refused.entry(k.clone()).or_default() += v;
        }
        playable.merge_data(&m.playable_ms);
        tune_in.merge_data(&m.tune_in_playable_ms);
    }
    any.then(|| MediaSummary {
        requests,
        bytes,
        bytes_per_listener: (connected > 0).then(|| (bytes as f64 / connected as f64).round()),
        refused_total: refused.values().sum(),
        refused,
        track_starts: starts,
        ahead_starts: ahead,
        playable_ms: playable.percentiles(1.0),
        tune_in_playable_ms: tune_in.percentiles(1.0),
        unknown_tracks: unknown,
    })
}

/// The summary's media lines.
pub(crate) fn human(out: &mut String, m: Option<&MediaSummary>) {
    let Some(m) = m else { return };
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} ms"));
    let _ = writeln!(
        out,
        "media: {} requests, {} refused, {:.1} MB per listener ({:.1} MB in all)",
        m.requests,
        m.refused_total,
        m.bytes_per_listener.unwrap_or(0.0) / 1e6,
        m.bytes as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "media: {} track starts ({} fetched ahead), first 256 KiB after a track change p50 {} p99 {} max {} \
         ({} changes); after tune-in p50 {} p99 {}",
        m.track_starts,
        m.ahead_starts,
        ms(m.playable_ms.p50),
        ms(m.playable_ms.p99),
        ms(m.playable_ms.max),
        m.playable_ms.count,
        ms(m.tune_in_playable_ms.p50),
        ms(m.tune_in_playable_ms.p99)
    );
    if !m.refused.is_empty() {
        let reasons: Vec<String> = m.refused.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "media refused: {}", reasons.join(", "));
    }
}
