//! The worker's side of `--stream`: its share of the HTTP stream readers,
//! each one small task that connects (from its source address), asks for
//! the stream, and counts the audio bytes it gets: the time to the first
//! one, every gap of more than [`STALL`] without one, and the bytes of the
//! run phase (from the parent's `mark` to its `finish`).
//!
//! A reader owns no buffer: it waits for its socket to be readable and
//! reads into its thread's one buffer, so 10,000 readers hold their
//! sockets and a few words each.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::body::{self, Body};
use crate::loadtest::net::{connect_from, io_reason};
use crate::loadtest::plan::{
    ParentCmd, Progress, StreamFigures, StreamPlan, WorkerMsg, WorkerPlan, WorkerReport,
};
use crate::loadtest::stats::Hist;

/// A gap without an audio byte longer than this is a stall.
pub(crate) const STALL: Duration = Duration::from_secs(1);
/// The bitrate a stream is taken to have when it does not say (`icy-br`).
pub(crate) const ASSUMED_KBPS: u32 = 128;
/// Most bytes of a response head.
const MAX_HEAD: usize = 16 * 1024;

const PENDING: u8 = 0;
const STARTED: u8 = 1;
const FAILED: u8 = 2;
const ENDED: u8 = 3;
/// In `mark`: the reader had not started at the mark.
const UNMARKED: u64 = u64::MAX;

thread_local! {
    /// Every reader of a thread reads into this, between two awaits.
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

/// The worker's readers and what they measured.
struct Ctx {
    plan: WorkerPlan,
    stream: StreamPlan,
    attempted: AtomicU64,
    started: AtomicU64,
    failed: AtomicU64,
    ended: AtomicU64,
    stalls: AtomicU64,
    readers_stalled: AtomicU64,
    stalled_ms: AtomicU64,
    total_bytes: AtomicU64,
    /// `icy-br` as the first response said it (0: not said).
    kbps: AtomicU32,
    state: Vec<AtomicU8>,
    bytes: Vec<AtomicU64>,
    /// Each reader's bytes at the mark.
    mark: Vec<AtomicU64>,
    start_us: Mutex<Hist>,
    failed_by_reason: Mutex<BTreeMap<String, u64>>,
    ended_by_reason: Mutex<BTreeMap<String, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ctx {
    fn progress(&self) -> Progress {
        Progress {
            attempted: self.attempted.load(Ordering::Relaxed),
            connected: self.started.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.ended.load(Ordering::Relaxed),
            syncs: 0,
            p99_us: lock(&self.start_us).quantile(0.99),
            bytes: self.total_bytes.load(Ordering::Relaxed),
            stalls: self.stalls.load(Ordering::Relaxed),
            ..Progress::default()
        }
    }

    fn fail(&self, local: usize, reason: String) {
        self.state[local].store(FAILED, Ordering::Relaxed);
        self.failed.fetch_add(1, Ordering::Relaxed);
        *lock(&self.failed_by_reason).entry(reason).or_default() += 1;
    }

    fn end(&self, local: usize, reason: String) {
        self.state[local].store(ENDED, Ordering::Relaxed);
        self.ended.fetch_add(1, Ordering::Relaxed);
        *lock(&self.ended_by_reason).entry(reason).or_default() += 1;
    }
}

/// Runs a `--stream` worker: ramps its readers up, reports progress, and
/// answers the parent's `mark` and `finish`.
pub(crate) async fn serve(
    plan: WorkerPlan,
    stream: StreamPlan,
    stdin: &mut tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>,
) -> anyhow::Result<std::process::ExitCode> {
    let n = plan.count;
    let ctx = Arc::new(Ctx {
        plan,
        stream,
        attempted: AtomicU64::new(0),
        started: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        ended: AtomicU64::new(0),
        stalls: AtomicU64::new(0),
        readers_stalled: AtomicU64::new(0),
        stalled_ms: AtomicU64::new(0),
        total_bytes: AtomicU64::new(0),
        kbps: AtomicU32::new(0),
        state: (0..n).map(|_| AtomicU8::new(PENDING)).collect(),
        bytes: (0..n).map(|_| AtomicU64::new(0)).collect(),
        mark: (0..n).map(|_| AtomicU64::new(UNMARKED)).collect(),
        start_us: Mutex::new(Hist::new()),
        failed_by_reason: Mutex::new(BTreeMap::new()),
        ended_by_reason: Mutex::new(BTreeMap::new()),
    });
    let mut out = tokio::io::stdout();
    let mut ramp_task = tokio::spawn(ramp(ctx.clone()));
    let mut ramp_ms = None;
    let mut marked: Option<Instant> = None;
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
                    return Ok(std::process::ExitCode::FAILURE); // the parent went away
                };
                let cmd: ParentCmd = serde_json::from_str(&line)
                    .with_context(|| format!("unknown command from the parent: {line}"))?;
                match cmd {
                    // The WebSocket run's; the stream run marks its own.
                    ParentCmd::Run { .. } => {}
                    // The WebSocket listeners' newest states: none here.
                    ParentCmd::Newest { .. } => {}
                    ParentCmd::Mark => {
                        for local in 0..n {
                            if ctx.state[local].load(Ordering::Relaxed) == STARTED {
                                let b = ctx.bytes[local].load(Ordering::Relaxed);
                                ctx.mark[local].store(b, Ordering::Relaxed);
                            }
                        }
                        marked = Some(Instant::now());
                    }
                    ParentCmd::Finish { .. } => {
                        if ramp_ms.is_none() {
                            ramp_task.abort();
                        }
                        let report = report(&ctx, marked, ramp_ms.unwrap_or(0));
                        emit(&mut out, &WorkerMsg::Report(Box::new(report))).await?;
                        return Ok(std::process::ExitCode::SUCCESS);
                    }
                }
            }
        }
    }
}

async fn emit(out: &mut tokio::io::Stdout, msg: &WorkerMsg) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(msg).context("cannot encode a worker message")?;
    line.push(b'\n');
    out.write_all(&line)
        .await
        .map_err(crate::errors::stdout_error)?;
    out.flush().await.map_err(crate::errors::stdout_error)?;
    Ok(())
}

/// Starts every reader at the planned rate, a bounded number of them
/// between connect and first byte; returns once each started or failed.
async fn ramp(ctx: Arc<Ctx>) -> Duration {
    let total = ctx.plan.count as u64;
    let settled =
        || ctx.started.load(Ordering::Relaxed) + ctx.failed.load(Ordering::Relaxed) >= total;
    let start = |local, permit| {
        ctx.attempted.fetch_add(1, Ordering::Relaxed);
        // Reader tasks end with the worker process.
        tokio::spawn(reader(ctx.clone(), local, permit));
    };
    crate::loadtest::plan::ramp(ctx.plan.count, ctx.plan.connect_rate, start, settled).await
}

/// One reader, from TCP connect to the end of the run.
async fn reader(ctx: Arc<Ctx>, local: usize, permit: OwnedSemaphorePermit) {
    let i = ctx.plan.first + local;
    let t0 = Instant::now();
    let limit = Duration::from_millis(ctx.plan.handshake_timeout_ms);
    // Boxed: the start's state is freed once the audio flows.
    let start = Box::pin(start(&ctx, i));
    let (mut sock, mut body) = match tokio::time::timeout(limit, start).await {
        Ok(Ok(started)) => started,
        Ok(Err(reason)) => return ctx.fail(local, reason),
        Err(_) => return ctx.fail(local, "timeout".into()),
    };
    // The first audio byte may have come with the head.
    let mut got = body.1;
    while got == 0 {
        match tokio::time::timeout_at(t0 + limit, read(&mut sock, &mut body.0)).await {
            Ok(Ok(Some(n))) => got = n,
            Ok(Ok(None)) => return ctx.fail(local, "ended_before_audio".into()),
            Ok(Err(e)) => return ctx.fail(local, io_reason(&e)),
            Err(_) => return ctx.fail(local, "no_audio".into()),
        }
    }
    lock(&ctx.start_us).record(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
    ctx.bytes[local].fetch_add(got as u64, Ordering::Relaxed);
    ctx.total_bytes.fetch_add(got as u64, Ordering::Relaxed);
    ctx.state[local].store(STARTED, Ordering::Relaxed);
    ctx.started.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    let mut body = body.0;
    let mut last = Instant::now();
    let mut ever_stalled = false;
    loop {
        let r = match tokio::time::timeout_at(last + STALL, read(&mut sock, &mut body)).await {
            Ok(r) => r,
            Err(_) => {
                // No audio for a second: one stall, however long it lasts.
                ctx.stalls.fetch_add(1, Ordering::Relaxed);
                if !ever_stalled {
                    ever_stalled = true;
                    ctx.readers_stalled.fetch_add(1, Ordering::Relaxed);
                }
                let r = read_audio(&mut sock, &mut body).await;
                let gap = u64::try_from(last.elapsed().as_millis()).unwrap_or(u64::MAX);
                ctx.stalled_ms.fetch_add(gap, Ordering::Relaxed);
                r
            }
        };
        match r {
            Ok(Some(0)) => continue,
            Ok(Some(n)) => {
                ctx.bytes[local].fetch_add(n as u64, Ordering::Relaxed);
                ctx.total_bytes.fetch_add(n as u64, Ordering::Relaxed);
                last = Instant::now();
            }
            Ok(None) => return ctx.end(local, "ended_by_server".into()),
            Err(e) => return ctx.end(local, io_reason(&e)),
        }
    }
}

/// Reads until some audio comes (or the stream ends).
async fn read_audio(sock: &mut TcpStream, body: &mut Body) -> std::io::Result<Option<usize>> {
    loop {
        match read(sock, body).await? {
            Some(0) => continue,
            other => return Ok(other),
        }
    }
}

/// Waits for the socket, reads what is there into the thread's buffer,
/// and gives how many audio bytes it held (`None`: the stream ended).
async fn read(sock: &mut TcpStream, body: &mut Body) -> std::io::Result<Option<usize>> {
    loop {
        sock.readable().await?;
        let r = BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            match sock.try_read(&mut buf) {
                Ok(0) => Ok(None),
                Ok(n) => Ok(Some(body.feed(&buf[..n]))),
                Err(e) => Err(e),
            }
        });
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
            Ok(Some(_)) if body.ended() => return Ok(None),
            Ok(r) => return Ok(r),
        }
    }
}

/// Connects reader `i`, asks for its stream and reads the response head:
/// the socket, and the body with the audio bytes that came with the head.
async fn start(ctx: &Ctx, i: usize) -> Result<(TcpStream, (Body, usize)), String> {
    let target = &ctx.stream.targets[i % ctx.stream.targets.len()];
    let mut sock = connect_from(target.addr, ctx.plan.source_of(i))
        .await
        .map_err(|e| io_reason(&e))?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: radio-loadtest/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path,
        target.host,
        crate::version::VERSION
    );
    sock.write_all(req.as_bytes())
        .await
        .map_err(|e| io_reason(&e))?;
    let mut head_buf = Vec::with_capacity(1024);
    loop {
        sock.readable().await.map_err(|e| io_reason(&e))?;
        let mut chunk = [0u8; 2048];
        match sock.try_read(&mut chunk) {
            Ok(0) => return Err("ended_before_head".into()),
            Ok(n) => head_buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(io_reason(&e)),
        }
        match body::head(&head_buf) {
            None if head_buf.len() > MAX_HEAD => return Err("head_too_long".into()),
            None => continue,
            Some(Err(why)) => return Err(why),
            Some(Ok(head)) if head.status != 200 => return Err(format!("http_{}", head.status)),
            Some(Ok(head)) => {
                if let Some(k) = head.kbps {
                    // The first stream to say its bitrate sets it; a
                    // later answer (already set) changes nothing.
                    let _ = ctx
                        .kbps
                        .compare_exchange(0, k, Ordering::Relaxed, Ordering::Relaxed);
                }
                let mut body = Body::new(head.chunked);
                let first = body.feed(&head_buf[head.body_at..]);
                return Ok((sock, (body, first)));
            }
        }
    }
}

/// This worker's figures: the run phase's bytes per reader that was
/// started at the mark and still reading at the end.
fn report(ctx: &Ctx, marked: Option<Instant>, ramp_ms: u64) -> WorkerReport {
    let window_s = marked.map_or(0.0, |m| m.elapsed().as_secs_f64());
    let kbps = ctx.kbps.load(Ordering::Relaxed);
    // What a reader should have got in the window, at the stream's bitrate.
    let per_s = f64::from(if kbps > 0 { kbps } else { ASSUMED_KBPS }) * 125.0;
    let expected = per_s * window_s;
    let mut lost = 0u64;
    let mut rate = Hist::new();
    let mut window_bytes = 0u64;
    let mut window_readers = 0u64;
    let mut stalled_now = 0u64;
    for local in 0..ctx.plan.count {
        let at_mark = ctx.mark[local].load(Ordering::Relaxed);
        let state = ctx.state[local].load(Ordering::Relaxed);
        if at_mark == UNMARKED || state != STARTED || window_s <= 0.0 {
            continue;
        }
        let got = ctx.bytes[local]
            .load(Ordering::Relaxed)
            .saturating_sub(at_mark);
        window_bytes += got;
        window_readers += 1;
        // Short of more than a second's audio: what is missing beyond it
        // (a second's worth is the grain of pacing and of the mark).
        lost += (expected - per_s - got as f64).max(0.0).round() as u64;
        rate.record((got as f64 / window_s).round() as u64);
        if got == 0 {
            stalled_now += 1;
        }
    }
    WorkerReport {
        progress: ctx.progress(),
        failed_by_reason: lock(&ctx.failed_by_reason).clone(),
        ramp_ms,
        stream: Some(StreamFigures {
            start_us: lock(&ctx.start_us).data(),
            bytes_per_s: rate.data(),
            window_s,
            window_readers,
            window_bytes,
            lost_bytes: lost,
            kbps: (kbps > 0).then_some(kbps),
            stalls: ctx.stalls.load(Ordering::Relaxed),
            readers_stalled: ctx.readers_stalled.load(Ordering::Relaxed),
            stalled_ms: ctx.stalled_ms.load(Ordering::Relaxed),
            silent_in_run: stalled_now,
            ended_by_reason: lock(&ctx.ended_by_reason).clone(),
        }),
        ..WorkerReport::default()
    }
}
