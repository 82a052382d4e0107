//! Value parsers several subcommands' flags share (a leaf of `cli`).

use std::time::Duration;

/// Parses durations written like `10s`, `500ms`, `1m 30s`.
/// `--media-base-url`: an http(s) URL with a host and no query or
/// fragment; returned without a trailing `/`, for `/media/{id}` to follow.
pub(crate) fn parse_base_url(s: &str) -> Result<String, String> {
    let trimmed = s.trim().trim_end_matches('/');
    let uri: http::Uri = trimmed
        .parse()
        .map_err(|e| format!("not a URL ({e}); give one like https://cdn.example.com"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err("give an http or https URL with a host, like https://cdn.example.com".into());
    }
    if s.contains(['?', '#']) {
        return Err("a base URL takes no query or fragment: /media/{id} is added to it".into());
    }
    Ok(trimmed.to_owned())
}

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

/// `--stream-bitrate`: an MPEG-1 Layer III bitrate.
pub(crate) fn parse_bitrate(s: &str) -> Result<u32, String> {
    const RATES: [u32; 14] = [
        32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    let kbps = s
        .trim_end_matches("k")
        .parse::<u32>()
        .map_err(|_| format!("{s:?} is not a bitrate; write kb/s, like 128"))?;
    if RATES.contains(&kbps) {
        Ok(kbps)
    } else {
        Err(format!("MP3 has no {kbps} kb/s; use one of {RATES:?}"))
    }
}

/// `--stream-burst`: at most 10 s (the stream runs that far ahead).
pub(crate) fn parse_burst(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > Duration::from_secs(10) {
        return Err("a burst over 10s delays every change that long; use 10s or less".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_media_base_url_is_an_http_url_without_its_last_slash() {
        assert_eq!(
            parse_base_url("https://cdn.example.com/radio/").unwrap(),
            "https://cdn.example.com/radio"
        );
        assert_eq!(
            parse_base_url("http://10.0.0.5:8080").unwrap(),
            "http://10.0.0.5:8080"
        );
        for bad in [
            "cdn.example.com",
            "ftp://x/y",
            "https://x/?a=1",
            "https://x/#f",
            "/media",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
    }

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
