//! The per-connection rate limit on inbound messages: a token bucket of
//! `--rate-limit` a second with bursts of twice that, and a [`Verdict`] per
//! message that also says when a client has flooded long enough to be closed.

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
