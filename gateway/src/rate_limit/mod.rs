//! Rate limiting at the edge: policies per route class, decided for each request by one atomic
//! Redis script (GCRA) that also reads the token's revocation keys, announced with the IETF
//! `RateLimit-Policy` / `RateLimit` fields, refused with 429 `RATE_LIMIT_EXCEEDED` and
//! `Retry-After`. An address that keeps hitting the limits is reported as a security event. When
//! Redis is down or slow, `RATE_LIMIT_FAILURE_MODE` decides: `local` (an in-process limiter with
//! the same policies), `open` or `closed`.
//!
//! `middleware` is the per-request flow, `redis` the one round trip, `local` the in-process
//! fallback, `watch` the policy file's reloads; `batch` gathers a worker's decisions into one script
//! call, `gcra` is the arithmetic, `config` the policies.

mod batch;
mod config;
pub mod gcra;
mod local;
mod middleware;
mod redis;
mod redis_clock;
#[cfg(test)]
mod tests;
mod watch;

pub use self::config::{FailureMode, Policy, RateLimitConfig};
pub use self::middleware::limit;
pub use self::watch::watch_policy_file;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::HttpMessage as _;
use actix_web::dev::ServiceRequest;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Registry};
use service_kit::metrics::{counter_vec_from_zero, register};
use service_kit::revocation::RedisKeys;

use self::batch::Batcher;
use self::gcra::Decision;
use self::redis::Script;
use self::redis_clock::RedisClock;
use crate::client_ip::ClientAddr;
use crate::edge::SecurityEvents;
use crate::redis_link::{Miss, OutageLog, RedisLink};
use crate::revocation::RedisAnswer;

/// The limiter every worker shares.
#[derive(Clone)]
pub struct Limiter {
    /// The policies in force; a request takes one snapshot (`RATE_LIMIT_CONFIG_FILE` may change).
    config: Arc<RwLock<Arc<RateLimitConfig>>>,
    redis: Option<RedisLink>,
    /// The worker's decisions on their way to Redis, in batches.
    batcher: Option<Arc<Batcher>>,
    keys: RedisKeys,
    script_decide: Arc<::redis::Script>,
    script_refund: Arc<::redis::Script>,
    batch_sizes: Histogram,
    /// Redis's clock against ours, for the deadline of each decision script.
    redis_clock: Arc<RedisClock>,
    /// The in-process fallback: TAT (µs) per bucket, and refusals per address (count, window end µs).
    local: Arc<Mutex<HashMap<String, u64>>>,
    local_refusals: Arc<Mutex<HashMap<String, (u64, u64)>>>,
    violations: IntCounterVec,
    fallbacks: IntCounterVec,
    fallback_log: Arc<OutageLog>,
    security_events: SecurityEvents,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// The checks of one request.
struct Checks {
    /// The client's address, as the buckets and the refusal counter know it.
    ip: String,
    /// The configuration the whole request is decided by.
    config: Arc<RateLimitConfig>,
    /// Policies with their buckets' Redis keys (`REDIS_KEY_PREFIX` included), most specific first.
    policies: Vec<(Policy, String)>,
}

/// What the one round trip (or the fallback) decided.
struct Outcome {
    /// Per policy; `None` when the failure mode is `open`.
    decisions: Vec<Option<Decision>>,
    /// The token's revocation state, when asked and Redis answered.
    revocation: Option<RedisAnswer>,
    /// Redis decided (else the fallback did).
    via_redis: bool,
    /// The address's refusals in the current window, counting this one (0 when allowed).
    refusals: u64,
}

impl Limiter {
    pub fn new(
        config: RateLimitConfig,
        redis: Option<RedisLink>,
        keys: RedisKeys,
        security_events: SecurityEvents,
        registry: &Registry,
    ) -> prometheus::Result<Self> {
        let batch_sizes = Histogram::with_opts(
            HistogramOpts::new(
                "rate_limit_redis_batch_size",
                "Rate-limit decisions per Redis script call (a worker's requests gathered while its previous call was out)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, batch::MAX_BATCH as f64]),
        )?;
        let batch_sizes = register(registry, batch_sizes)?;
        let limiter = Self {
            config: Arc::new(RwLock::new(Arc::new(config))),
            redis: None,
            batcher: None,
            keys,
            script_decide: Arc::new(::redis::Script::new(gcra::SCRIPT_DECIDE)),
            script_refund: Arc::new(::redis::Script::new(gcra::SCRIPT_REFUND)),
            batch_sizes,
            redis_clock: Arc::default(),
            local: Arc::new(Mutex::new(HashMap::new())),
            local_refusals: Arc::new(Mutex::new(HashMap::new())),
            // Every known series from 0, so the alerts see the first refusal or fallback.
            violations: counter_vec_from_zero(
                registry,
                "rate_limit_violations_total",
                "Requests refused by a rate limit, by policy",
                &["policy"],
                &[&["auth"], &["api"], &["events"], &["global"]],
            )?,
            fallbacks: counter_vec_from_zero(
                registry,
                "rate_limit_fallback_total",
                "Rate-limit decisions made without Redis, by failure mode",
                &["mode"],
                &[&["local"], &["open"], &["closed"]],
            )?,
            fallback_log: Arc::default(),
            security_events,
        };
        Ok(limiter.with_redis(redis))
    }

    /// The same limiter using one worker's Redis link and batches (buckets in process and
    /// counters shared).
    pub fn with_redis(&self, redis: Option<RedisLink>) -> Self {
        Self {
            batcher: redis
                .clone()
                .map(|link| Arc::new(Batcher::new(link, self.script_decide.clone(), self.batch_sizes.clone()))),
            redis,
            ..self.clone()
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<RateLimitConfig> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts new policies in force for the requests that start from now on.
    pub fn replace_config(&self, config: RateLimitConfig) {
        *self.config.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
    }

    /// The policies a request is subject to, with their bucket keys, most specific first.
    fn policies(&self, config: Arc<RateLimitConfig>, req: &ServiceRequest, user: Option<&str>) -> Checks {
        // An IPv6 client by its /64 (see `client_ip::bucket`).
        let ip = req
            .extensions()
            .get::<ClientAddr>()
            .and_then(|addr| addr.0)
            .map_or_else(|| "unknown".to_owned(), crate::client_ip::bucket);
        // What the router matches (percent-escapes decoded), not the raw path: a policy chosen
        // from another spelling of the route than the one served would not apply to it.
        let path = req.match_info().as_str();
        let (kind, who) = user.map_or(("ip:", ip.as_str()), |u| ("user:", u));
        let mut policies = Vec::with_capacity(2);
        // Buckets hold microseconds under `gcra:`; an older gateway's millisecond buckets (`rl:`)
        // are never read, so the two never misread each other during a rolling upgrade.
        if let Some(route) = auth_route(req.method(), path) {
            policies.push((config.auth.clone(), self.keys.key(&["gcra:auth:", &ip, ":", route])));
        } else if path == "/v1/events" || path.starts_with("/v1/events/") {
            policies.push((config.events.clone(), self.keys.key(&["gcra:events:", kind, who])));
        } else if path.starts_with("/v1/") {
            policies.push((config.api.clone(), self.keys.key(&["gcra:api:", kind, who])));
        }
        policies.push((config.global.clone(), self.keys.key(&["gcra:global:", &ip])));
        Checks { ip, config, policies }
    }

    /// Every check of one request, its token's revocation state and the address's refusal count,
    /// in one Redis round trip. Without Redis each policy goes to the failure mode and the
    /// revocation state is unknown.
    async fn decide_all(&self, checks: &Checks, revocation: Option<[String; 4]>) -> Outcome {
        let policies = &checks.policies;
        if let Some(batcher) = &self.batcher {
            let with_rev = revocation.is_some();
            let decision = Arc::new(self.script_decision(checks, revocation));
            let expected = decision.answer_len();
            let timeout = checks.config.redis_timeout;
            let started = std::time::Instant::now();
            let sent = now_us();
            let mut answer = self.run_script(batcher, &decision, timeout, sent).await;
            if let Ok(Script::TooLate(redis_now)) = answer {
                // Refused while we still wait: Redis's clock moved ahead of what we had learnt.
                // Asked again with the offset learnt from this answer (generous by its trip).
                self.redis_clock.relearn(sent, redis_now);
                let left = timeout.saturating_sub(started.elapsed());
                answer = self.run_script(batcher, &decision, left, now_us()).await;
            }
            let answer = answer.and_then(|script| match script {
                Script::Answered(out) if out.len() == expected => Ok(out),
                Script::Answered(out) => Err(Miss::Malformed(out.len())),
                Script::TooLate(_) => Err(Miss::ClockMoving),
            });
            match answer {
                Ok(out) => {
                    if self.fallback_log.recovered() {
                        tracing::info!("Redis decides the rate limits again");
                    }
                    if let Some(&redis_now) = out.last() {
                        self.redis_clock.observe(sent, redis_now);
                    }
                    return Self::outcome_from_redis(&out, policies, with_rev);
                }
                Err(miss) => {
                    if self.fallback_log.warn_now() {
                        tracing::warn!(
                            cause = %miss,
                            mode = checks.config.failure_mode.name(),
                            redis_timeout_ms = checks.config.redis_timeout.as_millis() as u64,
                            "rate limits are decided without Redis (RATE_LIMIT_FAILURE_MODE); each such decision is counted in rate_limit_fallback_total"
                        );
                    }
                }
            }
        }
        let decisions: Vec<Option<Decision>> = policies
            .iter()
            .map(|(policy, key)| self.fallback(&checks.config, policy, key))
            .collect();
        let refused = decisions.iter().flatten().any(|d| !d.allowed);
        let refusals = if refused && checks.config.failure_mode == FailureMode::Local {
            self.count_refusal_locally(&checks.config, &checks.ip)
        } else {
            0
        };
        Outcome {
            decisions,
            revocation: None,
            via_redis: false,
            refusals,
        }
    }

    #[cfg(test)]
    async fn decide(&self, policy: &Policy, key: &str) -> Option<Decision> {
        let checks = Checks {
            ip: "test".to_owned(),
            config: self.config(),
            policies: vec![(policy.clone(), key.to_owned())],
        };
        self.decide_all(&checks, None).await.decisions.pop().flatten()
    }

    /// Gives back a successful request's emission of `policy` (the failures-only mode), where it
    /// was spent. Returns the bucket's state afterwards, to announce.
    async fn refund(&self, config: &RateLimitConfig, policy: &Policy, key: &str, via_redis: bool) -> Option<Decision> {
        if via_redis {
            self.refund_in_redis(config, policy, key).await
        } else {
            self.refund_locally(config, policy, key)
        }
    }
}

/// Routes of the `auth` policy: 5 per minute per address and route. The signed-in ones check a
/// password or a code (re-authentication, MFA), so a stolen access token guesses no faster there
/// than a stranger at login.
const AUTH_ROUTES: [&str; 10] = [
    "/v1/auth/login",
    "/v1/auth/register",
    "/v1/auth/refresh",
    "/v1/auth/password-reset",
    "/v1/auth/password-reset/confirm",
    "/v1/auth/verify-email",
    "/v1/auth/logout-all",
    "/v1/me/password",
    "/v1/me/mfa/totp",
    "/v1/me/mfa/totp/confirm",
];

/// Removing a device checks a password or a code too: the `auth` policy, one bucket per address
/// whatever the device id.
const DEVICE_REMOVAL: (&str, &str) = ("/v1/me/devices/", "/v1/me/devices/{device_id}");

/// The `auth` route `path` is, named as its bucket is keyed.
fn auth_route<'a>(method: &actix_web::http::Method, path: &'a str) -> Option<&'a str> {
    if AUTH_ROUTES.contains(&path) {
        Some(path)
    } else if method == actix_web::http::Method::DELETE && path.starts_with(DEVICE_REMOVAL.0) {
        Some(DEVICE_REMOVAL.1)
    } else {
        None
    }
}
