//! auth-service: accounts, sessions, devices, MFA and the keys that sign access tokens.
//! Wiring only; see `grpc.rs` and the domain modules.

mod grpc;
mod keys;

use std::process::ExitCode;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use secrecy::ExposeSecret;
use service_kit::config::Env;
use service_kit::db::Pool;
use tonic::service::Routes;

struct AuthService;

struct AuthConfig {
    signing_keys: keys::SigningKeys,
}

impl service_kit::service::Service for AuthService {
    const NAME: &'static str = "auth-service";
    const ABOUT: &'static str = "Accounts, sessions, devices, MFA and token signing keys (gRPC auth.v1, schema `auth`)";
    const SCHEMA: &'static str = "auth";
    const DEFAULT_GRPC_PORT: u16 = 50051;
    const DEFAULT_ADMIN_PORT: u16 = 9091;
    const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");
    const GRPC_SERVICES: &'static [&'static str] = &["auth.v1.AuthService"];
    const FILE_DESCRIPTOR_SET: &'static [u8] = proto::FILE_DESCRIPTOR_SET;
    type Config = AuthConfig;

    fn config(env: &Env) -> Option<AuthConfig> {
        let pem = env.secret("JWT_SIGNING_KEYS")?;
        match keys::SigningKeys::from_pem(pem.expose_secret()) {
            Ok(signing_keys) => Some(AuthConfig { signing_keys }),
            Err(e) => {
                env.problem("JWT_SIGNING_KEYS", e);
                None
            }
        }
    }

    fn routes(config: AuthConfig, _pool: Pool, _registry: &prometheus::Registry) -> anyhow::Result<Routes> {
        let auth = grpc::AuthGrpc::new(config.signing_keys);
        Ok(Routes::new(
            proto::auth::v1::auth_service_server::AuthServiceServer::new(auth),
        ))
    }
}

fn main() -> ExitCode {
    service_kit::service::main::<AuthService>()
}
