//! A Redis URL as every message prints it (`masked`): never panics on any
//! text, and a password in a URL's user info never shows, whatever it
//! holds (`/`, `?`, `#`, `@`, `:`), the rest of the URL shown as it is.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = radio::masked_redis_url(&text);
    // The input as a password, then (after a NUL) a host and path.
    let (password, rest) = text.split_once('\0').unwrap_or((&text, "h:6379/0"));
    if rest.contains('@') {
        return;
    }
    let url = format!("redis://user:{password}@{rest}");
    assert_eq!(
        radio::masked_redis_url(&url),
        format!("redis://user:***@{rest}")
    );
});
