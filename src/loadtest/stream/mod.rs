//! `radio loadtest --stream`: N readers of an HTTP audio stream (a
//! station's `/stations/{name}/stream`, or any Icecast mount), spread over
//! source addresses and worker processes as the WebSocket listeners are,
//! measuring what a radio app would notice: the time from the request to
//! the first audio byte, the bytes each reader gets a second, the stalls
//! (more than a second without a byte), and the audio lost to skipping,
//! estimated from the bytes each reader got against the stream's bitrate.
//!
//! The run has the usual phases: ramp (every reader started or failed),
//! run (`--duration`, between the parent's `mark` and `finish`), report.
//! No broadcaster plays: the stream is the server's.
//!
//! [`reader`] is the workers' side, [`body`] the HTTP response as a
//! reader counts it, [`report`] the figures merged and told.

pub(crate) mod body;
pub(crate) mod reader;
mod report;

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::time::Instant;

use super::fleet::Fleet;
use super::phases::{self, HANDSHAKE_TIMEOUT, Readings, millis};
use super::plan::{self, ParentCmd, StreamPlan, StreamTarget, WorkerPlan};
use super::progress::Ui;
use super::report as costs;
use crate::cli::LoadtestArgs;
use crate::errors::Usage;
use crate::protocol::StationName;

/// The streams of the run: with `--listen-only`, each station's
/// `/stations/{name}/stream` on each `--url`; otherwise each `--url` as it
/// is (an Icecast mount, say).
fn stream_urls(args: &LoadtestArgs) -> anyhow::Result<Vec<String>> {
    if args.listen_only.is_empty() {
        return Ok(args.urls.clone());
    }
    let mut urls = Vec::new();
    for station in &args.listen_only {
        let name = StationName::new(station)
            .map_err(|why| anyhow::anyhow!("--listen-only {station:?}: {why}"))?;
        for base in &args.urls {
            urls.push(format!(
                "{}/stations/{name}/stream",
                base.trim_end_matches('/')
            ));
        }
    }
    Ok(urls)
}

/// Resolves an `http://` stream URL.
async fn resolve(raw: &str) -> anyhow::Result<StreamTarget> {
    let url = url::Url::parse(raw).map_err(|e| {
        Usage(format!(
            "--url {raw:?} is not a URL ({e}); write it like http://127.0.0.1:8000/stream.mp3"
        ))
    })?;
    if url.scheme() != "http" {
        bail!(Usage(format!(
            "--url {raw:?}: --stream reads http:// streams (put a TLS-terminating proxy's plain \
             side, or the server's own address, in front of it)"
        )));
    }
    let host = url
        .host_str()
        .with_context(|| Usage(format!("--url {raw:?} has no host")))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host((bare, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let mut path = url.path().to_owned();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok(StreamTarget {
        url: raw.to_owned(),
        addr,
        host: match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        },
        path,
    })
}

/// Runs `radio loadtest --stream`.
pub(crate) async fn run(args: LoadtestArgs) -> anyhow::Result<ExitCode> {
    let usage = |e: anyhow::Error| anyhow::Error::new(Usage(e.to_string()));
    if args.listeners == 0 {
        bail!(Usage("--listeners must be at least 1".into()));
    }
    let urls = stream_urls(&args).map_err(usage)?;
    let mut targets = Vec::with_capacity(urls.len());
    for u in &urls {
        targets.push(resolve(u).await?);
    }
    let workers = plan::parse_workers(&args.workers, args.listeners).map_err(usage)?;
    phases::check_open_files(args.listeners, workers)?;
    let source_addrs = source_addrs(&args, &targets).map_err(usage)?;
    phases::check_server_pids(&args.server_pids)?;
    let started_at_unix_ms = crate::protocol::now_ms();

    let mut ui = Ui::new();
    ui.note(&format!(
        "radio loadtest --stream: {} readers of {} stream(s), {} worker(s), {} source address(es)",
        args.listeners,
        targets.len(),
        workers,
        source_addrs.len().max(1)
    ));
    let plans: Vec<WorkerPlan> = plan::split(args.listeners, workers)
        .into_iter()
        .enumerate()
        .map(|(w, (first, count))| WorkerPlan {
            worker: w,
            urls: urls.clone(),
            stations: urls.clone(),
            first,
            count,
            connect_rate: f64::from(args.connect_rate) / workers as f64,
            source_addrs: source_addrs.clone(),
            epoch_server_ms: None,
            handshake_timeout_ms: millis(HANDSHAKE_TIMEOUT),
            churn_per_min: 0.0,
            reconnect: false,
            ca_cert: args.ca_cert.clone(),
            fetch_media: None,
            stream: Some(StreamPlan {
                targets: targets.clone(),
            }),
        })
        .collect();
    let mut server = Readings {
        before: costs::sample_trees(&args.server_pids),
        ..Readings::default()
    };
    let mut fleet = Fleet::spawn(plans).await?;
    let mut generator_pids = vec![std::process::id()];
    generator_pids.extend(fleet.pids.iter().copied());
    let mut generator = Readings {
        before: costs::sample_all(&generator_pids),
        ..Readings::default()
    };
    let mut tick = tokio::time::interval(Duration::from_millis(250));

    // Ramp: every reader started (its first audio byte) or failed.
    let ramp_started = Instant::now();
    ui.start_ramp(args.listeners as u64);
    while !fleet.ramp_done.iter().all(|&d| d) {
        tokio::select! {
            r = fleet.next() => r?,
            _ = tick.tick() => ui.ramp(&fleet.totals()),
        }
    }
    let after_ramp = fleet.totals();
    let ramp_wall_s = ramp_started.elapsed().as_secs_f64();
    ui.ramp(&after_ramp);
    server.ramped = costs::sample_trees(&args.server_pids);
    generator.ramped = costs::sample_all(&generator_pids);
    ui.note(&format!(
        "ramp done: {} reading, {} failed; running for {}",
        after_ramp.connected,
        after_ramp.failed,
        humantime::format_duration(args.duration)
    ));

    // Run: the readers read; the workers count each one's bytes from here.
    fleet.command(&ParentCmd::Mark).await?;
    let start = Instant::now();
    ui.start_run(args.duration, after_ramp.bytes);
    let end = start + args.duration;
    loop {
        tokio::select! {
            r = fleet.next() => r?,
            _ = tick.tick() => ui.stream_run(&fleet.totals(), start.elapsed()),
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    let run_s = start.elapsed().as_secs_f64();
    server.end = costs::sample_trees(&args.server_pids);
    generator.end = costs::sample_all(&generator_pids);
    ui.finish();

    // Finish: every worker reports and exits.
    fleet
        .command(&ParentCmd::Finish {
            final_seqs: Vec::new(),
            drain_ms: 0,
        })
        .await?;
    let collect = async {
        while fleet.reports.iter().any(Option::is_none) {
            fleet.next().await?;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .context("the workers did not report within 60 s of the end")??;
    for child in &mut fleet.children {
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
        }
    }
    let reports: Vec<_> = std::mem::take(&mut fleet.reports)
        .into_iter()
        .flatten()
        .collect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = report::build(
        report::Parent {
            urls,
            listeners: args.listeners,
            duration_s: args.duration.as_secs_f64(),
            connect_rate: args.connect_rate,
            workers,
            source_addrs: source_addrs.iter().map(ToString::to_string).collect(),
            started_at_unix_ms,
            run_s,
            server: phases::server_cost(&args.server_pids, &server, run_s, cpus),
            generator: phases::generator_cost(&generator, run_s, ramp_wall_s, cpus),
        },
        &reports,
    );
    if let Err(e) = crate::errors::to_stdout(report::human(&report).as_bytes()) {
        tracing::debug!(error = %e, "cannot write the report");
    }
    if let Some(w) = &report.generator.warning {
        eprintln!("radio loadtest: warning: {w}");
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    Ok(if report.readers.started == 0 {
        eprintln!("radio loadtest: no reader got any audio");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--source-addrs`, or by default several loopback addresses when every
/// stream is on this machine.
fn source_addrs(args: &LoadtestArgs, targets: &[StreamTarget]) -> anyhow::Result<Vec<IpAddr>> {
    Ok(match &args.source_addrs {
        Some(s) => plan::parse_source_addrs(s)?,
        None if targets.iter().all(|t| t.addr.ip().is_loopback()) => {
            plan::default_loopback_sources(args.listeners)
        }
        None => Vec::new(),
    })
}
