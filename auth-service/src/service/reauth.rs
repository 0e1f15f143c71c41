//! Proving again who one is before changing an authentication factor or ending other sessions:
//! the current password (counted like a login from this address: a wrong one is a failed login),
//! or, with MFA on, a TOTP or recovery code (counted like a code at login).

use secrecy::{ExposeSecret as _, SecretString};

use super::throttle::{PasswordCheck, PasswordGuess};
use super::{Auth, Common, MfaError, ThrottleError};
use crate::domain::{Actor, User};
use crate::store::{Conn, StoreError};

/// What the caller sent to prove it is them; empty strings are "not sent".
pub struct Reauth {
    pub password: SecretString,
    pub totp_code: String,
}

/// Why re-authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum ReauthError {
    /// Neither a password nor (with MFA on) a code was sent.
    #[error("re-authentication required")]
    Missing,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("mfa code invalid")]
    WrongCode,
    /// Locked (password or MFA), or a CAPTCHA to solve first.
    #[error(transparent)]
    Throttled(#[from] ThrottleError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl Auth {
    /// The password if one was sent, else a code when MFA is on.
    pub(super) async fn reauthenticate(
        &self,
        conn: &mut Conn,
        user: &User,
        reauth: &Reauth,
        actor: &Actor,
    ) -> Result<(), ReauthError> {
        if !reauth.password.expose_secret().is_empty() {
            return self.require_password(conn, user, &reauth.password, actor).await;
        }
        if user.mfa.enabled && !reauth.totp_code.trim().is_empty() {
            return self
                .check_mfa(conn, user, &reauth.totp_code, actor)
                .await
                .map_err(|e| match e {
                    MfaError::Required | MfaError::WrongCode => ReauthError::WrongCode,
                    MfaError::Locked { retry_after } => ThrottleError::Locked { retry_after }.into(),
                    MfaError::Common(Common::Store(e)) => e.into(),
                    MfaError::Common(Common::Unexpected(e)) => e.into(),
                    other => anyhow::anyhow!("checking a code to re-authenticate: {other}").into(),
                });
        }
        Err(ReauthError::Missing)
    }

    /// The account's current password, counted for (account, address) like a login.
    pub(super) async fn require_password(
        &self,
        conn: &mut Conn,
        user: &User,
        password: &SecretString,
        actor: &Actor,
    ) -> Result<(), ReauthError> {
        if password.expose_secret().is_empty() {
            return Err(ReauthError::Missing);
        }
        let guess = PasswordGuess {
            email: &user.email,
            account: Some(user),
            password,
            captcha_token: "",
        };
        match self.check_password(conn, guess, actor).await? {
            PasswordCheck::Right { .. } => Ok(()),
            PasswordCheck::Wrong {
                locked: Some(retry_after),
            } => Err(ThrottleError::Locked { retry_after }.into()),
            PasswordCheck::Wrong { locked: None } => Err(ReauthError::InvalidCredentials),
        }
    }
}
