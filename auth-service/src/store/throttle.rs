//! Attempt counters: failed logins per (account, client address) in `login_throttle`, and wrong
//! MFA codes per account on `users`. Each attempt is reserved (counted) in one statement before
//! the secret is checked, so concurrent guesses each see the count the others left.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Bytea, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;

use super::schema::{login_throttle, users};
use super::{Conn, StoreError};
use crate::domain::UserId;

/// A reserved attempt: its number since the counter last started over, and the lock state.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct Reserved {
    /// This attempt's number (1 for the first); unchanged while the counter is locked.
    #[diesel(sql_type = Int4)]
    pub attempt: i32,
    /// Locks so far (the next lock lasts longer).
    #[diesel(sql_type = Int4)]
    pub lock_count: i32,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub locked_until: Option<DateTime<Utc>>,
    /// The attempt was counted: the counter was not locked (by PostgreSQL's clock).
    #[diesel(sql_type = Bool)]
    pub counted: bool,
}

/// Counts an attempt of `subject` from `address` (nothing while the pair is locked).
pub async fn reserve_login_attempt(conn: &mut Conn, subject: &[u8], address: &str) -> Result<Reserved, StoreError> {
    Ok(diesel::sql_query(
        "INSERT INTO auth.login_throttle AS t (subject, address, attempts) VALUES ($1, $2, 1) \
         ON CONFLICT (subject, address) DO UPDATE SET \
           attempts = CASE WHEN t.locked_until > now() THEN t.attempts ELSE t.attempts + 1 END, \
           updated_at = now() \
         RETURNING attempts AS attempt, lock_count, locked_until, \
           (locked_until IS NULL OR locked_until <= now()) AS counted",
    )
    .bind::<Bytea, _>(subject)
    .bind::<Text, _>(address)
    .get_result(conn)
    .await?)
}

/// Gives back an attempt that was refused before its password was checked.
pub async fn release_login_attempt(conn: &mut Conn, subject: &[u8], address: &str) -> Result<(), StoreError> {
    diesel::update(login_throttle::table.find((subject, address)))
        .set(login_throttle::attempts.eq(diesel::dsl::sql::<Int4>("greatest(attempts - 1, 0)")))
        .execute(conn)
        .await?;
    Ok(())
}

/// Locks the pair until `until`; the count starts over and the next lock lasts longer.
pub async fn lock_login(
    conn: &mut Conn,
    subject: &[u8],
    address: &str,
    until: DateTime<Utc>,
) -> Result<(), StoreError> {
    diesel::update(login_throttle::table.find((subject, address)))
        .set((
            login_throttle::attempts.eq(0),
            login_throttle::locked_until.eq(until),
            login_throttle::lock_count.eq(login_throttle::lock_count + 1),
            login_throttle::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// The right password from this address: its counter, lock and escalation start over.
pub async fn clear_login_attempts(conn: &mut Conn, subject: &[u8], address: &str) -> Result<(), StoreError> {
    diesel::delete(login_throttle::table.find((subject, address)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Every address's counter of `subject` goes (the password was reset by mail).
pub async fn clear_all_login_attempts(conn: &mut Conn, subject: &[u8]) -> Result<(), StoreError> {
    diesel::delete(login_throttle::table.filter(login_throttle::subject.eq(subject)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Counts a code attempt of `user`; `None` while MFA is locked (nothing is counted then).
pub async fn reserve_mfa_attempt(conn: &mut Conn, user: UserId) -> Result<Option<Reserved>, StoreError> {
    Ok(diesel::sql_query(
        "UPDATE auth.users SET mfa_failures = mfa_failures + 1 \
         WHERE id = $1 AND (mfa_locked_until IS NULL OR mfa_locked_until <= now()) \
         RETURNING mfa_failures AS attempt, mfa_lock_count AS lock_count, mfa_locked_until AS locked_until, \
           true AS counted",
    )
    .bind::<SqlUuid, _>(user.0)
    .get_result(conn)
    .await
    .optional()?)
}

/// Gives back a code attempt that was refused before the code was checked.
pub async fn release_mfa_attempt(conn: &mut Conn, user: UserId) -> Result<(), StoreError> {
    diesel::update(users::table.find(user.0))
        .set(users::mfa_failures.eq(diesel::dsl::sql::<Int4>("greatest(mfa_failures - 1, 0)")))
        .execute(conn)
        .await?;
    Ok(())
}

/// When MFA of `user` is locked, and until when.
pub async fn mfa_locked_until(conn: &mut Conn, user: UserId) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(users::table
        .find(user.0)
        .select(users::mfa_locked_until)
        .first::<Option<DateTime<Utc>>>(conn)
        .await
        .optional()?
        .flatten())
}

/// Locks MFA of `user` until `until`; the count starts over and the next lock lasts longer.
pub async fn lock_mfa(conn: &mut Conn, user: UserId, until: DateTime<Utc>) -> Result<(), StoreError> {
    diesel::update(users::table.find(user.0))
        .set((
            users::mfa_failures.eq(0),
            users::mfa_locked_until.eq(until),
            users::mfa_lock_count.eq(users::mfa_lock_count + 1),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// A right code: the MFA count and its escalation start over.
pub async fn clear_mfa_attempts(conn: &mut Conn, user: UserId) -> Result<(), StoreError> {
    diesel::update(users::table.find(user.0))
        .set((users::mfa_failures.eq(0), users::mfa_lock_count.eq(0)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes the login counters untouched for `idle` and not locked: rows for e-mails nobody has
/// (anyone can make those) do not pile up. Returns how many went.
pub async fn purge_idle_login_attempts(conn: &mut Conn, idle: chrono::TimeDelta) -> Result<usize, StoreError> {
    let before = Utc::now() - idle;
    Ok(diesel::delete(
        login_throttle::table
            .filter(login_throttle::updated_at.lt(before))
            .filter(
                login_throttle::locked_until
                    .is_null()
                    .or(login_throttle::locked_until.lt(diesel::dsl::now)),
            ),
    )
    .execute(conn)
    .await?)
}
