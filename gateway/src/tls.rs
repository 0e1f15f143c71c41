//! The public listener's TLS: rustls with the ring provider, TLS 1.2+1.3 (or 1.3 only; rustls has
//! no older versions at all), ALPN h2 and http/1.1. The certificate and key are read again when
//! their files change (cert-manager rotates them), without a restart: new connections get the new
//! certificate; a half-written or broken pair is logged and the old one kept.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{TlsConfig, TlsMinVersion};

/// Reads the certificate chain and key and checks that they belong together.
fn load(tls: &TlsConfig) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .with_context(|| format!("TLS_CERT_FILE {} cannot be read", tls.cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "TLS_CERT_FILE {} is not a PEM certificate chain",
                tls.cert_file.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!("TLS_CERT_FILE {} holds no certificate", tls.cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).with_context(|| {
        format!(
            "TLS_KEY_FILE {} holds no readable PEM private key",
            tls.key_file.display()
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(certs, key, &provider)
        .context("TLS_KEY_FILE does not match the certificate in TLS_CERT_FILE")?;
    Ok(Arc::new(certified))
}

/// Serves whatever pair was loaded last.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The server configuration, and a task that reloads the pair every `reload_every` when either
/// file's modification time changed.
pub fn server_config(tls: &TlsConfig) -> anyhow::Result<ServerConfig> {
    let resolver = Arc::new(Reloading {
        current: RwLock::new(load(tls)?),
    });
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsMinVersion::Tls13 => &[&rustls::version::TLS13],
        TlsMinVersion::Tls12 => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let (tls, every) = (tls.clone(), tls.reload_every);
    tokio::spawn(async move {
        let mut seen = (modified(&tls.cert_file), modified(&tls.key_file));
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = (modified(&tls.cert_file), modified(&tls.key_file));
            if now == seen {
                continue;
            }
            match load(&tls) {
                Ok(pair) => {
                    *resolver
                        .current
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = pair;
                    seen = now;
                    tracing::info!(cert = %tls.cert_file.display(), "TLS certificate reloaded");
                }
                // cert-manager writes the two files one after the other: try again next tick.
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "TLS files changed but cannot be used yet; keeping the old pair"
                ),
            }
        }
    });
    Ok(config)
}

/// How often the files are checked (`TLS_RELOAD_SECONDS`, default 10).
pub fn reload_every(env: &service_kit::config::Env) -> Duration {
    env.seconds_in("TLS_RELOAD_SECONDS", 10, 1, 3600)
}
