//! One station's stream, made once for all its stream listeners: the task
//! that feeds the encoder PCM at real time, from the decoder of what the
//! station plays, or silence.
//!
//! **The clock.** The stream's audio has a timeline: sample `c` of it is
//! what the station plays at server time `start + c / 44100`. The feed
//! keeps the encoder fed `lead` (`--stream-burst`) ahead of the wall
//! clock, so the newest burst's worth of MP3 (what a new listener is sent
//! first, see `ring.rs`) starts at about the station's position *now*: a
//! listener hears what synced listeners hear, behind only by its player's
//! start. The price: a change the station makes (a seek, a pause) reaches
//! the stream at the moment it happens plus the lead, since the audio
//! before it is already out. A track change the station announced
//! (`next`) is decoded at the old track's end, and the station's own
//! update for it then agrees with it ([`follow::keeps`]).
//!
//! **The decoder.** What it has decoded so far always sits on the
//! stream's timeline: when it is late (it is starting, or the machine is
//! busy) and the audio is due, silence is sent instead, and the same
//! amount of its output is dropped once it comes (its debt), so a slow
//! start costs a moment of silence, never a shift of the timeline. It is
//! replaced when the station's timeline leaves it (a seek, another track),
//! and stopped when the station pauses or the track ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::{self, CpuCounter, FRAME_BYTES, Proc, RATE};
use super::follow::{self, Play, Want};
use super::icy::{Marks, Title};
use crate::protocol::{self, StationName};
use crate::server::media::Library;
use crate::server::station::Station;

/// Samples written to the encoder at a time: 100 ms.
const BLOCK: u64 = RATE / 10;
/// How often the feed wakes to top the encoder up.
const TICK: Duration = Duration::from_millis(100);
/// The decoder is waited for until the audio is due this soon; then
/// silence is sent in its place.
const MARGIN: Duration = Duration::from_millis(150);
/// How long the stream's very first audio waits for its decoder (a
/// listener waits for its first bytes anyway; silence would only delay
/// the music).
const FIRST_WAIT: Duration = Duration::from_secs(2);
/// How often the processes' CPU time is read.
const CPU_EVERY: Duration = Duration::from_secs(1);
/// The least time between two decoders' starts: a broadcaster seeking
/// without pause costs at most four process starts a second.
const RESTART_EVERY: Duration = Duration::from_millis(250);

/// The running decoder and where it stands on the stream's timeline.
struct Decoding {
    track: String,
    /// The track's position at stream sample `since`.
    from_ms: u64,
    since: u64,
    proc: Proc,
    pcm: ChildStdout,
    /// Bytes of its output owed to silence sent in their place.
    debt: u64,
    /// It has written all it will.
    ended: bool,
}

impl Decoding {
    /// Where the track is at stream sample `at`.
    fn position_at(&self, at: u64) -> u64 {
        self.from_ms + at.saturating_sub(self.since) * 1000 / RATE
    }
}

/// What a station's stream task needs.
pub(crate) struct Feed {
    pub station: Arc<Station>,
    pub media: Arc<Library>,
    pub encoder: Proc,
    pub pcm_in: ChildStdin,
    pub lead: Duration,
    pub marks: Arc<Marks>,
    pub cpu: CpuCounter,
    pub tasks: TaskTracker,
    pub stop: CancellationToken,
}

/// The feed's moving parts.
struct Run {
    feed: Feed,
    decoding: Option<Decoding>,
    /// A track that could not be decoded, not tried again until the
    /// station moves on from it.
    failed: Option<String>,
    title: Arc<Title>,
    /// When the last decoder started.
    started: Option<Instant>,
}

impl Feed {
    /// Feeds the encoder until the station goes offline (then the
    /// encoder's input is closed, so it writes its last frames and the
    /// stream ends) or `stop` (the last listener left, or shutdown).
    pub(crate) async fn run(self) {
        let name = self.station.name.clone();
        let mut run = Run {
            feed: self,
            decoding: None,
            failed: None,
            title: Arc::new(Title::none()),
            started: None,
        };
        let offline = run.feed_until_done(&name).await;
        let Run { feed, decoding, .. } = run;
        if let Some(d) = decoding {
            d.proc.finish(&feed.cpu).await;
        }
        // Closing its input lets the encoder flush what it holds.
        drop(feed.pcm_in);
        if offline {
            tracing::info!(station = %name, "stream ended: the station went offline");
            feed.encoder
                .finish_within(Duration::from_secs(2), &feed.cpu)
                .await;
        } else {
            feed.encoder.finish(&feed.cpu).await;
        }
    }
}

impl Run {
    /// True when the station went offline, false on `stop` or a failed
    /// encoder.
    async fn feed_until_done(&mut self, name: &StationName) -> bool {
        let started = Instant::now();
        let start_ms = protocol::now_ms();
        let mut written = 0u64;
        let mut buf = vec![0u8; (BLOCK * FRAME_BYTES) as usize];
        let mut sampled = Instant::now();
        loop {
            let due = started.elapsed() + self.feed.lead;
            let target = due.as_micros() as u64 * RATE / 1_000_000;
            while written < target {
                let at_ms = start_ms.saturating_add((written * 1000 / RATE) as i64);
                let want = follow::want(&self.feed.station.view(), at_ms);
                if want == Want::End {
                    return true;
                }
                self.follow(want, written, name);
                let n = (target - written).min(BLOCK);
                let bytes = &mut buf[..(n * FRAME_BYTES) as usize];
                // Until the audio is due, less a margin.
                let ahead = Duration::from_micros(written * 1_000_000 / RATE)
                    .saturating_sub(started.elapsed());
                let mut wait = ahead.saturating_sub(MARGIN);
                if written == 0 {
                    wait = wait.max(FIRST_WAIT);
                }
                let stop = self.feed.stop.clone();
                tokio::select! {
                    _ = stop.cancelled() => return false,
                    () = self.fill(bytes, wait) => {}
                }
                tokio::select! {
                    _ = stop.cancelled() => return false,
                    r = self.feed.pcm_in.write_all(bytes) => if let Err(e) = r {
                        tracing::warn!(station = %name, error = %e, "the stream's encoder failed");
                        return false;
                    }
                }
                written += n;
            }
            if sampled.elapsed() >= CPU_EVERY {
                sampled = Instant::now();
                self.feed.encoder.sample(&self.feed.cpu);
                if let Some(d) = &mut self.decoding {
                    d.proc.sample(&self.feed.cpu);
                }
            }
            tokio::select! {
                _ = self.feed.stop.cancelled() => return false,
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Starts, keeps or stops the decoder for what the station wants at
    /// stream sample `at`, and marks a new title where its audio starts.
    fn follow(&mut self, want: Want, at: u64, name: &StationName) {
        let play = match want {
            Want::Play(play) => play,
            Want::Paused(play) => {
                self.retitle(&play, at);
                self.stop_decoding();
                return;
            }
            Want::Silence | Want::End => {
                self.stop_decoding();
                return;
            }
        };
        self.retitle(&play, at);
        if let Some(d) = &self.decoding {
            if follow::keeps((&d.track, d.position_at(at)), &play) {
                return;
            }
        }
        if self.started.is_some_and(|t| t.elapsed() < RESTART_EVERY) {
            // Asked again at the next block, with the station's newest view.
            return;
        }
        self.stop_decoding();
        if self.failed.as_deref() == Some(play.track.as_str()) {
            return;
        }
        self.started = Some(Instant::now());
        match self.start_decoding(&play, at) {
            Ok(d) => {
                self.failed = None;
                self.decoding = Some(d);
            }
            Err(e) => {
                tracing::warn!(station = %name, track = %play.track, error = %e,
                    "the stream cannot decode this track; it carries silence instead");
                self.failed = Some(play.track);
            }
        }
    }

    fn start_decoding(&self, play: &Play, at: u64) -> std::io::Result<Decoding> {
        let index = self.feed.media.index();
        let Some(track) = index.get(&play.track) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the library has no such track",
            ));
        };
        let input = track.decodable();
        let (proc, pcm) = engine::decoder(
            &input,
            play.position_ms,
            play.gain_db,
            &play.track,
            &self.feed.tasks,
        )?;
        Ok(Decoding {
            track: play.track.clone(),
            from_ms: play.position_ms,
            since: at,
            proc,
            pcm,
            debt: 0,
            ended: false,
        })
    }

    /// Ends the decoder, in the background (it is killed and reaped).
    fn stop_decoding(&mut self) {
        if let Some(d) = self.decoding.take() {
            let cpu = self.feed.cpu.clone();
            self.feed
                .tasks
                .spawn(async move { d.proc.finish(&cpu).await });
        }
    }

    /// A new title at stream sample `at` when `play`'s differs.
    fn retitle(&mut self, play: &Play, at: u64) {
        let title = Title::new(play.artist.as_deref(), play.title.as_deref(), &play.track);
        if title.text != self.title.text {
            self.title = Arc::new(title);
            self.feed.marks.mark(at, self.title.clone());
        }
    }

    /// Fills `bytes` with the decoder's PCM, waiting for it at most
    /// `wait`; silence for what it has not given by then (owed by it), or
    /// once it has ended, or without one.
    async fn fill(&mut self, bytes: &mut [u8], wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut filled = 0;
        if let Some(d) = self.decoding.as_mut().filter(|d| !d.ended) {
            while d.debt > 0 {
                let n = (d.debt as usize).min(bytes.len());
                match tokio::time::timeout_at(deadline, d.pcm.read(&mut bytes[..n])).await {
                    Ok(Ok(0) | Err(_)) => d.ended = true,
                    Ok(Ok(k)) => d.debt -= k as u64,
                    Err(_) => {}
                }
                if d.ended || Instant::now() >= deadline {
                    break;
                }
            }
            while d.debt == 0 && !d.ended && filled < bytes.len() {
                match tokio::time::timeout_at(deadline, d.pcm.read(&mut bytes[filled..])).await {
                    Ok(Ok(0) | Err(_)) => d.ended = true,
                    Ok(Ok(k)) => filled += k,
                    Err(_) => break,
                }
            }
            if !d.ended {
                d.debt += (bytes.len() - filled) as u64;
            }
        }
        bytes[filled..].fill(0);
    }
}
