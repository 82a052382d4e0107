//! The base of the links in `stream.m3u`, `.pls` and `/status-json.xsl`,
//! made of the request's `Host` and, from a trusted proxy, its forwarding
//! headers: never panics, and a base it gives is `http(s)://` and a host
//! with nothing that could end a playlist's line or a URL's authority.
#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use radio::playlist_base_url;

const NAMES: [&str; 4] = ["host", "x-forwarded-host", "x-forwarded-proto", "forwarded"];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // Each 0xFF-separated part is one header's value, named in turn.
    let mut headers = HeaderMap::new();
    for (i, part) in rest.split(|&b| b == 0xFF).enumerate().take(8) {
        if let Ok(value) = HeaderValue::from_bytes(part) {
            headers.append(HeaderName::from_static(NAMES[i % NAMES.len()]), value);
        }
    }
    let (trusted, tls) = (flags & 1 == 1, flags & 2 == 2);
    if let Ok(base) = playlist_base_url(&headers, trusted, tls) {
        let host = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))
            .unwrap_or_else(|| panic!("{base:?} is no http(s) base"));
        assert!(!host.is_empty(), "{base:?}");
        assert!(
            !host.chars().any(|c| c.is_whitespace()
                || c.is_control()
                || matches!(c, '/' | '?' | '#' | '@' | '"' | '\'' | '<' | '>' | '\\')),
            "{base:?}"
        );
    }
});
