//! The open-file cache, as nginx's `open_file_cache`: one descriptor per
//! track, shared by every request for it, instead of one per request.
//!
//! At a track change thousands of listeners ask for the same file at once;
//! a descriptor each would double the server's open files (a socket and a
//! file per download) and run it out of them. Every download reads by
//! offset (`sendfile` takes one, hyper's path reads with `pread`), so one
//! open file serves them all.
//!
//! What is served stays what was scanned: an entry is trusted for at most
//! [`REVALIDATE`]; the first request after that looks at the path again
//! (`lstat`, on the blocking pool, one request per file while the others
//! wait for its answer) and keeps the descriptor only if the path still
//! names a regular file with the same device, inode, size and mtime. Any
//! difference (the file rewritten, replaced, deleted, or a symlink or FIFO
//! swapped in) drops the entry, and the request opens the path anew with
//! the checks a first open makes (`O_NOFOLLOW`, the inode the scan found).
//! So a swap is refused at most [`REVALIDATE`] after it happens, and in
//! between the bytes served are those of the file the scan found.
//!
//! The cache is bounded: at most [`MAX_FILES`] entries, the least recently
//! used dropped first, and entries of files a rescan no longer lists
//! dropped after it ([`OpenFiles::retain`]), so a deleted file's space is
//! not held for long.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an entry is served without looking at its path again.
pub(super) const REVALIDATE: Duration = Duration::from_secs(1);

/// Most files held open at once.
pub(super) const MAX_FILES: usize = 256;

/// A file's identity and version: what must not change for a descriptor
/// to stay the path's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) size: u64,
    pub(super) mtime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }

    /// (device, inode), as the scan keys a file.
    pub(super) fn key(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// What the scan found of a track's file.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scanned {
    /// (device, inode).
    pub(super) key: (u64, u64),
    pub(super) size: u64,
    pub(super) modified: std::time::SystemTime,
}

impl Scanned {
    /// Whether `opened` is the file and the version the scan found.
    fn is(&self, opened: &Opened) -> bool {
        opened.stamp.key() == self.key
            && opened.stamp.size == self.size
            && opened.modified == self.modified
    }
}

/// An open track file and what it was when last checked.
#[derive(Debug, Clone)]
pub(super) struct Opened {
    pub(super) file: Arc<File>,
    pub(super) stamp: Stamp,
    pub(super) modified: std::time::SystemTime,
}

/// Why a track's file is not served.
#[derive(Debug)]
pub(super) enum Refused {
    /// Nothing at the path.
    Gone,
    /// Another file, or a symlink, where the scan found the track's.
    Replaced,
    /// Not a regular file (a FIFO, a directory).
    NotFile,
    /// The open failed otherwise (out of descriptors among them).
    Io(io::Error),
}

struct Cached {
    opened: Opened,
    checked: Instant,
}

struct Slot {
    /// The file as last checked; `None` before the first open and after a
    /// failed check.
    state: Mutex<Option<Cached>>,
    /// Held by the one request that checks or opens the file.
    refresh: tokio::sync::Mutex<()>,
    /// When it was last asked for, in ms since the cache began.
    used_ms: AtomicU64,
}

/// The open files, by path.
pub(super) struct OpenFiles {
    slots: Mutex<HashMap<PathBuf, Arc<Slot>>>,
    max: usize,
    began: Instant,
}

impl Default for OpenFiles {
    fn default() -> Self {
        Self::new(MAX_FILES)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl OpenFiles {
    pub(super) fn new(max: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            max: max.max(1),
            began: Instant::now(),
        }
    }

    /// The open file at `path`, which the scan found as `scanned`: from
    /// the cache while fresh (checked within [`REVALIDATE`], and the
    /// version the index lists, so a rescan's news is never behind), else
    /// checked or opened on the blocking pool.
    pub(super) async fn get(&self, path: &Path, scanned: &Scanned) -> Result<Opened, Refused> {
        let slot = self.slot(path);
        let fresh = |state: &Option<Cached>| {
            state
                .as_ref()
                .filter(|c| c.checked.elapsed() < REVALIDATE && scanned.is(&c.opened))
                .map(|c| c.opened.clone())
        };
        let scanned = scanned.key;
        if let Some(opened) = fresh(&lock(&slot.state)) {
            return Ok(opened);
        }
        let _refreshing = slot.refresh.lock().await;
        // Another request may have checked it while this one waited.
        let prior = {
            let state = lock(&slot.state);
            if let Some(opened) = fresh(&state) {
                return Ok(opened);
            }
            state.as_ref().map(|c| c.opened.clone())
        };
        let owned = path.to_owned();
        let checked = tokio::task::spawn_blocking(move || check(&owned, prior, scanned))
            .await
            .unwrap_or_else(|e| Err(Refused::Io(io::Error::other(e))));
        let mut state = lock(&slot.state);
        match checked {
            Ok(opened) => {
                *state = Some(Cached {
                    opened: opened.clone(),
                    checked: Instant::now(),
                });
                Ok(opened)
            }
            Err(refused) => {
                // The descriptor (if any) goes with the last download using it.
                *state = None;
                Err(refused)
            }
        }
    }

    /// The slot of `path`, made (and the least recently used dropped, when
    /// full) if there is none.
    fn slot(&self, path: &Path) -> Arc<Slot> {
        let now = self.began.elapsed().as_millis() as u64;
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(path) {
            slot.used_ms.store(now, Ordering::Relaxed);
            return slot.clone();
        }
        if slots.len() >= self.max {
            let oldest = slots
                .iter()
                .min_by_key(|(_, s)| s.used_ms.load(Ordering::Relaxed))
                .map(|(p, _)| p.clone());
            if let Some(oldest) = oldest {
                slots.remove(&oldest);
            }
        }
        let slot = Arc::new(Slot {
            state: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            used_ms: AtomicU64::new(now),
        });
        slots.insert(path.to_owned(), slot.clone());
        slot
    }

    /// Drops the entries of paths `keep` says no to (files a rescan no
    /// longer lists).
    pub(super) fn retain(&self, mut keep: impl FnMut(&Path) -> bool) {
        lock(&self.slots).retain(|p, _| keep(p));
    }

    /// Files held open now.
    #[cfg(test)]
    fn open_count(&self) -> usize {
        lock(&self.slots)
            .values()
            .filter(|s| lock(&s.state).is_some())
            .count()
    }
}

/// Keeps `prior` if `path` still names it, else opens `path` afresh.
fn check(path: &Path, prior: Option<Opened>, scanned: (u64, u64)) -> Result<Opened, Refused> {
    if let Some(prior) = prior {
        // Not followed: a symlink here was swapped in since the scan.
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_file() && Stamp::of(&meta) == prior.stamp {
                return Ok(prior);
            }
        }
    }
    open(path, scanned)
}

/// Opens `path` without following a symlink and without blocking (a FIFO
/// swapped in would block the open until a writer came; on a regular file
/// the flag does nothing), and checks that it is the file the scan found:
/// links it followed are stored as their targets, so a symlink at this
/// real path was swapped in since.
fn open(path: &Path, scanned: (u64, u64)) -> Result<Opened, Refused> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Refused::Gone,
            _ if e.raw_os_error() == Some(libc::ELOOP) => Refused::Replaced,
            _ => Refused::Io(e),
        })?;
    let meta = file.metadata().map_err(Refused::Io)?;
    if !meta.is_file() {
        return Err(Refused::NotFile);
    }
    let stamp = Stamp::of(&meta);
    if stamp.key() != scanned {
        return Err(Refused::Replaced);
    }
    Ok(Opened {
        file: Arc::new(file),
        stamp,
        modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
    })
}

/// Whether `e` says the process (or the system) is out of descriptors.
pub(crate) fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &Path) -> Scanned {
        let meta = std::fs::metadata(path).unwrap();
        Scanned {
            key: Stamp::of(&meta).key(),
            size: meta.len(),
            modified: meta.modified().unwrap(),
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("radio-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Many requests for one file share one descriptor; a rewrite is seen
    /// at the next check; the bound drops the least recently used.
    #[tokio::test]
    async fn one_descriptor_per_file_checked_again_and_bounded() {
        let d = dir("share");
        let a = d.join("a");
        std::fs::write(&a, b"first").unwrap();
        let files = OpenFiles::new(2);
        let k = key(&a);
        let one = files.get(&a, &k).await.unwrap();
        for _ in 0..100 {
            let again = files.get(&a, &k).await.unwrap();
            assert!(Arc::ptr_eq(&one.file, &again.file));
        }
        // Rewritten in place (same inode, another size): a new descriptor
        // and the new size once the entry is checked again.
        std::fs::write(&a, b"second, longer").unwrap();
        tokio::time::sleep(REVALIDATE + Duration::from_millis(50)).await;
        let after = files.get(&a, &k).await.unwrap();
        assert_eq!(after.stamp.size, 14);
        assert!(!Arc::ptr_eq(&one.file, &after.file));
        // Bounded: a third file drops the least recently used.
        let (b, c) = (d.join("b"), d.join("c"));
        std::fs::write(&b, b"b").unwrap();
        std::fs::write(&c, b"c").unwrap();
        let kb = key(&b);
        files.get(&b, &kb).await.unwrap();
        files.get(&c, &key(&c)).await.unwrap();
        assert_eq!(files.open_count(), 2);
        files.retain(|p| p != c);
        assert_eq!(files.open_count(), 1);
        // A symlink swapped in is refused at the next check.
        std::fs::remove_file(&b).unwrap();
        std::os::unix::fs::symlink(&c, &b).unwrap();
        tokio::time::sleep(REVALIDATE + Duration::from_millis(50)).await;
        assert!(matches!(
            files.get(&b, &kb).await,
            Err(Refused::Replaced | Refused::Gone)
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
