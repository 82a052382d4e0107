//! `radio broadcast`: run a station from a shell.
//!
//! The station's playback state lives here, in a [`Player`]; every command
//! (or playlist step) becomes an `update` asking for an `ack`, and the
//! acknowledged `seq` is printed. While playing, a heartbeat goes out every
//! `--heartbeat-interval`. A lost connection is retried with backoff and the
//! station resumed with its `resume_token`, then the current state re-sent.
//! stdin's end, `stop` and Ctrl-C all stop the station and exit 0.

use std::collections::VecDeque;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::cli::BroadcastArgs;
use crate::client::{self, Backoff, ClockOffset, Ws};
use crate::protocol::{
    self, ClientMessage, ErrorCode, Heartbeat, ServerMessage, StationName, Update,
};

/// The station's playback state, as this broadcaster knows it.
#[derive(Debug, Clone, Default)]
pub struct Player {
    pub track: Option<String>,
    pub duration_ms: Option<u64>,
    pub playing: bool,
    position_ms: u64,
    since: Option<Instant>,
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

    fn set_position(&mut self, position_ms: u64) {
        self.position_ms = position_ms;
        self.since = Some(Instant::now());
    }

    /// Time left in the track while playing, when its duration is known.
    fn remaining(&self) -> Option<Duration> {
        let d = self.duration_ms?;
        self.playing
            .then(|| Duration::from_millis(d.saturating_sub(self.position_ms())))
    }
}

/// A line of input, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Play {
        track: Option<String>,
        position_ms: Option<u64>,
    },
    Pause,
    Seek(u64),
    Track {
        name: String,
        duration_ms: Option<u64>,
    },
    Stop,
    Help,
}

pub const HELP: &str = "commands: play [TRACK] [SECONDS] | pause | seek SECONDS | \
                        track NAME [DURATION_SECONDS] | stop | help";

fn seconds(word: &str, what: &str) -> anyhow::Result<u64> {
    let secs: f64 = word
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .with_context(|| format!("{what} must be a number of seconds, not {word:?}"))?;
    Ok((secs * 1000.0).round() as u64)
}

/// Parses one input line; `Ok(None)` for blank lines and `#` comments.
/// Words may be quoted as in a shell: `track "Side A.mp3" 181`.
pub fn parse_command(line: &str) -> anyhow::Result<Option<Command>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let words = shell_words::split(line).with_context(|| format!("cannot read {line:?}"))?;
    let (cmd, args) = match words.split_first() {
        Some((c, a)) => (c.to_ascii_lowercase(), a),
        None => return Ok(None),
    };
    let too_many = |max: usize| -> anyhow::Result<()> {
        if args.len() > max {
            bail!("{cmd} takes at most {max} arguments; {HELP}");
        }
        Ok(())
    };
    let command = match cmd.as_str() {
        "play" => {
            too_many(2)?;
            Command::Play {
                track: args.first().cloned(),
                position_ms: args
                    .get(1)
                    .map(|w| seconds(w, "the position"))
                    .transpose()?,
            }
        }
        "pause" => {
            too_many(0)?;
            Command::Pause
        }
        "seek" => {
            too_many(1)?;
            let Some(w) = args.first() else {
                bail!("seek needs a position in seconds, like: seek 42");
            };
            Command::Seek(seconds(w, "the position")?)
        }
        "track" => {
            too_many(2)?;
            let Some(name) = args.first() else {
                bail!("track needs a name, like: track song.mp3 180");
            };
            Command::Track {
                name: name.clone(),
                duration_ms: args
                    .get(1)
                    .map(|w| seconds(w, "the duration"))
                    .transpose()?,
            }
        }
        "stop" => Command::Stop,
        "help" | "?" => Command::Help,
        other => bail!("unknown command {other:?}; {HELP}"),
    };
    Ok(Some(command))
}

/// One entry of an extended M3U playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub track: String,
    pub title: Option<String>,
    pub duration_ms: u64,
}

/// Parses an extended M3U playlist. Entries without a positive `#EXTINF`
/// duration cannot be timed and are skipped with a warning.
pub fn parse_m3u(text: &str) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut pending: Option<(Option<u64>, Option<String>)> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim().trim_start_matches('\u{feff}');
        if line.is_empty() {
            continue;
        }
        if let Some(info) = line.strip_prefix("#EXTINF:") {
            let (dur, title) = info.split_once(',').unwrap_or((info, ""));
            // Attributes may follow the duration: `#EXTINF:123 tvg-id="x",Title`.
            let dur = dur.split_whitespace().next().unwrap_or("");
            let secs = dur
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0);
            let title = (!title.trim().is_empty()).then(|| title.trim().to_owned());
            pending = Some((secs.map(|s| (s * 1000.0).round() as u64), title));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        match pending.take() {
            Some((Some(duration_ms), title)) => entries.push(Entry {
                track: line.to_owned(),
                title,
                duration_ms,
            }),
            _ => eprintln!(
                "radio: playlist line {}: {line:?} has no #EXTINF duration; skipping it",
                n + 1
            ),
        }
    }
    if entries.is_empty() {
        bail!("the playlist has no entry with a duration (#EXTINF:SECONDS,TITLE before each path)");
    }
    Ok(entries)
}

/// A state sent with `ack`, waiting for its `seq`.
#[derive(Debug, Clone, Serialize)]
struct Sent {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    station: String,
    track: String,
    position_ms: u64,
    playing: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    cause: &'static str,
}

/// Where commands come from.
enum Source {
    Stdin(mpsc::Receiver<String>),
    Playlist { entries: Vec<Entry>, index: usize },
}

/// How a connection ended.
enum End {
    /// Stopped on purpose: exit 0.
    Done,
    /// Lost: reconnect after this long (the server may say how long).
    Lost(Option<Duration>),
}

struct Broadcaster {
    args: BroadcastArgs,
    quit: tokio_util::sync::CancellationToken,
    url: String,
    station: StationName,
    player: Player,
    source: Source,
    token: Option<String>,
    clock: ClockOffset,
    pending: VecDeque<Sent>,
}

pub async fn run(args: BroadcastArgs) -> anyhow::Result<ExitCode> {
    let station = StationName::new(&args.client.station)
        .map_err(|why| anyhow::anyhow!("invalid --station: {why}"))?;
    let url = client::ws_url(&args.client.url)?;
    let source = match &args.playlist {
        Some(path) => Source::Playlist {
            entries: load_playlist(path)?,
            index: 0,
        },
        None => Source::Stdin(spawn_stdin_reader()),
    };
    let mut b = Broadcaster {
        args,
        quit: client::quit_signal(),
        url,
        station,
        player: Player::default(),
        source,
        token: None,
        clock: ClockOffset::default(),
        pending: VecDeque::new(),
    };
    if let Source::Playlist { entries, .. } = &b.source {
        let first = &entries[0];
        b.player = Player {
            track: Some(first.track.clone()),
            duration_ms: Some(first.duration_ms),
            playing: true,
            ..Player::default()
        };
        b.player.set_position(0);
    }
    b.run().await
}

fn load_playlist(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the playlist {}", path.display()))?;
    parse_m3u(&text).with_context(|| format!("in {}", path.display()))
}

/// Reads stdin on a thread of its own (a blocking read must not hold the
/// runtime open at exit); the channel closes at end of input.
fn spawn_stdin_reader() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if tx.blocking_send(line.clone()).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    eprintln!("radio: cannot read stdin: {e}");
                    return;
                }
            }
        }
    });
    rx
}

impl Broadcaster {
    async fn run(&mut self) -> anyhow::Result<ExitCode> {
        let mut backoff = Backoff::default();
        let mut first = true;
        loop {
            let ws = match client::connect(&self.url).await {
                Ok((ws, _)) => ws,
                Err(e) if first => {
                    bail!("{e:#}\nIs `radio serve` running there? Check --url.");
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    eprintln!("radio: {e:#}; retrying in {delay:.1?}");
                    if self.pause(delay).await {
                        return Ok(ExitCode::SUCCESS);
                    }
                    continue;
                }
            };
            first = false;
            backoff.reset();
            match self.session(ws).await? {
                End::Done => return Ok(ExitCode::SUCCESS),
                End::Lost(after) => {
                    let delay = after.unwrap_or_else(|| backoff.next_delay());
                    eprintln!("radio: connection lost; reconnecting in {delay:.1?}");
                    if self.pause(delay).await {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
        }
    }

    /// Waits before a reconnect; true when Ctrl-C came meanwhile (the
    /// server frees the station after its grace period).
    async fn pause(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = self.quit.cancelled() => {
                eprintln!("radio: quitting while disconnected; the station goes offline after the server's grace period");
                true
            }
        }
    }

    /// Claims the station on a fresh connection; errors that no retry can
    /// fix end the program with a sentence that says what to do.
    async fn claim(&mut self, ws: &mut Ws) -> anyhow::Result<bool> {
        client::send(
            ws,
            &ClientMessage::StartBroadcasting {
                station: self.station.clone(),
                resume_token: self.token.clone(),
                key: self.args.key.clone(),
            },
        )
        .await?;
        loop {
            let Some(frame) = client::next_message(ws).await? else {
                return Ok(false);
            };
            match frame {
                ServerMessage::Broadcasting { resume_token, .. } => {
                    let resumed = self.token.as_deref() == Some(resume_token.as_str());
                    eprintln!(
                        "radio: {} station {} at {}",
                        if resumed { "resumed" } else { "broadcasting" },
                        self.station,
                        self.url
                    );
                    self.token = Some(resume_token);
                    return Ok(true);
                }
                // The cluster's Redis is down: worth retrying, not fatal.
                ServerMessage::Error {
                    code: ErrorCode::Unavailable,
                    message,
                    ..
                } => {
                    eprintln!(
                        "radio: {}",
                        explain(ErrorCode::Unavailable, &message, &self.station)
                    );
                    return Ok(false);
                }
                ServerMessage::Error { code, message, .. } => {
                    bail!("{}", explain(code, &message, &self.station));
                }
                _ => {}
            }
        }
    }

    async fn session(&mut self, mut ws: Ws) -> anyhow::Result<End> {
        self.pending.clear();
        if !self.claim(&mut ws).await? {
            return Ok(End::Lost(None));
        }
        // Re-send the current state after a reconnect (or the playlist's first).
        if self.player.track.is_some() {
            self.send_update(&mut ws).await?;
        }
        let mut heartbeat = tokio::time::interval(self.args.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        heartbeat.reset();
        let mut ping = tokio::time::interval(Duration::from_secs(5));
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let track_end = self.player.remaining();
            let playlist = matches!(self.source, Source::Playlist { .. });
            tokio::select! {
                _ = self.quit.cancelled() => {
                    self.stop(&mut ws).await;
                    return Ok(End::Done);
                }
                line = next_line(&mut self.source) => {
                    let Some(line) = line else {
                        // End of input: the script is over.
                        self.stop(&mut ws).await;
                        return Ok(End::Done);
                    };
                    match parse_command(&line) {
                        Ok(Some(Command::Stop)) => {
                            self.stop(&mut ws).await;
                            return Ok(End::Done);
                        }
                        Ok(Some(Command::Help)) => eprintln!("{HELP}"),
                        Ok(Some(cmd)) => match self.apply(cmd) {
                            Ok(()) => {
                                self.send_update(&mut ws).await?;
                                heartbeat.reset();
                            }
                            Err(e) => eprintln!("radio: {e}"),
                        },
                        Ok(None) => {}
                        Err(e) => eprintln!("radio: {e:#}"),
                    }
                }
                _ = sleep_opt(track_end), if playlist => {
                    self.next_entry();
                    self.send_update(&mut ws).await?;
                    heartbeat.reset();
                }
                _ = heartbeat.tick(), if self.player.playing => {
                    self.send_heartbeat(&mut ws).await?;
                }
                _ = ping.tick() => {
                    client::send(&mut ws, &ClientMessage::Ping {
                        id: None,
                        client_time_ms: Some(protocol::now_ms()),
                    }).await?;
                }
                frame = client::next_message(&mut ws) => {
                    match frame {
                        Ok(Some(msg)) => {
                            if let Some(end) = self.on_message(msg)? {
                                return Ok(end);
                            }
                        }
                        Ok(None) => return Ok(End::Lost(None)),
                        Err(e) => {
                            tracing::debug!(error = %e, "connection failed");
                            return Ok(End::Lost(None));
                        }
                    }
                }
            }
        }
    }

    fn on_message(&mut self, msg: ServerMessage) -> anyhow::Result<Option<End>> {
        match msg {
            ServerMessage::Ack { seq, .. } => {
                if let Some(mut sent) = self.pending.pop_front() {
                    sent.seq = Some(seq);
                    self.print(&sent);
                }
            }
            ServerMessage::Pong {
                client_time_ms: Some(sent),
                server_time_ms,
                ..
            } => self.clock.record(sent, server_time_ms, protocol::now_ms()),
            ServerMessage::ServerShutdown { reconnect_after_ms } => {
                eprintln!("radio: the server is shutting down");
                return Ok(Some(End::Lost(Some(Duration::from_millis(
                    reconnect_after_ms,
                )))));
            }
            ServerMessage::Error { code, message, .. } => match code {
                ErrorCode::StationTaken | ErrorCode::Unauthorized | ErrorCode::InvalidStation => {
                    bail!("{}", explain(code, &message, &self.station));
                }
                // Lost the station (cluster lease): claim it again.
                ErrorCode::NotOwner | ErrorCode::NotLive => {
                    eprintln!("radio: the server says: {message}; reclaiming the station");
                    return Ok(Some(End::Lost(Some(Duration::from_millis(100)))));
                }
                _ => {
                    self.pending.pop_front();
                    eprintln!("radio: the server refused a message ({code}): {message}");
                }
            },
            _ => {}
        }
        Ok(None)
    }

    fn apply(&mut self, cmd: Command) -> anyhow::Result<()> {
        let p = &mut self.player;
        match cmd {
            Command::Play { track, position_ms } => {
                if let Some(track) = track {
                    if p.track.as_deref() != Some(track.as_str()) {
                        p.duration_ms = None;
                    }
                    p.track = Some(track);
                    p.set_position(position_ms.unwrap_or(0));
                } else if p.track.is_none() {
                    bail!("nothing to play yet: use play TRACK");
                } else {
                    let now = p.position_ms();
                    p.set_position(now);
                }
                p.playing = true;
            }
            Command::Pause => {
                if p.track.is_none() {
                    bail!("nothing is playing");
                }
                let now = p.position_ms();
                p.set_position(now);
                p.playing = false;
            }
            Command::Seek(ms) => {
                if p.track.is_none() {
                    bail!("nothing to seek in yet: use play TRACK or track NAME first");
                }
                p.set_position(ms);
            }
            Command::Track { name, duration_ms } => {
                p.track = Some(name);
                p.duration_ms = duration_ms;
                p.set_position(0);
            }
            Command::Stop | Command::Help => {}
        }
        Ok(())
    }

    fn next_entry(&mut self) {
        if let Source::Playlist { entries, index } = &mut self.source {
            *index = (*index + 1) % entries.len();
            let e = &entries[*index];
            self.player.track = Some(e.track.clone());
            self.player.duration_ms = Some(e.duration_ms);
            self.player.playing = true;
            self.player.set_position(0);
        }
    }

    /// A state about to be sent, waiting for its `ack`.
    fn sent(&self, track: String, position_ms: u64, cause: &'static str) -> Sent {
        Sent {
            seq: None,
            station: self.station.to_string(),
            track,
            position_ms,
            playing: self.player.playing,
            duration_ms: self.player.duration_ms,
            cause,
        }
    }

    fn at_server_ms(&self) -> Option<i64> {
        (self.clock.samples() > 0).then(|| self.clock.server_now_ms())
    }

    async fn send_update(&mut self, ws: &mut Ws) -> anyhow::Result<()> {
        let Some(track) = self.player.track.clone() else {
            return Ok(());
        };
        let position_ms = self.player.position_ms();
        let update = Update {
            station: self.station.clone(),
            track: track.clone(),
            position_ms,
            playing: self.player.playing,
            duration_ms: self.player.duration_ms,
            at_server_ms: self.at_server_ms(),
            ack: true,
        };
        self.pending
            .push_back(self.sent(track, position_ms, "update"));
        client::send(ws, &ClientMessage::Update(update)).await
    }

    async fn send_heartbeat(&mut self, ws: &mut Ws) -> anyhow::Result<()> {
        let Some(track) = self.player.track.clone() else {
            return Ok(());
        };
        let position_ms = self.player.position_ms();
        self.pending
            .push_back(self.sent(track, position_ms, "heartbeat"));
        client::send(
            ws,
            &ClientMessage::Heartbeat(Heartbeat {
                station: self.station.clone(),
                position_ms,
                playing: Some(self.player.playing),
                at_server_ms: self.at_server_ms(),
                ack: true,
            }),
        )
        .await
    }

    fn print(&self, sent: &Sent) {
        if self.args.json {
            match serde_json::to_string(sent) {
                Ok(line) => self.emit(&line),
                Err(e) => eprintln!("radio: cannot encode a state: {e}"),
            }
            return;
        }
        if sent.cause == "heartbeat" {
            return;
        }
        let of = sent
            .duration_ms
            .map(|d| format!(" of {}", client::clock(d)))
            .unwrap_or_default();
        self.emit(&format!(
            "seq {}: {} {:?} at {}{of}",
            sent.seq.unwrap_or(0),
            if sent.playing { "playing" } else { "paused" },
            sent.track,
            client::clock(sent.position_ms),
        ));
    }

    /// Prints a line; a closed stdout does not stop the station.
    fn emit(&self, line: &str) {
        if let Err(e) = client::emit(line) {
            tracing::debug!(error = %e, "cannot write to stdout");
        }
    }

    /// Stops the station and waits briefly for the server to confirm.
    async fn stop(&mut self, ws: &mut Ws) {
        let stop = ClientMessage::StopBroadcasting {
            station: self.station.clone(),
        };
        if client::send(ws, &stop).await.is_err() {
            return;
        }
        let confirmed = tokio::time::timeout(Duration::from_secs(3), async {
            while let Ok(Some(msg)) = client::next_message(ws).await {
                match msg {
                    ServerMessage::Stopped { .. } => return true,
                    ServerMessage::Ack { seq, .. } => {
                        if let Some(mut sent) = self.pending.pop_front() {
                            sent.seq = Some(seq);
                            self.print(&sent);
                        }
                    }
                    _ => {}
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if confirmed {
            eprintln!("radio: stopped station {}", self.station);
        } else {
            eprintln!(
                "radio: the server did not confirm the stop; it frees the station after its grace period"
            );
        }
        // Best effort: the server frees everything when the socket closes.
        if let Err(e) = ws.close(None).await {
            tracing::debug!(error = %e, "close failed");
        }
    }
}

async fn next_line(source: &mut Source) -> Option<String> {
    match source {
        Source::Stdin(rx) => rx.recv().await,
        Source::Playlist { .. } => std::future::pending().await,
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// A server error as a sentence that says what to do.
pub fn explain(code: ErrorCode, message: &str, station: &StationName) -> String {
    match code {
        ErrorCode::StationTaken => format!(
            "station {station} is already live from another broadcaster ({message}). \
             Pick another name with --station, or wait until it stops."
        ),
        ErrorCode::Unauthorized => format!(
            "the server refused the broadcast key ({message}). Pass the right one with --key \
             or RADIO_BROADCAST_KEY."
        ),
        ErrorCode::InvalidStation => format!(
            "the server refused the station name {station} ({message}). Use 1-64 of A-Z a-z 0-9 . _ -"
        ),
        ErrorCode::Unavailable => {
            format!("the server cannot take the station right now ({message}). Try again shortly.")
        }
        other => format!("the server refused: {message} ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse_command("play \"Side A.mp3\" 12.5").unwrap(),
            Some(Command::Play {
                track: Some("Side A.mp3".into()),
                position_ms: Some(12_500)
            })
        );
        assert_eq!(
            parse_command("play").unwrap(),
            Some(Command::Play {
                track: None,
                position_ms: None
            })
        );
        assert_eq!(parse_command("PAUSE").unwrap(), Some(Command::Pause));
        assert_eq!(parse_command("seek 3").unwrap(), Some(Command::Seek(3_000)));
        assert_eq!(
            parse_command("track b.ogg 180").unwrap(),
            Some(Command::Track {
                name: "b.ogg".into(),
                duration_ms: Some(180_000)
            })
        );
        assert_eq!(parse_command("  # comment").unwrap(), None);
        assert_eq!(parse_command("").unwrap(), None);
        assert!(parse_command("seek").is_err());
        assert!(parse_command("seek -4").is_err());
        assert!(parse_command("dance").is_err());
        assert!(parse_command("pause now").is_err());
        assert!(parse_command("play \"unterminated").is_err());
    }

    #[test]
    fn parses_m3u() {
        let text = "#EXTM3U\n#EXTINF:181,Artist - One\none.mp3\n\n#EXTINF:-1,Stream\nhttp://x/stream\n#EXTINF:2.5 tvg-id=\"a\",Two\nsub/two.ogg\nbare.mp3\n";
        let e = parse_m3u(text).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].track, "one.mp3");
        assert_eq!(e[0].title.as_deref(), Some("Artist - One"));
        assert_eq!(e[0].duration_ms, 181_000);
        assert_eq!(e[1].track, "sub/two.ogg");
        assert_eq!(e[1].duration_ms, 2_500);
        assert!(parse_m3u("#EXTM3U\nnothing.mp3\n").is_err());
    }

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
