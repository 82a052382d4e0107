//! `radio broadcast`: run a station from a shell.
//!
//! The station's playback state lives here, in a [`Player`]; every command
//! (or playlist step) becomes an `update` asking for an `ack`, and the
//! acknowledged `seq` is printed. While playing, a heartbeat goes out every
//! `--heartbeat-interval`. A lost connection is retried with backoff and the
//! station resumed with its `resume_token`, then the current state re-sent.
//! stdin's end, `stop` and Ctrl-C all stop the station and exit 0.
//!
//! This file is the connection and its session loop; the command language
//! is in `commands`, the M3U playlist in `playlist`, the playback state in
//! `player`.

mod commands;
mod player;
mod playlist;

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

pub use commands::{Command, HELP, parse_command};
pub use player::Player;
use playlist::load_playlist;
pub use playlist::{Entry, parse_m3u};

use crate::cli::BroadcastArgs;
use crate::client::{self, Backoff, ClockOffset, Ws};
use crate::protocol::{
    self, ClientMessage, ErrorCode, Heartbeat, ServerMessage, StationName, Update,
};

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

    /// One connection: claims the station, re-sends the current state, then
    /// serves input, the playlist, heartbeats and the server until it ends.
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
                    if let Some(end) = self.on_line(&mut ws, line, &mut heartbeat).await? {
                        return Ok(end);
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
                _ = ping.tick() => send_ping(&mut ws).await?,
                frame = client::next_message(&mut ws) => {
                    if let Some(end) = self.on_frame(frame)? {
                        return Ok(end);
                    }
                }
            }
        }
    }

    /// Acts on a line of input; `None` is the end of input. Gives how the
    /// session ends, if this ends it.
    async fn on_line(
        &mut self,
        ws: &mut Ws,
        line: Option<String>,
        heartbeat: &mut Interval,
    ) -> anyhow::Result<Option<End>> {
        let Some(line) = line else {
            // End of input: the script is over.
            self.stop(ws).await;
            return Ok(Some(End::Done));
        };
        match parse_command(&line) {
            Ok(Some(Command::Stop)) => {
                self.stop(ws).await;
                return Ok(Some(End::Done));
            }
            Ok(Some(Command::Help)) => eprintln!("{HELP}"),
            Ok(Some(cmd)) => match self.player.apply(cmd) {
                Ok(()) => {
                    self.send_update(ws).await?;
                    heartbeat.reset();
                }
                Err(e) => eprintln!("radio: {e}"),
            },
            Ok(None) => {}
            Err(e) => eprintln!("radio: {e:#}"),
        }
        Ok(None)
    }

    /// Acts on what came from the server, or on the connection failing.
    fn on_frame(
        &mut self,
        frame: anyhow::Result<Option<ServerMessage>>,
    ) -> anyhow::Result<Option<End>> {
        match frame {
            Ok(Some(msg)) => self.on_message(msg),
            Ok(None) => Ok(Some(End::Lost(None))),
            Err(e) => {
                tracing::debug!(error = %e, "connection failed");
                Ok(Some(End::Lost(None)))
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
            title: None,
            artist: None,
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

/// A ping, whose `pong` measures the clock offset.
async fn send_ping(ws: &mut Ws) -> anyhow::Result<()> {
    client::send(
        ws,
        &ClientMessage::Ping {
            id: None,
            client_time_ms: Some(protocol::now_ms()),
        },
    )
    .await
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
