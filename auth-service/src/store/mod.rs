//! Queries over schema `auth`. Only this module knows diesel and SQL; every mutation that a use
//! case makes runs in one transaction together with its audit row.

pub mod schema;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::PoolError;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use schema::{
    audit_logs, device_fingerprints, recovery_codes, security_events, sessions, spent_refresh_tokens, token_blacklist,
    users,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("e-mail already registered")]
    EmailTaken,
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        Self::Unavailable(anyhow::Error::new(e).context("getting a database connection"))
    }
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        match &e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
                if info.constraint_name() == Some("users_email_live_key") =>
            {
                Self::EmailTaken
            }
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
                Self::Unavailable(anyhow::Error::new(e).context("database connection closed"))
            }
            _ => Self::Unexpected(anyhow::Error::new(e).context("database query")),
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    pub income_tier: Option<String>,
    pub email_verified: bool,
    pub roles: Vec<String>,
    pub login_attempts: i32,
    pub locked_until: Option<DateTime<Utc>>,
    pub mfa_enabled: bool,
    pub created_at: DateTime<Utc>,
    pub lock_count: i32,
    pub mfa_secret: Option<Vec<u8>>,
    pub mfa_pending_secret: Option<Vec<u8>>,
    pub mfa_last_step: Option<i64>,
    pub mfa_failures: i32,
    pub mfa_locked_until: Option<DateTime<Utc>>,
}

#[derive(Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub email: &'a str,
    pub password_hash: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub income_tier: Option<&'a str>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sessions, check_for_backend(diesel::pg::Pg))]
pub struct SessionRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub device_id: String,
    pub refresh_hash: Vec<u8>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Who did something, for audit rows and security events.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub user_id: Option<Uuid>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

pub async fn insert_user(conn: &mut AsyncPgConnection, new: NewUser<'_>) -> Result<UserRow, StoreError> {
    Ok(diesel::insert_into(users::table)
        .values(new)
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await?)
}

/// A live account by e-mail, compared case-insensitively.
pub async fn user_by_email(conn: &mut AsyncPgConnection, email: &str) -> Result<Option<UserRow>, StoreError> {
    diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);
    Ok(users::table
        .filter(lower(users::email).eq(email.to_lowercase()))
        .filter(users::deleted_at.is_null())
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn user_by_id(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<UserRow>, StoreError> {
    Ok(users::table
        .find(id)
        .filter(users::deleted_at.is_null())
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// The account behind a live session (not revoked, the user's, account not deleted), in one
/// query: the path of every authenticated profile read.
pub async fn live_session_user(
    conn: &mut AsyncPgConnection,
    sid: Uuid,
    user: Uuid,
) -> Result<Option<UserRow>, StoreError> {
    Ok(users::table
        .inner_join(sessions::table)
        .filter(sessions::id.eq(sid))
        .filter(sessions::user_id.eq(user))
        .filter(sessions::revoked_at.is_null())
        .filter(users::deleted_at.is_null())
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Records a failed password; with `locked_until`, locks the account and resets the count.
pub async fn record_failure(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    locked_until: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let q = diesel::update(users::table.find(user));
    match locked_until {
        Some(until) => {
            q.set((
                users::login_attempts.eq(0),
                users::locked_until.eq(until),
                users::lock_count.eq(users::lock_count + 1),
                users::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?
        }
        None => {
            q.set(users::login_attempts.eq(users::login_attempts + 1))
                .execute(conn)
                .await?
        }
    };
    Ok(())
}

/// A successful login: counters reset, optional rehash, last login time.
pub async fn record_success(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    new_hash: Option<&str>,
) -> Result<(), StoreError> {
    let q = diesel::update(users::table.find(user));
    let base = (
        users::login_attempts.eq(0),
        users::lock_count.eq(0),
        users::locked_until.eq(None::<DateTime<Utc>>),
        users::last_login_at.eq(diesel::dsl::now),
    );
    match new_hash {
        Some(h) => {
            q.set((base, users::password_hash.eq(h), users::updated_at.eq(diesel::dsl::now)))
                .execute(conn)
                .await?
        }
        None => q.set(base).execute(conn).await?,
    };
    Ok(())
}

pub async fn insert_session(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    device_id: &str,
    refresh_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<Uuid, StoreError> {
    Ok(diesel::insert_into(sessions::table)
        .values((
            sessions::user_id.eq(user),
            sessions::device_id.eq(device_id),
            sessions::refresh_hash.eq(refresh_hash),
            sessions::expires_at.eq(expires_at),
        ))
        .returning(sessions::id)
        .get_result(conn)
        .await?)
}

/// The session whose current refresh token has this hash, locked for the rotation.
pub async fn session_by_current(conn: &mut AsyncPgConnection, hash: &[u8]) -> Result<Option<SessionRow>, StoreError> {
    Ok(sessions::table
        .filter(sessions::refresh_hash.eq(hash))
        .select(SessionRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?)
}

/// The session whose previous refresh token has this hash (a retry, or reuse).
pub async fn session_by_previous(conn: &mut AsyncPgConnection, hash: &[u8]) -> Result<Option<SessionRow>, StoreError> {
    Ok(sessions::table
        .filter(sessions::previous_refresh_hash.eq(hash))
        .select(SessionRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?)
}

/// The session that once spent this refresh token.
pub async fn session_by_spent(conn: &mut AsyncPgConnection, hash: &[u8]) -> Result<Option<Uuid>, StoreError> {
    Ok(spent_refresh_tokens::table
        .find(hash)
        .select(spent_refresh_tokens::session_id)
        .first(conn)
        .await
        .optional()?)
}

pub async fn rotate(
    conn: &mut AsyncPgConnection,
    session: Uuid,
    old_hash: &[u8],
    new_hash: &[u8],
) -> Result<(), StoreError> {
    diesel::insert_into(spent_refresh_tokens::table)
        .values((
            spent_refresh_tokens::token_hash.eq(old_hash),
            spent_refresh_tokens::session_id.eq(session),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    diesel::update(sessions::table.find(session))
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

pub async fn session(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<SessionRow>, StoreError> {
    Ok(sessions::table
        .find(id)
        .select(SessionRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Whether an access token has been revoked, from PostgreSQL alone: its jti blacklisted, its
/// session ended (or not the user's), the user's "not before" later than `iat` (whole seconds, as
/// the gateway compares), or the account gone.
pub async fn token_revoked(
    conn: &mut AsyncPgConnection,
    jti: Uuid,
    sid: Uuid,
    user: Uuid,
    iat: i64,
) -> Result<bool, StoreError> {
    let blacklisted: bool = diesel::select(diesel::dsl::exists(token_blacklist::table.find(jti)))
        .get_result(conn)
        .await?;
    if blacklisted {
        return Ok(true);
    }
    let live_session: bool = diesel::select(diesel::dsl::exists(
        sessions::table
            .find(sid)
            .filter(sessions::user_id.eq(user))
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
        .find(user)
        .select((users::tokens_not_before, users::deleted_at))
        .first(conn)
        .await
        .optional()?;
    Ok(match account {
        Some((not_before, None)) => not_before.is_some_and(|nbf| iat < nbf.timestamp()),
        _ => true,
    })
}

/// The revocations made after `since` (in PostgreSQL's clock): blacklisted tokens expiring after
/// it, sessions ended since `since` and not-before times after it
/// (a deleted account counts as "not before its deletion"). With `since` = now − the longest
/// access-token lifetime, that is every revocation in force.
pub struct Revocations {
    /// (jti, expires at)
    pub tokens: Vec<(Uuid, DateTime<Utc>)>,
    /// (session id, ended at)
    pub sessions: Vec<(Uuid, DateTime<Utc>)>,
    /// (user id, not before)
    pub not_before: Vec<(Uuid, DateTime<Utc>)>,
}

pub async fn revocations_since(conn: &mut AsyncPgConnection, since: DateTime<Utc>) -> Result<Revocations, StoreError> {
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
pub async fn database_now(conn: &mut AsyncPgConnection) -> Result<DateTime<Utc>, StoreError> {
    Ok(
        diesel::select(diesel::dsl::now.into_sql::<diesel::sql_types::Timestamptz>())
            .get_result(conn)
            .await?,
    )
}

/// Ends one session (no-op when already ended).
pub async fn revoke_session(conn: &mut AsyncPgConnection, id: Uuid, reason: &str) -> Result<bool, StoreError> {
    let n = diesel::update(sessions::table.find(id).filter(sessions::revoked_at.is_null()))
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
    conn: &mut AsyncPgConnection,
    user: Uuid,
    keep: Option<Uuid>,
    device_id: Option<&str>,
    reason: &str,
) -> Result<Vec<Uuid>, StoreError> {
    let mut q = diesel::update(sessions::table)
        .filter(sessions::user_id.eq(user))
        .filter(sessions::revoked_at.is_null())
        .into_boxed();
    if let Some(keep) = keep {
        q = q.filter(sessions::id.ne(keep));
    }
    if let Some(device) = device_id {
        q = q.filter(sessions::device_id.eq(device.to_owned()));
    }
    Ok(q.set((
        sessions::revoked_at.eq(diesel::dsl::now),
        sessions::revoked_reason.eq(reason),
    ))
    .returning(sessions::id)
    .get_results(conn)
    .await?)
}

/// Tokens of this user issued before `at` are void (kept in PostgreSQL for the Redis-down path).
/// Tokens of `user` issued before now (PostgreSQL's clock, like every revocation time) are
/// revoked.
pub async fn set_tokens_not_before(conn: &mut AsyncPgConnection, user: Uuid) -> Result<(), StoreError> {
    diesel::update(users::table.find(user))
        .set(users::tokens_not_before.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_password(conn: &mut AsyncPgConnection, user: Uuid, hash: &str) -> Result<(), StoreError> {
    diesel::update(users::table.find(user))
        .set((users::password_hash.eq(hash), users::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Profile changes; `income_tier: Some(None)` clears it.
pub async fn update_profile(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    first_name: Option<&str>,
    last_name: Option<&str>,
    income_tier: Option<Option<&str>>,
) -> Result<(), StoreError> {
    #[derive(AsChangeset)]
    #[diesel(table_name = users)]
    struct Changes<'a> {
        first_name: Option<&'a str>,
        last_name: Option<&'a str>,
        income_tier: Option<Option<&'a str>>,
    }
    let changes = Changes {
        first_name,
        last_name,
        income_tier,
    };
    diesel::update(users::table.find(user))
        .set((&changes, users::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = device_fingerprints, check_for_backend(diesel::pg::Pg))]
pub struct DeviceRow {
    pub device_id: String,
    pub platform: String,
    pub model: Option<String>,
    pub os_version: Option<String>,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub risk_score: i16,
    pub trusted: bool,
}

pub async fn devices(conn: &mut AsyncPgConnection, user: Uuid) -> Result<Vec<DeviceRow>, StoreError> {
    Ok(device_fingerprints::table
        .filter(device_fingerprints::user_id.eq(user))
        .order(device_fingerprints::last_seen_at.desc())
        .select(DeviceRow::as_select())
        .load(conn)
        .await?)
}

/// Forgets one of the user's devices; false when the user has no such device.
pub async fn delete_device(conn: &mut AsyncPgConnection, user: Uuid, fingerprint: &[u8]) -> Result<bool, StoreError> {
    let n = diesel::delete(device_fingerprints::table.find((user, fingerprint)))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

pub async fn blacklist(
    conn: &mut AsyncPgConnection,
    jti: Uuid,
    user: Uuid,
    device: &str,
    reason: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    diesel::insert_into(token_blacklist::table)
        .values((
            token_blacklist::jti.eq(jti),
            token_blacklist::user_id.eq(user),
            token_blacklist::device_id.eq(device),
            token_blacklist::reason.eq(reason),
            token_blacklist::expires_at.eq(expires_at),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// Records the device of a login; returns true when it is new for this user.
pub async fn upsert_device(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    fingerprint: &[u8],
    device: &crate::account::Device,
) -> Result<bool, StoreError> {
    let existing: Option<i16> = device_fingerprints::table
        .find((user, fingerprint))
        .select(device_fingerprints::risk_score)
        .first(conn)
        .await
        .optional()?;
    if existing.is_some() {
        diesel::update(device_fingerprints::table.find((user, fingerprint)))
            .set((
                device_fingerprints::last_seen_at.eq(diesel::dsl::now),
                device_fingerprints::model.eq(device.model.as_deref()),
                device_fingerprints::os_version.eq(device.os_version.as_deref()),
            ))
            .execute(conn)
            .await?;
        return Ok(false);
    }
    let known: i64 = device_fingerprints::table
        .filter(device_fingerprints::user_id.eq(user))
        .count()
        .get_result(conn)
        .await?;
    // The first device of an account is its home; any later new device starts at a higher risk.
    let risk: i16 = if known == 0 { 0 } else { 30 };
    diesel::insert_into(device_fingerprints::table)
        .values((
            device_fingerprints::user_id.eq(user),
            device_fingerprints::fingerprint_hash.eq(fingerprint),
            device_fingerprints::device_id.eq(&device.device_id),
            device_fingerprints::platform.eq(device.platform),
            device_fingerprints::model.eq(device.model.as_deref()),
            device_fingerprints::os_version.eq(device.os_version.as_deref()),
            device_fingerprints::risk_score.eq(risk),
            device_fingerprints::trusted.eq(known == 0),
        ))
        .execute(conn)
        .await?;
    Ok(known > 0)
}

pub async fn audit(
    conn: &mut AsyncPgConnection,
    actor: &Actor,
    action: &str,
    resource: &str,
    resource_id: Option<String>,
    changed_fields: &[&str],
) -> Result<(), StoreError> {
    diesel::insert_into(audit_logs::table)
        .values((
            audit_logs::actor_id.eq(actor.user_id),
            audit_logs::action.eq(action),
            audit_logs::resource.eq(resource),
            audit_logs::resource_id.eq(resource_id),
            audit_logs::ip.eq(actor.ip.as_deref()),
            audit_logs::user_agent.eq(actor.user_agent.as_deref()),
            audit_logs::changed_fields.eq(changed_fields.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn security_event(
    conn: &mut AsyncPgConnection,
    user: Option<Uuid>,
    event_type: &str,
    severity: &str,
    ip: Option<&str>,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    diesel::insert_into(security_events::table)
        .values((
            security_events::user_id.eq(user),
            security_events::event_type.eq(event_type),
            security_events::severity.eq(severity),
            security_events::ip.eq(ip),
            security_events::details.eq(details),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Keeps a TOTP seed (sealed) until its first code confirms the enrollment.
pub async fn set_pending_mfa(conn: &mut AsyncPgConnection, user: Uuid, sealed: &[u8]) -> Result<(), StoreError> {
    diesel::update(users::table.find(user))
        .set(users::mfa_pending_secret.eq(sealed))
        .execute(conn)
        .await?;
    Ok(())
}

/// Turns MFA on with the pending seed and replaces the recovery codes.
pub async fn enable_mfa(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    sealed: &[u8],
    last_step: i64,
    code_hashes: &[Vec<u8>],
) -> Result<(), StoreError> {
    diesel::update(users::table.find(user))
        .set((
            users::mfa_enabled.eq(true),
            users::mfa_secret.eq(sealed),
            users::mfa_pending_secret.eq(None::<Vec<u8>>),
            users::mfa_last_step.eq(last_step),
            users::mfa_failures.eq(0),
            users::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user)))
        .execute(conn)
        .await?;
    let rows: Vec<_> = code_hashes
        .iter()
        .map(|h| (recovery_codes::user_id.eq(user), recovery_codes::code_hash.eq(h)))
        .collect();
    diesel::insert_into(recovery_codes::table)
        .values(rows)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn disable_mfa(conn: &mut AsyncPgConnection, user: Uuid) -> Result<(), StoreError> {
    diesel::update(users::table.find(user))
        .set((
            users::mfa_enabled.eq(false),
            users::mfa_secret.eq(None::<Vec<u8>>),
            users::mfa_pending_secret.eq(None::<Vec<u8>>),
            users::mfa_last_step.eq(None::<i64>),
            users::mfa_failures.eq(0),
            users::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records `step` as the last accepted TOTP step, atomically: false when this or a later step was
/// already used (a replay, or two requests racing with the same code).
pub async fn claim_totp_step(conn: &mut AsyncPgConnection, user: Uuid, step: i64) -> Result<bool, StoreError> {
    let n = diesel::update(
        users::table
            .find(user)
            .filter(users::mfa_last_step.is_null().or(users::mfa_last_step.lt(step))),
    )
    .set((users::mfa_last_step.eq(step), users::mfa_failures.eq(0)))
    .execute(conn)
    .await?;
    Ok(n > 0)
}

/// Spends a recovery code: false when it is unknown or already used.
pub async fn use_recovery_code(conn: &mut AsyncPgConnection, user: Uuid, hash: &[u8]) -> Result<bool, StoreError> {
    let n = diesel::update(
        recovery_codes::table
            .find((user, hash))
            .filter(recovery_codes::used_at.is_null()),
    )
    .set(recovery_codes::used_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?;
    if n > 0 {
        diesel::update(users::table.find(user))
            .set(users::mfa_failures.eq(0))
            .execute(conn)
            .await?;
    }
    Ok(n > 0)
}

/// Counts a wrong MFA code; with `locked_until`, locks MFA and resets the count.
pub async fn record_mfa_failure(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    locked_until: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let q = diesel::update(users::table.find(user));
    match locked_until {
        Some(until) => {
            q.set((users::mfa_failures.eq(0), users::mfa_locked_until.eq(until)))
                .execute(conn)
                .await?
        }
        None => {
            q.set(users::mfa_failures.eq(users::mfa_failures + 1))
                .execute(conn)
                .await?
        }
    };
    Ok(())
}

/// Stores a mailed token (hash only); earlier unused tokens of the same purpose stop working.
pub async fn insert_email_token(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    purpose: &str,
    hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    use schema::email_tokens as t;
    diesel::update(
        t::table
            .filter(t::user_id.eq(user))
            .filter(t::purpose.eq(purpose))
            .filter(t::used_at.is_null()),
    )
    .set(t::used_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?;
    diesel::insert_into(t::table)
        .values((
            t::token_hash.eq(hash),
            t::user_id.eq(user),
            t::purpose.eq(purpose),
            t::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Spends a mailed token, atomically: the user it belongs to, or None when it is unknown,
/// expired, already used, or for another purpose.
pub async fn spend_email_token(
    conn: &mut AsyncPgConnection,
    purpose: &str,
    hash: &[u8],
) -> Result<Option<Uuid>, StoreError> {
    use schema::email_tokens as t;
    Ok(diesel::update(
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
    .optional()?)
}

pub async fn mark_email_verified(conn: &mut AsyncPgConnection, user: Uuid) -> Result<(), StoreError> {
    diesel::update(users::table.find(user))
        .set((users::email_verified.eq(true), users::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_logs, check_for_backend(diesel::pg::Pg))]
pub struct AuditRow {
    pub id: Uuid,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub resource: String,
    pub resource_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub changed_fields: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// A page of the audit log, newest first, after the keyset position `after` (created_at, id).
pub async fn audit_page(
    conn: &mut AsyncPgConnection,
    actor: Option<Uuid>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<AuditRow>, StoreError> {
    let mut q = audit_logs::table.select(AuditRow::as_select()).into_boxed();
    if let Some(a) = actor {
        q = q.filter(audit_logs::actor_id.eq(a));
    }
    if let Some(f) = from {
        q = q.filter(audit_logs::created_at.ge(f));
    }
    if let Some(t) = to {
        q = q.filter(audit_logs::created_at.lt(t));
    }
    if let Some((at, id)) = after {
        q = q.filter(
            audit_logs::created_at
                .lt(at)
                .or(audit_logs::created_at.eq(at).and(audit_logs::id.lt(id))),
        );
    }
    Ok(q.order((audit_logs::created_at.desc(), audit_logs::id.desc()))
        .limit(limit)
        .load(conn)
        .await?)
}
