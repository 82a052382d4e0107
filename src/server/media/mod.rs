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
//!   progress holds the file open (shared with the other downloads of it),
//!   so a rescan (or a deleted file) never breaks it. Unchanged files (same size and mtime) keep their tags from the
//!   previous index, so a rescan reads tags only of new or changed files.
//! - **Loudness is measured behind the scan** ([`loudness`]): one thread
//!   decodes each new or changed file after the scan and swaps in an index
//!   with its gain; a measurement is kept by size and mtime, in a cache
//!   file too, so neither a rescan nor a restart decodes a file again.
//! - **Symlinks are the operator's choice** (`--follow-symlinks`, on by
//!   default), within the media root: a link is followed only when its real
//!   target (canonicalized) lies under the canonicalized root, and the scan
//!   keeps the target's real path, so a request opens it with `O_NOFOLLOW`.
//!   Every directory is entered at most once, keyed by (device, inode), so
//!   a link loop (or two links to one directory) is detected, logged and
//!   skipped.
//! - **What is served is what was scanned.** Each track keeps the (device,
//!   inode) of its file at the scan, and a request serves the file it opens
//!   only if it is still that one: a file replaced after the scan (by a
//!   symlink to anything the server may read, or by another file) is 404
//!   until a rescan, which applies the symlink policy to it.
//! - **One descriptor per track** ([`files`]): every download of a file
//!   reads the one descriptor by offset, held open and trusted for at most
//!   a second before its path is looked at again, so a herd of downloads
//!   at a track change costs a socket each, not a socket and a file.
//! - **Bodies are streamed with bounded memory.** On plain TCP a file's range
//!   goes to the socket by sendfile ([`crate::server::zerocopy`]); through
//!   hyper (TLS) it is read in [`serve::CHUNK`]-sized pieces as the socket
//!   accepts them, never whole.
//! - **A track's URL names its bytes.** The library lists each track's `url`
//!   with `?v=` its version (size and mtime, the `ETag`'s contents); an
//!   answer to the current version's URL may be cached for good
//!   ([`serve::IMMUTABLE`]), any other is revalidated (`no-cache`).
//!   `--media-base-url` puts a CDN's address before the URLs.
//! - **HTTP semantics follow RFC 9110**: `Accept-Ranges: bytes`; one range in
//!   any of its three forms gives 206 with `Content-Range`; a range that cannot
//!   be satisfied gives 416 with `Content-Range: bytes */SIZE`; several ranges,
//!   another unit or a malformed header are ignored (200 with the whole file,
//!   which the RFC allows); a strong `ETag` (size and mtime) and
//!   `Last-Modified` back `If-None-Match`/`If-Modified-Since` (304) and
//!   `If-Range`. An empty file has no satisfiable byte range except a suffix
//!   range, which cannot be expressed as a 206 either; so `bytes=-N` on an empty
//!   file is answered 200 with the empty body and any other range 416.

mod adts;
mod demo;
mod files;
mod heads;
mod index;
mod loudness;
mod probe;
mod scan;
mod serve;
mod tags;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::server::response::{Body, json_bytes, method_not_allowed};

pub use demo::{arpeggio, encode_wav};
pub(crate) use files::out_of_descriptors;
pub(crate) use heads::{HEAD, Heads};
pub(crate) use index::MEDIA;
pub(crate) use index::{Decodable, Index};
use loudness::Loudness;
pub use loudness::LoudnessCache;
pub use serve::answer_for;
pub(crate) use serve::{Answer, Report, percent_decode};

/// hyper's per-connection buffer limit (`max_buf_size`): with a body chunk
/// ([`serve::CHUNK`]), a
/// stream holds at most about 100 KiB however slowly its client reads
/// (measured in docs/player.md). Also the limit of a request's headers.
pub(crate) const HTTP_BUFFER: usize = 64 * 1024;

/// The library: a root directory (or the demo) and its current index.
pub(crate) struct Library {
    root: Option<PathBuf>,
    /// `--follow-symlinks`: whether scans follow symbolic links.
    follow_symlinks: bool,
    index: RwLock<Arc<Index>>,
    /// Held while a new index is made from the current one and swapped
    /// in, by a rescan or the loudness thread, so neither undoes the other.
    install: Mutex<()>,
    /// The tracks' measured loudness (none for the demo).
    loudness: Option<Loudness>,
    /// When the demo was generated; its tracks' Last-Modified.
    started: SystemTime,
    /// `--media-base-url`: where players fetch the tracks, when not here.
    base_url: Option<String>,
    /// The tracks' files held open, one descriptor each for every request.
    files: files::OpenFiles,
}

impl Library {
    /// Scans `root` (blocking: call it off the async threads), with the
    /// loudness measured earlier and kept in `loudness_cache`.
    pub(crate) fn scan(
        root: PathBuf,
        follow_symlinks: bool,
        loudness_cache: &LoudnessCache,
        base_url: Option<&str>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Self> {
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
        let loudness = Loudness::open(&root, loudness_cache);
        let empty = Index::empty(base_url.unwrap_or_default().into());
        let index = scan::scan_root(&root, &empty, follow_symlinks, cancel);
        if index.len() == 0 && !cancel.is_cancelled() {
            warn_empty(&root, &index);
        }
        let index = loudness.with_gains(&index).unwrap_or(index);
        Ok(Self {
            root: Some(root),
            follow_symlinks,
            index: RwLock::new(Arc::new(index)),
            install: Mutex::new(()),
            loudness: Some(loudness),
            started: SystemTime::now(),
            base_url: base_url.map(str::to_owned),
            files: files::OpenFiles::default(),
        })
    }

    /// The built-in demo library: a few short tones generated in memory.
    pub(crate) fn demo(base_url: Option<&str>) -> Self {
        let started = SystemTime::now();
        // Dated by the server's start, as their Last-Modified and versions.
        let tracks = demo::demo_tracks()
            .into_iter()
            .map(|t| index::Track {
                modified: started,
                ..t
            })
            .collect();
        let index = Index::new(tracks, base_url.unwrap_or_default().into());
        Self {
            root: None,
            follow_symlinks: true,
            index: RwLock::new(Arc::new(index)),
            install: Mutex::new(()),
            loudness: None,
            started,
            base_url: base_url.map(str::to_owned),
            files: files::OpenFiles::default(),
        }
    }

    /// The current index (a pointer copy under a short lock).
    pub(crate) fn index(&self) -> Arc<Index> {
        match self.index.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Scans again and swaps the index (blocking). The demo never changes.
    pub(crate) fn rescan(&self, cancel: &CancellationToken) {
        let Some(root) = &self.root else { return };
        let started = Instant::now();
        let old = self.index();
        let new = scan::scan_root(root, &old, self.follow_symlinks, cancel);
        if cancel.is_cancelled() {
            return;
        }
        if new.len() == 0 && old.len() > 0 {
            warn_empty(root, &new);
        }
        let added = new.ids().filter(|k| old.get(k).is_none()).count();
        let removed = old.ids().filter(|k| new.get(k).is_none()).count();
        let tracks = new.len();
        {
            let _installing = self.install.lock().unwrap_or_else(|p| p.into_inner());
            let new = match &self.loudness {
                Some(l) => l.with_gains(&new).unwrap_or(new),
                None => new,
            };
            self.swap(new);
        }
        // Files no longer in the library are not held open.
        let index = self.index();
        let paths: std::collections::HashSet<&std::path::Path> = index
            .tracks()
            .filter_map(|t| match &t.source {
                index::Source::File(path, _) => Some(path.as_path()),
                index::Source::Memory(_) => None,
            })
            .collect();
        self.files.retain(|path| paths.contains(path));
        if let Some(l) = &self.loudness {
            l.wake();
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if added + removed > 0 {
            tracing::info!(
                tracks,
                added,
                removed,
                elapsed_ms,
                "media library rescanned"
            );
        } else {
            tracing::debug!(tracks, elapsed_ms, "media library rescanned, unchanged");
        }
    }

    fn swap(&self, new: Index) {
        let new = Arc::new(new);
        match self.index.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// Starts measuring the loudness of the tracks that lack it, on a
    /// thread of its own, now and after every rescan.
    pub(crate) fn start_measuring(
        self: &Arc<Self>,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        loudness::start(self.clone(), tasks, shutdown);
    }

    /// Files decoded for their loudness since start, and tracks waiting.
    pub(crate) fn loudness_progress(&self) -> (u64, usize) {
        self.loudness
            .as_ref()
            .map_or((0, 0), |l| (l.measured(), l.pending()))
    }

    /// `--media-base-url`, when players fetch the tracks elsewhere.
    pub(crate) fn base_url(&self) -> Option<&str> {
        self.base_url.as_deref()
    }

    /// Whether `path` is one of the library's: `/api/library`, `/media/{id}`.
    pub(crate) fn serves(path: &str) -> bool {
        path == "/api/library" || path.starts_with(MEDIA)
    }

    /// Answers a request for one of the library's paths ([`Library::serves`]).
    pub(crate) async fn route<B>(&self, req: &Request<B>, report: &Report<'_>) -> Response<Body> {
        let path = req.uri().path();
        let method = req.method();
        if path.starts_with(MEDIA) {
            return self
                .answer(method, path, req.uri().query(), req.headers(), report)
                .await
                .into_response()
                .await;
        }
        match *method {
            Method::GET | Method::HEAD => json_bytes(StatusCode::OK, self.index().json()),
            _ => method_not_allowed("GET"),
        }
    }

    /// Answers a request for `/media/{id}` (`path` starts with [`MEDIA`];
    /// `query` is the request's, whose `v=` may name the file's version):
    /// complete, or a file's head and range for the caller to send.
    pub(crate) async fn answer(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        report: &Report<'_>,
    ) -> Answer {
        let encoded_id = path.strip_prefix(MEDIA).unwrap_or_default();
        if method != Method::GET && method != Method::HEAD {
            return Answer::Complete(method_not_allowed("GET, HEAD"));
        }
        let Some(id) = percent_decode(encoded_id) else {
            return Answer::Complete(serve::not_found());
        };
        let Some(track) = self.index().get(&id).cloned() else {
            return Answer::Complete(serve::not_found());
        };
        let caching = serve::Caching::new(query, self.base_url.is_some());
        serve::answer_track(
            method,
            headers,
            &caching,
            &track,
            self.started,
            &self.files,
            report,
        )
        .await
    }
}

impl loudness::Host for Library {
    fn index(&self) -> Arc<Index> {
        Library::index(self)
    }

    fn apply_gains(&self) {
        let Some(l) = &self.loudness else { return };
        let _installing = self.install.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(new) = l.with_gains(&self.index()) {
            self.swap(new);
        }
    }

    fn loudness(&self) -> Option<&Loudness> {
        self.loudness.as_ref()
    }
}

/// Says that a scan of `root` found nothing to play: a wrong or empty
/// `--media` would otherwise serve an empty library without a word.
fn warn_empty(root: &std::path::Path, index: &Index) {
    let served: Vec<String> = index::TYPES
        .iter()
        .map(|(ext, _)| format!(".{ext}"))
        .collect();
    let left_out = match index.unplayable() {
        0 => String::new(),
        1 => " (1 file there does not play: see above)".to_owned(),
        n => format!(" ({n} files there do not play: see above)"),
    };
    tracing::warn!(
        "no audio files found in {}{left_out}: the library is empty. It serves {} files, \
         in subfolders too; pass the folder that holds your music to --media",
        root.display(),
        served.join(" ")
    );
}

/// Rescans on every SIGHUP (`hangups` counts them; the server's reload
/// task owns the signal) and every `interval`, until shutdown.
pub(crate) async fn rescan_task(
    library: Arc<Library>,
    interval: Option<Duration>,
    shutdown: CancellationToken,
    mut hangups: tokio::sync::watch::Receiver<u64>,
) {
    if interval.is_some_and(|d| d.is_zero()) {
        tracing::warn!("--rescan-interval 0 means never; the library rescans on SIGHUP only");
    }
    let mut ticker = interval.filter(|d| !d.is_zero()).map(|d| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    // No mark_unchanged(): a SIGHUP between the counter's creation (after
    // the first scan) and this task's first turn must still rescan.
    loop {
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
            changed = hangups.changed() => {
                // The reload task ends only at shutdown.
                if changed.is_err() {
                    return;
                }
            }
            _ = tick => tracing::debug!("rescanning the media library"),
        }
        let lib = library.clone();
        let cancel = shutdown.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || lib.rescan(&cancel)).await {
            tracing::error!(error = %e, "media rescan failed");
        }
    }
}
