//! What the server keeps of listeners' `cannot_play` reports beyond each
//! station's own tally (`reports`): the tracks found unplayable
//! by every listener of a station, waiting to be told to its broadcaster
//! (`track_failed`), and how many listeners reported each track, for
//! `/metrics`.
//!
//! The broadcaster is told in answer to its next `update` or `heartbeat`
//! for the station, on its own connection's task: no task writes to
//! another's socket. A station the server runs has no connection: its
//! player watches [`Unplayable::watch`] and takes its own station's
//! failure. Those are per-message paths, so when nothing waits
//! (always, on a healthy server) the check is one atomic load, no lock.
//!
//! Both maps are bounded: a track waits until its broadcaster is told (or
//! has moved on), and at most [`MAX_WAITING`] wait; at most [`MAX_TRACKS`]
//! tracks are tallied, the least reported giving way to a new one, so
//! clients cannot grow either, nor the metrics' label set.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::watch;

use crate::protocol::{ServerMessage, StationName};

/// Stations whose failed track may wait for their broadcaster at once.
const MAX_WAITING: usize = 1024;
/// Tracks whose reports are tallied at once.
const MAX_TRACKS: usize = 256;

/// A track every listener of a station failed to play.
#[derive(Debug, Clone, PartialEq)]
struct Failed {
    track: String,
    listeners: u64,
    reason: Option<String>,
    since: Instant,
}

/// Failed tracks waiting for their broadcasters, and reports by track.
#[derive(Debug)]
pub(crate) struct Unplayable {
    /// `waiting.len()`, read without the lock.
    pending: AtomicUsize,
    waiting: Mutex<HashMap<StationName, Failed>>,
    by_track: Mutex<HashMap<String, u64>>,
    /// Bumped at each failed track: the server's own players wait on it,
    /// having no update or heartbeat of their own to be told at.
    failures: watch::Sender<u64>,
}

impl Default for Unplayable {
    fn default() -> Self {
        Self {
            pending: AtomicUsize::new(0),
            waiting: Mutex::default(),
            by_track: Mutex::default(),
            failures: watch::Sender::new(0),
        }
    }
}

impl Unplayable {
    /// Wakes at each failed track, of any station; [`Unplayable::take`]
    /// says whether it is the watcher's.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.failures.subscribe()
    }

    /// Every listener of `station` failed to play `track`: its broadcaster
    /// is told at its next `update` or `heartbeat`.
    pub(crate) fn failed(
        &self,
        station: &StationName,
        track: &str,
        listeners: u64,
        reason: Option<String>,
    ) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.len() >= MAX_WAITING && !waiting.contains_key(station) {
            // The oldest gives way: its broadcaster has not asked for long.
            let oldest = waiting
                .iter()
                .min_by_key(|(_, f)| f.since)
                .map(|(s, _)| s.clone());
            if let Some(s) = oldest {
                waiting.remove(&s);
            }
        }
        waiting.insert(
            station.clone(),
            Failed {
                track: track.to_owned(),
                listeners,
                reason,
                since: Instant::now(),
            },
        );
        self.pending.store(waiting.len(), Ordering::Relaxed);
        drop(waiting);
        self.failures.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether any failed track waits for its broadcaster (an atomic load).
    pub(crate) fn any_waiting(&self) -> bool {
        self.pending.load(Ordering::Relaxed) > 0
    }

    /// The `track_failed` for `station`'s broadcaster (or the server's own
    /// player), whose station plays `current`: once, and only while it
    /// still plays the failed track.
    pub(crate) fn take(
        &self,
        station: &StationName,
        current: Option<&str>,
    ) -> Option<ServerMessage> {
        if !self.any_waiting() {
            return None;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let failed = waiting.remove(station);
        self.pending.store(waiting.len(), Ordering::Relaxed);
        drop(waiting);
        let failed = failed.filter(|f| current == Some(f.track.as_str()))?;
        Some(ServerMessage::TrackFailed {
            station: station.clone(),
            track: failed.track,
            listeners: failed.listeners,
            reason: failed.reason,
        })
    }

    /// One more listener reported that it cannot play `track`.
    pub(crate) fn count(&self, track: &str) {
        let mut by_track = self.by_track.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_track.get_mut(track) {
            *n += 1;
            return;
        }
        if by_track.len() >= MAX_TRACKS {
            let least = by_track
                .iter()
                .min_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(t, _)| t.clone());
            if let Some(t) = least {
                by_track.remove(&t);
            }
        }
        by_track.insert(track.to_owned(), 1);
    }

    /// The `n` most reported tracks and their reports, most first (ties by
    /// name).
    pub(crate) fn most_reported(&self, n: usize) -> Vec<(String, u64)> {
        let by_track = self.by_track.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(String, u64)> = by_track.iter().map(|(t, n)| (t.clone(), *n)).collect();
        drop(by_track);
        v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> StationName {
        StationName::new(s).expect("a valid name")
    }

    #[test]
    fn a_failed_track_is_told_once_and_only_while_it_plays() {
        let u = Unplayable::default();
        let s = name("s");
        assert_eq!(u.take(&s, Some("x.mp3")), None);
        u.failed(&s, "x.mp3", 2, Some("404".into()));
        // Another station's broadcaster is not told.
        assert_eq!(u.take(&name("other"), Some("x.mp3")), None);
        let told = u.take(&s, Some("x.mp3"));
        assert_eq!(
            told,
            Some(ServerMessage::TrackFailed {
                station: s.clone(),
                track: "x.mp3".into(),
                listeners: 2,
                reason: Some("404".into()),
            })
        );
        assert_eq!(u.take(&s, Some("x.mp3")), None, "once");
        // A broadcaster that moved on meanwhile is not told.
        u.failed(&s, "x.mp3", 1, None);
        assert_eq!(u.take(&s, Some("y.mp3")), None);
        assert_eq!(u.pending.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_maps_stay_bounded() {
        let u = Unplayable::default();
        for i in 0..MAX_WAITING + 10 {
            u.failed(&name(&format!("s{i}")), "t", 1, None);
        }
        assert_eq!(u.waiting.lock().unwrap().len(), MAX_WAITING);
        u.count("often");
        u.count("often");
        for i in 0..MAX_TRACKS + 10 {
            u.count(&format!("t{i}"));
        }
        assert_eq!(u.by_track.lock().unwrap().len(), MAX_TRACKS);
        assert_eq!(u.most_reported(1), vec![("often".to_owned(), 2)]);
    }
}
