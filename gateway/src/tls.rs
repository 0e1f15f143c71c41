//! The public listener's TLS: rustls with the ring provider, TLS 1.2+1.3 (or 1.3 only), ALPN h2
//! and http/1.1.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{TlsConfig, TlsMinVersion};

pub fn server_config(tls: &TlsConfig) -> anyhow::Result<ServerConfig> {
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
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsMinVersion::Tls13 => &[&rustls::version::TLS13],
        TlsMinVersion::Tls12 => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS_KEY_FILE does not match the certificate in TLS_CERT_FILE")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
