//! One WebSocket connection: one task that owns its socket.
//!
//! The task `select!`s over shutdown, its station's newest view, frames in,
//! and the keepalive tick, then writes whatever that produced before it waits
//! again. There is no second task per socket and no mutex around
//! per-connection state, so nothing can outlive or deadlock anything else
//! (the old system's send/receive task pair and its `tuned_broadcaster`
//! mutex). Every write runs under the write timeout, so a client that stops
//! reading costs at most the newest station view plus the frames of one
//! iteration, and is closed (1008) when the timeout passes. Every error a
//! client causes is answered with an `error` frame or a close code, and every
//! failure is logged inside this connection's span.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::protocol::{
    self, ClientMessage, Heartbeat, PROTOCOL_VERSION, RequestType, ServerMessage, StationName,
    SyncCause, Update,
};
use crate::server::backend::any::AnyOwned;
use crate::server::backend::{Backend as _, OwnedStation as _};
use crate::server::ratelimit::{RateLimiter, Verdict};
use crate::server::refusal::Refusal;
use crate::server::shared::Shared;
use crate::server::station::{Playback, Tuned};

/// Upper bound on [`run`]'s future in a test build, pinned by a test: it
/// measured 1,296 bytes both before and after the backends became a trait
/// (2026-12-02); the bound leaves room for a field, not for a future.
#[cfg(test)]
const CONNECTION_TASK_BYTES: usize = 1_400;

/// Most stations one connection may broadcast at once.
pub const MAX_OWNED_STATIONS: usize = 16;

/// Why a connection ends.
#[derive(Debug)]
enum Exit {
    /// The peer closed, or the socket failed.
    Closed,
    /// The server is shutting down.
    Shutdown,
    /// The client accepted no bytes for the write timeout.
    SlowClient,
    /// The client answered no ping for the keepalive timeout.
    KeepaliveTimeout,
    /// The client kept flooding past the rate limit.
    Flood,
    /// A message over `--max-message-bytes`.
    TooBig,
}

/// What woke the connection.
enum Event {
    Shutdown,
    Station,
    Frame(Option<Result<Message, tungstenite::Error>>),
    Keepalive,
}

/// A listener's subscription and what it has been sent so far.
struct Listening {
    tuned: Tuned,
    /// Highest `seq` sent; a view with no newer state sends nothing.
    last_seq: u64,
    /// Whether the listener was last told the station is live.
    live: bool,
}

struct Conn {
    shared: Arc<Shared>,
    id: u64,
    ws: WebSocketStream<TcpStream>,
    /// Frames to write before waiting again.
    out: Vec<Message>,
    owned: Vec<AnyOwned>,
    tuned: Option<Listening>,
    limiter: RateLimiter,
    last_seen: Instant,
    /// A ping arrived; tungstenite's queued pong goes out with the next flush.
    pong_pending: bool,
}

/// Serves one upgraded WebSocket until it closes.
pub async fn run(ws: WebSocketStream<TcpStream>, shared: Arc<Shared>, id: u64) {
    let limiter = RateLimiter::new(shared.conn.rate_limit);
    let mut conn = Conn {
        shared,
        id,
        ws,
        out: Vec::new(),
        owned: Vec::new(),
        tuned: None,
        limiter,
        last_seen: Instant::now(),
        pong_pending: false,
    };
    let exit = conn.serve().await;
    // Boxed: the goodbye's future is large and runs once, at the end; left
    // inline it would size every connection's task for its whole life
    // (measured when it was boxed: 2,184 -> 1,272 bytes per task; the test
    // `the_connection_task_stays_small` pins the size now).
    Box::pin(conn.finish(exit)).await;
}

async fn station_changed(tuned: &mut Option<Listening>) {
    match tuned {
        // The sender lives in the station the guard keeps alive, so this
        // only errs if that invariant breaks; then wait for other events.
        Some(l) => {
            if l.tuned.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

impl Conn {
    async fn serve(&mut self) -> Exit {
        self.send(&ServerMessage::Welcome {
            protocol: PROTOCOL_VERSION,
            session_id: protocol::random_token(8),
            server_time_ms: protocol::now_ms(),
        });
        let period = self.shared.conn.keepalive_interval;
        let mut keepalive = tokio::time::interval_at(Instant::now() + period, period);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Registered once: a `cancelled()` made afresh in every iteration
        // would take the token's lock twice per wake-up, on every connection.
        let mut shutdown = std::pin::pin!(self.shared.shutdown.clone().cancelled_owned());
        loop {
            if !self.out.is_empty() || self.pong_pending {
                self.pong_pending = false;
                if let Err(exit) = self.flush().await {
                    return exit;
                }
            }
            let event = tokio::select! {
                biased;
                _ = &mut shutdown => Event::Shutdown,
                _ = station_changed(&mut self.tuned) => Event::Station,
                frame = self.ws.next() => Event::Frame(frame),
                _ = keepalive.tick() => Event::Keepalive,
            };
            let step = match event {
                Event::Shutdown => Err(Exit::Shutdown),
                Event::Station => {
                    self.on_station_change();
                    Ok(())
                }
                Event::Frame(frame) => match self.on_frame(frame) {
                    // Boxed, so the Redis round trip's state is not part of
                    // every connection's task.
                    Ok(Some(request)) => {
                        Box::pin(self.on_deferred(*request)).await;
                        Ok(())
                    }
                    Ok(None) => Ok(()),
                    Err(exit) => Err(exit),
                },
                Event::Keepalive => self.on_keepalive(),
            };
            if let Err(exit) = step {
                return exit;
            }
        }
    }

    /// Queues a frame for this iteration's write.
    fn send(&mut self, msg: &ServerMessage) {
        if let ServerMessage::Error { code, .. } = msg {
            self.shared.metrics.error(*code);
        }
        self.out.push(Message::Text(protocol::encode(msg)));
    }

    /// Answers a refused request with its `error` frame; `request` is the
    /// request's type, `None` for frames refused before they are read
    /// (binary, over the rate).
    fn refuse(&mut self, refusal: Refusal, request: Option<RequestType>) {
        let code = refusal.code();
        let message = refusal.to_string();
        tracing::debug!(%code, %message, request = request.map(RequestType::as_str), "request refused");
        self.send(&ServerMessage::Error {
            code,
            message,
            request_type: request.map(|r| r.as_str().to_owned()),
        });
    }

    /// Writes the queued frames, giving up after the write timeout.
    async fn flush(&mut self) -> Result<(), Exit> {
        let ws = &mut self.ws;
        // Drained in place: the queue keeps its small capacity, so a delivery
        // allocates nothing.
        let frames = &mut self.out;
        let write = async move {
            for frame in frames.drain(..) {
                ws.feed(frame).await?;
            }
            ws.flush().await
        };
        let mut write = std::pin::pin!(write);
        // Most writes complete at once; only a write that waits arms a timer
        // (boxed, so idle connections do not carry one).
        let result = match write.as_mut().now_or_never() {
            Some(r) => r,
            None => {
                match Box::pin(tokio::time::timeout(self.shared.conn.write_timeout, write)).await {
                    Ok(r) => r,
                    Err(_) => return Err(Exit::SlowClient),
                }
            }
        };
        result.map_err(|e| {
            tracing::debug!(error = %e, "write failed");
            Exit::Closed
        })
    }

    fn on_keepalive(&mut self) -> Result<(), Exit> {
        if self.last_seen.elapsed() > self.shared.conn.keepalive_timeout {
            return Err(Exit::KeepaliveTimeout);
        }
        self.out.push(Message::Ping(Default::default()));
        Ok(())
    }

    /// Handles a frame; returns a cluster request that must still wait on Redis.
    fn on_frame(
        &mut self,
        frame: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<Option<Box<ClientMessage>>, Exit> {
        let msg = match frame {
            None => return Err(Exit::Closed),
            Some(Ok(msg)) => msg,
            Some(Err(tungstenite::Error::Capacity(e))) => {
                tracing::info!(error = %e, "message over the size limit");
                return Err(Exit::TooBig);
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                return Err(Exit::Closed);
            }
        };
        self.last_seen = Instant::now();
        match msg {
            Message::Text(text) => {
                self.rate_check()?;
                let started = std::time::Instant::now();
                let (request_type, deferred) = self.on_text(text.as_str());
                if deferred.is_none() {
                    self.handled(request_type, started);
                }
                return Ok(deferred);
            }
            Message::Binary(_) => {
                self.rate_check()?;
                self.shared.metrics.inbound_invalid.inc();
                self.refuse(Refusal::Binary, None);
            }
            // tungstenite queues the pong; the next flush sends it.
            Message::Ping(_) => self.pong_pending = true,
            Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(_) => return Err(Exit::Closed),
        }
        Ok(None)
    }

    fn rate_check(&mut self) -> Result<(), Exit> {
        match self.limiter.check() {
            Verdict::Allow => Ok(()),
            Verdict::Disconnect => Err(Exit::Flood),
            Verdict::Refuse => {
                self.refuse(Refusal::RateLimited(self.shared.conn.rate_limit), None);
                Ok(())
            }
        }
    }

    /// Records how long a request took.
    fn handled(&self, request_type: &str, started: std::time::Instant) {
        let took = started.elapsed();
        self.shared.metrics.handling_seconds.observe(took);
        if took > Duration::from_millis(100) {
            tracing::warn!(request = request_type, ?took, "slow message handling");
        }
    }

    /// A cluster request: it waits on Redis (at most its timeout).
    async fn on_deferred(&mut self, request: ClientMessage) {
        let started = std::time::Instant::now();
        let ty = request.type_name();
        self.on_request(request).await;
        self.handled(ty, started);
    }

    /// Handles one text frame; returns its request type for logging, and
    /// the request itself when it must wait on the cluster's Redis.
    fn on_text(&mut self, text: &str) -> (&'static str, Option<Box<ClientMessage>>) {
        let msg = match protocol::decode_request(text) {
            Ok(msg) => msg,
            Err(e) => {
                self.shared.metrics.inbound_invalid.inc();
                self.shared.metrics.error(e.code);
                tracing::debug!(code = %e.code, message = %e.message, "bad request");
                self.out
                    .push(Message::Text(protocol::encode(&e.to_message())));
                return ("invalid", None);
            }
        };
        let ty = msg.type_name();
        self.shared.metrics.inbound(msg.request_type());
        let at_once = self.shared.backend.answers_at_once()
            || matches!(msg, ClientMessage::Ping { .. } | ClientMessage::TuneOut);
        if at_once {
            // A single node answers every request at its first poll (a
            // cluster node its pings and tune-outs); polling it here keeps its
            // state on this stack frame rather than in the connection's task,
            // and allocates nothing.
            if self.on_request(msg).now_or_never().is_none() {
                tracing::error!(
                    request = ty,
                    "a single-node request did not complete at once"
                );
            }
            (ty, None)
        } else {
            (ty, Some(Box::new(msg)))
        }
    }

    /// Answers one decoded request.
    async fn on_request(&mut self, msg: ClientMessage) {
        let ty = msg.request_type();
        match msg {
            ClientMessage::Ping { id, client_time_ms } => self.send(&ServerMessage::Pong {
                id,
                client_time_ms,
                server_time_ms: protocol::now_ms(),
            }),
            ClientMessage::StartBroadcasting {
                station,
                resume_token,
                key,
            } => self.start(station, resume_token, key).await,
            ClientMessage::StopBroadcasting { station } => self.stop(station).await,
            ClientMessage::Update(u) => self.update(u).await,
            ClientMessage::Heartbeat(h) => self.heartbeat(h).await,
            ClientMessage::TuneIn { station } => self.tune_in(station).await,
            ClientMessage::TuneOut => {
                self.tuned = None;
                self.send(&ServerMessage::TunedOut);
            }
            ClientMessage::ListStations => match self.shared.backend.list().await {
                Ok(stations) => self.send(&ServerMessage::Stations { stations }),
                Err(refusal) => self.refuse(refusal, Some(ty)),
            },
        }
    }

    async fn start(
        &mut self,
        station: StationName,
        resume_token: Option<String>,
        key: Option<String>,
    ) {
        const REQ: Option<RequestType> = Some(RequestType::StartBroadcasting);
        if let Some(required) = &self.shared.conn.broadcast_key {
            if key.as_deref() != Some(required.as_str()) {
                let why = match key {
                    Some(_) => Refusal::WrongKey,
                    None => Refusal::KeyRequired,
                };
                return self.refuse(why, REQ);
            }
        }
        if let Some(owned) = self.owned.iter().find(|o| *o.name() == station) {
            let resume_token = owned.token().to_owned();
            return self.send(&ServerMessage::Broadcasting {
                station,
                resume_token,
            });
        }
        if self.owned.len() >= MAX_OWNED_STATIONS {
            return self.refuse(Refusal::TooManyStations(MAX_OWNED_STATIONS), REQ);
        }
        let claimed = self
            .shared
            .backend
            .claim(self.id, &station, resume_token.as_deref())
            .await;
        match claimed {
            Ok(owned) => {
                tracing::info!(%station, "broadcasting");
                let resume_token = owned.token().to_owned();
                self.owned.push(owned);
                self.send(&ServerMessage::Broadcasting {
                    station,
                    resume_token,
                });
            }
            Err(refusal) => self.refuse(refusal, REQ),
        }
    }

    /// The index of an owned station, or the refusal that explains why not.
    async fn owned_index(&mut self, station: &StationName, request: RequestType) -> Option<usize> {
        if let Some(i) = self.owned.iter().position(|o| o.name() == station) {
            return Some(i);
        }
        let refusal = if self.shared.backend.is_live(station).await {
            Refusal::NotOwner(station.clone())
        } else {
            Refusal::NotLive(station.clone())
        };
        self.refuse(refusal, Some(request));
        None
    }

    async fn stop(&mut self, station: StationName) {
        const REQ: RequestType = RequestType::StopBroadcasting;
        if let Some(i) = self.owned_index(&station, REQ).await {
            match self.owned[i].stop().await {
                Ok(()) => {
                    self.owned.swap_remove(i);
                    tracing::info!(%station, "stopped broadcasting");
                    self.send(&ServerMessage::Stopped { station });
                }
                Err(refusal) => self.refused(i, refusal, REQ),
            }
        }
    }

    /// A backend refused an owner's request: say so, and forget a station
    /// that was taken over (cluster mode).
    fn refused(&mut self, i: usize, refusal: Refusal, request: RequestType) {
        if matches!(refusal, Refusal::TakenOver(_)) {
            self.owned.swap_remove(i);
        }
        self.refuse(refusal, Some(request));
    }

    async fn update(&mut self, u: Update) {
        const REQ: RequestType = RequestType::Update;
        let Some(i) = self.owned_index(&u.station, REQ).await else {
            return;
        };
        // The library's word on the track, filled here, where the update is
        // stamped: once per update, never per listener, on any backend.
        let index = self.shared.media.index();
        let known = index.get(&u.track);
        let playback = Playback {
            position_ms: carried_position(u.position_ms, u.playing, u.at_server_ms),
            playing: u.playing,
            duration_ms: u.duration_ms.or_else(|| known.and_then(|t| t.duration_ms)),
            title: known.map(|t| t.title.clone()).or(u.title),
            artist: match known {
                Some(t) => t.artist.clone(),
                None => u.artist,
            },
            track: u.track,
        };
        drop(index);
        match self.owned[i].update(playback).await {
            Ok(seq) if u.ack => self.send(&ServerMessage::Ack {
                station: u.station,
                seq,
            }),
            Ok(_) => {}
            Err(refusal) => self.refused(i, refusal, REQ),
        }
    }

    async fn heartbeat(&mut self, h: Heartbeat) {
        const REQ: RequestType = RequestType::Heartbeat;
        let Some(i) = self.owned_index(&h.station, REQ).await else {
            return;
        };
        let playing = h
            .playing
            .or_else(|| self.owned[i].current().map(|s| s.playing))
            .unwrap_or(false);
        let position = carried_position(h.position_ms, playing, h.at_server_ms);
        match self.owned[i].heartbeat(position, h.playing).await {
            Ok(seq) if h.ack => self.send(&ServerMessage::Ack {
                station: h.station,
                seq,
            }),
            Ok(_) => {}
            Err(refusal) => self.refused(i, refusal, REQ),
        }
    }

    async fn tune_in(&mut self, station: StationName) {
        // Drop the old subscription first so re-tuning to the same station
        // counts one listener, not two.
        self.tuned = None;
        let mut tuned = match self.shared.backend.tune_in(&station).await {
            Ok(tuned) => tuned,
            Err(refusal) => return self.refuse(refusal, Some(RequestType::TuneIn)),
        };
        let view = tuned.rx.borrow_and_update().clone();
        self.send(&ServerMessage::Tuned {
            station,
            live: view.live,
        });
        let mut last_seq = 0;
        if let Some(state) = &view.state {
            let now = protocol::now_ms();
            let mut sync = state.sync.clone();
            sync.position_ms = sync.position_at(now);
            sync.server_time_ms = now;
            sync.cause = SyncCause::TuneIn;
            last_seq = sync.seq;
            self.shared.metrics.syncs_sent.inc();
            self.send(&ServerMessage::Sync(sync));
        }
        self.tuned = Some(Listening {
            tuned,
            last_seq,
            live: view.live,
        });
    }

    /// The tuned station changed: send what this listener has not seen.
    fn on_station_change(&mut self) {
        let Some(l) = self.tuned.as_mut() else {
            return;
        };
        let view = l.tuned.rx.borrow_and_update().clone();
        let station = l.tuned.station.name.clone();
        let mut notice = None;
        if view.live != l.live {
            l.live = view.live;
            notice = Some(if view.live {
                ServerMessage::BroadcasterOnline { station }
            } else {
                ServerMessage::BroadcasterOffline {
                    station,
                    reason: view
                        .offline_reason
                        .unwrap_or(protocol::OfflineReason::Disconnected),
                }
            });
        }
        let mut frame = None;
        if let Some(state) = &view.state {
            if state.sync.seq > l.last_seq {
                l.last_seq = state.sync.seq;
                frame = Some(state.frame.clone());
            }
        }
        if let Some(notice) = notice {
            self.send(&notice);
        }
        if let Some(frame) = frame {
            self.shared.metrics.syncs_sent.inc();
            self.out.push(Message::Text(frame));
        }
    }

    /// Says goodbye in the way `exit` calls for; bounded by the write timeout.
    async fn finish(mut self, exit: Exit) {
        let metrics = &self.shared.metrics;
        let close = match exit {
            Exit::Closed => None,
            Exit::Shutdown => {
                // Spread reconnects so a restart is not a thundering herd.
                let reconnect_after_ms = 1_000 + fastrand::u64(0..4_000);
                self.out.push(Message::Text(protocol::encode(
                    &ServerMessage::ServerShutdown { reconnect_after_ms },
                )));
                Some((CloseCode::Away, "server shutting down"))
            }
            Exit::SlowClient => {
                metrics.slow_client_disconnects.inc();
                tracing::info!("closing a client that accepted no bytes for the write timeout");
                Some((CloseCode::Policy, "write timeout"))
            }
            Exit::KeepaliveTimeout => {
                metrics.keepalive_timeouts.inc();
                tracing::info!("closing a client that answered no ping");
                Some((CloseCode::Policy, "keepalive timeout"))
            }
            Exit::Flood => {
                metrics.rate_limit_disconnects.inc();
                tracing::info!("closing a client that kept flooding past the rate limit");
                Some((CloseCode::Policy, "rate limit exceeded"))
            }
            Exit::TooBig => Some((CloseCode::Size, "message too big")),
        };
        // Release stations and subscriptions before the goodbye, which may
        // wait on a slow socket.
        self.owned.clear();
        self.tuned = None;
        let Some((code, reason)) = close else { return };
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let ws = &mut self.ws;
        let frames = std::mem::take(&mut self.out);
        let bye = async move {
            for f in frames {
                ws.feed(f).await?;
            }
            ws.close(Some(frame)).await
        };
        // A stalled client gets no more of our time.
        let limit = match exit {
            Exit::SlowClient | Exit::KeepaliveTimeout => Duration::from_millis(100),
            _ => self.shared.conn.write_timeout.min(Duration::from_secs(2)),
        };
        if let Ok(Err(e)) = tokio::time::timeout(limit, bye).await {
            tracing::debug!(error = %e, "close failed");
        }
    }
}

/// The position at the moment the server stamps it: carried forward from the
/// broadcaster's `at_server_ms` when that is within the allowed skew.
fn carried_position(position_ms: u64, playing: bool, at_server_ms: Option<i64>) -> u64 {
    match at_server_ms {
        Some(at) if playing => {
            let delta = protocol::now_ms() - at;
            if delta.abs() <= protocol::MAX_AT_SERVER_SKEW_MS {
                protocol::advance(position_ms, delta)
            } else {
                position_ms
            }
        }
        _ => position_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection's task embeds this future for its whole life, so
    /// its size is memory per connection (bench/RESULTS.md). Boxing the
    /// goodbye and the cluster's requests is what keeps it small; this
    /// catches a change that grows it by accident.
    #[test]
    fn the_connection_task_stays_small() {
        /// The size of what `f` returns, without calling it.
        fn returned<A, B, C, R>(_f: fn(A, B, C) -> R) -> usize {
            std::mem::size_of::<R>()
        }
        let size = returned(run as fn(_, _, _) -> _);
        eprintln!("connection task: {size} bytes");
        assert!(
            size <= CONNECTION_TASK_BYTES,
            "connection task is {size} bytes"
        );
    }

    #[test]
    fn position_carried_only_within_skew() {
        let now = protocol::now_ms();
        let p = carried_position(1_000, true, Some(now - 200));
        assert!((1_200..1_300).contains(&p), "{p}");
        assert_eq!(carried_position(1_000, true, Some(now - 60_000)), 1_000);
        assert_eq!(carried_position(1_000, false, Some(now - 200)), 1_000);
        assert_eq!(carried_position(1_000, true, None), 1_000);
    }
}
