//! Access-token verification, shared by the gateway and every service.
//!
//! Tokens are EdDSA JWTs signed by auth-service. Verification pins the algorithm and `typ`
//! (`at+jwt`), looks the `kid` up in a JWKS cache, and checks `iss`, `aud`, `exp` and `nbf` with a
//! small leeway. Revocation (logout, "not before") is the caller's second step: the gateway asks
//! Redis.
//!
//! The JWKS cache: one fetch in flight at most; an unknown `kid` triggers a fetch at most once
//! per `refetch_interval` and is then refused without one (nor a wait) for as long; a failed fetch
//! is not retried before a backoff (1 s doubling to a minute), during which calls are answered at
//! once; and the set is fetched again every `refresh_interval` (default 5 min), so a key
//! auth-service withdraws stops verifying (with the tokens it signed) without a restart.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use proto::auth::v1::GetJwksRequest;
use proto::auth::v1::auth_service_client::AuthServiceClient;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

/// `typ` header of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id (UUID).
    pub sub: String,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    /// The issue time in Unix milliseconds, so a "not before" set in the same second as a
    /// login tells the tokens issued before it from those issued after. Absent from older tokens
    /// (then `iat`, the start of its second, stands in: such a token is judged early, never late).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub iat_ms: u64,
    /// Token id (UUID), the key of per-token revocation.
    pub jti: String,
    /// Session id (UUID): one per login.
    pub sid: String,
    /// Device id as the app reported it.
    pub did: String,
    pub roles: Vec<String>,
}

impl AccessClaims {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// When the token was issued, in Unix milliseconds (see [`Self::iat_ms`]).
    pub fn issued_at_ms(&self) -> u64 {
        if self.iat_ms != 0 {
            self.iat_ms
        } else {
            self.iat.saturating_mul(1000)
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("token invalid")]
    Invalid,
    #[error("token revoked")]
    Revoked,
    /// The keys could not be fetched: the caller cannot decide, and must not let the request through.
    #[error("token keys unavailable")]
    KeysUnavailable,
}

/// One public key as the JWKS lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    /// Base64url Ed25519 public key.
    pub x: String,
}

pub type KeysFuture = Pin<Box<dyn Future<Output = anyhow::Result<Vec<PublicKey>>> + Send>>;
/// Where the cache gets keys from (auth-service's `GetJwks`, or auth-service's own keys).
pub type KeySource = Arc<dyn Fn() -> KeysFuture + Send + Sync>;

/// The keys auth-service's `GetJwks` lists over `channel`, EdDSA ones only (the verifier pins
/// the algorithm, so any other key could never verify a token). The key source of every verifier
/// outside auth-service; this module's tests run it against a real `auth.v1` server.
pub fn jwks_over_grpc(channel: tonic::transport::Channel) -> KeySource {
    Arc::new(move || {
        let mut client = AuthServiceClient::new(channel.clone());
        Box::pin(async move {
            let keys = client.get_jwks(GetJwksRequest {}).await?.into_inner().keys;
            Ok(keys
                .into_iter()
                .filter(|k| k.alg == "EdDSA")
                .map(|k| PublicKey { kid: k.kid, x: k.x })
                .collect())
        })
    })
}

#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// `JWT_ISSUER`
    pub issuer: String,
    /// `JWT_AUDIENCE`
    pub audience: String,
    /// Allowed clock skew for `exp` and `nbf`.
    pub leeway: Duration,
    /// Minimum time between two JWKS fetches triggered by unknown `kid`s (`JWKS_REFETCH_SECONDS`);
    /// a `kid` missing from a fetch is refused from memory until that fetch is this old.
    pub refetch_interval: Duration,
    /// How often the JWKS is fetched again even when every `kid` seen is known
    /// (`JWKS_REFRESH_SECONDS`), so a key withdrawn by auth-service stops verifying.
    pub refresh_interval: Duration,
}

impl VerifierConfig {
    pub fn from_env(env: &crate::config::Env) -> Self {
        Self {
            issuer: env
                .optional_string("JWT_ISSUER")
                .unwrap_or_else(|| "https://auth.platform.local".to_owned()),
            audience: env
                .optional_string("JWT_AUDIENCE")
                .unwrap_or_else(|| "platform-api".to_owned()),
            leeway: env.seconds_in("JWT_LEEWAY_SECONDS", 30, 0, 300),
            refetch_interval: env.seconds_in("JWKS_REFETCH_SECONDS", 5, 1, 3600),
            refresh_interval: env.seconds_in("JWKS_REFRESH_SECONDS", DEFAULT_REFRESH_INTERVAL.as_secs(), 1, 86_400),
        }
    }
}

/// How often the JWKS is fetched again even when every `kid` seen is known.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// The first wait after a failed fetch; doubled per failure in a row, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Unknown `kid`s remembered at most; past it the memory is emptied (a flood of invented ones
/// costs no more than the one fetch per interval it already costs).
const UNKNOWN_KIDS_MAX: usize = 10_000;

struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
    /// Failed fetches in a row, and when the next one may be tried.
    failures: u32,
    retry_at: Option<Instant>,
    /// `kid`s a fetch did not list, with that fetch's time: refused without a fetch (or a wait)
    /// until it is `refetch_interval` old.
    unknown: HashMap<Box<str>, Instant>,
}

impl KeyCache {
    fn backing_off(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|t| now < t)
    }

    fn known_unknown(&self, kid: &str, now: Instant, interval: Duration) -> bool {
        self.unknown
            .get(kid)
            .is_some_and(|&seen| now.duration_since(seen) < interval)
    }

    fn remember_unknown(&mut self, kid: &str, now: Instant) {
        if self.unknown.len() >= UNKNOWN_KIDS_MAX {
            self.unknown.clear();
        }
        self.unknown.insert(kid.into(), now);
    }
}

/// The wait after `failures` failed fetches in a row.
fn backoff(failures: u32) -> Duration {
    MIN_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// Tokens already verified, by their exact text: a phone sends the same token for many requests,
/// and the signature check is most of the cost of a request at the edge. Entries are only ever
/// made from tokens that passed every check; the claims' `exp` is checked again on each hit, and
/// the whole cache is dropped when the key set changes. Past `VERIFIED_CACHE_MAX` entries it is
/// emptied (an attacker cannot grow it without valid tokens, and a full flush is cheap to refill).
const VERIFIED_CACHE_MAX: usize = 10_000;

/// Shared claims: a hit hands out the cached claims, not a copy of their strings.
type VerifiedCache = std::sync::Mutex<HashMap<Box<str>, Arc<AccessClaims>>>;

/// Verifies access tokens against a cached JWKS.
#[derive(Clone)]
pub struct Verifier {
    config: Arc<VerifierConfig>,
    source: KeySource,
    cache: Arc<RwLock<KeyCache>>,
    fetch_lock: Arc<Mutex<()>>,
    verified: Arc<VerifiedCache>,
    refresh_interval: Duration,
    /// When the next periodic fetch is due, in milliseconds after `epoch` (read on every
    /// verification without a lock).
    refresh_due_ms: Arc<AtomicU64>,
    epoch: Instant,
}

impl Verifier {
    pub fn new(config: VerifierConfig, source: KeySource) -> Self {
        Self {
            refresh_interval: config.refresh_interval,
            config: Arc::new(config),
            source,
            cache: Arc::new(RwLock::new(KeyCache {
                keys: HashMap::new(),
                fetched_at: None,
                failures: 0,
                retry_at: None,
                unknown: HashMap::new(),
            })),
            fetch_lock: Arc::new(Mutex::new(())),
            verified: Arc::new(std::sync::Mutex::new(HashMap::new())),
            refresh_due_ms: Arc::new(AtomicU64::new(u64::MAX)),
            epoch: Instant::now(),
        }
    }

    /// The same verifier, fetching the JWKS again every `interval` (default
    /// [`DEFAULT_REFRESH_INTERVAL`]).
    #[must_use]
    pub fn with_refresh_interval(self, interval: Duration) -> Self {
        Self {
            refresh_interval: interval,
            ..self
        }
    }

    fn millis_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Fetches the JWKS again when the periodic refresh is due and no fetch is under way (a
    /// caller never waits for another's refresh: the keys it has are still good to use).
    async fn refresh_if_due(&self) {
        if self.millis_since_epoch(Instant::now()) < self.refresh_due_ms.load(Ordering::Relaxed) {
            return;
        }
        let Ok(_guard) = self.fetch_lock.try_lock() else {
            return;
        };
        let now = Instant::now();
        if self.millis_since_epoch(now) < self.refresh_due_ms.load(Ordering::Relaxed)
            || self.cache.read().await.backing_off(now)
        {
            return;
        }
        // A failure keeps the keys in hand; the next try waits for the backoff.
        let _ = self.fetch().await;
    }

    /// One fetch of the JWKS (the caller holds `fetch_lock`): the key set replaced on success,
    /// the backoff set on failure. Either way the next periodic fetch is scheduled.
    async fn fetch(&self) -> Result<(), ()> {
        let fetched = (self.source)().await;
        let now = Instant::now();
        let mut cache = self.cache.write().await;
        let fetched = match fetched {
            Ok(keys) => keys,
            Err(e) => {
                cache.failures = cache.failures.saturating_add(1);
                let wait = backoff(cache.failures);
                cache.retry_at = Some(now + wait);
                self.refresh_due_ms
                    .store(self.millis_since_epoch(now + wait), Ordering::Relaxed);
                tracing::warn!(
                    error = format!("{e:#}"),
                    failures = cache.failures,
                    retry_in_ms = wait.as_millis() as u64,
                    "cannot fetch the JWKS"
                );
                return Err(());
            }
        };
        let mut keys = HashMap::new();
        for k in fetched {
            match DecodingKey::from_ed_components(&k.x) {
                Ok(key) => {
                    keys.insert(k.kid, key);
                }
                Err(e) => tracing::error!(kid = %k.kid, error = %e, "JWKS holds a key that is not Ed25519"),
            }
        }
        if cache.keys.len() != keys.len() || cache.keys.keys().any(|kid| !keys.contains_key(kid)) {
            // A key may have been withdrawn: tokens it signed must be checked again.
            self.verified().clear();
            if cache.fetched_at.is_some() {
                tracing::info!(keys = keys.len(), "the JWKS changed");
            }
        }
        cache.unknown.retain(|kid, _| !keys.contains_key(&**kid));
        cache.keys = keys;
        cache.fetched_at = Some(now);
        cache.failures = 0;
        cache.retry_at = None;
        self.refresh_due_ms
            .store(self.millis_since_epoch(now + self.refresh_interval), Ordering::Relaxed);
        Ok(())
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<AccessClaims>>> {
        self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Verifies signature and claims (not revocation).
    pub async fn verify(&self, token: &str) -> Result<Arc<AccessClaims>, TokenError> {
        if token.len() > 4096 {
            return Err(TokenError::Invalid);
        }
        self.refresh_if_due().await;
        let hit = self.verified().get(token).cloned();
        if let Some(claims) = hit {
            let now = jsonwebtoken::get_current_timestamp();
            // The same rule as jsonwebtoken's: expired once `exp` is more than the leeway ago.
            if claims.exp.saturating_add(self.config.leeway.as_secs()) < now {
                self.verified().remove(token);
                return Err(TokenError::Expired);
            }
            return Ok(claims);
        }
        let claims = Arc::new(self.verify_uncached(token).await?);
        let mut verified = self.verified();
        if verified.len() >= VERIFIED_CACHE_MAX {
            verified.clear();
        }
        verified.insert(token.into(), claims.clone());
        Ok(claims)
    }

    /// [`Self::verify`] without the cache of verified tokens (for benchmarks: the signature cost).
    pub async fn verify_uncached(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        // Pinned: `alg: none`, HS256 with the public key as secret, RS256 … are all refused here,
        // before any key is looked at.
        if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        if kid.len() > 128 {
            return Err(TokenError::Invalid);
        }
        let key = self.key(&kid).await?.ok_or(TokenError::Invalid)?;

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        match jsonwebtoken::decode::<AccessClaims>(token, &key, &validation) {
            Ok(data) => Ok(data.claims),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => Err(TokenError::Expired),
            Err(_) => Err(TokenError::Invalid),
        }
    }

    /// The key for `kid`, fetching the JWKS when it is unknown (see the module's rules).
    async fn key(&self, kid: &str) -> Result<Option<DecodingKey>, TokenError> {
        let interval = self.config.refetch_interval;
        // Never fetched and backing off: nobody can tell, and nobody waits to learn it.
        let refuse = |cache: &KeyCache| {
            if cache.fetched_at.is_none() {
                Err(TokenError::KeysUnavailable)
            } else {
                Ok(None)
            }
        };
        {
            let cache = self.cache.read().await;
            if let Some(key) = cache.keys.get(kid) {
                return Ok(Some(key.clone()));
            }
            let now = Instant::now();
            if cache.known_unknown(kid, now, interval) {
                return Ok(None);
            }
            if cache.backing_off(now) {
                return refuse(&cache);
            }
        }
        let _guard = self.fetch_lock.lock().await;
        // Another caller may have fetched (or failed to) while we waited.
        let recent = {
            let cache = self.cache.read().await;
            if let Some(key) = cache.keys.get(kid) {
                return Ok(Some(key.clone()));
            }
            if cache.backing_off(Instant::now()) {
                return refuse(&cache);
            }
            cache.fetched_at.is_some_and(|t| t.elapsed() < interval)
        };
        if !recent && self.fetch().await.is_err() {
            return refuse(&*self.cache.read().await);
        }
        let mut cache = self.cache.write().await;
        if let Some(key) = cache.keys.get(kid) {
            return Ok(Some(key.clone()));
        }
        // A flood of made-up kids must not turn into a flood of JWKS fetches, nor of waits. The
        // entry lapses when the fetch it was missing from is `refetch_interval` old, as a new
        // fetch is allowed then anyway (a key published meanwhile is not refused any longer).
        let fetched_at = cache.fetched_at.unwrap_or_else(Instant::now);
        cache.remember_unknown(kid, fetched_at);
        Ok(None)
    }
}

/// The bearer token of an `authorization` value.
pub fn bearer(value: Option<&str>) -> Result<&str, TokenError> {
    let value = value.ok_or(TokenError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(TokenError::Invalid);
    }
    Ok(token.trim())
}

/// Verifies the bearer token a gRPC call carries in its `authorization` metadata.
pub async fn verify_request<T>(
    verifier: &Verifier,
    request: &tonic::Request<T>,
) -> Result<AccessClaims, tonic::Status> {
    let refused = |e: TokenError| crate::errors::status(crate::errors::ErrorCode::from(e), "authentication required");
    let value = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
    let token = bearer(value).map_err(refused)?;
    verifier.verify(token).await.map(Arc::unwrap_or_clone).map_err(refused)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::Engine as _;
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;
    use proto::auth::v1 as pb;
    use proto::auth::v1::auth_service_server::{AuthService, AuthServiceServer};
    use tonic::transport::Channel;

    use super::*;

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims(exp: u64) -> AccessClaims {
        AccessClaims {
            iss: "iss".into(),
            aud: "aud".into(),
            sub: "user".into(),
            exp,
            iat: now(),
            nbf: now(),
            iat_ms: 0,
            jti: "jti".into(),
            sid: "sid".into(),
            did: "device".into(),
            roles: vec!["user".into()],
        }
    }

    /// A key pair from a fixed seed: its JWKS entry, and a token it signs under `kid`.
    fn key(seed: u8) -> (PublicKey, impl Fn(&str, &AccessClaims) -> String) {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let public = PublicKey {
            kid: format!("k{seed}"),
            x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes()),
        };
        let pem = signing
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("pem");
        let encoding = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).expect("key");
        let sign = move |kid: &str, c: &AccessClaims| {
            let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
            header.kid = Some(kid.to_owned());
            header.typ = Some(ACCESS_TOKEN_TYPE.into());
            jsonwebtoken::encode(&header, c, &encoding).expect("sign")
        };
        (public, sign)
    }

    /// auth-service's `GetJwks` as the verifier meets it in production: a tonic server on a
    /// loopback port answering whatever keys the test has it serve, counting the calls. The other
    /// methods of `auth.v1` answer `UNIMPLEMENTED`.
    #[derive(Clone, Default)]
    struct JwksServer {
        keys: Arc<std::sync::Mutex<Vec<PublicKey>>>,
        calls: Arc<AtomicUsize>,
        /// Answer `UNAVAILABLE` (a database or a restart away), counting the call all the same.
        failing: Arc<std::sync::atomic::AtomicBool>,
    }

    impl JwksServer {
        fn fail(&self, failing: bool) {
            self.failing.store(failing, Ordering::SeqCst);
        }

        fn serve_keys(&self, keys: Vec<PublicKey>) {
            *self.keys.lock().expect("keys") = keys;
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        /// Starts serving and answers a channel to it. The listener is bound before this returns,
        /// so the first call connects whether or not the server task has run yet.
        async fn start(&self) -> Channel {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("address");
            let serve = tonic::transport::Server::builder()
                .add_service(AuthServiceServer::new(self.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
            tokio::spawn(serve);
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("endpoint")
                .connect_lazy()
        }
    }

    /// The `AuthService` impl: `GetJwks` as auth-service answers it (RFC 8037 fields), and every
    /// other method listed once, answering `UNIMPLEMENTED`.
    macro_rules! jwks_only {
        ($($method:ident($request:ident) -> $response:ident;)*) => {
            #[tonic::async_trait]
            impl AuthService for JwksServer {
                async fn get_jwks(
                    &self,
                    _request: tonic::Request<pb::GetJwksRequest>,
                ) -> Result<tonic::Response<pb::GetJwksResponse>, tonic::Status> {
                    self.calls.fetch_add(1, Ordering::SeqCst);
                    if self.failing.load(Ordering::SeqCst) {
                        return Err(tonic::Status::unavailable("down"));
                    }
                    let keys = self.keys.lock().expect("keys").clone();
                    let keys = keys
                        .into_iter()
                        .map(|k| pb::Jwk {
                            kty: "OKP".into(),
                            crv: "Ed25519".into(),
                            x: k.x,
                            kid: k.kid,
                            alg: "EdDSA".into(),
                            r#use: "sig".into(),
                        })
                        .collect();
                    Ok(tonic::Response::new(pb::GetJwksResponse { keys }))
                }
                $(
                    async fn $method(
                        &self,
                        _request: tonic::Request<pb::$request>,
                    ) -> Result<tonic::Response<pb::$response>, tonic::Status> {
                        Err(tonic::Status::unimplemented(stringify!($method)))
                    }
                )*
            }
        };
    }

    jwks_only! {
        register(RegisterRequest) -> SessionResponse;
        login(LoginRequest) -> SessionResponse;
        refresh(RefreshRequest) -> Tokens;
        logout(LogoutRequest) -> LogoutResponse;
        logout_all(LogoutAllRequest) -> LogoutResponse;
        get_me(GetMeRequest) -> User;
        update_me(UpdateMeRequest) -> User;
        change_password(ChangePasswordRequest) -> ChangePasswordResponse;
        list_devices(ListDevicesRequest) -> ListDevicesResponse;
        remove_device(RemoveDeviceRequest) -> RemoveDeviceResponse;
        verify_email(VerifyEmailRequest) -> VerifyEmailResponse;
        request_password_reset(PasswordResetRequest) -> PasswordResetResponse;
        confirm_password_reset(ConfirmPasswordResetRequest) -> PasswordResetResponse;
        list_audit_logs(ListAuditLogsRequest) -> ListAuditLogsResponse;
        mfa_enroll(MfaEnrollRequest) -> MfaEnrollResponse;
        mfa_confirm(MfaCodeRequest) -> MfaConfirmResponse;
        mfa_disable(MfaDisableRequest) -> MfaDisableResponse;
        check_token(CheckTokenRequest) -> CheckTokenResponse;
    }

    /// A server serving `keys`, and a verifier on a channel to it.
    async fn serving(keys: Vec<PublicKey>, refetch_interval: Duration) -> (JwksServer, Verifier) {
        let server = JwksServer::default();
        server.serve_keys(keys);
        let verifier = verifier(server.start().await, refetch_interval);
        (server, verifier)
    }

    /// A verifier whose keys come from `GetJwks` over `channel` through [`jwks_over_grpc`], the
    /// source the gateway builds its verifier with (`gateway/src/app.rs`).
    fn verifier(channel: Channel, refetch_interval: Duration) -> Verifier {
        let config = VerifierConfig {
            issuer: "iss".into(),
            audience: "aud".into(),
            leeway: Duration::ZERO,
            refetch_interval,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
        };
        Verifier::new(config, jwks_over_grpc(channel))
    }

    #[tokio::test]
    async fn cached_tokens_still_expire_and_only_the_exact_text_hits() {
        let (public, sign) = key(1);
        let (_server, v) = serving(vec![public.clone()], Duration::ZERO).await;
        let token = sign(&public.kid, &claims(now() + 3600));
        assert_eq!(v.verify(&token).await.expect("valid").sub, "user");
        assert!(v.verified().contains_key(token.as_str()), "verified tokens are cached");
        // One character changed in the signature: not a hit, and refused.
        let mut forged = token.clone();
        let last = forged.pop().expect("char");
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(v.verify(&forged).await, Err(TokenError::Invalid));
        assert!(!v.verified().contains_key(forged.as_str()));
        // A cached entry past its `exp` is refused and dropped.
        v.verified().insert(token.as_str().into(), Arc::new(claims(now() - 1)));
        assert_eq!(v.verify(&token).await, Err(TokenError::Expired));
        assert!(!v.verified().contains_key(token.as_str()));
    }

    #[tokio::test]
    async fn withdrawing_a_key_forgets_the_tokens_it_signed() {
        let (first, sign_first) = key(1);
        let (second, sign_second) = key(2);
        let (server, v) = serving(vec![first.clone()], Duration::ZERO).await;
        let old = sign_first(&first.kid, &claims(now() + 3600));
        assert!(v.verify(&old).await.is_ok());
        // The first key is withdrawn; a token of the second makes the verifier refetch.
        server.serve_keys(vec![second.clone()]);
        assert!(v.verify(&sign_second(&second.kid, &claims(now() + 3600))).await.is_ok());
        assert_eq!(v.verify(&old).await, Err(TokenError::Invalid));
    }

    #[tokio::test]
    async fn a_flood_of_invented_kids_costs_one_jwks_call() {
        let (public, sign) = key(1);
        let (_, sign_unserved) = key(9);
        // The longest interval `JWKS_REFETCH_SECONDS` allows: however slow the host, the whole test
        // runs inside one interval, so one call is the exact count.
        let (server, v) = serving(vec![public.clone()], Duration::from_secs(3600)).await;
        let mut flood = tokio::task::JoinSet::new();
        for i in 0..100 {
            let token = sign_unserved(&format!("invented-{i}"), &claims(now() + 3600));
            let v = v.clone();
            flood.spawn(async move { v.verify(&token).await });
        }
        while let Some(answer) = flood.join_next().await {
            assert_eq!(answer.expect("task"), Err(TokenError::Invalid));
        }
        assert_eq!(server.calls(), 1, "100 unknown kids, one GetJwks");
        // The one fetch brought the served key: its tokens verify with no further call.
        let token = sign(&public.kid, &claims(now() + 3600));
        assert_eq!(v.verify(&token).await.expect("valid").sub, "user");
        assert_eq!(server.calls(), 1);
    }

    #[tokio::test]
    async fn a_rotated_key_verifies_without_rebuilding_the_verifier() {
        let (old_key, sign_old) = key(1);
        let (new_key, sign_new) = key(2);
        // The shortest interval `JWKS_REFETCH_SECONDS` allows.
        let interval = Duration::from_secs(1);
        let (server, v) = serving(vec![old_key.clone()], interval).await;
        let started = Instant::now();
        let old = sign_old(&old_key.kid, &claims(now() + 3600));
        assert!(v.verify(&old).await.is_ok());
        let first_fetch_done = Instant::now();
        assert_eq!(server.calls(), 1);
        // auth-service rotates: the new key is published first, the old one stays for its tokens.
        server.serve_keys(vec![new_key.clone(), old_key.clone()]);
        let new = sign_new(&new_key.kid, &claims(now() + 3600));
        let early = v.verify(&new).await;
        if started.elapsed() < interval {
            // Within the interval of the last fetch an unknown kid is refused without a call.
            assert_eq!(early, Err(TokenError::Invalid));
            assert_eq!(server.calls(), 1);
        }
        // The interval under test has to pass; no readiness signal stands in for time.
        tokio::time::sleep_until((first_fetch_done + interval).into()).await;
        assert_eq!(v.verify(&new).await.expect("the new key verifies").sub, "user");
        assert_eq!(server.calls(), 2, "one refetch brought the new key");
        assert!(v.verify(&old).await.is_ok(), "the old key's tokens still verify");
        assert_eq!(server.calls(), 2);
    }

    #[tokio::test]
    async fn failed_fetches_back_off_and_never_stampede() {
        let (public, sign) = key(1);
        let (server, v) = serving(vec![public.clone()], Duration::ZERO).await;
        server.fail(true);
        let token = sign(&public.kid, &claims(now() + 3600));
        let mut burst = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (v, token) = (v.clone(), token.clone());
            burst.spawn(async move { v.verify(&token).await });
        }
        while let Some(answer) = burst.join_next().await {
            assert_eq!(answer.expect("task"), Err(TokenError::KeysUnavailable));
        }
        assert_eq!(server.calls(), 1, "50 callers while the JWKS fails, one GetJwks");
        // Inside the backoff nobody asks again, even with the source back.
        server.fail(false);
        assert_eq!(v.verify(&token).await, Err(TokenError::KeysUnavailable));
        assert_eq!(server.calls(), 1);
        // The backoff is time itself; no readiness signal stands in for it.
        tokio::time::sleep(MIN_BACKOFF).await;
        assert_eq!(v.verify(&token).await.expect("valid after the backoff").sub, "user");
        assert_eq!(server.calls(), 2);
    }

    #[test]
    fn the_backoff_doubles_up_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn an_unknown_kid_is_refused_without_a_fetch_for_the_interval() {
        let (public, _) = key(1);
        let (_, sign_unserved) = key(9);
        let interval = Duration::from_secs(3600);
        let (server, v) = serving(vec![public], interval).await;
        let invented = sign_unserved("invented", &claims(now() + 3600));
        assert_eq!(v.verify(&invented).await, Err(TokenError::Invalid));
        assert_eq!(server.calls(), 1);
        assert!(v.cache.read().await.unknown.contains_key("invented"));
        // Refused from memory: the fetch lock held elsewhere (a slow fetch) does not hold it up.
        let _held = v.fetch_lock.lock().await;
        let answer = tokio::time::timeout(Duration::from_secs(5), v.verify(&invented)).await;
        assert_eq!(answer.expect("no wait"), Err(TokenError::Invalid));
        assert_eq!(server.calls(), 1);
    }

    #[tokio::test]
    async fn the_jwks_is_refreshed_periodically_so_a_withdrawn_key_stops_verifying() {
        let (first, sign_first) = key(1);
        let (second, _) = key(2);
        let refresh = Duration::from_millis(300);
        let (server, v) = serving(vec![first.clone()], Duration::from_secs(3600)).await;
        let v = v.with_refresh_interval(refresh);
        let token = sign_first(&first.kid, &claims(now() + 3600));
        assert!(v.verify(&token).await.is_ok());
        let fetched = Instant::now();
        assert_eq!(server.calls(), 1);
        // auth-service withdraws the first key. Until the refresh is due the cached token stands.
        server.serve_keys(vec![second]);
        if fetched.elapsed() < refresh {
            assert!(v.verify(&token).await.is_ok());
        }
        // The refresh interval is what is under test: it has to pass.
        tokio::time::sleep_until((fetched + refresh).into()).await;
        assert_eq!(v.verify(&token).await, Err(TokenError::Invalid));
        assert_eq!(server.calls(), 2, "one periodic refresh");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_keys_in_hand() {
        let (public, sign) = key(1);
        let refresh = Duration::from_millis(200);
        let (server, v) = serving(vec![public.clone()], Duration::from_secs(3600)).await;
        let v = v.with_refresh_interval(refresh);
        let token = sign(&public.kid, &claims(now() + 3600));
        assert!(v.verify(&token).await.is_ok());
        let fetched = Instant::now();
        server.fail(true);
        tokio::time::sleep_until((fetched + refresh).into()).await;
        assert!(
            v.verify(&token).await.is_ok(),
            "auth-service down: the keys in hand still verify"
        );
        assert_eq!(server.calls(), 2);
        // The failure backs off: the next verification does not ask again.
        assert!(v.verify(&token).await.is_ok());
        assert_eq!(server.calls(), 2);
    }
}
