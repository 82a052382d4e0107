//! What a station played: the last [`LEN`] tracks, newest first, for
//! `GET /api/stations/{name}/history` (and the web player's "recently
//! played"). Every station has one, whoever plays it.
//!
//! A play is recorded where a state is stamped (the backend's publish), once
//! per track, never per listener: an `update` whose track differs from the
//! one before, or that starts the same track again after its end. The ring
//! is bounded in entries and in bytes ([`MAX_BYTES`]: titles may be 512
//! bytes each) and lives in the station's entry, so it goes with the
//! station.

use std::collections::VecDeque;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::protocol::{OnlineReason, StationName, SyncState};
use crate::server::response::{Body, json, text};

/// Most plays kept per station.
pub(crate) const LEN: usize = 50;
/// Most bytes of text (track, title, artist) kept per station; the oldest
/// plays go first when a long one comes.
pub(crate) const MAX_BYTES: usize = 16 * 1024;
/// A track that starts again counts as a new play only from near its
/// start, after its end was near: within this much.
const RESTART_MS: u64 = 1_000;

/// One play.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Played {
    pub track: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// When the track started, in server time: the state's time less its
    /// position.
    pub started_at_ms: i64,
    /// Who played it: a broadcaster (`live`) or the server (`auto`).
    pub by: OnlineReason,
}

impl Played {
    /// The play that `sync` starts.
    pub(crate) fn of(sync: &SyncState, by: OnlineReason) -> Self {
        Self {
            track: sync.track.clone(),
            title: sync.title.clone(),
            artist: sync.artist.clone(),
            duration_ms: sync.duration_ms,
            started_at_ms: sync
                .server_time_ms
                .saturating_sub(i64::try_from(sync.position_ms).unwrap_or(i64::MAX)),
            by,
        }
    }

    fn bytes(&self) -> usize {
        self.track.len()
            + self.title.as_ref().map_or(0, String::len)
            + self.artist.as_ref().map_or(0, String::len)
    }
}

/// Whether the `update` that became `next` starts a new play after `prev`
/// (the station's state before it, if any).
pub(crate) fn starts_play(prev: Option<&SyncState>, next: &SyncState) -> bool {
    let Some(prev) = prev else {
        return true;
    };
    if prev.track != next.track {
        return true;
    }
    // The same track again: a new play when it starts over after its end
    // (a one-track playlist, a repeat), not when a broadcaster seeks back.
    let near_end = prev.duration_ms.is_some_and(|end| {
        prev.playing
            && prev
                .position_at(next.server_time_ms)
                .saturating_add(RESTART_MS)
                >= end
    });
    near_end && next.position_ms < RESTART_MS
}

/// One station's plays, oldest first.
#[derive(Debug, Default)]
pub(crate) struct History {
    plays: VecDeque<Played>,
    bytes: usize,
}

impl History {
    pub(crate) fn record(&mut self, play: Played) {
        self.bytes += play.bytes();
        self.plays.push_back(play);
        while self.plays.len() > LEN || (self.bytes > MAX_BYTES && self.plays.len() > 1) {
            if let Some(old) = self.plays.pop_front() {
                self.bytes -= old.bytes();
            }
        }
    }

    /// Newest first.
    pub(crate) fn newest_first(&self) -> Vec<Played> {
        self.plays.iter().rev().cloned().collect()
    }
}

/// The answer of `GET /api/stations/{name}/history`.
#[derive(Serialize)]
struct Answer<'a> {
    station: &'a StationName,
    /// Newest first.
    tracks: &'a [Played],
}

/// The HTTP answer for a station's plays; `None`: the backend does not know
/// the station (404).
pub(crate) fn answer(station: &StationName, plays: Option<Vec<Played>>) -> http::Response<Body> {
    match plays {
        Some(tracks) => json(
            StatusCode::OK,
            &Answer {
                station,
                tracks: &tracks,
            },
        ),
        None => text(
            StatusCode::NOT_FOUND,
            format!(
                "no station {station} on this server: it is neither live nor run by the server \
                 (GET /api/stations lists the live ones)"
            ),
        ),
    }
}

/// What a station's history path starts with.
pub(crate) const PREFIX: &str = "/api/stations/";

/// The station of a history path, `/api/stations/{name}/history`:
/// `Some(Err)` when the name breaks the naming rule.
pub(crate) fn station_of(path: &str) -> Option<Result<StationName, String>> {
    let name = path.strip_prefix(PREFIX)?.strip_suffix("/history")?;
    let name = crate::server::media::percent_decode(name).unwrap_or_default();
    Some(StationName::new(&name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SyncCause;

    fn sync(track: &str, position_ms: u64, at: i64) -> SyncState {
        SyncState {
            station: StationName::new("s").expect("a name"),
            seq: 1,
            track: track.into(),
            position_ms,
            playing: true,
            duration_ms: Some(10_000),
            title: None,
            artist: None,
            gain_db: None,
            next: None,
            server_time_ms: at,
            cause: SyncCause::Update,
        }
    }

    #[test]
    fn a_play_is_a_new_track_or_the_same_one_again_after_its_end() {
        let a = sync("a", 0, 100_000);
        assert!(starts_play(None, &a));
        assert!(starts_play(Some(&a), &sync("b", 0, 101_000)));
        // A seek back within the track is no new play.
        assert!(!starts_play(Some(&a), &sync("a", 0, 104_000)));
        // Started over at its end.
        assert!(starts_play(Some(&a), &sync("a", 0, 109_500)));
        assert!(starts_play(Some(&a), &sync("a", 3, 110_000)));
        assert!(!starts_play(Some(&a), &sync("a", 5_000, 110_000)));
    }

    #[test]
    fn the_ring_keeps_the_newest_within_its_bounds() {
        let mut h = History::default();
        for i in 0..(LEN + 7) {
            h.record(Played::of(
                &sync(&format!("t{i}"), 250, 1_000),
                OnlineReason::Auto,
            ));
        }
        let plays = h.newest_first();
        assert_eq!(plays.len(), LEN);
        assert_eq!(plays[0].track, format!("t{}", LEN + 6));
        assert_eq!(plays[0].started_at_ms, 750);
        let long = "x".repeat(500);
        for _ in 0..LEN {
            let mut s = sync(&long, 0, 0);
            s.title = Some(long.clone());
            h.record(Played::of(&s, OnlineReason::Live));
        }
        assert!(h.bytes <= MAX_BYTES, "{}", h.bytes);
        assert_eq!(h.newest_first().len(), MAX_BYTES / 1_000);
    }

    #[test]
    fn history_paths_name_a_station() {
        assert_eq!(
            station_of("/api/stations/jazz/history").map(|r| r.map(|n| n.to_string())),
            Some(Ok("jazz".to_owned()))
        );
        assert!(matches!(
            station_of("/api/stations/a%20b/history"),
            Some(Err(_))
        ));
        assert!(station_of("/api/stations").is_none());
        assert!(station_of("/api/stations/jazz").is_none());
    }
}
