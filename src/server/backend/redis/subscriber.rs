//! The node's one subscriber task: owns the pub/sub connection, writes
//! every subscribed station's cell in the order Redis ran its changes, renews
//! this node's leases, reaps expired ones, keeps this node's listener counts
//! in Redis, and reconnects with backoff when Redis goes away (then
//! resubscribes, re-asserts this node's stations and asks for snapshots).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, RedisError};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::channel::{ChannelMsg, Snapshot};
use super::keys::{self, LIVE_SET, millis};
use super::node::{BusCmd, Hold, Node, OP_TIMEOUT, lock};
use crate::protocol::{OfflineReason, OnlineReason, StationName};
use crate::server::station::{State, Station, View};

/// Stations of the live set one sweep script looks at.
const SWEEP_BATCH: usize = 500;
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// After (re)connecting, a node waits this long (or a lease, if longer)
/// before declaring other nodes' stations dead, so that their nodes, which
/// reconnect with the same backoff, can re-assert their leases first.
const SETTLE: Duration = Duration::from_secs(4);

/// A subscribed station, as the subscriber task tracks it.
struct Sub {
    station: Arc<Station>,
    ready: watch::Sender<bool>,
    /// Since when Redis has not known this station (it lost its data and no
    /// owner re-asserted it).
    unknown_since: Option<Instant>,
    /// The highest `seq` this node's listeners were sent (every state comes
    /// through `on_message`), kept after the station goes offline (its view
    /// then has no state): the floor a restarted Redis is taught, so a new
    /// broadcaster's states are newer than what listeners who stayed tuned
    /// hold.
    high_seq: u64,
}

/// The two connections to Redis while it is reachable.
struct Link {
    cmd: MultiplexedConnection,
    sink: PubSubSink,
    stream: PubSubStream,
}

/// Why [`Bus::serve`] returned.
enum End {
    Shutdown,
    Lost(String),
}

impl From<RedisError> for End {
    fn from(e: RedisError) -> Self {
        End::Lost(e.to_string())
    }
}

impl From<tokio::time::error::Elapsed> for End {
    fn from(_: tokio::time::error::Elapsed) -> Self {
        End::Lost("a Redis request timed out".into())
    }
}

/// The node's one subscriber: owns the pub/sub connection, writes every
/// subscribed station's view, renews leases, reaps expired ones and keeps
/// this node's listener counts in Redis.
pub(crate) struct Bus {
    node: Arc<Node>,
    rx: mpsc::UnboundedReceiver<BusCmd>,
    /// Keyed by channel name, as messages arrive.
    subs: HashMap<String, Sub>,
    /// Listener counts last written to Redis.
    flushed: HashMap<StationName, u64>,
    shutdown: CancellationToken,
}

impl Bus {
    pub(crate) fn new(node: Arc<Node>, rx: mpsc::UnboundedReceiver<BusCmd>) -> Self {
        let shutdown = node.shutdown.clone();
        Self {
            node,
            rx,
            subs: HashMap::new(),
            flushed: HashMap::new(),
            shutdown,
        }
    }

    /// Serves until shutdown, reconnecting to Redis whenever it is lost.
    pub(crate) async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut warned = false;
        // Whether a link was up before: the next one is a reconnect.
        let mut was_up = false;
        loop {
            let connected = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = tokio::time::timeout(OP_TIMEOUT * 2, self.connect()) => r,
            };
            match connected {
                Ok(Ok(link)) => {
                    backoff = Duration::from_millis(100);
                    warned = false;
                    if was_up {
                        self.node.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    was_up = true;
                    let end = self.serve(link).await;
                    self.node.up.store(false, Ordering::Relaxed);
                    match end {
                        // The command connection stays, so broadcasters'
                        // leases can still become grace leases on the way out.
                        End::Shutdown => return,
                        End::Lost(why) => {
                            *lock(&self.node.conn) = None;
                            tracing::warn!("lost Redis ({why}); serving from memory, reconnecting");
                        }
                    }
                }
                Ok(Err(e)) => {
                    if !warned {
                        if super::source::is_refusal(&e) {
                            // Redis (or a Sentinel) changed its password
                            // since this node started: only an operator
                            // mends that.
                            tracing::error!(
                                error = %e,
                                "Redis refused this node's password; retrying with backoff"
                            );
                        } else {
                            tracing::warn!(error = %e, "cannot reach Redis; retrying with backoff");
                        }
                        warned = true;
                    }
                }
                Err(_) => {
                    if !warned {
                        tracing::warn!("connecting to Redis timed out; retrying with backoff");
                        warned = true;
                    }
                }
            }
            // Wait, but keep the subscription list current meanwhile.
            let wake = Instant::now() + backoff.mul_f64(0.5 + fastrand::f64());
            backoff = (backoff * 2).min(MAX_BACKOFF);
            loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(wake) => break,
                    cmd = self.rx.recv() => match cmd {
                        Some(cmd) => {
                            // Without a link nothing can fail.
                            let _ = self.on_cmd(cmd, None).await;
                        }
                        None => return,
                    },
                }
            }
        }
    }

    async fn connect(&self) -> Result<Link, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT));
        let client = self.node.source.master().await?;
        let cmd = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let (sink, stream) = client.get_async_pubsub().await?.split();
        if let Some((from, to)) = self.node.source.connected_to(&client) {
            // Once per failover: the rest of it is the usual reconnect.
            tracing::warn!(%from, %to, "Redis failed over: the Sentinels name a new master");
        }
        Ok(Link { cmd, sink, stream })
    }

    /// Serves one connection to Redis until it fails or the node stops.
    async fn serve(&mut self, mut link: Link) -> End {
        if let Err(end) = self.resync(&mut link).await {
            return end;
        }
        *lock(&self.node.conn) = Some(link.cmd.clone());
        self.node.up.store(true, Ordering::Relaxed);
        tracing::info!(stations = self.subs.len(), "connected to Redis");
        let lease = self.node.cfg.lease;
        // Reap only after every owner had a chance to re-assert its leases.
        let reap_after = Instant::now() + lease.max(SETTLE);
        let tick_every = (lease / 10).clamp(Duration::from_millis(50), Duration::from_millis(500));
        let reap_every = (lease / 5).max(tick_every);
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_renew = Instant::now();
        let mut last_reap = Instant::now();
        let mut last_sweep = Instant::now();
        let sweep_every = lease.max(Duration::from_secs(1));
        let mut last_ping = Instant::now();
        loop {
            let step: Result<(), End> = tokio::select! {
                _ = self.shutdown.cancelled() => return End::Shutdown,
                msg = link.stream.next() => match msg {
                    Some(msg) => {
                        self.on_message(&msg);
                        Ok(())
                    }
                    None => Err(End::Lost("the subscription connection closed".into())),
                },
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.on_cmd(cmd, Some(&mut link)).await,
                    None => return End::Shutdown,
                },
                _ = tick.tick() => {
                    let mut r = self.flush_counts(&mut link).await;
                    if r.is_ok() && last_renew.elapsed() >= lease / 3 {
                        last_renew = Instant::now();
                        r = self.renew(&mut link).await;
                    }
                    // Reaping also keeps what tuned listeners need, so it
                    // runs while settling too, only taking nothing offline.
                    if r.is_ok() && last_reap.elapsed() >= reap_every {
                        last_reap = Instant::now();
                        let settled = Instant::now() >= reap_after;
                        r = self.reap(&mut link, settled).await;
                    }
                    if r.is_ok() && Instant::now() >= reap_after && last_sweep.elapsed() >= sweep_every {
                        last_sweep = Instant::now();
                        r = self.sweep(&mut link).await;
                    }
                    if r.is_ok() && last_ping.elapsed() >= Duration::from_secs(5) {
                        last_ping = Instant::now();
                        r = self.ping(&mut link).await;
                    }
                    r
                }
                _ = self.node.broken.notified() => self.ping(&mut link).await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// After (re)connecting: resubscribe, re-assert this node's stations,
    /// and ask for a snapshot of every subscribed one.
    async fn resync(&mut self, link: &mut Link) -> Result<(), End> {
        let channels: Vec<&String> = self.subs.keys().collect();
        for chunk in channels.chunks(1000) {
            tokio::time::timeout(OP_TIMEOUT, link.sink.subscribe(chunk)).await??;
        }
        // Rewrite every count (a restarted Redis has none), and still delete
        // those of stations that lost their listeners while Redis was away.
        for n in self.flushed.values_mut() {
            *n = u64::MAX;
        }
        let holds: Vec<Arc<Hold>> = lock(&self.node.holds).values().cloned().collect();
        for hold in holds {
            let (seq, frame) = {
                let st = lock(&hold.state);
                let frame = st.last.as_ref().map_or("", |s| s.frame.as_str()).to_owned();
                (st.seq, frame)
            };
            let name = hold.name.as_str();
            let ok: i64 = tokio::time::timeout(
                OP_TIMEOUT,
                self.node
                    .scripts
                    .reassert
                    .key(keys::lease(name))
                    .key(keys::station(name))
                    .key(LIVE_SET)
                    .arg(&hold.holder)
                    .arg(&hold.token)
                    .arg(seq)
                    .arg(frame)
                    .arg(millis(self.node.cfg.lease))
                    .arg(keys::channel(name))
                    .arg(name)
                    .invoke_async(&mut link.cmd),
            )
            .await??;
            if ok == 0 {
                self.hold_lost(&hold);
            }
        }
        let names: Vec<StationName> = self.subs.values().map(|s| s.station.name.clone()).collect();
        for name in names {
            self.snapshot(link, &name).await?;
        }
        Ok(())
    }

    async fn snapshot(&mut self, link: &mut Link, name: &StationName) -> Result<(), End> {
        let floor = self
            .subs
            .get(&keys::channel(name.as_str()))
            .map_or(0, |s| s.high_seq);
        let _: i64 = tokio::time::timeout(
            OP_TIMEOUT,
            self.node
                .scripts
                .snapshot
                .key(keys::station(name.as_str()))
                .arg(keys::channel(name.as_str()))
                .arg(floor)
                .arg(self.node.keep_offline_ms())
                .invoke_async(&mut link.cmd),
        )
        .await??;
        Ok(())
    }

    fn hold_lost(&self, hold: &Arc<Hold>) {
        {
            let mut st = lock(&hold.state);
            if st.ended || st.lost {
                return;
            }
            st.lost = true;
        }
        self.node.forget_hold(hold);
        tracing::warn!(station = %hold.name, "lost the lease: another connection holds the station");
    }

    async fn on_cmd(&mut self, cmd: BusCmd, link: Option<&mut Link>) -> Result<(), End> {
        match cmd {
            BusCmd::Subscribe { station, ready } => {
                let ch = keys::channel(station.name.as_str());
                let name = station.name.clone();
                // The station may have been followed before (its states
                // are kept while local listeners hold it).
                let high_seq = station.view().state.as_ref().map_or(0, |s| s.sync.seq);
                self.subs.insert(
                    ch.clone(),
                    Sub {
                        station,
                        ready,
                        unknown_since: None,
                        high_seq,
                    },
                );
                if let Some(link) = link {
                    tokio::time::timeout(OP_TIMEOUT, link.sink.subscribe(&ch)).await??;
                    self.snapshot(link, &name).await?;
                }
            }
            BusCmd::Idle(name) => {
                let removed = {
                    let mut map = lock(&self.node.stations);
                    let idle = map
                        .get(&name)
                        .is_some_and(|e| e.station.listener_count() == 0);
                    if idle {
                        map.remove(&name);
                    }
                    idle
                };
                if removed {
                    let ch = keys::channel(name.as_str());
                    self.subs.remove(&ch);
                    if let Some(link) = link {
                        tokio::time::timeout(OP_TIMEOUT, link.sink.unsubscribe(&ch)).await??;
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies one message of a station's channel to its view.
    fn on_message(&mut self, msg: &redis::Msg) {
        let Some(sub) = self.subs.get_mut(msg.get_channel_name()) else {
            return;
        };
        let msg = match ChannelMsg::parse(msg.get_payload_bytes()) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a message from Redis");
                return;
            }
        };
        if let ChannelMsg::Snapshot(snapshot) = &msg {
            sub.ready.send_if_modified(|r| !std::mem::replace(r, true));
            if *snapshot == Snapshot::Unknown {
                sub.unknown_since.get_or_insert_with(Instant::now);
                return;
            }
        }
        sub.unknown_since = None;
        if let Some(view) = next_view(&sub.station.view(), msg) {
            if let Some(st) = &view.state {
                sub.high_seq = sub.high_seq.max(st.sync.seq);
            }
            sub.station.set_view(view);
        }
    }

    /// Writes this node's changed listener counts and its liveness marker.
    async fn flush_counts(&mut self, link: &mut Link) -> Result<(), End> {
        let node = self.node.cfg.node_id.as_str();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(keys::node(node))
            .arg(1)
            .arg("PX")
            .arg(millis(self.node.cfg.lease * 3).max(3_000))
            .ignore();
        let mut changed = Vec::new();
        for sub in self.subs.values() {
            let n = sub.station.listener_count();
            if self.flushed.get(&sub.station.name) != Some(&n) {
                changed.push((sub.station.name.clone(), n));
            }
        }
        let gone: Vec<StationName> = self
            .flushed
            .keys()
            .filter(|name| !self.subs.contains_key(&keys::channel(name.as_str())))
            .cloned()
            .collect();
        for name in &gone {
            pipe.cmd("HDEL")
                .arg(keys::listeners(name.as_str()))
                .arg(node)
                .ignore();
        }
        for (name, n) in &changed {
            let key = keys::listeners(name.as_str());
            if *n == 0 {
                pipe.cmd("HDEL").arg(&key).arg(node).ignore();
            } else {
                pipe.cmd("HSET").arg(&key).arg(node).arg(*n).ignore();
                pipe.cmd("PEXPIRE")
                    .arg(&key)
                    .arg(self.node.keep_offline_ms())
                    .ignore();
            }
        }
        tokio::time::timeout(OP_TIMEOUT, pipe.query_async::<()>(&mut link.cmd)).await??;
        for name in gone {
            self.flushed.remove(&name);
        }
        for (name, n) in changed {
            self.flushed.insert(name, n);
        }
        Ok(())
    }

    async fn renew(&mut self, link: &mut Link) -> Result<(), End> {
        let holds: Vec<Arc<Hold>> = lock(&self.node.holds).values().cloned().collect();
        if holds.is_empty() {
            return Ok(());
        }
        let mut inv = self.node.scripts.renew.prepare_invoke();
        inv.arg(millis(self.node.cfg.lease));
        for hold in &holds {
            inv.key(keys::lease(hold.name.as_str())).arg(&hold.holder);
        }
        let kept: Vec<i64> =
            tokio::time::timeout(OP_TIMEOUT, inv.invoke_async(&mut link.cmd)).await??;
        for (hold, kept) in holds.iter().zip(kept) {
            if kept == 0 {
                self.hold_lost(hold);
            }
        }
        Ok(())
    }

    /// Raises each station's seq to what this node's listeners have seen and
    /// keeps an offline one's hash, history and counts while they are tuned
    /// (the rule in [`keys::keep_offline`]); once `settled`, also takes
    /// stations whose lease expired offline (any node with listeners may;
    /// the script makes sure only one announces it).
    async fn reap(&mut self, link: &mut Link, settled: bool) -> Result<(), End> {
        if self.subs.is_empty() {
            return Ok(());
        }
        let chans: Vec<String> = self.subs.keys().cloned().collect();
        for chunk in chans.chunks(500) {
            let mut inv = self.node.scripts.reap.prepare_invoke();
            inv.key(LIVE_SET)
                .arg(self.node.keep_offline_ms())
                .arg(if settled { "1" } else { "0" });
            for ch in chunk {
                let Some(sub) = self.subs.get(ch) else {
                    continue;
                };
                let name = sub.station.name.as_str();
                let floor = sub.high_seq;
                inv.key(keys::lease(name))
                    .key(keys::station(name))
                    .arg(name)
                    .arg(ch)
                    .arg(floor);
            }
            let results: Vec<i64> =
                tokio::time::timeout(OP_TIMEOUT, inv.invoke_async(&mut link.cmd)).await??;
            let lease = self.node.cfg.lease;
            for (ch, r) in chunk.iter().zip(results) {
                let Some(sub) = self.subs.get_mut(ch) else {
                    continue;
                };
                if r != 2 || !settled {
                    continue;
                }
                // Redis lost the station and no owner re-asserted it within
                // a lease: its node is gone too.
                let since = *sub.unknown_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= lease.max(SETTLE) && sub.station.view().live {
                    tracing::info!(station = %sub.station.name, "station unknown to Redis; offline");
                    sub.station.set_view(View::offline(OfflineReason::Timeout));
                }
            }
        }
        Ok(())
    }

    /// Cluster hygiene: walks the whole live set in batches and takes
    /// offline (and lets expire) every station whose lease is gone, with or
    /// without listeners anywhere, so an abandoned station neither stays
    /// listed nor costs every `list_stations` a walk over it.
    async fn sweep(&mut self, link: &mut Link) -> Result<(), End> {
        let mut cursor = "0".to_owned();
        let mut swept = 0;
        loop {
            let mut inv = self.node.scripts.sweep.prepare_invoke();
            inv.key(LIVE_SET)
                .arg(&cursor)
                .arg(SWEEP_BATCH)
                .arg(self.node.keep_offline_ms())
                .arg(keys::PREFIX);
            let (next, n): (String, u64) =
                tokio::time::timeout(OP_TIMEOUT, inv.invoke_async(&mut link.cmd)).await??;
            swept += n;
            if next == "0" || self.shutdown.is_cancelled() {
                break;
            }
            cursor = next;
        }
        if swept > 0 {
            tracing::info!(
                stations = swept,
                "abandoned stations taken offline in Redis"
            );
        }
        Ok(())
    }

    async fn ping(&mut self, link: &mut Link) -> Result<(), End> {
        // Any answer will do: with subscriptions open, RESP2 answers a PING
        // on this connection with an array, not "PONG".
        tokio::time::timeout(OP_TIMEOUT, link.sink.ping::<redis::Value>()).await??;
        tokio::time::timeout(
            OP_TIMEOUT,
            redis::cmd("PING").query_async::<String>(&mut link.cmd),
        )
        .await??;
        if self.node.source.follows_failovers() {
            // A master Sentinel demoted answers PINGs as a replica: ask.
            let role: redis::Value =
                tokio::time::timeout(OP_TIMEOUT, redis::cmd("ROLE").query_async(&mut link.cmd))
                    .await??;
            if !is_master(&role) {
                return Err(End::Lost(
                    "the Redis this node used is no longer the master".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Whether a `ROLE` reply is a master's (its first element `master`).
fn is_master(role: &redis::Value) -> bool {
    match role {
        redis::Value::Array(items) => {
            matches!(
                items.first(),
                Some(redis::Value::BulkString(b)) if b == b"master"
            ) || matches!(items.first(), Some(redis::Value::SimpleString(s)) if s == "master")
        }
        _ => false,
    }
}

/// The view a channel message makes of `cur`, or `None` when it changes
/// nothing a listener would see. A cell never goes back to an older `seq`.
/// Who plays (`by`) stays until a hand-over or a snapshot says otherwise;
/// each change of player while live moves the turn on, so listeners are
/// told of it.
fn next_view(cur: &View, msg: ChannelMsg<'_>) -> Option<View> {
    let newer = |s: &State| cur.state.as_ref().is_none_or(|c| s.sync.seq > c.sync.seq);
    let was_on = cur.live || cur.state.is_some();
    // Live with `state`, played by `by`.
    let live = |state: Option<State>, by: OnlineReason| View {
        by,
        turn: if cur.live && cur.by != by {
            cur.turn.wrapping_add(1)
        } else {
            cur.turn
        },
        ..View::live(state)
    };
    match msg {
        ChannelMsg::State(frame) => State::from_frame(frame)
            .filter(|s| newer(s))
            .map(|s| live(Some(s), cur.by)),
        ChannelMsg::Live => (!cur.live).then(|| live(None, OnlineReason::Live)),
        ChannelMsg::HandOver(by) => {
            let state = if cur.live { cur.state.clone() } else { None };
            (!cur.live || cur.by != by).then(|| live(state, by))
        }
        ChannelMsg::Offline(reason) => was_on.then(|| View {
            turn: cur.turn.wrapping_add(1),
            ..View::offline(reason)
        }),
        ChannelMsg::Snapshot(Snapshot::Live(frame, by)) => {
            let state = match frame.and_then(State::from_frame) {
                Some(s) if newer(&s) => Some(s),
                _ if cur.live => cur.state.clone(),
                _ => None,
            };
            let seq = |s: Option<&State>| s.map(|s| s.sync.seq);
            let changed =
                !cur.live || cur.by != by || seq(state.as_ref()) != seq(cur.state.as_ref());
            changed.then(|| live(state, by))
        }
        ChannelMsg::Snapshot(Snapshot::Offline(reason)) => was_on.then(|| View {
            turn: cur.turn.wrapping_add(1),
            ..View::offline(reason)
        }),
        ChannelMsg::Snapshot(Snapshot::Unknown) => None,
    }
}
