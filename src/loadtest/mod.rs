//! `radio loadtest`: the stress generator, and the instrument behind every
//! performance figure the project states.
//!
//! The parent process plans the run, plays one broadcaster per station
//! ([`broadcaster`]), and starts worker processes of the same binary
//! (`radio loadtest-worker`, [`worker`]) that hold the listeners, because one
//! process may only open so many sockets. A run has three phases:
//!
//! 1. **Ramp**: the broadcasters claim their stations and send a first
//!    update; the workers connect their listeners (at `--connect-rate`, or as
//!    fast as the server accepts) and tune each in.
//! 2. **Run**: for `--duration`, every broadcaster sends an update every
//!    `--update-interval`; every listener measures every sync it receives.
//! 3. **Finish**: the parent tells the workers each station's newest `seq`;
//!    they wait until their listeners hold it (bounded), then report their
//!    HDR histograms as `(value, count)` pairs, which the parent merges
//!    ([`stats`]) into one report ([`report`]).
//!
//! Numbers are only as honest as the generator is idle, so it also measures
//! its own CPU and warns when it used most of the machine.

pub mod broadcaster;
pub mod plan;
pub mod progress;
pub mod report;
pub mod stats;
pub mod worker;

use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use worker::worker_main;

use crate::cli::LoadtestArgs;
use crate::client;
use crate::protocol::{self, StationName};
use plan::{ParentCmd, Progress, WorkerMsg, WorkerPlan, WorkerReport};
use progress::Ui;
use report::{Generator, Parameters, ParentFigures, ServerCost};

/// Time one listener has for TCP connect, upgrade and `welcome`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the workers may wait at the end for listeners to catch up with
/// each station's newest state; a listener still behind then counts as not
/// delivered.
const DRAIN: Duration = Duration::from_secs(10);
/// Generator CPU share of the machine above which its figures are suspect.
const GENERATOR_CPU_WARN_PCT: f64 = 80.0;

/// What a worker's stdout reader saw.
enum Event {
    Msg(WorkerMsg),
    /// The worker's stdout closed (it exited).
    Ended,
}

/// The worker processes and what they last said.
struct Fleet {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    pids: Vec<u32>,
    latest: Vec<Progress>,
    ramp_done: Vec<bool>,
    reports: Vec<Option<WorkerReport>>,
    events: mpsc::UnboundedReceiver<(usize, Event)>,
}

impl Fleet {
    async fn spawn(plans: Vec<WorkerPlan>) -> anyhow::Result<Fleet> {
        let exe =
            std::env::current_exe().context("cannot find the radio binary to start workers")?;
        let (tx, events) = mpsc::unbounded_channel();
        let n = plans.len();
        let mut fleet = Fleet {
            children: Vec::with_capacity(n),
            stdins: Vec::with_capacity(n),
            pids: Vec::with_capacity(n),
            latest: vec![Progress::default(); n],
            ramp_done: vec![false; n],
            reports: (0..n).map(|_| None).collect(),
            events,
        };
        for (w, plan) in plans.into_iter().enumerate() {
            let mut child = tokio::process::Command::new(&exe)
                .arg("loadtest-worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start worker process {}", exe.display()))?;
            let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                bail!("worker {w} has no stdin/stdout pipe");
            };
            let mut line = serde_json::to_vec(&plan)?;
            line.push(b'\n');
            stdin
                .write_all(&line)
                .await
                .with_context(|| format!("cannot send worker {w} its plan"))?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<WorkerMsg>(&line) {
                        Ok(msg) => {
                            if tx.send((w, Event::Msg(msg))).is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(worker = w, error = %e, "unreadable worker line"),
                    }
                }
                let _ = tx.send((w, Event::Ended));
            });
            fleet.pids.push(child.id().unwrap_or(0));
            fleet.children.push(child);
            fleet.stdins.push(stdin);
        }
        Ok(fleet)
    }

    /// Waits for the next worker event and applies it.
    async fn next(&mut self) -> anyhow::Result<()> {
        let (w, event) = self
            .events
            .recv()
            .await
            .context("every worker's output closed")?;
        match event {
            Event::Msg(WorkerMsg::Progress(p)) => self.latest[w] = p,
            Event::Msg(WorkerMsg::RampDone(p)) => {
                self.latest[w] = p;
                self.ramp_done[w] = true;
            }
            Event::Msg(WorkerMsg::Report(r)) => {
                self.latest[w] = r.progress;
                self.reports[w] = Some(*r);
            }
            Event::Ended => {
                if self.reports[w].is_none() {
                    bail!("worker {w} exited before it reported (its error, if any, is above)");
                }
            }
        }
        Ok(())
    }

    fn totals(&self) -> Progress {
        let mut t = Progress::default();
        for p in &self.latest {
            t.attempted += p.attempted;
            t.connected += p.connected;
            t.failed += p.failed;
            t.dropped += p.dropped;
            t.syncs += p.syncs;
            t.p99_us = t.p99_us.max(p.p99_us);
        }
        t
    }

    async fn command(&mut self, cmd: &ParentCmd) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(cmd)?;
        line.push(b'\n');
        for (w, stdin) in self.stdins.iter_mut().enumerate() {
            stdin
                .write_all(&line)
                .await
                .with_context(|| format!("cannot reach worker {w}"))?;
            stdin.flush().await?;
        }
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs `radio loadtest`.
pub async fn run(args: LoadtestArgs) -> anyhow::Result<ExitCode> {
    if args.listeners == 0 {
        bail!("--listeners must be at least 1");
    }
    if args.stations == 0 {
        bail!("--stations must be at least 1");
    }
    if args.update_interval.is_zero() {
        bail!("--update-interval must be longer than 0 (write 1s, 250ms)");
    }
    if args.heartbeat_interval.is_some_and(|d| d.is_zero()) {
        bail!("--heartbeat-interval must be longer than 0");
    }
    if let Some(p) = args.min_delivery {
        if !(0.0..=100.0).contains(&p) {
            bail!("--min-delivery is a percentage from 0 to 100, not {p}");
        }
    }
    let urls = args
        .urls
        .iter()
        .map(|u| client::ws_url(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut targets = Vec::with_capacity(urls.len());
    for u in &urls {
        targets.push(worker::resolve(u).await?);
    }
    let workers = plan::parse_workers(&args.workers, args.listeners)?;
    let per_worker = args.listeners.div_ceil(workers);
    if let Ok((_, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        let room = hard.saturating_sub(64);
        if per_worker as u64 > room {
            bail!(
                "each of {workers} workers would hold {per_worker} connections, but a process may \
                 open only {hard} files here; use --workers {} or more (or --workers auto)",
                (args.listeners as u64).div_ceil(room.max(1))
            );
        }
    }
    let source_addrs = match &args.source_addrs {
        Some(s) => plan::parse_source_addrs(s)?,
        None if targets.iter().all(|t| t.addr.ip().is_loopback()) => {
            plan::default_loopback_sources(args.listeners)
        }
        None => Vec::new(),
    };
    for &pid in &args.server_pids {
        report::sample_proc(pid).with_context(|| {
            format!("--server-pid {pid}: cannot read /proc/{pid} (is the server running here?)")
        })?;
    }
    let run_id = protocol::random_token(3);
    let station_names = (0..args.stations)
        .map(|s| {
            let name = format!("{}-{run_id}-{s}", args.station_prefix);
            StationName::new(&name).map_err(|why| {
                anyhow::anyhow!("--station-prefix makes station names like {name:?}: {why}")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started_at_unix_ms = protocol::now_ms();
    let epoch_server_ms = started_at_unix_ms;
    let parameters = Parameters {
        urls: urls.clone(),
        listeners: args.listeners,
        stations: args.stations,
        duration_s: args.duration.as_secs_f64(),
        update_interval_ms: millis(args.update_interval),
        heartbeat_interval_ms: args.heartbeat_interval.map(millis),
        connect_rate: args.connect_rate,
        workers,
        source_addrs: source_addrs.iter().map(ToString::to_string).collect(),
        server_pids: args.server_pids.clone(),
        max_p99_ms: args.max_p99.map(|d| d.as_secs_f64() * 1000.0),
        min_delivery_pct: args.min_delivery,
        station_names: station_names.iter().map(ToString::to_string).collect(),
        started_at_unix_ms,
    };

    let mut ui = Ui::new();
    ui.note(&format!(
        "radio loadtest {run_id}: {} listeners, {} stations, {} node(s), {workers} worker(s), {} source address(es)",
        args.listeners,
        args.stations,
        urls.len(),
        source_addrs.len().max(1),
    ));

    // Broadcasters first, so every station has a state to tune in to.
    let schedule = broadcaster::Schedule {
        duration: args.duration,
        update_interval: args.update_interval,
        heartbeat_interval: args.heartbeat_interval,
    };
    let connects = station_names.iter().enumerate().map(|(s, name)| {
        broadcaster::connect(
            &urls[s % urls.len()],
            name.clone(),
            args.key.clone(),
            epoch_server_ms,
            schedule,
        )
    });
    let mut broadcasters = futures_util::future::try_join_all(connects)
        .await
        .context("cannot start the broadcasters")?;

    let server_before = report::sample_all(&args.server_pids);
    let plans = plan::split(args.listeners, workers)
        .into_iter()
        .enumerate()
        .map(|(w, (first, count))| WorkerPlan {
            worker: w,
            urls: urls.clone(),
            stations: station_names.iter().map(ToString::to_string).collect(),
            first,
            count,
            connect_rate: f64::from(args.connect_rate) / workers as f64,
            source_addrs: source_addrs.clone(),
            epoch_server_ms,
            handshake_timeout_ms: millis(HANDSHAKE_TIMEOUT),
        })
        .collect();
    let mut fleet = Fleet::spawn(plans).await?;
    let mut generator_pids = vec![std::process::id()];
    generator_pids.extend(fleet.pids.iter().copied());
    let generator_before = report::sample_all(&generator_pids);
    let ramp_started = Instant::now();

    // Ramp.
    ui.start_ramp(args.listeners as u64);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while !fleet.ramp_done.iter().all(|&d| d) {
        tokio::select! {
            r = fleet.next() => r?,
            _ = tick.tick() => ui.ramp(&fleet.totals()),
        }
    }
    let after_ramp = fleet.totals();
    let ramp_wall_s = ramp_started.elapsed().as_secs_f64();
    ui.ramp(&after_ramp);
    let server_after = report::sample_all(&args.server_pids);
    let generator_start = report::sample_all(&generator_pids);
    ui.note(&format!(
        "ramp done: {} connected, {} failed; running for {}",
        after_ramp.connected,
        after_ramp.failed,
        humantime::format_duration(args.duration)
    ));

    // Run.
    let start = Instant::now();
    for b in &mut broadcasters {
        b.start(start);
    }
    ui.start_run(args.duration, after_ramp.syncs);
    let end = start + args.duration;
    loop {
        tokio::select! {
            r = fleet.next() => r?,
            _ = tick.tick() => ui.run(&fleet.totals(), start.elapsed()),
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    let mut outcomes = Vec::with_capacity(broadcasters.len());
    for b in &mut broadcasters {
        outcomes.push(b.outcome().await);
    }
    let run_s = start.elapsed().as_secs_f64();
    let generator_end = report::sample_all(&generator_pids);
    let server_end = report::sample_all(&args.server_pids);
    ui.finish();
    for (s, o) in outcomes.iter().enumerate() {
        if let Some(why) = &o.lost {
            ui.note(&format!(
                "warning: broadcaster of {} failed: {why}",
                station_names[s]
            ));
        }
    }

    // Finish: every listener should now catch up with the newest states.
    let final_seqs: Vec<u64> = outcomes.iter().map(|o| o.final_seq).collect();
    fleet
        .command(&ParentCmd::Finish {
            final_seqs,
            drain_ms: millis(DRAIN),
        })
        .await?;
    let collect = async {
        while fleet.reports.iter().any(Option::is_none) {
            fleet.next().await?;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(DRAIN + Duration::from_secs(60), collect)
        .await
        .context("the workers did not report within 70s of the end")??;
    for child in &mut fleet.children {
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
        }
    }
    let stops = broadcasters.into_iter().map(broadcaster::Handle::stop);
    futures_util::future::join_all(stops).await;

    let reports: Vec<WorkerReport> = fleet.reports.into_iter().flatten().collect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pct_of = |cpu: f64, wall: f64| {
        if wall > 0.0 {
            (cpu / (wall * cpus as f64) * 1000.0).round() / 10.0
        } else {
            0.0
        }
    };
    let machine_pct = |cpu: f64| pct_of(cpu, run_s);
    let generator_cpu = generator_end.cpu_seconds - generator_start.cpu_seconds;
    let generator_ramp_cpu = generator_start.cpu_seconds - generator_before.cpu_seconds;
    let generator_pct = machine_pct(generator_cpu);
    let generator_ramp_pct = pct_of(generator_ramp_cpu, ramp_wall_s);
    let busiest = if generator_ramp_pct > generator_pct {
        ("ramp-up", generator_ramp_pct)
    } else {
        ("run", generator_pct)
    };
    let generator = Generator {
        cpu_seconds_ramp: (generator_ramp_cpu * 100.0).round() / 100.0,
        cpu_seconds_run: (generator_cpu * 100.0).round() / 100.0,
        cpu_pct_of_machine_ramp: generator_ramp_pct,
        cpu_pct_of_machine_run: generator_pct,
        cpus,
        warning: (busiest.1 > GENERATOR_CPU_WARN_PCT).then(|| {
            format!(
                "the load generator used {:.0}% of the machine's {cpus} CPUs during the {}; its \
                 latencies include its own queueing and are pessimistic (run it on another \
                 machine, or with fewer listeners)",
                busiest.1, busiest.0
            )
        }),
        clock_offsets_ms: Vec::new(),
    };
    let server = (!args.server_pids.is_empty()).then(|| ServerCost {
        pids: args.server_pids.clone(),
        rss_before_bytes: server_before.rss_bytes,
        rss_after_connect_bytes: server_after.rss_bytes,
        rss_end_bytes: server_end.rss_bytes,
        rss_per_connection_bytes: None,
        cpu_seconds_ramp: ((server_after.cpu_seconds - server_before.cpu_seconds) * 100.0).round()
            / 100.0,
        cpu_seconds_run: ((server_end.cpu_seconds - server_after.cpu_seconds) * 100.0).round()
            / 100.0,
        cpu_pct_of_machine_run: machine_pct(server_end.cpu_seconds - server_after.cpu_seconds),
    });
    let mut broadcaster_errors = std::collections::BTreeMap::new();
    for o in &outcomes {
        for (k, v) in &o.errors {
            *broadcaster_errors
                .entry(format!("broadcaster_{k}"))
                .or_default() += v;
        }
    }
    let ramp_s = reports.iter().map(|r| r.ramp_ms).max().unwrap_or(0) as f64 / 1000.0;
    let parent = ParentFigures {
        parameters,
        ramp_s,
        run_s,
        updates_sent: outcomes.iter().map(|o| o.updates_sent).sum(),
        heartbeats_sent: outcomes.iter().map(|o| o.heartbeats_sent).sum(),
        unacked: outcomes.iter().map(|o| o.unacked).sum(),
        states_per_station: outcomes
            .iter()
            .map(|o| {
                (o.updates_sent + o.heartbeats_sent).saturating_sub(o.errors.values().sum::<u64>())
            })
            .collect(),
        broadcaster_errors,
        server,
        generator,
    };
    let mut report = report::build(parent, &reports);
    report::check(&mut report);
    print!("{}", report::human(&report));
    if let Some(w) = &report.generator.warning {
        eprintln!("radio loadtest: warning: {w}");
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    Ok(if report.thresholds.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
