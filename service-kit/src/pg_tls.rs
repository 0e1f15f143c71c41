//! PostgreSQL over TLS: `sslmode` in `DATABASE_URL` read as libpq reads it (`require` encrypts,
//! `verify-ca` also checks the chain against `DATABASE_TLS_CA_FILE`, `verify-full` the host name
//! too), turned into the rustls `ClientConfig` that `tokio-postgres-rustls` connects with (no
//! OpenSSL; SCRAM channel binding through `tls-server-end-point`).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// `disable` or `allow`: plain.
    Plain,
    /// `prefer` or none (libpq's default): encrypted when the server offers TLS, its certificate
    /// not checked (as libpq does); plain only with a server that offers no TLS.
    Prefer,
    /// Encrypted; the certificate is verified only when a CA file is given (as libpq does).
    Require,
    /// Encrypted, the chain verified against the CA file.
    VerifyCa,
    /// Encrypted, the chain and the host name verified.
    VerifyFull,
}

impl SslMode {
    /// The mode in a `postgres://` URL, and the URL as tokio-postgres accepts it (it knows no
    /// `verify-*`: those become `require`, the checks are ours). `None`: an unknown mode.
    pub fn from_url(url: &str) -> Option<(Self, String)> {
        let Some((base, query)) = url.split_once('?') else {
            return Some((Self::Prefer, url.to_owned()));
        };
        let mut mode = Self::Prefer;
        let mut params = Vec::new();
        for param in query.split('&') {
            match param.strip_prefix("sslmode=") {
                Some(value) => {
                    mode = match value {
                        "disable" | "allow" => Self::Plain,
                        "prefer" => Self::Prefer,
                        "require" => Self::Require,
                        "verify-ca" => Self::VerifyCa,
                        "verify-full" => Self::VerifyFull,
                        _ => return None,
                    };
                    params.push(match mode {
                        Self::Plain | Self::Prefer => param.to_owned(),
                        _ => "sslmode=require".to_owned(),
                    });
                }
                None => params.push(param.to_owned()),
            }
        }
        Some((mode, format!("{base}?{}", params.join("&"))))
    }
}

/// How the pool reaches PostgreSQL.
#[derive(Clone)]
pub enum DbTls {
    Plain,
    Rustls(MakeRustlsConnect),
}

impl std::fmt::Debug for DbTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain => "Plain",
            Self::Rustls(_) => "Rustls",
        })
    }
}

impl DbTls {
    /// The connector for `mode`, with the CA certificates of `ca_file` (PEM) when given.
    pub fn new(mode: SslMode, ca_file: Option<&PathBuf>) -> anyhow::Result<Self> {
        if mode == SslMode::Plain {
            return Ok(Self::Plain);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    roots.add(cert?)?;
                }
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
                Arc::new(Verifier {
                    chain: Some(webpki),
                    check_name: mode == SslMode::VerifyFull,
                    provider: provider.clone(),
                })
            }
            None if matches!(mode, SslMode::Require | SslMode::Prefer) => Arc::new(Verifier {
                chain: None,
                check_name: false,
                provider: provider.clone(),
            }),
            None => anyhow::bail!("sslmode=verify-ca or verify-full needs DATABASE_TLS_CA_FILE"),
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self::Rustls(MakeRustlsConnect::new(config)))
    }
}

/// The chain checked against the CA (when there is one), the name only under `verify-full`; the
/// handshake signatures always.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_and_verify_modes_become_require_for_the_driver() {
        // No sslmode is libpq's default, prefer: encrypted when the server offers TLS.
        assert_eq!(
            SslMode::from_url("postgres://u:p@h:5432/db"),
            Some((SslMode::Prefer, "postgres://u:p@h:5432/db".to_owned()))
        );
        assert_eq!(
            SslMode::from_url("postgres://h/db?sslmode=disable").map(|m| m.0),
            Some(SslMode::Plain)
        );
        assert_eq!(
            SslMode::from_url("postgres://u:p@h/db?application_name=a&sslmode=verify-full"),
            Some((
                SslMode::VerifyFull,
                "postgres://u:p@h/db?application_name=a&sslmode=require".to_owned()
            ))
        );
        assert_eq!(
            SslMode::from_url("postgres://h/db?sslmode=verify-ca").map(|m| m.0),
            Some(SslMode::VerifyCa)
        );
        assert_eq!(
            SslMode::from_url("postgres://h/db?sslmode=require").map(|m| m.0),
            Some(SslMode::Require)
        );
        assert_eq!(
            SslMode::from_url("postgres://h/db?sslmode=prefer").map(|m| m.0),
            Some(SslMode::Prefer)
        );
        assert_eq!(SslMode::from_url("postgres://h/db?sslmode=sometimes"), None);
    }

    /// Against the PostgreSQL `cargo xtask test` starts (which offers TLS), a URL without
    /// `sslmode` is encrypted, as libpq's default `prefer` would be: never plaintext only because
    /// the operator left the parameter out.
    #[tokio::test]
    async fn without_sslmode_the_connection_is_encrypted_when_the_server_offers_tls() {
        let url = std::env::var("TEST_PG_URL").expect("TEST_PG_URL: run the tests with `cargo xtask test`");
        let url = url.split_once('?').map_or(url.as_str(), |(base, _)| base).to_owned();
        let (mode, url) = SslMode::from_url(&url).expect("url");
        assert_eq!(mode, SslMode::Prefer);
        let DbTls::Rustls(connect) = DbTls::new(mode, None).expect("connector") else {
            panic!("prefer must offer TLS to the server");
        };
        let (client, connection) = tokio_postgres::connect(&url, connect).await.expect("connect");
        tokio::spawn(connection);
        let row = client
            .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .await
            .expect("pg_stat_ssl");
        assert!(row.get::<_, bool>(0), "a URL without sslmode went in the clear");
    }

    #[test]
    fn verify_modes_need_a_ca_file() {
        assert!(DbTls::new(SslMode::VerifyFull, None).is_err());
        assert!(matches!(DbTls::new(SslMode::Require, None), Ok(DbTls::Rustls(_))));
        assert!(matches!(DbTls::new(SslMode::Prefer, None), Ok(DbTls::Rustls(_))));
        assert!(matches!(DbTls::new(SslMode::Plain, None), Ok(DbTls::Plain)));
    }
}
