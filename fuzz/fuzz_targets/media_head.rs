//! The request heads the sendfile path reads itself (every plain
//! connection's first request): never panics, takes only `GET`/`HEAD` of
//! a `/media/` path, and never claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use radio::media_head;

fuzz_target!(|data: &[u8]| {
    if let Some((path, used)) = media_head(data) {
        assert!(path.starts_with("/media/"), "{path:?}");
        assert!(used <= data.len());
        // Empty lines before a request line are skipped (RFC 9112, 2.2).
        let line = &data[data.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count()..];
        assert!(line.starts_with(b"GET ") || line.starts_with(b"HEAD "));
    }
});
