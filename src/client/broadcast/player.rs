//! The station's playback state as this broadcaster keeps it, and how each
//! command changes it. Apart from the connection because it is plain state
//! with no I/O: the session only sends what this says.

use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

use super::commands::Command;

/// The station's playback state, as this broadcaster knows it.
#[derive(Debug, Clone, Default)]
pub struct Player {
    pub track: Option<String>,
    pub duration_ms: Option<u64>,
    pub playing: bool,
    pub(super) position_ms: u64,
    pub(super) since: Option<Instant>,
}

impl Player {
    /// The position now.
    pub fn position_ms(&self) -> u64 {
        match (self.playing, self.since) {
            (true, Some(since)) => self
                .position_ms
                .saturating_add(u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)),
            _ => self.position_ms,
        }
    }

    pub(super) fn set_position(&mut self, position_ms: u64) {
        self.position_ms = position_ms;
        self.since = Some(Instant::now());
    }

    /// Time left in the track while playing, when its duration is known.
    pub(super) fn remaining(&self) -> Option<Duration> {
        let d = self.duration_ms?;
        self.playing
            .then(|| Duration::from_millis(d.saturating_sub(self.position_ms())))
    }

    /// Applies a command to the playback state; refuses one that makes no
    /// sense yet (pausing before anything plays).
    pub(super) fn apply(&mut self, cmd: Command) -> anyhow::Result<()> {
        match cmd {
            Command::Play { track, position_ms } => {
                if let Some(track) = track {
                    if self.track.as_deref() != Some(track.as_str()) {
                        self.duration_ms = None;
                    }
                    self.track = Some(track);
                    self.set_position(position_ms.unwrap_or(0));
                } else if self.track.is_none() {
                    bail!("nothing to play yet: use play TRACK");
                } else {
                    let now = self.position_ms();
                    self.set_position(now);
                }
                self.playing = true;
            }
            Command::Pause => {
                if self.track.is_none() {
                    bail!("nothing is playing");
                }
                let now = self.position_ms();
                self.set_position(now);
                self.playing = false;
            }
            Command::Seek(ms) => {
                if self.track.is_none() {
                    bail!("nothing to seek in yet: use play TRACK or track NAME first");
                }
                self.set_position(ms);
            }
            Command::Track { name, duration_ms } => {
                self.track = Some(name);
                self.duration_ms = duration_ms;
                self.set_position(0);
            }
            Command::Stop | Command::Help => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn player_position() {
        let mut p = Player {
            track: Some("t".into()),
            playing: false,
            ..Player::default()
        };
        p.set_position(5_000);
        assert_eq!(p.position_ms(), 5_000);
        assert_eq!(p.remaining(), None);
        p.duration_ms = Some(6_000);
        p.playing = true;
        let left = p.remaining().unwrap();
        assert!(left <= Duration::from_millis(1_000));
    }
}
