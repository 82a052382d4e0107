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

/// A rate per minute (`--churn`): `N/min`, `N/s`, or `N` (a minute).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PerMinute {
    pub per_min: f64,
}

pub(crate) fn parse_per_minute(s: &str) -> Result<PerMinute, String> {
    let (n, per) = match s.trim().split_once('/') {
        Some((n, unit)) => (n.trim(), unit.trim()),
        None => (s.trim(), "min"),
    };
    let scale = match per {
        "min" | "m" => 1.0,
        "s" | "sec" => 60.0,
        "h" => 1.0 / 60.0,
        _ => return Err(format!("{per:?} is not a unit: write 1000/min or 20/s")),
    };
    match n.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(PerMinute { per_min: n * scale }),
        _ => Err(format!(
            "{n:?} is not a rate: write a number and a unit, like 1000/min or 20/s"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_per_minute() {
        assert_eq!(parse_per_minute("1000/min").unwrap().per_min, 1000.0);
        assert_eq!(parse_per_minute("20/s").unwrap().per_min, 1200.0);
        assert_eq!(parse_per_minute("30").unwrap().per_min, 30.0);
        assert!(parse_per_minute("-1/min").is_err());
        assert!(parse_per_minute("5/week").is_err());
        assert!(parse_per_minute("lots").is_err());
    }
}
