//! The run's plan: which listener goes to which node, station and source
//! address, how many worker processes, and the messages parent and workers
//! exchange (JSON lines: the plan and commands on the worker's stdin, progress
//! and the final report on its stdout).
//!
//! Assignment is a pure function of the listener's global index, so the
//! parent only sends each worker its index range and every process agrees on
//! how many listeners each station has.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::stats::HistData;

/// Connections one worker process holds at most under `--workers auto`:
/// well inside the 20,000 open files a process may have here, leaving room
/// for the runtime's own descriptors.
pub(crate) const AUTO_CONNECTIONS_PER_WORKER: usize = 15_000;

/// Connections per source address before the next address is used: below
/// the ~28,000 ephemeral ports of one address, leaving room for sockets in
/// TIME_WAIT from an earlier run.
pub(crate) const CONNECTIONS_PER_SOURCE_ADDR: usize = 10_000;

/// Handshakes in flight per worker when `--connect-rate` is 0 ("as fast as
/// accepted"): enough to keep the server's accept queue full, few enough
/// not to time out waiting in it.
pub(crate) const MAX_INFLIGHT_HANDSHAKES: usize = 256;

/// A worker's ramp: starts its `count` clients at `rate` a second (0: as
/// fast as accepted), at most [`MAX_INFLIGHT_HANDSHAKES`] of them between
/// connect and answer; `start(local, permit)` begins client `local`, which
/// drops `permit` once it is in or has failed. Then waits until `settled()`
/// says every client has. Gives the time it took.
pub(crate) async fn ramp(
    count: usize,
    rate: f64,
    mut start: impl FnMut(usize, tokio::sync::OwnedSemaphorePermit),
    settled: impl Fn() -> bool,
) -> std::time::Duration {
    use std::sync::Arc;
    use std::time::Duration;
    let inflight = Arc::new(tokio::sync::Semaphore::new(MAX_INFLIGHT_HANDSHAKES));
    let gap = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let began = tokio::time::Instant::now();
    for local in 0..count {
        if let Some(gap) = gap {
            tokio::time::sleep_until(began + gap.mul_f64(local as f64)).await;
        }
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break;
        };
        start(local, permit);
    }
    while !settled() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    began.elapsed()
}

/// Everything one worker process needs; the first line on its stdin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WorkerPlan {
    pub worker: usize,
    /// WebSocket URLs of the nodes, normalized.
    pub urls: Vec<String>,
    /// Station names, in order; listener `i` tunes to `stations[i % len]`.
    pub stations: Vec<String>,
    /// Global index of this worker's first listener, and how many it runs.
    pub first: usize,
    pub count: usize,
    /// Connections a second for this worker; 0 for as fast as accepted.
    pub connect_rate: f64,
    /// Local addresses to bind client sockets to; empty to let the OS pick.
    pub source_addrs: Vec<IpAddr>,
    /// The broadcasters' timeline: a station's true position at server time
    /// `t` is `t - epoch_server_ms`; `None` when the generator only listens.
    pub epoch_server_ms: Option<i64>,
    /// Time one listener has for TCP connect, upgrade and `welcome`.
    pub handshake_timeout_ms: u64,
    /// Listeners this worker replaces a minute once the ramp is done.
    #[serde(default)]
    pub churn_per_min: f64,
    /// Listeners make a lost connection again, on the next node.
    #[serde(default)]
    pub reconnect: bool,
    /// `--stream`: the listeners are HTTP stream readers of these URLs.
    #[serde(default)]
    pub stream: Option<StreamPlan>,
    /// `--ca-cert`: the PEM file a `wss://` node's certificate is checked
    /// against instead of the Mozilla roots.
    #[serde(default)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// `--fetch-media`: listeners also fetch their tracks, as the player.
    #[serde(default)]
    pub fetch_media: Option<super::media::FetchMedia>,
}

impl WorkerPlan {
    /// The node (index into `urls`) of global listener `i`.
    pub(crate) fn url_of(&self, i: usize) -> usize {
        i % self.urls.len()
    }
    /// The station (index into `stations`) of global listener `i`.
    pub(crate) fn station_of(&self, i: usize) -> usize {
        i % self.stations.len()
    }
    /// The source address of global listener `i`, if any.
    pub(crate) fn source_of(&self, i: usize) -> Option<IpAddr> {
        if self.source_addrs.is_empty() {
            None
        } else {
            Some(self.source_addrs[i % self.source_addrs.len()])
        }
    }
}

/// Splits `total` listeners over `workers` processes: contiguous ranges.
pub(crate) fn split(total: usize, workers: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(workers);
    let mut first = 0;
    for w in 0..workers {
        let count = total / workers + usize::from(w < total % workers);
        out.push((first, count));
        first += count;
    }
    out
}

/// Reads `--workers`: a positive number or `auto`.
pub(crate) fn parse_workers(s: &str, listeners: usize) -> anyhow::Result<usize> {
    let n = if s.eq_ignore_ascii_case("auto") {
        listeners.div_ceil(AUTO_CONNECTIONS_PER_WORKER)
    } else {
        s.parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("--workers must be a positive number or auto, not {s:?}"))?
    };
    Ok(n.clamp(1, listeners.max(1)))
}

/// Reads `--source-addrs`: `A-B` (IPv4, inclusive) or `A,B,C`.
pub(crate) fn parse_source_addrs(s: &str) -> anyhow::Result<Vec<IpAddr>> {
    let s = s.trim();
    if let Some((a, b)) = s.split_once('-') {
        let a: Ipv4Addr = a.trim().parse().with_context(|| {
            format!("--source-addrs: {a:?} is not an IPv4 address (write 127.0.0.1-127.0.0.8)")
        })?;
        let b: Ipv4Addr = b.trim().parse().with_context(|| {
            format!("--source-addrs: {b:?} is not an IPv4 address (write 127.0.0.1-127.0.0.8)")
        })?;
        let (a, b) = (u32::from(a), u32::from(b));
        if b < a {
            bail!("--source-addrs: the range ends before it starts");
        }
        if b - a >= 65_536 {
            bail!("--source-addrs: a range of at most 65,536 addresses, please");
        }
        return Ok((a..=b).map(|x| IpAddr::V4(Ipv4Addr::from(x))).collect());
    }
    let addrs = s
        .split(',')
        .map(|p| {
            p.trim().parse::<IpAddr>().with_context(|| {
                format!("--source-addrs: {p:?} is not an IP address (write 127.0.0.1,127.0.0.2 or a range A-B)")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if addrs.is_empty() {
        bail!("--source-addrs is empty");
    }
    Ok(addrs)
}

/// The default source addresses for a loopback target: 127.0.0.1 onward, one
/// per [`CONNECTIONS_PER_SOURCE_ADDR`] connections (at most 127.0.0.254).
pub(crate) fn default_loopback_sources(connections: usize) -> Vec<IpAddr> {
    let n = connections
        .div_ceil(CONNECTIONS_PER_SOURCE_ADDR)
        .clamp(1, 254);
    (1..=n as u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect()
}

/// A command from the parent, after the plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub(crate) enum ParentCmd {
    /// The run phase starts now (`--stream`: each reader's bytes are
    /// counted from here).
    Mark,
    /// The run phase begins at `at_unix_ms` (the parent's clock, a moment
    /// still ahead when this is sent): only states the server publishes
    /// from then on are measured. A station that plays by itself (a
    /// server-run one) publishes during the ramp too, while the server is
    /// busy with handshakes; those states are no part of the run.
    /// With `until_unix_ms`, states published from then on are not
    /// measured either (a station that plays by itself goes on after the
    /// run; a broadcaster of the generator just stops).
    Run {
        at_unix_ms: i64,
        until_unix_ms: Option<i64>,
    },
    /// The broadcasters have stopped: wait (up to `drain_ms`) until every
    /// listener holds its station's newest `seq`, then report and exit.
    Finish { final_seqs: Vec<u64>, drain_ms: u64 },
    /// Each station's newest acknowledged `seq` now (`id` grows with each):
    /// the progress reports then count the listeners that lack it.
    Newest { id: u64, seqs: Vec<u64> },
}

/// A line from a worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum WorkerMsg {
    /// Every half second.
    Progress(Progress),
    /// Every listener of this worker has been attempted.
    RampDone(Progress),
    /// The final figures; the worker exits after it.
    Report(Box<WorkerReport>),
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Progress {
    pub attempted: u64,
    pub connected: u64,
    pub failed: u64,
    /// Listeners whose connection ended after it was established.
    pub dropped: u64,
    /// Fan-out syncs received so far.
    pub syncs: u64,
    /// Fan-out p99 so far, in microseconds (`--stream`: start time p99).
    pub p99_us: Option<u64>,
    /// Listeners replaced by churn so far.
    #[serde(default)]
    pub churned: u64,
    /// Connections made again after one was lost (`--reconnect`), and
    /// attempts at that which failed.
    #[serde(default)]
    pub reconnects: u64,
    #[serde(default)]
    pub reconnect_failures: u64,
    /// `seq` regressions seen so far.
    #[serde(default)]
    pub seq_regressions: u64,
    /// Against the parent's latest newest-`seq`s ([`ParentCmd::Newest`],
    /// `newest_id`): listeners once connected and not now (`down`), and
    /// connected ones that lack their station's newest state (`behind`).
    #[serde(default)]
    pub newest_id: u64,
    #[serde(default)]
    pub down: u64,
    #[serde(default)]
    pub behind: u64,
    /// `--stream`: audio bytes received so far, and stalls.
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub stalls: u64,
}

/// One update as seen by one worker's listeners.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct UpdateSeen {
    pub station: u32,
    pub seq: u64,
    /// Listeners that received it.
    pub count: u64,
    /// The latest receipt, in microseconds after the server's stamp.
    pub max_us: u64,
}

/// What a worker measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct WorkerReport {
    pub progress: Progress,
    /// Failed connections by reason.
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Microseconds from the start of the TCP connect to the `welcome`.
    pub handshake_us: HistData,
    /// Microseconds from `sync.server_time_ms` to receipt (update and heartbeat syncs).
    pub fanout_us: HistData,
    /// |listener's position estimate - broadcaster's true position|, in ms.
    pub accuracy_ms: HistData,
    pub updates: Vec<UpdateSeen>,
    /// `sync{cause:"tune_in"}` frames.
    pub tune_in_syncs: u64,
    /// States skipped (conflated) between two syncs a listener received.
    pub skipped: u64,
    /// A sync with the same `seq` as the one before.
    pub duplicates: u64,
    /// A sync with a lower `seq` than the one before (a protocol violation).
    pub seq_regressions: u64,
    /// Per station: this worker's connected listeners, and how many of them
    /// held the station's final `seq` at the end.
    pub station_listeners: Vec<u64>,
    pub station_holding_final: Vec<u64>,
    /// `error` frames received, by code.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Close frames received, by code.
    pub close_codes: BTreeMap<String, u64>,
    /// Milliseconds from the first connect attempt until the last listener
    /// was attempted and answered.
    pub ramp_ms: u64,
    /// This worker's clock offset to each node, in ms (server minus ours).
    pub clock_offset_ms: Vec<f64>,
    /// `--stream`: what the stream readers measured.
    #[serde(default)]
    pub stream: Option<StreamFigures>,
    /// With `--fetch-media`: what the listeners fetched.
    #[serde(default)]
    pub media: Option<super::media::MediaReport>,
}

// `--stream`: what the parent tells each worker and what it reports.

/// One stream to read, resolved.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StreamTarget {
    pub url: String,
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// The path and query to ask for.
    pub path: String,
}

/// A worker's share of `--stream`: reader `i` reads `targets[i % len]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StreamPlan {
    pub targets: Vec<StreamTarget>,
}

/// What one worker's readers measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct StreamFigures {
    /// Microseconds from the start of the TCP connect to the first audio byte.
    pub start_us: HistData,
    /// Audio bytes a second over the run phase, one value per reader that
    /// read through it.
    pub bytes_per_s: HistData,
    /// The run phase as this worker timed it (`mark` to `finish`).
    pub window_s: f64,
    pub window_readers: u64,
    pub window_bytes: u64,
    /// Audio missing over the run phase beyond a second's worth per reader,
    /// at the stream's bitrate.
    pub lost_bytes: u64,
    /// `icy-br`, as the stream said it.
    pub kbps: Option<u32>,
    /// Gaps of more than a second without audio, and the readers that had one.
    pub stalls: u64,
    pub readers_stalled: u64,
    /// The length of the gaps that ended, in ms.
    pub stalled_ms: u64,
    /// Readers that got nothing at all during the run phase.
    pub silent_in_run: u64,
    /// Streams that ended during the run, by reason.
    pub ended_by_reason: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_everyone_once() {
        let parts = split(2_001, 2);
        assert_eq!(parts, vec![(0, 1_001), (1_001, 1_000)]);
        assert_eq!(split(3, 3), vec![(0, 1), (1, 1), (2, 1)]);
    }

    #[test]
    fn workers_flag() {
        assert_eq!(parse_workers("auto", 18_000).unwrap(), 2);
        assert_eq!(parse_workers("auto", 100).unwrap(), 1);
        assert_eq!(parse_workers("3", 100).unwrap(), 3);
        assert_eq!(parse_workers("8", 2).unwrap(), 2);
        assert!(parse_workers("0", 100).is_err());
        assert!(parse_workers("many", 100).is_err());
    }

    #[test]
    fn source_addrs_flag() {
        let r = parse_source_addrs("127.0.0.1-127.0.0.3").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[2], "127.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(parse_source_addrs("127.0.0.5,::1").unwrap().len(), 2);
        assert!(parse_source_addrs("127.0.0.3-127.0.0.1").is_err());
        assert!(parse_source_addrs("localhost").is_err());
        assert_eq!(default_loopback_sources(18_000).len(), 2);
        assert_eq!(default_loopback_sources(5).len(), 1);
    }
}
