//! The load test's broadcasters, one per station, run by the parent process.
//!
//! Each claims its station and sends one `update` before any listener
//! connects (so every station has a state to tune in to), stays idle but
//! reading (so it answers the server's pings) while the listeners ramp up,
//! then sends an `update` every `--update-interval` (and a `heartbeat` every
//! `--heartbeat-interval`) for `--duration`. Every request asks for an `ack`,
//! so the broadcaster knows the newest `seq` it produced: the state every
//! listener must hold at the end.
//!
//! The simulated track plays from `epoch_server_ms` on, so its true position
//! at server time `t` is `t - epoch_server_ms`. Updates carry that position
//! and `at_server_ms` from the broadcaster's own clock offset, as a real
//! broadcaster would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};

use crate::client::{self, Backoff, ClockOffset, Ws};
use crate::protocol::{self, ClientMessage, Heartbeat, ServerMessage, StationName, Update};

/// With `--reconnect`, a request unanswered this long means the node is
/// gone or frozen: the broadcaster resumes elsewhere (a node whose Redis is
/// away answers `unavailable` well within it).
const ANSWER_LIMIT: Duration = Duration::from_secs(3);

/// The track every simulated broadcaster plays.
const TRACK: &str = "radio-loadtest.ogg";

/// What a broadcaster did during the run.
#[derive(Debug, Default, Clone)]
pub(crate) struct Outcome {
    pub updates_sent: u64,
    pub heartbeats_sent: u64,
    /// The newest `seq` the server acknowledged.
    pub final_seq: u64,
    /// Requests whose `ack` never came.
    pub unacked: u64,
    /// `error` frames received, by code.
    pub errors: BTreeMap<String, u64>,
    /// Why the broadcaster's connection ended early, if it did.
    pub lost: Option<String>,
    /// With `--reconnect`: times it resumed its station after losing its
    /// connection.
    pub resumed: u64,
}

/// Timing of the run phase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub duration: Duration,
    pub update_interval: Duration,
    pub heartbeat_interval: Option<Duration>,
}

/// A connected broadcaster task.
pub(crate) struct Handle {
    start: Option<oneshot::Sender<Instant>>,
    done: Option<oneshot::Receiver<Outcome>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// The newest `seq` acknowledged so far, as it happens.
    pub(crate) newest: Arc<AtomicU64>,
}

impl Handle {
    /// A handle over `task`, which reports as a broadcaster does (also the
    /// observer of a station the generator only listens to).
    pub(crate) fn new(
        start: oneshot::Sender<Instant>,
        done: oneshot::Receiver<Outcome>,
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    ) -> Handle {
        Handle {
            start: Some(start),
            done: Some(done),
            stop: Some(stop),
            task,
            newest: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts the run phase now.
    pub(crate) fn start(&mut self, at: Instant) {
        if let Some(tx) = self.start.take() {
            // A task that already ended reports that through `done`.
            let _ = tx.send(at);
        }
    }

    /// Waits for the run phase to end (all acks in, or given up on).
    pub(crate) async fn outcome(&mut self) -> Outcome {
        match self.done.take() {
            Some(rx) => rx.await.unwrap_or_else(|_| Outcome {
                lost: Some("the broadcaster task ended unexpectedly".into()),
                ..Outcome::default()
            }),
            None => Outcome::default(),
        }
    }

    /// Stops broadcasting (`stop_broadcasting`) and closes the connection.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// Where a broadcaster connects: `urls[node]`; with `reconnect`, a lost
/// connection is made again on the next node and the station resumed.
pub(crate) struct Nodes<'a> {
    pub urls: &'a [String],
    pub node: usize,
    pub reconnect: bool,
}

/// Connects, claims `station` and sends its first update.
pub(crate) async fn connect(
    nodes: Nodes<'_>,
    station: StationName,
    key: Option<String>,
    epoch_server_ms: i64,
    schedule: Schedule,
) -> anyhow::Result<Handle> {
    let (mut ws, _) = client::connect(&nodes.urls[nodes.node]).await?;
    let mut clock = ClockOffset::default();
    for _ in 0..5 {
        client::sample_clock(&mut ws, &mut clock).await?;
    }
    client::send(
        &mut ws,
        &ClientMessage::StartBroadcasting {
            station: station.clone(),
            resume_token: None,
            key: key.clone(),
        },
    )
    .await?;
    let reply = tokio::time::timeout(Duration::from_secs(10), client::next_message(&mut ws))
        .await
        .context("no reply to start_broadcasting within 10s")??;
    let token = match reply {
        Some(ServerMessage::Broadcasting { resume_token, .. }) => resume_token,
        Some(ServerMessage::Error { code, message, .. }) => {
            bail!("cannot broadcast {station}: {code}: {message}")
        }
        other => bail!("unexpected reply to start_broadcasting: {other:?}"),
    };
    let newest = Arc::new(AtomicU64::new(0));
    let mut b = Broadcaster {
        ws,
        station,
        clock,
        epoch_server_ms,
        outcome: Outcome::default(),
        pending: 0,
        urls: nodes.urls.to_vec(),
        node: nodes.node,
        reconnect: nodes.reconnect,
        key,
        token,
        newest: newest.clone(),
        waiting_since: None,
    };
    b.send_update().await?;
    let first = tokio::time::timeout(Duration::from_secs(10), b.wait_acks())
        .await
        .context("the server did not acknowledge the first update within 10s")?;
    first?;
    // The first update is setup, not part of the run's figures.
    b.outcome.updates_sent = 0;
    let (start_tx, start_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(b.run(schedule, start_rx, done_tx, stop_rx));
    let mut handle = Handle::new(start_tx, done_rx, stop_tx, task);
    handle.newest = newest;
    Ok(handle)
}

struct Broadcaster {
    ws: Ws,
    station: StationName,
    clock: ClockOffset,
    epoch_server_ms: i64,
    outcome: Outcome,
    /// Requests sent whose `ack` has not come yet.
    pending: u64,
    urls: Vec<String>,
    /// The node in `urls` it is on.
    node: usize,
    reconnect: bool,
    key: Option<String>,
    /// Resumes the station on any node.
    token: String,
    /// The newest acknowledged `seq`, shared with the [`Handle`].
    newest: Arc<AtomicU64>,
    /// Since when a request has waited for its answer.
    waiting_since: Option<Instant>,
}

impl Broadcaster {
    fn position(&self) -> (u64, i64) {
        let now = self.clock.server_now_ms();
        (u64::try_from(now - self.epoch_server_ms).unwrap_or(0), now)
    }

    async fn send_update(&mut self) -> anyhow::Result<()> {
        let (position_ms, at) = self.position();
        client::send(
            &mut self.ws,
            &ClientMessage::Update(Update {
                station: self.station.clone(),
                track: TRACK.into(),
                position_ms,
                playing: true,
                duration_ms: None,
                title: None,
                artist: None,
                next: None,
                at_server_ms: Some(at),
                ack: true,
            }),
        )
        .await?;
        self.pending += 1;
        self.waiting_since.get_or_insert_with(Instant::now);
        self.outcome.updates_sent += 1;
        Ok(())
    }

    async fn send_heartbeat(&mut self) -> anyhow::Result<()> {
        let (position_ms, at) = self.position();
        client::send(
            &mut self.ws,
            &ClientMessage::Heartbeat(Heartbeat {
                station: self.station.clone(),
                position_ms,
                playing: Some(true),
                next: None,
                at_server_ms: Some(at),
                ack: true,
            }),
        )
        .await?;
        self.pending += 1;
        self.waiting_since.get_or_insert_with(Instant::now);
        self.outcome.heartbeats_sent += 1;
        Ok(())
    }

    /// Handles one frame; `Ok(false)` when the connection closed.
    fn on_message(&mut self, msg: Option<ServerMessage>) -> bool {
        if matches!(
            msg,
            Some(ServerMessage::Ack { .. } | ServerMessage::Error { .. })
        ) {
            // An answer: the next request in line has waited from now.
            self.waiting_since = (self.pending > 1).then(Instant::now);
        }
        match msg {
            Some(ServerMessage::Ack { seq, .. }) => {
                self.pending = self.pending.saturating_sub(1);
                self.outcome.final_seq = self.outcome.final_seq.max(seq);
                self.newest.fetch_max(seq, Ordering::Relaxed);
            }
            Some(ServerMessage::Error { code, .. }) => {
                // A refused update or heartbeat gets no ack.
                self.pending = self.pending.saturating_sub(1);
                *self.outcome.errors.entry(code.to_string()).or_default() += 1;
            }
            Some(_) => {}
            None => return false,
        }
        true
    }

    async fn wait_acks(&mut self) -> anyhow::Result<()> {
        while self.pending > 0 {
            let msg = client::next_message(&mut self.ws).await?;
            if !self.on_message(msg) {
                bail!("the server closed the broadcaster's connection");
            }
        }
        Ok(())
    }

    /// A frame in the run phase; an error when the connection ended.
    fn on_frame(&mut self, msg: anyhow::Result<Option<ServerMessage>>) -> anyhow::Result<bool> {
        let msg = msg?;
        if let Some(ServerMessage::Pong {
            client_time_ms: Some(sent),
            server_time_ms,
            ..
        }) = &msg
        {
            self.clock
                .record(*sent, *server_time_ms, protocol::now_ms());
        }
        if !self.on_message(msg) {
            bail!("the server closed the broadcaster's connection");
        }
        Ok(false)
    }

    /// After a lost connection: the next nodes in turn, with the clients'
    /// backoff, until one gives the station back for its token (or the run
    /// ends). Requests in flight on the lost connection stay unacknowledged.
    async fn resume(&mut self, end: Instant) -> anyhow::Result<()> {
        self.outcome.unacked += std::mem::take(&mut self.pending);
        self.waiting_since = None;
        let mut backoff = Backoff::default();
        loop {
            if Instant::now() >= end {
                bail!("could not resume the station before the end of the run");
            }
            self.node = (self.node + 1) % self.urls.len();
            tokio::time::sleep(backoff.next_delay()).await;
            match tokio::time::timeout(Duration::from_secs(5), self.reclaim()).await {
                Ok(Ok(())) => {
                    self.outcome.resumed += 1;
                    return Ok(());
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "cannot resume yet"),
                Err(_) => tracing::debug!("resuming timed out"),
            }
        }
    }

    /// Connects to the current node and resumes the station with its token.
    async fn reclaim(&mut self) -> anyhow::Result<()> {
        let (ws, _) = client::connect(&self.urls[self.node]).await?;
        self.ws = ws;
        client::send(
            &mut self.ws,
            &ClientMessage::StartBroadcasting {
                station: self.station.clone(),
                resume_token: Some(self.token.clone()),
                key: self.key.clone(),
            },
        )
        .await?;
        loop {
            match client::next_message(&mut self.ws).await? {
                Some(ServerMessage::Broadcasting { resume_token, .. }) => {
                    self.token = resume_token;
                    return Ok(());
                }
                Some(ServerMessage::Error { code, message, .. }) => {
                    bail!("cannot resume {}: {code}: {message}", self.station)
                }
                Some(_) => {}
                None => bail!("the server closed the connection"),
            }
        }
    }

    async fn run(
        mut self,
        schedule: Schedule,
        start: oneshot::Receiver<Instant>,
        done: oneshot::Sender<Outcome>,
        stop: oneshot::Receiver<()>,
    ) {
        let result = self.run_phase(schedule, start).await;
        if let Err(e) = result {
            self.outcome.lost = Some(format!("{e:#}"));
        }
        self.outcome.unacked = self.pending;
        let lost = self.outcome.lost.is_some();
        if done.send(self.outcome.clone()).is_err() || lost {
            return;
        }
        // Keep answering pings until told to stop.
        let mut stop = stop;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                msg = client::next_message(&mut self.ws) => {
                    if !matches!(msg, Ok(Some(_))) {
                        return;
                    }
                }
            }
        }
        let station = self.station.clone();
        if client::send(&mut self.ws, &ClientMessage::StopBroadcasting { station })
            .await
            .is_ok()
        {
            // Wait for `stopped` so the station is freed before we close.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Ok(Some(msg)) = client::next_message(&mut self.ws).await {
                    if matches!(msg, ServerMessage::Stopped { .. }) {
                        break;
                    }
                }
            })
            .await;
        }
        let _ = self.ws.close(None).await;
    }

    async fn run_phase(
        &mut self,
        schedule: Schedule,
        mut start: oneshot::Receiver<Instant>,
    ) -> anyhow::Result<()> {
        // Idle until the run starts, still reading so pings are answered.
        let started = loop {
            tokio::select! {
                at = &mut start => match at {
                    Ok(at) => break at,
                    Err(_) => return Ok(()), // the parent gave up
                },
                msg = client::next_message(&mut self.ws) => {
                    if !self.on_message(msg?) {
                        bail!("the server closed the broadcaster's connection");
                    }
                }
            }
        };
        let end = started + schedule.duration;
        let mut updates =
            tokio::time::interval_at(started + schedule.update_interval, schedule.update_interval);
        updates.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let hb_period = schedule
            .heartbeat_interval
            .unwrap_or(Duration::from_secs(3600));
        let mut heartbeats = tokio::time::interval_at(started + hb_period, hb_period);
        heartbeats.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ping = tokio::time::interval(Duration::from_secs(5));
        loop {
            // Ok(true) at the end of the run.
            let step: anyhow::Result<bool> = tokio::select! {
                _ = tokio::time::sleep_until(end) => Ok(true),
                _ = updates.tick() => self.send_update().await.map(|()| false),
                _ = heartbeats.tick(), if schedule.heartbeat_interval.is_some() => {
                    self.send_heartbeat().await.map(|()| false)
                }
                _ = ping.tick() => {
                    client::send(&mut self.ws, &ClientMessage::Ping {
                        id: None,
                        client_time_ms: Some(protocol::now_ms()),
                    }).await.map(|()| false)
                }
                msg = client::next_message(&mut self.ws) => self.on_frame(msg),
                _ = tokio::time::sleep_until(self.waiting_since.map_or(end, |t| t + ANSWER_LIMIT)),
                    if self.reconnect && self.waiting_since.is_some() => {
                    Err(anyhow::anyhow!("no answer for {ANSWER_LIMIT:?}"))
                }
            };
            match step {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) if self.reconnect => {
                    tracing::debug!(station = %self.station, error = %e, "broadcaster lost its connection");
                    self.resume(end).await?;
                }
                Err(e) => return Err(e),
            }
        }
        tokio::time::timeout(Duration::from_secs(10), self.wait_acks())
            .await
            .unwrap_or(Ok(()))
    }
}
