//! Who a request comes from: the TCP peer, or, when the peer is a trusted
//! proxy (`--trusted-proxy CIDR`), the client it forwards for
//! (`X-Forwarded-For`, `Forwarded`). Logs, per-IP caps and the session rate
//! limit all use this address.
//!
//! Only a trusted peer's headers are read: anyone else could write them.
//! The forwarded chain is read from the right (the hop nearest to us) and
//! the first address that is not itself a trusted proxy is the client, so a
//! client cannot pose as another by writing its own `X-Forwarded-For`.

use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;

/// An address block, like `10.0.0.0/8`, `::1/128` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside this block (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not an address block; write it like 10.0.0.0/8, 192.0.2.7 or ::1/128")
        };
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An address block that a per-address limit counts: an IPv4 address
/// (`/32`), or an IPv6 /64, /56 or /48 (the prefix tells a /56 from the
/// /64 that starts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Block {
    pub ip: IpAddr,
    pub prefix: u8,
}

/// How many times the per-address limit each IPv6 block gets: a /64 (one
/// host, routinely) the limit itself, a /56 (a home or small site) 4 times
/// it, a /48 (a site; the most a provider usually hands one customer) 16
/// times it. So a /48 is not 65,536 budgets of a /64 each.
pub(crate) const NESTED: [(u8, u32); 3] = [(64, 1), (56, 4), (48, 16)];

/// The blocks `ip` is counted in, each with the multiple of the
/// per-address limit it gets: an IPv4 address alone (x1); an IPv6 address
/// in its /64, /56 and /48 ([`NESTED`]).
pub(crate) fn limit_blocks(ip: IpAddr) -> impl Iterator<Item = (Block, u32)> {
    let ip = canonical(ip);
    let v6 = match ip {
        IpAddr::V6(v6) => Some(u128::from(v6)),
        IpAddr::V4(_) => None,
    };
    let v4 = v6.is_none().then_some((Block { ip, prefix: 32 }, 1));
    let nested = NESTED.into_iter().filter_map(move |(prefix, times)| {
        let bits = v6?;
        let masked = bits & (u128::MAX << (128 - u32::from(prefix)));
        let ip = IpAddr::V6(std::net::Ipv6Addr::from(masked));
        Some((Block { ip, prefix }, times))
    });
    v4.into_iter().chain(nested)
}

/// What per-address limits count `ip` as: itself for IPv4, its /64 for
/// IPv6, since one host is routinely given a whole /64 and could otherwise
/// be 2^64 addresses to `--max-connections-per-ip` and `--session-rate`.
pub(crate) fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub(crate) fn new(blocks: Vec<Cidr>) -> Self {
        Self(blocks)
    }

    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address: `peer`, or, when `peer` is a trusted proxy,
    /// the nearest untrusted address it forwards for (`X-Forwarded-For`,
    /// which nginx and Caddy write, else `Forwarded`: a proxy that writes
    /// the one passes the other through as the client sent it, so the one
    /// proxies write wins). A trusted peer that names nobody is itself the
    /// client.
    pub(crate) fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let chain = x_forwarded_for(headers);
        let chain = if chain.is_empty() {
            forwarded_for(headers)
        } else {
            chain
        };
        let mut client = peer;
        for hop in chain.into_iter().rev() {
            client = hop;
            if !self.trusts(hop) {
                break;
            }
        }
        client
    }
}

/// The addresses of `X-Forwarded-For`, client first; an unreadable entry
/// ends the chain there (nothing left of it can be believed).
fn x_forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let values = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let mut out = Vec::new();
    for item in values.flat_map(|v| v.split(',')) {
        match parse_node(item.trim()) {
            Some(ip) => out.push(ip),
            None => out.clear(),
        }
    }
    out
}

/// The `for=` addresses of `Forwarded` (RFC 7239), client first.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let values = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let mut out = Vec::new();
    for element in values.flat_map(|v| v.split(',')) {
        let node = element.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
        });
        match node.and_then(|n| parse_node(n.trim_matches('"'))) {
            Some(ip) => out.push(ip),
            None => out.clear(),
        }
    }
    out
}

/// One hop: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]:4711` or `2001:db8::1`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse().ok().map(canonical);
    }
    let (ip, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("a block")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn an_ipv6_host_is_its_slash_64() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            limit_key(ip("2001:db8:1:2:ffff::9")),
            limit_key(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:3::1")),
            limit_key(ip("2001:db8:1:2::1"))
        );
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn an_ipv6_host_is_in_its_slash_64_56_and_48() {
        let blocks: Vec<(String, u32)> = limit_blocks(ip("2001:db8:1:2ff:aaaa::1"))
            .map(|(b, n)| (format!("{}/{}", b.ip, b.prefix), n))
            .collect();
        assert_eq!(
            blocks,
            [
                ("2001:db8:1:2ff::/64".to_owned(), 1),
                ("2001:db8:1:200::/56".to_owned(), 4),
                ("2001:db8:1::/48".to_owned(), 16),
            ]
        );
        let v4: Vec<_> = limit_blocks(ip("::ffff:192.0.2.1")).collect();
        assert_eq!(
            v4,
            [(
                Block {
                    ip: ip("192.0.2.1"),
                    prefix: 32
                },
                1
            )]
        );
        // A /56 that starts at a /64's address is still told from it.
        let (a, b) = (ip("2001:db8:1:200::"), ip("2001:db8:1:200::"));
        let a: Vec<_> = limit_blocks(a).map(|(b, _)| b).collect();
        assert_ne!(a[0], a[1]);
        assert_eq!(a, limit_blocks(b).map(|(b, _)| b).collect::<Vec<_>>());
    }

    #[test]
    fn blocks() {
        assert!(cidr("10.0.0.0/8").contains(ip("10.1.2.3")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(cidr("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:1::1")));
        assert!(!cidr("2001:db8::/32").contains(ip("10.0.0.1")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ten".parse::<Cidr>().is_err());
    }

    #[test]
    fn only_trusted_peers_are_believed() {
        let proxies = TrustedProxies::new(vec![cidr("10.0.0.0/8")]);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.1, 10.0.0.2".parse().unwrap());
        // Through two trusted hops: the client is the first untrusted one.
        assert_eq!(proxies.client_ip(&h, ip("10.0.0.1")), ip("198.51.100.1"));
        // Not from a proxy: the header is anyone's to write.
        assert_eq!(proxies.client_ip(&h, ip("203.0.113.5")), ip("203.0.113.5"));
        // A forged entry left of the real client is not believed.
        h.insert("x-forwarded-for", "1.2.3.4, 198.51.100.1".parse().unwrap());
        assert_eq!(proxies.client_ip(&h, ip("10.0.0.1")), ip("198.51.100.1"));
        let mut f = HeaderMap::new();
        f.insert(
            "forwarded",
            "for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            proxies.client_ip(&f, ip("10.9.9.9")),
            ip("2001:db8:cafe::17")
        );
        // A proxy that writes X-Forwarded-For passes a client's own
        // Forwarded through: X-Forwarded-For wins.
        f.insert("x-forwarded-for", "198.51.100.7".parse().unwrap());
        assert_eq!(proxies.client_ip(&f, ip("10.9.9.9")), ip("198.51.100.7"));
        // Nothing forwarded: the proxy is the client.
        assert_eq!(
            proxies.client_ip(&HeaderMap::new(), ip("10.0.0.1")),
            ip("10.0.0.1")
        );
    }
}
