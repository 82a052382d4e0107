//! Who gets a connection: `--max-connections` over every accepted
//! connection (HTTP and WebSocket alike) and `--max-connections-per-ip`
//! per client address. An [`Admission`] is taken when a connection is
//! accepted and travels with it, through a WebSocket upgrade, until it
//! closes; its `Drop` gives both back.
//!
//! An IPv6 client is counted in its /64, its /56 and its /48, which may
//! hold 1, 4 and 16 times `--max-connections-per-ip`
//! ([`crate::server::peer::NESTED`]): one site cannot take 65,536 times the
//! limit by spreading over its /64s.
//!
//! A connection from a trusted proxy is not counted against the proxy's
//! address: its client is known only once its request is read, and the
//! WebSocket it upgrades to is counted against that client then. Its plain
//! HTTP requests are each counted against the client they are for while
//! they last ([`Gate::count_request`]): a proxy carries many clients'
//! requests over one connection, one after another, so the connection
//! cannot be counted against any one of them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::server::metrics::Metrics;
use crate::server::peer::{Block, limit_blocks};
use crate::server::warnings::{Reason, Warnings};

/// A connection's admission, until its WebSocket upgrade takes it.
pub(crate) type Held = Arc<Mutex<Option<Admission>>>;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// `--max-connections` (503).
    Server,
    /// `--max-connections-per-ip` (429).
    ThisAddress,
}

impl Full {
    /// The HTTP status that refuses it.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Full::Server => StatusCode::SERVICE_UNAVAILABLE,
            Full::ThisAddress => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The sentence the client reads.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Full::Server => "server full: too many connections; try again later or another node",
            Full::ThisAddress => {
                "too many connections from your address (--max-connections-per-ip); \
                 close some and try again"
            }
        }
    }

    /// Counts the refusal of a connection from `client`.
    pub(crate) fn count(self, metrics: &Metrics, warnings: &Warnings, client: IpAddr) {
        let reason = match self {
            Full::Server => {
                metrics.connections_refused.inc();
                Reason::ServerFull
            }
            Full::ThisAddress => {
                metrics.connections_refused_per_ip.inc();
                Reason::AddressFull
            }
        };
        warnings.note_with(reason, || client.to_string());
    }
}

/// The connection limits and their counts.
pub(crate) struct Gate {
    permits: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
}

/// Open connections per client address (IPv6: per /64, /56 and /48).
struct PerIp {
    max: usize,
    open: Mutex<HashMap<Block, usize>>,
}

/// One admitted connection's place; given back on drop.
pub(crate) struct Admission {
    _permit: OwnedSemaphorePermit,
    ip: Option<IpSlot>,
}

/// A proxied request counted against its client's address, until dropped.
pub(crate) struct RequestSlot {
    _slot: IpSlot,
}

/// One connection counted against an address's blocks.
struct IpSlot {
    per_ip: Arc<PerIp>,
    blocks: [Option<Block>; 3],
}

impl Gate {
    /// `max_per_ip` 0 means no per-address limit.
    pub(crate) fn new(max_connections: usize, max_per_ip: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_connections)),
            per_ip: Arc::new(PerIp {
                max: max_per_ip,
                open: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Admits a connection from `ip` (`None`: a trusted proxy, counted
    /// later with [`Admission::count_client`]).
    pub(crate) fn admit(&self, ip: Option<IpAddr>) -> Result<Admission, Full> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full::Server)?;
        let ip = match ip {
            Some(ip) => Some(self.per_ip.clone().take(ip).ok_or(Full::ThisAddress)?),
            None => None,
        };
        Ok(Admission {
            _permit: permit,
            ip,
        })
    }

    /// Counts one request a trusted proxy forwards for `ip` against that
    /// address, as a connection of its own, until the returned slot is
    /// dropped (when its response has been sent).
    pub(crate) fn count_request(&self, ip: IpAddr) -> Result<RequestSlot, Full> {
        (self.per_ip.clone().take(ip))
            .map(|slot| RequestSlot { _slot: slot })
            .ok_or(Full::ThisAddress)
    }

    /// Connections open from `ip` now (IPv6: from its /64).
    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> usize {
        let Some((block, _)) = limit_blocks(ip).next() else {
            return 0;
        };
        self.per_ip.lock().get(&block).copied().unwrap_or(0)
    }
}

impl PerIp {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Block, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a connection in each of `ip`'s blocks, or in none when one
    /// of them is full.
    fn take(self: Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut blocks = [None; 3];
        if self.max > 0 {
            let mut open = self.lock();
            for (slot, (block, times)) in blocks.iter_mut().zip(limit_blocks(ip)) {
                let max = self.max.saturating_mul(times as usize);
                if open.get(&block).copied().unwrap_or(0) >= max {
                    return None;
                }
                *slot = Some(block);
            }
            for block in blocks.iter().flatten() {
                *open.entry(*block).or_insert(0) += 1;
            }
        }
        Some(IpSlot {
            per_ip: self,
            blocks,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if self.per_ip.max == 0 {
            return;
        }
        let mut open = self.per_ip.lock();
        for block in self.blocks.iter().flatten() {
            if let Some(n) = open.get_mut(block) {
                *n -= 1;
                if *n == 0 {
                    open.remove(block);
                }
            }
        }
    }
}

impl Admission {
    /// Counts a proxied connection against its client's address, once its
    /// request has named it; `Err` when that address is at its limit. A
    /// connection counted at accept is left as it is.
    pub(crate) fn count_client(&mut self, gate: &Gate, ip: IpAddr) -> Result<(), Full> {
        if self.ip.is_none() {
            self.ip = Some(gate.per_ip.clone().take(ip).ok_or(Full::ThisAddress)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_server_and_per_address() {
        let gate = Gate::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = gate.admit(Some(a)).expect("first");
        let _a2 = gate.admit(Some(a)).expect("second");
        assert_eq!(gate.admit(Some(a)).err(), Some(Full::ThisAddress));
        let _b1 = gate.admit(Some(b)).expect("another address");
        assert_eq!(gate.admit(Some(b)).err(), Some(Full::Server));
        drop(a1);
        assert_eq!(gate.open_from(a), 1);
        let mut proxied = gate.admit(None).expect("a proxy's connection");
        assert_eq!(proxied.count_client(&gate, a), Ok(()));
        assert_eq!(gate.open_from(a), 2);
        drop(proxied);
        assert_eq!(gate.open_from(a), 1);
        let request = gate.count_request(a).expect("a proxied request");
        assert_eq!(gate.count_request(a).err(), Some(Full::ThisAddress));
        drop(request);
        assert_eq!(gate.open_from(a), 1);
        let off = Gate::new(10, 0);
        let _many: Vec<_> = (0..5)
            .map(|_| off.admit(Some(a)).expect("no per-address cap"))
            .collect();
    }

    /// A /64 holds the limit, a /56 4 times it, a /48 16 times it: a site
    /// cannot take 65,536 times the limit by spreading over its /64s.
    #[test]
    fn ipv6_blocks_nest() {
        let gate = Gate::new(10_000, 2);
        let ip = |n: u16, h: u16| IpAddr::from([0x2001, 0xdb8, 7, n, 0, 0, 0, h]);
        let mut held = Vec::new();
        held.push(gate.admit(Some(ip(0, 1))).expect("first"));
        held.push(gate.admit(Some(ip(0, 2))).expect("second of the /64"));
        assert_eq!(gate.admit(Some(ip(0, 3))).err(), Some(Full::ThisAddress));
        // The /56: 8 in all.
        for n in 1..4 {
            held.push(gate.admit(Some(ip(n, 1))).expect("another /64"));
            held.push(gate.admit(Some(ip(n, 2))).expect("another /64"));
        }
        assert_eq!(gate.admit(Some(ip(4, 1))).err(), Some(Full::ThisAddress));
        // The /48: 32 in all, over any number of /56s.
        let more: Vec<Admission> = (1..=255u16)
            .flat_map(|s| [s << 8, (s << 8) | 1])
            .filter_map(|n| gate.admit(Some(ip(n, 1))).ok())
            .collect();
        assert_eq!(more.len(), 24);
        // One closes: a place comes back in all three.
        held.pop();
        assert!(gate.admit(Some(ip(3, 9))).is_ok());
        // Another /48 is not concerned.
        assert!(
            gate.admit(Some(IpAddr::from([0x2001, 0xdb8, 8, 0, 0, 0, 0, 1])))
                .is_ok()
        );
    }
}
