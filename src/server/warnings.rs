//! Warnings that clients can cause, aggregated: at most one line per reason
//! per [`WINDOW`], with how many times it happened, so that `radio serve`
//! at `info` writes a bounded number of lines a second whatever its clients
//! do (refused upgrades, slow clients, floods, wrong keys).
//!
//! The hot path is one atomic add and one atomic load; only the event that
//! finds the window over takes the line (a compare-and-swap) and writes it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One line per reason per this long, at most.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// Why a client was refused or closed: one aggregated line each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Reason {
    ServerFull,
    AddressFull,
    Origin,
    SlowClient,
    KeepaliveTimeout,
    Flood,
    TooBig,
    KeyLockout,
    WrongKey,
    KeyBudget,
    SessionRate,
    BodyTimeout,
    SlowHandling,
    TlsHandshake,
    TlsRecord,
    UnplayableTrack,
    MediaUnreadable,
    MediaOutOfFiles,
    AcceptOutOfFiles,
}

impl Reason {
    const ALL: [Reason; 19] = [
        Reason::ServerFull,
        Reason::AddressFull,
        Reason::Origin,
        Reason::SlowClient,
        Reason::KeepaliveTimeout,
        Reason::Flood,
        Reason::TooBig,
        Reason::KeyLockout,
        Reason::WrongKey,
        Reason::KeyBudget,
        Reason::SessionRate,
        Reason::BodyTimeout,
        Reason::SlowHandling,
        Reason::TlsHandshake,
        Reason::TlsRecord,
        Reason::UnplayableTrack,
        Reason::MediaUnreadable,
        Reason::MediaOutOfFiles,
        Reason::AcceptOutOfFiles,
    ];

    fn sentence(self) -> &'static str {
        match self {
            Reason::ServerFull => "connections refused with 503: --max-connections reached",
            Reason::AddressFull => "connections refused with 429: --max-connections-per-ip reached",
            Reason::Origin => {
                "requests refused with 403 or 421: a page of another origin \
                 (--allowed-origins) or a host name the server does not answer to \
                 (--allowed-hosts)"
            }
            Reason::SlowClient => {
                "clients closed (1008) that accepted no bytes for the write timeout"
            }
            Reason::KeepaliveTimeout => {
                "clients closed that answered no ping for the keepalive timeout"
            }
            Reason::Flood => "clients closed (1008) that kept flooding past the rate limit",
            Reason::TooBig => "clients closed (1009) for a message over --max-message-bytes",
            Reason::KeyLockout => {
                "connections closed (1008) after more than 5 wrong broadcast keys in a minute"
            }
            Reason::WrongKey => {
                "start_broadcasting refused for a key that is wrong or for a station without one"
            }
            Reason::KeyBudget => {
                "start_broadcasting refused unchecked: too many wrong keys from one address or \
                 for one station (locked out with backoff)"
            }
            Reason::SessionRate => {
                "new sessions refused with 429: more than --session-rate a minute from one address"
            }
            Reason::BodyTimeout => {
                "requests answered 408: the body did not arrive within --handshake-timeout"
            }
            Reason::SlowHandling => "requests took over 100 ms to handle",
            Reason::TlsHandshake => "TLS handshakes failed or timed out",
            Reason::TlsRecord => "TLS connections ended by a bad record or a fatal alert",
            Reason::UnplayableTrack => {
                "tracks every listener of a station could not play; its broadcaster is told \
                 (track_failed), a station the server runs plays its next entry"
            }
            Reason::MediaUnreadable => {
                "media requests answered 500: the track's file cannot be read"
            }
            Reason::MediaOutOfFiles => {
                "media requests answered 503 (Retry-After: 1): the process is out of file \
                 descriptors; raise its limit (ulimit -n, LimitNOFILE=) or run several nodes"
            }
            Reason::AcceptOutOfFiles => {
                "connections left waiting in the listen queue: accept failed, the process is \
                 out of file descriptors; raise its limit (ulimit -n, LimitNOFILE=) or run \
                 several nodes"
            }
        }
    }
}

struct Slot {
    count: AtomicU64,
    /// When this reason's last line was written, in ms since `start`
    /// (`u64::MAX`: never).
    last_ms: AtomicU64,
    /// The most recent detail (a peer, a station) for the next line.
    detail: Mutex<String>,
}

/// The server's aggregated warnings.
pub(crate) struct Warnings {
    start: Instant,
    slots: [Slot; Reason::ALL.len()],
}

impl Default for Warnings {
    fn default() -> Self {
        Self::new()
    }
}

impl Warnings {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            slots: std::array::from_fn(|_| Slot {
                count: AtomicU64::new(0),
                last_ms: AtomicU64::new(u64::MAX),
                detail: Mutex::new(String::new()),
            }),
        }
    }

    /// Counts one event; writes the line when the reason's window is over.
    pub(crate) fn note(&self, reason: Reason) {
        self.note_with(reason, String::new);
    }

    /// Like [`Warnings::note`], with a detail (such as the peer) that the
    /// line names as the latest; made only when it is needed.
    pub(crate) fn note_with(&self, reason: Reason, detail: impl FnOnce() -> String) {
        let slot = &self.slots[reason as usize];
        slot.count.fetch_add(1, Ordering::Relaxed);
        let now = self.start.elapsed().as_millis() as u64;
        let last = slot.last_ms.load(Ordering::Relaxed);
        let window = WINDOW.as_millis() as u64;
        if last != u64::MAX && now.saturating_sub(last) < window {
            // Keep the newest detail for the line that will follow.
            if let Ok(mut d) = slot.detail.try_lock() {
                let new = detail();
                if !new.is_empty() {
                    *d = new;
                }
            }
            return;
        }
        if slot
            .last_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let count = slot.count.swap(0, Ordering::Relaxed);
        let latest = detail();
        let latest = if latest.is_empty() {
            std::mem::take(&mut *slot.detail.lock().unwrap_or_else(|p| p.into_inner()))
        } else {
            latest
        };
        let since = if last == u64::MAX {
            "since start".to_owned()
        } else {
            format!("in the last {}s", now.saturating_sub(last).div_ceil(1000))
        };
        if latest.is_empty() {
            tracing::warn!(count, "{} ({count} {since})", reason.sentence());
        } else {
            tracing::warn!(count, latest = %latest, "{} ({count} {since}; latest: {latest})", reason.sentence());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_event() {
        let w = Warnings::new();
        for _ in 0..1000 {
            w.note(Reason::Flood);
        }
        // The first was written at once; the other 999 wait for the window.
        assert_eq!(
            w.slots[Reason::Flood as usize]
                .count
                .load(Ordering::Relaxed),
            999
        );
        assert_eq!(
            w.slots[Reason::SlowClient as usize]
                .count
                .load(Ordering::Relaxed),
            0
        );
    }
}
