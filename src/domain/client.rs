//! [`ClientAddr`]: a client as the per-client limits count it.
//!
//! An IPv4 client is one address. An IPv6 client is its network prefix
//! (a /64 by default): a subscriber is routinely given a whole /64, so
//! per-address limits would hand one client 2^64 buckets. IPv4-mapped IPv6
//! addresses (`::ffff:a.b.c.d`, what a listener bound to `[::]` sees for
//! IPv4 peers) are the IPv4 address they carry.

use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Default prefix length an IPv6 client is counted by.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// A client's address as limits count it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(IpNet);

impl ClientAddr {
    /// The client of address `ip`, IPv6 addresses counted by their first
    /// `ipv6_prefix` bits (clamped to 32..=128, as the setting is).
    pub fn new(ip: IpAddr, ipv6_prefix: u8) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientAddr(IpNet::V4(Ipv4Net::from(v4))),
            IpAddr::V6(v6) => {
                let prefix = ipv6_prefix.clamp(32, 128);
                let net = Ipv6Net::new(v6, prefix)
                    .map(|n| n.trunc())
                    .unwrap_or_else(|_| Ipv6Net::from(v6));
                ClientAddr(IpNet::V6(net))
            }
        }
    }

    /// The network counted (a /32 for IPv4).
    pub fn net(&self) -> IpNet {
        self.0
    }
}

impl fmt::Display for ClientAddr {
    /// `203.0.113.7` for IPv4, `2001:db8:1:2::/64` for an IPv6 prefix: the
    /// subject of the client's limit keys, and what operators look up.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpNet::V4(n) => write!(f, "{}", n.addr()),
            IpNet::V6(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn ipv6_clients_are_their_prefix_and_mapped_ipv4_is_ipv4() {
        let a = ClientAddr::new(ip("2001:db8:1:2:aaaa::1"), 64);
        let b = ClientAddr::new(ip("2001:db8:1:2:ffff::9"), 64);
        let other = ClientAddr::new(ip("2001:db8:1:3::1"), 64);
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            ClientAddr::new(ip("::ffff:203.0.113.7"), 64),
            ClientAddr::new(ip("203.0.113.7"), 64)
        );
        assert_eq!(
            ClientAddr::new(ip("203.0.113.7"), 64).to_string(),
            "203.0.113.7"
        );
        assert_eq!(ClientAddr::new(ip("::1"), 128).to_string(), "::1/128");
        assert_eq!(
            ClientAddr::new(ip("2001:db8::1"), 0).to_string(),
            "2001:db8::/32",
            "a prefix of 0 is clamped: never one bucket for the world"
        );
    }
}
