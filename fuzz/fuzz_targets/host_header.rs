//! The `Host` check against DNS rebinding (every request's `Host` header):
//! never panics; a name is lower case, without a port or a trailing dot;
//! and a `Host` is let in only when it names an address, localhost, or a
//! name the operator listed.
#![no_main]

use http::header::{HOST, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use radio::{AllowedHosts, Host, host_name};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = host_name(&text);
    if let Some(Host::Name(name)) = &parsed {
        assert!(!name.is_empty() && !name.contains(':') && !name.ends_with('.'));
        assert_eq!(*name, name.to_ascii_lowercase());
        assert!(name != "localhost" && !name.ends_with(".localhost"));
    }
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(HOST, value);
    let hosts = AllowedHosts::new(
        &["radio.example".into(), "*.cdn.example".into()],
        &["https://app.example:8443".into()],
    );
    if hosts.check(&headers).is_ok() {
        match parsed {
            Some(Host::Ip | Host::Localhost) => {}
            Some(Host::Name(n)) => assert!(
                n == "radio.example" || n == "app.example" || n.ends_with(".cdn.example"),
                "{n:?} let in"
            ),
            None => panic!("{text:?} is no host, yet let in"),
        }
    }
});
