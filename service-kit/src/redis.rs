//! Redis clients and pools that speak `rediss://` (TLS, rustls) with the internal CA named by
//! `REDIS_TLS_CA_FILE`, or `redis://` in the clear; the gateway and auth-service build theirs here.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret as _, SecretString};

use crate::config::Env;

/// `REDIS_TLS_CA_FILE`: PEM of the CA a `rediss://` server's certificate chains to (without it,
/// the system's roots). Problems are recorded on `env`.
pub fn tls_ca_file(env: &Env) -> Option<PathBuf> {
    let path = env.optional_string("REDIS_TLS_CA_FILE").map(PathBuf::from)?;
    if let Err(e) = std::fs::metadata(&path) {
        env.problem(
            "REDIS_TLS_CA_FILE",
            format!("names a file that cannot be read ({}: {e})", path.display()),
        );
    }
    Some(path)
}

/// A client for `url`; `rediss://` verifies the server against `ca_file` when given.
pub fn client(url: &SecretString, ca_file: Option<&Path>) -> anyhow::Result<::redis::Client> {
    let url = url.expose_secret();
    // Never echo the URL: it may hold a password.
    anyhow::ensure!(
        ca_file.is_none() || url.starts_with("rediss://"),
        "REDIS_TLS_CA_FILE is set but REDIS_URL is not rediss://: a CA file never checks a plain connection"
    );
    let Some(ca_file) = ca_file else {
        return ::redis::Client::open(url).map_err(|e| anyhow::anyhow!("REDIS_URL: {}", e.category()));
    };
    let root_cert =
        std::fs::read(ca_file).map_err(|e| anyhow::anyhow!("reading REDIS_TLS_CA_FILE {}: {e}", ca_file.display()))?;
    ::redis::Client::build_with_tls(
        url,
        ::redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        },
    )
    .map_err(|e| anyhow::anyhow!("REDIS_URL with REDIS_TLS_CA_FILE: {}", e.category()))
}

/// A deadpool pool of multiplexed connections to `url` (see [`client`]).
pub fn pool(url: &SecretString, ca_file: Option<&Path>) -> anyhow::Result<deadpool_redis::Pool> {
    let info = client(url, ca_file)?.get_connection_info().clone();
    let manager = deadpool_redis::Manager::new(info)?;
    Ok(deadpool_redis::Pool::builder(manager)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_url_needs_no_ca_and_a_missing_ca_file_is_named() {
        let url = SecretString::from("redis://127.0.0.1:6379".to_owned());
        assert!(pool(&url, None).is_ok());
        let tls = SecretString::from("rediss://127.0.0.1:6379".to_owned());
        let err = client(&tls, Some(Path::new("/nonexistent/ca.pem"))).expect_err("no CA file");
        assert!(err.to_string().contains("REDIS_TLS_CA_FILE"), "{err}");
        let e = Env::from_map([("REDIS_TLS_CA_FILE", "/nonexistent/ca.pem")]);
        assert!(tls_ca_file(&e).is_some());
        assert!(e.finish().is_err());
        // A CA file with a plain URL would look verified and be cleartext: refused.
        let err = client(&url, Some(Path::new("/etc/hosts"))).expect_err("CA file with redis://");
        assert!(err.to_string().contains("not rediss://"), "{err}");
    }
}
