//! The use cases of auth-service: register, login, refresh, logout, logout-all, profile. Each one
//! validates into domain types, does its writes in one transaction with the audit row, and only
//! then touches Redis (revocation) and signs tokens.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_redis::redis;
use diesel_async::AsyncConnection as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret as _, SecretString};
use service_kit::auth::AccessClaims;
use service_kit::db::Pool;
use sha2::Sha256;
use uuid::Uuid;

use crate::account::{self, Device, Email, Invalid, PersonName};
use crate::password::{Passwords, Verdict};
use crate::store::{self, Actor, NewUser, StoreError, UserRow};
use crate::tokens::{TokenIssuer, refresh_hash};

/// Policy knobs from configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `LOGIN_MAX_ATTEMPTS` (5)
    pub max_attempts: i32,
    /// `LOCKOUT_SECONDS` (900), doubled on each further lock up to 24 h.
    pub lockout: Duration,
    /// `REFRESH_RETRY_GRACE` (10 s)
    pub refresh_grace: Duration,
    /// `LOGIN_IP_MAX_FAILURES` (20): failed logins from one client address, across accounts,
    /// within `LOCKOUT_SECONDS`, after which that address must solve a CAPTCHA (or, with no
    /// CAPTCHA provider, waits): credential stuffing.
    pub ip_max_failures: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid {}: {}", .0.field, .0.issue)]
    Invalid(Invalid),
    #[error("e-mail already registered")]
    EmailTaken,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("account locked")]
    Locked { retry_after: u64 },
    #[error("refresh token reused")]
    TokenReused,
    #[error("session ended")]
    Revoked,
    #[error("refresh token expired")]
    Expired,
    #[error("not authenticated")]
    Unauthenticated,
    #[error("not found")]
    NotFound,
    #[error("forbidden")]
    Forbidden,
    #[error("mfa code required")]
    MfaRequired,
    #[error("mfa code invalid")]
    MfaInvalid,
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("too many failed logins from this address")]
    TooManyFailures { retry_after: u64 },
    #[error("captcha required")]
    CaptchaRequired,
    #[error("captcha failed")]
    CaptchaFailed,
    #[error("dependency unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::EmailTaken => Self::EmailTaken,
            StoreError::Unavailable(e) => Self::Unavailable(e),
            StoreError::Unexpected(e) => Self::Unexpected(e),
        }
    }
}

impl From<diesel::result::Error> for AuthError {
    fn from(e: diesel::result::Error) -> Self {
        StoreError::from(e).into()
    }
}

impl From<Invalid> for AuthError {
    fn from(e: Invalid) -> Self {
        Self::Invalid(e)
    }
}

pub struct RegisterInput {
    pub email: String,
    pub password: SecretString,
    pub first_name: String,
    pub last_name: String,
    pub income_tier: String,
    pub device: Option<Device>,
    pub captcha_token: String,
}

pub struct LoginInput {
    pub email: String,
    pub password: SecretString,
    pub device: Device,
    pub captcha_token: String,
    /// A TOTP code or a recovery code, required when MFA is on.
    pub mfa_code: String,
}

/// A signed-in session's tokens.
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

#[derive(Clone)]
pub struct Auth {
    pub pool: Pool,
    pub redis: deadpool_redis::Pool,
    pub passwords: Passwords,
    pub issuer: TokenIssuer,
    pub policy: Policy,
    pub device_salt: SecretString,
    pub captcha: crate::captcha::Captcha,
    pub sealer: crate::sealed::Sealer,
    /// `MFA_ISSUER`: the name authenticator apps show.
    pub mfa_issuer: String,
    pub mailer: crate::mailer::Mailer,
    pub events: SecurityEvents,
    pub redis_keys: service_kit::revocation::RedisKeys,
    /// `APP_BASE_URL`: where the links in e-mails point (the app's deep-link domain).
    pub app_base_url: String,
}

/// Security events: stored (in the caller's transaction), counted in
/// `security_events_total{event_type,severity}`, and logged as one JSON line each.
#[derive(Clone)]
pub struct SecurityEvents {
    counter: prometheus::IntCounterVec,
}

impl SecurityEvents {
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "security_events_total",
                "Security events recorded, by type and severity",
            ),
            &["event_type", "severity"],
        )?;
        registry.register(Box::new(counter.clone()))?;
        Ok(Self { counter })
    }

    pub async fn record(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        user: Option<Uuid>,
        event_type: &'static str,
        severity: &'static str,
        ip: Option<&str>,
        details: serde_json::Value,
    ) -> Result<(), StoreError> {
        store::security_event(conn, user, event_type, severity, ip, details).await?;
        self.counter.with_label_values(&[event_type, severity]).inc();
        tracing::info!(security_event = event_type, severity, user_id = ?user, client_ip = ip, "security event");
        Ok(())
    }
}

const VERIFY_EMAIL: &str = "verify_email";
const PASSWORD_RESET: &str = "password_reset";

/// Failed logins of an account after which a CAPTCHA is required (before the lock at
/// `LOGIN_MAX_ATTEMPTS`): escalation goes CAPTCHA first, then lock.
const CAPTCHA_AFTER_FAILURES: i32 = 3;

/// Device id used for sessions created without one (registration from an app that sent none).
const UNKNOWN_DEVICE: &str = "unknown";

impl Auth {
    fn fingerprint(&self, device_id: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.device_salt.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(device_id.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    async fn conn(&self) -> Result<service_kit::db::PooledConnection<diesel_async::AsyncPgConnection>, AuthError> {
        Ok(self.pool.get().await.map_err(StoreError::from)?)
    }

    fn tokens_for(&self, user: &UserRow, session: Uuid, device: &str, refresh: String) -> Result<Tokens, AuthError> {
        let access = self.issuer.access(user.id, session, device, &user.roles)?;
        Ok(Tokens {
            access_token: access,
            refresh_token: refresh,
            expires_in: self.issuer.access_ttl.as_secs(),
        })
    }

    fn refresh_expiry(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::from_std(self.issuer.refresh_ttl).unwrap_or(TimeDelta::days(30))
    }

    pub async fn register(&self, input: RegisterInput, actor: Actor) -> Result<(UserRow, Tokens), AuthError> {
        let email = Email::parse(&input.email)?;
        account::check_new_password(input.password.expose_secret())?;
        let first = PersonName::parse(&input.first_name, "first_name")?;
        let last = PersonName::parse(&input.last_name, "last_name")?;
        let tier = account::income_tier(&input.income_tier)?;
        self.check_captcha(&input.captcha_token, &actor, None).await?;
        let hash = self.passwords.hash(&input.password).await?;
        let refresh = TokenIssuer::new_refresh();
        let refresh_h = refresh_hash(&refresh);
        let expires = self.refresh_expiry();
        let device = input.device.clone();
        let fingerprint = device.as_ref().map(|d| self.fingerprint(&d.device_id));
        let (verify_token, verify_hash) = email_token();
        let verify_expires = Utc::now() + TimeDelta::hours(24);

        let mut conn = self.conn().await?;
        let (user, session) = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                let user = store::insert_user(
                    conn,
                    NewUser {
                        email: email.as_str(),
                        password_hash: &hash,
                        first_name: first.as_str(),
                        last_name: last.as_str(),
                        income_tier: tier,
                    },
                )
                .await?;
                let device_id = device.as_ref().map_or(UNKNOWN_DEVICE, |d| d.device_id.as_str());
                let session = store::insert_session(conn, user.id, device_id, &refresh_h, expires).await?;
                store::insert_email_token(conn, user.id, VERIFY_EMAIL, &verify_hash, verify_expires).await?;
                if let (Some(d), Some(f)) = (&device, &fingerprint) {
                    store::upsert_device(conn, user.id, f, d).await?;
                }
                let actor = Actor {
                    user_id: Some(user.id),
                    ..actor
                };
                let fields = ["email", "password_hash", "first_name", "last_name", "income_tier"];
                store::audit(
                    conn,
                    &actor,
                    "user.register",
                    "user",
                    Some(user.id.to_string()),
                    &fields,
                )
                .await?;
                Ok((user, session))
            })
            .await?;
        let device_id = input.device.as_ref().map_or(UNKNOWN_DEVICE, |d| d.device_id.as_str());
        tracing::info!(user_id = %user.id, "account registered");
        self.send_later(crate::mailer::Email {
            to: user.email.clone(),
            subject: "Confirm your e-mail address".to_owned(),
            text: format!(
                "Hello {},\n\nconfirm this address for your account by opening:\n{}/verify-email?token={verify_token}\n\nThe link works once, for 24 hours. If you did not sign up, ignore this message.\n",
                user.first_name, self.app_base_url
            ),
        });
        let tokens = self.tokens_for(&user, session, device_id, refresh)?;
        Ok((user, tokens))
    }

    pub async fn login(&self, input: LoginInput, actor: Actor) -> Result<(UserRow, Tokens), AuthError> {
        // A malformed e-mail gets the same answer, after the same work, as a wrong password.
        let email = Email::parse(&input.email).ok();
        let mut conn = self.conn().await?;
        let user = match &email {
            Some(e) => store::user_by_email(&mut conn, e.as_str()).await?,
            None => None,
        };
        if let Some(until) = user.as_ref().and_then(|u| u.locked_until).filter(|t| *t > Utc::now()) {
            return Err(AuthError::Locked {
                retry_after: (until - Utc::now()).num_seconds().max(1) as u64,
            });
        }
        let ip_failures = self.ip_failures(actor.ip.as_deref()).await;
        if ip_failures.is_some_and(|(n, _)| n >= self.policy.ip_max_failures) {
            if !self.captcha.is_disabled() {
                self.check_captcha(&input.captcha_token, &actor, user.as_ref().map(|u| u.id))
                    .await?;
            } else {
                let retry_after = ip_failures.map_or(60, |(_, ttl)| ttl.max(1));
                tracing::warn!(
                    client_ip = actor.ip.as_deref(),
                    "login refused: too many failures from this address"
                );
                return Err(AuthError::TooManyFailures { retry_after });
            }
        } else if let Some(u) = user.as_ref().filter(|u| u.login_attempts >= CAPTCHA_AFTER_FAILURES) {
            self.check_captcha(&input.captcha_token, &actor, Some(u.id)).await?;
        }
        let verdict = self
            .passwords
            .verify(&input.password, user.as_ref().map(|u| u.password_hash.clone()))
            .await?;
        let (user, rehash) = match (user, verdict) {
            (Some(user), Verdict::Match { rehash }) => (user, rehash),
            (user, _) => {
                let locked = match &user {
                    Some(user) => self.fail(&mut conn, user, &actor).await?,
                    None => {
                        // Recorded too, in a transaction of its own: operators see attempts on
                        // addresses that have no account, and the answer takes as long as for a
                        // wrong password (the benchmark measures the two).
                        let ip = actor.ip.clone();
                        conn.transaction::<_, StoreError, _>(async move |conn| {
                            let details = serde_json::json!({"account": "unknown"});
                            self.events
                                .record(conn, None, "login_failed", "low", ip.as_deref(), details)
                                .await
                        })
                        .await?;
                        None
                    }
                };
                tracing::info!(known_account = user.is_some(), "login failed");
                self.count_ip_failure(actor.ip.as_deref()).await;
                return Err(match locked {
                    Some(retry_after) => AuthError::Locked { retry_after },
                    None => AuthError::InvalidCredentials,
                });
            }
        };
        if user.mfa_enabled {
            self.check_mfa(&mut conn, &user, &input.mfa_code, &actor).await?;
        }
        let new_hash = if rehash {
            Some(self.passwords.hash(&input.password).await?)
        } else {
            None
        };
        let refresh = TokenIssuer::new_refresh();
        let refresh_h = refresh_hash(&refresh);
        let expires = self.refresh_expiry();
        let fingerprint = self.fingerprint(&input.device.device_id);
        let device = input.device.clone();
        let user_id = user.id;
        let session = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                store::record_success(conn, user_id, new_hash.as_deref()).await?;
                let session = store::insert_session(conn, user_id, &device.device_id, &refresh_h, expires).await?;
                let actor = Actor {
                    user_id: Some(user_id),
                    ..actor
                };
                if store::upsert_device(conn, user_id, &fingerprint, &device).await? {
                    let details = serde_json::json!({"platform": device.platform, "model": device.model});
                    self.events
                        .record(
                            conn,
                            Some(user_id),
                            "new_device",
                            "medium",
                            actor.ip.as_deref(),
                            details,
                        )
                        .await?;
                    tracing::warn!(user_id = %user_id, event_type = "new_device", "login from a new device");
                }
                store::audit(
                    conn,
                    &actor,
                    "session.create",
                    "session",
                    Some(session.to_string()),
                    &[],
                )
                .await?;
                Ok(session)
            })
            .await?;
        let tokens = self.tokens_for(&user, session, &input.device.device_id, refresh)?;
        Ok((user, tokens))
    }

    fn ip_failure_key(&self, ip: &str) -> String {
        self.redis_keys.other(&format!("auth:login-failures:ip:{ip}"))
    }

    /// Failed logins from this address in the current window, and the window's remaining seconds.
    /// Redis down means "unknown": the per-account lockout still holds.
    async fn ip_failures(&self, ip: Option<&str>) -> Option<(u64, u64)> {
        let ip = ip?;
        let read = async {
            let mut conn = self.redis.get().await.ok()?;
            let (n, ttl): (Option<u64>, i64) = redis::pipe()
                .get(self.ip_failure_key(ip))
                .ttl(self.ip_failure_key(ip))
                .query_async(&mut conn)
                .await
                .ok()?;
            Some((n.unwrap_or(0), ttl.max(0) as u64))
        };
        tokio::time::timeout(Duration::from_millis(500), read)
            .await
            .ok()
            .flatten()
    }

    async fn count_ip_failure(&self, ip: Option<&str>) {
        let Some(ip) = ip else { return };
        let window = self.policy.lockout.as_secs().max(1);
        let write = async {
            let mut conn = self.redis.get().await.ok()?;
            // INCR, then set the expiry only when the key is new: a steady trickle cannot keep
            // the window open for ever.
            redis::pipe()
                .incr(self.ip_failure_key(ip), 1)
                .cmd("EXPIRE")
                .arg(self.ip_failure_key(ip))
                .arg(window)
                .arg("NX")
                .query_async::<(u64, i64)>(&mut conn)
                .await
                .ok()
        };
        if tokio::time::timeout(Duration::from_millis(500), write)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            tracing::warn!("could not count a failed login per address (Redis unavailable)");
        }
    }

    /// Verifies a CAPTCHA token when a provider is configured; a failure is a security event.
    async fn check_captcha(&self, token: &str, actor: &Actor, user: Option<Uuid>) -> Result<(), AuthError> {
        use crate::captcha::CaptchaError;
        match self.captcha.verify(token, actor.ip.as_deref()).await {
            Ok(()) => Ok(()),
            Err(CaptchaError::Missing) => Err(AuthError::CaptchaRequired),
            Err(CaptchaError::Rejected) => {
                let mut conn = self.conn().await?;
                let details = serde_json::json!({});
                self.events
                    .record(&mut conn, user, "captcha_failed", "low", actor.ip.as_deref(), details)
                    .await?;
                tracing::warn!(event_type = "captcha_failed", "CAPTCHA rejected");
                Err(AuthError::CaptchaFailed)
            }
            Err(CaptchaError::Unavailable(e)) => Err(AuthError::Unavailable(e.context("verifying the CAPTCHA"))),
        }
    }

    /// Counts a failed password; returns the lock's remaining seconds when this failure locked it.
    async fn fail(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        user: &UserRow,
        actor: &Actor,
    ) -> Result<Option<u64>, AuthError> {
        let attempts = user.login_attempts + 1;
        let lock = (attempts >= self.policy.max_attempts).then(|| lock_duration(self.policy.lockout, user.lock_count));
        let until = lock.map(|d| Utc::now() + TimeDelta::from_std(d).unwrap_or(TimeDelta::hours(24)));
        let user_id = user.id;
        let ip = actor.ip.clone();
        conn.transaction::<_, StoreError, _>(async move |conn| {
            store::record_failure(conn, user_id, until).await?;
            let details = serde_json::json!({"attempt": attempts});
            self.events
                .record(conn, Some(user_id), "login_failed", "low", ip.as_deref(), details)
                .await?;
            if let Some(until) = until {
                let details = serde_json::json!({"until": until.to_rfc3339()});
                self.events
                    .record(conn, Some(user_id), "account_locked", "high", ip.as_deref(), details)
                    .await?;
            }
            Ok(())
        })
        .await?;
        if let Some(d) = lock {
            tracing::warn!(user_id = %user.id, event_type = "account_locked", lock_seconds = d.as_secs(), "account locked after repeated failures");
        }
        Ok(lock.map(|d| d.as_secs()))
    }

    pub async fn refresh(&self, token: &str, device_id: &str) -> Result<Tokens, AuthError> {
        if token.is_empty() || token.len() > 128 {
            return Err(AuthError::Unauthenticated);
        }
        let hash = refresh_hash(token);
        let next = |session: Uuid| self.issuer.next_refresh(session, token);
        let grace = TimeDelta::from_std(self.policy.refresh_grace).unwrap_or(TimeDelta::seconds(10));
        let device_id = device_id.to_owned();
        let mut conn = self.conn().await?;
        let outcome = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                if let Some(s) = store::session_by_current(conn, &hash).await? {
                    if s.revoked_at.is_some() {
                        return Ok(Refreshed::Revoked);
                    }
                    if s.expires_at <= Utc::now() {
                        return Ok(Refreshed::Expired);
                    }
                    let new = next(s.id);
                    store::rotate(conn, s.id, &hash, &refresh_hash(&new)).await?;
                    return Ok(Refreshed::Rotated(s, new));
                }
                if let Some(s) = store::session_by_previous(conn, &hash).await? {
                    let in_grace = s.rotated_at.is_some_and(|t| Utc::now() - t <= grace);
                    let new = next(s.id);
                    // A retry: same device, within the grace, and the session still holds the
                    // token derived from this one (no later rotation happened).
                    if s.revoked_at.is_none()
                        && in_grace
                        && s.device_id == device_id
                        && refresh_hash(&new) == s.refresh_hash
                    {
                        return Ok(Refreshed::Retried(s, new));
                    }
                    return Ok(Refreshed::Reused(s.id, s.user_id));
                }
                if let Some(session) = store::session_by_spent(conn, &hash).await? {
                    let user = store::session(conn, session).await?.map(|s| s.user_id);
                    return Ok(Refreshed::Reused(session, user.unwrap_or_default()));
                }
                Ok(Refreshed::Unknown)
            })
            .await?;
        match outcome {
            Refreshed::Rotated(s, new) | Refreshed::Retried(s, new) => {
                let user = store::user_by_id(&mut conn, s.user_id)
                    .await?
                    .ok_or(AuthError::Revoked)?;
                self.tokens_for(&user, s.id, &s.device_id, new)
            }
            Refreshed::Reused(session, user) => {
                self.revoke_for_reuse(&mut conn, session, user).await?;
                Err(AuthError::TokenReused)
            }
            Refreshed::Revoked => Err(AuthError::Revoked),
            Refreshed::Expired => Err(AuthError::Expired),
            Refreshed::Unknown => Err(AuthError::Unauthenticated),
        }
    }

    async fn revoke_for_reuse(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        session: Uuid,
        user: Uuid,
    ) -> Result<(), AuthError> {
        conn.transaction::<_, StoreError, _>(async move |conn| {
            store::revoke_session(conn, session, "token_reuse_detected").await?;
            let details = serde_json::json!({"session_id": session});
            self.events
                .record(conn, Some(user), "token_reuse_detected", "high", None, details)
                .await?;
            store::audit(
                conn,
                &Actor {
                    user_id: Some(user),
                    ..Actor::default()
                },
                "session.revoke",
                "session",
                Some(session.to_string()),
                &["revoked_at"],
            )
            .await?;
            Ok(())
        })
        .await?;
        tracing::warn!(user_id = %user, session_id = %session, event_type = "token_reuse_detected", "a spent refresh token was presented; session revoked");
        // PostgreSQL already holds the revocation; the client must hear TOKEN_REUSED either way.
        if let Err(e) = self.revoke_in_redis(None, &[session]).await {
            tracing::error!(error = %e, session_id = %session, "could not revoke a reused session in Redis");
        }
        Ok(())
    }

    /// The session of a verified access token, which must still be live.
    async fn live_session(&self, claims: &AccessClaims) -> Result<(Uuid, Uuid), AuthError> {
        let user = Uuid::parse_str(&claims.sub).map_err(|_| AuthError::Unauthenticated)?;
        let sid = Uuid::parse_str(&claims.sid).map_err(|_| AuthError::Unauthenticated)?;
        let mut conn = self.conn().await?;
        match store::session(&mut conn, sid).await? {
            Some(s) if s.user_id == user && s.revoked_at.is_none() => Ok((user, sid)),
            _ => Err(AuthError::Revoked),
        }
    }

    /// Whether the caller's access token has been revoked, from PostgreSQL alone: the gateway asks
    /// while Redis cannot answer.
    pub async fn token_revoked(&self, claims: &AccessClaims) -> Result<bool, AuthError> {
        let (user, sid) = ids(claims)?;
        let jti = Uuid::parse_str(&claims.jti).map_err(|_| AuthError::Unauthenticated)?;
        let iat = i64::try_from(claims.iat).unwrap_or(i64::MAX);
        let mut conn = self.conn().await?;
        Ok(store::token_revoked(&mut conn, jti, sid, user, iat).await?)
    }

    pub async fn me(&self, claims: &AccessClaims) -> Result<UserRow, AuthError> {
        let (user, sid) = ids(claims)?;
        let mut conn = self.conn().await?;
        store::live_session_user(&mut conn, sid, user)
            .await?
            .ok_or(AuthError::Revoked)
    }

    pub async fn logout(&self, claims: &AccessClaims, refresh: Option<&str>, actor: Actor) -> Result<(), AuthError> {
        let (user, sid) = ids(claims)?;
        let jti = Uuid::parse_str(&claims.jti).map_err(|_| AuthError::Unauthenticated)?;
        let expires = DateTime::from_timestamp(claims.exp as i64, 0).unwrap_or_else(Utc::now);
        let refresh_h = refresh.filter(|r| !r.is_empty()).map(refresh_hash);
        let device = claims.did.clone();
        let mut conn = self.conn().await?;
        let ended = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                let mut ended = vec![sid];
                store::revoke_session(conn, sid, "logout").await?;
                // The refresh token ends its own session too, if it is the caller's.
                if let Some(h) = refresh_h
                    && let Some(other) = store::session_by_current(conn, &h).await?
                    && other.user_id == user
                {
                    store::revoke_session(conn, other.id, "logout").await?;
                    ended.push(other.id);
                }
                store::blacklist(conn, jti, user, &device, "logout", expires).await?;
                let actor = Actor {
                    user_id: Some(user),
                    ..actor
                };
                store::audit(
                    conn,
                    &actor,
                    "session.logout",
                    "session",
                    Some(sid.to_string()),
                    &["revoked_at"],
                )
                .await?;
                Ok(ended)
            })
            .await?;
        self.revoke_in_redis(Some(claims), &ended).await
    }

    pub async fn logout_all(&self, claims: &AccessClaims, actor: Actor) -> Result<(), AuthError> {
        let (user, _) = ids(claims)?;
        let mut conn = self.conn().await?;
        let ended = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                let ended = store::revoke_sessions(conn, user, None, None, "logout_all").await?;
                store::set_tokens_not_before(conn, user).await?;
                let actor = Actor {
                    user_id: Some(user),
                    ..actor
                };
                let resource = Some(user.to_string());
                store::audit(conn, &actor, "session.logout_all", "user", resource, &["revoked_at"]).await?;
                Ok(ended)
            })
            .await?;
        tracing::info!(user_id = %user, sessions = ended.len(), "all sessions ended");
        self.revoke_in_redis(None, &ended).await
    }

    pub async fn update_me(
        &self,
        claims: &AccessClaims,
        update: ProfileUpdate,
        actor: Actor,
    ) -> Result<UserRow, AuthError> {
        let (user, _) = self.live_session(claims).await?;
        let first = update
            .first_name
            .as_deref()
            .map(|n| PersonName::parse(n, "first_name"))
            .transpose()?;
        let last = update
            .last_name
            .as_deref()
            .map(|n| PersonName::parse(n, "last_name"))
            .transpose()?;
        let tier = update.income_tier.as_deref().map(account::income_tier).transpose()?;
        let mut fields = Vec::new();
        for (name, changed) in [
            ("first_name", first.is_some()),
            ("last_name", last.is_some()),
            ("income_tier", tier.is_some()),
        ] {
            if changed {
                fields.push(name);
            }
        }
        let mut conn = self.conn().await?;
        if !fields.is_empty() {
            conn.transaction::<_, StoreError, _>(async move |conn| {
                let (f, l) = (
                    first.as_ref().map(PersonName::as_str),
                    last.as_ref().map(PersonName::as_str),
                );
                store::update_profile(conn, user, f, l, tier).await?;
                let actor = Actor {
                    user_id: Some(user),
                    ..actor
                };
                store::audit(conn, &actor, "user.update", "user", Some(user.to_string()), &fields).await?;
                Ok(())
            })
            .await?;
        }
        store::user_by_id(&mut conn, user).await?.ok_or(AuthError::Revoked)
    }

    /// Changes the password after checking the current one; every other session ends.
    pub async fn change_password(
        &self,
        claims: &AccessClaims,
        current: &SecretString,
        new: &SecretString,
        actor: Actor,
    ) -> Result<(), AuthError> {
        let (user, sid) = self.live_session(claims).await?;
        account::check_new_password(new.expose_secret())?;
        let mut conn = self.conn().await?;
        let row = store::user_by_id(&mut conn, user).await?.ok_or(AuthError::Revoked)?;
        if !matches!(
            self.passwords.verify(current, Some(row.password_hash)).await?,
            Verdict::Match { .. }
        ) {
            return Err(AuthError::InvalidCredentials);
        }
        let hash = self.passwords.hash(new).await?;
        let ended = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                store::set_password(conn, user, &hash).await?;
                let ended = store::revoke_sessions(conn, user, Some(sid), None, "password_changed").await?;
                self.user_change(
                    conn,
                    user,
                    actor,
                    "password_changed",
                    "medium",
                    "user.password_change",
                    &["password_hash"],
                )
                .await?;
                Ok(ended)
            })
            .await?;
        tracing::info!(user_id = %user, event_type = "password_changed", sessions_ended = ended.len(), "password changed");
        self.revoke_in_redis(None, &ended).await
    }

    /// The caller's devices, and which one the calling session uses.
    pub async fn devices(&self, claims: &AccessClaims) -> Result<Vec<store::DeviceRow>, AuthError> {
        let (user, _) = self.live_session(claims).await?;
        let mut conn = self.conn().await?;
        Ok(store::devices(&mut conn, user).await?)
    }

    /// Forgets one of the caller's devices and ends its sessions. Another user's device id is
    /// simply not found: it names nothing of the caller's.
    pub async fn remove_device(&self, claims: &AccessClaims, device_id: &str, actor: Actor) -> Result<(), AuthError> {
        let (user, _) = self.live_session(claims).await?;
        if device_id.is_empty() || device_id.len() > 128 {
            return Err(AuthError::NotFound);
        }
        let fingerprint = self.fingerprint(device_id);
        let device = device_id.to_owned();
        let mut conn = self.conn().await?;
        let ended = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                if !store::delete_device(conn, user, &fingerprint).await? {
                    return Ok(None);
                }
                let ended = store::revoke_sessions(conn, user, None, Some(&device), "device_removed").await?;
                let actor = Actor {
                    user_id: Some(user),
                    ..actor
                };
                store::audit(conn, &actor, "device.remove", "device", Some(device.clone()), &[]).await?;
                Ok(Some(ended))
            })
            .await?
            .ok_or(AuthError::NotFound)?;
        self.revoke_in_redis(None, &ended).await
    }

    /// Checks a TOTP or recovery code of a user with MFA on. Wrong codes count and lock apart from
    /// password failures; a TOTP code is accepted once.
    async fn check_mfa(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        user: &UserRow,
        code: &str,
        actor: &Actor,
    ) -> Result<(), AuthError> {
        if let Some(until) = user.mfa_locked_until.filter(|t| *t > Utc::now()) {
            return Err(AuthError::Locked {
                retry_after: (until - Utc::now()).num_seconds().max(1) as u64,
            });
        }
        if code.trim().is_empty() {
            return Err(AuthError::MfaRequired);
        }
        let accepted = if let Some(recovery) = crate::mfa::normalize_recovery_code(code) {
            let hash = crate::mfa::recovery_code_hash(&self.recovery_pepper(), &recovery);
            store::use_recovery_code(conn, user.id, &hash).await?
        } else {
            let sealed = user
                .mfa_secret
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("MFA on without a seed"))?;
            let seed = self
                .sealer
                .open(sealed, user.id.as_bytes())
                .map_err(|e| anyhow::anyhow!("opening the TOTP seed: {e}"))?;
            match crate::mfa::verify(&seed, code, Utc::now().timestamp().max(0) as u64, user.mfa_last_step) {
                Ok(step) => store::claim_totp_step(conn, user.id, step).await?,
                Err(_) => false,
            }
        };
        if accepted {
            return Ok(());
        }
        let failures = user.mfa_failures + 1;
        let until = (failures >= self.policy.max_attempts)
            .then(|| Utc::now() + TimeDelta::from_std(self.policy.lockout).unwrap_or(TimeDelta::minutes(15)));
        let (user_id, ip) = (user.id, actor.ip.clone());
        conn.transaction::<_, StoreError, _>(async move |conn| {
            store::record_mfa_failure(conn, user_id, until).await?;
            let details = serde_json::json!({"attempt": failures, "locked": until.is_some()});
            self.events
                .record(conn, Some(user_id), "mfa_failed", "medium", ip.as_deref(), details)
                .await?;
            Ok(())
        })
        .await?;
        tracing::warn!(user_id = %user.id, event_type = "mfa_failed", locked = until.is_some(), "wrong MFA code");
        match until {
            Some(until) => Err(AuthError::Locked {
                retry_after: (until - Utc::now()).num_seconds().max(1) as u64,
            }),
            None => Err(AuthError::MfaInvalid),
        }
    }

    fn recovery_pepper(&self) -> Vec<u8> {
        self.sealer.derive("auth/recovery-codes/v1")
    }

    /// Starts TOTP enrollment: a new seed, kept pending until a code confirms it.
    pub async fn mfa_enroll(&self, claims: &AccessClaims) -> Result<crate::mfa::Enrollment, AuthError> {
        let (user_id, _) = self.live_session(claims).await?;
        let mut conn = self.conn().await?;
        let user = store::user_by_id(&mut conn, user_id).await?.ok_or(AuthError::Revoked)?;
        if user.mfa_enabled {
            return Err(AuthError::Conflict("MFA is already on; turn it off first."));
        }
        let seed = crate::mfa::new_secret();
        // Authenticator apps show "issuer: account"; a colon in an e-mail would break that label.
        let label = user.email.replace(':', "_");
        let enrollment = crate::mfa::enrollment(&seed, &label, &self.mfa_issuer)?;
        store::set_pending_mfa(&mut conn, user_id, &self.sealer.seal(&seed, user_id.as_bytes())).await?;
        Ok(enrollment)
    }

    /// Confirms enrollment with a first code; returns the recovery codes, shown this once.
    pub async fn mfa_confirm(&self, claims: &AccessClaims, code: &str, actor: Actor) -> Result<Vec<String>, AuthError> {
        let (user_id, _) = self.live_session(claims).await?;
        let mut conn = self.conn().await?;
        let user = store::user_by_id(&mut conn, user_id).await?.ok_or(AuthError::Revoked)?;
        if user.mfa_enabled {
            return Err(AuthError::Conflict("MFA is already on."));
        }
        let sealed = user
            .mfa_pending_secret
            .ok_or(AuthError::Conflict("Start the enrollment first."))?;
        let seed = self
            .sealer
            .open(&sealed, user_id.as_bytes())
            .map_err(|e| anyhow::anyhow!("opening the TOTP seed: {e}"))?;
        let step = match crate::mfa::verify(&seed, code, Utc::now().timestamp().max(0) as u64, None) {
            Ok(step) => step,
            Err(crate::mfa::MfaError::Malformed) => {
                return Err(AuthError::Invalid(Invalid {
                    field: "code",
                    issue: "must be 6 digits",
                }));
            }
            Err(_) => return Err(AuthError::MfaInvalid),
        };
        let codes = crate::mfa::new_recovery_codes();
        let pepper = self.recovery_pepper();
        let hashes: Vec<Vec<u8>> = codes
            .iter()
            .filter_map(|c| crate::mfa::normalize_recovery_code(c))
            .map(|c| crate::mfa::recovery_code_hash(&pepper, &c))
            .collect();
        conn.transaction::<_, StoreError, _>(async move |conn| {
            store::enable_mfa(conn, user_id, &sealed, step, &hashes).await?;
            self.user_change(
                conn,
                user_id,
                actor,
                "mfa_enabled",
                "info",
                "user.mfa_enable",
                &["mfa_enabled"],
            )
            .await?;
            Ok(())
        })
        .await?;
        Ok(codes)
    }

    /// Turns MFA off; needs a valid TOTP or recovery code.
    pub async fn mfa_disable(&self, claims: &AccessClaims, code: &str, actor: Actor) -> Result<(), AuthError> {
        let (user_id, _) = self.live_session(claims).await?;
        let mut conn = self.conn().await?;
        let user = store::user_by_id(&mut conn, user_id).await?.ok_or(AuthError::Revoked)?;
        if !user.mfa_enabled {
            return Err(AuthError::Conflict("MFA is not on."));
        }
        self.check_mfa(&mut conn, &user, code, &actor).await?;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            store::disable_mfa(conn, user_id).await?;
            self.user_change(
                conn,
                user_id,
                actor,
                "mfa_disabled",
                "medium",
                "user.mfa_disable",
                &["mfa_enabled"],
            )
            .await?;
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// A change to a user's account that is also a security event: the event and the audit row,
    /// in the caller's transaction.
    #[allow(clippy::too_many_arguments)] // one call per use case reads better than a struct here
    async fn user_change(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        user: Uuid,
        actor: Actor,
        event: &'static str,
        severity: &'static str,
        action: &str,
        fields: &[&str],
    ) -> Result<(), StoreError> {
        self.events
            .record(
                conn,
                Some(user),
                event,
                severity,
                actor.ip.as_deref(),
                serde_json::json!({}),
            )
            .await?;
        let actor = Actor {
            user_id: Some(user),
            ..actor
        };
        store::audit(conn, &actor, action, "user", Some(user.to_string()), fields).await
    }

    /// Sends an e-mail in the background: a slow or failing relay must neither delay the answer
    /// nor reveal, by timing, whether an account exists.
    fn send_later(&self, email: crate::mailer::Email) {
        let mailer = self.mailer.clone();
        tokio::spawn(async move {
            if let Err(e) = mailer.send(&email).await {
                tracing::error!(error = format!("{e:#}"), subject = %email.subject, "could not send an e-mail");
            }
        });
    }

    /// Spends an address-verification token.
    pub async fn verify_email(&self, token: &str, actor: Actor) -> Result<(), AuthError> {
        let hash = refresh_hash(token.trim());
        let mut conn = self.conn().await?;
        conn.transaction::<_, AuthError, _>(async move |conn| {
            let user = store::spend_email_token(conn, VERIFY_EMAIL, &hash)
                .await?
                .ok_or(AuthError::Invalid(Invalid {
                    field: "token",
                    issue: "is invalid, expired or already used",
                }))?;
            store::mark_email_verified(conn, user).await?;
            let actor = Actor {
                user_id: Some(user),
                ..actor
            };
            store::audit(
                conn,
                &actor,
                "user.verify_email",
                "user",
                Some(user.to_string()),
                &["email_verified"],
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// Mails a reset link when the address has an account; the caller answers the same either way.
    pub async fn request_password_reset(&self, email: &str, actor: Actor) -> Result<(), AuthError> {
        let Ok(email) = Email::parse(email) else { return Ok(()) };
        let mut conn = self.conn().await?;
        let Some(user) = store::user_by_email(&mut conn, email.as_str()).await? else {
            tracing::info!("password reset requested for an unknown address");
            return Ok(());
        };
        let (token, hash) = email_token();
        let expires = Utc::now() + TimeDelta::hours(1);
        let user_id = user.id;
        conn.transaction::<_, StoreError, _>(async move |conn| {
            store::insert_email_token(conn, user_id, PASSWORD_RESET, &hash, expires).await?;
            let actor = Actor {
                user_id: Some(user_id),
                ..actor
            };
            store::audit(
                conn,
                &actor,
                "user.password_reset_request",
                "user",
                Some(user_id.to_string()),
                &[],
            )
            .await?;
            Ok(())
        })
        .await?;
        self.send_later(crate::mailer::Email {
            to: user.email.clone(),
            subject: "Reset your password".to_owned(),
            text: format!(
                "Hello {},\n\nsomeone asked to reset the password of your account. To choose a new one, open:\n{}/reset-password?token={token}\n\nThe link works once, for one hour. If it was not you, ignore this message; your password stays as it is.\n",
                user.first_name, self.app_base_url
            ),
        });
        Ok(())
    }

    /// Sets a new password with a mailed token; every session ends.
    pub async fn confirm_password_reset(&self, token: &str, new: &SecretString, actor: Actor) -> Result<(), AuthError> {
        // Check the password first, so a refused password does not burn the token.
        account::check_new_password(new.expose_secret())?;
        let hash = self.passwords.hash(new).await?;
        let token_hash = refresh_hash(token.trim());
        let ip = actor.ip.clone();
        let mut conn = self.conn().await?;
        let (user, ended) = conn
            .transaction::<_, AuthError, _>(async move |conn| {
                let user = store::spend_email_token(conn, PASSWORD_RESET, &token_hash)
                    .await?
                    .ok_or(AuthError::Invalid(Invalid {
                        field: "token",
                        issue: "is invalid, expired or already used",
                    }))?;
                store::set_password(conn, user, &hash).await?;
                // Whoever knew the old password is out; the lockout is over for the owner.
                store::record_success(conn, user, None).await?;
                let ended = store::revoke_sessions(conn, user, None, None, "password_reset").await?;
                store::set_tokens_not_before(conn, user).await?;
                self.events
                    .record(
                        conn,
                        Some(user),
                        "password_reset",
                        "medium",
                        ip.as_deref(),
                        serde_json::json!({}),
                    )
                    .await?;
                let actor = Actor {
                    user_id: Some(user),
                    ..actor
                };
                store::audit(
                    conn,
                    &actor,
                    "user.password_reset",
                    "user",
                    Some(user.to_string()),
                    &["password_hash"],
                )
                .await?;
                Ok((user, ended))
            })
            .await?;
        tracing::info!(user_id = %user, event_type = "password_reset", sessions_ended = ended.len(), "password reset");
        self.revoke_in_redis(None, &ended).await
    }

    /// A page of the audit log for an administrator. The role is checked against the account as
    /// it is now, not only the token's claim, so a revoked role stops working at once.
    pub async fn audit_logs(
        &self,
        claims: &AccessClaims,
        query: AuditQuery,
    ) -> Result<(Vec<store::AuditRow>, Option<String>), AuthError> {
        let (user_id, _) = self.live_session(claims).await?;
        let mut conn = self.conn().await?;
        let user = store::user_by_id(&mut conn, user_id).await?.ok_or(AuthError::Revoked)?;
        if !claims.has_role("admin") || !user.roles.iter().any(|r| r == "admin") {
            return Err(AuthError::Forbidden);
        }
        let limit = match query.limit {
            0 => 20,
            n @ 1..=100 => i64::from(n),
            _ => {
                return Err(AuthError::Invalid(Invalid {
                    field: "limit",
                    issue: "must be between 1 and 100",
                }));
            }
        };
        let actor = match query.user_id.as_str() {
            "" => None,
            id => Some(Uuid::parse_str(id).map_err(|_| {
                AuthError::Invalid(Invalid {
                    field: "user_id",
                    issue: "must be a UUID",
                })
            })?),
        };
        let after = match query.cursor.as_str() {
            "" => None,
            c => Some(decode_cursor(c).ok_or(AuthError::Invalid(Invalid {
                field: "cursor",
                issue: "is not a cursor from this list",
            }))?),
        };
        let mut rows = store::audit_page(&mut conn, actor, query.from, query.to, after, limit + 1).await?;
        let next = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|r| encode_cursor(r.created_at, r.id))
        } else {
            None
        };
        Ok((rows, next))
    }

    /// Revocation must reach Redis: the gateway reads it on every request. PostgreSQL already holds
    /// it, so when Redis cannot be written the call still succeeds; the revocation sync copies it.
    async fn revoke_in_redis(&self, token: Option<&AccessClaims>, sessions: &[Uuid]) -> Result<(), AuthError> {
        if token.is_none() && sessions.is_empty() {
            return Ok(());
        }
        // Keys live as long as any access token of these sessions can be accepted.
        let session_ttl = (self.issuer.access_ttl + KEY_MARGIN).as_secs();
        let mut pipe = redis::pipe();
        if let Some(claims) = token {
            let ttl = claims.exp.saturating_sub(Utc::now().timestamp().max(0) as u64) + KEY_MARGIN.as_secs();
            pipe.cmd("SET")
                .arg(self.redis_keys.jti(&claims.jti))
                .arg(1)
                .arg("EX")
                .arg(ttl)
                .ignore();
        }
        for sid in sessions {
            pipe.cmd("SET")
                .arg(self.redis_keys.session(&sid.to_string()))
                .arg(1)
                .arg("EX")
                .arg(session_ttl)
                .ignore();
        }
        // PostgreSQL already holds the revocation, so a failed write does not fail the call: the
        // next round of the revocation sync (any replica, within REVOCATION_SYNC_SECONDS) copies
        // it, and while Redis cannot be read the gateway asks auth-service. The write runs in its
        // own task, so a call cancelled after its commit (client gone, deadline) still makes it.
        let (pool, keys) = (self.redis.clone(), self.redis_keys.clone());
        let write = tokio::spawn(async move {
            let error = match tokio::time::timeout(REDIS_WRITE_TIMEOUT, write_pipe(&pool, &pipe)).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => format!("{e:#}"),
                Err(_) => format!("Redis did not answer within {REDIS_WRITE_TIMEOUT:?}"),
            };
            tracing::warn!(
                error,
                "revocation stored in PostgreSQL but not in Redis; the next revocation sync round copies it"
            );
            // A Redis that still answers reads must not vouch for revocations it lacks meanwhile.
            tokio::spawn(async move {
                if let Ok(Ok(mut conn)) = tokio::time::timeout(REDIS_WRITE_TIMEOUT, pool.get()).await {
                    crate::revocation_sync::withdraw_marker(&mut conn, &keys).await;
                }
            });
        });
        // The answer waits for the write (the next request must see it), not for the withdrawal.
        let _ = write.await;
        Ok(())
    }
}

const REDIS_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A revocation key outlives the tokens it revokes by this much: a verifier accepts a token up to
/// `JWT_LEEWAY_SECONDS` (at most 300) after its expiry, and clocks differ by up to a minute.
pub const KEY_MARGIN: Duration = Duration::from_secs(360);

async fn write_pipe(pool: &deadpool_redis::Pool, pipe: &redis::Pipeline) -> anyhow::Result<()> {
    let mut conn = pool.get().await.map_err(|e| anyhow::anyhow!("redis pool: {e}"))?;
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

/// A token to mail (URL-safe) and the hash that is stored.
fn email_token() -> (String, Vec<u8>) {
    let token = TokenIssuer::new_refresh();
    let hash = refresh_hash(&token);
    (token, hash)
}

/// Filters of the audit-log list.
pub struct AuditQuery {
    pub user_id: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: u32,
    pub cursor: String,
}

/// Opaque keyset position: base64url of "micros:uuid".
fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.timestamp_micros()))
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (micros, id) = text.split_once(':')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

/// User and session ids of verified claims.
fn ids(claims: &AccessClaims) -> Result<(Uuid, Uuid), AuthError> {
    let user = Uuid::parse_str(&claims.sub).map_err(|_| AuthError::Unauthenticated)?;
    let sid = Uuid::parse_str(&claims.sid).map_err(|_| AuthError::Unauthenticated)?;
    Ok((user, sid))
}

/// Fields of `PATCH /v1/me`; `None` leaves a field as it is, `income_tier: Some("")` clears it.
pub struct ProfileUpdate {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub income_tier: Option<String>,
}

enum Refreshed {
    Rotated(store::SessionRow, String),
    Retried(store::SessionRow, String),
    Reused(Uuid, Uuid),
    Revoked,
    Expired,
    Unknown,
}

/// `base` doubled for each earlier lock, capped at 24 hours.
pub fn lock_duration(base: Duration, earlier_locks: i32) -> Duration {
    let factor = 1u32 << earlier_locks.clamp(0, 16);
    base.saturating_mul(factor).min(Duration::from_secs(24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_micros(1_764_000_000_123_456).expect("time");
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        assert_eq!(decode_cursor("not-a-cursor"), None);
        assert_eq!(decode_cursor(""), None);
    }

    #[test]
    fn lockout_doubles_up_to_a_day() {
        let base = Duration::from_secs(900);
        assert_eq!(lock_duration(base, 0), Duration::from_secs(900));
        assert_eq!(lock_duration(base, 1), Duration::from_secs(1800));
        assert_eq!(lock_duration(base, 3), Duration::from_secs(7200));
        assert_eq!(lock_duration(base, 7), Duration::from_secs(86_400));
        assert_eq!(lock_duration(base, 1000), Duration::from_secs(86_400));
    }
}
