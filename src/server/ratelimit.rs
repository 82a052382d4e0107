//! The per-connection rate limit on inbound messages: a token bucket of
//! `--rate-limit` a second with bursts of twice that, and a [`Verdict`] per
//! message that also says when a client has flooded long enough to be closed.
//! Also [`AddressBuckets`]: one token bucket per client address, for limits
//! that a client could otherwise reset by opening a new connection.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use tokio::time::Instant;

/// What to do with one inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limit: handle it.
    Allow,
    /// Over the limit: answer `rate_limited` and drop it.
    Refuse,
    /// Refused more than a burst's worth since the bucket was last full:
    /// close the connection (1008).
    Disconnect,
}

/// Token bucket over inbound messages: `rate` a second, bursts of `2 * rate`.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
    /// Messages refused since the bucket was last full.
    strikes: u32,
}

impl RateLimiter {
    pub(crate) fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            capacity: rate * 2.0,
            tokens: rate * 2.0,
            last: Instant::now(),
            strikes: 0,
        }
    }

    /// Takes one message's token.
    pub(crate) fn check(&mut self) -> Verdict {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.last = now;
        self.tokens = (self.tokens + refill).min(self.capacity);
        if self.tokens >= self.capacity {
            self.strikes = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Verdict::Allow
        } else {
            self.strikes += 1;
            if f64::from(self.strikes) > self.capacity {
                Verdict::Disconnect
            } else {
                Verdict::Refuse
            }
        }
    }
}

/// A token bucket per client address: `capacity` tokens, refilled at
/// `per_second`. At most `max_tracked` addresses are kept; a new one beyond
/// that evicts the address used longest ago (whose bucket has refilled the
/// longest, so forgetting it costs the least), never every budget at once.
#[derive(Debug)]
pub(crate) struct AddressBuckets {
    per_second: f64,
    capacity: f64,
    max_tracked: usize,
    /// Tokens left, when they were counted, and the address's place in `order`.
    buckets: HashMap<IpAddr, (f64, Instant, u64)>,
    /// Addresses by last use, oldest first.
    order: BTreeMap<u64, IpAddr>,
    uses: u64,
}

impl AddressBuckets {
    pub(crate) fn new(per_second: f64, capacity: f64, max_tracked: usize) -> Self {
        Self {
            per_second,
            capacity: capacity.max(1.0),
            max_tracked: max_tracked.max(1),
            buckets: HashMap::new(),
            order: BTreeMap::new(),
            uses: 0,
        }
    }

    /// Takes one token from `ip`'s bucket at `now`; false when it is empty.
    pub(crate) fn take(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.uses += 1;
        let use_ = self.uses;
        let (tokens, at, place) = match self.buckets.get(&ip) {
            Some(&b) => b,
            None => {
                while self.buckets.len() >= self.max_tracked {
                    let Some((_, oldest)) = self.order.pop_first() else {
                        break;
                    };
                    self.buckets.remove(&oldest);
                }
                (self.capacity, now, use_)
            }
        };
        self.order.remove(&place);
        self.order.insert(use_, ip);
        let refill = now.saturating_duration_since(at).as_secs_f64() * self.per_second;
        let tokens = (tokens + refill).min(self.capacity);
        let (left, taken) = if tokens >= 1.0 {
            (tokens - 1.0, true)
        } else {
            (tokens, false)
        };
        self.buckets.insert(ip, (left, now, use_));
        taken
    }

    /// Addresses tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn per_address_buckets_refill_and_evict_the_oldest() {
        let t0 = Instant::now();
        let ip = |i: u8| IpAddr::from([192, 0, 2, i]);
        let mut b = AddressBuckets::new(1.0, 3.0, 2);
        for _ in 0..3 {
            assert!(b.take(ip(1), t0));
        }
        assert!(!b.take(ip(1), t0), "empty");
        assert!(b.take(ip(2), t0), "another address has its own");
        assert!(b.take(ip(1), t0 + Duration::from_secs(1)), "refilled one");
        assert!(!b.take(ip(1), t0 + Duration::from_secs(1)));
        // A third address evicts the one used longest ago (2), not 1.
        assert!(b.take(ip(3), t0 + Duration::from_secs(1)));
        assert_eq!(b.tracked(), 2);
        assert!(!b.take(ip(1), t0 + Duration::from_secs(1)), "1 was kept");
        assert!(b.take(ip(2), t0 + Duration::from_secs(1)), "2 starts full");
    }

    #[tokio::test(start_paused = true)]
    async fn allows_bursts_then_strikes_out() {
        let mut rl = RateLimiter::new(10);
        for _ in 0..20 {
            assert_eq!(rl.check(), Verdict::Allow);
        }
        for _ in 0..20 {
            assert_eq!(rl.check(), Verdict::Refuse);
        }
        assert_eq!(rl.check(), Verdict::Disconnect);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(rl.check(), Verdict::Allow);
    }
}
