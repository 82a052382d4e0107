//! Cluster mode (`radio serve --redis URL`): several nodes share stations
//! through one Redis, the way Socket.IO's Redis adapter and Centrifugo's Redis
//! engine do. There is no node-to-node protocol; every node talks to Redis
//! only. docs/cluster.md lists the keys and channels and what an operator of
//! that Redis needs to know.
//!
//! Why it is shaped this way:
//! - **Ownership is a lease.** A station's owner node holds
//!   `radio:lease:{station}` (claimed with `SET NX PX`, renewed by a Lua
//!   script that checks the holder). A node that dies stops renewing, the
//!   lease expires, and any node with listeners of the station notices on its
//!   next reap tick and announces `broadcaster_offline{reason:"timeout"}`.
//! - **The station lives in Redis.** Its `seq`, resume token and newest
//!   state are fields of `radio:station:{station}`, so a broadcaster whose node
//!   died resumes on any node with its token and `seq` keeps growing.
//! - **Serialize once, publish once.** The owner node encodes each `sync`
//!   frame once; one Lua script checks the lease, stores the frame and
//!   `PUBLISH`es it. Nodes receive the frame's bytes, parse it once (to know
//!   its `seq` and extrapolate for late tuners) and hand the same bytes to
//!   every local listener through the station's `watch` cell, exactly as a
//!   single node does.
//! - **One writer per cell, in channel order.** A node subscribes only to
//!   stations that have local listeners. Every change of a station (state,
//!   online, offline, and the snapshot a node asks for when it subscribes or
//!   reconnects) is a message on the station's channel, so the node's one
//!   subscriber task applies them in the order Redis ran them; no version
//!   numbers, no races between a snapshot and a live event.
//! - **Redis away is not fatal.** Connections stay up; requests that need
//!   Redis get `unavailable`; `/readyz` says 503. The subscriber task
//!   reconnects with backoff, resubscribes, re-asserts this node's leases and
//!   states (a restarted Redis may have lost them), raises each station's
//!   `seq` to at least what local listeners have seen, and asks for fresh
//!   snapshots. A cell never goes back to an older `seq`.
//! - **The single node pays nothing.** This module is only reached through
//!   the `Cluster` arms of [`crate::server::registry::Registry`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, FromRedisValue, RedisError, Script, ScriptInvocation};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::{
    self, ErrorCode, OfflineReason, ServerMessage, StationName, StationSummary, Sync, SyncCause,
};
use crate::server::metrics::Metrics;
use crate::server::registry::{Local, Refusal, State, Station, Tuned, View};

/// Every key and channel starts with this.
pub const PREFIX: &str = "radio:";
/// The set of stations that are live somewhere in the cluster.
const LIVE_SET: &str = "radio:live";
/// How long an offline station's hash (and so its `seq`) is kept.
const KEEP_OFFLINE_MS: u64 = 24 * 60 * 60 * 1000;
/// Every Redis request gives up after this; the client gets `unavailable`.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// After (re)connecting, a node waits this long (or a lease, if longer)
/// before declaring other nodes' stations dead, so that their nodes, which
/// reconnect with the same backoff, can re-assert their leases first.
const SETTLE: Duration = Duration::from_secs(4);

fn lease_key(name: &str) -> String {
    format!("{PREFIX}lease:{name}")
}
fn station_key(name: &str) -> String {
    format!("{PREFIX}station:{name}")
}
fn listeners_key(name: &str) -> String {
    format!("{PREFIX}listeners:{name}")
}
fn node_key(node: &str) -> String {
    format!("{PREFIX}node:{node}")
}
fn channel(name: &str) -> String {
    format!("{PREFIX}ch:{name}")
}

/// Claims a station or resumes it with its token.
/// Returns `{'1'|'2', token, seq, frame}` (resumed | claimed), `{'-1'}`
/// (taken) or `{'-2'}` (in its grace period, waiting for its token).
const CLAIM: &str = r#"
local held = redis.call('GET', KEYS[1])
local st = redis.call('HMGET', KEYS[2], 'live', 'token', 'seq', 'frame', 'grace')
local live = st[1] == '1'
local seq = st[3] or '0'
if ARGV[2] ~= '' and st[2] and ARGV[2] == st[2] and (held or live) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
  redis.call('HSET', KEYS[2], 'live', '1', 'grace', '0')
  redis.call('PERSIST', KEYS[2])
  redis.call('SADD', KEYS[3], ARGV[6])
  return {'1', st[2], seq, st[4] or ''}
end
if held then
  if string.sub(held, 1, 6) == 'grace:' then return {'-2'} end
  return {'-1'}
end
if live then
  local reason = 'timeout'
  if st[5] == '1' then reason = 'disconnected' end
  redis.call('PUBLISH', ARGV[5], 'D' .. reason)
end
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[4])
redis.call('HSET', KEYS[2], 'live', '1', 'grace', '0', 'token', ARGV[3], 'seq', seq)
redis.call('HDEL', KEYS[2], 'frame', 'reason')
redis.call('PERSIST', KEYS[2])
redis.call('SADD', KEYS[3], ARGV[6])
redis.call('PUBLISH', ARGV[5], 'L')
return {'2', ARGV[3], seq, ''}
"#;

/// Stores and publishes a state. Returns its seq, -1 when the lease is not
/// the caller's, or Redis's newer seq to continue from.
const UPDATE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local cur = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if tonumber(ARGV[2]) <= cur then return cur end
redis.call('HSET', KEYS[2], 'seq', ARGV[2], 'frame', ARGV[3])
redis.call('PUBLISH', ARGV[4], 'S' .. ARGV[3])
return tonumber(ARGV[2])
"#;

/// Renews every lease still held by its holder: KEYS are leases, ARGV[1]
/// the lease time, ARGV[i+1] the holder of KEYS[i]. Returns 1/0 per lease.
const RENEW: &str = r#"
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"#;

/// The broadcaster's connection closed: the lease becomes a grace lease.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], 'grace:' .. ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], 'grace', '1')
return 1
"#;

/// `stop_broadcasting`.
const STOP: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 'live', '0', 'reason', 'stopped', 'grace', '0')
redis.call('HDEL', KEYS[2], 'frame', 'token')
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SREM', KEYS[3], ARGV[3])
redis.call('PUBLISH', ARGV[2], 'Dstopped')
return 1
"#;

/// Publishes a station's snapshot on its channel (so it arrives in order
/// with every other change) after raising its seq to the caller's floor.
const SNAPSHOT: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'live', 'reason', 'frame', 'seq')
if tonumber(ARGV[2]) > tonumber(f[4] or '0') then
  redis.call('HSET', KEYS[1], 'seq', ARGV[2])
  if f[1] ~= '1' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
end
if f[1] == '1' then
  redis.call('PUBLISH', ARGV[1], 'Z1' .. (f[3] or ''))
elseif f[1] == '0' then
  redis.call('PUBLISH', ARGV[1], 'Z0' .. (f[2] or 'stopped'))
else
  redis.call('PUBLISH', ARGV[1], 'Z?')
end
return 1
"#;

/// Finds live stations whose lease expired and takes them offline. KEYS:
/// the live set, then (lease, station) pairs; ARGV: keep time, then (name,
/// channel, seq floor) triples. Returns per station 1 (taken offline), 2
/// (unknown to Redis) or 0.
const REAP: &str = r#"
local out = {}
local n = (#KEYS - 1) / 2
for i = 1, n do
  local lease, st = KEYS[2 * i], KEYS[2 * i + 1]
  local name, chan, floor = ARGV[3 * i - 1], ARGV[3 * i], tonumber(ARGV[3 * i + 1])
  local f = redis.call('HMGET', st, 'live', 'grace', 'seq')
  if floor > tonumber(f[3] or '0') then
    redis.call('HSET', st, 'seq', floor)
    if f[1] ~= '1' then redis.call('PEXPIRE', st, ARGV[1]) end
  end
  local r = 0
  if f[1] == '1' then
    if redis.call('EXISTS', lease) == 0 then
      local reason = 'timeout'
      if f[2] == '1' then reason = 'disconnected' end
      redis.call('HSET', st, 'live', '0', 'reason', reason, 'grace', '0')
      redis.call('HDEL', st, 'frame', 'token')
      redis.call('PEXPIRE', st, ARGV[1])
      redis.call('SREM', KEYS[1], name)
      redis.call('PUBLISH', chan, 'D' .. reason)
      r = 1
    end
  elseif not f[1] then
    r = 2
  end
  out[i] = r
end
return out
"#;

/// After a reconnect: the owner node writes back its lease and state (a
/// restarted Redis has lost them) unless someone else holds the station.
const REASSERT: &str = r#"
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[5])
local cur = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
redis.call('HSET', KEYS[2], 'live', '1', 'grace', '0', 'token', ARGV[2])
redis.call('HDEL', KEYS[2], 'reason')
if tonumber(ARGV[3]) > cur then
  redis.call('HSET', KEYS[2], 'seq', ARGV[3])
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'frame', ARGV[4]) end
end
redis.call('PERSIST', KEYS[2])
redis.call('SADD', KEYS[3], ARGV[7])
redis.call('PUBLISH', ARGV[6], 'Z1' .. (redis.call('HGET', KEYS[2], 'frame') or ''))
return 1
"#;

/// Every live station with its newest frame and its listeners on other
/// live nodes: a flat list of (name, frame, count).
const LIST: &str = r#"
local out = {}
local p = ARGV[2]
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', p .. 'lease:' .. name) == 1 then
    local n = 0
    local counts = redis.call('HGETALL', p .. 'listeners:' .. name)
    for i = 1, #counts, 2 do
      if counts[i] ~= ARGV[1] and redis.call('EXISTS', p .. 'node:' .. counts[i]) == 1 then
        n = n + tonumber(counts[i + 1])
      end
    end
    table.insert(out, name)
    table.insert(out, redis.call('HGET', p .. 'station:' .. name, 'frame') or '')
    table.insert(out, tostring(n))
  end
end
return out
"#;

struct Scripts {
    claim: Script,
    update: Script,
    renew: Script,
    release: Script,
    stop: Script,
    snapshot: Script,
    reap: Script,
    reassert: Script,
    list: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            claim: Script::new(CLAIM),
            update: Script::new(UPDATE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            stop: Script::new(STOP),
            snapshot: Script::new(SNAPSHOT),
            reap: Script::new(REAP),
            reassert: Script::new(REASSERT),
            list: Script::new(LIST),
        }
    }
}

/// Cluster settings from `radio serve`'s flags.
#[derive(Clone, Debug)]
pub struct Config {
    pub redis_url: String,
    pub node_id: String,
    /// Lease time: a dead node's stations go offline this long after its
    /// last renewal.
    pub lease: Duration,
    /// How long a disconnected broadcaster may resume with its token.
    pub grace: Duration,
}

/// The cluster backend; cheap to clone.
#[derive(Clone)]
pub struct Cluster(Arc<Inner>);

pub struct Inner {
    cfg: Config,
    /// `node:boot`: every lease this process takes is `node:boot:conn`, so a
    /// node restarted under the same id never mistakes an old lease for its own.
    holder_prefix: String,
    client: redis::Client,
    /// The command connection while Redis is reachable.
    conn: Mutex<Option<MultiplexedConnection>>,
    up: AtomicBool,
    /// Stations with local listeners, and whether their first snapshot arrived.
    stations: Mutex<HashMap<StationName, Entry>>,
    /// Stations broadcast from this node.
    holds: Mutex<HashMap<StationName, Arc<Hold>>>,
    bus: mpsc::UnboundedSender<BusCmd>,
    /// A request saw the connection fail; the subscriber task checks it.
    broken: Notify,
    scripts: Scripts,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Listener guards; tells the subscriber task when a station's last
    /// local listener leaves.
    listeners: Local,
}

struct Entry {
    station: Arc<Station>,
    ready: watch::Receiver<bool>,
}

enum BusCmd {
    /// A station got its first local listener.
    Subscribe {
        station: Arc<Station>,
        ready: watch::Sender<bool>,
    },
    /// A station's last local listener left.
    Idle(StationName),
}

/// One station broadcast from this node.
struct Hold {
    name: StationName,
    holder: String,
    token: String,
    state: Mutex<HoldState>,
}

struct HoldState {
    /// Last seq published (or found in Redis when claimed).
    seq: u64,
    /// The newest state published, for heartbeats and re-asserting.
    last: Option<(Sync, Utf8Bytes)>,
    /// Another connection took the station over.
    lost: bool,
    /// Its connection stopped it or went away; a failed renewal is expected.
    ended: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere mid-update of plain data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unavailable() -> Refusal {
    (
        ErrorCode::Unavailable,
        "the cluster's Redis is unreachable right now; try again shortly".into(),
    )
}

/// Encodes a `sync` frame once and hands the state back.
fn encode_sync(sync: Sync) -> (Sync, Utf8Bytes) {
    let msg = ServerMessage::Sync(sync);
    let frame = protocol::encode(&msg);
    match msg {
        ServerMessage::Sync(sync) => (sync, frame),
        _ => unreachable!("built as a sync above"),
    }
}

/// Parses a `sync` frame received from Redis.
fn decode_sync(frame: &str) -> Option<Sync> {
    match serde_json::from_str::<ServerMessage>(frame) {
        Ok(ServerMessage::Sync(s)) => Some(s),
        _ => {
            tracing::warn!(frame, "ignoring a malformed state from Redis");
            None
        }
    }
}

fn parse_reason(s: &[u8]) -> OfflineReason {
    match s {
        b"stopped" => OfflineReason::Stopped,
        b"disconnected" => OfflineReason::Disconnected,
        _ => OfflineReason::Timeout,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Cluster {
    /// Checks the URL and starts the node's Redis task; it connects (and
    /// keeps reconnecting) in the background, and `/readyz` says 503 until
    /// it has.
    pub fn start_node(
        cfg: Config,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(cfg.redis_url.as_str()).map_err(|e| {
            anyhow::anyhow!(
                "--redis {:?} is not a Redis URL ({e}); write it like redis://127.0.0.1:6379/0",
                cfg.redis_url
            )
        })?;
        let (bus, rx) = mpsc::unbounded_channel();
        let idle = bus.clone();
        let listeners = Local::for_cluster(
            metrics.clone(),
            Box::new(move |name: &StationName| {
                if idle.send(BusCmd::Idle(name.clone())).is_err() {
                    tracing::debug!("subscriber task is gone (shutting down)");
                }
            }),
        );
        let holder_prefix = format!("{}:{}", cfg.node_id, protocol::random_token(4));
        tracing::info!(node = %cfg.node_id, lease = ?cfg.lease, "cluster mode through Redis");
        let inner = Arc::new(Inner {
            cfg,
            holder_prefix,
            client,
            conn: Mutex::new(None),
            up: AtomicBool::new(false),
            stations: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
            bus,
            broken: Notify::new(),
            scripts: Scripts::new(),
            metrics,
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
            listeners,
        });
        let bus = Bus {
            inner: inner.clone(),
            rx,
            subs: HashMap::new(),
            flushed: HashMap::new(),
            shutdown,
        };
        tasks.spawn(bus.run());
        Ok(Self(inner))
    }

    pub fn ready(&self) -> bool {
        self.0.up.load(Ordering::Relaxed)
    }

    pub async fn start(
        &self,
        conn: u64,
        name: &StationName,
        resume_token: Option<&str>,
    ) -> Result<Owned, Refusal> {
        let inner = &self.0;
        if lock(&inner.holds).contains_key(name) {
            return Err((
                ErrorCode::StationTaken,
                format!("station {name} is live from another connection"),
            ));
        }
        let holder = format!("{}:{conn}", inner.holder_prefix);
        let new_token = protocol::random_token(16);
        let reply: Vec<String> = inner
            .call(
                inner
                    .scripts
                    .claim
                    .key(lease_key(name.as_str()))
                    .key(station_key(name.as_str()))
                    .key(LIVE_SET)
                    .arg(&holder)
                    .arg(resume_token.unwrap_or(""))
                    .arg(&new_token)
                    .arg(millis(inner.cfg.lease))
                    .arg(channel(name.as_str()))
                    .arg(name.as_str()),
            )
            .await?;
        let (token, seq, frame) = match reply.as_slice() {
            [code, token, seq, frame] if code == "1" || code == "2" => {
                (token.clone(), seq.parse().unwrap_or(0), frame)
            }
            [code] if code == "-2" => {
                return Err((
                    ErrorCode::StationTaken,
                    format!(
                        "station {name} is waiting for its broadcaster to resume; \
                         resume with its resume_token or wait for the grace period to end"
                    ),
                ));
            }
            [code] if code == "-1" => {
                return Err((
                    ErrorCode::StationTaken,
                    format!("station {name} is live from another connection"),
                ));
            }
            other => {
                tracing::error!(?other, "unexpected reply from the claim script");
                return Err(unavailable());
            }
        };
        let last = if frame.is_empty() {
            None
        } else {
            decode_sync(frame).map(|s| (s, Utf8Bytes::from(frame.clone())))
        };
        let hold = Arc::new(Hold {
            name: name.clone(),
            holder,
            token,
            state: Mutex::new(HoldState {
                seq,
                last,
                lost: false,
                ended: false,
            }),
        });
        lock(&inner.holds).insert(name.clone(), hold.clone());
        inner.metrics.stations.inc();
        Ok(Owned {
            hold,
            inner: inner.clone(),
            released: false,
        })
    }

    pub async fn tune_in(&self, name: &StationName) -> Result<Tuned, Refusal> {
        let inner = &self.0;
        let (station, rx, mut ready) = {
            let mut map = lock(&inner.stations);
            let entry = map.entry(name.clone()).or_insert_with(|| {
                let station = Arc::new(Station::new(name.clone()));
                let (tx, rx) = watch::channel(false);
                // Queued under the map lock, so the subscriber task sees it
                // before any `Idle` for this entry.
                if inner
                    .bus
                    .send(BusCmd::Subscribe {
                        station: station.clone(),
                        ready: tx,
                    })
                    .is_err()
                {
                    tracing::debug!("subscriber task is gone (shutting down)");
                }
                Entry { station, ready: rx }
            });
            // Counted under the map lock so the subscriber's idle check sees it.
            let rx = entry.station.add_listener();
            (entry.station.clone(), rx, entry.ready.clone())
        };
        let tuned = inner.listeners.tuned(station, rx);
        if !*ready.borrow_and_update() {
            match tokio::time::timeout(OP_TIMEOUT, ready.wait_for(|r| *r)).await {
                Ok(Ok(_)) => {}
                _ => return Err(unavailable()),
            }
        }
        Ok(tuned)
    }

    pub async fn summaries(&self) -> Result<Vec<StationSummary>, Refusal> {
        let inner = &self.0;
        let reply: Vec<String> = inner
            .call(
                inner
                    .scripts
                    .list
                    .key(LIVE_SET)
                    .arg(&inner.cfg.node_id)
                    .arg(PREFIX),
            )
            .await?;
        let now = protocol::now_ms();
        let mut out = Vec::with_capacity(reply.len() / 3);
        for row in reply.chunks_exact(3) {
            let Ok(station) = StationName::new(&row[0]) else {
                continue;
            };
            let elsewhere: u64 = row[2].parse().unwrap_or(0);
            let here = lock(&inner.stations)
                .get(&station)
                .map_or(0, |e| e.station.listener_count());
            let sync = if row[1].is_empty() {
                None
            } else {
                decode_sync(&row[1])
            };
            let (track, playing, position_ms) = match sync {
                Some(s) => {
                    let position = s.position_at(now);
                    (Some(s.track), s.playing, position)
                }
                None => (None, false, 0),
            };
            out.push(StationSummary {
                station,
                listeners: elsewhere + here,
                live: true,
                track,
                playing,
                position_ms,
                server_time_ms: now,
            });
        }
        out.sort_by(|a, b| a.station.cmp(&b.station));
        Ok(out)
    }

    pub async fn is_live(&self, name: &StationName) -> bool {
        if let Some(e) = lock(&self.0.stations).get(name) {
            return e.station.view().live;
        }
        let Ok(mut conn) = self.0.conn() else {
            return false;
        };
        let mut exists = redis::cmd("EXISTS");
        exists.arg(lease_key(name.as_str()));
        matches!(
            tokio::time::timeout(OP_TIMEOUT, exists.query_async::<bool>(&mut conn)).await,
            Ok(Ok(true))
        )
    }
}

impl Inner {
    fn conn(&self) -> Result<MultiplexedConnection, Refusal> {
        lock(&self.conn).clone().ok_or_else(unavailable)
    }

    /// Runs a script on the command connection, bounded by [`OP_TIMEOUT`].
    async fn call<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> Result<T, Refusal> {
        let mut conn = self.conn()?;
        match tokio::time::timeout(OP_TIMEOUT, inv.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.failed(&e);
                Err(unavailable())
            }
            Err(_) => {
                tracing::warn!("a Redis request timed out");
                self.broken.notify_one();
                Err(unavailable())
            }
        }
    }

    fn failed(&self, e: &RedisError) {
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
            tracing::warn!(error = %e, "Redis request failed");
            self.broken.notify_one();
        } else {
            tracing::error!(error = %e, "Redis refused a request");
        }
    }

    fn forget_hold(&self, hold: &Arc<Hold>) {
        let mut holds = lock(&self.holds);
        if holds.get(&hold.name).is_some_and(|h| Arc::ptr_eq(h, hold)) {
            holds.remove(&hold.name);
        }
    }
}

/// A broadcaster's hold on a cluster station.
pub struct Owned {
    hold: Arc<Hold>,
    inner: Arc<Inner>,
    /// Stopped or lost: nothing to release on drop.
    released: bool,
}

impl Owned {
    pub fn name(&self) -> &StationName {
        &self.hold.name
    }

    pub fn token(&self) -> &str {
        &self.hold.token
    }

    pub fn current(&self) -> Option<Sync> {
        lock(&self.hold.state).last.as_ref().map(|(s, _)| s.clone())
    }

    pub async fn update(
        &mut self,
        track: String,
        position_ms: u64,
        playing: bool,
        duration_ms: Option<u64>,
    ) -> Result<u64, Refusal> {
        self.publish(track, position_ms, playing, duration_ms, SyncCause::Update)
            .await
    }

    pub async fn heartbeat(
        &mut self,
        position_ms: u64,
        playing: Option<bool>,
    ) -> Result<Option<u64>, Refusal> {
        let (track, duration_ms, was_playing) = match &lock(&self.hold.state).last {
            Some((s, _)) => (s.track.clone(), s.duration_ms, s.playing),
            None => return Ok(None),
        };
        self.publish(
            track,
            position_ms,
            playing.unwrap_or(was_playing),
            duration_ms,
            SyncCause::Heartbeat,
        )
        .await
        .map(Some)
    }

    /// Assigns the next seq, encodes the frame once, and has Redis check the
    /// lease, store it and publish it, all in one script.
    async fn publish(
        &mut self,
        track: String,
        position_ms: u64,
        playing: bool,
        duration_ms: Option<u64>,
        cause: SyncCause,
    ) -> Result<u64, Refusal> {
        let mut sync = Sync {
            station: self.hold.name.clone(),
            seq: lock(&self.hold.state).seq + 1,
            track,
            position_ms,
            playing,
            duration_ms,
            server_time_ms: protocol::now_ms(),
            cause,
        };
        let hold = self.hold.clone();
        let name = hold.name.as_str();
        // Redis may be ahead of this hold (it was raised after losing its
        // data); follow it, a bounded number of times.
        for _ in 0..3 {
            let (s, frame) = encode_sync(sync);
            let r: i64 = self
                .inner
                .call(
                    self.inner
                        .scripts
                        .update
                        .key(lease_key(name))
                        .key(station_key(name))
                        .arg(&hold.holder)
                        .arg(s.seq)
                        .arg(frame.as_str())
                        .arg(channel(name)),
                )
                .await?;
            if r == -1 {
                self.lost();
                return Err((
                    ErrorCode::NotOwner,
                    format!(
                        "station {name} was taken over by another connection \
                         (its broadcaster resumed elsewhere with the resume_token)"
                    ),
                ));
            }
            let seq = s.seq;
            if u64::try_from(r).ok() == Some(seq) {
                let mut st = lock(&hold.state);
                st.seq = seq;
                st.last = Some((s, frame));
                return Ok(seq);
            }
            sync = s;
            sync.seq = u64::try_from(r).unwrap_or(0) + 1;
        }
        tracing::error!(station = name, "could not agree on a seq with Redis");
        Err(unavailable())
    }

    fn lost(&mut self) {
        if !self.released {
            self.released = true;
            lock(&self.hold.state).lost = true;
            self.inner.forget_hold(&self.hold);
            self.inner.metrics.stations.dec();
            tracing::warn!(station = %self.hold.name, "station taken over elsewhere");
        }
    }

    pub async fn stop(&mut self) -> Result<(), Refusal> {
        let name = self.hold.name.as_str();
        let _: i64 = self
            .inner
            .call(
                self.inner
                    .scripts
                    .stop
                    .key(lease_key(name))
                    .key(station_key(name))
                    .key(LIVE_SET)
                    .arg(&self.hold.holder)
                    .arg(channel(name))
                    .arg(name)
                    .arg(KEEP_OFFLINE_MS),
            )
            .await?;
        if !self.released {
            self.released = true;
            lock(&self.hold.state).ended = true;
            self.inner.forget_hold(&self.hold);
            self.inner.metrics.stations.dec();
        }
        Ok(())
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.inner.forget_hold(&self.hold);
        self.inner.metrics.stations.dec();
        {
            let mut st = lock(&self.hold.state);
            st.ended = true;
            if st.lost {
                return;
            }
        }
        tracing::debug!(station = %self.hold.name, "broadcaster gone, grace period starts");
        // Runs even during shutdown, so a broadcaster can resume on another
        // node; bounded by the grace period.
        let inner = self.inner.clone();
        let hold = self.hold.clone();
        self.inner.tasks.spawn(async move {
            let give_up = Instant::now() + inner.cfg.grace;
            let name = hold.name.as_str();
            loop {
                let released: Result<i64, _> = inner
                    .call(
                        inner
                            .scripts
                            .release
                            .key(lease_key(name))
                            .key(station_key(name))
                            .arg(&hold.holder)
                            .arg(millis(inner.cfg.grace)),
                    )
                    .await;
                // Shutting down: one try, so the node exits promptly.
                if released.is_ok() || Instant::now() >= give_up || inner.shutdown.is_cancelled() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
}

/// A subscribed station, as the subscriber task tracks it.
struct Sub {
    station: Arc<Station>,
    ready: watch::Sender<bool>,
    /// Since when Redis has not known this station (it lost its data and no
    /// owner re-asserted it).
    unknown_since: Option<Instant>,
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
struct Bus {
    inner: Arc<Inner>,
    rx: mpsc::UnboundedReceiver<BusCmd>,
    /// Keyed by channel name, as messages arrive.
    subs: HashMap<String, Sub>,
    /// Listener counts last written to Redis.
    flushed: HashMap<StationName, u64>,
    shutdown: CancellationToken,
}

impl Bus {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut warned = false;
        loop {
            let connected = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = tokio::time::timeout(OP_TIMEOUT * 2, self.connect()) => r,
            };
            match connected {
                Ok(Ok(link)) => {
                    backoff = Duration::from_millis(100);
                    warned = false;
                    let end = self.serve(link).await;
                    self.inner.up.store(false, Ordering::Relaxed);
                    match end {
                        // The command connection stays, so broadcasters'
                        // leases can still become grace leases on the way out.
                        End::Shutdown => return,
                        End::Lost(why) => {
                            *lock(&self.inner.conn) = None;
                            tracing::warn!("lost Redis ({why}); serving from memory, reconnecting");
                        }
                    }
                }
                Ok(Err(e)) => {
                    if !warned {
                        tracing::warn!(error = %e, "cannot reach Redis; retrying with backoff");
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
        let cmd = self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let (sink, stream) = self.inner.client.get_async_pubsub().await?.split();
        Ok(Link { cmd, sink, stream })
    }

    /// Serves one connection to Redis until it fails or the node stops.
    async fn serve(&mut self, mut link: Link) -> End {
        if let Err(end) = self.resync(&mut link).await {
            return end;
        }
        *lock(&self.inner.conn) = Some(link.cmd.clone());
        self.inner.up.store(true, Ordering::Relaxed);
        tracing::info!(stations = self.subs.len(), "connected to Redis");
        let lease = self.inner.cfg.lease;
        // Reap only after every owner had a chance to re-assert its leases.
        let reap_after = Instant::now() + lease.max(SETTLE);
        let tick_every = (lease / 10).clamp(Duration::from_millis(50), Duration::from_millis(500));
        let reap_every = (lease / 5).max(tick_every);
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_renew = Instant::now();
        let mut last_reap = Instant::now();
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
                    if r.is_ok() && Instant::now() >= reap_after && last_reap.elapsed() >= reap_every {
                        last_reap = Instant::now();
                        r = self.reap(&mut link).await;
                    }
                    if r.is_ok() && last_ping.elapsed() >= Duration::from_secs(5) {
                        last_ping = Instant::now();
                        r = self.ping(&mut link).await;
                    }
                    r
                }
                _ = self.inner.broken.notified() => self.ping(&mut link).await,
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
        let holds: Vec<Arc<Hold>> = lock(&self.inner.holds).values().cloned().collect();
        for hold in holds {
            let (seq, frame) = {
                let st = lock(&hold.state);
                let frame = st.last.as_ref().map_or("", |(_, f)| f.as_str()).to_owned();
                (st.seq, frame)
            };
            let name = hold.name.as_str();
            let ok: i64 = tokio::time::timeout(
                OP_TIMEOUT,
                self.inner
                    .scripts
                    .reassert
                    .key(lease_key(name))
                    .key(station_key(name))
                    .key(LIVE_SET)
                    .arg(&hold.holder)
                    .arg(&hold.token)
                    .arg(seq)
                    .arg(frame)
                    .arg(millis(self.inner.cfg.lease))
                    .arg(channel(name))
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
            .get(&channel(name.as_str()))
            .and_then(|s| s.station.view().state.as_ref().map(|st| st.sync.seq))
            .unwrap_or(0);
        let _: i64 = tokio::time::timeout(
            OP_TIMEOUT,
            self.inner
                .scripts
                .snapshot
                .key(station_key(name.as_str()))
                .arg(channel(name.as_str()))
                .arg(floor)
                .arg(KEEP_OFFLINE_MS)
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
        self.inner.forget_hold(hold);
        tracing::warn!(station = %hold.name, "lost the lease: another connection holds the station");
    }

    async fn on_cmd(&mut self, cmd: BusCmd, link: Option<&mut Link>) -> Result<(), End> {
        match cmd {
            BusCmd::Subscribe { station, ready } => {
                let ch = channel(station.name.as_str());
                let name = station.name.clone();
                self.subs.insert(
                    ch.clone(),
                    Sub {
                        station,
                        ready,
                        unknown_since: None,
                    },
                );
                if let Some(link) = link {
                    tokio::time::timeout(OP_TIMEOUT, link.sink.subscribe(&ch)).await??;
                    self.snapshot(link, &name).await?;
                }
            }
            BusCmd::Idle(name) => {
                let removed = {
                    let mut map = lock(&self.inner.stations);
                    let idle = map
                        .get(&name)
                        .is_some_and(|e| e.station.listener_count() == 0);
                    if idle {
                        map.remove(&name);
                    }
                    idle
                };
                if removed {
                    let ch = channel(name.as_str());
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
        let payload = msg.get_payload_bytes();
        let Some((&kind, rest)) = payload.split_first() else {
            return;
        };
        let cur = sub.station.view();
        let state_of = |frame: &[u8]| -> Option<State> {
            let frame = std::str::from_utf8(frame).ok()?;
            let sync = decode_sync(frame)?;
            Some(State {
                sync,
                frame: Utf8Bytes::from(frame.to_owned()),
            })
        };
        let newer = |s: &State| cur.state.as_ref().is_none_or(|c| s.sync.seq > c.sync.seq);
        let keep = || {
            cur.state.as_ref().map(|c| State {
                sync: c.sync.clone(),
                frame: c.frame.clone(),
            })
        };
        let next = match kind {
            b'S' => match state_of(rest) {
                Some(s) if newer(&s) => Some(View {
                    live: true,
                    offline_reason: None,
                    state: Some(s),
                }),
                _ => None,
            },
            b'L' => (!cur.live).then(|| View {
                live: true,
                offline_reason: None,
                state: None,
            }),
            b'D' => Some(View {
                live: false,
                offline_reason: Some(parse_reason(rest)),
                state: None,
            })
            .filter(|_| cur.live || cur.state.is_some()),
            b'Z' => {
                let _ = sub.ready.send_if_modified(|r| !std::mem::replace(r, true));
                match rest.split_first() {
                    Some((b'1', frame)) => {
                        let state = match state_of(frame) {
                            Some(s) if newer(&s) => Some(s),
                            _ if cur.live => keep(),
                            _ => None,
                        };
                        let changed = !cur.live
                            || state.as_ref().map(|s| s.sync.seq)
                                != cur.state.as_ref().map(|s| s.sync.seq);
                        changed.then_some(View {
                            live: true,
                            offline_reason: None,
                            state,
                        })
                    }
                    Some((b'0', reason)) => (cur.live || cur.state.is_some()).then(|| View {
                        live: false,
                        offline_reason: Some(parse_reason(reason)),
                        state: None,
                    }),
                    _ => {
                        sub.unknown_since.get_or_insert_with(Instant::now);
                        return;
                    }
                }
            }
            _ => {
                tracing::warn!(kind, "ignoring an unknown message from Redis");
                return;
            }
        };
        sub.unknown_since = None;
        if let Some(view) = next {
            sub.station.set_view(view);
        }
    }

    /// Writes this node's changed listener counts and its liveness marker.
    async fn flush_counts(&mut self, link: &mut Link) -> Result<(), End> {
        let inner = &self.inner;
        let node = inner.cfg.node_id.as_str();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(node_key(node))
            .arg(1)
            .arg("PX")
            .arg(millis(inner.cfg.lease * 3).max(3_000))
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
            .filter(|name| !self.subs.contains_key(&channel(name.as_str())))
            .cloned()
            .collect();
        for name in &gone {
            pipe.cmd("HDEL")
                .arg(listeners_key(name.as_str()))
                .arg(node)
                .ignore();
        }
        for (name, n) in &changed {
            let key = listeners_key(name.as_str());
            if *n == 0 {
                pipe.cmd("HDEL").arg(&key).arg(node).ignore();
            } else {
                pipe.cmd("HSET").arg(&key).arg(node).arg(*n).ignore();
                pipe.cmd("PEXPIRE").arg(&key).arg(KEEP_OFFLINE_MS).ignore();
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
        let holds: Vec<Arc<Hold>> = lock(&self.inner.holds).values().cloned().collect();
        if holds.is_empty() {
            return Ok(());
        }
        let mut inv = self.inner.scripts.renew.prepare_invoke();
        inv.arg(millis(self.inner.cfg.lease));
        for hold in &holds {
            inv.key(lease_key(hold.name.as_str())).arg(&hold.holder);
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

    /// Takes stations whose lease expired offline (any node with listeners
    /// may; the script makes sure only one announces it), and raises each
    /// station's seq to what this node's listeners have seen.
    async fn reap(&mut self, link: &mut Link) -> Result<(), End> {
        if self.subs.is_empty() {
            return Ok(());
        }
        let chans: Vec<String> = self.subs.keys().cloned().collect();
        for chunk in chans.chunks(500) {
            let mut inv = self.inner.scripts.reap.prepare_invoke();
            inv.key(LIVE_SET).arg(KEEP_OFFLINE_MS);
            for ch in chunk {
                let Some(sub) = self.subs.get(ch) else {
                    continue;
                };
                let name = sub.station.name.as_str();
                let floor = sub.station.view().state.as_ref().map_or(0, |s| s.sync.seq);
                inv.key(lease_key(name))
                    .key(station_key(name))
                    .arg(name)
                    .arg(ch)
                    .arg(floor);
            }
            let results: Vec<i64> =
                tokio::time::timeout(OP_TIMEOUT, inv.invoke_async(&mut link.cmd)).await??;
            let lease = self.inner.cfg.lease;
            for (ch, r) in chunk.iter().zip(results) {
                let Some(sub) = self.subs.get_mut(ch) else {
                    continue;
                };
                if r != 2 {
                    continue;
                }
                // Redis lost the station and no owner re-asserted it within
                // a lease: its node is gone too.
                let since = *sub.unknown_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= lease.max(SETTLE) && sub.station.view().live {
                    tracing::info!(station = %sub.station.name, "station unknown to Redis; offline");
                    sub.station.set_view(View {
                        live: false,
                        offline_reason: Some(OfflineReason::Timeout),
                        state: None,
                    });
                }
            }
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
        Ok(())
    }
}
