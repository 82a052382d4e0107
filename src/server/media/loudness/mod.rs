//! Even loudness: each track of the library is measured (EBU R128
//! integrated loudness, [`measure`]) and given the gain that brings it to
//! -18 LUFS, which `/api/library` and every `sync` of it carry
//! (`gain_db`), and the players apply.
//!
//! Why it is built this way:
//! - **Never in the way.** Measuring decodes a whole file, so it happens on
//!   one thread of its own, at a lower CPU priority, after the scan: a
//!   track plays from the scan on, with no gain until it is measured. A big
//!   library takes one core, never the server's.
//! - **Measured once.** A measurement is kept with the size and mtime of
//!   its file ([`store`]), in memory and in a cache file, so a rescan of an
//!   unchanged library, or a restart, decodes nothing.
//! - **Gains go into the index.** The index is replaced whole, never
//!   changed: after a batch of measurements (at most every second while
//!   measuring) a copy with the new gains is swapped in, under the same
//!   lock a rescan swaps its index under, and a rescan fills in every gain
//!   known, so neither loses the other's work.
//! - **A file the decoder cannot read has no gain**, and the measurement
//!   says why in the debug log only: it still plays (it passed the scan's
//!   check), only at its own loudness.

mod measure;
mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::server::media::index::{Index, Source, Track};
use measure::{Failure, gain_db};
pub use store::LoudnessCache;
use store::{Entry, Store, mtime_ns};

/// New gains are swapped into the index at most this often while
/// measuring (each swap copies the index).
const APPLY_EVERY: Duration = Duration::from_secs(1);
/// The cache file is written at most this often while measuring, and at
/// the end of each batch.
const SAVE_EVERY: Duration = Duration::from_secs(60);
/// The measuring thread's niceness: below the server's own threads.
#[cfg(target_os = "linux")]
const NICE: libc::c_int = 10;

/// What the library does with its index: the measuring thread reads it
/// and has gains swapped into it (implemented by the library).
pub(crate) trait Host: Send + Sync + 'static {
    fn index(&self) -> Arc<Index>;
    /// Swaps in a copy of the index with the gains measured so far.
    fn apply_gains(&self);
    fn loudness(&self) -> Option<&Loudness>;
}

/// The library's measurements, and the measuring thread's state.
pub(crate) struct Loudness {
    store: Store,
    /// Files decoded for their loudness since start.
    measured: AtomicU64,
    /// Tracks waiting for a measurement.
    pending: AtomicUsize,
    /// Bumped to wake the measuring thread (a scan, shutdown).
    wake: Mutex<u64>,
    woken: Condvar,
}

/// One file to measure, as the scan found it.
struct Job {
    id: String,
    path: PathBuf,
    size: u64,
    modified: SystemTime,
}

impl Loudness {
    /// The measurements of the library at `root`, with those `cache` kept.
    pub(crate) fn open(root: &Path, cache: &LoudnessCache) -> Self {
        Self {
            store: Store::open(root, cache),
            measured: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            wake: Mutex::new(0),
            woken: Condvar::new(),
        }
    }

    /// Files decoded for their loudness since start.
    pub(crate) fn measured(&self) -> u64 {
        self.measured.load(Ordering::Relaxed)
    }

    /// Tracks waiting for a measurement.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// A copy of `index` with each track's gain as measured, or `None`
    /// when every track has its gain already.
    pub(crate) fn with_gains(&self, index: &Index) -> Option<Index> {
        let entries = self.store.entries();
        let gain = |t: &Track| fresh(&entries, t).flatten().and_then(|m| gain_db(&m));
        if index.tracks().all(|t| t.gain_db == gain(t)) {
            return None;
        }
        let tracks = index
            .tracks()
            .map(|t| Track {
                gain_db: gain(t),
                ..Track::clone(t)
            })
            .collect();
        drop(entries);
        Some(index.with_tracks(tracks))
    }

    /// Wakes the measuring thread to measure what the index lacks.
    pub(crate) fn wake(&self) {
        let mut n = self.wake.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        self.woken.notify_all();
    }

    /// Files of `index` with no measurement of their current content.
    fn jobs(&self, index: &Index) -> Vec<Job> {
        let entries = self.store.entries();
        let mut jobs: Vec<Job> = index
            .tracks()
            .filter(|t| fresh(&entries, t).is_none())
            .filter_map(|t| match &t.source {
                Source::File(path, _) => Some(Job {
                    id: t.id.clone(),
                    path: path.clone(),
                    size: t.size,
                    modified: t.modified,
                }),
                Source::Memory(_) => None,
            })
            .collect();
        // In the library's order, so progress is easy to follow.
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        jobs
    }

    /// Waits until woken since `seen` (or shutdown); returns the wake count.
    fn wait(&self, seen: u64, cancel: &CancellationToken) -> u64 {
        let mut n = self.wake.lock().unwrap_or_else(|p| p.into_inner());
        while *n == seen && !cancel.is_cancelled() {
            n = self.woken.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n
    }
}

/// The measurement of `t`'s current content: `Some(None)` when it was
/// found not to be measurable, `None` when there is none (or the file
/// changed since). Files held in memory (the demo) are never measured.
fn fresh(entries: &HashMap<String, Entry>, t: &Track) -> Option<Option<measure::Measured>> {
    if matches!(t.source, Source::Memory(_)) {
        return Some(None);
    }
    entries
        .get(&t.id)
        .filter(|e| e.size == t.size && e.mtime_ns == mtime_ns(t.modified))
        .map(|e| e.measured)
}

/// Starts the measuring thread of `host`'s library, ended by `shutdown`
/// (the server's shutdown waits for it in `tasks`).
pub(crate) fn start<H: Host>(host: Arc<H>, tasks: &TaskTracker, shutdown: &CancellationToken) {
    if host.loudness().is_none() {
        return;
    }
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    let cancel = shutdown.clone();
    let worker = host.clone();
    let spawned = std::thread::Builder::new()
        .name("radio-loudness".into())
        .spawn(move || {
            let _done = done;
            run(&*worker, &cancel);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the loudness thread: tracks play without gain");
        return;
    }
    if let Some(l) = host.loudness() {
        l.wake();
    }
    let cancel = shutdown.clone();
    tasks.spawn(async move {
        cancel.cancelled().await;
        if let Some(l) = host.loudness() {
            l.wake();
        }
        // The thread ends within a few packets' decoding; an error only
        // says it has ended already.
        let _ = ended.await;
    });
}

/// The measuring thread: at each wake-up, measures the tracks of the index
/// that have no measurement, one at a time.
fn run<H: Host>(host: &H, cancel: &CancellationToken) {
    let Some(loudness) = host.loudness() else {
        return;
    };
    lower_priority();
    let mut seen = 0;
    loop {
        seen = loudness.wait(seen, cancel);
        if cancel.is_cancelled() {
            return;
        }
        let index = host.index();
        // Measurements a rescan's index lacks (made while it scanned).
        host.apply_gains();
        let jobs = loudness.jobs(&index);
        drop(index);
        if jobs.is_empty() {
            continue;
        }
        tracing::debug!(tracks = jobs.len(), "measuring loudness");
        loudness.pending.store(jobs.len(), Ordering::Relaxed);
        let (mut applied, mut saved) = (Instant::now(), Instant::now());
        let (mut done, mut failed) = (0usize, 0usize);
        for job in jobs {
            match measure_one(loudness, job, cancel) {
                Outcome::Measured => done += 1,
                Outcome::Unreadable => failed += 1,
                Outcome::Changed => {}
                Outcome::Cancelled => {
                    // What was measured is kept for the next start.
                    loudness.pending.store(0, Ordering::Relaxed);
                    save(host, loudness);
                    return;
                }
            }
            loudness.pending.fetch_sub(1, Ordering::Relaxed);
            if applied.elapsed() >= APPLY_EVERY {
                host.apply_gains();
                applied = Instant::now();
            }
            if saved.elapsed() >= SAVE_EVERY {
                save(host, loudness);
                saved = Instant::now();
            }
        }
        host.apply_gains();
        save(host, loudness);
        tracing::info!(
            measured = done,
            unreadable = failed,
            "loudness measured; those tracks now play at an even loudness"
        );
    }
}

/// What became of one file.
enum Outcome {
    Measured,
    /// It cannot be measured (or it is silent): it has no gain.
    Unreadable,
    /// It changed since the scan: the next scan gives it again.
    Changed,
    Cancelled,
}

/// Measures one file and records it.
fn measure_one(loudness: &Loudness, job: Job, cancel: &CancellationToken) -> Outcome {
    let now = std::fs::metadata(&job.path).ok();
    if now.is_some_and(|m| m.len() != job.size || m.modified().ok() != Some(job.modified)) {
        return Outcome::Changed;
    }
    let result = measure::measure(&job.path, cancel);
    let measured = match result {
        Ok(m) => Some(m).filter(|m| m.lufs.is_finite() && m.peak.is_finite()),
        Err(Failure::Cancelled) => return Outcome::Cancelled,
        Err(Failure::Unreadable(why)) => {
            tracing::debug!(track = %job.id, why, "cannot measure its loudness; it plays without gain");
            None
        }
    };
    loudness.measured.fetch_add(1, Ordering::Relaxed);
    let entry = Entry {
        size: job.size,
        mtime_ns: mtime_ns(job.modified),
        measured,
    };
    loudness.store.record(job.id, entry);
    match measured {
        Some(_) => Outcome::Measured,
        None => Outcome::Unreadable,
    }
}

/// Writes the cache file, keeping only the tracks of the current index.
fn save<H: Host>(host: &H, loudness: &Loudness) {
    let index = host.index();
    loudness.store.save(|id| index.get(id).is_some());
}

/// Lowers this thread's CPU priority, so that measuring yields to the
/// server's own threads.
#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: gettid and setpriority take and return plain integers; on
    // Linux a thread id given to PRIO_PROCESS names that thread only.
    let set = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE)
    };
    if set != 0 {
        tracing::debug!("cannot lower the loudness thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}
