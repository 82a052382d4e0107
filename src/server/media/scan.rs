//! Walking the library's directory tree into an [`Index`]: symlinks
//! followed with loop detection when their real target lies under the
//! media root (or skipped, `--follow-symlinks false`), hidden entries
//! skipped, tags reused for unchanged files. Every path kept is a real one
//! (the root canonicalized, each followed link replaced by its target), so
//! a request opens it without following a link (`O_NOFOLLOW`). Each track
//! records the (device, inode) of the file it found, which a request must
//! find again ([`file_key`]). A new or changed file becomes a track only
//! if it plays ([`probe::check`]); one that does not is left out, and the
//! scan says so in one warning for all of them.

use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use tokio_util::sync::CancellationToken;

use super::index::{Index, Rejected, Source, Track, mime_for};
use super::probe;
use super::tags::{read_tags_file, title_from_name};
use crate::protocol::MAX_TRACK_BYTES;

/// Directories nested deeper than this are not scanned (a guard against
/// pathological trees; loops are caught earlier by the inode check).
const MAX_DEPTH: usize = 64;

/// Files named in the warning about the files left out; the rest are counted.
const NAMED: usize = 5;

/// Scans `root` recursively into a new index, reusing `old`'s tags (and
/// verdicts on files that do not play) for files whose size and mtime are
/// unchanged.
pub(super) fn scan_root(
    root: &Path,
    old: &Index,
    follow_symlinks: bool,
    cancel: &CancellationToken,
) -> Index {
    let reuse: HashMap<&Path, &Track> = old
        .tracks()
        .filter_map(|t| match &t.source {
            Source::File(p, _) => Some((p.as_path(), t.as_ref())),
            Source::Memory(_) => None,
        })
        .collect();
    let rejected_before = old
        .rejected()
        .iter()
        .map(|r| (r.path.as_path(), r))
        .collect();
    let mut scan = Scan {
        visited: HashSet::new(),
        tracks: Vec::new(),
        rejected: Vec::new(),
        fresh_rejects: 0,
        reuse,
        rejected_before,
        follow_symlinks,
        real_root: PathBuf::new(),
        outside: Vec::new(),
        cancel,
    };
    // The real root: followed links must land under it.
    let real_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    scan.real_root = real_root.clone();
    if let Ok(meta) = std::fs::metadata(&real_root) {
        scan.visited.insert(dir_key(&meta));
    }
    scan.walk(&real_root, "", 0);
    warn_rejected(&scan.rejected[scan.rejected.len() - scan.fresh_rejects..]);
    warn_outside(&real_root, &scan.outside);
    Index::scanned(scan.tracks, scan.rejected, old.base())
}

/// One warning for the files newly left out: how many, the first few and why.
fn warn_rejected(fresh: &[Rejected]) {
    if fresh.is_empty() {
        return;
    }
    let mut named: Vec<String> = fresh
        .iter()
        .take(NAMED)
        .map(|r| format!("{:?} ({})", r.id, r.reason))
        .collect();
    if fresh.len() > NAMED {
        named.push(format!("and {} more", fresh.len() - NAMED));
    }
    let n = fresh.len();
    tracing::warn!(
        files = n,
        "{n} media file{} left out of the library, which do{} not play: {}",
        if n == 1 { "" } else { "s" },
        if n == 1 { "es" } else { "" },
        named.join(", ")
    );
}

/// One warning for the symlinks not followed because their target lies
/// outside the media root: how many, and the first few.
fn warn_outside(root: &Path, outside: &[PathBuf]) {
    if outside.is_empty() {
        return;
    }
    let mut named: Vec<String> = outside
        .iter()
        .take(NAMED)
        .map(|p| format!("{}", p.display()))
        .collect();
    if outside.len() > NAMED {
        named.push(format!("and {} more", outside.len() - NAMED));
    }
    tracing::warn!(
        links = outside.len(),
        "symlinks not followed, as their target is outside the media root {}: {}",
        root.display(),
        named.join(", ")
    );
}

struct Scan<'a> {
    /// Directories entered, by (device, inode): a loop cannot recurse.
    visited: HashSet<(u64, u64)>,
    tracks: Vec<Track>,
    /// Files left out: those of the last scan first, then new ones.
    rejected: Vec<Rejected>,
    /// How many at the end of `rejected` this scan found (not reused).
    fresh_rejects: usize,
    reuse: HashMap<&'a Path, &'a Track>,
    rejected_before: HashMap<&'a Path, &'a Rejected>,
    follow_symlinks: bool,
    /// The media root, canonicalized.
    real_root: PathBuf,
    /// Symlinks skipped because their real target is outside the root.
    outside: Vec<PathBuf>,
    cancel: &'a CancellationToken,
}

/// A file's identity: (device, inode).
pub(super) fn file_key(meta: &std::fs::Metadata) -> (u64, u64) {
    dir_key(meta)
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
    /// Adds a file of a type the library serves: as a track, its tags
    /// reused when unchanged, if it plays; else to the files left out.
    fn file(&mut self, path: PathBuf, name: &str, id: String, meta: &Metadata) {
        // By the entry's own name: a followed link's target may have none.
        let Some(mime) = mime_for(Path::new(name)) else {
            return;
        };
        if id.len() > MAX_TRACK_BYTES {
            tracing::warn!(path = %path.display(), "path longer than {MAX_TRACK_BYTES} bytes; skipped");
            return;
        }
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let size = meta.len();
        let key = file_key(meta);
        let same_file = |t: &Track| matches!(t.source, Source::File(_, k) if k == key);
        if let Some(old) = self.reuse.get(path.as_path()) {
            if old.size == size && old.modified == modified && old.id == id && same_file(old) {
                self.tracks.push((*old).clone());
                return;
            }
        }
        if let Some(old) = self.rejected_before.get(path.as_path()) {
            if old.size == size && old.modified == modified && old.id == id && old.key == key {
                // Before the fresh ones, which the warning names.
                let at = self.rejected.len() - self.fresh_rejects;
                self.rejected.insert(at, (*old).clone());
                return;
            }
        }
        let tags = read_tags_file(&path);
        match probe::check(&path, mime, tags.duration_ms) {
            Ok(duration_ms) => self.tracks.push(Track {
                title: tags.title.unwrap_or_else(|| title_from_name(name)),
                artist: tags.artist,
                duration_ms: Some(duration_ms),
                gain_db: None,
                id,
                url: String::new(),
                size,
                mime,
                source: Source::File(path, key),
                modified,
            }),
            Err(reason) => {
                tracing::debug!(path = %path.display(), reason, "left out of the library");
                self.fresh_rejects += 1;
                self.rejected.push(Rejected {
                    id,
                    path,
                    key,
                    size,
                    modified,
                    reason,
                });
            }
        }
    }

    /// An entry's real path and metadata: itself when it is no symlink;
    /// when it is one, its target, if links are followed and the target
    /// lies under the media root. `None`: skipped.
    fn resolve(&mut self, path: PathBuf) -> Option<(PathBuf, Metadata)> {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable entry");
                return None;
            }
        };
        if !meta.file_type().is_symlink() {
            return Some((path, meta));
        }
        if !self.follow_symlinks {
            tracing::debug!(path = %path.display(), "skipping a symlink (--follow-symlinks false)");
            return None;
        }
        let target = match std::fs::canonicalize(&path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping a symlink whose target cannot be read (dangling?)");
                return None;
            }
        };
        if !target.starts_with(&self.real_root) {
            tracing::debug!(path = %path.display(), target = %target.display(), "skipping a symlink out of the media root");
            self.outside.push(path);
            return None;
        }
        match std::fs::symlink_metadata(&target) {
            Ok(meta) => Some((target, meta)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable entry");
                None
            }
        }
    }

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
            let link = entry.path();
            let Some((path, meta)) = self.resolve(link) else {
                continue;
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
                self.file(path, &name, id, &meta);
            }
        }
    }
}
