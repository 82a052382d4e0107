//! Which web pages may use the server from a browser: the `Origin` check
//! before a WebSocket upgrade and on `PUT /api/session` (cross-site
//! WebSocket hijacking and cross-site writes).
//!
//! - No `Origin` header: not a browser page (the CLI clients, curl): allowed.
//! - An `Origin` naming the host the request was sent to (its `Host`):
//!   the server's own player, allowed.
//! - Any other origin: 403, unless listed in `--allowed-origins`
//!   (`scheme://host[:port]`, comma-separated; `*` allows every origin).
//!
//! And which names the server answers to, whatever the path: the `Host`
//! check ([`AllowedHosts`]) against DNS rebinding, where a page of the
//! attacker's name is pointed at the server's address, so that its origin
//! and its `Host` agree and the `Origin` check passes. A request whose
//! `Host` names no IP address, `localhost` (or a name under `.localhost`),
//! nor a name of `--allowed-hosts` or `--allowed-origins` is answered 421
//! (no `Host` at all: not a browser, allowed).

use http::HeaderMap;
use http::header;

/// The origins allowed besides the server's own.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowedOrigins {
    any: bool,
    /// Normalized: lower case, no trailing slash, no default port.
    list: Vec<String>,
}

impl AllowedOrigins {
    pub(crate) fn new(origins: &[String]) -> Self {
        let any = origins.iter().any(|o| o.trim() == "*");
        let list = origins
            .iter()
            .filter(|o| o.trim() != "*")
            .filter_map(|o| Origin::parse(o.trim()).map(|o| o.normalized()))
            .collect();
        Self { any, list }
    }

    /// `Err` with the sentence for a 403 when a browser page of another
    /// origin sent the request.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        let Some(value) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        if self.any {
            return Ok(());
        }
        let text = value.to_str().unwrap_or("");
        let origin = Origin::parse(text.trim());
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::trim);
        if let (Some(origin), Some(host)) = (&origin, host) {
            if origin.same_host(host) || self.list.contains(&origin.normalized()) {
                return Ok(());
            }
        }
        Err(format!(
            "a page of origin {text:?} may not use this server; its operator can allow it \
             with --allowed-origins"
        ))
    }
}

/// The host names the server answers to, besides IP addresses and
/// `localhost`.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    any: bool,
    /// Lower case, without a trailing dot; `*.example.com` as
    /// `.example.com`, any name under it.
    names: Vec<String>,
}

impl AllowedHosts {
    /// `hosts` from `--allowed-hosts` (`*` allows any name), and the hosts
    /// of `origins` (`--allowed-origins`), whose pages are the server's
    /// own.
    pub fn new(hosts: &[String], origins: &[String]) -> Self {
        let any = hosts.iter().any(|h| h.trim() == "*");
        let from_origins = origins
            .iter()
            .filter_map(|o| Origin::parse(o.trim()).map(|o| o.host));
        let names = hosts
            .iter()
            .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty() && h != "*")
            .map(|h| h.strip_prefix('*').map(str::to_owned).unwrap_or(h))
            .chain(from_origins)
            .collect();
        Self { any, names }
    }

    /// `Err` with the sentence for a 421 when a `Host` header names a host
    /// the server does not answer to.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        let Some(value) = headers.get(header::HOST) else {
            return Ok(());
        };
        if self.any {
            return Ok(());
        }
        let text = String::from_utf8_lossy(value.as_bytes());
        match host_name(&text) {
            Some(Host::Ip | Host::Localhost) => Ok(()),
            Some(Host::Name(name)) if self.allows(&name) => Ok(()),
            Some(Host::Name(name)) => Err(format!(
                "this server does not answer to the name {name:?} (a page of another site \
                 may have pointed it here); if it is this server's name, its operator can \
                 allow it with --allowed-hosts {name}"
            )),
            None => Err(format!("{text:?} is not a host name (the Host header)")),
        }
    }

    fn allows(&self, name: &str) -> bool {
        self.names
            .iter()
            .any(|allowed| match allowed.strip_prefix('.') {
                Some(parent) => name
                    .strip_suffix(parent)
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                None => allowed == name,
            })
    }
}

/// What a `Host` header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IP address (IPv6 in brackets).
    Ip,
    /// `localhost`, or a name under `.localhost` (always this machine).
    Localhost,
    /// Any other name: lower case, without a trailing dot.
    Name(String),
}

/// The host of a `Host` header's value (`host`, `host:port`, `[v6]` or
/// `[v6]:port`), or `None` when it is not one.
pub fn host_name(value: &str) -> Option<Host> {
    let (host, _port) = split_host_port(value.trim())?;
    if let Some(v6) = host.strip_prefix('[') {
        let v6 = v6.strip_suffix(']')?;
        return v6.parse::<std::net::Ipv6Addr>().ok().map(|_| Host::Ip);
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Some(Host::Ip);
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label) {
        return None;
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return Some(Host::Localhost);
    }
    Some(Host::Name(name))
}

/// An `Origin` header's parts.
struct Origin {
    scheme: String,
    host: String,
    /// `None` when the scheme's default.
    port: Option<u16>,
}

impl Origin {
    fn parse(s: &str) -> Option<Origin> {
        let (scheme, rest) = s.split_once("://")?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains('/') {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        let (host, port) = split_host_port(rest)?;
        let default = match scheme.as_str() {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            _ => None,
        };
        let port = port.filter(|p| Some(*p) != default);
        Some(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn normalized(&self) -> String {
        match self.port {
            Some(p) => format!("{}://{}:{p}", self.scheme, self.host),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }

    /// Whether the origin is the host the request was sent to: the same
    /// name, and the same port when either names one (a `Host` without a
    /// port and an origin at its scheme's default port are the same place,
    /// also behind a TLS-terminating proxy).
    fn same_host(&self, host_header: &str) -> bool {
        let Some((host, port)) = split_host_port(host_header) else {
            return false;
        };
        host.eq_ignore_ascii_case(&self.host) && port == self.port
            || host.eq_ignore_ascii_case(&self.host)
                && self.port.is_none()
                && matches!(port, Some(80 | 443))
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if s.starts_with('[') {
        let end = s.find(']')?;
        let (host, rest) = s.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h, Some(p.parse().ok()?))),
        None => Some((s, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn same_origin_and_listed_origins_pass() {
        let none = AllowedOrigins::new(&[]);
        assert!(none.check(&headers(None, "radio.example")).is_ok());
        assert!(
            none.check(&headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"))
                .is_ok()
        );
        assert!(
            none.check(&headers(Some("https://radio.example"), "radio.example"))
                .is_ok()
        );
        assert!(
            none.check(&headers(Some("https://radio.example"), "radio.example:443"))
                .is_ok()
        );
        assert!(
            none.check(&headers(Some("https://evil.example"), "radio.example"))
                .is_err()
        );
        assert!(
            none.check(&headers(Some("http://127.0.0.1:9999"), "127.0.0.1:8080"))
                .is_err()
        );
        assert!(none.check(&headers(Some("null"), "radio.example")).is_err());
        let listed = AllowedOrigins::new(&["https://app.example/".into()]);
        assert!(
            listed
                .check(&headers(Some("https://APP.example:443"), "radio.example"))
                .is_ok()
        );
        let any = AllowedOrigins::new(&["*".into()]);
        assert!(any.check(&headers(Some("null"), "radio.example")).is_ok());
    }

    #[test]
    fn hosts_are_addresses_localhost_or_allowed_names() {
        let none = AllowedHosts::new(&[], &[]);
        let check = |hosts: &AllowedHosts, host: &str| hosts.check(&headers(None, host));
        for ok in [
            "127.0.0.1:8080",
            "192.0.2.7",
            "[::1]:8080",
            "[2001:db8::1]",
            "localhost:8080",
            "LocalHost.",
            "player.localhost",
        ] {
            assert!(check(&none, ok).is_ok(), "{ok}");
        }
        let refused = check(&none, "evil.example:8080").unwrap_err();
        assert!(
            refused.contains("--allowed-hosts evil.example"),
            "{refused}"
        );
        for bad in [
            "radio.example",
            "127.0.0.1.evil.example",
            "[::1",
            "a b",
            "h:port",
            "",
        ] {
            assert!(check(&none, bad).is_err(), "{bad}");
        }
        let listed = AllowedHosts::new(
            &["Radio.Example.".into(), "*.cdn.example".into()],
            &["https://app.example:8443".into()],
        );
        for ok in [
            "radio.example",
            "RADIO.example:443",
            "app.example",
            "a.cdn.example",
        ] {
            assert!(check(&listed, ok).is_ok(), "{ok}");
        }
        for bad in [
            "cdn.example",
            "xcdn.example",
            "evil.example",
            "radio.example.evil",
        ] {
            assert!(check(&listed, bad).is_err(), "{bad}");
        }
        let any = AllowedHosts::new(&["*".into()], &[]);
        assert!(check(&any, "anything.example").is_ok());
        // Not a browser: no Host, no check.
        assert!(none.check(&HeaderMap::new()).is_ok());
    }
}
