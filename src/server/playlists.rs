//! The playlists that point a radio app at a station's stream:
//! `GET /stations/{name}/stream.m3u` and `.pls`, each one entry, the
//! stream's absolute URL (what apps, directories and `vlc URL` take), and
//! the base URL every absolute link of the server is made of
//! ([`base_url`]; `/status-json.xsl` lists its `listenurl`s with it).
//!
//! The base is what the client asked for: the scheme (`https` when the
//! server has a certificate) and the `Host` header. Behind a proxy the
//! client asked the proxy, so a trusted proxy's (`--trusted-proxy`)
//! `X-Forwarded-Proto` and `X-Forwarded-Host` (or `Forwarded`'s `proto=`
//! and `host=`) win; anyone else's are ignored, as they are for the client
//! address. A host that is not a plain `name[:port]` is refused (400), so
//! what a request says cannot add lines to a playlist.

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::protocol::StationName;
use crate::server::backend::Backend as _;
use crate::server::backend::any::AnyBackend;
use crate::server::response::{Body, full, method_not_allowed, text};

/// What a station's paths start with (`/stations/{name}/stream` and its
/// playlists).
pub(crate) const PREFIX: &str = "/stations/";

/// Which playlist a path asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    M3u,
    Pls,
}

/// Whether `path` is one of a station's playlists.
pub(crate) fn serves(path: &str) -> bool {
    parse(path).is_some()
}

/// The station and playlist of `/stations/{name}/stream.m3u` or `.pls`;
/// the name percent-decoded, `Err` when it breaks the naming rule.
fn parse(path: &str) -> Option<(Result<StationName, String>, Kind)> {
    let rest = path.strip_prefix(PREFIX)?;
    let (name, kind) = if let Some(name) = rest.strip_suffix("/stream.m3u") {
        (name, Kind::M3u)
    } else {
        (rest.strip_suffix("/stream.pls")?, Kind::Pls)
    };
    if name.contains('/') {
        return None;
    }
    let name = crate::server::media::percent_decode(name).unwrap_or_default();
    Some((StationName::new(&name), kind))
}

/// `GET`/`HEAD /stations/{name}/stream.m3u|.pls`: the playlist of a live
/// station's stream; 404 when the station is not live. `trusted`: the
/// request came from a `--trusted-proxy`; `tls`: the server speaks https.
pub(crate) async fn route(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    (trusted, tls): (bool, bool),
    backend: &AnyBackend,
) -> Response<Body> {
    let Some((name, kind)) = parse(path) else {
        return text(StatusCode::NOT_FOUND, format!("no such page: {path}"));
    };
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let name = match name {
        Ok(name) => name,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let base = match base_url(headers, trusted, tls) {
        Ok(base) => base,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    if !backend.is_live(&name).await {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "station {name} is not live on this server (GET /api/stations lists the live ones)"
            ),
        );
    }
    playlist(kind, &name, &stream_url(&base, &name))
}

/// The absolute URL of `name`'s stream under `base`.
pub(crate) fn stream_url(base: &str, name: &StationName) -> String {
    format!("{base}{PREFIX}{name}/stream")
}

/// The playlist answer: one entry, `url`, titled with the station's name.
fn playlist(kind: Kind, name: &StationName, url: &str) -> Response<Body> {
    let (body, mime, ext) = match kind {
        Kind::M3u => (
            format!("#EXTM3U\n#EXTINF:-1,{name}\n{url}\n"),
            "audio/x-mpegurl",
            "m3u",
        ),
        Kind::Pls => (
            format!(
                "[playlist]\nNumberOfEntries=1\nFile1={url}\nTitle1={name}\nLength1=-1\nVersion=2\n"
            ),
            "audio/x-scpls",
            "pls",
        ),
    };
    let mut res = Response::new(full(body));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Saved as a file named after the station; a station name is a file
    // name as it is (A-Z a-z 0-9 . _ -).
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{name}.{ext}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    res
}

/// `scheme://host[:port]` as the client asked for it: from a trusted
/// proxy's forwarding headers when `trusted`, else the connection's scheme
/// (`https` when `tls`) and the `Host` header. `Err` says why no base can
/// be made (no host, or one that is not a host name).
pub fn base_url(headers: &HeaderMap, trusted: bool, tls: bool) -> Result<String, String> {
    let forwarded = if trusted {
        forwarded(headers)
    } else {
        Forwarded::default()
    };
    let scheme = forwarded
        .proto
        .unwrap_or(if tls { "https" } else { "http" });
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err("the request names two hosts (send one Host header)".into());
    }
    let host = match forwarded.host {
        Some(host) => host,
        None => headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .ok_or("the request names no host (send a Host header)")?
            .to_owned(),
    };
    if !is_host(&host) {
        return Err(format!(
            "{host:?} is not a host name; links to this server cannot be made of it"
        ));
    }
    Ok(format!("{scheme}://{host}"))
}

/// What a trusted proxy says the client asked for.
#[derive(Default)]
struct Forwarded {
    proto: Option<&'static str>,
    host: Option<String>,
}

/// `X-Forwarded-Proto`/`-Host` (nginx, Caddy, Traefik), else `Forwarded`'s
/// `proto=` and `host=`: the first entry in each, what the client sent to
/// the first proxy.
fn forwarded(headers: &HeaderMap) -> Forwarded {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut proto = first("x-forwarded-proto");
    let mut host = first("x-forwarded-host");
    if let Some(element) = first("forwarded") {
        for pair in element.split(';') {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').to_owned();
            match k.trim().to_ascii_lowercase().as_str() {
                "proto" if proto.is_none() => proto = Some(v),
                "host" if host.is_none() => host = Some(v),
                _ => {}
            }
        }
    }
    Forwarded {
        proto: proto.and_then(|p| match p.to_ascii_lowercase().as_str() {
            "https" => Some("https"),
            "http" => Some("http"),
            _ => None,
        }),
        host,
    }
}

/// A host as a URL may hold it: a name or address with an optional port
/// (`radio.example`, `127.0.0.1:8080`, `[::1]:8080`), nothing else.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 261
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn playlist_paths_name_a_station() {
        let (name, kind) = parse("/stations/jazz/stream.m3u").unwrap();
        assert_eq!((name.unwrap().as_str(), kind), ("jazz", Kind::M3u));
        let (name, kind) = parse("/stations/a.b_c-d/stream.pls").unwrap();
        assert_eq!((name.unwrap().as_str(), kind), ("a.b_c-d", Kind::Pls));
        assert!(parse("/stations/a%20b/stream.pls").unwrap().0.is_err());
        assert!(parse("/stations/jazz/stream").is_none());
        assert!(parse("/stations/a/b/stream.m3u").is_none());
        assert!(parse("/api/stations/jazz/stream.m3u").is_none());
    }

    #[test]
    fn the_base_is_what_the_client_asked_for() {
        let h = headers(&[("host", "radio.test:8080")]);
        assert_eq!(
            base_url(&h, false, false).unwrap(),
            "http://radio.test:8080"
        );
        assert_eq!(
            base_url(&h, false, true).unwrap(),
            "https://radio.test:8080"
        );
        let proxied = headers(&[
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "radio.example, 10.0.0.5"),
        ]);
        // Only a trusted proxy is believed.
        assert_eq!(
            base_url(&proxied, true, false).unwrap(),
            "https://radio.example"
        );
        assert_eq!(
            base_url(&proxied, false, false).unwrap(),
            "http://10.0.0.5:8080"
        );
        let rfc = headers(&[
            ("host", "10.0.0.5"),
            (
                "forwarded",
                "for=192.0.2.1;proto=https;host=\"radio.example:8443\"",
            ),
        ]);
        assert_eq!(
            base_url(&rfc, true, false).unwrap(),
            "https://radio.example:8443"
        );
        // A scheme other than http(s) is not taken.
        let odd = headers(&[("host", "h"), ("x-forwarded-proto", "javascript")]);
        assert_eq!(base_url(&odd, true, false).unwrap(), "http://h");
    }

    #[test]
    fn a_host_cannot_add_a_line() {
        let h = headers(&[("host", "h"), ("x-forwarded-host", "evil\tline")]);
        assert!(base_url(&h, true, false).is_err());
        assert!(base_url(&headers(&[("host", "a b")]), false, false).is_err());
        assert!(base_url(&HeaderMap::new(), false, false).is_err());
        assert!(is_host("[::1]:8080"));
        assert!(!is_host("a/b"));
    }
}
