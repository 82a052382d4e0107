//! One server-run station's player: a task that publishes each track at
//! its start and sleeps until its end. No tick: a station costs one timer
//! and one update per track, listeners or not, and keeps its clock, so a
//! listener who tunes in hears the moment the timeline says.
//!
//! It publishes through a hold the backend gave it ([`Backend::claim_auto`]),
//! the same kind a broadcaster's connection holds. A broadcaster that
//! claims the station takes it over: this hold's updates are refused until
//! the station comes back to it ([`OwnedStation::returned`]), and then the
//! station plays its source again from the next entry at its start.
//!
//! Each track starts where the last one's planned end was, not when the
//! timer fired, so timer lateness never adds up: the update carries the
//! position the timeline has reached.
//!
//! [`Backend::claim_auto`]: crate::server::backend::Backend::claim_auto

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::rotation::Rotation;
use super::source::{Item, Source};
use crate::protocol::{self, NextTrack, ServerMessage, StationName};
use crate::server::backend::any::AnyOwned;
use crate::server::backend::{Handed, OwnedStation};
use crate::server::media::Library;
use crate::server::refusal::Refusal;
use crate::server::station::{Playback, Unplayable};

/// How long a station with nothing to play waits before it looks again
/// (a SIGHUP looks at once).
const IDLE_RETRY: Duration = Duration::from_secs(30);
/// How long after a refused update (the backend down) it tries again.
const REFUSED_RETRY: Duration = Duration::from_secs(1);

/// What ended a wait.
enum Woke {
    /// The track's end (or the retry time) came.
    Due,
    /// The station came back from a broadcaster.
    Returned,
    /// Every listener said it cannot play the track: the next one, now.
    Failed,
    Shutdown,
}

pub(crate) struct Driver {
    pub name: StationName,
    pub source: Source,
    pub rotation: Rotation,
    pub media: Arc<Library>,
    pub hold: AnyOwned,
    /// SIGHUPs: each one reads a playlist again.
    pub hangups: watch::Receiver<u64>,
    /// Wakes at each track every listener of a station failed to play;
    /// `unplayable` says whether it is this station's, playing now.
    pub failures: watch::Receiver<u64>,
    pub unplayable: Arc<Unplayable>,
    pub shutdown: CancellationToken,
}

impl Driver {
    /// Plays the station until the server stops. Dropping the hold at the
    /// end unseats the server's player.
    pub(crate) async fn run(mut self) {
        // When the next track starts on the station's timeline.
        let mut start = Instant::now();
        // A track picked but not played (the station was taken over).
        let mut pending: Option<Item> = None;
        // Whether it had nothing to play when it last looked (said once).
        let mut idle = false;
        loop {
            self.resume(&mut pending, &mut start);
            let Some(item) = pending.take().or_else(|| self.pick()) else {
                if !idle {
                    tracing::warn!(station = %self.name, "nothing to play; looking again every {IDLE_RETRY:?} and on SIGHUP");
                    idle = true;
                }
                match self
                    .wait(Some(Instant::now() + IDLE_RETRY), true, None)
                    .await
                {
                    Woke::Shutdown => return,
                    Woke::Due | Woke::Returned | Woke::Failed => {
                        start = Instant::now();
                        continue;
                    }
                }
            };
            idle = false;
            let Some(mut playback) = self.playback(&item, &mut start) else {
                continue;
            };
            playback.next = self.upcoming();
            match self.hold.update(playback).await {
                Ok(_) => {
                    let end = start + Duration::from_millis(item.duration_ms);
                    match self.wait(Some(end), false, Some(&item.id)).await {
                        Woke::Due => start = end,
                        // Back from a broadcaster, or a track nobody can
                        // play: the next entry, now.
                        Woke::Returned | Woke::Failed => start = Instant::now(),
                        Woke::Shutdown => return,
                    }
                }
                Err(Refusal::TakenOver(_)) => {
                    tracing::debug!(station = %self.name, "a broadcaster has the station");
                    pending = Some(item);
                    match self.wait(None, false, None).await {
                        Woke::Returned | Woke::Due | Woke::Failed => start = Instant::now(),
                        Woke::Shutdown => return,
                    }
                }
                Err(refusal) => {
                    tracing::warn!(station = %self.name, %refusal, "cannot play the next track; trying again");
                    pending = Some(item);
                    match self
                        .wait(Some(Instant::now() + REFUSED_RETRY), false, None)
                        .await
                    {
                        Woke::Due | Woke::Returned | Woke::Failed => start = Instant::now(),
                        Woke::Shutdown => return,
                    }
                }
            }
        }
    }

    /// When the station has just come to this node's player from
    /// elsewhere in a cluster, takes it up where it was left: the track the
    /// server's player on another node was playing, at the place its
    /// timeline has reached (or, when it has ended, the next entry at the
    /// place that one has reached), or, after a broadcaster, the entry
    /// after the server's last track. `pending` and `start` become that.
    fn resume(&mut self, pending: &mut Option<Item>, start: &mut Instant) {
        match self.hold.handed() {
            None => {}
            Some(Handed::After(track)) => {
                self.rotation.follow(&track);
                *pending = None;
                *start = Instant::now();
            }
            Some(Handed::Playing(sync)) => {
                self.rotation.follow(&sync.track);
                let began = sync
                    .server_time_ms
                    .saturating_sub(i64::try_from(sync.position_ms).unwrap_or(i64::MAX));
                let now = Instant::now();
                let ago = protocol::now_ms().saturating_sub(began);
                let offset = Duration::from_millis(ago.unsigned_abs());
                let began = if ago >= 0 {
                    now.checked_sub(offset).unwrap_or(now)
                } else {
                    now + offset
                };
                *pending = None;
                *start = now;
                let Some(duration_ms) = sync.duration_ms.filter(|_| sync.playing) else {
                    return;
                };
                let end = began + Duration::from_millis(duration_ms);
                if end > now {
                    tracing::info!(station = %self.name, track = %sync.track, "going on with the track another node was playing");
                    *pending = Some(Item {
                        id: sync.track,
                        duration_ms,
                    });
                    *start = began;
                } else {
                    // It ended meanwhile: the next entry started then.
                    *start = end;
                }
            }
        }
    }

    /// The next track of the rotation.
    fn pick(&mut self) -> Option<Item> {
        let index = self.media.index();
        let source = &mut self.source;
        self.rotation.next(|| source.items(&index))
    }

    /// The track after the current one, decided now, as `sync` announces it.
    fn upcoming(&mut self) -> Option<NextTrack> {
        let index = self.media.index();
        let source = &mut self.source;
        let id = &self.rotation.peek(|| source.items(&index))?.id;
        index.next_track(id)
    }

    /// The update that starts `item` at `start` on the station's timeline:
    /// the position it has reached by now. `None` when the library lost the
    /// track since the pass began.
    fn playback(&self, item: &Item, start: &mut Instant) -> Option<Playback> {
        let index = self.media.index();
        let Some(track) = index.get(&item.id) else {
            tracing::warn!(station = %self.name, track = %item.id, "the track left the library; skipped");
            return None;
        };
        let now = Instant::now();
        let mut late = now.saturating_duration_since(*start);
        if late >= Duration::from_millis(item.duration_ms) {
            // Far behind its timeline (the machine slept): start it now.
            *start = now;
            late = Duration::ZERO;
        }
        Some(Playback {
            track: item.id.clone(),
            position_ms: u64::try_from(late.as_millis()).unwrap_or(0),
            playing: true,
            duration_ms: Some(item.duration_ms),
            title: Some(track.title.clone()),
            artist: track.artist.clone(),
            gain_db: track.gain_db,
            next: None,
        })
    }

    /// Waits until `until` (for ever when `None`), the station's return,
    /// every listener's failure to play `playing` (the track this player
    /// has on air), or shutdown; a SIGHUP meanwhile reads the source again,
    /// and the wait goes on, or ends when `hangup_ends` (a station with
    /// nothing to play looks again at once).
    async fn wait(
        &mut self,
        until: Option<Instant>,
        hangup_ends: bool,
        playing: Option<&str>,
    ) -> Woke {
        let sleep = async {
            match until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let mut sleep = std::pin::pin!(sleep);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Woke::Shutdown,
                _ = &mut sleep => return Woke::Due,
                _ = self.hold.returned() => return Woke::Returned,
                changed = self.failures.changed(), if playing.is_some() => {
                    if changed.is_err() {
                        return Woke::Shutdown;
                    }
                    let told = self.unplayable.take(&self.name, playing);
                    if let Some(ServerMessage::TrackFailed { track, listeners, reason, .. }) = told {
                        let reason = reason.unwrap_or_default();
                        tracing::warn!(station = %self.name, %track, listeners, %reason, "every listener failed to play the track; playing the next");
                        return Woke::Failed;
                    }
                }
                changed = self.hangups.changed() => {
                    if changed.is_err() {
                        // The signal's task ends only at shutdown.
                        return Woke::Shutdown;
                    }
                    if self.source.reread() {
                        self.rotation.restart();
                    }
                    if hangup_ends {
                        return Woke::Due;
                    }
                }
            }
        }
    }
}
