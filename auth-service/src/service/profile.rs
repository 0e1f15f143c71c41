//! The caller's own account: read it, change the profile, change the password.

use secrecy::{ExposeSecret as _, SecretString};
use service_kit::auth::AccessClaims;

use super::{Auth, CallerError, Common, audit_user, ids};
use crate::account;
use crate::domain::{Actor, Invalid, PersonName, User, income_tier};
use crate::store::{self, StoreError, Transaction as _};

/// What reading or changing one's own account can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The current password given to change it is missing or wrong (a failed login), or the
    /// account is locked for this address (`Common::Reauth`).
    #[error(transparent)]
    Common(#[from] Common),
}

/// Fields of `PATCH /v1/me`; `None` leaves a field as it is, `income_tier: Some("")` clears it.
pub struct ProfileUpdate {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub income_tier: Option<String>,
}

impl Auth {
    pub async fn me(&self, claims: &AccessClaims) -> Result<User, ProfileError> {
        let (user, sid) = ids(claims)?;
        let mut conn = self.conn().await?;
        Ok(store::live_session_user(&mut conn, sid, user)
            .await?
            .ok_or(CallerError::Revoked)?)
    }

    pub async fn update_me(
        &self,
        claims: &AccessClaims,
        update: ProfileUpdate,
        actor: Actor,
    ) -> Result<User, ProfileError> {
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
        let tier = update.income_tier.as_deref().map(income_tier).transpose()?;
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
                audit_user(conn, actor, user, "user.update", &fields).await
            })
            .await?;
        }
        Ok(store::user_by_id(&mut conn, user).await?.ok_or(CallerError::Revoked)?)
    }

    /// Changes the password after checking the current one; every other session ends.
    pub async fn change_password(
        &self,
        claims: &AccessClaims,
        current: &SecretString,
        new: &SecretString,
        actor: Actor,
    ) -> Result<(), ProfileError> {
        let (row, sid, mut conn) = self.caller_account(claims).await?;
        let personal = account::personal_parts(&row.email, &row.first_name, &row.last_name);
        account::check_new_password(new.expose_secret(), &personal)?;
        self.require_password(&mut conn, &row, current, &actor).await?;
        let user = row.id;
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
        self.revocations.revoke(None, &ended).await;
        Ok(())
    }
}
