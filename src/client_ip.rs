//! [`ClientIp`](crate::client_ip::ClientIp): the address a request comes from, for
//! throttling logins and sign-ups.
//!
//! By default it is the TCP peer, and `X-Forwarded-For` is ignored: any client can
//! write that header, so trusting it would let every request claim a new address and
//! dodge the limits. Behind a reverse proxy every request's peer is the proxy, so all
//! clients would share one address's limits; the operator then names the proxy
//! ([`TrustedProxies`](crate::client_ip::TrustedProxies)). For a request whose peer is a trusted proxy the client is the
//! right-most `X-Forwarded-For` entry that is not itself a trusted proxy: each proxy
//! appends the address it saw, so entries left of the last untrusted one may be made up
//! by the client and are never read.

use std::future::{Ready, ready};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};

use crate::error::ApiError;

/// The reverse proxies whose `X-Forwarded-For` is believed; empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<IpAddr>);

impl TrustedProxies {
    /// The client of a request from `peer` carrying these `X-Forwarded-For` values.
    pub fn client<'a>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        // Several headers are one list, in order.
        let hops: Vec<&str> = forwarded_for.flat_map(|value| value.split(',')).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            if !self.trusts(client) {
                break;
            }
            // An entry that is not an address: stop at the proxy rather than guess.
            match parse_hop(hop) {
                Some(address) => client = address,
                None => break,
            }
        }
        client
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.contains(&canonical(address))
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`[::1]:80`, `1.2.3.4:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(canonical(address));
    }
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|socket| canonical(socket.ip()))
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:a.b.c.d`) as the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// The group of addresses that counts as one client for the login throttle and the
/// hashing queue: an IPv4 address itself, an IPv6 address's /64 (one subscriber's
/// network usually holds a whole /64, so counting its addresses apart would let one
/// client take as many places as it likes).
pub(crate) fn bucket(address: IpAddr) -> IpAddr {
    match canonical(address) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (!0u128 << 64))),
        v4 => v4,
    }
}

/// The client a request comes from, by the rules above: an IPv4 address, or an IPv6
/// address's /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequest for ClientIp {
    type Error = ApiError;
    type Future = Ready<Result<ClientIp, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Only a request that did not come over a socket (a unit test's) has no peer.
        let peer = req
            .peer_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| {
                canonical(peer.ip())
            });
        let client = match req.app_data::<web::Data<TrustedProxies>>() {
            Some(trusted) => trusted.client(
                peer,
                req.headers()
                    .get_all("x-forwarded-for")
                    .filter_map(|value| value.to_str().ok()),
            ),
            None => peer,
        };
        ready(Ok(ClientIp(bucket(client))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_ipv6_network_is_one_client_and_a_mapped_ipv4_address_is_its_ipv4_address() {
        assert_eq!(
            bucket(ip("2001:db8:1:2::1")),
            bucket(ip("2001:db8:1:2:ffff::9"))
        );
        assert_eq!(bucket(ip("2001:db8:1:2::1")), ip("2001:db8:1:2::"));
        assert_ne!(bucket(ip("2001:db8:1:2::1")), bucket(ip("2001:db8:1:3::1")));
        assert_eq!(bucket(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(bucket(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn the_client_is_the_last_untrusted_forwarded_address_from_a_trusted_peer() {
        let proxies = TrustedProxies(vec![ip("10.0.0.1"), ip("10.0.0.2")]);
        let cases = [
            (
                "203.0.113.5",
                vec!["198.51.100.9"],
                "203.0.113.5",
                "an untrusted peer's header is ignored",
            ),
            (
                "10.0.0.1",
                vec![],
                "10.0.0.1",
                "no header: the proxy itself",
            ),
            (
                "10.0.0.1",
                vec!["198.51.100.9"],
                "198.51.100.9",
                "the address the proxy saw",
            ),
            (
                "10.0.0.1",
                vec!["6.6.6.6, 198.51.100.9"],
                "198.51.100.9",
                "a made-up entry left of it is ignored",
            ),
            (
                "10.0.0.1",
                vec!["198.51.100.9, 10.0.0.2"],
                "198.51.100.9",
                "through two trusted proxies",
            ),
            (
                "10.0.0.1",
                vec!["6.6.6.6", "198.51.100.9"],
                "198.51.100.9",
                "two headers are one list",
            ),
            (
                "10.0.0.1",
                vec!["198.51.100.9:4711"],
                "198.51.100.9",
                "with a port",
            ),
            (
                "10.0.0.1",
                vec!["[2001:db8::1]:443"],
                "2001:db8::1",
                "IPv6 with a port",
            ),
            (
                "10.0.0.1",
                vec!["unknown"],
                "10.0.0.1",
                "not an address: the proxy",
            ),
            (
                "::ffff:10.0.0.1",
                vec!["198.51.100.9"],
                "198.51.100.9",
                "a mapped IPv4 proxy",
            ),
        ];
        for (peer, headers, expected, why) in cases {
            let client = proxies.client(ip(peer), headers.into_iter());
            assert_eq!(client, ip(expected), "{why}");
        }
    }

    #[test]
    fn with_no_trusted_proxy_the_header_is_never_read() {
        let client =
            TrustedProxies::default().client(ip("127.0.0.1"), ["198.51.100.9"].into_iter());
        assert_eq!(client, ip("127.0.0.1"));
    }
}
