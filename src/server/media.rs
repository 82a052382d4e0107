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

mod demo;
mod serve;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use lofty::prelude::*;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::protocol::MAX_TRACK_BYTES;
use crate::server::http::{Body, full, text};

pub use demo::{arpeggio, encode_wav};
pub use serve::percent_decode;
use serve::{Validators, not_found, respond, serve_file};

/// Bytes read from disk per body chunk.
pub const CHUNK: usize = 32 * 1024;
/// hyper's per-connection buffer limit (`max_buf_size`): with [`CHUNK`], a
/// stream holds at most about 100 KiB however slowly its client reads
/// (measured in docs/player.md). Also the limit of a request's headers.
pub const HTTP_BUFFER: usize = 64 * 1024;

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
        // Two file names that are not UTF-8 can map to one id; keep the first.
        tracks.dedup_by(|later, first| {
            let same = later.id == first.id;
            if same {
                tracing::warn!(id = %later.id, "two files share this id (names that are not UTF-8); serving the first");
            }
            same
        });
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
        let tracks = demo::demo_tracks();
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
