//! Rate limiting at the edge: policies per route class, decided by one atomic Redis script per
//! policy (GCRA), announced with the IETF `RateLimit-Policy` / `RateLimit` fields, refused with 429
//! `RATE_LIMIT_EXCEEDED` and `Retry-After`. When Redis is down or slow, `RATE_LIMIT_FAILURE_MODE`
//! decides: `local` (an in-process limiter with the same policies), `open` or `closed`.

pub mod gcra;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _, ResponseError as _, web};
use deadpool_redis::redis;
use prometheus::{IntCounterVec, Opts, Registry};
use service_kit::config::{Env, Environment};
use service_kit::revocation::RedisKeys;

use self::gcra::{Decision, Quota};
use crate::error::ApiError;
use crate::revocation::{RedisAnswer, RedisUnavailable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    Local,
    Open,
    Closed,
}

/// A named limit and how its bucket is chosen.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: &'static str,
    pub quota: Quota,
}

#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub failure_mode: FailureMode,
    pub redis_timeout: Duration,
    pub auth: Policy,
    pub api: Policy,
    pub global: Policy,
}

impl RateLimitConfig {
    pub fn from_env(env: &Env, environment: Environment) -> Self {
        let enabled = env.bool_or("RATE_LIMIT_ENABLED", true);
        if !enabled && environment == Environment::Production {
            env.problem(
                "RATE_LIMIT_ENABLED",
                "=false is for benchmarks only and is refused when APP_ENV=production",
            );
        }
        let failure_mode = match env.one_of("RATE_LIMIT_FAILURE_MODE", "local", &["local", "open", "closed"]) {
            "open" => FailureMode::Open,
            "closed" => FailureMode::Closed,
            _ => FailureMode::Local,
        };
        let quota = |limit_var: &str, limit: u32, window_var: &str, window: u64, burst_var: &str, burst: u32| {
            let limit = env.int_in(limit_var, limit, 1, 1_000_000);
            let window = env.seconds_in(window_var, window, 1, 86_400);
            let burst = env.int_in(burst_var, burst, 1, 1_000_000);
            Quota { limit, window, burst }
        };
        Self {
            enabled,
            failure_mode,
            redis_timeout: env.millis_in("RATE_LIMIT_REDIS_TIMEOUT_MS", 50, 1, 5000),
            auth: Policy {
                name: "auth",
                quota: quota(
                    "AUTH_RATE_LIMIT_MAX_REQUESTS",
                    5,
                    "AUTH_RATE_LIMIT_WINDOW",
                    60,
                    "AUTH_RATE_LIMIT_BURST",
                    3,
                ),
            },
            api: Policy {
                name: "api",
                quota: quota(
                    "RATE_LIMIT_MAX_REQUESTS",
                    100,
                    "RATE_LIMIT_WINDOW",
                    60,
                    "RATE_LIMIT_BURST",
                    20,
                ),
            },
            global: Policy {
                name: "global",
                quota: quota(
                    "GLOBAL_RATE_LIMIT_MAX_REQUESTS",
                    2000,
                    "GLOBAL_RATE_LIMIT_WINDOW",
                    300,
                    "GLOBAL_RATE_LIMIT_BURST",
                    2000,
                ),
            },
        }
    }
}

/// The limiter every worker shares.
#[derive(Clone)]
pub struct Limiter {
    config: Arc<RateLimitConfig>,
    redis: Option<deadpool_redis::Pool>,
    keys: RedisKeys,
    script_all: Arc<redis::Script>,
    local: Arc<Mutex<HashMap<String, u64>>>,
    violations: IntCounterVec,
    fallbacks: IntCounterVec,
}

/// Limits the in-process fallback's memory: past this many buckets, expired ones are dropped.
const LOCAL_PRUNE_AT: usize = 100_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Limiter {
    pub fn new(
        config: RateLimitConfig,
        redis: Option<deadpool_redis::Pool>,
        keys: RedisKeys,
        registry: &Registry,
    ) -> prometheus::Result<Self> {
        let violations = IntCounterVec::new(
            Opts::new(
                "rate_limit_violations_total",
                "Requests refused by a rate limit, by policy",
            ),
            &["policy"],
        )?;
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "rate_limit_fallback_total",
                "Rate-limit decisions made without Redis, by failure mode",
            ),
            &["mode"],
        )?;
        registry.register(Box::new(violations.clone()))?;
        registry.register(Box::new(fallbacks.clone()))?;
        Ok(Self {
            config: Arc::new(config),
            redis,
            keys,
            script_all: Arc::new(redis::Script::new(gcra::SCRIPT_ALL)),
            local: Arc::new(Mutex::new(HashMap::new())),
            violations,
            fallbacks,
        })
    }

    /// The policies a request is subject to, with their bucket keys, most specific first.
    fn policies(&self, req: &ServiceRequest, user: Option<&str>) -> Vec<(&Policy, String)> {
        let ip = req
            .app_data::<web::Data<crate::routes::AppState>>()
            .and_then(|state| crate::client_ip::of_service_request(&state.trusted_proxies, req))
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let path = req.path();
        let mut out = Vec::with_capacity(2);
        if AUTH_ROUTES.contains(&path) {
            out.push((&self.config.auth, format!("rl:auth:{ip}:{path}")));
        } else if path.starts_with("/v1/") {
            let who = user.map_or_else(|| format!("ip:{ip}"), |u| format!("user:{u}"));
            out.push((&self.config.api, format!("rl:api:{who}")));
        }
        out.push((&self.config.global, format!("rl:global:{ip}")));
        out
    }

    /// Every check of one request, and its token's revocation state, in one Redis round trip.
    /// Without Redis each policy goes to the failure mode and the revocation state is unknown.
    async fn decide_all(
        &self,
        checks: &[(&Policy, String)],
        revocation: Option<[String; 3]>,
    ) -> (Vec<Option<Decision>>, Option<RedisAnswer>) {
        if let Some(pool) = &self.redis {
            let with_rev = revocation.is_some();
            let mut invocation = self.script_all.prepare_invoke();
            invocation.arg(checks.len());
            for (policy, key) in checks {
                invocation
                    .key(self.keys.other(key))
                    .arg(policy.quota.emission_ms())
                    .arg(policy.quota.capacity_ms());
            }
            for key in revocation.iter().flatten() {
                invocation.key(key);
            }
            invocation.arg(u8::from(with_rev));
            let call = async {
                let mut conn = pool.get().await.ok()?;
                invocation.invoke_async::<Vec<i64>>(&mut conn).await.ok()
            };
            if let Ok(Some(out)) = tokio::time::timeout(self.config.redis_timeout, call).await
                && out.len() == checks.len() * 4 + if with_rev { 3 } else { 0 }
            {
                let n = |v: i64| u64::try_from(v).unwrap_or(0);
                let decisions = out
                    .chunks(4)
                    .take(checks.len())
                    .map(|c| {
                        Some(Decision {
                            allowed: c[0] == 1,
                            remaining: n(c[1]),
                            reset_ms: n(c[2]),
                            retry_after_ms: n(c[3]),
                        })
                    })
                    .collect();
                let rev = with_rev.then(|| {
                    let r = &out[checks.len() * 4..];
                    RedisAnswer {
                        revoked: r[0] == 1 || r[1] == 1,
                        not_before: u64::try_from(r[2]).ok(),
                    }
                });
                return (decisions, rev);
            }
        }
        let mut decisions = Vec::with_capacity(checks.len());
        for (policy, key) in checks {
            decisions.push(self.fallback(policy, key));
        }
        (decisions, None)
    }

    #[cfg(test)]
    async fn decide(&self, policy: &Policy, key: &str) -> Option<Decision> {
        self.decide_all(&[(policy, key.to_owned())], None)
            .await
            .0
            .pop()
            .flatten()
    }

    /// No Redis answer (or none configured): the failure mode decides.
    fn fallback(&self, policy: &Policy, key: &str) -> Option<Decision> {
        let q = policy.quota;
        let mode = self.config.failure_mode;
        let label = match mode {
            FailureMode::Local => "local",
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
        };
        if self.redis.is_some() {
            self.fallbacks.with_label_values(&[label]).inc();
        }
        match mode {
            FailureMode::Open => None,
            FailureMode::Closed => Some(Decision {
                allowed: false,
                remaining: 0,
                reset_ms: 1000,
                retry_after_ms: 1000,
            }),
            FailureMode::Local => {
                let now = now_ms();
                let mut buckets = self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if buckets.len() >= LOCAL_PRUNE_AT {
                    buckets.retain(|_, tat| *tat > now);
                }
                let (d, tat) = gcra::decide(buckets.get(key).copied(), now, &q);
                if let Some(tat) = tat {
                    buckets.insert(key.to_owned(), tat);
                }
                Some(d)
            }
        }
    }
}

/// Routes of the `auth` policy: 5 per minute per address and route.
const AUTH_ROUTES: [&str; 6] = [
    "/v1/auth/login",
    "/v1/auth/register",
    "/v1/auth/refresh",
    "/v1/auth/password-reset",
    "/v1/auth/password-reset/confirm",
    "/v1/auth/verify-email",
];

fn secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

fn announce(headers: &mut actix_web::http::header::HeaderMap, policy: &Policy, d: &Decision) {
    let q = policy.quota;
    let pairs = [
        (
            "ratelimit-policy",
            format!("\"{}\";q={};w={}", policy.name, q.limit, q.window.as_secs()),
        ),
        (
            "ratelimit",
            format!("\"{}\";r={};t={}", policy.name, d.remaining, secs(d.reset_ms)),
        ),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
}

/// Verified claims, when the request carried a valid bearer token; the `Authenticated` extractor
/// reuses them instead of verifying twice.
#[derive(Clone)]
pub struct VerifiedClaims(pub service_kit::auth::AccessClaims);

pub async fn limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(limiter) = req.app_data::<web::Data<Limiter>>().cloned() else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    if !limiter.config.enabled {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    }
    // Per-user buckets need a verified user: an unverified `sub` would let anyone drain a
    // victim's quota. A bad token is limited by address and refused later by the extractor.
    let mut user = None;
    if let (Some(state), Some(value)) = (
        req.app_data::<web::Data<crate::routes::AppState>>(),
        req.headers().get("authorization").and_then(|v| v.to_str().ok()),
    ) && let Ok(token) = service_kit::auth::bearer(Some(value))
        && let Ok(claims) = state.verifier.verify(token).await
    {
        user = Some(claims.sub.clone());
        req.extensions_mut().insert(VerifiedClaims(claims));
    }
    let revocation_keys = req.extensions().get::<VerifiedClaims>().map(|VerifiedClaims(c)| {
        [
            limiter.keys.jti(&c.jti),
            limiter.keys.session(&c.sid),
            limiter.keys.not_before(&c.sub),
        ]
    });
    let checks = limiter.policies(&req, user.as_deref());
    let (decisions, revocation) = limiter.decide_all(&checks, revocation_keys).await;
    match revocation {
        Some(r) => {
            req.extensions_mut().insert(r);
        }
        // The script failed: the revocation check need not wait for Redis a second time.
        None if limiter.redis.is_some() => {
            req.extensions_mut().insert(RedisUnavailable);
        }
        None => {}
    }
    let mut shown: Option<(Policy, Decision)> = None;
    for ((policy, _), d) in checks.iter().zip(decisions) {
        let Some(d) = d else { continue };
        if !d.allowed {
            limiter.violations.with_label_values(&[policy.name]).inc();
            tracing::info!(
                policy = policy.name,
                retry_after_s = secs(d.retry_after_ms),
                "rate limited"
            );
            let mut api = ApiError::coded(
                service_kit::errors::ErrorCode::RateLimitExceeded,
                "Too many requests; slow down.",
            );
            api.retry_after = Some(secs(d.retry_after_ms).max(1) as u32);
            let mut res = api.error_response();
            announce(res.headers_mut(), policy, &d);
            return Ok(req.into_response(res));
        }
        if shown.is_none() {
            shown = Some(((*policy).clone(), d));
        }
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    if let Some((policy, d)) = shown
        && res.status() != StatusCode::TOO_MANY_REQUESTS
    {
        announce(res.headers_mut(), &policy, &d);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: FailureMode) -> RateLimitConfig {
        let q = Quota {
            limit: 5,
            window: Duration::from_secs(60),
            burst: 3,
        };
        RateLimitConfig {
            enabled: true,
            failure_mode: mode,
            redis_timeout: Duration::from_millis(50),
            auth: Policy { name: "auth", quota: q },
            api: Policy { name: "api", quota: q },
            global: Policy {
                name: "global",
                quota: q,
            },
        }
    }

    /// A Redis that is not there (nothing listens on port 1).
    fn dead_redis() -> Option<deadpool_redis::Pool> {
        deadpool_redis::Config::from_url("redis://127.0.0.1:1")
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .ok()
    }

    #[tokio::test]
    async fn without_redis_the_failure_mode_decides_and_is_counted() {
        let registry = Registry::new();
        let local = Limiter::new(
            config(FailureMode::Local),
            dead_redis(),
            RedisKeys::default(),
            &registry,
        )
        .expect("limiter");
        let policy = local.config.auth.clone();
        let allowed: Vec<bool> = futures_util::future::join_all((0..4).map(|_| local.decide(&policy, "k")))
            .await
            .into_iter()
            .map(|d| d.is_some_and(|d| d.allowed))
            .collect();
        assert_eq!(
            allowed.iter().filter(|a| **a).count(),
            3,
            "the local limiter keeps the same burst"
        );
        assert_eq!(local.fallbacks.with_label_values(&["local"]).get(), 4);

        let registry = Registry::new();
        let open =
            Limiter::new(config(FailureMode::Open), dead_redis(), RedisKeys::default(), &registry).expect("limiter");
        assert!(
            open.decide(&policy, "k").await.is_none(),
            "open lets requests through unlimited"
        );

        let registry = Registry::new();
        let closed = Limiter::new(
            config(FailureMode::Closed),
            dead_redis(),
            RedisKeys::default(),
            &registry,
        )
        .expect("limiter");
        assert!(
            closed.decide(&policy, "k").await.is_some_and(|d| !d.allowed),
            "closed refuses"
        );
    }
}
