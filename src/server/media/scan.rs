//! Walking the library's directory tree into an [`Index`]: symlinks
//! followed with loop detection (or skipped, `--follow-symlinks false`),
//! hidden entries skipped, tags reused for unchanged files. Each track
//! records the (device, inode) of the file it found, which a request must
//! find again ([`file_key`]).

use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use tokio_util::sync::CancellationToken;

use super::index::{Index, Source, Track, mime_for};
use super::tags::{read_tags_file, title_from_name};
use crate::protocol::MAX_TRACK_BYTES;

/// Directories nested deeper than this are not scanned (a guard against
/// pathological trees; loops are caught earlier by the inode check).
const MAX_DEPTH: usize = 64;

/// Scans `root` recursively into a new index, reusing `old`'s tags for files
/// whose size and mtime are unchanged.
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
    let mut scan = Scan {
        visited: HashSet::new(),
        tracks: Vec::new(),
        reuse,
        follow_symlinks,
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
    follow_symlinks: bool,
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
    /// The track a playable file is, its tags reused when unchanged; `None`
    /// for files the library does not serve.
    fn track(&self, path: PathBuf, name: &str, id: String, meta: &Metadata) -> Option<Track> {
        let mime = mime_for(&path)?;
        if id.len() > MAX_TRACK_BYTES {
            tracing::warn!(path = %path.display(), "path longer than {MAX_TRACK_BYTES} bytes; skipped");
            return None;
        }
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let size = meta.len();
        let key = file_key(meta);
        let same_file = |t: &Track| matches!(t.source, Source::File(_, k) if k == key);
        Some(match self.reuse.get(path.as_path()) {
            Some(old)
                if old.size == size
                    && old.modified == modified
                    && old.id == id
                    && same_file(old) =>
            {
                (*old).clone()
            }
            _ => {
                let tags = read_tags_file(&path);
                Track {
                    title: tags.title.unwrap_or_else(|| title_from_name(name)),
                    artist: tags.artist,
                    duration_ms: tags.duration_ms,
                    id,
                    size,
                    mime,
                    source: Source::File(path, key),
                    modified,
                }
            }
        })
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
            let path = entry.path();
            // Follows symlinks unless told not to: a link is the operator's choice.
            let meta = if self.follow_symlinks {
                std::fs::metadata(&path)
            } else {
                std::fs::symlink_metadata(&path)
            };
            let meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable entry (a dangling symlink?)");
                    continue;
                }
            };
            if meta.file_type().is_symlink() {
                tracing::debug!(path = %path.display(), "skipping a symlink (--follow-symlinks false)");
                continue;
            }
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
                if let Some(track) = self.track(path, &name, id, &meta) {
                    self.tracks.push(track);
                }
            }
        }
    }
}
