//! Who is on the other end: the client's address as the limits count it
//! ([`ClientAddr`]), from the socket peer and, behind trusted proxies, from
//! `X-Forwarded-For`. The middleware resolves it once per `/api/` request
//! and leaves it in the request's extensions for handlers.

use std::net::{IpAddr, SocketAddr};

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use crate::domain::ClientAddr;
use crate::error::ApiError;

/// The client address: the socket peer, unless the peer is a trusted proxy;
/// then `X-Forwarded-For` is walked from the right (the hop the nearest
/// proxy added) past every trusted address. The walk stops at the first
/// hop it cannot parse and takes the trusted address it stands on: what
/// lies beyond a broken hop was written by someone we cannot vouch for,
/// possibly the client itself. IPv4-mapped IPv6 addresses are compared as
/// the IPv4 address they carry.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let mut current = peer.to_canonical();
    if !is_trusted(&current) {
        return current;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.into_iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return current;
        };
        current = ip.to_canonical();
        if !is_trusted(&current) {
            return current;
        }
    }
    current
}

/// One `X-Forwarded-For` hop: an address, or an address with a port
/// (`203.0.113.7:4711`, `[2001:db8::1]:4711`) as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// Handlers' view of the client address the middleware resolved.
#[derive(Debug, Clone, Copy)]
pub struct Client(pub ClientAddr);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .map(Client)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("client address not resolved")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().filter_map(|s| s.parse().ok()).collect()
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert("x-forwarded-for", v);
        }
        h
    }

    #[test]
    fn untrusted_peers_are_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &xff("1.1.1.1"), &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn the_walk_passes_trusted_ranges_and_stops_at_the_first_untrusted_hop() {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        let h = xff("6.6.6.6, 198.51.100.4, 10.1.2.3");
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("198.51.100.4"));
        // A proxy on an IPv4-mapped listener is matched as IPv4.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &h, &trusted),
            ip("198.51.100.4")
        );
        let h = xff("[2001:db8::5]:4711");
        assert_eq!(client_ip(ip("fd00::1"), &h, &trusted), ip("2001:db8::5"));
    }

    #[test]
    fn an_unparsable_hop_ends_the_walk_at_the_trusted_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client wrote `1.2.3.4, garbage`; the proxy 10.0.0.7 appended
        // nothing usable: the walk does not reach the client's own words.
        let h = xff("1.2.3.4, not-an-ip");
        assert_eq!(client_ip(ip("10.0.0.7"), &h, &trusted), ip("10.0.0.7"));
        let h = xff("1.2.3.4, not-an-ip, 10.0.0.8");
        assert_eq!(client_ip(ip("10.0.0.7"), &h, &trusted), ip("10.0.0.8"));
    }
}
