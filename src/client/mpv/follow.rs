//! The drift loop: keeps mpv on the station's position, like the web
//! player keeps its media element (docs/player.md).
//!
//! A new track is checked (`HEAD /media/{id}`), loaded paused, and once mpv
//! says `file-loaded`, sought to the station's position now. Then every
//! [`EVERY`] mpv's `time-pos` is compared with the station's position (in
//! server time, through the listener's clock offset): beyond
//! [`drift::SEEK_OVER_MS`]
//! it seeks (aimed ahead by the seek latency it has measured), beyond
//! [`drift::NUDGE_OVER_MS`] it nudges `speed` by 1-5 % until back within it. Past
//! the track's end nothing is sought or restarted: mpv waits at the end
//! (`--keep-open`) for the station's next state. Those rules are `drift`'s
//! [`drift::decide`]; this file reads mpv and carries them out.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::Mpv;
use super::drift::{self, Action, Drift, Expected, Phase, Reading};
use crate::client::http::{Endpoint, media_path};
use crate::protocol::SyncState;

/// How often the drift is measured.
pub(crate) const EVERY: Duration = Duration::from_millis(500);

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
            return self.load(&s.track.clone()).await;
        }
        self.correct(server_now, false).await
    }

    /// Checks that the server serves `track`, and loads it paused.
    async fn load(&mut self, track: &str) -> anyhow::Result<()> {
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
        let gain_db = self.sync.as_ref().and_then(|s| s.gain_db);
        let loadfile = super::gain::loadfile(&url, "replace", gain_db);
        self.mpv.ipc.command(loadfile).await?;
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
                if path.as_ref().and_then(Value::as_str) != self.url.as_deref() {
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

    /// One step of the drift loop; `hard` seeks whatever the drift. What
    /// to do is [`drift::decide`]'s; this gathers its inputs and applies it.
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
        if self.recent.len() == drift::SAMPLES {
            self.recent.pop_front();
        }
        let latest = pos - expected;
        self.recent.push_back(latest);
        let median = drift::median(self.recent.iter().copied());
        self.drift_ms = Some(median);
        let phase = match (hard, self.paused_at) {
            (true, _) => Phase::Loaded,
            (false, Some(at_ms)) => Phase::Held { at_ms },
            (false, None) => Phase::Playing,
        };
        // mpv's end matters only while it plays on.
        let at_eof = s.playing && self.get_bool("eof-reached").await?;
        let reading = Reading { phase, at_eof };
        if self.learn_lead && s.playing && phase == Phase::Playing && !at_eof {
            // Where the last seek landed says how far ahead to aim.
            self.learn_lead = false;
            self.lead_ms = drift::learn_lead(self.lead_ms, latest);
        }
        let station = Expected {
            position_ms: expected,
            playing: s.playing,
            lead_ms: self.lead_ms,
        };
        match drift::decide(&reading, Drift { latest, median }, &station, end) {
            Action::Ended => {
                self.doing = Doing::Ended;
                self.set_speed(1.0).await
            }
            Action::Hold { seek_to } => {
                if self.paused_at.is_none() {
                    self.recent.clear();
                }
                self.doing = Doing::Paused;
                self.pause(true).await?;
                self.set_speed(1.0).await?;
                if let Some(to) = seek_to {
                    self.seek(to).await?;
                }
                self.paused_at = Some(s.position_ms);
                Ok(())
            }
            Action::Seek { to_ms } => {
                self.doing = Doing::Playing;
                self.paused_at = None;
                self.set_speed(1.0).await?;
                self.seek(to_ms).await?;
                self.learn_lead = true;
                self.pause(false).await
            }
            Action::Play { speed } => {
                self.doing = Doing::Playing;
                if self.paused_at.take().is_some() {
                    // Its paused readings were off by its audio buffer.
                    self.recent.clear();
                }
                self.pause(false).await?;
                self.set_speed(speed).await
            }
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
