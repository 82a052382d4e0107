//! Failure budgets for broadcast keys, across connections: a guesser who
//! opens a new connection for every few guesses, or spreads its guesses
//! for one station over many addresses, still runs out. Each client
//! address (IPv6: its /64) and each station has a budget of wrong keys a
//! minute; past it, every `start_broadcasting` with a key from that
//! address, or for that station, is refused (`rate_limited`, without the
//! key being looked at) for a lockout that doubles with each further one,
//! up to a cap. The per-connection lockout (more than 5 wrong keys in a
//! minute close the connection) stays besides.
//!
//! A failure is any refused `start_broadcasting` that gave a key: a wrong
//! key, or a key for a station that has none (the two get the same answer,
//! so a guesser cannot tell which names have keys; see
//! [`crate::server::refusal::Refusal::Unauthorized`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::StationName;
use crate::server::peer::limit_key;

/// Wrong keys a minute from one address before it is locked out.
pub(crate) const PER_ADDRESS: u32 = 5;
/// Wrong keys a minute for one station, from anywhere, before it is
/// locked out (to keys; its broadcaster keeps broadcasting).
pub(crate) const PER_STATION: u32 = 30;
/// The first lockout; each further one doubles it.
pub(crate) const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
/// The longest lockout of an address.
pub(crate) const MAX_ADDRESS_LOCKOUT: Duration = Duration::from_secs(60 * 60);
/// The longest lockout of a station (short: a guesser can lock out a
/// station's rightful broadcaster too, while it guesses).
pub(crate) const MAX_STATION_LOCKOUT: Duration = Duration::from_secs(5 * 60);
/// A budget clear of failures this long starts again from the first lockout.
const FORGIVE: Duration = Duration::from_secs(60 * 60);
/// Budgets kept at most, of each kind; beyond it the one used longest ago
/// is forgotten.
const MAX_TRACKED: usize = 65_536;
const WINDOW: Duration = Duration::from_secs(60);

/// Why a key attempt is refused before it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locked {
    /// Too many wrong keys from this address; for this long yet.
    Address(Duration),
    /// Too many wrong keys for this station; for this long yet.
    Station(Duration),
}

impl Locked {
    pub(crate) fn remaining(self) -> Duration {
        match self {
            Locked::Address(d) | Locked::Station(d) => d,
        }
    }
}

/// The budgets of every address and station.
pub(crate) struct KeyGuard {
    state: Mutex<(Budgets<IpAddr>, Budgets<StationName>)>,
}

impl Default for KeyGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyGuard {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new((
                Budgets::new(PER_ADDRESS, MAX_ADDRESS_LOCKOUT, MAX_TRACKED),
                Budgets::new(PER_STATION, MAX_STATION_LOCKOUT, MAX_TRACKED),
            )),
        }
    }

    /// Whether `client` may try a key for `station` now.
    pub(crate) fn check(&self, client: IpAddr, station: &StationName) -> Result<(), Locked> {
        let now = Instant::now();
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = st.0.locked(&limit_key(client), now) {
            return Err(Locked::Address(d));
        }
        if let Some(d) = st.1.locked(station, now) {
            return Err(Locked::Station(d));
        }
        Ok(())
    }

    /// Counts a failed key from `client` for `station`.
    pub(crate) fn fail(&self, client: IpAddr, station: &StationName) {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0.fail(limit_key(client), now);
        st.1.fail(station.clone(), now);
    }
}

/// One address's or station's record.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Failures in the current minute, and when it started.
    failures: u32,
    window: Instant,
    /// Locked until then (a past instant: not locked).
    until: Instant,
    /// Lockouts so far (the next lasts `FIRST_LOCKOUT * 2^lockouts`).
    lockouts: u32,
    /// The last failure.
    last: Instant,
    /// Its place in `order`.
    place: u64,
}

/// Failure budgets by key, the one used longest ago evicted when full.
#[derive(Debug)]
struct Budgets<K> {
    allowed: u32,
    max_lockout: Duration,
    max_tracked: usize,
    records: HashMap<K, Record>,
    order: BTreeMap<u64, K>,
    uses: u64,
}

impl<K: Hash + Eq + Clone> Budgets<K> {
    fn new(allowed: u32, max_lockout: Duration, max_tracked: usize) -> Self {
        Self {
            allowed,
            max_lockout,
            max_tracked: max_tracked.max(1),
            records: HashMap::new(),
            order: BTreeMap::new(),
            uses: 0,
        }
    }

    /// How long `key` stays locked out, if it is.
    fn locked(&self, key: &K, now: Instant) -> Option<Duration> {
        let r = self.records.get(key)?;
        (r.until > now).then(|| r.until - now)
    }

    fn fail(&mut self, key: K, now: Instant) {
        self.uses += 1;
        let use_ = self.uses;
        let mut r = match self.records.get(&key) {
            Some(r) => *r,
            None => {
                while self.records.len() >= self.max_tracked {
                    let Some((_, oldest)) = self.order.pop_first() else {
                        break;
                    };
                    self.records.remove(&oldest);
                }
                Record {
                    failures: 0,
                    window: now,
                    until: now,
                    lockouts: 0,
                    last: now,
                    place: use_,
                }
            }
        };
        self.order.remove(&r.place);
        self.order.insert(use_, key.clone());
        r.place = use_;
        if now.saturating_duration_since(r.last) >= FORGIVE {
            r.lockouts = 0;
        }
        if now.saturating_duration_since(r.window) >= WINDOW {
            r.failures = 0;
            r.window = now;
        }
        r.last = now;
        r.failures += 1;
        if r.failures > self.allowed {
            let lockout = FIRST_LOCKOUT
                .saturating_mul(1 << r.lockouts.min(16))
                .min(self.max_lockout);
            r.until = now + lockout;
            r.lockouts = r.lockouts.saturating_add(1);
            r.failures = 0;
            r.window = now;
        }
        self.records.insert(key, r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_with_backoff_and_evicts_the_oldest() {
        let t0 = Instant::now();
        let mut b: Budgets<u8> = Budgets::new(2, Duration::from_secs(100), 2);
        b.fail(1, t0);
        b.fail(1, t0);
        assert_eq!(b.locked(&1, t0), None);
        b.fail(1, t0);
        assert_eq!(b.locked(&1, t0), Some(FIRST_LOCKOUT));
        // After it, three more: twice as long.
        let t1 = t0 + FIRST_LOCKOUT;
        assert_eq!(b.locked(&1, t1), None);
        for _ in 0..3 {
            b.fail(1, t1);
        }
        assert_eq!(b.locked(&1, t1), Some(FIRST_LOCKOUT * 2));
        // Then the cap.
        let t2 = t1 + FIRST_LOCKOUT * 2;
        for _ in 0..3 {
            b.fail(1, t2);
        }
        assert_eq!(b.locked(&1, t2), Some(Duration::from_secs(100)));
        // Failures a minute apart stay within the budget.
        let mut slow: Budgets<u8> = Budgets::new(2, Duration::from_secs(100), 2);
        for i in 0..10 {
            let t = t0 + WINDOW * i;
            slow.fail(1, t);
            assert_eq!(slow.locked(&1, t), None);
        }
        // Full: a new key evicts the one used longest ago, not all.
        b.fail(2, t2);
        b.fail(3, t2);
        assert_eq!(b.records.len(), 2);
        assert!(b.records.contains_key(&2) && b.records.contains_key(&3));
    }
}
