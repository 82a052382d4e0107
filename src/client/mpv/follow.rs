//! The drift loop: keeps mpv on the station's position, like the web
//! player keeps its media element (docs/player.md).
//!
//! A new track is checked (`HEAD /media/{id}`), loaded paused, and once mpv
//! says `file-loaded`, sought to the station's position now. Then every
//! [`EVERY`] mpv's `time-pos` is compared with the station's position (in
//! server time, through the listener's clock offset): beyond [`SEEK_OVER_MS`]
//! it seeks (aimed ahead by the seek latency it has measured), beyond
//! [`NUDGE_OVER_MS`] it nudges `speed` by 1-5 % until back within it. Past
//! the track's end nothing is sought or restarted: mpv waits at the end
//! (`--keep-open`) for the station's next state, unless the station said
//! what plays next: then that track is in mpv's playlist already (`prefetch`)
//! and mpv goes on to it, which the next state finds playing.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::Mpv;
use super::prefetch::Prefetch;
use crate::client::http::{Endpoint, media_path};
use crate::protocol::SyncState;

/// How often the drift is measured.
pub(crate) const EVERY: Duration = Duration::from_millis(500);
/// Drift beyond this: seek.
const SEEK_OVER_MS: f64 = 1_000.0;
/// Drift beyond this: nudge the speed, until back within it.
const NUDGE_OVER_MS: f64 = 40.0;
/// Drift measurements the nudge decides on (their median: mpv's position
/// moves in audio-buffer steps, so one reading may be tens of ms off).
const SAMPLES: usize = 3;
/// The largest speed nudge (±5 %).
const MAX_NUDGE: f64 = 0.05;
/// Seeks are aimed at most this far ahead.
const MAX_LEAD_MS: f64 = 500.0;

/// What the player is doing, as the status line and `--json` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Doing {
    /// Nothing to play (no state yet, or the station is offline).
    Idle,
    Loading,
    Playing,
    Paused,
    /// Past the track's end, waiting for the station's next state.
    Ended,
    /// The station plays a track this server does not serve.
    NotInLibrary,
    /// mpv could not play the track.
    Failed,
}

impl Doing {
    /// For the status line.
    pub(crate) fn words(self) -> &'static str {
        match self {
            Doing::Idle => "idle",
            Doing::Loading => "loading",
            Doing::Playing => "playing",
            Doing::Paused => "paused",
            Doing::Ended => "track ended, waiting for the station",
            Doing::NotInLibrary => "not in this server's library",
            Doing::Failed => "cannot play this track",
        }
    }
}

/// What `--json` prints about the player once a second.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub state: Doing,
    pub position_ms: Option<u64>,
    pub drift_ms: Option<i64>,
    pub speed: f64,
}

/// mpv, following one station.
pub(crate) struct Follow {
    pub mpv: Mpv,
    endpoint: Endpoint,
    /// The state to follow; `None` while there is none (mpv pauses).
    sync: Option<SyncState>,
    /// The track given to mpv (or found missing).
    loaded: Option<String>,
    /// Its URL, to know a `file-loaded` event is for it and not for the
    /// track before it.
    url: Option<String>,
    /// mpv has loaded it (`file-loaded`).
    ready: bool,
    /// The loaded file's own length, from mpv.
    file_end_ms: Option<f64>,
    doing: Doing,
    position_ms: Option<f64>,
    drift_ms: Option<f64>,
    speed: f64,
    /// Whether we last told mpv to pause.
    paused: Option<bool>,
    /// How late seeks land, learned; seeks aim this far ahead.
    lead_ms: f64,
    /// A seek happened: learn the lead from the next measurement.
    learn_lead: bool,
    /// The newest drift readings since the last seek, pause or load.
    recent: VecDeque<f64>,
    /// Paused, the station position mpv was last sought to (while paused,
    /// mpv reports its position less its audio buffer, so its reading is
    /// not compared again until the station moves).
    paused_at: Option<u64>,
    /// The next track, appended to mpv's playlist ahead of the end.
    prefetch: Prefetch,
}

impl Follow {
    pub(crate) fn new(mpv: Mpv, endpoint: Endpoint) -> Self {
        Self {
            mpv,
            endpoint,
            sync: None,
            loaded: None,
            url: None,
            ready: false,
            file_end_ms: None,
            doing: Doing::Idle,
            position_ms: None,
            drift_ms: None,
            speed: 1.0,
            paused: None,
            lead_ms: 0.0,
            learn_lead: false,
            recent: VecDeque::new(),
            paused_at: None,
            prefetch: Prefetch::new(),
        }
    }

    pub(crate) fn doing(&self) -> Doing {
        self.doing
    }

    pub(crate) fn drift_ms(&self) -> Option<f64> {
        self.drift_ms.filter(|_| self.doing == Doing::Playing)
    }

    pub(crate) fn report(&self) -> Report {
        Report {
            kind: "player",
            state: self.doing,
            position_ms: self.position_ms.map(|p| p.max(0.0).round() as u64),
            drift_ms: self.drift_ms.map(|d| d.round() as i64),
            speed: self.speed,
        }
    }

    /// The station's state changed (`None`: it has none, or is offline).
    pub(crate) async fn follow(
        &mut self,
        sync: Option<&SyncState>,
        server_now: i64,
    ) -> anyhow::Result<()> {
        self.sync = sync.cloned();
        let Some(s) = sync else {
            if self.ready {
                self.pause(true).await?;
                self.doing = Doing::Paused;
            } else {
                self.doing = Doing::Idle;
            }
            return Ok(());
        };
        if self.loaded.as_deref() != Some(s.track.as_str()) {
            if let Some(url) = self.prefetch.take(&s.track) {
                return self.adopt(&s.track.clone(), url, server_now).await;
            }
            return self.load(&s.track.clone()).await;
        }
        self.correct(server_now, false).await
    }

    /// The station plays the track appended ahead: mpv plays it already
    /// (it went on at the last one's end), or goes on to it now (it ran
    /// behind), with no new request either way.
    async fn adopt(&mut self, track: &str, url: String, server_now: i64) -> anyhow::Result<()> {
        self.loaded = Some(track.to_owned());
        self.file_end_ms = None;
        self.position_ms = None;
        self.drift_ms = None;
        self.recent.clear();
        self.paused_at = None;
        let playing = self.mpv.ipc.get("path").await?;
        self.url = Some(url.clone());
        if playing.as_ref().and_then(Value::as_str) == Some(url.as_str()) {
            self.ready = true;
            self.file_end_ms = self.get_f64("duration").await?.map(|s| s * 1000.0);
            return self.correct(server_now, false).await;
        }
        // Its `file-loaded` makes it ready; if mpv has no such entry any
        // more (it failed to open it), it is loaded as any track is.
        self.ready = false;
        self.doing = Doing::Loading;
        if let Err(e) = self
            .mpv
            .ipc
            .command(json!(["playlist-next", "force"]))
            .await
        {
            tracing::debug!(error = %e, "the appended track is gone; loading it");
            return self.load(track).await;
        }
        Ok(())
    }

    /// Checks that the server serves `track`, and loads it paused.
    async fn load(&mut self, track: &str) -> anyhow::Result<()> {
        // A load replaces mpv's playlist: nothing appended follows.
        self.prefetch.forget();
        self.loaded = Some(track.to_owned());
        self.url = None;
        self.ready = false;
        self.file_end_ms = None;
        self.position_ms = None;
        self.drift_ms = None;
        self.recent.clear();
        self.paused_at = None;
        let path = media_path(track);
        match self.endpoint.head(&path).await {
            Ok(status) if status.is_success() => {}
            Ok(status) => {
                self.doing = if status == http::StatusCode::NOT_FOUND {
                    Doing::NotInLibrary
                } else {
                    Doing::Failed
                };
                tracing::debug!(track, %status, "not loading");
                self.mpv.ipc.command(json!(["stop"])).await?;
                return Ok(());
            }
            // Loading will tell; mpv's own message says more.
            Err(e) => tracing::debug!(error = %e, "cannot check the track"),
        }
        self.pause(true).await?;
        self.set_speed(1.0).await?;
        let url = self.endpoint.url(&path);
        self.mpv
            .ipc
            .command(json!({"name": "loadfile", "url": url, "flags": "replace"}))
            .await?;
        self.url = Some(url);
        self.doing = Doing::Loading;
        Ok(())
    }

    /// One of mpv's events.
    pub(crate) async fn on_event(&mut self, event: &Value, server_now: i64) -> anyhow::Result<()> {
        match event.get("event").and_then(Value::as_str) {
            Some("file-loaded") if self.url.is_some() => {
                // A track replaced while loading may still report in.
                let path = self.mpv.ipc.get("path").await?;
                let path = path.as_ref().and_then(Value::as_str);
                if path != self.url.as_deref() {
                    if path.is_some_and(|p| self.prefetch.holds(p)) {
                        // On to the appended track at the last one's end:
                        // nothing to correct until the station's state for it.
                        self.ready = false;
                        self.doing = Doing::Ended;
                    }
                    return Ok(());
                }
                self.ready = true;
                self.file_end_ms = self.get_f64("duration").await?.map(|s| s * 1000.0);
                self.correct(server_now, true).await
            }
            Some("end-file") if event.get("reason").and_then(Value::as_str) == Some("error") => {
                self.ready = false;
                self.doing = Doing::Failed;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// One step of the drift loop; `hard` seeks whatever the drift.
    pub(crate) async fn correct(&mut self, server_now: i64, hard: bool) -> anyhow::Result<()> {
        let Some(s) = self.sync.clone() else {
            return Ok(());
        };
        if !self.ready || self.get_bool("seeking").await? {
            return Ok(());
        }
        let Some(pos) = self.get_f64("time-pos").await?.map(|p| p * 1000.0) else {
            return Ok(());
        };
        self.position_ms = Some(pos);
        let expected = s.position_at(server_now) as f64;
        let end = match (s.duration_ms.map(|d| d as f64), self.file_end_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self.recent.len() == SAMPLES {
            self.recent.pop_front();
        }
        let reading = pos - expected;
        self.recent.push_back(reading);
        let drift = median(&self.recent);
        self.drift_ms = Some(drift);
        let left = end.map(|end| end - expected);
        (self.prefetch)
            .ahead(&mut self.mpv.ipc, &self.endpoint, &s, left)
            .await?;
        if s.playing && end.is_some_and(|end| expected >= end - NUDGE_OVER_MS) {
            // Past the end: let mpv reach its end and wait there.
            self.doing = Doing::Ended;
            return self.set_speed(1.0).await;
        }
        if s.playing {
            self.keep_playing(expected, reading, drift, hard).await
        } else {
            self.hold_paused(s.position_ms, expected, reading, hard)
                .await
        }
    }

    /// The station is paused at `target`: pause there too, seeking only when
    /// it moved or we are off by more than a nudge.
    async fn hold_paused(
        &mut self,
        target: u64,
        expected: f64,
        reading: f64,
        hard: bool,
    ) -> anyhow::Result<()> {
        if self.paused_at.is_none() {
            self.recent.clear();
        }
        self.doing = Doing::Paused;
        self.pause(true).await?;
        self.set_speed(1.0).await?;
        if hard || (self.paused_at != Some(target) && reading.abs() > NUDGE_OVER_MS) {
            self.seek(expected).await?;
        }
        self.paused_at = Some(target);
        Ok(())
    }

    /// The station plays: seek when far off (a second), else nudge the speed
    /// towards it while the median drift is over [`NUDGE_OVER_MS`].
    async fn keep_playing(
        &mut self,
        expected: f64,
        reading: f64,
        drift: f64,
        hard: bool,
    ) -> anyhow::Result<()> {
        self.doing = Doing::Playing;
        let resumed = self.paused_at.take().is_some();
        let at_eof = self.get_bool("eof-reached").await?;
        if self.learn_lead && !hard && !at_eof && !resumed {
            // Where the last seek landed says how far ahead to aim.
            self.learn_lead = false;
            self.lead_ms = (self.lead_ms - reading).clamp(0.0, MAX_LEAD_MS);
        }
        // A second off is no jitter: the station moved, or mpv stalled.
        if hard || at_eof || reading.abs() >= SEEK_OVER_MS {
            self.set_speed(1.0).await?;
            self.seek(expected + self.lead_ms).await?;
            self.learn_lead = true;
            return self.pause(false).await;
        }
        self.pause(false).await?;
        if resumed {
            // Its paused reading was off by its audio buffer: measure anew.
            self.recent.clear();
        }
        if drift.abs() > NUDGE_OVER_MS {
            // Behind (negative drift): a little faster; ahead: slower.
            let k = (0.01 + drift.abs() / 5_000.0).min(MAX_NUDGE);
            self.set_speed(if drift < 0.0 { 1.0 + k } else { 1.0 - k })
                .await
        } else {
            self.set_speed(1.0).await
        }
    }

    async fn seek(&mut self, to_ms: f64) -> anyhow::Result<()> {
        self.recent.clear();
        // What was measured before the seek says nothing of after it.
        self.drift_ms = None;
        let secs = (to_ms / 1000.0).max(0.0);
        self.mpv
            .ipc
            .command(json!(["seek", secs, "absolute+exact"]))
            .await
            .map(drop)
    }

    async fn pause(&mut self, pause: bool) -> anyhow::Result<()> {
        // mpv pauses itself at a file's end, so a resume is always sent.
        if self.paused != Some(pause) || !pause {
            self.mpv.ipc.set("pause", json!(pause)).await?;
            self.paused = Some(pause);
        }
        Ok(())
    }

    async fn set_speed(&mut self, speed: f64) -> anyhow::Result<()> {
        if (self.speed - speed).abs() > f64::EPSILON {
            self.mpv.ipc.set("speed", json!(speed)).await?;
            self.speed = speed;
        }
        Ok(())
    }

    async fn get_f64(&mut self, property: &str) -> anyhow::Result<Option<f64>> {
        Ok(self.mpv.ipc.get(property).await?.and_then(|v| v.as_f64()))
    }

    async fn get_bool(&mut self, property: &str) -> anyhow::Result<bool> {
        Ok(self
            .mpv
            .ipc
            .get(property)
            .await?
            .and_then(|v| v.as_bool())
            .unwrap_or(false))
    }
}

/// The median of a few readings (the mean of the middle two when even).
fn median(v: &VecDeque<f64>) -> f64 {
    let mut sorted: Vec<f64> = v.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_readings() {
        assert_eq!(median(&VecDeque::from([30.0, -40.0, 25.0])), 25.0);
        assert_eq!(median(&VecDeque::from([10.0, 20.0])), 15.0);
        assert_eq!(median(&VecDeque::new()), 0.0);
    }
}
