//! The steps of one `radio loadtest` run, in the order the module doc names
//! them: plan ([`RunPlan`]), then on a [`Session`]: start, ramp, run, finish,
//! and the report with its gate. Apart from `mod.rs` so that file stays the
//! overview and this one holds the detail of each step.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::time::{Instant, Interval};

use super::broadcaster::{self, Outcome};
use super::fleet::Fleet;
use super::marks::{self, MarkReport, MarkSignal, Marks};
use super::observer;
use super::plan::{self, ParentCmd, Progress, WorkerPlan, WorkerReport};
use super::progress::Ui;
use super::report::{self, Generator, Parameters, ParentFigures, ProcSample, ServerCost};
use super::worker::{self, Target};
use crate::cli::LoadtestArgs;
use crate::client;
use crate::errors::Usage;
use crate::protocol::{self, StationName};

/// Time one listener has for TCP connect, upgrade and `welcome`.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the workers may wait at the end for listeners to catch up with
/// each station's newest state; a listener still behind then counts as not
/// delivered.
const DRAIN: Duration = Duration::from_secs(10);
/// How far ahead the workers are told of the run's start.
const RUN_LEAD: Duration = Duration::from_millis(100);
/// Generator CPU share of the machine above which its figures are suspect.
const GENERATOR_CPU_WARN_PCT: f64 = 80.0;

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the run will do, checked and worked out before anything connects.
pub(super) struct RunPlan {
    /// The nodes, as normalized `ws(s)://` URLs.
    urls: Vec<String>,
    workers: usize,
    source_addrs: Vec<IpAddr>,
    run_id: String,
    station_names: Vec<StationName>,
    /// When the run started; also the broadcasters' epoch (position 0).
    started_at_unix_ms: i64,
}

impl RunPlan {
    pub(super) async fn new(args: &LoadtestArgs) -> anyhow::Result<RunPlan> {
        // Arguments no run can be made of are usage errors (exit 2).
        let usage = |e: anyhow::Error| anyhow::Error::new(Usage(e.to_string()));
        validate(args).map_err(usage)?;
        let urls = args
            .urls
            .iter()
            .map(|u| client::ws_url(u))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(usage)?;
        let mut targets = Vec::with_capacity(urls.len());
        for u in &urls {
            targets.push(worker::resolve(u).await?);
        }
        let workers = plan::parse_workers(&args.workers, args.listeners).map_err(usage)?;
        check_open_files(args.listeners, workers)?;
        let source_addrs = source_addrs(args, &targets).map_err(usage)?;
        check_server_pids(&args.server_pids)?;
        let run_id = protocol::random_token(3);
        let station_names = station_names(args, &run_id)?;
        Ok(RunPlan {
            urls,
            workers,
            source_addrs,
            run_id,
            station_names,
            started_at_unix_ms: protocol::now_ms(),
        })
    }

    /// The parameters as the report states them.
    fn parameters(&self, args: &LoadtestArgs) -> Parameters {
        Parameters {
            urls: self.urls.clone(),
            listeners: args.listeners,
            stations: self.station_names.len(),
            duration_s: args.duration.as_secs_f64(),
            update_interval_ms: millis(args.update_interval),
            heartbeat_interval_ms: args.heartbeat_interval.map(millis),
            connect_rate: args.connect_rate,
            workers: self.workers,
            source_addrs: self.source_addrs.iter().map(ToString::to_string).collect(),
            server_pids: args.server_pids.clone(),
            max_p99_ms: args.max_p99.map(|d| d.as_secs_f64() * 1000.0),
            min_delivery_pct: args.min_delivery,
            station_names: self.station_names.iter().map(ToString::to_string).collect(),
            listen_only: !args.listen_only.is_empty(),
            started_at_unix_ms: self.started_at_unix_ms,
        }
    }

    /// The first line of the run's output.
    fn headline(&self, args: &LoadtestArgs) -> String {
        format!(
            "radio loadtest {}: {} listeners, {} stations{}, {} node(s), {} worker(s), {} source address(es)",
            self.run_id,
            args.listeners,
            self.station_names.len(),
            if args.listen_only.is_empty() {
                ""
            } else {
                " (listening only)"
            },
            self.urls.len(),
            self.workers,
            self.source_addrs.len().max(1),
        )
    }

    /// One broadcaster per station, each having claimed its station and sent
    /// a first update; with `--listen-only`, one observer per station,
    /// tuned in.
    async fn broadcasters(&self, args: &LoadtestArgs) -> anyhow::Result<Vec<broadcaster::Handle>> {
        if !args.listen_only.is_empty() {
            let tunes = self.station_names.iter().enumerate().map(|(s, name)| {
                observer::connect(&self.urls[s % self.urls.len()], name.clone(), args.duration)
            });
            return futures_util::future::try_join_all(tunes)
                .await
                .context("cannot listen to the stations");
        }
        let schedule = broadcaster::Schedule {
            duration: args.duration,
            update_interval: args.update_interval,
            heartbeat_interval: args.heartbeat_interval,
        };
        let connects = self.station_names.iter().enumerate().map(|(s, name)| {
            broadcaster::connect(
                broadcaster::Nodes {
                    urls: &self.urls,
                    node: s % self.urls.len(),
                    reconnect: args.reconnect,
                },
                name.clone(),
                args.key.clone(),
                self.started_at_unix_ms,
                schedule,
            )
        });
        futures_util::future::try_join_all(connects)
            .await
            .context("cannot start the broadcasters")
    }

    /// Each worker's share of the listeners.
    fn worker_plans(&self, args: &LoadtestArgs) -> Vec<WorkerPlan> {
        plan::split(args.listeners, self.workers)
            .into_iter()
            .enumerate()
            .map(|(w, (first, count))| WorkerPlan {
                worker: w,
                urls: self.urls.clone(),
                stations: self.station_names.iter().map(ToString::to_string).collect(),
                first,
                count,
                connect_rate: f64::from(args.connect_rate) / self.workers as f64,
                source_addrs: self.source_addrs.clone(),
                epoch_server_ms: args
                    .listen_only
                    .is_empty()
                    .then_some(self.started_at_unix_ms),
                handshake_timeout_ms: millis(HANDSHAKE_TIMEOUT),
                churn_per_min: args.churn.map_or(0.0, |c| c.per_min / self.workers as f64),
                reconnect: args.reconnect,
                stream: None,
                ca_cert: args.ca_cert.clone(),
                fetch_media: args.fetch_media,
            })
            .collect()
    }
}

/// Refuses arguments no run can be made of.
fn validate(args: &LoadtestArgs) -> anyhow::Result<()> {
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
    Ok(())
}

/// Refuses a split that gives a worker more connections than a process may
/// open here.
pub(super) fn check_open_files(listeners: usize, workers: usize) -> anyhow::Result<()> {
    let per_worker = listeners.div_ceil(workers);
    if let Ok((_, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        let room = hard.saturating_sub(64);
        if per_worker as u64 > room {
            bail!(
                "each of {workers} workers would hold {per_worker} connections, but a process may \
                 open only {hard} files here; use --workers {} or more (or --workers auto)",
                (listeners as u64).div_ceil(room.max(1))
            );
        }
    }
    Ok(())
}

/// `--source-addr`, or by default several loopback addresses when every node
/// is on this machine.
pub(super) fn source_addrs(args: &LoadtestArgs, targets: &[Target]) -> anyhow::Result<Vec<IpAddr>> {
    Ok(match &args.source_addrs {
        Some(s) => plan::parse_source_addrs(s)?,
        None if targets.iter().all(|t| t.addr.ip().is_loopback()) => {
            plan::default_loopback_sources(args.listeners)
        }
        None => Vec::new(),
    })
}

/// Refuses a `--server-pid` whose /proc cannot be read.
pub(super) fn check_server_pids(pids: &[u32]) -> anyhow::Result<()> {
    for &pid in pids {
        report::sample_proc(pid).with_context(|| {
            format!("--server-pid {pid}: cannot read /proc/{pid} (is the server running here?)")
        })?;
    }
    Ok(())
}

/// The stations of this run: `--listen-only`'s, or `--station-prefix`, the
/// run's id, a number.
fn station_names(args: &LoadtestArgs, run_id: &str) -> anyhow::Result<Vec<StationName>> {
    if !args.listen_only.is_empty() {
        return args
            .listen_only
            .iter()
            .map(|s| {
                StationName::new(s).map_err(|why| anyhow::anyhow!("--listen-only {s:?}: {why}"))
            })
            .collect();
    }
    (0..args.stations)
        .map(|s| {
            let name = format!("{}-{run_id}-{s}", args.station_prefix);
            StationName::new(&name).map_err(|why| {
                anyhow::anyhow!("--station-prefix makes station names like {name:?}: {why}")
            })
        })
        .collect()
}

/// What /proc said about one side (the server's processes, or the
/// generator's) at the boundaries of the phases.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Readings {
    /// Before the listeners connected.
    pub(super) before: ProcSample,
    /// Once the ramp was done.
    pub(super) ramped: ProcSample,
    /// At the end of the run phase.
    pub(super) end: ProcSample,
}

/// A run under way: the broadcasters, the worker fleet, the progress display
/// and what was measured so far.
///
/// On an early error the fields drop in this order: the workers first (they
/// are killed), then the broadcasters, then the display.
pub(super) struct Session {
    fleet: Fleet,
    broadcasters: Vec<broadcaster::Handle>,
    ui: Ui,
    args: LoadtestArgs,
    plan: RunPlan,
    /// This process and its workers.
    generator_pids: Vec<u32>,
    /// When the progress display refreshes, through ramp and run alike.
    tick: Interval,
    ramp_started: Instant,
    ramp_wall_s: f64,
    run_s: f64,
    server: Readings,
    generator: Readings,
    /// SIGUSR1: a marked moment.
    signal: MarkSignal,
    marks: Marks,
    mark_reports: Vec<MarkReport>,
}

impl Session {
    /// Starts the broadcasters (first, so every station has a state to tune
    /// in to), then the workers, whose listeners start connecting at once.
    pub(super) async fn start(args: LoadtestArgs, plan: RunPlan) -> anyhow::Result<Session> {
        // First, so a mark sent early does not end the process.
        let signal = MarkSignal::new();
        let mut ui = Ui::new();
        ui.note(&plan.headline(&args));
        let broadcasters = plan.broadcasters(&args).await?;
        let server_before = report::sample_trees(&args.server_pids);
        let fleet = Fleet::spawn(plan.worker_plans(&args)).await?;
        let mut generator_pids = vec![std::process::id()];
        generator_pids.extend(fleet.pids.iter().copied());
        let generator_before = report::sample_all(&generator_pids);
        let ramp_started = Instant::now();
        ui.start_ramp(args.listeners as u64);
        let tick = tokio::time::interval(Duration::from_millis(250));
        Ok(Session {
            fleet,
            broadcasters,
            ui,
            args,
            plan,
            generator_pids,
            tick,
            ramp_started,
            ramp_wall_s: 0.0,
            run_s: 0.0,
            server: Readings {
                before: server_before,
                ..Readings::default()
            },
            generator: Readings {
                before: generator_before,
                ..Readings::default()
            },
            signal,
            marks: Marks::new(),
            mark_reports: Vec::new(),
        })
    }

    /// Ramp: waits until every worker has attempted all its listeners, and
    /// gives the totals then.
    pub(super) async fn ramp(&mut self) -> anyhow::Result<Progress> {
        while !self.fleet.ramp_done.iter().all(|&d| d) {
            tokio::select! {
                r = self.fleet.next() => r?,
                _ = self.tick.tick() => self.ui.ramp(&self.fleet.totals()),
            }
        }
        let after_ramp = self.fleet.totals();
        self.ramp_wall_s = self.ramp_started.elapsed().as_secs_f64();
        self.ui.ramp(&after_ramp);
        self.server.ramped = report::sample_trees(&self.args.server_pids);
        self.generator.ramped = report::sample_all(&self.generator_pids);
        self.ui.note(&format!(
            "ramp done: {} connected, {} failed; running for {}",
            after_ramp.connected,
            after_ramp.failed,
            humantime::format_duration(self.args.duration)
        ));
        Ok(after_ramp)
    }

    /// Run: the broadcasters send for `--duration`; gives what each did.
    /// The workers learn first when it begins (a moment ahead, so none
    /// hears a state of the run before it knows the run has begun).
    pub(super) async fn run(&mut self, after_ramp: &Progress) -> anyhow::Result<Vec<Outcome>> {
        let at_unix_ms = protocol::now_ms() + millis(RUN_LEAD) as i64;
        let until_unix_ms = (!self.args.listen_only.is_empty())
            .then(|| at_unix_ms.saturating_add(millis(self.args.duration) as i64));
        self.fleet
            .command(&ParentCmd::Run {
                at_unix_ms,
                until_unix_ms,
            })
            .await?;
        let ahead = at_unix_ms - protocol::now_ms();
        tokio::time::sleep(Duration::from_millis(ahead.max(0).unsigned_abs())).await;
        let start = Instant::now();
        for b in &mut self.broadcasters {
            b.start(start);
        }
        self.ui.start_run(self.args.duration, after_ramp.syncs);
        self.marks.run_started(start);
        let mut newest = tokio::time::interval(marks::EVERY);
        let end = start + self.args.duration;
        loop {
            tokio::select! {
                r = self.fleet.next() => {
                    r?;
                    if let Some((n, took)) = self.marks.check(self.fleet.latest()) {
                        self.ui.note(&format!(
                            "mark {n}: every listener holds the newest state again, {took:.1} s after it"
                        ));
                    }
                }
                _ = self.tick.tick() => self.ui.run(&self.fleet.totals(), start.elapsed()),
                _ = newest.tick() => {
                    let cmd = self.marks.newest(self.newest_seqs());
                    self.fleet.command(&cmd).await?;
                }
                () = self.signal.recv() => {
                    let n = self.marks.mark(self.fleet.totals(), self.newest_seqs());
                    self.ui.note(&format!("mark {n} at {:.1} s into the run", start.elapsed().as_secs_f64()));
                }
                _ = tokio::time::sleep_until(end) => break,
            }
        }
        // The run's figures end here: an observer may wait a little longer
        // for the first state after the run, which is no part of it.
        self.run_s = start.elapsed().as_secs_f64();
        self.generator.end = report::sample_all(&self.generator_pids);
        self.server.end = report::sample_trees(&self.args.server_pids);
        self.mark_reports = self.marks.finish(&self.fleet.totals());
        let mut outcomes = Vec::with_capacity(self.broadcasters.len());
        for b in &mut self.broadcasters {
            outcomes.push(b.outcome().await);
        }
        self.ui.finish();
        for (s, o) in outcomes.iter().enumerate() {
            if let Some(why) = &o.lost {
                self.ui.note(&format!(
                    "warning: broadcaster of {} failed: {why}",
                    self.plan.station_names[s]
                ));
            }
        }
        Ok(outcomes)
    }

    /// Each station's newest acknowledged `seq` now.
    fn newest_seqs(&self) -> Vec<u64> {
        self.broadcasters
            .iter()
            .map(|b| b.newest.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    /// Finish: every listener should now catch up with the newest states;
    /// then the workers report and exit, and the broadcasters stop. Gives the
    /// workers' reports.
    pub(super) async fn finish(
        &mut self,
        outcomes: &[Outcome],
    ) -> anyhow::Result<Vec<WorkerReport>> {
        let final_seqs: Vec<u64> = outcomes.iter().map(|o| o.final_seq).collect();
        self.fleet
            .command(&ParentCmd::Finish {
                final_seqs,
                drain_ms: millis(DRAIN),
            })
            .await?;
        let fleet = &mut self.fleet;
        let collect = async {
            while fleet.reports.iter().any(Option::is_none) {
                fleet.next().await?;
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(DRAIN + Duration::from_secs(60), collect)
            .await
            .context("the workers did not report within 70s of the end")??;
        for child in &mut self.fleet.children {
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
            }
        }
        let stops = self.broadcasters.drain(..).map(broadcaster::Handle::stop);
        futures_util::future::join_all(stops).await;
        Ok(std::mem::take(&mut self.fleet.reports)
            .into_iter()
            .flatten()
            .collect())
    }

    /// Report and gate: merges the figures, prints the summary, writes the
    /// JSON file, and sets the exit code by the thresholds.
    pub(super) fn report(
        &self,
        outcomes: &[Outcome],
        reports: &[WorkerReport],
    ) -> anyhow::Result<ExitCode> {
        let mut report = report::build(self.parent_figures(outcomes, reports), reports);
        report::check(&mut report);
        // As the progress: a closed stdout does not change the verdict.
        if let Err(e) = crate::errors::to_stdout(report::human(&report).as_bytes()) {
            tracing::debug!(error = %e, "cannot write the report");
        }
        if let Some(w) = &report.generator.warning {
            eprintln!("radio loadtest: warning: {w}");
        }
        if let Some(path) = &self.args.json {
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

    /// What the parent measured itself.
    fn parent_figures(&self, outcomes: &[Outcome], reports: &[WorkerReport]) -> ParentFigures {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let ramp_s = reports.iter().map(|r| r.ramp_ms).max().unwrap_or(0) as f64 / 1000.0;
        ParentFigures {
            parameters: self.plan.parameters(&self.args),
            ramp_s,
            run_s: self.run_s,
            updates_sent: outcomes.iter().map(|o| o.updates_sent).sum(),
            heartbeats_sent: outcomes.iter().map(|o| o.heartbeats_sent).sum(),
            unacked: outcomes.iter().map(|o| o.unacked).sum(),
            states_per_station: outcomes
                .iter()
                .map(|o| {
                    (o.updates_sent + o.heartbeats_sent)
                        .saturating_sub(o.errors.values().sum::<u64>())
                })
                .collect(),
            broadcaster_errors: broadcaster_errors(outcomes),
            broadcaster_resumes: outcomes.iter().map(|o| o.resumed).sum(),
            marks: self.mark_reports.clone(),
            server: self.server_cost(cpus),
            generator: self.generator_cost(cpus),
        }
    }

    /// The generator's own CPU, with a warning when it used most of the machine.
    fn generator_cost(&self, cpus: usize) -> Generator {
        generator_cost(&self.generator, self.run_s, self.ramp_wall_s, cpus)
    }

    /// The server's memory and CPU, when `--server-pid` was given.
    fn server_cost(&self, cpus: usize) -> Option<ServerCost> {
        server_cost(&self.args.server_pids, &self.server, self.run_s, cpus)
    }
}

/// The generator's own CPU from its readings, with a warning when it used
/// most of the machine.
pub(super) fn generator_cost(g: &Readings, run_s: f64, ramp_wall_s: f64, cpus: usize) -> Generator {
    let generator_cpu = g.end.cpu_seconds - g.ramped.cpu_seconds;
    let generator_ramp_cpu = g.ramped.cpu_seconds - g.before.cpu_seconds;
    let generator_pct = pct_of_machine(generator_cpu, run_s, cpus);
    let generator_ramp_pct = pct_of_machine(generator_ramp_cpu, ramp_wall_s, cpus);
    let busiest = if generator_ramp_pct > generator_pct {
        ("ramp-up", generator_ramp_pct)
    } else {
        ("run", generator_pct)
    };
    Generator {
        cpu_seconds_ramp: hundredths(generator_ramp_cpu),
        cpu_seconds_run: hundredths(generator_cpu),
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
    }
}

/// The server's memory and CPU from its readings; `None` without `--server-pid`.
pub(super) fn server_cost(
    pids: &[u32],
    s: &Readings,
    run_s: f64,
    cpus: usize,
) -> Option<ServerCost> {
    (!pids.is_empty()).then(|| ServerCost {
        pids: pids.to_vec(),
        rss_before_bytes: s.before.rss_bytes,
        rss_after_connect_bytes: s.ramped.rss_bytes,
        rss_end_bytes: s.end.rss_bytes,
        rss_per_connection_bytes: None,
        cpu_seconds_ramp: hundredths(s.ramped.cpu_seconds - s.before.cpu_seconds),
        cpu_seconds_run: hundredths(s.end.cpu_seconds - s.ramped.cpu_seconds),
        cpu_pct_of_machine_run: pct_of_machine(
            s.end.cpu_seconds - s.ramped.cpu_seconds,
            run_s,
            cpus,
        ),
    })
}

/// `cpu` seconds used over `wall` seconds, as a percentage of all `cpus`
/// (one decimal).
fn pct_of_machine(cpu: f64, wall: f64, cpus: usize) -> f64 {
    if wall > 0.0 {
        (cpu / (wall * cpus as f64) * 1000.0).round() / 10.0
    } else {
        0.0
    }
}

fn hundredths(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The broadcasters' `error` frames by code, named `broadcaster_CODE`.
fn broadcaster_errors(outcomes: &[Outcome]) -> BTreeMap<String, u64> {
    let mut errors = BTreeMap::new();
    for o in outcomes {
        for (k, v) in &o.errors {
            *errors.entry(format!("broadcaster_{k}")).or_default() += v;
        }
    }
    errors
}
