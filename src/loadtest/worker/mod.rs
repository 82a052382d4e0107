//! One worker process (`radio loadtest-worker`): holds its share of the
//! listeners and measures what each of them receives.
//!
//! Why processes: one process may hold only so many sockets (20,000 open
//! files here), so 50,000 listeners need several. The parent sends the plan
//! as the first line on stdin; the worker answers with JSON lines on stdout:
//! progress every half second, `ramp_done` once every listener has been
//! attempted, and its report after the parent's `finish`.
//!
//! Why it is built this way: a listener is one of up to 50,000, so it is one
//! small task that owns its socket (1 KiB tungstenite read buffer, no write
//! buffer), decodes only the fields it measures from borrowed text rather
//! than the full [`ServerMessage`](crate::protocol::ServerMessage) with its
//! owned strings, and records into one of a few sharded, briefly-held
//! histograms instead of owning one (an HDR histogram is ~200 KiB). Its last
//! `seq` lives in a flat array the worker scans at the end for final-state
//! delivery. The clock offset to each node is measured once per worker on a
//! connection of its own (ping/pong, [`ClockOffset`]) and refreshed every
//! few seconds, rather than per listener.
//!
//! This file is the process: its plan, shared state, progress and report;
//! `connection` is one listener's connection.

mod connection;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::plan::{
    MAX_INFLIGHT_HANDSHAKES, ParentCmd, Progress, UpdateSeen, WorkerMsg, WorkerPlan, WorkerReport,
};
use super::stats::Hist;
use crate::client::{self, ClockOffset};
use crate::protocol::{self, ClientMessage, StationName};

/// Histogram shards: listeners record into `shards[i % SHARDS]`, so on two
/// to a few cores a lock is rarely contended.
const SHARDS: usize = 8;

/// A listener's state in [`Ctx::state`].
const PENDING: u8 = 0;
const CONNECTED: u8 = 1;
const FAILED: u8 = 2;
const DROPPED: u8 = 3;

/// A node to connect to.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    pub tls: bool,
}

/// Resolves a normalized `ws(s)://host:port/path` URL.
pub async fn resolve(url: &str) -> anyhow::Result<Target> {
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
struct Shard {
    fanout_us: Hist,
    accuracy_ms: Hist,
    /// `(station, seq)` -> (listeners that received it, latest receipt in µs).
    updates: HashMap<(u32, u64), (u64, u64)>,
    tune_in_syncs: u64,
    skipped: u64,
    duplicates: u64,
    seq_regressions: u64,
    errors_by_code: BTreeMap<String, u64>,
    close_codes: BTreeMap<String, u64>,
}

/// The worker's shared state.
struct Ctx {
    plan: WorkerPlan,
    targets: Vec<Target>,
    config: WebSocketConfig,
    /// Each station's `tune_in` frame, encoded once.
    tune_frames: Vec<Utf8Bytes>,
    /// Server clock minus ours, per node, in microseconds.
    offsets_us: Vec<AtomicI64>,
    attempted: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    syncs: AtomicU64,
    /// Per local listener: its state and the highest `seq` it received.
    state: Vec<AtomicU8>,
    last_seq: Vec<AtomicU64>,
    shards: Vec<Mutex<Shard>>,
    handshake_us: Mutex<Hist>,
    failed_by_reason: Mutex<BTreeMap<String, u64>>,
}

/// Locks a mutex, carrying on with the data if another task panicked while
/// holding it (the figures are still the best we have).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The fields of a server frame a listener measures, borrowed from its text.
#[derive(Deserialize)]
struct Lite<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    position_ms: u64,
    #[serde(default)]
    playing: bool,
    #[serde(default)]
    server_time_ms: i64,
    #[serde(default, borrow)]
    cause: Option<&'a str>,
    #[serde(default, borrow)]
    code: Option<&'a str>,
}

impl Ctx {
    fn shard(&self, local: usize) -> MutexGuard<'_, Shard> {
        lock(&self.shards[local % SHARDS])
    }

    fn fail(&self, local: usize, reason: String) {
        self.state[local].store(FAILED, Ordering::Relaxed);
        *lock(&self.failed_by_reason).entry(reason).or_default() += 1;
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// [`Ctx::fail`], for a function that gives nothing on failure.
    fn fail_with<T>(&self, local: usize, reason: String) -> Option<T> {
        self.fail(local, reason);
        None
    }

    fn drop_listener(&self, local: usize) {
        self.state[local].store(DROPPED, Ordering::Relaxed);
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn on_text(&self, local: usize, station: u32, node: usize, text: &str) {
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

    fn on_sync(&self, local: usize, station: u32, node: usize, f: &Lite<'_>) {
        let now = now_us() + self.offsets_us[node].load(Ordering::Relaxed);
        let latency = u64::try_from(now - f.server_time_ms.saturating_mul(1000)).unwrap_or(0);
        // The broadcaster's true position at server time t is t - epoch, so
        // the listener's estimate at any moment is off by exactly this much.
        let error_ms = if f.playing {
            (i64::try_from(f.position_ms).unwrap_or(i64::MAX)
                - (f.server_time_ms - self.plan.epoch_server_ms))
                .unsigned_abs()
        } else {
            0
        };
        let prev = self.last_seq[local].load(Ordering::Relaxed);
        if f.seq > prev {
            self.last_seq[local].store(f.seq, Ordering::Relaxed);
        }
        let fanout = f.cause != Some("tune_in");
        if fanout {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        let mut s = self.shard(local);
        s.accuracy_ms.record(error_ms);
        if fanout {
            s.fanout_us.record(latency);
            let e = s.updates.entry((station, f.seq)).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(latency);
        } else {
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

    fn progress(&self) -> Progress {
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

/// Attempts every listener of this worker at the planned rate, with a bounded
/// number of handshakes in flight. Returns when each one connected or failed.
async fn ramp(ctx: Arc<Ctx>) -> Duration {
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_HANDSHAKES));
    let gap =
        (ctx.plan.connect_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / ctx.plan.connect_rate));
    let start = Instant::now();
    for local in 0..ctx.plan.count {
        if let Some(gap) = gap {
            tokio::time::sleep_until(start + gap.mul_f64(local as f64)).await;
        }
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break;
        };
        ctx.attempted.fetch_add(1, Ordering::Relaxed);
        // Listener tasks end with the worker process: the runtime drops them
        // (and closes their sockets) when `worker_main` returns.
        tokio::spawn(connection::listener(ctx.clone(), local, permit));
    }
    let total = ctx.plan.count as u64;
    while ctx.connected.load(Ordering::Relaxed) + ctx.failed.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Measures the clock offset to node `node` now, then every few seconds.
async fn clock_task(ctx: Arc<Ctx>, node: usize, mut ws: client::Ws, mut clock: ClockOffset) {
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = client::sample_clock(&mut ws, &mut clock).await {
            tracing::warn!(error = %e, "clock measurement failed; keeping the last offset");
            return;
        }
        if let Some(off) = clock.offset_ms() {
            ctx.offsets_us[node].store((off * 1000.0).round() as i64, Ordering::Relaxed);
        }
    }
}

async fn emit(out: &mut tokio::io::Stdout, msg: &WorkerMsg) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(msg).context("cannot encode a worker message")?;
    line.push(b'\n');
    out.write_all(&line)
        .await
        .context("cannot write to the parent (did radio loadtest exit?)")?;
    out.flush().await?;
    Ok(())
}

/// The worker's stdin, read line by line: the plan, then the parent's commands.
type Input = tokio::io::Lines<BufReader<tokio::io::Stdin>>;

/// The worker process's entry point.
pub async fn worker_main() -> anyhow::Result<ExitCode> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let plan = read_plan(&mut stdin).await?;
    raise_open_files_limit();
    let ctx = Arc::new(Ctx::new(plan).await?);
    // Clock offsets first, so the first syncs are already corrected.
    let clocks = start_clocks(&ctx).await?;
    let code = serve(&ctx, &mut stdin).await?;
    for c in clocks {
        c.abort();
    }
    Ok(code)
}

async fn read_plan(stdin: &mut Input) -> anyhow::Result<WorkerPlan> {
    let line = stdin
        .next_line()
        .await?
        .context("no plan on stdin: this command is started by `radio loadtest`, not by hand")?;
    serde_json::from_str(&line).context("the plan on stdin is not a loadtest plan")
}

/// Raises the soft limit on open files to the hard one: every listener is a
/// socket.
fn raise_open_files_limit() {
    if let Ok((_, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        if let Err(e) = rlimit::increase_nofile_limit(hard) {
            tracing::warn!(error = %e, "cannot raise the open files limit");
        }
    }
}

impl Ctx {
    /// Resolves the nodes and encodes each station's `tune_in` frame.
    async fn new(plan: WorkerPlan) -> anyhow::Result<Ctx> {
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
            plan,
        })
    }
}

/// Measures the clock offset to each node (8 samples), and leaves a task per
/// node that keeps it current.
async fn start_clocks(ctx: &Arc<Ctx>) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let nodes = ctx.plan.urls.len();
    let mut clocks = Vec::with_capacity(nodes);
    for node in 0..nodes {
        let url = &ctx.targets[node].url;
        let (mut ws, _) = client::connect(url).await?;
        let mut clock = ClockOffset::default();
        for _ in 0..8 {
            client::sample_clock(&mut ws, &mut clock).await?;
        }
        if let Some(off) = clock.offset_ms() {
            ctx.offsets_us[node].store((off * 1000.0).round() as i64, Ordering::Relaxed);
        }
        clocks.push(tokio::spawn(clock_task(ctx.clone(), node, ws, clock)));
    }
    Ok(clocks)
}

/// Ramps the listeners up and reports progress until the parent says
/// `finish` (then drains and reports) or goes away.
async fn serve(ctx: &Arc<Ctx>, stdin: &mut Input) -> anyhow::Result<ExitCode> {
    let mut out = tokio::io::stdout();
    let mut ramp_task = tokio::spawn(ramp(ctx.clone()));
    let mut ramp_ms = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            r = &mut ramp_task, if ramp_ms.is_none() => {
                let took = r.context("the ramp-up task failed")?;
                ramp_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
                emit(&mut out, &WorkerMsg::RampDone(ctx.progress())).await?;
            }
            _ = tick.tick() => emit(&mut out, &WorkerMsg::Progress(ctx.progress())).await?,
            line = stdin.next_line() => {
                let Some(line) = line? else {
                    return Ok(ExitCode::FAILURE); // the parent went away
                };
                let cmd: ParentCmd = serde_json::from_str(&line)
                    .with_context(|| format!("unknown command from the parent: {line}"))?;
                match cmd {
                    ParentCmd::Finish { final_seqs, drain_ms } => {
                        if ramp_ms.is_none() {
                            ramp_task.abort();
                        }
                        drain(ctx, &final_seqs, Duration::from_millis(drain_ms)).await;
                        let report = report(ctx, &final_seqs, ramp_ms.unwrap_or(0));
                        emit(&mut out, &WorkerMsg::Report(Box::new(report))).await?;
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
        }
    }
}

/// Waits until every connected listener holds its station's final `seq`, or
/// `limit` passes.
async fn drain(ctx: &Ctx, final_seqs: &[u64], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let behind = (0..ctx.plan.count).any(|local| {
            let station = ctx.plan.station_of(ctx.plan.first + local);
            ctx.state[local].load(Ordering::Relaxed) == CONNECTED
                && ctx.last_seq[local].load(Ordering::Relaxed)
                    < final_seqs.get(station).copied().unwrap_or(0)
        });
        if !behind || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// This worker's figures, for the parent to merge.
fn report(ctx: &Ctx, final_seqs: &[u64], ramp_ms: u64) -> WorkerReport {
    let (station_listeners, station_holding_final) = station_counts(ctx, final_seqs);
    let mut r = WorkerReport {
        progress: ctx.progress(),
        failed_by_reason: lock(&ctx.failed_by_reason).clone(),
        handshake_us: lock(&ctx.handshake_us).data(),
        station_listeners,
        station_holding_final,
        ramp_ms,
        clock_offset_ms: ctx
            .offsets_us
            .iter()
            .map(|o| o.load(Ordering::Relaxed) as f64 / 1000.0)
            .collect(),
        ..WorkerReport::default()
    };
    add_shards(ctx, &mut r);
    r
}

/// Per station: the listeners that connected (and may have dropped since),
/// and those still connected holding its final `seq`.
fn station_counts(ctx: &Ctx, final_seqs: &[u64]) -> (Vec<u64>, Vec<u64>) {
    let stations = ctx.plan.stations.len();
    let mut station_listeners = vec![0u64; stations];
    let mut station_holding_final = vec![0u64; stations];
    for local in 0..ctx.plan.count {
        let station = ctx.plan.station_of(ctx.plan.first + local);
        let state = ctx.state[local].load(Ordering::Relaxed);
        if state == CONNECTED || state == DROPPED {
            station_listeners[station] += 1;
            let final_seq = final_seqs.get(station).copied().unwrap_or(0);
            if state == CONNECTED && ctx.last_seq[local].load(Ordering::Relaxed) >= final_seq {
                station_holding_final[station] += 1;
            }
        }
    }
    (station_listeners, station_holding_final)
}

/// Adds up what the shards measured into `r`.
fn add_shards(ctx: &Ctx, r: &mut WorkerReport) {
    let mut fanout = Hist::new();
    let mut accuracy = Hist::new();
    let mut updates: HashMap<(u32, u64), (u64, u64)> = HashMap::new();
    for s in &ctx.shards {
        let s = lock(s);
        fanout.add(&s.fanout_us);
        accuracy.add(&s.accuracy_ms);
        for (&k, &(n, max)) in &s.updates {
            let e = updates.entry(k).or_insert((0, 0));
            e.0 += n;
            e.1 = e.1.max(max);
        }
        r.tune_in_syncs += s.tune_in_syncs;
        r.skipped += s.skipped;
        r.duplicates += s.duplicates;
        r.seq_regressions += s.seq_regressions;
        for (k, v) in &s.errors_by_code {
            *r.errors_by_code.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &s.close_codes {
            *r.close_codes.entry(k.clone()).or_default() += v;
        }
    }
    r.fanout_us = fanout.data();
    r.accuracy_ms = accuracy.data();
    r.updates = updates
        .into_iter()
        .map(|((station, seq), (count, max_us))| UpdateSeen {
            station,
            seq,
            count,
            max_us,
        })
        .collect();
}
