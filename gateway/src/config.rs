//! The gateway's settings, parsed once from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use service_kit::config::{CommonConfig, Env, Environment};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMinVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// `TLS_CERT_FILE`: PEM chain, leaf first.
    pub cert_file: PathBuf,
    /// `TLS_KEY_FILE`: PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `TLS_MIN_VERSION`: 1.2 (default) or 1.3.
    pub min_version: TlsMinVersion,
    /// `TLS_RELOAD_SECONDS`: how often the files are checked for a new pair.
    pub reload_every: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub auth_url: String,
    pub reports_url: String,
    pub analytics_url: String,
    /// `GRPC_CONNECT_TIMEOUT_MS`: how long to wait for a TCP+HTTP/2 connection to a service.
    pub connect_timeout: Duration,
    /// `GRPC_REQUEST_TIMEOUT_MS`: the deadline of each call to a service.
    pub request_timeout: Duration,
    /// `UPLOAD_TIMEOUT_MS`: how long the body of a file upload may take (a phone on a slow network
    /// needs minutes for `MAX_FILE_SIZE`, where every other body has seconds); reports-service
    /// then has `GRPC_REQUEST_TIMEOUT_MS` to store it, and the request as a whole
    /// `REQUEST_TIMEOUT_MS` more than the body.
    pub upload_timeout: Duration,
    /// `GRPC_TLS_CERT_FILE`, `GRPC_TLS_KEY_FILE`, `GRPC_TLS_CA_FILE`: the gateway's client
    /// certificate and the internal CA (or `GRPC_INSECURE=true`, development only).
    pub tls: service_kit::grpc_tls::GrpcTls,
    /// `REDIS_TLS_CA_FILE`: the CA of a `rediss://` Redis.
    pub redis_tls_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub common: CommonConfig,
    /// `HOST` and `PORT` (default 0.0.0.0:8443).
    pub public_addr: SocketAddr,
    /// `None` only with `ALLOW_PLAIN_HTTP=true`, which production refuses.
    pub tls: Option<TlsConfig>,
    /// `ALLOWED_ORIGINS`: comma-separated exact origins for CORS (empty: no cross-origin access).
    pub allowed_origins: Vec<String>,
    /// `CORS_CREDENTIALS` (default false): those origins may send credentials.
    pub cors_credentials: bool,
    /// `MAX_BODY_BYTES`: the largest request body on JSON routes (default 1 MiB).
    pub max_body_bytes: usize,
    /// `REQUEST_TIMEOUT_MS`: the whole request, from headers read to response ready.
    pub request_timeout: Duration,
    /// `BODY_READ_TIMEOUT_MS`: the request body, from headers read to its last byte (shorter than
    /// the whole request; a trickling client gets 408 and the connection is closed).
    pub body_read_timeout: Duration,
    /// `HEADER_READ_TIMEOUT_MS` (default 5000): a connection's first request headers must have
    /// arrived by then (408); later requests' headers are bounded by the connection watchdog.
    pub header_read_timeout: Duration,
    /// `KEEP_ALIVE_SECONDS` (default 30): an idle HTTP/1.1 connection is closed after this.
    pub keep_alive: Duration,
    /// `TLS_HANDSHAKE_TIMEOUT_MS` (default 3000): a connection that has not finished its TLS
    /// handshake by then is closed.
    pub tls_handshake_timeout: Duration,
    /// `MAX_CONNECTIONS` (default 50000): open client connections per gateway process, shared out
    /// among the workers; past it new connections wait in the listen backlog.
    pub max_connections: usize,
    /// `SHUTDOWN_TIMEOUT_SECONDS`: how long in-flight requests may run after SIGTERM.
    pub shutdown_timeout: Duration,
    /// `WORKERS`: HTTP worker threads (default: number of cores).
    pub workers: usize,
    pub upstreams: UpstreamConfig,
    /// `REDIS_URL`: rate limits and revocation (optional in development).
    pub redis_url: Option<SecretString>,
    /// `JWT_ISSUER`, `JWT_AUDIENCE`, leeway and JWKS refetch interval.
    pub verifier: service_kit::auth::VerifierConfig,
    /// `REDIS_KEY_PREFIX`
    pub redis_keys: service_kit::revocation::RedisKeys,
    pub rate_limit: crate::rate_limit::RateLimitConfig,
    /// `REVOCATION_CACHE_SECONDS` (default and most 2, 0 to turn off): how long auth-service's "not revoked" is
    /// trusted while Redis is unreachable.
    pub revocation_cache: Duration,
    /// `TRUSTED_PROXIES`
    pub trusted_proxies: crate::client_ip::TrustedProxies,
    /// `GATEWAY_VERIFY_TOKENS` (default true; false for benchmarks only, refused in production).
    pub verify_tokens: bool,
    /// `MAINTENANCE_FILE` (optional) and `MAINTENANCE_RELOAD_SECONDS`.
    pub maintenance: crate::maintenance::MaintenanceConfig,
}

/// The admin port (`METRICS_PORT`) unless configured.
pub const DEFAULT_ADMIN_PORT: u16 = 9090;

impl GatewayConfig {
    pub fn from_env(env: &Env) -> Option<Self> {
        let common = CommonConfig::from_env(env, "gateway", DEFAULT_ADMIN_PORT);
        let public_addr = env.listen_addr("HOST", "PORT", 8443);
        let plain = env.bool_or("ALLOW_PLAIN_HTTP", false);
        let tls = if plain {
            if common.environment == Environment::Production {
                env.problem(
                    "ALLOW_PLAIN_HTTP",
                    "is refused when APP_ENV=production; configure TLS_CERT_FILE and TLS_KEY_FILE",
                );
            }
            None
        } else {
            let min_version = match env.one_of("TLS_MIN_VERSION", "1.2", &["1.2", "1.3"]) {
                "1.3" => TlsMinVersion::Tls13,
                _ => TlsMinVersion::Tls12,
            };
            match (env.string("TLS_CERT_FILE"), env.string("TLS_KEY_FILE")) {
                (Some(cert), Some(key)) => Some(TlsConfig {
                    cert_file: cert.into(),
                    key_file: key.into(),
                    min_version,
                    reload_every: crate::tls::reload_every(env),
                }),
                _ => None,
            }
        };
        let allowed_origins: Vec<String> = env
            .optional_string("ALLOWED_ORIGINS")
            .map(|v| {
                v.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        for origin in &allowed_origins {
            if origin == "*" || !(origin.starts_with("https://") || origin.starts_with("http://")) {
                env.problem(
                    "ALLOWED_ORIGINS",
                    format!("must list exact origins like https://app.example.com, got {origin:?}"),
                );
            }
        }
        let grpc_tls = service_kit::grpc_tls::GrpcTls::from_env(env, common.environment);
        // Without valid TLS settings (already reported) the URLs are checked as https ones.
        let scheme = grpc_tls.as_ref().map_or("https", |t| t.scheme());
        let upstreams = UpstreamConfig {
            auth_url: grpc_url(env, "AUTH_SERVICE_URL", scheme, 50051),
            reports_url: grpc_url(env, "REPORTS_SERVICE_URL", scheme, 50052),
            analytics_url: grpc_url(env, "ANALYTICS_SERVICE_URL", scheme, 50053),
            connect_timeout: env.millis_in("GRPC_CONNECT_TIMEOUT_MS", 1000, 10, 60_000),
            request_timeout: env.millis_in("GRPC_REQUEST_TIMEOUT_MS", 5000, 10, 120_000),
            upload_timeout: env.millis_in("UPLOAD_TIMEOUT_MS", 300_000, 1000, 3_600_000),
            tls: grpc_tls.unwrap_or(service_kit::grpc_tls::GrpcTls::Insecure),
            redis_tls_ca: service_kit::redis::tls_ca_file(env),
        };
        let request_timeout = env.millis_in("REQUEST_TIMEOUT_MS", 15_000, 100, 300_000);
        if request_timeout <= upstreams.request_timeout {
            env.problem(
                "REQUEST_TIMEOUT_MS",
                "must be longer than GRPC_REQUEST_TIMEOUT_MS, so a slow service is reported as such",
            );
        }
        // Default: 10 s, or less when the whole request has less.
        let body_default = 10_000.min(request_timeout.as_millis() as u64 * 2 / 3).max(100);
        let body_read_timeout = env.millis_in("BODY_READ_TIMEOUT_MS", body_default, 100, 300_000);
        if body_read_timeout >= request_timeout {
            env.problem(
                "BODY_READ_TIMEOUT_MS",
                "must be shorter than REQUEST_TIMEOUT_MS, so a slow body is told apart from a slow service",
            );
        }
        let workers = env.int_in(
            "WORKERS",
            std::thread::available_parallelism().map(usize::from).unwrap_or(2),
            1,
            256,
        );
        let redis_url = env.optional_secret("REDIS_URL");
        let rate_limit = crate::rate_limit::RateLimitConfig::from_env(env, common.environment);
        let verify_tokens = env.bool_or("GATEWAY_VERIFY_TOKENS", true);
        if !verify_tokens && common.environment == Environment::Production {
            env.problem(
                "GATEWAY_VERIFY_TOKENS",
                "=false is for benchmarks only and is refused when APP_ENV=production",
            );
        }
        Some(Self {
            common,
            public_addr,
            tls: if plain { None } else { Some(tls?) },
            allowed_origins,
            cors_credentials: env.bool_or("CORS_CREDENTIALS", false),
            max_body_bytes: env.int_in("MAX_BODY_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
            request_timeout,
            body_read_timeout,
            header_read_timeout: env.millis_in("HEADER_READ_TIMEOUT_MS", 5000, 100, 60_000),
            keep_alive: env.seconds_in("KEEP_ALIVE_SECONDS", 30, 1, 3600),
            tls_handshake_timeout: env.millis_in("TLS_HANDSHAKE_TIMEOUT_MS", 3000, 100, 60_000),
            max_connections: env.int_in("MAX_CONNECTIONS", 50_000, 1, 1_000_000),
            shutdown_timeout: env.seconds_in("SHUTDOWN_TIMEOUT_SECONDS", 30, 1, 600),
            workers,
            upstreams,
            redis_url,
            verifier: service_kit::auth::VerifierConfig::from_env(env),
            redis_keys: service_kit::revocation::RedisKeys::from_env(env),
            rate_limit,
            revocation_cache: env.seconds_in("REVOCATION_CACHE_SECONDS", 2, 0, 2),
            trusted_proxies: crate::client_ip::TrustedProxies::from_env(env),
            verify_tokens,
            maintenance: crate::maintenance::MaintenanceConfig::from_env(env),
        })
    }
}

/// A service's URL: `https://` with mTLS, `http://` only with `GRPC_INSECURE` (tonic would speak
/// plain HTTP/2 to an `http://` URL even with TLS configured).
fn grpc_url(env: &Env, name: &str, scheme: &str, default_port: u16) -> String {
    let url = env
        .optional_string(name)
        .unwrap_or_else(|| format!("{scheme}://127.0.0.1:{default_port}"));
    if !url.starts_with(&format!("{scheme}://")) {
        let why = if scheme == "https" {
            "gRPC to the services is mTLS"
        } else {
            "GRPC_INSECURE=true"
        };
        env.problem(name, format!("must be a {scheme}:// URL ({why}), got {url:?}"));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<GatewayConfig, String> {
        let env = Env::from_map(pairs.iter().map(|(k, v)| (*k, *v)));
        let config = GatewayConfig::from_env(&env);
        env.finish().map_err(|e| e.to_string())?;
        config.ok_or_else(|| "no config".to_owned())
    }

    #[test]
    fn tls_files_are_required_unless_plain_http_is_asked_for() {
        let err = parse(&[("APP_ENV", "development"), ("GRPC_INSECURE", "1")]).expect_err("no TLS files");
        assert_eq!(
            err,
            "invalid configuration: TLS_CERT_FILE is missing; TLS_KEY_FILE is missing"
        );
        let config = parse(&[
            ("ALLOW_PLAIN_HTTP", "true"),
            ("APP_ENV", "development"),
            ("GRPC_INSECURE", "true"),
        ])
        .expect("plain http in dev");
        assert!(config.tls.is_none());
    }

    #[test]
    fn production_refuses_plain_http() {
        let err =
            parse(&[("ALLOW_PLAIN_HTTP", "true"), ("GRPC_INSECURE", "true")]).expect_err("production is the default");
        assert!(
            err.contains("ALLOW_PLAIN_HTTP is refused when APP_ENV=production"),
            "{err}"
        );
    }

    #[test]
    fn wildcard_origin_and_bad_urls_are_refused() {
        let err = parse(&[
            ("ALLOW_PLAIN_HTTP", "1"),
            ("APP_ENV", "development"),
            ("GRPC_INSECURE", "1"),
            ("ALLOWED_ORIGINS", "https://a.example, *"),
            ("AUTH_SERVICE_URL", "auth:50051"),
        ])
        .expect_err("two problems");
        // Exactly these two, on one line (TLS settings are not read with ALLOW_PLAIN_HTTP; the
        // e2e test `config::gateway_refuses_a_tls_minimum_below_1_2` covers TLS_MIN_VERSION).
        assert_eq!(
            err,
            "invalid configuration: ALLOWED_ORIGINS must list exact origins like https://app.example.com, got \"*\"; \
             AUTH_SERVICE_URL must be a http:// URL (GRPC_INSECURE=true), got \"auth:50051\""
        );
    }

    #[test]
    fn request_timeout_must_exceed_the_grpc_deadline() {
        let err = parse(&[
            ("ALLOW_PLAIN_HTTP", "1"),
            ("APP_ENV", "development"),
            ("GRPC_INSECURE", "1"),
            ("REQUEST_TIMEOUT_MS", "1000"),
            ("GRPC_REQUEST_TIMEOUT_MS", "2000"),
        ])
        .expect_err("inverted timeouts");
        assert!(
            err.contains("REQUEST_TIMEOUT_MS must be longer than GRPC_REQUEST_TIMEOUT_MS"),
            "{err}"
        );
    }

    #[test]
    fn the_body_deadline_defaults_below_the_request_timeout() {
        let base = [
            ("ALLOW_PLAIN_HTTP", "1"),
            ("APP_ENV", "development"),
            ("GRPC_INSECURE", "1"),
        ];
        let config = parse(&base).expect("defaults");
        assert_eq!(config.body_read_timeout, Duration::from_secs(10));
        let short = [base[0], base[1], base[2], ("REQUEST_TIMEOUT_MS", "6000")];
        let config = parse(&short).expect("a short request timeout");
        assert_eq!(config.body_read_timeout, Duration::from_secs(4));
        let err = parse(&[
            base[0],
            base[1],
            base[2],
            ("REQUEST_TIMEOUT_MS", "6000"),
            ("BODY_READ_TIMEOUT_MS", "6000"),
        ])
        .expect_err("body deadline not shorter");
        assert!(
            err.contains("BODY_READ_TIMEOUT_MS must be shorter than REQUEST_TIMEOUT_MS"),
            "{err}"
        );
    }

    #[test]
    fn grpc_to_the_services_is_mtls_over_https_urls() {
        let err = parse(&[("ALLOW_PLAIN_HTTP", "1"), ("APP_ENV", "test")]).expect_err("no gRPC TLS files");
        assert!(err.contains("GRPC_TLS_CERT_FILE is missing"), "{err}");
        let err = parse(&[
            ("ALLOW_PLAIN_HTTP", "1"),
            ("APP_ENV", "development"),
            ("GRPC_INSECURE", "1"),
            ("AUTH_SERVICE_URL", "https://127.0.0.1:50051"),
        ])
        .expect_err("https without TLS");
        assert!(err.contains("AUTH_SERVICE_URL must be a http:// URL"), "{err}");
    }

    #[test]
    fn tls_min_version_13() {
        let config = parse(&[
            ("TLS_CERT_FILE", "/c"),
            ("TLS_KEY_FILE", "/k"),
            ("TLS_MIN_VERSION", "1.3"),
            ("APP_ENV", "development"),
            ("GRPC_INSECURE", "1"),
        ])
        .expect("valid");
        assert_eq!(config.tls.map(|t| t.min_version), Some(TlsMinVersion::Tls13));
    }
}
