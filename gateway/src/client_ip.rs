//! Who the client is, network-wise: the socket peer, unless the peer is one of `TRUSTED_PROXIES`
//! (CIDRs), in which case the nearest address in `X-Forwarded-For` (or, with
//! `CLIENT_IP_HEADER=forwarded`, the `for=` of RFC 7239 `Forwarded`) that is not itself a trusted
//! proxy. A client outside the trusted ranges cannot choose its own address (or rate-limit bucket)
//! by sending these headers. Only the header the proxies actually write is read: a client could
//! put anything in the other one.
//!
//! Addresses are compared canonically (`::ffff:192.0.2.1` is `192.0.2.1`, in `TRUSTED_PROXIES`,
//! for the peer and for every forwarded hop), and an IPv6 client is one /64 to the rate limiter
//! ([`bucket`]): a single host is routinely handed a whole /64, and would otherwise have 2^64
//! buckets to choose from.

use std::net::{IpAddr, Ipv6Addr};

use actix_web::dev::ServiceRequest;
use actix_web::{HttpMessage as _, HttpRequest};
use ipnet::IpNet;
use service_kit::config::Env;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    /// Read `Forwarded` instead of `X-Forwarded-For`.
    rfc7239: bool,
}

impl TrustedProxies {
    /// `TRUSTED_PROXIES`: comma-separated CIDRs or addresses (default none).
    pub fn from_env(env: &Env) -> Self {
        let mut nets = Vec::new();
        for item in env.optional_string("TRUSTED_PROXIES").unwrap_or_default().split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let parsed = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from));
            match parsed.map(canonical_net) {
                Ok(net) if too_wide(&net) => env.problem(
                    "TRUSTED_PROXIES",
                    format!(
                        "lists {item}, wider than /{} (everyone in it could choose the address they \
                         are limited as); list your proxies' own ranges",
                        max_width(&net)
                    ),
                ),
                Ok(net) => nets.push(net),
                Err(_) => env.problem(
                    "TRUSTED_PROXIES",
                    format!("must list CIDRs like 10.0.0.0/8, got {item:?}"),
                ),
            }
        }
        let rfc7239 =
            env.one_of("CLIENT_IP_HEADER", "x-forwarded-for", &["x-forwarded-for", "forwarded"]) == "forwarded";
        Self { nets, rfc7239 }
    }

    /// `ip` must be canonical (see [`canonical`]); the nets are.
    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request that came from `peer` with these values of the configured
    /// header.
    pub fn client(&self, peer: Option<IpAddr>, header_values: &[&str]) -> Option<IpAddr> {
        let peer = canonical(peer?);
        if !self.trusts(peer) {
            return Some(peer);
        }
        // Right to left: each trusted hop appended the address it saw; the first one that is not
        // a trusted proxy is the client. Anything malformed ends the walk there.
        let hops: Vec<&str> = header_values
            .iter()
            .flat_map(|h| h.split(','))
            .map(|hop| {
                if self.rfc7239 {
                    forwarded_for_param(hop)
                } else {
                    hop.trim()
                }
            })
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>().map(canonical) {
                Ok(ip) => {
                    client = ip;
                    if !self.trusts(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        Some(client)
    }
}

/// The one spelling of an address: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
/// dual-stack socket reports for an IPv4 peer) is the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The same for a range: `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
        && let Ok(mapped) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(mapped.trunc());
    }
    net
}

/// The widest range `TRUSTED_PROXIES` accepts: /8 for IPv4, /32 for IPv6.
fn max_width(net: &IpNet) -> u8 {
    match net {
        IpNet::V4(_) => 8,
        IpNet::V6(_) => 32,
    }
}

fn too_wide(net: &IpNet) -> bool {
    net.prefix_len() < max_width(net)
}

/// What the rate limiter counts a client as: an IPv4 address alone, an IPv6 address by its /64
/// (`2001:db8:1:2::/64`). `ip` is canonical, so an IPv4 client seen through IPv6 is one bucket.
pub fn bucket(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", Ipv6Addr::from(net))
        }
    }
}

/// The address of one `Forwarded` element (`for=192.0.2.60;proto=https`, `for="[2001:db8::1]:4711"`),
/// without quotes, brackets or port; "" when it has none (which ends the walk).
fn forwarded_for_param(element: &str) -> &str {
    let Some(value) = element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    }) else {
        return "";
    };
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split_once(']').map_or("", |(ip, _)| ip);
    }
    // IPv4 with a port; a bare IPv6 address (not allowed unbracketed) has more than one colon.
    match value.split_once(':') {
        Some((ip, port)) if !port.contains(':') => ip,
        _ => value,
    }
}

fn header_values<'a>(proxies: &TrustedProxies, headers: &'a actix_web::http::header::HeaderMap) -> Vec<&'a str> {
    let name = if proxies.rfc7239 {
        "forwarded"
    } else {
        "x-forwarded-for"
    };
    headers.get_all(name).filter_map(|v| v.to_str().ok()).collect()
}

/// The client address of a request, worked out once by the edge middleware (see
/// [`ClientAddr::of_request`]) and read by the rate limiter and by the calls to the services.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    /// The client address of an incoming request.
    pub fn of_request(proxies: &TrustedProxies, req: &ServiceRequest) -> Self {
        Self(proxies.client(req.peer_addr().map(|a| a.ip()), &header_values(proxies, req.headers())))
    }

    /// The address the edge stored in a request's extensions (none outside the edge, in tests).
    pub fn of(req: &HttpRequest) -> Option<IpAddr> {
        req.extensions().get::<Self>().and_then(|addr| addr.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let env = Env::from_map([("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1")]);
        let p = TrustedProxies::from_env(&env);
        assert!(env.finish().is_ok());
        // An untrusted peer's header is ignored.
        assert_eq!(p.client(Some(ip("203.0.113.9")), &["1.2.3.4"]), Some(ip("203.0.113.9")));
        // Through one trusted proxy.
        assert_eq!(
            p.client(Some(ip("10.1.2.3")), &["198.51.100.7"]),
            Some(ip("198.51.100.7"))
        );
        // A client that prepends a fake hop gets its real address (the rightmost untrusted one).
        assert_eq!(
            p.client(Some(ip("10.1.2.3")), &["1.1.1.1, 198.51.100.7, 192.168.1.1"]),
            Some(ip("198.51.100.7"))
        );
        // Garbage stops the walk at the last good hop.
        assert_eq!(p.client(Some(ip("10.1.2.3")), &["not-an-ip"]), Some(ip("10.1.2.3")));
        assert_eq!(p.client(Some(ip("10.1.2.3")), &[]), Some(ip("10.1.2.3")));
    }

    #[test]
    fn rfc7239_forwarded_when_configured() {
        let env = Env::from_map([("TRUSTED_PROXIES", "10.0.0.0/8"), ("CLIENT_IP_HEADER", "forwarded")]);
        let p = TrustedProxies::from_env(&env);
        assert!(env.finish().is_ok());
        let peer = Some(ip("10.0.0.5"));
        assert_eq!(
            p.client(peer, &["for=198.51.100.7;proto=https"]),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            p.client(peer, &["for=1.1.1.1, for=\"[2001:db8::17]:4711\";by=10.0.0.1"]),
            Some(ip("2001:db8::17"))
        );
        assert_eq!(p.client(peer, &["For=\"203.0.113.4:4711\""]), Some(ip("203.0.113.4")));
        // Obfuscated or missing `for` ends the walk at the proxy.
        assert_eq!(p.client(peer, &["for=_hidden"]), peer);
        assert_eq!(p.client(peer, &["proto=https"]), peer);
        // In this mode X-Forwarded-For is someone else's header: not read.
        let headers = {
            let mut h = actix_web::http::header::HeaderMap::new();
            h.insert(
                actix_web::http::header::HeaderName::from_static("x-forwarded-for"),
                actix_web::http::header::HeaderValue::from_static("1.2.3.4"),
            );
            h
        };
        assert!(header_values(&p, &headers).is_empty());
    }

    #[test]
    fn mapped_addresses_are_their_ipv4_selves_everywhere() {
        let env = Env::from_map([("TRUSTED_PROXIES", "::ffff:10.0.0.0/104, 192.168.1.1")]);
        let p = TrustedProxies::from_env(&env);
        assert!(env.finish().is_ok());
        // The range given mapped trusts the plain peer, and a plain range the mapped peer.
        assert_eq!(
            p.client(Some(ip("10.1.2.3")), &["198.51.100.7"]),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            p.client(Some(ip("::ffff:192.168.1.1")), &["198.51.100.7"]),
            Some(ip("198.51.100.7"))
        );
        // A mapped hop is a trusted proxy too, and the client comes out canonical.
        assert_eq!(
            p.client(Some(ip("10.0.0.1")), &["::ffff:198.51.100.7, ::ffff:10.9.9.9"]),
            Some(ip("198.51.100.7"))
        );
        // An untrusted mapped peer is its IPv4 self.
        assert_eq!(p.client(Some(ip("::ffff:203.0.113.9")), &[]), Some(ip("203.0.113.9")));
    }

    #[test]
    fn ipv6_clients_are_one_bucket_per_64() {
        assert_eq!(bucket(ip("198.51.100.7")), "198.51.100.7");
        assert_eq!(bucket(ip("::ffff:198.51.100.7")), "198.51.100.7");
        assert_eq!(bucket(ip("2001:db8:1:2::1")), "2001:db8:1:2::/64");
        assert_eq!(bucket(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")), "2001:db8:1:2::/64");
        assert_ne!(bucket(ip("2001:db8:1:3::1")), bucket(ip("2001:db8:1:2::1")));
    }

    #[test]
    fn ranges_wider_than_a_slash_8_or_32_are_refused() {
        for wide in ["0.0.0.0/0", "10.0.0.0/7", "::/0", "2001:db8::/31", "::ffff:0.0.0.0/96"] {
            let env = Env::from_map([("TRUSTED_PROXIES", wide)]);
            TrustedProxies::from_env(&env);
            let err = env.finish().expect_err(wide).to_string();
            assert!(
                err.contains("TRUSTED_PROXIES") && err.contains("wider than"),
                "{wide}: {err}"
            );
        }
        for narrow in ["10.0.0.0/8", "2001:db8::/32", "::1", "::ffff:10.0.0.0/104"] {
            let env = Env::from_map([("TRUSTED_PROXIES", narrow)]);
            TrustedProxies::from_env(&env);
            assert!(env.finish().is_ok(), "{narrow}");
        }
    }

    #[test]
    fn bad_ranges_are_named() {
        let env = Env::from_map([("TRUSTED_PROXIES", "10.0.0.0/33")]);
        TrustedProxies::from_env(&env);
        assert!(
            env.finish()
                .expect_err("bad cidr")
                .to_string()
                .contains("TRUSTED_PROXIES")
        );
    }
}
