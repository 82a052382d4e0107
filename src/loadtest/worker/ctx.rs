//! The worker's shared state ([`Ctx`]): the plan, the nodes, and what every
//! listener records into (sharded histograms, per-listener state and last
//! `seq`, counters), with the few methods a listener calls per frame.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::client;
use crate::loadtest::plan::{Progress, WorkerPlan};
use crate::loadtest::stats::Hist;
use crate::protocol::{self, ClientMessage, StationName};

/// Histogram shards: listeners record into `shards[i % SHARDS]`, so on two
/// to a few cores a lock is rarely contended.
pub(super) const SHARDS: usize = 8;

/// A listener's state in [`Ctx::state`].
pub(super) const PENDING: u8 = 0;
pub(super) const CONNECTED: u8 = 1;
pub(super) const FAILED: u8 = 2;
pub(super) const DROPPED: u8 = 3;

/// A node to connect to.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub url: String,
    pub addr: SocketAddr,
    pub tls: bool,
}

/// Resolves a normalized `ws(s)://host:port/path` URL.
pub(crate) async fn resolve(url: &str) -> anyhow::Result<Target> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a valid URL"))?;
    let tls = uri.scheme_str() == Some("wss");
    let host = uri
        .host()
        .with_context(|| format!("the URL {url:?} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addr = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    Ok(Target {
        url: url.to_owned(),
        addr,
        tls,
    })
}

/// What one shard of listeners has measured.
#[derive(Default)]
pub(super) struct Shard {
    pub(super) fanout_us: Hist,
    pub(super) accuracy_ms: Hist,
    /// `(station, seq)` -> (listeners that received it, latest receipt in µs).
    pub(super) updates: HashMap<(u32, u64), (u64, u64)>,
    pub(super) tune_in_syncs: u64,
    pub(super) skipped: u64,
    pub(super) duplicates: u64,
    pub(super) seq_regressions: u64,
    pub(super) errors_by_code: BTreeMap<String, u64>,
    pub(super) close_codes: BTreeMap<String, u64>,
}

/// The worker's shared state.
pub(super) struct Ctx {
    pub(super) plan: WorkerPlan,
    pub(super) targets: Vec<Target>,
    pub(super) config: WebSocketConfig,
    /// Each station's `tune_in` frame, encoded once.
    pub(super) tune_frames: Vec<Utf8Bytes>,
    /// Server clock minus ours, per node, in microseconds.
    pub(super) offsets_us: Vec<AtomicI64>,
    pub(super) attempted: AtomicU64,
    pub(super) connected: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) syncs: AtomicU64,
    /// Per local listener: its state and the highest `seq` it received.
    pub(super) state: Vec<AtomicU8>,
    pub(super) last_seq: Vec<AtomicU64>,
    pub(super) shards: Vec<Mutex<Shard>>,
    pub(super) handshake_us: Mutex<Hist>,
    pub(super) failed_by_reason: Mutex<BTreeMap<String, u64>>,
    /// When the run phase begins, on this machine's clock in microseconds
    /// (`i64::MAX` until the parent says): states published before it are
    /// followed (`seq`) but not measured.
    pub(super) run_from_us: AtomicI64,
    /// When it ends, likewise (`i64::MAX`: it ends with the broadcasters).
    pub(super) run_until_us: AtomicI64,
}

/// Locks a mutex, carrying on with the data if another task panicked while
/// holding it (the figures are still the best we have).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The fields of a server frame a listener measures, borrowed from its text.
#[derive(Deserialize)]
pub(super) struct Lite<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) ty: &'a str,
    #[serde(default)]
    pub(super) seq: u64,
    #[serde(default)]
    pub(super) position_ms: u64,
    #[serde(default)]
    pub(super) playing: bool,
    #[serde(default)]
    pub(super) server_time_ms: i64,
    #[serde(default, borrow)]
    pub(super) cause: Option<&'a str>,
    #[serde(default, borrow)]
    pub(super) code: Option<&'a str>,
}

impl Ctx {
    pub(super) fn shard(&self, local: usize) -> MutexGuard<'_, Shard> {
        lock(&self.shards[local % SHARDS])
    }

    pub(super) fn fail(&self, local: usize, reason: String) {
        self.state[local].store(FAILED, Ordering::Relaxed);
        *lock(&self.failed_by_reason).entry(reason).or_default() += 1;
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// [`Ctx::fail`], for a function that gives nothing on failure.
    pub(super) fn fail_with<T>(&self, local: usize, reason: String) -> Option<T> {
        self.fail(local, reason);
        None
    }

    pub(super) fn drop_listener(&self, local: usize) {
        self.state[local].store(DROPPED, Ordering::Relaxed);
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn on_text(&self, local: usize, station: u32, node: usize, text: &str) {
        let Ok(f) = serde_json::from_str::<Lite>(text) else {
            *self
                .shard(local)
                .errors_by_code
                .entry("unreadable_frame".into())
                .or_default() += 1;
            return;
        };
        match f.ty {
            "sync" => self.on_sync(local, station, node, &f),
            "error" => {
                let code = f.code.unwrap_or("unknown").to_owned();
                *self.shard(local).errors_by_code.entry(code).or_default() += 1;
            }
            _ => {}
        }
    }

    pub(super) fn on_sync(&self, local: usize, station: u32, node: usize, f: &Lite<'_>) {
        let offset_us = self.offsets_us[node].load(Ordering::Relaxed);
        let now = now_us() + offset_us;
        let published_us = f.server_time_ms.saturating_mul(1000);
        let latency = u64::try_from(now - published_us).unwrap_or(0);
        let published_here_us = published_us - offset_us;
        let in_run = published_here_us >= self.run_from_us.load(Ordering::Relaxed)
            && published_here_us < self.run_until_us.load(Ordering::Relaxed);
        // The broadcaster's true position at server time t is t - epoch, so
        // the listener's estimate at any moment is off by exactly this much.
        // No timeline is known of a station the generator does not play.
        let error_ms = self.plan.epoch_server_ms.map(|epoch| {
            if f.playing {
                (i64::try_from(f.position_ms).unwrap_or(i64::MAX) - (f.server_time_ms - epoch))
                    .unsigned_abs()
            } else {
                0
            }
        });
        let prev = self.last_seq[local].load(Ordering::Relaxed);
        if f.seq > prev {
            self.last_seq[local].store(f.seq, Ordering::Relaxed);
        }
        let fanout = in_run && f.cause != Some("tune_in");
        if fanout {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        let mut s = self.shard(local);
        if let Some(error_ms) = error_ms.filter(|_| in_run) {
            s.accuracy_ms.record(error_ms);
        }
        if fanout {
            s.fanout_us.record(latency);
            let e = s.updates.entry((station, f.seq)).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(latency);
        } else if f.cause == Some("tune_in") {
            s.tune_in_syncs += 1;
        }
        if prev > 0 {
            if f.seq < prev {
                s.seq_regressions += 1;
            } else if f.seq == prev {
                s.duplicates += 1;
            } else {
                s.skipped += f.seq - prev - 1;
            }
        }
    }

    pub(super) fn progress(&self) -> Progress {
        let mut fanout = Hist::new();
        for s in &self.shards {
            fanout.add(&lock(s).fanout_us);
        }
        Progress {
            attempted: self.attempted.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            p99_us: fanout.quantile(0.99),
        }
    }
}

impl Ctx {
    /// Resolves the nodes and encodes each station's `tune_in` frame.
    pub(super) async fn new(plan: WorkerPlan) -> anyhow::Result<Ctx> {
        let mut targets = Vec::with_capacity(plan.urls.len());
        for url in &plan.urls {
            targets.push(resolve(url).await?);
        }
        let mut tune_frames = Vec::with_capacity(plan.stations.len());
        for s in &plan.stations {
            let station = StationName::new(s).map_err(anyhow::Error::msg)?;
            tune_frames.push(protocol::encode(&ClientMessage::TuneIn { station }));
        }
        let count = plan.count;
        let nodes = plan.urls.len();
        Ok(Ctx {
            targets,
            // A listener reads sync frames of a few hundred bytes: a 1 KiB read
            // buffer, and nothing buffered on the write side.
            config: client::client_config().read_buffer_size(1024),
            tune_frames,
            offsets_us: (0..nodes).map(|_| AtomicI64::new(0)).collect(),
            attempted: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            state: (0..count).map(|_| AtomicU8::new(PENDING)).collect(),
            last_seq: (0..count).map(|_| AtomicU64::new(0)).collect(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            handshake_us: Mutex::new(Hist::new()),
            failed_by_reason: Mutex::new(BTreeMap::new()),
            run_from_us: AtomicI64::new(i64::MAX),
            run_until_us: AtomicI64::new(i64::MAX),
            plan,
        })
    }
}
