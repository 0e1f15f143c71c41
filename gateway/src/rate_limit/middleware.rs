//! The middleware: the policies of a request, its one decision (with the caller's revocation
//! state, handed to `auth`), the 429 refusal, the `RateLimit` fields, and the abuse event.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _, ResponseError as _, web};
use service_kit::errors::ErrorCode;

use super::gcra::Decision;
use super::{Limiter, Policy, RateLimitConfig};
use crate::error::ApiError;
use crate::revocation::RedisLookup;
use crate::state::AppState;
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

/// Decides the request's policies in one round trip (with its caller's revocation lookup, left
/// in its extensions as the `auth::Caller`), refuses it with 429, or lets it through and
/// announces what is left (giving a success back in the failures-only mode).
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
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let claims = match &state {
        Some(state) => crate::auth::verified_claims(state, req.headers()).await,
        None => None,
    };
    let revocation_keys = claims.as_deref().map(|c| crate::revocation::keys_for(&limiter.keys, c));
    let checks = limiter.policies(config, &req, claims.as_deref().map(|c| c.sub.as_str()));
    let outcome = limiter.decide_all(&checks, revocation_keys).await;
    if let (Some(state), Some(claims)) = (state, claims) {
        let lookup = match outcome.revocation {
            Some(answer) => RedisLookup::Answered(answer),
            // The script failed: the revocation check need not wait for Redis a second time.
            None if limiter.redis.is_some() => RedisLookup::Failed,
            None => RedisLookup::NotAsked,
        };
        let caller = crate::auth::Caller::after_lookup(&state, claims, lookup);
        req.extensions_mut().insert(caller);
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
            let mut api = ApiError::coded(ErrorCode::RateLimitExceeded, "Too many requests; slow down.");
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

impl Limiter {
    /// One security event when an address reaches the threshold of refusals in a window: the
    /// shared counter crosses it exactly once, so there is one event per window however many
    /// gateways there are.
    pub(super) fn report_abuse(&self, config: &RateLimitConfig, ip: &str, policy: &Policy, refusals: u64) {
        if refusals != config.abuse_threshold {
            return;
        }
        self.security_events.raise("rate_limit_abuse", "medium");
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
