//! `radio broadcast`: run a station from a shell.
//!
//! At start (and after each reconnect) it reads the server's library
//! (`GET /api/library`), so what a person types resolves to one library
//! track (`library`); the station's order, `next` and what follows a
//! track's end are in `queue`. The playback state lives in a [`Player`];
//! every command (or playlist step) becomes an `update` asking for an `ack`,
//! and the acknowledged `seq` is printed (`output`). While playing, a
//! heartbeat goes out every `--heartbeat-interval`. A lost connection is
//! retried with backoff and the station resumed with its `resume_token`,
//! then the current state re-sent. `stop`, the end of stdin (without
//! `--playlist`) and Ctrl-C stop the station; the exit status is 1 when a
//! script's line was refused (`console`: a person at a terminal gets a
//! hint and a prompt instead).
//!
//! This file is the connection and its session loop; the command language
//! is in `commands`, the M3U playlist in `playlist`, the playback state in
//! `player`.

pub(crate) mod commands;
mod console;
mod library;
mod output;
mod player;
mod playlist;
mod queue;
mod skip;

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

use commands::{Command, HELP, parse_command};
use console::Console;
use library::FetchError;
use output::Sent;
use player::Player;
use queue::{Order, Queue};

use crate::cli::BroadcastArgs;

use crate::client::http::Endpoint;
use crate::client::nodes::Nodes;
use crate::client::{self, Backoff, ClockOffset, Ws};
use crate::protocol::{
    self, ClientMessage, ErrorCode, Heartbeat, ServerMessage, StationName, Update,
};

/// How a connection ended.
/// How long the server may take to accept or refuse the station.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);

enum End {
    /// Stopped on purpose.
    Done,
    /// Lost: reconnect after this long (the server may say how long).
    Lost(Option<Duration>),
}

struct Broadcaster {
    args: BroadcastArgs,
    quit: tokio_util::sync::CancellationToken,
    nodes: Nodes,
    endpoint: Endpoint,
    station: StationName,
    player: Player,
    queue: Queue,
    /// Commands; `None` once stdin ended with a playlist still playing.
    stdin: Option<mpsc::Receiver<String>>,
    token: Option<String>,
    clock: ClockOffset,
    pending: VecDeque<Sent>,
    /// The newest `seq` the server acknowledged.
    last_seq: Option<u64>,
    /// Who types: the prompt, and the refused lines.
    console: Console,
    /// The state changed on the server's word: send it.
    resend: bool,
}

pub(crate) async fn run(mut args: BroadcastArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.key_file {
        args.key = Some(crate::cli::read_key_file(path, "--key-file")?);
    }
    let station = StationName::new(&args.client.station)
        .map_err(|why| anyhow::anyhow!("invalid --station: {why}"))?;
    let nodes = Nodes::new(&args.client.url)?;
    let endpoint = Endpoint::of_ws_url(nodes.current())?;
    let library = library::at_start(&endpoint, args.free_tracks).await?;
    let order = match &args.playlist {
        Some(path) => Order::Playlist(playlist::order(path, library.as_ref(), args.free_tracks)?),
        None => Order::Library,
    };
    let mut queue = Queue::new(library, order, args.free_tracks);
    let mut player = Player::default();
    if let Some(first) = queue.start() {
        player.load(first, 0, true);
    }
    let console = Console::new(args.json);
    let mut b = Broadcaster {
        args,
        quit: client::quit_signal(),
        nodes,
        endpoint,
        station,
        player,
        queue,
        stdin: Some(console::spawn_stdin_reader()),
        token: None,
        clock: ClockOffset::default(),
        pending: VecDeque::new(),
        last_seq: None,
        console,
        resend: false,
    };
    b.run().await
}

impl Broadcaster {
    async fn run(&mut self) -> anyhow::Result<ExitCode> {
        let mut backoff = Backoff::default();
        let mut first = true;
        loop {
            let ws = match client::connect(self.nodes.current()).await {
                Ok((ws, _)) => ws,
                Err(e) => {
                    let (delay, why) = self.nodes.after_failed_connect(&e, &mut backoff)?;
                    eprintln!("radio: {why}");
                    if self.pause(delay).await {
                        return Ok(self.exit_code());
                    }
                    continue;
                }
            };
            self.nodes.reached();
            if !first {
                // The library (and the media) of the node it is on now.
                self.endpoint = Endpoint::of_ws_url(self.nodes.current())?;
                self.refresh_library().await;
            }
            first = false;
            let end = self.session(ws, &mut backoff).await;
            // What follows (a reconnect's messages, an error) starts a line.
            self.console.erase();
            let end = match end {
                Err(e) if client::is_connection_error(&e) => {
                    tracing::debug!(error = %e, "connection failed");
                    End::Lost(None)
                }
                end => end?,
            };
            match end {
                End::Done => return Ok(self.exit_code()),
                End::Lost(after) => {
                    let delay = after.unwrap_or_else(|| backoff.next_delay());
                    let to = self.nodes.after_lost().map(|n| format!(" to {n}"));
                    let to = to.unwrap_or_default();
                    eprintln!("radio: connection lost; reconnecting{to} in {delay:.1?}");
                    if self.pause(delay).await {
                        return Ok(self.exit_code());
                    }
                }
            }
        }
    }

    /// 1 when a script's line was refused, so its mistakes fail its caller.
    fn exit_code(&self) -> ExitCode {
        self.console.exit_code()
    }

    /// Reads the library again after a reconnect (the server may have
    /// restarted with another); keeps the old one if that fails.
    async fn refresh_library(&mut self) {
        match library::fetch(&self.endpoint).await {
            Ok(lib) => self.queue.set_library(lib),
            Err(FetchError::Unreachable(e)) => {
                tracing::debug!(error = %e, "cannot read the library again");
            }
            Err(FetchError::NoLibrary(why)) => {
                tracing::debug!(why, "cannot read the library again");
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
                        self.nodes.current()
                    );
                    self.token = Some(resume_token);
                    self.console.greet();
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
    /// serves input, track ends, heartbeats and the server until it ends.
    /// The backoff starts again only once the station is accepted, so a
    /// server that connects but refuses (`unavailable`) is not hammered.
    async fn session(&mut self, mut ws: Ws, backoff: &mut Backoff) -> anyhow::Result<End> {
        self.pending.clear();
        // A server that never answers is left, and Ctrl-C is heard meanwhile.
        let quit = self.quit.clone();
        let claimed = tokio::select! {
            claimed = tokio::time::timeout(CLAIM_TIMEOUT, self.claim(&mut ws)) => claimed,
            () = quit.cancelled() => return Ok(End::Done),
        };
        match claimed {
            Ok(claimed) => {
                if !claimed? {
                    return Ok(End::Lost(None));
                }
            }
            Err(_) => {
                eprintln!(
                    "radio: the server did not answer start_broadcasting within {CLAIM_TIMEOUT:?}"
                );
                return Ok(End::Lost(None));
            }
        }
        backoff.reset();
        // Re-send the current state after a reconnect (or the playlist's first).
        if self.player.track.is_some() {
            self.send_update(&mut ws).await?;
        }
        let mut heartbeat = tokio::time::interval(self.args.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        heartbeat.reset();
        let mut ping = tokio::time::interval(Duration::from_secs(5));
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut heard = tokio::time::Instant::now();
        loop {
            let track_end = self.player.remaining();
            if self.stdin.is_some() {
                self.console.prompt();
            }
            tokio::select! {
                _ = self.quit.cancelled() => {
                    self.stop(&mut ws).await;
                    return Ok(End::Done);
                }
                line = next_line(&mut self.stdin) => {
                    if let Some(end) = self.on_line(&mut ws, line, &mut heartbeat).await? {
                        return Ok(end);
                    }
                }
                _ = sleep_opt(track_end) => {
                    self.track_ended();
                    self.send_update(&mut ws).await?;
                    heartbeat.reset();
                }
                _ = heartbeat.tick(), if self.player.playing => {
                    self.send_heartbeat(&mut ws).await?;
                }
                _ = ping.tick() => {
                    // Pinged every 5 s, a live server answers: silence is a
                    // dead connection (a half-open TCP one shows no error).
                    if heard.elapsed() > client::SILENT_FOR {
                        self.console.say(&format!("the server has said nothing for {:?}", client::SILENT_FOR));
                        return Ok(End::Lost(None));
                    }
                    send_ping(&mut ws).await?;
                }
                frame = client::next_message(&mut ws) => {
                    heard = tokio::time::Instant::now();
                    if let Some(end) = self.on_frame(frame)? {
                        return Ok(end);
                    }
                    if std::mem::take(&mut self.resend) {
                        self.send_update(&mut ws).await?;
                        heartbeat.reset();
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
        self.console.typed();
        let Some(line) = line else {
            // A playlist plays on without stdin; a script is over.
            self.stdin = None;
            if self.args.playlist.is_some() {
                return Ok(None);
            }
            self.stop(ws).await;
            return Ok(Some(End::Done));
        };
        let cmd = match parse_command(&line) {
            Ok(Some(cmd)) => cmd,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.refuse(&format!("{e:#}"));
                return Ok(None);
            }
        };
        match cmd {
            Command::Stop => {
                self.stop(ws).await;
                return Ok(Some(End::Done));
            }
            Command::Help => eprintln!("{HELP}"),
            Command::Search(words) => self.search(&words),
            Command::Now => self.now(),
            cmd => match self.change(cmd) {
                Ok(()) => {
                    self.send_update(ws).await?;
                    heartbeat.reset();
                }
                Err(e) => self.refuse(&e),
            },
        }
        Ok(None)
    }

    /// A refused line: said on stderr, and counted (see `console`). The
    /// station plays on as it did.
    fn refuse(&mut self, why: &str) {
        self.console.refuse(why);
    }

    /// Applies a command that changes what plays.
    fn change(&mut self, cmd: Command) -> Result<(), String> {
        let p = &mut self.player;
        match cmd {
            Command::Play {
                query: Some(q),
                position_ms,
            } => {
                let choice = self.queue.choose(&q, None)?;
                let at = position_ms.unwrap_or(0);
                if let Some(end) = choice.duration_ms.filter(|end| at >= *end) {
                    return Err(format!(
                        "{q:?} is only {} long; play it from earlier",
                        client::clock(end)
                    ));
                }
                p.load(choice, at, true);
            }
            Command::Play { query: None, .. } => p.resume().map_err(|e| e.to_string())?,
            Command::Track { query, duration_ms } => {
                let choice = self.queue.choose(&query, duration_ms)?;
                let playing = p.playing;
                p.load(choice, 0, playing);
            }
            Command::Next | Command::Prev => {
                let choice = self.queue.step(matches!(cmd, Command::Next))?;
                p.load(choice, 0, true);
            }
            Command::Pause => p.pause().map_err(|e| e.to_string())?,
            Command::Seek(ms) => p.seek(ms).map_err(|e| e.to_string())?,
            Command::Stop | Command::Help | Command::Search(_) | Command::Now => {}
        }
        Ok(())
    }

    /// The playing track reached its end: the next one plays from 0, or
    /// with `--stop-at-end` (or nothing to follow) the station pauses there.
    fn track_ended(&mut self) {
        let next = if self.args.stop_at_end {
            None
        } else {
            let next = self.queue.after_end();
            if next.is_none() {
                self.console
                    .say("the track ended and nothing follows it; paused at its end");
            }
            next
        };
        match next {
            Some(choice) => self.player.load(choice, 0, true),
            None => self.player.hold_at_end(),
        }
    }

    fn search(&mut self, words: &str) {
        let Some(lib) = self.queue.library() else {
            return self.refuse("no library to search: the server's could not be read");
        };
        let found = lib.search(words);
        for line in output::search(lib, words, &found, self.args.json) {
            self.emit(&line);
        }
    }

    fn now(&self) {
        let line = match self.player.track.clone() {
            Some(c) => self
                .sent(c.track, self.player.position_ms(), "now")
                .now(self.last_seq, self.args.json),
            None => output::nothing_yet(self.station.as_str(), self.args.json),
        };
        self.emit(&line);
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
            ServerMessage::Ack { seq, .. } => self.acked(seq),
            ServerMessage::Pong {
                client_time_ms: Some(sent),
                server_time_ms,
                ..
            } => self.clock.record(sent, server_time_ms, protocol::now_ms()),
            msg @ ServerMessage::TrackFailed { .. } => self.track_failed(msg),
            ServerMessage::ServerShutdown { reconnect_after_ms } => {
                self.console.say("the server is shutting down");
                return Ok(Some(End::Lost(Some(client::reconnect_after(
                    reconnect_after_ms,
                )))));
            }
            ServerMessage::Error { code, message, .. } => match code {
                ErrorCode::StationTaken | ErrorCode::Unauthorized | ErrorCode::InvalidStation => {
                    bail!("{}", explain(code, &message, &self.station));
                }
                // Lost the station (cluster lease): claim it again.
                ErrorCode::NotOwner | ErrorCode::NotLive => {
                    self.console.say(&format!(
                        "the server says: {}; reclaiming the station",
                        client::printable(&message)
                    ));
                    return Ok(Some(End::Lost(Some(Duration::from_millis(100)))));
                }
                _ => {
                    self.pending.pop_front();
                    self.refuse(&format!("the server refused a message ({code}): {message}"));
                }
            },
            _ => {}
        }
        Ok(None)
    }

    /// The server acknowledged the oldest pending state.
    fn acked(&mut self, seq: u64) {
        self.last_seq = Some(seq);
        if let Some(mut sent) = self.pending.pop_front() {
            sent.seq = Some(seq);
            if let Some(line) = sent.line(self.args.json) {
                self.emit(&line);
            }
        }
    }

    /// A state about to be sent, waiting for its `ack`.
    fn sent(&self, track: String, position_ms: u64, cause: &'static str) -> Sent {
        let known = self.queue.known(&track);
        let (title, artist) = match known {
            Some(t) => (Some(t.title.clone()), t.artist.clone()),
            None => (
                self.player.track.as_ref().and_then(|c| c.title.clone()),
                None,
            ),
        };
        Sent {
            seq: None,
            station: self.station.to_string(),
            track,
            title,
            artist,
            position_ms,
            playing: self.player.playing,
            duration_ms: self.player.duration_ms(),
            cause,
        }
    }

    fn at_server_ms(&self) -> Option<i64> {
        (self.clock.samples() > 0).then(|| self.clock.server_now_ms())
    }

    async fn send_update(&mut self, ws: &mut Ws) -> anyhow::Result<()> {
        let Some(choice) = self.player.track.clone() else {
            return Ok(());
        };
        let position_ms = self.player.position_ms();
        let update = Update {
            station: self.station.clone(),
            track: choice.track.clone(),
            position_ms,
            playing: self.player.playing,
            duration_ms: choice.duration_ms,
            title: choice.title,
            artist: None,
            next: self.queue.next_id(self.args.stop_at_end),
            at_server_ms: self.at_server_ms(),
            ack: true,
        };
        self.pending
            .push_back(self.sent(choice.track, position_ms, "update"));
        client::send(ws, &ClientMessage::Update(update)).await
    }

    async fn send_heartbeat(&mut self, ws: &mut Ws) -> anyhow::Result<()> {
        let Some(choice) = &self.player.track else {
            return Ok(());
        };
        let position_ms = self.player.position_ms();
        self.pending
            .push_back(self.sent(choice.track.clone(), position_ms, "heartbeat"));
        client::send(
            ws,
            &ClientMessage::Heartbeat(Heartbeat {
                station: self.station.clone(),
                position_ms,
                playing: Some(self.player.playing),
                next: self.queue.next_id(self.args.stop_at_end),
                at_server_ms: self.at_server_ms(),
                ack: true,
            }),
        )
        .await
    }

    /// Prints a line; a closed stdout does not stop the station.
    fn emit(&self, line: &str) {
        self.console.erase();
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
                    ServerMessage::Ack { seq, .. } => self.acked(seq),
                    _ => {}
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if confirmed {
            self.console
                .say(&format!("stopped station {}", self.station));
        } else {
            self.console.say(
                "the server did not confirm the stop; it frees the station after its grace period",
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

/// The next line of stdin; `None` at its end, and never once it ended.
async fn next_line(stdin: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match stdin {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// A server error as a sentence that says what to do.
pub(crate) fn explain(code: ErrorCode, message: &str, station: &StationName) -> String {
    match code {
        // The server's sentence says why (live, or waiting to be resumed);
        // this adds what to do.
        ErrorCode::StationTaken => format!(
            "{}; pick another name with --station, or wait until it stops",
            client::printable(message)
        ),
        ErrorCode::Unauthorized => format!(
            "the server refused the broadcast key ({message}). Pass the right one with --key, \
             --key-file or RADIO_BROADCAST_KEY."
        ),
        ErrorCode::InvalidStation => format!(
            "the server refused the station name {station} ({message}). Use 1-64 of A-Z a-z 0-9 . _ -"
        ),
        ErrorCode::Unavailable => {
            // The server's message says what to do (try again shortly).
            format!("the server cannot take the station right now: {message}")
        }
        other => format!("the server refused: {message} ({other})"),
    }
}
