//! The media library: scanning, `GET /api/library` and `GET`/`HEAD /media/{id}`.
//!
//! Why it is built this way:
//! - **Ids are relative paths, resolved only through the index.** A track's id
//!   is its path below the library root (`/`-separated), so it is stable across
//!   restarts and rescans and readable in logs. A request's id is looked up in
//!   the scanned index and nothing else: the server never joins a request
//!   string onto a directory, so `..`, percent-encoded traversal and absolute
//!   paths cannot name a file, they simply are not keys of the index (404).
//! - **The index is replaced whole.** A rescan (SIGHUP, `--rescan-interval`)
//!   builds a new [`Index`] off the async threads and swaps an `Arc`; a request
//!   clones the `Arc` under a lock held for a pointer copy. A stream in
//!   progress holds its own open file, so a rescan (or a deleted file) never
//!   breaks it. Unchanged files (same size and mtime) keep their tags from the
//!   previous index, so a rescan reads tags only of new or changed files.
//! - **Symlinks are the operator's choice and are followed.** Every directory
//!   is entered at most once, keyed by (device, inode), so a link loop (or two
//!   links to one directory) is detected, logged and skipped.
//! - **Bodies are streamed with bounded memory.** A file is read in
//!   [`CHUNK`]-sized pieces as the socket accepts them, never whole.
//! - **HTTP semantics follow RFC 9110**: `Accept-Ranges: bytes`; one range in
//!   any of its three forms gives 206 with `Content-Range`; a range that cannot
//!   be satisfied gives 416 with `Content-Range: bytes */SIZE`; several ranges,
//!   another unit or a malformed header are ignored (200 with the whole file,
//!   which the RFC allows); a strong `ETag` (size and mtime) and
//!   `Last-Modified` back `If-None-Match`/`If-Modified-Since` (304) and
//!   `If-Range`. An empty file has no satisfiable byte range except a suffix
//!   range, which cannot be expressed as a 206 either; so `bytes=-N` on an empty
//!   file is answered 200 with the empty body and any other range 416.

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use lofty::prelude::*;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

use crate::protocol::MAX_TRACK_BYTES;
use crate::server::http::{Body, full, text};

/// Bytes read from disk per body chunk: the most one stream holds at once.
pub const CHUNK: usize = 64 * 1024;

/// Directories nested deeper than this are not scanned (a guard against
/// pathological trees; loops are caught earlier by the inode check).
const MAX_DEPTH: usize = 64;

/// One playable file.
#[derive(Debug, Clone, Serialize)]
pub struct Track {
    /// Relative path below the library root, `/`-separated.
    pub id: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub size: u64,
    pub mime: &'static str,
    #[serde(skip)]
    source: Source,
    /// Modification time at scan, to reuse tags on a rescan.
    #[serde(skip)]
    modified: SystemTime,
}

#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    /// The generated demo library, kept in memory.
    Memory(Bytes),
}

/// One scan's result: every track, by id, and the encoded `/api/library`.
#[derive(Debug, Default)]
pub struct Index {
    by_id: HashMap<String, Arc<Track>>,
    /// `GET /api/library`'s body, encoded once per scan.
    json: Bytes,
}

impl Index {
    fn new(mut tracks: Vec<Track>) -> Self {
        tracks.sort_by(|a, b| a.id.cmp(&b.id));
        let json = match serde_json::to_vec(&tracks) {
            Ok(v) => Bytes::from(v),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the library");
                Bytes::from_static(b"[]")
            }
        };
        let by_id = tracks
            .into_iter()
            .map(|t| (t.id.clone(), Arc::new(t)))
            .collect();
        Self { by_id, json }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Track>> {
        self.by_id.get(id)
    }
}

/// The library: a root directory (or the demo) and its current index.
pub struct Library {
    root: Option<PathBuf>,
    index: RwLock<Arc<Index>>,
    /// When the demo was generated; its tracks' Last-Modified.
    started: SystemTime,
}

impl Library {
    /// Scans `root` (blocking: call it off the async threads).
    pub fn scan(root: PathBuf, cancel: &CancellationToken) -> anyhow::Result<Self> {
        let meta = std::fs::metadata(&root).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the media directory {}: {e}; pass an existing directory to --media",
                root.display()
            )
        })?;
        if !meta.is_dir() {
            anyhow::bail!(
                "--media {} is not a directory; pass the folder that holds your music",
                root.display()
            );
        }
        let index = scan_root(&root, &Index::default(), cancel);
        Ok(Self {
            root: Some(root),
            index: RwLock::new(Arc::new(index)),
            started: SystemTime::now(),
        })
    }

    /// The built-in demo library: a few short tones generated in memory.
    pub fn demo() -> Self {
        let tracks = demo_tracks();
        Self {
            root: None,
            index: RwLock::new(Arc::new(Index::new(tracks))),
            started: SystemTime::now(),
        }
    }

    /// The current index (a pointer copy under a short lock).
    pub fn index(&self) -> Arc<Index> {
        match self.index.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Scans again and swaps the index (blocking). The demo never changes.
    pub fn rescan(&self, cancel: &CancellationToken) {
        let Some(root) = &self.root else { return };
        let started = Instant::now();
        let old = self.index();
        let new = scan_root(root, &old, cancel);
        if cancel.is_cancelled() {
            return;
        }
        let added = new.by_id.keys().filter(|k| old.get(k).is_none()).count();
        let removed = old.by_id.keys().filter(|k| new.get(k).is_none()).count();
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if added + removed > 0 {
            tracing::info!(
                tracks = new.len(),
                added,
                removed,
                elapsed_ms,
                "media library rescanned"
            );
        } else {
            tracing::debug!(
                tracks = new.len(),
                elapsed_ms,
                "media library rescanned, unchanged"
            );
        }
        let new = Arc::new(new);
        match self.index.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// `GET /api/library`.
    pub fn list_response(&self) -> Response<Body> {
        let mut res = Response::new(full(self.index().json.clone()));
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }

    /// `GET`/`HEAD /media/{id}`: `encoded_id` is the raw path after `/media/`.
    pub async fn serve(
        &self,
        method: &Method,
        encoded_id: &str,
        headers: &HeaderMap,
    ) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            let mut res = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed; use GET or HEAD",
            );
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return res;
        }
        let Some(id) = percent_decode(encoded_id) else {
            return not_found();
        };
        let Some(track) = self.index().get(&id).cloned() else {
            return not_found();
        };
        match &track.source {
            Source::Memory(bytes) => {
                let validators = Validators::new(bytes.len() as u64, self.started);
                let bytes = bytes.clone();
                respond(method, headers, &track, &validators, move |start, len| {
                    let end = usize::try_from(start + len)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    let start = usize::try_from(start).unwrap_or(usize::MAX).min(end);
                    let body = full(bytes.slice(start..end));
                    async move { Ok(body) }
                })
                .await
            }
            Source::File(path) => serve_file(method, headers, &track, path).await,
        }
    }
}

fn not_found() -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        "no such track; GET /api/library lists the tracks and their ids",
    )
}

async fn serve_file(
    method: &Method,
    headers: &HeaderMap,
    track: &Track,
    path: &Path,
) -> Response<Body> {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return text(
                StatusCode::NOT_FOUND,
                format!("track {} is in the index but its file is gone", track.id),
            );
        }
        Err(e) => {
            tracing::warn!(track = %track.id, error = %e, "cannot open a media file");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot open track {}: {e}", track.id),
            );
        }
    };
    // Size and mtime of the file as it is now, not as it was at the scan.
    let meta = match file.metadata().await {
        Ok(m) if m.is_file() => m,
        Ok(_) => return not_found(),
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read track {}: {e}", track.id),
            );
        }
    };
    let validators = Validators::new(meta.len(), meta.modified().unwrap_or(UNIX_EPOCH));
    respond(method, headers, track, &validators, move |start, len| {
        let mut file = file;
        async move {
            if start > 0 {
                file.seek(std::io::SeekFrom::Start(start)).await?;
            }
            let stream =
                ReaderStream::with_capacity(file.take(len), CHUNK).map(|r| r.map(Frame::data));
            Ok(StreamBody::new(stream).boxed_unsync())
        }
    })
    .await
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
            etag: format!("\"{:x}-{:x}\"", size, since.as_nanos()),
            modified,
        }
    }
}

/// Answers a media request; `body(start, len)` opens the bytes to send.
async fn respond<F, Fut>(
    method: &Method,
    headers: &HeaderMap,
    track: &Track,
    v: &Validators,
    body: F,
) -> Response<Body>
where
    F: FnOnce(u64, u64) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<Body>>,
{
    let mut res = Response::new(full(Bytes::new()));
    let h = res.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(track.mime));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Cache, but revalidate: a rescan may have replaced the file.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(&v.etag) {
        h.insert(header::ETAG, etag);
    }
    if let Ok(lm) = HeaderValue::from_str(&httpdate::fmt_http_date(v.modified)) {
        h.insert(header::LAST_MODIFIED, lm);
    }

    match plan(headers, v) {
        Plan::NotModified => {
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            res
        }
        Plan::Unsatisfiable => {
            *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            if let Ok(cr) = HeaderValue::from_str(&format!("bytes */{}", v.size)) {
                h.insert(header::CONTENT_RANGE, cr);
            }
            let msg = format!(
                "range not satisfiable: track {} has {} bytes\n",
                track.id, v.size
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(msg.len()));
            if method == Method::GET {
                *res.body_mut() = full(msg);
            }
            res
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
            if method == Method::GET && len > 0 {
                match body(start, len).await {
                    Ok(b) => *res.body_mut() = b,
                    Err(e) => {
                        tracing::warn!(track = %track.id, error = %e, "cannot read a media file");
                        return text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("cannot read track {}: {e}", track.id),
                        );
                    }
                }
            }
            res
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
    let digits = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
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
pub fn percent_decode(s: &str) -> Option<String> {
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

/// The MIME type browsers expect for a playable extension, `None` for files
/// the library does not serve.
pub fn mime_for(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "mp3" => "audio/mpeg",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "m4a" | "m4b" => "audio/mp4",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "weba" => "audio/webm",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        _ => return None,
    })
}

/// Scans `root` recursively into a new index, reusing `old`'s tags for files
/// whose size and mtime are unchanged.
fn scan_root(root: &Path, old: &Index, cancel: &CancellationToken) -> Index {
    let reuse: HashMap<&Path, &Track> = old
        .by_id
        .values()
        .filter_map(|t| match &t.source {
            Source::File(p) => Some((p.as_path(), t.as_ref())),
            Source::Memory(_) => None,
        })
        .collect();
    let mut scan = Scan {
        visited: HashSet::new(),
        tracks: Vec::new(),
        reuse,
        cancel,
    };
    if let Ok(meta) = std::fs::metadata(root) {
        scan.visited.insert(dir_key(&meta));
    }
    scan.walk(root, "", 0);
    Index::new(scan.tracks)
}

struct Scan<'a> {
    /// Directories entered, by (device, inode): a loop cannot recurse.
    visited: HashSet<(u64, u64)>,
    tracks: Vec<Track>,
    reuse: HashMap<&'a Path, &'a Track>,
    cancel: &'a CancellationToken,
}

#[cfg(unix)]
fn dir_key(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn dir_key(_meta: &std::fs::Metadata) -> (u64, u64) {
    // Without inodes, depth alone bounds a loop.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    (0, NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

impl Scan<'_> {
    fn walk(&mut self, dir: &Path, prefix: &str, depth: usize) {
        if self.cancel.is_cancelled() {
            return;
        }
        if depth > MAX_DEPTH {
            tracing::warn!(dir = %dir.display(), "media directory nested too deep; skipped");
            return;
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(rd) => {
                let mut v: Vec<_> = rd.filter_map(Result::ok).collect();
                v.sort_by_key(|e| e.file_name());
                v
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read a media directory");
                return;
            }
        };
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            // Follows symlinks: a link is the operator's choice.
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable entry (a dangling symlink?)");
                    continue;
                }
            };
            let id = format!("{prefix}{name}");
            if meta.is_dir() {
                if !self.visited.insert(dir_key(&meta)) {
                    tracing::warn!(
                        path = %path.display(),
                        "skipping a directory already scanned (a symlink loop or a second link to it)"
                    );
                    continue;
                }
                self.walk(&path, &format!("{id}/"), depth + 1);
            } else if meta.is_file() {
                let Some(mime) = mime_for(&path) else {
                    continue;
                };
                if id.len() > MAX_TRACK_BYTES {
                    tracing::warn!(path = %path.display(), "path longer than {MAX_TRACK_BYTES} bytes; skipped");
                    continue;
                }
                let modified = meta.modified().unwrap_or(UNIX_EPOCH);
                let size = meta.len();
                let track = match self.reuse.get(path.as_path()) {
                    Some(old) if old.size == size && old.modified == modified && old.id == id => {
                        (*old).clone()
                    }
                    _ => {
                        let tags = read_tags_file(&path);
                        Track {
                            title: tags.title.unwrap_or_else(|| title_from_name(&name)),
                            artist: tags.artist,
                            duration_ms: tags.duration_ms,
                            id,
                            size,
                            mime,
                            source: Source::File(path),
                            modified,
                        }
                    }
                };
                self.tracks.push(track);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Tags {
    title: Option<String>,
    artist: Option<String>,
    duration_ms: Option<u64>,
}

fn read_tags_file(path: &Path) -> Tags {
    match std::fs::File::open(path) {
        Ok(f) => read_tags(std::io::BufReader::new(f), path),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "cannot open for tags");
            Tags::default()
        }
    }
}

/// Title, artist and duration from the file's tags and stream properties.
/// A file lofty cannot parse (or a parser panic) just has no tags.
fn read_tags<R: Read + Seek>(reader: R, what: &Path) -> Tags {
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lofty::probe::Probe::new(reader)
            .guess_file_type()
            .map_err(lofty::error::LoftyError::from)
            .and_then(|p| p.read())
    }));
    let tagged = match read {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(path = %what.display(), error = %e, "no tags read");
            return Tags::default();
        }
        Err(_) => {
            tracing::warn!(path = %what.display(), "the tag reader panicked on this file; using its name");
            return Tags::default();
        }
    };
    let tag = tagged.primary_tag().or_else(|| tagged.first_tag());
    let clean = |s: Option<std::borrow::Cow<'_, str>>| {
        s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
    };
    let duration = tagged.properties().duration();
    Tags {
        title: clean(tag.and_then(|t| t.title())),
        artist: clean(tag.and_then(|t| t.artist())),
        duration_ms: (!duration.is_zero()).then_some(duration.as_millis() as u64),
    }
}

/// `01_My_song.mp3` -> `01 My song`.
fn title_from_name(name: &str) -> String {
    let stem = Path::new(name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_owned());
    stem.replace('_', " ")
}

/// Rescans on SIGHUP and every `interval` until shutdown.
///
/// SIGHUP is claimed when this is called (not when the task first runs), so
/// a SIGHUP right after the server logs its address never hits the default
/// action, which would end the process.
pub fn rescan_task(
    library: Arc<Library>,
    interval: Option<Duration>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGHUP; the library rescans only on --rescan-interval");
            None
        }
    };
    #[cfg(not(unix))]
    let hup: Option<()> = None;
    rescan_loop(library, interval, shutdown, hup)
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

async fn rescan_loop(
    library: Arc<Library>,
    interval: Option<Duration>,
    shutdown: CancellationToken,
    mut hup: Option<Hangup>,
) {
    if interval.is_some_and(|d| d.is_zero()) {
        tracing::warn!("--rescan-interval 0 means never; the library rescans on SIGHUP only");
    }
    let mut ticker = interval.filter(|d| !d.is_zero()).map(|d| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = {
            let _ = &mut hup;
            std::future::pending::<()>()
        };
        let tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangup => tracing::info!("SIGHUP received: rescanning the media library"),
            _ = tick => tracing::debug!("rescanning the media library"),
        }
        let lib = library.clone();
        let cancel = shutdown.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || lib.rescan(&cancel)).await {
            tracing::error!(error = %e, "media rescan failed");
        }
    }
}

/// Encodes 16-bit mono PCM as a WAV file, with a RIFF `INFO` list carrying
/// `tags` (`INAM` title, `IART` artist, ...) when given.
pub fn encode_wav(sample_rate: u32, samples: &[i16], tags: &[(&[u8; 4], &str)]) -> Vec<u8> {
    let mut info = Vec::new();
    if !tags.is_empty() {
        info.extend_from_slice(b"INFO");
        for (id, value) in tags {
            let mut v = value.as_bytes().to_vec();
            v.push(0);
            info.extend_from_slice(*id);
            info.extend_from_slice(&(v.len() as u32).to_le_bytes());
            info.extend_from_slice(&v);
            if v.len() % 2 == 1 {
                info.push(0);
            }
        }
    }
    let data_len = samples.len() * 2;
    let list_len = if info.is_empty() { 0 } else { 8 + info.len() };
    let mut out = Vec::with_capacity(44 + list_len + data_len);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((4 + 24 + list_len + 8 + data_len) as u32).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    if !info.is_empty() {
        out.extend_from_slice(b"LIST");
        out.extend_from_slice(&(info.len() as u32).to_le_bytes());
        out.extend_from_slice(&info);
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data_len as u32).to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// A gentle arpeggio over `notes` (Hz), one note every `step` seconds, with a
/// soft click on every whole second so two players' sync can be heard.
pub fn arpeggio(sample_rate: u32, seconds: u32, notes: &[f32], step: f32) -> Vec<i16> {
    let n = (sample_rate * seconds) as usize;
    let sr = sample_rate as f32;
    let step_samples = ((step * sr) as usize).max(1);
    (0..n)
        .map(|i| {
            let t = i as f32 / sr;
            let note = notes[(i / step_samples) % notes.len().max(1)];
            let in_note = (i % step_samples) as f32 / step_samples as f32;
            // Fast attack, exponential decay per note.
            let env = (in_note * 50.0).min(1.0) * (-3.0 * in_note).exp();
            let tone = (2.0 * std::f32::consts::PI * note * t).sin() * 0.6
                + (2.0 * std::f32::consts::PI * note * 2.0 * t).sin() * 0.15;
            let since_second = i % sample_rate as usize;
            let click = if since_second < (sample_rate as usize / 200) {
                (2.0 * std::f32::consts::PI * 2000.0 * t).sin() * 0.3
            } else {
                0.0
            };
            ((tone * env + click) * 0.5 * i16::MAX as f32) as i16
        })
        .collect()
}

/// The demo library: three generated tracks, tagged like real files and read
/// back through the same tag reader.
fn demo_tracks() -> Vec<Track> {
    const RATE: u32 = 22_050;
    let demos: [(&str, &str, &[f32], f32); 3] = [
        (
            "demo/1-a-minor-arpeggio.wav",
            "A minor arpeggio",
            &[220.0, 261.63, 329.63, 440.0],
            0.25,
        ),
        (
            "demo/2-c-major-steps.wav",
            "C major steps",
            &[261.63, 293.66, 329.63, 349.23, 392.0, 440.0, 493.88, 523.25],
            0.5,
        ),
        ("demo/3-low-pulse.wav", "Low pulse", &[110.0, 146.83], 1.0),
    ];
    demos
        .iter()
        .map(|(id, title, notes, step)| {
            let samples = arpeggio(RATE, 40, notes, *step);
            let bytes = Bytes::from(encode_wav(
                RATE,
                &samples,
                &[(b"INAM", title), (b"IART", "radio demo")],
            ));
            let tags = read_tags(Cursor::new(bytes.clone()), Path::new(id));
            Track {
                id: (*id).to_owned(),
                title: tags.title.unwrap_or_else(|| (*title).to_owned()),
                artist: tags.artist,
                duration_ms: tags.duration_ms,
                size: bytes.len() as u64,
                mime: "audio/wav",
                source: Source::Memory(bytes),
                modified: UNIX_EPOCH,
            }
        })
        .collect()
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
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%2e%2E/x").as_deref(), Some("../x"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn demo_tracks_are_tagged() {
        let tracks = demo_tracks();
        assert_eq!(tracks.len(), 3);
        assert_eq!(tracks[0].title, "A minor arpeggio");
        assert_eq!(tracks[0].artist.as_deref(), Some("radio demo"));
        assert_eq!(tracks[0].duration_ms, Some(40_000));
    }
}
