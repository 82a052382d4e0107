//! Every download's first bytes before any download's rest.
//!
//! A listener can start playing once it holds the first [`HEAD`] bytes of
//! what it asked for; the rest it needs only as it plays. At a track change
//! thousands of downloads begin at once, and if each is sent whole, in
//! turns, the listeners served first take their files' tails while the
//! last still wait for their heads: the last to start waits for nearly every
//! byte of the wave. So a download that has sent its head waits, before each
//! further turn, until no download is still sending its head, or at most
//! [`TAIL_WAIT`]: the wave's heads go first, and a tail still moves at
//! least a turn per wait (a floor many times any audio's bit rate) however
//! many downloads keep starting.
//!
//! Except when connections wait for a descriptor: a held tail keeps its
//! socket open, and out of descriptors the downloads that would end are
//! what frees them for the connections waiting in the listen queue. Then
//! no tail waits, until a connection is accepted again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// What a player must hold to start: the bytes of a download sent ahead
/// of other downloads' tails.
pub(crate) const HEAD: u64 = 256 << 10;

/// The longest a tail waits for the heads before its next turn.
const TAIL_WAIT: Duration = Duration::from_millis(250);

/// The downloads still sending their heads.
pub(crate) struct Heads {
    sending: AtomicUsize,
    clear: Notify,
    /// The longest a tail waits for them.
    wait: Duration,
    /// The last accept found the process out of descriptors.
    starved: AtomicBool,
}

impl Default for Heads {
    fn default() -> Self {
        Self::new(TAIL_WAIT)
    }
}

/// A download's place among the heads, until it is dropped.
pub(crate) struct Head<'a>(&'a Heads);

impl Heads {
    pub(crate) fn new(wait: Duration) -> Self {
        Self {
            sending: AtomicUsize::new(0),
            clear: Notify::new(),
            wait,
            starved: AtomicBool::new(false),
        }
    }

    /// The accept loop found the process out of descriptors (`true`), or
    /// accepted a connection again (`false`).
    pub(crate) fn set_starved(&self, starved: bool) {
        // Read first: every accept calls this, and the flag seldom changes.
        if self.starved.load(Ordering::Relaxed) != starved {
            self.starved.store(starved, Ordering::Relaxed);
            if starved {
                // Tails waiting now go on.
                self.clear.notify_waiters();
            }
        }
    }

    /// A download begins its head.
    pub(crate) fn begin(&self) -> Head<'_> {
        self.sending.fetch_add(1, Ordering::AcqRel);
        Head(self)
    }

    /// Downloads sending their heads now.
    pub(crate) fn sending(&self) -> usize {
        self.sending.load(Ordering::Acquire)
    }

    /// Waits until no download is sending its head, at most the tail wait;
    /// not at all while the process is out of descriptors.
    pub(crate) async fn clear(&self) {
        if self.sending() == 0 || self.starved.load(Ordering::Relaxed) {
            return;
        }
        let notified = self.clear.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the count is read: a head that ends in between
        // still wakes this.
        notified.as_mut().enable();
        if self.sending() == 0 {
            return;
        }
        let _ = tokio::time::timeout(self.wait, notified).await;
    }
}

impl Drop for Head<'_> {
    fn drop(&mut self) {
        if self.0.sending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.clear.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tail waits for the last head to end, and no longer.
    #[tokio::test(start_paused = true)]
    async fn a_tail_waits_until_the_heads_end() {
        let heads = Heads::new(Duration::from_secs(3600));
        let start = tokio::time::Instant::now();
        let first = heads.begin();
        let second = heads.begin();
        let waiting = async {
            heads.clear().await;
            heads.sending()
        };
        let ending = async {
            // Time passes (paused: only when every task waits) and both end.
            tokio::task::yield_now().await;
            drop(first);
            tokio::task::yield_now().await;
            assert_eq!(heads.sending(), 1);
            drop(second);
        };
        let (left, ()) = tokio::join!(waiting, ending);
        assert_eq!(left, 0);
        assert!(start.elapsed() < Duration::from_secs(3600));
    }

    /// With no head being sent a tail goes on at once; with one that never
    /// ends, after the wait.
    #[tokio::test(start_paused = true)]
    async fn a_tail_waits_at_most_the_wait() {
        let heads = Heads::new(Duration::from_millis(250));
        let start = tokio::time::Instant::now();
        heads.clear().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        let _stuck = heads.begin();
        heads.clear().await;
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        // Out of descriptors, no tail waits; once a connection is accepted
        // again, they do.
        heads.set_starved(true);
        heads.clear().await;
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        heads.set_starved(false);
        heads.clear().await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }
}
