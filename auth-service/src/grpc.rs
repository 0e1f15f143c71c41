//! `auth.v1.AuthService` over tonic: decode, call the domain, map errors.

use std::sync::Arc;

use proto::auth::v1::auth_service_server::AuthService;
use proto::auth::v1::{GetJwksRequest, GetJwksResponse, Jwk};
use tonic::{Request, Response, Status};

use crate::keys::SigningKeys;

pub struct AuthGrpc {
    keys: Arc<SigningKeys>,
}

impl AuthGrpc {
    pub fn new(keys: SigningKeys) -> Self {
        Self { keys: Arc::new(keys) }
    }
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        let keys = self
            .keys
            .jwks()
            .map(|k| Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: k.x.clone(),
                kid: k.kid.clone(),
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            })
            .collect();
        Ok(Response::new(GetJwksResponse { keys }))
    }
}
