//! The second factor on `users` (seed, last TOTP step) and `recovery_codes`.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::schema::{recovery_codes, users};
use super::{Conn, StoreError};
use crate::domain::UserId;

/// Keeps a TOTP seed (sealed) until its first code confirms the enrollment.
pub async fn set_pending_mfa(conn: &mut Conn, user: UserId, sealed: &[u8]) -> Result<(), StoreError> {
    diesel::update(users::table.find(user.0))
        .set(users::mfa_pending_secret.eq(sealed))
        .execute(conn)
        .await?;
    Ok(())
}

/// Turns MFA on with the pending seed and replaces the recovery codes (argon2id PHC strings).
pub async fn enable_mfa(
    conn: &mut Conn,
    user: UserId,
    sealed: &[u8],
    last_step: i64,
    code_phcs: &[String],
) -> Result<(), StoreError> {
    set_mfa(conn, user, Some((sealed, last_step))).await?;
    let rows: Vec<_> = code_phcs
        .iter()
        .map(|h| (recovery_codes::user_id.eq(user.0), recovery_codes::code_phc.eq(h)))
        .collect();
    diesel::insert_into(recovery_codes::table)
        .values(rows)
        .execute(conn)
        .await?;
    Ok(())
}

/// Turns MFA off: the seeds and the recovery codes go.
pub async fn disable_mfa(conn: &mut Conn, user: UserId) -> Result<(), StoreError> {
    set_mfa(conn, user, None).await
}

/// MFA on with (sealed seed, last step), or off; either way no enrollment is pending, the failure
/// count starts over and the old recovery codes go.
async fn set_mfa(conn: &mut Conn, user: UserId, on: Option<(&[u8], i64)>) -> Result<(), StoreError> {
    diesel::update(users::table.find(user.0))
        .set((
            users::mfa_enabled.eq(on.is_some()),
            users::mfa_secret.eq(on.map(|(sealed, _)| sealed)),
            users::mfa_pending_secret.eq(None::<Vec<u8>>),
            users::mfa_last_step.eq(on.map(|(_, step)| step)),
            users::mfa_failures.eq(0),
            users::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user.0)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Replaces the sealed TOTP seed of `user` with the same seed sealed anew, unless it changed
/// meanwhile (MFA turned off or re-enrolled by a concurrent request).
pub async fn reseal_mfa_secret(conn: &mut Conn, user: UserId, old: &[u8], new: &[u8]) -> Result<(), StoreError> {
    diesel::update(users::table.find(user.0).filter(users::mfa_secret.eq(old)))
        .set(users::mfa_secret.eq(new))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records `step` as the last accepted TOTP step, atomically: false when this or a later step was
/// already used (a replay, or two requests racing with the same code).
pub async fn claim_totp_step(conn: &mut Conn, user: UserId, step: i64) -> Result<bool, StoreError> {
    let n = diesel::update(
        users::table
            .find(user.0)
            .filter(users::mfa_last_step.is_null().or(users::mfa_last_step.lt(step))),
    )
    .set((users::mfa_last_step.eq(step), users::mfa_failures.eq(0)))
    .execute(conn)
    .await?;
    Ok(n > 0)
}

/// Spends a recovery code handed out before they were hashed with argon2id (found by its keyed
/// hash): false when it is unknown or already used.
pub async fn use_legacy_recovery_code(conn: &mut Conn, user: UserId, hash: &[u8]) -> Result<bool, StoreError> {
    let n = diesel::update(
        recovery_codes::table
            .filter(recovery_codes::user_id.eq(user.0))
            .filter(recovery_codes::code_hash.eq(hash))
            .filter(recovery_codes::used_at.is_null()),
    )
    .set(recovery_codes::used_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?;
    Ok(n > 0)
}

/// The unused argon2id-hashed recovery codes of `user`: (row id, PHC string).
pub async fn unused_recovery_codes(conn: &mut Conn, user: UserId) -> Result<Vec<(Uuid, String)>, StoreError> {
    let rows: Vec<(Uuid, Option<String>)> = recovery_codes::table
        .filter(recovery_codes::user_id.eq(user.0))
        .filter(recovery_codes::used_at.is_null())
        .filter(recovery_codes::code_phc.is_not_null())
        .select((recovery_codes::id, recovery_codes::code_phc))
        .load(conn)
        .await?;
    Ok(rows.into_iter().filter_map(|(id, phc)| Some((id, phc?))).collect())
}

/// Spends the recovery code of row `id`: false when it was used meanwhile (two requests racing).
pub async fn spend_recovery_code(conn: &mut Conn, id: Uuid) -> Result<bool, StoreError> {
    let n = diesel::update(recovery_codes::table.find(id).filter(recovery_codes::used_at.is_null()))
        .set(recovery_codes::used_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    Ok(n > 0)
}
