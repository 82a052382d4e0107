//! `--stream`'s report: the workers' figures merged, the server's cost per
//! reader, the human summary and the JSON file's shape.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::reader::{ASSUMED_KBPS, STALL};
use crate::loadtest::plan::WorkerReport;
use crate::loadtest::report::{Generator, ServerCost};
use crate::loadtest::stats::{Hist, Percentiles};

/// What the parent knows and measured itself.
pub(super) struct Parent {
    pub(super) urls: Vec<String>,
    pub(super) listeners: usize,
    pub(super) duration_s: f64,
    pub(super) connect_rate: u32,
    pub(super) workers: usize,
    pub(super) source_addrs: Vec<String>,
    pub(super) started_at_unix_ms: i64,
    pub(super) run_s: f64,
    pub(super) server: Option<ServerCost>,
    pub(super) generator: Generator,
}

#[derive(Serialize)]
pub(super) struct Parameters {
    mode: &'static str,
    urls: Vec<String>,
    listeners: usize,
    duration_s: f64,
    connect_rate: u32,
    workers: usize,
    source_addrs: Vec<String>,
    started_at_unix_ms: i64,
}

#[derive(Serialize)]
pub(super) struct Readers {
    pub(super) attempted: u64,
    /// Readers that got their first audio byte.
    pub(super) started: u64,
    pub(super) failed: u64,
    pub(super) failed_by_reason: BTreeMap<String, u64>,
    /// Streams that ended (closed by the server, reset) after they started.
    pub(super) ended: u64,
    pub(super) ended_by_reason: BTreeMap<String, u64>,
}

#[derive(Serialize)]
pub(super) struct Stalls {
    /// Gaps of more than a second without audio, over every reader.
    count: u64,
    /// Readers that had at least one.
    readers: u64,
    /// Seconds of the gaps that ended.
    seconds: f64,
    /// Readers that got no audio at all during the run phase.
    silent_in_run: u64,
}

#[derive(Serialize)]
pub(super) struct Audio {
    /// The stream's bitrate: `icy-br`, else 128 assumed.
    bitrate_kbps: u32,
    bitrate_from: &'static str,
    /// Per reader over the run phase; the least a reader got.
    bytes_per_s: Percentiles,
    bytes_per_s_min: Option<u64>,
    expected_bytes_per_s: f64,
    /// Readers that read through the whole run phase, and their bytes.
    readers_in_run: u64,
    bytes_in_run: u64,
    /// Audio missing over the run phase beyond a second's worth per
    /// reader: skipped by the server, or never sent.
    lost_bytes_estimate: u64,
    lost_pct: Option<f64>,
}

#[derive(Serialize)]
pub(super) struct Report {
    parameters: Parameters,
    pub(super) readers: Readers,
    /// TCP connect to the first audio byte, ms.
    start_ms: Percentiles,
    audio: Audio,
    stalls: Stalls,
    run_s: f64,
    ramp_s: f64,
    server: Option<ServerCost>,
    /// The server's CPU over the run per reader reading: microseconds of
    /// CPU per reader per second.
    server_cpu_us_per_reader_s: Option<f64>,
    pub(super) generator: Generator,
}

/// Merges the workers' figures.
pub(super) fn build(parent: Parent, workers: &[WorkerReport]) -> Report {
    let mut start = Hist::new();
    let mut rate = Hist::new();
    let mut failed_by_reason = BTreeMap::new();
    let mut ended_by_reason = BTreeMap::new();
    let (mut attempted, mut started, mut failed, mut ended) = (0, 0, 0, 0);
    let (mut stalls, mut readers_stalled, mut stalled_ms, mut silent) = (0, 0, 0, 0);
    let (mut readers_in_run, mut bytes_in_run, mut lost, mut window_s) = (0, 0, 0, 0.0f64);
    let mut kbps = None;
    for w in workers {
        attempted += w.progress.attempted;
        started += w.progress.connected;
        failed += w.progress.failed;
        ended += w.progress.dropped;
        for (k, v) in &w.failed_by_reason {
            *failed_by_reason.entry(k.clone()).or_default() += v;
        }
        let Some(f) = &w.stream else { continue };
        start.merge_data(&f.start_us);
        rate.merge_data(&f.bytes_per_s);
        for (k, v) in &f.ended_by_reason {
            *ended_by_reason.entry(k.clone()).or_default() += v;
        }
        stalls += f.stalls;
        readers_stalled += f.readers_stalled;
        stalled_ms += f.stalled_ms;
        silent += f.silent_in_run;
        readers_in_run += f.window_readers;
        bytes_in_run += f.window_bytes;
        lost += f.lost_bytes;
        window_s = window_s.max(f.window_s);
        kbps = kbps.or(f.kbps);
    }
    let bitrate_kbps = kbps.unwrap_or(ASSUMED_KBPS);
    let expected_bytes_per_s = f64::from(bitrate_kbps) * 125.0;
    let expected_total = expected_bytes_per_s * window_s * readers_in_run as f64;
    let server_cpu_us_per_reader_s = parent.server.as_ref().and_then(|s| {
        (started > 0 && parent.run_s > 0.0).then(|| {
            (s.cpu_seconds_run * 1e6 / parent.run_s / started.saturating_sub(ended).max(1) as f64
                * 10.0)
                .round()
                / 10.0
        })
    });
    let ramp_s = workers.iter().map(|r| r.ramp_ms).max().unwrap_or(0) as f64 / 1000.0;
    Report {
        parameters: Parameters {
            mode: "stream",
            urls: parent.urls,
            listeners: parent.listeners,
            duration_s: parent.duration_s,
            connect_rate: parent.connect_rate,
            workers: parent.workers,
            source_addrs: parent.source_addrs,
            started_at_unix_ms: parent.started_at_unix_ms,
        },
        readers: Readers {
            attempted,
            started,
            failed,
            failed_by_reason,
            ended,
            ended_by_reason,
        },
        start_ms: start.percentiles(1000.0),
        audio: Audio {
            bitrate_kbps,
            bitrate_from: if kbps.is_some() { "icy-br" } else { "assumed" },
            bytes_per_s: rate.percentiles(1.0),
            bytes_per_s_min: rate.min(),
            expected_bytes_per_s,
            readers_in_run,
            bytes_in_run,
            lost_bytes_estimate: lost,
            lost_pct: (expected_total > 0.0)
                .then(|| (lost as f64 / expected_total * 1e4).round() / 100.0),
        },
        stalls: Stalls {
            count: stalls,
            readers: readers_stalled,
            seconds: stalled_ms as f64 / 1000.0,
            silent_in_run: silent,
        },
        run_s: (parent.run_s * 100.0).round() / 100.0,
        ramp_s,
        server: parent.server,
        server_cpu_us_per_reader_s,
        generator: parent.generator,
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1} ms"))
}

fn reasons(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The summary printed at the end.
pub(super) fn human(r: &Report) -> String {
    let mut s = String::new();
    let rd = &r.readers;
    let _ = writeln!(
        s,
        "readers     {} attempted, {} started, {} failed ({}), {} ended early ({})",
        rd.attempted,
        rd.started,
        rd.failed,
        reasons(&rd.failed_by_reason),
        rd.ended,
        reasons(&rd.ended_by_reason)
    );
    let _ = writeln!(
        s,
        "start       request to first audio byte: p50 {} p90 {} p99 {} max {} ({:.1} s ramp)",
        ms(r.start_ms.p50),
        ms(r.start_ms.p90),
        ms(r.start_ms.p99),
        ms(r.start_ms.max),
        r.ramp_s
    );
    let a = &r.audio;
    let bps = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    let _ = writeln!(
        s,
        "audio       bytes/s per reader: min {} p50 {} max {} (the stream: {} kb/s = {:.0} B/s, {}); \
         {} readers over {:.1} s",
        bps(a.bytes_per_s_min.map(|v| v as f64)),
        bps(a.bytes_per_s.p50),
        bps(a.bytes_per_s.max),
        a.bitrate_kbps,
        a.expected_bytes_per_s,
        a.bitrate_from,
        a.readers_in_run,
        r.run_s
    );
    let _ = writeln!(
        s,
        "lost        {} bytes short of the bitrate beyond a second per reader ({})",
        a.lost_bytes_estimate,
        a.lost_pct.map_or("-".into(), |p| format!("{p:.2}%"))
    );
    let st = &r.stalls;
    let _ = writeln!(
        s,
        "stalls      {} (gaps over {} s without audio) in {} readers, {:.1} s in all; {} silent through the run",
        st.count,
        STALL.as_secs(),
        st.readers,
        st.seconds,
        st.silent_in_run
    );
    if let Some(sv) = &r.server {
        let _ = writeln!(
            s,
            "server      {:.2} CPU s over the run ({:.1}% of the machine), {} per reader-second; RSS {} MiB",
            sv.cpu_seconds_run,
            sv.cpu_pct_of_machine_run,
            r.server_cpu_us_per_reader_s
                .map_or("-".into(), |v| format!("{v:.1} µs")),
            sv.rss_end_bytes / (1024 * 1024)
        );
    }
    let g = &r.generator;
    let _ = writeln!(
        s,
        "generator   {:.2} CPU s over the run ({:.1}% of the machine's {} CPUs)",
        g.cpu_seconds_run, g.cpu_pct_of_machine_run, g.cpus
    );
    s
}
