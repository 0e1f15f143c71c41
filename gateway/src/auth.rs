//! Who is calling: the `Authenticated` extractor verifies the bearer token on every route that
//! takes it (signature, claims, then revocation: Redis, or auth-service when Redis cannot answer) so a handler cannot forget to.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::{FromRequest, HttpRequest, web};
use proto::auth::v1::GetJwksRequest;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use service_kit::auth::{AccessClaims, KeySource, PublicKey, TokenError, Verifier, VerifierConfig};
use service_kit::errors::ErrorCode;

use crate::error::ApiError;
use crate::routes::AppState;

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
            Some(claims) if !claims.roles.iter().any(|r| r == role) => Err(ApiError::coded(
                service_kit::errors::ErrorCode::Forbidden,
                format!("This needs the {role} role."),
            )),
            // Roles unknown only with GATEWAY_VERIFY_TOKENS=false (benchmarks): the service decides.
            _ => Ok(()),
        }
    }
}

/// A verifier whose keys come from auth-service's `GetJwks`.
pub fn verifier(config: VerifierConfig, auth: tonic::transport::Channel) -> Verifier {
    let source: KeySource = Arc::new(move || {
        let mut client = AuthServiceClient::new(auth.clone());
        Box::pin(async move {
            let keys = client.get_jwks(GetJwksRequest {}).await?.into_inner().keys;
            Ok(keys
                .into_iter()
                .filter(|k| k.alg == "EdDSA")
                .map(|k| PublicKey { kid: k.kid, x: k.x })
                .collect())
        })
    });
    Verifier::new(config, source)
}

fn token_error(e: TokenError) -> ApiError {
    let code = ErrorCode::from(e);
    match e {
        TokenError::KeysUnavailable => ApiError::unavailable("authentication service"),
        TokenError::Expired => ApiError::coded(code, "The access token has expired; refresh it."),
        TokenError::Revoked => ApiError::coded(code, "The access token has been revoked; log in again."),
        TokenError::Missing | TokenError::Invalid => ApiError::coded(code, "A valid bearer token is required."),
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
        // The rate limiter may have verified this token already.
        let verified = actix_web::HttpMessage::extensions(req)
            .get::<crate::rate_limit::VerifiedClaims>()
            .cloned();
        let (from_limiter, redis_down) = {
            let ext = actix_web::HttpMessage::extensions(req);
            (
                ext.get::<crate::revocation::RedisAnswer>().copied(),
                ext.get::<crate::revocation::RedisUnavailable>().is_some(),
            )
        };
        Box::pin(async move {
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
            let claims = match verified {
                Some(crate::rate_limit::VerifiedClaims(claims)) => claims,
                None => state.verifier.verify(&token).await.map_err(token_error)?,
            };
            match from_limiter {
                // Read with the rate limits, in the same round trip.
                Some(answer) if answer.complete => {
                    state.revocation.note_complete(true);
                    if answer.revokes(&claims) {
                        return Err(token_error(TokenError::Revoked));
                    }
                }
                // Redis answered but lacks the marker: it cannot vouch, auth-service decides.
                Some(_) => {
                    state.revocation.note_complete(false);
                    state.revocation.check(&claims, &token, true).await?;
                }
                None => state.revocation.check(&claims, &token, redis_down).await?,
            }
            tracing::Span::current().record("user_id", claims.sub.as_str());
            Ok(Self {
                bearer: format!("Bearer {token}"),
                claims: Some(claims),
            })
        })
    }
}
