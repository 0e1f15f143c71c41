//! Rate limiting at the edge: policies per route class, decided for each request by one atomic
//! Redis script (GCRA) that also reads the token's revocation keys, announced with the IETF
//! `RateLimit-Policy` / `RateLimit` fields, refused with 429 `RATE_LIMIT_EXCEEDED` and
//! `Retry-After`. An address that keeps hitting the limits is reported as a security event. When
//! Redis is down or slow, `RATE_LIMIT_FAILURE_MODE` decides: `local` (an in-process limiter with
//! the same policies), `open` or `closed`.

mod batch;
mod config;
pub mod gcra;
mod redis_clock;

pub use self::config::{FailureMode, Policy, RateLimitConfig};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _, ResponseError as _, web};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use service_kit::revocation::RedisKeys;

use self::batch::Batcher;
use self::gcra::Decision;
use self::redis_clock::RedisClock;
use crate::error::ApiError;
use crate::redis_link::{Miss, OutageLog, RedisLink};
use crate::revocation::{RedisAnswer, RedisUnavailable};

/// The limiter every worker shares.
#[derive(Clone)]
pub struct Limiter {
    /// The policies in force; a request takes one snapshot (`RATE_LIMIT_CONFIG_FILE` may change).
    config: Arc<RwLock<Arc<RateLimitConfig>>>,
    redis: Option<RedisLink>,
    /// The worker's decisions on their way to Redis, in batches.
    batcher: Option<Arc<Batcher>>,
    keys: RedisKeys,
    script_decide: Arc<redis::Script>,
    script_refund: Arc<redis::Script>,
    batch_sizes: Histogram,
    /// Redis's clock against ours, for the deadline of each decision script.
    redis_clock: Arc<RedisClock>,
    /// The in-process fallback: TAT (µs) per bucket, and refusals per address (count, window end µs).
    local: Arc<Mutex<HashMap<String, u64>>>,
    local_refusals: Arc<Mutex<HashMap<String, (u64, u64)>>>,
    violations: IntCounterVec,
    fallbacks: IntCounterVec,
    fallback_log: Arc<OutageLog>,
    security_events: IntCounterVec,
}

/// Limits the in-process fallback's memory: past this many buckets, expired ones are dropped.
const LOCAL_PRUNE_AT: usize = 100_000;

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

/// What Redis made of a decision script.
enum Script {
    Answered(Vec<i64>),
    /// Redis ran it after its deadline (Redis's clock, µs) and changed nothing.
    TooLate(i64),
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

fn drop_expired<V>(map: &mut HashMap<String, V>, live: impl Fn(&V) -> bool) {
    if map.len() >= LOCAL_PRUNE_AT {
        map.retain(|_, v| live(v));
        if map.len() >= LOCAL_PRUNE_AT {
            map.clear();
        }
    }
}

impl Limiter {
    pub fn new(
        config: RateLimitConfig,
        redis: Option<RedisLink>,
        keys: RedisKeys,
        registry: &Registry,
    ) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let batch_sizes = Histogram::with_opts(
            HistogramOpts::new(
                "rate_limit_redis_batch_size",
                "Rate-limit decisions per Redis script call (a worker's requests gathered while its previous call was out)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, batch::MAX_BATCH as f64]),
        )?;
        registry.register(Box::new(batch_sizes.clone()))?;
        let limiter = Self {
            config: Arc::new(RwLock::new(Arc::new(config))),
            redis: None,
            batcher: None,
            keys,
            script_decide: Arc::new(redis::Script::new(gcra::SCRIPT_DECIDE)),
            script_refund: Arc::new(redis::Script::new(gcra::SCRIPT_REFUND)),
            batch_sizes,
            redis_clock: Arc::default(),
            local: Arc::new(Mutex::new(HashMap::new())),
            local_refusals: Arc::new(Mutex::new(HashMap::new())),
            violations: counter(
                "rate_limit_violations_total",
                "Requests refused by a rate limit, by policy",
                &["policy"],
            )?,
            fallbacks: counter(
                "rate_limit_fallback_total",
                "Rate-limit decisions made without Redis, by failure mode",
                &["mode"],
            )?,
            fallback_log: Arc::default(),
            security_events: counter(
                "security_events_total",
                "Security events raised by the gateway, by type and severity",
                &["event_type", "severity"],
            )?,
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
        let ip = req
            .app_data::<web::Data<crate::routes::AppState>>()
            .and_then(|state| crate::client_ip::of_service_request(&state.trusted_proxies, req))
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let path = req.path();
        let (kind, who) = user.map_or(("ip:", ip.as_str()), |u| ("user:", u));
        let mut policies = Vec::with_capacity(2);
        // Buckets hold microseconds under `gcra:`; an older gateway's millisecond buckets (`rl:`)
        // are never read, so the two never misread each other during a rolling upgrade.
        if AUTH_ROUTES.contains(&path) {
            policies.push((config.auth.clone(), self.keys.key(&["gcra:auth:", &ip, ":", path])));
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

    /// What the decision script is asked for one request.
    fn script_decision(&self, checks: &Checks, revocation: Option<[String; 4]>) -> batch::Decision {
        batch::Decision {
            buckets: checks
                .policies
                .iter()
                .map(|(policy, key)| (key.clone(), policy.quota.emission_us(), policy.quota.capacity_us()))
                .collect(),
            revocation,
            refusals: (
                self.keys.key(&["rl:refusals:", &checks.ip]),
                checks.config.abuse_window.as_secs(),
            ),
        }
    }

    /// One request's decision in the worker's next [`gcra::SCRIPT_DECIDE`] batch, sent at
    /// `sent_us`, with the deadline after which Redis changes nothing: by then this gateway has
    /// stopped waiting and decided without it.
    async fn run_script(
        &self,
        batcher: &Batcher,
        decision: &Arc<batch::Decision>,
        timeout: std::time::Duration,
        sent_us: u64,
    ) -> Result<Script, Miss> {
        let deadline_us = self.redis_clock.deadline(sent_us, timeout);
        let out = batcher.decide(decision.clone(), deadline_us, timeout).await?;
        Ok(match out[..] {
            [-1, .., redis_now] => Script::TooLate(redis_now),
            _ => Script::Answered(out),
        })
    }

    /// The script's answer: per policy how far its bucket's TAT runs ahead of now with this
    /// request counted, then the revocation state (when asked), then the address's refusals, then
    /// Redis's clock.
    fn outcome_from_redis(out: &[i64], policies: &[(Policy, String)], with_rev: bool) -> Outcome {
        let num = |v: i64| u64::try_from(v).unwrap_or(0);
        let n = policies.len();
        let decisions = policies
            .iter()
            .zip(out)
            .map(|((policy, _), &ahead)| Some(decision_from_ahead(num(ahead), &policy.quota)))
            .collect();
        let revocation = with_rev.then(|| {
            let (flags, not_before) = (out[n], out[n + 1]);
            RedisAnswer {
                revoked: flags & 0b11 != 0,
                not_before: u64::try_from(not_before).ok(),
                complete: flags & 0b100 != 0,
            }
        });
        Outcome {
            decisions,
            revocation,
            via_redis: true,
            refusals: out.len().checked_sub(2).map_or(0, |i| num(out[i])),
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

    /// No Redis answer (or none configured): the failure mode decides.
    fn fallback(&self, config: &RateLimitConfig, policy: &Policy, key: &str) -> Option<Decision> {
        let q = policy.quota;
        let mode = config.failure_mode;
        if self.redis.is_some() {
            self.fallbacks.with_label_values(&[mode.name()]).inc();
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
                let now = now_us();
                let mut buckets = self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                drop_expired(&mut buckets, |tat| *tat > now);
                let (d, tat) = gcra::decide(buckets.get(key).copied(), now, &q);
                if let Some(tat) = tat {
                    buckets.insert(key.to_owned(), tat);
                }
                Some(d)
            }
        }
    }

    fn count_refusal_locally(&self, config: &RateLimitConfig, ip: &str) -> u64 {
        let now = now_us();
        let window = config.abuse_window.as_micros() as u64;
        let mut counts = self
            .local_refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop_expired(&mut counts, |(_, end)| *end > now);
        let entry = counts.entry(ip.to_owned()).or_insert((0, now + window));
        if entry.1 <= now {
            *entry = (0, now + window);
        }
        entry.0 += 1;
        entry.0
    }

    /// Gives back a successful request's emission of `policy` (the failures-only mode), where it
    /// was spent. Returns the bucket's state afterwards, to announce.
    async fn refund(&self, config: &RateLimitConfig, policy: &Policy, key: &str, via_redis: bool) -> Option<Decision> {
        let q = policy.quota;
        if via_redis {
            let link = self.redis.as_ref()?;
            let mut invocation = self.script_refund.prepare_invoke();
            invocation.key(key).arg(q.emission_us()).arg(q.capacity_us());
            let invocation = &invocation;
            let refunded = link
                .query(config.redis_timeout, |mut conn| async move {
                    invocation.invoke_async::<(u64, u64)>(&mut conn).await
                })
                .await;
            let (remaining, reset_us) = match refunded {
                Ok(answer) => answer,
                Err(miss) => {
                    tracing::warn!(policy = policy.name, cause = %miss, "could not refund a successful request in Redis");
                    return None;
                }
            };
            return Some(Decision {
                allowed: true,
                remaining,
                reset_ms: gcra::ms(reset_us),
                retry_after_ms: 0,
            });
        }
        if config.failure_mode != FailureMode::Local {
            return None;
        }
        let now = now_us();
        let mut buckets = self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tat, remaining) = gcra::refund(buckets.get(key).copied(), now, &q);
        let reset_ms = tat.map_or(0, |tat| gcra::ms(tat - now));
        match tat {
            Some(tat) => buckets.insert(key.to_owned(), tat),
            None => buckets.remove(key),
        };
        Some(Decision {
            allowed: true,
            remaining,
            reset_ms,
            retry_after_ms: 0,
        })
    }

    /// One security event when an address reaches the threshold of refusals in a window: the
    /// shared counter crosses it exactly once, so there is one event per window however many
    /// gateways there are.
    fn report_abuse(&self, config: &RateLimitConfig, ip: &str, policy: &Policy, refusals: u64) {
        if refusals != config.abuse_threshold {
            return;
        }
        self.security_events
            .with_label_values(&["rate_limit_abuse", "medium"])
            .inc();
        tracing::warn!(
            event_type = "rate_limit_abuse",
            severity = "medium",
            client_ip = ip,
            policy = policy.name,
            refusals,
            window_s = config.abuse_window.as_secs(),
            "security event: an address keeps hitting the rate limits"
        );
    }
}

/// Watches `RATE_LIMIT_CONFIG_FILE`: a changed file that reads the same twice in a row (so a file
/// caught half-written is not applied) and is valid is put in force for the next requests; an
/// invalid or unreadable one is refused (logged, counted) and the policies in force stay.
/// `redis_timeout_ms` changes at the next start only (revocation lookups share it).
pub fn watch_policy_file(
    limiter: Limiter,
    environment: service_kit::config::Environment,
    registry: &Registry,
) -> prometheus::Result<()> {
    let start = limiter.config();
    let (Some(path), Some(mut applied)) = (start.source.clone(), start.source_text.clone()) else {
        return Ok(());
    };
    let reloads = IntCounterVec::new(
        Opts::new(
            "rate_limit_config_reloads_total",
            "Changes of the rate-limit policy file, by result (applied, refused)",
        ),
        &["result"],
    )?;
    registry.register(Box::new(reloads.clone()))?;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(start.reload_every);
        // A changed text seen once, applied when the next check reads it again.
        let mut candidate: Option<String> = None;
        let mut unreadable = false;
        loop {
            ticker.tick().await;
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => {
                    unreadable = false;
                    text
                }
                Err(e) => {
                    if !unreadable {
                        reloads.with_label_values(&["refused"]).inc();
                        tracing::error!(file = path, error = %e, "rate-limit policy file cannot be read; the policies in force stay");
                    }
                    unreadable = true;
                    continue;
                }
            };
            if text == applied || candidate.as_ref() != Some(&text) {
                candidate = (text != applied).then_some(text);
                continue;
            }
            candidate = None;
            applied = text.clone();
            let env = service_kit::config::Env::from_process();
            let mut next = RateLimitConfig::from_file_text(&env, environment, text);
            match env.finish() {
                Ok(()) => {
                    next.redis_timeout = limiter.config().redis_timeout;
                    next.log("rate-limit policies reloaded");
                    limiter.replace_config(next);
                    reloads.with_label_values(&["applied"]).inc();
                }
                Err(e) => {
                    reloads.with_label_values(&["refused"]).inc();
                    tracing::error!(file = path, error = %e, "rate-limit policy file changed but is invalid; the policies in force stay");
                }
            }
        }
    });
    Ok(())
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

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

fn announce(headers: &mut actix_web::http::header::HeaderMap, policy: &Policy, d: &Decision) {
    let q = policy.quota;
    let fields = [
        (RATELIMIT_POLICY, [("q", u64::from(q.limit)), ("w", q.window.as_secs())]),
        (RATELIMIT, [("r", d.remaining), ("t", secs(d.reset_ms))]),
    ];
    for (name, params) in fields {
        if let Some(value) = field(policy.name, params) {
            headers.insert(name, value);
        }
    }
}

/// `"policy";k=v;k=v`, the shape of both fields, built without `format!` (on every request).
fn field(policy: &str, params: [(&str, u64); 2]) -> Option<HeaderValue> {
    let mut numbers = itoa::Buffer::new();
    let mut value = String::with_capacity(policy.len() + 48);
    value.push('"');
    value.push_str(policy);
    value.push('"');
    for (key, n) in params {
        value.push(';');
        value.push_str(key);
        value.push('=');
        value.push_str(numbers.format(n));
    }
    HeaderValue::try_from(value).ok()
}

/// A bucket's decision from how far the script found its TAT ahead of now with the request
/// counted: the same arithmetic as [`gcra::decide`], on a clock that reads 0 now.
fn decision_from_ahead(ahead_us: u64, quota: &gcra::Quota) -> Decision {
    let tat = ahead_us.saturating_sub(quota.emission_us());
    gcra::decide(Some(tat), 0, quota).0
}

/// Verified claims, when the request carried a valid bearer token; the `Authenticated` extractor
/// reuses them instead of verifying twice.
#[derive(Clone)]
pub struct VerifiedClaims(pub Arc<service_kit::auth::AccessClaims>);

pub async fn limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(limiter) = req.app_data::<web::Data<Limiter>>().cloned() else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    let config = limiter.config();
    if !config.enabled {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    }
    // Per-user buckets need a verified user: an unverified `sub` would let anyone drain a
    // victim's quota. A bad token is limited by address and refused later by the extractor.
    let mut claims = None;
    if let (Some(state), Some(value)) = (
        req.app_data::<web::Data<crate::routes::AppState>>(),
        req.headers().get("authorization").and_then(|v| v.to_str().ok()),
    ) && let Ok(token) = service_kit::auth::bearer(Some(value))
        && let Ok(verified) = state.verifier.verify(token).await
    {
        req.extensions_mut().insert(VerifiedClaims(verified.clone()));
        claims = Some(verified);
    }
    let revocation_keys = claims.as_deref().map(|c| crate::revocation::keys_for(&limiter.keys, c));
    let checks = limiter.policies(config, &req, claims.as_deref().map(|c| c.sub.as_str()));
    let outcome = limiter.decide_all(&checks, revocation_keys).await;
    match outcome.revocation {
        Some(r) => {
            req.extensions_mut().insert(r);
        }
        // The script failed: the revocation check need not wait for Redis a second time.
        None if limiter.redis.is_some() => {
            req.extensions_mut().insert(RedisUnavailable);
        }
        None => {}
    }
    let mut shown: Option<(&Policy, &str, Decision)> = None;
    for ((policy, key), d) in checks.policies.iter().zip(outcome.decisions) {
        let Some(d) = d else { continue };
        if !d.allowed {
            limiter.violations.with_label_values(&[policy.name]).inc();
            limiter.report_abuse(&checks.config, &checks.ip, policy, outcome.refusals);
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
            shown = Some((policy, key, d));
        }
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    if let Some((policy, key, mut d)) = shown {
        // Failures-only mode: a success gives its emission back.
        if policy.name == checks.config.auth.name
            && checks.config.auth_skip_successful
            && res.status().as_u16() < 400
            && let Some(after) = limiter.refund(&checks.config, policy, key, outcome.via_redis).await
        {
            d = after;
        }
        if res.status() != StatusCode::TOO_MANY_REQUESTS {
            announce(res.headers_mut(), policy, &d);
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::gcra::Quota;
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
            auth_skip_successful: false,
            api: Policy { name: "api", quota: q },
            events: Policy {
                name: "events",
                quota: q,
            },
            global: Policy {
                name: "global",
                quota: q,
            },
            abuse_threshold: 3,
            abuse_window: Duration::from_secs(60),
            source: None,
            source_text: None,
            reload_every: Duration::from_secs(10),
        }
    }

    /// Redis answers how far each bucket's TAT runs ahead of now; the gateway's reading of it is
    /// the decision the same arithmetic makes in process, at and around every boundary.
    #[test]
    fn a_bucket_read_from_how_far_ahead_it_runs_is_the_in_process_decision() {
        const NOW: u64 = 1_800_000_000_000_000;
        for quota in [
            config(FailureMode::Local).api.quota,
            gcra::Quota {
                limit: 1_000_000,
                window: Duration::from_secs(1),
                burst: 5,
            },
            gcra::Quota {
                limit: 7,
                window: Duration::from_secs(60),
                burst: 1,
            },
        ] {
            let (t, cap) = (quota.emission_us(), quota.capacity_us());
            let mut tats = vec![None, Some(0), Some(NOW - 1), Some(NOW)];
            for edge in [cap - t, cap] {
                tats.extend([NOW + edge - 1, NOW + edge, NOW + edge + 1].map(Some));
            }
            tats.push(Some(NOW + cap + 12_345_678));
            for tat in tats {
                let ahead = tat.unwrap_or(NOW).max(NOW) + t - NOW;
                assert_eq!(
                    decision_from_ahead(ahead, &quota),
                    gcra::decide(tat, NOW, &quota).0,
                    "TAT {tat:?} under {quota:?}"
                );
            }
        }
    }

    /// A limiter whose Redis is not there (nothing listens on port 1).
    fn without_redis(mode: FailureMode) -> Limiter {
        let dead = RedisLink::new(&"redis://127.0.0.1:1".into()).ok();
        Limiter::new(config(mode), dead, RedisKeys::default(), &Registry::new()).expect("limiter")
    }

    #[tokio::test]
    async fn without_redis_the_failure_mode_decides_and_is_counted() {
        let local = without_redis(FailureMode::Local);
        let policy = local.config().auth.clone();
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

        let open = without_redis(FailureMode::Open);
        assert!(
            open.decide(&policy, "k").await.is_none(),
            "open lets requests through unlimited"
        );

        let closed = without_redis(FailureMode::Closed);
        assert!(
            closed.decide(&policy, "k").await.is_some_and(|d| !d.allowed),
            "closed refuses"
        );
    }

    #[tokio::test]
    async fn without_redis_refunds_and_abuse_counting_stay_local() {
        let local = without_redis(FailureMode::Local);
        let policy = local.config().auth.clone();
        for _ in 0..3 {
            assert!(local.decide(&policy, "k").await.is_some_and(|d| d.allowed));
        }
        // A refund gives exactly one request back.
        let after = local
            .refund(&local.config(), &policy, "k", false)
            .await
            .expect("refunded");
        assert_eq!(after.remaining, 1);
        assert!(local.decide(&policy, "k").await.is_some_and(|d| d.allowed));
        assert!(local.decide(&policy, "k").await.is_some_and(|d| !d.allowed));

        // Refusals of one address are counted; the event fires once, at the threshold (3).
        let checks = Checks {
            ip: "192.0.2.7".to_owned(),
            config: local.config(),
            policies: vec![(policy.clone(), "k".to_owned())],
        };
        let mut counts = Vec::new();
        for _ in 0..5 {
            let outcome = local.decide_all(&checks, None).await;
            counts.push(outcome.refusals);
            local.report_abuse(&checks.config, &checks.ip, &policy, outcome.refusals);
        }
        assert_eq!(counts, vec![1, 2, 3, 4, 5]);
        assert_eq!(
            local
                .security_events
                .with_label_values(&["rate_limit_abuse", "medium"])
                .get(),
            1
        );
    }

    /// A limiter on the test Redis that `cargo xtask test` starts, in the closed mode: a decision
    /// made without Redis would refuse, so an allowed one is Redis's.
    fn on_test_redis() -> (RedisLink, Limiter) {
        let url = std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL: run the tests with `cargo xtask test`");
        let link = RedisLink::new(&url.into()).expect("url");
        let mut config = config(FailureMode::Closed);
        config.redis_timeout = Duration::from_secs(5);
        let limiter =
            Limiter::new(config, Some(link.clone()), RedisKeys::default(), &Registry::new()).expect("limiter");
        (link, limiter)
    }

    /// A decision script that runs after its caller stopped waiting changes nothing; one refused
    /// while its caller still waits (the clocks moved apart) is asked again, and spends once.
    #[tokio::test]
    async fn a_script_past_its_deadline_changes_nothing_and_a_moved_clock_is_learnt_again() {
        let (_, limiter) = on_test_redis();
        let policy = limiter.config().auth.clone();
        let key = format!("test:deadline:{}", uuid::Uuid::new_v4());
        let checks = Checks {
            ip: "192.0.2.9".to_owned(),
            config: limiter.config(),
            policies: vec![(policy.clone(), key.clone())],
        };
        // As if Redis's clock were 10 s behind ours: every deadline is past when a script runs.
        let behind = |limiter: &Limiter| {
            let now = now_us();
            limiter.redis_clock.relearn(now, now as i64 - 10_000_000);
        };
        behind(&limiter);
        let late = limiter
            .run_script(
                limiter.batcher.as_ref().expect("with Redis"),
                &Arc::new(limiter.script_decision(&checks, None)),
                Duration::from_secs(5),
                now_us(),
            )
            .await
            .expect("answered");
        assert!(matches!(late, Script::TooLate(_)), "refused past its deadline");

        behind(&limiter);
        let first = limiter.decide(&policy, &key).await.expect("decided");
        assert!(first.allowed);
        assert_eq!(
            first.remaining, 2,
            "the refused script spent nothing, the second ask once"
        );
        let learnt = limiter.redis_clock.deadline(now_us(), Duration::ZERO);
        assert!(
            learnt.abs_diff(now_us()) < 1_000_000,
            "the offset was learnt again from the refusal (same host: about zero)"
        );
        let second = limiter.decide(&policy, &key).await.expect("decided");
        assert_eq!((second.allowed, second.remaining), (true, 1));
    }

    /// Requests decided together share one script call, and each decision sees the buckets the
    /// ones before it in the batch spent: a burst of 3 admits exactly 3 of 40 concurrent
    /// requests, refusals count up one by one, and decisions with and without revocation keys in
    /// one call each get their own answer.
    #[tokio::test]
    async fn concurrent_decisions_go_out_in_batches_and_each_sees_the_ones_before_it() {
        let (link, limiter) = on_test_redis();
        let test = uuid::Uuid::new_v4();
        let checks = |ip: &str, key: &str| Checks {
            ip: format!("{ip}-{test}"),
            config: limiter.config(),
            policies: vec![(limiter.config().auth.clone(), format!("test:batch:{test}:{key}"))],
        };

        let same = checks("192.0.2.10", "same");
        let outcomes = futures_util::future::join_all((0..40).map(|_| limiter.decide_all(&same, None))).await;
        assert!(
            outcomes.iter().all(|o| o.via_redis),
            "Redis decided (closed mode refuses otherwise)"
        );
        let allowed: Vec<u64> = outcomes
            .iter()
            .filter_map(|o| o.decisions[0].filter(|d| d.allowed).map(|d| d.remaining))
            .collect();
        assert_eq!(allowed, vec![2, 1, 0], "the burst, counting down, and not one more");
        let refusals: Vec<u64> = outcomes.iter().map(|o| o.refusals).filter(|r| *r > 0).collect();
        assert_eq!(
            refusals,
            (1..=37).collect::<Vec<_>>(),
            "each refusal counted once, in order"
        );
        let (calls, decided) = (
            limiter.batch_sizes.get_sample_count(),
            limiter.batch_sizes.get_sample_sum(),
        );
        assert_eq!(decided, 40.0);
        // The test's runtime has one thread: all 40 are queued before the batching task runs.
        assert_eq!(calls, 1, "40 concurrent decisions took {calls} script calls");

        // One revoked token, one request without a token, one clean token, in one call.
        let mut conn = link.connection().await.expect("connected");
        let rev = |what: &str| -> [String; 4] {
            ["jti", "session", "nbf", "marker"].map(|k| format!("test:batch:{test}:{what}:{k}"))
        };
        let (revoked, session_ended, clean) = (rev("revoked"), rev("session-ended"), rev("clean"));
        let _: () = redis::pipe()
            .set(&revoked[0], 1)
            .set(&revoked[2], 1_700_000_000)
            .set(&revoked[3], "run")
            .set(&session_ended[1], 1)
            .set(&clean[3], "run")
            .query_async(&mut conn)
            .await
            .expect("stored");
        let (a, b, c, d) = (
            checks("192.0.2.11", "a"),
            checks("192.0.2.12", "b"),
            checks("192.0.2.13", "c"),
            checks("192.0.2.14", "d"),
        );
        let calls = limiter.batch_sizes.get_sample_count();
        let (a, b, c, d) = tokio::join!(
            limiter.decide_all(&a, Some(revoked)),
            limiter.decide_all(&b, None),
            limiter.decide_all(&c, Some(clean)),
            limiter.decide_all(&d, Some(session_ended)),
        );
        assert_eq!(
            limiter.batch_sizes.get_sample_count(),
            calls + 1,
            "one call for the four"
        );
        let token = a.revocation.expect("asked");
        assert!(token.revoked && token.complete);
        assert_eq!(token.not_before, Some(1_700_000_000));
        assert!(b.revocation.is_none());
        let token = c.revocation.expect("asked");
        assert!(!token.revoked && token.complete && token.not_before.is_none());
        let token = d.revocation.expect("asked");
        assert!(
            token.revoked && !token.complete && token.not_before.is_none(),
            "an ended session alone revokes; without the marker Redis does not hold them all"
        );
        for outcome in [&a, &b, &c, &d] {
            let first = outcome.decisions[0].map(|d| (d.allowed, d.remaining));
            assert_eq!(first, Some((true, 2)), "each address's own bucket");
        }

        // The largest batch of the largest decisions (a route's policy and the global one, with
        // revocation keys), every key distinct, goes as one call and fits Lua's stack; a second
        // batch right after it sees each of its buckets spent once.
        let full = |ip: usize| Checks {
            ip: format!("198.51.100.{ip}-{test}"),
            config: limiter.config(),
            policies: vec![
                (limiter.config().api.clone(), format!("test:batch:{test}:api:{ip}")),
                (
                    limiter.config().global.clone(),
                    format!("test:batch:{test}:global:{ip}"),
                ),
            ],
        };
        let everyone: Vec<Checks> = (0..batch::MAX_BATCH).map(full).collect();
        for round in [1, 2] {
            let calls = limiter.batch_sizes.get_sample_count();
            let outcomes = futures_util::future::join_all(
                everyone
                    .iter()
                    .enumerate()
                    .map(|(i, checks)| limiter.decide_all(checks, Some(rev(&format!("full{i}"))))),
            )
            .await;
            assert_eq!(
                limiter.batch_sizes.get_sample_count(),
                calls + 1,
                "one call for the batch"
            );
            for outcome in &outcomes {
                assert!(outcome.via_redis);
                let remaining: Vec<(bool, u64)> = outcome
                    .decisions
                    .iter()
                    .flatten()
                    .map(|d| (d.allowed, d.remaining))
                    .collect();
                let (api, global) = (limiter.config().api.quota, limiter.config().global.quota);
                let left = |q: &gcra::Quota| q.capacity_us() / q.emission_us() - round;
                assert_eq!(remaining, vec![(true, left(&api)), (true, left(&global))]);
                let token = outcome.revocation.expect("asked");
                assert!(!token.revoked && !token.complete && token.not_before.is_none());
            }
        }
    }

    /// New policies apply to the requests that start after the replacement.
    #[tokio::test]
    async fn replaced_policies_apply_to_the_next_requests() {
        let local = without_redis(FailureMode::Local);
        let mut wider = config(FailureMode::Local);
        wider.auth.quota.burst = 5;
        local.replace_config(wider);
        let policy = local.config().auth.clone();
        assert_eq!(policy.quota.burst, 5);
        let mut allowed = 0;
        for _ in 0..6 {
            if local.decide(&policy, "fresh").await.is_some_and(|d| d.allowed) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 5);
    }
}
