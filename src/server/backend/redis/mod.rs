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
//!   the `Redis` arms of [`crate::server::backend::any::AnyBackend`].
//!
//! The files: [`node`] (what this node's parts share, and the bounded Redis
//! call), [`owned`] (a broadcaster's hold), [`auto`] (the server's own
//! player on a station it runs, one node at a time), [`subscriber`] (the
//! task that owns the pub/sub link), [`listing`] (the live stations, read
//! in batches), [`channel`] (the channel messages), [`keys`] and
//! [`scripts`] (`lua/`, one file per script).

pub(crate) mod auto;
pub(crate) mod channel;
pub(crate) mod keys;
pub(crate) mod listing;
pub(crate) mod node;
pub(crate) mod owned;
pub(crate) mod scripts;
pub(crate) mod source;
pub(crate) mod subscriber;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Backend;
use crate::protocol::{self, StationName, StationSummary};
use crate::server::history::{self, Played};
use crate::server::metrics::{Link, Metrics};
use crate::server::refusal::Refusal;
use crate::server::station::{self, Listeners, State, Station, Tuned};
use keys::{LIVE_SET, millis};
use node::{BusCmd, Entry, Node, OP_TIMEOUT, lock, unavailable};
use scripts::Scripts;
use subscriber::Bus;

pub(crate) use owned::RedisOwned;
pub use source::Config;

/// The Redis backend; cheap to clone.
#[derive(Clone)]
pub(crate) struct Redis(Arc<Node>);

impl Redis {
    /// Checks the URL and starts the node's subscriber task; it connects (and
    /// keeps reconnecting) in the background, and `/readyz` says 503 until
    /// it has.
    pub(crate) fn start(
        cfg: Config,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let source = source::Source::new(&cfg)?;
        let (bus, rx) = mpsc::unbounded_channel();
        let idle = bus.clone();
        let listeners = Arc::new(Listeners::new(
            metrics.clone(),
            tasks.clone(),
            shutdown.clone(),
            Box::new(move |name: &StationName| {
                if idle.send(BusCmd::Idle(name.clone())).is_err() {
                    tracing::debug!("subscriber task is gone (shutting down)");
                }
            }),
        ));
        let holder_prefix = format!("{}:{}", cfg.node_id, protocol::random_token(4));
        tracing::info!(node = %cfg.node_id, lease = ?cfg.lease, "cluster mode through Redis");
        let node = Arc::new(Node {
            cfg,
            holder_prefix,
            source,
            conn: Mutex::new(None),
            up: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            stations: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
            bus,
            broken: Notify::new(),
            scripts: Scripts::new(),
            metrics,
            tasks: tasks.clone(),
            shutdown,
            listeners,
        });
        tasks.spawn(Bus::new(node.clone(), rx).run());
        Ok(Self(node))
    }

    /// Stops the start when Redis (or the Sentinels) refuse this node's
    /// password: see [`source::Source::check_credentials`].
    pub(crate) async fn check_credentials(&self) -> anyhow::Result<()> {
        let shown = source::masked(&self.0.cfg.redis_url);
        self.0.source.check_credentials(&shown).await
    }

    /// A claim's reply from the script: the hold, or why not.
    fn claimed(
        &self,
        name: &StationName,
        holder: String,
        reply: &[String],
    ) -> Result<RedisOwned, Refusal> {
        let (token, seq, frame) = match reply {
            [code, token, seq, frame] if code == "1" || code == "2" => {
                (token.clone(), seq.parse().unwrap_or(0), frame)
            }
            [code] if code == "-2" => return Err(Refusal::InGrace(name.clone())),
            [code] if code == "-1" => return Err(Refusal::Taken(name.clone())),
            [code] if code == "-3" => {
                return Err(Refusal::ServerStationsFull(self.0.cfg.max_stations));
            }
            other => {
                tracing::error!(?other, "unexpected reply from the claim script");
                return Err(unavailable());
            }
        };
        let last = if frame.is_empty() {
            None
        } else {
            State::from_frame(frame)
        };
        let hold = RedisOwned::hold(name, holder, token, seq, last);
        Ok(RedisOwned::new(self.0.clone(), hold))
    }
}

impl Backend for Redis {
    type Owned = RedisOwned;

    fn answers_at_once(&self) -> bool {
        false
    }

    fn readiness(&self) -> Result<(), String> {
        if self.0.up.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("cannot reach the cluster's Redis".into())
        }
    }

    fn link(&self) -> Option<Link> {
        Some(Link {
            name: "redis",
            service: "Redis",
            up: self.0.up.load(Ordering::Relaxed),
            reconnects: self.0.reconnects.load(Ordering::Relaxed),
        })
    }

    fn local_listeners(&self) -> Vec<(StationName, u64)> {
        station::listened(lock(&self.0.stations).values().map(|e| &*e.station))
    }

    async fn claim(
        &self,
        conn: u64,
        name: &StationName,
        resume_token: Option<&str>,
    ) -> Result<RedisOwned, Refusal> {
        let node = &self.0;
        if lock(&node.holds).contains_key(name) {
            return Err(Refusal::Taken(name.clone()));
        }
        let holder = format!("{}:{conn}", node.holder_prefix);
        let new_token = protocol::random_token(16);
        let reply: Vec<String> = node
            .call(
                node.scripts
                    .claim
                    .key(keys::lease(name.as_str()))
                    .key(keys::station(name.as_str()))
                    .key(LIVE_SET)
                    .key(keys::auto(name.as_str()))
                    .arg(&holder)
                    .arg(resume_token.unwrap_or(""))
                    .arg(&new_token)
                    .arg(millis(node.cfg.lease))
                    .arg(keys::channel(name.as_str()))
                    .arg(name.as_str())
                    .arg(node.cfg.max_stations),
            )
            .await?;
        self.claimed(name, holder, &reply)
    }

    async fn tune_in(&self, name: &StationName) -> Result<Tuned, Refusal> {
        let node = &self.0;
        let (tuned, mut ready) = {
            let mut map = lock(&node.stations);
            let entry = map.entry(name.clone()).or_insert_with(|| {
                let station = Arc::new(Station::new(name.clone()));
                let (tx, rx) = watch::channel(false);
                // Queued under the map lock, so the subscriber task sees it
                // before any `Idle` for this entry.
                let subscribe = BusCmd::Subscribe {
                    station: station.clone(),
                    ready: tx,
                };
                if node.bus.send(subscribe).is_err() {
                    tracing::debug!("subscriber task is gone (shutting down)");
                }
                Entry { station, ready: rx }
            });
            // Counted under the map lock so the subscriber's idle check sees it.
            let tuned = node.listeners.tune(entry.station.clone());
            (tuned, entry.ready.clone())
        };
        if !*ready.borrow_and_update() {
            match tokio::time::timeout(OP_TIMEOUT, ready.wait_for(|r| *r)).await {
                Ok(Ok(_)) => {}
                _ => return Err(unavailable()),
            }
        }
        Ok(tuned)
    }

    async fn list(&self) -> Result<Vec<StationSummary>, Refusal> {
        listing::list(&self.0).await
    }

    /// Seats this node's player on a station it runs: the nodes that name
    /// the station contend for its lease, and the one holding it drives
    /// the station ([`auto`]).
    async fn claim_auto(&self, conn: u64, name: &StationName) -> Result<RedisOwned, Refusal> {
        let (hold, seat) = auto::claim(&self.0, conn, name);
        Ok(RedisOwned::seated(self.0.clone(), hold, seat))
    }

    /// The plays every node pushed for the station, from Redis, so every
    /// node answers the same list.
    async fn history(&self, name: &StationName) -> Result<Option<Vec<Played>>, Refusal> {
        let mut conn = self.0.conn()?;
        let mut pipe = redis::pipe();
        pipe.cmd("LRANGE")
            .arg(keys::history(name.as_str()))
            .arg(0)
            .arg(history::LEN - 1)
            .cmd("EXISTS")
            .arg(keys::station(name.as_str()));
        let (plays, known): (Vec<String>, bool) =
            match tokio::time::timeout(OP_TIMEOUT, pipe.query_async(&mut conn)).await {
                Ok(Ok(v)) => v,
                _ => return Err(unavailable()),
            };
        if plays.is_empty() && !known {
            return Ok(None);
        }
        Ok(Some(
            plays
                .iter()
                .filter_map(|p| serde_json::from_str(p).ok())
                .collect(),
        ))
    }

    async fn is_live(&self, name: &StationName) -> bool {
        let station = lock(&self.0.stations).get(name).map(|e| e.station.clone());
        if let Some(station) = station {
            return station.view().live;
        }
        let Ok(mut conn) = self.0.conn() else {
            return false;
        };
        let mut exists = redis::cmd("EXISTS");
        exists.arg(keys::lease(name.as_str()));
        matches!(
            tokio::time::timeout(OP_TIMEOUT, exists.query_async::<bool>(&mut conn)).await,
            Ok(Ok(true))
        )
    }
}
