//! Value parsers several subcommands' flags share (a leaf of `cli`).

use std::time::Duration;

/// Parses durations written like `10s`, `500ms`, `1m 30s`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 10s, 500ms, 2m)"))
}

/// A duration that paces something: more than zero.
pub(crate) fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than 0 (like 1s or 500ms)".to_owned()),
        d => Ok(d),
    }
}

/// Checks a station name (`--station`).
pub(crate) fn parse_station(s: &str) -> Result<String, String> {
    crate::protocol::StationName::new(s).map(|n| n.as_str().to_owned())
}
