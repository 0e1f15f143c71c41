//! The flows by mailed token: address verification (mailed at registration) and password reset.
//! Only a token's hash is stored; a token works once, for one purpose, until it expires. Mails go
//! out in the background, so neither a slow relay nor the answer's timing tells whether an account
//! exists; a reset request does all its work there (the answer comes before any database query),
//! and mails an account at most once per `PASSWORD_RESET_COOLDOWN`.

use chrono::{TimeDelta, Utc};
use secrecy::{ExposeSecret as _, SecretString};

use super::{Auth, audit_user};
use crate::account;
use crate::domain::{Actor, Email, Invalid, User};
use crate::store::{self, StoreError, Transaction as _};
use crate::tokens::{TokenIssuer, refresh_hash};

/// What the e-mail flows can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

pub(super) const VERIFY_EMAIL: &str = "verify_email";
const PASSWORD_RESET: &str = "password_reset";

/// A token that is not (or no longer) good for its purpose.
const BAD_TOKEN: Invalid = Invalid {
    field: "token",
    issue: "is invalid, expired or already used",
};

/// A message whose link (`{APP_BASE_URL}/{path}?token=…`) spends a mailed token.
struct LinkMail {
    subject: &'static str,
    /// What the link is for, before it.
    intro: &'static str,
    path: &'static str,
    /// How long the link works, and what to do if the mail was not expected.
    outro: &'static str,
}

impl LinkMail {
    fn text(&self, first_name: &str, base_url: &str, token: &str) -> String {
        let Self { intro, path, outro, .. } = self;
        format!("Hello {first_name},\n\n{intro}\n{base_url}/{path}?token={token}\n\n{outro}\n")
    }
}

const VERIFICATION_MAIL: LinkMail = LinkMail {
    subject: "Confirm your e-mail address",
    intro: "confirm this address for your account by opening:",
    path: "verify-email",
    outro: "The link works once, for 24 hours. If you did not sign up, ignore this message.",
};

const RESET_MAIL: LinkMail = LinkMail {
    subject: "Reset your password",
    intro: "someone asked to reset the password of your account. To choose a new one, open:",
    path: "reset-password",
    outro: "The link works once, for one hour. If it was not you, ignore this message; your password stays as it is.",
};

/// A token to mail (URL-safe) and the hash that is stored.
pub(super) fn email_token() -> (String, Vec<u8>) {
    let token = TokenIssuer::new_refresh();
    let hash = refresh_hash(&token);
    (token, hash)
}

impl Auth {
    /// Sends an e-mail in the background: a slow or failing relay must neither delay the answer
    /// nor reveal, by timing, whether an account exists.
    pub(super) fn send_later(&self, email: crate::mailer::Email) {
        let mailer = self.mailer.clone();
        tokio::spawn(async move {
            if let Err(e) = mailer.send(&email).await {
                tracing::error!(error = format!("{e:#}"), subject = %email.subject, "could not send an e-mail");
            }
        });
    }

    /// Mails the link that verifies a new account's address.
    pub(super) fn send_verification(&self, user: &User, token: &str) {
        self.send_link(user, &VERIFICATION_MAIL, token);
    }

    /// Mails `user` a message with a link that carries `token`.
    fn send_link(&self, user: &User, mail: &LinkMail, token: &str) {
        self.send_later(crate::mailer::Email {
            to: user.email.clone(),
            subject: mail.subject.to_owned(),
            text: mail.text(&user.first_name, &self.app_base_url, token),
        });
    }

    /// Spends an address-verification token.
    pub async fn verify_email(&self, token: &str, actor: Actor) -> Result<(), EmailError> {
        let hash = refresh_hash(token.trim());
        let mut conn = self.conn().await?;
        let verified = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                let Some(user) = store::spend_email_token(conn, VERIFY_EMAIL, &hash).await? else {
                    return Ok(false);
                };
                store::mark_email_verified(conn, user).await?;
                audit_user(conn, actor, user, "user.verify_email", &["email_verified"]).await?;
                Ok(true)
            })
            .await?;
        if verified { Ok(()) } else { Err(BAD_TOKEN.into()) }
    }

    /// Mails a reset link when the address has an account and none was mailed within
    /// `PASSWORD_RESET_COOLDOWN`. Everything happens in the background: the caller answers the
    /// same, at once, whether or not the address has an account; only a text that is no e-mail
    /// address at all is refused (that tells nothing about accounts).
    pub fn request_password_reset(&self, email: &str, actor: Actor) -> Result<(), EmailError> {
        // Whether the text is an address at all is no secret; whether it has an account is.
        let email = Email::parse(email)?;
        let auth = self.clone();
        tokio::spawn(async move {
            if let Err(e) = auth.reset_in_background(email, actor).await {
                tracing::error!(error = format!("{e:#}"), "could not handle a password-reset request");
            }
        });
        Ok(())
    }

    async fn reset_in_background(&self, email: Email, actor: Actor) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let Some(user) = store::user_by_email(&mut conn, email.as_str()).await? else {
            tracing::info!("password reset requested for an unknown address");
            return Ok(());
        };
        let (token, hash) = email_token();
        let expires = Utc::now() + TimeDelta::hours(1);
        let cooldown = TimeDelta::from_std(self.policy.reset_cooldown).unwrap_or(TimeDelta::minutes(1));
        let user_id = user.id;
        let ip = actor.ip.clone();
        let issued = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                let last = store::last_email_token_locked(conn, user_id, PASSWORD_RESET).await?;
                if last.is_some_and(|t| Utc::now() - t < cooldown) {
                    let details = serde_json::json!({});
                    self.events
                        .record(
                            conn,
                            Some(user_id),
                            "password_reset_throttled",
                            "low",
                            ip.as_deref(),
                            details,
                        )
                        .await?;
                    return Ok(false);
                }
                store::insert_email_token(conn, user_id, PASSWORD_RESET, &hash, expires).await?;
                audit_user(conn, actor, user_id, "user.password_reset_request", &[]).await?;
                Ok(true)
            })
            .await?;
        if issued {
            self.send_link(&user, &RESET_MAIL, &token);
        } else {
            tracing::info!(user_id = %user.id, "password reset mail not sent: one went out within the cooldown");
        }
        Ok(())
    }

    /// Sets a new password with a mailed token; every session ends, and the login counters of the
    /// account start over.
    pub async fn confirm_password_reset(
        &self,
        token: &str,
        new: &SecretString,
        actor: Actor,
    ) -> Result<(), EmailError> {
        let token_hash = refresh_hash(token.trim());
        let mut conn = self.conn().await?;
        let owner = store::email_token_owner(&mut conn, PASSWORD_RESET, &token_hash)
            .await?
            .ok_or(BAD_TOKEN)?;
        let owner = store::user_by_id(&mut conn, owner).await?.ok_or(BAD_TOKEN)?;
        // Check the password before spending the token, so a refused password does not burn it.
        let personal = account::personal_parts(&owner.email, &owner.first_name, &owner.last_name);
        account::check_new_password(new.expose_secret(), &personal)?;
        let hash = self.passwords.hash(new).await?;
        let subject = self.login_subject(&owner.email);
        let reset = conn
            .transaction::<_, StoreError, _>(async move |conn| {
                let Some(user) = store::spend_email_token(conn, PASSWORD_RESET, &token_hash).await? else {
                    return Ok(None);
                };
                store::set_password(conn, user, &hash).await?;
                // Whoever knew the old password is out; the lockout is over for the owner.
                store::clear_all_login_attempts(conn, &subject).await?;
                let ended = store::revoke_sessions(conn, user, None, None, "password_reset").await?;
                store::set_tokens_not_before(conn, user).await?;
                self.user_change(
                    conn,
                    user,
                    actor,
                    "password_reset",
                    "medium",
                    "user.password_reset",
                    &["password_hash"],
                )
                .await?;
                Ok(Some((user, ended)))
            })
            .await?;
        let (user, ended) = reset.ok_or(BAD_TOKEN)?;
        tracing::info!(user_id = %user, event_type = "password_reset", sessions_ended = ended.len(), "password reset");
        self.revocations.revoke(None, &ended).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailed_links_read_as_before() {
        let verify = VERIFICATION_MAIL.text("Ada", "https://app.example.org", "tok");
        assert_eq!(
            verify,
            "Hello Ada,\n\nconfirm this address for your account by opening:\nhttps://app.example.org/verify-email?token=tok\n\nThe link works once, for 24 hours. If you did not sign up, ignore this message.\n"
        );
        let reset = RESET_MAIL.text("Ada", "https://app.example.org", "tok");
        assert_eq!(
            reset,
            "Hello Ada,\n\nsomeone asked to reset the password of your account. To choose a new one, open:\nhttps://app.example.org/reset-password?token=tok\n\nThe link works once, for one hour. If it was not you, ignore this message; your password stays as it is.\n"
        );
    }
}
