//! Who the client is, by address: the socket peer, or — when the peer is one of our own
//! `trusted_proxies` — the address those proxies recorded in `X-Forwarded-For`.
//!
//! `X-Forwarded-For` is a list each proxy appends its peer to, so only its right end was written
//! by hops we trust; everything left of the first untrusted entry may be the client's own text.
//! The list is therefore walked from the right, skipping trusted hops, and the first address that
//! is not trusted is the client. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are normalised
//! to IPv4 first, so a range check cannot be sidestepped by writing an address the other way.

use std::net::IpAddr;

use http::HeaderMap;

/// A network written as `addr/prefix` (or a bare address: one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("prefix length {prefix} is longer than the address ({max} bits)")]
    Prefix { prefix: String, max: u8 },
    #[error("{0:?} has host bits set beyond the prefix")]
    HostBits(String),
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let written = addr
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| CidrError::Address(addr.to_string()))?;
        let max = if written.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(CidrError::Prefix {
                        prefix: p.to_string(),
                        max,
                    })
                }
            },
        };
        // Addresses are compared in canonical form, so an IPv4-mapped network is its IPv4 one.
        let (network, prefix) = match written.to_canonical() {
            IpAddr::V4(v4) if written.is_ipv6() && prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
            _ => (written, prefix),
        };
        // `10.0.0.1/8` is most likely a typo for a host or for `10.0.0.0/8`: refuse to guess.
        if mask(network, prefix) != network {
            return Err(CidrError::HostBits(text.to_string()));
        }
        let cidr = Cidr { network, prefix };
        Ok(cidr)
    }
}

impl Cidr {
    /// Whether `ip` (already canonical) lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.network
            }
            _ => false,
        }
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = bits.checked_shr(32 - u32::from(prefix)).unwrap_or(0);
            let masked = kept.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(masked.into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = bits.checked_shr(128 - u32::from(prefix)).unwrap_or(0);
            let masked = kept.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(masked.into())
        }
    }
}

/// `trusted_proxies`, compiled. Empty: `X-Forwarded-For` is never read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(networks: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client's address for a request from socket peer `peer` carrying `headers`.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer.map(|ip| ip.to_canonical());
        let mut client = peer?;
        if self.0.is_empty() || !self.trusts(client) {
            return Some(client);
        }
        // Every copy of the header, in order, forms one list (RFC 9110 §5.3).
        let values: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
            let Some(hop) = parse_hop(entry) else {
                // Garbage where an address belongs: the last hop we trust is all we know.
                return Some(client);
            };
            client = hop;
            if !self.trusts(hop) {
                return Some(hop);
            }
        }
        // Every hop was a trusted proxy: the leftmost one is the closest thing to a client.
        Some(client)
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|c| c.parse().unwrap()).collect())
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let host: Cidr = "192.168.1.7".parse().unwrap();
        assert!(host.contains("192.168.1.7".parse().unwrap()));
        assert!(!host.contains("192.168.1.8".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        // A mapped address in the config is the IPv4 network.
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(mapped.contains("10.1.2.3".parse().unwrap()));
        let wide = "::ffff:10.0.0.0/8".parse::<Cidr>();
        assert!(wide.is_err(), "a /8 of a v6 address is not the v4 /8");
        let mapped: Cidr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(mapped.contains("10.0.0.1".parse().unwrap()));
        assert!(matches!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err(CidrError::HostBits(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix { .. })
        ));
        assert!(matches!(
            "ten/8".parse::<Cidr>(),
            Err(CidrError::Address(_))
        ));
    }

    #[test]
    fn forwarded_for_is_read_only_from_a_trusted_peer() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let h = xff(&["203.0.113.9"]);
        assert_eq!(trusted.client_ip(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        assert_eq!(
            trusted.client_ip(ip("198.51.100.1"), &h),
            ip("198.51.100.1")
        );
        // Nothing trusted: the header is never read.
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.2"), &h),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn the_list_is_walked_from_the_right_past_trusted_hops() {
        let trusted = proxies(&["10.0.0.0/8", "fd00::/8"]);
        // The client forged the leftmost entry; the first untrusted one from the right wins.
        let h = xff(&["1.1.1.1, 203.0.113.9, 10.0.0.5"]);
        assert_eq!(trusted.client_ip(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        // Several header copies form one list.
        let h = xff(&["1.1.1.1", "203.0.113.9:4711", "[fd00::3]:80"]);
        assert_eq!(trusted.client_ip(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        // All trusted: the leftmost.
        let h = xff(&["10.9.9.9, 10.0.0.5"]);
        assert_eq!(trusted.client_ip(ip("10.0.0.2"), &h), ip("10.9.9.9"));
        // Garbage stops the walk at the last trusted hop.
        let h = xff(&["203.0.113.9, nonsense, 10.0.0.5"]);
        assert_eq!(trusted.client_ip(ip("10.0.0.2"), &h), ip("10.0.0.5"));
        // No header: the peer.
        assert_eq!(
            trusted.client_ip(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn mapped_addresses_are_normalised_before_range_checks() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let h = xff(&["203.0.113.9"]);
        assert_eq!(
            trusted.client_ip(ip("::ffff:10.0.0.2"), &h),
            ip("203.0.113.9")
        );
        // A client writing a mapped trusted address is still skipped as a trusted hop, and one
        // writing its own address mapped is reported as plain IPv4.
        let h = xff(&["::ffff:203.0.113.9, ::ffff:10.0.0.7"]);
        assert_eq!(trusted.client_ip(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        assert_eq!(
            TrustedProxies::default().client_ip(ip("::ffff:192.0.2.1"), &h),
            ip("192.0.2.1")
        );
    }
}
