//! Who the client is, network-wise: the socket peer, unless the peer is one of `TRUSTED_PROXIES`
//! (CIDRs), in which case the nearest address in `X-Forwarded-For` that is not itself a trusted
//! proxy. A client outside the trusted ranges cannot choose its own address (or rate-limit bucket)
//! by sending these headers.

use std::net::IpAddr;

use actix_web::HttpRequest;
use actix_web::dev::ServiceRequest;
use ipnet::IpNet;
use service_kit::config::Env;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

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
        Self(nets)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request that came from `peer` with these `X-Forwarded-For` values.
    pub fn client(&self, peer: Option<IpAddr>, forwarded_for: &[&str]) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        // Right to left: each trusted hop appended the address it saw; the first one that is not
        // a trusted proxy is the client. Anything malformed ends the walk there.
        let hops: Vec<&str> = forwarded_for.iter().flat_map(|h| h.split(',')).map(str::trim).collect();
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

fn forwarded_for(headers: &actix_web::http::header::HeaderMap) -> Vec<&str> {
    headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// The client address of an incoming request.
pub fn of_service_request(proxies: &TrustedProxies, req: &ServiceRequest) -> Option<IpAddr> {
    proxies.client(req.peer_addr().map(|a| a.ip()), &forwarded_for(req.headers()))
}

/// The same, from a handler.
pub fn of_request(proxies: &TrustedProxies, req: &HttpRequest) -> Option<IpAddr> {
    proxies.client(req.peer_addr().map(|a| a.ip()), &forwarded_for(req.headers()))
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
