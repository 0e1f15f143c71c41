//! Who is calling. The one owner of "is this token good, and is it revoked": a request's
//! [`Caller`] (verified claims and a revocation [`Verdict`]) is made here, either by the rate
//! limiter through [`verified_claims`] and [`Caller::after_lookup`] (its Redis round trip already
//! read the token's revocation keys) or, when the limiter did not, by the `Authenticated`
//! extractor itself. The extractor then acts on the verdict alone, so a handler that takes
//! `Authenticated` cannot forget a check.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::http::header::HeaderMap;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use service_kit::auth::{AccessClaims, TokenError};
use service_kit::errors::ErrorCode;

use crate::error::ApiError;
use crate::revocation::{RedisLookup, RevocationCheck, Verdict};
use crate::state::AppState;

/// The verified caller of one request, in its extensions once known. Its fields are private and
/// [`Caller::after_lookup`] is its only constructor, so no other module can declare a token
/// unrevoked: every `Verdict` comes from `RevocationCheck::verdict`.
#[derive(Debug, Clone)]
pub struct Caller {
    claims: Arc<AccessClaims>,
    revocation: Verdict,
}

impl Caller {
    /// The caller of verified `claims`, with what the rate limiter's Redis round trip found
    /// (`NotAsked` when there was none for this token: the limiter has no Redis, or the token
    /// was verified by the extractor rather than the limiter).
    pub fn after_lookup(state: &AppState, claims: Arc<AccessClaims>, lookup: RedisLookup) -> Self {
        let revocation = state.revocation.verdict(&claims, lookup);
        Self { claims, revocation }
    }
}

/// The claims of the request's bearer token when it has a valid one (signature and claims; not
/// revocation, which the caller's [`Verdict`] carries).
pub async fn verified_claims(state: &AppState, headers: &HeaderMap) -> Option<Arc<AccessClaims>> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let token = service_kit::auth::bearer(Some(value)).ok()?;
    state.verifier.verify(token).await.ok()
}

/// Ok when the caller's token stands. A verdict not known yet is asked where it says.
async fn admit(revocation: &RevocationCheck, caller: &Caller, token: &str) -> Result<(), ApiError> {
    match caller.revocation {
        Verdict::Stands => Ok(()),
        Verdict::Revoked => Err(crate::revocation::revoked()),
        Verdict::Ask(source) => revocation.check(&caller.claims, token, source).await,
    }
}

/// A verified caller: the bearer value (forwarded to the service, which verifies it again) and
/// the token's claims (the roles it grants).
pub struct Authenticated {
    pub bearer: String,
    claims: Option<Arc<AccessClaims>>,
}

impl Authenticated {
    /// 403 unless the token grants `role`. The service checks again against the account.
    pub fn require_role(&self, role: &str) -> Result<(), ApiError> {
        match &self.claims {
            Some(claims) if !claims.has_role(role) => Err(ApiError::coded(
                ErrorCode::Forbidden,
                format!("This needs the {role} role."),
            )),
            // Roles unknown only with GATEWAY_VERIFY_TOKENS=false (benchmarks): the service decides.
            _ => Ok(()),
        }
    }
}

fn token_error(e: TokenError) -> ApiError {
    let code = ErrorCode::from(e);
    match e {
        TokenError::KeysUnavailable => ApiError::unavailable("authentication service"),
        TokenError::Expired => ApiError::coded(code, "The access token has expired; refresh it."),
        TokenError::Revoked => crate::revocation::revoked(),
        TokenError::Missing | TokenError::Invalid => ApiError::coded(code, "A valid bearer token is required."),
    }
}

/// A token refused (forged or from an unknown key, expired, revoked) is a security event: a
/// stolen or forged token is tried here first. No token at all is not one (anonymous calls).
fn token_rejected(req: &HttpRequest, reason: &'static str) {
    let Some(edge) = req.app_data::<web::Data<crate::edge::Edge>>() else {
        return;
    };
    // An expired token is the daily life of a phone that slept; a forged or revoked one is not.
    let severity = if reason == "expired" { "low" } else { "medium" };
    edge.security.raise("token_rejected", severity);
    let client_ip = crate::client_ip::ClientAddr::of(req)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let user_agent = crate::edge::user_agent(req.headers());
    macro_rules! log {
        ($level:ident) => {
            tracing::$level!(
                security_event = "token_rejected",
                severity,
                reason,
                client_ip,
                user_agent,
                "security event: token refused"
            )
        };
    }
    if reason == "expired" {
        log!(info);
    } else {
        log!(warn);
    }
}

/// The reason a refusal names in its security event, `None` for those that are not one.
fn rejection_reason(e: &ApiError) -> Option<&'static str> {
    match e.code {
        ErrorCode::TokenExpired => Some("expired"),
        ErrorCode::TokenRevoked => Some("revoked"),
        ErrorCode::Unauthenticated => Some("invalid"),
        _ => None,
    }
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let header = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let from_limiter = req.extensions().get::<Caller>().cloned();
        let req = req.clone();
        Box::pin(async move {
            let has_token = header.is_some();
            let result = Self::extract(state, header, from_limiter).await;
            if let Err(e) = &result
                && has_token
                && let Some(reason) = rejection_reason(e)
            {
                token_rejected(&req, reason);
            }
            result
        })
    }
}

impl Authenticated {
    async fn extract(
        state: Option<web::Data<AppState>>,
        header: Option<String>,
        from_limiter: Option<Caller>,
    ) -> Result<Self, ApiError> {
        let state = state.ok_or_else(ApiError::internal)?;
        let token = service_kit::auth::bearer(header.as_deref())
            .map_err(token_error)?
            .to_owned();
        if !state.verify_tokens {
            return Ok(Self {
                bearer: format!("Bearer {token}"),
                claims: None,
            });
        }
        let caller = match from_limiter {
            Some(caller) => caller,
            None => {
                let claims = state.verifier.verify(&token).await.map_err(token_error)?;
                Caller::after_lookup(&state, claims, RedisLookup::NotAsked)
            }
        };
        admit(&state.revocation, &caller, &token).await?;
        tracing::Span::current().record("user_id", caller.claims.sub.as_str());
        Ok(Self {
            bearer: format!("Bearer {token}"),
            claims: Some(caller.claims),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::Source;
    use crate::revocation::tests::{claims, nobody_answers};

    /// The extractor acts on the verdict alone: a known one is answered at once, an unknown one
    /// is asked where it says (here nobody answers: 503, never a pass).
    #[tokio::test]
    async fn each_verdict_gets_its_answer() {
        let check = nobody_answers();
        let caller = |revocation| Caller {
            claims: Arc::new(claims()),
            revocation,
        };
        assert!(admit(&check, &caller(Verdict::Stands), "t").await.is_ok());
        let e = admit(&check, &caller(Verdict::Revoked), "t")
            .await
            .expect_err("revoked");
        assert_eq!((e.code, e.status().as_u16()), (ErrorCode::TokenRevoked, 401));
        for source in [Source::RedisFirst, Source::AuthService] {
            let e = admit(&check, &caller(Verdict::Ask(source)), "t")
                .await
                .expect_err("nobody can tell");
            assert_eq!(
                (e.code, e.status().as_u16()),
                (ErrorCode::Unavailable, 503),
                "{source:?}"
            );
        }
    }
}
