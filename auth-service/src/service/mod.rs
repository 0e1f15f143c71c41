//! The use cases of auth-service, one module per group: `sessions` (register, login, refresh,
//! logout, `CheckToken`), `throttle` (what slows a password guess down: per (account, address)
//! locks, per-address failures, CAPTCHA), `reauth` (proving again who one is before a factor or a
//! session changes), `profile` (read and change the account), `devices`, `mfa` (TOTP enrollment
//! and the second factor at login), `email` (address verification and password reset by mailed
//! token), `audit` (the administrators' audit log) and `activity` (the `active_users` gauge). Each
//! use case validates into domain types, does its writes in one transaction with the audit row,
//! and only then touches Redis (revocation) and signs tokens. Each group fails with its own error
//! enum, which `grpc/status.rs` maps to a status; the failures they share are one nested `Common`.

mod activity;
mod audit;
mod devices;
mod email;
mod events;
mod mfa;
mod profile;
mod reauth;
mod sessions;
mod throttle;

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret as _, SecretString};
use service_kit::auth::AccessClaims;
use service_kit::db::{Pool, PooledConnection};
use service_kit::revocation::RedisKeys;
use sha2::Sha256;
use uuid::Uuid;

pub use self::activity::Activity;
pub use self::audit::{AuditError, AuditQuery};
pub use self::devices::DeviceError;
pub use self::email::EmailError;
use self::events::SecurityEvents;
pub use self::mfa::MfaError;
pub use self::profile::{ProfileError, ProfileUpdate};
pub use self::reauth::{Reauth, ReauthError};
pub use self::sessions::{LoginInput, RegisterInput, SessionError, Tokens};
pub use self::throttle::ThrottleError;
use crate::domain::{Actor, SessionId, User, UserId};
use crate::password::Passwords;
use crate::revocation::RevocationWriter;
use crate::store::{self, Conn, StoreError};
use crate::tokens::TokenIssuer;

/// Policy knobs from configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `LOGIN_MAX_ATTEMPTS` (5)
    pub max_attempts: i32,
    /// `LOCKOUT_SECONDS` (900), doubled on each further lock up to 24 h.
    pub lockout: Duration,
    /// `REFRESH_RETRY_GRACE` (5 s); every retry served within it is a security event.
    pub refresh_grace: Duration,
    /// `PASSWORD_RESET_COOLDOWN` (60 s): at most one reset mail per account within it.
    pub reset_cooldown: Duration,
    /// `LOGIN_IP_MAX_FAILURES` (20): failed logins from one client address, across accounts,
    /// within `LOCKOUT_SECONDS`, after which that address must solve a CAPTCHA (or, with no
    /// CAPTCHA provider, waits): credential stuffing.
    pub ip_max_failures: u64,
}

/// What the use cases are built from: the pools, the rules' engines and the settings.
pub struct Parts {
    pub pool: Pool,
    pub redis: deadpool_redis::Pool,
    pub redis_keys: RedisKeys,
    pub passwords: Passwords,
    pub issuer: TokenIssuer,
    pub policy: Policy,
    pub device_salt: SecretString,
    pub captcha: crate::captcha::Captcha,
    pub sealer: crate::sealed::Sealer,
    /// `MFA_ISSUER`: the name authenticator apps show.
    pub mfa_issuer: String,
    pub mailer: crate::mailer::Mailer,
    /// `APP_BASE_URL`: where the links in e-mails point (the app's deep-link domain).
    pub app_base_url: String,
}

/// The use cases; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    pool: Pool,
    redis: deadpool_redis::Pool,
    redis_keys: RedisKeys,
    revocations: RevocationWriter,
    passwords: Passwords,
    issuer: TokenIssuer,
    policy: Policy,
    device_salt: SecretString,
    captcha: crate::captcha::Captcha,
    sealer: crate::sealed::Sealer,
    mfa_issuer: String,
    mailer: crate::mailer::Mailer,
    events: SecurityEvents,
    app_base_url: String,
    /// HMAC key (split from `ENCRYPTION_KEY`) of the e-mail hashes the login counters are kept under.
    subject_key: Vec<u8>,
}

/// Why the caller's token (access or refresh) names no live session of a live account.
#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    /// The token is unknown, or its ids are not UUIDs.
    #[error("not authenticated")]
    Unauthenticated,
    /// The session ended, or the account is gone.
    #[error("session ended")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What every use case of a signed-in caller can fail with besides its own cases: its token names
/// no live session, the re-authentication it asks for fails, or the database or an unexpected
/// failure. `DeviceError`, `MfaError`, `ProfileError` and `SessionError` each nest it as one
/// `Common` variant, which `grpc/status.rs` maps once.
#[derive(Debug, thiserror::Error)]
pub enum Common {
    #[error(transparent)]
    Reauth(#[from] ReauthError),
    #[error(transparent)]
    Caller(#[from] CallerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// `From` each member of [`Common`] for the error enums that nest it, so `?` lifts a
/// `CallerError` (and the others) straight into them.
macro_rules! from_common {
    ($($error:ty),+) => {
        $(from_common!(@each $error: ReauthError, CallerError, StoreError, anyhow::Error);)+
    };
    (@each $error:ty: $($member:ty),+) => {$(
        impl From<$member> for $error {
            fn from(e: $member) -> Self {
                Self::Common(Common::from(e))
            }
        }
    )+};
}

from_common!(DeviceError, MfaError, ProfileError, SessionError);

impl Auth {
    /// The use cases over `parts`; registers `security_events_total` in `registry`.
    pub fn new(parts: Parts, registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let revocations = RevocationWriter::new(parts.redis.clone(), parts.redis_keys.clone(), parts.issuer.access_ttl);
        Ok(Self {
            pool: parts.pool,
            redis: parts.redis,
            redis_keys: parts.redis_keys,
            revocations,
            passwords: parts.passwords,
            issuer: parts.issuer,
            policy: parts.policy,
            device_salt: parts.device_salt,
            captcha: parts.captcha,
            sealer: parts.sealer.clone(),
            mfa_issuer: parts.mfa_issuer,
            mailer: parts.mailer,
            events: SecurityEvents::register(registry)?,
            app_base_url: parts.app_base_url,
            subject_key: parts.sealer.derive(self::throttle::SUBJECT_KEY_LABEL),
        })
    }

    fn fingerprint(&self, device_id: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.device_salt.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(device_id.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    async fn conn(&self) -> Result<PooledConnection<Conn>, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// The session of a verified access token, which must still be live.
    async fn live_session(&self, claims: &AccessClaims) -> Result<(UserId, SessionId), CallerError> {
        let (user, sid) = ids(claims)?;
        let mut conn = self.conn().await?;
        match store::session(&mut conn, sid).await? {
            Some(s) if s.user_id == user && s.revoked_at.is_none() => Ok((user, sid)),
            _ => Err(CallerError::Revoked),
        }
    }

    /// The caller's account, which must have a live session, the session, and the connection
    /// they were read on.
    async fn caller_account(
        &self,
        claims: &AccessClaims,
    ) -> Result<(User, SessionId, PooledConnection<Conn>), CallerError> {
        let (user_id, sid) = self.live_session(claims).await?;
        let mut conn = self.conn().await?;
        let user = store::user_by_id(&mut conn, user_id)
            .await?
            .ok_or(CallerError::Revoked)?;
        Ok((user, sid, conn))
    }

    /// A change to a user's account that is also a security event: the event and the audit row,
    /// in the caller's transaction.
    #[allow(clippy::too_many_arguments)] // one call per use case reads better than a struct here
    async fn user_change(
        &self,
        conn: &mut Conn,
        user: UserId,
        actor: Actor,
        event: &'static str,
        severity: &'static str,
        action: &str,
        fields: &[&str],
    ) -> Result<(), StoreError> {
        let details = serde_json::json!({});
        self.events
            .record(conn, Some(user), event, severity, actor.ip.as_deref(), details)
            .await?;
        audit_user(conn, actor, user, action, fields).await
    }
}

/// The audit row of a change `actor` made to the account `user` (the actor is that user).
async fn audit_user(
    conn: &mut Conn,
    actor: Actor,
    user: UserId,
    action: &str,
    fields: &[&str],
) -> Result<(), StoreError> {
    let actor = actor.acting_as(user);
    store::audit(conn, &actor, action, "user", Some(user.to_string()), fields).await
}

/// User and session ids of verified claims.
fn ids(claims: &AccessClaims) -> Result<(UserId, SessionId), CallerError> {
    let user = Uuid::parse_str(&claims.sub).map_err(|_| CallerError::Unauthenticated)?;
    let sid = Uuid::parse_str(&claims.sid).map_err(|_| CallerError::Unauthenticated)?;
    Ok((UserId(user), SessionId(sid)))
}
