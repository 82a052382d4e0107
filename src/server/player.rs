//! The web player's assets, compiled into the binary so the player works
//! offline on a LAN and no CDN is ever contacted.
//!
//! Plain HTML, CSS and JavaScript with no build step: the player is small
//! enough that a framework would cost more (a toolchain in CI, a bundle to
//! keep fresh) than it saves. docs/player.md describes what it does.

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::server::response::{Body, full, method_not_allowed, text};

const INDEX_HTML: &str = include_str!("player/index.html");
const APP_JS: &str = include_str!("player/app.js");
const STYLE_CSS: &str = include_str!("player/style.css");

/// The paths the player's assets are served at.
pub(crate) const PATHS: [&str; 4] = ["/", "/index.html", "/player/app.js", "/player/style.css"];

/// Whether `path` is one of the player's ([`PATHS`]).
pub(crate) fn serves(path: &str) -> bool {
    PATHS.contains(&path)
}

/// The page's `Content-Security-Policy`.
const POLICY: &str = "default-src 'self'; media-src 'self' blob:; connect-src 'self' ws: wss:; \
                      img-src 'self' data:; frame-ancestors 'none'";

/// Answers a request for one of the player's paths; `media_base` is
/// `--media-base-url`, which the page's policy then lets it play from.
pub(crate) fn route(method: &Method, path: &str, media_base: Option<&str>) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET");
    }
    let (body, mime) = match path {
        "/" | "/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/player/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/player/style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return text(StatusCode::NOT_FOUND, "no such page"),
    };
    let mut res = Response::new(full(body));
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    // Revalidate every time: a new binary brings new assets.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let policy = match media_base {
        // A source ending in `/` allows everything below it.
        // The page asks a track's URL itself (`HEAD`) when it failed to
        // load, to tell a file gone from a fetch to try again.
        Some(base) => HeaderValue::from_str(
            &POLICY
                .replace(
                    "media-src 'self' blob:;",
                    &format!("media-src 'self' blob: {base}/;"),
                )
                .replace(
                    "connect-src 'self' ws: wss:;",
                    &format!("connect-src 'self' ws: wss: {base}/;"),
                ),
        )
        .unwrap_or(HeaderValue::from_static(POLICY)),
        None => HeaderValue::from_static(POLICY),
    };
    h.insert("content-security-policy", policy);
    res
}
