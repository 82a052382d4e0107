//! The per-connection rate limit on inbound messages: a token bucket of
//! `--rate-limit` a second with bursts of twice that, and a [`Verdict`] per
//! message that also says when a client has flooded long enough to be closed.
//! Also [`AddressBuckets`]: one token bucket per client address (IPv6:
//! per /64, /56 and /48, nested), for limits that a client could otherwise
//! reset by opening a new connection.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use tokio::time::Instant;

use crate::server::peer::{Block, limit_blocks};

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
/// `per_second`; an IPv6 address takes a token from its /64, its /56 and
/// its /48 alike, whose buckets are [`crate::server::peer::NESTED`] times
/// as large and as fast, and is refused when any of them is empty. At most
/// `max_tracked` buckets are kept; a new one beyond that evicts the bucket
/// used longest ago (which has refilled the longest, so forgetting it costs
/// the least), never every budget at once.
#[derive(Debug)]
pub(crate) struct AddressBuckets {
    per_second: f64,
    capacity: f64,
    max_tracked: usize,
    /// Tokens left, when they were counted, and the block's place in `order`.
    buckets: HashMap<Block, (f64, Instant, u64)>,
    /// Blocks by last use, oldest first.
    order: BTreeMap<u64, Block>,
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

    /// Takes one token from each of `ip`'s buckets at `now`; false (and
    /// none taken) when one of them is empty.
    pub(crate) fn take(&mut self, ip: IpAddr, now: Instant) -> bool {
        let mut blocks = [None; 3];
        let mut taken = true;
        for (slot, (block, times)) in blocks.iter_mut().zip(limit_blocks(ip)) {
            let tokens = self.refill(block, f64::from(times), now);
            taken &= tokens >= 1.0;
            *slot = Some(block);
        }
        if taken {
            for block in blocks.into_iter().flatten() {
                if let Some(b) = self.buckets.get_mut(&block) {
                    b.0 -= 1.0;
                }
            }
        }
        taken
    }

    /// `block`'s tokens at `now` (a new block starts full), recorded as
    /// counted then and used last.
    fn refill(&mut self, block: Block, times: f64, now: Instant) -> f64 {
        self.uses += 1;
        let use_ = self.uses;
        let capacity = self.capacity * times;
        let (tokens, at, place) = match self.buckets.get(&block) {
            Some(&b) => b,
            None => {
                while self.buckets.len() >= self.max_tracked {
                    let Some((_, oldest)) = self.order.pop_first() else {
                        break;
                    };
                    self.buckets.remove(&oldest);
                }
                (capacity, now, use_)
            }
        };
        self.order.remove(&place);
        self.order.insert(use_, block);
        let refill = now.saturating_duration_since(at).as_secs_f64() * self.per_second * times;
        let tokens = (tokens + refill).min(capacity);
        self.buckets.insert(block, (tokens, now, use_));
        tokens
    }

    /// Buckets tracked now.
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

    #[test]
    fn an_ipv6_48_is_not_65536_budgets() {
        let t0 = Instant::now();
        // Host `h` of /64 number `n` of one /48.
        let ip = |n: u16, h: u16| IpAddr::from([0x2001, 0xdb8, 7, n, 0, 0, 0, h]);
        let mut b = AddressBuckets::new(0.0, 2.0, 1000);
        // A /64's hosts share its 2.
        assert!(b.take(ip(0, 1), t0));
        assert!(b.take(ip(0, 2), t0));
        assert!(!b.take(ip(0, 3), t0), "the /64 is empty");
        // Other /64s of the same /56 share its 8 (2 of them already used).
        let taken = (1..=255).filter(|&n| b.take(ip(n, 1), t0)).count();
        assert_eq!(taken, 6, "the /56 holds 4 x 2");
        // The /48 holds 16 x 2, however many /56s it is cut into.
        let taken = (1..=255u16)
            .flat_map(|s| [s << 8, (s << 8) | 1])
            .filter(|&n| b.take(ip(n, 1), t0))
            .count();
        assert_eq!(taken, 32 - 8, "the /48 holds 16 x 2");
        // Another /48 has its own.
        assert!(b.take(IpAddr::from([0x2001, 0xdb8, 8, 0, 0, 0, 0, 1]), t0));
        // A refused take takes nothing: the /64 of a full /56 keeps its 2.
        let mut c = AddressBuckets::new(0.0, 1.0, 1000);
        assert!(c.take(ip(0, 1), t0));
        for n in 1..4 {
            assert!(c.take(ip(n, 1), t0));
        }
        assert!(!c.take(ip(4, 1), t0), "the /56 is empty");
        assert!(!c.take(ip(4, 1), t0));
        assert_eq!(c.buckets[&limit_blocks(ip(4, 1)).next().unwrap().0].0, 1.0);
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
