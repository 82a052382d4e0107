//! The measurements, by track id, with the size and mtime of the file
//! each was made from (a file that changed is measured again); kept in
//! memory, and in a cache file so a restart decodes nothing again.
//!
//! The file is JSON lines: a header naming the library's root, then one
//! measurement per line. It is written whole to a temporary file that is
//! renamed over the old one, so a crash leaves the old cache or the new,
//! never half of one. By default it lives in the user's cache folder
//! (`$XDG_CACHE_HOME/radio/`, else `~/.cache/radio/`), one file per
//! library root, never in the library itself, which may be read-only.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::measure::Measured;

/// Where measured loudness is kept across restarts (`--loudness-cache`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoudnessCache {
    /// In the user's cache folder, one file per library root.
    Auto,
    /// In this file.
    File(PathBuf),
    /// Nowhere: every start measures the library again.
    Off,
}

/// The header's version: a file of another is measured again.
const VERSION: u32 = 1;
/// The cache files' names in the user's cache folder: `loudness-HASH.jsonl`.
const PREFIX: &str = "loudness-";
const SUFFIX: &str = ".jsonl";

#[derive(Serialize, Deserialize)]
struct Header {
    radio_loudness: u32,
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Line {
    id: String,
    size: u64,
    mtime_ns: u64,
    /// `None`: the file cannot be measured (it is not tried again while
    /// it is unchanged).
    m: Option<Measured>,
}

/// One file's measurement and what the file was.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Entry {
    pub size: u64,
    pub mtime_ns: u64,
    pub measured: Option<Measured>,
}

/// A modification time as the cache keeps it: nanoseconds since 1970.
pub(super) fn mtime_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(super) struct Store {
    root: PathBuf,
    file: Option<PathBuf>,
    /// Whether `file` is in our own cache folder (where files of libraries
    /// that are gone are removed).
    auto: bool,
    entries: Mutex<HashMap<String, Entry>>,
    /// Changed since the last write.
    dirty: AtomicBool,
    /// A write failed and was said (said once).
    warned: AtomicBool,
    /// Cache files of libraries that are gone were looked for.
    swept: AtomicBool,
}

impl Store {
    /// The store of the library at `root`, with what `cache` kept.
    pub(super) fn open(root: &Path, cache: &LoudnessCache) -> Self {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let (file, auto) = match cache {
            LoudnessCache::Off => (None, false),
            LoudnessCache::File(path) => (Some(path.clone()), false),
            LoudnessCache::Auto => (default_file(&root), true),
        };
        if auto && file.is_none() {
            tracing::info!(
                "neither XDG_CACHE_HOME nor HOME is set: measured loudness is kept in memory \
                 only (--loudness-cache PATH keeps it across restarts)"
            );
        }
        let entries = file.as_deref().map(|f| load(f, &root)).unwrap_or_default();
        Self {
            root,
            file,
            auto,
            entries: Mutex::new(entries),
            dirty: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            swept: AtomicBool::new(false),
        }
    }

    /// The measurements (a short lock: look up, then let go).
    pub(super) fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn record(&self, id: String, entry: Entry) {
        self.entries().insert(id, entry);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Forgets the files `keep` does not name and writes the cache file,
    /// if anything changed since the last write.
    pub(super) fn save(&self, keep: impl Fn(&str) -> bool) {
        let text = {
            let mut entries = self.entries();
            let before = entries.len();
            entries.retain(|id, _| keep(id));
            if entries.len() != before {
                self.dirty.store(true, Ordering::Relaxed);
            }
            if !self.dirty.swap(false, Ordering::Relaxed) {
                return;
            }
            let Some(_) = &self.file else { return };
            encode(&self.root, &entries)
        };
        let Some(file) = &self.file else { return };
        if let Err(e) = write_atomically(file, text.as_bytes()) {
            // Written again at the next change.
            self.dirty.store(true, Ordering::Relaxed);
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    file = %file.display(),
                    error = %e,
                    "cannot write the loudness cache: a restart will measure the library again \
                     (--loudness-cache PATH names a writable file, `off` keeps it in memory)"
                );
            }
            return;
        }
        tracing::debug!(file = %file.display(), "loudness cache written");
        if self.auto && !self.swept.swap(true, Ordering::Relaxed) {
            sweep(file);
        }
    }
}

/// `$XDG_CACHE_HOME/radio/loudness-HASH.jsonl` (else under `~/.cache`),
/// HASH naming the library's root.
fn default_file(root: &Path) -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let base = std::env::var_os("XDG_CACHE_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".cache"))
        })?;
    let hash = fnv1a(root.as_os_str().as_encoded_bytes());
    Some(
        base.join("radio")
            .join(format!("{PREFIX}{hash:016x}{SUFFIX}")),
    )
}

/// FNV-1a, 64 bits: a stable name for a root (std's hasher may change
/// between Rust versions, and the name must not).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn encode(root: &Path, entries: &HashMap<String, Entry>) -> String {
    let mut out = String::with_capacity(64 + entries.len() * 96);
    let header = Header {
        radio_loudness: VERSION,
        root: root.to_path_buf(),
    };
    let mut push = |line: serde_json::Result<String>| {
        if let Ok(line) = line {
            out.push_str(&line);
            out.push('\n');
        }
    };
    push(serde_json::to_string(&header));
    for (id, e) in entries {
        push(serde_json::to_string(&Line {
            id: id.clone(),
            size: e.size,
            mtime_ns: e.mtime_ns,
            m: e.measured,
        }));
    }
    out
}

/// What the cache file says of `root`'s files: nothing when there is no
/// file yet, or it is another library's, or another version's.
fn load(file: &Path, root: &Path) -> HashMap<String, Entry> {
    let mut entries = HashMap::new();
    let reader = match std::fs::File::open(file) {
        Ok(f) => BufReader::new(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return entries,
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "cannot read the loudness cache; the library is measured again");
            return entries;
        }
    };
    let mut lines = reader.lines();
    let header = lines
        .next()
        .and_then(Result::ok)
        .and_then(|l| serde_json::from_str::<Header>(&l).ok());
    match header {
        Some(h) if h.radio_loudness == VERSION && h.root == root => {}
        Some(h) if h.radio_loudness == VERSION => {
            tracing::info!(file = %file.display(), cached = %h.root.display(), "the loudness cache is another library's; measuring this one");
            return entries;
        }
        _ => {
            tracing::warn!(file = %file.display(), "the loudness cache is not one this version reads; measuring the library again");
            return entries;
        }
    }
    let mut bad = 0usize;
    for line in lines {
        match line.map(|l| serde_json::from_str::<Line>(&l)) {
            Ok(Ok(l)) => {
                let entry = Entry {
                    size: l.size,
                    mtime_ns: l.mtime_ns,
                    measured: l.m,
                };
                entries.insert(l.id, entry);
            }
            _ => bad += 1,
        }
    }
    if bad > 0 {
        tracing::warn!(file = %file.display(), lines = bad, "lines of the loudness cache could not be read; their tracks are measured again");
    }
    tracing::debug!(file = %file.display(), tracks = entries.len(), "loudness cache read");
    entries
}

fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    let tmp = file.with_file_name(name);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&tmp, file)) {
        Ok(()) => Ok(()),
        Err(e) => {
            // Best effort: the temporary file may not exist.
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Removes the cache files (beside `ours`) of libraries whose root is
/// gone, so that the cache folder does not fill up with them.
fn sweep(ours: &Path) {
    let Some(dir) = ours.parent() else { return };
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in listing.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path == ours || !name.starts_with(PREFIX) || !name.ends_with(SUFFIX) {
            continue;
        }
        let header = std::fs::File::open(&path).ok().and_then(|f| {
            let mut first = String::new();
            BufReader::new(f).read_line(&mut first).ok()?;
            serde_json::from_str::<Header>(&first).ok()
        });
        if header.is_some_and(|h| !h.root.exists()) && std::fs::remove_file(&path).is_ok() {
            tracing::debug!(file = %path.display(), "removed the loudness cache of a library that is gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_file_is_read_back_for_its_library_only() {
        let dir = std::env::temp_dir().join(format!("radio-store-{}", std::process::id()));
        let file = dir.join("sub/cache.jsonl");
        let cache = LoudnessCache::File(file.clone());
        let store = Store::open(&dir, &cache);
        let m = Measured {
            lufs: -12.5,
            peak: 0.75,
        };
        let entry = |measured| Entry {
            size: 10,
            mtime_ns: 20,
            measured,
        };
        store.record("a\tb\n.mp3".into(), entry(Some(m)));
        store.record("broken.mp3".into(), entry(None));
        store.record("gone.mp3".into(), entry(None));
        store.save(|id| id != "gone.mp3");
        let back = Store::open(&dir, &cache);
        let entries = back.entries();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries.get("a\tb\n.mp3"), Some(&entry(Some(m))));
        assert_eq!(entries.get("broken.mp3"), Some(&entry(None)));
        drop(entries);
        // Another library's cache is not read.
        let other = Store::open(&dir.join("sub"), &cache);
        assert!(other.entries().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_default_file_is_named_by_the_root() {
        assert_ne!(fnv1a(b"/music"), fnv1a(b"/music2"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
