//! Who is calling: reports-service verifies the bearer token of every call itself (the gateway's
//! check is not trusted alone), with keys from auth-service's `GetJwks` over mTLS
//! (`AUTH_SERVICE_URL`), and reads the client's address and user agent the gateway forwards.

use service_kit::auth::{AccessClaims, Verifier, VerifierConfig};
use service_kit::config::{CommonConfig, Env};
use service_kit::grpc_tls::GrpcTls;
use tonic::transport::Endpoint;
use tonic::{Request, Status};
use uuid::Uuid;

use crate::domain::Caller;

/// How to reach auth-service for its keys.
pub struct AuthSettings {
    /// `AUTH_SERVICE_URL` (default `https://127.0.0.1:50051`, `http` with `GRPC_INSECURE`).
    url: String,
    tls: GrpcTls,
    verifier: VerifierConfig,
}

impl AuthSettings {
    pub fn from_env(env: &Env, common: &CommonConfig) -> Option<Self> {
        // The serving settings read the same variables and report their problems.
        let tls = GrpcTls::from_env(env, common.environment);
        let scheme = tls.as_ref().map_or("https", GrpcTls::scheme);
        let url = env
            .optional_string("AUTH_SERVICE_URL")
            .unwrap_or_else(|| format!("{scheme}://127.0.0.1:50051"));
        if !url.starts_with(&format!("{scheme}://")) {
            env.problem("AUTH_SERVICE_URL", format!("must be a {scheme}:// URL, got {url:?}"));
        }
        Some(Self {
            url,
            tls: tls?,
            verifier: VerifierConfig::from_env(env),
        })
    }

    /// The verifier, on a lazy channel to auth-service (call it inside the runtime).
    pub fn verifier(self) -> anyhow::Result<Verifier> {
        let mut endpoint = Endpoint::from_shared(self.url)?;
        if let Some(tls) = self.tls.client_config() {
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint
            .connect_timeout(std::time::Duration::from_secs(2))
            .timeout(std::time::Duration::from_secs(5))
            .connect_lazy();
        Ok(Verifier::new(self.verifier, service_kit::auth::jwks_over_grpc(channel)))
    }
}

/// The verified caller of `request`.
pub async fn caller<T>(verifier: &Verifier, request: &Request<T>) -> Result<Caller, Status> {
    let claims: AccessClaims = service_kit::auth::verify_request(verifier, request).await?;
    let user_id = Uuid::try_parse(&claims.sub).map_err(|_| {
        service_kit::errors::status(
            service_kit::errors::ErrorCode::Unauthenticated,
            "authentication required",
        )
    })?;
    let get = |name: &str| {
        request
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
            .map(|s| s.chars().take(256).collect::<String>())
    };
    Ok(Caller {
        user_id,
        staff: claims.has_role("moderator") || claims.has_role("admin"),
        ip: get("x-client-ip"),
        user_agent: get("x-user-agent"),
    })
}
