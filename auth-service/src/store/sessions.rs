//! Sessions and revocation (`sessions`, `spent_refresh_tokens`, `token_blacklist`, and the
//! not-before times on `users`): refresh rotation, ending sessions, and what the revocation sync
//! and `CheckToken` read.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::schema::{sessions, spent_refresh_tokens, token_blacklist, users};
use super::{Conn, StoreError};
use crate::domain::{ActiveUsers, Revocations, Session, SessionId, UserId};

#[derive(Queryable, Selectable)]
#[diesel(table_name = sessions, check_for_backend(diesel::pg::Pg))]
struct SessionRow {
    id: Uuid,
    user_id: Uuid,
    device_id: String,
    refresh_hash: Vec<u8>,
    rotated_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<SessionRow> for Session {
    fn from(r: SessionRow) -> Self {
        Self {
            id: SessionId(r.id),
            user_id: UserId(r.user_id),
            device_id: r.device_id,
            refresh_hash: r.refresh_hash,
            rotated_at: r.rotated_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        }
    }
}

pub async fn insert_session(
    conn: &mut Conn,
    user: UserId,
    device_id: &str,
    refresh_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<SessionId, StoreError> {
    let id = diesel::insert_into(sessions::table)
        .values((
            sessions::user_id.eq(user.0),
            sessions::device_id.eq(device_id),
            sessions::refresh_hash.eq(refresh_hash),
            sessions::expires_at.eq(expires_at),
        ))
        .returning(sessions::id)
        .get_result(conn)
        .await?;
    Ok(SessionId(id))
}

/// A condition on `sessions` that picks at most one row (by a unique refresh-token hash).
type OneSession<'a> = Box<dyn BoxableExpression<sessions::table, Pg, SqlType = Nullable<Bool>> + 'a>;

/// The session `by` picks, locked for the rotation.
async fn locked_session(conn: &mut Conn, by: OneSession<'_>) -> Result<Option<Session>, StoreError> {
    let row: Option<SessionRow> = sessions::table
        .filter(by)
        .select(SessionRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(Session::from))
}

/// The session whose current refresh token has this hash, locked for the rotation.
pub async fn session_by_current(conn: &mut Conn, hash: &[u8]) -> Result<Option<Session>, StoreError> {
    locked_session(conn, Box::new(sessions::refresh_hash.eq(hash).nullable())).await
}

/// The session whose previous refresh token has this hash (a retry, or reuse), locked.
pub async fn session_by_previous(conn: &mut Conn, hash: &[u8]) -> Result<Option<Session>, StoreError> {
    locked_session(conn, Box::new(sessions::previous_refresh_hash.eq(hash))).await
}

/// The session that once spent this refresh token.
pub async fn session_by_spent(conn: &mut Conn, hash: &[u8]) -> Result<Option<SessionId>, StoreError> {
    let id: Option<Uuid> = spent_refresh_tokens::table
        .find(hash)
        .select(spent_refresh_tokens::session_id)
        .first(conn)
        .await
        .optional()?;
    Ok(id.map(SessionId))
}

pub async fn rotate(conn: &mut Conn, session: SessionId, old_hash: &[u8], new_hash: &[u8]) -> Result<(), StoreError> {
    diesel::insert_into(spent_refresh_tokens::table)
        .values((
            spent_refresh_tokens::token_hash.eq(old_hash),
            spent_refresh_tokens::session_id.eq(session.0),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    diesel::update(sessions::table.find(session.0))
        .set((
            sessions::refresh_hash.eq(new_hash),
            sessions::previous_refresh_hash.eq(old_hash),
            sessions::rotated_at.eq(diesel::dsl::now),
            sessions::last_used_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn session(conn: &mut Conn, id: SessionId) -> Result<Option<Session>, StoreError> {
    let row: Option<SessionRow> = sessions::table
        .find(id.0)
        .select(SessionRow::as_select())
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(Session::from))
}

/// Whether an access token has been revoked, from PostgreSQL alone: its jti blacklisted, its
/// session ended (or not the user's), the user's "not before" later than the issue time
/// (`issued_at_ms`, Unix milliseconds, as the gateway compares), or the account gone.
pub async fn token_revoked(
    conn: &mut Conn,
    jti: Uuid,
    sid: SessionId,
    user: UserId,
    issued_at_ms: i64,
) -> Result<bool, StoreError> {
    let blacklisted: bool = diesel::select(diesel::dsl::exists(token_blacklist::table.find(jti)))
        .get_result(conn)
        .await?;
    if blacklisted {
        return Ok(true);
    }
    let live_session: bool = diesel::select(diesel::dsl::exists(
        sessions::table
            .find(sid.0)
            .filter(sessions::user_id.eq(user.0))
            .filter(sessions::revoked_at.is_null()),
    ))
    .get_result(conn)
    .await?;
    if !live_session {
        return Ok(true);
    }
    // (tokens_not_before, deleted_at)
    type Account = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let account: Option<Account> = users::table
        .find(user.0)
        .select((users::tokens_not_before, users::deleted_at))
        .first(conn)
        .await
        .optional()?;
    Ok(match account {
        Some((not_before, None)) => not_before.is_some_and(|nbf| issued_at_ms < nbf.timestamp_millis()),
        _ => true,
    })
}

/// The revocations made after `since` (see [`Revocations`]).
pub async fn revocations_since(conn: &mut Conn, since: DateTime<Utc>) -> Result<Revocations, StoreError> {
    let tokens = token_blacklist::table
        .filter(token_blacklist::created_at.gt(since))
        .filter(token_blacklist::expires_at.gt(since))
        .select((token_blacklist::jti, token_blacklist::expires_at))
        .load(conn)
        .await?;
    let sessions = sessions::table
        .filter(sessions::revoked_at.gt(since))
        .select((sessions::id, sessions::revoked_at.assume_not_null()))
        .load(conn)
        .await?;
    let mut not_before: Vec<(Uuid, DateTime<Utc>)> = users::table
        .filter(users::tokens_not_before.gt(since))
        .select((users::id, users::tokens_not_before.assume_not_null()))
        .load(conn)
        .await?;
    let deleted: Vec<(Uuid, DateTime<Utc>)> = users::table
        .filter(users::deleted_at.gt(since))
        .select((users::id, users::deleted_at.assume_not_null()))
        .load(conn)
        .await?;
    // One value per user, the later (stricter) of a "not before" and a deletion.
    not_before.extend(deleted);
    not_before.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    not_before.dedup_by_key(|(user, _)| *user);
    Ok(Revocations {
        tokens,
        sessions,
        not_before,
    })
}

/// PostgreSQL's clock, the one every revocation time above was written with.
pub async fn database_now(conn: &mut Conn) -> Result<DateTime<Utc>, StoreError> {
    Ok(
        diesel::select(diesel::dsl::now.into_sql::<diesel::sql_types::Timestamptz>())
            .get_result(conn)
            .await?,
    )
}

/// Ends one session (no-op when already ended).
pub async fn revoke_session(conn: &mut Conn, id: SessionId, reason: &str) -> Result<bool, StoreError> {
    let n = diesel::update(sessions::table.find(id.0).filter(sessions::revoked_at.is_null()))
        .set((
            sessions::revoked_at.eq(diesel::dsl::now),
            sessions::revoked_reason.eq(reason),
        ))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// Ends the live sessions of a user (all of them, or all but `keep`, or those of one device) and
/// returns their ids, so their access tokens can be revoked too.
pub async fn revoke_sessions(
    conn: &mut Conn,
    user: UserId,
    keep: Option<SessionId>,
    device_id: Option<&str>,
    reason: &str,
) -> Result<Vec<SessionId>, StoreError> {
    let mut q = diesel::update(sessions::table)
        .filter(sessions::user_id.eq(user.0))
        .filter(sessions::revoked_at.is_null())
        .into_boxed();
    if let Some(keep) = keep {
        q = q.filter(sessions::id.ne(keep.0));
    }
    if let Some(device) = device_id {
        q = q.filter(sessions::device_id.eq(device.to_owned()));
    }
    let ended: Vec<Uuid> = q
        .set((
            sessions::revoked_at.eq(diesel::dsl::now),
            sessions::revoked_reason.eq(reason),
        ))
        .returning(sessions::id)
        .get_results(conn)
        .await?;
    Ok(ended.into_iter().map(SessionId).collect())
}

/// Blacklists one access token until it expires.
pub async fn blacklist(
    conn: &mut Conn,
    jti: Uuid,
    user: UserId,
    device: &str,
    reason: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    diesel::insert_into(token_blacklist::table)
        .values((
            token_blacklist::jti.eq(jti),
            token_blacklist::user_id.eq(user.0),
            token_blacklist::device_id.eq(device),
            token_blacklist::reason.eq(reason),
            token_blacklist::expires_at.eq(expires_at),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(QueryableByName)]
struct ActiveCounts {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    day: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    week: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    month: i64,
}

/// Distinct users whose session was created or refreshed (`last_used_at`) within the last day,
/// 7 days and 30 days, ended sessions included (they were used). One pass over the month's rows.
pub async fn active_users(conn: &mut Conn) -> Result<ActiveUsers, StoreError> {
    let c: ActiveCounts = service_kit::statement::statement(
        "SELECT count(DISTINCT user_id) FILTER (WHERE last_used_at > now() - interval '1 day') AS day, \
                count(DISTINCT user_id) FILTER (WHERE last_used_at > now() - interval '7 days') AS week, \
                count(DISTINCT user_id) AS month \
         FROM auth.sessions WHERE last_used_at > now() - interval '30 days'",
    )
    .get_result(conn)
    .await?;
    Ok(ActiveUsers {
        day: c.day,
        week: c.week,
        month: c.month,
    })
}
