//! PostgreSQL over TLS: `sslmode` in `DATABASE_URL` read as libpq reads it (`require` encrypts,
//! `verify-ca` also checks the chain against `DATABASE_TLS_CA_FILE`, `verify-full` the host name
//! too) and a rustls connector for tokio-postgres, so that no OpenSSL is needed.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// What `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// `disable`, `allow`, `prefer` or none: plain (the server may not offer TLS).
    Plain,
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
            return Some((Self::Plain, url.to_owned()));
        };
        let mut mode = Self::Plain;
        let mut params = Vec::new();
        for param in query.split('&') {
            match param.strip_prefix("sslmode=") {
                Some(value) => {
                    mode = match value {
                        "disable" | "allow" | "prefer" => Self::Plain,
                        "require" => Self::Require,
                        "verify-ca" => Self::VerifyCa,
                        "verify-full" => Self::VerifyFull,
                        _ => return None,
                    };
                    params.push(match mode {
                        Self::Plain => param.to_owned(),
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
    Rustls(MakeRustls),
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
            None if mode == SslMode::Require => Arc::new(Verifier {
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
        Ok(Self::Rustls(MakeRustls {
            config: Arc::new(config),
        }))
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

/// tokio-postgres's `MakeTlsConnect` over rustls.
#[derive(Clone)]
pub struct MakeRustls {
    config: Arc<ClientConfig>,
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        Ok(RustlsConnect {
            config: self.config.clone(),
            name: ServerName::try_from(domain.to_owned())?,
        })
    }
}

pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(stream))
        })
    }
}

pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_and_verify_modes_become_require_for_the_driver() {
        assert_eq!(
            SslMode::from_url("postgres://u:p@h:5432/db"),
            Some((SslMode::Plain, "postgres://u:p@h:5432/db".to_owned()))
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
            Some(SslMode::Plain)
        );
        assert_eq!(SslMode::from_url("postgres://h/db?sslmode=sometimes"), None);
    }

    #[test]
    fn verify_modes_need_a_ca_file() {
        assert!(DbTls::new(SslMode::VerifyFull, None).is_err());
        assert!(matches!(DbTls::new(SslMode::Require, None), Ok(DbTls::Rustls(_))));
        assert!(matches!(DbTls::new(SslMode::Plain, None), Ok(DbTls::Plain)));
    }
}
