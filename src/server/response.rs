//! HTTP responses: the one body type every route answers with, and the
//! helpers that build plain-text, JSON and error answers.
//!
//! A leaf module (it names nothing else of the server), so the routes of the
//! media library, the sessions and the player can all build responses without
//! depending on the router that calls them.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// Every response body: small ones in memory, media streamed from disk.
pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A complete body from bytes.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// A plain-text response, for errors and simple answers.
pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut body = message.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // Messages may repeat what the request said (a path): never sniffed
    // as anything but text.
    res.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// A JSON response, never cached.
pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => json_bytes(status, bytes),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the response: {e}"),
        ),
    }
}

/// A JSON response from bytes encoded earlier, never cached.
pub(crate) fn json_bytes(status: StatusCode, bytes: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(full(bytes));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// 405 with the `Allow` header: `allow` lists the methods, like `"GET, PUT"`.
pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut res = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {}", allow.replace(", ", " or ")),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}
