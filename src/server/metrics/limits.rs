//! What the per-client limits on stations refuse
//! (`radio_limit_refusals_total{limit}`), and how often the `stations`
//! listing is made afresh (`radio_list_refreshes_total`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// A limit on what one client may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// `--max-stations-per-ip`: `too_many_stations`.
    StationShare,
    /// `--claim-rate`: `rate_limited` on `start_broadcasting`.
    ClaimRate,
    /// `--list-rate`: `rate_limited` on `list_stations`.
    ListRate,
    /// `start_broadcasting` with a key that is wrong (or for a station
    /// without one): `unauthorized`.
    WrongKey,
    /// `start_broadcasting` with a key from an address, or for a station,
    /// out of its budget of wrong keys: `rate_limited`.
    KeyBudget,
}

impl Limit {
    const ALL: [Limit; 5] = [
        Limit::StationShare,
        Limit::ClaimRate,
        Limit::ListRate,
        Limit::WrongKey,
        Limit::KeyBudget,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Limit::StationShare => "station_share",
            Limit::ClaimRate => "claim_rate",
            Limit::ListRate => "list_rate",
            Limit::WrongKey => "wrong_key",
            Limit::KeyBudget => "key_budget",
        }
    }
}

/// The counters of this module.
pub(crate) struct Limits {
    refused: [Counter; Limit::ALL.len()],
    /// Listings made from the backend (every other answer was the cached one).
    pub list_refreshes: Counter,
}

impl Limits {
    pub(super) fn new(r: &mut Registry) -> Self {
        let family = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        r.register(
            "limit_refusals",
            "Requests refused by a per-client limit on stations, by limit",
            family.clone(),
        );
        let refused = std::array::from_fn(|i| {
            let labels = vec![("limit", Limit::ALL[i].as_str())];
            family.get_or_create(&labels).clone()
        });
        let list_refreshes = Counter::default();
        r.register(
            "list_refreshes",
            "Station listings made from the backend (one at a time; the rest were served the page in hand)",
            list_refreshes.clone(),
        );
        Self {
            refused,
            list_refreshes,
        }
    }

    /// Counts one request refused by `limit`.
    pub(crate) fn refused(&self, limit: Limit) {
        // `ALL` lists the variants in declaration order.
        self.refused[limit as usize].inc();
    }
}
