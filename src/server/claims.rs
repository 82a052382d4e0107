//! Who may claim how many stations: each client address's share of the
//! stations live or in their grace period (`--max-stations-per-ip`), and
//! its rate of claims (`--claim-rate`), so that one address cannot take the
//! slots of `--max-stations` that every broadcaster shares. Counted on the
//! node that holds the broadcaster's connection, whatever the backend
//! (IPv6 by its /64, as every per-address limit); the server's own stations
//! (`--station`) never pass here.
//!
//! A claim takes a [`Share`] of its address before the backend is asked,
//! and the connection keeps it with the hold as a [`Broadcast`]. A station
//! stopped or taken over gives its share back at once. When the connection
//! goes away while it holds a station, the station enters its grace period
//! if it had an update, and its share stays counted against the address
//! until that period ends or the station is resumed; a station that never
//! had an update has no grace period, so its share goes at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::StationName;
use crate::server::backend::OwnedStation as _;
use crate::server::backend::any::AnyOwned;
use crate::server::metrics::Metrics;
use crate::server::metrics::limits::Limit;
use crate::server::peer::limit_key;
use crate::server::ratelimit::AddressBuckets;
use crate::server::refusal::Refusal;

/// Addresses whose claim rate is tracked at most; beyond it the one used
/// longest ago is forgotten (its bucket had the most time to refill).
const MAX_TRACKED: usize = 65_536;

/// The per-address limits on claiming stations; cheap to clone.
#[derive(Clone)]
pub(crate) struct Claims(Arc<Inner>);

struct Inner {
    /// `--max-stations-per-ip` (0: no limit).
    max_per_ip: usize,
    /// `--claim-rate`: claims a minute per address (0: no limit).
    rate_per_minute: u32,
    /// How long a station waits for its broadcaster to resume.
    grace: Duration,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    state: Mutex<State>,
}

struct State {
    /// Stations live or in their grace period, by address (its limit key).
    held: HashMap<IpAddr, usize>,
    /// Stations in their grace period: the address counted for each, and
    /// the grace period's epoch (a newer one supersedes its timer).
    grace: HashMap<StationName, (IpAddr, u64)>,
    epochs: u64,
    rate: AddressBuckets,
}

impl State {
    fn release(&mut self, ip: IpAddr) {
        if let Some(n) = self.held.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.held.remove(&ip);
            }
        }
    }
}

/// What the limits are, from `radio serve`'s flags.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClaimLimits {
    pub max_per_ip: usize,
    pub rate_per_minute: u32,
    pub grace: Duration,
}

impl Claims {
    pub(crate) fn new(
        limits: ClaimLimits,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let per_minute = f64::from(limits.rate_per_minute);
        Self(Arc::new(Inner {
            max_per_ip: limits.max_per_ip,
            rate_per_minute: limits.rate_per_minute,
            grace: limits.grace,
            metrics,
            tasks,
            shutdown,
            state: Mutex::new(State {
                held: HashMap::new(),
                grace: HashMap::new(),
                epochs: 0,
                // Bursts of a minute's worth, refilled evenly.
                rate: AddressBuckets::new(per_minute / 60.0, per_minute, MAX_TRACKED),
            }),
        }))
    }

    /// Takes a share of `client`'s stations for a claim of `station`, or
    /// says which limit refuses it. Resuming a station this address left
    /// in its grace period takes no second share.
    pub(crate) fn admit(&self, client: IpAddr, station: &StationName) -> Result<Share, Refusal> {
        let inner = &self.0;
        let ip = limit_key(client);
        let refused = {
            let mut st = inner.lock();
            let mut held = st.held.get(&ip).copied().unwrap_or(0);
            if st.grace.get(station).is_some_and(|(by, _)| *by == ip) {
                held = held.saturating_sub(1);
            }
            if inner.max_per_ip > 0 && held >= inner.max_per_ip {
                Some((
                    Limit::StationShare,
                    Refusal::AddressStations(inner.max_per_ip),
                ))
            } else if inner.rate_per_minute > 0 && !st.rate.take(ip, Instant::now()) {
                Some((Limit::ClaimRate, Refusal::ClaimRate(inner.rate_per_minute)))
            } else {
                *st.held.entry(ip).or_insert(0) += 1;
                None
            }
        };
        if let Some((limit, refusal)) = refused {
            inner.metrics.limits.refused(limit);
            return Err(refusal);
        }
        Ok(Share {
            inner: inner.clone(),
            ip,
            station: station.clone(),
            counted: true,
        })
    }

    /// Stations counted against `client`'s address now.
    #[cfg(test)]
    fn held_by(&self, client: IpAddr) -> usize {
        let st = self.0.lock();
        st.held.get(&limit_key(client)).copied().unwrap_or(0)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere mid-update of plain
        // counts; they are still fit to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One station counted against an address; given back on drop.
pub(crate) struct Share {
    inner: Arc<Inner>,
    ip: IpAddr,
    station: StationName,
    /// False once the count has moved to the grace period's record.
    counted: bool,
}

impl Share {
    /// The backend granted the claim: the station is out of any grace
    /// period, so a share still held for that period goes.
    fn claimed(&self) {
        let mut st = self.inner.lock();
        if let Some((ip, _)) = st.grace.remove(&self.station) {
            st.release(ip);
        }
    }

    /// The station's broadcaster went away and the station waits in its
    /// grace period: it stays counted against the address until the period
    /// ends (or the station is resumed: [`Share::claimed`]).
    fn into_grace(mut self) {
        self.counted = false;
        let inner = self.inner.clone();
        let station = self.station.clone();
        let epoch = {
            let mut st = inner.lock();
            st.epochs += 1;
            let epoch = st.epochs;
            if let Some((ip, _)) = st.grace.insert(station.clone(), (self.ip, epoch)) {
                st.release(ip);
            }
            epoch
        };
        let (grace, shutdown) = (inner.grace, inner.shutdown.clone());
        inner.tasks.clone().spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = shutdown.cancelled() => return,
            }
            let mut st = inner.lock();
            if let Some(&(ip, e)) = st.grace.get(&station) {
                if e == epoch {
                    st.grace.remove(&station);
                    st.release(ip);
                }
            }
        });
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        if self.counted {
            self.inner.lock().release(self.ip);
        }
    }
}

/// A station a connection broadcasts: the backend's hold and the share of
/// the address it counts against. Reads as the hold.
pub(crate) struct Broadcast {
    hold: AnyOwned,
    share: Option<Share>,
}

impl Broadcast {
    /// A hold the backend just granted for `share`'s claim.
    pub(crate) fn new(hold: AnyOwned, share: Share) -> Self {
        share.claimed();
        Self {
            hold,
            share: Some(share),
        }
    }

    /// The station was stopped, or taken over: its share goes now.
    pub(crate) fn end(mut self) {
        self.share = None;
    }
}

impl Deref for Broadcast {
    type Target = AnyOwned;

    fn deref(&self) -> &AnyOwned {
        &self.hold
    }
}

impl DerefMut for Broadcast {
    fn deref_mut(&mut self) -> &mut AnyOwned {
        &mut self.hold
    }
}

impl Drop for Broadcast {
    /// The connection went away holding the station: it waits in its grace
    /// period if it had an update (the backends' rule too), and its share
    /// with it.
    fn drop(&mut self) {
        if let Some(share) = self.share.take() {
            if self.hold.current().is_some() {
                share.into_grace();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> StationName {
        StationName::new(s).expect("a valid name")
    }

    fn claims(max_per_ip: usize, rate_per_minute: u32) -> Claims {
        let limits = ClaimLimits {
            max_per_ip,
            rate_per_minute,
            grace: Duration::from_secs(10),
        };
        Claims::new(
            limits,
            Arc::new(Metrics::new()),
            TaskTracker::new(),
            CancellationToken::new(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn shares_are_per_address_and_grace_counts_until_it_ends() {
        let c = claims(2, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let a_too: IpAddr = "2001:db8::1".parse().unwrap();
        let a_too_64: IpAddr = "2001:db8::2".parse().unwrap();
        let one = c.admit(a, &name("one")).expect("first");
        let two = c.admit(a, &name("two")).expect("second");
        assert_eq!(
            c.admit(a, &name("three")).err(),
            Some(Refusal::AddressStations(2))
        );
        assert!(c.admit("192.0.2.2".parse().unwrap(), &name("x")).is_ok());
        drop(one);
        assert_eq!(c.held_by(a), 1);
        // Two's broadcaster leaves during its grace period: still counted,
        // but resuming it from the same address takes no second share.
        two.into_grace();
        assert_eq!(c.held_by(a), 1);
        let _other = c.admit(a, &name("other")).expect("room for one");
        let resumed = c.admit(a, &name("two")).expect("a resume");
        resumed.claimed();
        assert_eq!(c.held_by(a), 2);
        drop(resumed);
        // A grace period that ends gives its share back.
        let gone = c.admit(a, &name("gone")).expect("room again");
        gone.into_grace();
        assert_eq!(c.held_by(a), 2);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(c.held_by(a), 1);
        // IPv6 counts by /64.
        let _v6 = c.admit(a_too, &name("v6a")).expect("first of the /64");
        let _v6b = c.admit(a_too_64, &name("v6b")).expect("second of the /64");
        assert_eq!(
            c.admit(a_too, &name("v6c")).err(),
            Some(Refusal::AddressStations(2))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn claims_are_rate_limited_per_address() {
        let c = claims(0, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..3 {
            drop(
                c.admit(a, &name(&format!("s{i}")))
                    .expect("within the burst"),
            );
        }
        assert_eq!(c.admit(a, &name("s")).err(), Some(Refusal::ClaimRate(3)));
        assert!(c.admit("192.0.2.9".parse().unwrap(), &name("s")).is_ok());
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(c.admit(a, &name("s")).is_ok(), "a token every 20 s");
    }
}
