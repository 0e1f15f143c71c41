//! Accounts (`users`): creation, look-ups, the login counters, profile, password and roles.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::schema::{sessions, users};
use super::{Conn, StoreError};
use crate::domain::{MfaState, NewUser, SessionId, User, UserId};

/// The unique index on live e-mail addresses: a conflict on it means "e-mail already registered".
pub const EMAIL_TAKEN: &str = "users_email_live_key";

#[derive(Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
struct UserRow {
    id: Uuid,
    email: String,
    password_hash: String,
    first_name: String,
    last_name: String,
    income_tier: Option<String>,
    email_verified: bool,
    roles: Vec<String>,
    mfa_enabled: bool,
    created_at: DateTime<Utc>,
    mfa_secret: Option<Vec<u8>>,
    mfa_pending_secret: Option<Vec<u8>>,
    mfa_last_step: Option<i64>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        Self {
            id: UserId(r.id),
            email: r.email,
            email_verified: r.email_verified,
            first_name: r.first_name,
            last_name: r.last_name,
            income_tier: r.income_tier,
            roles: r.roles,
            created_at: r.created_at,
            password_hash: r.password_hash,
            mfa: MfaState {
                enabled: r.mfa_enabled,
                secret: r.mfa_secret,
                pending_secret: r.mfa_pending_secret,
                last_step: r.mfa_last_step,
            },
        }
    }
}

/// A new account. Fails with a conflict on [`EMAIL_TAKEN`] when a live account has the address.
pub async fn insert_user(conn: &mut Conn, new: NewUser<'_>) -> Result<User, StoreError> {
    Ok(diesel::insert_into(users::table)
        .values((
            users::email.eq(new.email.as_str()),
            users::password_hash.eq(new.password_hash),
            users::first_name.eq(new.first_name.as_str()),
            users::last_name.eq(new.last_name.as_str()),
            users::income_tier.eq(new.income_tier),
        ))
        .returning(UserRow::as_returning())
        .get_result::<UserRow>(conn)
        .await?
        .into())
}

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

/// A live account by e-mail, compared case-insensitively.
pub async fn user_by_email(conn: &mut Conn, email: &str) -> Result<Option<User>, StoreError> {
    live_user(conn, UserKey::Email(email)).await
}

pub async fn user_by_id(conn: &mut Conn, id: UserId) -> Result<Option<User>, StoreError> {
    live_user(conn, UserKey::Id(id)).await
}

/// How an account is looked up.
enum UserKey<'a> {
    Email(&'a str),
    Id(UserId),
}

/// The live (not deleted) account with this key.
async fn live_user(conn: &mut Conn, key: UserKey<'_>) -> Result<Option<User>, StoreError> {
    let q = users::table
        .filter(users::deleted_at.is_null())
        .select(UserRow::as_select())
        .into_boxed();
    let q = match key {
        UserKey::Email(email) => q.filter(lower(users::email).eq(email.to_lowercase())),
        UserKey::Id(id) => q.filter(users::id.eq(id.0)),
    };
    let row: Option<UserRow> = q.first(conn).await.optional()?;
    Ok(row.map(User::from))
}

/// The account behind a live session (not revoked, the user's, account not deleted), in one
/// query: the path of every authenticated profile read.
pub async fn live_session_user(conn: &mut Conn, sid: SessionId, user: UserId) -> Result<Option<User>, StoreError> {
    let row: Option<UserRow> = users::table
        .inner_join(sessions::table)
        .filter(sessions::id.eq(sid.0))
        .filter(sessions::user_id.eq(user.0))
        .filter(sessions::revoked_at.is_null())
        .filter(users::deleted_at.is_null())
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(User::from))
}

/// A successful login: counters reset, optional rehash, last login time.
pub async fn record_success(conn: &mut Conn, user: UserId, new_hash: Option<&str>) -> Result<(), StoreError> {
    let q = diesel::update(users::table.find(user.0));
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

/// Tokens of `user` issued before now (PostgreSQL's clock, like every revocation time) are
/// revoked; kept in PostgreSQL for the Redis-down path.
pub async fn set_tokens_not_before(conn: &mut Conn, user: UserId) -> Result<(), StoreError> {
    diesel::update(users::table.find(user.0))
        .set(users::tokens_not_before.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_password(conn: &mut Conn, user: UserId, hash: &str) -> Result<(), StoreError> {
    diesel::update(users::table.find(user.0))
        .set((users::password_hash.eq(hash), users::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_roles(conn: &mut Conn, user: UserId, roles: &[String]) -> Result<(), StoreError> {
    diesel::update(users::table.find(user.0))
        .set((users::roles.eq(roles), users::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Profile changes; `income_tier: Some(None)` clears it.
pub async fn update_profile(
    conn: &mut Conn,
    user: UserId,
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
    diesel::update(users::table.find(user.0))
        .set((&changes, users::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    Ok(())
}
