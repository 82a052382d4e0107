//! One WebSocket connection: one task that owns its socket.
//!
//! The task `select!`s over shutdown, a wake-up from its station's fan-out,
//! frames in, and the keepalive tick, then writes whatever that produced
//! before it waits again. There is no second task per socket and no mutex
//! around per-connection state, so nothing can outlive or deadlock anything
//! else (the old system's send/receive task pair and its `tuned_broadcaster`
//! mutex). Every write runs under the write timeout, so a client that stops
//! reading costs at most the newest station view plus the frames of one
//! iteration, and is closed (1008) when the timeout passes. Every error a
//! client causes is answered with an `error` frame or a close code, and every
//! failure is logged inside this connection's span.
//!
//! A listener's states are written by its station's fan-out
//! ([`crate::server::station::fanout`]) straight to the socket; this task is woken
//! only when the fan-out could not write (the socket would block, a write
//! was cut short, or this task was writing), and then catches up with the
//! newest state itself. It holds its [`Outlet`] from the moment it queues a
//! frame until tungstenite has written everything, so the two writers'
//! frames never interleave (the rule is in [`crate::server::outlet`]).

mod goodbye;
mod keepalive;
mod requests;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::protocol::{self, ClientMessage, PROTOCOL_VERSION, RequestType, ServerMessage};
use crate::server::backend::Backend as _;
use crate::server::claims::Broadcast;
use crate::server::metrics::Disconnect;
use crate::server::outlet::{self, ConnIo, Outlet};
use crate::server::ratelimit::{RateLimiter, Verdict};
use crate::server::refusal::Refusal;
use crate::server::shared::Shared;
use crate::server::station::Tuned;

/// Upper bound on [`run`]'s future in a test build, pinned by a test: it
/// measured 1,296 bytes before the fan-out and 920 since its
/// state is built before the future (it held both the state and the
/// arguments it was built from); the bound leaves room for a field, not
/// for a future.
#[cfg(test)]
const CONNECTION_TASK_BYTES: usize = 1_000;

/// Most stations one connection may broadcast at once.
pub(crate) const MAX_OWNED_STATIONS: usize = 16;

/// Wrong broadcast keys one connection may send in a minute; one more
/// closes it (1008).
pub(crate) const MAX_WRONG_KEYS: u32 = 5;

/// What woke the connection.
enum Event {
    Shutdown,
    Station,
    Frame(Option<Result<Message, tungstenite::Error>>),
    Keepalive,
}

struct Conn {
    shared: Arc<Shared>,
    id: u64,
    ws: WebSocketStream<ConnIo>,
    /// The socket under `ws`, shared with the station's fan-out.
    outlet: Arc<Outlet>,
    /// Frames to write before waiting again.
    out: Vec<Message>,
    owned: Vec<Broadcast>,
    tuned: Option<Tuned>,
    /// This task holds its outlet: the loop writes (and gives it back)
    /// before it waits again.
    holding: bool,
    /// The fan-out handed over the rest of a frame it could not finish.
    handed_off: bool,
    /// A frame is half on the wire and its rest was lost (its write failed
    /// or timed out): nothing more may be written, not even a close frame,
    /// which the client would read as the torn frame's payload.
    torn: bool,
    limiter: RateLimiter,
    /// When the peer last sent a request, or a pong echoing our last ping.
    last_heard: Instant,
    /// The payload of the last ping we sent (0: none yet): only a pong
    /// that echoes it shows that the peer reads what it is sent.
    ping: u64,
    /// When the peer was last found to have acknowledged the states
    /// written to it (`on_keepalive`); its last sign of life is the later
    /// of the two.
    last_acked: Instant,
    /// The newest `seq` written to this socket at the last keepalive check.
    seq_at_check: u64,
    /// Wrong broadcast keys in the current minute: (since, count). Boxed:
    /// most connections never send a key.
    wrong_keys: Option<Box<(Instant, u32)>>,
    /// The client's address (whom a trusted proxy forwards for): what its
    /// claims count against.
    client: IpAddr,
    /// The `list_stations` rate (`--list-rate`). Boxed, made at the first
    /// listing: many connections never ask for one.
    lists: Option<Box<RateLimiter>>,
}

/// Serves one upgraded WebSocket until it closes.
///
/// The connection's state is built before the returned future, so the
/// future holds it once (not also the arguments it was built from).
pub(crate) fn run(
    ws: WebSocketStream<ConnIo>,
    shared: Arc<Shared>,
    id: u64,
    client: IpAddr,
) -> impl std::future::Future<Output = ()> + Send {
    let limiter = RateLimiter::new(shared.conn.rate_limit);
    let outlet = ws.get_ref().outlet().clone();
    let mut conn = Conn {
        shared,
        id,
        ws,
        outlet,
        out: Vec::new(),
        owned: Vec::new(),
        tuned: None,
        holding: false,
        handed_off: false,
        torn: false,
        limiter,
        last_heard: Instant::now(),
        ping: 0,
        last_acked: Instant::now(),
        seq_at_check: 0,
        wrong_keys: None,
        client,
        lists: None,
    };
    async move {
        let exit = conn.serve().await;
        // Boxed: the goodbye's future is large and runs once, at the end;
        // left inline it would size every connection's task for its whole
        // life (measured when it was boxed: 2,184 -> 1,272 bytes per task;
        // the test `the_connection_task_stays_small` pins the size now).
        Box::pin(conn.finish(exit)).await;
    }
}

impl Conn {
    async fn serve(&mut self) -> Disconnect {
        self.send(&ServerMessage::Welcome {
            protocol: PROTOCOL_VERSION,
            session_id: protocol::random_token(8),
            server_time_ms: protocol::now_ms(),
        });
        let period = self.shared.conn.keepalive_interval;
        let first = keepalive::first_ping(self.shared.started, Instant::now(), period);
        let mut keepalive = tokio::time::interval_at(first, period);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Registered once: a `cancelled()` made afresh in every iteration
        // would take the token's lock twice per wake-up, on every connection.
        let mut shutdown = std::pin::pin!(self.shared.shutdown.clone().cancelled_owned());
        loop {
            if self.holding {
                if let Err(exit) = self.flush().await {
                    return exit;
                }
            }
            let event = tokio::select! {
                biased;
                _ = &mut shutdown => Event::Shutdown,
                _ = self.outlet.missed() => Event::Station,
                frame = self.ws.next() => Event::Frame(frame),
                _ = keepalive.tick() => Event::Keepalive,
            };
            let step = match event {
                Event::Shutdown => Err(Disconnect::Shutdown),
                // The fan-out could not write here: catch up (in `flush`).
                Event::Station => {
                    self.hold();
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
            if self
                .wrong_keys
                .as_ref()
                .is_some_and(|w| w.1 > MAX_WRONG_KEYS)
            {
                // The refusal that tipped it is sent with the close.
                return Disconnect::KeyLockout;
            }
        }
    }

    /// Takes the outlet (if this task does not hold it yet) for this
    /// iteration's write; the fan-out skips it until `flush` gives it back.
    fn hold(&mut self) {
        if !self.holding {
            self.handed_off |= self.outlet.take();
            self.holding = true;
        }
    }

    /// Queues a frame for this iteration's write.
    fn push(&mut self, frame: Message) {
        self.hold();
        self.out.push(frame);
    }

    /// Queues a message for this iteration's write.
    fn send(&mut self, msg: &ServerMessage) {
        if let ServerMessage::Error { code, .. } = msg {
            self.shared.metrics.error(*code);
        }
        self.push(Message::Text(protocol::encode(msg)));
    }

    /// Queues what the listener lacks of its station's newest view (the
    /// fan-out could not write it), as the fan-out would have written it
    /// (`Sent::lacks`): a notice if the station went live or offline since
    /// the listener was last told, and the newest `sync`.
    fn catch_up(&mut self) {
        let Some(tuned) = &self.tuned else {
            return;
        };
        let view = tuned.station.view();
        let newest = view.state.as_ref().map(|s| (s.sync.seq, s));
        let Some(lack) = self.outlet.sent().lacks(view.mark(), newest) else {
            return;
        };
        if lack.notice {
            let notice = view.notice(&tuned.station.name);
            self.out.push(Message::Text(protocol::encode(&notice)));
        }
        if let Some(state) = lack.sync {
            self.shared.metrics.syncs_sent.inc();
            self.out.push(Message::Text(state.frame.clone()));
        }
        self.outlet.set_sent(lack.then);
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

    /// Writes the queued frames (and what the fan-out could not), giving up
    /// after the write timeout, then gives the outlet back.
    async fn flush(&mut self) -> Result<(), Disconnect> {
        if std::mem::take(&mut self.handed_off) {
            // Rare, so boxed: it does not size every connection's task.
            Box::pin(self.write_handed_over()).await?;
        }
        self.catch_up();
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
                    Err(_) => return Err(Disconnect::SlowClient),
                }
            }
        };
        result.map_err(|e| {
            tracing::debug!(error = %e, "write failed");
            Disconnect::Closed
        })?;
        self.holding = false;
        self.outlet.give_back();
        Ok(())
    }

    /// Writes the rest of a fan-out frame that was cut short: it is half on
    /// the wire, so it goes before anything else.
    async fn write_handed_over(&mut self) -> Result<(), Disconnect> {
        let Some(rest) = self.outlet.handed_over() else {
            return Ok(());
        };
        let limit = self.shared.conn.write_timeout;
        match tokio::time::timeout(limit, outlet::write_all(&self.outlet, &rest)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "write failed");
                self.torn = true;
                Err(Disconnect::Closed)
            }
            Err(_) => {
                self.torn = true;
                Err(Disconnect::SlowClient)
            }
        }
    }

    /// The keepalive check (`keepalive`): the peer that took the states
    /// written to it since the last check is alive; any other is pinged,
    /// and closed when silent for the keepalive timeout.
    fn on_keepalive(&mut self) -> Result<(), Disconnect> {
        let seq = self.outlet.sent().seq;
        let fresh = std::mem::replace(&mut self.seq_at_check, seq) != seq;
        let timeout = self.shared.conn.keepalive_timeout;
        if fresh
            && self.last_heard.elapsed() < timeout * keepalive::HEARD_WITHIN_TIMEOUTS
            && keepalive::all_acknowledged(self.outlet.stream())
        {
            self.last_acked = Instant::now();
            return Ok(());
        }
        if self.last_heard.max(self.last_acked).elapsed() > timeout {
            return Err(Disconnect::KeepaliveTimeout);
        }
        // Unpredictable, so that no peer can answer it without reading it.
        self.ping = fastrand::u64(1..);
        self.push(Message::Ping(self.ping.to_be_bytes().to_vec().into()));
        Ok(())
    }

    /// Handles a frame; returns a cluster request that must still wait on Redis.
    fn on_frame(
        &mut self,
        frame: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<Option<Box<ClientMessage>>, Disconnect> {
        let msg = match frame {
            None => return Err(Disconnect::Closed),
            Some(Ok(msg)) => msg,
            Some(Err(tungstenite::Error::Capacity(e))) => {
                tracing::debug!(error = %e, "message over the size limit");
                return Err(Disconnect::TooBig);
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                return Err(Disconnect::Closed);
            }
        };
        match msg {
            Message::Text(_) | Message::Binary(_) => self.last_heard = Instant::now(),
            // A pong counts only when it echoes our last ping: pongs are
            // sent unasked too, and one sent unasked proves nothing, so a
            // peer that never reads cannot stay on an idle station with
            // them. Nor do its own pings (their answer may never be read).
            Message::Pong(ref payload)
                if self.ping != 0 && payload[..] == self.ping.to_be_bytes() =>
            {
                self.last_heard = Instant::now();
            }
            _ => {}
        }
        match msg {
            Message::Text(text) => {
                if !self.rate_check()? {
                    return Ok(None);
                }
                let started = std::time::Instant::now();
                let (request_type, deferred) = self.on_text(text.as_str());
                if deferred.is_none() {
                    self.handled(request_type, started);
                }
                return Ok(deferred);
            }
            Message::Binary(_) => {
                if self.rate_check()? {
                    self.shared.metrics.inbound_invalid.inc();
                    self.refuse(Refusal::Binary, None);
                }
            }
            // tungstenite queues the pong; the next flush sends it. Pings
            // and pongs count against the rate limit like any message, but
            // are not answered `rate_limited` (a ping has its answer).
            Message::Ping(_) => {
                if self.limiter.check() == Verdict::Disconnect {
                    return Err(Disconnect::RateLimit);
                }
                self.hold();
            }
            Message::Pong(_) => {
                if self.limiter.check() == Verdict::Disconnect {
                    return Err(Disconnect::RateLimit);
                }
            }
            Message::Frame(_) => {}
            Message::Close(_) => return Err(Disconnect::Closed),
        }
        Ok(None)
    }

    /// Whether a message may be handled: over the rate it is dropped and
    /// answered `rate_limited` (false); far over it, the connection closes.
    fn rate_check(&mut self) -> Result<bool, Disconnect> {
        match self.limiter.check() {
            Verdict::Allow => Ok(true),
            Verdict::Disconnect => Err(Disconnect::RateLimit),
            Verdict::Refuse => {
                self.refuse(Refusal::RateLimited(self.shared.conn.rate_limit), None);
                Ok(false)
            }
        }
    }

    /// Records how long a request took.
    fn handled(&self, request_type: &str, started: std::time::Instant) {
        let took = started.elapsed();
        self.shared.metrics.handling_seconds.observe(took);
        if took > Duration::from_millis(100) {
            tracing::debug!(request = request_type, ?took, "slow message handling");
            self.shared
                .warnings
                .note_with(crate::server::warnings::Reason::SlowHandling, || {
                    format!("{request_type} took {took:?}")
                });
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
                self.push(Message::Text(protocol::encode(&e.to_message())));
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
        fn returned<A, B, C, D, R>(_f: fn(A, B, C, D) -> R) -> usize {
            std::mem::size_of::<R>()
        }
        let size = returned(run as fn(_, _, _, _) -> _);
        eprintln!("connection task: {size} bytes");
        assert!(
            size <= CONNECTION_TASK_BYTES,
            "connection task is {size} bytes"
        );
    }
}
