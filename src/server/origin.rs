//! Which web pages may use the server from a browser: the `Origin` check
//! before a WebSocket upgrade and on `PUT /api/session` (cross-site
//! WebSocket hijacking and cross-site writes).
//!
//! - No `Origin` header: not a browser page (the CLI clients, curl): allowed.
//! - An `Origin` naming the host the request was sent to (its `Host`):
//!   the server's own player, allowed.
//! - Any other origin: 403, unless listed in `--allowed-origins`
//!   (`scheme://host[:port]`, comma-separated; `*` allows every origin).

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
}
