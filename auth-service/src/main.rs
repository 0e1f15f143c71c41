//! auth-service: accounts, sessions, devices, MFA and the keys that sign access tokens.
//! Wiring only; see `grpc/`, `service/`, `store/` and `domain.rs`.

mod account;
mod admin;
mod captcha;
mod domain;
mod grpc;
mod keys;
#[cfg(test)]
mod layering;
mod mailer;
mod mfa;
mod password;
mod revocation;
mod sealed;
mod service;
mod store;
mod tokens;

use std::process::ExitCode;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use service_kit::auth::{KeySource, PublicKey, Verifier, VerifierConfig};
use service_kit::config::{CommonConfig, Env};
use service_kit::db::Pool;
use service_kit::service::OperatorCommand;
use tonic::service::Routes;

struct AuthService;

struct AuthConfig {
    signing_keys: keys::SigningKeys,
    verifier: VerifierConfig,
    redis_url: SecretString,
    /// `REDIS_TLS_CA_FILE`: the CA a `rediss://` server's certificate is checked against.
    redis_tls_ca: Option<std::path::PathBuf>,
    device_salt: SecretString,
    refresh_secret: SecretString,
    access_ttl: std::time::Duration,
    refresh_ttl: std::time::Duration,
    hash: password::HashParams,
    policy: service::Policy,
    captcha: captcha::CaptchaConfig,
    sealer: sealed::Sealer,
    mfa_issuer: String,
    mail: mailer::MailConfig,
    redis_keys: service_kit::revocation::RedisKeys,
    revocation_sync: std::time::Duration,
    /// `ACTIVE_USERS_REFRESH_SECONDS` (60): how often `active_users` is counted.
    active_users_every: std::time::Duration,
    app_base_url: String,
}

impl service_kit::service::Service for AuthService {
    service_kit::service_identity!(schema: auth, ports: (50051, 9091), grpc: ["auth.v1.AuthService"]);
    const ABOUT: &'static str = "Accounts, sessions, devices, MFA and token signing keys (gRPC auth.v1, schema `auth`)";
    type Config = AuthConfig;

    fn config(env: &Env, common: &CommonConfig) -> Option<AuthConfig> {
        let signing_keys = env.secret("JWT_SIGNING_KEYS").and_then(|pem| {
            keys::SigningKeys::from_pem(pem.expose_secret())
                .map_err(|e| env.problem("JWT_SIGNING_KEYS", e))
                .ok()
        });
        let verifier = VerifierConfig::from_env(env);
        let redis_url = env.secret("REDIS_URL");
        let redis_tls_ca = service_kit::redis::tls_ca_file(env);
        let device_salt = env.secret("DEVICE_ID_SALT");
        let refresh_secret = env.secret("REFRESH_TOKEN_SECRET");
        for (name, value) in [
            ("DEVICE_ID_SALT", &device_salt),
            ("REFRESH_TOKEN_SECRET", &refresh_secret),
        ] {
            if value.as_ref().is_some_and(|v| v.expose_secret().len() < 32) {
                env.problem(name, "must be at least 32 characters of random data");
            }
        }
        let sealer = env.secret("ENCRYPTION_KEY").and_then(|k| {
            sealed::Sealer::from_base64(&k)
                .map_err(|e| env.problem("ENCRYPTION_KEY", e))
                .ok()
        });
        let access_ttl = env.seconds_in("JWT_EXPIRATION", 3600, 60, 86_400);
        let refresh_ttl = env.seconds_in("JWT_REFRESH_EXPIRATION", 30 * 86_400, 3600, 365 * 86_400);
        let policy = service::Policy {
            max_attempts: env.int_in("LOGIN_MAX_ATTEMPTS", 5, 1, 100),
            lockout: env.seconds_in("LOCKOUT_SECONDS", 900, 1, 86_400),
            refresh_grace: env.seconds_in("REFRESH_RETRY_GRACE", 5, 0, 300),
            reset_cooldown: env.seconds_in("PASSWORD_RESET_COOLDOWN", 60, 0, 86_400),
            ip_max_failures: env.int_in("LOGIN_IP_MAX_FAILURES", 20, 1, 100_000),
        };
        // Every parser runs before the first `?`, so one start reports every problem.
        let hash = password::HashParams::from_env(env);
        let captcha = captcha::CaptchaConfig::from_env(env, common.environment);
        let mail = mailer::MailConfig::from_env(env, common.environment);
        let app_base_url = app_base_url(env, common.environment);
        let redis_keys = service_kit::revocation::RedisKeys::from_env(env);
        let revocation_sync = env.seconds_in("REVOCATION_SYNC_SECONDS", 5, 1, 300);
        let active_users_every = env.seconds_in("ACTIVE_USERS_REFRESH_SECONDS", 60, 1, 3600);
        let mfa_issuer = env
            .optional_string("MFA_ISSUER")
            .unwrap_or_else(|| "Platform".to_owned());
        Some(AuthConfig {
            signing_keys: signing_keys?,
            verifier,
            redis_url: redis_url?,
            redis_tls_ca,
            device_salt: device_salt?,
            refresh_secret: refresh_secret?,
            access_ttl,
            refresh_ttl,
            hash,
            policy,
            captcha,
            sealer: sealer?,
            mfa_issuer,
            mail,
            redis_keys,
            revocation_sync,
            active_users_every,
            app_base_url,
        })
    }

    fn extra_commands() -> Vec<clap::Command> {
        admin::commands()
    }

    fn run_extra(command: OperatorCommand) -> impl std::future::Future<Output = anyhow::Result<()>> + Send {
        admin::run(command)
    }

    fn routes(config: AuthConfig, pool: Pool, registry: &prometheus::Registry) -> anyhow::Result<Routes> {
        let keys = Arc::new(config.signing_keys);
        let own: Vec<PublicKey> = keys
            .jwks()
            .map(|k| PublicKey {
                kid: k.kid.clone(),
                x: k.x.clone(),
            })
            .collect();
        // auth-service verifies tokens against its own keys: nothing to fetch.
        let source: KeySource = Arc::new(move || {
            let own = own.clone();
            Box::pin(async move { Ok(own) })
        });
        let verifier = Verifier::new(config.verifier.clone(), source);
        let redis = service_kit::redis::pool(&config.redis_url, config.redis_tls_ca.as_deref())?;
        let watched = redis.clone();
        service_kit::metrics::register_pool(registry, "redis", move || {
            let s = watched.status();
            service_kit::metrics::PoolStatus::of_deadpool(s.max_size, s.size, s.available, s.waiting)
        })?;
        let issuer = tokens::TokenIssuer::new(
            keys.clone(),
            config.verifier.issuer.clone(),
            config.verifier.audience.clone(),
            config.access_ttl,
            config.refresh_ttl,
            config.refresh_secret,
        );
        // A Redis that lost the revocations gets them back from PostgreSQL.
        let sync = revocation::RevocationSync::new(
            pool.clone(),
            redis.clone(),
            config.redis_keys.clone(),
            config.access_ttl + revocation::KEY_MARGIN,
            config.revocation_sync,
            registry,
        )?;
        tokio::spawn(sync.run());
        tokio::spawn(service::Activity::register(pool.clone(), registry)?.run(config.active_users_every));
        let parts = service::Parts {
            pool,
            redis,
            redis_keys: config.redis_keys,
            passwords: password::Passwords::new(config.hash)?,
            issuer,
            policy: config.policy,
            device_salt: config.device_salt,
            captcha: captcha::Captcha::new(config.captcha)?,
            sealer: config.sealer,
            mfa_issuer: config.mfa_issuer,
            mailer: mailer::Mailer::build(config.mail)?,
            app_base_url: config.app_base_url,
        };
        let auth = service::Auth::new(parts, registry)?;
        tokio::spawn(auth.clone().purge_idle_login_counters());
        let grpc = grpc::AuthGrpc::new(keys, auth, verifier);
        Ok(Routes::new(
            proto::auth::v1::auth_service_server::AuthServiceServer::new(grpc),
        ))
    }
}

/// `APP_BASE_URL`: where links in e-mails point; required in production (no localhost links).
fn app_base_url(env: &Env, environment: service_kit::config::Environment) -> String {
    match env.optional_string("APP_BASE_URL") {
        Some(url)
            if url.starts_with("https://")
                || (environment != service_kit::config::Environment::Production && url.starts_with("http://")) =>
        {
            url.trim_end_matches('/').to_owned()
        }
        Some(url) => {
            env.problem("APP_BASE_URL", format!("must be an https:// URL, got {url:?}"));
            String::new()
        }
        None if environment == service_kit::config::Environment::Production => {
            env.problem("APP_BASE_URL", "is missing (the links in e-mails point there)");
            String::new()
        }
        None => "http://localhost:3000".to_owned(),
    }
}

fn main() -> ExitCode {
    service_kit::service::main::<AuthService>()
}

#[cfg(test)]
mod tests {
    use service_kit::service::Service as _;

    use super::AuthService;

    #[test]
    fn service_identity_names_the_binary_after_its_schema() {
        assert_eq!((AuthService::NAME, AuthService::SCHEMA), ("auth-service", "auth"));
        assert_eq!(
            (AuthService::DEFAULT_GRPC_PORT, AuthService::DEFAULT_ADMIN_PORT),
            (50051, 9091)
        );
        assert_eq!(AuthService::GRPC_SERVICES, ["auth.v1.AuthService"]);
    }
}
