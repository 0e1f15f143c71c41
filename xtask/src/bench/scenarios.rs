//! What the benchmark loads, as data: each scenario's row name, gateway, path, request and
//! connections, in the groups whose scenarios take turns, and the failed logins timed at a low
//! fixed rate. A new scenario is a line here (and, if the report compares it, a name below).

use serde_json::json;

use super::measure::{Load, Target};
use super::stack::{PASSWORD, PROTECTED_ACCOUNT, Replica, Stack};
use crate::nginx;

/// Row names the report reads figures from.
pub(super) const HEALTH: &str = "GET /health";
pub(super) const ME_PROTECTED: &str = "GET /v1/me (protected)";
pub(super) const ME_CHECKS_OFF: &str = "GET /v1/me (edge checks off)";
pub(super) const LOGIN: &str = "POST /v1/auth/login";
/// nginx's rows, named after its version: "nginx/1.22.1: GET /health (static)".
pub(super) const NGINX_STATIC: &str = "GET /health (static)";
pub(super) const NGINX_LIMITED: &str = "GET /health behind limit_req per IP";

/// Which gateway a scenario loads.
#[derive(Clone, Copy)]
pub(super) enum Gateway {
    /// Ours with every edge check: rate limits and token verification.
    Protected,
    /// Ours with the edge checks off (`RATE_LIMIT_ENABLED=false`, `GATEWAY_VERIFY_TOKENS=false`).
    ChecksOff,
    /// nginx, the reference; its scenarios are left out when it could not start.
    Nginx,
}

/// What a scenario sends.
#[derive(Clone, Copy)]
pub(super) enum Request {
    Get,
    /// GET with the access token of the gateway's own session.
    GetWithToken,
    /// A login, JSON-encoded as the app sends it.
    Login {
        email: &'static str,
        password: &'static str,
    },
}

pub(super) struct Scenario {
    pub(super) name: &'static str,
    pub(super) gateway: Gateway,
    pub(super) path: &'static str,
    pub(super) request: Request,
    /// Connections of the load generator.
    pub(super) connections: u32,
}

/// The scenarios at full speed and at half rate, by group: the scenarios of a group take turns
/// within each round, so that a quiet or a noisy spell of the host falls on all of them alike.
pub(super) const GROUPS: &[&[Scenario]] = &[
    &[
        Scenario {
            name: HEALTH,
            gateway: Gateway::Protected,
            path: "/health",
            request: Request::Get,
            connections: 64,
        },
        Scenario {
            name: NGINX_STATIC,
            gateway: Gateway::Nginx,
            path: nginx::STATIC,
            request: Request::Get,
            connections: 64,
        },
        Scenario {
            name: NGINX_LIMITED,
            gateway: Gateway::Nginx,
            path: nginx::LIMITED,
            request: Request::Get,
            connections: 64,
        },
    ],
    &[
        Scenario {
            name: ME_PROTECTED,
            gateway: Gateway::Protected,
            path: "/v1/me",
            request: Request::GetWithToken,
            connections: 64,
        },
        Scenario {
            name: ME_CHECKS_OFF,
            gateway: Gateway::ChecksOff,
            path: "/v1/me",
            request: Request::GetWithToken,
            connections: 64,
        },
    ],
    &[Scenario {
        name: LOGIN,
        gateway: Gateway::Protected,
        path: "/v1/auth/login",
        request: Request::Login {
            email: PROTECTED_ACCOUNT,
            password: PASSWORD,
        },
        connections: 8,
    }],
];

/// An attacker timing logins must not tell an unknown e-mail from a wrong password: the same low
/// fixed rate (below the lockout: LOGIN_MAX_ATTEMPTS=100), both refused.
pub(super) const FAILED_LOGINS: &[Scenario] = &[
    Scenario {
        name: "unknown e-mail",
        gateway: Gateway::Protected,
        path: "/v1/auth/login",
        request: Request::Login {
            email: "nobody@example.org",
            password: "not the password at all",
        },
        connections: 2,
    },
    Scenario {
        name: "wrong password",
        gateway: Gateway::Protected,
        path: "/v1/auth/login",
        request: Request::Login {
            email: PROTECTED_ACCOUNT,
            password: "not the password at all",
        },
        connections: 2,
    },
];
/// Requests per second of the failed logins, and seconds per case.
pub(super) const FAILED_LOGIN_RATE: u32 = 10;
pub(super) const FAILED_LOGIN_SECONDS: u64 = 4;

/// oha's arguments for a request to a replica of ours.
fn args(request: Request, replica: &Replica) -> Vec<String> {
    match request {
        Request::Get => Vec::new(),
        Request::GetWithToken => vec!["-H".into(), format!("Authorization: Bearer {}", replica.token)],
        Request::Login { email, password } => {
            let body =
                json!({"email": email, "password": password, "device": {"device_id": "bench", "platform": "ios"}});
            vec![
                "-m".into(),
                "POST".into(),
                "-T".into(),
                "application/json".into(),
                "-d".into(),
                body.to_string(),
            ]
        }
    }
}

/// The scenarios as targets on `stack` (nginx's left out when it did not start).
pub(super) fn targets<'a>(scenarios: &[Scenario], stack: &'a Stack) -> Vec<Target<'a>> {
    scenarios
        .iter()
        .filter_map(|s| {
            let replica = match s.gateway {
                Gateway::Protected => &stack.protected,
                Gateway::ChecksOff => &stack.checks_off,
                Gateway::Nginx => {
                    let nginx = stack.nginx.as_ref().ok()?;
                    return Some(Target {
                        name: format!("{}: {}", nginx.version(), s.name),
                        load: Load::Nginx(nginx),
                        url: format!("https://localhost:{}{}", nginx.port, s.path),
                        args: Vec::new(),
                        connections: s.connections,
                    });
                }
            };
            Some(Target {
                name: s.name.to_owned(),
                load: Load::Stack(&replica.platform),
                url: format!("{}{}", replica.base, s.path),
                args: args(s.request, replica),
                connections: s.connections,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{GROUPS, HEALTH, LOGIN, ME_CHECKS_OFF, ME_PROTECTED, NGINX_LIMITED, NGINX_STATIC};

    #[test]
    fn every_row_the_report_reads_is_in_the_table_once() {
        let names: Vec<&str> = GROUPS.iter().flat_map(|g| g.iter()).map(|s| s.name).collect();
        for name in [HEALTH, ME_PROTECTED, ME_CHECKS_OFF, LOGIN, NGINX_STATIC, NGINX_LIMITED] {
            assert_eq!(names.iter().filter(|n| **n == name).count(), 1, "{name} in {names:?}");
        }
        assert!(
            !NGINX_STATIC.ends_with(NGINX_LIMITED) && !NGINX_LIMITED.ends_with(NGINX_STATIC),
            "the report tells nginx's rows apart by how their names end"
        );
    }
}
