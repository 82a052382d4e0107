//! Prometheus metrics at `GET /metrics`.
//!
//! Every metric handle is created once at start and shared; the per-message
//! paths only touch atomics. Labelled families are resolved up front into
//! arrays indexed by request type and error code, so no map (and no lock) is
//! consulted per message. The handling-time histogram is our own lock-free
//! [`AtomicHistogram`] because the client library's histogram takes a lock on
//! every observation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::protocol::{ErrorCode, RequestType};

type Labels = Vec<(&'static str, &'static str)>;

/// All of the server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections (moved by the connection guard).
    pub connections: Gauge,
    /// WebSocket connections accepted since start.
    pub connections_total: Counter,
    /// Upgrades refused because `--max-connections` was reached.
    pub connections_refused: Counter,
    /// Stations with a broadcaster (including those in their grace period).
    pub stations: Gauge,
    /// Connections tuned to a station.
    pub listeners: Gauge,
    inbound: [Counter; RequestType::ALL.len()],
    /// Inbound frames that were not a valid request.
    pub inbound_invalid: Counter,
    /// `sync` frames written to listeners.
    pub syncs_sent: Counter,
    /// Deliveries the fan-out left to the listener's own task (its socket
    /// would block, a write was cut short, or it was writing itself).
    pub fanout_skipped: Counter,
    errors: [Counter; ErrorCode::ALL.len()],
    /// Clients closed because they accepted no bytes for the write timeout.
    pub slow_client_disconnects: Counter,
    /// Clients closed because they did not answer keepalive pings.
    pub keepalive_timeouts: Counter,
    /// Clients closed for flooding past the rate limit.
    pub rate_limit_disconnects: Counter,
    /// Time to handle one inbound request.
    pub handling_seconds: AtomicHistogram,
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("radio");
        // Registered in the order /metrics lists them.
        Self {
            connections: metric(&mut r, "connections", "Open WebSocket connections"),
            connections_total: metric(
                &mut r,
                "connections_accepted",
                "WebSocket connections accepted since start",
            ),
            connections_refused: metric(
                &mut r,
                "connections_refused",
                "WebSocket upgrades refused with 503 at --max-connections",
            ),
            stations: metric(
                &mut r,
                "stations",
                "Stations with a broadcaster, including those in their grace period",
            ),
            listeners: metric(&mut r, "listeners", "Connections tuned to a station"),
            inbound: counters(
                &mut r,
                "inbound_messages",
                "Inbound requests by type",
                "type",
                |i| RequestType::ALL[i].as_str(),
            ),
            inbound_invalid: metric(
                &mut r,
                "inbound_invalid",
                "Inbound frames that were not a valid request",
            ),
            syncs_sent: metric(&mut r, "syncs_sent", "sync frames written to listeners"),
            fanout_skipped: metric(
                &mut r,
                "fanout_skipped",
                "Deliveries the fan-out left to the listener's own task (socket full or busy)",
            ),
            errors: counters(
                &mut r,
                "errors",
                "error frames sent, by code",
                "code",
                |i| ErrorCode::ALL[i].as_str(),
            ),
            slow_client_disconnects: metric(
                &mut r,
                "slow_client_disconnects",
                "Clients closed (1008) after accepting no bytes for the write timeout",
            ),
            keepalive_timeouts: metric(
                &mut r,
                "keepalive_timeouts",
                "Clients closed after not answering pings for the keepalive timeout",
            ),
            rate_limit_disconnects: metric(
                &mut r,
                "rate_limit_disconnects",
                "Clients closed (1008) for flooding past the rate limit",
            ),
            handling_seconds: {
                let h = AtomicHistogram::new(&[
                    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
                ]);
                r.register(
                    "message_handling_seconds",
                    "Time to handle one inbound request",
                    h.clone(),
                );
                h
            },
            registry: r,
        }
    }

    /// Counts one inbound request.
    pub fn inbound(&self, ty: RequestType) {
        // `ALL` lists the variants in declaration order.
        self.inbound[ty as usize].inc();
    }

    /// Counts one `error` frame sent.
    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].inc();
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// A new counter or gauge, registered as `radio_{name}`.
fn metric<M: Default + Clone + prometheus_client::registry::Metric>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> M {
    let m = M::default();
    registry.register(name, help, m.clone());
    m
}

/// A family of `N` counters labelled `label`, resolved up front: counter
/// `i` has the label value `value(i)`.
fn counters<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    value: impl Fn(usize) -> &'static str,
) -> [Counter; N] {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    std::array::from_fn(|i| family.get_or_create(&vec![(label, value(i))]).clone())
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A histogram whose observations are a few relaxed atomic adds.
#[derive(Clone, Debug)]
pub struct AtomicHistogram(std::sync::Arc<HistogramInner>);

#[derive(Debug)]
pub struct HistogramInner {
    bounds: Vec<f64>,
    /// One count per bound, plus the +Inf bucket (not cumulative).
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds: &[f64]) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(std::sync::Arc::new(HistogramInner {
            bounds: bounds.to_vec(),
            counts,
            sum_nanos: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .0
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.0.bounds.len());
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(self.0.counts.len());
        for (i, c) in self.0.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let bound = self.0.bounds.get(i).copied().unwrap_or(f64::MAX);
            buckets.push((bound, cumulative));
        }
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, cumulative, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.inbound(RequestType::Ping);
        m.error(ErrorCode::NotOwner);
        m.handling_seconds.observe(Duration::from_micros(30));
        m.handling_seconds.observe(Duration::from_secs(3));
        let text = m.render();
        assert!(
            text.contains("radio_inbound_messages_total{type=\"ping\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("radio_errors_total{code=\"not_owner\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("radio_message_handling_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("radio_message_handling_seconds_bucket{le=\"0.00005\"} 1"),
            "{text}"
        );
        assert!(text.contains("radio_connections 0"), "{text}");
    }
}
