//! The second factor: TOTP enrollment (password first; a pending seed, confirmed by a first code,
//! which turns MFA on and hands out recovery codes), turning it off (password and a code), and the
//! check at login. Wrong codes are counted before they are judged and lock apart from password
//! failures, escalating like them; a TOTP code is accepted once. Turning MFA on or off ends the
//! caller's other sessions and tells the user by mail.

use chrono::Utc;
use secrecy::SecretString;
use service_kit::auth::AccessClaims;

use super::throttle::{lock_duration, lock_end, retry_after};
use super::{Auth, Common};
use crate::domain::{Actor, Invalid, SessionId, User, UserId};
use crate::mfa::{self as totp, Enrollment};
use crate::password::Verdict;
use crate::sealed::Sealer;
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
    /// The password, needed to change the factor, is missing or wrong (`Common::Reauth`).
    #[error(transparent)]
    Common(#[from] Common),
}

/// Labels of the recovery-code pepper of codes stored before argon2id (see `sealed`).
const LEGACY_RECOVERY_PEPPER: &str = "auth/recovery-codes/v1";

/// The mail a user gets when MFA of their account is turned on or off.
fn factor_changed_mail(user: &User, on: bool) -> crate::mailer::Email {
    let (subject, what) = if on {
        ("Two-step verification is on", "turned on")
    } else {
        ("Two-step verification is off", "turned off")
    };
    crate::mailer::Email {
        to: user.email.clone(),
        subject: subject.to_owned(),
        text: format!(
            "Hello {},\n\ntwo-step verification (an authenticator app) was just {what} for your account, \
             and every other session was signed out.\n\nIf this was not you, reset your password at once and \
             contact support.\n",
            user.first_name
        ),
    }
}

impl Auth {
    /// Checks a TOTP or recovery code of a user with MFA on; see [`Self::counted_code`].
    pub(super) async fn check_mfa(
        &self,
        conn: &mut Conn,
        user: &User,
        code: &str,
        actor: &Actor,
    ) -> Result<(), MfaError> {
        self.counted_code(conn, user, code, actor, async |conn| {
            self.judge_code(conn, user, code).await
        })
        .await
    }

    /// Judges a code with `judge` once the attempt is counted: the attempt that reaches
    /// `LOGIN_MAX_ATTEMPTS` locks MFA (doubling with each lock, up to a day), and a right code
    /// starts the count over. Every code of a user shares this count: at login, in
    /// re-authentication, and confirming an enrollment.
    async fn counted_code(
        &self,
        conn: &mut Conn,
        user: &User,
        code: &str,
        actor: &Actor,
        judge: impl AsyncFnOnce(&mut Conn) -> Result<bool, MfaError>,
    ) -> Result<(), MfaError> {
        if code.trim().is_empty() {
            return Err(MfaError::Required);
        }
        let Some(reserved) = store::reserve_mfa_attempt(conn, user.id).await? else {
            let until = store::mfa_locked_until(conn, user.id).await?.unwrap_or_else(Utc::now);
            return Err(MfaError::Locked {
                retry_after: retry_after(until),
            });
        };
        if reserved.attempt > self.policy.max_attempts {
            // The attempt that reached the limit is being judged and locks MFA if wrong.
            store::release_mfa_attempt(conn, user.id).await?;
            return Err(MfaError::Locked {
                retry_after: lock_duration(self.policy.lockout, reserved.lock_count).as_secs(),
            });
        }
        let accepted = match judge(conn).await {
            Ok(accepted) => accepted,
            Err(e) => {
                store::release_mfa_attempt(conn, user.id).await?;
                return Err(e);
            }
        };
        if accepted {
            store::clear_mfa_attempts(conn, user.id).await?;
            return Ok(());
        }
        let lock = (reserved.attempt >= self.policy.max_attempts)
            .then(|| lock_duration(self.policy.lockout, reserved.lock_count));
        let until = lock.map(lock_end);
        let (user_id, ip, attempt) = (user.id, actor.ip.clone(), reserved.attempt);
        conn.transaction::<_, StoreError, _>(async move |conn| {
            if let Some(until) = until {
                store::lock_mfa(conn, user_id, until).await?;
            }
            let details = serde_json::json!({"attempt": attempt, "locked": until.is_some()});
            self.events
                .record(conn, Some(user_id), "mfa_failed", "medium", ip.as_deref(), details)
                .await?;
            Ok(())
        })
        .await?;
        tracing::warn!(user_id = %user.id, event_type = "mfa_failed", locked = until.is_some(), "wrong MFA code");
        match lock {
            Some(d) => Err(MfaError::Locked {
                retry_after: d.as_secs(),
            }),
            None => Err(MfaError::WrongCode),
        }
    }

    /// Whether `code` is a current TOTP code (then its step is claimed) or an unused recovery code
    /// (then it is spent).
    async fn judge_code(&self, conn: &mut Conn, user: &User, code: &str) -> Result<bool, MfaError> {
        if let Some(recovery) = totp::normalize_recovery_code(code) {
            return self.spend_recovery_code(conn, user.id, recovery).await;
        }
        let sealed = user
            .mfa
            .secret
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("MFA on without a seed"))?;
        let seed = self.open_seed(sealed, user)?;
        let accepted = match totp::verify(&seed, code, Utc::now().timestamp().max(0) as u64, user.mfa.last_step) {
            Ok(step) => store::claim_totp_step(conn, user.id, step).await?,
            Err(_) => false,
        };
        // A seed sealed before the HKDF split moves to the derived key the first time it is used.
        if accepted && Sealer::is_legacy(sealed) {
            let resealed = self.sealer.seal(&seed, user.id.0.as_bytes());
            store::reseal_mfa_secret(conn, user.id, sealed, &resealed).await?;
            tracing::info!(user_id = %user.id, "TOTP seed sealed again under the derived key");
        }
        Ok(accepted)
    }

    /// Spends a recovery code: one stored before argon2id by its keyed hash, else one of the
    /// argon2id-hashed ones (at most ten slow checks, and only for an attempt the MFA counter
    /// admitted).
    async fn spend_recovery_code(&self, conn: &mut Conn, user: UserId, code: String) -> Result<bool, MfaError> {
        let legacy = totp::recovery_code_hash(&self.sealer.legacy_derive(LEGACY_RECOVERY_PEPPER), &code);
        if store::use_legacy_recovery_code(conn, user, &legacy).await? {
            return Ok(true);
        }
        let code = SecretString::from(code);
        for (id, phc) in store::unused_recovery_codes(conn, user).await? {
            if matches!(self.passwords.verify(&code, Some(phc)).await?, Verdict::Match { .. }) {
                return Ok(store::spend_recovery_code(conn, id).await?);
            }
        }
        Ok(false)
    }

    /// The TOTP seed, sealed with the user's id as associated data.
    fn open_seed(&self, sealed: &[u8], user: &User) -> anyhow::Result<Vec<u8>> {
        self.sealer
            .open(sealed, user.id.0.as_bytes())
            .map_err(|e| anyhow::anyhow!("opening the TOTP seed: {e}"))
    }

    /// Starts TOTP enrollment after the password: a new seed, kept pending until a code confirms it.
    pub async fn mfa_enroll(
        &self,
        claims: &AccessClaims,
        password: &SecretString,
        actor: Actor,
    ) -> Result<Enrollment, MfaError> {
        let (user, _, mut conn) = self.caller_account(claims).await?;
        if user.mfa.enabled {
            return Err(MfaError::AlreadyOn);
        }
        self.require_password(&mut conn, &user, password, &actor).await?;
        let seed = totp::new_secret();
        // Authenticator apps show "issuer: account"; a colon in an e-mail would break that label.
        let label = user.email.replace(':', "_");
        let enrollment = totp::enrollment(&seed, &label, &self.mfa_issuer)?;
        store::set_pending_mfa(&mut conn, user.id, &self.sealer.seal(&seed, user.id.0.as_bytes())).await?;
        Ok(enrollment)
    }

    /// Confirms enrollment with a first code; returns the recovery codes, shown this once.
    pub async fn mfa_confirm(&self, claims: &AccessClaims, code: &str, actor: Actor) -> Result<Vec<String>, MfaError> {
        let (user, sid, mut conn) = self.caller_account(claims).await?;
        if user.mfa.enabled {
            return Err(MfaError::AlreadyConfirmed);
        }
        let sealed = user.mfa.pending_secret.clone().ok_or(MfaError::NotStarted)?;
        let seed = self.open_seed(&sealed, &user)?;
        let malformed = || {
            MfaError::Invalid(Invalid {
                field: "code",
                issue: "must be 6 digits",
            })
        };
        if code.trim().is_empty() {
            return Err(malformed());
        }
        // Counted like every code of the user: a stolen access token cannot try a pending seed's
        // million codes one after the other.
        let mut confirmed = None;
        self.counted_code(&mut conn, &user, code, &actor, async |_| {
            match totp::verify(&seed, code, Utc::now().timestamp().max(0) as u64, None) {
                Ok(step) => {
                    confirmed = Some(step);
                    Ok(true)
                }
                Err(totp::MfaError::Malformed) => Err(malformed()),
                Err(_) => Ok(false),
            }
        })
        .await?;
        let step = confirmed.ok_or_else(|| anyhow::anyhow!("a confirmed code without its step"))?;
        let codes = totp::new_recovery_codes();
        let mut hashes = Vec::with_capacity(codes.len());
        for code in codes.iter().filter_map(|c| totp::normalize_recovery_code(c)) {
            hashes.push(self.passwords.hash(&SecretString::from(code)).await?);
        }
        let user_id = user.id;
        let ended = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                store::enable_mfa(conn, user_id, &sealed, step, &hashes).await?;
                self.factor_changed(conn, user_id, sid, actor, true).await
            })
            .await?;
        self.revocations.revoke(None, &ended).await;
        self.send_later(factor_changed_mail(&user, true));
        Ok(codes)
    }

    /// Turns MFA off; needs the password and a valid TOTP or recovery code.
    pub async fn mfa_disable(
        &self,
        claims: &AccessClaims,
        password: &SecretString,
        code: &str,
        actor: Actor,
    ) -> Result<(), MfaError> {
        let (user, sid, mut conn) = self.caller_account(claims).await?;
        if !user.mfa.enabled {
            return Err(MfaError::NotOn);
        }
        self.require_password(&mut conn, &user, password, &actor).await?;
        self.check_mfa(&mut conn, &user, code, &actor).await?;
        let user_id = user.id;
        let ended = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                store::disable_mfa(conn, user_id).await?;
                self.factor_changed(conn, user_id, sid, actor, false).await
            })
            .await?;
        self.revocations.revoke(None, &ended).await;
        self.send_later(factor_changed_mail(&user, false));
        Ok(())
    }

    /// In the transaction of an MFA change: every session but the caller's ends, and the event
    /// and audit row are written. Returns the ended sessions.
    async fn factor_changed(
        &self,
        conn: &mut Conn,
        user: UserId,
        keep: SessionId,
        actor: Actor,
        on: bool,
    ) -> Result<Vec<SessionId>, StoreError> {
        let ended = store::revoke_sessions(conn, user, Some(keep), None, "mfa_changed").await?;
        let (event, severity, action) = if on {
            ("mfa_enabled", "info", "user.mfa_enable")
        } else {
            ("mfa_disabled", "medium", "user.mfa_disable")
        };
        self.user_change(conn, user, actor, event, severity, action, &["mfa_enabled"])
            .await?;
        tracing::info!(user_id = %user, event_type = event, sessions_ended = ended.len(), "MFA changed; other sessions ended");
        Ok(ended)
    }
}
