//! The station's playback state as this broadcaster keeps it, and how each
//! command changes it. Apart from the connection because it is plain state
//! with no I/O: the session only sends what this says.

use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

/// A track ready to play: what goes on the wire, and what is known of it.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Choice {
    /// The `update`'s `track`: a library id (or, with `--free-tracks`, any text).
    pub track: String,
    pub duration_ms: Option<u64>,
    /// Sent for a track the library lacks (a playlist's `#EXTINF` title);
    /// the server names library tracks itself.
    pub title: Option<String>,
}

/// The station's playback state, as this broadcaster knows it.
#[derive(Debug, Clone, Default)]
pub(super) struct Player {
    pub track: Option<Choice>,
    pub playing: bool,
    pub(super) position_ms: u64,
    pub(super) since: Option<Instant>,
}

impl Player {
    /// The position now (never past the track's end when that is known).
    pub(super) fn position_ms(&self) -> u64 {
        let now = match (self.playing, self.since) {
            (true, Some(since)) => self
                .position_ms
                .saturating_add(u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)),
            _ => self.position_ms,
        };
        match self.duration_ms() {
            Some(end) if self.playing => now.min(end),
            _ => now,
        }
    }

    pub(super) fn duration_ms(&self) -> Option<u64> {
        self.track.as_ref().and_then(|c| c.duration_ms)
    }

    pub(super) fn set_position(&mut self, position_ms: u64) {
        self.position_ms = position_ms;
        self.since = Some(Instant::now());
    }

    /// Time left in the track while playing, when its duration is known.
    pub(super) fn remaining(&self) -> Option<Duration> {
        let d = self.duration_ms()?;
        self.playing
            .then(|| Duration::from_millis(d.saturating_sub(self.position_ms())))
    }

    /// Loads `choice` at `position_ms`, playing or paused.
    pub(super) fn load(&mut self, choice: Choice, position_ms: u64, playing: bool) {
        self.track = Some(choice);
        self.playing = playing;
        self.set_position(position_ms);
    }

    /// `play` with no track: resumes what is loaded.
    pub(super) fn resume(&mut self) -> anyhow::Result<()> {
        if self.track.is_none() {
            bail!("nothing to play yet: use play QUERY");
        }
        let now = self.position_ms();
        self.set_position(now);
        self.playing = true;
        Ok(())
    }

    pub(super) fn pause(&mut self) -> anyhow::Result<()> {
        if self.track.is_none() {
            bail!("nothing is playing");
        }
        self.hold_at_end();
        Ok(())
    }

    /// Pauses where the position is (at a track's end, its end).
    pub(super) fn hold_at_end(&mut self) {
        let now = self.position_ms();
        self.set_position(now);
        self.playing = false;
    }

    pub(super) fn seek(&mut self, ms: u64) -> anyhow::Result<()> {
        if self.track.is_none() {
            bail!("nothing to seek in yet: use play QUERY or track QUERY first");
        }
        if let Some(end) = self.duration_ms().filter(|end| ms > *end) {
            bail!(
                "the track is only {} long; seek to a position within it",
                crate::client::clock(end)
            );
        }
        self.set_position(ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn player_position() {
        let mut p = Player::default();
        assert!(p.resume().is_err() && p.pause().is_err() && p.seek(1).is_err());
        let mut choice = Choice {
            track: "t".into(),
            ..Choice::default()
        };
        p.load(choice.clone(), 5_000, false);
        assert_eq!(p.position_ms(), 5_000);
        assert_eq!(p.remaining(), None);
        choice.duration_ms = Some(6_000);
        p.load(choice, 5_000, true);
        let left = p.remaining().unwrap();
        assert!(left <= Duration::from_millis(1_000));
        assert!(p.seek(7_000).is_err(), "past the end");
        // Playing, the position stops at the end.
        p.load(p.track.clone().unwrap(), 9_000, true);
        assert_eq!(p.position_ms(), 6_000);
        assert_eq!(p.remaining(), Some(Duration::ZERO));
    }
}
