//! `radio listen`: tune in from a terminal.
//!
//! Keeps a clock-offset estimate from ping/pong, holds the newest `sync`, and
//! shows a live status line: station, track, position now (in server time),
//! playing or paused, clock offset and round trip, age of the last sync, and
//! whether the broadcaster is online. `--json` prints every frame instead.
//! Reconnects and re-tunes on its own; Ctrl-C exits 0.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use tokio::time::MissedTickBehavior;

use crate::cli::ListenArgs;
use crate::client::{self, Backoff, ClockOffset, Ws};
use crate::protocol::{self, ClientMessage, ErrorCode, ServerMessage, StationName, Sync};

/// What the listener knows.
#[derive(Debug, Default)]
struct Status {
    live: Option<bool>,
    sync: Option<Sync>,
    /// Our clock when the last sync arrived.
    received_ms: i64,
    connected: bool,
}

enum End {
    Quit,
    Lost(Option<Duration>),
}

struct Listener {
    args: ListenArgs,
    quit: tokio_util::sync::CancellationToken,
    url: String,
    station: StationName,
    clock: ClockOffset,
    status: Status,
    tty: bool,
    /// The line is a repaint of the same state; print a new one on change.
    last_line: String,
}

pub async fn run(args: ListenArgs) -> anyhow::Result<ExitCode> {
    let station = StationName::new(&args.client.station)
        .map_err(|why| anyhow::anyhow!("invalid --station: {why}"))?;
    let url = client::ws_url(&args.client.url)?;
    let tty = std::io::stdout().is_terminal() && !args.json;
    let mut l = Listener {
        args,
        quit: client::quit_signal(),
        url,
        station,
        clock: ClockOffset::default(),
        status: Status::default(),
        tty,
        last_line: String::new(),
    };
    let mut backoff = Backoff::default();
    let mut first = true;
    loop {
        let ws = match client::connect(&l.url).await {
            Ok((ws, _)) => ws,
            Err(e) if first => bail!("{e:#}\nIs `radio serve` running there? Check --url."),
            Err(e) => {
                let delay = backoff.next_delay();
                l.note(&format!("{e:#}; retrying in {delay:.1?}"));
                if wait_or_quit(&l.quit, delay).await {
                    return Ok(ExitCode::SUCCESS);
                }
                continue;
            }
        };
        first = false;
        backoff.reset();
        l.status.connected = true;
        let end = l.session(ws).await?;
        l.status.connected = false;
        match end {
            End::Quit => {
                if l.tty {
                    if let Err(e) = client::emit("") {
                        tracing::debug!(error = %e, "cannot end the status line");
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            End::Lost(after) => {
                let delay = after.unwrap_or_else(|| backoff.next_delay());
                l.note(&format!("connection lost; reconnecting in {delay:.1?}"));
                if wait_or_quit(&l.quit, delay).await {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
}

/// Sleeps, or returns true early on Ctrl-C.
async fn wait_or_quit(quit: &tokio_util::sync::CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = quit.cancelled() => true,
    }
}

impl Listener {
    async fn session(&mut self, mut ws: Ws) -> anyhow::Result<End> {
        client::send(
            &mut ws,
            &ClientMessage::TuneIn {
                station: self.station.clone(),
            },
        )
        .await?;
        // A quick burst of pings for a good first estimate, then one a second.
        let mut ping = tokio::time::interval(Duration::from_millis(200));
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pings = 0u32;
        let mut repaint = tokio::time::interval(Duration::from_millis(250));
        repaint.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = self.quit.cancelled() => {
                    if let Err(e) = ws.close(None).await {
                        tracing::debug!(error = %e, "close failed");
                    }
                    return Ok(End::Quit);
                }
                _ = ping.tick() => {
                    pings += 1;
                    if pings == 5 {
                        ping = tokio::time::interval_at(
                            tokio::time::Instant::now() + Duration::from_secs(1),
                            Duration::from_secs(1),
                        );
                    }
                    client::send(&mut ws, &ClientMessage::Ping {
                        id: None,
                        client_time_ms: Some(protocol::now_ms()),
                    }).await?;
                }
                _ = repaint.tick(), if self.tty => self.paint(),
                frame = client::next_frame(&mut ws) => {
                    let frame = match frame {
                        Ok(Some(f)) => f,
                        Ok(None) => return Ok(End::Lost(None)),
                        Err(e) => {
                            tracing::debug!(error = %e, "connection failed");
                            return Ok(End::Lost(None));
                        }
                    };
                    // A closed stdout (`| head`) means nobody is listening.
                    if self.args.json && client::emit(&frame.text).is_err() {
                        return Ok(End::Quit);
                    }
                    if let Some(end) = self.on_message(frame.msg)? {
                        return Ok(end);
                    }
                    if !self.args.json && !self.tty {
                        self.paint();
                    }
                }
            }
        }
    }

    fn on_message(&mut self, msg: ServerMessage) -> anyhow::Result<Option<End>> {
        match msg {
            ServerMessage::Pong {
                client_time_ms: Some(sent),
                server_time_ms,
                ..
            } => self.clock.record(sent, server_time_ms, protocol::now_ms()),
            ServerMessage::Tuned { live, .. } => self.status.live = Some(live),
            ServerMessage::BroadcasterOnline { .. } => self.status.live = Some(true),
            ServerMessage::BroadcasterOffline { reason, .. } => {
                self.status.live = Some(false);
                self.status.sync = None;
                self.note(&format!("broadcaster offline ({reason:?})").to_lowercase());
            }
            ServerMessage::Sync(sync) => {
                // A reconnect may replay an older state; never go backwards.
                let newer = self.status.sync.as_ref().is_none_or(|old| {
                    sync.seq > old.seq || sync.cause == protocol::SyncCause::TuneIn
                });
                if newer {
                    self.status.live = Some(true);
                    self.status.sync = Some(sync);
                    self.status.received_ms = protocol::now_ms();
                }
            }
            ServerMessage::ServerShutdown { reconnect_after_ms } => {
                self.note("the server is shutting down");
                return Ok(Some(End::Lost(Some(Duration::from_millis(
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

    /// The status line.
    fn line(&self) -> String {
        let s = &self.status;
        let online = match (s.connected, s.live) {
            (false, _) => "disconnected",
            (true, Some(true)) => "online",
            (true, Some(false)) => "offline",
            (true, None) => "tuning",
        };
        let offset = match (self.clock.offset_ms(), self.clock.rtt_ms()) {
            (Some(o), Some(r)) => format!("offset {o:+.0}ms rtt {r}ms"),
            _ => "offset ?".to_owned(),
        };
        match &s.sync {
            Some(sync) => {
                let now = self.clock.server_now_ms();
                let pos = sync.position_at(now);
                let of = sync
                    .duration_ms
                    .map(|d| format!(" / {}", client::clock(d)))
                    .unwrap_or_default();
                let age = (protocol::now_ms() - s.received_ms).max(0) as f64 / 1000.0;
                format!(
                    "{} [{online}] {} {:?} {}{of} | {offset} | seq {} {age:.1}s ago",
                    self.station,
                    if sync.playing { "▶" } else { "⏸" },
                    sync.track,
                    client::clock(pos),
                    sync.seq,
                )
            }
            None => format!("{} [{online}] nothing playing | {offset}", self.station),
        }
    }

    fn paint(&mut self) {
        if self.args.json {
            return;
        }
        let line = self.line();
        let mut out = std::io::stdout().lock();
        let written = if self.tty {
            write!(out, "\r\x1b[2K{line}").and_then(|()| out.flush())
        } else {
            // Not a terminal: a line per change, without the moving parts.
            let key = self.status.sync.as_ref().map(|s| s.seq);
            let stable = format!("{key:?}{:?}{}", self.status.live, self.status.connected);
            if stable == self.last_line {
                return;
            }
            self.last_line = stable;
            writeln!(out, "{line}")
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "cannot write the status line");
        }
    }

    /// A one-off message, below the status line.
    fn note(&self, text: &str) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
        eprintln!("radio: {text}");
    }
}
