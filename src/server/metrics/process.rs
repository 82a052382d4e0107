//! The standard `process_*` metrics every Prometheus client library
//! exports, read from the kernel at each scrape: CPU time, resident and
//! virtual memory, open and allowed file descriptors, and the start time.
//! Nothing is kept between scrapes, so nothing costs anything in between.
//!
//! On Linux from `/proc/self` (as the Go and Python clients do); elsewhere
//! only what `getrusage` and `getrlimit` give.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Registered once; reads the process's figures at each scrape.
#[derive(Debug)]
pub(super) struct Process {
    /// Seconds since the Unix epoch when this process started.
    start_time: f64,
}

impl Process {
    pub(super) fn new() -> Self {
        Self {
            start_time: start_time().unwrap_or_else(now),
        }
    }
}

impl Default for Process {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(cpu) = cpu_seconds() {
            let c = ConstCounter::new(cpu);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                c.metric_type(),
            )?)?;
        }
        let mut gauge = |name: &str, help: &str, value: f64| {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        if let Some((virt, rss)) = memory() {
            gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss as f64,
            )?;
            gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                virt as f64,
            )?;
        }
        if let Some(n) = open_fds() {
            gauge(
                "process_open_fds",
                "Number of open file descriptors.",
                n as f64,
            )?;
        }
        if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                soft as f64,
            )?;
        }
        // Not a standard series, but the one a leak of tasks shows on: a
        // soak checks that it ends where it started.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            gauge(
                "radio_runtime_tasks",
                "Tasks alive in the server's async runtime.",
                runtime.metrics().num_alive_tasks() as f64,
            )?;
        }
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            self.start_time,
        )
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// User and system CPU time of the whole process.
fn cpu_seconds() -> Option<f64> {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        (libc::getrusage(libc::RUSAGE_SELF, &mut usage) == 0).then_some(usage)
    }?;
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(secs(usage.ru_utime) + secs(usage.ru_stime))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).unwrap_or(4096)
}

/// Virtual and resident size in bytes (`/proc/self/statm`: pages).
#[cfg(target_os = "linux")]
fn memory() -> Option<(u64, u64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut fields = statm.split_whitespace().map(|f| f.parse::<u64>().ok());
    let (virt, rss) = (fields.next()??, fields.next()??);
    Some((virt * page_size(), rss * page_size()))
}

#[cfg(not(target_os = "linux"))]
fn memory() -> Option<(u64, u64)> {
    let _ = page_size;
    None
}

#[cfg(target_os = "linux")]
fn open_fds() -> Option<usize> {
    // One entry per descriptor; the directory's own handle is one of them.
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(n.saturating_sub(1))
}

#[cfg(not(target_os = "linux"))]
fn open_fds() -> Option<usize> {
    None
}

/// The process's start: its start in clock ticks after boot
/// (`/proc/self/stat`, field 22) plus the boot time (`/proc/stat`, btime).
#[cfg(target_os = "linux")]
fn start_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 on; field 22 is the 20th of them.
    let ticks: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| boot + ticks / hz as f64)
}

#[cfg(not(target_os = "linux"))]
fn start_time() -> Option<f64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let started = start_time().expect("start time");
        assert!(
            started <= now() + 1.0 && started > now() - 86_400.0,
            "{started}"
        );
        let (virt, rss) = memory().expect("statm");
        assert!(rss > 0 && virt >= rss);
        assert!(open_fds().expect("fds") >= 3);
        assert!(cpu_seconds().expect("rusage") >= 0.0);
    }
}
