//! Who the client is, by address: the socket peer, or — when the peer is one of our own
//! `trusted_proxies` — the address those proxies recorded in `X-Forwarded-For`.
//!
//! `X-Forwarded-For` is a list each proxy appends its peer to, so only its right end was written
//! by hops we trust; everything left of the first untrusted entry may be the client's own text.
//! The list is therefore walked from the right, skipping trusted hops, and the first address that
//! is not trusted is the client. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are normalised
//! to IPv4 first, so a range check cannot be sidestepped by writing an address the other way.

use std::net::IpAddr;

use gatehouse_authz::condition::parse_range;
use http::HeaderMap;
use ipnet::IpNet;

/// A `trusted_proxies` entry: `addr/prefix` or a bare address (one host), read the way the
/// policy service reads `ipInRange` ranges ([`parse_range`]: a range in the IPv4-mapped block is
/// the IPv4 range it maps). `10.0.0.1/8` is refused: most likely a typo for a host or for
/// `10.0.0.0/8`, and not one to guess at.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let net = parse_range(text).map_err(|_| format!("{text:?} is not an IP address or network"))?;
    if net.trunc() != net {
        return Err(format!("{text:?} has host bits set beyond the prefix"));
    }
    Ok(net)
}

/// `trusted_proxies`, compiled. Empty: `X-Forwarded-For` is never read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
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
        TrustedProxies::new(list.iter().map(|c| parse_network(c).unwrap()).collect())
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
        let has = |net: &str, ip: &str| {
            parse_network(net)
                .unwrap()
                .contains(&ip.parse::<IpAddr>().unwrap())
        };
        assert!(has("10.0.0.0/8", "10.1.2.3"));
        assert!(!has("10.0.0.0/8", "11.0.0.1"));
        assert!(has("192.168.1.7", "192.168.1.7"));
        assert!(!has("192.168.1.7", "192.168.1.8"));
        assert!(has("fd00::/8", "fd12::1"));
        assert!(!has("fd00::/8", "10.0.0.1"));
        assert!(has("0.0.0.0/0", "8.8.8.8"));
        // A mapped address in the config is the IPv4 network.
        assert!(has("::ffff:10.0.0.0/104", "10.1.2.3"));
        assert!(
            parse_network("::ffff:10.0.0.0/8").is_err(),
            "a /8 of a v6 address is not the v4 /8"
        );
        assert!(has("::ffff:10.0.0.1", "10.0.0.1"));
        assert!(parse_network("10.0.0.1/8")
            .unwrap_err()
            .contains("host bits set"));
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("ten/8")
            .unwrap_err()
            .contains("is not an IP address"));
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
