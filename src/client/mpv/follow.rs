//! The drift loop: keeps mpv on the station's position, like the web
//! player keeps its media element (docs/player.md).
//!
//! A new track is loaded paused, from the URL the server's library gives
//! it (`urls`: its CDN's, with `--media-base-url`). Then at
//! each of mpv's events that matter and every [`EVERY`], mpv's position
//! (`audio-pts`) is compared with the station's (in server time, through
//! the listener's clock offset) and [`drift::decide`] says what to do:
//! park (pause and seek ahead of the station by how long seeks take, then
//! play when the station gets there), nudge the speed, or leave mpv be
//! while it seeks or buffers. This file reads mpv and carries that out;
//! the rules and their numbers are `drift`'s. When the station says what
//! plays next, that track is in mpv's playlist ahead of the end
//! (`prefetch`, at its own gain) and mpv goes on to it gaplessly, which
//! the next state finds playing.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Mpv;
use super::drift::{self, Action, Expected, Leads, Phase, Reading};
use super::ipc::line_of;
use super::prefetch::Prefetch;
use super::trouble::{self, Trouble};
use super::urls::{MediaUrls, Missing};
use crate::protocol::{self, SyncState};

/// How often the drift is measured (as often as the web player does).
pub(crate) const EVERY: Duration = Duration::from_millis(200);
/// A park whose seek never says it is done is taken as done after this
/// long.
const PARK_GIVES_UP: Duration = Duration::from_secs(5);

/// What the player is doing, as the status line and `--json` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Doing {
    /// Nothing to play (no state yet, or the station is offline).
    Idle,
    /// Loading the track, or parked at the station's position until the
    /// station gets there.
    Loading,
    Playing,
    /// Sought (paused) ahead of the station, to play when it gets there.
    Seeking,
    /// mpv waits for data (`paused-for-cache`): its position stands still.
    Buffering,
    Paused,
    /// Past the track's end, waiting for the station's next state.
    Ended,
    /// The station plays a track this server does not serve.
    NotInLibrary,
    /// mpv could not play the track.
    Failed,
    /// mpv plays faster than real time (its audio output is a file, such
    /// as `--ao=pcm`): it cannot keep to the station.
    NotRealTime,
}

impl Doing {
    /// For the status line.
    pub(crate) fn words(self) -> &'static str {
        match self {
            Doing::Idle => "idle",
            Doing::Loading => "loading",
            Doing::Playing => "playing",
            Doing::Seeking => "seeking",
            Doing::Buffering => "buffering",
            Doing::Paused => "paused",
            Doing::Ended => "track ended, waiting for the station",
            Doing::NotInLibrary => "not in this server's library",
            Doing::Failed => "cannot play this track",
            Doing::NotRealTime => "plays faster than real time, not in sync",
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

/// A seek asked of mpv that has not landed yet. mpv says a seek is done
/// with a `playback-restart` event; `seeking` is no sign, since mpv may
/// answer it false, at the old position, before it starts a seek it took.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// When it was asked for.
    since: Instant,
    /// Where to (`None`: the track's load, which starts where it starts).
    to_ms: Option<f64>,
    /// Within what mpv holds cached.
    cached: bool,
    /// The IPC line of mpv's reply to it: later events are about it.
    after: u64,
    /// mpv said it is done (`playback-restart`).
    done: bool,
}

/// mpv, following one station.
pub(crate) struct Follow {
    pub mpv: Mpv,
    /// Where tracks are fetched: the server's library's URLs.
    pub(crate) media: MediaUrls,
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
    /// Why mpv cannot play the track, in its words ([`Doing::Failed`]).
    failure: Option<String>,
    position_ms: Option<f64>,
    drift_ms: Option<f64>,
    speed: f64,
    /// Whether we last told mpv to pause.
    paused: Option<bool>,
    phase: Phase,
    /// The park (or load) under way.
    pending: Option<Pending>,
    /// Where the park that landed left mpv. Parked after playing, mpv says
    /// it is there less the audio it holds buffered, though it plays from
    /// there: the seek's target is the truth.
    parked_at: Option<f64>,
    /// Parked: when to play.
    release_at: Option<Instant>,
    /// How long seeks take, learned: parks aim this far ahead.
    leads: Leads,
    /// Where mpv was at the last reading while playing (or its release),
    /// and when: how fast it plays.
    last_played: Option<(Instant, f64)>,
    /// mpv was seen playing faster than real time: its output is not
    /// real-time, for good.
    too_fast: bool,
    /// Parked, where the stretch mpv holds from its position ended at the
    /// last reading, and when: whether it fetches on faster than real time.
    parked_cache: Option<(Instant, f64)>,
    /// mpv's latest error lines since the track's load.
    said: VecDeque<String>,
    /// The next track, appended to mpv's playlist ahead of the end.
    prefetch: Prefetch,
}

impl Follow {
    pub(crate) fn new(mpv: Mpv, media: MediaUrls) -> Self {
        Self {
            mpv,
            media,
            sync: None,
            loaded: None,
            url: None,
            ready: false,
            file_end_ms: None,
            doing: Doing::Idle,
            failure: None,
            position_ms: None,
            drift_ms: None,
            speed: 1.0,
            paused: None,
            phase: Phase::Parked,
            pending: None,
            parked_at: None,
            release_at: None,
            leads: Leads::default(),
            last_played: None,
            too_fast: false,
            parked_cache: None,
            said: VecDeque::new(),
            prefetch: Prefetch::new(),
        }
    }

    pub(crate) fn doing(&self) -> Doing {
        self.doing
    }

    pub(crate) fn drift_ms(&self) -> Option<f64> {
        self.drift_ms.filter(|_| self.doing == Doing::Playing)
    }

    /// When mpv, parked ahead of the station, is to play.
    pub(crate) fn release_at(&self) -> Option<Instant> {
        self.release_at
    }

    /// The track mpv could not play, and why in its words (at most as
    /// long as the protocol takes), while it is so.
    pub(crate) fn failed_track(&self) -> Option<(String, Option<String>)> {
        if self.doing != Doing::Failed {
            return None;
        }
        let track = self.loaded.clone()?;
        let reason = self.failure.as_deref().map(|why| {
            let mut end = why.len().min(protocol::MAX_TRACK_BYTES);
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            why[..end].to_owned()
        });
        Some((track, reason))
    }

    /// Why mpv does not play the station, for people, when it cannot.
    pub(crate) fn complaint(&self) -> Option<String> {
        let track = self.loaded.as_deref().unwrap_or_default();
        let idle = "mpv stays idle until the station plays another track";
        match self.doing {
            Doing::NotInLibrary => Some(format!(
                "mpv: {track:?} is not in this server's library; {idle}"
            )),
            Doing::Failed => Some(format!(
                "mpv cannot play {track:?}: {}; {idle}",
                self.failure.as_deref().unwrap_or("it did not say why")
            )),
            Doing::NotRealTime => Some(
                "mpv plays faster than real time, so it cannot keep to the station: \
                 its audio output is not real-time (a file, as --ao=pcm writes); \
                 play through a real-time output (to record the station, record that)"
                    .to_owned(),
            ),
            _ => None,
        }
    }

    pub(crate) fn report(&self) -> Report {
        Report {
            kind: "player",
            state: self.doing,
            position_ms: self.position_ms.map(|p| p.max(0.0).round() as u64),
            drift_ms: self.drift_ms().map(|d| d.round() as i64),
            speed: self.speed,
        }
    }

    /// The station's state changed (`None`: it has none, or is offline).
    pub(crate) async fn follow(
        &mut self,
        sync: Option<&SyncState>,
        offset_ms: f64,
    ) -> anyhow::Result<()> {
        self.sync = sync.cloned();
        let Some(s) = sync else {
            self.release_at = None;
            if self.ready {
                self.pause(true).await?;
                self.phase = Phase::Parked;
                self.parked_at = None;
                self.doing = Doing::Paused;
            } else {
                self.doing = Doing::Idle;
            }
            return Ok(());
        };
        if self.loaded.as_deref() != Some(s.track.as_str()) {
            if let Some(url) = self.prefetch.take(&s.track) {
                return self.adopt(&s.track.clone(), url, offset_ms).await;
            }
            return self.load(&s.track.clone()).await;
        }
        self.correct(offset_ms).await
    }

    /// The station plays the track appended ahead: mpv plays it already,
    /// or goes on to it now (it ran behind); no new request either way.
    async fn adopt(&mut self, track: &str, url: String, offset_ms: f64) -> anyhow::Result<()> {
        self.forget_track(track);
        let playing = self.mpv.ipc.get("path").await?;
        self.url = Some(url.clone());
        if playing.as_ref().and_then(Value::as_str) == Some(url.as_str()) {
            self.ready = true;
            self.file_end_ms = self.get_f64("duration").await?.map(|s| s * 1000.0);
            return self.correct(offset_ms).await;
        }
        // Its `file-loaded` makes it ready; gone, it is loaded anew.
        self.pause(true).await?;
        self.phase = Phase::Parked;
        let next = json!(["playlist-next", "force"]);
        if let Err(e) = self.mpv.ipc.command(next).await {
            tracing::debug!(error = %e, "the appended track is gone; loading it");
            return self.load(track).await;
        }
        self.await_load();
        Ok(())
    }

    /// A load is under way: waited for as a park is (`playback-restart`).
    fn await_load(&mut self) {
        self.pending = Some(Pending {
            since: Instant::now(),
            to_ms: None,
            cached: false,
            after: self.mpv.ipc.replied_at(),
            done: false,
        });
        self.doing = Doing::Loading;
    }

    /// Drops what was known of the last track: `track` is mpv's now.
    fn forget_track(&mut self, track: &str) {
        self.loaded = Some(track.to_owned());
        self.url = None;
        self.ready = false;
        self.file_end_ms = None;
        self.failure = None;
        self.position_ms = None;
        self.drift_ms = None;
        self.last_played = None;
        self.release_at = None;
        self.pending = None;
        self.parked_at = None;
        self.parked_cache = None;
        self.said.clear();
    }

    /// Loads `track` paused, from where the server says it is.
    async fn load(&mut self, track: &str) -> anyhow::Result<()> {
        // A load replaces mpv's playlist: nothing appended follows.
        self.prefetch.forget();
        self.forget_track(track);
        self.phase = Phase::Parked;
        let url = match self.media.locate(track).await {
            Ok(url) => url,
            Err(missing) => {
                tracing::debug!(track, ?missing, "not loading");
                match missing {
                    Missing::NotInLibrary => self.doing = Doing::NotInLibrary,
                    Missing::Refused(why) => {
                        self.doing = Doing::Failed;
                        self.failure = Some(why);
                    }
                }
                self.mpv.ipc.command(json!(["stop"])).await?;
                return Ok(());
            }
        };
        self.pause(true).await?;
        self.set_speed(1.0).await?;
        let gain_db = self.sync.as_ref().and_then(|s| s.gain_db);
        let loadfile = super::gain::loadfile(&url, "replace", gain_db);
        self.mpv.ipc.command(loadfile).await?;
        self.await_load();
        self.url = Some(url);
        Ok(())
    }

    /// One of mpv's events. Fails with [`trouble::NoSound`] when mpv
    /// cannot output sound at all.
    pub(crate) async fn on_event(&mut self, event: &Value, offset_ms: f64) -> anyhow::Result<()> {
        tracing::trace!(%event, "mpv event");
        match event.get("event").and_then(Value::as_str) {
            Some("file-loaded") if self.url.is_some() => {
                // A track replaced while loading may still report in.
                let path = self.mpv.ipc.get("path").await?;
                let path = path.as_ref().and_then(Value::as_str);
                if path != self.url.as_deref() {
                    if path.is_some_and(|p| self.prefetch.holds(p)) {
                        // On to the appended track: wait for its state.
                        self.ready = false;
                        self.doing = Doing::Ended;
                    }
                    return Ok(());
                }
                self.ready = true;
                self.file_end_ms = self.get_f64("duration").await?.map(|s| s * 1000.0);
                self.correct(offset_ms).await
            }
            // A seek (or the load) is done: a park may be released.
            Some("playback-restart") => {
                let Some(p) = self.pending.as_mut() else {
                    return Ok(());
                };
                if line_of(event) > p.after {
                    p.done = true;
                }
                if !self.ready {
                    return Ok(());
                }
                self.correct(offset_ms).await
            }
            Some("end-file") if event.get("reason").and_then(Value::as_str) == Some("error") => {
                self.hear_out().await;
                let said: Vec<&str> = self.said.iter().map(String::as_str).collect();
                match trouble::of_end_file(event, &said) {
                    Trouble::NoSound(e) => Err(e.into()),
                    Trouble::Track(why) => {
                        self.ready = false;
                        self.release_at = None;
                        self.pending = None;
                        self.doing = Doing::Failed;
                        self.failure = Some(why);
                        Ok(())
                    }
                }
            }
            Some("log-message") => {
                self.keep_said(event);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Keeps a `log-message` event's line, to quote.
    fn keep_said(&mut self, event: &Value) {
        if let Some(line) = trouble::log_line(event) {
            if self.said.len() == trouble::KEEP_SAID {
                self.said.pop_front();
            }
            self.said.push_back(line);
        }
    }

    /// mpv may log why a track failed just after it says so: takes in its
    /// next log lines, until it is quiet for a moment (other events at
    /// such an end say nothing we act on).
    async fn hear_out(&mut self) {
        let deadline = Instant::now() + trouble::HEAR_OUT;
        loop {
            let quiet = (Instant::now() + trouble::QUIET).min(deadline);
            match tokio::time::timeout_at(quiet, self.mpv.ipc.event()).await {
                Ok(Some(event)) => {
                    if event.get("event").and_then(Value::as_str) == Some("log-message") {
                        self.keep_said(&event);
                    }
                }
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// One step of the drift loop: what to do is [`drift::decide`]'s; this
    /// gathers its inputs and carries it out.
    pub(crate) async fn correct(&mut self, offset_ms: f64) -> anyhow::Result<()> {
        let Some(s) = self.sync.clone() else {
            return Ok(());
        };
        if !self.ready {
            return Ok(());
        }
        if self.too_fast && s.playing {
            self.doing = Doing::NotRealTime;
            return Ok(());
        }
        // mpv's position first, timed: the station's is taken for the
        // middle of that round trip (later, a slow answer reads as drift).
        let asked = protocol::now_ms();
        // `audio-pts` is where the audio heard is; `time-pos` moves in
        // steps of the audio buffer (and is all there is while seeking).
        let pts = match self.get_f64("audio-pts").await? {
            Some(p) => Some(p),
            None => self.get_f64("time-pos").await?,
        };
        let server_now = (asked + protocol::now_ms()) as f64 / 2.0 + offset_ms;
        let Some(mut pos) = pts.map(|p| p * 1000.0) else {
            return Ok(());
        };
        let now = Instant::now();
        let seeking = self.get_bool("seeking").await?;
        let cache = self.get_bool("paused-for-cache").await?;
        let buffering = seeking || cache || self.in_flight(now);
        if let (Phase::Parked, Some(at)) = (self.phase, self.parked_at) {
            pos = at;
        }
        self.position_ms = Some(pos);
        let expected = s.position_at(server_now.round() as i64) as f64;
        let end = match (s.duration_ms.map(|d| d as f64), self.file_end_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let drift = pos - expected;
        self.drift_ms = Some(drift);
        let left = end.map(|end| end - expected);
        (self.prefetch)
            .ahead(&mut self.mpv.ipc, &self.media, &s, left)
            .await?;
        let mut gained_ms = None;
        if buffering {
            self.last_played = None;
        } else if self.phase == Phase::Playing {
            if let Some((then, was)) = self.last_played {
                let ms = now.duration_since(then).as_secs_f64() * 1000.0;
                gained_ms = Some(pos - was - ms * self.speed);
            }
            self.last_played = Some((now, pos));
        }
        let at_eof = self.phase == Phase::Playing && self.get_bool("eof-reached").await?;
        let cached = self.cached().await?;
        let cached_until_ms = stretch_end(&cached, expected);
        // Parked before the station: does what mpv fetches gain on it?
        let mut catching_up = false;
        let parked_end = stretch_end(&cached, pos).filter(|_| self.phase == Phase::Parked);
        if let (Some(end), Some((then, was))) = (parked_end, self.parked_cache) {
            let ms = now.duration_since(then).as_secs_f64() * 1000.0;
            let needed = expected + self.leads.cached_ms + drift::CACHED_PAST_MS;
            catching_up = end < needed && end - was > ms;
        }
        self.parked_cache = parked_end.map(|end| (now, end));
        let reading = Reading {
            phase: self.phase,
            buffering,
            at_eof,
            speed: self.speed,
            gained_ms,
            cached_until_ms,
            catching_up,
        };
        let station = Expected {
            position_ms: expected,
            playing: s.playing,
            leads: self.leads,
        };
        let action = drift::decide(&reading, drift, &station, end);
        tracing::trace!(?reading, drift, ?action, "drift");
        match action {
            Action::Wait => {
                if self.phase == Phase::Playing && cache {
                    self.doing = Doing::Buffering;
                }
                Ok(())
            }
            Action::Ended => {
                self.doing = Doing::Ended;
                self.release_at = None;
                self.set_speed(1.0).await
            }
            Action::Park { to_ms, cached } => {
                self.doing = match (s.playing, self.doing) {
                    (false, _) => Doing::Paused,
                    (true, Doing::Loading) => Doing::Loading,
                    (true, _) => Doing::Seeking,
                };
                self.park(to_ms, cached).await
            }
            Action::Release { in_ms } if in_ms < 1.0 => self.release().await,
            Action::Release { in_ms } => {
                self.release_at = Some(now + Duration::from_secs_f64(in_ms / 1000.0));
                Ok(())
            }
            Action::Stay => {
                self.doing = Doing::Paused;
                self.release_at = None;
                Ok(())
            }
            Action::Play { speed } => {
                self.doing = Doing::Playing;
                self.pause(false).await?;
                self.set_speed(speed).await
            }
            Action::TooFast => {
                self.too_fast = true;
                self.doing = Doing::NotRealTime;
                self.set_speed(1.0).await
            }
        }
    }

    /// Whether the park (or load) under way has not landed yet, learning
    /// how long it took once it has.
    fn in_flight(&mut self, now: Instant) -> bool {
        let Some(p) = self.pending else {
            return false;
        };
        let took = now.duration_since(p.since);
        if !p.done && took < PARK_GIVES_UP {
            return true;
        }
        self.pending = None;
        self.parked_at = p.to_ms;
        let took_ms = took.as_secs_f64() * 1000.0;
        // A load takes longer than a seek: it teaches nothing of seeks.
        if p.to_ms.is_some() {
            let lead = if p.cached {
                &mut self.leads.cached_ms
            } else {
                &mut self.leads.fetched_ms
            };
            *lead = drift::learn_lead(took_ms);
        }
        tracing::debug!(took_ms, cached = p.cached, leads = ?self.leads, "landed");
        false
    }

    /// The stretches of the track mpv holds cached, in ms
    /// (`demuxer-cache-state`'s `seekable-ranges`, in seconds).
    async fn cached(&mut self) -> anyhow::Result<Vec<(f64, f64)>> {
        let state = self.mpv.ipc.get("demuxer-cache-state").await?;
        let ranges = state
            .as_ref()
            .and_then(|s| s.get("seekable-ranges"))
            .and_then(Value::as_array);
        Ok(ranges
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let start = r.get("start")?.as_f64()? * 1000.0;
                let end = r.get("end")?.as_f64()? * 1000.0;
                Some((start, end))
            })
            .collect())
    }

    /// Pauses mpv at speed 1 and seeks to `to_ms` (within what it holds
    /// `cached`, or not), to play when released.
    async fn park(&mut self, to_ms: f64, cached: bool) -> anyhow::Result<()> {
        self.release_at = None;
        self.last_played = None;
        // What was measured before the seek says nothing of after it.
        self.drift_ms = None;
        self.phase = Phase::Parked;
        self.parked_at = None;
        self.parked_cache = None;
        self.pause(true).await?;
        self.set_speed(1.0).await?;
        let to_ms = to_ms.max(0.0);
        let since = Instant::now();
        self.mpv
            .ipc
            .command(json!(["seek", to_ms / 1000.0, "absolute+exact"]))
            .await?;
        self.pending = Some(Pending {
            since,
            to_ms: Some(to_ms),
            cached,
            after: self.mpv.ipc.replied_at(),
            done: false,
        });
        Ok(())
    }

    /// Plays the parked mpv: the station has got where it waits (called at
    /// [`Follow::release_at`], or at once).
    pub(crate) async fn release(&mut self) -> anyhow::Result<()> {
        self.release_at = None;
        if self.phase != Phase::Parked || !self.sync.as_ref().is_some_and(|s| s.playing) {
            return Ok(());
        }
        self.pause(false).await?;
        self.phase = Phase::Playing;
        self.doing = Doing::Playing;
        // From here its pace is measured: a race to the end shows.
        self.last_played = self.position_ms.map(|p| (Instant::now(), p));
        Ok(())
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

/// Where the cached stretch holding `at_ms` ends, if one does.
fn stretch_end(stretches: &[(f64, f64)], at_ms: f64) -> Option<f64> {
    stretches
        .iter()
        .find(|(start, end)| *start <= at_ms && at_ms <= *end)
        .map(|(_, end)| *end)
}
