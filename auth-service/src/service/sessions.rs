//! Sessions: register, login, refresh-token rotation, logout (one session or all), and whether an
//! access token is revoked (`CheckToken`, asked by the gateway while Redis cannot answer).

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use service_kit::auth::AccessClaims;
use uuid::Uuid;

use super::devices::record_device;
use super::email::{VERIFY_EMAIL, email_token};
use super::throttle::{PasswordCheck, PasswordGuess};
use super::{Auth, CallerError, Common, MfaError, Reauth, ThrottleError, ids};
use crate::account;
use crate::domain::{
    Actor, Device, Email, Invalid, NewUser, PersonName, Session, SessionId, User, UserId, income_tier,
};
use crate::store::{self, Conn, StoreError, Transaction as _};
use crate::tokens::{TokenIssuer, refresh_hash};

/// What registering, logging in, refreshing or logging out can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("e-mail already registered")]
    EmailTaken,
    /// Wrong password, or no such account (the same answer, after the same work).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Locked, too many failures from the address, or a CAPTCHA to solve.
    #[error(transparent)]
    Throttled(#[from] ThrottleError),
    /// The account has MFA on and the code is missing, wrong, or MFA is locked.
    #[error(transparent)]
    SecondFactor(#[from] MfaError),
    /// A spent refresh token came back: its session is ended.
    #[error("refresh token reused")]
    TokenReused,
    #[error("refresh token expired")]
    Expired,
    /// Ending the other sessions needs the password (or a code) again (`Common::Reauth`).
    #[error(transparent)]
    Common(#[from] Common),
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

/// Device id used for sessions created without one (registration from an app that sent none).
const UNKNOWN_DEVICE: &str = "unknown";

enum Refreshed {
    Rotated(Session, String),
    Retried(Session, String),
    Reused(SessionId, UserId),
    Revoked,
    Expired,
    Unknown,
}

impl Auth {
    fn tokens_for(&self, user: &User, session: SessionId, device: &str, refresh: String) -> anyhow::Result<Tokens> {
        let access = self.issuer.access(user.id.0, session.0, device, &user.roles)?;
        Ok(Tokens {
            access_token: access,
            refresh_token: refresh,
            expires_in: self.issuer.access_ttl.as_secs(),
        })
    }

    fn refresh_expiry(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::from_std(self.issuer.refresh_ttl).unwrap_or(TimeDelta::days(30))
    }

    pub async fn register(&self, input: RegisterInput, actor: Actor) -> Result<(User, Tokens), SessionError> {
        let email = Email::parse(&input.email)?;
        let first = PersonName::parse(&input.first_name, "first_name")?;
        let last = PersonName::parse(&input.last_name, "last_name")?;
        let personal = account::personal_parts(email.as_str(), first.as_str(), last.as_str());
        account::check_new_password(input.password.expose_secret(), &personal)?;
        let tier = income_tier(&input.income_tier)?;
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
                let new = NewUser {
                    email: &email,
                    password_hash: &hash,
                    first_name: &first,
                    last_name: &last,
                    income_tier: tier,
                };
                let user = store::insert_user(conn, new).await?;
                let device_id = device.as_ref().map_or(UNKNOWN_DEVICE, |d| d.device_id.as_str());
                let session = store::insert_session(conn, user.id, device_id, &refresh_h, expires).await?;
                store::insert_email_token(conn, user.id, VERIFY_EMAIL, &verify_hash, verify_expires).await?;
                if let (Some(d), Some(f)) = (&device, &fingerprint) {
                    record_device(conn, user.id, f, d).await?;
                }
                let fields = ["email", "password_hash", "first_name", "last_name", "income_tier"];
                super::audit_user(conn, actor, user.id, "user.register", &fields).await?;
                Ok((user, session))
            })
            .await
            .map_err(|e| match e {
                e if e.is_conflict_on(store::EMAIL_TAKEN) => SessionError::EmailTaken,
                e => e.into(),
            })?;
        let device_id = input.device.as_ref().map_or(UNKNOWN_DEVICE, |d| d.device_id.as_str());
        tracing::info!(user_id = %user.id, "account registered");
        self.send_verification(&user, &verify_token);
        let tokens = self.tokens_for(&user, session, device_id, refresh)?;
        Ok((user, tokens))
    }

    pub async fn login(&self, input: LoginInput, actor: Actor) -> Result<(User, Tokens), SessionError> {
        // A malformed e-mail gets the same answer, after the same work, as a wrong password.
        let email = Email::parse(&input.email).ok();
        let mut conn = self.conn().await?;
        let user = match &email {
            Some(e) => store::user_by_email(&mut conn, e.as_str()).await?,
            None => None,
        };
        let guess = PasswordGuess {
            email: &input.email,
            account: user.as_ref(),
            password: &input.password,
            captcha_token: &input.captcha_token,
        };
        let check = self.check_password(&mut conn, guess, &actor).await?;
        let (user, rehash) = match (user, check) {
            (Some(user), PasswordCheck::Right { rehash }) => (user, rehash),
            (
                _,
                PasswordCheck::Wrong {
                    locked: Some(retry_after),
                },
            ) => {
                return Err(ThrottleError::Locked { retry_after }.into());
            }
            _ => return Err(SessionError::InvalidCredentials),
        };
        if user.mfa.enabled {
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
                let actor = actor.acting_as(user_id);
                if record_device(conn, user_id, &fingerprint, &device).await? {
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

    pub async fn refresh(&self, token: &str, device_id: &str, actor: Actor) -> Result<Tokens, SessionError> {
        if token.is_empty() || token.len() > 128 {
            return Err(CallerError::Unauthenticated.into());
        }
        let hash = refresh_hash(token);
        let next = |session: SessionId| self.issuer.next_refresh(session.0, token);
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
        if let Refreshed::Retried(s, _) = &outcome {
            self.record_grace_hit(&mut conn, s, &actor).await?;
        }
        match outcome {
            Refreshed::Rotated(s, new) | Refreshed::Retried(s, new) => {
                let user = store::user_by_id(&mut conn, s.user_id)
                    .await?
                    .ok_or(CallerError::Revoked)?;
                Ok(self.tokens_for(&user, s.id, &s.device_id, new)?)
            }
            Refreshed::Reused(session, user) => {
                self.revoke_for_reuse(&mut conn, session, user, actor).await?;
                Err(SessionError::TokenReused)
            }
            Refreshed::Revoked => Err(CallerError::Revoked.into()),
            Refreshed::Expired => Err(SessionError::Expired),
            Refreshed::Unknown => Err(CallerError::Unauthenticated.into()),
        }
    }

    /// A refresh retried within `REFRESH_RETRY_GRACE` was served the same new pair: legitimate
    /// after a lost response, but also what a thief racing the owner would do, so it is recorded.
    async fn record_grace_hit(&self, conn: &mut Conn, session: &Session, actor: &Actor) -> Result<(), StoreError> {
        let details = serde_json::json!({
            "session_id": session.id.0,
            "user_agent": actor.user_agent,
        });
        self.events
            .record(
                conn,
                Some(session.user_id),
                "refresh_retry_grace",
                "low",
                actor.ip.as_deref(),
                details,
            )
            .await?;
        tracing::warn!(user_id = %session.user_id, session_id = %session.id, event_type = "refresh_retry_grace", client_ip = actor.ip.as_deref(), "a spent refresh token was retried within the grace");
        Ok(())
    }

    async fn revoke_for_reuse(
        &self,
        conn: &mut Conn,
        session: SessionId,
        user: UserId,
        actor: Actor,
    ) -> Result<(), StoreError> {
        let ip = actor.ip.clone();
        let ip_for_log = ip.clone();
        let details = serde_json::json!({"session_id": session.0, "user_agent": actor.user_agent});
        conn.transaction::<_, StoreError, _>(async move |conn| {
            store::revoke_session(conn, session, "token_reuse_detected").await?;
            self.events
                .record(conn, Some(user), "token_reuse_detected", "high", ip.as_deref(), details)
                .await?;
            store::audit(
                conn,
                &actor.acting_as(user),
                "session.revoke",
                "session",
                Some(session.to_string()),
                &["revoked_at"],
            )
            .await?;
            Ok(())
        })
        .await?;
        tracing::warn!(user_id = %user, session_id = %session, event_type = "token_reuse_detected", client_ip = ip_for_log.as_deref(), "a spent refresh token was presented; session revoked");
        // PostgreSQL already holds the revocation; the client hears TOKEN_REUSED either way.
        self.revocations.revoke(None, &[session]).await;
        Ok(())
    }

    /// Whether the caller's access token has been revoked, from PostgreSQL alone: the gateway asks
    /// while Redis cannot answer.
    pub async fn token_revoked(&self, claims: &AccessClaims) -> Result<bool, SessionError> {
        let (user, sid) = ids(claims)?;
        let jti = Uuid::parse_str(&claims.jti).map_err(|_| CallerError::Unauthenticated)?;
        let issued_at_ms = i64::try_from(claims.issued_at_ms()).unwrap_or(i64::MAX);
        let mut conn = self.conn().await?;
        Ok(store::token_revoked(&mut conn, jti, sid, user, issued_at_ms).await?)
    }

    pub async fn logout(&self, claims: &AccessClaims, refresh: Option<&str>, actor: Actor) -> Result<(), SessionError> {
        let (user, sid) = ids(claims)?;
        let jti = Uuid::parse_str(&claims.jti).map_err(|_| CallerError::Unauthenticated)?;
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
                store::audit(
                    conn,
                    &actor.acting_as(user),
                    "session.logout",
                    "session",
                    Some(sid.to_string()),
                    &["revoked_at"],
                )
                .await?;
                Ok(ended)
            })
            .await?;
        self.revocations.revoke(Some(claims), &ended).await;
        Ok(())
    }

    /// Ends every session of the caller, its own too; with `keep_current`, every other one, which
    /// needs the password (or a code) again: a stolen access token alone must not lock the owner
    /// out of their other devices.
    pub async fn logout_all(
        &self,
        claims: &AccessClaims,
        keep_current: bool,
        reauth: Reauth,
        actor: Actor,
    ) -> Result<(), SessionError> {
        let (user, keep, mut conn) = if keep_current {
            let (user, sid, mut conn) = self.caller_account(claims).await?;
            self.reauthenticate(&mut conn, &user, &reauth, &actor).await?;
            (user.id, Some(sid), conn)
        } else {
            (ids(claims)?.0, None, self.conn().await?)
        };
        let ended = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                let ended = store::revoke_sessions(conn, user, keep, None, "logout_all").await?;
                if keep.is_none() {
                    store::set_tokens_not_before(conn, user).await?;
                }
                super::audit_user(conn, actor, user, "session.logout_all", &["revoked_at"]).await?;
                Ok(ended)
            })
            .await?;
        tracing::info!(user_id = %user, sessions = ended.len(), "all sessions ended");
        self.revocations.revoke(None, &ended).await;
        Ok(())
    }
}
