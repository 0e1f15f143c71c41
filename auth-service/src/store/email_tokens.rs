//! Mailed single-use tokens (`email_tokens`: address verification, password reset), stored as
//! hashes, and the verified flag they set.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::schema::users;
use super::{Conn, StoreError};
use crate::domain::UserId;

/// Stores a mailed token (hash only); earlier unused tokens of the same purpose stop working.
pub async fn insert_email_token(
    conn: &mut Conn,
    user: UserId,
    purpose: &str,
    hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    use super::schema::email_tokens as t;
    diesel::update(
        t::table
            .filter(t::user_id.eq(user.0))
            .filter(t::purpose.eq(purpose))
            .filter(t::used_at.is_null()),
    )
    .set(t::used_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?;
    diesel::insert_into(t::table)
        .values((
            t::token_hash.eq(hash),
            t::user_id.eq(user.0),
            t::purpose.eq(purpose),
            t::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Spends a mailed token, atomically: the user it belongs to, or None when it is unknown,
/// expired, already used, or for another purpose.
pub async fn spend_email_token(conn: &mut Conn, purpose: &str, hash: &[u8]) -> Result<Option<UserId>, StoreError> {
    use super::schema::email_tokens as t;
    let user: Option<Uuid> = diesel::update(
        t::table
            .find(hash)
            .filter(t::purpose.eq(purpose))
            .filter(t::used_at.is_null())
            .filter(t::expires_at.gt(diesel::dsl::now)),
    )
    .set(t::used_at.eq(diesel::dsl::now))
    .returning(t::user_id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(user.map(UserId))
}

pub async fn mark_email_verified(conn: &mut Conn, user: UserId) -> Result<(), StoreError> {
    diesel::update(users::table.find(user.0))
        .set((users::email_verified.eq(true), users::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    Ok(())
}

/// The user a mailed token belongs to while it is good (unknown, expired, used or for another
/// purpose: None), without spending it.
pub async fn email_token_owner(conn: &mut Conn, purpose: &str, hash: &[u8]) -> Result<Option<UserId>, StoreError> {
    use super::schema::email_tokens as t;
    let user: Option<Uuid> = t::table
        .find(hash)
        .filter(t::purpose.eq(purpose))
        .filter(t::used_at.is_null())
        .filter(t::expires_at.gt(diesel::dsl::now))
        .select(t::user_id)
        .first(conn)
        .await
        .optional()?;
    Ok(user.map(UserId))
}

/// When the last token of `purpose` was made for `user`, read with the user's row locked (in the
/// caller's transaction), so that two concurrent requests see each other's token.
pub async fn last_email_token_locked(
    conn: &mut Conn,
    user: UserId,
    purpose: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    use super::schema::email_tokens as t;
    users::table
        .find(user.0)
        .select(users::id)
        .for_update()
        .first::<Uuid>(conn)
        .await
        .optional()?;
    Ok(t::table
        .filter(t::user_id.eq(user.0))
        .filter(t::purpose.eq(purpose))
        .select(diesel::dsl::max(t::created_at))
        .first::<Option<DateTime<Utc>>>(conn)
        .await?)
}
