//! The stations' MP3 streams (`/stations/{name}/stream`): their listeners,
//! the bytes written to them and skipped by slow ones, the stations being
//! encoded, and the CPU time of the encoding processes (ffmpeg, outside
//! `process_cpu_seconds_total`).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The series of this module.
#[derive(Default)]
pub(crate) struct StreamSeries {
    /// Open stream connections.
    pub listeners: Gauge,
    /// Bytes handed to stream connections (audio and metadata).
    pub bytes: Counter,
    /// Bytes slow listeners skipped to stay with the station.
    pub dropped_bytes: Counter,
    /// Stream listeners closed for staying behind.
    pub slow_closed: Counter,
    /// Stations being encoded now (each has one encoder and at most one
    /// decoder).
    pub encoders: Gauge,
    /// CPU seconds of the decoding and encoding processes.
    pub cpu_seconds: Counter<f64, AtomicU64>,
}

impl StreamSeries {
    pub(super) fn new(r: &mut Registry) -> Self {
        let s = Self::default();
        r.register(
            "stream_listeners",
            "Open MP3 stream connections (/stations/NAME/stream); also in radio_listeners",
            s.listeners.clone(),
        );
        r.register(
            "stream_bytes",
            "Bytes written to stream listeners, audio and ICY metadata",
            s.bytes.clone(),
        );
        r.register(
            "stream_dropped_bytes",
            "Stream bytes slow listeners skipped to stay with the station",
            s.dropped_bytes.clone(),
        );
        r.register(
            "stream_slow_closed",
            "Stream listeners closed for staying behind the station for --write-timeout",
            s.slow_closed.clone(),
        );
        r.register(
            "stream_encoders",
            "Stations encoded for their stream listeners now (one encoder each)",
            s.encoders.clone(),
        );
        r.register(
            "stream_encoder_cpu_seconds",
            "CPU seconds used by the stream's decoding and encoding processes (ffmpeg)",
            s.cpu_seconds.clone(),
        );
        s
    }
}
