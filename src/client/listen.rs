//! `radio listen`: tune in from a terminal.
//!
//! Keeps a clock-offset estimate from ping/pong, holds the newest `sync`, and
//! shows a live status line: station, `Artist - Title`, position now (in
//! server time), playing or paused, clock offset and round trip, age of the
//! last sync, and whether the broadcaster is online (offline, the position
//! stops). `--json` prints every frame instead. With `--player mpv` it also
//! plays the station through mpv, kept in sync (`mpv`). Reconnects and
//! re-tunes on its own; Ctrl-C exits 0.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use tokio::time::MissedTickBehavior;

use crate::cli::{ListenArgs, PlayerKind};
use crate::client::http::Endpoint;
use crate::client::mpv::follow::{self, Doing, Follow};
use crate::client::mpv::trouble::NoSound;
use crate::client::mpv::urls::MediaUrls;
use crate::client::mpv::{Mpv, News};
use crate::client::nodes::Nodes;
use crate::client::{self, Backoff, ClockOffset, Ws};
use crate::protocol::{self, ClientMessage, ErrorCode, ServerMessage, StationName, SyncState};

/// What the listener knows.
#[derive(Debug, Default)]
struct Status {
    live: Option<bool>,
    sync: Option<SyncState>,
    /// The station went offline at this server time: its position stops.
    frozen_at: Option<i64>,
    /// Our clock when the last sync arrived.
    received_ms: i64,
    connected: bool,
}

impl Status {
    /// The state to play: none while offline.
    fn playable(&self) -> Option<&SyncState> {
        self.sync.as_ref().filter(|_| self.frozen_at.is_none())
    }
}

enum End {
    Quit,
    Lost(Option<Duration>),
}

struct Listener {
    args: ListenArgs,
    quit: tokio_util::sync::CancellationToken,
    nodes: Nodes,
    station: StationName,
    clock: ClockOffset,
    status: Status,
    /// The player (`--player`), following the station.
    player: Option<Follow>,
    tty: bool,
    /// The line is a repaint of the same state; print a new one on change.
    last_line: String,
    /// A track mpv could not play, and why, not yet told to the server
    /// (`cannot_play`, so a station whose every listener fails moves on).
    unreported: Option<(String, Option<String>)>,
}

pub(crate) async fn run(args: ListenArgs) -> anyhow::Result<ExitCode> {
    let station = StationName::new(&args.client.station)
        .map_err(|why| anyhow::anyhow!("invalid --station: {why}"))?;
    let nodes = Nodes::new(&args.client.url)?;
    let tty = std::io::stdout().is_terminal() && !args.json;
    let player = match args.player {
        Some(PlayerKind::Mpv) => Some(Follow::new(
            Mpv::start(&mpv_args(&args)).await?,
            MediaUrls::new(Endpoint::of_ws_url(nodes.current())?),
        )),
        None => None,
    };
    let mut l = Listener {
        args,
        quit: client::quit_signal(),
        nodes,
        station,
        clock: ClockOffset::default(),
        status: Status::default(),
        player,
        tty,
        last_line: String::new(),
        unreported: None,
    };
    let result = l.run().await;
    // Whatever ended it, the player ends with it, reaped.
    if let Some(p) = l.player.take() {
        p.mpv.quit().await;
    }
    result
}

impl Listener {
    async fn run(&mut self) -> anyhow::Result<ExitCode> {
        let mut backoff = Backoff::default();
        loop {
            let ws = match client::connect(self.nodes.current()).await {
                Ok((ws, _)) => ws,
                Err(e) => {
                    let (delay, why) = self.nodes.after_failed_connect(&e, &mut backoff)?;
                    self.note(&why);
                    if self.wait_or_quit(delay).await? {
                        return Ok(ExitCode::SUCCESS);
                    }
                    continue;
                }
            };
            self.nodes.reached();
            if let Some(player) = &mut self.player {
                // Media comes from where the node the listener is on says.
                player
                    .media
                    .set_endpoint(Endpoint::of_ws_url(self.nodes.current())?);
            }
            backoff.reset();
            self.status.connected = true;
            let end = match self.session(ws).await {
                Err(e) if client::is_connection_error(&e) => {
                    tracing::debug!(error = %e, "connection failed");
                    End::Lost(None)
                }
                end => end?,
            };
            self.status.connected = false;
            match end {
                End::Quit => {
                    if self.tty {
                        if let Err(e) = client::emit("") {
                            tracing::debug!(error = %e, "cannot end the status line");
                        }
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                End::Lost(after) => {
                    let delay = after.unwrap_or_else(|| backoff.next_delay());
                    let to = match self.nodes.after_lost() {
                        Some(next) => format!(" to {next}"),
                        None => String::new(),
                    };
                    self.note(&format!("connection lost; reconnecting{to} in {delay:.1?}"));
                    if self.wait_or_quit(delay).await? {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
        }
    }

    /// Sleeps, or returns true early on Ctrl-C; fails if the player exits.
    async fn wait_or_quit(&mut self, d: Duration) -> anyhow::Result<bool> {
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return Ok(false),
                _ = self.quit.cancelled() => return Ok(true),
                news = player_news(&mut self.player) => self.on_player_news(news).await?,
            }
        }
    }

    async fn session(&mut self, mut ws: Ws) -> anyhow::Result<End> {
        client::send(
            &mut ws,
            &ClientMessage::TuneIn {
                station: self.station.clone(),
            },
        )
        .await?;
        let mut ping = PingSchedule::new();
        let mut repaint = tokio::time::interval(Duration::from_millis(250));
        repaint.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut correct = tokio::time::interval(follow::EVERY);
        correct.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut report = tokio::time::interval(Duration::from_secs(1));
        report.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let playing = self.player.is_some();
        let mut heard = tokio::time::Instant::now();
        loop {
            if let Some((track, reason)) = self.unreported.take() {
                client::send(
                    &mut ws,
                    &ClientMessage::CannotPlay {
                        station: self.station.clone(),
                        track,
                        reason,
                    },
                )
                .await?;
            }
            // The parked player plays then.
            let release_at = self.player.as_ref().and_then(Follow::release_at);
            tokio::select! {
                _ = self.quit.cancelled() => {
                    if let Err(e) = ws.close(None).await {
                        tracing::debug!(error = %e, "close failed");
                    }
                    return Ok(End::Quit);
                }
                _ = ping.tick() => {
                    // It pings every second: a live server answers.
                    if heard.elapsed() > client::SILENT_FOR {
                        self.note(&format!("the server has said nothing for {:?}", client::SILENT_FOR));
                        return Ok(End::Lost(None));
                    }
                    client::send(&mut ws, &ClientMessage::Ping {
                        id: None,
                        client_time_ms: Some(protocol::now_ms()),
                    }).await?;
                }
                _ = repaint.tick(), if self.tty => {
                    if self.paint() {
                        return Ok(End::Quit);
                    }
                }
                _ = correct.tick(), if playing => self.correct_player().await?,
                _ = at_or_never(release_at) => self.release_player().await?,
                _ = report.tick(), if playing && self.args.json => self.report_player(),
                news = player_news(&mut self.player) => self.on_player_news(news).await?,
                frame = client::next_frame(&mut ws) => {
                    heard = tokio::time::Instant::now();
                    let frame = match frame {
                        Ok(Some(f)) => f,
                        Ok(None) => return Ok(End::Lost(None)),
                        Err(e) => {
                            tracing::debug!(error = %e, "connection failed");
                            return Ok(End::Lost(None));
                        }
                    };
                    if let Some(end) = self.on_frame(frame).await? {
                        return Ok(end);
                    }
                }
            }
        }
    }

    /// Prints (with `--json`), takes in and shows one frame from the
    /// server; `Some` when the session ends with it.
    async fn on_frame(&mut self, frame: client::Frame) -> anyhow::Result<Option<End>> {
        // Pongs answer our own clock pings: noise, unless asked.
        let shown = self.args.verbose || !matches!(frame.msg, ServerMessage::Pong { .. });
        // A closed stdout (`| head`) means nobody is listening.
        if self.args.json && shown && client::emit(&frame.text).is_err() {
            return Ok(Some(End::Quit));
        }
        let changed = matches!(
            frame.msg,
            ServerMessage::Sync(_)
                | ServerMessage::BroadcasterOffline { .. }
                | ServerMessage::Tuned { live: false, .. }
        );
        if let Some(end) = self.on_message(frame.msg)? {
            return Ok(Some(end));
        }
        if changed {
            self.follow_station().await?;
        }
        if !self.args.json && !self.tty && self.paint() {
            return Ok(Some(End::Quit));
        }
        Ok(None)
    }

    fn on_message(&mut self, msg: ServerMessage) -> anyhow::Result<Option<End>> {
        match msg {
            ServerMessage::Pong {
                client_time_ms: Some(sent),
                server_time_ms,
                ..
            } => self.clock.record(sent, server_time_ms, protocol::now_ms()),
            ServerMessage::Tuned { live, .. } => {
                // A new baseline: whatever came before (a restarted server
                // counts `seq` from 1 again) is forgotten.
                self.status.live = Some(live);
                self.status.sync = None;
                self.status.frozen_at = None;
            }
            ServerMessage::BroadcasterOnline { .. } => self.status.live = Some(true),
            ServerMessage::BroadcasterOffline { reason, .. } => {
                self.status.live = Some(false);
                // The last state stays on show, stopped where it was.
                if self.status.sync.is_some() {
                    self.status.frozen_at = Some(self.clock.server_now_ms());
                }
                self.note(&format!("broadcaster offline ({reason:?})").to_lowercase());
            }
            ServerMessage::Sync(sync) => {
                // Never go backwards within one tuning (see `tuned`).
                let newer = self.status.sync.as_ref().is_none_or(|old| {
                    sync.seq > old.seq || sync.cause == protocol::SyncCause::TuneIn
                });
                if newer {
                    self.status.live = Some(true);
                    self.status.sync = Some(sync);
                    self.status.frozen_at = None;
                    self.status.received_ms = protocol::now_ms();
                }
            }
            ServerMessage::ServerShutdown { reconnect_after_ms } => {
                self.note("the server is shutting down");
                return Ok(Some(End::Lost(Some(client::reconnect_after(
                    reconnect_after_ms,
                )))));
            }
            ServerMessage::Error { code, message, .. } => {
                if code == ErrorCode::InvalidStation {
                    bail!("the server refused the station name: {message}");
                }
                self.note(&format!("the server says ({code}): {message}"));
            }
            _ => {}
        }
        Ok(None)
    }

    /// Tells the player the station's state changed.
    async fn follow_station(&mut self) -> anyhow::Result<()> {
        let offset = self.clock.offset_ms().unwrap_or(0.0);
        let Some(p) = self.player.as_mut() else {
            return Ok(());
        };
        let before = p.doing();
        let result = p.follow(self.status.playable(), offset).await;
        self.player_checked(result).await?;
        self.note_player(before);
        Ok(())
    }

    /// One step of the player's drift loop.
    async fn correct_player(&mut self) -> anyhow::Result<()> {
        let offset = self.clock.offset_ms().unwrap_or(0.0);
        let Some(p) = self.player.as_mut() else {
            return Ok(());
        };
        let before = p.doing();
        let result = p.correct(offset).await;
        self.player_checked(result).await?;
        self.note_player(before);
        Ok(())
    }

    /// The station got where the player waits, parked: play.
    async fn release_player(&mut self) -> anyhow::Result<()> {
        let Some(p) = self.player.as_mut() else {
            return Ok(());
        };
        let before = p.doing();
        let result = p.release().await;
        self.player_checked(result).await?;
        self.note_player(before);
        Ok(())
    }

    async fn on_player_news(&mut self, news: News) -> anyhow::Result<()> {
        let offset = self.clock.offset_ms().unwrap_or(0.0);
        let Some(p) = self.player.as_mut() else {
            return Ok(());
        };
        match news {
            News::Exited(status) => bail!("{}", p.mpv.exit_note(status)),
            News::Event(event) => {
                let before = p.doing();
                let result = p.on_event(&event, offset).await;
                self.player_checked(result).await?;
                self.note_player(before);
                Ok(())
            }
        }
    }

    /// A player request failed: if mpv cannot output sound, that; if mpv
    /// is gone, say how it ended.
    async fn player_checked(&mut self, result: anyhow::Result<()>) -> anyhow::Result<()> {
        let (Err(e), Some(p)) = (result, self.player.as_mut()) else {
            return Ok(());
        };
        if e.is::<NoSound>() {
            return Err(e);
        }
        match tokio::time::timeout(Duration::from_secs(1), p.mpv.exited()).await {
            Ok(status) => bail!("{}", p.mpv.exit_note(status)),
            Err(_) => bail!("lost control of mpv: {e:#}"),
        }
    }

    /// Says when the player cannot play what the station plays, and tells
    /// the server of a track mpv cannot decode (not of one it lacks).
    fn note_player(&mut self, before: Doing) {
        let Some(p) = self.player.as_ref() else {
            return;
        };
        if p.doing() != before {
            if let Some(complaint) = p.complaint() {
                self.note(&complaint);
            }
            self.unreported = p.failed_track();
        }
    }

    fn report_player(&self) {
        if let Some(p) = &self.player {
            let line = serde_json::to_string(&p.report()).unwrap_or_default();
            if let Err(e) = client::emit(&line) {
                tracing::debug!(error = %e, "cannot write the player line");
            }
        }
    }

    /// The status line now.
    fn line(&self) -> String {
        let player = self.player.as_ref().map(|p| (p.doing(), p.drift_ms()));
        status_line(
            &self.station,
            &self.status,
            &self.clock,
            player,
            self.clock.server_now_ms(),
            protocol::now_ms(),
        )
    }

    /// Shows the status line; true when stdout's reader is gone
    /// (`radio listen | head -1`), which ends the session as Ctrl-C does.
    fn paint(&mut self) -> bool {
        if self.args.json {
            return false;
        }
        let line = client::printable(&self.line()).into_owned();
        let mut out = std::io::stdout().lock();
        let written = if self.tty {
            write!(out, "\r\x1b[2K{line}").and_then(|()| out.flush())
        } else {
            // Not a terminal: a line per change, without the moving parts.
            let key = self.status.sync.as_ref().map(|s| s.seq);
            let doing = self.player.as_ref().map(Follow::doing);
            let stable = format!(
                "{key:?}{:?}{}{:?}{doing:?}",
                self.status.live, self.status.connected, self.status.frozen_at
            );
            if stable == self.last_line {
                return false;
            }
            self.last_line = stable;
            writeln!(out, "{line}")
        };
        match written {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => true,
            Err(e) => {
                tracing::debug!(error = %e, "cannot write the status line");
                false
            }
            Ok(()) => false,
        }
    }

    /// A one-off message, below the status line.
    fn note(&self, text: &str) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
        eprintln!("radio: {}", client::printable(text));
    }
}

/// The status line at `server_now` (our clock: `local_now`); `player` is
/// what the player does and its drift.
fn status_line(
    station: &StationName,
    s: &Status,
    clock: &ClockOffset,
    player: Option<(Doing, Option<f64>)>,
    server_now: i64,
    local_now: i64,
) -> String {
    let online = match (s.connected, s.live) {
        (false, _) => "disconnected",
        (true, Some(true)) => "online",
        (true, Some(false)) => "offline",
        (true, None) => "tuning",
    };
    let offset = match (clock.offset_ms(), clock.rtt_ms()) {
        (Some(o), Some(r)) => format!("offset {o:+.0}ms rtt {r}ms"),
        _ => "offset ?".to_owned(),
    };
    let player = match player {
        Some((Doing::Playing, Some(d))) => format!(" | mpv drift {d:+.0}ms"),
        Some((doing, _)) => format!(" | mpv {}", doing.words()),
        None => String::new(),
    };
    let Some(sync) = &s.sync else {
        return format!("{station} [{online}] nothing playing | {offset}{player}");
    };
    let pos = sync.position_at(s.frozen_at.unwrap_or(server_now));
    let of = sync
        .duration_ms
        .map(|d| format!(" / {}", client::clock(d)))
        .unwrap_or_default();
    let age = (local_now - s.received_ms).max(0) as f64 / 1000.0;
    let symbol = match (s.frozen_at, sync.playing) {
        (Some(_), _) => "■",
        (None, true) => "▶",
        (None, false) => "⏸",
    };
    format!(
        "{station} [{online}] {symbol} {} {}{of} | {offset} | seq {} {age:.1}s ago{player}",
        shown(sync),
        client::clock(pos),
        sync.seq,
    )
}

/// What plays, for people: `Artist - Title`, the title alone, or the
/// track as sent when the server names none.
fn shown(sync: &SyncState) -> String {
    match (&sync.title, &sync.artist) {
        (Some(t), Some(a)) => format!("{a} - {t}"),
        (Some(t), None) => t.clone(),
        _ => format!("{:?}", sync.track),
    }
}

/// Sleeps until `at`; never, without one.
async fn at_or_never(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The player's next event or exit; never, without a player.
async fn player_news(player: &mut Option<Follow>) -> News {
    match player {
        Some(p) => p.mpv.news().await,
        None => std::future::pending().await,
    }
}

/// mpv's arguments: with `--ca-cert`, mpv fetches `https://` media trusting
/// that CA, and checks it (mpv checks nothing by default); then the user's
/// `--player-arg`s, which may override ours.
fn mpv_args(args: &ListenArgs) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(ca) = &args.client.ca_cert {
        let ca = std::path::absolute(ca).unwrap_or_else(|_| ca.clone());
        out.push("--tls-verify=yes".to_owned());
        out.push(format!("--tls-ca-file={}", ca.display()));
    }
    out.extend(args.player_args.iter().cloned());
    out
}

/// When to ping for the clock estimate: a quick burst of five, 200 ms apart,
/// for a good first estimate, then one a second.
struct PingSchedule {
    every: tokio::time::Interval,
    sent: u32,
}

impl PingSchedule {
    const BURST: u32 = 5;

    fn new() -> Self {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        PingSchedule { every, sent: 0 }
    }

    /// Waits for the next ping's time (cancel-safe, like `Interval::tick`).
    async fn tick(&mut self) {
        self.every.tick().await;
        self.sent += 1;
        if self.sent == Self::BURST {
            self.every = tokio::time::interval_at(
                tokio::time::Instant::now() + Duration::from_secs(1),
                Duration::from_secs(1),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SyncCause;

    fn status(title: Option<&str>, artist: Option<&str>) -> Status {
        Status {
            live: Some(true),
            sync: Some(SyncState {
                station: StationName::new("s").unwrap(),
                seq: 4,
                track: "a/b.mp3".into(),
                position_ms: 10_000,
                playing: true,
                duration_ms: Some(60_000),
                title: title.map(Into::into),
                artist: artist.map(Into::into),
                gain_db: None,
                next: None,
                server_time_ms: 1_000_000,
                cause: SyncCause::Update,
            }),
            frozen_at: None,
            received_ms: 1_000_000,
            connected: true,
        }
    }

    fn line(s: &Status, server_now: i64) -> String {
        let name = StationName::new("s").unwrap();
        status_line(
            &name,
            s,
            &ClockOffset::default(),
            None,
            server_now,
            server_now,
        )
    }

    #[test]
    fn the_line_names_artist_and_title() {
        let l = line(&status(Some("Song"), Some("Band")), 1_002_000);
        assert!(
            l.starts_with("s [online] ▶ Band - Song 0:12.0 / 1:00.0 |"),
            "{l}"
        );
        let l = line(&status(Some("Song"), None), 1_002_000);
        assert!(l.contains("▶ Song 0:12.0"), "{l}");
        let l = line(&status(None, None), 1_002_000);
        assert!(l.contains("▶ \"a/b.mp3\" 0:12.0"), "{l}");
    }

    #[test]
    fn offline_the_clock_stops() {
        let mut s = status(Some("Song"), Some("Band"));
        s.live = Some(false);
        s.frozen_at = Some(1_003_000);
        let now = line(&s, 1_005_000);
        let later = line(&s, 1_009_000);
        assert!(
            now.starts_with("s [offline] ■ Band - Song 0:13.0 /"),
            "{now}"
        );
        assert!(!now.contains('▶'), "{now}");
        assert_eq!(
            now.split('|').next(),
            later.split('|').next(),
            "no moving clock"
        );
    }
}
