//! Who the client is, network-wise: the socket peer, unless the peer is one of `TRUSTED_PROXIES`
//! (CIDRs), in which case the nearest address in `X-Forwarded-For` (or, with
//! `CLIENT_IP_HEADER=forwarded`, the `for=` of RFC 7239 `Forwarded`) that is not itself a trusted
//! proxy. A client outside the trusted ranges cannot choose its own address (or rate-limit bucket)
//! by sending these headers. Only the header the proxies actually write is read: a client could
//! put anything in the other one.

use std::net::IpAddr;

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
            match parsed {
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

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request that came from `peer` with these values of the configured
    /// header.
    pub fn client(&self, peer: Option<IpAddr>, header_values: &[&str]) -> Option<IpAddr> {
        let peer = peer?;
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
            match hop.parse::<IpAddr>() {
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
