//! `Range`, `If-Range`, `If-None-Match` and `If-Modified-Since` on
//! `/media/{id}` (RFC 9110): whatever the headers, a 206 names bytes inside
//! the file, a 200 the whole file, and nothing panics.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 4] = ["range", "if-range", "if-none-match", "if-modified-since"];

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    // The file: its size (small or huge) and its modification time.
    let size = u64::from_le_bytes(data[..8].try_into().unwrap_or_default()) >> (data[8] % 64);
    let modified = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    // The headers: lines of the rest, each given to one header in turn.
    let mut headers = HeaderMap::new();
    for (i, line) in data[9..].split(|b| *b == b'\n').enumerate() {
        let Ok(value) = HeaderValue::from_bytes(line) else {
            continue;
        };
        headers.append(HeaderName::from_static(NAMES[i % NAMES.len()]), value);
    }
    let (status, start, len) = radio::answer_for(&headers, size, modified);
    match status {
        StatusCode::OK => assert_eq!((start, len), (0, size)),
        StatusCode::PARTIAL_CONTENT => {
            assert!(len > 0, "an empty 206");
            assert!(
                start.checked_add(len).is_some_and(|end| end <= size),
                "{start}+{len} > {size}"
            );
        }
        StatusCode::NOT_MODIFIED | StatusCode::RANGE_NOT_SATISFIABLE => {}
        other => panic!("unexpected status {other}"),
    }
});
