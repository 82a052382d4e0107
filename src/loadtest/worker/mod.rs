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

mod churn;
mod connection;
mod ctx;
mod discard;
pub(crate) mod media;

pub(crate) use ctx::{Target, resolve};

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::plan::{ParentCmd, Progress, UpdateSeen, WorkerMsg, WorkerPlan, WorkerReport};
use super::stats::Hist;
use crate::client::{self, ClockOffset};
use ctx::{CONNECTED, Ctx, DROPPED, PENDING, lock};

/// Attempts every listener of this worker at the planned rate, with a bounded
/// number of handshakes in flight. Returns when each one connected or failed.
async fn ramp(ctx: Arc<Ctx>) -> Duration {
    let total = ctx.plan.count as u64;
    let settled =
        || ctx.connected.load(Ordering::Relaxed) + ctx.failed.load(Ordering::Relaxed) >= total;
    let start = |local, permit| {
        ctx.attempted.fetch_add(1, Ordering::Relaxed);
        // Listener tasks end with the worker process: the runtime drops them
        // (and closes their sockets) when `worker_main` returns.
        let task = tokio::spawn(connection::listener(ctx.clone(), local, permit));
        ctx.tasks.set(local, task.abort_handle());
    };
    super::plan::ramp(ctx.plan.count, ctx.plan.connect_rate, start, settled).await
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
    // The parent gone (its end of the pipe closed) ends the worker quietly.
    out.write_all(&line)
        .await
        .map_err(crate::errors::stdout_error)?;
    out.flush().await.map_err(crate::errors::stdout_error)?;
    Ok(())
}

/// The worker's stdin, read line by line: the plan, then the parent's commands.
type Input = tokio::io::Lines<BufReader<tokio::io::Stdin>>;

/// The worker process's entry point.
pub(crate) async fn worker_main() -> anyhow::Result<ExitCode> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let plan = read_plan(&mut stdin).await?;
    client::trust_ca(plan.ca_cert.as_deref())?;
    raise_open_files_limit();
    if let Some(stream) = plan.stream.clone() {
        return crate::loadtest::stream::reader::serve(plan, stream, &mut stdin).await;
    }
    let ctx = Arc::new(Ctx::new(plan).await?);
    if let (Some(mode), Some(url)) = (ctx.plan.fetch_media, ctx.plan.urls.first()) {
        let fetcher = media::Fetcher::new(mode, url, ctx.plan.count).await?;
        media::FETCHER.set(Arc::new(fetcher)).ok();
    }
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
    let mut churn_task = None;
    // The parent's latest newest-`seq`s, that progress counts against.
    let mut newest: (u64, Vec<u64>) = (0, Vec::new());
    let progress = |newest: &(u64, Vec<u64>)| {
        let (down, behind) = ctx.behind(&newest.1);
        Progress {
            newest_id: newest.0,
            down,
            behind,
            ..ctx.progress()
        }
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            r = &mut ramp_task, if ramp_ms.is_none() => {
                let took = r.context("the ramp-up task failed")?;
                ramp_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
                churn_task = Some(tokio::spawn(churn::run(ctx.clone())));
                emit(&mut out, &WorkerMsg::RampDone(progress(&newest))).await?;
            }
            _ = tick.tick() => emit(&mut out, &WorkerMsg::Progress(progress(&newest))).await?,
            line = stdin.next_line() => {
                let Some(line) = line? else {
                    return Ok(ExitCode::FAILURE); // the parent went away
                };
                let cmd: ParentCmd = serde_json::from_str(&line)
                    .with_context(|| format!("unknown command from the parent: {line}"))?;
                match cmd {
                    ParentCmd::Mark => {}
                    ParentCmd::Run { at_unix_ms, until_unix_ms } => {
                        if let Some(until) = until_unix_ms {
                            ctx.run_until_us
                                .store(until.saturating_mul(1000), Ordering::Relaxed);
                        }
                        ctx.run_from_us
                            .store(at_unix_ms.saturating_mul(1000), Ordering::Relaxed);
                    }
                    ParentCmd::Newest { id, seqs } => {
                        newest = (id, seqs);
                        // Answered at once: the parent times convergence.
                        emit(&mut out, &WorkerMsg::Progress(progress(&newest))).await?;
                    }
                    ParentCmd::Finish { final_seqs, drain_ms } => {
                        if ramp_ms.is_none() {
                            ramp_task.abort();
                        }
                        let churned = churn_task.take().map(|churn| churn.abort()).is_some();
                        drain(ctx, &final_seqs, Duration::from_millis(drain_ms), churned).await;
                        let report = report(ctx, &final_seqs, ramp_ms.unwrap_or(0));
                        emit(&mut out, &WorkerMsg::Report(Box::new(report))).await?;
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
        }
    }
}

/// Waits until every connected listener holds its station's final `seq`
/// (and, after churn, every replacement in its handshake is connected), or
/// `limit` passes.
async fn drain(ctx: &Ctx, final_seqs: &[u64], limit: Duration, churned: bool) {
    let deadline = Instant::now() + limit;
    loop {
        let behind = (0..ctx.plan.count).any(|local| {
            let station = ctx.plan.station_of(ctx.plan.first + local);
            let state = ctx.state[local].load(Ordering::Relaxed);
            (churned && state == PENDING)
                || state == CONNECTED
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
        progress: Progress {
            down: ctx.behind(final_seqs).0,
            ..ctx.progress()
        },
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
        media: media::FETCHER.get().map(|m| m.report()),
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
