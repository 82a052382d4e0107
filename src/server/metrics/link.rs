//! The link a backend keeps to a service outside this process (the store
//! that several nodes share), as `/metrics` shows it: `radio_{name}_up` and
//! `radio_{name}_reconnects_total`, present only while the backend reports
//! such a link. The backend names the series ([`Link::name`]), so nothing
//! here knows which backends exist.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// A backend's link to the service it stands on, read when `/metrics` is
/// scraped (`Backend::link`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    /// The series' middle name: `radio_{name}_up`.
    pub name: &'static str,
    /// The service as the series' help text calls it.
    pub service: &'static str,
    /// Whether the link is up now.
    pub up: bool,
    /// Times the link came back after being lost, since start.
    pub reconnects: u64,
}

/// Registered once; encodes the link of the scrape being rendered, if any.
/// (A collector's help is written as given: the registry adds the final
/// full stop only to what is registered through it.)
#[derive(Clone, Debug, Default)]
pub(super) struct LinkSeries(Arc<Mutex<Option<Link>>>);

impl LinkSeries {
    /// The link the next encoding shows (`None`: no series).
    pub(super) fn set(&self, link: Option<Link>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = link;
    }
}

impl Collector for LinkSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(link) = *self.0.lock().unwrap_or_else(|p| p.into_inner()) else {
            return Ok(());
        };
        let up = ConstGauge::new(i64::from(link.up));
        up.encode(encoder.encode_descriptor(
            &format!("{}_up", link.name),
            &format!("1 while the link to {} is up, else 0.", link.service),
            None,
            up.metric_type(),
        )?)?;
        let reconnects = ConstCounter::new(link.reconnects);
        reconnects.encode(encoder.encode_descriptor(
            &format!("{}_reconnects", link.name),
            &format!(
                "Times the link to {} came back after being lost.",
                link.service
            ),
            None,
            reconnects.metric_type(),
        )?)
    }
}
