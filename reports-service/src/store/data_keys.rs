//! `data_keys`: each user's data key, wrapped by a master key of the keyring.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use service_kit::envelope::WrappedKey;
use service_kit::store_error::StoreError;
use uuid::Uuid;

use super::Conn;
use super::schema::data_keys;

/// The wrapped key of `user`, if they have one (and the transaction's scope may see it).
pub async fn find(conn: &mut Conn, user: Uuid) -> Result<Option<WrappedKey>, StoreError> {
    let row: Option<(String, Vec<u8>)> = data_keys::table
        .find(user)
        .select((data_keys::key_id, data_keys::wrapped))
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(|(key_id, bytes)| WrappedKey { key_id, bytes }))
}

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    key_id: String,
    #[diesel(sql_type = diesel::sql_types::Bytea)]
    wrapped: Vec<u8>,
}

/// A create's first statement: the scope (as `enter_scope` with role `$2`) and the wrapped key of
/// user `$1` read under it. The scope's row is made first (a materialized CTE) and the key is read
/// on the inner side of a nested loop that depends on that row (a lateral subquery that cannot be
/// flattened, `OFFSET 0`), so `data_keys`' row-level security sees the scope already set: another
/// user's id reads nothing. `set_config(…, true)` lasts until the transaction ends. Plain SQL where
/// migration `…000014`'s PL/pgSQL function took a tenth of PostgreSQL's time per create.
const SCOPE_WITH_KEY: &str = "WITH scope AS MATERIALIZED ( \
         SELECT set_config('app.current_user_id', $1::text, true) AS user_id, set_config('app.role', $2, true) AS role) \
     SELECT k.key_id, k.wrapped FROM scope CROSS JOIN LATERAL ( \
         SELECT d.key_id, d.wrapped FROM reports.data_keys AS d WHERE d.user_id = scope.user_id::uuid OFFSET 0) AS k";

/// Enters `user`'s scope (as `enter_scope` with role `user`) and reads their wrapped key under
/// it, in one statement ([`SCOPE_WITH_KEY`]): the first round trip of a create, which took two.
pub async fn enter_scope_with_key(conn: &mut Conn, user: Uuid) -> Result<Option<WrappedKey>, StoreError> {
    let rows: Vec<KeyRow> = service_kit::statement::statement(SCOPE_WITH_KEY)
        .bind::<diesel::sql_types::Uuid, _>(user)
        .bind::<diesel::sql_types::Text, _>("user")
        .load(conn)
        .await?;
    Ok(rows.into_iter().next().map(|r| WrappedKey {
        key_id: r.key_id,
        bytes: r.wrapped,
    }))
}

/// Stores `wrapped` as `user`'s key unless they have one already (a concurrent first write won);
/// the caller reads the key back with [`find`] either way.
pub async fn insert_if_absent(conn: &mut Conn, user: Uuid, wrapped: &WrappedKey) -> Result<(), StoreError> {
    diesel::insert_into(data_keys::table)
        .values((
            data_keys::user_id.eq(user),
            data_keys::key_id.eq(&wrapped.key_id),
            data_keys::wrapped.eq(&wrapped.bytes),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// Up to `limit` wrapped keys not under master key `current`, locked until commit (a key
/// rotation's batch; scope: the service's own role).
pub async fn stale_batch(conn: &mut Conn, current: &str, limit: i64) -> Result<Vec<(Uuid, WrappedKey)>, StoreError> {
    let rows: Vec<(Uuid, String, Vec<u8>)> = data_keys::table
        .filter(data_keys::key_id.ne(current))
        .order(data_keys::user_id)
        .limit(limit)
        .select((data_keys::user_id, data_keys::key_id, data_keys::wrapped))
        .for_update()
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(user, key_id, bytes)| (user, WrappedKey { key_id, bytes }))
        .collect())
}

/// Replaces `user`'s wrapped key with `wrapped` (the same data key under another master key).
pub async fn replace(conn: &mut Conn, user: Uuid, wrapped: &WrappedKey) -> Result<(), StoreError> {
    diesel::update(data_keys::table.find(user))
        .set((
            data_keys::key_id.eq(&wrapped.key_id),
            data_keys::wrapped.eq(&wrapped.bytes),
            data_keys::rewrapped_at.eq(chrono::Utc::now()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
