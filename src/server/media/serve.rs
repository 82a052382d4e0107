//! `GET`/`HEAD /media/{id}`: conditional requests, byte ranges and the
//! streamed body, per RFC 9110 (the rules are listed in the parent module).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::files::{OpenFiles, Refused, Scanned, out_of_descriptors};
use super::index::{Source, Track, version};
use crate::server::response::{Body, full, text};
use crate::server::warnings::{Reason, Warnings};

/// Bytes read from disk per body chunk.
pub(super) const CHUNK: usize = 32 * 1024;

pub(super) fn not_found() -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        "no such track; GET /api/library lists the tracks and their ids",
    )
}

/// A media answer: complete, or its head and a range of an open file to
/// send after it. The plain-TCP path sends the range with sendfile(2)
/// ([`crate::server::zerocopy`]); hyper's path reads it in [`CHUNK`]s
/// ([`Answer::into_response`]).
pub(crate) enum Answer {
    Complete(Response<Body>),
    File {
        /// Status and headers (`Content-Length` included); the body empty.
        head: Response<Body>,
        /// Shared by every download of the file ([`OpenFiles`]).
        file: Arc<std::fs::File>,
        start: u64,
        /// More than zero.
        len: u64,
    },
}

impl Answer {
    /// The answer as hyper sends it: a file's range read by offset
    /// (`pread`, on the blocking pool) in [`CHUNK`]s as the socket takes
    /// them, so one descriptor serves every download of the file.
    pub(crate) async fn into_response(self) -> Response<Body> {
        let (head, file, start, len) = match self {
            Answer::Complete(res) => return res,
            Answer::File {
                head,
                file,
                start,
                len,
            } => (head, file, start, len),
        };
        let chunks =
            futures_util::stream::unfold((file, start, len), |(file, off, left)| async move {
                if left == 0 {
                    return None;
                }
                let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                let reader = file.clone();
                let read = tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt as _;
                    let mut buf = vec![0u8; want];
                    let n = reader.read_at(&mut buf, off)?;
                    buf.truncate(n);
                    Ok::<_, std::io::Error>(buf)
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                match read {
                    Ok(buf) if buf.is_empty() => Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the file is shorter than when it was opened",
                        )),
                        (file, off, 0),
                    )),
                    Ok(buf) => {
                        let n = buf.len() as u64;
                        Some((Ok(Frame::data(Bytes::from(buf))), (file, off + n, left - n)))
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read a media file");
                        Some((Err(e), (file, off, 0)))
                    }
                }
            });
        head.map(|_| StreamBody::new(chunks).boxed_unsync())
    }
}

/// `GET`/`HEAD` of one track; `demo_modified` dates the in-memory demo. A
/// file that cannot be opened or read is counted in `warnings`.
pub(super) async fn answer_track(
    method: &Method,
    headers: &HeaderMap,
    caching: &Caching<'_>,
    track: &Track,
    demo_modified: SystemTime,
    files: &OpenFiles,
    report: &Report<'_>,
) -> Answer {
    match &track.source {
        Source::Memory(bytes) => {
            let validators = Validators::new(bytes.len() as u64, demo_modified);
            let (mut res, range) = respond(method, headers, track, &validators, caching);
            if let Some((start, len)) = range {
                let end = usize::try_from(start + len)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let start = usize::try_from(start).unwrap_or(usize::MAX).min(end);
                *res.body_mut() = full(bytes.slice(start..end));
            }
            Answer::Complete(res)
        }
        Source::File(path, key) => {
            let scanned = Scanned {
                key: *key,
                size: track.size,
                modified: track.modified,
            };
            serve_file(
                method,
                headers,
                caching,
                track,
                (path, &scanned),
                files,
                report,
            )
            .await
        }
    }
}

/// 404 for a track whose file was replaced since the scan.
fn replaced(track: &Track) -> Answer {
    Answer::Complete(text(
        StatusCode::NOT_FOUND,
        format!(
            "track {} changed since the library was scanned; it is served again after a rescan",
            track.id
        ),
    ))
}

/// Where a media answer's troubles are told: the aggregated warnings,
/// and the count of requests refused for want of descriptors.
pub(crate) struct Report<'a> {
    pub(crate) warnings: &'a Warnings,
    pub(crate) out_of_files: &'a prometheus_client::metrics::counter::Counter,
}

/// 503 for a request that found the process out of file descriptors: a
/// moment's state at a herd of downloads, which a retry a second later
/// usually gets past.
fn out_of_files(track: &Track, report: &Report) -> Answer {
    report.out_of_files.inc();
    report
        .warnings
        .note_with(Reason::MediaOutOfFiles, || track.id.clone());
    let mut res = text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the server has no file descriptor free to open track {} just now; retry in a second",
            track.id
        ),
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    Answer::Complete(res)
}

async fn serve_file(
    method: &Method,
    headers: &HeaderMap,
    caching: &Caching<'_>,
    track: &Track,
    (path, scanned): (&Path, &Scanned),
    files: &OpenFiles,
    report: &Report<'_>,
) -> Answer {
    let opened = match files.get(path, scanned).await {
        Ok(opened) => opened,
        Err(Refused::Gone) => {
            return Answer::Complete(text(
                StatusCode::NOT_FOUND,
                format!("track {} is in the index but its file is gone", track.id),
            ));
        }
        Err(Refused::Replaced) => {
            tracing::debug!(track = %track.id, "file replaced since the scan; not served");
            return replaced(track);
        }
        Err(Refused::NotFile) => return Answer::Complete(not_found()),
        Err(Refused::Io(e)) if out_of_descriptors(&e) => return out_of_files(track, report),
        Err(Refused::Io(e)) => {
            tracing::debug!(track = %track.id, error = %e, "cannot open a media file");
            report
                .warnings
                .note_with(Reason::MediaUnreadable, || format!("{}: {e}", track.id));
            return Answer::Complete(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot open track {}: {e}", track.id),
            ));
        }
    };
    // Size and mtime of the file as last checked, not as at the scan.
    let validators = Validators::new(opened.stamp.size, opened.modified);
    match respond(method, headers, track, &validators, caching) {
        (head, Some((start, len))) => Answer::File {
            head,
            file: opened.file,
            start,
            len,
        },
        (res, None) => Answer::Complete(res),
    }
}

/// `Cache-Control` of a versioned URL (`?v=` the file's version): a year,
/// the longest RFC 9111 asks caches to honour, and never revalidated.
pub(crate) const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// How an answer may be cached and shared.
pub(crate) struct Caching<'a> {
    /// The request's query (`?v=`).
    pub(crate) query: Option<&'a str>,
    /// `Access-Control-Allow-Origin: *` (with `--media-base-url`).
    pub(crate) cors: bool,
    /// Set here: the query names the version served.
    versioned: bool,
}

impl<'a> Caching<'a> {
    pub(crate) fn new(query: Option<&'a str>, cors: bool) -> Self {
        Self {
            query,
            cors,
            versioned: false,
        }
    }
}

/// A representation's validators.
#[derive(Debug, Clone)]
struct Validators {
    size: u64,
    etag: String,
    /// Whole seconds, as HTTP dates carry.
    modified: SystemTime,
}

impl Validators {
    fn new(size: u64, modified: SystemTime) -> Self {
        let since = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        let modified = UNIX_EPOCH + Duration::from_secs(since.as_secs());
        Self {
            size,
            etag: format!("\"{}\"", version(size, since)),
            modified,
        }
    }
}

/// Whether a request's query names the version `v` serves (`?v=`): then
/// the URL names these bytes alone, and a cache may keep them for good.
fn names_version(query: Option<&str>, v: &Validators) -> bool {
    let Some(query) = query else { return false };
    let etag = v.etag.trim_matches('"');
    query
        .split('&')
        .any(|pair| pair.strip_prefix("v=") == Some(etag))
}

/// The headers every answer about a track carries.
fn representation_headers(h: &mut HeaderMap, track: &Track, v: &Validators, how: &Caching) {
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(track.mime));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let cache = if how.versioned {
        // The URL names these bytes: another file would have another `?v=`.
        IMMUTABLE
    } else {
        // Cache, but revalidate: a rescan may have replaced the file.
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if how.cors {
        // Fetched through a CDN for a page of this server's origin, which
        // plays it through Web Audio: readable by any page, as it is public.
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    if let Ok(etag) = HeaderValue::from_str(&v.etag) {
        h.insert(header::ETAG, etag);
    }
    if let Ok(lm) = HeaderValue::from_str(&httpdate::fmt_http_date(v.modified)) {
        h.insert(header::LAST_MODIFIED, lm);
    }
}

/// Makes `res` the 416 for a file of `size` bytes.
fn unsatisfiable(res: &mut Response<Body>, method: &Method, track: &Track, size: u64) {
    *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(cr) = HeaderValue::from_str(&format!("bytes */{size}")) {
        h.insert(header::CONTENT_RANGE, cr);
    }
    let msg = format!(
        "range not satisfiable: track {} has {size} bytes\n",
        track.id
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(msg.len()));
    if method == Method::GET {
        *res.body_mut() = full(msg);
    }
}

/// Answers a media request: the response with its status and headers, and
/// the body's first byte and length when a `GET` has one to send.
fn respond(
    method: &Method,
    headers: &HeaderMap,
    track: &Track,
    v: &Validators,
    caching: &Caching,
) -> (Response<Body>, Option<(u64, u64)>) {
    let mut res = Response::new(full(Bytes::new()));
    let how = Caching {
        versioned: names_version(caching.query, v),
        ..*caching
    };
    representation_headers(res.headers_mut(), track, v, &how);

    match plan(headers, v) {
        Plan::NotModified => {
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            (res, None)
        }
        Plan::Unsatisfiable => {
            unsatisfiable(&mut res, method, track, v.size);
            (res, None)
        }
        Plan::Send {
            start,
            len,
            partial,
        } => {
            if partial {
                *res.status_mut() = StatusCode::PARTIAL_CONTENT;
                let cr = format!("bytes {}-{}/{}", start, start + len - 1, v.size);
                if let Ok(cr) = HeaderValue::from_str(&cr) {
                    res.headers_mut().insert(header::CONTENT_RANGE, cr);
                }
            }
            res.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            let body = (method == Method::GET && len > 0).then_some((start, len));
            (res, body)
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Plan {
    NotModified,
    Unsatisfiable,
    /// `len` bytes from `start`; `partial` means 206.
    Send {
        start: u64,
        len: u64,
        partial: bool,
    },
}

/// What a `GET` with `headers` is answered for a representation of `size`
/// bytes last modified at `modified`: the status, and the first byte and
/// length of the body. The conditional and range rules alone, without a
/// file; public for the fuzz targets (`fuzz/`).
pub fn answer_for(headers: &HeaderMap, size: u64, modified: SystemTime) -> (StatusCode, u64, u64) {
    match plan(headers, &Validators::new(size, modified)) {
        Plan::NotModified => (StatusCode::NOT_MODIFIED, 0, 0),
        Plan::Unsatisfiable => (StatusCode::RANGE_NOT_SATISFIABLE, 0, 0),
        Plan::Send {
            start,
            len,
            partial,
        } => {
            let status = if partial {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            };
            (status, start, len)
        }
    }
}

/// Applies the conditional and range headers (RFC 9110 §13.2.2 order).
fn plan(headers: &HeaderMap, v: &Validators) -> Plan {
    let header_str = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|h| h.to_str().ok())
            .map(str::trim)
    };
    if let Some(inm) = header_str(header::IF_NONE_MATCH) {
        if etag_list_matches_weak(inm, &v.etag) {
            return Plan::NotModified;
        }
    } else if let Some(ims) =
        header_str(header::IF_MODIFIED_SINCE).and_then(|d| httpdate::parse_http_date(d).ok())
    {
        if v.modified <= ims {
            return Plan::NotModified;
        }
    }
    let whole = Plan::Send {
        start: 0,
        len: v.size,
        partial: false,
    };
    let Some(range) = header_str(header::RANGE) else {
        return whole;
    };
    if let Some(if_range) = header_str(header::IF_RANGE) {
        let fresh = if if_range.starts_with('"') || if_range.starts_with("W/") {
            // If-Range needs a strong match; a weak tag never matches.
            if_range == v.etag
        } else {
            httpdate::parse_http_date(if_range).is_ok_and(|d| d == v.modified)
        };
        if !fresh {
            return whole;
        }
    }
    match parse_range(range, v.size) {
        RangeSpec::Ignore => whole,
        RangeSpec::Unsatisfiable => Plan::Unsatisfiable,
        RangeSpec::Bytes { start, end } => Plan::Send {
            start,
            len: end - start + 1,
            partial: true,
        },
    }
}

/// `If-None-Match`: `*` or a list of entity tags, compared weakly.
fn etag_list_matches_weak(list: &str, etag: &str) -> bool {
    if list == "*" {
        return true;
    }
    let ours = etag.trim_start_matches("W/");
    list.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == ours)
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Not a single valid byte range: serve the whole representation.
    Ignore,
    Unsatisfiable,
    /// Inclusive byte positions.
    Bytes {
        start: u64,
        end: u64,
    },
}

/// Parses a `Range` header for a representation of `size` bytes.
fn parse_range(value: &str, size: u64) -> RangeSpec {
    let Some((unit, set)) = value.split_once('=') else {
        return RangeSpec::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    // A number past u64 is as good as u64::MAX: `bytes=0-99999999999999999999`
    // is the whole file from 0, not a malformed range.
    let digits = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(s.parse().unwrap_or(u64::MAX))
    };
    if first.is_empty() {
        // -suffix: the last N bytes.
        let Some(n) = digits(last) else {
            return RangeSpec::Ignore;
        };
        if n == 0 {
            return RangeSpec::Unsatisfiable;
        }
        if size == 0 {
            // Satisfiable by RFC 9110, but no 206 can describe zero bytes.
            return RangeSpec::Ignore;
        }
        return RangeSpec::Bytes {
            start: size.saturating_sub(n),
            end: size - 1,
        };
    }
    let Some(start) = digits(first) else {
        return RangeSpec::Ignore;
    };
    let end = if last.is_empty() {
        None
    } else {
        match digits(last) {
            Some(e) if e >= start => Some(e),
            // last < first, or not a number: an invalid range-spec.
            _ => return RangeSpec::Ignore,
        }
    };
    if start >= size {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Bytes {
        start,
        end: end.map_or(size - 1, |e| e.min(size - 1)),
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape or non-UTF-8 result.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeSpec::*;
        assert_eq!(parse_range("bytes=0-9", 100), Bytes { start: 0, end: 9 });
        assert_eq!(parse_range("bytes=90-", 100), Bytes { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-10", 100), Bytes { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-1000", 100), Bytes { start: 0, end: 99 });
        assert_eq!(
            parse_range("bytes=50-1000", 100),
            Bytes { start: 50, end: 99 }
        );
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=9-0", 100), Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignore);
        assert_eq!(parse_range("items=0-1", 100), Ignore);
        assert_eq!(parse_range("bytes=a-b", 100), Ignore);
        assert_eq!(parse_range("bytes=+1-2", 100), Ignore);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), Ignore);
        // Numbers past u64: as large as can be, not malformed.
        assert_eq!(
            parse_range("bytes=0-99999999999999999999999", 1000),
            Bytes { start: 0, end: 999 }
        );
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", 1000),
            Unsatisfiable
        );
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%2e%2E/x").as_deref(), Some("../x"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
