//! The next track, ready in mpv: when the station announces what plays
//! after its current track (`sync`'s `next`), it is appended to mpv's
//! playlist ahead of the current one's end, so mpv (started with
//! `--prefetch-playlist=yes`) opens and reads it while the current one
//! plays and goes on to it at the end without a gap and without a request
//! at the boundary. When the station's `sync` for that track comes, the
//! drift loop takes over the entry mpv already plays ([`Prefetch::take`])
//! instead of loading it again.
//!
//! Each listener appends at its own moment, a random share of the last
//! half minute before the end (of what is left of a shorter track), so a
//! station's listeners do not all fetch the next track together.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::Ipc;
use super::urls::MediaUrls;
use crate::protocol::SyncState;

/// The next track is appended at least this long before the end...
const LEAD_MIN: Duration = Duration::from_secs(4);
/// ... and at most this long.
const LEAD_MAX: Duration = Duration::from_secs(30);

/// What was appended to mpv's playlist, and when the next append is due.
#[derive(Debug)]
pub(crate) struct Prefetch {
    /// This listener's place in the spread, in [0, 1).
    share: f64,
    /// The current and next tracks the append is planned for, and when.
    plan: Option<(String, String, Instant)>,
    /// The track appended after the current one, and its URL.
    appended: Option<(String, String)>,
}

impl Prefetch {
    pub(crate) fn new() -> Self {
        Self {
            share: fastrand::f64(),
            plan: None,
            appended: None,
        }
    }

    /// On each step of the drift loop while `sync` plays and mpv holds its
    /// track, `left_ms` before its end: appends the announced next track
    /// when this listener's moment has come, and takes back an appended
    /// one the station no longer announces.
    pub(crate) async fn ahead(
        &mut self,
        ipc: &mut Ipc,
        media: &MediaUrls,
        sync: &SyncState,
        left_ms: Option<f64>,
    ) -> anyhow::Result<()> {
        let next = sync.next.as_ref().map(|n| n.track.as_str());
        if let Some((track, _)) = &self.appended {
            if Some(track.as_str()) == next {
                return Ok(());
            }
            // Announced no more: mpv must not go on to it.
            self.appended = None;
            ipc.command(json!(["playlist-clear"])).await?;
        }
        let (Some(next), Some(left_ms), true) = (next, left_ms, sync.playing) else {
            self.plan = None;
            return Ok(());
        };
        let now = Instant::now();
        let due = match &self.plan {
            Some((current, planned, at)) if *current == sync.track && planned == next => *at,
            _ => {
                let at = now + wait(left_ms, self.share);
                self.plan = Some((sync.track.clone(), next.to_owned(), at));
                at
            }
        };
        if now < due {
            return Ok(());
        }
        let url = media.known(next);
        ipc.command(json!(["playlist-clear"])).await?;
        // At the next track's own gain, as `follow` loads any track.
        let gain_db = sync.next.as_ref().and_then(|n| n.gain_db);
        ipc.command(super::gain::loadfile(&url, "append", gain_db))
            .await?;
        tracing::debug!(track = next, "the next track is appended");
        self.appended = Some((next.to_owned(), url));
        self.plan = None;
        Ok(())
    }

    /// The URL of `track` when it is the one appended (forgotten here: the
    /// drift loop has it from now on).
    pub(crate) fn take(&mut self, track: &str) -> Option<String> {
        match &self.appended {
            Some((t, _)) if t == track => self.appended.take().map(|(_, url)| url),
            _ => None,
        }
    }

    /// Whether `url` is the track appended.
    pub(crate) fn holds(&self, url: &str) -> bool {
        self.appended.as_ref().is_some_and(|(_, u)| u == url)
    }

    /// mpv's playlist was replaced (another track loaded): nothing follows.
    pub(crate) fn forget(&mut self) {
        self.appended = None;
        self.plan = None;
    }
}

/// How long from now the append waits, `left_ms` before the end: until
/// this listener's lead before the end (between [`LEAD_MIN`] and
/// [`LEAD_MAX`], by its `share`), or, with less left than that, its share
/// of what is left before [`LEAD_MIN`].
fn wait(left_ms: f64, share: f64) -> Duration {
    let (min, max) = (LEAD_MIN.as_secs_f64(), LEAD_MAX.as_secs_f64());
    let lead = min + share * (max - min);
    let left = left_ms.max(0.0) / 1000.0;
    let secs = if left > lead {
        left - lead
    } else {
        share * (left - min).max(0.0)
    };
    Duration::from_secs_f64(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_append_at_their_own_moment_before_the_end() {
        // A long track: each at its lead before the end, 4 to 30 s.
        assert_eq!(wait(600_000.0, 0.0), Duration::from_secs(596));
        assert_eq!(wait(600_000.0, 1.0), Duration::from_secs(570));
        assert_eq!(wait(600_000.0, 0.5), Duration::from_secs(583));
        // Less left than the lead: a share of what is left before the last 4 s.
        assert_eq!(wait(10_000.0, 0.5), Duration::from_secs(3));
        assert_eq!(wait(10_000.0, 1.0), Duration::from_secs(6));
        assert_eq!(
            wait(10_000.0, 0.0),
            Duration::from_secs(6),
            "its lead is 4 s"
        );
        // Within the last 4 s, or past the end: at once.
        assert_eq!(wait(3_000.0, 0.9), Duration::ZERO);
        assert_eq!(wait(-5.0, 0.9), Duration::ZERO);
        // Spread: listeners with other shares append at other moments.
        let moments: std::collections::HashSet<_> = (0..10)
            .map(|i| wait(60_000.0, f64::from(i) / 10.0))
            .collect();
        assert_eq!(moments.len(), 10);
    }
}
