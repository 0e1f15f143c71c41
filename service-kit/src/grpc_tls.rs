//! mTLS for the inside traffic: the certificate, key and internal CA every process reads the same
//! way (`GRPC_TLS_CERT_FILE`, `GRPC_TLS_KEY_FILE`, `GRPC_TLS_CA_FILE`), the server's check of who
//! is calling (`GRPC_ALLOWED_CLIENTS`, on the names of the client certificate), and the rule that
//! only the gateway may say what the client's address and user agent are.
//!
//! Plain gRPC is a development shortcut: `APP_ENV=development` and `GRPC_INSECURE=true` together.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{Env, Environment};

/// The name in the gateway's certificate: the one caller whose `x-client-ip` and `x-user-agent`
/// are believed.
pub const GATEWAY_IDENTITY: &str = "gateway";

/// Metadata only the gateway may set; stripped from every other caller's requests.
pub const FORWARDED_METADATA: [&str; 2] = ["x-client-ip", "x-user-agent"];

/// The PEM files of one process, read and checked at start.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    cert_pem: Vec<u8>,
    key_pem: secrecy::SecretSlice<u8>,
    ca_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert_file", &self.cert_file)
            .field("key_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// How this process speaks gRPC with the others.
#[derive(Debug, Clone)]
pub enum GrpcTls {
    /// `GRPC_INSECURE=true` under `APP_ENV=development` only.
    Insecure,
    Mutual(TlsFiles),
}

impl GrpcTls {
    /// Reads the three files (or the explicit development shortcut); every problem is recorded
    /// on `env`, naming the variable.
    pub fn from_env(env: &Env, environment: Environment) -> Option<Self> {
        if env.bool_or("GRPC_INSECURE", false) {
            if environment != Environment::Development {
                env.problem(
                    "GRPC_INSECURE",
                    format!(
                        "is refused when APP_ENV={} (plain gRPC carries passwords in clear and lets \
                         anyone call the services; it is for APP_ENV=development only): set GRPC_TLS_CERT_FILE, GRPC_TLS_KEY_FILE and GRPC_TLS_CA_FILE",
                        environment.as_str()
                    ),
                );
                return None;
            }
            return Some(Self::Insecure);
        }
        let hint = "(or GRPC_INSECURE=true with APP_ENV=development)";
        let path = |name: &str| {
            let value = env.optional_string(name);
            if value.is_none() {
                env.problem(name, format!("is missing {hint}"));
            }
            value.map(PathBuf::from)
        };
        let (cert_file, key_file, ca_file) = (
            path("GRPC_TLS_CERT_FILE"),
            path("GRPC_TLS_KEY_FILE"),
            path("GRPC_TLS_CA_FILE"),
        );
        let (cert_file, key_file, ca_file) = (cert_file?, key_file?, ca_file?);
        let read = |name: &str, path: &PathBuf| match std::fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                env.problem(
                    name,
                    format!("names a file that cannot be read ({}: {e})", path.display()),
                );
                None
            }
        };
        let cert_pem = read("GRPC_TLS_CERT_FILE", &cert_file);
        let key_pem = read("GRPC_TLS_KEY_FILE", &key_file);
        let ca_pem = read("GRPC_TLS_CA_FILE", &ca_file);
        let (cert_pem, key_pem, ca_pem) = (cert_pem?, key_pem?, ca_pem?);
        let mut ok = true;
        for (name, pem) in [("GRPC_TLS_CERT_FILE", &cert_pem), ("GRPC_TLS_CA_FILE", &ca_pem)] {
            if !pem_has_certificate(pem) {
                env.problem(name, "holds no PEM certificate");
                ok = false;
            }
        }
        if PrivateKeyDer::from_pem_slice(&key_pem).is_err() {
            env.problem("GRPC_TLS_KEY_FILE", "holds no PEM private key");
            ok = false;
        }
        ok.then(|| {
            Self::Mutual(TlsFiles {
                cert_file,
                cert_pem,
                key_pem: key_pem.into(),
                ca_pem,
            })
        })
    }

    pub fn is_mutual(&self) -> bool {
        matches!(self, Self::Mutual(_))
    }

    /// The server side: our certificate, and client certificates required and verified against
    /// the internal CA.
    pub fn server_config(&self) -> Option<ServerTlsConfig> {
        match self {
            Self::Insecure => None,
            Self::Mutual(files) => Some(
                ServerTlsConfig::new()
                    .identity(files.identity())
                    .client_ca_root(Certificate::from_pem(&files.ca_pem))
                    .client_auth_optional(false),
            ),
        }
    }

    /// The client side: the server verified against the internal CA (by the host of the URL), and
    /// our certificate presented as who we are.
    pub fn client_config(&self) -> Option<ClientTlsConfig> {
        match self {
            Self::Insecure => None,
            Self::Mutual(files) => Some(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&files.ca_pem))
                    .identity(files.identity())
                    .assume_http2(true),
            ),
        }
    }

    /// The scheme a service URL must have: `https` with mTLS, `http` in development without.
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Insecure => "http",
            Self::Mutual(_) => "https",
        }
    }
}

/// A service's URL from variable `name`: `https://` with mTLS, `http://` only with `GRPC_INSECURE`
/// (tonic would speak plain HTTP/2 to an `http://` URL even with TLS configured). Defaults to
/// loopback on `default_port`.
pub fn service_url(env: &Env, name: &str, tls: &GrpcTls, default_port: u16) -> String {
    let scheme = tls.scheme();
    let url = env
        .optional_string(name)
        .unwrap_or_else(|| format!("{scheme}://127.0.0.1:{default_port}"));
    if !url.starts_with(&format!("{scheme}://")) {
        let why = if tls.is_mutual() {
            "gRPC between processes is mTLS"
        } else {
            "GRPC_INSECURE=true"
        };
        env.problem(name, format!("must be a {scheme}:// URL ({why}), got {url:?}"));
    } else if tonic::transport::Endpoint::from_shared(url.clone()).is_err() {
        env.problem(name, format!("is not a URL: {url:?}"));
    }
    url
}

/// A lazy service-to-service channel to `url`: this process's certificate presented, the server
/// checked against the internal CA (unless `GRPC_INSECURE`); nothing connects until the first
/// call, and a lost connection is made again on the next one.
pub fn client_channel(
    tls: &GrpcTls,
    url: &str,
    connect_timeout: std::time::Duration,
    request_timeout: std::time::Duration,
) -> anyhow::Result<tonic::transport::Channel> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?;
    if let Some(config) = tls.client_config() {
        endpoint = endpoint.tls_config(config)?;
    }
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_timeout(std::time::Duration::from_secs(10))
        .connect_lazy())
}

impl TlsFiles {
    fn identity(&self) -> Identity {
        use secrecy::ExposeSecret as _;
        Identity::from_pem(&self.cert_pem, self.key_pem.expose_secret())
    }
}

fn pem_has_certificate(pem: &[u8]) -> bool {
    CertificateDer::pem_slice_iter(pem).next().is_some_and(|c| c.is_ok())
}

/// `GRPC_ALLOWED_CLIENTS`: comma-separated names a client certificate must carry (default
/// `gateway`), lower-cased (certificate names match in any case, and the gateway is told apart
/// by its name). Process names only: an IP address or `localhost` is on many certificates of
/// the internal CA at once, so it would admit them all.
pub fn allowed_clients(env: &Env) -> Vec<String> {
    let names: Vec<String> = env
        .optional_string("GRPC_ALLOWED_CLIENTS")
        .unwrap_or_else(|| GATEWAY_IDENTITY.to_owned())
        .split(',')
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for name in &names {
        let a_process =
            matches!(ServerName::try_from(name.as_str()), Ok(ServerName::DnsName(_))) && name != "localhost";
        if !a_process {
            env.problem(
                "GRPC_ALLOWED_CLIENTS",
                format!("must list process names like gateway (no address, no localhost), got {name:?}"),
            );
        }
    }
    if names.is_empty() {
        env.problem("GRPC_ALLOWED_CLIENTS", "lists no caller");
    }
    names
}

/// The first of `allowed` that the certificate names (its subject alternative names).
pub fn identity_of(cert: &CertificateDer<'_>, allowed: &[String]) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    allowed.iter().find_map(|name| {
        let server_name = ServerName::try_from(name.as_str()).ok()?;
        cert.verify_is_valid_for_subject_name(&server_name)
            .is_ok()
            .then(|| name.clone())
    })
}

/// Which allowed client a call came from, as its certificate names it (`gateway`,
/// `reports-service`, …): in the request's extensions when the server checks client
/// certificates, absent without TLS (development).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerProcess(pub String);

/// Refuses callers whose certificate names no allowed client (`PERMISSION_DENIED`), records the
/// one it names ([`CallerProcess`]), and strips
/// [`FORWARDED_METADATA`] from every caller but the gateway. Without TLS (development) it lets
/// everything through as it is.
#[derive(Clone)]
pub struct PeerIdentityLayer {
    allowed: Option<Arc<[String]>>,
}

impl PeerIdentityLayer {
    /// `None`: plain gRPC, nobody to check.
    pub fn new(allowed: Option<Vec<String>>) -> Self {
        Self {
            allowed: allowed.map(Arc::from),
        }
    }
}

impl<S> tower::Layer<S> for PeerIdentityLayer {
    type Service = PeerIdentity<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerIdentity {
            inner,
            allowed: self.allowed.clone(),
        }
    }
}

#[derive(Clone)]
pub struct PeerIdentity<S> {
    inner: S,
    allowed: Option<Arc<[String]>>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for PeerIdentity<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<S::Future, BoxFuture<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let Some(allowed) = &self.allowed else {
            return futures_util::future::Either::Left(self.inner.call(req));
        };
        let identity = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .and_then(|certs| identity_of(certs.first()?, allowed));
        match identity {
            None => {
                tracing::warn!(
                    method = %req.uri().path(),
                    "refused a gRPC call: the client certificate names no allowed caller (GRPC_ALLOWED_CLIENTS)"
                );
                let status = tonic::Status::permission_denied("this caller is not allowed");
                let response = status.into_http::<ResBody>();
                futures_util::future::Either::Right(Box::pin(async move { Ok(response) }))
            }
            Some(name) => {
                if name != GATEWAY_IDENTITY {
                    for key in FORWARDED_METADATA {
                        req.headers_mut().remove(key);
                    }
                }
                req.extensions_mut().insert(CallerProcess(name));
                futures_util::future::Either::Left(self.inner.call(req))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_map(pairs.iter().map(|(k, v)| (*k, *v)))
    }

    fn problems(pairs: &[(&str, &str)], environment: Environment) -> String {
        let e = env(pairs);
        let _ = GrpcTls::from_env(&e, environment);
        e.finish().err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn plain_grpc_needs_development_and_an_explicit_yes() {
        let e = env(&[("GRPC_INSECURE", "true")]);
        assert!(matches!(
            GrpcTls::from_env(&e, Environment::Development),
            Some(GrpcTls::Insecure)
        ));
        assert!(e.finish().is_ok());
        for environment in [Environment::Production, Environment::Test] {
            let err = problems(&[("GRPC_INSECURE", "true")], environment);
            assert!(err.contains("GRPC_INSECURE is refused when APP_ENV="), "{err}");
        }
        let err = problems(&[], Environment::Development);
        for name in ["GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "GRPC_TLS_CA_FILE"] {
            assert!(err.contains(&format!("{name} is missing")), "{err}");
        }
    }

    #[test]
    fn unreadable_or_wrong_files_are_named() {
        let err = problems(
            &[
                ("GRPC_TLS_CERT_FILE", "/nonexistent/c"),
                ("GRPC_TLS_KEY_FILE", "/nonexistent/k"),
                ("GRPC_TLS_CA_FILE", "/nonexistent/ca"),
            ],
            Environment::Production,
        );
        assert!(
            err.contains("GRPC_TLS_CERT_FILE names a file that cannot be read"),
            "{err}"
        );
        let dir = std::env::temp_dir().join(format!("svc-kit-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let junk = dir.join("junk");
        std::fs::write(&junk, "not pem").expect("write");
        let junk = junk.to_string_lossy().into_owned();
        let err = problems(
            &[
                ("GRPC_TLS_CERT_FILE", &junk),
                ("GRPC_TLS_KEY_FILE", &junk),
                ("GRPC_TLS_CA_FILE", &junk),
            ],
            Environment::Production,
        );
        assert!(err.contains("GRPC_TLS_CERT_FILE holds no PEM certificate"), "{err}");
        assert!(err.contains("GRPC_TLS_KEY_FILE holds no PEM private key"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_certificate_names_the_allowed_caller_it_was_issued_to() {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["reports-service".to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        let der = cert.der().clone();
        let allowed = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            identity_of(&der, &allowed(&["gateway", "reports-service"])).as_deref(),
            Some("reports-service")
        );
        assert_eq!(identity_of(&der, &allowed(&["gateway"])), None);
    }

    #[test]
    fn allowed_clients_default_to_the_gateway() {
        let e = env(&[]);
        assert_eq!(allowed_clients(&e), ["gateway"]);
        let e = env(&[("GRPC_ALLOWED_CLIENTS", "gateway, reports-service")]);
        assert_eq!(allowed_clients(&e), ["gateway", "reports-service"]);
        // Any case names the same caller: the gateway stays the gateway (its forwarded client
        // address believed).
        let e = env(&[("GRPC_ALLOWED_CLIENTS", "Gateway, REPORTS-service")]);
        assert_eq!(allowed_clients(&e), ["gateway", "reports-service"]);
        for refused in ["not a name", "127.0.0.1", "::1", "localhost", "gateway, LocalHost"] {
            let e = env(&[("GRPC_ALLOWED_CLIENTS", refused)]);
            allowed_clients(&e);
            assert!(e.finish().is_err(), "{refused:?} was accepted");
        }
    }
}
