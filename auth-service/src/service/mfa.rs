//! The second factor: TOTP enrollment (a pending seed, confirmed by a first code, which turns MFA
//! on and hands out recovery codes), turning it off, and the check at login. Wrong codes count and
//! lock apart from password failures; a TOTP code is accepted once.

use chrono::{TimeDelta, Utc};
use service_kit::auth::AccessClaims;

use super::throttle::retry_after;
use super::{Auth, CallerError};
use crate::domain::{Actor, Invalid, User};
use crate::mfa::{self as totp, Enrollment};
use crate::store::{self, Conn, StoreError, Transaction as _};

/// What enrolling, turning off, or presenting a second factor can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Enrolling while MFA is on.
    #[error("MFA is already on")]
    AlreadyOn,
    /// Confirming while MFA is on.
    #[error("MFA is already confirmed")]
    AlreadyConfirmed,
    /// Confirming with no enrollment pending.
    #[error("no MFA enrollment pending")]
    NotStarted,
    /// Turning off MFA that is not on.
    #[error("MFA is not on")]
    NotOn,
    /// No code was given.
    #[error("mfa code required")]
    Required,
    #[error("mfa code invalid")]
    WrongCode,
    /// Too many wrong codes.
    #[error("mfa locked")]
    Locked { retry_after: u64 },
    #[error(transparent)]
    Caller(#[from] CallerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl Auth {
    /// Checks a TOTP or recovery code of a user with MFA on.
    pub(super) async fn check_mfa(
        &self,
        conn: &mut Conn,
        user: &User,
        code: &str,
        actor: &Actor,
    ) -> Result<(), MfaError> {
        if let Some(until) = user.mfa.locked_until.filter(|t| *t > Utc::now()) {
            return Err(MfaError::Locked {
                retry_after: retry_after(until),
            });
        }
        if code.trim().is_empty() {
            return Err(MfaError::Required);
        }
        let accepted = if let Some(recovery) = totp::normalize_recovery_code(code) {
            let hash = totp::recovery_code_hash(&self.recovery_pepper(), &recovery);
            store::use_recovery_code(conn, user.id, &hash).await?
        } else {
            let sealed = user
                .mfa
                .secret
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("MFA on without a seed"))?;
            let seed = self.open_seed(sealed, user)?;
            match totp::verify(&seed, code, Utc::now().timestamp().max(0) as u64, user.mfa.last_step) {
                Ok(step) => store::claim_totp_step(conn, user.id, step).await?,
                Err(_) => false,
            }
        };
        if accepted {
            return Ok(());
        }
        let failures = user.mfa.failures + 1;
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
            Some(until) => Err(MfaError::Locked {
                retry_after: retry_after(until),
            }),
            None => Err(MfaError::WrongCode),
        }
    }

    fn recovery_pepper(&self) -> Vec<u8> {
        self.sealer.derive("auth/recovery-codes/v1")
    }

    /// The TOTP seed, sealed with the user's id as associated data.
    fn open_seed(&self, sealed: &[u8], user: &User) -> anyhow::Result<Vec<u8>> {
        self.sealer
            .open(sealed, user.id.0.as_bytes())
            .map_err(|e| anyhow::anyhow!("opening the TOTP seed: {e}"))
    }

    /// Starts TOTP enrollment: a new seed, kept pending until a code confirms it.
    pub async fn mfa_enroll(&self, claims: &AccessClaims) -> Result<Enrollment, MfaError> {
        let (user, mut conn) = self.caller_account(claims).await?;
        if user.mfa.enabled {
            return Err(MfaError::AlreadyOn);
        }
        let seed = totp::new_secret();
        // Authenticator apps show "issuer: account"; a colon in an e-mail would break that label.
        let label = user.email.replace(':', "_");
        let enrollment = totp::enrollment(&seed, &label, &self.mfa_issuer)?;
        store::set_pending_mfa(&mut conn, user.id, &self.sealer.seal(&seed, user.id.0.as_bytes())).await?;
        Ok(enrollment)
    }

    /// Confirms enrollment with a first code; returns the recovery codes, shown this once.
    pub async fn mfa_confirm(&self, claims: &AccessClaims, code: &str, actor: Actor) -> Result<Vec<String>, MfaError> {
        let (user, mut conn) = self.caller_account(claims).await?;
        if user.mfa.enabled {
            return Err(MfaError::AlreadyConfirmed);
        }
        let sealed = user.mfa.pending_secret.clone().ok_or(MfaError::NotStarted)?;
        let seed = self.open_seed(&sealed, &user)?;
        let step = match totp::verify(&seed, code, Utc::now().timestamp().max(0) as u64, None) {
            Ok(step) => step,
            Err(totp::MfaError::Malformed) => {
                return Err(MfaError::Invalid(Invalid {
                    field: "code",
                    issue: "must be 6 digits",
                }));
            }
            Err(_) => return Err(MfaError::WrongCode),
        };
        let codes = totp::new_recovery_codes();
        let pepper = self.recovery_pepper();
        let hashes: Vec<Vec<u8>> = codes
            .iter()
            .filter_map(|c| totp::normalize_recovery_code(c))
            .map(|c| totp::recovery_code_hash(&pepper, &c))
            .collect();
        let user_id = user.id;
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
            .await
        })
        .await?;
        Ok(codes)
    }

    /// Turns MFA off; needs a valid TOTP or recovery code.
    pub async fn mfa_disable(&self, claims: &AccessClaims, code: &str, actor: Actor) -> Result<(), MfaError> {
        let (user, mut conn) = self.caller_account(claims).await?;
        if !user.mfa.enabled {
            return Err(MfaError::NotOn);
        }
        self.check_mfa(&mut conn, &user, code, &actor).await?;
        let user_id = user.id;
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
            .await
        })
        .await?;
        Ok(())
    }
}
