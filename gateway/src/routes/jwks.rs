//! `GET /.well-known/jwks.json`: the public keys that verify access tokens, from auth-service.

use actix_web::HttpResponse;
use proto::auth::v1::GetJwksRequest;
use serde::Serialize;

use super::call::AuthCall;
use crate::error::ApiError;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// An Ed25519 public key (RFC 8037).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Jwk {
    /// "OKP"
    pub kty: String,
    /// "Ed25519"
    pub crv: String,
    pub x: String,
    /// RFC 7638 thumbprint; matches the `kid` header of tokens it verifies.
    pub kid: String,
    /// "EdDSA"
    pub alg: String,
    #[serde(rename = "use")]
    #[schema(rename = "use")]
    pub use_: String,
}

/// Public keys that verify access tokens; current key first, retiring keys after it.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses(
        (status = 200, description = "JSON Web Key Set", body = Jwks),
        (status = 503, description = "auth-service is unavailable", body = crate::error::ErrorBody),
    ))]
pub async fn jwks(auth_service: AuthCall) -> Result<HttpResponse, ApiError> {
    let keys = auth_service
        .send(GetJwksRequest {}, async |c, m| c.get_jwks(m).await)
        .await?
        .keys;
    let body = Jwks {
        keys: keys
            .into_iter()
            .map(|k| Jwk {
                kty: k.kty,
                crv: k.crv,
                x: k.x,
                kid: k.kid,
                alg: k.alg,
                use_: k.r#use,
            })
            .collect(),
    };
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=300"))
        .json(body))
}
