//! Idempotency keys (API.md, "Conventions"): a create retried with the same `Idempotency-Key`
//! and the same request answers the first response and creates nothing new; the same key with
//! another request is `IDEMPOTENCY_KEY_REUSED`; a retry while the first is still running is
//! `REQUEST_IN_PROGRESS`.
//!
//! Everything happens in the transaction of the write, so the key, the write and the stored
//! response commit (or roll back) together:
//! 1. [`claim`] takes a transaction-scoped advisory lock on (user, key): not got means the first
//!    request is still running. Then it reads the stored row: the same request hash replays the
//!    stored response, another hash is a reuse.
//! 2. The caller writes, builds its response and [`record`]s it.
//!
//! The request hash ([`request_hash`]) is SHA-256 over the method's name and the request's
//! protobuf encoding with the key field cleared by the caller; prost encodes fields in order and
//! maps are not used by these requests, so the same request gives the same bytes. Responses are
//! stored as the caller gives them (a service seals them when they hold personal data).
//!
//! Every service that takes keys has, in its own schema, the table of
//! `reports-service/migrations/2026-12-07-000011_reports_lifecycle` (`idempotency_keys`, with
//! row-level security by user), and purges rows older than [`KEEP`] with [`purge`].

use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Bytea, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use sha2::{Digest as _, Sha256};

use crate::statement::statement;

/// How long a key is kept (at least the 24 h API.md promises).
pub const KEEP: Duration = Duration::from_secs(24 * 60 * 60);

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// No live row for this key: do the work, then [`record`] the response.
    Fresh,
    /// The same request ran before: answer these bytes, as [`record`] stored them.
    Replay(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// Another transaction holds the key: the first request is still running.
    #[error("a request with this idempotency key is still running")]
    InProgress,
    /// The key was used for another request.
    #[error("the idempotency key was used for another request")]
    Reused,
    #[error("idempotency query")]
    Query(#[from] diesel::result::Error),
}

/// Whether `key` is a well-formed key: 1..=255 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// SHA-256 over `method` and `request`'s encoding (the caller clears the key field first).
pub fn request_hash<M: prost::Message>(method: &str, request: &M) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update((method.len() as u32).to_be_bytes());
    hash.update(method.as_bytes());
    hash.update(request.encode_to_vec());
    hash.finalize().into()
}

/// The message `bytes` hold (a replayed response).
pub fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, prost::DecodeError> {
    M::decode(bytes)
}

/// The advisory lock of (`user`, `key`): 64 bits of a hash, so no two keys share a lock in practice.
pub fn lock_id(user: uuid::Uuid, key: &str) -> i64 {
    let mut hash = Sha256::new();
    hash.update(b"service-kit/idempotency/lock/v1");
    hash.update(user.as_bytes());
    hash.update(key.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

#[derive(QueryableByName)]
struct Stored {
    #[diesel(sql_type = Bytea)]
    request_hash: Vec<u8>,
    #[diesel(sql_type = Bytea)]
    response: Vec<u8>,
}

/// Locks `key` of `user` for this transaction and tells what to do (see the module docs). Call it
/// inside the transaction of the write, before writing.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    schema: &'static str,
    user: uuid::Uuid,
    key: &str,
    request_hash: &[u8; 32],
) -> Result<Claim, IdempotencyError> {
    let got: Locked = statement("SELECT pg_try_advisory_xact_lock($1) AS locked")
        .bind::<BigInt, _>(lock_id(user, key))
        .get_result(conn)
        .await?;
    if !got.locked {
        return Err(IdempotencyError::InProgress);
    }
    // `schema` is a compile-time identifier of the service, never input.
    let stored: Option<Stored> = statement(&format!(
        "SELECT request_hash, response FROM {schema}.idempotency_keys \
         WHERE user_id = $1 AND key = $2 AND created_at > now() - make_interval(secs => $3)"
    ))
    .bind::<SqlUuid, _>(user)
    .bind::<Text, _>(key)
    .bind::<BigInt, _>(KEEP.as_secs() as i64)
    .get_result(conn)
    .await
    .map(Some)
    .or_else(|e| match e {
        diesel::result::Error::NotFound => Ok(None),
        e => Err(e),
    })?;
    match stored {
        None => Ok(Claim::Fresh),
        Some(row) if row.request_hash == request_hash => Ok(Claim::Replay(row.response)),
        Some(_) => Err(IdempotencyError::Reused),
    }
}

/// Stores `response` under `key` of `user` (replacing a lapsed row not purged yet), in the
/// transaction of the write (a shared connection: it may be pipelined with the write's others).
pub async fn record(
    mut conn: &AsyncPgConnection,
    schema: &'static str,
    user: uuid::Uuid,
    key: &str,
    request_hash: &[u8; 32],
    response: &[u8],
) -> diesel::QueryResult<()> {
    statement(&format!(
        "INSERT INTO {schema}.idempotency_keys (user_id, key, request_hash, response) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, \
         response = EXCLUDED.response, created_at = now()"
    ))
    .bind::<SqlUuid, _>(user)
    .bind::<Text, _>(key)
    .bind::<Bytea, _>(&request_hash[..])
    .bind::<Bytea, _>(response)
    .execute(&mut conn)
    .await
    .map(|_| ())
}

/// Deletes keys older than [`KEEP`]; answers how many. Runs in a transaction whose scope the
/// table's purge policy admits (the service's own role).
pub async fn purge(conn: &mut AsyncPgConnection, schema: &'static str) -> diesel::QueryResult<usize> {
    diesel::sql_query(format!(
        "DELETE FROM {schema}.idempotency_keys WHERE created_at <= now() - make_interval(secs => $1)"
    ))
    .bind::<BigInt, _>(KEEP.as_secs() as i64)
    .execute(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert!(valid_key("a"));
        assert!(valid_key(&"k".repeat(255)));
        assert!(valid_key("2f1c-9a!~"));
        for bad in ["", " ", "a b", "é", "tab\t", &"k".repeat(256)] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_hash_tells_requests_and_methods_apart() {
        let a = prost_types::Timestamp { seconds: 1, nanos: 0 };
        let b = prost_types::Timestamp { seconds: 2, nanos: 0 };
        assert_eq!(request_hash("Create", &a), request_hash("Create", &a));
        assert_ne!(request_hash("Create", &a), request_hash("Create", &b));
        assert_ne!(request_hash("Create", &a), request_hash("Upload", &a));
        // The method's length is hashed too: no name can run into the encoding.
        assert_ne!(request_hash("Create", &b), request_hash("Creat", &b));
    }

    #[test]
    fn a_stored_response_decodes_to_the_same_message() {
        let m = prost_types::Timestamp { seconds: 42, nanos: 7 };
        let bytes = prost::Message::encode_to_vec(&m);
        assert_eq!(decode::<prost_types::Timestamp>(&bytes).ok(), Some(m));
        assert!(decode::<prost_types::Timestamp>(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn locks_are_per_user_and_key() {
        let (u1, u2) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        assert_eq!(lock_id(u1, "k"), lock_id(u1, "k"));
        assert_ne!(lock_id(u1, "k"), lock_id(u2, "k"));
        assert_ne!(lock_id(u1, "k"), lock_id(u1, "j"));
    }
}
