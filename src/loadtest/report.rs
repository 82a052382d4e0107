//! The report: the workers' figures merged, the server's cost from /proc, the
//! human summary, the JSON file, and the thresholds that set the exit code.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::marks::MarkReport;
use super::plan::WorkerReport;
use super::stats::{Hist, Percentiles};

/// Linux's USER_HZ, the unit of utime/stime in /proc/PID/stat. It is 100 on
/// every mainstream architecture and is fixed in the kernel ABI.
const CLOCK_TICKS: f64 = 100.0;

/// One reading of a process from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ProcSample {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// Reads RSS and CPU time of `pid` from /proc.
pub(crate) fn sample_proc(pid: u32) -> std::io::Result<ProcSample> {
    Ok(read_proc(pid)?.0)
}

/// `pid`'s own sample, its parent's pid, and the CPU seconds of its
/// children that ended and were waited for.
fn read_proc(pid: u32) -> std::io::Result<(ProcSample, u32, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses; fields follow the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the name: state(0) ppid(1) pgrp session tty tpgid flags minflt
    // cminflt majflt cmajflt utime(11) stime(12) cutime(13) cstime(14).
    let cpu_seconds = (ticks(11) + ticks(12)) as f64 / CLOCK_TICKS;
    let children_seconds = (ticks(13) + ticks(14)) as f64 / CLOCK_TICKS;
    let ppid = u32::try_from(ticks(1)).unwrap_or(0);
    Ok((
        ProcSample {
            rss_bytes: rss_kib * 1024,
            cpu_seconds,
        },
        ppid,
        children_seconds,
    ))
}

/// The sum over several processes; processes that are gone count as zero.
pub(crate) fn sample_all(pids: &[u32]) -> ProcSample {
    let mut total = ProcSample::default();
    for &pid in pids {
        if let Ok(s) = sample_proc(pid) {
            total.rss_bytes += s.rss_bytes;
            total.cpu_seconds += s.cpu_seconds;
        }
    }
    total
}

/// The sum over several processes and every process they started (a
/// server's encoder, say): the live descendants, and the CPU of those
/// that ended and were waited for. Each process counts once, even when a
/// parent and its child are both named.
pub(crate) fn sample_trees(pids: &[u32]) -> ProcSample {
    let mut procs: Vec<(u32, ProcSample, u32, f64)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok((sample, ppid, children)) = read_proc(pid) {
                procs.push((pid, sample, ppid, children));
            }
        }
    }
    let mut tree: std::collections::BTreeSet<u32> = pids.iter().copied().collect();
    // Descendants, a generation at a time.
    loop {
        let before = tree.len();
        for (pid, _, ppid, _) in &procs {
            if tree.contains(ppid) {
                tree.insert(*pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    let mut total = ProcSample::default();
    for (pid, sample, _, children) in &procs {
        if tree.contains(pid) {
            total.rss_bytes += sample.rss_bytes;
            total.cpu_seconds += sample.cpu_seconds + children;
        }
    }
    total
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Parameters {
    pub urls: Vec<String>,
    pub listeners: usize,
    pub stations: usize,
    pub duration_s: f64,
    pub update_interval_ms: u64,
    pub heartbeat_interval_ms: Option<u64>,
    pub connect_rate: u32,
    pub workers: usize,
    pub source_addrs: Vec<String>,
    pub server_pids: Vec<u32>,
    pub max_p99_ms: Option<f64>,
    pub min_delivery_pct: Option<f64>,
    pub station_names: Vec<String>,
    /// `--listen-only`: no broadcaster; the states counted are those the
    /// server published during the run.
    pub listen_only: bool,
    pub started_at_unix_ms: i64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Listeners {
    pub attempted: u64,
    pub connected: u64,
    pub failed: u64,
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Connections that ended after they were established.
    pub dropped: u64,
    /// Listeners replaced by `--churn` (one disconnect and one connect each).
    pub churned: u64,
    /// With `--reconnect`: connections made again after one was lost,
    /// attempts at that which failed, and listeners once connected without
    /// a connection at the end (lost for good).
    pub reconnects: u64,
    pub reconnect_failures: u64,
    pub down_at_end: u64,
    /// Times a broadcaster resumed its station after losing its connection.
    pub broadcaster_resumes: u64,
    /// Seconds from the first connect attempt until every one was answered.
    pub ramp_s: f64,
    /// Established connections per second over the ramp.
    pub connect_rate_per_sec: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Delivery {
    pub updates_sent: u64,
    pub heartbeats_sent: u64,
    /// Fan-out syncs owed: each state sent times its station's listeners.
    pub expected: u64,
    /// Fan-out syncs received (cause `update` or `heartbeat`).
    pub syncs_received: u64,
    /// `sync{cause:"tune_in"}` frames received.
    pub tune_in_syncs: u64,
    /// States skipped in between two syncs (conflation).
    pub skipped: u64,
    pub duplicates: u64,
    pub seq_regressions: u64,
    /// Requests of the broadcasters that were never acknowledged.
    pub unacked: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct ServerCost {
    pub pids: Vec<u32>,
    pub rss_before_bytes: u64,
    pub rss_after_connect_bytes: u64,
    pub rss_end_bytes: u64,
    /// (RSS after connecting - RSS before) / listeners connected.
    pub rss_per_connection_bytes: Option<f64>,
    pub cpu_seconds_ramp: f64,
    pub cpu_seconds_run: f64,
    /// CPU used during the run, as a share of the whole machine.
    pub cpu_pct_of_machine_run: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Generator {
    /// CPU seconds of radio loadtest and its workers while the listeners connected.
    pub cpu_seconds_ramp: f64,
    /// CPU seconds of radio loadtest and its workers during the run.
    pub cpu_seconds_run: f64,
    pub cpu_pct_of_machine_ramp: f64,
    pub cpu_pct_of_machine_run: f64,
    pub cpus: usize,
    /// Set when the generator used more than 80% of the machine during the
    /// ramp or the run: its
    /// latencies then include its own queueing and are pessimistic.
    pub warning: Option<String>,
    /// Each worker's clock offset to each node, ms (server minus worker).
    pub clock_offsets_ms: Vec<Vec<f64>>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Thresholds {
    pub passed: bool,
    pub failures: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    pub parameters: Parameters,
    pub listeners: Listeners,
    /// TCP connect to `welcome`, ms.
    pub handshake_ms: Percentiles,
    /// `sync.server_time_ms` to receipt, every fan-out sync at every listener, ms.
    pub fanout_ms: Percentiles,
    /// Per update: until the last of its station's listeners had it, ms.
    pub last_listener_ms: Percentiles,
    /// Share of updates that reached every listener of their station.
    pub updates_reaching_all_pct: Option<f64>,
    /// |listener's position estimate - broadcaster's true position|, ms.
    pub sync_error_ms: Percentiles,
    pub delivery: Delivery,
    /// Share of listeners holding their station's newest `seq` at the end.
    pub final_state_delivery_pct: Option<f64>,
    pub seq_regressions: u64,
    /// Fan-out syncs received per second of the run, over all listeners.
    pub deliveries_per_sec: f64,
    pub run_s: f64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub close_codes: BTreeMap<String, u64>,
    /// Only when `--server-pid` was given.
    pub server: Option<ServerCost>,
    pub generator: Generator,
    pub thresholds: Thresholds,
    /// The marked moments (SIGUSR1), in order.
    pub marks: Vec<MarkReport>,
    /// Only with `--fetch-media`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<super::media::MediaSummary>,
}

/// What the parent measured itself.
pub(crate) struct ParentFigures {
    pub parameters: Parameters,
    pub ramp_s: f64,
    pub run_s: f64,
    pub updates_sent: u64,
    pub heartbeats_sent: u64,
    pub unacked: u64,
    /// Per station: the number of states sent during the run.
    pub states_per_station: Vec<u64>,
    pub broadcaster_errors: BTreeMap<String, u64>,
    pub broadcaster_resumes: u64,
    /// The marked moments (SIGUSR1) and what followed each.
    pub marks: Vec<MarkReport>,
    pub server: Option<ServerCost>,
    pub generator: Generator,
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 100.0 / whole as f64 * 1000.0).round() / 1000.0)
}

/// The workers' figures added up, before anything is derived from them.
struct Totals {
    listeners: Listeners,
    handshake: Hist,
    fanout: Hist,
    accuracy: Hist,
    delivery: Delivery,
    errors_by_code: BTreeMap<String, u64>,
    close_codes: BTreeMap<String, u64>,
    /// Per station: its listeners that connected.
    station_listeners: Vec<u64>,
    /// Per station: its listeners holding its newest `seq` at the end.
    holding: Vec<u64>,
    /// `(station, seq)` -> (listeners that received it, latest receipt in µs).
    updates: BTreeMap<(u32, u64), (u64, u64)>,
}

impl Totals {
    /// Starts from what the parent counted itself.
    fn new(parent: &ParentFigures) -> Totals {
        let stations = parent.states_per_station.len();
        Totals {
            listeners: Listeners {
                ramp_s: parent.ramp_s,
                broadcaster_resumes: parent.broadcaster_resumes,
                ..Listeners::default()
            },
            handshake: Hist::new(),
            fanout: Hist::new(),
            accuracy: Hist::new(),
            delivery: Delivery {
                updates_sent: parent.updates_sent,
                heartbeats_sent: parent.heartbeats_sent,
                unacked: parent.unacked,
                ..Delivery::default()
            },
            errors_by_code: parent.broadcaster_errors.clone(),
            close_codes: BTreeMap::new(),
            station_listeners: vec![0u64; stations],
            holding: vec![0u64; stations],
            updates: BTreeMap::new(),
        }
    }

    /// Adds one worker's report.
    fn add(&mut self, w: &WorkerReport) {
        let listeners = &mut self.listeners;
        listeners.attempted += w.progress.attempted;
        listeners.connected += w.progress.connected;
        listeners.failed += w.progress.failed;
        listeners.dropped += w.progress.dropped;
        listeners.churned += w.progress.churned;
        listeners.reconnects += w.progress.reconnects;
        listeners.reconnect_failures += w.progress.reconnect_failures;
        listeners.down_at_end += w.progress.down;
        add_map(&mut listeners.failed_by_reason, &w.failed_by_reason);
        self.handshake.merge_data(&w.handshake_us);
        self.fanout.merge_data(&w.fanout_us);
        self.accuracy.merge_data(&w.accuracy_ms);
        let delivery = &mut self.delivery;
        delivery.syncs_received += w.progress.syncs;
        delivery.tune_in_syncs += w.tune_in_syncs;
        delivery.skipped += w.skipped;
        delivery.duplicates += w.duplicates;
        delivery.seq_regressions += w.seq_regressions;
        add_map(&mut self.errors_by_code, &w.errors_by_code);
        add_map(&mut self.close_codes, &w.close_codes);
        for s in 0..self.station_listeners.len() {
            self.station_listeners[s] += w.station_listeners.get(s).copied().unwrap_or(0);
            self.holding[s] += w.station_holding_final.get(s).copied().unwrap_or(0);
        }
        for u in &w.updates {
            let e = self.updates.entry((u.station, u.seq)).or_insert((0, 0));
            e.0 += u.count;
            e.1 = e.1.max(u.max_us);
        }
    }

    /// Over the updates that reached every listener of their station: until
    /// the last of them had it. Also gives how many updates did.
    fn last_listener(&self) -> (Hist, u64) {
        let mut last_listener = Hist::new();
        let mut complete = 0u64;
        for (&(station, _), &(count, max_us)) in &self.updates {
            if count
                >= self
                    .station_listeners
                    .get(station as usize)
                    .copied()
                    .unwrap_or(0)
            {
                complete += 1;
                last_listener.record(max_us);
            }
        }
        (last_listener, complete)
    }
}

/// Sets the server's RSS per connection, now that the connections are counted.
fn with_rss_per_connection(mut server: Option<ServerCost>, connected: u64) -> Option<ServerCost> {
    if let Some(s) = server.as_mut() {
        s.rss_per_connection_bytes = (connected > 0).then(|| {
            ((s.rss_after_connect_bytes as f64 - s.rss_before_bytes as f64) / connected as f64)
                .round()
        });
    }
    server
}

/// Merges the workers' reports with the parent's figures.
pub(crate) fn build(parent: ParentFigures, workers: &[WorkerReport]) -> Report {
    let mut t = Totals::new(&parent);
    for w in workers {
        t.add(w);
    }
    t.delivery.expected = (0..t.station_listeners.len())
        .map(|s| parent.states_per_station[s] * t.station_listeners[s])
        .sum();
    let (last_listener, complete) = t.last_listener();
    if t.listeners.ramp_s > 0.0 {
        t.listeners.connect_rate_per_sec =
            (t.listeners.connected as f64 / t.listeners.ramp_s * 10.0).round() / 10.0;
    }
    let connected_total: u64 = t.station_listeners.iter().sum();
    let holding_total: u64 = t.holding.iter().sum();
    let deliveries_per_sec = if parent.run_s > 0.0 {
        (t.delivery.syncs_received as f64 / parent.run_s).round()
    } else {
        0.0
    };
    let server = with_rss_per_connection(parent.server, t.listeners.connected);
    let mut generator = parent.generator;
    generator.clock_offsets_ms = workers.iter().map(|w| w.clock_offset_ms.clone()).collect();
    let seq_regressions = t.delivery.seq_regressions;
    let marks = parent.marks;
    let media = super::media::summarize(
        workers.iter().filter_map(|w| w.media.as_ref()),
        t.listeners.connected,
    );
    Report {
        parameters: parent.parameters,
        listeners: t.listeners,
        handshake_ms: t.handshake.percentiles(1000.0),
        fanout_ms: t.fanout.percentiles(1000.0),
        last_listener_ms: last_listener.percentiles(1000.0),
        updates_reaching_all_pct: pct(complete, t.updates.len() as u64),
        sync_error_ms: t.accuracy.percentiles(1.0),
        delivery: t.delivery,
        final_state_delivery_pct: pct(holding_total, connected_total),
        seq_regressions,
        deliveries_per_sec,
        run_s: (parent.run_s * 1000.0).round() / 1000.0,
        errors_by_code: t.errors_by_code,
        close_codes: t.close_codes,
        server,
        generator,
        thresholds: Thresholds::default(),
        marks,
        media,
    }
}

/// Applies `--max-p99`, `--min-delivery` and the checks that always hold:
/// some listener connected, and no `seq` went backwards.
pub(crate) fn check(report: &mut Report) {
    let mut failures = Vec::new();
    if report.listeners.connected == 0 {
        failures.push("no listener connected".to_owned());
    }
    if report.seq_regressions > 0 {
        failures.push(format!(
            "{} syncs arrived with a lower seq than the one before (the protocol forbids it)",
            report.seq_regressions
        ));
    }
    if let Some(limit) = report.parameters.max_p99_ms {
        match report.fanout_ms.p99 {
            Some(p99) if p99 <= limit => {}
            Some(p99) => failures.push(format!(
                "fan-out p99 {p99:.1} ms is above --max-p99 {limit} ms"
            )),
            None => failures.push("no fan-out was measured, so --max-p99 cannot be met".into()),
        }
    }
    if let Some(min) = report.parameters.min_delivery_pct {
        match report.final_state_delivery_pct {
            Some(d) if d >= min => {}
            Some(d) => failures.push(format!(
                "final-state delivery {d:.3}% is below --min-delivery {min}%"
            )),
            None => {
                failures.push("no listener to deliver to, so --min-delivery cannot be met".into())
            }
        }
    }
    report.thresholds = Thresholds {
        passed: failures.is_empty(),
        failures,
    };
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"))
}

fn map_line(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The summary a person reads.
pub(crate) fn human(r: &Report) -> String {
    let mut s = String::new();
    human_listeners(&mut s, r);
    human_latency(&mut s, r);
    human_delivery(&mut s, r);
    human_cost(&mut s, r);
    super::media::human(&mut s, r.media.as_ref());
    human_result(&mut s, r);
    s
}

/// Who connected, and how fast.
fn human_listeners(s: &mut String, r: &Report) {
    let l = &r.listeners;
    let _ = writeln!(
        s,
        "listeners   {} attempted, {} connected, {} failed ({}), {} dropped",
        l.attempted,
        l.connected,
        l.failed,
        map_line(&l.failed_by_reason),
        l.dropped
    );
    if l.churned > 0 {
        let _ = writeln!(s, "churn       {} listeners replaced", l.churned);
    }
    if l.reconnects + l.reconnect_failures + l.broadcaster_resumes + l.down_at_end > 0 {
        let _ = writeln!(
            s,
            "reconnects  {} listeners reconnected ({} attempts failed), {} without a connection \
             at the end; broadcasters resumed {} times",
            l.reconnects, l.reconnect_failures, l.down_at_end, l.broadcaster_resumes
        );
    }
    for m in &r.marks {
        let converged = m.converged_after_s.map_or_else(
            || "not converged".to_owned(),
            |t| format!("converged in {t:.1} s"),
        );
        let _ = writeln!(
            s,
            "mark {:<6} at {:.1} s: {converged}; then {} reconnects, {} seq regressions, {} \
             listeners down",
            m.n, m.at_s, m.reconnects, m.seq_regressions, m.down_at_end
        );
    }
    let _ = writeln!(
        s,
        "connect     {:.1} s ramp, {:.0}/s; handshake p50 {} p90 {} p99 {} max {}",
        l.ramp_s,
        l.connect_rate_per_sec,
        ms(r.handshake_ms.p50),
        ms(r.handshake_ms.p90),
        ms(r.handshake_ms.p99),
        ms(r.handshake_ms.max)
    );
}

/// How long the syncs took, and how far off the listeners were.
fn human_latency(s: &mut String, r: &Report) {
    let f = &r.fanout_ms;
    let _ = writeln!(
        s,
        "fan-out     p50 {} p90 {} p99 {} p99.9 {} max {} ({} syncs)",
        ms(f.p50),
        ms(f.p90),
        ms(f.p99),
        ms(f.p999),
        ms(f.max),
        f.count
    );
    let _ = writeln!(
        s,
        "last one    p50 {} p99 {} max {} until every listener had an update ({}% of updates reached all)",
        ms(r.last_listener_ms.p50),
        ms(r.last_listener_ms.p99),
        ms(r.last_listener_ms.max),
        r.updates_reaching_all_pct
            .map_or("-".into(), |p| format!("{p:.1}"))
    );
    let _ = writeln!(
        s,
        "sync error  p50 {} p99 {} (listener's position estimate vs the broadcaster's)",
        ms(r.sync_error_ms.p50),
        ms(r.sync_error_ms.p99)
    );
}

/// What was sent and what arrived.
fn human_delivery(s: &mut String, r: &Report) {
    let d = &r.delivery;
    let _ = writeln!(
        s,
        "delivery    {} updates + {} heartbeats {}; {} of {} syncs received, {} skipped, {} seq regressions; final state {}",
        d.updates_sent,
        d.heartbeats_sent,
        if r.parameters.listen_only {
            "published"
        } else {
            "sent"
        },
        d.syncs_received,
        d.expected,
        d.skipped,
        d.seq_regressions,
        r.final_state_delivery_pct
            .map_or("-".into(), |p| format!("{p:.3}%"))
    );
    let _ = writeln!(
        s,
        "throughput  {:.0} deliveries/s over {:.1} s",
        r.deliveries_per_sec, r.run_s
    );
    let _ = writeln!(
        s,
        "errors      {}; close codes {}",
        map_line(&r.errors_by_code),
        map_line(&r.close_codes)
    );
}

/// What the server and the generator cost.
fn human_cost(s: &mut String, r: &Report) {
    if let Some(sv) = &r.server {
        let _ = writeln!(
            s,
            "server      RSS {:.1} -> {:.1} MiB ({} per connection), CPU {:.1} s ramp + {:.1} s run ({:.0}% of the machine)",
            sv.rss_before_bytes as f64 / 1_048_576.0,
            sv.rss_after_connect_bytes as f64 / 1_048_576.0,
            sv.rss_per_connection_bytes
                .map_or("-".into(), |b| format!("{:.2} KiB", b / 1024.0)),
            sv.cpu_seconds_ramp,
            sv.cpu_seconds_run,
            sv.cpu_pct_of_machine_run
        );
    }
    let g = &r.generator;
    let _ = writeln!(
        s,
        "generator   CPU {:.1} s ramp + {:.1} s run ({:.0}% and {:.0}% of {} CPUs)",
        g.cpu_seconds_ramp,
        g.cpu_seconds_run,
        g.cpu_pct_of_machine_ramp,
        g.cpu_pct_of_machine_run,
        g.cpus
    );
    if let Some(w) = &g.warning {
        let _ = writeln!(s, "warning     {w}");
    }
}

/// The thresholds' verdict.
fn human_result(s: &mut String, r: &Report) {
    if r.thresholds.passed {
        let _ = writeln!(s, "result      passed");
    } else {
        for f in &r.thresholds.failures {
            let _ = writeln!(s, "FAILED      {f}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let s = sample_proc(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(s.cpu_seconds >= 0.0);
    }
}
