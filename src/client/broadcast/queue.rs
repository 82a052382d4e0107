//! What the station plays and what comes next: a query turned into a
//! [`Choice`], and the order `next`, `prev` and a track's end follow (the
//! library's, as `/api/library` lists it, or the playlist's), wrapping.
//! The order passes over a track with no known duration (its end would
//! never come: [`protocol::schedulable`]) and one that every listener
//! failed to play; a person may still play either by name.

use std::collections::HashSet;

use super::library::{LibTrack, Library};
use super::player::Choice;
use crate::protocol;

/// The order tracks follow.
#[derive(Debug)]
pub(super) enum Order {
    /// The library's order, by id.
    Library,
    /// The playlist's entries, resolved.
    Playlist(Vec<Choice>),
}

/// The station's tracks: the library, the order, and where in it we are.
#[derive(Debug)]
pub(super) struct Queue {
    library: Option<Library>,
    order: Order,
    /// `--free-tracks`: queries are sent as written.
    free: bool,
    /// Where the current (or last) track is in the order; `None` for a
    /// track the order does not hold.
    at: Option<usize>,
    /// Tracks every listener failed to play (`track_failed`).
    failed: HashSet<String>,
}

impl Queue {
    pub(super) fn new(library: Option<Library>, order: Order, free: bool) -> Self {
        Self {
            library,
            order,
            free,
            at: None,
            failed: HashSet::new(),
        }
    }

    /// Every listener failed to play `track`: the order passes over it
    /// from now on.
    pub(super) fn mark_failed(&mut self, track: &str) {
        self.failed.insert(track.to_owned());
    }

    /// Whether the order may choose `c`.
    fn in_order(&self, c: &Choice) -> bool {
        protocol::schedulable(c.duration_ms) && !self.failed.contains(&c.track)
    }

    pub(super) fn library(&self) -> Option<&Library> {
        self.library.as_ref()
    }

    /// A fresh copy of the library (fetched again after a reconnect).
    pub(super) fn set_library(&mut self, library: Library) {
        self.library = Some(library);
    }

    /// What the library knows of `track`.
    pub(super) fn known(&self, track: &str) -> Option<&LibTrack> {
        self.library.as_ref()?.find(track)
    }

    fn len(&self) -> usize {
        match &self.order {
            Order::Library => self.library.as_ref().map_or(0, Library::len),
            Order::Playlist(p) => p.len(),
        }
    }

    /// The order's track at `i`.
    fn choice_at(&self, i: usize) -> Option<Choice> {
        match &self.order {
            Order::Playlist(p) => p.get(i).cloned(),
            Order::Library => self.library.as_ref()?.get(i).map(|t| Choice {
                track: t.id.clone(),
                duration_ms: t.duration_ms,
                title: None,
            }),
        }
    }

    /// Where `track` is in the order: the first place at or after the
    /// current one, wrapping.
    fn place_of(&self, track: &str) -> Option<usize> {
        let n = self.len();
        let from = self.at.unwrap_or(0);
        (0..n)
            .map(|k| (from + k) % n)
            .find(|&i| self.choice_at(i).is_some_and(|c| c.track == track))
    }

    /// The track `query` names (`play QUERY`, `track QUERY`), with
    /// `duration_ms` when given, else the library's. `Err` is the refusal.
    pub(super) fn choose(
        &mut self,
        query: &str,
        duration_ms: Option<u64>,
    ) -> Result<Choice, String> {
        let choice = if self.free {
            Choice {
                duration_ms: duration_ms.or_else(|| self.known(query)?.duration_ms),
                track: query.to_owned(),
                title: None,
            }
        } else {
            let Some(lib) = &self.library else {
                return Err("the server's library is not available; pass --free-tracks to send track names as written".into());
            };
            let t = lib.get(lib.resolve(query)?).ok_or("the library changed")?;
            Choice {
                track: t.id.clone(),
                duration_ms: duration_ms.or(t.duration_ms),
                title: None,
            }
        };
        match self.place_of(&choice.track) {
            Some(i) => self.at = Some(i),
            // A playlist goes on after a track it does not hold from where
            // it was; the library's order has no place for a free track.
            None if matches!(self.order, Order::Library) => self.at = None,
            None => {}
        }
        Ok(choice)
    }

    /// The next (`forward`) or previous track in the order, wrapping,
    /// passing over those the order may not choose.
    pub(super) fn step(&mut self, forward: bool) -> Result<Choice, String> {
        let (i, choice) = self.find(forward)?;
        self.at = Some(i);
        Ok(choice)
    }

    /// Where [`Queue::step`] goes, and what it finds there.
    fn find(&self, forward: bool) -> Result<(usize, Choice), String> {
        let n = self.len();
        if n == 0 {
            return Err(match &self.library {
                Some(_) => "the server's library is empty; there is no next track".into(),
                None => "no library and no playlist to take the next track from".into(),
            });
        }
        for k in 1..=n {
            let i = match (self.at, forward) {
                (Some(i), true) => (i + k) % n,
                (Some(i), false) => (i + n * 2 - k) % n,
                (None, true) => k - 1,
                (None, false) => n - k,
            };
            let Some(choice) = self.choice_at(i) else {
                return Err("the library changed".into());
            };
            if self.in_order(&choice) {
                return Ok((i, choice));
            }
        }
        Err("no track of the order can play: each has no known duration or failed for every listener".into())
    }

    /// The first track of a playlist.
    pub(super) fn start(&mut self) -> Option<Choice> {
        matches!(self.order, Order::Playlist(_)).then(|| self.step(true).ok())?
    }

    /// What plays after the current track ends: `None` when nothing
    /// follows it (a track outside the library's order).
    pub(super) fn after_end(&mut self) -> Option<Choice> {
        self.at?;
        self.step(true).ok()
    }

    /// What [`Queue::after_end`] would give now, without moving: the
    /// station's next track, as its updates announce it.
    pub(super) fn upcoming(&self) -> Option<Choice> {
        self.at?;
        self.find(true).ok().map(|(_, choice)| choice)
    }

    /// The id of the track that plays after the current one's end, for
    /// `update` and `heartbeat` (`next`): none when the station pauses at
    /// the end (`--stop-at-end`).
    pub(super) fn next_id(&self, stop_at_end: bool) -> Option<String> {
        (!stop_at_end)
            .then(|| self.upcoming())
            .flatten()
            .map(|c| c.track)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib() -> Library {
        Library::new(
            ["a.mp3", "b.mp3", "c.mp3"]
                .iter()
                .map(|id| LibTrack {
                    id: (*id).into(),
                    title: id.trim_end_matches(".mp3").to_uppercase(),
                    artist: None,
                    duration_ms: Some(4_000),
                })
                .collect(),
        )
    }

    fn choice(track: &str, ms: u64) -> Choice {
        Choice {
            track: track.into(),
            duration_ms: Some(ms),
            title: None,
        }
    }

    #[test]
    fn library_order_wraps() {
        let mut q = Queue::new(Some(lib()), Order::Library, false);
        assert!(q.upcoming().is_none(), "nothing plays yet");
        assert_eq!(q.choose("C", None).unwrap(), choice("c.mp3", 4_000));
        assert_eq!(q.upcoming().unwrap().track, "a.mp3", "known ahead");
        assert_eq!(q.upcoming().unwrap().track, "a.mp3", "without moving");
        assert_eq!(q.after_end().unwrap().track, "a.mp3", "wraps");
        assert_eq!(q.step(false).unwrap().track, "c.mp3");
        assert_eq!(q.choose("b", Some(9_000)).unwrap(), choice("b.mp3", 9_000));
        assert!(q.choose("zzz", None).is_err());
        assert_eq!(
            q.step(true).unwrap().track,
            "c.mp3",
            "a refusal keeps the place"
        );
        assert!(q.start().is_none(), "only a playlist starts on its own");
    }

    #[test]
    fn playlist_order_and_tracks_outside_it() {
        let list = vec![choice("b.mp3", 1_000), choice("a.mp3", 2_000)];
        let mut q = Queue::new(Some(lib()), Order::Playlist(list), false);
        assert_eq!(q.start().unwrap().track, "b.mp3");
        assert_eq!(q.after_end().unwrap(), choice("a.mp3", 2_000));
        // A track not in the playlist, then the playlist goes on.
        assert_eq!(q.choose("c", None).unwrap().track, "c.mp3");
        assert_eq!(q.after_end().unwrap().track, "b.mp3");
        assert_eq!(q.step(false).unwrap().track, "a.mp3");
    }

    #[test]
    fn the_order_passes_over_untimed_and_failed_tracks() {
        let mut tracks: Vec<LibTrack> = ["a.mp3", "b.mp3", "c.mp3", "d.mp3"]
            .iter()
            .map(|id| LibTrack {
                id: (*id).into(),
                title: id.to_uppercase(),
                artist: None,
                duration_ms: Some(4_000),
            })
            .collect();
        tracks[1].duration_ms = None;
        let mut q = Queue::new(Some(Library::new(tracks)), Order::Library, false);
        assert_eq!(q.step(true).unwrap().track, "a.mp3");
        assert_eq!(q.after_end().unwrap().track, "c.mp3", "b has no duration");
        assert_eq!(q.step(false).unwrap().track, "a.mp3");
        // Played by name, it plays; the order still passes over it.
        assert_eq!(q.choose("b.mp3", None).unwrap().duration_ms, None);
        assert_eq!(q.after_end().unwrap().track, "c.mp3");
        q.mark_failed("d.mp3");
        assert_eq!(q.upcoming().unwrap().track, "a.mp3", "d failed");
        assert_eq!(q.after_end().unwrap().track, "a.mp3", "d failed");
        q.mark_failed("a.mp3");
        q.mark_failed("c.mp3");
        assert!(
            q.step(true)
                .unwrap_err()
                .contains("no track of the order can play")
        );
    }

    #[test]
    fn free_tracks_go_as_written() {
        let mut q = Queue::new(Some(lib()), Order::Library, true);
        let c = q.choose("my own.ogg", Some(5_000)).unwrap();
        assert_eq!(c, choice("my own.ogg", 5_000));
        assert!(q.upcoming().is_none(), "nothing follows a free track");
        assert!(q.after_end().is_none(), "nothing follows a free track");
        // An exact id still gets the library's duration and place.
        assert_eq!(q.choose("a.mp3", None).unwrap(), choice("a.mp3", 4_000));
        assert_eq!(q.after_end().unwrap().track, "b.mp3");
        let mut none = Queue::new(None, Order::Library, false);
        assert!(
            none.choose("a", None)
                .unwrap_err()
                .contains("--free-tracks")
        );
        assert!(none.step(true).is_err());
    }
}
