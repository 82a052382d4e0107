//! `radio broadcast --playlist`: the M3U parser. Never panics, and every
//! entry it keeps has a track and, when it has a duration, a positive one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(entries) = radio::parse_m3u(&text) {
        for e in entries {
            assert!(e.duration_ms.is_none_or(|d| d > 0), "{e:?}");
            assert!(!e.track.trim().is_empty(), "{e:?}");
        }
    }
});
